//! A sotto-relay on loopback with its token secret ([`TestRelay`]), tokens minted as the
//! signaling server mints them, and participants joining its rooms: sotto media peers (SFrame,
//! with a tap) or plain webrtc-rs peers sending VP8-shaped RTP.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_admission::{mint, Claims, RelaySecret, RelayToken};
use sotto_call::media::{MediaConfig, MediaPeer};
use sotto_relay::client::{join, ClientTls, RoomHandle};
use sotto_relay::feedback::KeyframeRequests;
use sotto_relay::{serve, Relay, RelayConfig};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use crate::media::{tapped, Leg, Tap};
use crate::plain::{OnTrack, PlainPeer};

/// How long the tokens [`TestRelay::token`] mints stay valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);

/// A fresh random relay secret (what `sotto demo` and a deployment's secret file hold).
pub fn relay_secret() -> RelaySecret {
    let text = RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
    RelaySecret::from_bytes(text.as_bytes()).unwrap()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A token for `participant` in `room` at the relay `relay_url`, minted now with `secret`,
/// valid for [`TOKEN_TTL`].
pub fn mint_token(
    secret: &RelaySecret,
    relay_url: &str,
    room: &str,
    participant: &str,
) -> RelayToken {
    let now = now_ms();
    mint(
        secret,
        &Claims {
            relay: relay_url.into(),
            room: room.into(),
            participant: participant.into(),
            issued_at_ms: now,
            expires_at_ms: now + TOKEN_TTL.as_millis() as u64,
        },
    )
    .unwrap()
}

/// Where a participant joins and how it gets its token: a relay's control URL and a token
/// minter with the relay's secret (the signaling server's part, in tests).
pub trait RelayAccess {
    /// The control URL participants connect to.
    fn control_url(&self) -> String;
    /// A valid token for `participant` in `room`.
    fn token(&self, room: &str, participant: &str) -> RelayToken;
}

/// A relay known by its URL and secret only (e.g. one running in another process whose
/// public URL is its control URL).
pub struct RemoteRelay {
    pub url: String,
    pub secret: RelaySecret,
}

impl RelayAccess for RemoteRelay {
    fn control_url(&self) -> String {
        self.url.clone()
    }
    fn token(&self, room: &str, participant: &str) -> RelayToken {
        mint_token(&self.secret, &self.url, room, participant)
    }
}

impl RelayAccess for TestRelay {
    fn control_url(&self) -> String {
        self.relay.url()
    }
    fn token(&self, room: &str, participant: &str) -> RelayToken {
        TestRelay::token(self, room, participant)
    }
}

/// A TCP connection to `to` from the loopback address `ip` (Linux routes all of 127/8 to lo):
/// how a test is another client address.
///
/// # Panics
/// If the socket cannot be bound or connected.
#[allow(clippy::unwrap_used)]
pub async fn connect_from(ip: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
    s.connect(to).await.unwrap()
}

/// A running relay and the secret its tokens are minted with. Derefs to the [`Relay`].
pub struct TestRelay {
    pub relay: Relay,
    pub secret: RelaySecret,
    /// The relay's own runtime ([`TestRelay::start_isolated`]), if it has one.
    isolated: Option<RelayRuntime>,
}

/// The name of the isolated relay runtime's threads ([`TestRelay::start_isolated`]).
pub const RELAY_THREAD: &str = "sotto-relay-rt";

/// A runtime of the relay's own, shut down in the background when dropped (a runtime may not be
/// dropped in place inside another one's task).
struct RelayRuntime(Option<tokio::runtime::Runtime>);

impl Drop for RelayRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// CPU time (user + system) of this process's threads named `name`, from
/// `/proc/self/task/*/stat` (clock ticks of 10 ms, Linux's `USER_HZ`).
pub fn threads_cpu(name: &str) -> Duration {
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ppid ...": comm may hold spaces, so split at the last ')'
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        // fields 14 and 15 (utime, stime) are the 12th and 13th after the comm
        ticks += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    Duration::from_millis(ticks * 10)
}

impl TestRelay {
    /// A loopback relay ([`RelayConfig::loopback`]) with a fresh secret.
    pub async fn start() -> TestRelay {
        TestRelay::start_with(|_| {}).await
    }

    /// [`TestRelay::start`] with the configuration changed by `f` first.
    pub async fn start_with(f: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let secret = relay_secret();
        let mut cfg = RelayConfig::loopback(secret.clone());
        f(&mut cfg);
        let secret = cfg.token_secret.clone();
        TestRelay {
            relay: serve(cfg).await.unwrap(),
            secret,
            isolated: None,
        }
    }

    /// [`TestRelay::start_with`], on a runtime of the relay's own (two worker threads named
    /// [`RELAY_THREAD`], like `sotto relay`), so [`TestRelay::cpu`] is the relay's CPU alone:
    /// its peer connections' tasks run where the relay's sessions create them.
    pub async fn start_isolated(f: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let secret = relay_secret();
        let mut cfg = RelayConfig::loopback(secret.clone());
        f(&mut cfg);
        let secret = cfg.token_secret.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(RELAY_THREAD)
            .enable_all()
            .build()
            .unwrap();
        let relay = rt.spawn(serve(cfg)).await.unwrap().unwrap();
        TestRelay {
            relay,
            secret,
            isolated: Some(RelayRuntime(Some(rt))),
        }
    }

    /// CPU time the relay's own runtime used so far (`None` unless
    /// [`TestRelay::start_isolated`]).
    pub fn cpu(&self) -> Option<Duration> {
        self.isolated.as_ref().map(|_| threads_cpu(RELAY_THREAD))
    }

    /// A valid token for `participant` in `room` at this relay (its public URL).
    pub fn token(&self, room: &str, participant: &str) -> RelayToken {
        mint_token(&self.secret, self.relay.public_url(), room, participant)
    }

    /// Stops the relay (and its own runtime, if it has one).
    pub async fn shutdown(self) {
        self.relay.shutdown().await;
        drop(self.isolated);
    }
}

impl Deref for TestRelay {
    type Target = Relay;
    fn deref(&self) -> &Relay {
        &self.relay
    }
}

/// A sotto media peer joined to a relay room, with the tap of every frame it sent or
/// decrypted.
pub struct MediaParticipant {
    pub name: String,
    pub peer: Arc<MediaPeer>,
    pub tap: Tap,
    pub room: RoomHandle,
    /// The SDP offer the relay sent it (its candidates show where the relay takes media).
    pub relay_offer: String,
}

/// Joins `room` at `relay` as `name` (with a valid token) with a loopback media
/// configuration (sender id `id`); panics unless connected to the relay within 20 s.
pub async fn participant(
    relay: &impl RelayAccess,
    room: &str,
    name: &str,
    id: u64,
) -> MediaParticipant {
    participant_with(relay, room, name, MediaConfig::loopback(id).unwrap()).await
}

/// [`participant`] with a given media configuration (its tap is replaced).
pub async fn participant_with(
    relay: &impl RelayAccess,
    room: &str,
    name: &str,
    c: MediaConfig,
) -> MediaParticipant {
    let Leg { peer, tap } = tapped(c).await;
    let peer = Arc::new(peer);
    let p2 = peer.clone();
    let token = relay.token(room, name);
    let offered = Arc::new(std::sync::Mutex::new(String::new()));
    let o2 = offered.clone();
    let handle = join(
        &relay.control_url(),
        &ClientTls::default(),
        room,
        name,
        Some(&token),
        |offer| async move {
            o2.lock().unwrap().clone_from(&offer);
            p2.accept_relay_offer(&offer).await
        },
    )
    .await
    .unwrap();
    let relay_offer = offered.lock().unwrap().clone();
    assert!(
        peer.wait_connected(Duration::from_secs(20)).await,
        "{name} not connected to the relay"
    );
    MediaParticipant {
        name: name.into(),
        peer,
        tap,
        room: handle,
        relay_offer,
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

/// Joins `room` at `relay` as `name` (with a valid token): a plain peer with the relay's keyframe-request
/// interceptor, a VP8 track with a random SSRC (added only if `sends`; nothing is written to
/// it), each remote track handed to `on_track`. Answers once ICE gathering is complete; panics
/// unless connected within [`CONNECT_LIMIT`](crate::plain::CONNECT_LIMIT).
pub async fn rtp_participant(
    relay: &impl RelayAccess,
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
    let token = relay.token(room, name);
    let handle = join(
        &relay.control_url(),
        &ClientTls::default(),
        room,
        name,
        Some(&token),
        |offer| peer.answer(offer),
    )
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
