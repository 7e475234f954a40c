//! Every limit the signaling server enforces, by name. Each is a default that
//! [`crate::Limits`] can override per deployment; tests exercise each at the limit and one past it.

use std::time::Duration;

/// Wire-format version carried in every frame's `"v"` field.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message (one JSON text frame) the server accepts, in bytes. A larger one is
/// answered with `frame_too_large` and the connection is closed.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The WebSocket layer itself refuses to buffer a message larger than this multiple of the frame
/// limit. Between the frame limit and this cap the server still reads the frame, so it can answer
/// `frame_too_large` before closing; past it the socket layer fails first and the server answers
/// `frame_too_large` and closes too.
pub const WS_HARD_MAX_FACTOR: usize = 4;

/// Envelopes that may wait for one recipient device. The next one drops the oldest envelope of
/// the sender account with the largest share of the queue, if that share is larger than the new
/// envelope's sender's; otherwise it is refused with `recipient_queue_full` (the sender learns
/// it; nothing is stored). So sybil accounts together cannot fill a queue against a caller.
pub const MAX_QUEUED_ENVELOPES_PER_DEVICE: usize = 1000;

/// Sustained envelopes per second one connection may send (token-bucket refill rate).
pub const ENVELOPES_PER_SECOND: u32 = 100;

/// Token-bucket depth: envelopes one connection may send in a burst.
pub const ENVELOPE_BURST: u32 = 200;

/// Simultaneous connections from one IP address that have not authenticated yet (TLS and
/// WebSocket handshakes, challenge): what an address without an account can hold. A connection
/// stops counting here once it is logged in.
pub const MAX_CONNECTIONS_PER_ADDR: usize = 32;

/// Simultaneous logged-in connections from one IP address: high, so that a NAT's worth of
/// users (a campus, a carrier-grade NAT) is not locked out, yet bounded.
pub const MAX_AUTHENTICATED_PER_ADDR: usize = 1024;

/// Bundle fetches one account may make per minute (token bucket: this many per minute, as a
/// burst of this many). The next is refused with `fetch_rate_limited`. A call needs one fetch
/// per device of the callee that the caller has no session with yet.
pub const BUNDLE_FETCHES_PER_MINUTE: u32 = 30;

/// One-time prekeys one target device hands out per minute, to everyone together (token
/// bucket). Past it, fetches are *served* without a one-time prekey (PQXDH runs without one:
/// the signed prekey and the last-resort Kyber prekey are enough), so draining is bounded
/// while nobody is locked out of calling the target. On a cluster the allowance is the
/// cluster's (a token bucket in the shared store, `Store::take_limit_token`), not each server's.
pub const ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE: u32 = 10;

/// One account gets at most one one-time prekey of a given target device per this window;
/// its further fetches in the window get the bundle without one.
pub const ONE_TIME_PREKEY_REPEAT_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Requesters, targets and (requester, target) pairs the fetch limits remember at most each:
/// bounded memory. At the bound, entries that no longer limit anything are dropped; if none
/// can be, a new requester is refused (`fetch_rate_limited`) and a new target or pair gets no
/// one-time prekey.
pub const MAX_TRACKED_FETCH_KEYS: usize = 100_000;

/// New accounts one address may register per hour (token bucket: this many at once, refilled
/// evenly over the hour; IPv6 counts per /56, see `address_limits`). The next registration
/// is refused with `registration_rate_limited` and creates nothing; logging in and adding a
/// device to an account are not counted. A household, an office or a class registering
/// together fits; an attacker minting sybil accounts to multiply the per-account limits gets
/// this many an hour per address it holds.
pub const REGISTRATIONS_PER_ADDRESS_PER_HOUR: u32 = 20;

/// Addresses the registration limit remembers at most (see `address_limits`).
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Devices one account may have. `add_device` of one more is refused with `too_many_devices`.
pub const MAX_DEVICES_PER_ACCOUNT: usize = 8;

/// Device numbers are `1..=MAX_DEVICE_ID` (libsignal's range); others are refused with
/// `invalid_device_id` at `register` and `add_device`.
pub const MAX_DEVICE_ID: u32 = 127;

/// Envelopes one sender account may have waiting for one recipient device, a share of
/// `MAX_QUEUED_ENVELOPES_PER_DEVICE`: the next is refused with `sender_share_full`, so one
/// stranger cannot fill a queue and a call from someone else still gets through.
pub const MAX_QUEUED_PER_SENDER: usize = 64;

/// Time from TCP accept to a successful `register`/`login`; after it, `auth_timeout` and close.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time-to-live a sender may ask for an envelope, in seconds (one day). Longer is refused
/// with `ttl_too_long`. A call ring should use about 60 s.
pub const MAX_ENVELOPE_TTL_SECS: u64 = 24 * 60 * 60;

/// One-time prekeys accepted in a single `publish_prekeys`.
pub const MAX_ONE_TIME_PREKEYS_PER_UPLOAD: usize = 200;

/// One-time prekeys the server keeps per device; an upload past this is refused.
pub const MAX_ONE_TIME_PREKEYS_STORED: usize = 1000;

/// When a device's one-time prekey stock falls below this, it is sent `prekeys_low`.
pub const LOW_PREKEY_THRESHOLD: u32 = 10;

/// Frames (responses and pushes) that may wait to be written to one connection. A connection whose
/// queue is full is not reading: it is closed with `slow_consumer` (queued envelopes stay stored).
pub const OUTBOUND_QUEUE_FRAMES: usize = 256;

