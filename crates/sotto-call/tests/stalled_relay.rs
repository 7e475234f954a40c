#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A relay that accepts the TCP connection and then never answers (a stalled or overloaded
//! relay, or an attacker holding the connection) must not freeze the device: hangup still works
//! at once, and a join nobody answers ends the call after `RELAY_JOIN_TIMEOUT` with a typed
//! reason. Real signaling server, real engines, a real (silent) TCP listener on loopback.
//!
//! Regression (issue 12, bug 3): the engine before the call core awaited the relay join inside
//! its only task with no timeout; the hangup below was never processed and the first test
//! timed out.

use std::time::{Duration, Instant};

use sotto_call::consts::RELAY_JOIN_TIMEOUT;
use sotto_call::core::{CallError, CallState};
use sotto_call::engine::{default_machine, Command, Engine, MediaFactory, RelayChoice};
use sotto_call::state::EndReason;
use sotto_server::{RelayEntry, ServerConfig};
use sotto_testkit::device::device;
use sotto_testkit::media::loopback_factory;
use sotto_testkit::relay::relay_secret;
use sotto_testkit::server::{server_with, SERVER_ID};

/// A TCP listener that accepts and then says nothing, holding every connection open.
async fn silent_relay() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

fn media() -> MediaFactory {
    loopback_factory(|_| {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_relay_join_times_out_and_hangup_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _task) = silent_relay().await;
    // the server mints tokens for it (the join, not the tokens, is what stalls)
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.relays = vec![RelayEntry {
        url: relay.clone(),
        secret: relay_secret(),
    }];
    let srv = server_with(dir.path(), cfg).await;
    let (a, ae) = device(&srv.url(), "alice").await;
    let (b, be) = device(&srv.url(), "bob").await;
    let alice = Engine::spawn_with_relay(
        a,
        ae,
        media(),
        default_machine,
        Some(RelayChoice::Url(relay)),
    );
    let bob = Engine::spawn(b, be, media(), default_machine);

    // the join never returns: the caller is stuck before its offer goes out, yet hangs up at once
    alice.command(Command::Dial("bob".into())).await;
    alice
        .wait_state(CallState::Ringing, Duration::from_secs(10))
        .await
        .expect("dialling");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    alice.command(Command::Hangup).await;
    let s = alice
        .wait_state(CallState::Ended, Duration::from_secs(2))
        .await
        .expect("hangup while the relay join hangs");
    assert_eq!(s.end_reason, Some(EndReason::LocalHangup));
    let hangup = t0.elapsed();
    assert_eq!(
        bob.status().borrow().state,
        CallState::Idle,
        "no offer went out"
    );

    // left alone, the join gives up after RELAY_JOIN_TIMEOUT and the call ends by name
    let t0 = Instant::now();
    alice.command(Command::Dial("bob".into())).await;
    let mut rx = alice.status();
    let s = tokio::time::timeout(RELAY_JOIN_TIMEOUT + Duration::from_secs(10), async {
        loop {
            {
                let s = rx.borrow_and_update();
                if s.calls_ended == 2 {
                    return s.clone();
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the call ends");
    let took = t0.elapsed();
    let want = CallError::Timeout {
        what: "relay join",
        limit: RELAY_JOIN_TIMEOUT,
    };
    assert_eq!(s.end_reason, Some(EndReason::Failed(want.to_string())));
    assert!(took >= RELAY_JOIN_TIMEOUT, "{took:?}");
    eprintln!("hangup during a stalled join took {hangup:?}; the join gave up after {took:?}");
}
