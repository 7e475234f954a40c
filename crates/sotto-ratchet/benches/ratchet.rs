//! Session setup and encrypt+decrypt round trips: sotto-ratchet (PQXDH + Double Ratchet, with
//! and without SPQR, through the in-memory store) against vodozemac (Olm) and, when Node and
//! `tests/interop/node_modules` are present, official libsignal 0.103.0 in Node
//! (`tests/interop/bench.mjs`) in the same run. Prints ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_ratchet::*;
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};

const MSG: &[u8] = &[0x5a; 100];

struct SottoPair {
    alice: InMemoryStore,
    bob: InMemoryStore,
    a: ProtocolAddress,
    b: ProtocolAddress,
    rng: StdRng,
    next_opk: u32,
    bob_id: IdentityKeyPair,
}

fn sotto_pair() -> SottoPair {
    let mut rng = StdRng::seed_from_u64(1);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut bob = InMemoryStore::new(bob_id.clone(), 2);
    bob.save_signed_pre_key(SignedPreKeyRecord::generate(1, 0, &bob_id, &mut rng))
        .unwrap();
    bob.save_kyber_pre_key(KyberPreKeyRecord::generate(1, 0, &bob_id, &mut rng), true)
        .unwrap();
    SottoPair {
        alice: InMemoryStore::new(IdentityKeyPair::generate(&mut rng), 1),
        bob,
        a: ProtocolAddress::new("alice", 1),
        b: ProtocolAddress::new("bob", 1),
        rng,
        next_opk: 1,
        bob_id,
    }
}

/// Bob makes a one-time prekey; Alice processes the bundle and sends; Bob decrypts.
/// Without `spqr`, Alice's new session drops SPQR before it sends (Bob's then downgrades).
fn sotto_setup_with(p: &mut SottoPair, spqr: bool) {
    let now = SystemTime::UNIX_EPOCH;
    // A fresh pair each time: do not let archived states pile up in the records.
    p.alice
        .store_session(&p.b, &SessionRecord::default())
        .unwrap();
    p.bob
        .store_session(&p.a, &SessionRecord::default())
        .unwrap();
    let opk = PreKeyRecord::generate(p.next_opk, &mut p.rng);
    p.next_opk += 1;
    let spk = p.bob.get_signed_pre_key(1).unwrap().unwrap();
    let kpk = p.bob.get_kyber_pre_key(1).unwrap().unwrap();
    let bundle = PreKeyBundle::from_records(2, 1, p.bob_id.public(), Some(&opk), &spk, &kpk);
    p.bob.save_pre_key(opk).unwrap();
    process_prekey_bundle(&p.b, &mut p.alice, &bundle, now, &mut p.rng).unwrap();
    if !spqr {
        let mut rec = p.alice.load_session(&p.b).unwrap().unwrap();
        sotto_ratchet::testing::strip_spqr(&mut rec);
        p.alice.store_session(&p.b, &rec).unwrap();
    }
    let m = encrypt_with_rng(&p.b, &mut p.alice, MSG, now, &mut p.rng).unwrap();
    black_box(decrypt(&p.a, &mut p.bob, &m, &mut p.rng).unwrap());
}

fn sotto_setup(p: &mut SottoPair) {
    sotto_setup_with(p, true)
}

/// A→B then B→A (each direction change is a DH ratchet step).
fn sotto_round_trip(p: &mut SottoPair) {
    let now = SystemTime::UNIX_EPOCH;
    let m = encrypt_with_rng(&p.b, &mut p.alice, MSG, now, &mut p.rng).unwrap();
    let m = CiphertextMessage::deserialize(m.message_type(), m.serialized()).unwrap();
    black_box(decrypt(&p.a, &mut p.bob, &m, &mut p.rng).unwrap());
    let m = encrypt_with_rng(&p.a, &mut p.bob, MSG, now, &mut p.rng).unwrap();
    let m = CiphertextMessage::deserialize(m.message_type(), m.serialized()).unwrap();
    black_box(decrypt(&p.b, &mut p.alice, &m, &mut p.rng).unwrap());
}

struct OlmPair {
    alice: Account,
    bob: Account,
    sa: Option<Session>,
    sb: Option<Session>,
}

fn olm_pair() -> OlmPair {
    OlmPair {
        alice: Account::new(),
        bob: Account::new(),
        sa: None,
        sb: None,
    }
}

