//! A plain webrtc-rs peer (no SFrame) on loopback: answers an offer once its ICE gathering is
//! complete (non-trickle), and tells when it is connected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::peer_connection::sdp::RTCSessionDescription;
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};

/// How long [`PlainPeer::answer`] waits for ICE gathering (then answers with what it has).
pub const GATHER_LIMIT: Duration = Duration::from_secs(20);
/// How long [`PlainPeer::wait_connected`] waits before it panics.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Called with each remote track (it must not block: spawn a task to read the track).
pub type OnTrack = Box<dyn Fn(Arc<dyn TrackRemote>) + Send + Sync>;

#[derive(Default)]
struct Flags {
    gathered: Notify,
    gathering_done: AtomicBool,
    connected: AtomicBool,
}

struct Handler {
    flags: Arc<Flags>,
    on_track: Option<OnTrack>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.flags.gathering_done.store(true, Ordering::SeqCst);
            self.flags.gathered.notify_waiters();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.flags.connected.store(true, Ordering::SeqCst);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(f) = &self.on_track {
            f(track);
        }
    }
}

/// A webrtc-rs peer connection with the default codecs, bound to `127.0.0.1:0`.
pub struct PlainPeer {
    pub pc: Arc<dyn PeerConnection>,
    flags: Arc<Flags>,
}

impl PlainPeer {
    /// A peer with webrtc-rs's default interceptors that ignores remote tracks.
    pub async fn new() -> PlainPeer {
        PlainPeer::build(None, None).await
    }

    /// A peer with the interceptors of `registry` (webrtc-rs's default if `None`) that hands
    /// each remote track to `on_track`.
    pub async fn build(registry: Option<Registry>, on_track: Option<OnTrack>) -> PlainPeer {
        PlainPeer::build_on("127.0.0.1:0", registry, on_track).await
    }

    /// [`PlainPeer::build`] with its one media socket bound to `addr` (`IP:PORT`).
    pub async fn build_on(
        addr: &str,
        registry: Option<Registry>,
        on_track: Option<OnTrack>,
    ) -> PlainPeer {
        let flags = Arc::new(Flags::default());
        let mut media = MediaEngine::default();
        media.register_default_codecs().unwrap();
        let mut builder = PeerConnectionBuilder::new().with_media_engine(media);
        if let Some(registry) = registry {
            builder = builder.with_interceptor_registry(registry);
        }
        let pc = builder
            .with_handler(Arc::new(Handler {
                flags: flags.clone(),
                on_track,
            }))
            .with_udp_addrs(vec![addr.to_owned()])
            .build()
            .await
            .unwrap();
        PlainPeer {
            pc: Arc::new(pc),
            flags,
        }
    }

    /// Answers `offer`: the local description once ICE gathering is complete (or after
    /// [`GATHER_LIMIT`], with the candidates gathered so far).
    pub async fn answer(&self, offer: String) -> Result<String, webrtc::error::Error> {
        let offer = RTCSessionDescription::offer(offer)?;
        self.pc.set_remote_description(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        Ok(self.gathered_sdp().await)
    }

    /// An offer: the local description once ICE gathering is complete (or after
    /// [`GATHER_LIMIT`]); complete it with [`PlainPeer::accept_answer`].
    pub async fn offer(&self) -> Result<String, webrtc::error::Error> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        Ok(self.gathered_sdp().await)
    }

    /// Applies the remote side's answer to [`PlainPeer::offer`].
    pub async fn accept_answer(&self, answer: String) -> Result<(), webrtc::error::Error> {
        let answer = RTCSessionDescription::answer(answer)?;
        self.pc.set_remote_description(answer).await
    }

    /// The local description once ICE gathering is complete or [`GATHER_LIMIT`] has passed.
    async fn gathered_sdp(&self) -> String {
        let wait = async {
            loop {
                let n = self.flags.gathered.notified();
                if self.flags.gathering_done.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        let _ = tokio::time::timeout(GATHER_LIMIT, wait).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default()
    }

    /// Waits until the peer connection is connected; panics after [`CONNECT_LIMIT`].
    pub async fn wait_connected(&self, name: &str) {
        let t0 = Instant::now();
        while !self.flags.connected.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < CONNECT_LIMIT, "{name}: not connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
