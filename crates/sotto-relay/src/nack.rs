//! Retransmission, hop by hop (RFC 4585 generic NACK), without touching a payload.
//!
//! The relay terminates RTP on each participant's connection, so it repairs loss on each hop
//! separately, with webrtc-rs's own NACK interceptors on every connection:
//!
//! - **receiving side**: a NACK generator asks the participant to resend the video packets the
//!   relay did not receive from it (every [`NACK_INTERVAL`], each missing packet at most
//!   [`MAX_NACKS_PER_PACKET`] times). The resent packet is forwarded like any other, late.
//! - **sending side**: a NACK responder keeps the last [`NACK_SEND_BUFFER`] video packets of every
//!   slot *as the relay sent them* (slot SSRC, continued sequence numbers) and resends the ones the
//!   receiving participant NACKs. It sits in the slot track's interceptor chain, after the
//!   relay's rewriting, so a NACK (which names the slot SSRC and the numbers the receiver saw)
//!   finds the right packet.
//!
//! A receiver's NACK is limited before the responder sees it, since one small RTCP datagram
//! can name thousands of packets (each NACK pair names up to 17, pairs may repeat): every
//! packet named is resent at most once per NACK, not again within [`RETRANSMISSION_HOLDOFF`],
//! at most [`MAX_RETRANSMISSIONS_PER_NACK`] per NACK, and only while the connection's budget
//! lasts ([`RETRANSMISSION_RATE`] a second, up to [`RETRANSMISSION_BURST`] at once). What a
//! NACK asks beyond that is refused and counted ([`NackCounters::nack_seqs_refused`]).
//!
//! A retransmission is the buffered packet itself: the same SFrame ciphertext, byte for byte. No
//! RTX (RFC 4588) is negotiated on relay legs ([`media_engine`] registers none), so a repair
//! arrives on the stream it repairs and the NACK generator at either end sees the gap close
//! (webrtc-rs 0.21's generator does not count RTX arrivals and would keep asking).
//!
//! Audio carries no NACK feedback (as in webrtc-rs's and browsers' defaults): a lost Opus packet
//! stays lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, Interceptor, NackResponderBuilder, Packet, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, NackPair, TransportLayerNack,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio;
use rtc::shared::error::Error;
use webrtc::peer_connection::MediaEngine;

use crate::consts::{
    AUDIO_PAYLOAD_TYPE, MAX_NACKS_PER_PACKET, MAX_RETRANSMISSIONS_PER_NACK, NACK_INTERVAL,
    NACK_RECEIVE_LOG, NACK_SEND_BUFFER, RETRANSMISSION_BURST, RETRANSMISSION_HOLDOFF,
    RETRANSMISSION_RATE, VIDEO_PAYLOAD_TYPE,
};
use crate::feedback::KeyframeRequests;

#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
pub mod fixtures;
mod generator;
pub use generator::NackGenerator;

/// Where the counting and limiting interceptor sits: just wire-side of the NACK responder
/// (4 000), so it sees the responder's retransmissions and the generator's NACKs on their way
/// out, and every inbound NACK before the responder. Whatever else a chain has near the wire (a
/// pacer at 3 000, a participant's test loss knob at 500) is wire-side of it: a packet such an
/// interceptor drops was still buffered and is resent when NACKed.
const COUNT_SLOT: usize = 3_900;
/// Where [`KeyframeRequests`] sits: above every webrtc-rs interceptor (application-most).
const KEYFRAME_REQUEST_SLOT: usize = 14_000;

/// Retransmission counters, for all of a relay's connections.
#[derive(Debug, Default)]
pub struct NackCounters {
    /// NACK packets the relay sent to senders (for packets it did not receive).
    pub nacks_out: AtomicU64,
    /// RTP packets that arrived from a sender after one with a higher sequence number: the
    /// senders' retransmissions answering those NACKs (or reordering on the path).
    pub late_packets_in: AtomicU64,
    /// NACK packets received from receivers.
    pub nacks_in: AtomicU64,
    /// RTP packets the relay resent from its buffer, answering receivers' NACKs.
    pub retransmissions_out: AtomicU64,
    /// Packets named in receivers' NACKs that the relay refused to resend although its buffer
    /// held them (or named again in the same NACK): resent within [`RETRANSMISSION_HOLDOFF`],
    /// beyond [`MAX_RETRANSMISSIONS_PER_NACK`], or over the connection's retransmission budget.
    /// Packets the buffer no longer (or never) held are not counted: they cannot be resent.
    pub nack_seqs_refused: AtomicU64,
    /// Test knob: share (per mille) of outgoing RTP dropped right before the wire
    /// ([`crate::Relay::set_outgoing_loss_per_mille`]).
    #[cfg(feature = "test-hooks")]
    pub(crate) loss_per_mille: AtomicU64,
    /// Outgoing RTP packets dropped by the test knob (feature `test-hooks`; always 0 without).
    pub dropped_out: AtomicU64,
}

