//! Arbitrary bytes parsed as a SignalMessage or PreKeySignalMessage and decrypted against a live,
//! established session: never panics, never decrypts, and the session still decrypts the next
//! genuine message afterwards (no state change on failure).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_ratchet::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

struct World {
    alice: InMemoryStore,
    bob: InMemoryStore,
    alice_addr: ProtocolAddress,
    bob_addr: ProtocolAddress,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut r = StdRng::seed_from_u64(7);
        let alice_id = IdentityKeyPair::generate(&mut r);
        let bob_id = IdentityKeyPair::generate(&mut r);
        let mut alice = InMemoryStore::new(alice_id, 11);
        let mut bob = InMemoryStore::new(bob_id.clone(), 22);
        let spk = SignedPreKeyRecord::generate(1, 1000, &bob_id, &mut r);
        let kpk = KyberPreKeyRecord::generate(1, 1000, &bob_id, &mut r);
        let opk = PreKeyRecord::generate(100, &mut r);
        bob.save_signed_pre_key(spk.clone()).expect("spk");
        bob.save_kyber_pre_key(kpk.clone(), true).expect("kpk");
        bob.save_pre_key(opk.clone()).expect("opk");
        let bundle = PreKeyBundle::from_records(22, 1, bob_id.public(), Some(&opk), &spk, &kpk);
        let alice_addr = ProtocolAddress::new("alice", 1);
        let bob_addr = ProtocolAddress::new("bob", 1);
        process_prekey_bundle(&bob_addr, &mut alice, &bundle, now(), &mut r).expect("bundle");
        // one message each way: the session is established and acknowledged
        let m = encrypt(&bob_addr, &mut alice, b"hello", now()).expect("enc");
        decrypt(&alice_addr, &mut bob, &m, &mut r).expect("dec");
        let m = encrypt(&alice_addr, &mut bob, b"hi", now()).expect("enc");
        decrypt(&bob_addr, &mut alice, &m, &mut r).expect("dec");
        World { alice, bob, alice_addr, bob_addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let mut alice = w.alice.clone();
    let mut bob = w.bob.clone();
    let mut r = StdRng::seed_from_u64(u64::from(selector));
    let message_type = if selector & 1 == 0 { 2 } else { 3 };
    if let Ok(m) = CiphertextMessage::deserialize(message_type, body) {
        if let Ok(pt) = decrypt(&w.alice_addr, &mut bob, &m, &mut r) {
            panic!("forged message decrypted to {} bytes", pt.len());
        }
    }
    // The next genuine message still decrypts, in both directions.
    let m = encrypt(&w.bob_addr, &mut alice, b"still alive", now()).expect("enc");
    assert_eq!(decrypt(&w.alice_addr, &mut bob, &m, &mut r).expect("genuine"), b"still alive");
    let m = encrypt(&w.alice_addr, &mut bob, b"and back", now()).expect("enc");
    assert_eq!(decrypt(&w.bob_addr, &mut alice, &m, &mut r).expect("genuine"), b"and back");
});
