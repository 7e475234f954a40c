//! What a server is started with: its identity, its limits, TLS, TURN and its clock.

use std::sync::Arc;
use std::time::Duration;

use sotto_admission::RelaySecret;
use sotto_tls::TlsFiles;

use crate::clock::{Clock, SystemClock};
use crate::consts;
use crate::turn::TurnConfig;

/// Every enforced limit; [`Default`] takes the values in [`crate::consts`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// [`consts::MAX_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// [`consts::MAX_QUEUED_ENVELOPES_PER_DEVICE`].
    pub max_queued_per_device: usize,
    /// [`consts::ENVELOPES_PER_SECOND`].
    pub envelopes_per_second: u32,
    /// [`consts::ENVELOPE_BURST`].
    pub envelope_burst: u32,
    /// [`consts::MAX_CONNECTIONS_PER_ADDR`] (not logged in yet).
    pub max_connections_per_addr: usize,
    /// [`consts::MAX_AUTHENTICATED_PER_ADDR`].
    pub max_authenticated_per_addr: usize,
    /// [`consts::AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// [`consts::MAX_ENVELOPE_TTL_SECS`].
    pub max_envelope_ttl_secs: u64,
    /// [`consts::OUTBOUND_QUEUE_FRAMES`].
    pub outbound_queue_frames: usize,
    /// [`consts::MAX_ONE_TIME_PREKEYS_PER_UPLOAD`].
    pub max_one_time_prekeys_per_upload: usize,
    /// [`consts::MAX_ONE_TIME_PREKEYS_STORED`].
    pub max_one_time_prekeys_stored: usize,
    /// [`consts::LOW_PREKEY_THRESHOLD`].
    pub low_prekey_threshold: u32,
    /// [`consts::MAX_MALFORMED_FRAMES`].
    pub max_malformed_frames: u32,
    /// [`consts::EXPIRY_SWEEP_INTERVAL`].
    pub expiry_sweep_interval: Duration,
    /// [`consts::BUNDLE_FETCHES_PER_MINUTE`] (per requesting account).
    pub bundle_fetches_per_minute: u32,
    /// [`consts::ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE`].
    pub one_time_prekeys_per_target_per_minute: u32,
    /// [`consts::ONE_TIME_PREKEY_REPEAT_WINDOW`].
    pub one_time_prekey_repeat_window: Duration,
    /// [`consts::MAX_TRACKED_FETCH_KEYS`].
    pub max_tracked_fetch_keys: usize,
    /// [`consts::MAX_DEVICES_PER_ACCOUNT`].
    pub max_devices_per_account: usize,
    /// [`consts::MAX_QUEUED_PER_SENDER`].
    pub max_queued_per_sender: usize,
    /// [`consts::REGISTRATIONS_PER_ADDRESS_PER_HOUR`].
    pub registrations_per_address_per_hour: u32,
    /// [`consts::MAX_TRACKED_ADDRESSES`].
    pub max_tracked_addresses: usize,
    /// [`consts::CLUSTER_POLL_INTERVAL`] (only with a doorbell).
    pub cluster_poll_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: consts::MAX_FRAME_BYTES,
            max_queued_per_device: consts::MAX_QUEUED_ENVELOPES_PER_DEVICE,
            envelopes_per_second: consts::ENVELOPES_PER_SECOND,
            envelope_burst: consts::ENVELOPE_BURST,
            max_connections_per_addr: consts::MAX_CONNECTIONS_PER_ADDR,
            max_authenticated_per_addr: consts::MAX_AUTHENTICATED_PER_ADDR,
            auth_timeout: consts::AUTH_TIMEOUT,
            max_envelope_ttl_secs: consts::MAX_ENVELOPE_TTL_SECS,
            outbound_queue_frames: consts::OUTBOUND_QUEUE_FRAMES,
            max_one_time_prekeys_per_upload: consts::MAX_ONE_TIME_PREKEYS_PER_UPLOAD,
            max_one_time_prekeys_stored: consts::MAX_ONE_TIME_PREKEYS_STORED,
            low_prekey_threshold: consts::LOW_PREKEY_THRESHOLD,
            max_malformed_frames: consts::MAX_MALFORMED_FRAMES,
            expiry_sweep_interval: consts::EXPIRY_SWEEP_INTERVAL,
            bundle_fetches_per_minute: consts::BUNDLE_FETCHES_PER_MINUTE,
            one_time_prekeys_per_target_per_minute: consts::ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE,
            one_time_prekey_repeat_window: consts::ONE_TIME_PREKEY_REPEAT_WINDOW,
            max_tracked_fetch_keys: consts::MAX_TRACKED_FETCH_KEYS,
            max_devices_per_account: consts::MAX_DEVICES_PER_ACCOUNT,
            max_queued_per_sender: consts::MAX_QUEUED_PER_SENDER,
            registrations_per_address_per_hour: consts::REGISTRATIONS_PER_ADDRESS_PER_HOUR,
            max_tracked_addresses: consts::MAX_TRACKED_ADDRESSES,
            cluster_poll_interval: consts::CLUSTER_POLL_INTERVAL,
        }
    }
}

