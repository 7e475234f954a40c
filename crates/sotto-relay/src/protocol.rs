//! The relay's control protocol: JSON text frames over WebSocket (`protocol-spec/relay.md`).

use serde::{Deserialize, Serialize};

use crate::consts::{MAX_CONTROL_MESSAGE, MAX_NAME};

/// Participant → relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Join `room` as `participant`. The relay answers with an `offer`.
    Join {
        /// Room name.
        room: String,
        /// Participant name, unique in the room.
        participant: String,
    },
    /// The participant's SDP answer to the relay's offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// Leave the room (closing the socket does the same).
    Leave,
}

/// Relay → participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The relay's SDP offer: two receive m-lines for the participant's audio and video, then
    /// `MAX_ROOM_SIZE - 1` slots of (audio, video) the relay sends on.
    Offer {
        /// SDP.
        sdp: String,
    },
    /// Joined; the members already there.
    Joined {
        /// Other members.
        members: Vec<String>,
    },
    /// Someone joined the room.
    MemberJoined {
        /// Who.
        participant: String,
    },
    /// Someone left the room.
    MemberLeft {
        /// Who.
        participant: String,
    },
    /// A refused request.
    Error {
        /// Machine-readable code: `bad_message`, `room_full`, `too_many_rooms`, `name_taken`,
        /// `timeout`, `webrtc`.
        code: String,
        /// Words.
        message: String,
    },
}

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Over [`MAX_CONTROL_MESSAGE`].
    #[error("control message of {0} bytes exceeds MAX_CONTROL_MESSAGE ({MAX_CONTROL_MESSAGE})")]
    TooLarge(usize),
    /// Not one of the messages above.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// A name that is empty, too long, or not `[A-Za-z0-9._-]`.
    #[error("invalid name (1..={MAX_NAME} of A-Z a-z 0-9 . _ -)")]
    BadName,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Decodes a participant's message, checking limits. Never panics.
pub fn decode_client(text: &str) -> Result<ClientMsg, ProtocolError> {
    if text.len() > MAX_CONTROL_MESSAGE {
        return Err(ProtocolError::TooLarge(text.len()));
    }
    let m: ClientMsg =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if let ClientMsg::Join { room, participant } = &m {
        if !valid_name(room) || !valid_name(participant) {
            return Err(ProtocolError::BadName);
        }
    }
    Ok(m)
}

/// Decodes a relay message (client side). Never panics.
pub fn decode_server(text: &str) -> Result<ServerMsg, ProtocolError> {
    if text.len() > MAX_CONTROL_MESSAGE {
        return Err(ProtocolError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_limits() {
        assert!(decode_client(r#"{"type":"join","room":"r1","participant":"alice"}"#).is_ok());
        assert_eq!(
            decode_client(r#"{"type":"join","room":"","participant":"alice"}"#),
            Err(ProtocolError::BadName)
        );
        assert_eq!(
            decode_client(r#"{"type":"join","room":"a/b","participant":"alice"}"#),
            Err(ProtocolError::BadName)
        );
        let long = "a".repeat(MAX_NAME + 1);
        let at = "a".repeat(MAX_NAME);
        let j = |n: &str| format!(r#"{{"type":"join","room":"{n}","participant":"p"}}"#);
        assert!(decode_client(&j(&at)).is_ok());
        assert_eq!(decode_client(&j(&long)), Err(ProtocolError::BadName));
        assert!(matches!(
            decode_client("{"),
            Err(ProtocolError::Malformed(_))
        ));
        let big = " ".repeat(MAX_CONTROL_MESSAGE + 1);
        assert_eq!(
            decode_client(&big),
            Err(ProtocolError::TooLarge(MAX_CONTROL_MESSAGE + 1))
        );
    }
}
