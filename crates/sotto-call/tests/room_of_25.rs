#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A room of 25 through the real relay on loopback: real webrtc-rs participants (sotto's
//! `MediaPeer`, SFrame), twenty receive-only listeners and five speakers whose tones carry
//! audio levels (RFC 6464) that change over time, keys following the real group key schedule
//! (`sotto_call::group::GroupKeys`, deliveries in process: `sotto_testkit::group`). The relay
//! forwards to each receiver the three loudest and four most recent other speakers only.
//!
//! The speakers take turns: in each phase one is loud (each at a level of its own), the one
//! before it goes on quietly, the rest are silent; listeners joined first, so every speaker has
//! to win its places from them. In every phase, once the places have had time to move, every
//! other member decrypts the loud speaker's audio and video (attributed by SFrame sender id),
//! and nobody decrypts more senders than it has slots. A listener joins in phase 1 (every key
//! ratchets), another leaves in phase 2 and the quiet speaker leaves in phase 3 (fresh
//! generations); no frame fails to decrypt anywhere. Prints the relay's CPU (on a runtime of its
//! own) and what it forwarded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sotto_call::media::{MediaConfig, MediaKind, OggOpusSource, TapFrame};
use sotto_frame::{Header, KeyId};
use sotto_testkit::group::{idle, KeyedRoom};
use sotto_testkit::media::drain;
use sotto_testkit::relay::{participant_with, MediaParticipant, TestRelay};

const ROOM: &str = "big";
const LISTENERS: usize = 20;
const SPEAKERS: usize = 5;
/// Each speaker's turn: it is loud, the one before it goes on quietly, the others are silent.
const PHASE: Duration = Duration::from_secs(3);
/// Frames are counted for at least this long in every phase.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Into a phase, the new speaker holds its places: the ranking's minimum hold (1 s) of the
/// places it takes, the smoothing, and its key frame; frames are counted after this.
const SETTLE: Duration = Duration::from_millis(1500);

/// Speaker `k`'s level in phase `j`: loud in its own phase (at a level of its own), quiet in the
/// next, silent otherwise.
fn level(k: usize, j: usize) -> u8 {
    if j % SPEAKERS == k {
        14 + 3 * k as u8
    } else if j > 0 && j % SPEAKERS == (k + 1) % SPEAKERS {
        45
    } else {
        127
    }
}

/// The bundled tone as if heard at `level` (−dBov).
fn tone_at(level: u8) -> OggOpusSource {
    OggOpusSource::tone()
        .unwrap()
        .with_levels(vec![level])
        .unwrap()
}

fn sender_of(t: &TapFrame) -> u64 {
    let clear = t.kind.codec().clear_len(&t.wire).unwrap();
    let kid = Header::decode(&t.wire[clear..]).unwrap().0.kid;
    KeyId::split_kid(kid).0
}

struct Member {
    p: MediaParticipant,
    sender: u64,
}

async fn join(
    relay: &TestRelay,
    keys: &Mutex<KeyedRoom>,
    name: &str,
    sender: u64,
    audio: Option<OggOpusSource>,
) -> Member {
    let mut c = MediaConfig::loopback(sender).unwrap();
    let speaks = audio.is_some();
    c.audio = audio;
    if !speaks {
        c.video = None;
    }
    let suite = c.suite;
    let p = participant_with(relay, ROOM, name, c).await;
    keys.lock()
        .unwrap()
        .join(name, sender, suite, p.peer.clone(), Instant::now());
    Member { p, sender }
}

