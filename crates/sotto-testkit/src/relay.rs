//! Participants joining a room of a sotto-relay: sotto media peers (SFrame, with a tap) or
//! plain webrtc-rs peers sending VP8-shaped RTP.

use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_call::media::{MediaConfig, MediaPeer};
use sotto_relay::client::{join, ClientTls, RoomHandle};
use sotto_relay::feedback::KeyframeRequests;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use crate::media::{tapped, Leg, Tap};
use crate::plain::{OnTrack, PlainPeer};

/// A sotto media peer joined to a relay room, with the tap of every frame it sent or
/// decrypted.
pub struct MediaParticipant {
    pub name: String,
    pub peer: Arc<MediaPeer>,
    pub tap: Tap,
    pub room: RoomHandle,
}

/// Joins `room` at the relay `url` as `name` with a loopback media configuration (sender id
/// `id`); panics unless connected to the relay within 20 s.
pub async fn participant(url: &str, room: &str, name: &str, id: u64) -> MediaParticipant {
    participant_with(url, room, name, MediaConfig::loopback(id).unwrap()).await
}

/// [`participant`] with a given media configuration (its tap is replaced).
pub async fn participant_with(
    url: &str,
    room: &str,
    name: &str,
    c: MediaConfig,
) -> MediaParticipant {
    let Leg { peer, tap } = tapped(c).await;
    let peer = Arc::new(peer);
    let p2 = peer.clone();
    let handle = join(url, &ClientTls::default(), room, name, |offer| async move {
        p2.accept_relay_offer(&offer).await
    })
    .await
    .unwrap();
    assert!(
        peer.wait_connected(Duration::from_secs(20)).await,
        "{name} not connected to the relay"
    );
    MediaParticipant {
        name: name.into(),
        peer,
        tap,
        room: handle,
    }
}

/// A plain webrtc-rs participant in a relay room, with one VP8 video track if it sends.
pub struct RtpParticipant {
    pub pc: Arc<dyn PeerConnection>,
    /// The SSRC of its video track (also drawn for a receive-only participant).
    pub ssrc: u32,
    /// `None`: receive-only.
    pub video: Option<Arc<TrackLocalStaticRTP>>,
    pub room: RoomHandle,
}

/// Joins `room` at the relay `url` as `name`: a plain peer with the relay's keyframe-request
/// interceptor, a VP8 track with a random SSRC (added only if `sends`; nothing is written to
/// it), each remote track handed to `on_track`. Answers once ICE gathering is complete; panics
/// unless connected within [`CONNECT_LIMIT`](crate::plain::CONNECT_LIMIT).
pub async fn rtp_participant(
    url: &str,
    room: &str,
    name: &str,
    sends: bool,
    on_track: OnTrack,
) -> RtpParticipant {
    let registry = Registry::new().with(Slot::from(14_000), KeyframeRequests::default());
    let peer = PlainPeer::build(Some(registry), Some(on_track)).await;
    let ssrc = rand::random::<u32>();
    let video = Arc::new(vp8_track(name, ssrc));
    let video = if sends {
        peer.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        Some(video)
    } else {
        None
    };
    let handle = join(url, &ClientTls::default(), room, name, |offer| {
        peer.answer(offer)
    })
    .await
    .unwrap();
    peer.wait_connected(name).await;
    RtpParticipant {
        pc: peer.pc.clone(),
        ssrc,
        video,
        room: handle,
    }
}

/// A local VP8 video track of `name` (stream `NAME-stream`, id `NAME-video`) sending with
/// `ssrc`.
pub fn vp8_track(name: &str, ssrc: u32) -> TrackLocalStaticRTP {
    TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{name}-stream"),
        format!("{name}-video"),
        format!("{name}-video"),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    ))
}
