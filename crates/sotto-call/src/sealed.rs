//! Sealed call setup: call messages travel inside the pair's sotto-ratchet session, as the
//! opaque ciphertext of signaling envelopes. The signaling server routes bytes it cannot read;
//! the SDP inside (and so the DTLS fingerprint) is authenticated by the devices' identity keys.
//!
//! Envelope ciphertext = `type (1 byte: 2 = SignalMessage, 3 = PreKeySignalMessage) ‖ message`.

use std::sync::Mutex;
use std::time::SystemTime;

use sotto_ratchet::{
    decrypt, encrypt, process_prekey_bundle, CiphertextMessage, Fingerprint, IdentityKey,
    IdentityKeyPair, IdentityKeyStore, InMemoryStore, KyberPreKeyRecord, KyberPreKeyStore,
    PreKeyBundle, PreKeyRecord, PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey,
    SessionStore, SignalMessage, SignedPreKeyRecord, SignedPreKeyStore,
};
use sotto_server::client::{FetchedBundle, IdentityStatus};
use sotto_server::protocol::{OneTimePreKey, SignedPreKey, B64};
use sotto_server::{Client, ClientConfig, Envelope, Events};

use crate::messages::{CallMessage, MessageError, MAX_CALL_MESSAGE};

pub use crate::consts::{
    CALL_ENVELOPE_TTL_SECS, MAX_SEEN_ENVELOPES, ONE_TIME_PREKEYS, SAFETY_NUMBER_VERSION,
};

