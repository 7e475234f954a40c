//! Two-party scenarios: setup, ordering, replay, limits, commit-on-authenticate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, now, pair, rng, Party};
use sotto_ratchet::consts::*;
use sotto_ratchet::*;

#[test]
fn initiator_sends_prekey_messages_until_first_reply_and_responder_accepts_all() {
    let (mut alice, mut bob, mut r) = pair(1);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let m1 = alice.encrypt(&b, b"one");
    let m2 = alice.encrypt(&b, b"two");
    assert_eq!((m1.message_type(), m2.message_type()), (3, 3));
    assert_eq!(m1.serialized()[0], 0x44);
    // Delivered out of order: both carry the same base key and reuse one responder session.
    assert_eq!(bob.decrypt(&a, &m2, &mut r).unwrap(), b"two");
    assert_eq!(bob.decrypt(&a, &m1, &mut r).unwrap(), b"one");
    let reply = bob.encrypt(&a, b"ack");
    assert_eq!(reply.message_type(), 2);
    assert_eq!(alice.decrypt(&b, &reply, &mut r).unwrap(), b"ack");
    assert_eq!(alice.encrypt(&b, b"three").message_type(), 2);
}

#[test]
fn one_time_prekey_is_consumed_exactly_once() {
    let mut r = rng(2);
    let mut alice = Party::new("alice", 1, &mut r);
    let mut mallory = Party::new("mallory", 3, &mut r);
    let mut bob = Party::new("bob", 2, &mut r);
    let bundle = bob.bundle(&mut r);
    let opk_id = bundle.pre_key.unwrap().0;
    process_prekey_bundle(&bob.address, &mut alice.store, &bundle, now(), &mut r).unwrap();
    process_prekey_bundle(&bob.address, &mut mallory.store, &bundle, now(), &mut r).unwrap();
    let m = alice.encrypt(&bob.address.clone(), b"first");
    assert!(bob.store.get_pre_key(opk_id).unwrap().is_some());
    bob.decrypt(&alice.address.clone(), &m, &mut r).unwrap();
    assert!(bob.store.get_pre_key(opk_id).unwrap().is_none());
    // A second session (different base key) naming the same one-time prekey is refused.
    let m2 = mallory.encrypt(&bob.address.clone(), b"second");
    assert_eq!(
        bob.decrypt(&mallory.address.clone(), &m2, &mut r)
            .unwrap_err(),
        Error::UnknownPreKey(opk_id)
    );
}

#[test]
fn failed_prekey_message_consumes_nothing_and_stores_nothing() {
    let (mut alice, mut bob, mut r) = pair(3);
    let m = alice.encrypt(&bob.address.clone(), b"first");
    let CiphertextMessage::PreKey(pk) = &m else {
        panic!()
    };
    // Corrupt the inner message's MAC (last byte of the embedded SignalMessage).
    let mut bytes = pk.serialized().to_vec();
    let inner = pk.message().serialized();
    let pos = bytes.windows(inner.len()).position(|w| w == inner).unwrap() + inner.len() - 1;
    bytes[pos] ^= 0x01;
    let bad = CiphertextMessage::deserialize(3, &bytes).unwrap();
    let alice_addr = alice.address.clone();
    assert_eq!(
        decrypt(&alice_addr, &mut bob.store, &bad, &mut r).unwrap_err(),
        Error::DecryptionFailed
    );
    assert!(bob.store.get_pre_key(100).unwrap().is_some(), "prekey kept");
    assert!(
        bob.store.load_session(&alice_addr).unwrap().is_none(),
        "no session"
    );
    assert!(
        bob.store.get_identity(&alice_addr).unwrap().is_none(),
        "identity not saved"
    );
    assert_eq!(bob.decrypt(&alice_addr, &m, &mut r).unwrap(), b"first");
}

#[test]
fn out_of_order_delivery_within_and_across_ratchet_steps() {
    let (mut alice, mut bob, mut r) = established(4);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let batch: Vec<_> = (0..8).map(|i| alice.encrypt(&b, &[i])).collect();
    for i in [7usize, 0, 5, 2, 1, 6, 3, 4] {
        assert_eq!(bob.decrypt(&a, &batch[i], &mut r).unwrap(), [i as u8]);
    }
    // Old-chain messages arrive after Bob replied and Alice ratcheted.
    let late1 = alice.encrypt(&b, b"late 1");
    let late2 = alice.encrypt(&b, b"late 2");
    let reply = bob.encrypt(&a, b"reply");
    alice.decrypt(&b, &reply, &mut r).unwrap();
    let fresh = alice.encrypt(&b, b"fresh");
    assert_eq!(bob.decrypt(&a, &fresh, &mut r).unwrap(), b"fresh");
    assert_eq!(bob.decrypt(&a, &late2, &mut r).unwrap(), b"late 2");
    assert_eq!(bob.decrypt(&a, &late1, &mut r).unwrap(), b"late 1");
}

