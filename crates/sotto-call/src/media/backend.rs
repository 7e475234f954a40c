//! The seam between the call driver and a media engine. The webrtc-rs [`MediaPeer`] is one
//! implementation; a browser page driven over a WebSocket is meant to be the next, without
//! touching the call core. Every method is data plane or transport: which key to use and when
//! is decided by the core and arrives here as [`MediaBackend::use_send_key`] and friends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use sotto_frame::KeyMaterial;

use super::{IvfSource, MediaConfig, MediaError, MediaEvents, MediaPeer, MediaStats};

/// A media backend being built: the backend and its events.
pub type MediaMaking =
    Pin<Box<dyn Future<Output = Result<(Arc<dyn MediaBackend>, MediaEvents), MediaError>> + Send>>;

/// Builds each call's media. The driver asks once per call, with our SFrame sender id (the keys
/// the core hands the backend carry it).
pub trait MediaMaker: Send {
    /// Starts building the media for one call.
    fn make(&self, sender_id: u64) -> MediaMaking;
}

/// Builds the webrtc-rs media configuration for each call (sources, ICE servers, recording).
pub type MediaFactory = Box<dyn Fn(u64) -> Result<MediaConfig, MediaError> + Send>;

/// The webrtc-rs backend: a [`MediaPeer`] per call, configured by a [`MediaFactory`].
pub struct WebrtcMedia(pub MediaFactory);

impl MediaMaker for WebrtcMedia {
    fn make(&self, sender_id: u64) -> MediaMaking {
        let cfg = (self.0)(sender_id);
        Box::pin(async move { make_webrtc(cfg?, sender_id).await })
    }
}

/// Builds a webrtc-rs [`MediaPeer`] for one call from `cfg`, with our SFrame sender id: for
/// [`MediaMaker`]s that prepare the configuration asynchronously (e.g. with fresh TURN
/// credentials).
pub async fn make_webrtc(
    mut cfg: MediaConfig,
    sender_id: u64,
) -> Result<(Arc<dyn MediaBackend>, MediaEvents), MediaError> {
    // receivers check that our keys carry our own id
    cfg.sender_id = sender_id;
    let (peer, events) = MediaPeer::new(cfg).await?;
    Ok((Arc::new(peer) as Arc<dyn MediaBackend>, events))
}

/// What the call driver needs from a media engine.
#[async_trait]
pub trait MediaBackend: Send + Sync {
    /// Trickle offer SDP (candidates follow as events).
    async fn create_offer(&self) -> Result<String, MediaError>;
    /// Applies the peer's offer; trickle answer SDP.
    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError>;
    /// Applies a relay's offer; answer SDP with the candidates gathered (all of them, or those
    /// there are after [`RELAY_GATHER_WAIT`]).
    ///
    /// [`RELAY_GATHER_WAIT`]: super::consts::RELAY_GATHER_WAIT
    async fn answer_relay_offer(&self, sdp: &str) -> Result<String, MediaError>;
    /// Applies the peer's answer.
    async fn apply_answer(&self, sdp: &str) -> Result<(), MediaError>;
    /// Adds a trickled remote candidate (JSON).
    async fn add_remote_candidate(&self, json: &str) -> Result<(), MediaError>;
    /// Encrypt under this key from now on (never goes back).
    fn use_send_key(&self, material: &KeyMaterial) -> Result<(), MediaError>;
    /// Adds a member's key to the receive ring.
    fn install_remote_key(&self, material: &KeyMaterial) -> Result<(), MediaError>;
    /// Forgets every key of a sender id.
    fn forget_sender(&self, sender: u64);
    /// Mute flags.
    fn set_muted(&self, audio: bool, video: bool);
    /// Starts streaming.
    async fn start_sending(&self) -> Result<(), MediaError>;
    /// Replaces the video source (no renegotiation).
    fn switch_video_source(&self, src: IvfSource);
    /// Name of the current video source.
    fn video_source_name(&self) -> Option<String>;
    /// Built for relay (TURN) candidates only.
    fn relay_only(&self) -> bool;
    /// Counters and path.
    async fn stats(&self) -> MediaStats;
    /// Releases everything.
    async fn close(&self);
}

#[async_trait]
impl MediaBackend for MediaPeer {
    async fn create_offer(&self) -> Result<String, MediaError> {
        self.create_offer_trickle().await
    }
    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError> {
        self.accept_offer_trickle(sdp).await
    }
    async fn answer_relay_offer(&self, sdp: &str) -> Result<String, MediaError> {
        MediaPeer::accept_relay_offer(self, sdp).await
    }
    async fn apply_answer(&self, sdp: &str) -> Result<(), MediaError> {
        self.accept_answer(sdp).await
    }
    async fn add_remote_candidate(&self, json: &str) -> Result<(), MediaError> {
        MediaPeer::add_remote_candidate(self, json).await
    }
    fn use_send_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        MediaPeer::use_send_key(self, material)
    }
    fn install_remote_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        MediaPeer::install_remote_key(self, material)
    }
    fn forget_sender(&self, sender: u64) {
        MediaPeer::forget_sender(self, sender)
    }
    fn set_muted(&self, audio: bool, video: bool) {
        self.set_audio_muted(audio);
        self.set_video_muted(video);
    }
    async fn start_sending(&self) -> Result<(), MediaError> {
        MediaPeer::start_sending(self).await
    }
    fn switch_video_source(&self, src: IvfSource) {
        MediaPeer::switch_video_source(self, src)
    }
    fn video_source_name(&self) -> Option<String> {
        MediaPeer::video_source_name(self)
    }
    fn relay_only(&self) -> bool {
        MediaPeer::relay_only(self)
    }
    async fn stats(&self) -> MediaStats {
        MediaPeer::stats(self).await
    }
    async fn close(&self) {
        let _ = MediaPeer::close(self).await;
    }
}
