//! Key schedule (PQXDH → root/chain keys) and the Double Ratchet on one session state.
//!
//! Labels and layouts are libsignal 0.90.0's; see `protocol-spec/ratchet.md`.

use std::collections::VecDeque;

use core::fmt;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::{
    CIPHERTEXT_MESSAGE_CURRENT_VERSION, MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS, MAX_PLAINTEXT_SIZE,
    MAX_RECEIVER_CHAINS,
};
use crate::crypto::{aes256_cbc_decrypt, aes256_cbc_encrypt, hkdf, hmac_sha256};
use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kem::{KyberPublicKey, KyberSecretKey};
use crate::message::SignalMessage;
use crate::spqr::{Direction as SpqrDirection, SpqrPolicy, SpqrState};

/// HKDF info for the PQXDH master secret.
pub const PQXDH_INFO: &[u8] = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024";
/// HKDF info for a DH ratchet step.
pub const RATCHET_INFO: &[u8] = b"WhisperRatchet";
/// HKDF info for per-message keys.
pub const MESSAGE_KEYS_INFO: &[u8] = b"WhisperMessageKeys";
/// HMAC input deriving a message key seed from a chain key.
pub const MESSAGE_KEY_SEED: u8 = 0x01;
/// HMAC input deriving the next chain key.
pub const CHAIN_KEY_SEED: u8 = 0x02;
/// The 32 0xFF "discontinuity bytes" that prefix the PQXDH secret input.
pub const DISCONTINUITY_BYTES: [u8; 32] = [0xFF; 32];

macro_rules! redacted_debug {
    ($t:ty, $name:literal) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!($name, "([redacted])"))
            }
        }
    };
}

/// Root key of the ratchet.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RootKey([u8; 32]);
redacted_debug!(RootKey, "RootKey");

impl RootKey {
    pub(crate) fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// DH ratchet step: `HKDF(salt = root, ikm = DH(ours, theirs), "WhisperRatchet")` → 64
    /// bytes = new root key ‖ new chain key (index 0).
    pub(crate) fn create_chain(
        &self,
        theirs: &PublicKey,
        ours: &PrivateKey,
    ) -> (RootKey, ChainKey) {
        let shared = ours.agree(theirs);
        let okm = hkdf::<64>(Some(&self.0), shared.as_ref(), RATCHET_INFO);
        let mut rk = [0u8; 32];
        let mut ck = [0u8; 32];
        rk.copy_from_slice(&okm[..32]);
        ck.copy_from_slice(&okm[32..]);
        (RootKey(rk), ChainKey { key: ck, index: 0 })
    }
}

/// A sending or receiving chain key with its index.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChainKey {
    key: [u8; 32],
    index: u32,
}
redacted_debug!(ChainKey, "ChainKey");

impl ChainKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self { key, index }
    }
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }
    /// Position in the chain.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// `HMAC(ck, 0x02)`, index + 1.
    pub(crate) fn next(&self) -> Result<ChainKey> {
        let index = self
            .index
            .checked_add(1)
            .ok_or(Error::InvalidMessage("chain index exhausted"))?;
        Ok(ChainKey {
            key: hmac_sha256(&self.key, &[&[CHAIN_KEY_SEED]]),
            index,
        })
    }
    /// `HMAC(ck, 0x01)` for this index.
    pub(crate) fn message_key_seed(&self) -> MessageKeySeed {
        MessageKeySeed {
            seed: hmac_sha256(&self.key, &[&[MESSAGE_KEY_SEED]]),
            index: self.index,
        }
    }
}

/// A stored message key seed (libsignal keeps seeds, not expanded keys).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MessageKeySeed {
    seed: [u8; 32],
    index: u32,
}
redacted_debug!(MessageKeySeed, "MessageKeySeed");

impl MessageKeySeed {
    pub(crate) fn new(seed: [u8; 32], index: u32) -> Self {
        Self { seed, index }
    }
    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
    pub(crate) fn index(&self) -> u32 {
        self.index
    }
    /// `HKDF(salt = none, ikm = seed, "WhisperMessageKeys")` → 80 bytes = AES key ‖ HMAC key ‖ IV.
    pub(crate) fn keys(&self) -> MessageKeys {
        self.keys_with_salt(None)
    }

