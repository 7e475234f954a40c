//! `SignalMessage` and `PreKeySignalMessage`: libsignal's wire format.
//!
//! ```text
//! SignalMessage       = version_byte ‖ protobuf(wire.SignalMessage) ‖ mac[8]
//! PreKeySignalMessage = version_byte ‖ protobuf(wire.PreKeySignalMessage)
//! version_byte        = (message_version << 4) | CURRENT_VERSION
//! mac                 = HMAC-SHA256(mac_key, sender_identity[33] ‖ receiver_identity[33]
//!                                            ‖ version_byte ‖ protobuf)[..8]
//! ```
//! Decoders are strict and bounded: size limit first, then version, then protobuf, then every
//! required field; they never panic on any input.

use prost::Message as _;
use subtle::ConstantTimeEq;

use crate::consts::{
    CIPHERTEXT_MESSAGE_CURRENT_VERSION, CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION, MAC_LENGTH,
    MAX_MESSAGE_SIZE,
};
use crate::crypto::hmac_sha256;
use crate::curve::PublicKey;
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::proto;

fn version_byte(version: u8) -> u8 {
    ((version & 0x0F) << 4) | CIPHERTEXT_MESSAGE_CURRENT_VERSION
}

fn check_version(byte: u8) -> Result<u8> {
    let v = byte >> 4;
    if v < CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION {
        return Err(Error::LegacyVersion(v));
    }
    if v > CIPHERTEXT_MESSAGE_CURRENT_VERSION {
        return Err(Error::UnrecognizedVersion(v));
    }
    Ok(v)
}

/// A Double Ratchet message.
#[derive(Clone, Debug)]
pub struct SignalMessage {
    version: u8,
    ratchet_key: PublicKey,
    counter: u32,
    previous_counter: u32,
    ciphertext: Vec<u8>,
    pq_ratchet: Vec<u8>,
    addresses: Option<Vec<u8>>,
    serialized: Vec<u8>,
}

impl SignalMessage {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        version: u8,
        mac_key: &[u8; 32],
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
        sender_identity: &IdentityKey,
        receiver_identity: &IdentityKey,
        pq_ratchet: &[u8],
    ) -> Self {
        let body = proto::wire::SignalMessage {
            ratchet_key: Some(ratchet_key.serialize().to_vec()),
            counter: Some(counter),
            previous_counter: Some(previous_counter),
            ciphertext: Some(ciphertext.clone()),
            pq_ratchet: (!pq_ratchet.is_empty()).then(|| pq_ratchet.to_vec()),
            addresses: None,
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len() + MAC_LENGTH);
        serialized.push(version_byte(version));
        serialized.extend_from_slice(&body.encode_to_vec());
        let mac = compute_mac(sender_identity, receiver_identity, mac_key, &serialized);
        serialized.extend_from_slice(&mac);
        Self {
            version,
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            pq_ratchet: pq_ratchet.to_vec(),
            addresses: None,
            serialized,
        }
    }

    /// Strict, bounded parse. The MAC is not checked here (it needs the session's keys).
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(Error::TooLarge(bytes.len()));
        }
        let Some((&first, rest)) = bytes.split_first() else {
            return Err(Error::InvalidMessage("empty SignalMessage"));
        };
        if rest.len() < MAC_LENGTH {
            return Err(Error::InvalidMessage("SignalMessage too short"));
        }
        let version = check_version(first)?;
        let body = &rest[..rest.len() - MAC_LENGTH];
        let pb = proto::wire::SignalMessage::decode(body)
            .map_err(|_| Error::InvalidMessage("SignalMessage: bad protobuf"))?;
        let ratchet_key = PublicKey::deserialize(
            pb.ratchet_key
                .as_deref()
                .ok_or(Error::InvalidMessage("SignalMessage: missing ratchet key"))?,
        )
        .map_err(|_| Error::InvalidMessage("SignalMessage: bad ratchet key"))?;
        let counter = pb
            .counter
            .ok_or(Error::InvalidMessage("SignalMessage: missing counter"))?;
        let ciphertext = pb
            .ciphertext
            .ok_or(Error::InvalidMessage("SignalMessage: missing ciphertext"))?;
        Ok(Self {
            version,
            ratchet_key,
            counter,
            previous_counter: pb.previous_counter.unwrap_or(0),
            ciphertext,
            pq_ratchet: pb.pq_ratchet.unwrap_or_default(),
            addresses: pb.addresses,
            serialized: bytes.to_vec(),
        })
    }

    /// Message version (high nibble of the first byte).
    pub fn version(&self) -> u8 {
        self.version
    }
    /// Sender's current ratchet public key.
    pub fn ratchet_key(&self) -> &PublicKey {
        &self.ratchet_key
    }
    /// Index in the sender's chain.
    pub fn counter(&self) -> u32 {
        self.counter
    }
    /// Length of the sender's previous chain (libsignal: last index, not count).
    pub fn previous_counter(&self) -> u32 {
        self.previous_counter
    }
    /// AES-256-CBC ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
    /// Whether the sender attached SPQR (field 5) data.
    pub fn has_pq_ratchet(&self) -> bool {
        !self.pq_ratchet.is_empty()
    }
    /// The SPQR (field 5) bytes; empty when the sender runs no SPQR.
    pub fn pq_ratchet(&self) -> &[u8] {
        &self.pq_ratchet
    }
    /// The sender/recipient addresses (field 6) if the sender bound them.
    pub fn addresses(&self) -> Option<&[u8]> {
        self.addresses.as_deref()
    }
    /// Wire bytes.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// Constant-time check of the truncated MAC.
    pub(crate) fn verify_mac(
        &self,
        sender_identity: &IdentityKey,
        receiver_identity: &IdentityKey,
        mac_key: &[u8; 32],
    ) -> bool {
        let Some(split) = self.serialized.len().checked_sub(MAC_LENGTH) else {
            return false;
        };
        let (content, their_mac) = self.serialized.split_at(split);
        let ours = compute_mac(sender_identity, receiver_identity, mac_key, content);
        bool::from(ours.ct_eq(their_mac))
    }
}

