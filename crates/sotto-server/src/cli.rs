//! The server's command line, as a library: [`ServerArgs`] (a [`clap::Args`] group) and [`run`].
//! The `sotto-server` binary is a thin wrapper; the `sotto` CLI flattens the same flags into
//! `sotto server`.
//!
//! Precedence: command-line flag, then `SOTTO_*` environment variable, then the TOML file
//! (`--config`, see [`crate::config`]), then the defaults in [`crate::consts`].
//!
//! | flag | environment | file key |
//! | --- | --- | --- |
//! | `--config` | `SOTTO_CONFIG` | |
//! | `--listen` | `SOTTO_LISTEN` | `listen` |
//! | `--db` | `SOTTO_DB` | `db` |
//! | `--durability` | `SOTTO_DURABILITY` | `durability` |
//! | `--store` (`sqlite` or `postgres`) | `SOTTO_STORE` | `store.backend` |
//! | `--postgres-url` (alone selects `postgres`) | `SOTTO_POSTGRES_URL` | `store.url` |
//! | `--nats-url` (the doorbell between servers sharing PostgreSQL) | `SOTTO_NATS_URL` | `cluster.nats_url` |
//! | `--node-id` (this node's name in a cluster; default random) | `SOTTO_NODE_ID` | `cluster.node_id` |
//! | `--server-id` | `SOTTO_SERVER_ID` | `server_id` |
//! | `--metrics-listen` | `SOTTO_METRICS_LISTEN` | `metrics_listen` |
//! | `--tls-cert` | `SOTTO_TLS_CERT` | `tls.cert` |
//! | `--tls-key` | `SOTTO_TLS_KEY` | `tls.key` |
//! | `--turn-secret` | `SOTTO_TURN_SECRET` | `turn.secret` |
//! | `--relay URL=SECRET_FILE` (repeatable; replaces the file's list) | `SOTTO_RELAYS` (comma-separated) | `[[relays]]` `url`, `secret_file` |
//! | `--relay-token-ttl-secs` | `SOTTO_RELAY_TOKEN_TTL_SECS` | `relay_token_ttl_secs` |
//! | `--max-frame-bytes` | `SOTTO_MAX_FRAME_BYTES` | `limits.max_frame_bytes` |
//! | `--max-queued-per-device` | `SOTTO_MAX_QUEUED_PER_DEVICE` | `limits.max_queued_per_device` |
//! | `--envelopes-per-second` | `SOTTO_ENVELOPES_PER_SECOND` | `limits.envelopes_per_second` |
//! | `--envelope-burst` | `SOTTO_ENVELOPE_BURST` | `limits.envelope_burst` |
//! | `--max-connections-per-addr` | `SOTTO_MAX_CONNECTIONS_PER_ADDR` | `limits.max_connections_per_addr` |
//! | `--auth-timeout-secs` | `SOTTO_AUTH_TIMEOUT_SECS` | `limits.auth_timeout_secs` |
//! | `--max-envelope-ttl-secs` | `SOTTO_MAX_ENVELOPE_TTL_SECS` | `limits.max_envelope_ttl_secs` |
//! | `--bundle-fetches-per-minute` | `SOTTO_BUNDLE_FETCHES_PER_MINUTE` | `limits.bundle_fetches_per_minute` |
//! | `--one-time-prekeys-per-target-per-minute` | `SOTTO_ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE` | `limits.one_time_prekeys_per_target_per_minute` |
//! | `--one-time-prekey-repeat-window-secs` | `SOTTO_ONE_TIME_PREKEY_REPEAT_WINDOW_SECS` | `limits.one_time_prekey_repeat_window_secs` |
//! | `--max-devices-per-account` | `SOTTO_MAX_DEVICES_PER_ACCOUNT` | `limits.max_devices_per_account` |
//! | `--max-queued-per-sender` | `SOTTO_MAX_QUEUED_PER_SENDER` | `limits.max_queued_per_sender` |
//! | `--registrations-per-address-per-hour` | `SOTTO_REGISTRATIONS_PER_ADDRESS_PER_HOUR` | `limits.registrations_per_address_per_hour` |
//!
//! [`run`] prints `listening on ADDR` (and, with a metrics address, `metrics on
//! http://ADDR/metrics` before it) on stdout, so scripts can listen on port 0 and learn the port.
//!
//! With `--tls-cert` and `--tls-key` the server speaks `wss://`; SIGHUP re-reads both files
//! (renewed certificates) without dropping a connection, and a bad file is logged and leaves the
//! certificate in use. Without them it speaks plain `ws://`, which clients accept only on
//! loopback (a warning is logged if the listen address is not loopback). The metrics endpoint
//! stays plain HTTP on its own address (keep it private).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{store_choice, tls_files, FileConfig, StoreChoice};
use crate::error::{Error, Result};
use crate::server::{Server, ServerConfig};
use crate::store::{MemoryStore, PgStore, SqliteStore, Store};