/// A snapshot of [`NackCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetransmissionStats {
    /// See [`NackCounters::nacks_out`].
    pub nacks_out: u64,
    /// See [`NackCounters::late_packets_in`].
    pub late_packets_in: u64,
    /// See [`NackCounters::nacks_in`].
    pub nacks_in: u64,
    /// See [`NackCounters::retransmissions_out`].
    pub retransmissions_out: u64,
    /// See [`NackCounters::nack_seqs_refused`].
    pub nack_seqs_refused: u64,
    /// See [`NackCounters::dropped_out`].
    pub dropped_out: u64,
}

impl NackCounters {
    /// The counters now.
    pub fn snapshot(&self) -> RetransmissionStats {
        RetransmissionStats {
            nacks_out: self.nacks_out.load(Ordering::Relaxed),
            late_packets_in: self.late_packets_in.load(Ordering::Relaxed),
            nacks_in: self.nacks_in.load(Ordering::Relaxed),
            retransmissions_out: self.retransmissions_out.load(Ordering::Relaxed),
            nack_seqs_refused: self.nack_seqs_refused.load(Ordering::Relaxed),
            dropped_out: self.dropped_out.load(Ordering::Relaxed),
        }
    }
}

/// The relay's codecs: VP8 (with NACK, PLI and FIR feedback) and Opus, nothing else, and no RTX;
/// one header extension, the RFC 6464 audio level on audio ([`crate::level`]).
pub fn media_engine() -> Result<MediaEngine, Error> {
    let mut media = MediaEngine::default();
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: crate::level::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
            },
            payload_type: VIDEO_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: AUDIO_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(media)
}

/// The interceptor chain of one relay connection, wire to application: counters and NACK
/// limits, NACK responder, NACK generator, keyframe-request surfacing.
pub fn registry(counters: Arc<NackCounters>) -> Registry {
    with_nack(Registry::new(), counters)
        // inbound PLI/FIR reach the slot tracks' events; NACKs have met the responder already
        .with(
            Slot::from(KEYFRAME_REQUEST_SLOT),
            KeyframeRequests::passing_other_rtcp(),
        )
}

/// Adds the NACK part of a chain to `registry`, wire to application: counters and the limits on
/// inbound NACKs (module docs), the responder ([`NACK_SEND_BUFFER`] packets per stream), the
/// generator (webrtc-rs's, with bounded costs: `generator.rs`). The relay's connections and sotto's participants (`sotto-call`'s `MediaPeer`) use
/// it alike, so a sender answers NACKs within the same bounds as the relay.
pub fn with_nack(registry: Registry, counters: Arc<NackCounters>) -> Registry {
    registry
        .with(Slot::from(COUNT_SLOT), NackCount::new(counters))
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_SEND_BUFFER)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            NackGenerator::new(NACK_RECEIVE_LOG, NACK_INTERVAL, MAX_NACKS_PER_PACKET),
        )
}

/// Registers the video RTCP feedback [`with_nack`]'s interceptors need (generic NACK, and PLI
/// for keyframe requests) on a media engine with other codecs (the relay's own
/// [`media_engine`] has them).
pub fn register_nack_feedback(media: &mut MediaEngine) {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
}

fn count_nacks(packets: &[Box<dyn rtc::rtcp::Packet>]) -> u64 {
    packets
        .iter()
        .filter(|p| p.as_any().is::<TransportLayerNack>())
        .count() as u64
}

