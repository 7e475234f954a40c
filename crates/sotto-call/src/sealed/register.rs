//! Registration and sign-in: a new device (in memory or persistent, resuming a registration cut
//! short), and [`Device::load`] of a persistent one.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use sotto_ratchet::{FileStore, IdentityKeyPair, IdentityKeyStore, InMemoryStore, StoreKeySource};
use sotto_server::tls::ClientTls;
use sotto_server::{Client, ClientConfig, Events};

use super::device::{Device, SeenIds};
use super::profile::{
    create_private_dir, lock_dir, read_profile, write_profile, DeviceProfile, Persisted,
    PROFILE_FILE, PROFILE_VERSION, STORE_FILE,
};
use super::store::DeviceStore;
use super::{lock, SealedError};

/// Where a registration failed: before the server created (or signed us in to) the account,
/// or after, while publishing prekeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    SignIn,
    Prekeys,
}

impl Device {
    /// Creates an identity, registers `username` (device 1) on the server at `url` and publishes
    /// a signed prekey, a last-resort Kyber prekey and [`ONE_TIME_PREKEYS`] one-time prekeys.
    /// The ratchet state lives in memory: the device is gone with the process (demos, tests).
    ///
    /// `url` is `wss://`, the server verified against `tls` (kept by the device for the relay
    /// too), or `ws://` to a loopback host.
    ///
    /// # Errors
    /// [`SealedError::Signaling`] if the server refuses (e.g. the name is taken).
    ///
    /// [`ONE_TIME_PREKEYS`]: super::ONE_TIME_PREKEYS
    pub async fn register(
        url: &str,
        tls: &ClientTls,
        server_id: &str,
        username: &str,
    ) -> Result<(Device, Events), SealedError> {
        Self::register_with_identity(
            url,
            tls,
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
        tls: &ClientTls,
        server_id: &str,
        username: &str,
        identity: IdentityKeyPair,
    ) -> Result<(Device, Events), SealedError> {
        let registration_id = rand::random::<u32>() & 0x3fff;
        let store = DeviceStore::Memory(InMemoryStore::new(identity.clone(), registration_id));
        Self::register_with(url, tls, server_id, username, identity, store, None)
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
        tls: &ClientTls,
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
            tls,
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
    /// server (`server` overrides the URL and server identity recorded at registration),
    /// verified against `tls` if the URL is `wss://`.
    ///
    /// # Errors
    /// [`SealedError::Device`] for a missing, oversized or malformed `device.json`, or a store
    /// file that does not open (wrong key, modified file: nothing is changed on disk);
    /// [`SealedError::Signaling`] if the server refuses the login.
    pub async fn load(
        dir: &Path,
        key: StoreKeySource<'_>,
        server: Option<(&str, &str)>,
        tls: &ClientTls,
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
        )
        .with_tls(tls.clone());
        let (client, events) = Client::connect(cfg).await?;
        let dev = Device {
            username: profile.username.clone(),
            device_id: profile.device_id,
            identity,
            store: Mutex::new(DeviceStore::File(file)),
            client,
            tls: tls.clone(),
            seen: Mutex::new(SeenIds::default()),
            next_prekey: Mutex::new(profile.next_prekey_id),
            replenish: Mutex::default(),
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
        tls: &ClientTls,
        server_id: &str,
        username: &str,
        identity: IdentityKeyPair,
        store: DeviceStore,
        persisted: Option<Persisted>,
    ) -> Result<(Device, Events), (Stage, SealedError)> {
        let device_id = 1;
        let cfg = ClientConfig::new(url, server_id, username, device_id, identity.clone())
            .register()
            .with_tls(tls.clone());
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
            tls: tls.clone(),
            seen: Mutex::new(SeenIds::default()),
            persisted: persisted.map(Mutex::new),
            next_prekey: Mutex::new(next_prekey),
            replenish: Mutex::default(),
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
}
