//! Two-party braid tests through the public [`SpqrState`] API.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use braid::Braid;

fn pair(policy: SpqrPolicy) -> (SpqrState, SpqrState) {
    let ak = [41u8; 32];
    (
        SpqrState::new(&ak, Direction::A2B, policy).unwrap(),
        SpqrState::new(&ak, Direction::B2A, policy).unwrap(),
    )
}

fn send(s: &mut SpqrState, rng: &mut StdRng) -> (Vec<u8>, Option<[u8; 32]>) {
    let out = s.send(rng).unwrap();
    *s = out.state;
    (out.wire, out.key.map(|k| *k))
}

fn recv(s: &mut SpqrState, wire: &[u8]) -> Result<Option<[u8; 32]>> {
    let out = s.recv(wire)?;
    *s = out.state;
    Ok(out.key.map(|k| *k))
}

#[test]
fn ping_pong_agrees_and_advances_epochs() {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    // One epoch takes about 45 round trips (3 header, 30 ct1, 36 ek, 5 ct2 chunks overlap).
    for _ in 0..150 {
        let (w, k) = send(&mut a, &mut rng);
        assert!(k.is_some(), "Required: every message has an SPQR key");
        assert_eq!(recv(&mut b, &w).unwrap(), k);
        let (w, k) = send(&mut b, &mut rng);
        assert_eq!(recv(&mut a, &w).unwrap(), k);
    }
    assert!(a.epoch().unwrap() >= 3, "epoch {:?}", a.epoch());
    assert!(!a.still_negotiating() && !b.still_negotiating());
}

#[test]
fn one_sided_runs_still_advance_with_replies() {
    // One side sends many, the other rarely replies: the braid still completes epochs.
    let mut rng = StdRng::seed_from_u64(2);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    for round in 0..12 {
        for _ in 0..45 {
            let (w, k) = send(&mut a, &mut rng);
            assert_eq!(recv(&mut b, &w).unwrap(), k, "round {round}");
        }
        for _ in 0..8 {
            let (w, k) = send(&mut b, &mut rng);
            assert_eq!(recv(&mut a, &w).unwrap(), k, "round {round}");
        }
    }
    assert!(b.epoch().unwrap() >= 3);
}

#[test]
fn random_loss_and_reordering_keep_keys_equal() {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    let mut to_b: Vec<(Vec<u8>, Option<[u8; 32]>)> = Vec::new();
    let mut to_a: Vec<(Vec<u8>, Option<[u8; 32]>)> = Vec::new();
    for _ in 0..1500 {
        if rng.gen_bool(0.5) {
            to_b.push(send(&mut a, &mut rng));
        }
        if rng.gen_bool(0.5) {
            to_a.push(send(&mut b, &mut rng));
        }
        for (queue, me) in [(&mut to_b, &mut b), (&mut to_a, &mut a)] {
            if !queue.is_empty() && rng.gen_bool(0.6) {
                let i = rng.gen_range(0..queue.len().min(3));
                let (w, k) = queue.remove(i);
                if rng.gen_bool(0.1) {
                    continue; // lost for good
                }
                // Out-of-order messages of older epochs are fine; a message can only fail if
                // its epoch's keys were dropped, which this window never reaches.
                assert_eq!(recv(me, &w).unwrap(), k);
            }
        }
    }
    assert!(a.epoch().unwrap() >= 4, "epoch {:?}", a.epoch());
}

#[test]
fn replayed_message_is_refused() {
    let mut rng = StdRng::seed_from_u64(4);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    let (w, _) = send(&mut a, &mut rng);
    recv(&mut b, &w).unwrap();
    assert_eq!(recv(&mut b, &w).unwrap_err(), Error::DuplicateMessage);
}

#[test]
fn tampered_header_chunk_is_refused_when_the_header_completes() {
    let mut rng = StdRng::seed_from_u64(5);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    let mut results = Vec::new();
    for i in 0..3 {
        let (mut w, _) = send(&mut a, &mut rng);
        if i == 1 {
            let last = w.len() - 1;
            w[last] ^= 1; // inside the chunk data
        }
        results.push(b.recv(&w).map(|r| b = r.state));
    }
    assert!(results[0].is_ok() && results[1].is_ok());
    assert_eq!(
        results[2],
        Err(Error::DecryptionFailed),
        "header MAC refuses"
    );
}