/// The sequence numbers one NACK pair names: its packet id and one more per BLP bit set.
fn named(pair: &NackPair) -> impl Iterator<Item = u16> {
    let (id, lost) = (pair.packet_id, pair.lost_packets);
    std::iter::once(id).chain(
        (0..16u16)
            .filter(move |i| lost & (1 << i) != 0)
            .map(move |i| id.wrapping_add(i + 1)),
    )
}

fn supports_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

/// Which packets the NACK responder can still resend on one local video stream: a mirror of its
/// send buffer (`NACK_SEND_BUFFER` entries, the same rules), kept from the RTP [`NackCount`] sees
/// leave. A NACK for any other packet costs no retransmission budget: nothing would be resent.
struct SentLog {
    /// The sequence number in each entry (index `seq % NACK_SEND_BUFFER`).
    seqs: Vec<Option<u16>>,
    /// Highest sequence number sent (RFC 3550 wrap-around order).
    highest: Option<u16>,
}

impl SentLog {
    fn new() -> Self {
        SentLog {
            seqs: vec![None; usize::from(NACK_SEND_BUFFER)],
            highest: None,
        }
    }

    fn entry(seq: u16) -> usize {
        usize::from(seq % NACK_SEND_BUFFER)
    }

    fn add(&mut self, seq: u16) {
        if let Some(h) = self.highest {
            let ahead = seq.wrapping_sub(h);
            if ahead == 0 {
                return;
            }
            if ahead < 1 << 15 {
                // the numbers skipped are not in the buffer (all of it, after a long jump)
                for i in 1..ahead.min(NACK_SEND_BUFFER + 1) {
                    self.seqs[Self::entry(h.wrapping_add(i))] = None;
                }
                self.highest = Some(seq);
            }
        } else {
            self.highest = Some(seq);
        }
        self.seqs[Self::entry(seq)] = Some(seq);
    }

    fn holds(&self, seq: u16) -> bool {
        self.highest
            .is_some_and(|h| h.wrapping_sub(seq) < NACK_SEND_BUFFER)
            && self.seqs[Self::entry(seq)] == Some(seq)
    }
}

/// One connection's retransmission budget: [`RETRANSMISSION_RATE`] tokens a second, at most
/// [`RETRANSMISSION_BURST`] saved up, starting full. Kept as time (a token is `1 s / RATE` of
/// credit), so the arithmetic is exact.
struct Budget {
    credit: Duration,
    at: Option<Instant>,
}

impl Budget {
    const TOKEN: Duration = Duration::from_nanos(1_000_000_000 / RETRANSMISSION_RATE as u64);

    /// Takes one token at `now`, if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let full = Self::TOKEN * RETRANSMISSION_BURST;
        self.credit = match self.at {
            Some(at) => self
                .credit
                .saturating_add(now.saturating_duration_since(at))
                .min(full),
            None => full,
        };
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        if self.credit >= Self::TOKEN {
            self.credit -= Self::TOKEN;
            true
        } else {
            false
        }
    }
}

/// What the relay resends for one connection's inbound NACKs (see the module docs).
struct NackLimit {
    /// Per NACK-capable local stream (SSRC): what the responder holds.
    sent: HashMap<u32, SentLog>,
    /// Packets resent, `(media SSRC, sequence number)`, and when; pruned after
    /// [`RETRANSMISSION_HOLDOFF`], so at most the budget's worth over that time.
    resent: HashMap<(u32, u16), Instant>,
    budget: Budget,
}

impl NackLimit {
    fn new() -> Self {
        NackLimit {
            sent: HashMap::new(),
            resent: HashMap::new(),
            budget: Budget {
                credit: Duration::ZERO,
                at: None,
            },
        }
    }

    /// Forgets resends older than [`RETRANSMISSION_HOLDOFF`].
    fn expire(&mut self, now: Instant) {
        self.resent
            .retain(|_, at| now.saturating_duration_since(*at) < RETRANSMISSION_HOLDOFF);
    }

