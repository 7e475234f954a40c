//! Differential tests against implementations we did not write: the `sframe` crate (ring
//! backend) for the frame format, `ring`'s HKDF and Python-generated vectors for the ratchet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use rand::{Rng, SeedableRng};
use serde::Deserialize;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sotto_frame::{derive_key_salt, BaseKey, CipherSuite, Codec, FrameKey, KeyRing, SenderKey};
use std::time::Instant;

fn theirs(suite: CipherSuite) -> sframe::CipherSuite {
    match suite {
        CipherSuite::Aes128GcmSha256_128 => sframe::CipherSuite::AesGcm128Sha256,
        CipherSuite::Aes256GcmSha512_128 => sframe::CipherSuite::AesGcm256Sha512,
        _ => unreachable!("the ring backend of `sframe` has no CTR suites"),
    }
}

const GCM: [CipherSuite; 2] = [
    CipherSuite::Aes128GcmSha256_128,
    CipherSuite::Aes256GcmSha512_128,
];

#[test]
fn our_frames_open_with_the_sframe_crate_and_back() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9605);
    for suite in GCM {
        for round in 0..200u64 {
            let kid: u64 = match round % 4 {
                0 => rng.gen_range(0..8),
                1 => rng.gen_range(8..1 << 16),
                2 => rng.gen(),
                _ => rng.gen_range(0..1 << 40),
            };
            let ctr: u64 = if round % 3 == 0 {
                rng.gen_range(0..8)
            } else {
                rng.gen()
            };
            let base: Vec<u8> = (0..rng.gen_range(16..=64)).map(|_| rng.gen()).collect();
            let meta: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
            let pt: Vec<u8> = (0..rng.gen_range(0..3000)).map(|_| rng.gen()).collect();

            // ours -> theirs
            let ours = FrameKey::derive(suite, kid, &base).unwrap();
            let mut wire = Vec::new();
            ours.seal_into(ctr, &meta, &pt, &mut wire).unwrap();
            let dec = DecryptionKey::derive_from(theirs(suite), kid, &base).unwrap();
            let view = EncryptedFrameView::try_with_meta_data(&wire, &meta).unwrap();
            let opened = view.decrypt(&dec).unwrap();
            assert_eq!(opened.payload(), &pt[..]);

            // theirs -> ours (byte-identical, given the same counter)
            let enc = EncryptionKey::derive_from(theirs(suite), kid, &base).unwrap();
            let mut counter = MonotonicCounter::with_start_value(ctr, u64::MAX);
            let media = MediaFrameView::try_with_meta_data(&mut counter, &pt, &meta).unwrap();
            let theirs_wire = media.encrypt(&enc).unwrap();
            assert_eq!(theirs_wire.sframe_cipher_text(), &wire[..]);
            let (hdr, got) = ours
                .open_frame(&meta, theirs_wire.sframe_cipher_text())
                .unwrap();
            assert_eq!((hdr.kid, hdr.ctr, got), (kid, ctr, pt));
        }
    }
}

#[test]
fn sender_key_frames_open_with_the_sframe_crate() {
    // The full SenderKey/KeyRing path produces standard SFrame that another stack reads.
    let t0 = Instant::now();
    for suite in GCM {
        let base = [0xabu8; 32];
        let mut alice = SenderKey::new(suite, 77, &base).unwrap();
        let dec = DecryptionKey::derive_from(theirs(suite), alice.kid(), base).unwrap();
        let mut ring = KeyRing::new(suite);
        ring.add_key(&alice.material(), t0).unwrap();
        for i in 0..50u32 {
            let pt = i.to_be_bytes().repeat(i as usize + 1);
            let wire = alice.encrypt(Codec::Full, b"", &pt).unwrap();
            let view = EncryptedFrameView::try_from(&wire[..]).unwrap();
            assert_eq!(view.decrypt(&dec).unwrap().payload(), &pt[..]);
            assert_eq!(ring.decrypt(Codec::Full, b"", &wire, t0).unwrap().frame, pt);
        }
    }
}

/// RFC 9605 §5.1 ratchet step computed with ring's HKDF (not the RustCrypto one we use).
fn ring_ratchet(suite: CipherSuite, base: &[u8]) -> Vec<u8> {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let alg = match suite {
        CipherSuite::Aes256GcmSha512_128 => ring::hkdf::HKDF_SHA512,
        _ => ring::hkdf::HKDF_SHA256,
    };
    let prk = ring::hkdf::Salt::new(alg, &[]).extract(base);
    let mut out = vec![0u8; suite.nh()];
    prk.expand(&[b"SFrame 1.0 Ratchet"], Len(suite.nh()))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

#[test]
fn ratchet_step_matches_ring_hkdf_for_every_suite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(51);
    for suite in CipherSuite::ALL {
        let mut base: Vec<u8> = (0..32).map(|_| rng.gen()).collect();
        for _ in 0..20 {
            let ours = BaseKey::new(&base).unwrap().ratchet(suite);
            let want = ring_ratchet(suite, &base);
            assert_eq!(ours.expose_secret(), &want[..], "{}", suite.name());
            assert_eq!(want.len(), suite.nh(), "RFC: output is Nh bytes");
            base = want;
        }
    }
}

#[derive(Deserialize)]
struct RatchetVectors {
    cases: Vec<RatchetCase>,
}
#[derive(Deserialize)]
struct RatchetCase {
    cipher_suite: u16,
    sender: u64,
    generation: u64,
    steps: Vec<RatchetStep>,
}
#[derive(Deserialize)]
struct RatchetStep {
    step: u64,
    kid: u64,
    base_key: String,
    sframe_key: String,
    sframe_salt: String,
}

#[test]
fn ratchet_vectors_generated_by_python_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../protocol-spec/vectors/sframe/sotto-ratchet-vectors.json"
    );
    let v: RatchetVectors = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v.cases.len(), 5);
    for case in v.cases {
        let suite = CipherSuite::from_id(case.cipher_suite).unwrap();
        let first = hex::decode(&case.steps[0].base_key).unwrap();
        let mut sender = SenderKey::new(suite, case.sender, &first).unwrap();
        for _ in 0..case.generation {
            sender.rotate(&first).unwrap();
        }
        for step in &case.steps {
            assert_eq!(sender.id().step, step.step);
            assert_eq!(sender.kid(), step.kid, "KID layout");
            let m = sender.material();
            assert_eq!(
                hex::encode(m.base_key.expose_secret()),
                step.base_key,
                "{} step {}",
                suite.name(),
                step.step
            );
            let d = derive_key_salt(suite, step.kid, m.base_key.expose_secret());
            assert_eq!(hex::encode(&*d.key), step.sframe_key);
            assert_eq!(hex::encode(d.salt), step.sframe_salt);
            sender.ratchet().unwrap();
        }
    }
}
