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
//! A retransmission is the buffered packet itself: the same SFrame ciphertext, byte for byte. No
//! RTX (RFC 4588) is negotiated on relay legs ([`media_engine`] registers none), so a repair
//! arrives on the stream it repairs and the NACK generator at either end sees the gap close
//! (webrtc-rs 0.21's generator does not count RTX arrivals and would keep asking).
//!
//! Audio carries no NACK feedback (as in webrtc-rs's and browsers' defaults): a lost Opus packet
//! stays lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet, Registry, Slot,
    StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::sansio;
use rtc::shared::error::Error;
use webrtc::peer_connection::MediaEngine;

use crate::consts::{
    AUDIO_PAYLOAD_TYPE, MAX_NACKS_PER_PACKET, NACK_INTERVAL, NACK_RECEIVE_LOG, NACK_SEND_BUFFER,
    VIDEO_PAYLOAD_TYPE,
};
use crate::feedback::KeyframeRequests;

/// Where the counting interceptor sits: below the NACK responder, i.e. next to the wire, so it
/// sees the responder's retransmissions and the generator's NACKs on their way out, and every
/// inbound NACK first.
const COUNT_SLOT: usize = 500;
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
    /// Test knob: share (per mille) of outgoing RTP dropped right before the wire
    /// ([`crate::Relay::set_outgoing_loss_per_mille`]).
    pub(crate) loss_per_mille: AtomicU64,
    /// Outgoing RTP packets dropped by the test knob.
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
            dropped_out: self.dropped_out.load(Ordering::Relaxed),
        }
    }
}

/// The relay's codecs: VP8 (with NACK, PLI and FIR feedback) and Opus, nothing else, and no RTX.
pub fn media_engine() -> Result<MediaEngine, Error> {
    let mut media = MediaEngine::default();
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

/// The interceptor chain of one relay connection, wire to application: counters, NACK
/// responder, NACK generator, keyframe-request surfacing.
pub fn registry(counters: Arc<NackCounters>) -> Registry {
    Registry::new()
        .with(Slot::from(COUNT_SLOT), NackCount::new(counters))
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_SEND_BUFFER)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_size(NACK_RECEIVE_LOG)
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        )
        // inbound PLI/FIR reach the slot tracks' events; NACKs have met the responder already
        .with(
            Slot::from(KEYFRAME_REQUEST_SLOT),
            KeyframeRequests::passing_other_rtcp(),
        )
}

fn count_nacks(packets: &[Box<dyn rtc::rtcp::Packet>]) -> u64 {
    packets
        .iter()
        .filter(|p| p.as_any().is::<TransportLayerNack>())
        .count() as u64
}

/// Counts NACKs both ways and retransmissions out, and passes everything on unchanged, except
/// the outgoing RTP the test loss knob drops (after the NACK responder buffered it, so a
/// receiver's NACK gets it resent, as after loss on the path).
struct NackCount {
    counters: Arc<NackCounters>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl NackCount {
    fn new(counters: Arc<NackCounters>) -> Self {
        NackCount {
            counters,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for NackCount {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let n = count_nacks(packets);
            self.counters.nacks_in.fetch_add(n, Ordering::Relaxed);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        match &msg.message.packet {
            Packet::Rtp(_) => {
                if msg.message.has(&Attribute::Retransmission) {
                    self.counters
                        .retransmissions_out
                        .fetch_add(1, Ordering::Relaxed);
                }
                let p = self.counters.loss_per_mille.load(Ordering::Relaxed);
                if p > 0 && rand::random::<u64>() % 1000 < p {
                    self.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
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
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtc::interceptor::{AttributedPacket, RTCPFeedback as Fb};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use rtc::sansio::Protocol;
    use rtc::shared::TransportContext;
    use std::time::Duration;

    const SSRC: u32 = 0x5107;

    fn tagged(now: Instant, p: Packet) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(p),
        }
    }

    fn rtp(seq: u16) -> Packet {
        Packet::Rtp(rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc: SSRC,
                payload_type: VIDEO_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ..Default::default()
            },
            payload: bytes::Bytes::from(format!("ciphertext {seq}")),
        })
    }

    fn nack(seq: u16) -> Packet {
        Packet::Rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: vec![NackPair {
                packet_id: seq,
                lost_packets: 0,
            }],
        })])
    }

    fn video_stream() -> StreamInfo {
        StreamInfo {
            ssrc: SSRC,
            payload_type: VIDEO_PAYLOAD_TYPE,
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            rtcp_feedback: vec![Fb {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        }
    }

    /// Everything the chain sends after one inbound packet.
    fn answer(chain: &mut impl Interceptor, now: Instant, p: Packet) -> Vec<TaggedPacket> {
        chain.handle_read(tagged(now, p)).unwrap();
        while chain.poll_read().is_some() {}
        std::iter::from_fn(|| chain.poll_write()).collect()
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
