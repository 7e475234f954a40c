//! The interceptor chain of a participant's peer connection, wire to application: the test loss
//! knob, keyframe-request surfacing, the NACK part shared with the relay
//! ([`sotto_relay::nack::with_nack`]: inbound NACKs limited before the responder, so a relay or
//! a peer cannot make this device resend more than the relay itself would, `relay.md` §4), TWCC
//! arrival records, RTCP reports.

use std::sync::Arc;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use sotto_relay::nack::{register_nack_feedback, with_nack, NackCounters};
use webrtc::peer_connection::MediaEngine;

use super::consts::KEYFRAME_REQUEST_SLOT;
use super::error::wr;
use super::loss;
use super::MediaError;

/// The chain, and what it needs registered on `media` (webrtc-rs's defaults, with the NACK
/// interceptors bounded like the relay's).
pub(crate) fn registry(
    media: &mut MediaEngine,
    loss: Arc<loss::LossKnob>,
    nack: Arc<NackCounters>,
) -> Result<Registry, MediaError> {
    register_nack_feedback(media);
    configure_simulcast_extension_headers(media).map_err(wr)?;
    let registry = with_nack(Registry::new(), nack);
    let registry = configure_twcc_receiver_only(registry, media).map_err(wr)?;
    Ok(configure_rtcp_reports(registry)
        .with(
            loss::LossInterceptor::slot(),
            loss::LossInterceptor::new(loss),
        )
        // inbound PLI/FIR (from the relay or the peer) reach the video send track's events
        .with(
            Slot::from(KEYFRAME_REQUEST_SLOT),
            sotto_relay::feedback::KeyframeRequests::passing_other_rtcp(),
        ))
}

#[cfg(all(test, feature = "test-hooks"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Instant;

    use rtc::interceptor::Interceptor;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use rtc::sansio::Protocol;
    use sotto_relay::nack::fixtures::{nack_pairs, resent, rtp, tagged, video_stream, SSRC};

    use super::*;

    /// What a flood NACK gets resent by a participant: before this chain (webrtc-rs's default
    /// responder) one datagram naming one packet 500 times with every BLP bit set got 8 500
    /// packets resent; now each of the 17 packets it names once, and the same NACK again at
    /// once nothing; the relay's counters count the refusals.
    #[test]
    fn a_flood_nack_gets_each_packet_it_names_resent_once() {
        let mut media = MediaEngine::default();
        media.register_default_codecs().unwrap();
        let counters = Arc::new(NackCounters::default());
        let mut chain = registry(&mut media, Arc::default(), counters.clone())
            .unwrap()
            .build();
        chain.bind_local_stream(&video_stream());
        let now = Instant::now();
        for seq in 0..100 {
            chain.handle_write(tagged(now, rtp(seq))).unwrap();
            while chain.poll_write().is_some() {}
        }
        let flood = NackPair {
            packet_id: 10,
            lost_packets: 0xffff,
        };
        let first = resent(&mut chain, now, nack_pairs(SSRC, vec![flood; 500]));
        assert_eq!(first, (10..=26).collect::<Vec<u16>>());
        let again = resent(&mut chain, now, nack_pairs(SSRC, vec![flood; 500]));
        assert!(again.is_empty(), "{again:?}");
        let s = counters.snapshot();
        assert_eq!(s.retransmissions_out, 17);
        assert_eq!(s.nack_seqs_refused, 2 * 500 * 17 - 17);
    }
}
