//! The `sotto-server` TOML configuration file. Command-line flags and `SOTTO_*` environment
//! variables override it (flags win over environment, environment over the file).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! db = "/var/lib/sotto/signaling.db"
//! server_id = "sotto.example.org"
//! durability = "full"            # or "normal" (see SqliteStore)
//! metrics_listen = "127.0.0.1:9100"
//!
//! [tls]                           # both or neither; without them plain ws:// (loopback only)
//! cert = "/etc/sotto/fullchain.pem"   # PEM certificate chain, leaf first
//! key = "/etc/sotto/privkey.pem"      # PEM private key (re-read with the chain on SIGHUP)
//!
//! [limits]                        # every key optional; defaults in consts.rs
//! max_frame_bytes = 65536
//! max_queued_per_device = 1000
//! envelopes_per_second = 100
//! envelope_burst = 200
//! max_connections_per_addr = 32
//! max_authenticated_per_addr = 1024
//! auth_timeout_secs = 10
//! max_envelope_ttl_secs = 86400
//!
//! [turn]
//! secret = "the coturn static-auth-secret"
//! # the ICE servers clients use by default (STUN and TURN; credentials go to turn: ones)
//! uris = ["stun:turn.example.org:3478", "turn:turn.example.org:3478?transport=udp"]
//! ttl_secs = 600
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sotto_tls::TlsFiles;

use crate::error::{Error, Result};
use crate::server::Limits;
use crate::store::Durability;
use crate::turn::TurnConfig;

/// The file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<String>,
    /// SQLite database path.
    pub db: Option<String>,
    /// Server identity bound into auth signatures.
    pub server_id: Option<String>,
    /// `full` or `normal`.
    pub durability: Option<String>,
    /// Prometheus endpoint address.
    pub metrics_listen: Option<String>,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Certificate and key.
    #[serde(default)]
    pub tls: TlsFile,
    /// TURN.
    pub turn: Option<TurnFile>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LimitsFile {
    pub max_frame_bytes: Option<usize>,
    pub max_queued_per_device: Option<usize>,
    pub envelopes_per_second: Option<u32>,
    pub envelope_burst: Option<u32>,
    pub max_connections_per_addr: Option<usize>,
    /// Logged-in connections per address.
    pub max_authenticated_per_addr: Option<usize>,
    pub auth_timeout_secs: Option<u64>,
    pub max_envelope_ttl_secs: Option<u64>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key of the leaf.
    pub key: Option<PathBuf>,
}

/// `cert` and `key` as the server's TLS files: both or neither.
///
/// # Errors
/// [`Error::Config`] when only one is given.
pub fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(TlsFiles::new(c, k))),
        (None, None) => Ok(None),
        _ => Err(Error::Config(
            "a TLS certificate needs its key and a key its certificate (tls cert and key)".into(),
        )),
    }
}

/// `[turn]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TurnFile {
    pub secret: Option<String>,
    #[serde(default)]
    pub uris: Vec<String>,
    pub ttl_secs: Option<u64>,
}

impl FileConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Limits with the file's overrides applied.
    pub fn limits(&self) -> Limits {
        let mut l = Limits::default();
        let f = &self.limits;
        if let Some(v) = f.max_frame_bytes {
            l.max_frame_bytes = v;
        }
        if let Some(v) = f.max_queued_per_device {
            l.max_queued_per_device = v;
        }
        if let Some(v) = f.envelopes_per_second {
            l.envelopes_per_second = v;
        }
        if let Some(v) = f.envelope_burst {
            l.envelope_burst = v;
        }
        if let Some(v) = f.max_connections_per_addr {
            l.max_connections_per_addr = v;
        }
        if let Some(v) = f.max_authenticated_per_addr {
            l.max_authenticated_per_addr = v;
        }
        if let Some(v) = f.auth_timeout_secs {
            l.auth_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.max_envelope_ttl_secs {
            l.max_envelope_ttl_secs = v;
        }
        l
    }

    /// The `[tls]` files, if both are given.
    ///
    /// # Errors
    /// Only one of `cert` and `key`.
    pub fn tls(&self) -> Result<Option<TlsFiles>> {
        tls_files(self.tls.cert.clone(), self.tls.key.clone())
    }

    /// `full` (default) or `normal`.
    pub fn durability(&self) -> Result<Durability> {
        match self.durability.as_deref() {
            None | Some("full") => Ok(Durability::Full),
            Some("normal") => Ok(Durability::Normal),
            Some(_) => Err(Error::Config("durability must be full or normal".into())),
        }
    }

    /// TURN settings, with `secret_override` (from the environment) taking precedence.
    pub fn turn(&self, secret_override: Option<String>) -> Option<TurnConfig> {
        let t = self.turn.as_ref();
        let secret = secret_override.or_else(|| t.and_then(|t| t.secret.clone()))?;
        Some(TurnConfig {
            secret: secret.into_bytes(),
            uris: t.map(|t| t.uris.clone()).unwrap_or_default(),
            ttl_secs: t
                .and_then(|t| t.ttl_secs)
                .unwrap_or(crate::consts::TURN_CREDENTIAL_TTL_SECS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_example() {
        let text = r#"
listen = "0.0.0.0:8443"
db = "/tmp/x.db"
server_id = "s"
durability = "normal"
[limits]
max_queued_per_device = 5
auth_timeout_secs = 3
[tls]
cert = "/etc/c.pem"
key = "/etc/k.pem"
[turn]
secret = "k"
uris = ["turn:a:3478"]
"#;
        let c = FileConfig::parse(text).unwrap();
        assert_eq!(c.durability().unwrap(), Durability::Normal);
        let l = c.limits();
        assert_eq!(l.max_queued_per_device, 5);
        assert_eq!(l.auth_timeout, Duration::from_secs(3));
        assert_eq!(l.max_frame_bytes, crate::consts::MAX_FRAME_BYTES);
        let t = c.turn(None).unwrap();
        assert_eq!(t.secret, b"k");
        assert_eq!(t.ttl_secs, crate::consts::TURN_CREDENTIAL_TTL_SECS);
        assert_eq!(c.turn(Some("env".into())).unwrap().secret, b"env");
        assert_eq!(
            c.tls().unwrap(),
            Some(TlsFiles::new("/etc/c.pem", "/etc/k.pem"))
        );
    }

    #[test]
    fn a_tls_certificate_without_its_key_is_refused() {
        assert!(FileConfig::parse("[tls]\ncert = \"c.pem\"\n")
            .unwrap()
            .tls()
            .is_err());
        assert!(FileConfig::parse("[tls]\nkey = \"k.pem\"\n")
            .unwrap()
            .tls()
            .is_err());
        assert_eq!(FileConfig::default().tls().unwrap(), None);
        assert!(FileConfig::parse("[tls]\ncertificate = \"c.pem\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(FileConfig::parse("lisen = \"x\"").is_err());
        assert!(FileConfig::parse("durability = \"fast\"")
            .unwrap()
            .durability()
            .is_err());
    }
}
