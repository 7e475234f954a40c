//! Call messages: what two devices say to set up, run and end a call. Every message travels
//! inside the pair's sotto-ratchet session (see [`crate::sealed`]); the encoding is JSON
//! (`protocol-spec/call.md`).

use serde::{Deserialize, Serialize};
use sotto_frame::KeyMaterial;
use zeroize::Zeroize;

pub use crate::consts::{
    CALL_MESSAGE_VERSION, MAX_CALL_MESSAGE, MAX_CANDIDATE, MAX_GROUP_MEMBERS, MAX_MEDIA_KEY_HEX,
    MAX_MEMBER_NAME, MAX_REASON, MAX_RELAY_URL, MAX_REORDER, MAX_SDP,
};

/// Whether `s` may name a group member (`members` in an offer, `user` in `add`): an account name
/// the signaling server accepts, `[a-z0-9._-]{1,MAX_MEMBER_NAME}` (the same rule as
/// `sotto_server::protocol::valid_username`; [`MAX_MEMBER_NAME`] equals its
/// `MAX_USERNAME_BYTES`). No control characters, no uppercase or non-ASCII, no `/`.
pub fn valid_member_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MEMBER_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

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
    /// key (on the wire: hex of [`KeyMaterial::to_bytes`]; `""` for a group invite, which
    /// carries no key).
    Offer {
        /// Session description.
        sdp: String,
        /// Whether we send video.
        video: bool,
        /// Our media key (none in a group invite: members give theirs once the relay admits us).
        #[serde(with = "key_hex::optional")]
        media_key: Option<KeyMaterial>,
        /// Media goes through this sotto-relay (control URL; the room is the call id) instead
        /// of peer to peer; `sdp` is then empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        /// Group call: the other members already in the call (besides the sender), each of
        /// whom will send the invitee its media key. Empty for a 1:1 call.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<String>,
    },
    /// A trickled ICE candidate of the sender (W3C `RTCIceCandidateInit` JSON), sent after the
    /// offer or answer so that ringing never waits for ICE gathering.
    Candidate {
        /// The candidate, JSON.
        candidate: String,
    },
    /// Group call: the sender (a member) invited `user`; every member ratchets its media key
    /// and sends the ratcheted key to `user` only.
    Add {
        /// The invitee.
        user: String,
    },
    /// The callee's device rings.
    Ringing,
    /// "I take the call": our SDP and SFrame key.
    Answer {
        /// Session description.
        sdp: String,
        /// Our media key.
        #[serde(with = "key_hex")]
        media_key: KeyMaterial,
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
        /// The key.
        #[serde(with = "key_hex")]
        media_key: KeyMaterial,
    },
}

/// The wire encoding of a media key: lowercase hex of [`KeyMaterial::to_bytes`], produced and
/// read only here; in memory a key is always a [`KeyMaterial`] (zeroized on drop). Every
/// intermediate copy (bytes, hex text) is zeroized.
mod key_hex {
    use serde::de::{Error as _, Visitor};
    use serde::{Deserializer, Serializer};
    use sotto_frame::KeyMaterial;
    use zeroize::{Zeroize, Zeroizing};

