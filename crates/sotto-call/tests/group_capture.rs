#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Group calls through the real signaling server and the real relay with capture on, checked
//! against what the relay captured: who can open which captured frame with the keys the engine
//! really received (every key in every call message, logged by `Command::LogReceivedKeys`), and
//! where the relay placed each admission and departure (`members.txt`). Frames are attributed
//! by their capture position against those marks and by their SFrame KID, never by wall clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_call::engine::{
    default_machine, sender_id_for, Command, Engine, MediaFactory, Notice, KEY_ACTIVATION_DELAY,
};
use sotto_call::media::consts::KEYFRAME_REQUEST_RETRY;
use sotto_call::media::{IvfSource, MediaConfig, MediaKind, TapFrame};
use sotto_call::sealed::Device;
use sotto_frame::{CipherSuite, Codec, Header, KeyId, KeyMaterial, KeyRing};
use sotto_relay::capture::{self, Kind, Mark};
use sotto_server::{Server, ServerConfig, SqliteStore};
use tokio::sync::mpsc;

/// Several real webrtc-rs peers per test: one test at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SERVER_ID: &str = "test.sotto";
const T: Duration = Duration::from_secs(45);

struct Who {
    name: &'static str,
    engine: Engine,
    taps: mpsc::UnboundedReceiver<TapFrame>,
    keys: mpsc::UnboundedReceiver<KeyMaterial>,
}

impl Who {
    fn drain(&mut self) -> (Vec<TapFrame>, Vec<KeyMaterial>) {
        let mut t = Vec::new();
        while let Ok(f) = self.taps.try_recv() {
            t.push(f);
        }
        let mut k = Vec::new();
        while let Ok(m) = self.keys.try_recv() {
            k.push(m);
        }
        (t, k)
    }

    fn media(&self) -> sotto_call::media::MediaStats {
        self.engine
            .status()
            .borrow()
            .media
            .clone()
            .unwrap_or_default()
    }
}

struct World {
    dir: tempfile::TempDir,
    srv: Server,
    relay: sotto_relay::Relay,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("signal.db"), Default::default()).unwrap();
        let srv = Server::bind(ServerConfig::new(SERVER_ID), Arc::new(store), "127.0.0.1:0")
            .await
            .unwrap();
        let mut rc = sotto_relay::RelayConfig::loopback();
        rc.capture_dir = Some(dir.path().join("capture"));
        let relay = sotto_relay::serve(rc).await.unwrap();
        World { dir, srv, relay }
    }

    async fn member(&self, name: &'static str) -> Who {
        let (dev, events) = Device::register(&self.srv.url(), SERVER_ID, name)
            .await
            .unwrap();
        let (ttx, taps) = mpsc::unbounded_channel();
        let factory: MediaFactory = Box::new(move |id| {
            let mut c = MediaConfig::loopback(id)?;
            c.tap = Some(ttx.clone());
            Ok(c)
        });
        let engine = Engine::spawn_with_relay(
            dev,
            events,
            factory,
            default_machine,
            Some(self.relay.url()),
        );
        let (ktx, keys) = mpsc::unbounded_channel();
        engine.command(Command::LogReceivedKeys(ktx)).await;
        Who {
            name,
            engine,
            taps,
            keys,
        }
    }

    /// What the relay captured, with the membership marks.
    fn capture(&self) -> (Vec<CFrame>, Vec<Mark>) {
        self.relay.flush_capture();
        let dir = self.dir.path().join("capture");
        let records = capture::parse(&std::fs::read(dir.join("capture.bin")).unwrap()).unwrap();
        let marks =
            capture::parse_marks(&std::fs::read_to_string(dir.join(capture::MARKS_FILE)).unwrap())
                .unwrap();
        let reassembly = capture::reassemble(&records);
        // every video record is in a frame, but for the frame each sender is in the middle of
        // when the capture is read (at most one per sender); nothing is lost or reordered on
        // loopback before the relay
        let senders: BTreeSet<&str> = records.iter().map(|r| r.sender.as_str()).collect();
        assert_eq!(
            (reassembly.undepacketizable, reassembly.broken),
            (0, 0),
            "video records in no frame: {reassembly:?}"
        );
        assert!(
            reassembly.unfinished_frames <= senders.len(),
            "{reassembly:?}"
        );
        let suite = MediaConfig::loopback(1).unwrap().suite;
        let frames = reassembly
            .frames
            .into_iter()
            .map(|(index, f)| {
                let h = whole_sframe(codec(f.kind), suite, &f.frame).unwrap_or_else(|e| {
                    panic!(
                        "captured {:?} frame of {} at {index}: {e}",
                        f.kind, f.sender
                    )
                });
                let (sid, gen, step) = KeyId::split_kid(h.kid);
                CFrame {
                    index,
                    sender: f.sender,
                    kind: f.kind,
                    sid,
                    kid: (gen, step),
                    // codec-aware layout: the VP8 frame tag is in clear (bit 0 clear: key frame)
                    key_frame: f.kind == Kind::Video && f.frame[0] & 1 == 0,
                    wire: f.frame,
                }
            })
            .collect();
        (frames, marks)
    }
}