#[test]
fn downgrade_rules_follow_the_policy() {
    let mut rng = StdRng::seed_from_u64(6);
    // Preferred: a V0 message downgrades the session for good.
    let (_, mut b) = pair(SpqrPolicy::Preferred);
    assert_eq!(recv(&mut b, &[]).unwrap(), None);
    assert_eq!(b.version(), 0);
    let (w, k) = send(&mut b, &mut rng);
    assert!(w.is_empty() && k.is_none());
    // Required: refused.
    let (_, b) = pair(SpqrPolicy::Required);
    assert!(b.recv(&[]).is_err());
    // After negotiation ended, a V0 message is a mismatch even under Preferred.
    let (mut a, mut b) = pair(SpqrPolicy::Preferred);
    let (w, k) = send(&mut a, &mut rng);
    assert_eq!(
        k, None,
        "Preferred sends no key before hearing from the peer"
    );
    assert_eq!(recv(&mut b, &w).unwrap(), None);
    assert!(b.recv(&[]).is_err());
    // A version above 1 brings no key: after negotiation ended it is refused like V0.
    assert!(b.recv(&[2, 1, 1, 0]).is_err());
}

#[test]
fn a_version_above_ours_is_accepted_only_where_v0_would_be() {
    // It carries no SPQR key, so accepting it is accepting a Double-Ratchet-only message.
    let mut rng = StdRng::seed_from_u64(11);
    let future = [2u8, 1, 1, 0];
    // Preferred, still negotiating: ignored, state unchanged (libsignal's forward compatibility).
    let (_, b) = pair(SpqrPolicy::Preferred);
    let out = b.recv(&future).unwrap();
    assert!(out.key.is_none() && out.state.epoch() == b.epoch());
    assert!(out.state.still_negotiating());
    // Required: refused, as V0 is.
    let (_, b) = pair(SpqrPolicy::Required);
    assert!(matches!(b.recv(&future), Err(Error::InvalidMessage(_))));
    // Negotiation ended (an SPQR message was received): refused under either policy.
    for policy in [SpqrPolicy::Preferred, SpqrPolicy::Required] {
        let (mut a, mut b) = pair(policy);
        let (w, _) = send(&mut a, &mut rng);
        recv(&mut b, &w).unwrap();
        assert!(!b.still_negotiating());
        assert!(b.recv(&future).is_err(), "{policy:?}");
    }
    // A session already without SPQR loses nothing by ignoring it.
    let (_, mut b) = pair(SpqrPolicy::Preferred);
    recv(&mut b, &[]).unwrap();
    assert!(b.recv(&future).unwrap().key.is_none());
}

#[test]
fn preferred_and_required_sides_interoperate() {
    // libsignal 0.90 (Preferred) with libsignal ≥ 0.92 (Required).
    let mut rng = StdRng::seed_from_u64(7);
    let ak = [9u8; 32];
    let mut a = SpqrState::new(&ak, Direction::A2B, SpqrPolicy::Preferred).unwrap();
    let mut b = SpqrState::new(&ak, Direction::B2A, SpqrPolicy::Required).unwrap();
    for _ in 0..100 {
        let (w, k) = send(&mut a, &mut rng);
        assert_eq!(recv(&mut b, &w).unwrap(), k);
        let (w, k) = send(&mut b, &mut rng);
        assert_eq!(recv(&mut a, &w).unwrap(), k);
    }
    assert!(a.epoch().unwrap() >= 2);
}

#[test]
fn a_message_from_a_future_epoch_is_refused() {
    let mut rng = StdRng::seed_from_u64(8);
    let (mut a, _) = pair(SpqrPolicy::Required);
    let (_, b) = pair(SpqrPolicy::Required);
    let _ = send(&mut a, &mut rng);
    let forged = wire::Message {
        epoch: 5,
        index: 1,
        payload: wire::Payload::None,
    }
    .encode();
    assert!(b.recv(&forged).is_err());
}

#[test]
fn storage_round_trip_through_every_state_keeps_the_session_working() {
    let mut rng = StdRng::seed_from_u64(9);
    let (mut a, mut b) = pair(SpqrPolicy::Preferred);
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        // Reload both sides from storage every step.
        a = SpqrState::from_storage(&a.to_storage()).unwrap();
        b = SpqrState::from_storage(&b.to_storage()).unwrap();
        seen.insert(format!(
            "{:?}",
            a.braid.as_ref().map(std::mem::discriminant)
        ));
        seen.insert(format!(
            "{:?}",
            b.braid.as_ref().map(std::mem::discriminant)
        ));
        // The initiator sends first, as in a session (the responder's state exists only once
        // it received).
        let (sender, receiver) = if i % 3 == 1 {
            (&mut b, &mut a)
        } else {
            (&mut a, &mut b)
        };
        let (w, k) = send(sender, &mut rng);
        assert_eq!(recv(receiver, &w).unwrap(), k, "step {i}");
    }
    assert!(seen.len() >= 8, "visited {} states", seen.len());
    assert!(SpqrState::from_storage(&[]).unwrap().version() == 0);
    assert!(SpqrState::from_storage(&[0xFF, 0xFF]).is_err());
}

