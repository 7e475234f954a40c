//! Sealing call messages into signaling envelopes and opening them: send, open, the receive
//! loop (redeliveries skipped, prekeys replenished) and acknowledgement.

use std::time::SystemTime;

use sotto_ratchet::{
    decrypt_with, encrypt_with_rng, CiphertextMessage, DecryptOptions, IdentityKey,
    IdentityKeyStore, PreKeySignalMessage, ProtocolAddress, SignalMessage,
};
use sotto_server::{Envelope, Event, Events};

use super::device::Device;
use super::{lock, SealedError, CALL_ENVELOPE_TTL_SECS};
use crate::messages::{CallMessage, MessageError, MAX_CALL_MESSAGE};

/// A decrypted call message and who sent it.
#[derive(Debug)]
pub struct Incoming {
    /// Sender account, as the server says (bound to the session below).
    pub from_user: String,
    /// Sender device.
    pub from_device: u32,
    /// The sender's identity key, from the session that authenticated the message.
    pub identity: IdentityKey,
    /// The message.
    pub message: CallMessage,
}

impl Device {
    /// Seals `msg` for `peer`'s device and hands it to the server (returns once stored).
    ///
    /// # Errors
    /// [`SealedError::Message`] (`TooLarge`) if the encoded message exceeds
    /// [`MAX_CALL_MESSAGE`] (nothing is sealed or sent); session setup, ratchet or signaling
    /// errors.
    pub async fn send(
        &self,
        peer: &str,
        device: u32,
        msg: &CallMessage,
    ) -> Result<(), SealedError> {
        let plain = msg.encode();
        if plain.len() > MAX_CALL_MESSAGE {
            return Err(MessageError::TooLarge(plain.len()).into());
        }
        self.ensure_session(peer, device).await?;
        let addr = ProtocolAddress::new(peer, device);
        let sealed = encrypt_with_rng(
            &addr,
            &mut *lock(&self.store),
            &plain,
            SystemTime::now(),
            &mut rand::rngs::OsRng,
        )?;
        let mut wire = Vec::with_capacity(1 + sealed.serialized().len());
        wire.push(sealed.message_type());
        wire.extend_from_slice(sealed.serialized());
        self.client
            .send(peer, device, CALL_ENVELOPE_TTL_SECS, wire)
            .await?;
        Ok(())
    }

    /// Opens an envelope. The state (session, prekeys) changes only if it authenticates.
    ///
    /// # Errors
    /// [`SealedError`] naming why; the caller acknowledges the envelope anyway so a bad one never
    /// blocks the queue.
    pub fn open(&self, env: &Envelope) -> Result<Incoming, SealedError> {
        let bytes = &env.ciphertext.0;
        let (&ty, body) = bytes.split_first().ok_or(SealedError::NotRatchet)?;
        let message = match ty {
            2 => CiphertextMessage::Signal(SignalMessage::deserialize(body)?),
            3 => CiphertextMessage::PreKey(PreKeySignalMessage::deserialize(body)?),
            _ => return Err(SealedError::NotRatchet),
        };
        let addr = ProtocolAddress::new(env.from_user.clone(), env.from_device);
        let mut rng = rand::rngs::OsRng;
        let mut store = lock(&self.store);
        // identity, session and used prekeys change together, or not at all
        let plain = zeroize::Zeroizing::new(store.transaction(|s| {
            decrypt_with(
                &addr,
                s,
                &message,
                &mut rng,
                &DecryptOptions {
                    spqr: super::SPQR_POLICY,
                    local_address: None,
                },
            )
        })?);
        let identity = store.get_identity(&addr)?.ok_or(SealedError::Ratchet(
            sotto_ratchet::Error::NoSession(addr.to_string()),
        ))?;
        drop(store);
        let message = CallMessage::decode(&plain)?;
        Ok(Incoming {
            from_user: env.from_user.clone(),
            from_device: env.from_device,
            identity,
            message,
        })
    }

    /// The next call message from `events`: receives the next envelope, opens it, acknowledges
    /// it, and returns the result. A low one-time prekey stock is answered with fresh prekeys;
    /// other events (reconnects) are skipped. An
    /// envelope whose id is among the last [`MAX_SEEN_ENVELOPES`] taken is an at-least-once
    /// redelivery (e.g. after a reconnect): it is acknowledged and skipped without touching the
    /// ratchet. A replay under a *new* id reaches the ratchet and is
    /// `Ratchet(DuplicateMessage)`. The envelope is acknowledged before the message is returned,
    /// so a crash while acting on it loses that one call message (calls recover by timeouts).
    /// `None` once the client is closed.
    ///
    /// # Errors
    /// Each item is `Err` for an envelope that does not open ([`Device::open`]) — the stream
    /// moves on — or `Signaling` if the acknowledgement fails.
    ///
    /// [`MAX_SEEN_ENVELOPES`]: super::MAX_SEEN_ENVELOPES
    pub async fn next(&self, events: &mut Events) -> Option<Result<Incoming, SealedError>> {
        loop {
            let env = match events.next().await? {
                Event::Envelope(env) => env,
                Event::PrekeysLow { remaining } => {
                    match self.on_prekeys_low(std::time::Instant::now()).await {
                        Ok(r) => tracing::debug!(remaining, ?r, "one-time prekeys low"),
                        Err(e) => tracing::warn!("publishing one-time prekeys failed: {e}"),
                    }
                    continue;
                }
                _ => continue,
            };
            let fresh = lock(&self.seen).insert(env.envelope_id);
            if !fresh {
                if let Err(e) = self.ack(&env).await {
                    return Some(Err(e));
                }
                continue;
            }
            let opened = self.open(&env);
            if let Err(e) = self.ack(&env).await {
                return Some(Err(e));
            }
            return Some(opened);
        }
    }

    /// Acknowledges (deletes) a processed envelope.
    pub async fn ack(&self, env: &Envelope) -> Result<(), SealedError> {
        Ok(self.client.ack(env.envelope_id).await?)
    }
}
