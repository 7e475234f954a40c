//! SPQR v1, the sparse post-quantum ratchet that libsignal ≥ 0.92 runs beside the Double
//! Ratchet ("triple ratchet"). Sans-IO: randomness is a parameter; no clock is needed.
//!
//! [`SpqrState`] is the per-session state: version negotiation, the braid (key exchange in
//! chunks, [`braid`]) and the symmetric chain ([`chain`]). [`SpqrState::send`] and
//! [`SpqrState::recv`] are pure: they return the next state, which the caller commits only once
//! the whole SignalMessage authenticated. Normative description: `protocol-spec/ratchet.md` §12.

mod auth;
mod braid;
mod chain;
pub mod erasure;
mod gf16;
pub mod kem;
mod storage;
pub mod wire;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use braid::Braid;
use chain::Chain;
pub use chain::MessageKey;

/// Braid epoch number (≥ 1 on the wire).
pub type Epoch = u64;

/// Which side of the session this is: the initiator sends `A2B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Initiator (Alice).
    A2B,
    /// Responder (Bob).
    B2A,
}

impl Direction {
    /// The peer's direction.
    pub fn switch(self) -> Self {
        match self {
            Direction::A2B => Direction::B2A,
            Direction::B2A => Direction::A2B,
        }
    }
}

/// Whether a new session may fall back to no SPQR (`protocol-spec/ratchet.md` §12.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpqrPolicy {
    /// Start SPQR v1 but let a peer without SPQR downgrade the session (libsignal 0.90's
    /// choice; keeps libsignal < 0.80 peers working).
    #[default]
    Preferred,
    /// Start SPQR v1 and refuse messages without it (libsignal ≥ 0.92's choice).
    Required,
}

/// The version negotiation record kept until the first SPQR message is received.
#[derive(Clone)]
pub(crate) struct Negotiation {
    pub(crate) auth_key: Zeroizing<[u8; 32]>,
    pub(crate) dir: Direction,
    pub(crate) min_version: u8,
}

/// Per-session SPQR state. The default value is "no SPQR" (version 0).
#[derive(Clone, Default)]
pub struct SpqrState {
    braid: Option<Braid>,
    negotiation: Option<Negotiation>,
    chain: Option<Chain>,
}

impl core::fmt::Debug for SpqrState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SpqrState")
            .field("version", &self.version())
            .field("braid", &self.braid)
            .field("negotiating", &self.negotiation.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`SpqrState::send`] produced.
pub struct Sent {
    /// The state to commit once the message is sent.
    pub state: SpqrState,
    /// The `pq_ratchet` field (empty for version 0).
    pub wire: Vec<u8>,
    /// The SPQR message key, the salt of the Double Ratchet message keys.
    pub key: Option<MessageKey>,
}

/// What [`SpqrState::recv`] produced.
pub struct Received {
    /// The state to commit once the message authenticated.
    pub state: SpqrState,
    /// The SPQR message key.
    pub key: Option<MessageKey>,
}

impl SpqrState {
    /// A new session's state: SPQR v1 with a negotiation record.
    pub fn new(auth_key: &[u8; 32], dir: Direction, policy: SpqrPolicy) -> Result<Self> {
        let braid = match dir {
            Direction::A2B => Braid::init_a(auth_key),
            Direction::B2A => Braid::init_b(auth_key)?,
        };
        Ok(Self {
            braid: Some(braid),
            negotiation: Some(Negotiation {
                auth_key: Zeroizing::new(*auth_key),
                dir,
                min_version: match policy {
                    SpqrPolicy::Preferred => 0,
                    SpqrPolicy::Required => 1,
                },
            }),
            chain: None,
        })
    }

    /// 1 while SPQR runs, 0 without (never started, or downgraded).
    pub fn version(&self) -> u8 {
        u8::from(self.braid.is_some())
    }

    /// Current braid epoch (1 at the start), if SPQR runs.
    pub fn epoch(&self) -> Option<Epoch> {
        self.braid.as_ref().map(Braid::epoch)
    }

    /// Whether the session may still be downgraded by a peer without SPQR.
    pub fn still_negotiating(&self) -> bool {
        self.negotiation.is_some()
    }

    fn chain_from_negotiation(n: &Negotiation) -> Chain {
        Chain::new(n.auth_key.as_slice(), n.dir)
    }

