//! SPQR at the session level, sotto ↔ sotto: the braid survives record serialization at every
//! step, lossy and reordered delivery, and the policy refuses a downgrade
//! (`protocol-spec/ratchet.md` §12).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, now, pair, Party};
use rand::Rng;
use sotto_ratchet::*;

fn epoch(p: &Party, peer: &ProtocolAddress) -> Option<u64> {
    p.store
        .load_session(peer)
        .unwrap()
        .and_then(|r| r.spqr_epoch())
}

/// Replaces the stored record by its serialized-and-parsed form (as a restart would).
fn reload(p: &mut Party, peer: &ProtocolAddress) {
    let rec = p.store.load_session(peer).unwrap().unwrap();
    let back = SessionRecord::deserialize(&rec.serialize()).unwrap();
    assert_eq!(back.spqr_epoch(), rec.spqr_epoch());
    p.store.store_session(peer, &back).unwrap();
}

#[test]
fn spqr_state_survives_record_serialization_at_every_step() {
    let (mut alice, mut bob, mut r) = established(1);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    for i in 0..120 {
        reload(&mut alice, &b);
        reload(&mut bob, &a);
        let pt = format!("m{i}");
        if i % 3 == 2 {
            let m = bob.encrypt(&a, pt.as_bytes());
            assert_eq!(alice.decrypt(&b, &m, &mut r).unwrap(), pt.as_bytes());
        } else {
            let m = alice.encrypt(&b, pt.as_bytes());
            assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), pt.as_bytes());
        }
    }
    assert!(epoch(&alice, &b).unwrap() >= 2, "{:?}", epoch(&alice, &b));
}

#[test]
fn lossy_reordered_traffic_keeps_decrypting_and_advances_epochs() {
    let (mut alice, mut bob, mut r) = established(2);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let mut to_bob = Vec::new();
    let mut to_alice = Vec::new();
    let (mut delivered, mut lost) = (0, 0);
    for i in 0..900u32 {
        if r.gen_bool(0.5) {
            to_bob.push((i, alice.encrypt(&b, &i.to_be_bytes())));
        } else {
            to_alice.push((i, bob.encrypt(&a, &i.to_be_bytes())));
        }
        for (queue, me, from) in [(&mut to_bob, &mut bob, &a), (&mut to_alice, &mut alice, &b)] {
            if queue.is_empty() || !r.gen_bool(0.6) {
                continue;
            }
            let k = r.gen_range(0..queue.len().min(4));
            let (n, m) = queue.remove(k);
            if r.gen_bool(0.1) {
                lost += 1;
                continue;
            }
            assert_eq!(me.decrypt(from, &m, &mut r).unwrap(), n.to_be_bytes());
            delivered += 1;
        }
    }
    assert!(
        delivered > 400 && lost > 20,
        "{delivered} delivered, {lost} lost"
    );
    assert!(epoch(&alice, &b).unwrap() >= 3, "{:?}", epoch(&alice, &b));
}

#[test]
fn required_policy_refuses_a_peer_that_drops_spqr() {
    // Alice starts under Required; Bob's session is stripped of SPQR (a peer without it).
    let (mut alice, mut bob, mut r) = pair(3);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    alice.store = InMemoryStore::new(alice.identity.clone(), alice.registration_id);
    let bundle = bob.bundle(&mut r);
    process_prekey_bundle_with_policy(
        &b,
        &mut alice.store,
        &bundle,
        now(),
        &mut r,
        SpqrPolicy::Required,
    )
    .unwrap();
    let m = alice.encrypt(&b, b"hello");
    bob.decrypt(&a, &m, &mut r).unwrap();
    let mut rec = bob.store.load_session(&a).unwrap().unwrap();
    sotto_ratchet::testing::strip_spqr(&mut rec);
    bob.store.store_session(&a, &rec).unwrap();
    let reply = bob.encrypt(&a, b"no spqr");
    let before = alice.store.load_session(&b).unwrap().unwrap().serialize();
    assert!(alice.decrypt(&b, &reply, &mut r).is_err());
    let after = alice.store.load_session(&b).unwrap().unwrap().serialize();
    assert_eq!(
        *before, *after,
        "refused message left the session untouched"
    );

    // Under the default policy the same reply downgrades the session.
    let (mut alice, mut bob, mut r) = established(4);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let mut rec = bob.store.load_session(&a).unwrap().unwrap();
    sotto_ratchet::testing::strip_spqr(&mut rec);
    bob.store.store_session(&a, &rec).unwrap();
    let reply = bob.encrypt(&a, b"no spqr");
    // Alice already received an SPQR message from Bob: negotiation is over, a V0 message is
    // a version mismatch even under Preferred.
    assert!(alice.decrypt(&b, &reply, &mut r).is_err());

    // Before it heard any SPQR message, a Preferred session accepts the downgrade for good.
    let (mut alice, mut bob, mut r) = pair(5);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let m = alice.encrypt(&b, b"hello");
    bob.decrypt(&a, &m, &mut r).unwrap();
    let mut rec = bob.store.load_session(&a).unwrap().unwrap();
    sotto_ratchet::testing::strip_spqr(&mut rec);
    bob.store.store_session(&a, &rec).unwrap();
    let reply = bob.encrypt(&a, b"no spqr");
    assert_eq!(alice.decrypt(&b, &reply, &mut r).unwrap(), b"no spqr");
    assert_eq!(epoch(&alice, &b), None);
    let m = alice.encrypt(&b, b"plain now");
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"plain now");
}