/// Most envelope writes (`send`s and `ack`s) applied in one store transaction (group commit). A
/// batch is whatever queued up while the previous commit ran, up to this many.
pub const MAX_WRITE_BATCH: usize = 512;

/// Initial WebSocket read buffer per connection, in bytes. It grows to fit a larger frame (up to
/// the frame limit); a small start keeps idle connections cheap.
pub const WS_READ_BUFFER_BYTES: usize = 512;

/// Queue places an idle connection keeps allocated after a burst (the outbound queue shrinks back to
/// this when it drains).
pub const OUTBOUND_RETAINED_SLOTS: usize = 16;

/// Encoded frames a connection collects before writing them to its socket in one system call
/// (everything queued is written and flushed once the queue is empty, whatever its size).
pub const WS_WRITE_BATCH_BYTES: usize = 4 * 1024;

/// Frames a connection reads back to back before it flushes its answers.
pub const READS_PER_FLUSH: u32 = 32;

/// How long a connection with a full outbound queue may take to make room for the answer to its
/// next `send`/`ack` (its requests are not read meanwhile) before it is closed as `slow_consumer`.
pub const OUTBOUND_WAIT: Duration = Duration::from_secs(2);

/// Envelopes fetched from the store per delivery round for one connection.
pub const DELIVERY_BATCH: usize = 64;

/// Malformed frames tolerated on one connection before it is closed.
pub const MAX_MALFORMED_FRAMES: u32 = 16;

/// Longest username, in bytes (`[a-z0-9._-]`).
pub const MAX_USERNAME_BYTES: usize = 64;

/// How often expired envelopes are purged.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Lifetime of issued TURN credentials, in seconds.
pub const TURN_CREDENTIAL_TTL_SECS: u64 = 600;

/// How long graceful shutdown waits for connections to finish before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Random bytes in an authentication challenge.
pub const CHALLENGE_NONCE_BYTES: usize = 32;

/// Domain-separation prefix of the signed authentication message.
pub const AUTH_CONTEXT: &[u8] = b"sotto-signaling-auth-v1";

/// Default lifetime of relay tokens, in seconds: covers a callee's ringing (`RING_TIMEOUT`,
/// 30 s, in sotto-call) after an offer that waited up to a minute in its queue (call envelope
/// TTL), then the callee's media setup; capped at `sotto_admission::consts::MAX_TTL_SECS`.
pub const RELAY_TOKEN_TTL_SECS: u64 = 180;

/// Tokens one `relay_tokens` request may ask for (a relay room holds 5; a member invites one
/// at a time, a caller asks for itself and its callee).
pub const MAX_RELAY_TOKENS_PER_REQUEST: usize = 8;

/// Relay rooms one account may have claimed and live at once; a further claim forgets the
/// account's least recently used room.
pub const MAX_RELAY_ROOMS_PER_ACCOUNT: usize = 16;

/// Relay rooms the server keeps at once (all accounts); a further claim forgets the least
/// recently used room.
pub const MAX_RELAY_ROOMS: usize = 10_000;

/// Members a relay room may have (everyone ever given a token for it, leavers included).
pub const MAX_RELAY_ROOM_MEMBERS: usize = 32;

/// A relay room is forgotten this long after its last token was minted (a call longer than
/// that keeps working; only new invitations to it would start over as a new claim).
pub const RELAY_ROOM_IDLE_SECS: u64 = 6 * 3600;

/// How long [`crate::store::PgStore`] waits for a PostgreSQL connection to open (unless the
/// connection string sets `connect_timeout`); a call that cannot connect in time fails with
/// `storage_unavailable` and the next one tries again.
pub const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Key of the advisory lock under which [`crate::store::PgStore`] applies migrations, so
/// servers starting together apply each one once.
pub const PG_MIGRATION_LOCK: i64 = 0x536f_7474_6f00_0001;

/// How long a server waits for NATS (the doorbell between servers) to connect or to confirm a
/// subscription; it retries every [`NATS_RETRY`] until it succeeds.
pub const NATS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Pause between attempts to reach NATS.
pub const NATS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long one doorbell ring may wait to be queued in the NATS client (then it is dropped:
/// delivery waits for the next ring or reconnection).
pub const NATS_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Rings waiting for the doorbell task; more are dropped (a delay, never a loss).
pub const DOORBELL_QUEUE: usize = 4096;

/// Longest a PostgreSQL statement, an unanswered send or an idle-in-transaction session may
/// last ([`crate::store::PgStore`] sets `statement_timeout`, `idle_in_transaction_session_timeout`,
/// TCP user timeout and keepalive to it; a URL with its own `options` keeps them): past it the call
/// fails (`storage_unavailable` for a dead connection) instead of holding the store thread.
pub const PG_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// In a cluster, how often each node re-reads the queue of every device connected to it, rings
/// or not: the longest a lost doorbell ring (NATS down or restarting) delays an envelope, and
/// the longest a connection superseded on another node stays open when the takeover notice was
/// lost (its next read is fenced, see [`crate::store::Store::pending_fenced`]). Each node also
/// re-reads every queue as soon as its NATS connection comes back. The cost is one queue read
/// per connected device per interval.
pub const CLUSTER_POLL_INTERVAL: Duration = Duration::from_secs(15);
