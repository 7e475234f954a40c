//! Known answers from libsignal's published test values (data files in
//! `protocol-spec/vectors/ratchet/`, extracted from libsignal v0.90.0 / v0.72.1 tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{hex_field, vector};
use sotto_ratchet::*;

fn arr32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap()
}

#[test]
fn chain_key_step_matches_libsignal_test_chain_key_derivation() {
    let v = vector("chain_key.json");
    for c in v["cases"].as_array().unwrap() {
        let (seed, cipher, mac, iv, next) = testing::chain_step(arr32(&hex_field(c, "chain_key")));
        assert_eq!(seed.to_vec(), hex_field(c, "message_key_seed"));
        assert_eq!(cipher.to_vec(), hex_field(c, "cipher_key"));
        assert_eq!(mac.to_vec(), hex_field(c, "mac_key"));
        assert_eq!(iv.to_vec(), hex_field(c, "iv"));
        assert_eq!(next.to_vec(), hex_field(c, "next_chain_key"));
    }
}

#[test]
fn x3dh_session_chain_keys_match_libsignal_ratchet_tests() {
    // The non-Kyber half of the key schedule (version 3 label "WhisperText"): same DH order,
    // same 0xFF prefix, same HKDF split as PQXDH.
    let v = vector("ratchet_session.json");
    for c in v["cases"].as_array().unwrap() {
        let pubk = |k: &str| PublicKey::deserialize(&hex_field(c, k)).unwrap();
        let privk = |k: &str| PrivateKey::deserialize(&hex_field(c, k)).unwrap();
        let mut secret = vec![0xFFu8; 32];
        let expected = match c["side"].as_str().unwrap() {
            "bob" => {
                let spk = privk("bob_signed_prekey_private");
                secret.extend_from_slice(&*spk.agree(&pubk("alice_identity_public")));
                secret.extend_from_slice(
                    &*privk("bob_identity_private").agree(&pubk("alice_base_public")),
                );
                secret.extend_from_slice(&*spk.agree(&pubk("alice_base_public")));
                hex_field(c, "expected_sender_chain_key")
            }
            "alice" => {
                let base = privk("alice_base_private");
                secret.extend_from_slice(
                    &*privk("alice_identity_private").agree(&pubk("bob_signed_prekey_public")),
                );
                secret.extend_from_slice(&*base.agree(&pubk("bob_identity_public")));
                secret.extend_from_slice(&*base.agree(&pubk("bob_signed_prekey_public")));
                hex_field(c, "expected_receiver_chain_key")
            }
            other => panic!("side {other}"),
        };
        let (_rk, ck) = testing::initial_keys(b"WhisperText", &secret);
        assert_eq!(ck.to_vec(), expected, "side {}", c["side"]);
    }
}

#[test]
fn signal_message_bytes_and_mac_match_libsignal() {
    let v = vector("signal_message.json");
    for c in v["cases"].as_array().unwrap() {
        assert!(c["pq_ratchet"].is_null());
        let body = testing::signal_message(
            c["version"].as_u64().unwrap() as u8,
            &arr32(&hex_field(c, "mac_key")),
            PublicKey::deserialize(&hex_field(c, "sender_ratchet_key")).unwrap(),
            c["counter"].as_u64().unwrap() as u32,
            c["previous_counter"].as_u64().unwrap() as u32,
            hex_field(c, "ciphertext"),
            &IdentityKey::deserialize(&hex_field(c, "sender_identity_key")).unwrap(),
            &IdentityKey::deserialize(&hex_field(c, "receiver_identity_key")).unwrap(),
        );
        assert_eq!(hex::encode(&body), c["body"].as_str().unwrap());
        assert_eq!(body[0], 0x44);
        let parsed = SignalMessage::deserialize(&body).unwrap();
        assert_eq!(parsed.counter(), c["counter"].as_u64().unwrap() as u32);
        assert_eq!(
            parsed.previous_counter(),
            c["previous_counter"].as_u64().unwrap() as u32
        );
        assert_eq!(parsed.ciphertext(), hex_field(c, "ciphertext").as_slice());
    }
}

#[test]
fn fingerprints_match_libsignal_published_values() {
    let v = vector("fingerprint.json");
    for c in v["cases"].as_array().unwrap() {
        let f = Fingerprint::with_iterations(
            c["version"].as_u64().unwrap() as u32,
            c["iterations"].as_u64().unwrap() as u32,
            &hex_field(c, "local_stable_id"),
            &IdentityKey::deserialize(&hex_field(c, "local_identity_key")).unwrap(),
            &hex_field(c, "remote_stable_id"),
            &IdentityKey::deserialize(&hex_field(c, "remote_identity_key")).unwrap(),
        );
        assert_eq!(f.displayable, c["displayable"].as_str().unwrap());
        assert_eq!(hex::encode(&f.scannable), c["scannable"].as_str().unwrap());
    }
    // Each side's scannable payload matches the other's, not its own.
    let cases = v["cases"].as_array().unwrap();
    let fp = |c: &serde_json::Value| {
        Fingerprint::new(
            c["version"].as_u64().unwrap() as u32,
            &hex_field(c, "local_stable_id"),
            &IdentityKey::deserialize(&hex_field(c, "local_identity_key")).unwrap(),
            &hex_field(c, "remote_stable_id"),
            &IdentityKey::deserialize(&hex_field(c, "remote_identity_key")).unwrap(),
        )
    };
    let a = cases.iter().find(|c| c["side"] == "alice").unwrap();
    let b = cases
        .iter()
        .find(|c| c["side"] == "bob" && c["version"] == a["version"])
        .unwrap();
    let (fa, fb) = (fp(a), fp(b));
    assert!(fa.compare_scanned(&fb.scannable).unwrap());
    assert!(!fa.compare_scanned(&fa.scannable).unwrap());
    let mut other = fb.scannable.clone();
    let n = other.len() - 1;
    other[n] ^= 1;
    assert!(!fa.compare_scanned(&other).unwrap());
}

#[test]
fn kyber1024_published_key_pair_serializes_with_type_byte_and_round_trips_kem() {
    let v = vector("kyber1024_keypair.json");
    let public = [vec![0x08], hex_field(&v, "public_raw")].concat();
    let secret = [vec![0x08], hex_field(&v, "secret_raw")].concat();
    assert_eq!(public.len(), 1569);
    assert_eq!(secret.len(), 3169);
    let pair = KyberKeyPair::from_serialized(&public, &secret).unwrap();
    assert_eq!(pair.public_key.serialize(), public);
    assert_eq!(pair.secret_key.serialize().as_slice(), secret.as_slice());
    // Wrong type byte (ML-KEM-1024 is 0x0a) and wrong lengths are refused.
    let mut mlkem = public.clone();
    mlkem[0] = 0x0a;
    assert!(KyberPublicKey::deserialize(&mlkem).is_err());
    assert!(KyberPublicKey::deserialize(&public[..1568]).is_err());
}