    /// As [`Self::keys`], with the SPQR message key as HKDF salt when there is one
    /// (`protocol-spec/ratchet.md` SPQR-6).
    pub(crate) fn keys_with_salt(&self, salt: Option<&[u8; 32]>) -> MessageKeys {
        let okm = hkdf::<80>(salt.map(|s| s.as_slice()), &self.seed, MESSAGE_KEYS_INFO);
        let mut k = MessageKeys {
            cipher_key: [0; 32],
            mac_key: [0; 32],
            iv: [0; 16],
        };
        k.cipher_key.copy_from_slice(&okm[..32]);
        k.mac_key.copy_from_slice(&okm[32..64]);
        k.iv.copy_from_slice(&okm[64..80]);
        k
    }
}

/// Expanded per-message keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MessageKeys {
    pub(crate) cipher_key: [u8; 32],
    pub(crate) mac_key: [u8; 32],
    pub(crate) iv: [u8; 16],
}
redacted_debug!(MessageKeys, "MessageKeys");

#[derive(Clone, Debug)]
pub(crate) struct SenderChain {
    pub(crate) ratchet_key: KeyPair,
    pub(crate) chain_key: ChainKey,
}

#[derive(Clone, Debug)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) chain_key: ChainKey,
    /// Skipped message key seeds, newest first; at most `MAX_MESSAGE_KEYS`.
    pub(crate) message_keys: VecDeque<MessageKeySeed>,
}

/// What the initiator keeps until the responder answers: it keeps wrapping messages in
/// PreKeySignalMessages with these parameters.
#[derive(Clone, Debug)]
pub(crate) struct PendingPreKey {
    pub(crate) pre_key_id: Option<u32>,
    pub(crate) signed_pre_key_id: u32,
    pub(crate) base_key: PublicKey,
    /// Seconds since the Unix epoch when the session was created.
    pub(crate) created_secs: u64,
    pub(crate) kyber_pre_key_id: u32,
    pub(crate) kyber_ciphertext: Vec<u8>,
}

/// One Double Ratchet session state.
#[derive(Clone, Debug)]
pub(crate) struct SessionState {
    pub(crate) version: u8,
    pub(crate) local_identity: IdentityKey,
    pub(crate) remote_identity: IdentityKey,
    pub(crate) root_key: RootKey,
    pub(crate) previous_counter: u32,
    pub(crate) sender_chain: SenderChain,
    /// Oldest first; at most `MAX_RECEIVER_CHAINS`.
    pub(crate) receiver_chains: Vec<ReceiverChain>,
    pub(crate) pending_pre_key: Option<PendingPreKey>,
    pub(crate) local_registration_id: u32,
    pub(crate) remote_registration_id: u32,
    pub(crate) alice_base_key: PublicKey,
    /// The SPQR state (version 0 = none).
    pub(crate) pq: SpqrState,
}

/// `HKDF(salt = none, ikm = secrets, PQXDH_INFO)` → root key ‖ chain key ‖ SPQR auth key.
fn derive_initial_keys(secrets: &[u8]) -> (RootKey, ChainKey, Zeroizing<[u8; 32]>) {
    let okm = hkdf::<96>(None, secrets, PQXDH_INFO);
    let mut ak = Zeroizing::new([0u8; 32]);
    ak.copy_from_slice(&okm[64..96]);
    let (rk, ck) = derive_initial_keys_with_label(PQXDH_INFO, secrets);
    (rk, ck, ak)
}

pub(crate) fn derive_initial_keys_with_label(label: &[u8], secrets: &[u8]) -> (RootKey, ChainKey) {
    let okm = hkdf::<96>(None, secrets, label);
    let mut rk = [0u8; 32];
    let mut ck = [0u8; 32];
    rk.copy_from_slice(&okm[..32]);
    ck.copy_from_slice(&okm[32..64]);
    (RootKey(rk), ChainKey::new(ck, 0))
}

/// Initiator ("Alice") parameters.
pub(crate) struct AliceParams<'a> {
    pub(crate) our_identity: &'a IdentityKeyPair,
    pub(crate) our_base_key: &'a KeyPair,
    pub(crate) their_identity: &'a IdentityKey,
    pub(crate) their_signed_pre_key: &'a PublicKey,
    pub(crate) their_one_time_pre_key: Option<&'a PublicKey>,
    pub(crate) their_kyber_pre_key: &'a KyberPublicKey,
    pub(crate) spqr: SpqrPolicy,
}

