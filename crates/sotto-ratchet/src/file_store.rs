//! An [`InMemoryStore`] persisted to one file, encrypted at rest with ChaCha20-Poly1305.
//!
//! File layout (all integers big-endian):
//! ```text
//! magic "SOTTORS1" (8) ‖ kdf (1: 0 = 32-byte key file, 1 = Argon2id passphrase)
//! ‖ salt (16) ‖ nonce (12) ‖ ChaCha20-Poly1305(key, nonce, aad = the 37 header bytes,
//!                                             protobuf StoreSnapshot)
//! ```
//! Every mutation rewrites the file: write `<path>.tmp` (mode 0600), fsync, rename over
//! `<path>`, fsync the directory. [`FileStore::transaction`] groups several mutations (a whole
//! decrypt: identity, session and used prekeys) into one write; if the closure or the write
//! fails, the in-memory state goes back to what it was and the file is untouched, so memory and
//! disk never disagree. A file
//! whose tag does not verify (wrong key or any modified byte) is refused with
//! [`Error::StoreTampered`]; the store never falls back to an empty state.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use prost::Message;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::consts::{
    MAX_STORE_FILE_SIZE, STORE_ARGON2_M_COST_KIB, STORE_ARGON2_P_COST, STORE_ARGON2_T_COST,
};
use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kem::KyberKeyPair;
use crate::prekeys::{KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};
use crate::proto::snapshot as snap;
use crate::proto::storage as pb;
use crate::record::SessionRecord;
use crate::store::*;

const MAGIC: &[u8; 8] = b"SOTTORS1";
const KDF_KEY_FILE: u8 = 0;
const KDF_ARGON2ID: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 16 + 12;

/// How the file key is obtained.
pub enum StoreKeySource<'a> {
    /// Argon2id over a passphrase (parameters in `consts`).
    Passphrase(&'a [u8]),
    /// A file holding exactly 32 random bytes.
    KeyFile(&'a Path),
}

/// A persistent, encrypted [`ProtocolStore`].
pub struct FileStore<R: RngCore + CryptoRng> {
    inner: InMemoryStore,
    path: PathBuf,
    kdf: u8,
    salt: [u8; 16],
    key: Zeroizing<[u8; 32]>,
    rng: R,
    /// While a [`FileStore::transaction`] runs: the state from before it, to restore on
    /// failure (mutations are written once, at its end).
    in_transaction: Option<Box<InMemoryStore>>,
}

impl<R: RngCore + CryptoRng> core::fmt::Debug for FileStore<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn io(e: std::io::Error) -> Error {
    Error::StoreIo(e.kind())
}

fn derive_key(source: &StoreKeySource<'_>, salt: &[u8; 16]) -> Result<(u8, Zeroizing<[u8; 32]>)> {
    let mut key = Zeroizing::new([0u8; 32]);
    match source {
        StoreKeySource::Passphrase(p) => {
            let params = argon2::Params::new(
                STORE_ARGON2_M_COST_KIB,
                STORE_ARGON2_T_COST,
                STORE_ARGON2_P_COST,
                Some(32),
            )
            .map_err(|_| Error::InvalidArgument("argon2 parameters"))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p, salt, key.as_mut())
                .map_err(|_| Error::InvalidArgument("argon2 rejected the passphrase"))?;
            Ok((KDF_ARGON2ID, key))
        }
        StoreKeySource::KeyFile(path) => {
            let bytes = Zeroizing::new(fs::read(path).map_err(io)?);
            if bytes.len() != 32 {
                return Err(Error::InvalidArgument(
                    "key file must hold exactly 32 bytes",
                ));
            }
            key.copy_from_slice(&bytes);
            Ok((KDF_KEY_FILE, key))
        }
    }
}

