//! Differential tests against Signal's official library (`@signalapp/libsignal-client`),
//! driven through `tests/interop/peer.mjs` (JSON lines over stdin/stdout, see
//! `tests/interop/PROTOCOL.md`).
//!
//! These tests FAIL (never skip) when `node` or `tests/interop/node_modules` are missing:
//! run `cd tests/interop && npm ci` (CI does this in `.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sotto_ratchet::*;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    lib: &'static str,
}

impl Peer {
    fn spawn(lib: &'static str) -> Peer {
        let dir = interop_dir();
        let node_ok = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            node_ok,
            "libsignal interop: `node` is not installed or not on PATH; install Node >= 20 \
             (CI installs it). This test does not skip."
        );
        let alias = match lib {
            "0.90.0" => "libsignal-090",
            "0.72.1" => "libsignal-072",
            "0.92.2" => "libsignal-0922",
            "0.103.0" => "libsignal-0103",
            other => panic!("unknown libsignal version {other}"),
        };
        assert!(
            dir.join("node_modules").join(alias).exists(),
            "libsignal interop: {}/node_modules/{alias} is missing; run `cd tests/interop && \
             npm ci` (CI does this). This test does not skip.",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("peer.mjs"))
            .arg("--lib")
            .arg(lib)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node peer.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer {
            child,
            stdin,
            stdout,
            lib,
        };
        let v = peer.call(json!({"op": "version"}));
        assert_eq!(v["version"], lib, "peer loaded the wrong libsignal: {v}");
        peer
    }

    fn try_call(&mut self, req: Value) -> Value {
        let line = serde_json::to_string(&req).unwrap();
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut resp = String::new();
        let n = self.stdout.read_line(&mut resp).unwrap();
        assert!(n > 0, "peer ({}) closed stdout after {req}", self.lib);
        serde_json::from_str(&resp).unwrap()
    }

    fn call(&mut self, req: Value) -> Value {
        let op = req["op"].clone();
        let r = self.try_call(req);
        assert_eq!(r["ok"], true, "peer ({}) op {op} failed: {r}", self.lib);
        r
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}
fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
}

const PEER_NAME: &str = "libsignal";
const SOTTO_NAME: &str = "sotto";

/// Our side: an in-memory store plus the address under which we know the peer.
struct Sotto {
    store: InMemoryStore,
    identity: IdentityKeyPair,
    peer: ProtocolAddress,
    rng: rand::rngs::StdRng,
    policy: SpqrPolicy,
}