    /// The part of `nack` the responder may answer (`None`: nothing), as compact NACK pairs,
    /// and how many of the packets it names are refused.
    fn admit(
        &mut self,
        now: Instant,
        nack: &TransportLayerNack,
    ) -> (Option<TransportLayerNack>, u64) {
        let ssrc = nack.media_ssrc;
        // the responder resends nothing on a stream it does not buffer
        let Some(log) = self.sent.get(&ssrc) else {
            return (None, 0);
        };
        let mut seen = vec![0u64; 1 << 10];
        let mut resend = Vec::new();
        let mut refused = 0;
        for seq in nack.nacks.iter().flat_map(named) {
            let (word, bit) = (usize::from(seq >> 6), 1u64 << (seq & 63));
            if seen[word] & bit != 0 {
                refused += 1;
                continue;
            }
            seen[word] |= bit;
            if !log.holds(seq) {
                continue;
            }
            if resend.len() >= MAX_RETRANSMISSIONS_PER_NACK
                || self.resent.contains_key(&(ssrc, seq))
                || !self.budget.take(now)
            {
                refused += 1;
                continue;
            }
            self.resent.insert((ssrc, seq), now);
            resend.push(seq);
        }
        if resend.is_empty() {
            return (None, refused);
        }
        resend.sort_unstable();
        let limited = TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(&resend),
        };
        (Some(limited), refused)
    }
}

