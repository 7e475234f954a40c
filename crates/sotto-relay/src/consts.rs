//! Named limits of the relay.

use std::time::Duration;

/// Participants per room (each holds `MAX_ROOM_SIZE - 1` receive slots).
pub const MAX_ROOM_SIZE: usize = 5;
/// Rooms per relay.
pub const MAX_ROOMS: usize = 64;
/// Largest control message (JSON over WebSocket), bytes.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Longest room or participant name.
pub const MAX_NAME: usize = 64;
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
/// RTP payload type of VP8 on relay legs (the only video codec the relay offers).
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
/// RTP payload type of Opus on relay legs (the only audio codec the relay offers).
pub const AUDIO_PAYLOAD_TYPE: u8 = 111;
