//! Named limits of relay tokens.

/// Shortest relay secret, in bytes (after trimming surrounding whitespace from the file).
pub const MIN_SECRET_LEN: usize = 32;
/// Longest relay secret, in bytes.
pub const MAX_SECRET_LEN: usize = 1024;
/// Random bytes in a secret made by [`RelaySecret::generate_file_text`](crate::RelaySecret::generate_file_text)
/// (written as twice as many hex digits).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Longest relay control URL a token binds, in bytes.
pub const MAX_RELAY_URL: usize = 512;
/// Longest room or participant name a token binds, in bytes (the relay's `MAX_NAME`).
pub const MAX_NAME: usize = 64;
/// Longest token text, in bytes: longer input is [`TokenError::Malformed`](crate::TokenError::Malformed)
/// before any decoding.
pub const MAX_TOKEN_LEN: usize = 1024;
/// How far the relay's clock may be behind or ahead of the signaling server's, in
/// milliseconds: a token is still accepted this long after its expiry, and one issued up to
/// this far in the future is accepted.
pub const CLOCK_SKEW_MS: u64 = 30_000;
/// Longest token lifetime a server may mint, in seconds (an hour; the relay remembers leaves
/// this long).
pub const MAX_TTL_SECS: u64 = 3_600;
/// Prefix of the token text: the format version.
pub const TOKEN_PREFIX: &str = "v1";
/// Domain separation of the MAC input.
pub const MAC_DOMAIN: &[u8] = b"sotto relay token v1\0";
