//! An envelope not delivered within its time to live is dropped (clock injected), and TTLs are
//! bounded by MAX_ENVELOPE_TTL_SECS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sotto_server::consts::MAX_ENVELOPE_TTL_SECS;
use sotto_server::{Client, Error, ErrorCode, ManualClock, ServerConfig};

on_both_backends!(expired_envelopes_are_not_delivered, expired_not_delivered);
async fn expired_not_delivered(backend: Backend) {
    let clock = ManualClock::new(1_000_000);
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.clock = Arc::new(clock.clone());
    cfg.limits.expiry_sweep_interval = Duration::from_millis(20);
    let Some((server, _db)) = start_on(backend, cfg).await else {
        return;
    };
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, ev, bob_key) = register(&server, "bob").await;
    drop((bob, ev));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let ring = alice.send("bob", 1, 60, b"ring".to_vec()).await.unwrap();
    let note = alice.send("bob", 1, 3600, b"note".to_vec()).await.unwrap();
    clock.advance_ms(59_999);
    // At 59.999 s the ring is still there: check via a connection, without acking.
    {
        let (_b, mut ev) = Client::connect(client_cfg(&server, "bob", 1, bob_key.clone()))
            .await
            .unwrap();
        assert_eq!(ev.next_envelope().await.unwrap().envelope_id, ring);
        assert_eq!(ev.next_envelope().await.unwrap().envelope_id, note);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    clock.advance_ms(1); // exactly 60 s: expired
    tokio::time::sleep(Duration::from_millis(100)).await; // let the sweeper run
    assert!(server
        .metrics_text()
        .contains("sotto_envelopes_expired_total 1"));
    let (_b, mut ev) = Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    assert_eq!(ev.next_envelope().await.unwrap().envelope_id, note);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ev.next_envelope())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn ttl_limit_and_limit_plus_one() {
    let server = start_default().await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (_bob, _eb, _) = register(&server, "bob").await;
    alice
        .send("bob", 1, MAX_ENVELOPE_TTL_SECS, vec![1])
        .await
        .unwrap();
    for ttl in [MAX_ENVELOPE_TTL_SECS + 1, 0] {
        let e = alice.send("bob", 1, ttl, vec![1]).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused {
                    code: ErrorCode::TtlTooLong
                }
            ),
            "{e:?}"
        );
    }
    let e = alice.send("nobody", 1, 60, vec![1]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::UnknownRecipient
            }
        ),
        "{e:?}"
    );
}
