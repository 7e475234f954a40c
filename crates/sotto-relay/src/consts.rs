//! Named limits of the relay.

use std::time::Duration;

/// Participants per room. However many there are, each receives on a fixed set of slots
/// ([`AUDIO_SLOTS`] audio, [`VIDEO_SLOTS`] video) that carry the active speakers
/// (`crate::speakers`); the signaling server's `MAX_RELAY_ROOM_MEMBERS` is the same 32.
pub const MAX_ROOM_SIZE: usize = 32;
/// Audio receive slots per participant: the three loudest other members are heard.
pub const AUDIO_SLOTS: usize = 3;
/// Video receive slots per participant: the four most recent other speakers are seen. At least
/// [`AUDIO_SLOTS`], so whoever is heard is seen too; four, so a room of five (the old
/// `MAX_ROOM_SIZE`) still sees everyone. No more, because each slot is one more stream per
/// receiver whatever the room's size: a 128 kbit/s, 15 fps video stream is ~16 packets/s
/// against an audio slot's 50, so a room of 25 costs the relay 25 x (3 x 50 + 4 x 16) ~ 5,400
/// forwarded packets/s at most, and each receiver four VP8 reassemblies and decryptions (the
/// 25-participant loopback test on 2 cores).
pub const VIDEO_SLOTS: usize = 4;
/// Time constant of the smoothing of a member's audio level (an exponential moving average
/// over its packets).
pub const LEVEL_SMOOTHING: Duration = Duration::from_millis(200);
/// A member whose audio carried no level for this long counts as silent.
pub const LEVEL_TIMEOUT: Duration = Duration::from_millis(500);
/// A member is speaking from this smoothed level (−dBov, RFC 6464) or louder ...
pub const SPEECH_ON_LEVEL: u8 = 50;
/// ... until its smoothed level falls below this one.
pub const SPEECH_OFF_LEVEL: u8 = 60;
/// A member without an audio place takes one only when its smoothed level is this many dB
/// above the quietest holder's.
pub const SPEAKER_HYSTERESIS_DB: f32 = 6.0;
/// An audio or video place is held at least this long before it can change hands.
pub const MIN_SPEAKER_HOLD: Duration = Duration::from_secs(1);
/// A video slot's new holder takes it over at its first key frame (asked for with a PLI when
/// the slot was given to it), or at any frame start once this much has passed since.
pub const SWITCH_KEYFRAME_WAIT: Duration = Duration::from_millis(600);
/// A video slot's old holder is cut at the end of its current frame; if it sends nothing for
/// this long (left, muted) the slot is free for the new holder at once.
pub const HOLDER_STALL: Duration = Duration::from_millis(200);
/// The largest step, in sequence numbers, between a slot holder's packets that the slot passes
/// on as is: a packet further ahead is renumbered to follow the slot's last one, a packet further
/// behind is dropped (`slot.rs`, `SlotSeq`). Twice the NACK logs, so honest late and resent
/// packets pass.
pub const MAX_SEQ_STEP: i16 = 1_024;
/// The largest step, in seconds of the media clock, between a slot holder's RTP timestamps that
/// the slot passes on as is: a larger one is re-anchored like a new holder's.
pub const MAX_TS_STEP_SECS: u32 = 10;
/// How often a room's speaker ranking is applied to its slots (at most; on audio packets).
pub const RANK_INTERVAL: Duration = Duration::from_millis(20);
/// Rooms per relay.
pub const MAX_ROOMS: usize = 64;
/// Rooms opened from one address (the address of the connection whose join created the room,
/// counted as `sotto_admission::address_key` says: IPv6 per /56) that may be live at once. A
/// join that would open one more is refused with `too_many_rooms_from_address` before any peer
/// connection exists. Tokens already say who may join which room, but an account can be had
/// for each `REGISTRATIONS_PER_ADDRESS_PER_HOUR` at the signaling server; this is what keeps
/// one address (or one NAT's worth of users) from holding more than an eighth of `MAX_ROOMS`.
pub const MAX_ROOMS_PER_ADDR: usize = 8;
/// Largest control message (JSON over WebSocket), bytes.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Longest room or participant name.
pub const MAX_NAME: usize = 64;
/// Time a new control connection has to finish the TLS and WebSocket handshakes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a participant has to send `join` and its answer.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// ICE gathering limit for the relay's offers.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest captured payload record.
pub const MAX_CAPTURE_PAYLOAD: usize = 64 * 1024;
/// At most one keyframe request (PLI) per sender per this interval, however many receivers ask.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// How often a slot's feedback task retries while its track is not bound yet.
pub const FEEDBACK_POLL_RETRY: Duration = Duration::from_millis(50);
/// Video packets kept per slot video track for retransmission (the NACK responder's buffer;
/// webrtc-rs wants a power of two), as the relay sent them; their payloads are reference-counted
/// clones of the received packet, shared among the sender's slots. A NACK for an older packet
/// goes unanswered.
pub const NACK_SEND_BUFFER: u16 = 512;
/// Sequence numbers tracked per inbound video stream for loss detection (the NACK generator's
/// receive log; a power of two).
pub const NACK_RECEIVE_LOG: u16 = 512;
/// How often the relay NACKs its senders for missing video packets.
pub const NACK_INTERVAL: Duration = Duration::from_millis(50);
/// Times the relay asks for one missing packet before giving it up (`NACK_INTERVAL` apart).
pub const MAX_NACKS_PER_PACKET: u16 = 8;
/// Sequence numbers the relay resends for one receiver NACK (one media SSRC) at most; the rest
/// of it is refused, and an honest receiver asks again at its next NACK interval. 64 packets are
/// about 375 ms of a 1.5 Mbit/s video stream (~170 packets/s), longer than a receiver waits for
/// a missing packet before giving up on its frame (sotto's `MAX_LATE_TIME`, 200 ms).
pub const MAX_RETRANSMISSIONS_PER_NACK: usize = 64;
/// A packet resent to a receiver is not resent to it again for a NACK arriving within this time
/// (the relay's own `NACK_INTERVAL`): the first copy is still on its way. An honest receiver
/// asks again only after its own NACK interval (webrtc-rs's default, which sotto's `MediaPeer`
/// uses, is 100 ms), so its re-ask for a resend that was lost again passes.
pub const RETRANSMISSION_HOLDOFF: Duration = NACK_INTERVAL;
/// Retransmissions per second one receiver's connection earns (a token bucket refilled at this
/// rate, holding at most [`RETRANSMISSION_BURST`]); a NACKed packet without a token is refused.
/// Honest 10 % loss on four 1.5 Mbit/s video streams (more than the `VIDEO_SLOTS`, ~170 packets/s
/// each) needs ~68 resends/s, ~75/s with the resends lost again: this is more than three times
/// that. (The `relay_retransmission` test, one 128 kbit/s stream of ~19 packets/s at 10 % loss,
/// needs ~2/s.)
pub const RETRANSMISSION_RATE: u32 = 250;
/// Retransmissions one receiver's connection may get at once: one second's worth of
/// [`RETRANSMISSION_RATE`], more than a 200 ms outage on four 1.5 Mbit/s video streams
/// (~140 packets) takes to repair.
pub const RETRANSMISSION_BURST: u32 = 250;
/// RTP payload type of VP8 on relay legs (the only video codec the relay offers).
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
/// RTP payload type of Opus on relay legs (the only audio codec the relay offers).
pub const AUDIO_PAYLOAD_TYPE: u8 = 111;
/// Control connections from one address that are not in a room yet (handshaking, before
/// `join`, negotiating); more are closed at once, so one address cannot hold the relay's
/// pre-join resources (each can cost a TLS handshake and a peer connection) for long.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;
/// Control connections not in a room yet, from all addresses together.
pub const MAX_PENDING: usize = 256;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// `(room, participant)` leaves the relay remembers, to refuse tokens minted before a leave
/// (`token_predates_leave`). When full, the oldest is forgotten and its leave time becomes a
/// floor: every token minted at or before it is refused as predating a leave (conservative:
/// an old token is never admitted because its leave was forgotten).
pub const MAX_REMEMBERED_LEAVES: usize = 4096;
/// How long a leave is remembered: the longest token lifetime a server mints
/// (`sotto_admission::consts::MAX_TTL_SECS`) plus the clock skew, after which every token
/// minted before the leave has expired anyway.
pub const LEAVE_MEMORY: Duration = Duration::from_millis(
    sotto_admission::consts::MAX_TTL_SECS * 1000 + sotto_admission::consts::CLOCK_SKEW_MS,
);
/// Ports of the UDP range (`--udp-ports`) a new peer connection tries before the join is
/// refused with `no_media_port`: a leased port may still be bound by a closing connection or by
/// another program on the host.
pub const MAX_MEDIA_PORT_ATTEMPTS: usize = 16;
