//! Packets and streams for tests of NACK interceptor chains (the relay's, and the participants'
//! in `sotto-call`, which use the same limits). Test builds only.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, RTCPFeedback as Fb, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, NackPair, TransportLayerNack,
};
use rtc::shared::TransportContext;

use crate::consts::VIDEO_PAYLOAD_TYPE;

/// The video SSRC the fixtures use.
pub const SSRC: u32 = 0x5107;

pub fn tagged(now: Instant, p: Packet) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(p),
    }
}

pub fn rtp(seq: u16) -> Packet {
    rtp_on(SSRC, seq)
}

pub fn rtp_on(ssrc: u32, seq: u16) -> Packet {
    Packet::Rtp(rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            ssrc,
            payload_type: VIDEO_PAYLOAD_TYPE,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ..Default::default()
        },
        payload: bytes::Bytes::from(format!("ciphertext {seq}")),
    })
}

pub fn nack(seq: u16) -> Packet {
    nack_of(SSRC, &[seq])
}

/// One NACK naming `seqs` on `ssrc`.
pub fn nack_of(ssrc: u32, seqs: &[u16]) -> Packet {
    nack_pairs(ssrc, nack_pairs_from_sequence_numbers(seqs))
}

pub fn nack_pairs(ssrc: u32, nacks: Vec<NackPair>) -> Packet {
    Packet::Rtcp(vec![Box::new(TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ssrc,
        nacks,
    })])
}

pub fn video_stream() -> StreamInfo {
    video_stream_on(SSRC)
}

pub fn video_stream_on(ssrc: u32) -> StreamInfo {
    StreamInfo {
        ssrc,
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
pub fn answer(chain: &mut impl Interceptor, now: Instant, p: Packet) -> Vec<TaggedPacket> {
    chain.handle_read(tagged(now, p)).unwrap();
    while chain.poll_read().is_some() {}
    std::iter::from_fn(|| chain.poll_write()).collect()
}

/// The sequence numbers the chain resends for one inbound NACK.
pub fn resent(chain: &mut impl Interceptor, now: Instant, nack: Packet) -> Vec<u16> {
    answer(chain, now, nack)
        .iter()
        .map(|m| {
            assert!(m.message.has(&Attribute::Retransmission));
            let Packet::Rtp(p) = &m.message.packet else {
                panic!("not RTP")
            };
            p.header.sequence_number
        })
        .collect()
}