/// Flags of `sotto-server` (and `sotto server`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "SOTTO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long, env = "SOTTO_LISTEN")]
    pub listen: Option<String>,
    /// SQLite database file (default ./sotto-signaling.db; `:memory:` for a throwaway RAM store).
    #[arg(long, env = "SOTTO_DB")]
    pub db: Option<PathBuf>,
    /// SQLite durability: `full` (fsync per commit, survives power loss; default) or `normal`.
    #[arg(long, env = "SOTTO_DURABILITY")]
    pub durability: Option<String>,
    /// Storage backend: `sqlite` (default; --db) or `postgres` (--postgres-url).
    #[arg(long = "store", env = "SOTTO_STORE")]
    pub store_backend: Option<String>,
    /// PostgreSQL connection string (`postgres://user@host/db`); selects the postgres backend.
    /// Prefer the environment to the command line when it holds a password.
    #[arg(long, env = "SOTTO_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// NATS URL of the doorbell between servers sharing one PostgreSQL (`nats://host:4222`).
    #[arg(long, env = "SOTTO_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// This node's name in a cluster, recorded with each device's connection claim (default:
    /// random per start).
    #[arg(long, env = "SOTTO_NODE_ID")]
    pub node_id: Option<String>,
    /// Server identity bound into authentication signatures (default: the listen address).
    #[arg(long, env = "SOTTO_SERVER_ID")]
    pub server_id: Option<String>,
    /// Prometheus metrics address (GET /metrics).
    #[arg(long, env = "SOTTO_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// PEM certificate chain (leaf first) to serve wss:// with; needs --tls-key. Re-read on
    /// SIGHUP.
    #[arg(long, env = "SOTTO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "SOTTO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// coturn static-auth-secret (prefer the environment to the command line).
    #[arg(long, env = "SOTTO_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// A relay to mint join tokens for: its public control URL and the file holding the secret
    /// it shares with the server (`URL=SECRET_FILE`; repeat for several).
    #[arg(long = "relay", env = "SOTTO_RELAYS", value_delimiter = ',')]
    pub relays: Vec<String>,
    /// Lifetime of relay tokens, seconds (default 180, at most 3600).
    #[arg(long, env = "SOTTO_RELAY_TOKEN_TTL_SECS")]
    pub relay_token_ttl_secs: Option<u64>,
    /// Largest accepted frame, bytes.
    #[arg(long, env = "SOTTO_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Envelopes that may wait for one device.
    #[arg(long, env = "SOTTO_MAX_QUEUED_PER_DEVICE")]
    pub max_queued_per_device: Option<usize>,
    /// Sustained envelopes per second per connection.
    #[arg(long, env = "SOTTO_ENVELOPES_PER_SECOND")]
    pub envelopes_per_second: Option<u32>,
    /// Envelope burst per connection.
    #[arg(long, env = "SOTTO_ENVELOPE_BURST")]
    pub envelope_burst: Option<u32>,
    /// Simultaneous connections per IP address.
    #[arg(long, env = "SOTTO_MAX_CONNECTIONS_PER_ADDR")]
    pub max_connections_per_addr: Option<usize>,
    /// Seconds from accept to successful authentication.
    #[arg(long, env = "SOTTO_AUTH_TIMEOUT_SECS")]
    pub auth_timeout_secs: Option<u64>,
    /// Longest envelope time-to-live a sender may ask for, seconds.
    #[arg(long, env = "SOTTO_MAX_ENVELOPE_TTL_SECS")]
    pub max_envelope_ttl_secs: Option<u64>,
    /// Bundle fetches per minute per requesting account.
    #[arg(long, env = "SOTTO_BUNDLE_FETCHES_PER_MINUTE")]
    pub bundle_fetches_per_minute: Option<u32>,
    /// One-time prekeys one device hands out per minute (then bundles come without one).
    #[arg(long, env = "SOTTO_ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE")]
    pub one_time_prekeys_per_target_per_minute: Option<u32>,
    /// Seconds within which one account gets at most one one-time prekey of a device.
    #[arg(long, env = "SOTTO_ONE_TIME_PREKEY_REPEAT_WINDOW_SECS")]
    pub one_time_prekey_repeat_window_secs: Option<u64>,
    /// Devices per account.
    #[arg(long, env = "SOTTO_MAX_DEVICES_PER_ACCOUNT")]
    pub max_devices_per_account: Option<usize>,
    /// Envelopes one sender may have waiting for one device.
    #[arg(long, env = "SOTTO_MAX_QUEUED_PER_SENDER")]
    pub max_queued_per_sender: Option<usize>,
    /// New accounts one address may register per hour.
    #[arg(long, env = "SOTTO_REGISTRATIONS_PER_ADDRESS_PER_HOUR")]
    pub registrations_per_address_per_hour: Option<u32>,
}