impl<R: RngCore + CryptoRng> FileStore<R> {
    /// Creates a new store file (refuses to overwrite an existing one).
    pub fn create(
        path: impl Into<PathBuf>,
        source: StoreKeySource<'_>,
        identity: IdentityKeyPair,
        registration_id: u32,
        mut rng: R,
    ) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            return Err(Error::InvalidArgument("store file already exists"));
        }
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let (kdf, key) = derive_key(&source, &salt)?;
        let store = Self {
            inner: InMemoryStore::new(identity, registration_id),
            path,
            kdf,
            salt,
            key,
            rng,
            in_transaction: None,
        };
        let mut store = store;
        store.persist()?;
        Ok(store)
    }

    /// Opens an existing store file. A wrong key or a modified file is [`Error::StoreTampered`].
    pub fn open(path: impl Into<PathBuf>, source: StoreKeySource<'_>, rng: R) -> Result<Self> {
        let path = path.into();
        let meta = fs::metadata(&path).map_err(io)?;
        if meta.len() > MAX_STORE_FILE_SIZE as u64 {
            return Err(Error::TooLarge(
                usize::try_from(meta.len()).unwrap_or(usize::MAX),
            ));
        }
        let bytes = fs::read(&path).map_err(io)?;
        if bytes.len() < HEADER_LEN + 16 || &bytes[..8] != MAGIC {
            return Err(Error::StoreFormat("not a sotto store file"));
        }
        let kdf = bytes[8];
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&bytes[9..25]);
        let (expected_kdf, key) = derive_key(&source, &salt)?;
        if kdf != expected_kdf {
            return Err(Error::StoreFormat("store file uses the other kind of key"));
        }
        let (header, ct) = bytes.split_at(HEADER_LEN);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&header[25..37]),
                    Payload {
                        msg: ct,
                        aad: header,
                    },
                )
                .map_err(|_| Error::StoreTampered)?,
        );
        let snapshot = Zeroizing::new(
            snap::StoreSnapshot::decode(plaintext.as_slice())
                .map_err(|_| Error::StoreFormat("snapshot protobuf"))?,
        );
        Ok(Self {
            inner: from_snapshot(&snapshot)?,
            path,
            kdf,
            salt,
            key,
            rng,
            in_transaction: None,
        })
    }

    /// The in-memory view.
    pub fn inner(&self) -> &InMemoryStore {
        &self.inner
    }

    /// Runs `f` as one change of the store: what `f` changes is written to the file once, after
    /// `f` returns `Ok`. If `f` fails, or writing fails, the in-memory state is restored to what
    /// it was before and the file is left as it was. Transactions do not nest: an inner call
    /// joins the outer one.
    ///
    /// # Errors
    /// `f`'s error, or the write's.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let outer = self.begin_transaction();
        // a panic inside is an error for the transaction: memory goes back to where it was and
        // the store is usable again (otherwise the transaction would stay open and every later
        // change would join it and never be written)
        let res = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(res) => res,
            Err(panic) => {
                if outer {
                    let _ = self.finish_transaction::<()>(Err(Error::InvalidArgument("panicked")));
                }
                std::panic::resume_unwind(panic)
            }
        };
        if outer {
            self.finish_transaction(res)
        } else {
            res
        }
    }

    /// Starts a transaction by hand (for callers whose closure cannot borrow the store itself,
    /// e.g. a store wrapped in an enum). Returns false if one is already running: the caller
    /// then joins it and must not finish it. Pair every `true` with
    /// [`FileStore::finish_transaction`].
    pub fn begin_transaction(&mut self) -> bool {
        if self.in_transaction.is_some() {
            return false;
        }
        self.in_transaction = Some(Box::new(self.inner.clone()));
        true
    }

    /// Ends the transaction begun by [`FileStore::begin_transaction`]: on `Ok` writes the file
    /// once, on `Err` (or a failed write) restores the state from before it began.
    ///
    /// # Errors
    /// `res`'s error, or the write's.
    pub fn finish_transaction<T>(&mut self, res: Result<T>) -> Result<T> {
        let Some(before) = self.in_transaction.take() else {
            return res;
        };
        let res = match res {
            Ok(v) => match self.persist() {
                Ok(()) => Ok(v),
                // the new state is in place on disk (only its directory entry may not be
                // durable yet): memory keeps it, so the two never disagree
                Err(Persist::Renamed(e)) => return Err(e),
                Err(Persist::NotWritten(e)) => Err(e),
            },
            Err(e) => Err(e),
        };
        if res.is_err() {
            self.inner = *before;
        }
        res
    }

    /// Applies one mutation of the in-memory store and writes it through (or, inside a
    /// transaction, leaves the write to its end).
    fn change<T>(&mut self, f: impl FnOnce(&mut InMemoryStore) -> Result<T>) -> Result<T> {
        self.transaction(|s| f(&mut s.inner))
    }

    fn persist(&mut self) -> std::result::Result<(), Persist> {
        use Persist::NotWritten;
        let plaintext = Zeroizing::new(Zeroizing::new(to_snapshot(&self.inner)).encode_to_vec());
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(self.kdf);
        header.extend_from_slice(&self.salt);
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        header.extend_from_slice(&nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.key.as_ref()));
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_slice(),
                    aad: &header,
                },
            )
            .map_err(|_| NotWritten(Error::StoreFormat("encryption failed")))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let not_written = |e| NotWritten(io(e));
            let mut f = opts.open(&tmp).map_err(not_written)?;
            f.write_all(&header).map_err(not_written)?;
            f.write_all(&ct).map_err(not_written)?;
            f.sync_all().map_err(not_written)?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| NotWritten(io(e)))?;
        sync_parent(&self.path).map_err(Persist::Renamed)
    }
}

