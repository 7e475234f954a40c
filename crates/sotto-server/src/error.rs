//! The crate's error type and the wire error codes.

use serde::{Deserialize, Serialize};

/// The code carried by an `error` frame. Stable strings on the wire (`snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // ---- the peer sent something we reject ----
    /// Not JSON, unknown `type`, missing or ill-typed field, binary frame.
    Malformed,
    /// `"v"` is not a version this server speaks.
    UnsupportedVersion,
    /// The frame exceeds `MAX_FRAME_BYTES`; the connection is closed.
    FrameTooLarge,
    /// A field is out of range (username syntax, key length, too many prekeys...).
    InvalidField,
    /// Request not allowed in this state (e.g. `send` before authenticating).
    NotAuthenticated,
    /// The challenge signature did not verify, or the device is unknown.
    AuthFailed,
    /// `register` for a username that already has devices (add devices from a signed-in one).
    UsernameTaken,
    /// `register` for an existing device with a different identity key.
    IdentityMismatch,
    /// No such user or device.
    UnknownRecipient,
    /// The device has not published a signed prekey and a KEM prekey.
    NoPrekeys,
    /// Envelope TTL over `MAX_ENVELOPE_TTL_SECS` (or zero).
    TtlTooLong,
    /// A device number outside `1..=MAX_DEVICE_ID`.
    InvalidDeviceId,
    /// A prekey that is not a public key of its type and size (X25519 `0x05 ‖ 32 bytes`,
    /// Kyber1024 `0x08 ‖ 1568 bytes`).
    InvalidPrekey,
    /// A signed or KEM prekey whose signature does not verify under the device's identity key.
    BadPrekeySignature,
    // ---- limits ----
    /// Envelope rate over the token bucket; the envelope was not stored.
    RateLimited,
    /// The recipient already has `MAX_QUEUED_ENVELOPES_PER_DEVICE` waiting.
    RecipientQueueFull,
    /// Over `BUNDLE_FETCHES_PER_MINUTE` for this account; no one-time prekey was used.
    FetchRateLimited,
    /// Over `REGISTRATIONS_PER_ADDRESS_PER_HOUR` new accounts from this address; nothing was
    /// created.
    RegistrationRateLimited,
    /// The account already has `MAX_DEVICES_PER_ACCOUNT` devices.
    TooManyDevices,
    /// This sender already has `MAX_QUEUED_PER_SENDER` envelopes waiting for the recipient.
    SenderShareFull,
    /// Too many connections from this address.
    TooManyConnections,
    /// No successful authentication within `AUTH_TIMEOUT`.
    AuthTimeout,
    /// The connection did not read its frames fast enough.
    SlowConsumer,
    /// Another connection authenticated as this device.
    Replaced,
    /// TURN is not configured on this server.
    TurnUnavailable,
    /// `relay_tokens` for a relay URL the server has no secret for.
    UnknownRelay,
    /// `relay_tokens` naming a relay other than the one the room is placed at.
    RoomAtAnotherRelay,
    /// `relay_tokens` for a room another account claimed, by a non-member.
    NotARoomMember,
    /// `relay_tokens` by a member for its own name in a room it holds (rejoining needs an
    /// invitation from another member).
    RejoinNeedsInvite,
    /// `relay_tokens` for no participants or more than `MAX_RELAY_TOKENS_PER_REQUEST`.
    TooManyParticipants,
    /// The relay room would have more than `MAX_RELAY_ROOM_MEMBERS` members.
    RoomMembersFull,
    // ---- ours ----
    /// The server failed (storage); retry later.
    Internal,
    /// The server cannot reach its database (PostgreSQL down or restarting): nothing was stored
    /// or changed; retry later.
    StorageUnavailable,
    /// The server is shutting down.
    ShuttingDown,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidField => "invalid_field",
            Self::NotAuthenticated => "not_authenticated",
            Self::AuthFailed => "auth_failed",
            Self::UsernameTaken => "username_taken",
            Self::IdentityMismatch => "identity_mismatch",
            Self::UnknownRecipient => "unknown_recipient",
            Self::NoPrekeys => "no_prekeys",
            Self::TtlTooLong => "ttl_too_long",
            Self::InvalidDeviceId => "invalid_device_id",
            Self::InvalidPrekey => "invalid_prekey",
            Self::BadPrekeySignature => "bad_prekey_signature",
            Self::RateLimited => "rate_limited",
            Self::RecipientQueueFull => "recipient_queue_full",
            Self::FetchRateLimited => "fetch_rate_limited",
            Self::RegistrationRateLimited => "registration_rate_limited",
            Self::TooManyDevices => "too_many_devices",
            Self::SenderShareFull => "sender_share_full",
            Self::TooManyConnections => "too_many_connections",
            Self::AuthTimeout => "auth_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::Replaced => "replaced",
            Self::TurnUnavailable => "turn_unavailable",
            Self::UnknownRelay => "unknown_relay",
            Self::RoomAtAnotherRelay => "room_at_another_relay",
            Self::NotARoomMember => "not_a_room_member",
            Self::RejoinNeedsInvite => "rejoin_needs_invite",
            Self::TooManyParticipants => "too_many_participants",
            Self::RoomMembersFull => "room_members_full",
            Self::Internal => "internal",
            Self::StorageUnavailable => "storage_unavailable",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in `sotto-server`, server side or client side.
///
/// `Display` never prints key material, ciphertext or usernames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the peer sent garbage ----
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A frame with an unsupported protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// A frame larger than the limit.
    #[error("frame of {0} bytes exceeds the limit")]
    FrameTooLarge(usize),
    /// The server answered a request with an error frame.
    #[error("server refused: {code}")]
    Refused {
        /// The typed code.
        code: ErrorCode,
    },
    /// The server sent a frame we did not expect here.
    #[error("unexpected frame from server")]
    UnexpectedFrame,
    // ---- the caller misused the API ----
    /// A bad argument (e.g. invalid username).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    // ---- transport and storage ----
    /// The connection is down (the client reconnects in the background; retry).
    #[error("disconnected")]
    Disconnected,
    /// A request got no answer in time.
    #[error("timed out")]
    Timeout,
    /// WebSocket or socket failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The transport rules or TLS refused the connection (plain `ws://` to a host that is not
    /// loopback, a server certificate that does not verify), or a server's certificate files.
    #[error("tls: {0}")]
    Tls(#[from] sotto_tls::Error),
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(String),
    /// Configuration could not be read.
    #[error("config: {0}")]
    Config(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
