#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto frame inspect|decrypt` against the RFC 9605 test vectors (data we did not produce).

use std::process::Command;

fn sotto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sotto"))
}

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../protocol-spec/vectors/sframe/rfc9605-test-vectors-025d568.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["sframe"].as_array().unwrap().clone()
}

fn suite_name(id: u64) -> &'static str {
    match id {
        1 => "aes-128-ctr-hmac-80",
        2 => "aes-128-ctr-hmac-64",
        3 => "aes-128-ctr-hmac-32",
        4 => "aes-128-gcm",
        5 => "aes-256-gcm",
        _ => panic!("suite {id}"),
    }
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[test]
fn inspect_prints_kid_counter_and_suite_of_every_rfc_vector() {
    for v in vectors() {
        let out = sotto()
            .args([
                "frame",
                "inspect",
                "--suite",
                suite_name(v["cipher_suite"].as_u64().unwrap()),
                s(&v, "ct"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let kid = v["kid"].as_u64().unwrap();
        let ctr = v["ctr"].as_u64().unwrap();
        assert!(text.contains(&format!("kid {kid:#x}")), "{text}");
        assert!(text.contains(&format!("ctr {ctr}\n")), "{text}");
        let id = v["cipher_suite"].as_u64().unwrap();
        assert!(text.contains(&format!("({id:#06x})")), "{text}");
    }
}

#[test]
fn decrypt_with_the_right_key_gives_the_rfc_plaintext() {
    for v in vectors() {
        let out = sotto()
            .args([
                "frame",
                "decrypt",
                "--suite",
                suite_name(v["cipher_suite"].as_u64().unwrap()),
                "--key",
                s(&v, "base_key"),
                "--metadata",
                s(&v, "metadata"),
                s(&v, "ct"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.trim_end().ends_with(s(&v, "pt")), "{text}");
    }
}

#[test]
fn decrypt_with_a_wrong_key_fails_clearly_with_non_zero_exit() {
    for v in vectors() {
        let mut key = hex::decode(s(&v, "base_key")).unwrap();
        key[0] ^= 1;
        let out = sotto()
            .args([
                "frame",
                "decrypt",
                "--suite",
                suite_name(v["cipher_suite"].as_u64().unwrap()),
                "--key",
                &hex::encode(key),
                "--metadata",
                s(&v, "metadata"),
                s(&v, "ct"),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "no plaintext may be printed");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("decryption failed: frame failed authentication"),
            "{err}"
        );
        assert!(err.contains("did not decrypt with the given key"), "{err}");
    }
}

#[test]
fn garbage_is_refused_with_a_message_not_a_panic() {
    for input in ["", "zz", "ff", "08"] {
        let out = sotto().args(["frame", "inspect", input]).output().unwrap();
        assert!(!out.status.success(), "{input}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("sotto: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn key_material_follows_the_senders_ratchet() {
    use sotto_frame::{CipherSuite, Codec, SenderKey};
    let mut sender = SenderKey::new(CipherSuite::Aes128GcmSha256_128, 3, &[9u8; 16]).unwrap();
    let material = hex::encode(&*sender.material().to_bytes());
    sender.ratchet().unwrap();
    sender.ratchet().unwrap();
    let frame = [0x31u8, 0x02, 0x00, 0xaa, 0xbb, 0xcc];
    let wire = sender.encrypt(Codec::Vp8, b"", &frame).unwrap();
    let out = sotto()
        .args([
            "frame",
            "decrypt",
            "--codec",
            "vp8",
            "--key-material",
            &material,
            &hex::encode(&wire),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&hex::encode(frame)), "{text}");
    assert!(text.contains("kid 0x302"), "{text}");
}
