//! [`DeviceStore`]: the device's ratchet state, in memory or in an encrypted [`FileStore`],
//! with all-or-nothing transactions and the sotto-ratchet store traits forwarded to either.

use sotto_ratchet::{
    Direction, FileStore, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    InMemoryStore, KyberPreKeyRecord, KyberPreKeyStore, PreKeyRecord, PreKeyStore, ProtocolAddress,
    SessionRecord, SessionStore, SignedPreKeyRecord, SignedPreKeyStore,
};

/// Where a device keeps its ratchet state: in memory (gone with the process: demos, tests) or
/// in an encrypted [`FileStore`] that every change is written through before it is used.
pub(super) enum DeviceStore {
    Memory(InMemoryStore),
    File(FileStore<rand::rngs::OsRng>),
}

impl DeviceStore {
    /// Runs `f` as one change: on error (or a failed write) the state is put back as it was,
    /// and a file store is written once, at the end.
    pub(super) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut DeviceStore) -> sotto_ratchet::Result<T>,
    ) -> sotto_ratchet::Result<T> {
        // a panic inside counts as an error: the state goes back, and a file store's
        // transaction is closed (else every later change would join it and never be written)
        let run = |this: &mut DeviceStore| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(this)))
        };
        match self {
            DeviceStore::Memory(m) => {
                let before = m.clone();
                let res = run(self);
                if !matches!(res, Ok(Ok(_))) {
                    *self = DeviceStore::Memory(before);
                }
                res.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            DeviceStore::File(file) => {
                let outer = file.begin_transaction();
                let res = run(self);
                match (self, res) {
                    (DeviceStore::File(file), Ok(res)) if outer => file.finish_transaction(res),
                    (DeviceStore::File(file), Err(panic)) => {
                        if outer {
                            let _ = file.finish_transaction::<()>(Err(
                                sotto_ratchet::Error::InvalidArgument("panicked"),
                            ));
                        }
                        std::panic::resume_unwind(panic)
                    }
                    (_, res) => res.unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                }
            }
        }
    }
}

/// Forwards each store method to whichever store the device has.
macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            DeviceStore::Memory($s) => $e,
            DeviceStore::File($s) => $e,
        }
    };
}

impl IdentityKeyStore for DeviceStore {
    fn identity_key_pair(&self) -> sotto_ratchet::Result<IdentityKeyPair> {
        delegate!(self, s => s.identity_key_pair())
    }
    fn local_registration_id(&self) -> sotto_ratchet::Result<u32> {
        delegate!(self, s => s.local_registration_id())
    }
    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> sotto_ratchet::Result<bool> {
        delegate!(self, s => s.is_trusted_identity(address, identity, direction))
    }
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> sotto_ratchet::Result<IdentityChange> {
        delegate!(self, s => s.save_identity(address, identity))
    }
    fn get_identity(
        &self,
        address: &ProtocolAddress,
    ) -> sotto_ratchet::Result<Option<IdentityKey>> {
        delegate!(self, s => s.get_identity(address))
    }
    fn identity_addresses(&self) -> sotto_ratchet::Result<Vec<ProtocolAddress>> {
        delegate!(self, s => s.identity_addresses())
    }
}

impl PreKeyStore for DeviceStore {
    fn get_pre_key(&self, id: u32) -> sotto_ratchet::Result<Option<PreKeyRecord>> {
        delegate!(self, s => s.get_pre_key(id))
    }
    fn save_pre_key(&mut self, record: PreKeyRecord) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.save_pre_key(record))
    }
    fn remove_pre_key(&mut self, id: u32) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.remove_pre_key(id))
    }
    fn pre_key_ids(&self) -> sotto_ratchet::Result<Vec<u32>> {
        delegate!(self, s => s.pre_key_ids())
    }
}

impl SignedPreKeyStore for DeviceStore {
    fn get_signed_pre_key(&self, id: u32) -> sotto_ratchet::Result<Option<SignedPreKeyRecord>> {
        delegate!(self, s => s.get_signed_pre_key(id))
    }
    fn save_signed_pre_key(&mut self, record: SignedPreKeyRecord) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.save_signed_pre_key(record))
    }
    fn signed_pre_key_stamps(&self) -> sotto_ratchet::Result<Vec<(u32, u64)>> {
        delegate!(self, s => s.signed_pre_key_stamps())
    }
    fn remove_signed_pre_key(&mut self, id: u32) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.remove_signed_pre_key(id))
    }
}

impl KyberPreKeyStore for DeviceStore {
    fn get_kyber_pre_key(&self, id: u32) -> sotto_ratchet::Result<Option<KyberPreKeyRecord>> {
        delegate!(self, s => s.get_kyber_pre_key(id))
    }
    fn save_kyber_pre_key(
        &mut self,
        record: KyberPreKeyRecord,
        last_resort: bool,
    ) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.save_kyber_pre_key(record, last_resort))
    }
    fn mark_kyber_pre_key_used(&mut self, id: u32) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.mark_kyber_pre_key_used(id))
    }
    fn last_resort_kyber_stamps(&self) -> sotto_ratchet::Result<Vec<(u32, u64)>> {
        delegate!(self, s => s.last_resort_kyber_stamps())
    }
    fn remove_kyber_pre_key(&mut self, id: u32) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.remove_kyber_pre_key(id))
    }
}

impl SessionStore for DeviceStore {
    fn load_session(
        &self,
        address: &ProtocolAddress,
    ) -> sotto_ratchet::Result<Option<SessionRecord>> {
        delegate!(self, s => s.load_session(address))
    }
    fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> sotto_ratchet::Result<()> {
        delegate!(self, s => s.store_session(address, record))
    }
}
