//! Shared test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::path::PathBuf;

/// `protocol-spec/vectors/ratchet/<name>` parsed as JSON.
pub fn vector(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../protocol-spec/vectors/ratchet")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

pub fn hex_field(v: &serde_json::Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} missing"));
    hex::decode(s).unwrap_or_else(|e| panic!("vector field {key} not hex: {e}"))
}

/// Deterministic RNG for reproducible tests.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}

use std::time::{Duration, SystemTime};

use sotto_ratchet::*;

pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// One device with an in-memory store.
pub struct Party {
    pub store: InMemoryStore,
    pub address: ProtocolAddress,
    pub identity: IdentityKeyPair,
    pub registration_id: u32,
    next_pre_key: u32,
}

impl Party {
    pub fn new(name: &str, registration_id: u32, rng: &mut rand::rngs::StdRng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let mut store = InMemoryStore::new(identity.clone(), registration_id);
        let spk = SignedPreKeyRecord::generate(1, 1000, &identity, rng);
        let kpk = KyberPreKeyRecord::generate(1, 1000, &identity, rng);
        store.save_signed_pre_key(spk).unwrap();
        store.save_kyber_pre_key(kpk, true).unwrap();
        Self {
            store,
            address: ProtocolAddress::new(name, 1),
            identity,
            registration_id,
            next_pre_key: 100,
        }
    }

    /// A bundle with a fresh one-time prekey.
    pub fn bundle(&mut self, rng: &mut rand::rngs::StdRng) -> PreKeyBundle {
        let opk = PreKeyRecord::generate(self.next_pre_key, rng);
        self.next_pre_key += 1;
        self.store.save_pre_key(opk.clone()).unwrap();
        let spk = self.store.get_signed_pre_key(1).unwrap().unwrap();
        let kpk = self.store.get_kyber_pre_key(1).unwrap().unwrap();
        PreKeyBundle::from_records(
            self.registration_id,
            1,
            self.identity.public(),
            Some(&opk),
            &spk,
            &kpk,
        )
    }

    pub fn encrypt(&mut self, to: &ProtocolAddress, pt: &[u8]) -> CiphertextMessage {
        encrypt(to, &mut self.store, pt, now()).unwrap()
    }

    pub fn decrypt(
        &mut self,
        from: &ProtocolAddress,
        m: &CiphertextMessage,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<Vec<u8>> {
        // Round-trip through bytes, as the network would.
        let parsed = CiphertextMessage::deserialize(m.message_type(), m.serialized())?;
        decrypt(from, &mut self.store, &parsed, rng)
    }
}

/// Alice has processed Bob's bundle (no messages yet).
pub fn pair(seed: u64) -> (Party, Party, rand::rngs::StdRng) {
    let mut r = rng(seed);
    let mut alice = Party::new("alice", 11, &mut r);
    let mut bob = Party::new("bob", 22, &mut r);
    let bundle = bob.bundle(&mut r);
    process_prekey_bundle(&bob.address, &mut alice.store, &bundle, now(), &mut r).unwrap();
    (alice, bob, r)
}

/// Alice and Bob have exchanged one message each way (session acknowledged).
pub fn established(seed: u64) -> (Party, Party, rand::rngs::StdRng) {
    let (mut alice, mut bob, mut r) = pair(seed);
    let m = alice.encrypt(&bob.address.clone(), b"hello");
    assert_eq!(
        bob.decrypt(&alice.address.clone(), &m, &mut r).unwrap(),
        b"hello"
    );
    let m = bob.encrypt(&alice.address.clone(), b"hi");
    assert_eq!(
        alice.decrypt(&bob.address.clone(), &m, &mut r).unwrap(),
        b"hi"
    );
    (alice, bob, r)
}