/// Bob's stored record, serialized (byte-for-byte comparison of the whole session).
fn record_bytes(p: &Party, peer: &ProtocolAddress) -> Vec<u8> {
    p.store
        .load_session(peer)
        .unwrap()
        .unwrap()
        .serialize()
        .to_vec()
}

#[test]
fn double_ratchet_only_message_with_a_future_spqr_version_is_refused() {
    // An adversary who holds the Double Ratchet keys but not the SPQR state (one that broke
    // X25519) labels its message "SPQR version 2" so that no SPQR key is expected. Once SPQR
    // ran, or under Required, that must be refused like a V0 message, and change nothing.
    let (mut alice, mut bob, mut r) = established(20);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let alice_rec = alice.store.load_session(&b).unwrap().unwrap();
    for field in [&[2u8][..], &[2, 1, 1, 0], &[0xFF], &[]] {
        let forged =
            testing::forge_with_double_ratchet_keys_only(&alice_rec, b"forged", field).unwrap();
        let before = record_bytes(&bob, &a);
        let got = bob.decrypt(&a, &CiphertextMessage::Signal(forged), &mut r);
        assert!(got.is_err(), "field {field:?} accepted: {got:?}");
        assert_eq!(record_bytes(&bob, &a), before, "field {field:?}");
    }
    // The real next message still decrypts.
    let m = alice.encrypt(&b, b"real");
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"real");

    // Required initiator before it heard anything from the responder.
    let (mut alice, mut bob, mut r) = pair(21);
    alice.store = InMemoryStore::new(alice.identity.clone(), alice.registration_id);
    let bundle = bob.bundle(&mut r);
    process_prekey_bundle_with_policy(
        &b,
        &mut alice.store,
        &bundle,
        now(),
        &mut r,
        SpqrPolicy::Required,
    )
    .unwrap();
    let m = alice.encrypt(&b, b"hello");
    bob.decrypt(&a, &m, &mut r).unwrap();
    let bob_rec = bob.store.load_session(&a).unwrap().unwrap();
    let forged = testing::forge_with_double_ratchet_keys_only(&bob_rec, b"forged", &[2]).unwrap();
    let before = record_bytes(&alice, &b);
    assert!(alice
        .decrypt(&b, &CiphertextMessage::Signal(forged), &mut r)
        .is_err());
    assert_eq!(record_bytes(&alice, &b), before);
}

fn signal(m: &CiphertextMessage) -> &SignalMessage {
    match m {
        CiphertextMessage::Signal(s) => s,
        other => panic!(
            "expected a SignalMessage, got type {}",
            other.message_type()
        ),
    }
}