#[test]
fn replayed_message_is_rejected() {
    let (mut alice, mut bob, mut r) = established(5);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let m = alice.encrypt(&b, b"once");
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"once");
    assert_eq!(
        bob.decrypt(&a, &m, &mut r).unwrap_err(),
        Error::DuplicateMessage
    );
    // A skipped-then-delivered key is also single use.
    let m1 = alice.encrypt(&b, b"1");
    let m2 = alice.encrypt(&b, b"2");
    bob.decrypt(&a, &m2, &mut r).unwrap();
    bob.decrypt(&a, &m1, &mut r).unwrap();
    assert_eq!(
        bob.decrypt(&a, &m1, &mut r).unwrap_err(),
        Error::DuplicateMessage
    );
}

#[test]
fn tampered_message_changes_no_state() {
    let (mut alice, mut bob, mut r) = established(6);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let m = alice.encrypt(&b, b"payload");
    let before = bob.store.load_session(&a).unwrap().unwrap().serialize();
    for i in 0..m.serialized().len() {
        let mut bytes = m.serialized().to_vec();
        bytes[i] ^= 0x40;
        if let Ok(parsed) = CiphertextMessage::deserialize(2, &bytes) {
            assert!(
                decrypt(&a, &mut bob.store, &parsed, &mut r).is_err(),
                "byte {i}"
            );
        }
    }
    let after = bob.store.load_session(&a).unwrap().unwrap().serialize();
    assert_eq!(
        *before, *after,
        "failed decrypts left the session untouched"
    );
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"payload");
}

/// Sends `n` messages Alice→Bob and returns them (the session is established).
fn burst(alice: &mut Party, to: &ProtocolAddress, n: usize) -> Vec<CiphertextMessage> {
    (0..n)
        .map(|i| alice.encrypt(to, &(i as u32).to_be_bytes()))
        .collect()
}

/// Removes SPQR from both parties' current session states (as a peer without SPQR would).
fn without_spqr(alice: &mut Party, bob: &mut Party) {
    let (a, b) = (alice.address.clone(), bob.address.clone());
    for (p, other) in [(alice, b), (bob, a)] {
        let mut rec = p.store.load_session(&other).unwrap().unwrap();
        sotto_ratchet::testing::strip_spqr(&mut rec);
        p.store.store_session(&other, &rec).unwrap();
    }
}

#[test]
fn forward_jump_of_max_forward_jumps_is_accepted() {
    let (mut alice, mut bob, mut r) = established(7);
    without_spqr(&mut alice, &mut bob);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let msgs = burst(&mut alice, &b, MAX_FORWARD_JUMPS + 1);
    // Bob's receiving chain for Alice's current key is at index 0; counter = MAX_FORWARD_JUMPS.
    let last = msgs.last().unwrap();
    assert!(bob.decrypt(&a, last, &mut r).is_ok());
}

#[test]
fn forward_jump_of_max_forward_jumps_plus_one_is_rejected() {
    let (mut alice, mut bob, mut r) = established(8);
    without_spqr(&mut alice, &mut bob);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let msgs = burst(&mut alice, &b, MAX_FORWARD_JUMPS + 2);
    let last = msgs.last().unwrap();
    assert_eq!(
        bob.decrypt(&a, last, &mut r).unwrap_err(),
        Error::TooFarInFuture
    );
    // The session still works for the next in-range message.
    assert!(bob.decrypt(&a, &msgs[0], &mut r).is_ok());
}