/// A relay the server mints tokens for: its public control URL (what clients join and tokens
/// name) and the secret it shares with that relay.
#[derive(Debug, Clone)]
pub struct RelayEntry {
    /// The relay's public control URL.
    pub url: String,
    /// The secret (redacted in `Debug`).
    pub secret: RelaySecret,
}

/// Server configuration.
#[derive(Clone)]
pub struct ServerConfig {
    /// This server's identity, bound into every authentication signature (e.g. its public URL).
    pub server_id: String,
    /// Limits.
    pub limits: Limits,
    /// Certificate chain and key (PEM files): with them the listener speaks TLS (`wss://`);
    /// without, plain `ws://`, which clients accept only on loopback.
    pub tls: Option<TlsFiles>,
    /// TURN credential issuing, if configured.
    pub turn: Option<TurnConfig>,
    /// Relays the server mints tokens for (`relay_tokens`); none: every such request is
    /// refused with `unknown_relay`.
    pub relays: Vec<RelayEntry>,
    /// Lifetime of minted relay tokens, seconds ([`consts::RELAY_TOKEN_TTL_SECS`]; at most
    /// `sotto_admission::consts::MAX_TTL_SECS`).
    pub relay_token_ttl_secs: u64,
    /// NATS server for the doorbell between servers sharing one PostgreSQL (`None`: a single
    /// server; see `crate::doorbell`).
    pub nats_url: Option<NatsUrl>,
    /// This node's name in a cluster, recorded with each device's connection claim (see
    /// [`crate::store::Store::claim_connection`]); `None`: a random name per start.
    pub node_id: Option<String>,
    /// Wall clock for TTLs and TURN expiry.
    pub clock: Arc<dyn Clock>,
}

/// A NATS URL (`nats://host:4222`; may hold credentials: zeroized on drop, never printed).
#[derive(Clone)]
pub struct NatsUrl(pub zeroize::Zeroizing<String>);

impl NatsUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(url.into()))
    }
}

impl std::fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsUrl(<redacted>)")
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("server_id", &self.server_id)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .field("turn", &self.turn)
            .field("relays", &self.relays)
            .field("relay_token_ttl_secs", &self.relay_token_ttl_secs)
            .field("nats_url", &self.nats_url)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults with the system clock, no TLS, no TURN and no relays.
    pub fn new(server_id: impl Into<String>) -> Self {
        Self {
            server_id: server_id.into(),
            limits: Limits::default(),
            tls: None,
            turn: None,
            relays: Vec::new(),
            relay_token_ttl_secs: consts::RELAY_TOKEN_TTL_SECS,
            nats_url: None,
            node_id: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl ServerConfig {
    /// The relay entry for `url`, if the server has one.
    pub fn relay(&self, url: &str) -> Option<&RelayEntry> {
        self.relays.iter().find(|r| r.url == url)
    }
}
