//! The `sotto-server` TOML configuration file. Command-line flags and `SOTTO_*` environment
//! variables override it (flags win over environment, environment over the file).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! db = "/var/lib/sotto/signaling.db"
//! server_id = "sotto.example.org"
//! durability = "full"            # or "normal" (see SqliteStore)
//! metrics_listen = "127.0.0.1:9100"
//! relay_token_ttl_secs = 180      # lifetime of relay tokens (at most 3600)
//!
//! [store]                         # optional; default: SQLite in `db`
//! backend = "postgres"            # "sqlite" (default) or "postgres" (see PgStore)
//! url = "postgres://sotto@db.example.org/sotto"   # libpq-style URL or "host=… user=…"
//!
//! [cluster]                       # several servers on one PostgreSQL
//! nats_url = "nats://127.0.0.1:4222"   # the doorbell between them (see doorbell.rs)
//! node_id = "node-1"              # optional; this node's name in connection claims (default: random)
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
//! bundle_fetches_per_minute = 30
//! one_time_prekeys_per_target_per_minute = 10
//! one_time_prekey_repeat_window_secs = 3600
//! max_devices_per_account = 8
//! max_queued_per_sender = 64
//! registrations_per_address_per_hour = 20
//!
//! [turn]
//! secret = "the coturn static-auth-secret"
//! # the ICE servers clients use by default (STUN and TURN; credentials go to turn: ones)
//! uris = ["stun:turn.example.org:3478", "turn:turn.example.org:3478?transport=udp"]
//! ttl_secs = 600
//!
//! [[relays]]                      # one per relay the server mints tokens for
//! url = "wss://relay.example.org:8443"          # the relay's --public-url
//! secret_file = "/etc/sotto/relay-token.secret" # the relay's --token-secret-file
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sotto_tls::TlsFiles;

use crate::error::{Error, Result};
use crate::server::{Limits, RelayEntry};
use crate::store::{Durability, PgUrl};
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
    /// Storage backend.
    #[serde(default)]
    pub store: StoreFile,
    /// Servers sharing one PostgreSQL.
    #[serde(default)]
    pub cluster: ClusterFile,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Certificate and key.
    #[serde(default)]
    pub tls: TlsFile,
    /// TURN.
    pub turn: Option<TurnFile>,
    /// Relay token lifetime, seconds.
    pub relay_token_ttl_secs: Option<u64>,
    /// Relays the server mints tokens for.
    #[serde(default)]
    pub relays: Vec<RelayFile>,
}

/// `[[relays]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// The relay's public control URL.
    pub url: String,
    /// The file holding the secret shared with it.
    pub secret_file: PathBuf,
}

impl RelayFile {
    /// `URL=SECRET_FILE` (the `--relay` flag).
    ///
    /// # Errors
    /// [`Error::Config`] without the `=`.
    pub fn parse_flag(s: &str) -> Result<RelayFile> {
        let (url, file) = s
            .split_once('=')
            .ok_or_else(|| Error::Config("--relay takes URL=SECRET_FILE".into()))?;
        Ok(RelayFile {
            url: url.to_owned(),
            secret_file: PathBuf::from(file),
        })
    }

    /// Reads the secret file.
    ///
    /// # Errors
    /// [`Error::Config`]: unreadable, too short or too long, or a URL over
    /// `sotto_admission::consts::MAX_RELAY_URL`.
    pub fn load(&self) -> Result<RelayEntry> {
        if self.url.is_empty() || self.url.len() > sotto_admission::consts::MAX_RELAY_URL {
            return Err(Error::Config("relay url out of range".into()));
        }
        let secret = sotto_admission::RelaySecret::load(&self.secret_file)
            .map_err(|e| Error::Config(format!("{}: {e}", self.secret_file.display())))?;
        Ok(RelayEntry {
            url: self.url.clone(),
            secret,
        })
    }
}

/// A relay token lifetime: 1..=`sotto_admission::consts::MAX_TTL_SECS`.
///
/// # Errors
/// [`Error::Config`] out of range.
pub fn relay_token_ttl(secs: u64) -> Result<u64> {
    if secs == 0 || secs > sotto_admission::consts::MAX_TTL_SECS {
        return Err(Error::Config(format!(
            "relay_token_ttl_secs must be 1..={}",
            sotto_admission::consts::MAX_TTL_SECS
        )));
    }
    Ok(secs)
}

/// `[store]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite` (default) or `postgres`.
    pub backend: Option<String>,
    /// PostgreSQL connection string (may hold a password: never printed).
    pub url: Option<String>,
}

impl std::fmt::Debug for StoreFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFile")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[cluster]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// NATS URL of the doorbell (may hold credentials: never printed).
    pub nats_url: Option<String>,
    /// This node's name, recorded with each device's connection claim.
    pub node_id: Option<String>,
}

impl std::fmt::Debug for ClusterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFile")
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<redacted>"))
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Which store a server runs on.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// SQLite in this file (`:memory:`: a throwaway RAM store), with this durability.
    Sqlite {
        /// Database file.
        db: PathBuf,
        /// Commit durability.
        durability: Durability,
    },
    /// PostgreSQL at this connection string.
    Postgres {
        /// Connection string.
        url: PgUrl,
    },
}