/// Everything [`ServerArgs`] and the file resolve to.
#[derive(Debug)]
pub struct Resolved {
    /// Listen address.
    pub listen: String,
    /// The store: SQLite file (`:memory:` for RAM) or PostgreSQL.
    pub store: StoreChoice,
    /// Metrics address.
    pub metrics_listen: Option<String>,
    /// Server configuration.
    pub config: ServerConfig,
}

impl ServerArgs {
    /// Reads the config file if any and applies the precedence rules.
    pub fn resolve(&self) -> Result<Resolved> {
        let file = match &self.config {
            Some(p) => FileConfig::parse(
                &std::fs::read_to_string(p).map_err(|e| Error::Config(e.to_string()))?,
            )?,
            None => FileConfig::default(),
        };
        let listen = self
            .listen
            .clone()
            .or(file.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8443".into());
        let db = self
            .db
            .clone()
            .or(file.db.clone().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("sotto-signaling.db"));
        let server_id = self
            .server_id
            .clone()
            .or(file.server_id.clone())
            .unwrap_or_else(|| listen.clone());
        let durability = match self.durability.as_deref() {
            Some(d) => FileConfig {
                durability: Some(d.to_owned()),
                ..FileConfig::default()
            }
            .durability()?,
            None => file.durability()?,
        };
        let store = store_choice(
            self.store_backend
                .as_deref()
                .or(file.store.backend.as_deref()),
            self.postgres_url.clone().or(file.store.url.clone()),
            db,
            durability,
        )?;
        let mut config = ServerConfig::new(server_id);
        let l = &mut config.limits;
        *l = file.limits();
        if let Some(v) = self.max_frame_bytes {
            l.max_frame_bytes = v;
        }
        if let Some(v) = self.max_queued_per_device {
            l.max_queued_per_device = v;
        }
        if let Some(v) = self.envelopes_per_second {
            l.envelopes_per_second = v;
        }
        if let Some(v) = self.envelope_burst {
            l.envelope_burst = v;
        }
        if let Some(v) = self.max_connections_per_addr {
            l.max_connections_per_addr = v;
        }
        if let Some(v) = self.auth_timeout_secs {
            l.auth_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_envelope_ttl_secs {
            l.max_envelope_ttl_secs = v;
        }
        if let Some(v) = self.bundle_fetches_per_minute {
            l.bundle_fetches_per_minute = v;
        }
        if let Some(v) = self.one_time_prekeys_per_target_per_minute {
            l.one_time_prekeys_per_target_per_minute = v;
        }
        if let Some(v) = self.one_time_prekey_repeat_window_secs {
            l.one_time_prekey_repeat_window = Duration::from_secs(v);
        }
        if let Some(v) = self.max_devices_per_account {
            l.max_devices_per_account = v;
        }
        if let Some(v) = self.max_queued_per_sender {
            l.max_queued_per_sender = v;
        }
        if let Some(v) = self.registrations_per_address_per_hour {
            l.registrations_per_address_per_hour = v;
        }
        // the pair comes from one place: flags (or environment) or the file, never half of each
        config.tls = match tls_files(self.tls_cert.clone(), self.tls_key.clone())? {
            Some(t) => Some(t),
            None => file.tls()?,
        };
        config.turn = file.turn(self.turn_secret.clone());
        config.nats_url = self
            .nats_url
            .clone()
            .or(file.cluster.nats_url.clone())
            .map(crate::server::NatsUrl::new);
        config.node_id = self.node_id.clone().or(file.cluster.node_id.clone());
        let relays = if self.relays.is_empty() {
            file.relays.clone()
        } else {
            self.relays
                .iter()
                .map(|r| crate::config::RelayFile::parse_flag(r))
                .collect::<Result<Vec<_>>>()?
        };
        config.relays = relays.iter().map(|r| r.load()).collect::<Result<_>>()?;
        if let Some(t) = self.relay_token_ttl_secs.or(file.relay_token_ttl_secs) {
            config.relay_token_ttl_secs = crate::config::relay_token_ttl(t)?;
        }
        Ok(Resolved {
            listen,
            store,
            metrics_listen: self.metrics_listen.clone().or(file.metrics_listen.clone()),
            config,
        })
    }
}

/// Opens the store `choice` names: SQLite, RAM for `:memory:`, or PostgreSQL (connecting and
/// migrating). Blocks: from async code, call it in `spawn_blocking`.
pub fn open_store(choice: &StoreChoice) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match choice {
        // `:memory:` keeps everything in RAM (nothing survives a restart): for benchmarks and
        // throwaway test servers only.
        StoreChoice::Sqlite { db, .. } if db.as_os_str() == ":memory:" => {
            tracing::warn!("in-memory store: nothing survives a restart");
            Arc::new(MemoryStore::new())
        }
        StoreChoice::Sqlite { db, durability } => {
            Arc::new(SqliteStore::open(db, *durability).map_err(|e| Error::Storage(e.to_string()))?)
        }
        StoreChoice::Postgres { url } => {
            Arc::new(PgStore::open(url).map_err(|e| Error::Storage(e.to_string()))?)
        }
    };
    Ok(store)
}

/// Runs the server on the current tokio runtime until SIGTERM or ctrl-c, then shuts down
/// gracefully.
pub async fn serve(args: ServerArgs) -> Result<()> {
    let r = args.resolve()?;
    let choice = r.store.clone();
    let store = tokio::task::spawn_blocking(move || open_store(&choice))
        .await
        .map_err(|e| Error::Storage(e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(&r.listen).await?;
    let mut server = Server::spawn(r.config, store, listener)?;
    if !server.doorbell_ready().await {
        tracing::warn!("doorbell: NATS not reachable yet; retrying in the background");
    }
    if let Some(m) = r.metrics_listen {
        let l = tokio::net::TcpListener::bind(&m).await?;
        println!("metrics on http://{}/metrics", l.local_addr()?);
        server.serve_metrics(l);
    }
    // SIGHUP is handled before anyone learns the address: an early one must not kill the server
    let mut hangups = Hangups::new(server.is_tls())?;
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("listening on {}", server.local_addr());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangups.next() => match server.reload_tls() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!("SIGHUP: TLS certificate not reloaded: {e}"),
            },
        }
    }
    server.shutdown().await;
    Ok(())
}

