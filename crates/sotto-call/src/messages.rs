//! Call messages: what two devices say to set up, run and end a call. Every message travels
//! inside the pair's sotto-ratchet session (see [`crate::sealed`]); the encoding is JSON
//! (`protocol-spec/call.md`).

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Version of the call message encoding.
pub const CALL_MESSAGE_VERSION: u8 = 1;
/// Largest encoded call message.
pub const MAX_CALL_MESSAGE: usize = 48 * 1024;
/// Largest SDP in an offer or answer.
pub const MAX_SDP: usize = 32 * 1024;
/// Longest hangup reason text.
pub const MAX_REASON: usize = 200;

/// A call id: 16 random bytes, hex on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub [u8; 16]);

impl CallId {
    /// A fresh random id.
    pub fn random() -> Self {
        CallId(rand::random())
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What a call message says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Body {
    /// "I am calling you": our SDP (DTLS fingerprint and ICE candidates included) and our SFrame
    /// key (KeyMaterial, hex).
    Offer {
        /// Session description.
        sdp: String,
        /// Whether we send video.
        video: bool,
        /// Our media key.
        media_key: String,
        /// Media goes through this sotto-relay (control URL; the room is the call id) instead
        /// of peer to peer; `sdp` is then empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
    },
    /// The callee's device rings.
    Ringing,
    /// "I take the call": our SDP and SFrame key.
    Answer {
        /// Session description.
        sdp: String,
        /// Our media key.
        media_key: String,
    },
    /// Declined.
    Reject,
    /// In another call.
    Busy,
    /// The call is over.
    Hangup {
        /// Free text, for the display.
        reason: String,
    },
    /// Our mute state changed.
    Mute {
        /// Audio muted.
        audio: bool,
        /// Video muted.
        video: bool,
    },
    /// Our next SFrame key (rotation); we switch to it shortly after.
    MediaKey {
        /// KeyMaterial, hex.
        media_key: String,
    },
}

impl Drop for Body {
    fn drop(&mut self) {
        match self {
            Body::Offer { media_key, .. }
            | Body::Answer { media_key, .. }
            | Body::MediaKey { media_key } => media_key.zeroize(),
            _ => {}
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // no SDP, no keys in logs
        f.write_str(self.kind())
    }
}

impl Body {
    /// The message type's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Offer { .. } => "offer",
            Body::Ringing => "ringing",
            Body::Answer { .. } => "answer",
            Body::Reject => "reject",
            Body::Busy => "busy",
            Body::Hangup { .. } => "hangup",
            Body::Mute { .. } => "mute",
            Body::MediaKey { .. } => "media_key",
        }
    }
}

/// One call message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMessage {
    /// [`CALL_MESSAGE_VERSION`].
    pub v: u8,
    /// The call, hex.
    pub call: String,
    /// Per call and direction, from 0, +1 per message.
    pub seq: u32,
    /// The content.
    #[serde(flatten)]
    pub body: Body,
}

/// A call message that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Over [`MAX_CALL_MESSAGE`].
    #[error("call message of {0} bytes exceeds MAX_CALL_MESSAGE ({MAX_CALL_MESSAGE})")]
    TooLarge(usize),
    /// Not valid JSON of the right shape.
    #[error("malformed call message: {0}")]
    Malformed(String),
    /// Another version.
    #[error("unsupported call message version {0}")]
    Version(u8),
    /// A field over its limit or of the wrong form.
    #[error("invalid call message field: {0}")]
    Field(&'static str),
}

impl CallMessage {
    /// A message for `call`.
    pub fn new(call: CallId, seq: u32, body: Body) -> Self {
        CallMessage {
            v: CALL_MESSAGE_VERSION,
            call: call.to_string(),
            seq,
            body,
        }
    }

