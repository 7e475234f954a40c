//! Keys over time: joins ratchet, leaves rotate, receivers follow, replays and stale keys fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use sotto_frame::consts::{
    DEFAULT_GRACE_PERIOD, MAX_FRAMES_PER_KEY, MAX_RATCHET_AHEAD, REPLAY_WINDOW,
};
use sotto_frame::{CipherSuite, Codec, Error, FrameKey, KeyId, KeyRing, KeyUpdate, SenderKey};

const SUITE: CipherSuite = CipherSuite::Aes128GcmSha256_128;

fn frame(i: u64) -> Vec<u8> {
    format!("encoded frame number {i:06}").into_bytes()
}

/// Every key a participant could hold for `sender`: the base keys it was given, ratcheted
/// forward as far as the KID space reaches.
fn can_open_with_any(base_keys: &[Vec<u8>], wire: &[u8]) -> bool {
    let (header, _) = sotto_frame::Header::decode(wire).unwrap();
    for base in base_keys {
        let mut b = sotto_frame::BaseKey::new(base).unwrap();
        for _ in 0..32 {
            let key = FrameKey::derive(SUITE, header.kid, b.expose_secret()).unwrap();
            if key.open_frame(b"", wire).is_ok() {
                return true;
            }
            b = b.ratchet(SUITE);
        }
    }
    false
}

#[test]
fn joiner_cannot_decrypt_frames_before_join() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 1, &[0x11; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();

    let before: Vec<Vec<u8>> = (0..5)
        .map(|i| alice.encrypt(Codec::Full, b"", &frame(i)).unwrap())
        .collect();
    for (i, w) in before.iter().enumerate() {
        assert_eq!(
            bob.decrypt(Codec::Full, b"", w, t0).unwrap().frame,
            frame(i as u64)
        );
    }

    // Carol joins: Alice ratchets and hands Carol only the new material.
    alice.ratchet().unwrap();
    assert_eq!(alice.id().step, 1);
    let carol_material = alice.material();
    let mut carol = KeyRing::new(SUITE);
    carol.add_key(&carol_material, t0).unwrap();

    for w in &before {
        let err = carol.decrypt(Codec::Full, b"", w, t0).unwrap_err();
        assert_eq!(
            err,
            Error::StaleGeneration {
                kid: sotto_frame::Header::decode(w).unwrap().0.kid
            }
        );
    }
    // Not with the ring's rules, and not with any key derivable from what Carol holds.
    let held = vec![carol_material.base_key.expose_secret().to_vec()];
    assert!(before.iter().all(|w| !can_open_with_any(&held, w)));

    // After the join both Bob (ratcheting by himself) and Carol read Alice.
    let t1 = t0 + Duration::from_millis(40);
    for i in 5..10 {
        let w = alice.encrypt(Codec::Full, b"", &frame(i)).unwrap();
        assert_eq!(
            bob.decrypt(Codec::Full, b"", &w, t1).unwrap().frame,
            frame(i)
        );
        assert_eq!(
            carol.decrypt(Codec::Full, b"", &w, t1).unwrap().frame,
            frame(i)
        );
    }
    assert_eq!(bob.current(1), Some((0, 1)));
}

#[test]
fn leaver_cannot_decrypt_after_rotation() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 2, &[0x22; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    let mut dave = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    dave.add_key(&alice.material(), t0).unwrap();
    let mut dave_held = vec![alice.material().base_key.expose_secret().to_vec()];

    // Before leaving Dave also saw a join ratchet.
    alice.ratchet().unwrap();
    let w = alice
        .encrypt(Codec::Full, b"", b"while dave is here")
        .unwrap();
    assert!(dave.decrypt(Codec::Full, b"", &w, t0).is_ok());
    dave_held.push(alice.material().base_key.expose_secret().to_vec());

    // Dave leaves: Alice rotates to fresh material that only Bob receives.
    alice.rotate(&[0x5a; 16]).unwrap();
    assert_eq!(alice.id().generation, 1);
    assert_eq!(alice.id().step, 0);
    assert_eq!(
        bob.add_key(&alice.material(), t0).unwrap(),
        KeyUpdate::Added
    );

    let t1 = t0 + Duration::from_millis(100);
    for i in 0..20 {
        let w = alice.encrypt(Codec::Full, b"", &frame(i)).unwrap();
        assert_eq!(
            bob.decrypt(Codec::Full, b"", &w, t1).unwrap().frame,
            frame(i)
        );
        assert!(matches!(
            dave.decrypt(Codec::Full, b"", &w, t1),
            Err(Error::UnknownKey { .. })
        ));
        assert!(!can_open_with_any(&dave_held, &w));
    }
    // Later joins ratchet the new generation; still nothing for Dave.
    alice.ratchet().unwrap();
    let w = alice.encrypt(Codec::Full, b"", b"later").unwrap();
    assert!(bob.decrypt(Codec::Full, b"", &w, t1).is_ok());
    assert!(!can_open_with_any(&dave_held, &w));
}

