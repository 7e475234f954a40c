//! Receive slots: the fixed audio and video tracks the relay sends on to each participant
//! (`AUDIO_SLOTS` and `VIDEO_SLOTS`), whatever the room's size, so joins, leaves and speaker
//! changes need no renegotiation. Which member a slot carries changes ([`SlotFeed`]); the
//! receiver sees one continuous stream per slot: sequence numbers and RTP timestamps continue
//! across holders, and a video slot changes hands only between whole frames, at the new
//! holder's key frame (asked for when the slot was given to it) or, failing one within
//! [`SWITCH_KEYFRAME_WAIT`], at its next frame start.

use std::sync::Arc;
use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::capture::Kind;
use crate::consts::{HOLDER_STALL, MAX_SEQ_STEP, MAX_TS_STEP_SECS, SWITCH_KEYFRAME_WAIT};

/// One slot on a participant's connection.
pub(crate) struct Slot {
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    pub(crate) ssrc: u32,
    pub(crate) feed: SlotFeed,
}

impl Slot {
    /// Slot `i` of `kind`: a fresh track with a random SSRC, held by no one.
    pub(crate) fn new(kind: Kind, i: usize) -> Self {
        let (track, ssrc) = slot_track(kind, i);
        Slot {
            track,
            ssrc,
            feed: SlotFeed::new(kind),
        }
    }
}

/// What the relay reads of a forwarded packet to place it on a slot (all of it outside the
/// SFrame ciphertext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketInfo {
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    /// The RTP marker: the last packet of a video frame.
    pub(crate) marker: bool,
    /// The first packet of a frame (always, for audio).
    pub(crate) frame_start: bool,
    /// The first packet of a VP8 key frame.
    pub(crate) key_frame: bool,
}

impl PacketInfo {
    /// `kind`'s packet with this header and payload.
    pub(crate) fn of(kind: Kind, header: &rtc::rtp::header::Header, payload: &[u8]) -> Self {
        let (frame_start, key_frame) = match kind {
            Kind::Audio => (true, false),
            Kind::Video => vp8_frame_start(payload),
        };
        PacketInfo {
            seq: header.sequence_number,
            timestamp: header.timestamp,
            marker: header.marker,
            frame_start,
            key_frame,
        }
    }
}

/// Whether a VP8 RTP payload (RFC 7741) starts a frame (S bit, partition 0), and whether that
/// frame is a key frame (RFC 6386 §9.1: bit 0 of the frame tag, which sotto leaves in clear
/// ahead of the SFrame header, as every sender that lets the relay packetize VP8 must).
pub(crate) fn vp8_frame_start(payload: &[u8]) -> (bool, bool) {
    let Some(&b0) = payload.first() else {
        return (false, false);
    };
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return (false, false);
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return (false, false);
        };
        at = 2;
        if x & 0x80 != 0 {
            // picture id: one byte, two with M
            at += if payload.get(at).is_some_and(|p| p & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/KEYIDX
        }
    }
    match payload.get(at) {
        Some(tag) => (true, tag & 1 == 0),
        None => (false, false),
    }
}

/// Which member a slot carries, a change of holder under way, and the numbering the receiver
/// sees. Sans-IO: the forwarding task asks [`SlotFeed::admit`] for each packet.
pub(crate) struct SlotFeed {
    kind: Kind,
    /// Whose packets are forwarded now.
    holder: Option<String>,
    /// The holder the slot was given to (`None`: nobody), and since when, while the current
    /// holder still finishes its frame or the new one's frame has not started.
    want: Option<(Option<String>, Instant)>,
    /// The last packet forwarded did not end its frame.
    mid_frame: bool,
    last_at: Option<Instant>,
    seq: SlotSeq,
    ts: SlotTs,
}

impl SlotFeed {
    pub(crate) fn new(kind: Kind) -> Self {
        SlotFeed {
            kind,
            holder: None,
            want: None,
            mid_frame: false,
            last_at: None,
            seq: SlotSeq::default(),
            ts: SlotTs::default(),
        }
    }