fn olm_setup(p: &mut OlmPair) {
    p.bob.generate_one_time_keys(1);
    let otk = *p.bob.one_time_keys().values().next().unwrap();
    p.bob.mark_keys_as_published();
    let mut sa = p
        .alice
        .create_outbound_session(SessionConfig::version_1(), p.bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(m) = sa.encrypt(MSG).unwrap() else {
        panic!("expected a pre-key message")
    };
    let res = p
        .bob
        .create_inbound_session(SessionConfig::version_1(), p.alice.curve25519_key(), &m)
        .unwrap();
    black_box(&res.plaintext);
    p.sa = Some(sa);
    p.sb = Some(res.session);
}

fn olm_round_trip(p: &mut OlmPair) {
    let (sa, sb) = (p.sa.as_mut().unwrap(), p.sb.as_mut().unwrap());
    let m = sa.encrypt(MSG).unwrap();
    black_box(sb.decrypt(&m).unwrap());
    let m = sb.encrypt(MSG).unwrap();
    black_box(sa.decrypt(&m).unwrap());
}

/// Operations per second over at least `min` wall time.
fn rate(min: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    {
        let mut g = c.benchmark_group("session_setup");
        let mut s = sotto_pair();
        g.bench_function("sotto_pqxdh_spqr", |b| b.iter(|| sotto_setup(&mut s)));
        let mut s = sotto_pair();
        g.bench_function("sotto_pqxdh_no_spqr", |b| {
            b.iter(|| sotto_setup_with(&mut s, false))
        });
        let mut o = olm_pair();
        g.bench_function("vodozemac_olm", |b| b.iter(|| olm_setup(&mut o)));
        g.finish();
    }
    {
        let mut g = c.benchmark_group("round_trip_100B");
        let mut s = sotto_pair();
        sotto_setup(&mut s);
        g.bench_function("sotto_spqr", |b| b.iter(|| sotto_round_trip(&mut s)));
        let mut s = sotto_pair();
        sotto_setup_with(&mut s, false);
        g.bench_function("sotto_no_spqr", |b| b.iter(|| sotto_round_trip(&mut s)));
        let mut o = olm_pair();
        olm_setup(&mut o);
        g.bench_function("vodozemac", |b| b.iter(|| olm_round_trip(&mut o)));
        g.finish();
    }

    // Same operations timed directly, to print ratios.
    let t = Duration::from_secs(2);
    let mut s = sotto_pair();
    let sotto_setups = rate(t, || sotto_setup(&mut s));
    let mut s = sotto_pair();
    let plain_setups = rate(t, || sotto_setup_with(&mut s, false));
    let mut o = olm_pair();
    let olm_setups = rate(t, || olm_setup(&mut o));
    let mut s = sotto_pair();
    sotto_setup(&mut s);
    let sotto_rt = rate(t, || sotto_round_trip(&mut s));
    let mut s = sotto_pair();
    sotto_setup_with(&mut s, false);
    let plain_rt = rate(t, || sotto_round_trip(&mut s));
    let mut o = olm_pair();
    olm_setup(&mut o);
    let olm_rt = rate(t, || olm_round_trip(&mut o));
    println!();
    println!("session setups/s      sotto+SPQR {sotto_setups:>9.0}  sotto no SPQR {plain_setups:>9.0}  vodozemac {olm_setups:>9.0}");
    println!("round trips/s (2 msg) sotto+SPQR {sotto_rt:>9.0}  sotto no SPQR {plain_rt:>9.0}  vodozemac {olm_rt:>9.0}");
    println!(
        "SPQR cost: setup x{:.2}, round trip x{:.2}",
        plain_setups / sotto_setups,
        plain_rt / sotto_rt
    );
    match node_libsignal(t) {
        Some((setups, rts)) => {
            println!("libsignal 0.103.0 in Node (same machine, libsignal<->libsignal): {setups:.0} setups/s, {rts:.0} round trips/s");
            println!(
                "ratio sotto+SPQR / libsignal-in-Node: setup {:.2}, round trip {:.2} (Node adds a JS<->native call, Promise and store callbacks per operation)",
                sotto_setups / setups,
                sotto_rt / rts
            );
        }
        None => {
            println!("libsignal in Node: not measured (node or tests/interop/node_modules missing)")
        }
    }
}

/// Runs `tests/interop/bench.mjs` (official libsignal 0.103.0) for `t` per measurement; returns
/// `(session setups/s, round trips/s)`.
fn node_libsignal(t: Duration) -> Option<(f64, f64)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    if !dir.join("node_modules/libsignal-0103").exists() {
        return None;
    }
    let out = std::process::Command::new("node")
        .arg(dir.join("bench.mjs"))
        .arg("--lib")
        .arg("0.103.0")
        .arg("--ms")
        .arg(t.as_millis().to_string())
        .current_dir(&dir)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["setups_per_s"].as_f64()?,
        v["round_trips_per_s"].as_f64()?,
    ))
}