#[test]
fn receiver_follows_sender_ratchet_within_window() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 3, &[0x33; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();

    // MAX_RATCHET_AHEAD joins in a row, and Bob sees no frame in between: still follows.
    for _ in 0..MAX_RATCHET_AHEAD {
        alice.ratchet().unwrap();
    }
    let w = alice.encrypt(Codec::Full, b"", b"six joins later").unwrap();
    let got = bob.decrypt(Codec::Full, b"", &w, t0).unwrap();
    assert_eq!(got.id.step, MAX_RATCHET_AHEAD);
    assert_eq!(bob.current(3), Some((0, MAX_RATCHET_AHEAD)));

    // One step past the window: refused, and Bob's state does not move.
    for _ in 0..=MAX_RATCHET_AHEAD {
        alice.ratchet().unwrap();
    }
    let w = alice.encrypt(Codec::Full, b"", b"too far").unwrap();
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &w, t0),
        Err(Error::RatchetTooFar { .. })
    ));
    assert_eq!(bob.current(3), Some((0, MAX_RATCHET_AHEAD)));
    // ... until the material arrives through the ratchet channel.
    assert_eq!(
        bob.add_key(&alice.material(), t0).unwrap(),
        KeyUpdate::Advanced
    );
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &w, t0).unwrap().frame,
        b"too far"
    );

    // A forged frame claiming a step ahead is not authenticated: no ratchet happens.
    let before = bob.current(3);
    let mut forged = alice.encrypt(Codec::Full, b"", b"x").unwrap();
    alice.ratchet().unwrap();
    let next_kid = alice.kid();
    let mut hdr = sotto_frame::Header::new(next_kid, 0).encode();
    let (_, consumed) = sotto_frame::Header::decode(&forged).unwrap();
    hdr.extend_from_slice(&forged.split_off(consumed));
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &hdr, t0),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(bob.current(3), before);

    // Late frames from the superseded step still decrypt during the grace period only.
    let mut carol = SenderKey::new(SUITE, 4, &[0x44; 16]).unwrap();
    let mut ring = KeyRing::new(SUITE);
    ring.add_key(&carol.material(), t0).unwrap();
    let late = carol.encrypt(Codec::Full, b"", b"late").unwrap();
    let late2 = carol.encrypt(Codec::Full, b"", b"later still").unwrap();
    carol.ratchet().unwrap();
    let w = carol.encrypt(Codec::Full, b"", b"new step").unwrap();
    assert!(ring.decrypt(Codec::Full, b"", &w, t0).is_ok());
    assert!(ring
        .decrypt(Codec::Full, b"", &late, t0 + DEFAULT_GRACE_PERIOD / 2)
        .is_ok());
    // a frame at the old step keeps it alive for another grace period, then it is gone
    assert!(matches!(
        ring.decrypt(
            Codec::Full,
            b"",
            &late2,
            t0 + DEFAULT_GRACE_PERIOD / 2 + DEFAULT_GRACE_PERIOD
        ),
        Err(Error::StaleGeneration { .. })
    ));
}

#[test]
fn old_generation_kept_for_grace_period_then_dropped() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 9, &[0x99; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    let in_flight: Vec<_> = (0..3)
        .map(|i| alice.encrypt(Codec::Full, b"", &frame(i)).unwrap())
        .collect();
    alice.rotate(&[0x77; 16]).unwrap();
    bob.add_key(&alice.material(), t0).unwrap();
    let fresh = alice.encrypt(Codec::Full, b"", b"gen 1").unwrap();
    assert!(bob.decrypt(Codec::Full, b"", &fresh, t0).is_ok());
    // frames of generation 0 still in flight decrypt within the grace period...
    assert!(bob
        .decrypt(Codec::Full, b"", &in_flight[0], t0 + Duration::from_secs(1))
        .is_ok());
    // ...and are stale once it is over, even after `expire`
    let late = t0 + DEFAULT_GRACE_PERIOD + Duration::from_millis(1);
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &in_flight[1], late),
        Err(Error::StaleGeneration { .. })
    ));
    bob.expire(late);
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &in_flight[2], late),
        Err(Error::StaleGeneration { .. })
    ));
    assert!(bob
        .decrypt(
            Codec::Full,
            b"",
            &alice.encrypt(Codec::Full, b"", b"x").unwrap(),
            late
        )
        .is_ok());
}

