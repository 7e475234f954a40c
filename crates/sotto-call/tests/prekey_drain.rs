#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! An attacker drains an online device's one-time prekeys as fast as the server lets them, and
//! the server tells the device "prekeys low" at every fetch. The device replenishes with a
//! backoff and keeps a bounded number of one-time prekeys, so the keys it mints and its store
//! file stay bounded however long the drain runs; a call from a friend still gets through.
//!
//! The device must not rely on the server for this, so the first test runs against a server
//! whose fetch limits are lifted (an old or hostile server); the second measures the same drain
//! against the default limits. Both print what they measured.

use std::path::Path;
use std::time::{Duration, Instant};

use sotto_call::messages::Body;
use sotto_call::sealed::{read_profile, Device, MAX_STORED_ONE_TIME_PREKEYS, STORE_FILE};
use sotto_ratchet::IdentityKeyPair;
use sotto_server::{ClientConfig, Error, ErrorCode, Events, ServerConfig};
use sotto_testkit::device::{device, key_file, msg, recv, register};
use sotto_testkit::server::{server_with, SERVER_ID};

/// How long the attacker drains.
const DRAIN: Duration = Duration::from_secs(5);

struct Drained {
    fetches: u64,
    refused: u64,
    one_time_keys: u64,
    minted: u32,
    store_before: u64,
    store_after: u64,
}

fn store_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(STORE_FILE)).unwrap().len()
}

/// Registers bob (persistent) and drains him for [`DRAIN`] while his device handles its
/// events; then alice calls him.
async fn drain(cfg: ServerConfig) -> Drained {
    let tmp = tempfile::tempdir().unwrap();
    let srv = server_with(tmp.path(), cfg).await;
    let url = srv.url();
    let dir = tmp.path().join("bob");
    let (bob, mut bev) = register(&url, "bob", &dir, &key_file(tmp.path(), "b"))
        .await
        .unwrap();
    let next_before = read_profile(&dir).unwrap().next_prekey_id;
    let store_before = store_size(&dir);
    let mallory = sotto_server::Client::connect(
        ClientConfig::new(
            &url,
            SERVER_ID,
            "mallory",
            1,
            IdentityKeyPair::generate(&mut rand::rngs::OsRng),
        )
        .register(),
    )
    .await
    .unwrap()
    .0;
    let attack = async {
        let (mut fetches, mut refused, mut keys) = (0, 0, 0);
        let end = Instant::now() + DRAIN;
        while Instant::now() < end {
            match mallory.fetch_bundle("bob", 1).await {
                Ok(b) => {
                    fetches += 1;
                    keys += u64::from(b.bundle.one_time_prekey.is_some());
                }
                Err(Error::Refused {
                    code: ErrorCode::FetchRateLimited,
                }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        (fetches, refused, keys)
    };
    let (fetches, refused, one_time_keys) = run_device_while(&bob, &mut bev, attack).await;
    // let a replenishment still in flight land before measuring
    let settle = tokio::time::sleep(Duration::from_millis(500));
    run_device_while(&bob, &mut bev, settle).await;
    let minted = read_profile(&dir).unwrap().next_prekey_id - next_before;
    let store_after = store_size(&dir);

    // a friend's call still gets through
    let (alice, _aev) = device(&url, "alice").await;
    alice.send("bob", 1, &msg(Body::Ringing)).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);
    srv.shutdown().await;
    Drained {
        fetches,
        refused,
        one_time_keys,
        minted,
        store_before,
        store_after,
    }
}

/// Runs `f` while `dev` takes its events (answering "prekeys low").
async fn run_device_while<T>(
    dev: &Device,
    ev: &mut Events,
    f: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(f);
    loop {
        tokio::select! {
            out = &mut f => return out,
            e = dev.next(ev) => {
                assert!(e.is_some(), "bob's client closed");
            }
        }
    }
}

fn report(what: &str, d: &Drained) {
    eprintln!(
        "{what}: {} fetches ({} refused), {} one-time prekeys handed out, {} minted by the \
         device, store.bin {} -> {} bytes",
        d.fetches, d.refused, d.one_time_keys, d.minted, d.store_before, d.store_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_cannot_make_the_device_mint_or_store_without_bound() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.bundle_fetches_per_minute = u32::MAX;
    cfg.limits.one_time_prekeys_per_target_per_minute = u32::MAX;
    cfg.limits.one_time_prekey_repeat_window = Duration::ZERO;
    let d = drain(cfg).await;
    report("server limits lifted", &d);
    // the drain really ran, and emptied the server's stock (all the device published)
    assert!(d.fetches > 100, "{}", d.fetches);
    assert_eq!(
        d.one_time_keys,
        u64::from(sotto_call::sealed::ONE_TIME_PREKEYS + d.minted)
    );
    // the first "low" is answered at once; the next ones wait for the backoff, which a
    // few-second drain does not outlast more than twice
    assert!(
        d.minted <= 3 * sotto_call::sealed::ONE_TIME_PREKEYS,
        "{}",
        d.minted
    );
    // the store holds at most MAX_STORED_ONE_TIME_PREKEYS one-time prekeys (~70 B each)
    let bound = d.store_before + u64::from(MAX_STORED_ONE_TIME_PREKEYS) * 100;
    assert!(d.store_after <= bound, "{} > {bound}", d.store_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_against_the_default_limits() {
    let d = drain(ServerConfig::new(SERVER_ID)).await;
    report("default server limits", &d);
    assert!(d.one_time_keys <= 1, "one per account and window");
    assert!(d.refused > 0);
    assert!(d.minted <= sotto_call::sealed::ONE_TIME_PREKEYS);
}

/// Replenishing again and again (explicitly, past any backoff) keeps at most
/// [`MAX_STORED_ONE_TIME_PREKEYS`] in the store: the file stops growing once the cap is reached.
#[tokio::test]
async fn the_store_keeps_at_most_the_capped_number_of_one_time_prekeys() {
    use sotto_call::sealed::ONE_TIME_PREKEYS;
    let tmp = tempfile::tempdir().unwrap();
    let srv = server_with(tmp.path(), ServerConfig::new(SERVER_ID)).await;
    let dir = tmp.path().join("bob");
    let (bob, _bev) = register(&srv.url(), "bob", &dir, &key_file(tmp.path(), "b"))
        .await
        .unwrap();
    // the server may refuse to store more than its own stock limit; drain it between rounds
    let batches_to_cap = MAX_STORED_ONE_TIME_PREKEYS / ONE_TIME_PREKEYS;
    let mut at_cap = 0;
    for round in 1..=2 * batches_to_cap {
        bob.replenish_prekeys().await.unwrap();
        if round + 1 == batches_to_cap {
            at_cap = store_size(&dir);
        }
    }
    let after = store_size(&dir);
    eprintln!(
        "store.bin with {MAX_STORED_ONE_TIME_PREKEYS} one-time prekeys: {at_cap} bytes; after \
         {batches_to_cap} more batches: {after} bytes"
    );
    // the same number of keys (~73 bytes each); larger ids take a byte or two more to encode
    let bound = at_cap + 2 * u64::from(MAX_STORED_ONE_TIME_PREKEYS);
    assert!(after <= bound, "{after} > {bound}");
    srv.shutdown().await;
}
