//! The seam between the call driver and a media engine. The webrtc-rs [`MediaPeer`] is one
//! implementation; a browser page driven over a WebSocket is meant to be the next, without
//! touching the call core. Every method is data plane or transport: which key to use and when
//! is decided by the core and arrives here as [`MediaBackend::use_send_key`] and friends.

use async_trait::async_trait;
use sotto_frame::KeyMaterial;

use super::{IvfSource, MediaError, MediaPeer, MediaStats};

/// What the call driver needs from a media engine.
#[async_trait]
pub trait MediaBackend: Send + Sync {
    /// Trickle offer SDP (candidates follow as events).
    async fn create_offer(&self) -> Result<String, MediaError>;
    /// Applies the peer's offer; trickle answer SDP.
    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError>;
    /// Applies a relay's offer; answer SDP with every candidate gathered.
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
        MediaPeer::accept_offer(self, sdp).await
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
