#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! NAT traversal, proven with the real `sotto` binary in network namespaces the test makes
//! (root only; skipped with a message otherwise): the signaling server (wss://, a CA made at
//! test time) and coturn on a public network, alice and bob each behind a router that
//! masquerades and drops unsolicited input ([`sotto_testkit::netns`]). Both clients use the
//! same settings in every case, no ICE flags at all: the ICE servers are the ones the signaling
//! server advertises (STUN, and TURN over UDP, TCP and TLS), and ICE finds the path.

mod common;

use std::path::PathBuf;

use common::{lab_call, sotto_in, start_command, summary, text, ChildGuard, Summary};
use sotto_call::media::CandidateType;
use sotto_testkit::coturn::{Coturn, CoturnOptions, StreamListeners};
use sotto_testkit::netns::{self, Nat, NatLab, HOME_A_LAN, PUBLIC_IP};
use sotto_testkit::tls::TestCa;

const SERVER_ID: &str = "nat.test";
const TURN_SECRET: &str = "nat-test-turn-secret";
/// Media that must have crossed a path for it to count as "media flowed" (a few seconds of
/// the bundled video and audio are several hundred kB).
const MEDIA_BYTES: u64 = 50_000;

/// The lab and its servers. Fields drop in order: servers first, namespaces last.
struct World {
    _server: ChildGuard,
    turn: Coturn,
    lab: NatLab,
    ca_file: PathBuf,
    home: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.turn.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("coturn log tail (newest first):\n{}", tail.join("\n"));
        }
    }
}

/// The lab, or `None` (with the reason printed) where it cannot be built.
fn world(test: &str, nat: Nat) -> Option<World> {
    if let Err(why) = netns::available() {
        println!("SKIPPED {test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = NatLab::new(nat);
    let ca = TestCa::new("nat");
    let ca_file = ca.write_ca(dir.path(), "ca");
    let public = PUBLIC_IP.to_string();
    let (files, _) = ca.write_server_cert_for(dir.path(), "server", &[public.as_str()]);
    let turn = Coturn::start(&CoturnOptions {
        dir: dir.path(),
        netns: Some(&lab.public),
        ip: NatLab::public_ip(),
        port: 3478,
        secret: TURN_SECRET,
        streams: Some(StreamListeners {
            udp: true,
            tls: Some((&files.cert_chain, &files.private_key, 5349)),
        }),
    });
    // the one place ICE servers are configured: the signaling server advertises STUN and TURN
    // (over UDP, TCP and TLS)
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "{public}:8443"
db = "{db}"
server_id = "{SERVER_ID}"
[tls]
cert = "{cert}"
key = "{key}"
[turn]
secret = "{TURN_SECRET}"
uris = ["stun:{public}:3478", "turn:{public}:3478?transport=udp", "turn:{public}:3478?transport=tcp", "turns:{public}:5349?transport=tcp"]
"#,
            db = dir.path().join("s.db").display(),
            cert = files.cert_chain.display(),
            key = files.private_key.display(),
        ),
    )
    .unwrap();
    let mut cmd = NatLab::command(&lab.public, common::SOTTO);
    cmd.arg("server").arg("--config").arg(&config);
    let (server, _) = start_command(cmd, "listening on");
    let home = dir.path().join("home");
    let url = format!("wss://{public}:8443");
    for (ns, user) in [(&lab.home_a, "alice"), (&lab.home_b, "bob")] {
        let o = sotto_in(ns, &home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID, "--ca"])
            .arg(&ca_file)
            .output()
            .unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    Some(World {
        _server: server,
        turn,
        lab,
        ca_file,
        home,
        dir,
    })
}

/// alice (home A) calls bob (home B), media for 3 s, alice hangs up; both summaries.
fn call(w: &World, alice_flags: &[&str]) -> (Summary, Summary) {
    let (a, b) = lab_call(
        (&w.lab.home_a, &w.lab.home_b),
        &w.home,
        &w.ca_file,
        w.dir.path(),
        alice_flags,
    );
    let (a, b) = (summary("alice", a), summary("bob", b));
    for (who, s) in [("alice", &a), ("bob", &b)] {
        println!(
            "{who}: pair {:?}/{:?}, setup {:?} ms, decrypted {}",
            s.local, s.remote, s.setup_ms, s.decrypted
        );
        assert!(s.decrypted > 20, "{who} decrypted too little:\n{}", s.out);
        assert_eq!(s.failed, 0, "{who}:\n{}", s.out);
    }
    (a, b)
}

