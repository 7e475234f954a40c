#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Group calls through the real signaling server and the real relay with capture on, checked
//! against what the relay captured: who can open which captured frame with the keys the engine
//! really received (every key in every call message, logged by `Command::LogReceivedKeys`), and
//! where the relay placed each admission and departure (`members.txt`). Frames are attributed
//! by their capture position against those marks and by their SFrame KID, never by wall clock.

use sotto_call::core::{CallError, CallState, MemberChange};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sotto_call::engine::{
    default_machine, sender_id_for, Command, Engine, Notice, RelayChoice, KEY_ACTIVATION_DELAY,
};
use sotto_call::media::consts::{KEYFRAME_REQUEST_RETRY, KEY_WAIT};
use sotto_call::media::{IvfSource, MediaConfig, MediaKind, TapFrame};
use sotto_frame::{Codec, Header, KeyId, KeyMaterial, KeyRing};
use sotto_relay::capture::{self, Kind, Mark};
use sotto_server::Server;
use sotto_testkit::device::engine;
use sotto_testkit::media::loopback_factory;
use sotto_testkit::relay::TestRelay;
use sotto_testkit::server::server_for_relay;
use tokio::sync::mpsc;

/// Several real webrtc-rs peers per test: one test at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    relay: TestRelay,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("capture");
        let relay = TestRelay::start_with(|rc| rc.capture_dir = Some(capture)).await;
        let srv = server_for_relay(dir.path(), &relay).await;
        World { dir, srv, relay }
    }

    async fn member(&self, name: &'static str) -> Who {
        let (ttx, taps) = mpsc::unbounded_channel();
        let factory = loopback_factory(move |c| c.tap = Some(ttx.clone()));
        let engine = engine(
            &self.srv.url(),
            name,
            factory,
            default_machine,
            Some(RelayChoice::Url(self.relay.url())),
        )
        .await;
        let (ktx, keys) = mpsc::unbounded_channel();
        engine.command(Command::LogReceivedKeys(ktx)).await;
        Who {
            name,
            engine,
            taps,
            keys,
        }
    }

    /// The membership marks so far.
    fn marks(&self) -> Vec<Mark> {
        self.relay.flush_capture();
        let dir = self.dir.path().join("capture");
        capture::parse_marks(&std::fs::read_to_string(dir.join(capture::MARKS_FILE)).unwrap())
            .unwrap()
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
                // a whole RFC 9605 frame: clear codec bytes, header, at least a tag
                let h = codec(f.kind)
                    .split(suite, &f.frame)
                    .map(|p| p.header)
                    .unwrap_or_else(|e| {
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
    b.engine
        .wait_state(CallState::Incoming, T)
        .await
        .expect("rings");
    b.engine.command(Command::Answer).await;
    a.engine
        .wait_state(CallState::Connected, T)
        .await
        .expect("connected");
    b.engine
        .wait_state(CallState::Connected, T)
        .await
        .expect("connected");
}

async fn answer(who: &Who) -> Instant {
    who.engine
        .wait_state(CallState::Incoming, T)
        .await
        .expect("rings");
    who.engine.command(Command::Answer).await;
    who.engine
        .wait_state(CallState::Connected, T)
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

/// Frames a sender may send under its pre-join key after the relay admitted a joiner, before
/// it ratchets for it: the relay starts forwarding to the joiner at admission, and each sender
/// ratchets when the relay's `member_joined` (or, if later, the sealed `add`) reaches its engine.
/// That is one control message on loopback; allowed here: 500 ms of a sender's 65 frames/s (50
/// audio, 15 video). The joiner cannot open those frames, by design (it is given the ratcheted
/// key); they are the only frames captured while it was in that it does not open, and the only
/// ones its receiver counts as `frames_before_key`.
const PRE_RATCHET_FRAMES: usize = 65 / 2;

/// What a joiner's keys open of the capture.
#[derive(Debug)]
struct Joiner {
    /// Frames of others captured before its admission (none opens).
    before: usize,
    /// Frames of others captured from its admission to its own last captured frame.
    while_in: usize,
    /// Of those, how many its keys open.
    opened: usize,
    /// Of those, per sender, how many its keys do not open: all under the sender's key from
    /// before the joiner's admission, each before the first of its stream the joiner opens.
    unopened: BTreeMap<String, usize>,
}

/// The joiner's keys against everything captured before the relay admitted it: none opens.
/// And against what was captured while it was in: all but the first few frames per sender
/// (sent under the pre-join key before that sender ratcheted, at most [`PRE_RATCHET_FRAMES`]).
fn check_joiner(joiner: &str, keys: &[KeyMaterial], frames: &[CFrame], joined: usize) -> Joiner {
    let others: Vec<&CFrame> = frames.iter().filter(|f| f.sender != joiner).collect();
    let opened = opened_by(keys, &others);
    let left = frames
        .iter()
        .filter(|f| f.sender == joiner)
        .map(|f| f.index)
        .max()
        .unwrap_or(usize::MAX);
    let mut j = Joiner {
        before: 0,
        while_in: 0,
        opened: 0,
        unopened: BTreeMap::new(),
    };
    // per sender and stream: a video frame is placed at its last packet, so audio and video
    // of one sender interleave around its ratchet
    let mut opened_from: HashSet<(&str, Kind)> = HashSet::new();
    for (f, o) in others.iter().zip(&opened) {
        if f.index > left {
            continue;
        }
        if f.index < joined {
            j.before += 1;
            assert!(
                !o,
                "{joiner} opened a frame of {} (KID {:?}) captured before it joined",
                f.sender, f.kid
            );
            continue;
        }
        j.while_in += 1;
        if *o {
            j.opened += 1;
            opened_from.insert((&f.sender, f.kind));
        } else {
            assert!(
                !opened_from.contains(&(f.sender.as_str(), f.kind)),
                "{joiner} cannot open a {:?} frame of {} (KID {:?}) captured after one it opened",
                f.kind,
                f.sender,
                f.kid
            );
            *j.unopened.entry(f.sender.clone()).or_default() += 1;
        }
    }
    for (s, n) in &j.unopened {
        assert!(
            *n <= PRE_RATCHET_FRAMES,
            "{joiner} cannot open {n} frames of {s} captured while in (bound {PRE_RATCHET_FRAMES})"
        );
    }
    j
}

/// Bound on a receiver's `frames_before_key` (frames under a key older than every key it holds
/// for their sender), per sender it began to share keys with in a join, either way: a joiner
/// gets each sender's ratcheted key, so the frames that sender sent under the pre-join key after
/// the admission are closed to it ([`PRE_RATCHET_FRAMES`]); and a joiner that ratchets for a
/// second joiner before it gives a member its key gives the ratcheted step, which closes its
/// own frames that reached that member under the previous step (as few). Senders whose keys a
/// receiver already held cost nothing: it follows their ratchet and receives their rotations
/// before the first frame under them.
fn before_key_bound(new_senders: u64) -> u64 {
    new_senders * PRE_RATCHET_FRAMES as u64
}

/// A member's decryption failures and frames under a key older than any it holds, so far.
fn lost(s: &sotto_call::media::MediaStats) -> (u64, u64) {
    (
        s.video.frames_failed + s.audio.frames_failed,
        s.video.frames_before_key + s.audio.frames_before_key,
    )
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
    carol.engine.wait_state(CallState::Ended, T).await.unwrap();
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
                Some(Notice::Error(CallError::SenderIdClash { user, other })) if user == twin => {
                    return other
                }
                Some(_) => continue,
                None => panic!("engine gone"),
            }
        }
    })
    .await
    .expect("the clashing invite is refused");
    assert_eq!(refused, "bob");
    let (am, bm, cm) = (alice.media(), bob.media(), carol.media());
    alice.engine.command(Command::Hangup).await;
    bob.engine.wait_state(CallState::Ended, T).await.unwrap();
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
    let cj = check_joiner("carol", &ckeys, &frames, joined);
    assert!(
        cj.before > 100,
        "only {} frames before carol joined",
        cj.before
    );
    // the check can fail: the same keys open what was sent while carol was in, all of it but
    // each sender's first few frames under its pre-join key (bounded in `check_joiner`)
    assert!(
        cj.opened > 100 && cj.unopened.len() <= 2,
        "carol's keys open {} of {} frames captured while she was in: {cj:?}",
        cj.opened,
        cj.while_in
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
    // no frame lost to a key change beyond the bound: no failure anywhere, and frames under a
    // key older than any the receiver held only between the pairs the join made (carol with
    // alice and bob)
    for (who, m, new_senders) in [("alice", &am, 1), ("bob", &bm, 1), ("carol", &cm, 2)] {
        let (failed, before_key) = lost(m);
        let bound = before_key_bound(new_senders);
        assert_eq!(failed, 0, "{who}: {m:?}");
        assert!(
            before_key <= bound,
            "{who}: {before_key} frames under a key older than any it held (bound {bound}): \
             {m:?}"
        );
    }
    println!(
        "joiner: {} frames captured before the join, none opened; {} of {} opened while in \
         (not opened, per sender: {:?}); leaver: {new_gen:?} frames under new generations, none \
         opened, {old_window} old-generation frames opened after the leave; new KIDs \
         {runs:?}; carol's inter frames before the first key frame {at_carol:?}; carol held \
         {} frames for their key, {} arrived before her key",
        cj.before,
        cj.opened,
        cj.while_in,
        cj.unopened,
        cm.video.frames_waited_for_key + cm.audio.frames_waited_for_key,
        cm.video.frames_before_key + cm.audio.frames_before_key
    );
    w.relay.shutdown().await;
}

