//! Identity keys and XEdDSA: libsignal's published values, round trips, redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{hex_field, rng, vector};
use sotto_ratchet::{Error, IdentityKey, IdentityKeyPair, PrivateKey, PublicKey};

#[test]
fn x25519_agreement_matches_libsignal_vector() {
    let v = vector("x25519.json");
    for case in v["cases"].as_array().unwrap() {
        let a = PrivateKey::deserialize(&hex_field(case, "alice_private")).unwrap();
        let b = PrivateKey::deserialize(&hex_field(case, "bob_private")).unwrap();
        assert_eq!(
            a.public_key().as_bytes().to_vec(),
            hex_field(case, "alice_public")
        );
        assert_eq!(
            b.public_key().as_bytes().to_vec(),
            hex_field(case, "bob_public")
        );
        assert_eq!(a.agree(&b.public_key()).to_vec(), hex_field(case, "shared"));
        assert_eq!(b.agree(&a.public_key()).to_vec(), hex_field(case, "shared"));
    }
}

#[test]
fn libsignal_signature_with_sign_bit_set_verifies_and_every_bit_flip_fails() {
    let v = vector("xeddsa.json");
    for case in v["cases"].as_array().unwrap() {
        let private = PrivateKey::deserialize(&hex_field(case, "private")).unwrap();
        let public = PublicKey::from_bytes(hex_field(case, "public").try_into().unwrap());
        assert_eq!(private.public_key(), public);
        let identity = IdentityKey::new(public);
        let msg = hex_field(case, "message");
        let sig = hex_field(case, "signature");
        assert_eq!(sig[63] & 0x80, 0x80, "vector exercises the sign bit");
        assert!(identity.verify_signature(&msg, &sig));
        for i in 0..sig.len() * 8 {
            let mut bad = sig.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !identity.verify_signature(&msg, &bad),
                "bit {i} flip accepted"
            );
        }
        assert!(!identity.verify_signature(&msg[1..], &sig));
        assert!(!identity.verify_signature(&msg, &sig[..63]));
        assert!(!identity.verify_signature(&msg, &[sig.as_slice(), &[0]].concat()));
    }
}

#[test]
fn our_signatures_verify_and_carry_the_edwards_sign_bit_about_half_the_time() {
    let mut r = rng(1);
    let mut top_bit_set = 0;
    for _ in 0..64 {
        let pair = IdentityKeyPair::generate(&mut r);
        let msg = pair.public().serialize();
        let sig = pair.sign(&mut r, &msg);
        assert!(pair.public().verify_signature(&msg, &sig));
        let other = IdentityKeyPair::generate(&mut r);
        assert!(!other.public().verify_signature(&msg, &sig));
        top_bit_set += usize::from(sig[63] >> 7);
    }
    // Edwards sign bit of a random key is 1 with probability 1/2.
    assert!((12..=52).contains(&top_bit_set), "{top_bit_set}");
}

#[test]
fn identity_key_serializes_with_type_byte_and_rejects_bad_encodings() {
    let pair = IdentityKeyPair::generate(&mut rng(2));
    let bytes = pair.public().serialize();
    assert_eq!(bytes.len(), 33);
    assert_eq!(bytes[0], 0x05);
    assert_eq!(IdentityKey::deserialize(&bytes).unwrap(), pair.public());
    assert!(matches!(
        IdentityKey::deserialize(&[]),
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        IdentityKey::deserialize(&bytes[..32]),
        Err(Error::InvalidKey(_))
    ));
    let mut long = bytes.to_vec();
    long.push(0);
    assert!(matches!(
        IdentityKey::deserialize(&long),
        Err(Error::InvalidKey(_))
    ));
    let mut wrong_type = bytes;
    wrong_type[0] = 0x08;
    assert!(matches!(
        IdentityKey::deserialize(&wrong_type),
        Err(Error::InvalidKey(_))
    ));
}

#[test]
fn identity_key_pair_round_trips_in_libsignal_protobuf_form() {
    let pair = IdentityKeyPair::generate(&mut rng(3));
    let bytes = pair.serialize();
    // IdentityKeyPairStructure: field 1 (33 bytes) then field 2 (32 bytes).
    assert_eq!(&bytes[..2], &[0x0a, 33]);
    assert_eq!(&bytes[2..35], &pair.public().serialize());
    assert_eq!(&bytes[35..37], &[0x12, 32]);
    let back = IdentityKeyPair::deserialize(&bytes).unwrap();
    assert_eq!(back.public(), pair.public());
    let sig = back.sign(&mut rng(4), b"m");
    assert!(pair.public().verify_signature(b"m", &sig));

    let mut mismatched = bytes.to_vec();
    mismatched[5] ^= 1;
    assert!(IdentityKeyPair::deserialize(&mismatched).is_err());
    assert!(IdentityKeyPair::deserialize(&bytes[..40]).is_err());
}

#[test]
fn private_key_debug_is_redacted() {
    let pair = IdentityKeyPair::generate(&mut rng(5));
    let secret = hex::encode(pair.private_key().serialize().as_slice());
    let printed = format!("{pair:?} {:?}", pair.private_key());
    assert!(printed.contains("redacted"), "{printed}");
    assert!(!printed.contains(&secret[..8]), "{printed}");
    assert_eq!(
        format!("{:?}", pair.private_key()),
        "PrivateKey([redacted])"
    );
}
