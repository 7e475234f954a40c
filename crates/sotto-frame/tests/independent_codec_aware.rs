//! 360 frames in sotto's codec-aware layout (every suite, `full`/`vp8`/`opus`, the KID layout,
//! ratchet steps) sealed by an independent RFC 9605 implementation (not sotto-frame), read from
//! `protocol-spec/vectors/sframe/sotto-codec-aware-independent.json`: sotto-frame must open every
//! one, follow the ratchet to it from step 0, and seal the same bytes again. The browser's
//! worker (`crates/sotto-app/web/sframe.mjs`) runs the same file in `sotto-app/tests/web_sframe.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Instant;

use serde::Deserialize;
use sotto_frame::{BaseKey, CipherSuite, Codec, KeyId, KeyMaterial, KeyRing, SenderKey};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../protocol-spec/vectors/sframe/sotto-codec-aware-independent.json"
);

#[derive(Deserialize)]
struct File {
    vectors: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    suite: u16,
    codec: String,
    sender: u64,
    generation: u64,
    step: u64,
    kid: u64,
    ctr: u64,
    base_key_step0: String,
    base_key: String,
    metadata: String,
    plaintext: String,
    wire: String,
}

fn material(suite: CipherSuite, c: &Case, step: u64, key: &[u8]) -> KeyMaterial {
    KeyMaterial {
        suite,
        id: KeyId {
            sender: c.sender,
            generation: c.generation,
            step,
        },
        base_key: BaseKey::new(key).unwrap(),
    }
}

#[test]
fn every_independently_sealed_codec_aware_frame_opens_and_reseals() {
    let file: File = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    assert_eq!(file.vectors.len(), 360);
    let now = Instant::now();
    let (mut opened, mut ratcheted) = (0, 0);
    for (i, c) in file.vectors.iter().enumerate() {
        let suite = CipherSuite::from_id(c.suite).unwrap();
        let codec = match c.codec.as_str() {
            "full" => Codec::Full,
            "vp8" => Codec::Vp8,
            "opus" => Codec::Opus,
            other => panic!("vector {i}: codec {other}"),
        };
        let step0 = hex::decode(&c.base_key_step0).unwrap();
        let key = hex::decode(&c.base_key).unwrap();
        let (wire, metadata) = (
            hex::decode(&c.wire).unwrap(),
            hex::decode(&c.metadata).unwrap(),
        );
        let plaintext = hex::decode(&c.plaintext).unwrap();
        let m = material(suite, c, c.step, &key);
        assert_eq!(m.id.kid(), c.kid, "vector {i}: KID layout");

        // the ratchet: base_key is step 0 ratcheted `step` times
        let mut base = BaseKey::new(&step0).unwrap();
        for _ in 0..c.step {
            base = base.ratchet(suite);
        }
        assert_eq!(base.expose_secret(), &key[..], "vector {i}: ratchet");

        let mut ring = KeyRing::new(suite);
        ring.add_key(&m, now).unwrap();
        let got = ring.decrypt(codec, &metadata, &wire, now).unwrap();
        assert_eq!(got.frame, plaintext, "vector {i}: plaintext");
        assert_eq!(
            (got.ctr, got.id),
            (c.ctr, m.id),
            "vector {i}: counter and key id"
        );
        opened += 1;

        if (1..=6).contains(&c.step) {
            let mut from0 = KeyRing::new(suite);
            from0.add_key(&material(suite, c, 0, &step0), now).unwrap();
            let got = from0.decrypt(codec, &metadata, &wire, now).unwrap();
            assert_eq!(
                (got.frame, got.id.step),
                (plaintext.clone(), c.step),
                "vector {i}: ratchet ahead"
            );
            ratcheted += 1;
        }

        let mut sender = SenderKey::resume(&m, c.ctr).unwrap();
        let again = sender.encrypt(codec, &metadata, &plaintext).unwrap();
        assert_eq!(again, wire, "vector {i}: resealed");
    }
    assert_eq!((opened, ratcheted), (360, 240));
}
