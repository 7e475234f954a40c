//! The relay's peer connection with one participant: built with the relay's codecs and
//! interceptors, two receive m-lines (audio with the RFC 6464 audio level, [`crate::level`]) and
//! `AUDIO_SLOTS` audio and `VIDEO_SLOTS` video send slots; offered once ICE gathering is
//! complete; completed with the participant's answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
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

use crate::capture::Kind;
use crate::consts::{AUDIO_SLOTS, MAX_MEDIA_PORT_ATTEMPTS, VIDEO_SLOTS};
use crate::forward::{self, Inbound};
use crate::nack;
use crate::nat::advertise_public_ip;
use crate::ports::PortLease;
use crate::relay::Shared;
use crate::slot::Slot;

/// The relay's side of one participant's connection, before the participant is admitted.
pub(crate) struct RelayPeer {
    pub(crate) pc: Arc<dyn PeerConnection>,
    /// The slots the relay sends others' audio and video on, held by no one yet.
    pub(crate) audio: Vec<Slot>,
    pub(crate) video: Vec<Slot>,
    pub(crate) inbound: Arc<Inbound>,
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
}

impl RelayPeer {
    /// The peer connection for participant `me` in `room`: VP8 and Opus only, no RTX; NACK both
    /// ways and keyframe requests ([`nack`]); what it receives is forwarded ([`forward`]). Its
    /// one media socket binds `bind_ip` on a port leased from the relay's range (tried up to
    /// [`MAX_MEDIA_PORT_ATTEMPTS`] ports: one may still be held by a closing connection or
    /// another program); the lease must live as long as the connection.
    pub(crate) async fn new(
        shared: &Arc<Shared>,
        room: &str,
        me: &str,
    ) -> Result<(Self, PortLease), PeerError> {
        let gathered = Arc::new(Notify::new());
        let gathering_done = Arc::new(AtomicBool::new(false));
        let inbound = Arc::new(Inbound::default());
        let handler = Arc::new(Handler {
            shared: shared.clone(),
            room: room.to_string(),
            me: me.to_string(),
            gathered: gathered.clone(),
            gathering_done: gathering_done.clone(),
            inbound: inbound.clone(),
        });
        let attempts = if shared.ports.ranged() {
            MAX_MEDIA_PORT_ATTEMPTS
        } else {
            1
        };
        let mut built = None;
        for _ in 0..attempts {
            let lease = shared.ports.lease().ok_or(PeerError::NoMediaPort)?;
            let addr = SocketAddr::new(shared.bind_ip, lease.port());
            match build(shared, handler.clone(), addr).await {
                Ok(pc) => {
                    built = Some((pc, lease));
                    break;
                }
                Err(e) if shared.ports.ranged() => {
                    tracing::warn!(%addr, "relay media port not bound, trying the next: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (pc, lease) = built.ok_or(PeerError::NoMediaPort)?;
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
        let (mut audio, mut video) = (Vec::new(), Vec::new());
        for (kind, n, slots) in [
            (Kind::Audio, AUDIO_SLOTS, &mut audio),
            (Kind::Video, VIDEO_SLOTS, &mut video),
        ] {
            for i in 0..n {
                let slot = Slot::new(kind, i);
                pc.add_track(slot.track.clone() as Arc<dyn TrackLocal>)
                    .await?;
                slots.push(slot);
            }
        }
        Ok((
            RelayPeer {
                pc,
                audio,
                video,
                inbound,
                gathered,
                gathering_done,
            },
            lease,
        ))
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

    /// The local description (the offer, with the gathered candidates) as participants must
    /// see it: behind 1:1 NAT, with the public address in its host candidates ([`crate::nat`]).
    pub(crate) async fn local_sdp(&self, shared: &Shared) -> String {
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
        match shared.public_ip {
            Some(public) => advertise_public_ip(&sdp, shared.bind_ip, public),
            None => sdp,
        }
    }

    /// Applies the participant's SDP answer, and notes the audio-level extension id if the
    /// participant took it (the answer's audio section names it with the offer's id).
    pub(crate) async fn accept_answer(&self, sdp: String) -> Result<(), Error> {
        let id = crate::level::extmap_id(&sdp);
        let desc = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(desc).await?;
        self.inbound.set_level_id(id);
        Ok(())
    }
}

/// Why the relay's side of a participant's connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// webrtc-rs refused.
    #[error(transparent)]
    WebRtc(#[from] Error),
    /// Every port of the relay's UDP range is leased, or none of
    /// [`MAX_MEDIA_PORT_ATTEMPTS`] free ones could be bound.
    #[error("no free port in the relay's UDP port range")]
    NoMediaPort,
}

/// A peer connection with the relay's codecs, interceptors and settings (no mDNS: its socket
/// would be one more UDP port, 5353, outside the range; the relay's candidates are addresses)
/// whose one media socket binds `addr`.
async fn build(
    shared: &Arc<Shared>,
    handler: Arc<Handler>,
    addr: SocketAddr,
) -> Result<Arc<dyn PeerConnection>, Error> {
    let media = nack::media_engine()?;
    let registry = nack::registry(shared.stats.nack.clone());
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec![addr])
        .build()
        .await?;
    Ok(Arc::new(pc))
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
