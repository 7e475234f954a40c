#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto server` and `sotto relay` start, say where they listen, accept real connections and
//! stop on SIGINT.

mod common;

use std::process::Command;

use common::{start, ChildGuard};

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
    let (relay, url) = start(&["relay", "--listen", "127.0.0.1:0"], "relay control on");
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
    let (relay, _url) = start(&["relay", "--listen", "127.0.0.1:0"], "relay control on");
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