/// The backend named by `backend` (flag, environment or file; default `sqlite`) with its
/// settings; a PostgreSQL URL alone selects PostgreSQL.
///
/// # Errors
/// [`Error::Config`]: an unknown backend, or `postgres` without a URL.
pub fn store_choice(
    backend: Option<&str>,
    url: Option<String>,
    db: PathBuf,
    durability: Durability,
) -> Result<StoreChoice> {
    match (backend, url) {
        (None | Some("sqlite"), None) | (Some("sqlite"), Some(_)) => {
            Ok(StoreChoice::Sqlite { db, durability })
        }
        (None | Some("postgres"), Some(url)) => Ok(StoreChoice::Postgres {
            url: PgUrl::new(url),
        }),
        (Some("postgres"), None) => Err(Error::Config(
            "store backend postgres needs a url ([store] url or --postgres-url)".into(),
        )),
        (Some(_), _) => Err(Error::Config(
            "store backend must be sqlite or postgres".into(),
        )),
    }
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
    pub bundle_fetches_per_minute: Option<u32>,
    pub one_time_prekeys_per_target_per_minute: Option<u32>,
    pub one_time_prekey_repeat_window_secs: Option<u64>,
    pub max_devices_per_account: Option<usize>,
    pub max_queued_per_sender: Option<usize>,
    pub registrations_per_address_per_hour: Option<u32>,
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
        if let Some(v) = f.bundle_fetches_per_minute {
            l.bundle_fetches_per_minute = v;
        }
        if let Some(v) = f.one_time_prekeys_per_target_per_minute {
            l.one_time_prekeys_per_target_per_minute = v;
        }
        if let Some(v) = f.one_time_prekey_repeat_window_secs {
            l.one_time_prekey_repeat_window = Duration::from_secs(v);
        }
        if let Some(v) = f.max_devices_per_account {
            l.max_devices_per_account = v;
        }
        if let Some(v) = f.max_queued_per_sender {
            l.max_queued_per_sender = v;
        }
        if let Some(v) = f.registrations_per_address_per_hour {
            l.registrations_per_address_per_hour = v;
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
#[allow(clippy::unwrap_used)]
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
bundle_fetches_per_minute = 7
one_time_prekey_repeat_window_secs = 60
max_devices_per_account = 2
max_queued_per_sender = 4
registrations_per_address_per_hour = 3
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
        assert_eq!(l.bundle_fetches_per_minute, 7);
        assert_eq!(l.one_time_prekey_repeat_window, Duration::from_secs(60));
        assert_eq!(l.max_devices_per_account, 2);
        assert_eq!(l.max_queued_per_sender, 4);
        assert_eq!(l.registrations_per_address_per_hour, 3);
        assert_eq!(
            l.one_time_prekeys_per_target_per_minute,
            crate::consts::ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE
        );
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
    fn relays_load_their_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("relay.secret");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
        let short = dir.path().join("short.secret");
        std::fs::write(&short, "too short").unwrap();
        let text = format!(
            "relay_token_ttl_secs = 120\n[[relays]]\nurl = \"wss://r.example:8443\"\nsecret_file = \"{}\"\n[[relays]]\nurl = \"wss://s.example\"\nsecret_file = \"{}\"\n",
            good.display(),
            short.display()
        );
        let c = FileConfig::parse(&text).unwrap();
        assert_eq!(c.relay_token_ttl_secs, Some(120));
        assert_eq!(c.relays.len(), 2);
        let r = c.relays[0].load().unwrap();
        assert_eq!(r.url, "wss://r.example:8443");
        assert!(!format!("{r:?}").contains("0123456789abcdef"));
        assert!(matches!(c.relays[1].load(), Err(Error::Config(_))));
        let flag = RelayFile::parse_flag("wss://r.example:8443=/etc/x").unwrap();
        assert_eq!(flag.secret_file, PathBuf::from("/etc/x"));
        assert!(RelayFile::parse_flag("wss://r.example").is_err());
        assert!(relay_token_ttl(0).is_err());
        assert!(relay_token_ttl(sotto_admission::consts::MAX_TTL_SECS + 1).is_err());
        assert_eq!(relay_token_ttl(180).unwrap(), 180);
    }

    #[test]
    fn the_store_section_selects_postgres() {
        let c = FileConfig::parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://u:secret@h/db\"\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
        let pick = |b: Option<&str>, u: Option<&str>| {
            store_choice(b, u.map(str::to_owned), "x.db".into(), Durability::Full)
        };
        let url = c.store.url.as_deref();
        match pick(c.store.backend.as_deref(), url).unwrap() {
            StoreChoice::Postgres { url } => assert!(!format!("{url:?}").contains("secret")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick(None, None).unwrap(),
            StoreChoice::Sqlite { .. }
        ));
        assert!(matches!(
            pick(None, Some("host=h")).unwrap(),
            StoreChoice::Postgres { .. }
        ));
        assert!(matches!(
            pick(Some("postgres"), None),
            Err(Error::Config(_))
        ));
        assert!(matches!(pick(Some("mysql"), None), Err(Error::Config(_))));
        assert!(FileConfig::parse("[store]\nbackend = \"postgres\"\nuri = \"x\"\n").is_err());
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