impl Sotto {
    fn new(seed: u64) -> Sotto {
        let mut rng = common::rng(seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        Sotto {
            store: InMemoryStore::new(identity.clone(), 4242),
            identity,
            peer: ProtocolAddress::new(PEER_NAME, 1),
            rng,
            policy: SpqrPolicy::default(),
        }
    }

    fn with_policy(seed: u64, policy: SpqrPolicy) -> Sotto {
        Sotto {
            policy,
            ..Sotto::new(seed)
        }
    }

    /// Braid epoch of the current session's SPQR state (None: no SPQR).
    fn spqr_epoch(&self) -> Option<u64> {
        self.store
            .load_session(&self.peer)
            .unwrap()
            .and_then(|r| r.spqr_epoch())
    }

    fn bundle_json(&mut self) -> Value {
        let rng = &mut self.rng;
        let opk = PreKeyRecord::generate(11, rng);
        let spk = SignedPreKeyRecord::generate(22, 1_700_000_000_000, &self.identity, rng);
        let kpk = KyberPreKeyRecord::generate(33, 1_700_000_000_000, &self.identity, rng);
        let b = PreKeyBundle::from_records(4242, 1, self.identity.public(), Some(&opk), &spk, &kpk);
        self.store.save_pre_key(opk).unwrap();
        self.store.save_signed_pre_key(spk).unwrap();
        self.store.save_kyber_pre_key(kpk, true).unwrap();
        let (pre_key_id, pre_key_public) = match b.pre_key {
            Some((id, k)) => (json!(id), json!(b64(&k.serialize()))),
            None => (Value::Null, Value::Null),
        };
        json!({
            "registration_id": b.registration_id, "device_id": b.device_id,
            "pre_key_id": pre_key_id, "pre_key_public": pre_key_public,
            "signed_pre_key_id": b.signed_pre_key_id,
            "signed_pre_key_public": b64(&b.signed_pre_key_public.serialize()),
            "signed_pre_key_signature": b64(&b.signed_pre_key_signature),
            "identity_key": b64(&b.identity_key.serialize()),
            "kyber_pre_key_id": b.kyber_pre_key_id,
            "kyber_pre_key_public": b64(&b.kyber_pre_key_public.serialize()),
            "kyber_pre_key_signature": b64(&b.kyber_pre_key_signature),
        })
    }

    fn process_bundle_json(&mut self, b: &Value) -> Result<()> {
        let pre_key = if b["pre_key_id"].is_null() {
            None
        } else {
            Some((
                b["pre_key_id"].as_u64().unwrap() as u32,
                PublicKey::deserialize(&unb64(&b["pre_key_public"]))?,
            ))
        };
        let bundle = PreKeyBundle {
            registration_id: b["registration_id"].as_u64().unwrap() as u32,
            device_id: b["device_id"].as_u64().unwrap() as u32,
            pre_key,
            signed_pre_key_id: b["signed_pre_key_id"].as_u64().unwrap() as u32,
            signed_pre_key_public: PublicKey::deserialize(&unb64(&b["signed_pre_key_public"]))?,
            signed_pre_key_signature: unb64(&b["signed_pre_key_signature"]),
            identity_key: IdentityKey::deserialize(&unb64(&b["identity_key"]))?,
            kyber_pre_key_id: b["kyber_pre_key_id"].as_u64().unwrap() as u32,
            kyber_pre_key_public: KyberPublicKey::deserialize(&unb64(&b["kyber_pre_key_public"]))?,
            kyber_pre_key_signature: unb64(&b["kyber_pre_key_signature"]),
        };
        process_prekey_bundle_with_policy(
            &self.peer,
            &mut self.store,
            &bundle,
            common::now(),
            &mut self.rng,
            self.policy,
        )
    }

    fn encrypt(&mut self, pt: &[u8]) -> (u8, Vec<u8>) {
        let m = encrypt_with_rng(
            &self.peer,
            &mut self.store,
            pt,
            common::now(),
            &mut self.rng,
        )
        .unwrap();
        (m.message_type(), m.serialized().to_vec())
    }

    fn decrypt(&mut self, ty: u8, body: &[u8]) -> Result<Vec<u8>> {
        let m = CiphertextMessage::deserialize(ty, body)?;
        decrypt_with(
            &self.peer,
            &mut self.store,
            &m,
            &mut self.rng,
            &DecryptOptions {
                spqr: self.policy,
                local_address: None,
            },
        )
    }
}

fn peer_addr() -> Value {
    json!({"name": SOTTO_NAME, "device_id": 1})
}

fn peer_encrypt(p: &mut Peer, pt: &[u8]) -> (u8, Vec<u8>) {
    let r = p.call(json!({"op": "encrypt", "peer": peer_addr(), "plaintext": b64(pt)}));
    (r["type"].as_u64().unwrap() as u8, unb64(&r["body"]))
}

fn peer_try_decrypt(p: &mut Peer, ty: u8, body: &[u8]) -> Value {
    p.try_call(json!({"op": "decrypt", "peer": peer_addr(), "type": ty, "body": b64(body)}))
}

fn peer_decrypt(p: &mut Peer, ty: u8, body: &[u8]) -> Vec<u8> {
    let r = peer_try_decrypt(p, ty, body);
    assert_eq!(r["ok"], true, "libsignal {} failed to decrypt: {r}", p.lib);
    unb64(&r["plaintext"])
}

fn init_peer(p: &mut Peer) {
    p.call(json!({"op": "init", "name": PEER_NAME, "registration_id": 1111, "device_id": 1}));
}

/// libsignal publishes, sotto initiates; first exchange. Returns the connected pair.
fn sotto_initiates(lib: &'static str, seed: u64) -> (Peer, Sotto) {
    sotto_initiates_with(lib, Sotto::new(seed))
}

fn sotto_initiates_with(lib: &'static str, mut s: Sotto) -> (Peer, Sotto) {
    let mut p = Peer::spawn(lib);
    init_peer(&mut p);
    let bundle = p.call(
        json!({"op": "bundle", "pre_key_id": 11, "signed_pre_key_id": 22, "kyber_pre_key_id": 33}),
    );
    s.process_bundle_json(&bundle["bundle"]).unwrap();
    // The initiator keeps sending PreKeySignalMessages until it hears back.
    let (t1, m1) = s.encrypt(b"hello libsignal");
    let (t2, m2) = s.encrypt(b"second before reply");
    assert_eq!((t1, t2), (3, 3));
    assert_eq!(m1[0], 0x44, "version byte");
    assert_eq!(peer_decrypt(&mut p, t1, &m1), b"hello libsignal");
    assert_eq!(peer_decrypt(&mut p, t2, &m2), b"second before reply");
    // Replay of a PreKeySignalMessage is rejected by libsignal.
    let replay = peer_try_decrypt(&mut p, t1, &m1);
    assert_eq!(replay["error_code"], "DuplicatedMessage", "{replay}");
    let consumed = p.call(json!({"op": "prekeys"}));
    assert_eq!(consumed["pre_keys_consumed"], json!([11]), "{consumed}");
    let (tr, r) = peer_encrypt(&mut p, b"hello sotto");
    assert_eq!(tr, 2);
    assert_eq!(s.decrypt(tr, &r).unwrap(), b"hello sotto");
    let (t3, _) = s.encrypt(b"now a SignalMessage");
    assert_eq!(t3, 2, "after the reply the initiator sends SignalMessages");
    // keep the peer in sync: deliver that message too
    (p, s)
}

/// sotto publishes, libsignal initiates; first exchange.
fn libsignal_initiates(lib: &'static str, seed: u64) -> (Peer, Sotto) {
    libsignal_initiates_with(lib, Sotto::new(seed))
}

fn libsignal_initiates_with(lib: &'static str, mut s: Sotto) -> (Peer, Sotto) {
    let mut p = Peer::spawn(lib);
    init_peer(&mut p);
    let bundle = s.bundle_json();
    p.call(json!({"op": "process_bundle", "peer": peer_addr(), "bundle": bundle}));
    let (t1, m1) = peer_encrypt(&mut p, b"hello sotto");
    let (t2, m2) = peer_encrypt(&mut p, b"again before reply");
    assert_eq!((t1, t2), (3, 3));
    assert_eq!(s.decrypt(t1, &m1).unwrap(), b"hello sotto");
    assert!(
        s.store.get_pre_key(11).unwrap().is_none(),
        "one-time prekey consumed"
    );
    assert_eq!(s.decrypt(t2, &m2).unwrap(), b"again before reply");
    assert!(matches!(s.decrypt(t1, &m1), Err(Error::DuplicateMessage)));
    let (tr, r) = s.encrypt(b"hello libsignal");
    assert_eq!(tr, 2);
    assert_eq!(peer_decrypt(&mut p, tr, &r), b"hello libsignal");
    (p, s)
}

/// 50 messages each way, replies interleaved, then out-of-order delivery in both directions,
/// including across a DH ratchet step.
fn converse(p: &mut Peer, s: &mut Sotto) {
    for i in 0..50u32 {
        let a = format!("sotto→libsignal {i}");
        let (t, m) = s.encrypt(a.as_bytes());
        assert_eq!(peer_decrypt(p, t, &m), a.as_bytes());
        let b = format!("libsignal→sotto {i} {}", "x".repeat(i as usize));
        let (t, m) = peer_encrypt(p, b.as_bytes());
        assert_eq!(s.decrypt(t, &m).unwrap(), b.as_bytes());
        if i % 7 == 3 {
            // a burst in one direction without replies
            for j in 0..3 {
                let c = format!("burst {i}.{j}");
                let (t, m) = peer_encrypt(p, c.as_bytes());
                assert_eq!(s.decrypt(t, &m).unwrap(), c.as_bytes());
            }
        }
    }

    // libsignal → sotto, delivered 5,0,3,1,4,2.
    let msgs: Vec<_> = (0..6)
        .map(|i| peer_encrypt(p, format!("ooo {i}").as_bytes()))
        .collect();
    for i in [5usize, 0, 3, 1, 4, 2] {
        let (t, m) = &msgs[i];
        assert_eq!(s.decrypt(*t, m).unwrap(), format!("ooo {i}").as_bytes());
    }
    // replay of a SignalMessage
    assert!(matches!(
        s.decrypt(msgs[2].0, &msgs[2].1),
        Err(Error::DuplicateMessage)
    ));

    // sotto → libsignal, delivered 4,1,5,0,2,3.
    let msgs: Vec<_> = (0..6)
        .map(|i| s.encrypt(format!("ooo back {i}").as_bytes()))
        .collect();
    for i in [4usize, 1, 5, 0, 2, 3] {
        let (t, m) = &msgs[i];
        assert_eq!(peer_decrypt(p, *t, m), format!("ooo back {i}").as_bytes());
    }
    let replay = peer_try_decrypt(p, msgs[0].0, &msgs[0].1);
    assert_eq!(replay["error_code"], "DuplicatedMessage", "{replay}");

    // Across a DH ratchet step: two old-chain messages arrive after a new-chain one.
    let old1 = peer_encrypt(p, b"old chain 1");
    let old2 = peer_encrypt(p, b"old chain 2");
    let (t, m) = s.encrypt(b"ratchet please");
    assert_eq!(peer_decrypt(p, t, &m), b"ratchet please");
    let new1 = peer_encrypt(p, b"new chain 1");
    assert_eq!(s.decrypt(new1.0, &new1.1).unwrap(), b"new chain 1");
    assert_eq!(s.decrypt(old2.0, &old2.1).unwrap(), b"old chain 2");
    assert_eq!(s.decrypt(old1.0, &old1.1).unwrap(), b"old chain 1");

    // Same the other way round.
    let old1 = s.encrypt(b"sotto old 1");
    let old2 = s.encrypt(b"sotto old 2");
    let (t, m) = peer_encrypt(p, b"your turn");
    assert_eq!(s.decrypt(t, &m).unwrap(), b"your turn");
    let new1 = s.encrypt(b"sotto new 1");
    assert_eq!(peer_decrypt(p, new1.0, &new1.1), b"sotto new 1");
    assert_eq!(peer_decrypt(p, old2.0, &old2.1), b"sotto old 2");
    assert_eq!(peer_decrypt(p, old1.0, &old1.1), b"sotto old 1");

    // A tampered message is rejected by both and does not disturb the session.
    let (t, mut m) = peer_encrypt(p, b"tamper");
    let last = m.len() - 1;
    m[last] ^= 1;
    assert!(matches!(s.decrypt(t, &m), Err(Error::DecryptionFailed)));
    m[last] ^= 1;
    assert_eq!(s.decrypt(t, &m).unwrap(), b"tamper");
    let (t, mut m) = s.encrypt(b"tamper back");
    let n = m.len() - 1;
    m[n] ^= 1;
    assert_eq!(peer_try_decrypt(p, t, &m)["ok"], false);
}

fn safety_numbers_match(p: &mut Peer, s: &Sotto) {
    let peer_id = p.call(json!({"op": "identity"}));
    let peer_key = IdentityKey::deserialize(&unb64(&peer_id["identity_key"])).unwrap();
    // Signal passes 16-byte ACI UUIDs with version 2.
    let sotto_uuid = [0x11u8; 16];
    let peer_uuid = [0x22u8; 16];
    let ours = Fingerprint::new(2, &sotto_uuid, &s.identity.public(), &peer_uuid, &peer_key);
    let theirs = p.call(json!({
        "op": "fingerprint", "local_id": b64(&peer_uuid), "remote_id": b64(&sotto_uuid),
        "remote_identity_key": b64(&s.identity.public().serialize()), "version": 2
    }));
    assert_eq!(theirs["displayable"].as_str().unwrap(), ours.displayable);
    assert_eq!(ours.displayable.len(), 60);
    let their_scannable = unb64(&theirs["scannable"]);
    assert!(ours.compare_scanned(&their_scannable).unwrap());
    let cmp = p.call(json!({
        "op": "fingerprint_compare", "local_scannable": theirs["scannable"],
        "remote_scannable": b64(&ours.scannable)
    }));
    assert_eq!(cmp["matches"], true);
    // The session stored the identity libsignal actually has.
    assert_eq!(s.store.get_identity(&s.peer).unwrap(), Some(peer_key));
}

fn signatures_verify_both_ways(p: &mut Peer, s: &mut Sotto) {
    let mut top_bits = [0usize; 2];
    for i in 0..24u8 {
        let msg = [b"challenge ".as_slice(), &[i]].concat();
        // libsignal signs, sotto verifies (libsignal keeps the Edwards sign bit in sig[63]).
        let r = p.call(json!({"op": "sign", "message": b64(&msg)}));
        let sig = unb64(&r["signature"]);
        let key = IdentityKey::deserialize(&unb64(&r["public_key"])).unwrap();
        assert!(
            key.verify_signature(&msg, &sig),
            "libsignal signature rejected"
        );
        assert!(!key.verify_signature(b"other", &sig));
        top_bits[usize::from(sig[63] >> 7)] += 1;
        // sotto signs, libsignal verifies.
        let ours = s.identity.sign(&mut s.rng, &msg);
        let v = p.call(json!({
            "op": "verify_signature", "public_key": b64(&s.identity.public().serialize()),
            "message": b64(&msg), "signature": b64(&ours)
        }));
        assert_eq!(v["valid"], true, "libsignal rejected our signature");
    }
    // One identity has one Edwards sign: all of its signatures share sig[63]'s top bit.
    assert!(top_bits[0] == 24 || top_bits[1] == 24, "{top_bits:?}");
    // Signatures over other fresh keys cover both sign-bit values.
    let mut seen = [false; 2];
    for _ in 0..32 {
        let kp = p.call(json!({"op": "generate_key_pair"}));
        let r = p.call(json!({"op": "sign", "message": "AA==", "private_key": kp["private_key"]}));
        let sig = unb64(&r["signature"]);
        let key = PublicKey::deserialize(&unb64(&r["public_key"])).unwrap();
        assert!(key.verify_signature(&[0], &sig));
        seen[usize::from(sig[63] >> 7)] = true;
    }
    assert_eq!(
        seen,
        [true, true],
        "expected both Edwards sign bits among 32 keys"
    );
}

#[test]
fn libsignal_0_90_publishes_bundle_and_sotto_initiates() {
    let (mut p, mut s) = sotto_initiates("0.90.0", 1);
    converse(&mut p, &mut s);
    // 0.90 speaks SPQR v1 (falling back only for peers without it): the session keeps it.
    assert!(s.spqr_epoch().is_some());
    safety_numbers_match(&mut p, &s);
}

#[test]
fn sotto_publishes_bundle_and_libsignal_0_90_initiates() {
    let (mut p, mut s) = libsignal_initiates("0.90.0", 2);
    converse(&mut p, &mut s);
    assert!(s.spqr_epoch().is_some());
    safety_numbers_match(&mut p, &s);
}

#[test]
fn xeddsa_signatures_verify_both_ways_with_libsignal_0_90() {
    let mut p = Peer::spawn("0.90.0");
    init_peer(&mut p);
    let mut s = Sotto::new(3);
    signatures_verify_both_ways(&mut p, &mut s);
}

#[test]
fn libsignal_0_72_publishes_bundle_and_sotto_initiates() {
    let (mut p, mut s) = sotto_initiates("0.72.1", 4);
    converse(&mut p, &mut s);
    // 0.72.1 has no SPQR: its first reply downgraded the (SpqrPolicy::Preferred) session.
    assert_eq!(s.spqr_epoch(), None);
    safety_numbers_match(&mut p, &s);
}

#[test]
fn sotto_publishes_bundle_and_libsignal_0_72_initiates() {
    let (mut p, mut s) = libsignal_initiates("0.72.1", 5);
    converse(&mut p, &mut s);
    assert_eq!(s.spqr_epoch(), None);
    safety_numbers_match(&mut p, &s);
    signatures_verify_both_ways(&mut p, &mut s);
}

/// Long one-sided runs in both directions, with messages lost for good and late deliveries:
/// the SPQR braid must keep advancing through several epochs and both sides keep agreeing.
fn spqr_epochs_advance_through_runs_and_loss(p: &mut Peer, s: &mut Sotto) {
    let start = s.spqr_epoch().expect("session runs SPQR");
    let mut lost = 0;
    for round in 0..12 {
        // libsignal → sotto: 40 messages, every 7th lost for good, two delivered late.
        let msgs: Vec<_> = (0..40)
            .map(|i| peer_encrypt(p, format!("run {round}.{i}").as_bytes()))
            .collect();
        for (i, (t, m)) in msgs.iter().enumerate() {
            if i % 7 == 6 {
                lost += 1;
                continue;
            }
            if i == 3 || i == 4 {
                continue; // delivered after the run
            }
            assert_eq!(
                s.decrypt(*t, m).unwrap(),
                format!("run {round}.{i}").as_bytes()
            );
        }
        for i in [4usize, 3] {
            let (t, m) = &msgs[i];
            assert_eq!(
                s.decrypt(*t, m).unwrap(),
                format!("run {round}.{i}").as_bytes()
            );
        }
        // sotto → libsignal: 40 messages, every 9th lost for good.
        for i in 0..40 {
            let pt = format!("back {round}.{i}");
            let (t, m) = s.encrypt(pt.as_bytes());
            if i % 9 == 8 {
                lost += 1;
                continue;
            }
            assert_eq!(peer_decrypt(p, t, &m), pt.as_bytes());
        }
    }
    let end = s.spqr_epoch().expect("session runs SPQR");
    assert!(
        end >= start + 3,
        "SPQR epoch went only from {start} to {end} over 960 messages ({lost} lost)"
    );
}

/// A SignalMessage whose SPQR field was changed (MAC left as it was) is refused by both sides
/// and does not disturb the session.
fn tampered_spqr_field_is_refused(p: &mut Peer, s: &mut Sotto) {
    use prost::Message as _;
    fn tamper(body: &[u8]) -> Vec<u8> {
        let (content, mac) = body.split_at(body.len() - 8);
        let mut pb = proto::wire::SignalMessage::decode(&content[1..]).unwrap();
        let pq = pb.pq_ratchet.as_mut().expect("message carries SPQR");
        let last = pq.len() - 1;
        pq[last] ^= 0x40;
        let mut out = vec![content[0]];
        out.extend_from_slice(&pb.encode_to_vec());
        out.extend_from_slice(mac);
        out
    }
    let (t, m) = peer_encrypt(p, b"pq tamper");
    assert_eq!(t, 2);
    assert!(s.decrypt(t, &tamper(&m)).is_err());
    assert_eq!(s.decrypt(t, &m).unwrap(), b"pq tamper");
    let (t, m) = s.encrypt(b"pq tamper back");
    assert_eq!(peer_try_decrypt(p, t, &tamper(&m))["ok"], false);
    assert_eq!(peer_decrypt(p, t, &m), b"pq tamper back");
}

fn full_spqr_interop(p: &mut Peer, s: &mut Sotto) {
    converse(p, s);
    tampered_spqr_field_is_refused(p, s);
    spqr_epochs_advance_through_runs_and_loss(p, s);
    safety_numbers_match(p, s);
}

#[test]
fn libsignal_0_103_publishes_bundle_and_sotto_initiates() {
    let (mut p, mut s) = sotto_initiates("0.103.0", 6);
    full_spqr_interop(&mut p, &mut s);
}

#[test]
fn sotto_publishes_bundle_and_libsignal_0_103_initiates() {
    let (mut p, mut s) = libsignal_initiates("0.103.0", 7);
    full_spqr_interop(&mut p, &mut s);
}

#[test]
fn libsignal_0_92_publishes_bundle_and_sotto_initiates() {
    let (mut p, mut s) = sotto_initiates("0.92.2", 8);
    full_spqr_interop(&mut p, &mut s);
}

#[test]
fn sotto_publishes_bundle_and_libsignal_0_92_initiates() {
    let (mut p, mut s) = libsignal_initiates("0.92.2", 9);
    full_spqr_interop(&mut p, &mut s);
}

#[test]
fn spqr_required_sessions_interoperate_with_libsignal_0_103_both_ways() {
    let (mut p, mut s) =
        sotto_initiates_with("0.103.0", Sotto::with_policy(10, SpqrPolicy::Required));
    converse(&mut p, &mut s);
    spqr_epochs_advance_through_runs_and_loss(&mut p, &mut s);
    let (mut p, mut s) =
        libsignal_initiates_with("0.103.0", Sotto::with_policy(11, SpqrPolicy::Required));
    converse(&mut p, &mut s);
}

#[test]
fn spqr_required_refuses_libsignal_0_72_which_has_no_spqr() {
    let mut p = Peer::spawn("0.72.1");
    init_peer(&mut p);
    let mut s = Sotto::with_policy(12, SpqrPolicy::Required);
    let bundle = s.bundle_json();
    p.call(json!({"op": "process_bundle", "peer": peer_addr(), "bundle": bundle}));
    let (t, m) = peer_encrypt(&mut p, b"no spqr here");
    assert!(s.decrypt(t, &m).is_err());
    // Nothing was consumed or stored by the refused message.
    assert!(s.store.get_pre_key(11).unwrap().is_some());
    assert!(s.store.load_session(&s.peer).unwrap().is_none());
}

/// libsignal ≥ 0.91 binds sender and recipient (field 6) when both names are service ids:
/// sotto accepts such messages only when its own address matches.
#[test]
fn addresses_bound_by_libsignal_0_103_are_checked() {
    const PEER_ACI: &str = "9d0652a3-dcc3-4d11-975f-74d61598733f";
    const SOTTO_ACI: &str = "0b7e1e4a-1c6f-4f8e-9d2a-3c5b7a9e1f20";
    const OTHER_ACI: &str = "5a1c3e2b-8f7d-4c6a-b9e0-1d2f3a4b5c6d";
    let mut p = Peer::spawn("0.103.0");
    p.call(json!({"op": "init", "name": PEER_ACI, "registration_id": 1111, "device_id": 1}));
    let mut s = Sotto::new(14);
    s.peer = ProtocolAddress::new(PEER_ACI, 1);
    let me = json!({"name": SOTTO_ACI, "device_id": 1});
    let bundle = s.bundle_json();
    p.call(json!({"op": "process_bundle", "peer": me, "bundle": bundle}));
    let r = p.call(json!({"op": "encrypt", "peer": me, "plaintext": b64(b"addressed")}));
    let (t, m) = (r["type"].as_u64().unwrap() as u8, unb64(&r["body"]));
    let parsed = CiphertextMessage::deserialize(t, &m).unwrap();
    let CiphertextMessage::PreKey(pk) = &parsed else {
        panic!("expected a PreKeySignalMessage")
    };
    let ours = ProtocolAddress::new(SOTTO_ACI, 1);
    assert_eq!(
        pk.message().addresses(),
        addresses::encode(&s.peer, &ours).as_deref(),
        "libsignal binds (sender, recipient)"
    );
    let opts = |local: Option<&str>| DecryptOptions {
        spqr: SpqrPolicy::default(),
        local_address: local.map(|n| ProtocolAddress::new(n, 1)),
    };
    let peer = s.peer.clone();
    for wrong in [None, Some(OTHER_ACI)] {
        assert!(decrypt_with(&peer, &mut s.store, &parsed, &mut s.rng, &opts(wrong)).is_err());
        assert!(
            s.store.load_session(&peer).unwrap().is_none(),
            "nothing stored"
        );
        assert!(
            s.store.get_pre_key(11).unwrap().is_some(),
            "nothing consumed"
        );
    }
    let pt = decrypt_with(
        &peer,
        &mut s.store,
        &parsed,
        &mut s.rng,
        &opts(Some(SOTTO_ACI)),
    );
    assert_eq!(pt.unwrap(), b"addressed");
    // Reply; libsignal binds addresses only in PreKeySignalMessages, so its SignalMessages
    // carry no field 6 and decrypt without a local address.
    let (t, m) = s.encrypt(b"reply");
    let r = p.try_call(json!({"op": "decrypt", "peer": me, "type": t, "body": b64(&m)}));
    assert_eq!(unb64(&r["plaintext"]), b"reply", "{r}");
    let r = p.call(json!({"op": "encrypt", "peer": me, "plaintext": b64(b"second")}));
    let (t, m) = (r["type"].as_u64().unwrap() as u8, unb64(&r["body"]));
    assert_eq!(t, 2);
    let parsed = CiphertextMessage::deserialize(t, &m).unwrap();
    let CiphertextMessage::Signal(sm) = &parsed else {
        panic!("expected a SignalMessage")
    };
    assert_eq!(sm.addresses(), None);
    let pt = decrypt_with(&peer, &mut s.store, &parsed, &mut s.rng, &opts(None));
    assert_eq!(pt.unwrap(), b"second");
}
