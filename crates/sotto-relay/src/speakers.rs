//! Who is speaking in a room, from the RFC 6464 audio levels its members' audio carries
//! (readable without any media key, `protocol-spec/relay.md` §3): the room's **audio places**
//! (the loudest members, kept with hysteresis) and **video places** (the most recent speakers).
//! Each receiver's slots then carry the first places that are not its own
//! ([`for_receiver`]), so a room keeps `AUDIO_SLOTS + 1` audio and `VIDEO_SLOTS + 1` video places.
//!
//! Sans-IO: levels and time go in ([`Speakers::handle`], [`Speakers::poll`]), the places come
//! out. The rules, every one against flapping:
//!
//! - A member's loudness is its level (`127 - level`, dB above silence) smoothed over
//!   [`LEVEL_SMOOTHING`]; no audio for [`LEVEL_TIMEOUT`] is silence.
//! - It is *speaking* from a smoothed level of [`SPEECH_ON_LEVEL`] (−dBov) or louder until it
//!   falls below [`SPEECH_OFF_LEVEL`].
//! - Places are filled in join order while free (small rooms: everyone has one).
//! - An audio place changes hands only to someone [`SPEAKER_HYSTERESIS_DB`] louder than its
//!   holder, and a video place only from someone not speaking to someone speaking; a place is
//!   held at least [`MIN_SPEAKER_HOLD`] either way. A place is replaced in place.
//! - The places are kept in order (audio by loudness, with the same hysteresis; video speaking
//!   before not speaking), neighbours swapping once the one ahead has held its position
//!   [`MIN_SPEAKER_HOLD`]: the order is what a receiver *without* a place of its own gets (the
//!   first `AUDIO_SLOTS` / `VIDEO_SLOTS`), so a swap across that boundary moves its slots.

use std::time::{Duration, Instant};

pub use crate::consts::{
    LEVEL_SMOOTHING, LEVEL_TIMEOUT, MIN_SPEAKER_HOLD, SPEAKER_HYSTERESIS_DB, SPEECH_OFF_LEVEL,
    SPEECH_ON_LEVEL,
};

/// RFC 6464's silence: −127 dBov.
const SILENCE: u8 = 127;

struct Entry {
    name: String,
    /// Smoothed dB above silence (`127 - level`).
    loud: f32,
    last_packet: Option<Instant>,
    speaking: bool,
    last_spoke: Option<Instant>,
}

/// The holders of one kind of place, each with the time it took it.
struct Places {
    cap: usize,
    held: Vec<(String, Instant)>,
}

impl Places {
    fn holds(&self, name: &str) -> bool {
        self.held.iter().any(|(n, _)| n == name)
    }

    fn names(&self) -> Vec<String> {
        self.held.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The places of a room, in place order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Whose audio is forwarded: the loudest members.
    pub audio: Vec<String>,
    /// Whose video is forwarded: the most recent speakers.
    pub video: Vec<String>,
}

/// A room's speaker ranking.
pub struct Speakers {
    entries: Vec<Entry>,
    audio: Places,
    video: Places,
    changed: bool,
}

impl Speakers {
    /// A ranking with `audio` and `video` places (a receiver gets one place fewer: not its own).
    pub fn new(audio: usize, video: usize) -> Self {
        Speakers {
            entries: Vec::new(),
            audio: Places {
                cap: audio,
                held: Vec::new(),
            },
            video: Places {
                cap: video,
                held: Vec::new(),
            },
            changed: false,
        }
    }

    /// `name` joined (silent so far); it gets a free place at the next [`Speakers::poll`].
    pub fn join(&mut self, name: &str) {
        if self.entries.iter().all(|e| e.name != name) {
            self.entries.push(Entry {
                name: name.to_string(),
                loud: 0.0,
                last_packet: None,
                speaking: false,
                last_spoke: None,
            });
        }
    }

    /// `name` left: its places are free at once.
    pub fn leave(&mut self, name: &str) {
        self.entries.retain(|e| e.name != name);
        for p in [&mut self.audio, &mut self.video] {
            let before = p.held.len();
            p.held.retain(|(n, _)| n != name);
            self.changed |= p.held.len() != before;
        }
    }