#[test]
fn forged_tampered_and_replayed_messages_leave_the_session_byte_identical_in_every_braid_state() {
    // At every step of a run through several epochs (every braid state on both sides, including
    // the messages that complete a header, ct1, ek or ct2 and so would advance the braid), the
    // receiver is first handed: each pq_ratchet byte flipped; the real pq_ratchet field under a
    // Double-Ratchet-only key (an adversary without the SPQR state); and the previous message
    // again. Each is refused and the stored record stays byte-identical; then the real message
    // decrypts.
    let (mut alice, mut bob, mut r) = established(22);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let mut previous: Option<(CiphertextMessage, bool)> = None;
    let mut epochs = std::collections::HashSet::new();
    for i in 0..110u32 {
        let alice_sends = i % 3 != 2;
        let (sender, receiver, to, from) = if alice_sends {
            (&mut alice, &mut bob, &b, &a)
        } else {
            (&mut bob, &mut alice, &a, &b)
        };
        let sender_rec = sender.store.load_session(to).unwrap().unwrap();
        let pt = i.to_be_bytes();
        let m = sender.encrypt(to, &pt);
        let sm = signal(&m);
        let pq = sm.pq_ratchet().to_vec();
        assert!(!pq.is_empty(), "step {i}: SPQR runs");
        let at = sm
            .serialized()
            .windows(pq.len())
            .position(|w| w == pq.as_slice())
            .unwrap();
        let before = record_bytes(receiver, from);
        for k in 0..pq.len() {
            let mut bytes = sm.serialized().to_vec();
            bytes[at + k] ^= 0x01;
            if let Ok(t) = CiphertextMessage::deserialize(2, &bytes) {
                assert!(
                    receiver.decrypt(from, &t, &mut r).is_err(),
                    "step {i} byte {k}"
                );
            }
        }
        let forged = testing::forge_with_double_ratchet_keys_only(&sender_rec, &pt, &pq).unwrap();
        assert_eq!(
            receiver
                .decrypt(from, &CiphertextMessage::Signal(forged), &mut r)
                .unwrap_err(),
            Error::DecryptionFailed,
            "step {i}: real SPQR field under a Double-Ratchet-only key"
        );
        if let Some((old, from_alice)) = &previous {
            if *from_alice == alice_sends {
                assert_eq!(
                    receiver.decrypt(from, old, &mut r).unwrap_err(),
                    Error::DuplicateMessage,
                    "step {i}: replay"
                );
            }
        }
        assert_eq!(record_bytes(receiver, from), before, "step {i}");
        assert_eq!(receiver.decrypt(from, &m, &mut r).unwrap(), pt);
        epochs.insert(
            receiver
                .store
                .load_session(from)
                .unwrap()
                .unwrap()
                .spqr_epoch(),
        );
        previous = Some((m, alice_sends));
    }
    assert!(epochs.len() >= 2, "epochs seen: {epochs:?}");
}

#[test]
fn late_message_for_an_archived_session_is_not_refused_by_the_current_sessions_spqr_counter() {
    // S1 is archived when Alice starts S2. A late S1 message whose SPQR (epoch, index) equals a
    // position S2 already used must still reach S1: S2's SPQR chain calling it a duplicate
    // is not a replay of anything S1 saw.
    let (mut alice, mut bob, mut r) = established(23);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let late = alice.encrypt(&b, b"late");
    let bundle = bob.bundle(&mut r);
    process_prekey_bundle(&b, &mut alice.store, &bundle, now(), &mut r).unwrap();
    // S2 round trip, then one more message: Bob's S2 SPQR chain has used index 1 of epoch 0,
    // the position `late` carries in S1.
    let m = alice.encrypt(&b, b"s2 one");
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"s2 one");
    let m = bob.encrypt(&a, b"s2 reply");
    assert_eq!(alice.decrypt(&b, &m, &mut r).unwrap(), b"s2 reply");
    let m = alice.encrypt(&b, b"s2 two");
    assert_eq!(bob.decrypt(&a, &m, &mut r).unwrap(), b"s2 two");
    let rec = bob.store.load_session(&a).unwrap().unwrap();
    assert_eq!(rec.archived_state_count(), 1);
    assert_eq!(bob.decrypt(&a, &late, &mut r).unwrap(), b"late");
    // And it is a real replay afterwards.
    assert_eq!(
        bob.decrypt(&a, &late, &mut r).unwrap_err(),
        Error::DuplicateMessage
    );
}

#[test]
fn double_ratchet_only_message_labelled_keyless_is_refused_by_the_initiator() {
    // pq_ratchet = V1, epoch 1, index 0, no payload: "no SPQR key yet". Only an initiator that
    // has not heard from the responder sends that, so the initiator refuses it; an adversary
    // holding only the Double Ratchet keys cannot use it to inject into the initiator's session.
    let (mut alice, mut bob, mut r) = established(24);
    let (a, b) = (alice.address.clone(), bob.address.clone());
    let bob_rec = bob.store.load_session(&a).unwrap().unwrap();
    let forged =
        testing::forge_with_double_ratchet_keys_only(&bob_rec, b"forged", &[1, 1, 0, 0]).unwrap();
    let before = record_bytes(&alice, &b);
    let got = alice.decrypt(&b, &CiphertextMessage::Signal(forged), &mut r);
    assert!(got.is_err(), "accepted: {got:?}");
    assert_eq!(record_bytes(&alice, &b), before);
    let m = bob.encrypt(&a, b"real");
    assert_eq!(alice.decrypt(&b, &m, &mut r).unwrap(), b"real");
}
