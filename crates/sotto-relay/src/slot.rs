//! Receive slots: the fixed (audio, video) track pairs the relay sends on to each participant,
//! one per other member, so joins and leaves need no renegotiation.

use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

/// One slot on a participant's connection.
pub(crate) struct Slot {
    pub(crate) audio: Arc<TrackLocalStaticRTP>,
    pub(crate) video: Arc<TrackLocalStaticRTP>,
    pub(crate) audio_ssrc: u32,
    pub(crate) video_ssrc: u32,
    /// Which member's media this slot carries.
    pub(crate) holder: Option<String>,
    /// Sequence numbers on the slot's audio and video m-lines.
    pub(crate) seq: [SlotSeq; 2],
}

impl Slot {
    /// Slot `i`: a fresh audio and video track with random SSRCs, held by no one.
    pub(crate) fn new(i: usize) -> Self {
        let (audio, audio_ssrc) = slot_track(RtpCodecKind::Audio, i);
        let (video, video_ssrc) = slot_track(RtpCodecKind::Video, i);
        Slot {
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            holder: None,
            seq: Default::default(),
        }
    }
}

/// Sequence-number continuity on one slot m-line. A slot is reused by a later joiner: its
/// packets get sequence numbers that continue from the previous holder's, or the receiver's SRTP
/// replay window (same SSRC) and jitter buffer would drop them as old.
#[derive(Default)]
pub(crate) struct SlotSeq {
    /// Whose packets `offset` was computed for.
    source: Option<String>,
    offset: u16,
    /// Highest sequence number sent on the m-line (RFC 3550 wrap-around order).
    last_out: Option<u16>,
}

impl SlotSeq {
    /// The outgoing sequence number for `from`'s packet numbered `seq`.
    pub(crate) fn map(&mut self, from: &str, seq: u16) -> u16 {
        if self.source.as_deref() != Some(from) {
            self.offset = match self.last_out {
                Some(l) => l.wrapping_add(1).wrapping_sub(seq),
                None => 0,
            };
            self.source = Some(from.to_string());
        }
        let out = seq.wrapping_add(self.offset);
        if self
            .last_out
            .is_none_or(|l| (out.wrapping_sub(l) as i16) > 0)
        {
            self.last_out = Some(out);
        }
        out
    }
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn slot_track(kind: RtpCodecKind, i: usize) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let t = TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("slot{i}"),
        format!("slot{i}-{name}"),
        format!("slot{i}-{name}"),
        kind,
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
    use super::SlotSeq;

    #[test]
    fn a_reused_slot_continues_the_sequence_numbers() {
        let mut s = SlotSeq::default();
        // the first holder's numbers pass unchanged, across the wrap
        assert_eq!(s.map("dave", 65_534), 65_534);
        assert_eq!(s.map("dave", 65_535), 65_535);
        assert_eq!(s.map("dave", 0), 0);
        // a retransmission of an older packet keeps its number and does not move the high mark
        assert_eq!(s.map("dave", 65_535), 65_535);
        // the next holder starts with its own random numbers: they continue from 1
        assert_eq!(s.map("erin", 30_000), 1);
        assert_eq!(s.map("erin", 30_001), 2);
        assert_eq!(s.map("erin", 29_999), 0);
        assert_eq!(s.map("erin", 30_002), 3);
    }
}
