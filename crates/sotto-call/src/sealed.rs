//! Sealed call setup: call messages travel inside the pair's sotto-ratchet session, as the
//! opaque ciphertext of signaling envelopes. The signaling server routes bytes it cannot read;
//! the SDP inside (and so the DTLS fingerprint) is authenticated by the devices' identity keys.
//!
//! Envelope ciphertext = `type (1 byte: 2 = SignalMessage, 3 = PreKeySignalMessage) ‖ message`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sotto_ratchet::{
    decrypt, encrypt, plan_prekey_rotation, process_prekey_bundle, CiphertextMessage, Direction,
    FileStore, Fingerprint, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    InMemoryStore, KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord,
    PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey, SessionRecord, SessionStore,
    SignalMessage, SignedPreKeyRecord, SignedPreKeyStore, StoreKeySource, SIGNED_PREKEY_GRACE_MS,
    SIGNED_PREKEY_ROTATE_AFTER_MS,
};
use sotto_server::client::{FetchedBundle, IdentityStatus};
use sotto_server::protocol::{OneTimePreKey, SignedPreKey, B64};
use sotto_server::{Client, ClientConfig, Envelope, Event, Events};

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
    /// A persistent device's files are missing, malformed or not writable.
    #[error("device: {0}")]
    Device(String),
}

/// Creates `dir` (and parents), readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), SealedError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| SealedError::Device(format!("{}: {e}", dir.display())))
}

/// Reads and checks `dir/device.json`.
///
/// # Errors
/// [`SealedError::Device`] naming the file and the problem.
pub fn read_profile(dir: &Path) -> Result<DeviceProfile, SealedError> {
    let path = dir.join(PROFILE_FILE);
    let bad = |why: String| SealedError::Device(format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            bad("no device here (run `sotto register` first)".into())
        } else {
            bad(e.to_string())
        }
    })?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(bad(format!(
            "{} bytes exceeds MAX_PROFILE_BYTES ({MAX_PROFILE_BYTES})",
            meta.len()
        )));
    }
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let p: DeviceProfile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if p.version != PROFILE_VERSION {
        return Err(bad(format!(
            "version {} (this build reads {PROFILE_VERSION})",
            p.version
        )));
    }
    Ok(p)
}

/// Writes `dir/device.json` atomically (temporary file, fsync, rename).
fn write_profile(dir: &Path, p: &DeviceProfile) -> Result<(), SealedError> {
    use std::io::Write;
    let path = dir.join(PROFILE_FILE);
    let tmp = dir.join(format!("{PROFILE_FILE}.tmp"));
    let bad = |e: std::io::Error| SealedError::Device(format!("{}: {e}", path.display()));
    let mut body = serde_json::to_vec_pretty(p).map_err(|e| SealedError::Device(e.to_string()))?;
    body.push(b'\n');
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp).map_err(bad)?;
    f.write_all(&body).map_err(bad)?;
    f.sync_all().map_err(bad)?;
    std::fs::rename(&tmp, &path).map_err(bad)?;
    // the rename itself must survive a crash
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(bad)?;
    Ok(())
}