    /// An audio packet of `name` with RFC 6464 `level` (−dBov, 0 loudest, 127 silence; the
    /// voice-activity bit already masked off or not: only the low 7 bits count) at `now`.
    pub fn handle(&mut self, name: &str, level: u8, now: Instant) {
        let Some(e) = self.entries.iter_mut().find(|e| e.name == name) else {
            return;
        };
        let x = f32::from(SILENCE - (level & 0x7f).min(SILENCE));
        let dt = e
            .last_packet
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or(Duration::from_millis(20))
            .min(LEVEL_TIMEOUT);
        let alpha = 1.0 - (-dt.as_secs_f32() / LEVEL_SMOOTHING.as_secs_f32()).exp();
        e.loud += (x - e.loud) * alpha;
        e.last_packet = Some(now);
        let on = f32::from(SILENCE - SPEECH_ON_LEVEL);
        let off = f32::from(SILENCE - SPEECH_OFF_LEVEL);
        if e.loud >= on {
            e.speaking = true;
        } else if e.loud < off {
            e.speaking = false;
        }
        if e.speaking {
            e.last_spoke = Some(now);
        }
    }

    /// Applies timeouts and the place rules at `now`; the ranking if it changed since the last
    /// poll.
    pub fn poll(&mut self, now: Instant) -> Option<Ranking> {
        for e in &mut self.entries {
            if e.last_packet
                .is_some_and(|t| now.saturating_duration_since(t) >= LEVEL_TIMEOUT)
            {
                e.loud = 0.0;
                e.speaking = false;
                e.last_packet = None;
            }
        }
        self.fill(now);
        self.promote_loudest(now);
        self.order_audio(now);
        self.promote_speakers(now);
        self.order_video(now);
        std::mem::take(&mut self.changed).then(|| self.ranking())
    }

    /// The places now.
    pub fn ranking(&self) -> Ranking {
        Ranking {
            audio: self.audio.names(),
            video: self.video.names(),
        }
    }

    /// `name`'s smoothed level (−dBov), if it is in the room.
    pub fn level(&self, name: &str) -> Option<f32> {
        self.entry(name).map(|e| f32::from(SILENCE) - e.loud)
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn fill(&mut self, now: Instant) {
        for p in [&mut self.audio, &mut self.video] {
            for e in &self.entries {
                if p.held.len() >= p.cap {
                    break;
                }
                if !p.holds(&e.name) {
                    p.held.push((e.name.clone(), now));
                    self.changed = true;
                }
            }
        }
    }

    fn held_long_enough(since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= MIN_SPEAKER_HOLD
    }

    /// Audio: the loudest member without a place takes the place of the quietest holder that
    /// has held it long enough, if it is [`SPEAKER_HYSTERESIS_DB`] louder.
    fn promote_loudest(&mut self, now: Instant) {
        loop {
            let Some(challenger) = self
                .entries
                .iter()
                .filter(|e| !self.audio.holds(&e.name) && e.loud > 0.0)
                .max_by(|a, b| a.loud.total_cmp(&b.loud))
            else {
                return;
            };
            let victim = self
                .audio
                .held
                .iter()
                .enumerate()
                .filter(|(_, (_, since))| Self::held_long_enough(*since, now))
                .filter_map(|(i, (n, _))| self.entry(n).map(|e| (i, e.loud)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            match victim {
                Some((i, loud)) if challenger.loud > loud + SPEAKER_HYSTERESIS_DB => {
                    self.audio.held[i] = (challenger.name.clone(), now);
                    self.changed = true;
                }
                _ => return,
            }
        }
    }

    /// Video: a member speaking now without a place takes the place of the holder that spoke
    /// least recently, if that holder is not speaking and has held it long enough.
    fn promote_speakers(&mut self, now: Instant) {
        loop {
            let Some(challenger) = self
                .entries
                .iter()
                .filter(|e| e.speaking && !self.video.holds(&e.name))
                .max_by_key(|e| e.last_spoke)
            else {
                return;
            };
            let victim = self
                .video
                .held
                .iter()
                .enumerate()
                .filter(|(_, (_, since))| Self::held_long_enough(*since, now))
                .filter_map(|(i, (n, _))| self.entry(n).map(|e| (i, e)))
                .filter(|(_, e)| !e.speaking)
                .min_by_key(|(_, e)| e.last_spoke)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    self.video.held[i] = (challenger.name.clone(), now);
                    self.changed = true;
                }
                None => return,
            }
        }
    }
}

impl Speakers {
    /// Audio places in order of loudness, with the same hysteresis: a place moves ahead of the
    /// one before it when it is [`SPEAKER_HYSTERESIS_DB`] louder and that one has held its
    /// position [`MIN_SPEAKER_HOLD`]. (The order decides what a receiver without a place of its
    /// own hears: the first `AUDIO_SLOTS`, so the loudest.)
    fn order_audio(&mut self, now: Instant) {
        let loud = |s: &Self, n: &str| s.entry(n).map_or(0.0, |e| e.loud);
        self.bubble(now, |s, ahead, behind| {
            loud(s, behind) > loud(s, ahead) + SPEAKER_HYSTERESIS_DB
        });
    }