/// With SPQR the SPQR chain also bounds the jump: its counter starts at 1 and runs across the
/// Double Ratchet chains of an epoch, so it reaches SPQR_MAX_JUMP one message before the Double
/// Ratchet counter reaches MAX_FORWARD_JUMPS (libsignal ≥ 0.92 behaves the same).
#[test]
fn spqr_jump_of_spqr_max_jump_is_accepted_and_one_more_rejected() {
    assert_eq!(SPQR_MAX_JUMP as usize, MAX_FORWARD_JUMPS);
    let (mut alice, mut bob, mut r) = established(70);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    // Bob's SPQR counter is 0 (the first message carried none); the n-th burst message has
    // SPQR counter n.
    let msgs = burst(&mut alice, &b, SPQR_MAX_JUMP as usize);
    assert!(bob.decrypt(&a, msgs.last().unwrap(), &mut r).is_ok());

    let (mut alice, mut bob, mut r) = established(71);
    let msgs = burst(&mut alice, &b, SPQR_MAX_JUMP as usize + 1);
    assert_eq!(
        bob.decrypt(&a, msgs.last().unwrap(), &mut r).unwrap_err(),
        Error::TooFarInFuture
    );
    assert!(bob.decrypt(&a, &msgs[0], &mut r).is_ok());
}

#[test]
fn max_message_keys_skipped_keys_are_kept_and_one_more_evicts_the_oldest() {
    // Exactly MAX_MESSAGE_KEYS skipped: the oldest is still decryptable.
    let (mut alice, mut bob, mut r) = established(9);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let msgs = burst(&mut alice, &b, MAX_MESSAGE_KEYS + 1);
    bob.decrypt(&a, &msgs[MAX_MESSAGE_KEYS], &mut r).unwrap();
    assert!(bob.decrypt(&a, &msgs[0], &mut r).is_ok());

    // MAX_MESSAGE_KEYS + 1 skipped: the oldest key was evicted.
    let (mut alice, mut bob, mut r) = established(10);
    let msgs = burst(&mut alice, &b, MAX_MESSAGE_KEYS + 2);
    bob.decrypt(&a, &msgs[MAX_MESSAGE_KEYS + 1], &mut r)
        .unwrap();
    assert_eq!(
        bob.decrypt(&a, &msgs[0], &mut r).unwrap_err(),
        Error::DuplicateMessage
    );
    assert!(bob.decrypt(&a, &msgs[1], &mut r).is_ok());
}

#[test]
fn max_receiver_chains_are_kept_and_one_more_drops_the_oldest() {
    let (mut alice, mut bob, mut r) = established(11);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    // Each round trip makes Alice use a new ratchet key; keep one undelivered message per chain.
    let mut stragglers = Vec::new();
    for _ in 0..=MAX_RECEIVER_CHAINS {
        let m = alice.encrypt(&b, b"first");
        let straggler = alice.encrypt(&b, b"straggler");
        bob.decrypt(&a, &m, &mut r).unwrap();
        let reply = bob.encrypt(&a, b"r");
        alice.decrypt(&b, &reply, &mut r).unwrap();
        stragglers.push(straggler);
    }
    // Bob saw 1 + (MAX_RECEIVER_CHAINS + 1) sending chains of Alice's and kept the newest
    // MAX_RECEIVER_CHAINS: the stragglers of exactly those still decrypt.
    let n = stragglers.len();
    for s in &stragglers[n - MAX_RECEIVER_CHAINS..] {
        assert_eq!(bob.decrypt(&a, s, &mut r).unwrap(), b"straggler");
    }
    // The oldest chain was dropped: its straggler cannot be decrypted.
    assert!(bob.decrypt(&a, &stragglers[0], &mut r).is_err());
}

#[test]
fn message_size_limit_and_limit_plus_one() {
    let too_big = vec![0x44u8; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        SignalMessage::deserialize(&too_big).unwrap_err(),
        Error::TooLarge(MAX_MESSAGE_SIZE + 1)
    );
    assert_eq!(
        PreKeySignalMessage::deserialize(&too_big).unwrap_err(),
        Error::TooLarge(MAX_MESSAGE_SIZE + 1)
    );
    // At the limit the size check passes (and the parser rejects the junk for other reasons).
    let at_limit = vec![0x44u8; MAX_MESSAGE_SIZE];
    assert!(!matches!(
        SignalMessage::deserialize(&at_limit),
        Err(Error::TooLarge(_))
    ));

    let (mut alice, mut bob, mut r) = established(12);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let max = vec![7u8; MAX_PLAINTEXT_SIZE];
    let m = alice.encrypt(&b, &max);
    assert!(m.serialized().len() <= MAX_MESSAGE_SIZE);
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), max);
    assert_eq!(
        encrypt(
            &b,
            &mut alice.store,
            &vec![0u8; MAX_PLAINTEXT_SIZE + 1],
            now()
        )
        .unwrap_err(),
        Error::TooLarge(MAX_PLAINTEXT_SIZE + 1)
    );
}