/// PQXDH as initiator. Returns the state and the serialized Kyber ciphertext.
pub(crate) fn initialize_alice(
    p: &AliceParams<'_>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(SessionState, Vec<u8>)> {
    let mut secrets = Zeroizing::new(Vec::with_capacity(32 * 6));
    secrets.extend_from_slice(&DISCONTINUITY_BYTES);
    let base = &p.our_base_key.private_key;
    secrets.extend_from_slice(
        p.our_identity
            .private_key()
            .agree(p.their_signed_pre_key)
            .as_ref(),
    );
    secrets.extend_from_slice(base.agree(p.their_identity.public_key()).as_ref());
    secrets.extend_from_slice(base.agree(p.their_signed_pre_key).as_ref());
    if let Some(otpk) = p.their_one_time_pre_key {
        secrets.extend_from_slice(base.agree(otpk).as_ref());
    }
    let (kem_ss, kyber_ciphertext) = p.their_kyber_pre_key.encapsulate(rng);
    secrets.extend_from_slice(kem_ss.as_ref());
    let (root_key, chain_key, auth_key) = derive_initial_keys(&secrets);
    let pq = SpqrState::new(&auth_key, SpqrDirection::A2B, p.spqr)?;

    let sending = KeyPair::generate(rng);
    let (root_key, sending_chain) =
        root_key.create_chain(p.their_signed_pre_key, &sending.private_key);
    let state = SessionState {
        version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
        local_identity: p.our_identity.public(),
        remote_identity: *p.their_identity,
        root_key,
        previous_counter: 0,
        sender_chain: SenderChain {
            ratchet_key: sending,
            chain_key: sending_chain,
        },
        receiver_chains: vec![ReceiverChain {
            ratchet_key: *p.their_signed_pre_key,
            chain_key,
            message_keys: VecDeque::new(),
        }],
        pending_pre_key: None,
        local_registration_id: 0,
        remote_registration_id: 0,
        alice_base_key: p.our_base_key.public_key,
        pq,
    };
    Ok((state, kyber_ciphertext))
}

/// Responder ("Bob") parameters.
pub(crate) struct BobParams<'a> {
    pub(crate) our_identity: &'a IdentityKeyPair,
    pub(crate) our_signed_pre_key: &'a KeyPair,
    pub(crate) our_one_time_pre_key: Option<&'a KeyPair>,
    pub(crate) our_kyber_secret: &'a KyberSecretKey,
    pub(crate) their_identity: &'a IdentityKey,
    pub(crate) their_base_key: &'a PublicKey,
    pub(crate) kyber_ciphertext: &'a [u8],
    pub(crate) spqr: SpqrPolicy,
}

/// PQXDH as responder.
pub(crate) fn initialize_bob(p: &BobParams<'_>) -> Result<SessionState> {
    if !p.their_base_key.is_canonical() {
        return Err(Error::InvalidMessage("base key is not canonical"));
    }
    let mut secrets = Zeroizing::new(Vec::with_capacity(32 * 6));
    secrets.extend_from_slice(&DISCONTINUITY_BYTES);
    let spk = &p.our_signed_pre_key.private_key;
    secrets.extend_from_slice(spk.agree(p.their_identity.public_key()).as_ref());
    secrets.extend_from_slice(
        p.our_identity
            .private_key()
            .agree(p.their_base_key)
            .as_ref(),
    );
    secrets.extend_from_slice(spk.agree(p.their_base_key).as_ref());
    if let Some(otpk) = p.our_one_time_pre_key {
        secrets.extend_from_slice(otpk.private_key.agree(p.their_base_key).as_ref());
    }
    secrets.extend_from_slice(p.our_kyber_secret.decapsulate(p.kyber_ciphertext)?.as_ref());
    let (root_key, chain_key, auth_key) = derive_initial_keys(&secrets);
    let pq = SpqrState::new(&auth_key, SpqrDirection::B2A, p.spqr)?;
    Ok(SessionState {
        version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
        local_identity: p.our_identity.public(),
        remote_identity: *p.their_identity,
        root_key,
        previous_counter: 0,
        sender_chain: SenderChain {
            ratchet_key: p.our_signed_pre_key.clone(),
            chain_key,
        },
        receiver_chains: Vec::new(),
        pending_pre_key: None,
        local_registration_id: 0,
        remote_registration_id: 0,
        alice_base_key: *p.their_base_key,
        pq,
    })
}