fn compute_mac(
    sender: &IdentityKey,
    receiver: &IdentityKey,
    mac_key: &[u8; 32],
    content: &[u8],
) -> [u8; MAC_LENGTH] {
    let full = hmac_sha256(
        mac_key,
        &[&sender.serialize(), &receiver.serialize(), content],
    );
    let mut out = [0u8; MAC_LENGTH];
    out.copy_from_slice(&full[..MAC_LENGTH]);
    out
}

/// The first message(s) of a session: PQXDH parameters plus an embedded [`SignalMessage`].
#[derive(Clone, Debug)]
pub struct PreKeySignalMessage {
    version: u8,
    registration_id: u32,
    pre_key_id: Option<u32>,
    signed_pre_key_id: u32,
    kyber_pre_key_id: Option<u32>,
    kyber_ciphertext: Option<Vec<u8>>,
    base_key: PublicKey,
    identity_key: IdentityKey,
    message: SignalMessage,
    serialized: Vec<u8>,
}

impl PreKeySignalMessage {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        version: u8,
        registration_id: u32,
        pre_key_id: Option<u32>,
        signed_pre_key_id: u32,
        kyber: Option<(u32, Vec<u8>)>,
        base_key: PublicKey,
        identity_key: IdentityKey,
        message: SignalMessage,
    ) -> Self {
        let (kyber_pre_key_id, kyber_ciphertext) = match kyber {
            Some((id, ct)) => (Some(id), Some(ct)),
            None => (None, None),
        };
        let pb = proto::wire::PreKeySignalMessage {
            registration_id: Some(registration_id),
            pre_key_id,
            signed_pre_key_id: Some(signed_pre_key_id),
            kyber_pre_key_id,
            kyber_ciphertext: kyber_ciphertext.clone(),
            base_key: Some(base_key.serialize().to_vec()),
            identity_key: Some(identity_key.serialize().to_vec()),
            message: Some(message.serialized().to_vec()),
        };
        let mut serialized = Vec::with_capacity(1 + pb.encoded_len());
        serialized.push(version_byte(version));
        serialized.extend_from_slice(&pb.encode_to_vec());
        Self {
            version,
            registration_id,
            pre_key_id,
            signed_pre_key_id,
            kyber_pre_key_id,
            kyber_ciphertext,
            base_key,
            identity_key,
            message,
            serialized,
        }
    }

    /// Strict, bounded parse, including the embedded SignalMessage.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(Error::TooLarge(bytes.len()));
        }
        let Some((&first, body)) = bytes.split_first() else {
            return Err(Error::InvalidMessage("empty PreKeySignalMessage"));
        };
        let version = check_version(first)?;
        let pb = proto::wire::PreKeySignalMessage::decode(body)
            .map_err(|_| Error::InvalidMessage("PreKeySignalMessage: bad protobuf"))?;
        let missing = |what| Error::InvalidMessage(what);
        let base_key = PublicKey::deserialize(
            pb.base_key
                .as_deref()
                .ok_or(missing("PreKeySignalMessage: missing base key"))?,
        )
        .map_err(|_| Error::InvalidMessage("PreKeySignalMessage: bad base key"))?;
        let identity_key = IdentityKey::deserialize(
            pb.identity_key
                .as_deref()
                .ok_or(missing("PreKeySignalMessage: missing identity key"))?,
        )
        .map_err(|_| Error::InvalidMessage("PreKeySignalMessage: bad identity key"))?;
        let signed_pre_key_id = pb
            .signed_pre_key_id
            .ok_or(missing("PreKeySignalMessage: missing signed prekey id"))?;
        let inner = pb
            .message
            .as_deref()
            .ok_or(missing("PreKeySignalMessage: missing message"))?;
        let message = SignalMessage::deserialize(inner)?;
        match (&pb.kyber_pre_key_id, &pb.kyber_ciphertext) {
            (Some(_), Some(_)) => {}
            (None, None) if version <= CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION => {}
            (None, None) => {
                return Err(missing(
                    "PreKeySignalMessage: version 4 without Kyber payload",
                ))
            }
            _ => return Err(missing("PreKeySignalMessage: partial Kyber payload")),
        }
        Ok(Self {
            version,
            registration_id: pb.registration_id.unwrap_or(0),
            pre_key_id: pb.pre_key_id,
            signed_pre_key_id,
            kyber_pre_key_id: pb.kyber_pre_key_id,
            kyber_ciphertext: pb.kyber_ciphertext,
            base_key,
            identity_key,
            message,
            serialized: bytes.to_vec(),
        })
    }

    /// Message version.
    pub fn version(&self) -> u8 {
        self.version
    }
    /// Sender's registration id.
    pub fn registration_id(&self) -> u32 {
        self.registration_id
    }
    /// One-time prekey used, if any.
    pub fn pre_key_id(&self) -> Option<u32> {
        self.pre_key_id
    }
    /// Signed prekey used.
    pub fn signed_pre_key_id(&self) -> u32 {
        self.signed_pre_key_id
    }
    /// Kyber prekey used.
    pub fn kyber_pre_key_id(&self) -> Option<u32> {
        self.kyber_pre_key_id
    }
    /// Serialized Kyber ciphertext (`0x08 ‖ 1568 bytes`).
    pub fn kyber_ciphertext(&self) -> Option<&[u8]> {
        self.kyber_ciphertext.as_deref()
    }
    /// Initiator's ephemeral (base) key.
    pub fn base_key(&self) -> &PublicKey {
        &self.base_key
    }
    /// Initiator's identity key.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }
    /// Embedded first ratchet message.
    pub fn message(&self) -> &SignalMessage {
        &self.message
    }
    /// Wire bytes.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// Either message type. libsignal's type codes: `Whisper = 2`, `PreKey = 3`.
#[derive(Clone, Debug)]
pub enum CiphertextMessage {
    /// Normal ratchet message (type 2).
    Signal(SignalMessage),
    /// Session-establishing message (type 3).
    PreKey(PreKeySignalMessage),
}

impl CiphertextMessage {
    /// libsignal `CiphertextMessageType` code: 2 (Whisper) or 3 (PreKey).
    pub fn message_type(&self) -> u8 {
        match self {
            Self::Signal(_) => 2,
            Self::PreKey(_) => 3,
        }
    }
    /// Wire bytes.
    pub fn serialized(&self) -> &[u8] {
        match self {
            Self::Signal(m) => m.serialized(),
            Self::PreKey(m) => m.serialized(),
        }
    }
    /// Parses bytes given the out-of-band type code (2 or 3).
    pub fn deserialize(message_type: u8, bytes: &[u8]) -> Result<Self> {
        match message_type {
            2 => SignalMessage::deserialize(bytes).map(Self::Signal),
            3 => PreKeySignalMessage::deserialize(bytes).map(Self::PreKey),
            _ => Err(Error::InvalidArgument("message type must be 2 or 3")),
        }
    }
}
