//! RFC 9605 Appendix C test vectors, read from `protocol-spec/vectors/sframe/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde::Deserialize;
use sotto_frame::keys::{KEY_LABEL, SALT_LABEL};
use sotto_frame::suite::{aead_open, aead_seal};
use sotto_frame::{derive_key_salt, CipherSuite, Error, FrameKey, Header};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../protocol-spec/vectors/sframe/rfc9605-test-vectors-025d568.json"
);

#[derive(Deserialize)]
struct Vectors {
    header: Vec<HeaderCase>,
    aes_ctr_hmac: Vec<AeadCase>,
    sframe: Vec<SframeCase>,
}

#[derive(Deserialize)]
struct HeaderCase {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(Deserialize)]
struct AeadCase {
    cipher_suite: u16,
    key: String,
    enc_key: String,
    auth_key: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

#[derive(Deserialize)]
struct SframeCase {
    cipher_suite: u16,
    kid: u64,
    ctr: u64,
    base_key: String,
    sframe_key_label: String,
    sframe_salt_label: String,
    sframe_key: String,
    sframe_salt: String,
    metadata: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

fn vectors() -> Vectors {
    let text = std::fs::read_to_string(VECTORS).expect("vector file");
    serde_json::from_str(&text).expect("vector JSON")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn nonce12(s: &str) -> [u8; 12] {
    h(s).try_into().expect("12-byte nonce")
}

#[test]
fn all_289_header_vectors_encode_and_decode_exactly() {
    let v = vectors();
    assert_eq!(v.header.len(), 289, "the RFC publishes 289 header cases");
    for case in &v.header {
        let want = h(&case.encoded);
        let header = Header::new(case.kid, case.ctr);
        assert_eq!(
            header.encode(),
            want,
            "encode kid={} ctr={}",
            case.kid,
            case.ctr
        );
        assert_eq!(header.encoded_len(), want.len());
        // decode reports what it consumed, also with trailing bytes after the header
        let mut with_tail = want.clone();
        with_tail.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(Header::decode(&with_tail), Ok((header, want.len())));
        // every strict prefix is truncated
        for cut in 0..want.len() {
            assert!(
                matches!(Header::decode(&want[..cut]), Err(Error::MalformedHeader(_))),
                "prefix {cut} of {} must be refused",
                case.encoded
            );
        }
    }
}

#[test]
fn aes_ctr_hmac_vectors_seal_and_open() {
    let v = vectors();
    assert_eq!(v.aes_ctr_hmac.len(), 3);
    for case in &v.aes_ctr_hmac {
        let suite = CipherSuite::from_id(case.cipher_suite).expect("suite");
        let key = h(&case.key);
        // the key is enc_key ‖ auth_key (RFC 9605 §4.5.1)
        assert_eq!(key, [h(&case.enc_key), h(&case.auth_key)].concat());
        let nonce = nonce12(&case.nonce);
        let ct = aead_seal(suite, &key, &nonce, &h(&case.aad), &h(&case.pt)).expect("seal");
        assert_eq!(hex::encode(&ct), case.ct, "suite {}", suite.name());
        assert_eq!(ct.len(), h(&case.pt).len() + suite.nt());
        let pt = aead_open(suite, &key, &nonce, &h(&case.aad), &ct).expect("open");
        assert_eq!(pt, h(&case.pt));
        // flip each byte of the ciphertext+tag: must never open
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                aead_open(suite, &key, &nonce, &h(&case.aad), &bad),
                Err(Error::AuthenticationFailed)
            );
        }
        // and a changed AAD must not open either
        let mut aad = h(&case.aad);
        aad.push(0);
        assert_eq!(
            aead_open(suite, &key, &nonce, &aad, &ct),
            Err(Error::AuthenticationFailed)
        );
    }
}

#[test]
fn sframe_vectors_for_every_suite() {
    let v = vectors();
    let suites: Vec<u16> = v.sframe.iter().map(|c| c.cipher_suite).collect();
    assert_eq!(suites, vec![1, 2, 3, 4, 5], "one case per RFC suite");
    for case in &v.sframe {
        let suite = CipherSuite::from_id(case.cipher_suite).expect("suite");
        let base_key = h(&case.base_key);
        let kid_suite = [&case.kid.to_be_bytes()[..], &suite.id().to_be_bytes()].concat();
        assert_eq!(
            hex::encode([KEY_LABEL, &kid_suite].concat()),
            case.sframe_key_label
        );
        assert_eq!(
            hex::encode([SALT_LABEL, &kid_suite].concat()),
            case.sframe_salt_label
        );

        let derived = derive_key_salt(suite, case.kid, &base_key);
        assert_eq!(
            hex::encode(&*derived.key),
            case.sframe_key,
            "{}",
            suite.name()
        );
        assert_eq!(
            hex::encode(derived.salt),
            case.sframe_salt,
            "{}",
            suite.name()
        );

        let key = FrameKey::derive(suite, case.kid, &base_key).expect("key");
        assert_eq!(hex::encode(key.nonce(case.ctr)), case.nonce);

        let header = Header::new(case.kid, case.ctr).encode();
        assert_eq!(
            hex::encode([&header[..], &h(&case.metadata)].concat()),
            case.aad
        );

        let mut wire = Vec::new();
        key.seal_into(case.ctr, &h(&case.metadata), &h(&case.pt), &mut wire)
            .expect("seal");
        assert_eq!(hex::encode(&wire), case.ct, "{}", suite.name());

        let (got_header, pt) = key
            .open_frame(&h(&case.metadata), &h(&case.ct))
            .expect("open");
        assert_eq!(got_header, Header::new(case.kid, case.ctr));
        assert_eq!(pt, h(&case.pt));

        // wrong metadata: the frame must not open
        assert_eq!(
            key.open_frame(b"other metadata", &h(&case.ct)),
            Err(Error::AuthenticationFailed)
        );
    }
}
