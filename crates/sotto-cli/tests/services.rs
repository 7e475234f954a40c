#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto server` and `sotto relay` start, say where they listen, accept real connections and
//! stop on SIGINT.

mod common;

use std::process::Command;

use common::{relay_secret_file, start, start_relay, ChildGuard};

/// SIGINT, then the exit must be clean; the guard is only released once the signal was sent.
fn stop(c: ChildGuard) {
    Command::new("kill")
        .arg("-INT")
        .arg(c.id().to_string())
        .status()
        .unwrap();
    let st = c.into_inner().wait().unwrap();
    assert!(st.success(), "{st:?}");
}

#[test]
fn server_and_relay_subcommands_serve_real_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (server, addr) = start(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        "listening on",
    );
    let secret = relay_secret_file(dir.path());
    let (relay, url) = start_relay(&secret, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // the relay refuses a bad join with its typed error
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        use futures_util::{SinkExt, StreamExt};
        ws.send(tokio_tungstenite::tungstenite::Message::text("{}"))
            .await
            .unwrap();
        let r = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(r.contains("bad_message"), "{r}");
        // and a join without a token with its own code
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"join","room":"r","participant":"bob"}"#,
        ))
        .await
        .unwrap();
        let r = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(r.contains("token_missing"), "{r}");
        // the server speaks the signaling protocol: a fresh connection gets a challenge
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
            .await
            .unwrap();
        let r = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(r.contains("challenge"), "{r}");
    });
    stop(relay);
    stop(server);
    assert!(db.exists(), "the server's SQLite file");
}

#[test]
fn a_guarded_child_is_killed_when_the_test_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _url) = start_relay(&relay_secret_file(dir.path()), &[]);
    let pid = relay.id();
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _relay = relay;
        panic!("a failing test");
    }));
    assert!(r.is_err());
    // killed and reaped by the guard: no process, not even a zombie
    assert!(!alive(), "relay {pid} still running");
}

#[test]
fn a_relay_without_a_usable_token_secret_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let no_secret = common::sotto(&home)
        .env_remove("SOTTO_RELAY_TOKEN_SECRET_FILE")
        .args(["relay", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!no_secret.status.success());
    assert!(
        common::text(&no_secret).contains("--token-secret-file"),
        "{}",
        common::text(&no_secret)
    );
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too short\n").unwrap();
    let o = common::sotto(&home)
        .args(["relay", "--listen", "127.0.0.1:0", "--token-secret-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        common::text(&o).contains("MIN_SECRET_LEN"),
        "{}",
        common::text(&o)
    );
}

/// `sotto relay` with its arguments and a clean `SOTTO_RELAY_*` environment, run to its exit.
/// (with a valid token secret, so that only the flag under test can make it fail).
fn relay_exit(secret: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Option<i32> {
    let mut c = Command::new(common::SOTTO);
    c.arg("relay").args(["--listen", "127.0.0.1:0"]).args(args);
    c.arg("--token-secret-file").arg(secret);
    for v in [
        "SOTTO_RELAY_PUBLIC_IP",
        "SOTTO_RELAY_UDP_PORTS",
        "SOTTO_RELAY_BIND_IP",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    out.status.code()
}

#[test]
fn relay_media_flags_are_checked_before_the_relay_starts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = relay_secret_file(dir.path());
    // bad ranges: a usage error (2) from the argument parser, flag or environment
    for bad in ["500-400", "0-10", "40000", "40000-70000"] {
        assert_eq!(
            relay_exit(&secret, &["--udp-ports", bad], &[]),
            Some(2),
            "{bad}"
        );
    }
    assert_eq!(
        relay_exit(&secret, &[], &[("SOTTO_RELAY_UDP_PORTS", "9-1")]),
        Some(2)
    );
    // a public address for a wildcard bind address: refused at start (1)
    assert_eq!(
        relay_exit(
            &secret,
            &["--bind-ip", "0.0.0.0"],
            &[("SOTTO_RELAY_PUBLIC_IP", "203.0.113.7")]
        ),
        Some(1)
    );
    // good ones: the relay starts and stops cleanly
    let (relay, _url) = start_relay(
        &secret,
        &["--udp-ports", "40000-40999", "--public-ip", "203.0.113.7"],
    );
    stop(relay);
}
