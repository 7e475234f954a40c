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
