//! Every limit and timeout of the call core, by name (`protocol-spec/call.md` §7). The modules
//! that use them re-export them where they were first defined.

use std::time::Duration;

/// Version of the call message encoding (`"v"`).
pub const CALL_MESSAGE_VERSION: u8 = 1;
/// Largest encoded call message (the plaintext inside the ratchet message), in bytes. Chosen so
/// that the sealed envelope — type byte, PreKeySignalMessage with its Kyber ciphertext, base64,
/// JSON `send` frame — always fits the signaling server's 64 KiB `MAX_FRAME_BYTES` (tested
/// through the real server at this limit).
pub const MAX_CALL_MESSAGE: usize = 44 * 1024;
/// Largest SDP in an offer or answer, in bytes.
pub const MAX_SDP: usize = 32 * 1024;
/// Longest hangup reason text, in bytes.
pub const MAX_REASON: usize = 200;
/// Longest relay control URL in an offer, in bytes.
pub const MAX_RELAY_URL: usize = 512;
/// Longest trickled ICE candidate (JSON) in a `candidate` message, in bytes.
pub const MAX_CANDIDATE: usize = 1024;
/// Most trickled candidates held for a call whose media does not exist yet (we still ring).
pub const MAX_HELD_CANDIDATES: usize = 64;
/// Most other members an offer may list (a sotto-relay room holds 32, `MAX_ROOM_SIZE`, as many
/// as the signaling server's `MAX_RELAY_ROOM_MEMBERS`).
pub const MAX_GROUP_MEMBERS: usize = 31;
/// Longest member name in `members` / `add`, in bytes.
pub const MAX_MEMBER_NAME: usize = 64;
/// Longest hex media key (`KeyMaterial` wire encoding, hex), in characters.
pub const MAX_MEDIA_KEY_HEX: usize = 256;
/// Most out-of-order call messages one [`crate::messages::Reorder`] holds; a message this many or
/// more sequence numbers ahead of the next expected one is refused.
pub const MAX_REORDER: u32 = 32;

/// How long the caller lets the callee ring (and the callee rings).
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long media may take to connect after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One-time prekeys published at registration, and at each replenishment.
pub const ONE_TIME_PREKEYS: u32 = 20;
/// One-time prekeys a device keeps (private halves in its store): when a replenishment would
/// go past it, the oldest (lowest ids, the ones the server hands out first) are dropped in the
/// same write. A drain therefore cannot grow the store without bound.
pub const MAX_STORED_ONE_TIME_PREKEYS: u32 = 100;
/// After a replenishment the device answers the next "prekeys low" no sooner than this; a
/// "low" arriving within one wait of the last replenishment (a drain goes on) doubles the wait,
/// up to [`PREKEY_REPLENISH_BACKOFF_MAX`]; a quiet spell resets it. A session can be set up
/// without a one-time prekey meanwhile (PQXDH on the signed and last-resort Kyber prekeys).
pub const PREKEY_REPLENISH_BACKOFF_MIN: Duration = Duration::from_secs(30);
/// Longest wait between two replenishments under a drain.
pub const PREKEY_REPLENISH_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// Time to live of call envelopes on the server: a ring is worthless after a minute.
pub const CALL_ENVELOPE_TTL_SECS: u64 = 60;
/// Envelope ids `sealed::Device::next` remembers to skip at-least-once redeliveries.
pub const MAX_SEEN_ENVELOPES: usize = 1024;
/// Safety numbers use libsignal's displayable fingerprint, version 2.
pub const SAFETY_NUMBER_VERSION: u32 = 2;

/// How long a new sender key overlaps the old one before the sender switches to it (the
/// receivers install it first). One value for every rotation: a member leaving, a counter
/// running low, a rotation asked for. (The engine ran 500 ms and the unused group model 1 s;
/// 500 ms is what the end-to-end tests and the demo measured: the key arrives within
/// 70-280 ms on loopback under load.)
pub const KEY_ACTIVATION_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of a configured activation delay: a leaver can read our media until the switch,
/// so it is never put off for longer than this.
pub const MAX_KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(5);
/// How long a leaver's keys stay in the receive ring after the leave (frames still in flight
/// decrypt and are attributed to them); then they are removed, and frames under them fail.
pub const LEAVER_KEY_RETENTION: Duration = Duration::from_secs(5);
/// Rotations that may wait for the activation delay at once (a burst of leaves).
pub const MAX_PENDING_ROTATIONS: usize = 2;
/// Size of a freshly drawn base key, bytes.
pub const FRESH_KEY_SIZE: usize = 32;
/// How long the driver waits for the relay to admit us and negotiate media.
pub const RELAY_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the driver waits for one signaling round trip (seal and send, identity check,
/// acknowledgement).
pub const SIGNALING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gap in one sender's call-message sequence may hold later messages back before
/// they are released anyway (the missing message was lost: a send that failed).
pub const REORDER_GAP_WAIT: Duration = Duration::from_secs(2);
/// Most names the relay may announce as present in our room besides members (relay input is
/// untrusted: beyond this, non-members it names are not tracked).
pub const MAX_PRESENT: usize = MAX_GROUP_MEMBERS;
/// Most media actions held for a call whose media does not exist yet (keys and candidates that
/// arrive while we ring); beyond it new ones are dropped with a notice.
pub const MAX_HELD_MEDIA: usize = 128;
