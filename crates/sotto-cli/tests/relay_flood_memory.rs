#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A flood of silent control connections does not grow the relay's memory without bound, the
//! memory comes back when the flood ends, and a participant with a token is served during it.
//! The real `sotto relay` process (its own RSS, read from /proc); 1000 connections from 125
//! loopback addresses (Linux routes all of 127/8 to lo). Measured on main a50f174, before the
//! pre-join limits: 6000 such connections took the relay from 353 MB to 921 MB.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{relay_secret_file, start_relay};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

/// Growth of the relay's RSS the flood may cause: `MAX_PENDING` (256) held connections of a
/// few tens of KB each, with room for allocator noise.
const MAX_GROWTH_KB: u64 = 48 * 1024;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_keeps_the_relay_small_and_serving() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!(
            "SKIPPED a_flood_of_silent_connections_keeps_the_relay_small_and_serving: no /proc"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = relay_secret_file(dir.path());
    let (relay, url) = start_relay(&secret_file, &[]);
    let pid = relay.id();
    let addr: SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb(pid);

    let mut flood = Vec::new();
    for a in 0..125u8 {
        for _ in 0..8 {
            let s = TcpSocket::new_v4().unwrap();
            s.bind((Ipv4Addr::new(127, 0, 1, a.wrapping_add(2)), 0).into())
                .unwrap();
            if let Ok(c) = s.connect(addr).await {
                flood.push(c);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kb(pid);

    // a participant with a valid token is served meanwhile
    let secret = sotto_relay::admission::RelaySecret::load(&secret_file).unwrap();
    let token = sotto_testkit::relay::mint_token(&secret, &url, "r1", "bob");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let join = format!(
        r#"{{"type":"join","room":"r1","participant":"bob","token":"{}"}}"#,
        token.as_str()
    );
    ws.send(Message::text(join)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(Message::Text(ref t)))) if t.contains("\"offer\"")),
        "a participant was not served during the flood: {first:?}"
    );
    drop(ws);

    drop(flood);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid);
    println!(
        "relay RSS: {before} kB before, {during} kB with 1000 silent connections, {after} kB after"
    );
    assert!(
        during.saturating_sub(before) < MAX_GROWTH_KB,
        "the flood grew the relay by {} kB",
        during - before
    );
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KB,
        "the relay kept {} kB after the flood",
        after - before
    );
}