#[test]
fn debug_names_the_state_and_redacts_keys() {
    let mut rng = StdRng::seed_from_u64(10);
    let (mut a, _) = pair(SpqrPolicy::Required);
    let _ = send(&mut a, &mut rng); // KeysSampled: holds a decapsulation key
    let dk = match a.braid.as_ref().unwrap() {
        Braid::KeysSampled { dk, .. } => dk.clone(),
        other => panic!("unexpected state {other:?}"),
    };
    let shown = format!("{a:?}");
    assert!(shown.contains("KeysSampled(epoch 1)"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &dk[..4])), "{shown}");
    assert!(!shown.contains("41, 41"), "auth key bytes leaked: {shown}");
}

#[test]
fn a_keyless_message_is_accepted_only_from_an_initiator_still_on_epoch_0_keys() {
    // Epoch 1 / index 0 carries no SPQR key. Only an initiator that has not heard from the
    // responder sends it (Preferred, no chain yet); anywhere else it would be a message
    // protected by the Double Ratchet alone.
    let mut rng = StdRng::seed_from_u64(12);
    let keyless = wire::Message {
        epoch: 1,
        index: 0,
        payload: wire::Payload::None,
    }
    .encode();
    for policy in [SpqrPolicy::Preferred, SpqrPolicy::Required] {
        let (mut a, mut b) = pair(policy);
        let (w, _) = send(&mut a, &mut rng);
        recv(&mut b, &w).unwrap();
        // Responder, epoch-0 chain still kept: accepted without a key (libsignal 0.90 peers).
        assert!(b.recv(&keyless).unwrap().key.is_none(), "{policy:?}");
        let (w, _) = send(&mut b, &mut rng);
        recv(&mut a, &w).unwrap();
        // The initiator never gets one from a responder.
        assert!(
            matches!(a.recv(&keyless), Err(Error::InvalidMessage(_))),
            "{policy:?}"
        );
        assert!(
            a.recv(&[]).is_err(),
            "and V0 is refused after negotiation too"
        );
    }
    // Responder whose epoch-0 chains are gone (it sends in epoch >= 2): refused.
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    let mut rounds = 0;
    while b.chain.as_ref().is_none_or(|c| c.has_epoch(0)) {
        let (w, _) = send(&mut a, &mut rng);
        recv(&mut b, &w).unwrap();
        let (w, _) = send(&mut b, &mut rng);
        recv(&mut a, &w).unwrap();
        rounds += 1;
        assert!(rounds < 400, "epoch 0 never retired");
    }
    assert!(matches!(b.recv(&keyless), Err(Error::InvalidMessage(_))));
}

/// Ping-pong where the first chunk of the kind `pick` selects is corrupted in transit; returns
/// the first error and the payload of the message that raised it.
fn first_error_after_corrupting(pick: fn(&wire::Payload) -> bool) -> (Error, wire::Payload) {
    let mut rng = StdRng::seed_from_u64(13);
    let (mut a, mut b) = pair(SpqrPolicy::Required);
    let mut corrupted = false;
    for step in 0..400 {
        let (from, to) = if step % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let (w, _) = send(from, &mut rng);
        let mut m = wire::Message::decode(&w).unwrap();
        if !corrupted && pick(&m.payload) {
            if let wire::Payload::Ek(c) | wire::Payload::EkCt1Ack(c) | wire::Payload::Ct2(c) =
                &mut m.payload
            {
                c.data[0] ^= 1;
                corrupted = true;
            }
        }
        match to.recv(&m.encode()) {
            Ok(r) => *to = r.state,
            Err(e) => return (e, m.payload),
        }
    }
    panic!("no error (corrupted: {corrupted})");
}

#[test]
fn a_corrupted_ciphertext_is_refused_by_the_ciphertext_mac_when_ct2_completes() {
    let (e, p) = first_error_after_corrupting(|p| matches!(p, wire::Payload::Ct2(_)));
    assert_eq!(e, Error::DecryptionFailed);
    assert!(matches!(p, wire::Payload::Ct2(_)), "{p:?}");
}

#[test]
fn a_corrupted_key_is_refused_when_it_does_not_match_the_header() {
    let (e, p) = first_error_after_corrupting(|p| {
        matches!(p, wire::Payload::Ek(_) | wire::Payload::EkCt1Ack(_))
    });
    assert!(matches!(e, Error::InvalidMessage(_)), "{e:?}");
    assert!(
        matches!(p, wire::Payload::Ek(_) | wire::Payload::EkCt1Ack(_)),
        "{p:?}"
    );
}