/// Whether `frame` is a whole RFC 9605 frame in codec-aware layout: the codec's clear bytes, an
/// SFrame header that decodes, then at least the suite's tag length of ciphertext.
fn whole_sframe(codec: Codec, suite: CipherSuite, frame: &[u8]) -> Result<Header, String> {
    let clear = codec.clear_len(frame).map_err(|e| e.to_string())?;
    let (h, len) = Header::decode(&frame[clear..]).map_err(|e| e.to_string())?;
    let ct = frame.len() - clear - len;
    if ct < suite.nt() {
        return Err(format!("{ct} bytes of ciphertext, shorter than the tag"));
    }
    Ok(h)
}

fn codec(k: Kind) -> Codec {
    match k {
        Kind::Audio => Codec::Opus,
        Kind::Video => Codec::Vp8,
    }
}

/// One frame as the relay captured it.
struct CFrame {
    index: usize,
    sender: String,
    kind: Kind,
    /// SFrame sender id (KID high bits).
    sid: u64,
    /// (generation mod 16, step mod 16) from the KID.
    kid: (u64, u64),
    key_frame: bool,
    wire: Vec<u8>,
}

fn mark(marks: &[Mark], who: &str, joined: bool) -> usize {
    let m: Vec<&Mark> = marks
        .iter()
        .filter(|m| m.participant == who && m.joined == joined)
        .collect();
    assert_eq!(m.len(), 1, "one {joined} mark for {who}: {marks:?}");
    m[0].index as usize
}

/// For each frame, whether any of `keys` opens it. One key ring per key, fed the frames in
/// capture order (a ring follows a sender's ratchet forward from the key's step, as a real
/// receiver's would, up to `MAX_RATCHET_AHEAD` steps at a time).
fn opened_by(keys: &[KeyMaterial], frames: &[&CFrame]) -> Vec<bool> {
    let now = Instant::now();
    let mut opened = vec![false; frames.len()];
    for k in keys {
        let mut ring = KeyRing::new(k.suite);
        ring.add_key(k, now).unwrap();
        for (i, f) in frames.iter().enumerate() {
            if ring.decrypt(codec(f.kind), b"", &f.wire, now).is_ok() {
                opened[i] = true;
            }
        }
    }
    opened
}

async fn call(a: &Who, b: &Who) {
    a.engine.command(Command::Dial(b.name.into())).await;
    b.engine.wait_state("incoming", T).await.expect("rings");
    b.engine.command(Command::Answer).await;
    a.engine
        .wait_state("connected", T)
        .await
        .expect("connected");
    b.engine
        .wait_state("connected", T)
        .await
        .expect("connected");
}

async fn answer(who: &Who) -> Instant {
    who.engine.wait_state("incoming", T).await.expect("rings");
    who.engine.command(Command::Answer).await;
    who.engine
        .wait_state("connected", T)
        .await
        .expect("connected");
    Instant::now()
}