    /// Video places in order of speaking: a place whose member speaks moves ahead of one whose
    /// member does not, once that one has held its position [`MIN_SPEAKER_HOLD`]. (A receiver
    /// without a place sees the first `VIDEO_SLOTS`: the most recent speakers.)
    fn order_video(&mut self, now: Instant) {
        let speaking = |s: &Self, n: &str| s.entry(n).is_some_and(|e| e.speaking);
        self.bubble_video(now, |s, ahead, behind| {
            speaking(s, behind) && !speaking(s, ahead)
        });
    }

    fn bubble(&mut self, now: Instant, passes: impl Fn(&Self, &str, &str) -> bool) {
        let mut held = std::mem::take(&mut self.audio.held);
        self.changed |= Self::bubble_places(self, &mut held, now, &passes);
        self.audio.held = held;
    }

    fn bubble_video(&mut self, now: Instant, passes: impl Fn(&Self, &str, &str) -> bool) {
        let mut held = std::mem::take(&mut self.video.held);
        self.changed |= Self::bubble_places(self, &mut held, now, &passes);
        self.video.held = held;
    }

    /// Swaps neighbours where the one behind `passes` the one ahead (held long enough), which
    /// then holds its new position from `now`; true if anything moved.
    fn bubble_places(
        &self,
        held: &mut [(String, Instant)],
        now: Instant,
        passes: &impl Fn(&Self, &str, &str) -> bool,
    ) -> bool {
        let mut moved = false;
        for _ in 0..held.len() {
            let mut swapped = false;
            for i in 1..held.len() {
                let (ahead, behind) = (&held[i - 1], &held[i]);
                if Self::held_long_enough(ahead.1, now) && passes(self, &ahead.0, &behind.0) {
                    held.swap(i - 1, i);
                    held[i].1 = now;
                    swapped = true;
                }
            }
            moved |= swapped;
            if !swapped {
                break;
            }
        }
        moved
    }
}

/// What receiver `me`'s `n` slots carry of `places`: the first `n` that are not `me`.
pub fn for_receiver(places: &[String], me: &str, n: usize) -> Vec<String> {
    places
        .iter()
        .filter(|p| p.as_str() != me)
        .take(n)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    fn room(names: &[&str]) -> Speakers {
        let mut s = Speakers::new(2, 2);
        for n in names {
            s.join(n);
        }
        s
    }

    /// `levels` per member for `d`, one packet per 20 ms each, polling after every round;
    /// returns the rankings polled (changes only) and the time after.
    fn run(s: &mut Speakers, t: &mut Instant, levels: &[(&str, u8)], d: Duration) -> Vec<Ranking> {
        let mut out = Vec::new();
        let end = *t + d;
        while *t < end {
            *t += PACKET;
            for (n, l) in levels {
                s.handle(n, *l, *t);
            }
            out.extend(s.poll(*t));
        }
        out
    }

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn places_fill_in_join_order_and_a_leaver_frees_its_place_at_once() {
        let mut s = room(&["a", "b", "c"]);
        let t = Instant::now();
        let r = s.poll(t).unwrap();
        assert_eq!((r.audio, r.video), (v(&["a", "b"]), v(&["a", "b"])));
        assert_eq!(s.poll(t), None, "no change, nothing to report");
        s.leave("a");
        let r = s.poll(t).unwrap();
        assert_eq!(r.audio, v(&["b", "c"]), "c fills the freed place");
    }

    #[test]
    fn a_louder_speaker_takes_the_quietest_place_after_the_minimum_hold_and_keeps_it() {
        let mut s = room(&["a", "b", "c"]);
        let mut t = Instant::now();
        s.poll(t);
        // c talks (−20 dBov), a and b are silent: no change before MIN_SPEAKER_HOLD
        let talk = [("a", 127), ("b", 127), ("c", 20)];
        let early = run(&mut s, &mut t, &talk, MIN_SPEAKER_HOLD - PACKET * 2);
        assert!(early.is_empty(), "{early:?}");
        let later = run(&mut s, &mut t, &talk, PACKET * 4);
        assert_eq!(later.len(), 1, "one change: {later:?}");
        // a held the first place as long as b and is as quiet: the first quietest goes
        assert_eq!(later[0].audio, v(&["c", "b"]));
        assert_eq!(later[0].video, v(&["c", "b"]));
        // c goes quiet; a and b stay silent: nobody is louder by the hysteresis, no change
        let quiet = [("a", 127), ("b", 127), ("c", 127)];
        assert!(run(&mut s, &mut t, &quiet, Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn close_levels_do_not_flap() {
        let mut s = room(&["a", "b", "c"]);
        let mut t = Instant::now();
        s.poll(t);
        // three talkers within the hysteresis of each other, alternating ±2 dB each packet
        let mut changes = 0;
        for i in 0..500 {
            t += PACKET;
            let wobble = if i % 2 == 0 { 2 } else { 0 };
            s.handle("a", 30 + wobble, t);
            s.handle("b", 32 - wobble, t);
            s.handle("c", 29 + wobble, t);
            changes += usize::from(s.poll(t).is_some());
        }
        assert_eq!(changes, 0);
    }

    #[test]
    fn a_limit_of_hysteresis_and_one_past_it() {
        // holder b smoothed at −40 dBov; challenger c at −40 + HYST (equal: no) and one louder
        for (c_level, moves) in [(40 - SPEAKER_HYSTERESIS_DB as u8, false), (33, true)] {
            let mut s = room(&["a", "b", "c"]);
            let mut t = Instant::now();
            s.poll(t);
            let r = run(
                &mut s,
                &mut t,
                &[("a", 10), ("b", 40), ("c", c_level)],
                Duration::from_secs(3),
            );
            assert_eq!(!r.is_empty(), moves, "c at {c_level}: {r:?}");
        }
    }

    #[test]
    fn video_follows_the_most_recent_speakers() {
        let mut s = room(&["a", "b", "c", "d"]);
        let mut t = Instant::now();
        s.poll(t);
        let r = run(&mut s, &mut t, &[("c", 20)], Duration::from_secs(2));
        assert_eq!(r.last().unwrap().video, v(&["c", "b"]));
        // d speaks next: it replaces b (never spoke), not c (spoke more recently)
        let r = run(
            &mut s,
            &mut t,
            &[("c", 127), ("d", 20)],
            Duration::from_secs(2),
        );
        // d replaced b in place, then moved ahead of c, which no longer speaks
        assert_eq!(r.last().unwrap().video, v(&["d", "c"]));
        // a speaks: c spoke less recently than d, so c goes
        let r = run(
            &mut s,
            &mut t,
            &[("d", 127), ("a", 20)],
            Duration::from_secs(2),
        );
        assert_eq!(r.last().unwrap().video, v(&["a", "d"]));
    }

    #[test]
    fn a_sender_that_stops_is_silent_after_the_level_timeout() {
        let mut s = room(&["a"]);
        let mut t = Instant::now();
        run(&mut s, &mut t, &[("a", 10)], Duration::from_secs(1));
        assert!(s.level("a").unwrap() < 15.0);
        t += LEVEL_TIMEOUT;
        s.poll(t);
        assert_eq!(s.level("a"), Some(127.0));
    }

    #[test]
    fn the_loudest_place_comes_first_so_receivers_without_a_place_hear_it() {
        let mut s = Speakers::new(4, 5);
        for n in ["a", "b", "c", "d", "e", "f"] {
            s.join(n);
        }
        let mut t = Instant::now();
        s.poll(t);
        // f (no place) talks, then d (4th place): both come first, f by taking a place
        run(&mut s, &mut t, &[("f", 20)], Duration::from_secs(2));
        let r = run(
            &mut s,
            &mut t,
            &[("f", 127), ("d", 10)],
            Duration::from_secs(3),
        );
        let last = r.last().unwrap();
        assert_eq!(last.audio[0], "d");
        assert_eq!(last.video[0], "d");
        // a receiver without a place hears d among its three
        assert!(for_receiver(&last.audio, "e", 3).contains(&"d".to_string()));
        assert!(for_receiver(&last.video, "e", 4).contains(&"d".to_string()));
    }

    #[test]
    fn a_receiver_never_gets_its_own_place() {
        let p = v(&["a", "b", "c", "d"]);
        assert_eq!(for_receiver(&p, "b", 3), v(&["a", "c", "d"]));
        assert_eq!(for_receiver(&p, "e", 3), v(&["a", "b", "c"]));
        assert_eq!(for_receiver(&p[..2], "a", 3), v(&["b"]));
    }

    #[test]
    fn unknown_members_and_out_of_range_levels_change_nothing() {
        let mut s = room(&["a"]);
        let t = Instant::now();
        s.poll(t);
        s.handle("zed", 0, t);
        assert_eq!(s.level("zed"), None);
        // the voice-activity bit is not part of the level
        s.handle("a", 0x80 | 127, t);
        assert_eq!(s.level("a"), Some(127.0));
    }
}
