//! Session setup with a peer's device (its prekey bundle, PQXDH) and the identity checks that
//! guard it: the bundle's owner, the server's identity status and the pinned identity key.

use std::time::SystemTime;

use sotto_ratchet::{
    process_prekey_bundle_with_policy, IdentityKey, IdentityKeyStore, PreKeyBundle,
    ProtocolAddress, PublicKey, SessionStore,
};
use sotto_server::client::{FetchedBundle, IdentityStatus};

use super::device::Device;
use super::{lock, SealedError, SPQR_POLICY};

impl Device {
    pub(super) fn bundle_from(f: &FetchedBundle) -> Result<PreKeyBundle, SealedError> {
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
        // the pin that survives restarts: the identity stored with an earlier session
        if let Some(pinned) = lock(&self.store).get_identity(&addr)? {
            if pinned != bundle.identity_key {
                return Err(SealedError::IdentityChanged(peer.to_string()));
            }
        }
        let mut rng = rand::rngs::OsRng;
        lock(&self.store).transaction(|s| {
            process_prekey_bundle_with_policy(
                &addr,
                s,
                &bundle,
                SystemTime::now(),
                &mut rng,
                SPQR_POLICY,
            )
        })?;
        Ok(())
    }

    /// Before a call to a peer we already have a session with: asks the server which identity
    /// key it now binds to the peer's device (no one-time prekey is used) and compares it with
    /// the pinned one. A session carries on under the key it was made with, so without this a
    /// re-keyed peer (a reinstall, or a server substituting keys) would just never ring.
    ///
    /// # Errors
    /// [`SealedError::IdentityChanged`] when the keys differ or the device is gone; signaling
    /// errors. `Ok` when nothing is pinned yet (the bundle fetch checks then) or the server
    /// sends no keys.
    pub async fn check_identity(&self, peer: &str, device: u32) -> Result<(), SealedError> {
        let addr = ProtocolAddress::new(peer, device);
        let Some(pinned) = lock(&self.store).get_identity(&addr)? else {
            return Ok(());
        };
        let listed = self.client.device_identities(peer).await?;
        match listed.iter().find(|(d, _)| *d == device) {
            Some((_, key)) if key.is_empty() => Ok(()),
            Some((_, key)) if IdentityKey::deserialize(key).ok() == Some(pinned) => Ok(()),
            _ => Err(SealedError::IdentityChanged(peer.to_string())),
        }
    }
}
