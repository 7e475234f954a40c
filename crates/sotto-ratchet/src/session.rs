//! Session setup and message encryption/decryption against a [`ProtocolStore`].

use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, OsRng, RngCore};

use crate::addresses;
use crate::consts::{CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION, MAX_UNACKNOWLEDGED_SESSION_AGE_SECS};
use crate::curve::KeyPair;
use crate::error::{Error, Result};
use crate::message::{CiphertextMessage, PreKeySignalMessage, SignalMessage};
use crate::prekeys::PreKeyBundle;
use crate::ratchet::{initialize_alice, initialize_bob, AliceParams, BobParams, PendingPreKey};
use crate::record::SessionRecord;
use crate::spqr::SpqrPolicy;
use crate::store::{Direction, ProtocolAddress, ProtocolStore};

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Initiator: verifies the bundle's signatures and identity, runs PQXDH and stores a new
/// session whose messages go out as PreKeySignalMessages until the responder replies.
/// The session runs SPQR v1 under [`SpqrPolicy::default`].
pub fn process_prekey_bundle<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    bundle: &PreKeyBundle,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<()> {
    process_prekey_bundle_with_policy(address, store, bundle, now, rng, SpqrPolicy::default())
}

/// As [`process_prekey_bundle`], choosing whether the session may fall back to no SPQR.
pub fn process_prekey_bundle_with_policy<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    bundle: &PreKeyBundle,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
    spqr: SpqrPolicy,
) -> Result<()> {
    if !store.is_trusted_identity(address, &bundle.identity_key, Direction::Sending)? {
        return Err(Error::UntrustedIdentity(address.to_string()));
    }
    bundle.verify_signatures()?;
    let mut record = store.load_session(address)?.unwrap_or_default();
    let our_identity = store.identity_key_pair()?;
    let base = KeyPair::generate(rng);
    let their_otpk = bundle.pre_key.map(|(_, k)| k);
    let (mut state, kyber_ciphertext) = initialize_alice(
        &AliceParams {
            our_identity: &our_identity,
            our_base_key: &base,
            their_identity: &bundle.identity_key,
            their_signed_pre_key: &bundle.signed_pre_key_public,
            their_one_time_pre_key: their_otpk.as_ref(),
            their_kyber_pre_key: &bundle.kyber_pre_key_public,
            spqr,
        },
        rng,
    )?;
    state.pending_pre_key = Some(PendingPreKey {
        pre_key_id: bundle.pre_key.map(|(id, _)| id),
        signed_pre_key_id: bundle.signed_pre_key_id,
        base_key: base.public_key,
        created_secs: unix_secs(now),
        kyber_pre_key_id: bundle.kyber_pre_key_id,
        kyber_ciphertext,
    });
    state.local_registration_id = store.local_registration_id()?;
    state.remote_registration_id = bundle.registration_id;
    let _ = store.save_identity(address, &bundle.identity_key)?;
    record.promote_state(state);
    store.store_session(address, &record)
}

/// Encrypts `plaintext` for `address`. While the responder has not replied the result is a
/// [`CiphertextMessage::PreKey`], afterwards a [`CiphertextMessage::Signal`].
///
/// SPQR needs randomness to send (new ML-KEM keys and encapsulations); this takes it from the
/// operating system. [`encrypt_with_rng`] takes it as a parameter.
pub fn encrypt<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    plaintext: &[u8],
    now: SystemTime,
) -> Result<CiphertextMessage> {
    encrypt_with_rng(address, store, plaintext, now, &mut OsRng)
}

/// [`encrypt`] with the caller's randomness.
pub fn encrypt_with_rng<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    plaintext: &[u8],
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<CiphertextMessage> {
    let mut record = store
        .load_session(address)?
        .ok_or_else(|| Error::NoSession(address.to_string()))?;
    let state = record
        .current
        .as_mut()
        .ok_or_else(|| Error::NoSession(address.to_string()))?;
    if let Some(p) = &state.pending_pre_key {
        if p.created_secs
            .saturating_add(MAX_UNACKNOWLEDGED_SESSION_AGE_SECS)
            < unix_secs(now)
        {
            return Err(Error::NoSession(address.to_string()));
        }
    }
    let remote_identity = state.remote_identity;
    if !store.is_trusted_identity(address, &remote_identity, Direction::Sending)? {
        return Err(Error::UntrustedIdentity(address.to_string()));
    }
    let inner = state.encrypt(plaintext, rng)?;
    let message = match &state.pending_pre_key {
        Some(p) => CiphertextMessage::PreKey(PreKeySignalMessage::new(
            state.version,
            state.local_registration_id,
            p.pre_key_id,
            p.signed_pre_key_id,
            Some((p.kyber_pre_key_id, p.kyber_ciphertext.clone())),
            p.base_key,
            state.local_identity,
            inner,
        )),
        None => CiphertextMessage::Signal(inner),
    };
    let _ = store.save_identity(address, &remote_identity)?;
    store.store_session(address, &record)?;
    Ok(message)
}

/// Options of [`decrypt_with`].
#[derive(Clone, Debug, Default)]
pub struct DecryptOptions {
    /// SPQR policy of a session a PreKeySignalMessage creates.
    pub spqr: SpqrPolicy,
    /// Our own address, to check a message's field 6 (`addresses`) against. A message that
    /// carries field 6 is refused when this is `None` (it cannot be checked).
    pub local_address: Option<ProtocolAddress>,
}

/// Decrypts either message type. State (session, prekeys, identity) changes only if the
/// message authenticates; a failed message leaves the store untouched.
pub fn decrypt<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &CiphertextMessage,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    decrypt_with(address, store, message, rng, &DecryptOptions::default())
}