    pub(super) fn encode(k: &KeyMaterial) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&*k.to_bytes()))
    }

    /// `None` for `""`, the key otherwise; errors name nothing secret.
    pub(super) fn decode(text: &str) -> Result<Option<KeyMaterial>, &'static str> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > super::MAX_MEDIA_KEY_HEX {
            return Err("media key over MAX_MEDIA_KEY_HEX");
        }
        let bytes = Zeroizing::new(hex::decode(text).map_err(|_| "media key is not hex")?);
        KeyMaterial::from_bytes(&bytes)
            .map(Some)
            .map_err(|_| "media key is not key material")
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = Option<KeyMaterial>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a hex media key")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            decode(v).map_err(E::custom)
        }
        fn visit_string<E: serde::de::Error>(self, mut v: String) -> Result<Self::Value, E> {
            let r = decode(&v).map_err(E::custom);
            v.zeroize();
            r
        }
    }

    pub(super) fn serialize<S: Serializer>(k: &KeyMaterial, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(k))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyMaterial, D::Error> {
        d.deserialize_str(KeyVisitor)?
            .ok_or_else(|| D::Error::custom("empty media key"))
    }

    pub(super) mod optional {
        use super::KeyVisitor;
        use serde::{Deserializer, Serializer};
        use sotto_frame::KeyMaterial;

        pub(in super::super) fn serialize<S: Serializer>(
            k: &Option<KeyMaterial>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match k {
                Some(k) => super::serialize(k, s),
                None => s.serialize_str(""),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<KeyMaterial>, D::Error> {
            d.deserialize_str(KeyVisitor)
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
            Body::Add { .. } => "add",
            Body::Candidate { .. } => "candidate",
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
    /// [`MessageError::Field`] if it is not 32 lowercase hex digits (decode checks this
    /// already).
    pub fn call_id(&self) -> Result<CallId, MessageError> {
        let bytes = hex::decode(&self.call).map_err(|_| MessageError::Field("call"))?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| MessageError::Field("call"))?;
        // canonical (lowercase) only: one call id, one spelling
        if hex::encode(arr) != self.call {
            return Err(MessageError::Field("call"));
        }
        Ok(CallId(arr))
    }

    /// JSON bytes. Contains keys: only ever hand them to the ratchet.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Strict decoder: size limit first, then shape, version and field limits. Never panics.
    /// An unknown `type` or an unknown field inside the body is `Malformed` (version 1 has no
    /// optional extensions; additions need a new version).
    ///
    /// # Errors
    /// [`MessageError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_CALL_MESSAGE {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let malformed = |e: serde_json::Error| MessageError::Malformed(e.to_string());
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
        let obj = value
            .as_object()
            .ok_or_else(|| MessageError::Malformed("not a JSON object".into()))?;
        // serde's `flatten` ignores unknown fields; version 1 refuses them
        let allowed: &[&str] = match obj.get("type").and_then(|t| t.as_str()) {
            Some("offer") => &["sdp", "video", "media_key", "relay", "members"],
            Some("add") => &["user"],
            Some("candidate") => &["candidate"],
            Some("answer") => &["sdp", "media_key"],
            Some("hangup") => &["reason"],
            Some("mute") => &["audio", "video"],
            Some("media_key") => &["media_key"],
            _ => &[],
        };
        if let Some(k) = obj.keys().find(|k| {
            !["v", "call", "seq", "type"].contains(&k.as_str()) && !allowed.contains(&k.as_str())
        }) {
            let _ = k;
            return Err(MessageError::Malformed("unknown field".into()));
        }
        // the key field is checked (and refused by name) before the typed parse reads it
        let key_field = match obj.get("media_key") {
            None => Ok(()),
            Some(serde_json::Value::String(s)) => match key_hex::decode(s) {
                Ok(Some(_)) => Ok(()),
                Ok(None) if obj.get("type").and_then(|t| t.as_str()) == Some("offer") => Ok(()),
                _ => Err(MessageError::Field("media_key")),
            },
            Some(_) => Err(MessageError::Field("media_key")),
        };
        let mut value = value;
        // parsed again from the bytes (strings borrowed, not copied), not from `value`
        let parsed = key_field
            .and_then(|()| serde_json::from_slice::<CallMessage>(bytes).map_err(malformed));
        if let Some(serde_json::Value::String(s)) = value.get_mut("media_key") {
            s.zeroize();
        }
        let m = parsed?;
        if m.v != CALL_MESSAGE_VERSION {
            return Err(MessageError::Version(m.v));
        }
        m.call_id()?;
        match &m.body {
            Body::Offer {
                relay: Some(url), ..
            } if url.len() > MAX_RELAY_URL => {
                return Err(MessageError::Field("relay"));
            }
            Body::Offer { members, .. }
                if members.len() > MAX_GROUP_MEMBERS
                    || !members.iter().all(|m| valid_member_name(m)) =>
            {
                return Err(MessageError::Field("members"));
            }
            Body::Candidate { candidate } if candidate.len() > MAX_CANDIDATE => {
                return Err(MessageError::Field("candidate"));
            }
            Body::Add { user } if !valid_member_name(user) => {
                return Err(MessageError::Field("user"));
            }
            Body::Offer { sdp, .. } | Body::Answer { sdp, .. } if sdp.len() > MAX_SDP => {
                return Err(MessageError::Field("sdp"));
            }
            Body::Hangup { reason } if reason.len() > MAX_REASON => {
                return Err(MessageError::Field("reason"))
            }
            _ => {}
        }
        Ok(m)
    }
}

/// Why [`Reorder::push`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReorderError {
    /// Already released (or skipped past): a replay or a late duplicate.
    #[error("call message seq {seq} is stale (next expected {next})")]
    Stale {
        /// The message's sequence number.
        seq: u32,
        /// The next sequence number expected.
        next: u32,
    },
    /// The same sequence number is already held.
    #[error("call message seq {seq} is already held")]
    Duplicate {
        /// The message's sequence number.
        seq: u32,
    },
    /// [`MAX_REORDER`] or more ahead of the next expected message.
    #[error("call message seq {seq} is too far ahead (next expected {next}, window MAX_REORDER)")]
    TooFarAhead {
        /// The message's sequence number.
        seq: u32,
        /// The next sequence number expected.
        next: u32,
    },
    /// The message belongs to another call than the one this buffer orders.
    #[error("call message for another call")]
    WrongCall,
}