/// Video frames a receiver decrypted from each sender id before the first key frame from it
/// (`usize::MAX`: never a key frame).
fn inter_frames_before_first_key_frame(taps: &[TapFrame]) -> BTreeMap<u64, usize> {
    let mut out: BTreeMap<u64, usize> = BTreeMap::new();
    let mut done = BTreeSet::new();
    for t in taps
        .iter()
        .filter(|t| !t.sent && t.kind == MediaKind::Video)
    {
        let (sid, _, _) = KeyId::split_kid(kid_of(&t.wire));
        if done.contains(&sid) {
            continue;
        }
        let n = out.entry(sid).or_insert(0);
        if sotto_call::media::is_vp8_key_frame(&t.frame) {
            done.insert(sid);
        } else {
            *n += 1;
        }
    }
    for (sid, n) in out.iter_mut() {
        if !done.contains(sid) {
            *n = usize::MAX;
        }
    }
    out
}

fn kid_of(wire: &[u8]) -> u64 {
    let clear = Codec::Vp8.clear_len(wire).unwrap();
    Header::decode(&wire[clear..]).unwrap().0.kid
}

/// Frames a receiver may show before the first decodable key frame of a sender once that
/// sender's key is there (`protocol-spec/group.md` §4): the frame that triggers the request,
/// then the frames sent while the request travels, at most one retry interval.
fn resume_bound() -> usize {
    let interval = IvfSource::camera1().unwrap().frame_interval();
    1 + KEYFRAME_REQUEST_RETRY
        .as_micros()
        .div_ceil(interval.as_micros()) as usize
}

/// In the capture, for every sender's video, each new KID (join ratchet, leave rotation): how
/// many frames under it came before the first key frame under it.
fn frames_to_key_frame_per_new_kid(frames: &[CFrame]) -> Vec<(String, (u64, u64), usize)> {
    let mut out = Vec::new();
    let mut by_sender: BTreeMap<&str, Vec<&CFrame>> = BTreeMap::new();
    for f in frames.iter().filter(|f| f.kind == Kind::Video) {
        by_sender.entry(&f.sender).or_default().push(f);
    }
    for (s, fs) in by_sender {
        let mut seen = BTreeSet::new();
        for (i, f) in fs.iter().enumerate() {
            if seen.insert(f.kid) {
                let n = fs[i..]
                    .iter()
                    .take_while(|g| g.kid == f.kid && !g.key_frame)
                    .count();
                out.push((s.to_string(), f.kid, n));
            }
        }
    }
    out
}

/// The leaver's keys against everything captured after it left: frames under a generation the
/// sender had not used before the leave must stay closed. Returns (frames under new
/// generations per sender, frames after the leave the leaver could still open, which must all
/// be under an old generation: the activation delay).
fn check_leaver(
    leaver: &str,
    keys: &[KeyMaterial],
    frames: &[CFrame],
    left: usize,
) -> (BTreeMap<String, usize>, usize) {
    let mut gens_before: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for f in frames.iter().filter(|f| f.index < left) {
        gens_before.entry(&f.sender).or_default().insert(f.kid.0);
    }
    let after: Vec<&CFrame> = frames
        .iter()
        .filter(|f| f.index >= left && f.sender != leaver)
        .collect();
    let opened = opened_by(keys, &after);
    let mut new_gen = BTreeMap::new();
    let mut old_window = 0;
    for (f, o) in after.iter().zip(&opened) {
        let fresh = !gens_before
            .get(f.sender.as_str())
            .is_some_and(|g| g.contains(&f.kid.0));
        if fresh {
            *new_gen.entry(f.sender.clone()).or_insert(0) += 1;
            assert!(
                !o,
                "{leaver} opened a frame of {} under generation {} captured after it left",
                f.sender, f.kid.0
            );
        } else if *o {
            old_window += 1;
        }
    }
    (new_gen, old_window)
}