/// [`decrypt`] with [`DecryptOptions`].
pub fn decrypt_with<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &CiphertextMessage,
    rng: &mut (impl RngCore + CryptoRng),
    options: &DecryptOptions,
) -> Result<Vec<u8>> {
    match message {
        CiphertextMessage::Signal(m) => decrypt_signal(address, store, m, rng, options),
        CiphertextMessage::PreKey(m) => decrypt_prekey(address, store, m, rng, options),
    }
}

/// Decrypts a [`SignalMessage`] with an existing session.
pub fn decrypt_signal_message<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &SignalMessage,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    decrypt_signal(address, store, message, rng, &DecryptOptions::default())
}

fn decrypt_signal<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &SignalMessage,
    rng: &mut (impl RngCore + CryptoRng),
    options: &DecryptOptions,
) -> Result<Vec<u8>> {
    let mut record = store
        .load_session(address)?
        .ok_or_else(|| Error::NoSession(address.to_string()))?;
    let plaintext = record.decrypt(message, false, rng)?;
    // Checked after the MAC (which covers field 6) and before anything is stored.
    addresses::check(message.addresses(), address, options.local_address.as_ref())?;
    let remote = record
        .remote_identity()
        .ok_or_else(|| Error::NoSession(address.to_string()))?;
    if !store.is_trusted_identity(address, &remote, Direction::Receiving)? {
        return Err(Error::UntrustedIdentity(address.to_string()));
    }
    let _ = store.save_identity(address, &remote)?;
    store.store_session(address, &record)?;
    Ok(plaintext)
}

/// Decrypts a [`PreKeySignalMessage`], creating the responder's session on first sight.
/// The one-time prekey is removed only after the embedded message authenticates.
pub fn decrypt_prekey_message<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &PreKeySignalMessage,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    decrypt_prekey(address, store, message, rng, &DecryptOptions::default())
}

fn decrypt_prekey<S: ProtocolStore>(
    address: &ProtocolAddress,
    store: &mut S,
    message: &PreKeySignalMessage,
    rng: &mut (impl RngCore + CryptoRng),
    options: &DecryptOptions,
) -> Result<Vec<u8>> {
    if !store.is_trusted_identity(address, message.identity_key(), Direction::Receiving)? {
        return Err(Error::UntrustedIdentity(address.to_string()));
    }
    let mut record = store.load_session(address)?.unwrap_or_default();
    let used = process_prekey(message, &mut record, store, options.spqr)?;
    let plaintext = record.decrypt(message.message(), true, rng)?;
    addresses::check(
        message.message().addresses(),
        address,
        options.local_address.as_ref(),
    )?;
    // The MAC authenticates the identity bound into the session state, not the message's outer
    // identity_key field: when an existing session was reused, the two must agree, and only the
    // session's identity is ever saved.
    let remote = record
        .remote_identity()
        .ok_or_else(|| Error::NoSession(address.to_string()))?;
    if remote != *message.identity_key() {
        return Err(Error::InvalidMessage(
            "identity key does not match the session it names",
        ));
    }
    // Session first (libsignal's order): a crash before the prekeys are consumed leaves a
    // usable session, never a consumed prekey without the session built from it.
    store.store_session(address, &record)?;
    let _ = store.save_identity(address, &remote)?;
    if let Some(used) = used {
        if let Some(id) = used.kyber_pre_key_id {
            store.mark_kyber_pre_key_used(id)?;
        }
        if let Some(id) = used.one_time_pre_key_id {
            store.remove_pre_key(id)?;
        }
    }
    Ok(plaintext)
}

struct PreKeysUsed {
    one_time_pre_key_id: Option<u32>,
    kyber_pre_key_id: Option<u32>,
}

fn process_prekey<S: ProtocolStore>(
    message: &PreKeySignalMessage,
    record: &mut SessionRecord,
    store: &S,
    spqr: SpqrPolicy,
) -> Result<Option<PreKeysUsed>> {
    // A repeated PreKeySignalMessage from the same initiator session (it keeps sending them
    // until we reply) reuses the session it created.
    if record.promote_matching_session(message.version(), message.base_key()) {
        return Ok(None);
    }
    if message.version() == CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION {
        return Err(Error::LegacyVersion(message.version()));
    }
    let signed = store
        .get_signed_pre_key(message.signed_pre_key_id())?
        .ok_or(Error::UnknownSignedPreKey(message.signed_pre_key_id()))?;
    let kyber_id = message
        .kyber_pre_key_id()
        .ok_or(Error::InvalidMessage("missing Kyber prekey id"))?;
    let kyber = store
        .get_kyber_pre_key(kyber_id)?
        .ok_or(Error::UnknownKyberPreKey(kyber_id))?;
    let kyber_ciphertext = message
        .kyber_ciphertext()
        .ok_or(Error::InvalidMessage("missing Kyber ciphertext"))?;
    let one_time = match message.pre_key_id() {
        Some(id) => Some(store.get_pre_key(id)?.ok_or(Error::UnknownPreKey(id))?),
        None => None,
    };
    let our_identity = store.identity_key_pair()?;
    let mut state = initialize_bob(&BobParams {
        our_identity: &our_identity,
        our_signed_pre_key: &signed.key_pair,
        our_one_time_pre_key: one_time.as_ref().map(|r| &r.key_pair),
        our_kyber_secret: &kyber.key_pair.secret_key,
        their_identity: message.identity_key(),
        their_base_key: message.base_key(),
        kyber_ciphertext,
        spqr,
    })?;
    state.local_registration_id = store.local_registration_id()?;
    state.remote_registration_id = message.registration_id();
    record.promote_state(state);
    Ok(Some(PreKeysUsed {
        one_time_pre_key_id: message.pre_key_id(),
        kyber_pre_key_id: Some(kyber_id),
    }))
}
