//! Session records: the current session state plus archived ones, and their storage form
//! (libsignal's `RecordStructure`/`SessionStructure` field numbers).

use std::collections::VecDeque;

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::consts::{ARCHIVED_STATES_MAX_LENGTH, MAX_MESSAGE_KEYS, MAX_RECEIVER_CHAINS};
use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::proto::storage as pb;
use crate::ratchet::{
    ChainKey, MessageKeySeed, PendingPreKey, ReceiverChain, RootKey, SenderChain, SessionState,
};

/// All session states with one remote device: the current one and up to
/// `ARCHIVED_STATES_MAX_LENGTH` previous ones (still able to decrypt late messages).
#[derive(Clone, Debug, Default)]
pub struct SessionRecord {
    pub(crate) current: Option<SessionState>,
    /// Newest first.
    pub(crate) previous: VecDeque<SessionState>,
}

impl SessionRecord {
    /// Whether there is a current session state to send with.
    pub fn has_current_state(&self) -> bool {
        self.current.is_some()
    }

    /// Number of archived states.
    pub fn archived_state_count(&self) -> usize {
        self.previous.len()
    }

    /// Remote identity of the current state.
    pub fn remote_identity(&self) -> Option<IdentityKey> {
        self.current.as_ref().map(|s| s.remote_identity)
    }

    /// SPQR braid epoch of the current state (`None` when it runs without SPQR).
    pub fn spqr_epoch(&self) -> Option<u64> {
        self.current.as_ref().and_then(|s| s.pq.epoch())
    }

    /// Remote registration id of the current state.
    pub fn remote_registration_id(&self) -> Option<u32> {
        self.current.as_ref().map(|s| s.remote_registration_id)
    }

    /// Whether the current state is still waiting for the responder's first reply (its
    /// messages go out as PreKeySignalMessages).
    pub fn is_unacknowledged(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|s| s.pending_pre_key.is_some())
    }

    /// Moves the current state to the archive (e.g. to force a new session).
    pub fn archive_current_state(&mut self) {
        if let Some(cur) = self.current.take() {
            self.previous.push_front(cur);
            self.previous.truncate(ARCHIVED_STATES_MAX_LENGTH);
        }
    }

    pub(crate) fn promote_state(&mut self, state: SessionState) {
        self.archive_current_state();
        self.current = Some(state);
    }

    /// Makes the state created from `base_key` current, if we have it. Returns whether found.
    pub(crate) fn promote_matching_session(&mut self, version: u8, base_key: &PublicKey) -> bool {
        let matches = |s: &SessionState| s.version == version && s.alice_base_key == *base_key;
        if self.current.as_ref().is_some_and(matches) {
            return true;
        }
        if let Some(pos) = self.previous.iter().position(matches) {
            if let Some(state) = self.previous.remove(pos) {
                self.promote_state(state);
                return true;
            }
        }
        false
    }

    /// Tries the current state, then archived ones; each attempt runs on a copy and only the
    /// state that authenticated the message is kept (and made current).
    pub(crate) fn decrypt(
        &mut self,
        message: &crate::message::SignalMessage,
        current_only: bool,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>> {
        let mut first_error = None;
        if let Some(cur) = &self.current {
            let mut attempt = cur.clone();
            match attempt.decrypt(message, rng) {
                Ok(pt) => {
                    self.current = Some(attempt);
                    return Ok(pt);
                }
                Err(Error::DuplicateMessage) => return Err(Error::DuplicateMessage),
                Err(e) => first_error = Some(e),
            }
        }
        if current_only {
            return Err(first_error.unwrap_or(Error::DecryptionFailed));
        }
        for i in 0..self.previous.len() {
            let Some(prev) = self.previous.get(i) else {
                break;
            };
            let mut attempt = prev.clone();
            match attempt.decrypt(message, rng) {
                Ok(pt) => {
                    self.previous.remove(i);
                    self.promote_state(attempt);
                    return Ok(pt);
                }
                Err(Error::DuplicateMessage) => return Err(Error::DuplicateMessage),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(Error::DecryptionFailed))
    }

    /// Storage form (libsignal `RecordStructure`), in a zeroizing buffer.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let mut previous = Vec::with_capacity(self.previous.len());
        for s in &self.previous {
            previous.push(Zeroizing::new(state_to_pb(s)).encode_to_vec());
        }
        let record = Zeroizing::new(pb::RecordStructure {
            current_session: self.current.as_ref().map(state_to_pb),
            previous_sessions: previous,
        });
        Zeroizing::new(record.encode_to_vec())
    }

    /// Parses [`Self::serialize`]'s output; rejects anything inconsistent.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let record = Zeroizing::new(
            pb::RecordStructure::decode(bytes).map_err(|_| bad("session record protobuf"))?,
        );
        let current = match &record.current_session {
            Some(s) => Some(state_from_pb(s)?),
            None => None,
        };
        let mut previous = VecDeque::new();
        for p in record
            .previous_sessions
            .iter()
            .take(ARCHIVED_STATES_MAX_LENGTH)
        {
            let s = Zeroizing::new(
                pb::SessionStructure::decode(p.as_slice())
                    .map_err(|_| bad("archived session protobuf"))?,
            );
            previous.push_back(state_from_pb(&s)?);
        }
        Ok(Self { current, previous })
    }
}

fn bad(what: &'static str) -> Error {
    Error::InvalidArgument(what)
}