    /// The member the slot is given to (the holder, or the one taking over).
    pub(crate) fn assigned(&self) -> Option<&str> {
        match &self.want {
            Some((w, _)) => w.as_deref(),
            None => self.holder.as_deref(),
        }
    }

    /// Whether `from`'s packets may go on this slot (it holds it or is taking it over).
    pub(crate) fn carries(&self, from: &str) -> bool {
        self.holder.as_deref() == Some(from)
            || self
                .want
                .as_ref()
                .is_some_and(|(w, _)| w.as_deref() == Some(from))
    }

    /// Forgets `who` (it left the room): not the holder, not taking over, and a rejoin under
    /// the same name is numbered as a new holder.
    pub(crate) fn forget(&mut self, who: &str) {
        if self.holder.as_deref() == Some(who) {
            self.holder = None;
            self.mid_frame = false;
        }
        if self
            .want
            .as_ref()
            .is_some_and(|(w, _)| w.as_deref() == Some(who))
        {
            self.want = None;
        }
        self.seq.forget(who);
        if self.ts.source.as_deref() == Some(who) {
            self.ts.source = None;
        }
    }

    /// Gives the slot to `who` (`None`: nobody) at `now`. Audio changes hands at once; video
    /// after the holder's current frame, at the new holder's key frame. True if `who` is a new
    /// video holder, to be asked for a key frame.
    pub(crate) fn assign(&mut self, who: Option<&str>, now: Instant) -> bool {
        if self.assigned() == who {
            return false;
        }
        if self.kind == Kind::Audio {
            self.holder = who.map(str::to_string);
            self.want = None;
            return false;
        }
        if self.holder.as_deref() == who {
            // back to the holder before anyone took over
            self.want = None;
            return false;
        }
        self.want = Some((who.map(str::to_string), now));
        who.is_some()
    }

    /// Whether `from`'s packet `p`, arriving at `now`, goes on this slot, and with which
    /// sequence number and timestamp.
    pub(crate) fn admit(&mut self, from: &str, p: &PacketInfo, now: Instant) -> Option<(u16, u32)> {
        let is_holder = self.holder.as_deref() == Some(from);
        if let Some((target, since)) = self.want.clone() {
            if is_holder {
                if !self.mid_frame {
                    // between frames: the holder is cut here
                    self.holder = None;
                    return None;
                }
            } else if target.as_deref() == Some(from) {
                // the holder is between frames, silent, or has had HOLDER_STALL to end its frame
                // (a holder that never marks a frame's end cannot keep the slot)
                let free = self.holder.is_none()
                    || !self.mid_frame
                    || now.saturating_duration_since(since) >= HOLDER_STALL
                    || self
                        .last_at
                        .is_none_or(|t| now.saturating_duration_since(t) >= HOLDER_STALL);
                let starts = p.frame_start
                    && (p.key_frame
                        || now.saturating_duration_since(since) >= SWITCH_KEYFRAME_WAIT);
                if !(free && starts) {
                    return None;
                }
                if self.mid_frame {
                    // the old holder's last frame is cut short: leave a gap, so the receiver
                    // drops it as lost rather than hand its decryptor half a frame
                    self.seq.skip();
                    self.mid_frame = false;
                }
                self.holder = target;
                self.want = None;
            } else {
                return None;
            }
        } else if !is_holder {
            return None;
        }
        let out = (
            self.seq.map(from, p.seq)?,
            self.ts.map(self.kind, from, p, now),
        );
        if self.kind == Kind::Video {
            self.mid_frame = !p.marker;
            if p.marker && self.want.is_some() && self.holder.as_deref() == Some(from) {
                // the holder finished its frame while being replaced
                self.holder = None;
            }
        }
        self.last_at = Some(now);
        Some(out)
    }
}

