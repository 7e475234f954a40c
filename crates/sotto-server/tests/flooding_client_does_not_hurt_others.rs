//! While one client floods the server with envelopes as fast as its socket allows (and another
//! connects and never reads), a quiet pair's envelope latency stays within a stated bound:
//! p99 under flood ≤ max(4 × p99 without flood, p99 without flood + 30 ms).
//! Counts and time are bounded; loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use sotto_server::protocol::{encode_client_frame, ClientMessage, B64};
use sotto_server::{Durability, ServerConfig, SqliteStore};
use tokio_tungstenite::tungstenite::Message;

const SAMPLES: usize = 150;
const INTERVAL: Duration = Duration::from_millis(5);

async fn latencies(
    alice: &sotto_server::Client,
    bob: &sotto_server::Client,
    ev: &mut sotto_server::Events,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        alice.send("bob", 1, 60, vec![0; 200]).await.unwrap();
        let e = ev.next_envelope().await.unwrap();
        out.push(t.elapsed());
        bob.ack(e.envelope_id).await.unwrap();
        tokio::time::sleep(INTERVAL).await;
    }
    out.sort();
    out
}

fn p(v: &[Duration], q: f64) -> Duration {
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_does_not_raise_others_p99_beyond_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
    let mut cfg = ServerConfig::new(SERVER_ID);
    // the deaf client below fetches its own bundle as fast as it can (large answers); the
    // fetch limit is not what this test is about
    cfg.limits.bundle_fetches_per_minute = u32::MAX;
    let server = start(cfg, Arc::new(store)).await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, mut bob_ev, _) = register(&server, "bob").await;
    let (_sink, _es, _) = register(&server, "sink").await;

    let quiet = latencies(&alice, &bob, &mut bob_ev).await;

    // Flooder: pipelines sends without waiting, reading its answers in a separate task.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered, limited) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let ws = raw_register(&server.url(), "flooder", &identity()).await;
    let (mut tx, mut rx) = ws.split();
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let frame = encode_client_frame(
                1,
                &ClientMessage::Send {
                    to_user: "sink".into(),
                    to_device: 1,
                    ttl_secs: 60,
                    ciphertext: B64(vec![7; 1000]),
                },
            )
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if tx.send(Message::text(frame.clone())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let reader = {
        let (answered, limited) = (answered.clone(), limited.clone());
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = rx.next().await {
                answered.fetch_add(1, Ordering::Relaxed);
                if t.as_str().contains("rate_limited") {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // A second hostile client that sends requests and never reads their answers. The server
    // writes answers in batches, so the kernel's socket buffers (sender side up to 4 MiB here)
    // hold a lot of them; large answers (its own ~2.2 KB prekey bundle) fill them in a few
    // thousand requests instead of some 200 000 pings.
    let deaf_key = identity();
    let mut deaf = raw_register(&server.url(), "deaf", &deaf_key).await;
    let (spk, kpk) = signed_prekeys(&deaf_key);
    raw_send(
        &mut deaf,
        1,
        &ClientMessage::PublishPrekeys {
            signed_prekey: Some(spk),
            kem_prekey: Some(kpk),
            one_time_prekeys: vec![],
        },
    )
    .await;
    assert!(matches!(
        raw_recv(&mut deaf).await,
        Some(sotto_server::protocol::ServerMessage::Published { .. })
    ));
    let deaf_sent = Arc::new(AtomicU64::new(0));
    let deaf_count = deaf_sent.clone();
    let deaf_task = tokio::spawn(async move {
        let fetch = ClientMessage::FetchBundle {
            username: "deaf".into(),
            device_id: 1,
        };
        for i in 2..1_000_000u64 {
            if tokio::time::timeout(
                Duration::from_millis(500),
                deaf.send(Message::text(encode_client_frame(i, &fetch).unwrap())),
            )
            .await
            .map(|r| r.is_err())
            .unwrap_or(true)
            {
                break;
            }
            deaf_count.fetch_add(1, Ordering::Relaxed);
        }
        deaf
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let flooded = latencies(&alice, &bob, &mut bob_ev).await;
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    reader.abort();
    let _ = deaf_task.await;

    let (q50, q99, f50, f99) = (
        p(&quiet, 0.5),
        p(&quiet, 0.99),
        p(&flooded, 0.5),
        p(&flooded, 0.99),
    );
    let bound = (q99 * 4).max(q99 + Duration::from_millis(30));
    eprintln!(
        "quiet p50 {q50:?} p99 {q99:?}; under flood p50 {f50:?} p99 {f99:?} (bound {bound:?}); flooder sent {} frames, got {} answers, {} rate_limited; deaf client sent {} requests",
        sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed), limited.load(Ordering::Relaxed),
        deaf_sent.load(Ordering::Relaxed)
    );
    assert!(
        sent.load(Ordering::Relaxed) > 1000,
        "the flood really happened"
    );
    assert!(
        limited.load(Ordering::Relaxed) > 0,
        "the flooder was rate limited"
    );
    assert!(
        f99 <= bound,
        "p99 under flood {f99:?} exceeds bound {bound:?}"
    );
    assert!(
        server.metrics_text().contains("code=\"slow_consumer\""),
        "the deaf client was cut off"
    );
}
