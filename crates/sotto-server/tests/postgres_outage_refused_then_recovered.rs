//! PostgreSQL stopped under a running server: writes are refused with `storage_unavailable`
//! (nothing stored, nothing panics, the connection stays up); once PostgreSQL is back the same
//! server process stores again, without a restart, and every envelope acknowledged before, during
//! or after the outage is delivered (the refused ones never are).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::time::Duration;

use common::*;
use sotto_server::{Client, Error, ErrorCode, ServerConfig};

/// How long the server may take to reach a restarted PostgreSQL (it reconnects on the next
/// call; generous for a loaded machine).
const RECOVERY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_refuses_writes_then_recovers_without_restart() {
    let Some((server, db)) = start_on(Backend::Postgres, ServerConfig::new(SERVER_ID)).await else {
        return;
    };
    let pg = db.fixture.cluster().unwrap();
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, eb, bob_key) = register(&server, "bob").await;
    drop((bob, eb));

    let mut acked = Vec::new();
    for i in 0..3u8 {
        acked.push(alice.send("bob", 1, 3600, vec![i]).await.unwrap());
    }

    tokio::task::block_in_place(|| pg.stop());
    for i in 0..3u8 {
        let e = alice.send("bob", 1, 3600, vec![100 + i]).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused {
                    code: ErrorCode::StorageUnavailable
                }
            ),
            "{e:?}"
        );
    }
    // the connection is still up: requests that need no database are answered
    alice.ping().await.unwrap();
    assert!(server
        .metrics_text()
        .contains("sotto_error_frames_total{code=\"storage_unavailable\"} 3"));

    tokio::task::block_in_place(|| pg.restart());
    let t0 = std::time::Instant::now();
    let recovered = loop {
        match alice.send("bob", 1, 3600, vec![200]).await {
            Ok(id) => break id,
            Err(Error::Refused {
                code: ErrorCode::StorageUnavailable,
            }) if t0.elapsed() < RECOVERY => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not recovered after {:?}: {e:?}", t0.elapsed()),
        }
    };
    acked.push(recovered);
    acked.push(alice.send("bob", 1, 3600, vec![201]).await.unwrap());

    let (_bob, mut ev) = Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(700), ev.next_envelope()).await
    {
        assert!(
            e.ciphertext.0[0] < 100 || e.ciphertext.0[0] >= 200,
            "a refused envelope"
        );
        got.push(e.envelope_id);
    }
    assert_eq!(got, acked);
}
