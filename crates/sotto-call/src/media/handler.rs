//! [`Handler`]: webrtc-rs peer connection events (ICE gathering, local candidates, connection
//! state, remote tracks, each of which gets a receive loop).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState,
};

use super::consts::*;
use super::error::wr;
use super::ice::hide_related_address;
use super::receive::receive_loop;
use super::shared::{lock, Shared};
use super::{MediaEvent, MediaKind};

pub(super) struct Handler {
    pub(super) shared: Arc<Shared>,
    /// Relay-only (privacy) mode: local candidates go out without the host address they
    /// were derived from ([`hide_related_address`]).
    pub(super) hide_related_addresses: bool,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathering_done.store(true, Ordering::SeqCst);
            self.shared.gathered.notify_waiters();
            self.shared.emit(MediaEvent::GatheringComplete);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event
            .candidate
            .to_json()
            .map_err(wr)
            .map(|mut c| {
                if self.hide_related_addresses {
                    c.candidate = hide_related_address(&c.candidate);
                }
                c
            })
            .and_then(|c| serde_json::to_string(&c).map_err(wr))
        {
            Ok(json) => self.shared.emit(MediaEvent::LocalCandidate(json)),
            Err(e) => tracing::debug!("local candidate not serializable: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let s = state.to_string();
        *lock(&self.shared.state) = s.clone();
        if state == RTCPeerConnectionState::Connected {
            self.shared.connected.notify_waiters();
        }
        self.shared.emit(MediaEvent::State(s));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match track.kind().await {
                RtpCodecKind::Video => {
                    receive_loop(
                        shared,
                        track,
                        MediaKind::Video,
                        SampleBuilder::new(MAX_LATE_PACKETS, Vp8Packet::default(), 90_000)
                            .with_max_time_delay(MAX_LATE_TIME),
                    )
                    .await
                }
                RtpCodecKind::Audio => {
                    receive_loop(
                        shared,
                        track,
                        MediaKind::Audio,
                        SampleBuilder::new(MAX_LATE_PACKETS, OpusPacket, 48_000)
                            .with_max_time_delay(MAX_LATE_TIME),
                    )
                    .await
                }
                _ => {}
            }
        });
    }
}
