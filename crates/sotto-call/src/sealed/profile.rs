//! A persistent device's directory: its public profile (`device.json`), the file names inside,
//! the directory's lock (one process per device) and the atomic profile write.

use std::path::{Path, PathBuf};

use super::SealedError;

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
pub(super) struct Persisted {
    pub(super) dir: PathBuf,
    pub(super) profile: DeviceProfile,
    /// The directory's lock, held while the device is open.
    pub(super) _lock: std::fs::File,
}

/// Creates `dir` (and parents), readable by its owner only.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), SealedError> {
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
pub(super) fn write_profile(dir: &Path, p: &DeviceProfile) -> Result<(), SealedError> {
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
pub(super) fn lock_dir(dir: &Path) -> Result<std::fs::File, SealedError> {
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