/// SIGHUP, which re-reads the certificate and key, when the server has TLS; without TLS, SIGHUP
/// keeps its default meaning.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new(tls: bool) -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = if tls {
                Some(signal(SignalKind::hangup())?)
            } else {
                None
            };
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        {
            let _ = tls;
            Ok(Self {})
        }
    }

    /// Resolves at the next SIGHUP; never without TLS.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// [`serve`] on a new multi-threaded runtime (for `main` functions that have none).
pub fn run(args: ServerArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("s.toml");
        std::fs::write(
            &cfg,
            "durability = \"normal\"\n[limits]\nmax_queued_per_device = 5\nenvelope_burst = 7\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            cfg.to_str().unwrap(),
            "--max-queued-per-device",
            "3",
            "--auth-timeout-secs",
            "4",
        ])
        .unwrap();
        let r = cli.server.resolve().unwrap();
        assert!(matches!(
            r.store,
            StoreChoice::Sqlite {
                durability: Durability::Normal,
                ..
            }
        ));
        assert_eq!(r.config.limits.max_queued_per_device, 3);
        assert_eq!(r.config.limits.envelope_burst, 7);
        assert_eq!(r.config.limits.auth_timeout, Duration::from_secs(4));
        assert_eq!(
            r.config.limits.max_frame_bytes,
            crate::consts::MAX_FRAME_BYTES
        );
        let bad = Cli::try_parse_from(["x", "--durability", "fast"]).unwrap();
        assert!(bad.server.resolve().is_err());
    }

    #[test]
    fn the_store_comes_from_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("s.toml");
        std::fs::write(
            &cfg,
            "[store]\nbackend = \"postgres\"\nurl = \"host=file\"\n",
        )
        .unwrap();
        let file = Cli::try_parse_from(["x", "--config", cfg.to_str().unwrap()]).unwrap();
        assert!(matches!(
            file.server.resolve().unwrap().store,
            StoreChoice::Postgres { .. }
        ));
        // the flag names the backend over the file's
        let flag =
            Cli::try_parse_from(["x", "--config", cfg.to_str().unwrap(), "--store", "sqlite"])
                .unwrap();
        assert!(matches!(
            flag.server.resolve().unwrap().store,
            StoreChoice::Sqlite { .. }
        ));
        let url = Cli::try_parse_from(["x", "--postgres-url", "host=flag"]).unwrap();
        assert!(matches!(
            url.server.resolve().unwrap().store,
            StoreChoice::Postgres { .. }
        ));
        let none = Cli::try_parse_from(["x", "--store", "postgres"]).unwrap();
        assert!(matches!(none.server.resolve(), Err(Error::Config(_))));
    }

    #[test]
    fn abuse_limits_from_flags_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("s.toml");
        std::fs::write(
            &cfg,
            "[limits]\nmax_devices_per_account = 2\nmax_queued_per_sender = 9\n\
             one_time_prekeys_per_target_per_minute = 4\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            cfg.to_str().unwrap(),
            "--max-devices-per-account",
            "3",
            "--bundle-fetches-per-minute",
            "5",
            "--one-time-prekey-repeat-window-secs",
            "60",
        ])
        .unwrap();
        let l = cli.server.resolve().unwrap().config.limits;
        assert_eq!(l.max_devices_per_account, 3);
        assert_eq!(l.max_queued_per_sender, 9);
        assert_eq!(l.one_time_prekeys_per_target_per_minute, 4);
        assert_eq!(l.bundle_fetches_per_minute, 5);
        assert_eq!(l.one_time_prekey_repeat_window, Duration::from_secs(60));
    }

    #[test]
    fn tls_files_come_as_a_pair_from_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("s.toml");
        std::fs::write(&cfg, "[tls]\ncert = \"file.crt\"\nkey = \"file.key\"\n").unwrap();
        let from_file = Cli::try_parse_from(["x", "--config", cfg.to_str().unwrap()]).unwrap();
        assert_eq!(
            from_file.server.resolve().unwrap().config.tls,
            Some(sotto_tls::TlsFiles::new("file.crt", "file.key"))
        );
        let flags = Cli::try_parse_from([
            "x",
            "--config",
            cfg.to_str().unwrap(),
            "--tls-cert",
            "flag.crt",
            "--tls-key",
            "flag.key",
        ])
        .unwrap();
        assert_eq!(
            flags.server.resolve().unwrap().config.tls,
            Some(sotto_tls::TlsFiles::new("flag.crt", "flag.key"))
        );
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tls-key", "k.pem"]).is_err());
        let plain = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(plain.server.resolve().unwrap().config.tls, None);
    }
}
