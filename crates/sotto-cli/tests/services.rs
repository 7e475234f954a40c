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
