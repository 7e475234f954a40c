#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The relay's control channel over `wss://`: a real relay on loopback with certificates of a
//! CA made at test time (not in the system's roots); participants answer with plain webrtc-rs
//! peers on loopback.

use std::time::Duration;

use sotto_relay::client::{join, ClientTls, JoinError, RoomHandle};
use sotto_relay::protocol::ServerMsg;
use sotto_relay::tls::{CertificateError, Error as TlsError, TlsFiles};
use sotto_relay::RelayError;
use sotto_testkit::plain::PlainPeer;
use sotto_testkit::relay::TestRelay;
use sotto_testkit::tls::TestCa;

/// A loopback relay whose control channel serves the certificate in `files`.
async fn tls_relay(files: &TlsFiles) -> TestRelay {
    TestRelay::start_with(|cfg| cfg.tls = Some(files.clone())).await
}

/// Joins `room` as `name` at `relay`, verifying it against `tls`, answering with `peer`.
async fn join_as(
    relay: &TestRelay,
    tls: &ClientTls,
    room: &str,
    name: &str,
    peer: &PlainPeer,
) -> Result<RoomHandle, JoinError> {
    let token = relay.token(room, name);
    join(&relay.url(), tls, room, name, Some(&token), |offer| {
        peer.answer(offer)
    })
    .await
}

fn unknown_issuer(r: Result<RoomHandle, JoinError>) -> bool {
    matches!(
        r,
        Err(JoinError::Tls(TlsError::Certificate(
            CertificateError::UnknownIssuer
        )))
    )
}

/// The next membership event of `room`.
async fn next_event(room: &mut RoomHandle) -> ServerMsg {
    tokio::time::timeout(Duration::from_secs(10), room.events.recv())
        .await
        .expect("an event in time")
        .expect("the control channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_joins_a_room_over_wss_with_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("relay");
    let (files, _) = ca.write_server_cert(dir.path(), "relay");
    let relay = tls_relay(&files).await;
    assert!(relay.url().starts_with("wss://127.0.0.1:"));
    let tls = ca.client_tls(dir.path(), "ca");

    let (pa, pb) = (PlainPeer::new().await, PlainPeer::new().await);
    let mut alice = join_as(&relay, &tls, "room", "alice", &pa).await.unwrap();
    assert!(alice.members.is_empty());
    pa.wait_connected("alice").await;
    let bob = join_as(&relay, &tls, "room", "bob", &pb).await.unwrap();
    assert_eq!(bob.members, vec!["alice".to_string()]);
    assert_eq!(
        next_event(&mut alice).await,
        ServerMsg::MemberJoined {
            participant: "bob".into()
        }
    );
    assert_eq!(relay.members("room"), vec!["alice", "bob"]);
    for p in [&pa, &pb] {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_of_an_unknown_ca_is_refused_with_a_certificate_error() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = TestCa::new("unknown").write_server_cert(dir.path(), "relay");
    let relay = tls_relay(&files).await;
    let no_offer = |_offer: String| async { Err::<String, _>("an offer was made") };
    let r = join(
        &relay.url(),
        &ClientTls::system(),
        "room",
        "alice",
        Some(&relay.token("room", "alice")),
        no_offer,
    )
    .await;
    assert!(unknown_issuer(r));
    assert!(relay.members("room").is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn plain_ws_to_a_remote_relay_is_refused_before_connecting() {
    let no_offer = |_offer: String| async { Err::<String, _>("an offer was made") };
    for url in ["ws://192.0.2.1:8444", "ws://relay.invalid:8444"] {
        let started = std::time::Instant::now();
        let r = join(url, &ClientTls::system(), "room", "alice", None, no_offer).await;
        assert!(
            matches!(r, Err(JoinError::Tls(TlsError::PlaintextToRemoteHost))),
            "{url}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_reaches_new_joins_and_spares_joined_participants() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (TestCa::new("a"), TestCa::new("b"));
    let (files, _) = ca_a.write_server_cert(dir.path(), "relay");
    let relay = tls_relay(&files).await;
    let (trusts_a, trusts_b) = (
        ca_a.client_tls(dir.path(), "ca-a"),
        ca_b.client_tls(dir.path(), "ca-b"),
    );
    let (pa, pb, pc) = (
        PlainPeer::new().await,
        PlainPeer::new().await,
        PlainPeer::new().await,
    );
    let mut alice = join_as(&relay, &trusts_a, "room", "alice", &pa)
        .await
        .unwrap();
    assert!(unknown_issuer(
        join_as(&relay, &trusts_b, "room", "bob", &pb).await
    ));

    ca_b.server_cert().write(&files);
    relay.reload_tls().unwrap();
    assert!(unknown_issuer(
        join_as(&relay, &trusts_a, "room", "carol", &pc).await
    ));
    let _bob = join_as(&relay, &trusts_b, "room", "bob", &pb)
        .await
        .unwrap();
    // alice's control channel, opened under certificate A, is still up: she hears bob
    assert_eq!(
        next_event(&mut alice).await,
        ServerMsg::MemberJoined {
            participant: "bob".into()
        }
    );
    assert_eq!(relay.members("room"), vec!["alice", "bob"]);
    for p in [&pa, &pb, &pc] {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_on_reload_is_refused_and_the_old_certificate_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("a");
    let (files, _) = ca.write_server_cert(dir.path(), "relay");
    let relay = tls_relay(&files).await;
    let tls = ca.client_tls(dir.path(), "ca");

    std::fs::write(&files.cert_chain, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let e = relay.reload_tls().unwrap_err();
    assert!(
        matches!(e, RelayError::Tls(TlsError::MalformedPem { .. })),
        "{e}"
    );
    std::fs::write(&files.private_key, "").unwrap();
    ca.server_cert().write(&TlsFiles::new(
        &files.cert_chain,
        dir.path().join("unused.key"),
    ));
    let e = relay.reload_tls().unwrap_err();
    assert!(
        matches!(e, RelayError::Tls(TlsError::NoPrivateKey { .. })),
        "{e}"
    );

    // still serving certificate A: a participant trusting A's CA joins
    let peer = PlainPeer::new().await;
    join_as(&relay, &tls, "room", "alice", &peer).await.unwrap();
    let _ = peer.pc.close().await;

    // and a relay without TLS has nothing to reload
    let plain = TestRelay::start().await;
    assert!(plain.url().starts_with("ws://"));
    assert!(matches!(
        plain.reload_tls(),
        Err(RelayError::Tls(TlsError::NotConfigured))
    ));
    relay.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_silent_through_the_handshake_is_closed_at_handshake_timeout() {
    use sotto_relay::consts::HANDSHAKE_TIMEOUT;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = TestCa::new("a").write_server_cert(dir.path(), "relay");
    let relay = tls_relay(&files).await;
    let mut tcp = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // a second before the limit the relay still waits for a ClientHello
    let before = HANDSHAKE_TIMEOUT - Duration::from_secs(1);
    assert!(tokio::time::timeout(before, tcp.read(&mut buf))
        .await
        .is_err());
    // a second after it, the connection is closed
    let closed = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
        .await
        .expect("still open after HANDSHAKE_TIMEOUT");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    relay.shutdown().await;
}