/// Frames each member decrypted since the last drain: `(receiver, sender id, kind) → count`.
fn count(members: &mut BTreeMap<String, Member>) -> HashMap<(String, u64, MediaKind), usize> {
    let mut out = HashMap::new();
    for (name, m) in members.iter_mut() {
        for t in drain(&mut m.p.tap).into_iter().filter(|t| !t.sent) {
            *out.entry((name.clone(), sender_of(&t), t.kind))
                .or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_of_25_participants_everyone_decrypts_the_active_speakers() {
    let t0 = Instant::now();
    let relay = TestRelay::start_isolated(|_| {}).await;
    let keys = Mutex::new(KeyedRoom::default());
    let phases = SPEAKERS;
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    // listeners first: they fill the speaker places, so every speaker has to win its places
    for i in 0..LISTENERS {
        let name = format!("l{i:02}");
        let m = join(&relay, &keys, &name, 100 + i as u64, None).await;
        members.insert(name, m);
    }
    let mut speakers = Vec::new();
    for k in 0..SPEAKERS {
        let name = format!("s{k}");
        let m = join(
            &relay,
            &keys,
            &name,
            10 + k as u64,
            Some(tone_at(level(k, 0))),
        )
        .await;
        members.insert(name.clone(), m);
        speakers.push(name);
    }
    assert_eq!(relay.members(ROOM).len(), LISTENERS + SPEAKERS);
    let joined = t0.elapsed();
    let cpu_joined = relay.cpu().unwrap();
    let (_, out_joined, _) = relay.stats();
    for s in &speakers {
        members[s].p.peer.start_sending().await.unwrap();
    }
    let started = Instant::now();

    let mut report = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    for (j, active) in speakers.iter().enumerate().take(phases) {
        let phase_start = Instant::now();
        // each speaker's microphone hears its level for this phase
        for (k, s) in speakers.iter().enumerate() {
            if let Some(m) = members.get(s) {
                m.p.peer.switch_audio_source(tone_at(level(k, j)));
            }
        }
        // joins and leaves while the room talks: a listener joins in phase 1, another leaves
        // in phase 2, and in phase 3 the speaker of phase 1 (quiet by then) leaves
        let now = Instant::now();
        match j {
            1 => {
                let m = join(&relay, &keys, "late", 200, None).await;
                members.insert("late".into(), m);
            }
            2 => {
                let m = members.remove("l07").unwrap();
                keys.lock().unwrap().leave("l07", now);
                m.p.peer.close().await.unwrap();
                drop(m);
                gone.push("l07".into());
            }
            3 => {
                let leaver = speakers[1].clone();
                let m = members.remove(&leaver).unwrap();
                keys.lock().unwrap().leave(&leaver, now);
                m.p.peer.close().await.unwrap();
                drop(m);
                gone.push(leaver);
            }
            _ => {}
        }
        let settle_at = phase_start + SETTLE;
        idle(&keys, settle_at.saturating_duration_since(Instant::now())).await;
        count(&mut members);
        let counted_from = Instant::now();
        // a join or leave that took long does not shrink the window below MIN_WINDOW
        let end = (phase_start + PHASE).max(counted_from + MIN_WINDOW);
        idle(&keys, end.saturating_duration_since(Instant::now())).await;
        let window = counted_from.elapsed();
        let got = count(&mut members);
        let places = relay.speakers(ROOM).unwrap();
        let sid = members[active].sender;
        // every other member decrypted the active speaker's audio and video in the window
        let (mut fewest_audio, mut fewest_video) = (usize::MAX, usize::MAX);
        let mut per_member = Vec::new();
        for name in members.keys().filter(|n| *n != active) {
            let a = got
                .get(&(name.clone(), sid, MediaKind::Audio))
                .copied()
                .unwrap_or(0);
            let v = got
                .get(&(name.clone(), sid, MediaKind::Video))
                .copied()
                .unwrap_or(0);
            fewest_audio = fewest_audio.min(a);
            fewest_video = fewest_video.min(v);
            per_member.push(format!("{name}:{a}/{v}"));
        }
        // 20 ms audio, 15 fps video: at least 60 % of what the window holds
        let want_audio = window.as_millis() as usize / 20 * 6 / 10;
        let want_video = window.as_millis() as usize * 15 / 1000 * 6 / 10;
        assert!(
            fewest_audio >= want_audio && fewest_video >= want_video,
            "phase {j} ({active} loud): some member decrypted only {fewest_audio} audio / \
             {fewest_video} video frames of it in {window:?} (want {want_audio} / {want_video}); \
             places {places:?}; per member {per_member:?}"
        );
        // and nobody decrypted anything from more senders than it has slots
        for name in members.keys() {
            for (kind, slots) in [
                (MediaKind::Audio, sotto_relay::consts::AUDIO_SLOTS),
                (MediaKind::Video, sotto_relay::consts::VIDEO_SLOTS),
            ] {
                let from = got
                    .keys()
                    .filter(|(r, _, k)| r == name && *k == kind)
                    .count();
                assert!(from <= slots, "{name} decrypted {kind:?} of {from} senders");
            }
        }
        report.push(format!(
            "phase {j}: {active} loud, every other member decrypted >= {fewest_audio} audio and \
             >= {fewest_video} video frames of it in {window:.1?}; places {:?} / {:?}",
            places.audio, places.video
        ));
    }
    let talked = started.elapsed();
    let cpu = relay.cpu().unwrap();
    let (packets_in, packets_out, _) = relay.stats();
    let (kf_in, kf_out) = relay.keyframe_requests();

    // not one frame failed to decrypt, anywhere, joins and leaves included
    let mut failed = 0;
    let mut before_key = 0;
    let mut decrypted = 0;
    for (name, m) in &members {
        let s = m.p.peer.stats().await;
        failed += s.audio.frames_failed + s.video.frames_failed;
        before_key += s.audio.frames_before_key + s.video.frames_before_key;
        decrypted += s.audio.frames_decrypted + s.video.frames_decrypted;
        assert_eq!(
            s.audio.frames_failed + s.video.frames_failed,
            0,
            "{name}: {s:?}"
        );
    }
    assert!(relay.audio_levels_in() > 0);
    for r in &report {
        println!("{r}");
    }
    let sent_keys = keys.lock().unwrap().keys_sent;
    println!(
        "25 (+1 joined, {} left): joins took {joined:.1?}; {phases} phases of {PHASE:?}; \
         {decrypted} frames decrypted, {failed} failed, {before_key} from before a member's \
         key; {sent_keys} keys delivered; relay: {packets_in} packets in, {} forwarded while \
         talking ({:.0}/s), CPU {:.2?} while joining, {:.2?} while talking ({:.0} % of one \
         core), keyframe requests {kf_in} in / {kf_out} out; total {:.1?}",
        gone.len(),
        packets_out - out_joined,
        (packets_out - out_joined) as f64 / talked.as_secs_f64(),
        cpu_joined,
        cpu - cpu_joined,
        (cpu - cpu_joined).as_secs_f64() / talked.as_secs_f64() * 100.0,
        t0.elapsed()
    );
    for m in members.values() {
        m.p.peer.close().await.unwrap();
    }
    relay.shutdown().await;
}

#[test]
fn one_speaker_is_loud_per_phase() {
    for j in 0..SPEAKERS {
        let loud: Vec<usize> = (0..SPEAKERS).filter(|&k| level(k, j) < 40).collect();
        assert_eq!(loud, vec![j]);
    }
}