/// Counts NACKs both ways and retransmissions out, limits inbound NACKs ([`NackLimit`]) and
/// passes everything else on unchanged, except the outgoing RTP the test loss knob (feature
/// `test-hooks`) drops (after the NACK responder buffered it, so a receiver's NACK gets it
/// resent, as after loss on the path).
struct NackCount {
    counters: Arc<NackCounters>,
    limit: NackLimit,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl NackCount {
    fn new(counters: Arc<NackCounters>) -> Self {
        NackCount {
            counters,
            limit: NackLimit::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

#[cfg(feature = "test-hooks")]
impl NackCount {
    /// Whether the test loss knob drops this outgoing RTP packet (counted if so).
    fn test_loss(&self) -> bool {
        let p = self.counters.loss_per_mille.load(Ordering::Relaxed);
        let drop = p > 0 && rand::random::<u64>() % 1000 < p;
        if drop {
            self.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
        }
        drop
    }
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for NackCount {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let n = count_nacks(packets);
            self.counters.nacks_in.fetch_add(n, Ordering::Relaxed);
            if n > 0 {
                self.limit.expire(now);
                let mut refused = 0;
                let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
                for p in std::mem::take(packets) {
                    let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() else {
                        kept.push(p);
                        continue;
                    };
                    let (limited, r) = self.limit.admit(now, nack);
                    refused += r;
                    if let Some(l) = limited {
                        kept.push(Box::new(l));
                    }
                }
                self.counters
                    .nack_seqs_refused
                    .fetch_add(refused, Ordering::Relaxed);
                if kept.is_empty() {
                    return Ok(());
                }
                *packets = kept;
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        match &msg.message.packet {
            Packet::Rtp(p) => {
                if msg.message.has(&Attribute::Retransmission) {
                    self.counters
                        .retransmissions_out
                        .fetch_add(1, Ordering::Relaxed);
                } else if let Some(log) = self.limit.sent.get_mut(&p.header.ssrc) {
                    log.add(p.header.sequence_number);
                }
                #[cfg(feature = "test-hooks")]
                if self.test_loss() {
                    return Ok(());
                }
            }
            Packet::Rtcp(packets) => {
                let n = count_nacks(packets);
                self.counters.nacks_out.fetch_add(n, Ordering::Relaxed);
            }
            _ => {}
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for NackCount {
    // the streams the responder buffers, and so resends on
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if supports_nack(info) {
            self.limit.sent.insert(info.ssrc, SentLog::new());
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.limit.sent.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use rtc::sansio::Protocol;
    use std::time::Duration;

    use super::fixtures::*;

    /// A chain with one video stream on which packets `seqs` were sent.
    fn chain_having_sent(
        counters: &Arc<NackCounters>,
        now: Instant,
        seqs: std::ops::Range<u16>,
    ) -> impl Interceptor {
        let mut chain = registry(counters.clone()).build();
        chain.bind_local_stream(&video_stream());
        for seq in seqs {
            chain.handle_write(tagged(now, rtp(seq))).unwrap();
            while chain.poll_write().is_some() {}
        }
        chain
    }

    #[test]
    fn a_nack_naming_one_packet_500_times_with_every_blp_bit_resends_17_packets_once_each() {
        let flood = NackPair {
            packet_id: 10,
            lost_packets: 0xffff,
        };
        let counters = Arc::new(NackCounters::default());
        let now = Instant::now();
        let mut chain = chain_having_sent(&counters, now, 0..100);
        let resent = resent(&mut chain, now, nack_pairs(SSRC, vec![flood; 500]));
        assert_eq!(resent, (10..=26).collect::<Vec<u16>>());
        assert_eq!(
            counters.snapshot(),
            RetransmissionStats {
                nacks_in: 1,
                retransmissions_out: 17,
                nack_seqs_refused: 500 * 17 - 17,
                ..Default::default()
            }
        );
        // what the responder is handed: the 17 packets once, as one pair
        let mut limit = NackCount::new(Arc::new(NackCounters::default()));
        limit.bind_local_stream(&video_stream());
        for seq in 0..100 {
            limit.handle_write(tagged(now, rtp(seq))).unwrap();
        }
        limit
            .handle_read(tagged(now, nack_pairs(SSRC, vec![flood; 500])))
            .unwrap();
        let up = limit.poll_read().unwrap();
        let Packet::Rtcp(ps) = &up.message.packet else {
            panic!("not RTCP")
        };
        let limited = ps[0].as_any().downcast_ref::<TransportLayerNack>().unwrap();
        assert_eq!((ps.len(), &limited.nacks), (1, &vec![flood]));
        // the same again at once: nothing is left, and nothing goes up
        limit
            .handle_read(tagged(now, nack_pairs(SSRC, vec![flood; 500])))
            .unwrap();
        assert!(limit.poll_read().is_none());
    }

    #[test]
    fn the_sent_log_holds_exactly_what_the_responder_resends() {
        // the limit charges the budget only for packets the responder will resend: its mirror of
        // the responder's buffer must agree with it, across a wrap, gaps, a late packet and a
        // jump past the whole buffer
        let now = Instant::now();
        let mut responder = NackResponderBuilder::new()
            .with_size(NACK_SEND_BUFFER)
            .build();
        responder.bind_local_stream(&video_stream());
        let mut log = SentLog::new();
        let wrap = (65_400..=u16::MAX).chain(0..200);
        let phases: [Vec<u16>; 2] = [
            wrap.chain(220..400).chain([210]).collect(),
            (2_000..2_100).collect(),
        ];
        for phase in phases {
            for &seq in &phase {
                responder.handle_write(tagged(now, rtp(seq))).unwrap();
                while responder.poll_write().is_some() {}
                log.add(seq);
            }
            let top = phase
                .iter()
                .copied()
                .max_by_key(|s| s.wrapping_sub(phase[0]));
            let top = top.unwrap();
            for seq in (0..1_200u16).map(|d| top.wrapping_add(100).wrapping_sub(d)) {
                responder.handle_read(tagged(now, nack(seq))).unwrap();
                while responder.poll_read().is_some() {}
                let resends = std::iter::from_fn(|| responder.poll_write()).count() == 1;
                assert_eq!(log.holds(seq), resends, "seq {seq}");
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn the_loss_knob_drops_rtp_after_it_is_buffered_and_spares_rtcp() {
        let counters = Arc::new(NackCounters::default());
        counters.loss_per_mille.store(1000, Ordering::Relaxed);
        let t = Instant::now();
        let mut chain = registry(counters.clone()).build();
        chain.bind_local_stream(&video_stream());
        for seq in 0..10 {
            chain.handle_write(tagged(t, rtp(seq))).unwrap();
            assert!(chain.poll_write().is_none(), "seq {seq} not dropped");
        }
        // outgoing RTCP passes
        chain.handle_write(tagged(t, nack(3))).unwrap();
        assert!(matches!(
            chain.poll_write().map(|m| m.message.packet),
            Some(Packet::Rtcp(_))
        ));
        // the responder resends a dropped packet; the resend is dropped too
        assert!(resent(&mut chain, t, nack(4)).is_empty());
        // without loss, the next ask is served
        counters.loss_per_mille.store(0, Ordering::Relaxed);
        assert_eq!(resent(&mut chain, t + RETRANSMISSION_HOLDOFF, nack(4)), [4]);
        let s = counters.snapshot();
        assert_eq!((s.dropped_out, s.retransmissions_out), (11, 2));
    }

    #[test]
    fn a_nack_repeated_within_the_holdoff_is_not_served_an_honest_one_is() {
        let counters = Arc::new(NackCounters::default());
        let t = Instant::now();
        let mut chain = chain_having_sent(&counters, t, 0..100);
        assert_eq!(resent(&mut chain, t, nack_of(SSRC, &[10, 11])), [10, 11]);
        let early = t + RETRANSMISSION_HOLDOFF - Duration::from_millis(1);
        assert!(resent(&mut chain, early, nack_of(SSRC, &[10, 11])).is_empty());
        // an honest receiver's NACK in the meantime: the packet not resent yet still is
        assert_eq!(resent(&mut chain, early, nack_of(SSRC, &[11, 12])), [12]);
        // once the holdoff is over, a lost resend is resent again
        let later = t + RETRANSMISSION_HOLDOFF;
        assert_eq!(
            resent(&mut chain, later, nack_of(SSRC, &[10, 11])),
            [10, 11]
        );
        let s = counters.snapshot();
        assert_eq!((s.retransmissions_out, s.nack_seqs_refused), (5, 3));
    }

    #[test]
    fn one_nack_gets_at_most_max_retransmissions_per_nack() {
        let counters = Arc::new(NackCounters::default());
        let now = Instant::now();
        let mut chain = chain_having_sent(&counters, now, 0..400);
        let max = MAX_RETRANSMISSIONS_PER_NACK as u16;
        let all: Vec<u16> = (0..max).collect();
        assert_eq!(resent(&mut chain, now, nack_of(SSRC, &all)), all);
        let over: Vec<u16> = (200..200 + max + 1).collect();
        assert_eq!(
            resent(&mut chain, now, nack_of(SSRC, &over)),
            over[..usize::from(max)]
        );
        assert_eq!(counters.snapshot().nack_seqs_refused, 1);
    }

    #[test]
    fn retransmissions_come_out_of_a_token_bucket_per_connection() {
        let counters = Arc::new(NackCounters::default());
        let t = Instant::now();
        let mut chain = chain_having_sent(&counters, t, 0..NACK_SEND_BUFFER);
        let max = MAX_RETRANSMISSIONS_PER_NACK as u16;
        let burst = RETRANSMISSION_BURST as usize;
        // at one instant, a burst's worth of packets, not one more
        let mut n = 0;
        let mut next = 0;
        while next < burst + 10 {
            let seqs: Vec<u16> = (next as u16..next as u16 + max).collect();
            n += resent(&mut chain, t, nack_of(SSRC, &seqs)).len();
            next += usize::from(max);
        }
        assert_eq!(n, burst);
        // then one packet per 1/RETRANSMISSION_RATE
        let token = Duration::from_secs(1) / RETRANSMISSION_RATE;
        let later = t + token * 3;
        let waiting: Vec<u16> = (burst as u16..burst as u16 + 4).collect();
        assert_eq!(resent(&mut chain, later, nack_of(SSRC, &waiting)).len(), 3);
        // a new connection has its own bucket
        let mut other = chain_having_sent(&counters, t, 0..10);
        assert_eq!(resent(&mut other, later, nack(5)), [5]);
    }

    #[test]
    fn the_budget_covers_three_times_honest_loss_on_every_slot_without_refusing() {
        // four slot video streams of ~1.5 Mbit/s (170 packets/s) with 30 % loss, three times the
        // 10 % the budget is sized for; every tenth resend is lost again and asked for again
        let counters = Arc::new(NackCounters::default());
        let mut chain = registry(counters.clone()).build();
        let ssrcs = [11u32, 12, 13, 14];
        for s in ssrcs {
            chain.bind_local_stream(&video_stream_on(s));
        }
        let mut now = Instant::now();
        let mut next_seq = [0u16; 4];
        let mut ask_again: [Vec<u16>; 4] = Default::default();
        let (mut asked, mut resends) = (0u64, 0u64);
        // receivers NACK every 100 ms (webrtc-rs's default interval), for 10 s
        for _ in 0..100 {
            for (i, &ssrc) in ssrcs.iter().enumerate() {
                let mut lost = std::mem::take(&mut ask_again[i]);
                for _ in 0..17 {
                    let seq = next_seq[i];
                    next_seq[i] += 1;
                    chain.handle_write(tagged(now, rtp_on(ssrc, seq))).unwrap();
                    while chain.poll_write().is_some() {}
                    if seq % 10 < 3 {
                        lost.push(seq);
                    }
                }
                now += Duration::from_millis(25);
                asked += lost.len() as u64;
                for m in answer(&mut chain, now, nack_of(ssrc, &lost)) {
                    let Packet::Rtp(p) = &m.message.packet else {
                        panic!("not RTP")
                    };
                    resends += 1;
                    if resends % 10 == 0 {
                        ask_again[i].push(p.header.sequence_number);
                    }
                }
            }
        }
        let s = counters.snapshot();
        assert!(asked > 2_200, "{asked}");
        assert_eq!((resends, s.retransmissions_out), (asked, asked));
        assert_eq!(s.nack_seqs_refused, 0);
    }

    #[test]
    fn a_nacked_packet_is_resent_as_sent_within_the_buffer_and_not_beyond() {
        let counters = Arc::new(NackCounters::default());
        let mut chain = registry(counters.clone()).build();
        chain.bind_local_stream(&video_stream());
        let now = Instant::now();
        // NACK_SEND_BUFFER + 1 packets: 0 has left the buffer, 1 is its oldest
        for seq in 0..=NACK_SEND_BUFFER {
            chain.handle_write(tagged(now, rtp(seq))).unwrap();
            assert!(chain.poll_write().is_some());
        }
        let resent = answer(&mut chain, now, nack(1));
        assert_eq!(resent.len(), 1);
        let Packet::Rtp(p) = &resent[0].message.packet else {
            panic!("not RTP")
        };
        let Packet::Rtp(original) = rtp(1) else {
            unreachable!()
        };
        assert_eq!(p, &original, "a retransmission is the packet as sent");
        assert!(answer(&mut chain, now, nack(0)).is_empty());
        assert_eq!(
            counters.snapshot(),
            RetransmissionStats {
                nacks_in: 2,
                retransmissions_out: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn keyframe_requests_still_reach_the_application_beside_nacks() {
        let mut chain = registry(Arc::new(NackCounters::default())).build();
        chain.bind_local_stream(&video_stream());
        let now = Instant::now();
        chain.handle_write(tagged(now, rtp(7))).unwrap();
        while chain.poll_write().is_some() {}
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: SSRC,
        };
        let Packet::Rtcp(mut compound) = nack(7) else {
            unreachable!()
        };
        compound.push(Box::new(pli));
        chain
            .handle_read(tagged(now, Packet::Rtcp(compound)))
            .unwrap();
        let up: Vec<TaggedPacket> = std::iter::from_fn(|| chain.poll_read()).collect();
        assert!(up
            .iter()
            .any(|m| m.message.has(&Attribute::DeliverToApplication)
                && matches!(&m.message.packet, Packet::Rtcp(ps)
                if ps.iter().any(|p| crate::feedback::is_keyframe_request(p.as_ref())))));
        assert_eq!(std::iter::from_fn(|| chain.poll_write()).count(), 1);
    }

    #[test]
    fn a_missing_packet_is_asked_for_every_interval_at_most_max_nacks_per_packet_times() {
        let counters = Arc::new(NackCounters::default());
        let mut chain = registry(counters.clone()).build();
        chain.bind_remote_stream(&video_stream());
        let mut now = Instant::now();
        for seq in [10u16, 11, 13] {
            chain.handle_read(tagged(now, rtp(seq))).unwrap();
            while chain.poll_read().is_some() {}
        }
        let mut asked = Vec::new();
        for _ in 0..MAX_NACKS_PER_PACKET + 3 {
            now += NACK_INTERVAL + Duration::from_millis(1);
            chain.handle_timeout(now).unwrap();
            for m in std::iter::from_fn(|| chain.poll_write()) {
                let Packet::Rtcp(ps) = &m.message.packet else {
                    continue;
                };
                for p in ps {
                    let n = p.as_any().downcast_ref::<TransportLayerNack>().unwrap();
                    assert_eq!(n.media_ssrc, SSRC);
                    asked.extend(n.nacks.iter().map(|pair| pair.packet_id));
                }
            }
        }
        assert_eq!(asked, vec![12; usize::from(MAX_NACKS_PER_PACKET)]);
        assert_eq!(
            counters.snapshot().nacks_out,
            u64::from(MAX_NACKS_PER_PACKET)
        );
    }
}
