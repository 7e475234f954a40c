//! Codec-aware mode, every named limit at the limit and one past it, overhead, redaction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Instant;

use sotto_frame::consts::*;
use sotto_frame::{CipherSuite, Codec, Error, Header, KeyMaterial, KeyRing, SenderKey};

fn pair(suite: CipherSuite, sender: u64) -> (SenderKey, KeyRing) {
    let alice = SenderKey::new(suite, sender, &[0x42; 16]).unwrap();
    let mut ring = KeyRing::new(suite);
    ring.add_key(&alice.material(), Instant::now()).unwrap();
    (alice, ring)
}

fn vp8_key_frame(len: usize) -> Vec<u8> {
    // frame tag with bit 0 = 0 (key frame), start code 9d 01 2a, 320x240
    let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    f.extend((0..len.saturating_sub(10)).map(|i| i as u8));
    f.truncate(len);
    f
}

#[test]
fn vp8_key_and_delta_frames_keep_their_codec_bytes_in_clear() {
    let t = Instant::now();
    let (mut alice, mut bob) = pair(CipherSuite::default(), 1);
    let key = vp8_key_frame(500);
    let wire = alice.encrypt(Codec::Vp8, b"", &key).unwrap();
    assert_eq!(
        &wire[..VP8_KEY_FRAME_CLEAR_BYTES],
        &key[..VP8_KEY_FRAME_CLEAR_BYTES]
    );
    assert!(
        Codec::Vp8.is_key_frame(&wire),
        "an SFU still sees a key frame"
    );
    // after the clear bytes comes a standard SFrame header
    let (h, _) = Header::decode(&wire[VP8_KEY_FRAME_CLEAR_BYTES..]).unwrap();
    assert_eq!(h, Header::new(alice.kid(), 0));
    // nothing of the encrypted part appears in clear
    assert!(!wire
        .windows(16)
        .any(|w| key[VP8_KEY_FRAME_CLEAR_BYTES..].windows(16).any(|k| k == w)));
    assert_eq!(bob.decrypt(Codec::Vp8, b"", &wire, t).unwrap().frame, key);

    let delta: Vec<u8> = [0x31u8, 0x0a, 0x00]
        .iter()
        .copied()
        .chain((0..300).map(|i| i as u8))
        .collect();
    let wire = alice.encrypt(Codec::Vp8, b"", &delta).unwrap();
    assert_eq!(
        &wire[..VP8_DELTA_FRAME_CLEAR_BYTES],
        &delta[..VP8_DELTA_FRAME_CLEAR_BYTES]
    );
    assert!(!Codec::Vp8.is_key_frame(&wire));
    assert_eq!(bob.decrypt(Codec::Vp8, b"", &wire, t).unwrap().frame, delta);
}

#[test]
fn clear_codec_bytes_are_authenticated() {
    let t = Instant::now();
    let (mut alice, mut bob) = pair(CipherSuite::default(), 2);
    let key = vp8_key_frame(200);
    let wire = alice.encrypt(Codec::Vp8, b"", &key).unwrap();
    for i in 1..VP8_KEY_FRAME_CLEAR_BYTES {
        let mut bad = wire.clone();
        bad[i] ^= 0x04;
        assert_eq!(
            bob.decrypt(Codec::Vp8, b"", &bad, t),
            Err(Error::AuthenticationFailed),
            "byte {i}"
        );
    }
    // byte 0 is authenticated too (a bit that does not change the clear length)
    let mut bad = wire.clone();
    bad[0] ^= 0x80;
    assert_eq!(
        bob.decrypt(Codec::Vp8, b"", &bad, t),
        Err(Error::AuthenticationFailed)
    );
    // flipping the key-frame bit changes how many bytes are clear: still refused
    let mut bad = wire.clone();
    bad[0] ^= 0x01;
    assert!(bob.decrypt(Codec::Vp8, b"", &bad, t).is_err());
    // the genuine frame still decrypts afterwards
    assert_eq!(bob.decrypt(Codec::Vp8, b"", &wire, t).unwrap().frame, key);
}