/// Puts one direction of one call's messages back in sequence order.
///
/// The ratchet already opens reordered envelopes; this restores the order the sender meant
/// (an answer before the offer it answers is held, not acted on). Messages are released as soon
/// as they are contiguous from the next expected sequence number (0 at first). At most
/// [`MAX_REORDER`]` - 1` messages are held; a gap that never fills (a dropped envelope) stalls
/// the buffer, and the call's state machine ends the call by its timeouts.
#[derive(Debug, Default)]
pub struct Reorder {
    call: Option<String>,
    next: u32,
    held: std::collections::BTreeMap<u32, CallMessage>,
}

impl Reorder {
    /// An empty buffer expecting sequence number 0 of whichever call arrives first.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty buffer for `call`, expecting `next` (e.g. 1 after the offer was handled).
    pub fn starting_at(call: CallId, next: u32) -> Self {
        Reorder {
            call: Some(call.to_string()),
            next,
            held: Default::default(),
        }
    }

    /// The next sequence number to be released.
    pub fn next_seq(&self) -> u32 {
        self.next
    }

    /// How many messages wait for a gap to fill.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Gives up on the gap before the oldest held message (it was lost): returns the held
    /// messages now in order and how many sequence numbers were skipped. Nothing held: nothing.
    pub fn skip_gap(&mut self) -> (Vec<CallMessage>, u32) {
        let Some(first) = self.held.keys().next().copied() else {
            return (Vec::new(), 0);
        };
        let missing = first.saturating_sub(self.next);
        self.next = first;
        let mut out = Vec::new();
        while let Some(m) = self.held.remove(&self.next) {
            out.push(m);
            self.next = self.next.saturating_add(1);
        }
        (out, missing)
    }