/// What can go wrong sealing or opening a call message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The signaling server or connection failed.
    #[error("signaling: {0}")]
    Signaling(#[from] sotto_server::Error),
    /// The ratchet refused (bad MAC, replay, untrusted identity, no session...).
    #[error("ratchet: {0}")]
    Ratchet(#[from] sotto_ratchet::Error),
    /// The envelope is not a ratchet message.
    #[error("envelope is not a sotto ratchet message")]
    NotRatchet,
    /// The decrypted content is not a valid call message.
    #[error("call message: {0}")]
    Message(#[from] MessageError),
    /// The peer's bundle is malformed.
    #[error("peer's prekey bundle is malformed: {0}")]
    BadBundle(String),
    /// The server now binds a different identity key to the peer's device than the one we
    /// pinned: possibly a server (or an attacker) substituting keys. Refused until the user
    /// verifies the new safety number.
    #[error("{0}'s identity key changed: verify the safety number before calling")]
    IdentityChanged(String),
}

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

/// A registered device: its identity, its ratchet store and its signaling connection.
pub struct Device {
    username: String,
    device_id: u32,
    identity: IdentityKeyPair,
    store: Mutex<InMemoryStore>,
    client: Client,
    /// Envelope ids [`Device::next`] already took (the last [`MAX_SEEN_ENVELOPES`]).
    seen: Mutex<SeenIds>,
}

/// The last [`MAX_SEEN_ENVELOPES`] envelope ids taken, oldest first out.
#[derive(Debug, Default)]
struct SeenIds {
    order: std::collections::VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl SeenIds {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > MAX_SEEN_ENVELOPES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Device {
    /// Creates an identity, registers `username` (device 1) on the server at `url` and publishes
    /// a signed prekey, a last-resort Kyber prekey and [`ONE_TIME_PREKEYS`] one-time prekeys.
    ///
    /// # Errors
    /// [`SealedError::Signaling`] if the server refuses (e.g. the name is taken).
    pub async fn register(
        url: &str,
        server_id: &str,
        username: &str,
    ) -> Result<(Device, Events), SealedError> {
        let mut rng = rand::rngs::OsRng;
        let identity = IdentityKeyPair::generate(&mut rng);
        let device_id = 1;
        let cfg =
            ClientConfig::new(url, server_id, username, device_id, identity.clone()).register();
        let (client, events) = Client::connect(cfg).await?;
        let registration_id = rand::random::<u32>() & 0x3fff;
        let mut store = InMemoryStore::new(identity.clone(), registration_id);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let signed = SignedPreKeyRecord::generate(1, now_ms, &identity, &mut rng);
        let kyber = KyberPreKeyRecord::generate(1, now_ms, &identity, &mut rng);
        let spk = SignedPreKey {
            id: signed.id,
            public: B64(signed.key_pair.public_key.serialize().to_vec()),
            signature: B64(signed.signature.to_vec()),
        };
        let kpk = SignedPreKey {
            id: kyber.id,
            public: B64(kyber.key_pair.public_key.serialize()),
            signature: B64(kyber.signature.to_vec()),
        };
        let mut otpks = Vec::new();
        for id in 1..=ONE_TIME_PREKEYS {
            let pk = PreKeyRecord::generate(id, &mut rng);
            otpks.push(OneTimePreKey {
                id,
                public: B64(pk.key_pair.public_key.serialize().to_vec()),
            });
            store.save_pre_key(pk)?;
        }
        store.save_signed_pre_key(signed)?;
        store.save_kyber_pre_key(kyber, true)?;
        client.publish_prekeys(Some(spk), Some(kpk), otpks).await?;
        Ok((
            Device {
                username: username.to_string(),
                device_id,
                identity,
                store: Mutex::new(store),
                client,
                seen: Mutex::new(SeenIds::default()),
            },
            events,
        ))
    }

    /// Our account name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Our device number.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// Our identity public key.
    pub fn identity_key(&self) -> IdentityKey {
        self.identity.public()
    }

    /// The signaling client (TURN credentials, pings...).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn bundle_from(f: &FetchedBundle) -> Result<PreKeyBundle, SealedError> {
        let b = &f.bundle;
        let bad =
            |what: &str, e: sotto_ratchet::Error| SealedError::BadBundle(format!("{what}: {e}"));
        let identity_key =
            IdentityKey::deserialize(&b.identity_key.0).map_err(|e| bad("identity", e))?;
        let signed = PublicKey::deserialize(&b.signed_prekey.public.0)
            .map_err(|e| bad("signed prekey", e))?;
        let kyber = sotto_ratchet::KyberPublicKey::deserialize(&b.kem_prekey.public.0)
            .map_err(|e| bad("kyber prekey", e))?;
        let one_time = match &b.one_time_prekey {
            Some(k) => Some((
                k.id,
                PublicKey::deserialize(&k.public.0).map_err(|e| bad("one-time prekey", e))?,
            )),
            None => None,
        };
        Ok(PreKeyBundle {
            registration_id: 0,
            device_id: b.device_id,
            pre_key: one_time,
            signed_pre_key_id: b.signed_prekey.id,
            signed_pre_key_public: signed,
            signed_pre_key_signature: b.signed_prekey.signature.0.clone(),
            identity_key,
            kyber_pre_key_id: b.kem_prekey.id,
            kyber_pre_key_public: kyber,
            kyber_pre_key_signature: b.kem_prekey.signature.0.clone(),
        })
    }

    /// Makes sure a session with `peer`'s device exists: fetches its bundle (consuming one
    /// one-time prekey), verifies the prekey signatures and runs PQXDH.
    ///
    /// # Errors
    /// [`SealedError::BadBundle`] when the answer is another device's bundle or malformed;
    /// [`SealedError::IdentityChanged`] when the server's key for the peer differs from the
    /// pinned one; ratchet errors for bad signatures (or an identity differing from the one
    /// stored with an earlier session: `UntrustedIdentity`).
    pub async fn ensure_session(&self, peer: &str, device: u32) -> Result<(), SealedError> {
        let addr = ProtocolAddress::new(peer, device);
        if lock(&self.store).load_session(&addr)?.is_some() {
            return Ok(());
        }
        let fetched = self.client.fetch_bundle(peer, device).await?;
        // the client pins identities under the name the bundle states: a bundle for another
        // account or device is a substitution, refused before anything else
        if fetched.bundle.username != peer || fetched.bundle.device_id != device {
            return Err(SealedError::BadBundle(format!(
                "asked for {peer}.{device}, got another device's bundle"
            )));
        }
        if fetched.identity == IdentityStatus::Changed {
            return Err(SealedError::IdentityChanged(peer.to_string()));
        }
        let bundle = Self::bundle_from(&fetched)?;
        let mut rng = rand::rngs::OsRng;
        process_prekey_bundle(
            &addr,
            &mut *lock(&self.store),
            &bundle,
            SystemTime::now(),
            &mut rng,
        )?;
        Ok(())
    }

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
        let sealed = encrypt(&addr, &mut *lock(&self.store), &plain, SystemTime::now())?;
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
        let plain = zeroize::Zeroizing::new(decrypt(&addr, &mut *store, &message, &mut rng)?);
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
    /// it, and returns the result. Other events (reconnects, prekey stock) are skipped. An
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
    pub async fn next(&self, events: &mut Events) -> Option<Result<Incoming, SealedError>> {
        loop {
            let env = events.next_envelope().await?;
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

    /// The safety number with `peer` (60 digits in 12 groups), once we know its identity.
    pub fn safety_number(&self, peer: &str, device: u32) -> Option<String> {
        let theirs = lock(&self.store)
            .get_identity(&ProtocolAddress::new(peer, device))
            .ok()??;
        let fp = Fingerprint::new(
            SAFETY_NUMBER_VERSION,
            self.username.as_bytes(),
            &self.identity.public(),
            peer.as_bytes(),
            &theirs,
        );
        let digits = fp.displayable;
        Some(
            digits
                .as_bytes()
                .chunks(5)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_remember_the_last_max_seen_envelopes() {
        let mut s = SeenIds::default();
        for id in 0..MAX_SEEN_ENVELOPES as u64 {
            assert!(s.insert(id));
        }
        // all MAX_SEEN_ENVELOPES still remembered
        assert!(!s.insert(0));
        assert!(!s.insert(MAX_SEEN_ENVELOPES as u64 - 1));
        // one more pushes out the oldest (id 0)
        assert!(s.insert(MAX_SEEN_ENVELOPES as u64));
        assert!(s.insert(0));
        assert!(!s.insert(2));
        assert_eq!(s.order.len(), MAX_SEEN_ENVELOPES);
        assert_eq!(s.set.len(), MAX_SEEN_ENVELOPES);
    }
}
