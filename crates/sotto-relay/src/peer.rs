//! The relay's peer connection with one participant: built with the relay's codecs and
//! interceptors, two receive m-lines and `MAX_ROOM_SIZE - 1` send slots; offered once ICE
//! gathering is complete; completed with the participant's answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::error::Error;
use tokio::sync::Notify;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

use crate::consts::MAX_ROOM_SIZE;
use crate::forward::{self, Inbound};
use crate::nack;
use crate::relay::Shared;
use crate::slot::Slot;

/// The relay's side of one participant's connection, before the participant is admitted.
pub(crate) struct RelayPeer {
    pub(crate) pc: Arc<dyn PeerConnection>,
    /// The slots the relay sends others' media on, held by no one yet.
    pub(crate) slots: Vec<Slot>,
    pub(crate) inbound: Arc<Inbound>,
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
}

impl RelayPeer {
    /// The peer connection for participant `me` in `room`: VP8 and Opus only, no RTX; NACK both
    /// ways and keyframe requests ([`nack`]); what it receives is forwarded ([`forward`]).
    pub(crate) async fn new(shared: &Arc<Shared>, room: &str, me: &str) -> Result<Self, Error> {
        let gathered = Arc::new(Notify::new());
        let gathering_done = Arc::new(AtomicBool::new(false));
        let media = nack::media_engine()?;
        let registry = nack::registry(shared.stats.nack.clone());
        let inbound = Arc::new(Inbound::default());
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
                room: room.to_string(),
                me: me.to_string(),
                gathered: gathered.clone(),
                gathering_done: gathering_done.clone(),
                inbound: inbound.clone(),
            }))
            .with_udp_addrs(vec![format!("{}:0", shared.bind_ip)])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        let mut slots = Vec::new();
        for i in 0..MAX_ROOM_SIZE - 1 {
            let slot = Slot::new(i);
            pc.add_track(slot.audio.clone() as Arc<dyn TrackLocal>)
                .await?;
            pc.add_track(slot.video.clone() as Arc<dyn TrackLocal>)
                .await?;
            slots.push(slot);
        }
        Ok(RelayPeer {
            pc,
            slots,
            inbound,
            gathered,
            gathering_done,
        })
    }

    /// Creates the offer and sets it as the local description, which starts ICE gathering.
    pub(crate) async fn start_offer(&self) -> Result<(), Error> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await
    }

    /// Waits up to `limit` for ICE gathering to complete; false if it did not.
    pub(crate) async fn gathered(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let n = self.gathered.notified();
                if self.gathering_done.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// The local description (the offer, with the gathered candidates).
    pub(crate) async fn local_sdp(&self) -> String {
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default()
    }

    /// Applies the participant's SDP answer.
    pub(crate) async fn accept_answer(&self, sdp: String) -> Result<(), Error> {
        let desc = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(desc).await
    }
}

/// The event handler of the relay's connection with `me` in `room`: notes the end of ICE
/// gathering and forwards every track it receives.
struct Handler {
    shared: Arc<Shared>,
    room: String,
    me: String,
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    inbound: Arc<Inbound>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_done.store(true, Ordering::SeqCst);
            self.gathered.notify_waiters();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(forward::receive(
            self.shared.clone(),
            self.room.clone(),
            self.me.clone(),
            self.inbound.clone(),
            track,
        ));
    }
}