    /// The `pq_ratchet` bytes and message key for the next outgoing message.
    pub fn send(&self, rng: &mut (impl RngCore + CryptoRng)) -> Result<Sent> {
        let Some(braid) = self.braid.clone() else {
            return Ok(Sent {
                state: SpqrState::default(),
                wire: Vec::new(),
                key: None,
            });
        };
        let epoch = braid.epoch();
        let (braid, payload, secret) = braid.send(rng)?;
        let mut chain = match (&self.chain, &self.negotiation) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(n)) if n.min_version > 0 => Some(Self::chain_from_negotiation(n)),
            (None, Some(_)) => None,
            (None, None) => return Err(Error::InvalidArgument("SPQR state without chain")),
        };
        let (index, key) = match chain.as_mut() {
            Some(chain) => {
                if let Some(s) = secret {
                    chain.add_epoch(s.epoch, s.secret.as_slice())?;
                }
                let (i, k) = chain.send_key(epoch - 1)?;
                (i, Some(k))
            }
            // Only reachable before anything was received, when no epoch secret exists yet.
            None => (0, None),
        };
        let wire = wire::Message {
            epoch,
            index,
            payload,
        }
        .encode();
        Ok(Sent {
            state: SpqrState {
                braid: Some(braid),
                negotiation: self.negotiation.clone(),
                chain,
            },
            wire,
            key,
        })
    }

    /// Takes in a received `pq_ratchet` field (empty = the sender has no SPQR).
    pub fn recv(&self, field: &[u8]) -> Result<Received> {
        let their_version = match field.first() {
            None | Some(0) => 0u8,
            Some(1) => 1,
            // A newer version than we speak carries no key we can use, so the message is
            // protected by the Double Ratchet alone: a V0 message in disguise. Accept it (state
            // unchanged; the sender negotiates down when it reads our messages) only where V0
            // itself would be accepted, so that it cannot bypass `Required` or a finished
            // negotiation (`protocol-spec/ratchet.md` SPQR-8).
            Some(_) => {
                let v0_allowed = self.version() == 0
                    || self
                        .negotiation
                        .as_ref()
                        .is_some_and(|n| n.min_version == 0);
                if !v0_allowed {
                    return Err(Error::InvalidMessage("SPQR version above ours"));
                }
                return Ok(Received {
                    state: self.clone(),
                    key: None,
                });
            }
        };
        let state = if their_version < self.version() {
            let Some(n) = &self.negotiation else {
                return Err(Error::InvalidMessage("SPQR version mismatch"));
            };
            if their_version < n.min_version {
                return Err(Error::InvalidMessage("SPQR required by this session"));
            }
            SpqrState {
                braid: None,
                negotiation: None,
                chain: Some(match &self.chain {
                    Some(c) => c.clone(),
                    None => Self::chain_from_negotiation(n),
                }),
            }
        } else {
            self.clone()
        };
        let Some(braid) = state.braid else {
            return Ok(Received {
                state: SpqrState::default(),
                key: None,
            });
        };
        let msg = wire::Message::decode(field)?;
        let (braid, secret) = braid.recv(msg.epoch, &msg.payload)?;
        let mut chain = match (state.chain, &state.negotiation) {
            (Some(c), _) => c,
            (None, Some(n)) => Self::chain_from_negotiation(n),
            (None, None) => return Err(Error::InvalidArgument("SPQR state without chain")),
        };
        if let Some(s) = secret {
            chain.add_epoch(s.epoch, s.secret.as_slice())?;
        }
        let key_epoch = msg.epoch - 1;
        let key = if key_epoch == 0 && msg.index == 0 {
            // Keyless: only an initiator that has not heard from us yet sends this (under
            // min_version 0 it has no chain). A responder never does (it receives before it
            // sends), and once our epoch-0 chain is gone an indexed epoch-0 message would be
            // refused too. Anywhere else the message would stand on the Double Ratchet alone.
            if chain.dir == Direction::A2B || !chain.has_epoch(0) {
                return Err(Error::InvalidMessage("SPQR message without a key"));
            }
            None
        } else {
            Some(chain.recv_key(key_epoch, msg.index)?)
        };
        Ok(Received {
            state: SpqrState {
                braid: Some(braid),
                negotiation: None,
                chain: Some(chain),
            },
            key,
        })
    }
}

#[cfg(test)]
mod tests;