    /// Takes `m`; returns the messages now in order (possibly none, possibly several).
    ///
    /// # Errors
    /// [`ReorderError`]; the buffer is then unchanged.
    pub fn push(&mut self, m: CallMessage) -> Result<Vec<CallMessage>, ReorderError> {
        match &self.call {
            Some(c) if *c != m.call => return Err(ReorderError::WrongCall),
            _ => {}
        }
        let next = self.next;
        if m.seq < next {
            return Err(ReorderError::Stale { seq: m.seq, next });
        }
        if m.seq - next >= MAX_REORDER {
            return Err(ReorderError::TooFarAhead { seq: m.seq, next });
        }
        if self.held.contains_key(&m.seq) {
            return Err(ReorderError::Duplicate { seq: m.seq });
        }
        if self.call.is_none() {
            self.call = Some(m.call.clone());
        }
        self.held.insert(m.seq, m);
        let mut out = Vec::new();
        while let Some(m) = self.held.remove(&self.next) {
            out.push(m);
            // a u32 sequence never wraps within one call (limits above keep calls far shorter)
            self.next = self.next.saturating_add(1);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A real media key (the wire carries only [`KeyMaterial`] encodings).
    fn key(b: u8) -> KeyMaterial {
        sotto_frame::SenderKey::new(sotto_frame::CipherSuite::default(), 7, &[b; 16])
            .unwrap()
            .material()
    }

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
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":0,"type":"ringing","x":1}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","seq":-1,"type":"ringing"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"abababababababababababababababab","type":"ringing"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"call":"ABABABABABABABABABABABABABABABABAB","seq":0,"type":"ringing"}"#,
                "field",
            ),
            (
                r#"{"v":1,"call":"ABABABABABABABABABABABABABABABAB","seq":0,"type":"ringing"}"#,
                "field",
            ),
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
                media_key: key(1),
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
                media_key: Some(key(0xbe)),
                relay: None,
                members: Vec::new(),
            },
        );
        let d = format!("{m:?}");
        assert!(!d.contains("secret") && !d.contains("bebe"), "{d}");
    }

    fn ringing(seq: u32) -> CallMessage {
        CallMessage::new(CallId([7; 16]), seq, Body::Ringing)
    }

    #[test]
    fn limits_at_and_over() {
        let at = |body| CallMessage::decode(&CallMessage::new(CallId([1; 16]), 0, body).encode());
        assert!(at(Body::Answer {
            sdp: "a".repeat(MAX_SDP),
            media_key: key(2)
        })
        .is_ok());
        assert_eq!(
            at(Body::Offer {
                sdp: "a".repeat(MAX_SDP + 1),
                video: false,
                media_key: None,
                relay: None,
                members: Vec::new(),
            })
            .unwrap_err(),
            MessageError::Field("sdp")
        );
        let offer_via = |relay: String| Body::Offer {
            sdp: String::new(),
            video: false,
            media_key: None,
            relay: Some(relay),
            members: Vec::new(),
        };
        assert!(at(offer_via("r".repeat(MAX_RELAY_URL))).is_ok());
        assert_eq!(
            at(offer_via("r".repeat(MAX_RELAY_URL + 1))).unwrap_err(),
            MessageError::Field("relay")
        );
        assert!(at(Body::Hangup {
            reason: "r".repeat(MAX_REASON)
        })
        .is_ok());
        assert_eq!(
            at(Body::Hangup {
                reason: "r".repeat(MAX_REASON + 1)
            })
            .unwrap_err(),
            MessageError::Field("reason")
        );
        assert!(at(Body::MediaKey { media_key: key(3) }).is_ok());
        // the key field: over MAX_MEDIA_KEY_HEX, not hex, or hex that is not key material,
        // refused by name; an empty key only in an offer (a group invite)
        let raw = |kind: &str, k: &str| {
            let extra = if kind == "answer" {
                r#","sdp":"""#
            } else if kind == "offer" {
                r#","sdp":"","video":true"#
            } else {
                ""
            };
            CallMessage::decode(
                format!(r#"{{"v":1,"call":"abababababababababababababababab","seq":0,"type":"{kind}","media_key":"{k}"{extra}}}"#)
                    .as_bytes(),
            )
        };
        let good = hex::encode(&*key(4).to_bytes());
        assert!(raw("media_key", &good).is_ok());
        assert!(raw("answer", &good).is_ok());
        assert!(raw("offer", "").is_ok());
        for bad in [
            "ab".repeat(MAX_MEDIA_KEY_HEX / 2 + 1),
            "ab".repeat(MAX_MEDIA_KEY_HEX / 2),
            "zz".into(),
            String::new(),
            format!("{good}00"),
        ] {
            assert_eq!(
                raw("media_key", &bad).unwrap_err(),
                MessageError::Field("media_key")
            );
            if !bad.is_empty() {
                assert_eq!(
                    raw("offer", &bad).unwrap_err(),
                    MessageError::Field("media_key")
                );
            }
        }
        assert_eq!(
            raw("answer", "").unwrap_err(),
            MessageError::Field("media_key")
        );
        // a message of exactly MAX_CALL_MESSAGE bytes is parsed; one more byte is not
        let mut exact = CallMessage::new(
            CallId([1; 16]),
            0,
            Body::Hangup {
                reason: String::new(),
            },
        )
        .encode()
        .to_vec();
        let pad = MAX_CALL_MESSAGE - exact.len();
        exact.splice(0..0, std::iter::repeat_n(b' ', pad));
        assert_eq!(exact.len(), MAX_CALL_MESSAGE);
        assert!(CallMessage::decode(&exact).is_ok());
        exact.insert(0, b' ');
        assert_eq!(
            CallMessage::decode(&exact).unwrap_err(),
            MessageError::TooLarge(MAX_CALL_MESSAGE + 1)
        );
    }

    #[test]
    fn every_kind_round_trips() {
        let id = CallId::random();
        let bodies = vec![
            Body::Offer {
                sdp: "v=0".into(),
                video: true,
                media_key: Some(key(5)),
                relay: None,
                members: Vec::new(),
            },
            Body::Ringing,
            Body::Answer {
                sdp: "v=0".into(),
                media_key: key(6),
            },
            Body::Reject,
            Body::Busy,
            Body::Hangup {
                reason: "bye".into(),
            },
            Body::Mute {
                audio: false,
                video: true,
            },
            Body::MediaKey { media_key: key(7) },
        ];
        for (i, b) in bodies.into_iter().enumerate() {
            let m = CallMessage::new(id, i as u32, b);
            assert_eq!(CallMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_and_mutations_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let valid = CallMessage::new(
            CallId([9; 16]),
            1,
            Body::Offer {
                sdp: "v=0\r\na=fingerprint:sha-256 AA".into(),
                video: true,
                media_key: Some(key(8)),
                relay: None,
                members: Vec::new(),
            },
        )
        .encode()
        .to_vec();
        for _ in 0..20_000 {
            let mut b = valid.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = rng.gen(),
                    1 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = CallMessage::decode(&b);
            let len = rng.gen_range(0..64);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = CallMessage::decode(&junk);
        }
    }

    #[test]
    fn reorder_releases_in_sequence_and_refuses_by_name() {
        let mut r = Reorder::new();
        assert!(r.push(ringing(2)).unwrap().is_empty());
        assert!(r.push(ringing(1)).unwrap().is_empty());
        assert_eq!(r.held(), 2);
        assert_eq!(
            r.push(ringing(2)).unwrap_err(),
            ReorderError::Duplicate { seq: 2 }
        );
        let out: Vec<u32> = r.push(ringing(0)).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(r.next_seq(), 3);
        assert_eq!(
            r.push(ringing(1)).unwrap_err(),
            ReorderError::Stale { seq: 1, next: 3 }
        );
        // window: next + MAX_REORDER - 1 is held, next + MAX_REORDER is refused
        assert!(r.push(ringing(3 + MAX_REORDER - 1)).unwrap().is_empty());
        assert_eq!(
            r.push(ringing(3 + MAX_REORDER)).unwrap_err(),
            ReorderError::TooFarAhead {
                seq: 3 + MAX_REORDER,
                next: 3
            }
        );
        assert_eq!(
            r.push(CallMessage::new(CallId([8; 16]), 3, Body::Ringing))
                .unwrap_err(),
            ReorderError::WrongCall
        );
        let mut s = Reorder::starting_at(CallId([7; 16]), 1);
        assert_eq!(s.push(ringing(1)).unwrap().len(), 1);
        assert_eq!(
            s.push(ringing(0)).unwrap_err(),
            ReorderError::Stale { seq: 0, next: 2 }
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod group_message_tests {
    use super::*;

    #[test]
    fn members_and_add_limits() {
        let id = CallId([0xab; 16]);
        let offer = |members: Vec<String>| {
            CallMessage::new(
                id,
                0,
                Body::Offer {
                    sdp: String::new(),
                    video: true,
                    media_key: None,
                    relay: Some("ws://r".into()),
                    members,
                },
            )
        };
        let name = |n: usize| "m".repeat(n);
        let ok = offer((0..MAX_GROUP_MEMBERS).map(|i| format!("m{i}")).collect());
        assert_eq!(CallMessage::decode(&ok.encode()).unwrap(), ok);
        let too_many = offer((0..=MAX_GROUP_MEMBERS).map(|i| format!("m{i}")).collect());
        assert_eq!(
            CallMessage::decode(&too_many.encode()).unwrap_err(),
            MessageError::Field("members")
        );
        assert!(CallMessage::decode(&offer(vec![name(MAX_MEMBER_NAME)]).encode()).is_ok());
        assert_eq!(
            CallMessage::decode(&offer(vec![name(MAX_MEMBER_NAME + 1)]).encode()).unwrap_err(),
            MessageError::Field("members")
        );
        let add = |u: String| CallMessage::new(id, 1, Body::Add { user: u });
        let a = add(name(MAX_MEMBER_NAME));
        let bytes = a.encode();
        assert!(std::str::from_utf8(&bytes)
            .unwrap()
            .contains(r#""type":"add","user":"#));
        assert_eq!(CallMessage::decode(&bytes).unwrap(), a);
        assert_eq!(
            CallMessage::decode(&add(name(MAX_MEMBER_NAME + 1)).encode()).unwrap_err(),
            MessageError::Field("user")
        );
        assert_eq!(
            CallMessage::decode(&add(String::new()).encode()).unwrap_err(),
            MessageError::Field("user")
        );
        let bad = [
            "bob\u{1b}[2J".to_string(),
            "bob\n".to_string(),
            "\u{0}".to_string(),
            "Bob".to_string(),
            "b\u{f6}b".to_string(),
            "\u{202e}bob".to_string(),
            String::new(),
            name(MAX_MEMBER_NAME + 1),
            "../x".to_string(),
            "a/b".to_string(),
            "bob ".to_string(),
        ];
        for b in bad {
            assert!(!valid_member_name(&b), "{b:?}");
            assert_eq!(
                CallMessage::decode(&add(b.clone()).encode()).unwrap_err(),
                MessageError::Field("user"),
                "{b:?}"
            );
            assert_eq!(
                CallMessage::decode(&offer(vec!["carol".into(), b.clone()]).encode()).unwrap_err(),
                MessageError::Field("members"),
                "{b:?}"
            );
        }
        for good in ["carol", "a", "alice.b-c_9", &name(MAX_MEMBER_NAME)] {
            assert!(valid_member_name(good), "{good}");
            let a = add(good.into());
            assert_eq!(CallMessage::decode(&a.encode()).unwrap(), a);
            let o = offer(vec![good.into()]);
            assert_eq!(CallMessage::decode(&o.encode()).unwrap(), o);
        }
        // the same rule as the signaling server's usernames
        for n in [
            "carol",
            "Carol",
            "",
            "../x",
            "a b",
            "x.y_z-0",
            &name(65),
            &name(64),
        ] {
            assert_eq!(
                valid_member_name(n),
                sotto_server::protocol::valid_username(n),
                "{n:?}"
            );
        }
        assert_eq!(MAX_MEMBER_NAME, sotto_server::consts::MAX_USERNAME_BYTES);
        // a 1:1 offer carries no members field at all
        let one = offer(vec![]);
        assert!(!std::str::from_utf8(&one.encode())
            .unwrap()
            .contains("members"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod candidate_message_tests {
    use super::*;

    #[test]
    fn candidate_limit_and_exact_form() {
        let id = CallId([0xab; 16]);
        let m = |c: String| CallMessage::new(id, 2, Body::Candidate { candidate: c });
        let at = m("c".repeat(MAX_CANDIDATE));
        assert_eq!(CallMessage::decode(&at.encode()).unwrap(), at);
        assert_eq!(
            CallMessage::decode(&m("c".repeat(MAX_CANDIDATE + 1)).encode()).unwrap_err(),
            MessageError::Field("candidate")
        );
        let small = m("{}".into());
        assert_eq!(
            std::str::from_utf8(&small.encode()).unwrap(),
            r#"{"v":1,"call":"abababababababababababababababab","seq":2,"type":"candidate","candidate":"{}"}"#
        );
    }
}