fn kid_of_any(t: &TapFrame) -> u64 {
    let clear = t.kind.codec().clear_len(&t.wire).unwrap();
    Header::decode(&t.wire[clear..]).unwrap().0.kid
}

/// Notices an engine gave until now.
fn notices_so_far(e: &mut Engine) -> Vec<Notice> {
    let mut v = Vec::new();
    while let Some(Some(n)) = e.notice().now_or_never() {
        v.push(n);
    }
    v
}

/// Notices an engine gives, each with its time since `t0`, until `last` picks one or `d` has
/// passed.
async fn notices_until(
    e: &mut Engine,
    t0: tokio::time::Instant,
    d: Duration,
    last: impl Fn(&Notice) -> bool,
) -> Vec<(Duration, Notice)> {
    let mut v = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(n)) = tokio::time::timeout_at(end, e.notice()).await {
        let stop = last(&n);
        v.push((t0.elapsed(), n));
        if stop {
            break;
        }
    }
    v
}

/// A steady window of `STEADY` with `ms` in the call and nobody joining or leaving: every one
/// decrypts every other, and what each decrypts last from a sender is under that sender's
/// current KID (the KID of its last captured video frame); each one's own generation is that
/// KID's; no decryption failure since `failed_since` (each member's count before the changes
/// under test). Keys received are appended to `keys`. Returns each member's stats.
async fn steady_window(
    w: &World,
    ms: &mut [&mut Who],
    failed_since: &BTreeMap<&str, u64>,
    keys: &mut BTreeMap<&'static str, Vec<KeyMaterial>>,
    what: &str,
) -> Vec<sotto_call::media::MediaStats> {
    for m in ms.iter_mut() {
        let (_, k) = m.drain();
        keys.entry(m.name).or_default().extend(k);
    }
    tokio::time::sleep(STEADY).await;
    let mut window = Vec::new();
    let mut stats = Vec::new();
    for m in ms.iter_mut() {
        let (t, k) = m.drain();
        keys.entry(m.name).or_default().extend(k);
        window.push(t);
        stats.push(m.media());
    }
    let (frames, marks) = w.capture();
    let names: Vec<&str> = ms.iter().map(|m| m.name).collect();
    let sid = |who: &str| frames.iter().find(|f| f.sender == who).unwrap().sid;
    let current = |who: &str| {
        frames
            .iter()
            .rev()
            .find(|f| f.sender == who && f.kind == Kind::Video)
            .unwrap()
            .kid
    };
    for (i, r) in names.iter().enumerate() {
        assert_eq!(
            lost(&stats[i]).0,
            failed_since[*r],
            "{what}: {r} failed to decrypt frames: {:?}",
            stats[i]
        );
        assert_eq!(
            stats[i].local_generation % 16,
            current(r).0,
            "{what}: {r}'s own generation"
        );
        let mut from: BTreeMap<u64, (usize, (u64, u64))> = BTreeMap::new();
        for t in window[i]
            .iter()
            .filter(|t| !t.sent && t.kind == MediaKind::Video)
        {
            let (s, g, st) = KeyId::split_kid(kid_of_any(t));
            let e = from.entry(s).or_default();
            e.0 += 1;
            e.1 = (g, st);
        }
        for s in names.iter().filter(|s| *s != r) {
            let (n, last) = from.get(&sid(s)).copied().unwrap_or_default();
            assert!(
                n > 20,
                "{what}: {r} decrypted only {n} video frames from {s} in {STEADY:?}: {from:?}; \
                 {:?}; marks {marks:?}",
                stats[i]
            );
            assert_eq!(
                last,
                current(s),
                "{what}: the last frame {r} decrypted from {s} is not under {s}'s current KID"
            );
        }
    }
    stats
}