/// Takes the device directory's lock file, so that one process at a time uses a device (two
/// would fork its ratchet state: each writes its own sessions over the other's). Held until the
/// returned file is dropped, and released by the OS if the process dies.
fn lock_dir(dir: &Path) -> Result<std::fs::File, SealedError> {
    let path = dir.join(LOCK_FILE);
    let bad = |why: String| SealedError::Device(format!("{}: {why}", path.display()));
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(&path).map_err(|e| bad(e.to_string()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(SealedError::Device(format!(
            "{} is in use by another sotto process (one process per device)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(bad(e.to_string())),
    }
}

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

/// Where a device keeps its ratchet state: in memory (gone with the process: demos, tests) or
/// in an encrypted [`FileStore`] that every change is written through before it is used.
enum DeviceStore {
    Memory(InMemoryStore),
    File(FileStore<rand::rngs::OsRng>),
}

impl DeviceStore {
    /// Runs `f` as one change: on error (or a failed write) the state is put back as it was,
    /// and a file store is written once, at the end.
    fn transaction<T>(
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

/// A persistent device's account facts, kept next to its store as `device.json` (public data
/// only: the identity and every secret live in the encrypted store file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Format version ([`PROFILE_VERSION`]).
    pub version: u32,
    /// Signaling server URL the device registered with.
    pub server: String,
    /// The server identity bound into authentication.
    pub server_id: String,
    /// Account name.
    pub username: String,
    /// Device number.
    pub device_id: u32,
    /// The next one-time prekey id to publish (ids are never reused).
    pub next_prekey_id: u32,
    /// False from the moment the identity is created until the server has the account and its
    /// prekeys: a registration cut short (crash, server down) is resumed by registering again,
    /// with the same identity, and the device cannot be loaded meanwhile.
    #[serde(default = "registered_by_default")]
    pub registered: bool,
}

/// Profiles written before `registered` existed were written after registration.
fn registered_by_default() -> bool {
    true
}

/// Version of `device.json`.
pub const PROFILE_VERSION: u32 = 1;
/// Largest `device.json` read.
pub const MAX_PROFILE_BYTES: u64 = 4096;
/// File names inside a device directory.
pub const PROFILE_FILE: &str = "device.json";
/// The encrypted ratchet store inside a device directory.
pub const STORE_FILE: &str = "store.bin";
/// The lock file inside a device directory (one process per device).
pub const LOCK_FILE: &str = "lock";

/// A persistent device's files.
struct Persisted {
    dir: PathBuf,
    profile: DeviceProfile,
    /// The directory's lock, held while the device is open.
    _lock: std::fs::File,
}

/// A registered device: its identity, its ratchet store and its signaling connection.
pub struct Device {
    username: String,
    device_id: u32,
    identity: IdentityKeyPair,
    store: Mutex<DeviceStore>,
    client: Client,
    /// Envelope ids [`Device::next`] already took (the last [`MAX_SEEN_ENVELOPES`]).
    seen: Mutex<SeenIds>,
    /// Set for a device kept on disk.
    persisted: Option<Mutex<Persisted>>,
    /// The next one-time prekey id to hand out; ranges are reserved under this lock (and, for a
    /// persistent device, recorded in `device.json`) before any key is made.
    next_prekey: Mutex<u32>,
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

/// Where a registration failed: before the server created (or signed us in to) the account,
/// or after, while publishing prekeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    SignIn,
    Prekeys,
}

/// What [`Device::refresh_signed_prekeys`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrekeyRefresh {
    /// The signed prekey the server now hands out.
    pub signed_prekey_id: u32,
    /// The last-resort Kyber prekey the server now hands out.
    pub kyber_prekey_id: u32,
    /// Whether a new signed or Kyber prekey was drawn.
    pub rotated: bool,
    /// How many replaced keys were deleted (past their grace period).
    pub removed: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Device {
    /// Creates an identity, registers `username` (device 1) on the server at `url` and publishes
    /// a signed prekey, a last-resort Kyber prekey and [`ONE_TIME_PREKEYS`] one-time prekeys.
    /// The ratchet state lives in memory: the device is gone with the process (demos, tests).
    ///
    /// # Errors
    /// [`SealedError::Signaling`] if the server refuses (e.g. the name is taken).
    pub async fn register(
        url: &str,
        server_id: &str,
        username: &str,
    ) -> Result<(Device, Events), SealedError> {
        Self::register_with_identity(
            url,
            server_id,
            username,
            IdentityKeyPair::generate(&mut rand::rngs::OsRng),
        )
        .await
    }

    /// [`Device::register`] with a given identity: creates the account, or signs in again if the
    /// server already binds `identity` to `username`'s device 1 (in memory, fresh prekeys).
    ///
    /// # Errors
    /// [`SealedError::Signaling`] if the server refuses (the name is bound to another key).
    pub async fn register_with_identity(
        url: &str,
        server_id: &str,
        username: &str,
        identity: IdentityKeyPair,
    ) -> Result<(Device, Events), SealedError> {
        let registration_id = rand::random::<u32>() & 0x3fff;
        let store = DeviceStore::Memory(InMemoryStore::new(identity.clone(), registration_id));
        Self::register_with(url, server_id, username, identity, store, None)
            .await
            .map_err(|(_, e)| e)
    }

    /// Like [`Device::register`], but the device is kept in `dir`: the ratchet state in an
    /// encrypted [`FileStore`] (`store.bin`, key from `key`) that every change is written through,
    /// and the public account facts in `device.json`. [`Device::load`] brings it back in a
    /// later process with its identity, prekeys, sessions and pinned peer identities.
    ///
    /// # Errors
    /// [`SealedError::Device`] if `dir` already holds a device or cannot be written;
    /// [`SealedError::Signaling`] if the server refuses (then the store file is removed again,
    /// since no account was created for its identity).
    pub async fn register_persistent(
        url: &str,
        server_id: &str,
        username: &str,
        dir: &Path,
        key: StoreKeySource<'_>,
    ) -> Result<(Device, Events), SealedError> {
        let store_path = dir.join(STORE_FILE);
        let profile_path = dir.join(PROFILE_FILE);
        create_private_dir(dir)?;
        let dir_lock = lock_dir(dir)?;
        let dir_lock_clone = dir_lock
            .try_clone()
            .map_err(|e| SealedError::Device(format!("{}: {e}", dir.display())))?;
        let device_err = |path: &Path, e: sotto_ratchet::Error| {
            SealedError::Device(format!("{}: {e}", path.display()))
        };
        let resumed = profile_path.exists();
        let profile = if resumed {
            let mut p = read_profile(dir)?;
            if p.registered {
                return Err(SealedError::Device(format!(
                    "{} already holds the registered device {} (delete it to register again)",
                    dir.display(),
                    p.username
                )));
            }
            if p.username != username {
                return Err(SealedError::Device(format!(
                    "{} holds an unfinished registration of {}, not {username}",
                    dir.display(),
                    p.username
                )));
            }
            p.server = url.to_string();
            p.server_id = server_id.to_string();
            p
        } else {
            if store_path.exists() {
                return Err(SealedError::Device(format!(
                    "{} holds a store without {PROFILE_FILE}: not a device this build made",
                    dir.display()
                )));
            }
            DeviceProfile {
                version: PROFILE_VERSION,
                server: url.to_string(),
                server_id: server_id.to_string(),
                username: username.to_string(),
                device_id: 1,
                next_prekey_id: 1,
                registered: false,
            }
        };
        // the intent is on disk before the identity exists, and both before the server hears
        // of it: a crash anywhere leaves an unfinished registration that registering resumes
        write_profile(dir, &profile)?;
        let fresh = !store_path.exists();
        let file = if fresh {
            // a first attempt, or one cut short before its store was written (so the server
            // never saw that identity)
            FileStore::create(
                &store_path,
                key,
                IdentityKeyPair::generate(&mut rand::rngs::OsRng),
                rand::random::<u32>() & 0x3fff,
                rand::rngs::OsRng,
            )
        } else {
            // resume with the identity created last time (the server may already bind it)
            FileStore::open(&store_path, key, rand::rngs::OsRng)
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                if !resumed {
                    let _ = std::fs::remove_file(&profile_path);
                }
                return Err(device_err(&store_path, e));
            }
        };
        let identity = file.identity_key_pair()?;
        let persisted = Persisted {
            dir: dir.to_path_buf(),
            profile,
            _lock: dir_lock,
        };
        // held until any cleanup below is done (the device's own handle goes with it on failure)
        let _held = dir_lock_clone;
        let res = Self::register_with(
            url,
            server_id,
            username,
            identity,
            DeviceStore::File(file),
            Some(persisted),
        )
        .await;
        match res {
            Ok((dev, events)) => {
                // the server has the account and the prekeys: only now is the device usable
                if let Some(p) = &dev.persisted {
                    let mut p = lock(p);
                    p.profile.registered = true;
                    write_profile(&p.dir, &p.profile)?;
                }
                Ok((dev, events))
            }
            // refused at sign-in only: a refusal after the account was created (e.g. of a
            // prekey upload) must not delete the one identity the server now binds
            Err((Stage::SignIn, SealedError::Signaling(sotto_server::Error::Refused { code })))
                if fresh
                    && matches!(
                        code,
                        sotto_server::ErrorCode::UsernameTaken
                            | sotto_server::ErrorCode::IdentityMismatch
                            | sotto_server::ErrorCode::InvalidField
                    ) =>
            {
                // the server said no to this identity: nothing of it is kept
                let _ = std::fs::remove_file(&store_path);
                let _ = std::fs::remove_file(&profile_path);
                Err(SealedError::Signaling(sotto_server::Error::Refused {
                    code,
                }))
            }
            // anything else (server down, cut off mid-way) leaves an unfinished registration
            // that registering again resumes
            Err((_, e)) => Err(e),
        }
    }

    /// Opens the device kept in `dir` by [`Device::register_persistent`] and signs in to its
    /// server (`server` overrides the URL and server identity recorded at registration).
    ///
    /// # Errors
    /// [`SealedError::Device`] for a missing, oversized or malformed `device.json`, or a store
    /// file that does not open (wrong key, modified file: nothing is changed on disk);
    /// [`SealedError::Signaling`] if the server refuses the login.
    pub async fn load(
        dir: &Path,
        key: StoreKeySource<'_>,
        server: Option<(&str, &str)>,
    ) -> Result<(Device, Events), SealedError> {
        let dir_lock = lock_dir(dir)?;
        let profile = read_profile(dir)?;
        if !profile.registered {
            return Err(SealedError::Device(format!(
                "{}: the registration of {} did not finish: register again to resume it",
                dir.display(),
                profile.username
            )));
        }
        let store_path = dir.join(STORE_FILE);
        let file = FileStore::open(&store_path, key, rand::rngs::OsRng)
            .map_err(|e| SealedError::Device(format!("{}: {e}", store_path.display())))?;
        let identity = file.identity_key_pair()?;
        let (url, server_id) = match server {
            Some((u, i)) => (u.to_string(), i.to_string()),
            None => (profile.server.clone(), profile.server_id.clone()),
        };
        let cfg = ClientConfig::new(
            url,
            server_id,
            profile.username.clone(),
            profile.device_id,
            identity.clone(),
        );
        let (client, events) = Client::connect(cfg).await?;
        let dev = Device {
            username: profile.username.clone(),
            device_id: profile.device_id,
            identity,
            store: Mutex::new(DeviceStore::File(file)),
            client,
            seen: Mutex::new(SeenIds::default()),
            next_prekey: Mutex::new(profile.next_prekey_id),
            persisted: Some(Mutex::new(Persisted {
                dir: dir.to_path_buf(),
                profile,
                _lock: dir_lock,
            })),
        };
        // a device that cannot refresh its prekeys now still works with the ones it has
        match dev.refresh_signed_prekeys(SystemTime::now()).await {
            Ok(r) if r.rotated || r.removed > 0 => tracing::info!(
                signed = r.signed_prekey_id,
                kyber = r.kyber_prekey_id,
                removed = r.removed,
                "medium-term prekeys rotated"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("refreshing the signed prekeys failed: {e}"),
        }
        Ok((dev, events))
    }

    async fn register_with(
        url: &str,
        server_id: &str,
        username: &str,
        identity: IdentityKeyPair,
        store: DeviceStore,
        persisted: Option<Persisted>,
    ) -> Result<(Device, Events), (Stage, SealedError)> {
        let device_id = 1;
        let cfg =
            ClientConfig::new(url, server_id, username, device_id, identity.clone()).register();
        let (client, events) = Client::connect(cfg)
            .await
            .map_err(|e| (Stage::SignIn, e.into()))?;
        let next_prekey = persisted.as_ref().map_or(1, |p| p.profile.next_prekey_id);
        let dev = Device {
            username: username.to_string(),
            device_id,
            identity,
            store: Mutex::new(store),
            client,
            seen: Mutex::new(SeenIds::default()),
            persisted: persisted.map(Mutex::new),
            next_prekey: Mutex::new(next_prekey),
        };
        // a fresh store draws signed and Kyber prekey 1; a resumed registration publishes the
        // ones it drew before (the server may already have handed them out)
        let after = |e| (Stage::Prekeys, e);
        dev.refresh_signed_prekeys(SystemTime::now())
            .await
            .map_err(after)?;
        dev.publish_one_time_prekeys().await.map_err(after)?;
        Ok((dev, events))
    }

    /// Keeps the medium-term prekeys fresh (run at every sign-in of a persistent device): if
    /// the current signed prekey or last-resort Kyber prekey is
    /// [`SIGNED_PREKEY_ROTATE_AFTER_MS`] old (or there is none), draws a new one under the next
    /// id and stores it; then publishes the current pair (again, if nothing changed: that also
    /// heals a crash between storing a new pair and publishing it); only once the server has
    /// it, deletes the keys replaced more than [`SIGNED_PREKEY_GRACE_MS`] ago. Replaced keys
    /// are kept until then, so a session start built on an older bundle still opens.
    ///
    /// # Errors
    /// Store or signaling errors; nothing is deleted unless the publication succeeded.
    pub async fn refresh_signed_prekeys(
        &self,
        now: SystemTime,
    ) -> Result<PrekeyRefresh, SealedError> {
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut rng = rand::rngs::OsRng;
        let (signed, kyber, remove_signed, remove_kyber, rotated) = {
            let mut store = lock(&self.store);
            let plan = |keys: &[(u32, u64)]| {
                plan_prekey_rotation(
                    keys,
                    now_ms,
                    SIGNED_PREKEY_ROTATE_AFTER_MS,
                    SIGNED_PREKEY_GRACE_MS,
                )
            };
            let sp = plan(&store.signed_pre_key_stamps()?)?;
            let kp = plan(&store.last_resort_kyber_stamps()?)?;
            let new_signed = sp
                .new_id
                .map(|id| SignedPreKeyRecord::generate(id, now_ms, &self.identity, &mut rng));
            let new_kyber = kp
                .new_id
                .map(|id| KyberPreKeyRecord::generate(id, now_ms, &self.identity, &mut rng));
            let rotated = new_signed.is_some() || new_kyber.is_some();
            // the new pair is stored (one write) before the server can hand it out
            store.transaction(|s| {
                if let Some(r) = new_signed {
                    s.save_signed_pre_key(r)?;
                }
                if let Some(r) = new_kyber {
                    s.save_kyber_pre_key(r, true)?;
                }
                Ok(())
            })?;
            let missing =
                || SealedError::Device("current signed prekey missing from the store".into());
            let signed = store.get_signed_pre_key(sp.current)?.ok_or_else(missing)?;
            let kyber = store.get_kyber_pre_key(kp.current)?.ok_or_else(missing)?;
            (signed, kyber, sp.remove, kp.remove, rotated)
        };
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
        self.client
            .publish_prekeys(Some(spk), Some(kpk), vec![])
            .await?;
        let removed = remove_signed.len() + remove_kyber.len();
        if removed > 0 {
            lock(&self.store).transaction(|s| {
                for id in &remove_signed {
                    s.remove_signed_pre_key(*id)?;
                }
                for id in &remove_kyber {
                    s.remove_kyber_pre_key(*id)?;
                }
                Ok(())
            })?;
        }
        Ok(PrekeyRefresh {
            signed_prekey_id: signed.id,
            kyber_prekey_id: kyber.id,
            rotated,
            removed,
        })
    }

    /// Answers the server's "prekeys low": publishes [`ONE_TIME_PREKEYS`] more one-time
    /// prekeys under ids never used before.
    ///
    /// # Errors
    /// Store or signaling errors.
    pub async fn replenish_prekeys(&self) -> Result<(), SealedError> {
        self.publish_one_time_prekeys().await
    }

    /// Generates [`ONE_TIME_PREKEYS`] one-time prekeys under fresh ids, stores them (and, for a
    /// persistent device, the next id) before anything is published, then publishes them.
    async fn publish_one_time_prekeys(&self) -> Result<(), SealedError> {
        // reserve the range first: whatever happens next, these ids are never handed out again
        let first = {
            let mut next = lock(&self.next_prekey);
            let first = *next;
            let after = first.checked_add(ONE_TIME_PREKEYS).ok_or_else(|| {
                SealedError::Device("one-time prekey ids exhausted (register a new device)".into())
            })?;
            if let Some(p) = &self.persisted {
                let mut p = lock(p);
                let before = p.profile.next_prekey_id;
                p.profile.next_prekey_id = after;
                if let Err(e) = write_profile(&p.dir, &p.profile) {
                    p.profile.next_prekey_id = before;
                    return Err(e);
                }
            }
            *next = after;
            first
        };
        let mut rng = rand::rngs::OsRng;
        let records: Vec<PreKeyRecord> = (first..first + ONE_TIME_PREKEYS)
            .map(|id| PreKeyRecord::generate(id, &mut rng))
            .collect();
        let otpks = records
            .iter()
            .map(|pk| OneTimePreKey {
                id: pk.id,
                public: B64(pk.key_pair.public_key.serialize().to_vec()),
            })
            .collect();
        // one write for the whole batch, before the server can hand any of them out
        lock(&self.store).transaction(|s| {
            for pk in records {
                s.save_pre_key(pk)?;
            }
            Ok(())
        })?;
        self.client.publish_prekeys(None, None, otpks).await?;
        Ok(())
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
        // the pin that survives restarts: the identity stored with an earlier session
        if let Some(pinned) = lock(&self.store).get_identity(&addr)? {
            if pinned != bundle.identity_key {
                return Err(SealedError::IdentityChanged(peer.to_string()));
            }
        }
        let mut rng = rand::rngs::OsRng;
        lock(&self.store).transaction(|s| {
            process_prekey_bundle(&addr, s, &bundle, SystemTime::now(), &mut rng)
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
        // identity, session and used prekeys change together, or not at all
        let plain =
            zeroize::Zeroizing::new(store.transaction(|s| decrypt(&addr, s, &message, &mut rng))?);
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
    pub async fn next(&self, events: &mut Events) -> Option<Result<Incoming, SealedError>> {
        loop {
            let env = match events.next().await? {
                Event::Envelope(env) => env,
                Event::PrekeysLow { remaining } => {
                    tracing::debug!(remaining, "one-time prekeys low: publishing more");
                    if let Err(e) = self.replenish_prekeys().await {
                        tracing::warn!("publishing one-time prekeys failed: {e}");
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

    /// The safety number with `peer` (60 digits in 12 groups), once we know its identity.
    pub fn safety_number(&self, peer: &str, device: u32) -> Option<String> {
        let theirs = lock(&self.store)
            .get_identity(&ProtocolAddress::new(peer, device))
            .ok()??;
        Some(self.safety_number_with(peer, &theirs))
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
            process_prekey_bundle(
                &addr,
                s,
                &offered.bundle,
                SystemTime::now(),
                &mut rand::rngs::OsRng,
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