/// Sequence-number continuity on one slot m-line. A slot is reused by another holder: its
/// packets get sequence numbers that continue from the previous holder's, or the receiver's SRTP
/// replay window (same SSRC) and jitter buffer would drop them as old.
///
/// The holder does not steer the slot's numbers: a packet more than [`MAX_SEQ_STEP`] ahead of
/// the holder's highest is renumbered to follow the slot's last one (as if a new holder), so the
/// receiver's SRTP rollover guess never sees a jump (a holder alternating numbers half the space
/// apart could otherwise make a receiver that lost one packet guess wrong and fail every later
/// packet on the slot, whoever holds it); a packet from before the holder's first on the slot
/// (a late or resent one from before it took over), or more than [`MAX_SEQ_STEP`] behind its
/// highest, is dropped: it would land on numbers the slot gave someone else.
#[derive(Default)]
pub(crate) struct SlotSeq {
    /// Whose packets `offset` was computed for.
    source: Option<String>,
    offset: u16,
    /// The source's first number on the slot (since its last renumbering) and its highest.
    first_in: u16,
    last_in: u16,
    /// Highest sequence number sent on the m-line (RFC 3550 wrap-around order).
    last_out: Option<u16>,
}

impl SlotSeq {
    /// The outgoing sequence number for `from`'s packet numbered `seq`, or `None`: dropped.
    pub(crate) fn map(&mut self, from: &str, seq: u16) -> Option<u16> {
        let ahead = seq.wrapping_sub(self.last_in) as i16;
        let renumber = self.source.as_deref() != Some(from) || ahead > MAX_SEQ_STEP;
        if renumber {
            self.offset = match self.last_out {
                Some(l) => l.wrapping_add(1).wrapping_sub(seq),
                None => 0,
            };
            self.source = Some(from.to_string());
            self.first_in = seq;
            self.last_in = seq;
        } else if (seq.wrapping_sub(self.first_in) as i16) < 0 || ahead < -MAX_SEQ_STEP {
            return None;
        } else if ahead > 0 {
            self.last_in = seq;
        }
        let out = seq.wrapping_add(self.offset);
        if self
            .last_out
            .is_none_or(|l| (out.wrapping_sub(l) as i16) > 0)
        {
            self.last_out = Some(out);
        }
        Some(out)
    }

    /// Forgets `who`'s numbering (it left): a rejoin under the same name is a new source.
    fn forget(&mut self, who: &str) {
        if self.source.as_deref() == Some(who) {
            self.source = None;
        }
    }

    /// The next holder's numbers start one later (a gap the receiver sees as a lost packet).
    fn skip(&mut self) {
        if let Some(l) = self.last_out.as_mut() {
            *l = l.wrapping_add(1);
        }
    }
}

/// RTP timestamp continuity on one slot m-line: each holder's timestamps start at a random
/// base, so a new holder's are shifted to continue from the previous holder's last one plus the
/// time between their packets (at least one tick), and the receiver's jitter buffer and frame
/// assembly see one stream whose clock never jumps.
#[derive(Default)]
pub(crate) struct SlotTs {
    source: Option<String>,
    offset: u32,
    /// The source's last timestamp in.
    last_in: u32,
    /// Highest timestamp sent (wrap-around order) and when.
    last: Option<(u32, Instant)>,
}

impl SlotTs {
    /// The outgoing timestamp for `from`'s packet `p`, arriving at `now`. A step of more than
    /// [`MAX_TS_STEP_SECS`] from the source's last timestamp is re-anchored as a new source's.
    pub(crate) fn map(&mut self, kind: Kind, from: &str, p: &PacketInfo, now: Instant) -> u32 {
        let rate = match kind {
            Kind::Audio => 48_000u64,
            Kind::Video => 90_000,
        };
        let step = (p.timestamp.wrapping_sub(self.last_in) as i32).unsigned_abs();
        let jump = u64::from(step) > rate * u64::from(MAX_TS_STEP_SECS);
        self.last_in = p.timestamp;
        if self.source.as_deref() != Some(from) || jump {
            self.offset = match self.last {
                Some((l, at)) => {
                    let elapsed = now.saturating_duration_since(at).as_micros() as u64;
                    let ticks = (elapsed * rate / 1_000_000).clamp(1, u64::from(u32::MAX / 2));
                    l.wrapping_add(ticks as u32).wrapping_sub(p.timestamp)
                }
                None => 0,
            };
            self.source = Some(from.to_string());
        }
        let out = p.timestamp.wrapping_add(self.offset);
        if self
            .last
            .is_none_or(|(l, _)| (out.wrapping_sub(l) as i32) > 0)
        {
            self.last = Some((out, now));
        }
        out
    }
}