    /// The call id.
    ///
    /// # Errors
    /// [`MessageError::Field`] if it is not 32 hex digits (decode checks this already).
    pub fn call_id(&self) -> Result<CallId, MessageError> {
        let bytes = hex::decode(&self.call).map_err(|_| MessageError::Field("call"))?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| MessageError::Field("call"))?;
        Ok(CallId(arr))
    }

    /// JSON bytes. Contains keys: only ever hand them to the ratchet.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Strict decoder: size limit first, then shape, version and field limits. Never panics.
    /// Unknown fields are ignored (room for later additions within version 1).
    ///
    /// # Errors
    /// [`MessageError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_CALL_MESSAGE {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let m: CallMessage =
            serde_json::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
        if m.v != CALL_MESSAGE_VERSION {
            return Err(MessageError::Version(m.v));
        }
        m.call_id()?;
        match &m.body {
            Body::Offer { sdp, media_key, .. } | Body::Answer { sdp, media_key } => {
                if sdp.len() > MAX_SDP {
                    return Err(MessageError::Field("sdp"));
                }
                if media_key.len() > 256 || hex::decode(media_key).is_err() {
                    return Err(MessageError::Field("media_key"));
                }
            }
            Body::MediaKey { media_key }
                if media_key.len() > 256 || hex::decode(media_key).is_err() =>
            {
                return Err(MessageError::Field("media_key"));
            }
            Body::Hangup { reason } if reason.len() > MAX_REASON => {
                return Err(MessageError::Field("reason"))
            }
            _ => {}
        }
        Ok(m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_json() {
        let id = CallId([0xab; 16]);
        let m = CallMessage::new(
            id,
            3,
            Body::Mute {
                audio: true,
                video: false,
            },
        );
        let bytes = m.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"call":"abababababababababababababababab","seq":3,"type":"mute","audio":true,"video":false}"#
        );
        assert_eq!(CallMessage::decode(&bytes).unwrap(), m);
        assert_eq!(m.call_id().unwrap(), id);
    }

    #[test]
    fn bad_messages_are_refused_by_name() {
        let ok = r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"ringing"}"#;
        assert!(CallMessage::decode(ok.as_bytes()).is_ok());
        let cases = [
            (
                r#"{"v":2,"call":"abababababababababababababababab","seq":0,"type":"ringing"}"#,
                "version",
            ),
            (r#"{"v":1,"call":"abab","seq":0,"type":"ringing"}"#, "field"),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"dance"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"media_key","media_key":"zz"}"#,
                "field",
            ),
            ("", "malformed"),
            ("[]", "malformed"),
        ];
        for (input, what) in cases {
            let e = CallMessage::decode(input.as_bytes()).unwrap_err();
            let matches = match what {
                "version" => matches!(e, MessageError::Version(2)),
                "field" => matches!(e, MessageError::Field(_)),
                _ => matches!(e, MessageError::Malformed(_)),
            };
            assert!(matches, "{input}: {e:?}");
        }
        let sdp = "a".repeat(MAX_SDP + 1);
        let big = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Answer {
                sdp,
                media_key: String::new(),
            },
        );
        assert_eq!(
            CallMessage::decode(&big.encode()).unwrap_err(),
            MessageError::Field("sdp")
        );
        let huge = vec![b' '; MAX_CALL_MESSAGE + 1];
        assert_eq!(
            CallMessage::decode(&huge).unwrap_err(),
            MessageError::TooLarge(MAX_CALL_MESSAGE + 1)
        );
        let limit = vec![b' '; MAX_CALL_MESSAGE];
        assert!(matches!(
            CallMessage::decode(&limit).unwrap_err(),
            MessageError::Malformed(_)
        ));
    }

    #[test]
    fn debug_shows_no_sdp_or_key() {
        let m = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Offer {
                sdp: "v=0 secret".into(),
                video: true,
                media_key: "beef".into(),
                relay: None,
            },
        );
        let d = format!("{m:?}");
        assert!(!d.contains("secret") && !d.contains("beef"), "{d}");
    }
}