/// The key activation delay in the join-racing-a-leave test (see there).
const RACE_ACTIVATION_DELAY: Duration = Duration::from_secs(2);

/// Length of a steady window.
const STEADY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_in_the_same_second_and_a_join_racing_a_leave_end_on_the_right_keys() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let mut alice = w.member("alice").await;
    let mut bob = w.member("bob").await;
    let mut carol = w.member("carol").await;
    let mut dave = w.member("dave").await;
    let mut erin = w.member("erin").await;
    // The forced race below needs each member's rotation to be still pending when erin's key
    // goes out: 70-280 ms after the rotation starts in our runs, against the default 500 ms
    // delay. A 2 s delay keeps that true on a loaded CI machine; the engine's handling of the
    // race does not depend on the delay's length.
    for m in [&alice, &bob, &carol, &dave, &erin] {
        m.engine
            .command(Command::SetKeyActivationDelay(RACE_ACTIVATION_DELAY))
            .await;
    }
    call(&alice, &bob).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut keys: BTreeMap<&str, Vec<KeyMaterial>> = BTreeMap::new();

    // 1. two members invite two others at once: neither inviter knows the other's invitee.
    // Failures count from here (carol, dave and erin have no media yet: 0).
    let mut failed_since: BTreeMap<&str, u64> = ["carol", "dave", "erin"]
        .into_iter()
        .map(|n| (n, 0))
        .collect();
    failed_since.insert("alice", lost(&alice.media()).0);
    failed_since.insert("bob", lost(&bob.media()).0);
    alice.engine.command(Command::Invite("carol".into())).await;
    bob.engine.command(Command::Invite("dave".into())).await;
    let (tc, td) = tokio::join!(answer(&carol), answer(&dave));
    let apart = if tc > td { tc - td } else { td - tc };
    assert!(apart < Duration::from_secs(1), "joins {apart:?} apart");
    // frames that raced their keys have decrypted or failed by now
    tokio::time::sleep(KEY_WAIT + Duration::from_secs(1)).await;
    // both joiners in, nobody left yet: every member on every other's current key
    let joins = steady_window(
        &w,
        &mut [&mut alice, &mut bob, &mut carol, &mut dave],
        &failed_since,
        &mut keys,
        "after two joins in the same second",
    )
    .await;

    // 2. a join racing a leave: erin is admitted while the rotation dave's leave started at
    // every member is pending. Forced: dave hangs up; as soon as every member has started its
    // rotation (its "dave left; rotating" notice: dave's sealed hangup or the relay's
    // `member_left`, whichever reached it first) and the relay has removed dave (its `left
    // dave` mark), erin answers. Guaranteed by the order of these steps: every member starts
    // its rotation before the relay admits erin, and erin never sees dave in the room (so she
    // gives him no key). That the rotation is still pending (within RACE_ACTIVATION_DELAY of
    // its start) when each member gives erin its key depends on erin's media setup and SDP round
    // trip with the relay (70-280 ms in our runs, the latter beside a benchmark using both
    // cores) and is asserted from each member's notices.
    alice.engine.command(Command::Invite("erin".into())).await;
    erin.engine
        .wait_state(CallState::Incoming, T)
        .await
        .expect("rings");
    for m in [&mut alice, &mut bob, &mut carol] {
        notices_so_far(&mut m.engine);
    }
    let t0 = tokio::time::Instant::now();
    dave.engine.command(Command::Hangup).await;
    let mut seen: Vec<Vec<(Duration, Notice)>> = Vec::new();
    for m in [&mut alice, &mut bob, &mut carol] {
        seen.push(
            notices_until(
                &mut m.engine,
                t0,
                T,
                |n| matches!(n, Notice::Member(MemberChange::Left { user, rotated: true }) if user == "dave"),
            )
            .await,
        );
    }
    let dave_gone = tokio::time::timeout(T, async {
        loop {
            if w.marks()
                .iter()
                .any(|m| m.participant == "dave" && !m.joined)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    dave_gone.await.expect("the relay removes dave");
    let answered = t0.elapsed();
    erin.engine.command(Command::Answer).await;
    let watch = RACE_ACTIVATION_DELAY + Duration::from_secs(3);
    let (na, nb, nc) = tokio::join!(
        notices_until(&mut alice.engine, t0, watch, |_| false),
        notices_until(&mut bob.engine, t0, watch, |_| false),
        notices_until(&mut carol.engine, t0, watch, |_| false)
    );
    for (s, n) in seen.iter_mut().zip([na, nb, nc]) {
        s.extend(n);
    }
    erin.engine
        .wait_state(CallState::Connected, T)
        .await
        .expect("connected");
    dave.engine.wait_state(CallState::Ended, T).await.unwrap();
    for (who, ns) in ["alice", "bob", "carol"].iter().zip(&seen) {
        let find = |is: &dyn Fn(&Notice) -> bool| ns.iter().position(|(_, n)| is(n));
        let left = find(
            &|n| matches!(n, Notice::Member(MemberChange::Left { user, rotated: true }) if user == "dave"),
        );
        let gave = find(
            &|n| matches!(n, Notice::Member(MemberChange::GotOurKey { user, ratcheted: true }) if user == "erin"),
        );
        let rotated = find(&|n| matches!(n, Notice::KeyRotated(_)));
        assert!(
            matches!((left, gave, rotated), (Some(l), Some(g), Some(r)) if l < g && g < r),
            "{who} did not give erin its key while its rotation for dave's leave was pending \
             (erin answered at {answered:?}): {ns:?}"
        );
    }
    tokio::time::sleep(KEY_WAIT + Duration::from_secs(1)).await;
    let race = steady_window(
        &w,
        &mut [&mut alice, &mut bob, &mut carol, &mut erin],
        &failed_since,
        &mut keys,
        "after a join racing a leave",
    )
    .await;
    for m in [&alice, &bob, &carol, &erin] {
        m.engine.command(Command::Hangup).await;
    }
    let (frames, marks) = w.capture();
    let sid = |who: &str| frames.iter().find(|f| f.sender == who).unwrap().sid;
    let (dave_left, erin_joined) = (mark(&marks, "dave", false), mark(&marks, "erin", true));
    // the marks file is written in the order the relay saw the changes; the capture index alone
    // cannot order them (no frame may be captured between a leave and the next admission)
    let line = |who: &str, joined: bool| {
        marks
            .iter()
            .position(|m| m.participant == who && m.joined == joined)
    };
    assert!(
        dave_left <= erin_joined && line("dave", false) < line("erin", true),
        "the relay admitted erin before dave left: {marks:?}"
    );

    // the joiners: nothing captured before their admission opens; they open all the rest but
    // each sender's few frames under its pre-join key
    let mut report = Vec::new();
    for j in ["carol", "dave", "erin"] {
        let all = keys.get(j).cloned().unwrap_or_default();
        let cj = check_joiner(j, &all, &frames, mark(&marks, j, true));
        assert!(cj.before > 100 && cj.opened > 100, "{j}: {cj:?}");
        report.push((j, cj));
    }

    // the leaver: nothing under a generation started after it left opens with its keys. It
    // held the keys of exactly the three members in the call with it (erin came after it left)
    // and each of them rotated away from them.
    let dave_keys = keys.get("dave").cloned().unwrap_or_default();
    let (new_gen, old_window) = check_leaver("dave", &dave_keys, &frames, dave_left);
    let gave: BTreeSet<u64> = dave_keys.iter().map(|k| k.id.sender).collect();
    let expected = ["alice", "bob", "carol"];
    assert_eq!(
        gave,
        expected.iter().map(|n| sid(n)).collect(),
        "dave held keys of other senders than {expected:?}"
    );
    for n in expected {
        assert!(
            new_gen.get(n).copied().unwrap_or(0) > 30,
            "{n} gave dave its key but did not rotate after he left: {new_gen:?}"
        );
    }

    // frames lost to the key changes: no failure anywhere (steady windows), and frames under a
    // key older than any the receiver held only between the pairs the joins made (counts are
    // since each one's call began: the race window includes the joins)
    for (who, s, new_senders) in [
        ("alice", &joins[0], 2), // carol, dave
        ("bob", &joins[1], 2),
        ("carol", &joins[2], 3), // alice, bob, dave
        ("dave", &joins[3], 3),
        ("alice", &race[0], 3), // and erin
        ("bob", &race[1], 3),
        ("carol", &race[2], 4),
        ("erin", &race[3], 3), // alice, bob, carol
    ] {
        let (before_key, bound) = (lost(s).1, before_key_bound(new_senders));
        assert!(
            before_key <= bound,
            "{who}: {before_key} frames under a key older than any it held (bound {bound}): {s:?}"
        );
    }
    println!(
        "races: joins {apart:?} apart; joiners (name, frames before join checked, opened \
         after, of, not opened per sender) {:?}; dave held keys of {} senders, frames under new \
         generations after he left {new_gen:?} (none opened), {old_window} old-generation \
         frames opened in the activation delay; marks {marks:?}; frames before key after the \
         joins {:?}, after the race {:?}; generations {:?}; notices {seen:?}",
        report
            .iter()
            .map(|(j, c)| (j, c.before, c.opened, c.while_in, &c.unopened))
            .collect::<Vec<_>>(),
        gave.len(),
        joins.iter().map(|s| lost(s).1).collect::<Vec<_>>(),
        race.iter().map(|s| lost(s).1).collect::<Vec<_>>(),
        race.iter().map(|s| s.local_generation).collect::<Vec<_>>()
    );
    w.relay.shutdown().await;
}

/// Five members, every one admitted through the engines (keys only through the pairwise
/// ratchet sessions, invites from three different members): every member decrypts every other
/// member's frames, each byte-identical to what its sender encoded, with no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_invited_by_three_decrypt_each_other_byte_identical() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let mut alice = w.member("alice").await;
    let mut bob = w.member("bob").await;
    let mut carol = w.member("carol").await;
    let mut dave = w.member("dave").await;
    let mut erin = w.member("erin").await;
    call(&alice, &bob).await;
    alice.engine.command(Command::Invite("carol".into())).await;
    answer(&carol).await;
    bob.engine.command(Command::Invite("dave".into())).await;
    answer(&dave).await;
    carol.engine.command(Command::Invite("erin".into())).await;
    answer(&erin).await;
    // frames that raced their keys have decrypted or failed by now
    tokio::time::sleep(KEY_WAIT + Duration::from_secs(1)).await;

    // byte-identical: every frame any member decrypted is exactly the frame whose ciphertext
    // it was when its sender encrypted it
    let mut all: Vec<&mut Who> = vec![&mut alice, &mut bob, &mut carol, &mut dave, &mut erin];
    let taps: Vec<Vec<TapFrame>> = all.iter_mut().map(|m| m.drain().0).collect();
    let mut sent: HashMap<&[u8], &[u8]> = HashMap::new();
    for t in taps.iter().flatten().filter(|t| t.sent) {
        sent.insert(&t.wire, &t.frame);
    }
    for (m, t) in all.iter().zip(&taps) {
        let got: Vec<&TapFrame> = t.iter().filter(|t| !t.sent).collect();
        assert!(
            got.len() > 100,
            "{} decrypted only {} frames",
            m.name,
            got.len()
        );
        for g in got {
            let Some(orig) = sent.get(g.wire.as_slice()) else {
                panic!("{} decrypted a frame nobody sent", m.name);
            };
            assert_eq!(*orig, g.frame.as_slice(), "{}: a frame differs", m.name);
        }
    }

    // then a steady window: every member decrypts every other one, on its current key, and
    // nobody failed a single frame since the call began
    let none: BTreeMap<&str, u64> = ["alice", "bob", "carol", "dave", "erin"]
        .into_iter()
        .map(|n| (n, 0))
        .collect();
    let mut keys = BTreeMap::new();
    let stats = steady_window(&w, &mut all, &none, &mut keys, "five members").await;
    assert_eq!(stats.len(), 5);
    for m in all {
        m.engine.command(Command::Hangup).await;
    }
    w.srv.shutdown().await;
    w.relay.shutdown().await;
}