#[test]
fn replayed_frame_is_rejected() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 5, &[0x55; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    let wires: Vec<_> = (0..=REPLAY_WINDOW + 2)
        .map(|i| alice.encrypt(Codec::Full, b"", &frame(i)).unwrap())
        .collect();

    // in order, then an exact replay
    assert!(bob.decrypt(Codec::Full, b"", &wires[0], t0).is_ok());
    let kid = alice.kid();
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &wires[0], t0),
        Err(Error::Replay { kid, ctr: 0 })
    );

    // out of order inside the window is fine, once
    assert!(bob.decrypt(Codec::Full, b"", &wires[5], t0).is_ok());
    assert!(bob.decrypt(Codec::Full, b"", &wires[3], t0).is_ok());
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &wires[3], t0),
        Err(Error::Replay { kid, ctr: 3 })
    );

    // jump to the newest; counter 2 is exactly REPLAY_WINDOW behind: out of the window
    let newest = REPLAY_WINDOW as usize + 2;
    assert!(bob.decrypt(Codec::Full, b"", &wires[newest], t0).is_ok());
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &wires[2], t0),
        Err(Error::CounterOutOfWindow { kid, ctr: 2 })
    );
    // counter 4 is REPLAY_WINDOW - 2 behind: still accepted (never seen before)
    assert!(bob.decrypt(Codec::Full, b"", &wires[4], t0).is_ok());
    // the one at the edge: newest - (REPLAY_WINDOW - 1) = counter 3, already seen -> replay
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &wires[3], t0),
        Err(Error::Replay { kid, ctr: 3 })
    );
}

#[test]
fn failed_decrypt_changes_no_state() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 6, &[0x66; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    let good = alice.encrypt(Codec::Full, b"", b"genuine frame").unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &bad, t0),
        Err(Error::AuthenticationFailed)
    );
    // the forged copy did not burn counter 0
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &good, t0).unwrap().frame,
        b"genuine frame"
    );
}

#[test]
fn counter_limit_forces_rotation() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 7, &[0x70; 16]).unwrap();
    assert_eq!(alice.frames_left(), MAX_FRAMES_PER_KEY);
    alice.set_counter_limit(u64::MAX);
    assert_eq!(
        alice.frames_left(),
        MAX_FRAMES_PER_KEY,
        "the hard limit cannot be raised"
    );
    alice.set_counter_limit(3);
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    for i in 0..3 {
        let w = alice.encrypt(Codec::Full, b"", &frame(i)).unwrap();
        assert!(bob.decrypt(Codec::Full, b"", &w, t0).is_ok());
    }
    assert_eq!(alice.frames_left(), 0);
    assert_eq!(
        alice.encrypt(Codec::Full, b"", b"one too many"),
        Err(Error::CounterExhausted)
    );
    // a failed call used no counter: still exhausted, nothing emitted
    assert_eq!(
        alice.encrypt(Codec::Full, b"", b"again"),
        Err(Error::CounterExhausted)
    );

    alice.rotate(&[0x71; 16]).unwrap();
    bob.add_key(&alice.material(), t0).unwrap();
    let w = alice
        .encrypt(Codec::Full, b"", b"fresh key, counter 0")
        .unwrap();
    let got = bob.decrypt(Codec::Full, b"", &w, t0).unwrap();
    assert_eq!((got.id.generation, got.ctr), (1, 0));
}

#[test]
fn kid_layout_and_wrapping_steps() {
    let id = KeyId {
        sender: 0x1234,
        generation: 17,
        step: 18,
    };
    assert_eq!(id.kid(), 0x0012_3412);
    assert_eq!(KeyId::split_kid(id.kid()), (0x1234, 1, 2));
    // sender 0, generation 0, step 0 fits the config byte: a 1-byte KID field of 0
    assert_eq!(
        KeyId {
            sender: 0,
            generation: 0,
            step: 0
        }
        .kid(),
        0
    );

    // steps wrap around the 4-bit field, the receiver keeps following
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 8, &[0x80; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    for step in 1..=40u64 {
        alice.ratchet().unwrap();
        let w = alice.encrypt(Codec::Full, b"", &frame(step)).unwrap();
        let got = bob.decrypt(Codec::Full, b"", &w, t0).unwrap();
        assert_eq!(got.id.step, step);
    }
}

#[test]
fn dropped_generation_cannot_be_readded_to_replay_its_frames() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 10, &[0x10; 16]).unwrap();
    let gen0 = alice.material();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&gen0, t0).unwrap();
    let captured: Vec<_> = (0..3)
        .map(|i| alice.encrypt(Codec::Full, b"", &frame(i)).unwrap())
        .collect();
    for w in &captured {
        bob.decrypt(Codec::Full, b"", w, t0).unwrap();
    }
    alice.rotate(&[0x11; 16]).unwrap();
    bob.add_key(&alice.material(), t0).unwrap();
    let late = t0 + DEFAULT_GRACE_PERIOD + Duration::from_secs(1);
    bob.expire(late);
    // the old material arrives again (duplicate delivery, reconnect): refused
    assert!(matches!(
        bob.add_key(&gen0, late),
        Err(Error::StaleGeneration { .. })
    ));
    for w in &captured {
        assert!(
            bob.decrypt(Codec::Full, b"", w, late).is_err(),
            "captured frame replayed"
        );
    }
}