#[test]
fn decoders_never_panic_on_truncations_and_bit_flips() {
    let (mut alice, bob, _r) = pair(13);
    let b = bob.address.clone();
    let pk = alice.encrypt(&b, b"x");
    let bytes = pk.serialized().to_vec();
    for len in 0..bytes.len() {
        let _ = PreKeySignalMessage::deserialize(&bytes[..len]);
        let _ = SignalMessage::deserialize(&bytes[..len]);
    }
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = bytes.clone();
            m[i] ^= bit;
            let _ = PreKeySignalMessage::deserialize(&m);
            let _ = SignalMessage::deserialize(&m);
        }
    }
}

#[test]
fn version_bytes_outside_3_and_4_are_rejected() {
    let (mut alice, mut bob, mut r) = established(14);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let m = alice.encrypt(&b, b"v");
    let mut bytes = m.serialized().to_vec();
    bytes[0] = 0x24;
    assert_eq!(
        SignalMessage::deserialize(&bytes).unwrap_err(),
        Error::LegacyVersion(2)
    );
    bytes[0] = 0x54;
    assert_eq!(
        SignalMessage::deserialize(&bytes).unwrap_err(),
        Error::UnrecognizedVersion(5)
    );
    // Version 3 parses but cannot be used with a version-4 session (and the MAC covers byte 0).
    bytes[0] = 0x34;
    let v3 = CiphertextMessage::deserialize(2, &bytes).unwrap();
    assert!(decrypt(&a, &mut bob.store, &v3, &mut r).is_err());
}

#[test]
fn unknown_protobuf_fields_are_skipped() {
    // SPQR peers add field 5 (pq_ratchet) and newer ones field 6: a message carrying them
    // still parses. The MAC covers them, so here we only check the parser.
    let (mut alice, bob, _r) = established(15);
    let m = alice.encrypt(&bob.address, b"f");
    let bytes = m.serialized();
    let (head, mac) = bytes.split_at(bytes.len() - MAC_LENGTH);
    let mut extended = head.to_vec();
    extended.extend_from_slice(&[0x2a, 0x02, 0xAB, 0xCD]); // field 5, 2 bytes
    extended.extend_from_slice(&[0x32, 0x01, 0x00]); // field 6, 1 byte
    extended.extend_from_slice(mac);
    let parsed = SignalMessage::deserialize(&extended).unwrap();
    assert!(parsed.has_pq_ratchet());
    assert_eq!(
        parsed.counter(),
        SignalMessage::deserialize(bytes).unwrap().counter()
    );
}

#[test]
fn bundle_with_bad_signature_is_rejected() {
    let mut r = rng(16);
    let mut alice = Party::new("alice", 1, &mut r);
    let mut bob = Party::new("bob", 2, &mut r);
    let mut bundle = bob.bundle(&mut r);
    bundle.kyber_pre_key_signature[5] ^= 1;
    assert_eq!(
        process_prekey_bundle(&bob.address, &mut alice.store, &bundle, now(), &mut r).unwrap_err(),
        Error::InvalidSignature
    );
    let mut bundle = bob.bundle(&mut r);
    bundle.signed_pre_key_signature[63] ^= 0x80; // the sign bit
    assert_eq!(
        process_prekey_bundle(&bob.address, &mut alice.store, &bundle, now(), &mut r).unwrap_err(),
        Error::InvalidSignature
    );
    assert!(alice.store.load_session(&bob.address).unwrap().is_none());
}

#[test]
fn identity_change_for_known_contact_is_a_typed_error_then_an_explicit_event() {
    let (mut alice, bob, mut r) = established(17);
    let b = bob.address.clone();
    let old = bob.identity.public();
    // Bob reinstalls: new identity, same address.
    let mut bob2 = Party::new("bob", 2, &mut r);
    let bundle = bob2.bundle(&mut r);
    assert_eq!(
        process_prekey_bundle(&b, &mut alice.store, &bundle, now(), &mut r).unwrap_err(),
        Error::UntrustedIdentity("bob.1".into())
    );
    // Incoming messages under the new identity are refused the same way.
    let mut carol_as_bob = Party::new("carol", 9, &mut r);
    let ab = alice.bundle(&mut r);
    process_prekey_bundle(&alice.address, &mut carol_as_bob.store, &ab, now(), &mut r).unwrap();
    let m = carol_as_bob.encrypt(&alice.address.clone(), b"i am bob");
    assert!(matches!(
        alice.decrypt(&b, &m, &mut r),
        Err(Error::UntrustedIdentity(_))
    ));
    // The application accepts the new key explicitly and learns what it replaced.
    let change = alice
        .store
        .save_identity(&b, &bob2.identity.public())
        .unwrap();
    assert_eq!(change, IdentityChange::ReplacedExisting { previous: old });
    process_prekey_bundle(&b, &mut alice.store, &bundle, now(), &mut r).unwrap();
    let m = alice.encrypt(&b, b"hello again");
    assert_eq!(
        bob2.decrypt(&alice.address.clone(), &m, &mut r).unwrap(),
        b"hello again"
    );
}

