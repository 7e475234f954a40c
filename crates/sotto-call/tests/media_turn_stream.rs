#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TURN over TCP and over TLS, for users whose network lets no UDP out: a REAL coturn serving
//! no UDP at all (`--no-udp`), one relay-only peer reaching it with
//! `turn:…?transport=tcp`, the other with `turns:` verified against a test CA. Both connect
//! through relay candidates and decrypt every frame.
//!
//! webrtc-rs 0.21.1 skips TCP and TLS TURN URLs; before the loopback bridge
//! (`media/turn_bridge.rs`) neither peer gathered a relay candidate and `create_offer` failed
//! with `NoRelayCandidate` (checked).

use std::time::Duration;

use sotto_call::media::{CandidateType, IceServer, MediaConfig, MediaPeer};
use sotto_testkit::coturn::{Coturn, CoturnOptions, StreamListeners};
use sotto_testkit::tls::TestCa;

/// A TCP port free on loopback now (bound and released without a connection, so no TIME_WAIT).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_media_through_tcp_and_tls_turn_with_no_udp_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sotto-test-secret";
    let ca = TestCa::new("turn");
    let (files, _) = ca.write_server_cert(dir.path(), "turn");
    let (tcp_port, tls_port) = (free_tcp_port(), free_tcp_port());
    let turn = Coturn::start(&CoturnOptions {
        dir: dir.path(),
        netns: None,
        ip: "127.0.0.1".parse().unwrap(),
        port: tcp_port,
        secret,
        streams: Some(StreamListeners {
            udp: false,
            tls: Some((&files.cert_chain, &files.private_key, tls_port)),
        }),
    });

    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let urls = [
        format!("turn:127.0.0.1:{tcp_port}?transport=tcp"),
        format!("turns:127.0.0.1:{tls_port}?transport=tcp"),
    ];
    let mut legs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let grant = sotto_server::turn::credentials(secret.as_bytes(), &format!("u{i}"), expiry);
        let mut c = MediaConfig::loopback(i as u64 + 1).unwrap();
        c.relay_only = true;
        c.turn_tls = ca.client_tls(dir.path(), "ca");
        c.ice_servers = vec![IceServer {
            urls: vec![url.clone()],
            username: grant.username,
            credential: grant.password,
        }];
        legs.push(MediaPeer::new(c).await.unwrap().0);
    }
    let offer = legs[0]
        .create_offer()
        .await
        .expect("a relay candidate from TURN over TCP");
    assert!(offer.contains(" typ relay"), "offer has no relay candidate");
    let answer = legs[1]
        .accept_offer(&offer)
        .await
        .expect("a relay candidate from TURN over TLS");
    legs[0].accept_answer(&answer).await.unwrap();
    let ka = legs[0].local_key_material();
    let kb = legs[1].local_key_material();
    legs[0].install_remote_key(&kb).unwrap();
    legs[1].install_remote_key(&ka).unwrap();
    for p in &legs {
        assert!(
            p.wait_connected(Duration::from_secs(30)).await,
            "no connection through TCP/TLS TURN; coturn log tail: {}",
            tail(&turn.log_text())
        );
    }
    for p in &legs {
        p.start_sending().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = [legs[0].stats().await, legs[1].stats().await];
    for p in &legs {
        p.close().await.unwrap();
    }
    for s in &stats {
        assert_eq!(s.pair_type, Some(CandidateType::Relay), "{s:?}");
        assert!(
            s.video.frames_decrypted > 20 && s.audio.frames_decrypted > 50,
            "{s:?}"
        );
        assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0, "{s:?}");
    }
    // coturn saw both kinds of stream session
    let log = turn.log_text();
    assert!(log.contains("TCP"), "{}", tail(&log));
    assert!(log.contains("TLS"), "{}", tail(&log));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().rev().take(12).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
