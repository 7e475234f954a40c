#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Relay-only media through a REAL coturn (Debian's `turnserver`) with short-lived credentials
//! issued by the real signaling server, while tcpdump captures everything on loopback: the
//! selected pair is a relay pair, media flows, and no 16-byte window of any plaintext frame
//! appears in any UDP payload.

use sotto_server::tls::ClientTls;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sotto_call::media::{
    CandidateType, IceServer, IvfSource, MediaConfig, MediaKind, MediaPeer, TapFrame,
};
use sotto_call::sealed::Device;
use sotto_server::{MemoryStore, Server, ServerConfig, TurnConfig};
use sotto_testkit::coturn::{Coturn, CoturnOptions};
use tokio::sync::mpsc;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_tcpdump(file: &std::path::Path) -> Kill {
    let mut child = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-n", "-s", "0", "-w"])
        .arg(file)
        .arg("udp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is required (apt-get install tcpdump)");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");
    Kill(child)
}

/// UDP payloads from a classic pcap file (LINKTYPE_EN10MB for `lo`, or LINUX_SLL).
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    assert!(pcap.len() >= 24, "empty capture");
    let le = pcap[0..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let rd = |b: &[u8]| {
        if le {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }
    };
    let link = rd(&pcap[20..24]);
    let l2 = match link {
        1 => 14,
        113 => 16,
        0 => 4,
        other => panic!("unexpected link type {other}"),
    };
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let caplen = rd(&pcap[at + 8..at + 12]) as usize;
        let pkt = &pcap[at + 16..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        if pkt.len() < l2 + 28 {
            continue;
        }
        let ip = &pkt[l2..];
        if ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if ip.len() >= ihl + 8 {
            out.push(ip[ihl + 8..].to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_media_through_coturn_carries_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sotto-test-secret";
    let port = free_udp_port();
    let _turn = Coturn::start(&CoturnOptions {
        dir: dir.path(),
        netns: None,
        ip: "127.0.0.1".parse().unwrap(),
        port,
        secret,
        streams: None,
    });

    // credentials come from the signaling server (coturn REST scheme), not from the test
    let mut cfg = ServerConfig::new("turn.test");
    cfg.turn = Some(TurnConfig {
        secret: secret.as_bytes().to_vec(),
        uris: vec![format!("turn:127.0.0.1:{port}?transport=udp")],
        ttl_secs: 600,
    });
    let srv = Server::bind(cfg, Arc::new(MemoryStore::new()), "127.0.0.1:0")
        .await
        .unwrap();
    let (dev_a, _ea) = Device::register(&srv.url(), &ClientTls::default(), "turn.test", "alice")
        .await
        .unwrap();
    let (dev_b, _eb) = Device::register(&srv.url(), &ClientTls::default(), "turn.test", "bob")
        .await
        .unwrap();

    let pcap = dir.path().join("lo.pcap");
    let dump = start_tcpdump(&pcap);

    let mut legs = Vec::new();
    for (i, dev) in [&dev_a, &dev_b].into_iter().enumerate() {
        let grant = dev.client().turn_credentials().await.unwrap();
        assert!(grant.username.contains(':'), "REST username is expiry:user");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = MediaConfig::loopback(i as u64 + 1).unwrap();
        c.relay_only = true;
        c.ice_servers = vec![IceServer {
            urls: grant.uris.clone(),
            username: grant.username.clone(),
            credential: grant.password.clone(),
        }];
        c.tap = Some(tx);
        let (peer, _ev) = MediaPeer::new(c).await.unwrap();
        legs.push((peer, rx));
    }
    let offer = legs[0]
        .0
        .create_offer()
        .await
        .expect("relay candidates gathered");
    assert!(offer.contains(" typ relay"), "offer has no relay candidate");
    assert!(
        !offer.contains(" typ host"),
        "relay-only offer leaks host candidates"
    );
    let answer = legs[1].0.accept_offer(&offer).await.unwrap();
    legs[0].0.accept_answer(&answer).await.unwrap();
    let ka = legs[0].0.local_key_material();
    let kb = legs[1].0.local_key_material();
    legs[0].0.install_remote_key(&kb).unwrap();
    legs[1].0.install_remote_key(&ka).unwrap();
    assert!(
        legs[0].0.wait_connected(Duration::from_secs(30)).await,
        "no connection through TURN"
    );
    assert!(legs[1].0.wait_connected(Duration::from_secs(30)).await);
    for (p, _) in &legs {
        p.start_sending().await.unwrap();
    }
    // Canary: one datagram carrying 40 plaintext bytes of a frame camera 1 sends, crossing lo
    // while tcpdump runs. The scan below must find it and nothing else, which shows that the
    // capture, the pcap parser and the window scan together would catch a real leak.
    let canary = {
        let mut cam = IvfSource::camera1().unwrap();
        let f = (0..10)
            .map(|_| cam.next_frame())
            .max_by_key(Vec::len)
            .unwrap();
        assert!(f.len() > 140);
        let mut c = b"sotto-canary:".to_vec();
        c.extend_from_slice(&f[100..140]);
        c
    };
    let canary_rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&canary, canary_rx.local_addr().unwrap())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sa = legs[0].0.stats().await;
    let sb = legs[1].0.stats().await;
    for (p, _) in &legs {
        p.close().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(dump);

    assert_eq!(sa.pair_type, Some(CandidateType::Relay), "{sa:?}");
    assert_eq!(sb.pair_type, Some(CandidateType::Relay), "{sb:?}");
    assert!(
        sb.video.frames_decrypted > 20 && sb.audio.frames_decrypted > 50,
        "{sb:?}"
    );
    assert_eq!(sb.video.frames_failed + sb.audio.frames_failed, 0);

    let mut sent: Vec<TapFrame> = Vec::new();
    for (_, rx) in &mut legs {
        while let Ok(f) = rx.try_recv() {
            if f.sent {
                sent.push(f);
            }
        }
    }
    let payloads = udp_payloads(&std::fs::read(&pcap).unwrap());
    let turn_traffic: Vec<&Vec<u8>> = payloads.iter().filter(|p| p.len() > 100).collect();
    assert!(
        turn_traffic.len() > 100,
        "capture saw only {} media-sized UDP payloads",
        turn_traffic.len()
    );
    // every plaintext window of every frame (past the clear codec bytes) is absent
    let mut windows = std::collections::HashSet::new();
    for f in &sent {
        let clear = match f.kind {
            MediaKind::Video => {
                if f.frame[0] & 1 == 0 {
                    10
                } else {
                    3
                }
            }
            MediaKind::Audio => 1,
        };
        for w in f.frame[clear.min(f.frame.len())..].windows(16) {
            windows.insert(w.to_vec());
        }
    }
    assert!(windows.len() > 1000);
    let leaked: Vec<&Vec<u8>> = payloads
        .iter()
        .filter(|p| p.windows(16).any(|w| windows.contains(w)))
        .collect();
    // exactly the canary: the scan caught the one planted plaintext datagram and no media
    // payload. (On this path DTLS-SRTP encrypts once more, so this shows that nothing on
    // loopback carries plaintext; the SFU capture in sotto-relay shows what a relay that
    // terminates SRTP sees.)
    assert!(
        leaked.iter().any(|p| **p == canary),
        "the scan missed the planted canary: it could not catch a leak"
    );
    assert_eq!(
        leaked.len(),
        1,
        "{} UDP payloads carried plaintext",
        leaked.len() - 1
    );
}