#[test]
fn session_record_survives_serialization_mid_conversation() {
    let (mut alice, mut bob, mut r) = established(18);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let pending: Vec<_> = (0..4).map(|i| alice.encrypt(&b, &[i])).collect();
    bob.decrypt(&a, &pending[3], &mut r).unwrap(); // leaves 3 skipped keys
    let rec = bob.store.load_session(&a).unwrap().unwrap();
    let bytes = rec.serialize();
    let back = SessionRecord::deserialize(&bytes).unwrap();
    assert_eq!(*back.serialize(), *bytes);
    bob.store.store_session(&a, &back).unwrap();
    for i in [1usize, 0, 2] {
        assert_eq!(bob.decrypt(&a, &pending[i], &mut r).unwrap(), [i as u8]);
    }
    assert!(SessionRecord::deserialize(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn stale_unacknowledged_session_is_not_used_after_max_age() {
    let (mut alice, bob, _r) = pair(19);
    let b = bob.address.clone();
    let at_limit = now() + std::time::Duration::from_secs(MAX_UNACKNOWLEDGED_SESSION_AGE_SECS);
    assert!(encrypt(&b, &mut alice.store, b"ok", at_limit).is_ok());
    let past = at_limit + std::time::Duration::from_secs(1);
    assert!(matches!(
        encrypt(&b, &mut alice.store, b"late", past),
        Err(Error::NoSession(_))
    ));
}

#[test]
fn secret_debug_output_is_redacted() {
    let mut r = rng(20);
    let kyber = KyberKeyPair::generate(&mut r);
    let s = format!("{kyber:?}");
    assert!(s.contains("redacted"), "{s}");
    let (alice, _bob, _r) = established(21);
    let rec = alice.store.load_session(&_bob.address).unwrap().unwrap();
    let dbg = format!("{rec:?}");
    assert!(dbg.contains("RootKey([redacted])"), "{dbg}");
    assert!(dbg.contains("ChainKey([redacted])"));
    assert!(dbg.contains("PrivateKey([redacted])"));
    // No 32-byte hex run of the root key or any private key appears.
    let bytes = rec.serialize();
    assert!(!dbg.contains(&hex::encode(&bytes[10..26])));
}

/// A repeated PreKeySignalMessage reuses the session it created; its outer identity_key field
/// is not covered by the MAC, so a swapped identity must be refused and never saved. (With
/// InMemoryStore the trust check also refuses it; the session check closes the hole for stores
/// that trust new keys on receipt.)
#[test]
fn swapped_identity_in_repeated_prekey_message_is_refused() {
    use prost::Message as _;
    let (mut alice, mut bob, mut r) = pair(4242);
    let bob_addr = bob.address.clone();
    let alice_addr = alice.address.clone();
    let m1 = alice.encrypt(&bob_addr, b"first");
    assert_eq!(bob.decrypt(&alice_addr, &m1, &mut r).unwrap(), b"first");
    // Alice has no reply yet: her next message is again a PreKeySignalMessage.
    let m2 = alice.encrypt(&bob_addr, b"second");
    assert_eq!(m2.message_type(), 3);
    let bytes = m2.serialized();
    let mut pb = sotto_ratchet::proto::wire::PreKeySignalMessage::decode(&bytes[1..]).unwrap();
    let mallory = IdentityKeyPair::generate(&mut r);
    pb.identity_key = Some(mallory.public().serialize().to_vec());
    let mut forged = vec![bytes[0]];
    forged.extend(pb.encode_to_vec());
    let forged = CiphertextMessage::deserialize(3, &forged).unwrap();
    assert!(decrypt(&alice_addr, &mut bob.store, &forged, &mut r).is_err());
    // Bob still pins Alice's real identity, and the genuine message still decrypts.
    let pinned = bob.store.get_identity(&alice_addr).unwrap();
    assert_eq!(pinned, Some(alice.identity.public()));
    assert_eq!(bob.decrypt(&alice_addr, &m2, &mut r).unwrap(), b"second");
}
