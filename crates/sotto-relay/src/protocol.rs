//! The relay's control protocol: JSON text frames over WebSocket (`protocol-spec/relay.md`).

use serde::{Deserialize, Serialize};
use sotto_admission::{RelayToken, TokenError};

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
        /// The signaling server's token admitting `participant` to `room` at this relay
        /// (`sotto_admission`); without one the join is refused (`token_missing`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<RelayToken>,
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
    /// `AUDIO_SLOTS` audio and then `VIDEO_SLOTS` video slots the relay sends on.
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
        /// Machine-readable code.
        code: ErrorCode,
        /// Words.
        message: String,
    },
}

/// The machine-readable code of a [`ServerMsg::Error`], as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// `bad_message`: not the message expected at this point, or not a valid one.
    BadMessage,
    /// `room_full`: the room already has `MAX_ROOM_SIZE` members.
    RoomFull,
    /// `too_many_rooms`: a new room would exceed `MAX_ROOMS`.
    TooManyRooms,
    /// `too_many_rooms_from_address`: a new room would make more than `MAX_ROOMS_PER_ADDR`
    /// rooms opened from the joining connection's address.
    TooManyRoomsFromAddress,
    /// `name_taken`: the participant name is in use in the room.
    NameTaken,
    /// `timeout`: no `join` within `JOIN_TIMEOUT`.
    Timeout,
    /// `webrtc`: the relay's peer connection failed (ICE gathering, the answer).
    Webrtc,
    /// `token_missing`: a `join` without a token.
    TokenMissing,
    /// `token_malformed`: a token that is not one.
    TokenMalformed,
    /// `token_forged`: a token whose MAC does not verify (another secret, altered claims).
    TokenForged,
    /// `token_expired`: a token past its expiry.
    TokenExpired,
    /// `token_wrong_relay`: a token minted for another relay.
    TokenWrongRelay,
    /// `token_wrong_room`: a token minted for another room.
    TokenWrongRoom,
    /// `token_wrong_participant`: a token minted for another participant name.
    TokenWrongParticipant,
    /// `token_predates_leave`: a token minted before its participant last left the room
    /// (rejoining needs a fresh token: a new invitation).
    TokenPredatesLeave,
    /// `no_media_port`: every port of the relay's UDP port range (`--udp-ports`) is in use.
    NoMediaPort,
    /// A code this version does not know (a newer relay's). Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TooManyRoomsFromAddress => "too_many_rooms_from_address",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Webrtc => "webrtc",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenForged => "token_forged",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenWrongRelay => "token_wrong_relay",
            ErrorCode::TokenWrongRoom => "token_wrong_room",
            ErrorCode::TokenWrongParticipant => "token_wrong_participant",
            ErrorCode::TokenPredatesLeave => "token_predates_leave",
            ErrorCode::NoMediaPort => "no_media_port",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl From<TokenError> for ErrorCode {
    fn from(e: TokenError) -> ErrorCode {
        match e {
            TokenError::Missing => ErrorCode::TokenMissing,
            TokenError::Malformed => ErrorCode::TokenMalformed,
            TokenError::Forged => ErrorCode::TokenForged,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::WrongRelay => ErrorCode::TokenWrongRelay,
            TokenError::WrongRoom => ErrorCode::TokenWrongRoom,
            TokenError::WrongParticipant => ErrorCode::TokenWrongParticipant,
            TokenError::PredatesLeave => ErrorCode::TokenPredatesLeave,
            // a variant a newer sotto-admission adds
            _ => ErrorCode::TokenMalformed,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    if let ClientMsg::Join {
        room, participant, ..
    } = &m
    {
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

    #[test]
    fn error_codes_keep_their_wire_strings() {
        let codes = [
            (ErrorCode::BadMessage, "bad_message"),
            (ErrorCode::RoomFull, "room_full"),
            (ErrorCode::TooManyRooms, "too_many_rooms"),
            (
                ErrorCode::TooManyRoomsFromAddress,
                "too_many_rooms_from_address",
            ),
            (ErrorCode::NameTaken, "name_taken"),
            (ErrorCode::Timeout, "timeout"),
            (ErrorCode::Webrtc, "webrtc"),
            (ErrorCode::TokenMissing, "token_missing"),
            (ErrorCode::TokenMalformed, "token_malformed"),
            (ErrorCode::TokenForged, "token_forged"),
            (ErrorCode::TokenExpired, "token_expired"),
            (ErrorCode::TokenWrongRelay, "token_wrong_relay"),
            (ErrorCode::TokenWrongRoom, "token_wrong_room"),
            (ErrorCode::TokenWrongParticipant, "token_wrong_participant"),
            (ErrorCode::TokenPredatesLeave, "token_predates_leave"),
            (ErrorCode::NoMediaPort, "no_media_port"),
        ];
        for (code, wire) in codes {
            let json = format!(r#"{{"type":"error","code":"{wire}","message":"m"}}"#);
            let msg = ServerMsg::Error {
                code,
                message: "m".into(),
            };
            assert_eq!(serde_json::to_string(&msg).unwrap(), json);
            assert_eq!(decode_server(&json), Ok(msg));
            assert_eq!(code.as_str(), wire);
            assert_eq!(code.to_string(), wire);
        }
        // a newer relay's code still parses
        assert_eq!(
            decode_server(r#"{"type":"error","code":"slow_down","message":"later"}"#),
            Ok(ServerMsg::Error {
                code: ErrorCode::Unknown,
                message: "later".into(),
            })
        );
    }
}
