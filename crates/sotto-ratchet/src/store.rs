//! Storage traits and the in-memory implementation.
//!
//! The traits are synchronous and small; a real application backs them with a database.
//! [`InMemoryStore`] is used by tests and by the encrypted file store (`file_store`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::error::Result;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::prekeys::{KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};
use crate::record::SessionRecord;

/// A remote device: account name plus device id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolAddress {
    /// Account identifier (opaque to this crate).
    pub name: String,
    /// Device number.
    pub device_id: u32,
}

impl ProtocolAddress {
    /// New address.
    pub fn new(name: impl Into<String>, device_id: u32) -> Self {
        Self {
            name: name.into(),
            device_id,
        }
    }
}

impl fmt::Display for ProtocolAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.device_id)
    }
}

/// Whether an identity is checked for sending or receiving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We are about to encrypt to it.
    Sending,
    /// We decrypted something from it.
    Receiving,
}

/// Outcome of saving a contact's identity key: a change is always reported, never silent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum IdentityChange {
    /// First time we see this contact, or the same key as before.
    NewOrUnchanged,
    /// The contact had a different key, which has now been replaced.
    ReplacedExisting {
        /// The key we trusted before.
        previous: IdentityKey,
    },
}

/// Our identity and the identities we know for contacts.
pub trait IdentityKeyStore {
    /// Our identity key pair.
    fn identity_key_pair(&self) -> Result<IdentityKeyPair>;
    /// Our registration id.
    fn local_registration_id(&self) -> Result<u32>;
    /// Whether `identity` is acceptable for `address`. The in-memory policy: trust on first
    /// use; a key different from the stored one is *not* trusted until the application calls
    /// [`IdentityKeyStore::save_identity`] with it.
    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> Result<bool>;
    /// Records `identity` for `address`, reporting a replacement.
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange>;
    /// The identity stored for `address`.
    fn get_identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>>;
    /// Every address an identity is stored for (the contacts this store knows), sorted by
    /// name, then device.
    fn identity_addresses(&self) -> Result<Vec<ProtocolAddress>>;
}

/// One-time Curve25519 prekeys.
pub trait PreKeyStore {
    /// Looks a prekey up.
    fn get_pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>>;
    /// Stores a prekey.
    fn save_pre_key(&mut self, record: PreKeyRecord) -> Result<()>;
    /// Deletes a prekey (after a session consumed it).
    fn remove_pre_key(&mut self, id: u32) -> Result<()>;
    /// The ids of every stored prekey, ascending (a device caps its stock by dropping the
    /// oldest).
    fn pre_key_ids(&self) -> Result<Vec<u32>>;
}

/// Signed prekeys.
pub trait SignedPreKeyStore {
    /// Looks a signed prekey up.
    fn get_signed_pre_key(&self, id: u32) -> Result<Option<SignedPreKeyRecord>>;
    /// Stores a signed prekey.
    fn save_signed_pre_key(&mut self, record: SignedPreKeyRecord) -> Result<()>;
    /// `(id, creation time in ms)` of every stored signed prekey, by id.
    fn signed_pre_key_stamps(&self) -> Result<Vec<(u32, u64)>>;
    /// Deletes a signed prekey (one rotated out past its grace period).
    fn remove_signed_pre_key(&mut self, id: u32) -> Result<()>;
}

/// Kyber prekeys: one-time ones are deleted after use, last-resort ones are kept.
pub trait KyberPreKeyStore {
    /// Looks a Kyber prekey up.
    fn get_kyber_pre_key(&self, id: u32) -> Result<Option<KyberPreKeyRecord>>;
    /// Stores a Kyber prekey; `last_resort` keys survive use.
    fn save_kyber_pre_key(&mut self, record: KyberPreKeyRecord, last_resort: bool) -> Result<()>;
    /// Called after a session consumed the key.
    fn mark_kyber_pre_key_used(&mut self, id: u32) -> Result<()>;
    /// `(id, creation time in ms)` of every stored last-resort Kyber prekey, by id.
    fn last_resort_kyber_stamps(&self) -> Result<Vec<(u32, u64)>>;
    /// Deletes a Kyber prekey (a last-resort one rotated out past its grace period).
    fn remove_kyber_pre_key(&mut self, id: u32) -> Result<()>;
}

/// Session records per remote device.
pub trait SessionStore {
    /// Loads a copy of the record.
    fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>>;
    /// Replaces the record.
    fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> Result<()>;
}

/// Everything the session functions need.
pub trait ProtocolStore:
    IdentityKeyStore + PreKeyStore + SignedPreKeyStore + KyberPreKeyStore + SessionStore
{
}
impl<T> ProtocolStore for T where
    T: IdentityKeyStore + PreKeyStore + SignedPreKeyStore + KyberPreKeyStore + SessionStore
{
}