#[test]
fn opus_keeps_the_toc_byte() {
    let t = Instant::now();
    let (mut alice, mut bob) = pair(CipherSuite::Aes128CtrHmacSha256_80, 3);
    for len in [1usize, 2, 60, 160] {
        let pkt: Vec<u8> = std::iter::once(0x78u8)
            .chain((1..len).map(|i| i as u8))
            .collect();
        let wire = alice.encrypt(Codec::Opus, b"", &pkt).unwrap();
        assert_eq!(wire[0], 0x78);
        let mut bad = wire.clone();
        bad[0] ^= 0x08; // another TOC configuration
        assert_eq!(
            bob.decrypt(Codec::Opus, b"", &bad, t),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(bob.decrypt(Codec::Opus, b"", &wire, t).unwrap().frame, pkt);
    }
    assert_eq!(
        alice.encrypt(Codec::Opus, b"", b""),
        Err(Error::CodecFrameTooShort { len: 0, needed: 1 })
    );
}

#[test]
fn codec_frame_shorter_than_its_clear_bytes_is_refused() {
    let (mut alice, _) = pair(CipherSuite::default(), 4);
    let at_limit = vp8_key_frame(VP8_KEY_FRAME_CLEAR_BYTES);
    assert!(alice.encrypt(Codec::Vp8, b"", &at_limit).is_ok());
    let short = vp8_key_frame(VP8_KEY_FRAME_CLEAR_BYTES - 1);
    assert_eq!(
        alice.encrypt(Codec::Vp8, b"", &short),
        Err(Error::CodecFrameTooShort { len: 9, needed: 10 })
    );
}

#[test]
fn max_frame_size_at_limit_and_over() {
    let t = Instant::now();
    let (mut alice, mut bob) = pair(CipherSuite::default(), 5);
    let big = vec![7u8; MAX_FRAME_SIZE];
    let wire = alice.encrypt(Codec::Full, b"", &big).unwrap();
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &wire, t).unwrap().frame.len(),
        MAX_FRAME_SIZE
    );
    let too_big = vec![7u8; MAX_FRAME_SIZE + 1];
    assert_eq!(
        alice.encrypt(Codec::Full, b"", &too_big),
        Err(Error::FrameTooLarge {
            len: MAX_FRAME_SIZE + 1,
            limit: MAX_FRAME_SIZE
        })
    );
    let wire_limit = MAX_FRAME_SIZE + MAX_HEADER_SIZE + 16;
    let junk = vec![0u8; wire_limit + 1];
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &junk, t),
        Err(Error::FrameTooLarge { .. })
    ));
}