/// Why a write of the store failed: before the new file replaced the old one, or after.
enum Persist {
    /// The old file is untouched.
    NotWritten(Error),
    /// The new file is in place; making the rename durable (directory fsync) failed.
    Renamed(Error),
}

impl From<Persist> for Error {
    fn from(p: Persist) -> Error {
        match p {
            Persist::NotWritten(e) | Persist::Renamed(e) => e,
        }
    }
}

/// Makes a rename inside `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn to_snapshot(s: &InMemoryStore) -> snap::StoreSnapshot {
    let entry = |a: &ProtocolAddress, value: Vec<u8>| snap::AddressEntry {
        name: a.name.clone(),
        device_id: a.device_id,
        value,
    };
    let mut identities: Vec<_> = s
        .identities
        .iter()
        .map(|(a, k)| entry(a, k.serialize().to_vec()))
        .collect();
    identities.sort_by(|x, y| (&x.name, x.device_id).cmp(&(&y.name, y.device_id)));
    let mut sessions: Vec<_> = s
        .sessions
        .iter()
        .map(|(a, r)| entry(a, r.serialize().to_vec()))
        .collect();
    sessions.sort_by(|x, y| (&x.name, x.device_id).cmp(&(&y.name, y.device_id)));
    snap::StoreSnapshot {
        identity_key_pair: s.identity.serialize().to_vec(),
        registration_id: s.registration_id,
        identities,
        pre_keys: s
            .pre_keys
            .values()
            .map(|p| pb::PreKeyRecordStructure {
                id: p.id,
                public_key: p.key_pair.public_key.serialize().to_vec(),
                private_key: p.key_pair.private_key.serialize().to_vec(),
            })
            .collect(),
        signed_pre_keys: s
            .signed_pre_keys
            .values()
            .map(|p| pb::SignedPreKeyRecordStructure {
                id: p.id,
                public_key: p.key_pair.public_key.serialize().to_vec(),
                private_key: p.key_pair.private_key.serialize().to_vec(),
                signature: p.signature.to_vec(),
                timestamp: p.timestamp,
            })
            .collect(),
        kyber_pre_keys: s
            .kyber_pre_keys
            .values()
            .map(|(p, last_resort)| snap::KyberEntry {
                record: Some(pb::SignedPreKeyRecordStructure {
                    id: p.id,
                    public_key: p.key_pair.public_key.serialize(),
                    private_key: p.key_pair.secret_key.serialize().to_vec(),
                    signature: p.signature.to_vec(),
                    timestamp: p.timestamp,
                }),
                last_resort: *last_resort,
            })
            .collect(),
        sessions,
    }
}

fn sig64(v: &[u8]) -> Result<[u8; 64]> {
    v.try_into()
        .map_err(|_| Error::StoreFormat("signature length"))
}

fn pair_from(public: &[u8], private: &[u8]) -> Result<KeyPair> {
    let pair = KeyPair::from_private(PrivateKey::deserialize(private)?);
    if pair.public_key != PublicKey::deserialize(public)? {
        return Err(Error::StoreFormat("key pair mismatch"));
    }
    Ok(pair)
}