/// All state in memory.
#[derive(Clone, Debug)]
pub struct InMemoryStore {
    pub(crate) identity: IdentityKeyPair,
    pub(crate) registration_id: u32,
    pub(crate) identities: HashMap<ProtocolAddress, IdentityKey>,
    pub(crate) pre_keys: BTreeMap<u32, PreKeyRecord>,
    pub(crate) signed_pre_keys: BTreeMap<u32, SignedPreKeyRecord>,
    pub(crate) kyber_pre_keys: BTreeMap<u32, (KyberPreKeyRecord, bool)>,
    pub(crate) sessions: HashMap<ProtocolAddress, SessionRecord>,
}

impl InMemoryStore {
    /// An empty store for `identity`.
    pub fn new(identity: IdentityKeyPair, registration_id: u32) -> Self {
        Self {
            identity,
            registration_id,
            identities: HashMap::new(),
            pre_keys: BTreeMap::new(),
            signed_pre_keys: BTreeMap::new(),
            kyber_pre_keys: BTreeMap::new(),
            sessions: HashMap::new(),
        }
    }
}

impl IdentityKeyStore for InMemoryStore {
    fn identity_key_pair(&self) -> Result<IdentityKeyPair> {
        Ok(self.identity.clone())
    }
    fn local_registration_id(&self) -> Result<u32> {
        Ok(self.registration_id)
    }
    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        _direction: Direction,
    ) -> Result<bool> {
        Ok(match self.identities.get(address) {
            None => true,
            Some(known) => known.ct_eq(identity),
        })
    }
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange> {
        Ok(match self.identities.insert(address.clone(), *identity) {
            Some(previous) if !previous.ct_eq(identity) => {
                IdentityChange::ReplacedExisting { previous }
            }
            _ => IdentityChange::NewOrUnchanged,
        })
    }
    fn get_identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>> {
        Ok(self.identities.get(address).copied())
    }
    fn identity_addresses(&self) -> Result<Vec<ProtocolAddress>> {
        let mut all: Vec<_> = self.identities.keys().cloned().collect();
        all.sort();
        Ok(all)
    }
}

impl PreKeyStore for InMemoryStore {
    fn get_pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>> {
        Ok(self.pre_keys.get(&id).cloned())
    }
    fn save_pre_key(&mut self, record: PreKeyRecord) -> Result<()> {
        self.pre_keys.insert(record.id, record);
        Ok(())
    }
    fn remove_pre_key(&mut self, id: u32) -> Result<()> {
        self.pre_keys.remove(&id);
        Ok(())
    }
    fn pre_key_ids(&self) -> Result<Vec<u32>> {
        Ok(self.pre_keys.keys().copied().collect())
    }
}

impl SignedPreKeyStore for InMemoryStore {
    fn get_signed_pre_key(&self, id: u32) -> Result<Option<SignedPreKeyRecord>> {
        Ok(self.signed_pre_keys.get(&id).cloned())
    }
    fn save_signed_pre_key(&mut self, record: SignedPreKeyRecord) -> Result<()> {
        self.signed_pre_keys.insert(record.id, record);
        Ok(())
    }
    fn signed_pre_key_stamps(&self) -> Result<Vec<(u32, u64)>> {
        Ok(self
            .signed_pre_keys
            .values()
            .map(|r| (r.id, r.timestamp))
            .collect())
    }
    fn remove_signed_pre_key(&mut self, id: u32) -> Result<()> {
        self.signed_pre_keys.remove(&id);
        Ok(())
    }
}

impl KyberPreKeyStore for InMemoryStore {
    fn get_kyber_pre_key(&self, id: u32) -> Result<Option<KyberPreKeyRecord>> {
        Ok(self.kyber_pre_keys.get(&id).map(|(r, _)| r.clone()))
    }
    fn save_kyber_pre_key(&mut self, record: KyberPreKeyRecord, last_resort: bool) -> Result<()> {
        self.kyber_pre_keys.insert(record.id, (record, last_resort));
        Ok(())
    }
    fn mark_kyber_pre_key_used(&mut self, id: u32) -> Result<()> {
        if let Some((_, false)) = self.kyber_pre_keys.get(&id) {
            self.kyber_pre_keys.remove(&id);
        }
        Ok(())
    }
    fn last_resort_kyber_stamps(&self) -> Result<Vec<(u32, u64)>> {
        Ok(self
            .kyber_pre_keys
            .values()
            .filter(|(_, last_resort)| *last_resort)
            .map(|(r, _)| (r.id, r.timestamp))
            .collect())
    }
    fn remove_kyber_pre_key(&mut self, id: u32) -> Result<()> {
        self.kyber_pre_keys.remove(&id);
        Ok(())
    }
}

impl SessionStore for InMemoryStore {
    fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>> {
        Ok(self.sessions.get(address).cloned())
    }
    fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> Result<()> {
        self.sessions.insert(address.clone(), record.clone());
        Ok(())
    }
}