impl SessionState {
    /// Encrypts with the current sending chain and advances it (and the SPQR state).
    pub(crate) fn encrypt(
        &mut self,
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<SignalMessage> {
        if plaintext.len() > MAX_PLAINTEXT_SIZE {
            return Err(Error::TooLarge(plaintext.len()));
        }
        let chain_key = self.sender_chain.chain_key.clone();
        let next = chain_key.next()?;
        let pq = self.pq.send(rng)?;
        let keys = chain_key
            .message_key_seed()
            .keys_with_salt(pq.key.as_deref());
        let ciphertext = aes256_cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext);
        let message = SignalMessage::new(
            self.version,
            &keys.mac_key,
            self.sender_chain.ratchet_key.public_key,
            chain_key.index(),
            self.previous_counter,
            ciphertext,
            &self.local_identity,
            &self.remote_identity,
            &pq.wire,
        );
        self.sender_chain.chain_key = next;
        self.pq = pq.state;
        Ok(message)
    }

    /// Decrypts into `self`. Callers run this on a clone and keep the clone only on success.
    pub(crate) fn decrypt(
        &mut self,
        message: &SignalMessage,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>> {
        if message.version() != self.version {
            return Err(Error::InvalidMessage(
                "message version does not match session",
            ));
        }
        let their = *message.ratchet_key();
        let chain_index = self.receiver_chain_or_ratchet(&their, rng)?;
        let seed = self.message_key_seed(chain_index, message.counter())?;
        // SPQR runs on a copy too; `self` is itself a copy committed only on success.
        // A replay was already refused by the Double Ratchet above; an SPQR key this state
        // already used or dropped means the message is not this state's (it may be an archived
        // state's), so it must not stop the search the way `DuplicateMessage` does.
        let pq = self.pq.recv(message.pq_ratchet()).map_err(|e| match e {
            Error::DuplicateMessage => Error::InvalidMessage("SPQR key already used or dropped"),
            e => e,
        })?;
        let keys = seed.keys_with_salt(pq.key.as_deref());
        if !message.verify_mac(&self.remote_identity, &self.local_identity, &keys.mac_key) {
            return Err(Error::DecryptionFailed);
        }
        let plaintext = aes256_cbc_decrypt(&keys.cipher_key, &keys.iv, message.ciphertext())?;
        self.pending_pre_key = None;
        self.pq = pq.state;
        Ok(plaintext)
    }

    /// Index into `receiver_chains` for `their` ratchet key, performing a DH ratchet step
    /// (new receiving chain, new sending chain) if the key is new.
    fn receiver_chain_or_ratchet(
        &mut self,
        their: &PublicKey,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<usize> {
        if let Some(i) = self
            .receiver_chains
            .iter()
            .position(|c| c.ratchet_key == *their)
        {
            return Ok(i);
        }
        let (root, receiving) = self
            .root_key
            .create_chain(their, &self.sender_chain.ratchet_key.private_key);
        let ours = KeyPair::generate(rng);
        let (root, sending) = root.create_chain(their, &ours.private_key);
        self.root_key = root;
        self.receiver_chains.push(ReceiverChain {
            ratchet_key: *their,
            chain_key: receiving,
            message_keys: VecDeque::new(),
        });
        if self.receiver_chains.len() > MAX_RECEIVER_CHAINS {
            self.receiver_chains.remove(0);
        }
        // libsignal records the last index used, not the count.
        self.previous_counter = self.sender_chain.chain_key.index().saturating_sub(1);
        self.sender_chain = SenderChain {
            ratchet_key: ours,
            chain_key: sending,
        };
        Ok(self.receiver_chains.len() - 1)
    }

    /// The message key seed for `counter` on chain `i`: a stored skipped key (consumed), or the
    /// chain advanced to `counter` storing the keys it skips.
    fn message_key_seed(&mut self, i: usize, counter: u32) -> Result<MessageKeySeed> {
        let chain = self
            .receiver_chains
            .get_mut(i)
            .ok_or(Error::InvalidArgument("receiver chain index"))?;
        let index = chain.chain_key.index();
        if index > counter {
            return match chain.message_keys.iter().position(|s| s.index() == counter) {
                Some(pos) => chain
                    .message_keys
                    .remove(pos)
                    .ok_or(Error::DuplicateMessage),
                None => Err(Error::DuplicateMessage),
            };
        }
        let jump = (counter - index) as usize;
        if jump > MAX_FORWARD_JUMPS {
            return Err(Error::TooFarInFuture);
        }
        let mut ck = chain.chain_key.clone();
        while ck.index() < counter {
            chain.message_keys.push_front(ck.message_key_seed());
            if chain.message_keys.len() > MAX_MESSAGE_KEYS {
                chain.message_keys.pop_back();
            }
            ck = ck.next()?;
        }
        let seed = ck.message_key_seed();
        chain.chain_key = ck.next()?;
        Ok(seed)
    }
}