#[test]
fn call_connects_peer_to_peer_through_cone_nats() {
    let Some(w) = world("call_connects_peer_to_peer_through_cone_nats", Nat::Cone) else {
        return;
    };
    let direct = |s: &Summary| {
        s.local.is_some_and(|t| !t.is_relay()) && !s.remote.is_some_and(CandidateType::is_relay)
    };
    let (mut a, mut b) = call(&w, &[]);
    if !(direct(&a) && direct(&b)) {
        // rtc-ice accepts a relay pair 2 s into its checks; on a loaded 2-core machine the
        // direct pair had now and then not succeeded by then (once in about ten CI runs,
        // 2026-12-07: setup 2152 ms, bob on relay/srflx). A second call must then go direct:
        // with NATs that block hole punching both would relay.
        println!(
            "first call relayed (setup {:?} ms): calling again\n{}",
            b.setup_ms, b.out
        );
        (a, b) = call(&w, &[]);
    }
    for (who, s) in [("alice", &a), ("bob", &b)] {
        assert!(
            direct(s),
            "{who}: a relay pair although the NATs let a direct one through:\n{}",
            s.out
        );
    }
    // media went from NAT to NAT, both ways, not through the public side's TURN server
    for router in [&w.lab.router_a, &w.lab.router_b] {
        let bytes = w.lab.bytes_from_peer_nat(router);
        assert!(
            bytes > MEDIA_BYTES,
            "{router}: only {bytes} bytes from the other NAT's public address"
        );
    }
}

#[test]
fn call_falls_back_to_turn_through_symmetric_nats() {
    let Some(w) = world(
        "call_falls_back_to_turn_through_symmetric_nats",
        Nat::Symmetric,
    ) else {
        return;
    };
    let (a, b) = call(&w, &[]);
    // one pair, seen from both ends: alice's remote candidate is bob's local one (webrtc-rs
    // does not always report the remote side, e.g. when a check found it before the trickled
    // candidate came), so the pair goes through TURN when either end's local candidate is relay
    assert!(
        a.local.is_some_and(CandidateType::is_relay)
            || b.local.is_some_and(CandidateType::is_relay),
        "no relay in the pair behind symmetric NATs:\n{}\n{}",
        a.out,
        b.out
    );
    // and nothing went straight from NAT to NAT
    for router in [&w.lab.router_a, &w.lab.router_b] {
        assert_eq!(w.lab.bytes_from_peer_nat(router), 0, "{router}");
    }
}

#[test]
fn relay_only_mode_hides_the_lan_address() {
    let Some(w) = world("relay_only_mode_hides_the_lan_address", Nat::Cone) else {
        return;
    };
    let (a, b) = call(&w, &["--relay-only"]);
    assert_eq!(a.local, Some(CandidateType::Relay), "{}", a.out);
    // what bob was told about alice: relay candidates only, none carrying her LAN address
    let lan = HOME_A_LAN.to_string();
    assert!(
        !b.remote_candidates.is_empty(),
        "bob saw no candidate:\n{}",
        b.out
    );
    for (typ, addr, related) in &b.remote_candidates {
        assert_eq!(*typ, CandidateType::Relay, "{}", b.out);
        assert_ne!(addr, &lan, "{}", b.out);
        assert_ne!(related, &lan, "alice's LAN address reached bob:\n{}", b.out);
    }
    assert!(!b.out.contains(&lan), "{}", b.out);
}

/// Issue 14: a network that lets no UDP out (only TCP) had no path at all: webrtc-rs 0.21.1
/// skips TCP and TLS TURN. With the same settings as every other case, the call now goes
/// through TURN over a stream (the client's loopback bridge). Fails without the bridge: no
/// relay candidate is gathered and the call never connects (checked).
#[test]
fn call_goes_through_turn_over_tcp_when_no_udp_gets_out() {
    let Some(w) = world(
        "call_goes_through_turn_over_tcp_when_no_udp_gets_out",
        Nat::UdpBlocked,
    ) else {
        return;
    };
    let (a, b) = call(&w, &[]);
    for (who, s) in [("alice", &a), ("bob", &b)] {
        assert_eq!(s.local, Some(CandidateType::Relay), "{who}:\n{}", s.out);
    }
    // the clients did try UDP (STUN, UDP TURN, host pairs), and the routers dropped it
    for router in [&w.lab.router_a, &w.lab.router_b] {
        assert!(w.lab.udp_blocked_bytes(router) > 0, "{router}");
        assert_eq!(w.lab.bytes_from_peer_nat(router), 0, "{router}");
    }
}
