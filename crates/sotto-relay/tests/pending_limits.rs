#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Connections that are not in a room yet are limited per address: a flood of silent control
//! connections from one address is closed at once past `MAX_PENDING_PER_ADDRESS`, while a
//! participant from another address is still served; the slots come back when the flood ends.
//! Real relay on loopback; the flood comes from 127.0.0.2 (Linux routes all of 127/8 to lo).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_relay::consts::MAX_PENDING_PER_ADDRESS;
use sotto_testkit::relay::{connect_from as from, TestRelay};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Whether the relay closed `s` (EOF) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A WebSocket client that sends `join` (with a valid token) and gets the relay's offer: the
/// relay served it.
async fn served(relay: &TestRelay) -> bool {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(relay.url()).await else {
        return false;
    };
    let token = relay.token("r1", "bob");
    let join = format!(
        r#"{{"type":"join","room":"r1","participant":"bob","token":"{}"}}"#,
        token.as_str()
    );
    ws.send(Message::text(join)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next()).await;
    matches!(first, Ok(Some(Ok(Message::Text(t)))) if t.contains("\"offer\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_from_one_address_does_not_block_another() {
    let relay = TestRelay::start().await;
    let addr = relay.local_addr();
    let mut flood = Vec::new();
    for _ in 0..MAX_PENDING_PER_ADDRESS {
        flood.push(from([127, 0, 0, 2], addr).await);
    }
    // the limit itself is held open, one more is closed at once
    let mut extra = from([127, 0, 0, 2], addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    for s in &mut flood {
        assert!(!closed_within(s, Duration::from_millis(20)).await, "held");
    }
    assert!(relay.pending_refused() >= 1);
    // another address is served meanwhile
    assert!(served(&relay).await, "a participant from elsewhere");
    // the flood ends: its address gets slots again
    drop(flood);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = from([127, 0, 0, 2], addr).await;
    assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
}