/// The joiner's keys against everything captured before the relay admitted it: none opens.
/// Returns how many frames were checked, and how many of those captured from its admission to
/// its own last captured frame it opened.
fn check_joiner(
    joiner: &str,
    keys: &[KeyMaterial],
    frames: &[CFrame],
    joined: usize,
) -> (usize, usize) {
    let others: Vec<&CFrame> = frames.iter().filter(|f| f.sender != joiner).collect();
    let opened = opened_by(keys, &others);
    let left = frames
        .iter()
        .filter(|f| f.sender == joiner)
        .map(|f| f.index)
        .max()
        .unwrap_or(usize::MAX);
    let mut before = 0;
    let mut after_opened = 0;
    for (f, o) in others.iter().zip(&opened) {
        if f.index > left {
            continue;
        }
        if f.index < joined {
            before += 1;
            assert!(
                !o,
                "{joiner} opened a frame of {} (KID {:?}) captured before it joined",
                f.sender, f.kid
            );
        } else if *o {
            after_opened += 1;
        }
    }
    (before, after_opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_opens_nothing_captured_before_it_joined_and_a_leaver_nothing_after_the_rotation()
{
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let mut alice = w.member("alice").await;
    let mut bob = w.member("bob").await;
    let mut carol = w.member("carol").await;
    call(&alice, &bob).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.engine.command(Command::Invite("carol".into())).await;
    answer(&carol).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    carol.engine.command(Command::Hangup).await;
    carol.engine.wait_state("ended", T).await.unwrap();
    tokio::time::sleep(KEY_ACTIVATION_DELAY + Duration::from_secs(2)).await;
    // a user whose SFrame sender id equals bob's cannot be added (nobody could tell them apart)
    let twin = (0u32..)
        .map(|i| format!("u{i}"))
        .find(|n| sender_id_for(n) == sender_id_for("bob"))
        .unwrap();
    alice.engine.command(Command::Invite(twin.clone())).await;
    let refused = tokio::time::timeout(T, async {
        loop {
            match alice.engine.notice().await {
                Some(Notice::Error(e)) if e.contains(&twin) => return e,
                Some(_) => continue,
                None => panic!("engine gone"),
            }
        }
    })
    .await
    .expect("the clashing invite is refused");
    assert!(refused.contains("sender id equals bob's"), "{refused}");
    let (am, bm, cm) = (alice.media(), bob.media(), carol.media());
    alice.engine.command(Command::Hangup).await;
    bob.engine.wait_state("ended", T).await.unwrap();
    let (frames, marks) = w.capture();
    let (ctaps, ckeys) = carol.drain();
    let (ataps, _) = alice.drain();
    let (btaps, _) = bob.drain();

    // carol received keys from both alice and bob, and nothing else
    let from: BTreeSet<u64> = ckeys.iter().map(|k| k.id.sender).collect();
    let sid = |who: &str| frames.iter().find(|f| f.sender == who).unwrap().sid;
    assert_eq!(
        from,
        [sid("alice"), sid("bob")].into_iter().collect(),
        "carol's keys"
    );

    // (b) the joiner: nothing captured before its admission opens with any key it received
    let joined = mark(&marks, "carol", true);
    let left = mark(&marks, "carol", false);
    let (checked, opened_after) = check_joiner("carol", &ckeys, &frames, joined);
    assert!(checked > 100, "only {checked} frames before carol joined");
    // the check can fail: the same keys do open what was sent while carol was in
    let last_own = frames
        .iter()
        .filter(|f| f.sender == "carol")
        .map(|f| f.index)
        .max()
        .unwrap();
    let while_in = frames
        .iter()
        .filter(|f| f.index >= joined && f.index <= last_own && f.sender != "carol")
        .count();
    assert!(
        opened_after * 10 >= while_in * 9,
        "carol's keys open only {opened_after} of {while_in} frames captured while she was in"
    );

    // (a) the leaver: nothing under the rotated generations opens with any key it ever held
    let (new_gen, old_window) = check_leaver("carol", &ckeys, &frames, left);
    for s in ["alice", "bob"] {
        assert!(
            new_gen.get(s).copied().unwrap_or(0) > 30,
            "{s} sent too little under a new generation after carol left: {new_gen:?}"
        );
    }
    // frames she could still open after she left: only the activation delay's worth (about
    // 65 frames/s per sender; the rotation starts at her hangup, just before she leaves)
    let window_bound = 2 * 65 * (KEY_ACTIVATION_DELAY.as_millis() as usize + 1000) / 1000;
    assert!(
        old_window <= window_bound,
        "carol opened {old_window} frames captured after she left (bound {window_bound})"
    );

    // generations: alice and bob rotated once (capture), each decrypts the other's new one
    for (who, m, other_taps) in [("alice", &am, &btaps), ("bob", &bm, &ataps)] {
        let last = frames.iter().rev().find(|f| f.sender == who).unwrap();
        assert_eq!(last.kid.0, m.local_generation % 16, "{who}'s generation");
        assert_eq!(m.local_generation, 1, "{who} rotated once: {m:?}");
        let got = other_taps
            .iter()
            .filter(|t| !t.sent)
            .map(|t| KeyId::split_kid(kid_of_any(t)))
            .filter(|(s, g, _)| *s == last.sid && *g == last.kid.0)
            .count();
        assert!(
            got > 30,
            "{who}'s generation {} barely decrypted ({got})",
            last.kid.0
        );
    }

    // video resumes: in the capture, every new KID of every sender starts with a key frame
    let runs = frames_to_key_frame_per_new_kid(&frames);
    assert!(runs.len() >= 7, "{runs:?}"); // 3 first keys, 2 ratchets, 2 rotations
    for (s, kid, n) in &runs {
        assert_eq!(
            *n, 0,
            "{s}: {n} inter frames under new KID {kid:?} before a key frame"
        );
    }
    // and at the joiner, from each sender, the first decrypted video frame is decodable
    let at_carol = inter_frames_before_first_key_frame(&ctaps);
    assert_eq!(at_carol.len(), 2, "{at_carol:?}");
    for (s, n) in &at_carol {
        assert!(
            *n <= resume_bound(),
            "carol waited {n} frames for sender {s}'s key frame"
        );
    }
    // no frame lost to a key change
    for (who, m) in [("alice", &am), ("bob", &bm), ("carol", &cm)] {
        assert_eq!(
            m.video.frames_failed + m.audio.frames_failed,
            0,
            "{who}: {m:?}"
        );
    }
    println!(
        "joiner: {checked} frames captured before the join, none opened; {opened_after} of \
         {while_in} opened while in; leaver: {new_gen:?} frames under new generations, none \
         opened, {old_window} old-generation frames opened after the leave; new KIDs \
         {runs:?}; carol's inter frames before the first key frame {at_carol:?}; carol held \
         {} frames for their key, {} arrived before her key",
        cm.video.frames_waited_for_key + cm.audio.frames_waited_for_key,
        cm.video.frames_before_key + cm.audio.frames_before_key
    );
    w.relay.shutdown().await;
}

fn kid_of_any(t: &TapFrame) -> u64 {
    let clear = t.kind.codec().clear_len(&t.wire).unwrap();
    Header::decode(&t.wire[clear..]).unwrap().0.kid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_in_the_same_second_and_a_join_racing_a_leave_end_on_the_right_keys() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let mut alice = w.member("alice").await;
    let mut bob = w.member("bob").await;
    let mut carol = w.member("carol").await;
    let mut dave = w.member("dave").await;
    let mut erin = w.member("erin").await;
    call(&alice, &bob).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // two members invite two others at once: neither inviter knows the other's invitee
    alice.engine.command(Command::Invite("carol".into())).await;
    bob.engine.command(Command::Invite("dave".into())).await;
    let (tc, td) = tokio::join!(answer(&carol), answer(&dave));
    let apart = if tc > td { tc - td } else { td - tc };
    assert!(apart < Duration::from_secs(1), "joins {apart:?} apart");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // a join racing a leave: alice invites erin as dave hangs up
    alice.engine.command(Command::Invite("erin".into())).await;
    dave.engine.command(Command::Hangup).await;
    answer(&erin).await;
    dave.engine.wait_state("ended", T).await.unwrap();
    tokio::time::sleep(KEY_ACTIVATION_DELAY + Duration::from_secs(2)).await;

    // a steady window: every remaining member decrypts every other, no new failure
    let mut keys: BTreeMap<&str, Vec<KeyMaterial>> = BTreeMap::new();
    let mut before = Vec::new();
    for m in [&mut alice, &mut bob, &mut carol, &mut erin, &mut dave] {
        let s = m.media();
        before.push(s.video.frames_failed + s.audio.frames_failed);
        let (_, k) = m.drain();
        keys.entry(m.name).or_default().extend(k);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut window = Vec::new();
    let mut stats = Vec::new();
    for (i, m) in [&mut alice, &mut bob, &mut carol, &mut erin]
        .into_iter()
        .enumerate()
    {
        let s = m.media();
        assert_eq!(
            s.video.frames_failed + s.audio.frames_failed,
            before[i],
            "{}: frames still failing after the races: {s:?}",
            m.name
        );
        let (t, k) = m.drain();
        keys.entry(m.name).or_default().extend(k);
        window.push(t);
        stats.push(s);
    }
    for m in [&alice, &bob, &carol, &erin] {
        m.engine.command(Command::Hangup).await;
    }
    let (frames, marks) = w.capture();
    let sid = |who: &str| frames.iter().find(|f| f.sender == who).unwrap().sid;
    let names = ["alice", "bob", "carol", "erin"];
    let mut last_kid = BTreeMap::new();
    for n in names {
        let last = frames
            .iter()
            .rev()
            .find(|f| f.sender == n && f.kind == Kind::Video)
            .unwrap();
        last_kid.insert(sid(n), last.kid);
    }
    for (i, r) in names.iter().enumerate() {
        let mut from: BTreeMap<u64, (usize, BTreeSet<(u64, u64)>)> = BTreeMap::new();
        for t in window[i].iter().filter(|t| !t.sent) {
            let (s, g, st) = KeyId::split_kid(kid_of_any(t));
            let e = from.entry(s).or_default();
            e.0 += 1;
            e.1.insert((g, st));
        }
        for (j, s) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            let (n, kids) = from.get(&sid(s)).cloned().unwrap_or_default();
            assert!(
                n > 50,
                "{r} decrypted only {n} frames from {s} in 2 s: {from:?}; {:?}; marks {marks:?}",
                stats[i]
            );
            // key generations agree: what r decrypts last is what s sends last
            assert!(
                kids.contains(&last_kid[&sid(s)]),
                "{r} never decrypted {s}'s current KID {:?}: {kids:?}",
                last_kid[&sid(s)]
            );
        }
        assert_eq!(
            stats[i].local_generation % 16,
            last_kid[&sid(r)].0,
            "{r}'s own generation"
        );
    }
    // two joiners and the third one: nothing captured before their admission opens
    let mut report = Vec::new();
    for j in ["carol", "dave", "erin"] {
        let all = keys.get(j).cloned().unwrap_or_default();
        let at = mark(&marks, j, true);
        let (checked, opened) = check_joiner(j, &all, &frames, at);
        assert!(checked > 100 && opened > 100, "{j}: {checked} {opened}");
        report.push((j, checked, opened, all));
    }
    // the leaver: nothing under a generation started after it left opens with its keys
    let dave_keys = report
        .iter()
        .find(|r| r.0 == "dave")
        .map(|r| r.3.clone())
        .unwrap();
    let left = mark(&marks, "dave", false);
    let (new_gen, old_window) = check_leaver("dave", &dave_keys, &frames, left);
    // everyone who gave dave a key rotated away from it (alice, bob, carol at least)
    let gave: BTreeSet<u64> = dave_keys.iter().map(|k| k.id.sender).collect();
    for n in names {
        if gave.contains(&sid(n)) {
            assert!(
                new_gen.get(n).copied().unwrap_or(0) > 30,
                "{n} gave dave its key but did not rotate after he left: {new_gen:?}"
            );
        }
    }
    assert!(gave.len() >= 3, "dave held keys of {gave:?}");
    println!(
        "races: joins {apart:?} apart; joiners (name, frames before join checked, opened after) \
         {:?}; dave held keys of {} senders, frames under new generations after he left \
         {new_gen:?} (none opened), {old_window} old-generation frames opened in the activation \
         delay; generations {:?}",
        report.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>(),
        gave.len(),
        stats.iter().map(|s| s.local_generation).collect::<Vec<_>>()
    );
    w.relay.shutdown().await;
}