#[test]
fn receiver_catches_up_after_missing_many_rotations() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 11, &[0x20; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    for g in 1..=9u8 {
        alice.rotate(&[0x20 + g; 16]).unwrap();
    }
    assert_eq!(
        bob.add_key(&alice.material(), t0).unwrap(),
        KeyUpdate::Added
    );
    let w = alice
        .encrypt(Codec::Full, b"", b"nine rotations later")
        .unwrap();
    assert_eq!(
        bob.decrypt(Codec::Full, b"", &w, t0).unwrap().id.generation,
        9
    );
}

#[test]
fn sender_still_using_an_old_step_is_not_cut_off() {
    // An insider (anyone holding the base key) forges a frame a few steps ahead; the ring
    // moves on, but the sender's genuine frames at the old step keep decrypting past the
    // grace period because they keep the old step alive.
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 12, &[0x30; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    let mut insider = SenderKey::resume(&alice.material(), 1000).unwrap();
    insider.ratchet().unwrap();
    insider.ratchet().unwrap();
    let forged = insider.encrypt(Codec::Full, b"", b"forged").unwrap();
    assert!(bob.decrypt(Codec::Full, b"", &forged, t0).is_ok());
    let mut t = t0;
    for i in 0..20 {
        t += Duration::from_secs(1);
        let w = alice.encrypt(Codec::Full, b"", &frame(i)).unwrap();
        assert!(
            bob.decrypt(Codec::Full, b"", &w, t).is_ok(),
            "frame {i} at +{}s",
            i + 1
        );
    }
}

#[test]
fn extreme_values_do_not_panic() {
    let t0 = Instant::now();
    let mut ring = KeyRing::with_config(
        SUITE,
        sotto_frame::RingConfig {
            grace_period: Duration::MAX,
        },
    );
    let mut alice = SenderKey::new(SUITE, 13, &[0x40; 16]).unwrap();
    ring.add_key(&alice.material(), t0).unwrap();
    alice.ratchet().unwrap();
    let w = alice.encrypt(Codec::Full, b"", b"x").unwrap();
    assert!(ring.decrypt(Codec::Full, b"", &w, t0).is_ok());
    // material with absurd step / generation / sender values is refused, not trusted
    let mut m = alice.material();
    m.id.step = u64::MAX;
    assert!(matches!(ring.add_key(&m, t0), Err(Error::InvalidKeyId(_))));
    let mut m = alice.material();
    m.id.generation = u64::MAX;
    assert!(matches!(ring.add_key(&m, t0), Err(Error::InvalidKeyId(_))));
    let mut m = alice.material();
    m.id.sender = sotto_frame::consts::MAX_SENDER_ID + 1;
    assert!(matches!(ring.add_key(&m, t0), Err(Error::InvalidKeyId(_))));
}

#[test]
fn replay_window_survives_a_jump_beyond_its_size() {
    let t0 = Instant::now();
    let mut alice = SenderKey::new(SUITE, 14, &[0x50; 16]).unwrap();
    let mut bob = KeyRing::new(SUITE);
    bob.add_key(&alice.material(), t0).unwrap();
    let first = alice.encrypt(Codec::Full, b"", b"0").unwrap();
    bob.decrypt(Codec::Full, b"", &first, t0).unwrap();
    let frames: Vec<_> = (1..=300)
        .map(|i| alice.encrypt(Codec::Full, b"", &frame(i)).unwrap())
        .collect();
    let last = frames.last().unwrap();
    bob.decrypt(Codec::Full, b"", last, t0).unwrap();
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &first, t0),
        Err(Error::CounterOutOfWindow { .. })
    ));
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", last, t0),
        Err(Error::Replay { .. })
    ));
    // inside the new window and never seen: accepted once
    assert!(bob.decrypt(Codec::Full, b"", &frames[250], t0).is_ok());
    assert!(matches!(
        bob.decrypt(Codec::Full, b"", &frames[250], t0),
        Err(Error::Replay { .. })
    ));
}
