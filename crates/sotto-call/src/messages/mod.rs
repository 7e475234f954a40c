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
        /// Through a relay: the signaling server's token admitting the recipient to the room
        /// (`sotto_admission`; at most `MAX_TOKEN_LEN` bytes). Only ever sealed to the
        /// recipient.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay_token: Option<sotto_admission::RelayToken>,
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
            Some("offer") => &[
                "sdp",
                "video",
                "media_key",
                "relay",
                "members",
                "relay_token",
            ],
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
mod tests;
