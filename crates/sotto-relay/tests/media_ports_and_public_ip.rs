#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A relay on a real host: its media sockets bind only the ports of `--udp-ports` (and a join
//! past the range is refused by name), and behind 1:1 NAT its offer's host candidates carry
//! `--public-ip`. Real relay and real webrtc-rs participants on loopback.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

use sotto_relay::client::{join, ClientTls, JoinError, RoomHandle};
use sotto_relay::nat::PublicIpError;
use sotto_relay::ports::UdpPortRange;
use sotto_relay::protocol::ErrorCode;
use sotto_relay::{serve, RelayConfig, RelayError};
use sotto_testkit::plain::PlainPeer;
use sotto_testkit::relay::{participant, relay_secret, RelayAccess, TestRelay};

/// The tests here run real webrtc-rs peers; one at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` consecutive UDP ports free on 127.0.0.1 now (each bound once and released), away from the
/// kernel's ephemeral range (32768-60999 by default) so nothing else draws them meanwhile.
fn free_range(n: u16) -> UdpPortRange {
    let mut base = 20_000 + (std::process::id() % 1000) as u16 * 10;
    loop {
        let all_free = (base..base + n).all(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
        if all_free {
            return UdpPortRange::new(base, base + n - 1).unwrap();
        }
        base += n;
        assert!(
            base < 32_000,
            "no {n} free UDP ports below the ephemeral range"
        );
    }
}

/// `(address, port, type)` of every `a=candidate` line of `sdp`.
fn candidates(sdp: &str) -> Vec<(IpAddr, u16, String)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let f: Vec<&str> = c.split(' ').collect();
            (
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
                f[7].to_owned(),
            )
        })
        .collect()
}

/// Joins room `r` of `relay` as `name` (with a valid token) answering with `peer`.
async fn join_with(
    relay: &TestRelay,
    name: &str,
    peer: &PlainPeer,
) -> Result<RoomHandle, JoinError> {
    let token = relay.token("r", name);
    join(
        &relay.control_url(),
        &ClientTls::default(),
        "r",
        name,
        Some(&token),
        |offer| peer.answer(offer),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ports_stay_in_the_udp_port_range_and_media_flows() {
    let _serial = SERIAL.lock().await;
    let range = free_range(4);
    let relay = TestRelay::start_with(|cfg| cfg.udp_ports = Some(range)).await;
    let alice = participant(&relay, "r", "alice", 1).await;
    let bob = participant(&relay, "r", "bob", 2).await;
    for p in [&alice, &bob] {
        let cands = candidates(&p.relay_offer);
        assert!(!cands.is_empty(), "{}: no candidates", p.name);
        for (addr, port, kind) in cands {
            assert!(
                range.contains(port),
                "{}: candidate {addr}:{port} ({kind}) outside {range}",
                p.name
            );
        }
    }
    bob.peer
        .install_remote_key(&alice.peer.local_key_material())
        .unwrap();
    alice.peer.start_sending().await.unwrap();
    // bob decrypts alice's video through the relay's ranged ports
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = bob.peer.stats().await;
        assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0, "{s:?}");
        if s.video.frames_decrypted >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob decrypted too little: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.peer.close().await.unwrap();
    bob.peer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_past_the_udp_port_range_is_refused_until_a_port_is_free() {
    let _serial = SERIAL.lock().await;
    let range = free_range(2);
    let relay = TestRelay::start_with(|cfg| cfg.udp_ports = Some(range)).await;
    let (pa, pb, pc) = (
        PlainPeer::new().await,
        PlainPeer::new().await,
        PlainPeer::new().await,
    );
    let a = join_with(&relay, "a", &pa).await.unwrap();
    let _b = join_with(&relay, "b", &pb).await.unwrap();
    match join_with(&relay, "c", &pc).await {
        Err(JoinError::Refused { code, .. }) => assert_eq!(code, ErrorCode::NoMediaPort),
        Err(e) => panic!("not refused by the relay: {e}"),
        Ok(_) => panic!("a third participant joined on two ports"),
    }
    // a leaver's port comes back (once its connection is closed)
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pd = PlainPeer::new().await;
        match join_with(&relay, "d", &pd).await {
            Ok(_) => break,
            Err(JoinError::Refused {
                code: ErrorCode::NoMediaPort,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the freed port was not reused: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_one_to_one_nat_the_offer_advertises_the_public_ip() {
    let _serial = SERIAL.lock().await;
    let public: IpAddr = "203.0.113.7".parse().unwrap(); // TEST-NET-3, never routed
    let relay = TestRelay::start_with(|cfg| cfg.public_ip = Some(public)).await;
    let offered = std::sync::Mutex::new(String::new());
    let token = relay.token("r", "alice");
    let r = join(
        &relay.control_url(),
        &ClientTls::default(),
        "r",
        "alice",
        Some(&token),
        |offer| {
            offered.lock().unwrap().clone_from(&offer);
            async { Err::<String, _>("only the offer is wanted") }
        },
    )
    .await;
    assert!(matches!(r, Err(JoinError::Answer(_))));
    let offer = offered.lock().unwrap().clone();
    let hosts: Vec<_> = candidates(&offer)
        .into_iter()
        .filter(|(_, _, kind)| kind == "host")
        .collect();
    assert!(!hosts.is_empty(), "no host candidate in {offer}");
    assert!(
        hosts.iter().all(|(addr, _, _)| *addr == public),
        "{hosts:?}"
    );
    // the private address appears nowhere participants can see it
    assert!(!offer.contains("127.0.0.1"), "{offer}");
}

#[tokio::test]
async fn a_public_ip_that_cannot_stand_for_the_bind_address_is_refused_at_start() {
    let mut cfg = RelayConfig::loopback(relay_secret());
    cfg.bind_ip = IpAddr::from([0, 0, 0, 0]);
    cfg.public_ip = Some("203.0.113.7".parse().unwrap());
    assert!(matches!(
        serve(cfg).await,
        Err(RelayError::PublicIp(PublicIpError::WildcardBind))
    ));
    let mut cfg = RelayConfig::loopback(relay_secret());
    cfg.public_ip = Some("2001:db8::7".parse().unwrap());
    assert!(matches!(
        serve(cfg).await,
        Err(RelayError::PublicIp(PublicIpError::Family))
    ));
}