fn chain_key_pb(ck: &ChainKey) -> pb::ChainKey {
    pb::ChainKey {
        index: ck.index(),
        key: ck.key().to_vec(),
    }
}

fn state_to_pb(s: &SessionState) -> pb::SessionStructure {
    let sender = pb::Chain {
        sender_ratchet_key: s.sender_chain.ratchet_key.public_key.serialize().to_vec(),
        sender_ratchet_key_private: s.sender_chain.ratchet_key.private_key.serialize().to_vec(),
        chain_key: Some(chain_key_pb(&s.sender_chain.chain_key)),
        message_keys: Vec::new(),
    };
    let receivers = s
        .receiver_chains
        .iter()
        .map(|c| pb::Chain {
            sender_ratchet_key: c.ratchet_key.serialize().to_vec(),
            sender_ratchet_key_private: Vec::new(),
            chain_key: Some(chain_key_pb(&c.chain_key)),
            message_keys: c
                .message_keys
                .iter()
                .map(|m| pb::MessageKey {
                    index: m.index(),
                    seed: m.seed().to_vec(),
                })
                .collect(),
        })
        .collect();
    let (pending_pre_key, pending_kyber_pre_key) = match &s.pending_pre_key {
        Some(p) => (
            Some(pb::PendingPreKey {
                pre_key_id: p.pre_key_id,
                signed_pre_key_id: p.signed_pre_key_id as i32,
                base_key: p.base_key.serialize().to_vec(),
                timestamp: p.created_secs,
            }),
            Some(pb::PendingKyberPreKey {
                pre_key_id: p.kyber_pre_key_id,
                ciphertext: p.kyber_ciphertext.clone(),
            }),
        ),
        None => (None, None),
    };
    pb::SessionStructure {
        session_version: u32::from(s.version),
        local_identity_public: s.local_identity.serialize().to_vec(),
        remote_identity_public: s.remote_identity.serialize().to_vec(),
        root_key: s.root_key.as_bytes().to_vec(),
        previous_counter: s.previous_counter,
        sender_chain: Some(sender),
        receiver_chains: receivers,
        pending_pre_key,
        pending_kyber_pre_key,
        remote_registration_id: s.remote_registration_id,
        local_registration_id: s.local_registration_id,
        alice_base_key: s.alice_base_key.serialize().to_vec(),
        pq_ratchet_state: s.pq.to_storage().to_vec(),
    }
}

fn key32(v: &[u8], what: &'static str) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| bad(what))
}

fn chain_key_from_pb(c: &Option<pb::ChainKey>) -> Result<ChainKey> {
    let c = c.as_ref().ok_or(bad("chain without chain key"))?;
    Ok(ChainKey::new(key32(&c.key, "chain key length")?, c.index))
}

fn state_from_pb(s: &pb::SessionStructure) -> Result<SessionState> {
    let version = u8::try_from(s.session_version).map_err(|_| bad("session version"))?;
    let sender = s.sender_chain.as_ref().ok_or(bad("missing sender chain"))?;
    let private = PrivateKey::deserialize(&sender.sender_ratchet_key_private)?;
    let pair = KeyPair::from_private(private);
    if pair.public_key != PublicKey::deserialize(&sender.sender_ratchet_key)? {
        return Err(bad("sender ratchet key pair mismatch"));
    }
    let mut receiver_chains = Vec::new();
    for c in s.receiver_chains.iter().take(MAX_RECEIVER_CHAINS) {
        let mut message_keys = std::collections::VecDeque::new();
        for m in c.message_keys.iter().take(MAX_MESSAGE_KEYS) {
            message_keys.push_back(MessageKeySeed::new(
                key32(&m.seed, "message key seed")?,
                m.index,
            ));
        }
        receiver_chains.push(ReceiverChain {
            ratchet_key: PublicKey::deserialize(&c.sender_ratchet_key)?,
            chain_key: chain_key_from_pb(&c.chain_key)?,
            message_keys,
        });
    }
    let pending_pre_key = match (&s.pending_pre_key, &s.pending_kyber_pre_key) {
        (Some(p), Some(k)) => Some(PendingPreKey {
            pre_key_id: p.pre_key_id,
            signed_pre_key_id: p.signed_pre_key_id as u32,
            base_key: PublicKey::deserialize(&p.base_key)?,
            created_secs: p.timestamp,
            kyber_pre_key_id: k.pre_key_id,
            kyber_ciphertext: k.ciphertext.clone(),
        }),
        (None, None) => None,
        _ => return Err(bad("partial pending prekey")),
    };
    Ok(SessionState {
        version,
        local_identity: IdentityKey::deserialize(&s.local_identity_public)?,
        remote_identity: IdentityKey::deserialize(&s.remote_identity_public)?,
        root_key: RootKey::from_bytes(key32(&s.root_key, "root key length")?),
        previous_counter: s.previous_counter,
        sender_chain: SenderChain {
            ratchet_key: pair,
            chain_key: chain_key_from_pb(&sender.chain_key)?,
        },
        receiver_chains,
        pending_pre_key,
        local_registration_id: s.local_registration_id,
        remote_registration_id: s.remote_registration_id,
        alice_base_key: PublicKey::deserialize(&s.alice_base_key)?,
        pq: crate::spqr::SpqrState::from_storage(&s.pq_ratchet_state)?,
    })
}
