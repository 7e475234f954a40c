//! Safety numbers, and replacing a peer's pinned identity key once the user compared the new
//! one out of band.

use std::time::SystemTime;

use sotto_ratchet::{
    process_prekey_bundle_with_policy, Fingerprint, IdentityKey, IdentityKeyStore, PreKeyBundle,
    ProtocolAddress,
};

use super::device::Device;
use super::{lock, SealedError, SAFETY_NUMBER_VERSION};

/// The identity key the server currently binds to a peer's device, with the bundle it came in
/// and the safety number it gives ([`Device::offered_identity`]).
pub struct OfferedIdentity {
    peer: String,
    device: u32,
    /// The safety number the offered key gives with ours (12 groups of 5 digits).
    pub safety_number: String,
    /// The offered key.
    pub identity: IdentityKey,
    bundle: PreKeyBundle,
}

impl std::fmt::Debug for OfferedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedIdentity")
            .field("peer", &self.peer)
            .field("device", &self.device)
            .field("safety_number", &self.safety_number)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// The safety number with `peer` (60 digits in 12 groups), once we know its identity.
    pub fn safety_number(&self, peer: &str, device: u32) -> Option<String> {
        let theirs = lock(&self.store)
            .get_identity(&ProtocolAddress::new(peer, device))
            .ok()??;
        Some(self.safety_number_with(peer, &theirs))
    }

    /// The accounts whose identity keys this device keeps (every peer it called or was called
    /// by, or trusted), sorted, without ourselves; empty if the store cannot be read.
    pub fn known_peers(&self) -> Vec<String> {
        let addresses = lock(&self.store).identity_addresses().unwrap_or_default();
        let mut names: Vec<String> = addresses
            .into_iter()
            .map(|a| a.name)
            .filter(|n| *n != self.username)
            .collect();
        names.dedup();
        names
    }

    /// The safety number the server's *current* key for `peer`'s device would give, read from
    /// the device listing (uses up no one-time prekey: for showing the number to compare).
    /// `None` if the server lists no key for that device.
    ///
    /// # Errors
    /// Signaling errors, or a listed key that does not parse.
    pub async fn listed_safety_number(
        &self,
        peer: &str,
        device: u32,
    ) -> Result<Option<String>, SealedError> {
        let listed = self.client.device_identities(peer).await?;
        let Some((_, key)) = listed.iter().find(|(d, k)| *d == device && !k.is_empty()) else {
            return Ok(None);
        };
        let key = IdentityKey::deserialize(key)
            .map_err(|e| SealedError::BadBundle(format!("listed identity key: {e}")))?;
        Ok(Some(self.safety_number_with(peer, &key)))
    }

    /// The safety number the server's *current* key for `peer`'s device would give (fetches one
    /// bundle, which uses up one of the peer's one-time prekeys), to compare out of band before
    /// [`Device::trust_identity`], which starts the new session from this same bundle.
    ///
    /// # Errors
    /// Signaling errors, or a malformed bundle or one for another device.
    pub async fn offered_identity(
        &self,
        peer: &str,
        device: u32,
    ) -> Result<OfferedIdentity, SealedError> {
        let fetched = self.client.fetch_bundle(peer, device).await?;
        if fetched.bundle.username != peer || fetched.bundle.device_id != device {
            return Err(SealedError::BadBundle(format!(
                "asked for {peer}.{device}, got another device's bundle"
            )));
        }
        let bundle = Self::bundle_from(&fetched)?;
        Ok(OfferedIdentity {
            peer: peer.to_string(),
            device,
            safety_number: self.safety_number_with(peer, &bundle.identity_key),
            identity: bundle.identity_key,
            bundle,
        })
    }

    /// Accepts the offered key as the peer's device key, after the user compared
    /// `offered.safety_number` out of band: replaces the pin and, if the key differs from the
    /// pinned one, starts a new session from the offered bundle, so the next call goes to the
    /// new key. Pin and session change together or not at all.
    ///
    /// # Errors
    /// Ratchet errors (bad prekey signatures under the offered key; nothing is stored then),
    /// or a store that cannot be written.
    pub fn trust_identity(&self, offered: OfferedIdentity) -> Result<(), SealedError> {
        let addr = ProtocolAddress::new(offered.peer.as_str(), offered.device);
        let mut store = lock(&self.store);
        if store.get_identity(&addr)?.as_ref() == Some(&offered.identity) {
            return Ok(());
        }
        // the signatures must verify under the new key before anything is stored
        offered.bundle.verify_signatures()?;
        store.transaction(|s| {
            let _replaced = s.save_identity(&addr, &offered.identity)?;
            process_prekey_bundle_with_policy(
                &addr,
                s,
                &offered.bundle,
                SystemTime::now(),
                &mut rand::rngs::OsRng,
                super::SPQR_POLICY,
            )
        })?;
        Ok(())
    }

    fn safety_number_with(&self, peer: &str, theirs: &IdentityKey) -> String {
        let fp = Fingerprint::new(
            SAFETY_NUMBER_VERSION,
            self.username.as_bytes(),
            &self.identity.public(),
            peer.as_bytes(),
            theirs,
        );
        fp.displayable
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
