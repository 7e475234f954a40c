#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ICE servers a client uses by default are the ones the signaling server advertises with
//! its TURN credentials (no `--ice` flag anywhere here), and relay-only (privacy) mode tells the
//! peer no host address: a real `sotto server` with a `[turn]` section, a real coturn on
//! loopback, two `sotto` scripts.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{sotto, start_command, summary, text, SpawnGuarded, Summary, SOTTO};
use sotto_call::media::CandidateType;
use sotto_testkit::coturn::{Coturn, CoturnOptions};

const SERVER_ID: &str = "ice.test";
const SECRET: &str = "ice-test-turn-secret";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// alice calls bob (alice with `alice_flags`), 2 s of media; both summaries.
fn call(alice_flags: &[&str]) -> (Summary, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _turn = Coturn::start(&CoturnOptions {
        dir: dir.path(),
        netns: None,
        ip: "127.0.0.1".parse().unwrap(),
        port,
        secret: SECRET,
        streams: None,
    });
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
db = "{db}"
server_id = "{SERVER_ID}"
[turn]
secret = "{SECRET}"
uris = ["stun:127.0.0.1:{port}", "turn:127.0.0.1:{port}?transport=udp"]
"#,
            db = dir.path().join("s.db").display(),
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(SOTTO);
    cmd.arg("server").arg("--config").arg(&config);
    let (_server, addr) = start_command(cmd, "listening on");
    let url = format!("ws://{addr}");
    let home = dir.path().join("home");
    for user in ["alice", "bob"] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    let rec = dir.path();
    let bscript = rec.join("bob.txt");
    std::fs::write(
        &bscript,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let ascript = rec.join("alice.txt");
    std::fs::write(
        &ascript,
        "wait-state connected\nwait 2000\nhangup\nwait 300\n",
    )
    .unwrap();
    let bob = sotto(&home)
        .args(["answer", "--user", "bob", "--script"])
        .arg(&bscript)
        .arg("--record")
        .arg(rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    std::thread::sleep(Duration::from_millis(500));
    let a = sotto(&home)
        .args(["call", "bob", "--user", "alice"])
        .args(alice_flags)
        .arg("--script")
        .arg(&ascript)
        .arg("--record")
        .arg(rec)
        .output()
        .unwrap();
    let b = bob.wait_with_output().unwrap();
    let (a, b) = (summary("alice", text(&a)), summary("bob", text(&b)));
    for (who, s) in [("alice", &a), ("bob", &b)] {
        println!(
            "{who}: pair {:?}/{:?}, setup {:?} ms",
            s.local, s.remote, s.setup_ms
        );
        assert!(s.decrypted > 20, "{who} decrypted too little:\n{}", s.out);
        assert_eq!(s.failed, 0, "{who}:\n{}", s.out);
    }
    (a, b)
}

#[test]
fn relay_only_call_uses_the_servers_turn_and_tells_the_peer_no_host_address() {
    let (a, b) = call(&["--relay-only"]);
    // TURN reached with nothing but what the signaling server advertised
    assert_eq!(a.local, Some(CandidateType::Relay), "{}", a.out);
    assert_eq!(b.remote, Some(CandidateType::Relay), "{}", b.out);
    // what bob was told about alice: relay candidates on coturn's address, and no address they
    // were derived from (before: `raddr <alice's interface address>`)
    assert!(!b.remote_candidates.is_empty(), "{}", b.out);
    for (typ, addr, related) in &b.remote_candidates {
        assert_eq!(*typ, CandidateType::Relay, "{}", b.out);
        assert_eq!(addr, "127.0.0.1", "{}", b.out);
        assert_eq!(
            related, "0.0.0.0",
            "alice's host address reached bob:\n{}",
            b.out
        );
    }
}

#[test]
fn with_stun_and_turn_advertised_a_direct_pair_wins_over_the_relay() {
    let (a, b) = call(&[]);
    // the relay was gathered and offered (bob saw it) but not used: direct beats relay
    assert!(
        b.remote_candidates
            .iter()
            .any(|(t, _, _)| *t == CandidateType::Relay),
        "no relay candidate gathered from the advertised TURN server:\n{}",
        b.out
    );
    for (who, s) in [("alice", &a), ("bob", &b)] {
        assert!(
            s.local.is_some_and(|t| !t.is_relay())
                && !s.remote.is_some_and(CandidateType::is_relay),
            "{who} took the relay although a direct pair works:\n{}",
            s.out
        );
    }
}