fn codec(kind: Kind) -> RTCRtpCodec {
    match kind {
        Kind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        Kind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn slot_track(kind: Kind, i: usize) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let (name, rtp_kind) = match kind {
        Kind::Video => ("video", RtpCodecKind::Video),
        Kind::Audio => ("audio", RtpCodecKind::Audio),
    };
    let t = TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{name}slot{i}"),
        format!("{name}slot{i}"),
        format!("{name}slot{i}"),
        rtp_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind),
            ..Default::default()
        }],
    ));
    (Arc::new(t), ssrc)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_reused_slot_continues_the_sequence_numbers() {
        let mut s = SlotSeq::default();
        // the first holder's numbers pass unchanged, across the wrap
        assert_eq!(s.map("dave", 65_534), Some(65_534));
        assert_eq!(s.map("dave", 65_535), Some(65_535));
        assert_eq!(s.map("dave", 0), Some(0));
        // a retransmission of an older packet keeps its number and does not move the high mark
        assert_eq!(s.map("dave", 65_535), Some(65_535));
        // the next holder starts with its own random numbers: they continue from 1
        assert_eq!(s.map("erin", 30_000), Some(1));
        assert_eq!(s.map("erin", 30_001), Some(2));
        // erin's packet from before she took the slot would land on dave's 0: dropped
        assert_eq!(s.map("erin", 29_999), None);
        assert_eq!(s.map("erin", 30_002), Some(3));
        // but her own late packet after her first passes, in its place
        assert_eq!(s.map("erin", 30_005), Some(6));
        assert_eq!(s.map("erin", 30_004), Some(5));
    }

    /// Regression (review of the slot code): a holder alternating numbers half the space apart
    /// steered the slot's numbers by ±32 767, so a receiver that lost one of them guessed its
    /// SRTP rollover counter wrong and failed every later packet on the slot. Now every step
    /// beyond `MAX_SEQ_STEP` is renumbered to follow on: the slot's numbers only count up.
    #[test]
    fn a_holder_cannot_make_the_slot_numbers_jump() {
        let mut s = SlotSeq::default();
        let mut seq = 40_000u16;
        let mut outs = Vec::new();
        for _ in 0..50 {
            outs.push(s.map("mallory", seq).unwrap());
            seq = seq.wrapping_add(32_767);
        }
        for w in outs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "{outs:?}");
        }
        // far behind the holder's highest: dropped, nothing moves
        let before = s.map("mallory", seq).unwrap();
        assert_eq!(s.map("mallory", seq.wrapping_sub(5_000)), None);
        assert_eq!(
            s.map("mallory", seq.wrapping_add(1)),
            Some(before.wrapping_add(1))
        );
        // a rejoin under the same name after a leave is numbered as a new holder
        s.forget("mallory");
        assert_eq!(s.map("mallory", 7), Some(before.wrapping_add(2)));
    }

    #[test]
    fn a_holder_cannot_make_the_slot_timestamps_jump() {
        let t = Instant::now();
        let mut ts = SlotTs::default();
        let p = |t| pkt(0, t, true, true, false);
        let a = ts.map(Kind::Audio, "m", &p(1_000), t);
        let b = ts.map(
            Kind::Audio,
            "m",
            &p(1_000 + 2_000_000_000),
            t + Duration::from_millis(20),
        );
        assert_eq!(
            b.wrapping_sub(a),
            960,
            "re-anchored by the time between packets"
        );
    }

    /// Regression (review): an old video holder that never marks a frame's end kept the slot
    /// from the new holder for as long as it sent; now it has HOLDER_STALL after the switch.
    #[test]
    fn a_holder_that_never_ends_a_frame_loses_the_slot_after_the_stall() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut f = SlotFeed::new(Kind::Video);
        f.assign(Some("a"), t);
        assert!(f.admit("a", &pkt(1, 0, false, true, true), t).is_some());
        f.assign(Some("b"), ms(10));
        for i in 0..30u16 {
            // a keeps sending, never a marker; b sends key frames
            let now = ms(10 + u64::from(i) * 10);
            let _ = f.admit("a", &pkt(2 + i, 0, false, false, false), now);
            let b = f.admit("b", &pkt(100 + i, 9, true, true, true), now);
            if now.saturating_duration_since(ms(10)) < HOLDER_STALL {
                assert!(b.is_none(), "a's frame may still end");
            } else {
                assert!(b.is_some(), "b takes the slot at {i}");
                break;
            }
        }
        assert!(f
            .admit("a", &pkt(99, 0, false, false, false), ms(400))
            .is_none());
    }

    /// A leaver is forgotten on the slot: it no longer holds it or is taking it over.
    #[test]
    fn a_leaver_is_forgotten() {
        let t = Instant::now();
        let mut f = SlotFeed::new(Kind::Video);
        f.assign(Some("c"), t);
        assert!(f.admit("c", &pkt(5, 0, false, true, true), t).is_some());
        f.forget("c");
        assert_eq!(f.assigned(), None);
        // back under the same name: a new holder, asked for a key frame again
        assert!(f.assign(Some("c"), t), "a new video holder");
        assert!(f
            .admit("c", &pkt(60_000, 0, false, true, false), t)
            .is_none());
        let (seq, _) = f.admit("c", &pkt(60_001, 0, false, true, true), t).unwrap();
        assert_eq!(
            seq, 6,
            "numbered after the slot's last, not with the old offset"
        );
    }

    fn pkt(seq: u16, timestamp: u32, marker: bool, start: bool, key: bool) -> PacketInfo {
        PacketInfo {
            seq,
            timestamp,
            marker,
            frame_start: start,
            key_frame: key,
        }
    }

    #[test]
    fn a_new_holder_continues_the_timestamps_by_the_time_between_packets() {
        let t0 = Instant::now();
        let mut ts = SlotTs::default();
        let a = |t| pkt(0, t, true, true, false);
        assert_eq!(
            ts.map(Kind::Audio, "dave", &a(4_000_000_000), t0),
            4_000_000_000
        );
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(
            ts.map(Kind::Audio, "dave", &a(4_000_000_960), t1),
            4_000_000_960
        );
        // erin's clock is elsewhere; 40 ms after dave's last packet: 1920 ticks at 48 kHz
        let t2 = t1 + Duration::from_millis(40);
        assert_eq!(ts.map(Kind::Audio, "erin", &a(7), t2), 4_000_002_880);
        assert_eq!(
            ts.map(Kind::Audio, "erin", &a(967), t2 + Duration::from_millis(20)),
            4_000_003_840
        );
        // at once after the last packet: still one tick later, never the same timestamp
        let mut v = SlotTs::default();
        v.map(Kind::Video, "a", &a(100), t0);
        assert_eq!(v.map(Kind::Video, "b", &a(5), t0), 101);
    }

    #[test]
    fn audio_changes_hands_at_once() {
        let t = Instant::now();
        let mut f = SlotFeed::new(Kind::Audio);
        assert!(!f.assign(Some("a"), t));
        assert!(f.admit("a", &pkt(10, 0, false, true, false), t).is_some());
        f.assign(Some("b"), t);
        assert!(f.admit("a", &pkt(11, 960, false, true, false), t).is_none());
        let (seq, _) = f.admit("b", &pkt(500, 77, false, true, false), t).unwrap();
        assert_eq!(seq, 11);
    }

    #[test]
    fn video_changes_hands_between_frames_at_the_new_holders_key_frame() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut f = SlotFeed::new(Kind::Video);
        assert!(
            f.assign(Some("a"), t),
            "a new video holder is asked for a key frame"
        );
        // nothing until a's key frame
        assert!(f.admit("a", &pkt(1, 0, false, true, false), t).is_none());
        assert!(f.admit("a", &pkt(2, 0, false, true, true), t).is_some());
        assert!(f.admit("a", &pkt(3, 0, true, false, false), t).is_some());
        assert!(f
            .admit("a", &pkt(4, 6000, false, true, false), ms(66))
            .is_some());
        // given to b mid-frame: a finishes its frame, b waits for its key frame
        assert!(f.assign(Some("b"), ms(70)));
        assert_eq!(f.assigned(), Some("b"));
        assert!(f
            .admit("b", &pkt(900, 50, false, true, true), ms(70))
            .is_none());
        assert!(f
            .admit("a", &pkt(5, 6000, true, false, false), ms(71))
            .is_some());
        assert!(f
            .admit("a", &pkt(6, 12000, false, true, false), ms(132))
            .is_none());
        assert!(f
            .admit("b", &pkt(901, 50, true, false, false), ms(133))
            .is_none());
        assert!(f
            .admit("b", &pkt(902, 6050, false, true, false), ms(134))
            .is_none());
        let (seq, _) = f
            .admit("b", &pkt(903, 6050, false, true, true), ms(140))
            .unwrap();
        assert_eq!(seq, 6, "continues from a's 5, no gap: a's frame was whole");
        assert!(f
            .admit("a", &pkt(7, 12000, true, false, false), ms(141))
            .is_none());
        // back and forth before a takes over: b keeps it
        f.assign(Some("a"), ms(150));
        assert!(!f.assign(Some("b"), ms(151)));
        assert!(f
            .admit("b", &pkt(904, 6050, true, false, false), ms(152))
            .is_some());
    }

    #[test]
    fn without_a_key_frame_the_new_holder_takes_over_after_the_wait_and_a_cut_frame_leaves_a_gap() {
        let t = Instant::now();
        let mut f = SlotFeed::new(Kind::Video);
        f.assign(Some("a"), t);
        f.admit("a", &pkt(1, 0, false, true, true), t).unwrap();
        // a leaves mid-frame; b never sends a key frame
        f.assign(Some("b"), t);
        let later = t + HOLDER_STALL;
        assert!(f
            .admit("b", &pkt(50, 9, false, true, false), later)
            .is_none());
        let after = t + SWITCH_KEYFRAME_WAIT;
        assert!(
            f.admit("b", &pkt(51, 9, true, false, false), after)
                .is_none(),
            "mid-frame"
        );
        let (seq, _) = f
            .admit("b", &pkt(52, 99, false, true, false), after)
            .unwrap();
        assert_eq!(seq, 3, "one number skipped after a's cut frame (1)");
    }

    #[test]
    fn vp8_descriptors() {
        // S=1, PID=0, no X; key frame tag (bit 0 clear)
        assert_eq!(vp8_frame_start(&[0x10, 0x50]), (true, true));
        assert_eq!(vp8_frame_start(&[0x10, 0x51]), (true, false));
        // continuation, or another partition
        assert_eq!(vp8_frame_start(&[0x00, 0x50]), (false, false));
        assert_eq!(vp8_frame_start(&[0x11, 0x50]), (false, false));
        // X, I with a 15-bit picture id (M), L, T: 1 + 1 + 2 + 1 + 1 bytes of descriptor
        assert_eq!(
            vp8_frame_start(&[0x90, 0xe0, 0x80, 0x01, 0x00, 0x00, 0x50]),
            (true, true)
        );
        assert_eq!(vp8_frame_start(&[0x90, 0x80, 0x05, 0x51]), (true, false));
        // truncated
        assert_eq!(vp8_frame_start(&[0x90, 0x80, 0x80, 0x01]), (false, false));
        assert_eq!(vp8_frame_start(&[]), (false, false));
    }
}
