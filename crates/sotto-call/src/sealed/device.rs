//! [`Device`]: a registered device's state (identity, ratchet store, signaling client, the
//! envelope ids already taken) and its accessors.

use std::sync::Mutex;

use sotto_ratchet::{IdentityKey, IdentityKeyPair};
use sotto_server::tls::ClientTls;
use sotto_server::Client;

use super::profile::Persisted;
use super::replenish::ReplenishBackoff;
use super::store::DeviceStore;
use super::MAX_SEEN_ENVELOPES;

/// A registered device: its identity, its ratchet store and its signaling connection.
pub struct Device {
    pub(super) username: String,
    pub(super) device_id: u32,
    pub(super) identity: IdentityKeyPair,
    pub(super) store: Mutex<DeviceStore>,
    pub(super) client: Client,
    /// The CAs its servers are verified against: the signaling server's, and the relay's.
    pub(super) tls: ClientTls,
    /// Envelope ids [`Device::next`] already took (the last [`MAX_SEEN_ENVELOPES`]).
    pub(super) seen: Mutex<SeenIds>,
    /// Set for a device kept on disk.
    pub(super) persisted: Option<Mutex<Persisted>>,
    /// The next one-time prekey id to hand out; ranges are reserved under this lock (and, for a
    /// persistent device, recorded in `device.json`) before any key is made.
    pub(super) next_prekey: Mutex<u32>,
    /// When the next "prekeys low" may be answered.
    pub(super) replenish: Mutex<ReplenishBackoff>,
}

/// The last [`MAX_SEEN_ENVELOPES`] envelope ids taken, oldest first out.
#[derive(Debug, Default)]
pub(super) struct SeenIds {
    order: std::collections::VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl SeenIds {
    /// Records `id`; false if it was already there.
    pub(super) fn insert(&mut self, id: u64) -> bool {
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

impl Device {
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

    /// The CAs this device verifies its servers against (signaling, and the relay it joins).
    pub fn client_tls(&self) -> &ClientTls {
        &self.tls
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
