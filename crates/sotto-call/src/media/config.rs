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
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turn:host:port?transport=tcp` or
    /// `turns:host:port` (TCP and TLS go through a loopback bridge: webrtc-rs speaks UDP TURN
    /// only).
    pub urls: Vec<String>,
    /// TURN username (coturn REST form: `expiry:user`).
    pub username: String,
    /// TURN password.
    pub credential: String,
}

impl IceServer {
    /// The ICE servers for `urls` (STUN and TURN, in any mix): `stun:`/`stuns:` URLs without
    /// credentials, `turn:`/`turns:` URLs with the TURN `username` and `credential` (coturn
    /// REST credentials from the signaling server). Empty when `urls` is.
    pub fn for_urls(urls: &[String], username: &str, credential: &str) -> Vec<IceServer> {
        let is_turn = |u: &String| u.starts_with("turn:") || u.starts_with("turns:");
        let stun: Vec<String> = urls.iter().filter(|u| !is_turn(u)).cloned().collect();
        let turn: Vec<String> = urls.iter().filter(|u| is_turn(u)).cloned().collect();
        let mut out = Vec::new();
        if !stun.is_empty() {
            out.push(IceServer {
                urls: stun,
                ..IceServer::default()
            });
        }
        if !turn.is_empty() {
            out.push(IceServer {
                urls: turn,
                username: username.to_owned(),
                credential: credential.to_owned(),
            });
        }
        out
    }
}

impl std::fmt::Debug for IceServer {
    // the credential is a TURN password: never printed
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
    /// Trust for `turns:` servers (the system's roots, plus the user's `--ca`).
    pub turn_tls: sotto_tls::ClientTls,
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
            turn_tls: sotto_tls::ClientTls::default(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_turn_urls_become_two_servers_and_only_turn_carries_credentials() {
        let urls = [
            "stun:203.0.113.1:3478",
            "turn:203.0.113.1:3478?transport=udp",
            "turn:203.0.113.1:3478?transport=tcp",
        ]
        .map(str::to_owned);
        let s = IceServer::for_urls(&urls, "1700000000:alice.1", "pw");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].urls, vec![urls[0].clone()]);
        assert!(s[0].username.is_empty() && s[0].credential.is_empty());
        assert_eq!(s[1].urls, urls[1..].to_vec());
        assert_eq!(s[1].username, "1700000000:alice.1");
        assert!(IceServer::for_urls(&[], "u", "p").is_empty());
        assert!(!format!("{s:?}").contains("pw"), "credential printed");
    }
}
