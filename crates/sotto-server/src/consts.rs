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

/// Envelopes that may wait for one recipient device. The next one is refused with
/// `recipient_queue_full` (the sender learns it; nothing is stored).
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

/// Largest public key accepted in a prekey (a Kyber1024 key with type byte is 1569 bytes).
pub const MAX_PREKEY_PUBLIC_BYTES: usize = 1600;

/// Largest signature accepted on a prekey (XEdDSA: 64).
pub const MAX_PREKEY_SIGNATURE_BYTES: usize = 64;

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

/// Relay rooms one account may have claimed and live at once.
pub const MAX_RELAY_ROOMS_PER_ACCOUNT: usize = 16;

/// Relay rooms the server keeps at once (all accounts); a claim beyond is refused.
pub const MAX_RELAY_ROOMS: usize = 10_000;

/// Members a relay room may have (everyone ever given a token for it, leavers included).
pub const MAX_RELAY_ROOM_MEMBERS: usize = 32;

/// A relay room is forgotten this long after its last token was minted (a call longer than
/// that keeps working; only new invitations to it would start over as a new claim).
pub const RELAY_ROOM_IDLE_SECS: u64 = 6 * 3600;