#[test]
fn max_metadata_size_at_limit_and_over() {
    let t = Instant::now();
    let (mut alice, mut bob) = pair(CipherSuite::default(), 6);
    let meta = vec![1u8; MAX_METADATA_SIZE];
    let wire = alice.encrypt(Codec::Full, &meta, b"frame").unwrap();
    // metadata is authenticated
    assert_eq!(
        bob.decrypt(Codec::Full, b"x", &wire, t),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(
        bob.decrypt(Codec::Full, &meta, &wire, t).unwrap().frame,
        b"frame"
    );
    let over = vec![1u8; MAX_METADATA_SIZE + 1];
    assert!(matches!(
        alice.encrypt(Codec::Full, &over, b"frame"),
        Err(Error::MetadataTooLarge { .. })
    ));
    assert!(matches!(
        bob.decrypt(Codec::Full, &over, &wire, t),
        Err(Error::MetadataTooLarge { .. })
    ));
}

#[test]
fn max_senders_at_limit_and_over() {
    let t = Instant::now();
    let mut ring = KeyRing::new(CipherSuite::default());
    for s in 0..MAX_SENDERS as u64 {
        let k = SenderKey::new(CipherSuite::default(), s, &[1; 16]).unwrap();
        ring.add_key(&k.material(), t).unwrap();
    }
    assert_eq!(ring.sender_count(), MAX_SENDERS);
    let extra = SenderKey::new(CipherSuite::default(), MAX_SENDERS as u64, &[1; 16]).unwrap();
    assert_eq!(
        ring.add_key(&extra.material(), t),
        Err(Error::TooManySenders { limit: MAX_SENDERS })
    );
    // a known sender can still be updated
    let mut again = SenderKey::new(CipherSuite::default(), 0, &[1; 16]).unwrap();
    again.rotate(&[2; 16]).unwrap();
    assert!(ring.add_key(&again.material(), t).is_ok());
}

#[test]
fn max_generations_at_limit_and_over() {
    let t = Instant::now();
    let mut alice = SenderKey::new(CipherSuite::default(), 7, &[1; 16]).unwrap();
    let mut ring = KeyRing::new(CipherSuite::default());
    let mut first_frames = Vec::new();
    for g in 0..=MAX_GENERATIONS as u64 {
        if g > 0 {
            alice.rotate(&[g as u8 + 1; 16]).unwrap();
        }
        ring.add_key(&alice.material(), t).unwrap();
        first_frames.push(alice.encrypt(Codec::Full, b"", b"f").unwrap());
    }
    // the newest MAX_GENERATIONS generations decrypt (within grace), the oldest is gone
    for (g, w) in first_frames.iter().enumerate() {
        let r = ring.decrypt(Codec::Full, b"", w, t);
        if g == 0 {
            assert!(
                matches!(r, Err(Error::StaleGeneration { .. })),
                "gen 0: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "gen {g}: {r:?}");
        }
    }
}

#[test]
fn sender_id_limit() {
    assert!(SenderKey::new(CipherSuite::default(), MAX_SENDER_ID, &[1; 16]).is_ok());
    assert!(matches!(
        SenderKey::new(CipherSuite::default(), MAX_SENDER_ID + 1, &[1; 16]),
        Err(Error::InvalidKeyId(_))
    ));
}

#[test]
fn base_key_size_limits() {
    for (len, ok) in [
        (MIN_BASE_KEY_SIZE - 1, false),
        (MIN_BASE_KEY_SIZE, true),
        (MAX_BASE_KEY_SIZE, true),
        (MAX_BASE_KEY_SIZE + 1, false),
    ] {
        assert_eq!(
            SenderKey::new(CipherSuite::default(), 1, &vec![9; len]).is_ok(),
            ok,
            "{len}"
        );
    }
}

#[test]
fn overhead_per_frame() {
    // bytes added = clear-mode header + tag; with a small KID (<8) and CTR (<256)
    for (suite, max) in [
        (CipherSuite::Aes128GcmSha256_128, 18),
        (CipherSuite::Aes256GcmSha512_128, 18),
        (CipherSuite::Aes128CtrHmacSha256_80, 12),
    ] {
        let mut alice = SenderKey::new(suite, 0, &[5; 16]).unwrap();
        let mut worst = 0;
        for _ in 0..256 {
            let w = alice.encrypt(Codec::Full, b"", &[0u8; 100]).unwrap();
            worst = worst.max(w.len() - 100);
        }
        assert!(worst <= max, "{}: {worst} > {max}", suite.name());
        assert_eq!(worst, 2 + suite.nt(), "config byte + 1 CTR byte + tag");
    }
}

#[test]
fn key_material_round_trips_and_refuses_garbage() {
    let mut k = SenderKey::new(CipherSuite::Aes256GcmSha512_128, 99, &[3; 32]).unwrap();
    k.ratchet().unwrap();
    k.rotate(&[4; 32]).unwrap();
    k.ratchet().unwrap();
    let m = k.material();
    let bytes = m.to_bytes();
    assert_eq!(KeyMaterial::from_bytes(&bytes).unwrap(), m);
    for cut in 0..bytes.len() {
        assert!(
            KeyMaterial::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut long = bytes.to_vec();
    long.push(0);
    assert!(KeyMaterial::from_bytes(&long).is_err());
    let mut bad_suite = bytes.to_vec();
    bad_suite[2] = 0x09;
    assert_eq!(
        KeyMaterial::from_bytes(&bad_suite),
        Err(Error::UnsupportedSuite(9))
    );
}

#[test]
fn secrets_never_print() {
    let key = [0xc3u8; 16];
    let k = SenderKey::new(CipherSuite::default(), 1, &key).unwrap();
    let m = k.material();
    let printed = format!("{k:?} {m:?} {:?} {:?}", m.base_key, m.to_bytes().len());
    assert!(!printed.to_lowercase().contains("c3c3"), "{printed}");
    assert!(!printed.contains("195, 195"), "{printed}");
    assert!(printed.contains("redacted"), "{printed}");
    let fk = sotto_frame::FrameKey::derive(CipherSuite::default(), 1, &key).unwrap();
    let d = sotto_frame::derive_key_salt(CipherSuite::default(), 1, &key);
    let printed = format!("{fk:?} {d:?}");
    assert!(!printed.contains(&hex::encode(&*d.key)), "{printed}");
    assert!(!printed.contains(&hex::encode(d.salt)), "{printed}");
}

#[test]
fn suite_mismatch_is_refused() {
    let k = SenderKey::new(CipherSuite::Aes256GcmSha512_128, 1, &[1; 32]).unwrap();
    let mut ring = KeyRing::new(CipherSuite::Aes128GcmSha256_128);
    assert_eq!(
        ring.add_key(&k.material(), Instant::now()),
        Err(Error::SuiteMismatch)
    );
}

#[test]
fn every_suite_round_trips_in_every_mode() {
    let t = Instant::now();
    for suite in CipherSuite::ALL {
        let (mut alice, mut bob) = pair(suite, 10);
        for (codec, frame) in [
            (Codec::Full, b"plain full frame".to_vec()),
            (Codec::Vp8, vp8_key_frame(64)),
            (Codec::Opus, vec![0xfc, 1, 2, 3]),
        ] {
            let w = alice.encrypt(codec, b"meta", &frame).unwrap();
            // sender 10 -> KID 0xa00 (2 bytes), CTR < 8 inline: 3 header bytes + tag
            assert_eq!(alice.kid(), 0xa00);
            assert_eq!(w.len(), frame.len() + 3 + suite.nt(), "{}", suite.name());
            assert_eq!(
                bob.decrypt(codec, b"meta", &w, t).unwrap().frame,
                frame,
                "{}",
                suite.name()
            );
        }
    }
}

#[test]
fn split_checks_a_frames_layout_without_a_key() {
    for suite in [CipherSuite::default(), CipherSuite::Aes128CtrHmacSha256_32] {
        let (mut alice, _) = pair(suite, 7);
        // a key frame (10 clear bytes), a delta frame (3) and an Opus frame (1)
        let key = vp8_key_frame(400);
        let delta = [0x31u8, 0x0a, 0x00, 1, 2, 3];
        for (codec, frame, clear) in [
            (Codec::Vp8, &key[..], VP8_KEY_FRAME_CLEAR_BYTES),
            (Codec::Vp8, &delta[..], VP8_DELTA_FRAME_CLEAR_BYTES),
            (Codec::Opus, &[0xfc, 9, 9, 9][..], OPUS_CLEAR_BYTES),
        ] {
            let wire = alice.encrypt(codec, b"", frame).unwrap();
            let p = codec.split(suite, &wire).unwrap();
            assert_eq!(p.clear_len, clear);
            assert_eq!(p.header.kid, alice.kid());
            assert_eq!(p.clear_len + p.header_len + p.body_len, wire.len());
            assert_eq!(p.body_len, frame.len() - clear + suite.nt());
            // one byte short of a tag after the header is refused by name
            let cut = p.clear_len + p.header_len + suite.nt() - 1;
            assert_eq!(
                codec.split(suite, &wire[..cut]),
                Err(Error::TruncatedCiphertext {
                    len: suite.nt() - 1,
                    needed: suite.nt()
                })
            );
            // exactly a tag is a well-formed (if empty) frame
            assert!(codec.split(suite, &wire[..cut + 1]).is_ok());
        }
        assert!(matches!(
            Codec::Vp8.split(suite, &[]),
            Err(Error::CodecFrameTooShort { .. })
        ));
        // a header that is not minimally encoded (or truncated) is refused
        let mut bad = key[..VP8_KEY_FRAME_CLEAR_BYTES].to_vec();
        bad.push(0x80 | 0x10); // KID length 1 byte, missing
        assert!(matches!(
            Codec::Vp8.split(suite, &bad),
            Err(Error::MalformedHeader(_))
        ));
        let huge = vec![0u8; suite.max_wire_frame_size() + 1];
        assert!(matches!(
            Codec::Full.split(suite, &huge),
            Err(Error::FrameTooLarge { .. })
        ));
    }
}

#[test]
fn a_max_frame_size_plaintext_splits_and_decrypts_and_the_wire_limit_is_shared() {
    let t = Instant::now();
    for suite in CipherSuite::ALL {
        let limit = suite.max_wire_frame_size();
        assert_eq!(limit, MAX_FRAME_SIZE + MAX_HEADER_SIZE + suite.nt());
        let (mut alice, mut bob) = pair(suite, 8);
        for (codec, frame) in [
            (Codec::Full, vec![7u8; MAX_FRAME_SIZE]),
            (Codec::Vp8, vp8_key_frame(MAX_FRAME_SIZE)),
        ] {
            let wire = alice.encrypt(codec, b"", &frame).unwrap();
            assert!(wire.len() > MAX_FRAME_SIZE && wire.len() <= limit);
            let p = codec.split(suite, &wire).unwrap();
            assert_eq!(p.clear_len + p.header_len + p.body_len, wire.len());
            assert_eq!(bob.decrypt(codec, b"", &wire, t).unwrap().frame, frame);
            // split checks layout and size only: a frame at the wire limit passes, one byte
            // more is refused, by split and decrypt alike
            let mut at_limit = wire;
            at_limit.resize(limit, 0);
            assert!(codec.split(suite, &at_limit).is_ok());
            at_limit.push(0);
            let too_large = Some(Error::FrameTooLarge {
                len: limit + 1,
                limit,
            });
            assert_eq!(codec.split(suite, &at_limit).err(), too_large);
            assert_eq!(bob.decrypt(codec, b"", &at_limit, t).err(), too_large);
        }
    }
}
