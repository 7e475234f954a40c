//! [`MediaConfig`]: how one [`MediaPeer`] is built (ICE servers, sources, SFrame suite,
//! sinks).
//!
//! [`MediaPeer`]: super::MediaPeer

use std::net::IpAddr;
use std::path::PathBuf;

use sotto_frame::CipherSuite;
use tokio::sync::mpsc;

use super::{IvfSource, MediaError, OggOpusSource, TapFrame};

/// A STUN or TURN server for ICE.
#[derive(Clone, Default)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub urls: Vec<String>,
    /// TURN username (coturn REST form: `expiry:user`).
    pub username: String,
    /// TURN password.
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Configuration of one [`MediaPeer`].
///
/// [`MediaPeer`]: super::MediaPeer
pub struct MediaConfig {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Use relay candidates only (all media through TURN).
    pub relay_only: bool,
    /// Local address to bind ICE sockets on.
    pub bind: IpAddr,
    /// SFrame cipher suite.
    pub suite: CipherSuite,
    /// Our SFrame sender id (KID high bits), distinct per participant in a call.
    pub sender_id: u64,
    /// Video source (None: send no video).
    pub video: Option<IvfSource>,
    /// Audio source (None: send no audio).
    pub audio: Option<OggOpusSource>,
    /// Where to write what we receive and decrypt (`<prefix>.ivf`, `<prefix>.ogg`).
    pub record_prefix: Option<PathBuf>,
    /// Frames at the encryption boundary, for tests.
    pub tap: Option<mpsc::UnboundedSender<TapFrame>>,
}

impl MediaConfig {
    /// Loopback defaults: no ICE servers, bundled camera 1 and tone, AES-128-GCM.
    pub fn loopback(sender_id: u64) -> Result<Self, MediaError> {
        Ok(MediaConfig {
            ice_servers: Vec::new(),
            relay_only: false,
            bind: IpAddr::from([127, 0, 0, 1]),
            suite: CipherSuite::Aes128GcmSha256_128,
            sender_id,
            video: Some(IvfSource::camera1()?),
            audio: Some(OggOpusSource::tone()?),
            record_prefix: None,
            tap: None,
        })
    }
}