fn from_snapshot(s: &snap::StoreSnapshot) -> Result<InMemoryStore> {
    let mut store = InMemoryStore::new(
        IdentityKeyPair::deserialize(&s.identity_key_pair)?,
        s.registration_id,
    );
    for e in &s.identities {
        store.identities.insert(
            ProtocolAddress::new(e.name.clone(), e.device_id),
            IdentityKey::deserialize(&e.value)?,
        );
    }
    let mut pre_keys = BTreeMap::new();
    for p in &s.pre_keys {
        pre_keys.insert(
            p.id,
            PreKeyRecord {
                id: p.id,
                key_pair: pair_from(&p.public_key, &p.private_key)?,
            },
        );
    }
    store.pre_keys = pre_keys;
    for p in &s.signed_pre_keys {
        store.signed_pre_keys.insert(
            p.id,
            SignedPreKeyRecord {
                id: p.id,
                timestamp: p.timestamp,
                key_pair: pair_from(&p.public_key, &p.private_key)?,
                signature: sig64(&p.signature)?,
            },
        );
    }
    for k in &s.kyber_pre_keys {
        let p = k.record.as_ref().ok_or(Error::StoreFormat("kyber entry"))?;
        store.kyber_pre_keys.insert(
            p.id,
            (
                KyberPreKeyRecord {
                    id: p.id,
                    timestamp: p.timestamp,
                    key_pair: KyberKeyPair::from_serialized(&p.public_key, &p.private_key)?,
                    signature: sig64(&p.signature)?,
                },
                k.last_resort,
            ),
        );
    }
    let mut sessions = HashMap::new();
    for e in &s.sessions {
        sessions.insert(
            ProtocolAddress::new(e.name.clone(), e.device_id),
            SessionRecord::deserialize(&e.value)?,
        );
    }
    store.sessions = sessions;
    Ok(store)
}

impl<R: RngCore + CryptoRng> Drop for FileStore<R> {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl<R: RngCore + CryptoRng> IdentityKeyStore for FileStore<R> {
    fn identity_key_pair(&self) -> Result<IdentityKeyPair> {
        self.inner.identity_key_pair()
    }
    fn local_registration_id(&self) -> Result<u32> {
        self.inner.local_registration_id()
    }
    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> Result<bool> {
        self.inner.is_trusted_identity(address, identity, direction)
    }
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange> {
        self.change(|s| s.save_identity(address, identity))
    }
    fn get_identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>> {
        self.inner.get_identity(address)
    }
    fn identity_addresses(&self) -> Result<Vec<ProtocolAddress>> {
        self.inner.identity_addresses()
    }
}

impl<R: RngCore + CryptoRng> PreKeyStore for FileStore<R> {
    fn get_pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>> {
        self.inner.get_pre_key(id)
    }
    fn save_pre_key(&mut self, record: PreKeyRecord) -> Result<()> {
        self.change(|s| s.save_pre_key(record))
    }
    fn remove_pre_key(&mut self, id: u32) -> Result<()> {
        self.change(|s| s.remove_pre_key(id))
    }
    fn pre_key_ids(&self) -> Result<Vec<u32>> {
        self.inner.pre_key_ids()
    }
}

impl<R: RngCore + CryptoRng> SignedPreKeyStore for FileStore<R> {
    fn get_signed_pre_key(&self, id: u32) -> Result<Option<SignedPreKeyRecord>> {
        self.inner.get_signed_pre_key(id)
    }
    fn save_signed_pre_key(&mut self, record: SignedPreKeyRecord) -> Result<()> {
        self.change(|s| s.save_signed_pre_key(record))
    }
    fn signed_pre_key_stamps(&self) -> Result<Vec<(u32, u64)>> {
        self.inner.signed_pre_key_stamps()
    }
    fn remove_signed_pre_key(&mut self, id: u32) -> Result<()> {
        self.change(|s| s.remove_signed_pre_key(id))
    }
}

impl<R: RngCore + CryptoRng> KyberPreKeyStore for FileStore<R> {
    fn get_kyber_pre_key(&self, id: u32) -> Result<Option<KyberPreKeyRecord>> {
        self.inner.get_kyber_pre_key(id)
    }
    fn save_kyber_pre_key(&mut self, record: KyberPreKeyRecord, last_resort: bool) -> Result<()> {
        self.change(|s| s.save_kyber_pre_key(record, last_resort))
    }
    fn mark_kyber_pre_key_used(&mut self, id: u32) -> Result<()> {
        self.change(|s| s.mark_kyber_pre_key_used(id))
    }
    fn last_resort_kyber_stamps(&self) -> Result<Vec<(u32, u64)>> {
        self.inner.last_resort_kyber_stamps()
    }
    fn remove_kyber_pre_key(&mut self, id: u32) -> Result<()> {
        self.change(|s| s.remove_kyber_pre_key(id))
    }
}

impl<R: RngCore + CryptoRng> SessionStore for FileStore<R> {
    fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>> {
        self.inner.load_session(address)
    }
    fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> Result<()> {
        self.change(|s| s.store_session(address, record))
    }
}
