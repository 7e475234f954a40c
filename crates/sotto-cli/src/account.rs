//! `sotto register`, `sotto trust` and `sotto config`: the device kept on disk.
//!
//! A device lives in `HOME/USER/` (see [`crate::settings`]): `store.bin` (the ratchet state:
//! identity, prekeys, sessions, pinned peer identities; ChaCha20-Poly1305 under the store key),
//! `device.json` (server, account name, device number: public facts) and, unless
//! `SOTTO_PASSPHRASE` is set at registration, `store.key` (32 random bytes, owner-only).

use std::io::Write;
use std::path::{Path, PathBuf};

use sotto_call::sealed::Device;
use sotto_ratchet::StoreKeySource;
use sotto_server::Events;
use zeroize::Zeroizing;

use crate::settings::{ClientArgs, Settings};
use crate::CliError;

/// The environment variable holding the store passphrase (never a flag: flags leak into `ps`).
pub const PASSPHRASE_ENV: &str = "SOTTO_PASSPHRASE";
/// The key file inside a device directory (used when no passphrase is set).
pub const KEY_FILE: &str = "store.key";
/// The shortest passphrase `sotto register` accepts (the store is Argon2id-hardened, but a
/// passphrase shorter than this is guessable anyway).
pub const MIN_PASSPHRASE_BYTES: usize = 8;

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct TrustArgs {
    /// The account whose new identity key to accept.
    pub peer: String,
    /// The safety number you compared with PEER out of band (digits; spaces optional). Without
    /// it, the command shows the number to compare and changes nothing.
    #[arg(long)]
    pub safety_number: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

fn fail(s: impl Into<String>) -> CliError {
    CliError::Usage(s.into())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))
}

/// The passphrase from the environment, if set. Set but empty is an error, not "no
/// passphrase": falling back to a key file would silently change how the store is protected.
fn passphrase() -> Result<Option<Zeroizing<Vec<u8>>>, CliError> {
    match std::env::var_os(PASSPHRASE_ENV) {
        None => Ok(None),
        Some(p) if p.is_empty() => Err(fail(format!(
            "{PASSPHRASE_ENV} is set but empty: unset it to use a key file, or give a passphrase"
        ))),
        Some(p) => Ok(Some(Zeroizing::new(p.into_encoded_bytes()))),
    }
}

/// The server a device signs in to: the one given (flag, environment or config file), else the
/// one it registered with. The server identity follows the URL: the registered one when the
/// URL is the registered one, else derived from the URL, unless given explicitly.
fn device_server(st: &Settings, profile: &sotto_call::sealed::DeviceProfile) -> (String, String) {
    let url = if st.server_given {
        st.server.clone()
    } else {
        profile.server.clone()
    };
    let id = if st.server_id_given {
        st.server_id.clone()
    } else if url == profile.server {
        profile.server_id.clone()
    } else {
        crate::settings::server_id_of(&url)
    };
    (url, id)
}

/// Writes 32 random bytes to `path`, owner-only, refusing to overwrite.
fn create_key_file(path: &Path) -> Result<(), CliError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| CliError::io(path, e))?;
    let key = Zeroizing::new(rand::random::<[u8; 32]>());
    f.write_all(key.as_ref())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::io(path, e))
}

/// Opens the device `sotto register` created for the configured user and signs in.
///
/// # Errors
/// No device (with the command that creates one), a store that does not open (wrong passphrase
/// or key file, modified file), or the server refusing the login.
pub async fn load_device(st: &Settings) -> Result<(Device, Events), CliError> {
    let dir = st.device_dir()?;
    // the server the device registered with, unless one was given
    let profile = sotto_call::sealed::read_profile(&dir)
        .map_err(|e| fail(format!("{}: {e}", st.user().unwrap_or_default())))?;
    let (url, id) = device_server(st, &profile);
    let server = Some((url.as_str(), id.as_str()));
    let tls = st.client_tls()?;
    let res = match passphrase()? {
        Some(p) => Device::load(&dir, StoreKeySource::Passphrase(&p), server, &tls).await,
        None => {
            let key = dir.join(KEY_FILE);
            if !key.exists() && dir.join(sotto_call::sealed::PROFILE_FILE).exists() {
                return Err(fail(format!(
                    "{}: no key file; this device was registered with a passphrase: set {PASSPHRASE_ENV}",
                    dir.display()
                )));
            }
            Device::load(&dir, StoreKeySource::KeyFile(&key), server, &tls).await
        }
    };
    res.map_err(|e| fail(format!("{}: {e}", st.user().unwrap_or_default())))
}

pub fn register(a: RegisterArgs) -> Result<(), CliError> {
    let st = a.client.resolve()?;
    let user = st.user()?.to_string();
    let dir = st.device_dir()?;
    let tls = st.client_tls()?;
    runtime()?.block_on(async {
        let pass = passphrase()?;
        if let Some(p) = &pass {
            if p.len() < MIN_PASSPHRASE_BYTES {
                return Err(fail(format!(
                    "{PASSPHRASE_ENV} is {} bytes; MIN_PASSPHRASE_BYTES is {MIN_PASSPHRASE_BYTES}",
                    p.len()
                )));
            }
        }
        // a registration cut short (crash, server down) is resumed; a finished one is refused
        let unfinished = match sotto_call::sealed::read_profile(&dir) {
            Ok(p) if p.registered => {
                return Err(fail(format!(
                    "{} already holds the registered device {} (delete the directory to register again)",
                    dir.display(),
                    p.username
                )));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        let key_path: PathBuf = dir.join(KEY_FILE);
        let mut created_key = false;
        let key = match &pass {
            Some(p) => StoreKeySource::Passphrase(p),
            None => {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    b.mode(0o700);
                }
                b.create(&dir).map_err(|e| CliError::io(&dir, e))?;
                if !key_path.exists() {
                    if unfinished {
                        return Err(fail(format!(
                            "{}: unfinished registration made with a passphrase: set {PASSPHRASE_ENV} to resume it",
                            dir.display()
                        )));
                    }
                    create_key_file(&key_path)?;
                    created_key = true;
                }
                StoreKeySource::KeyFile(&key_path)
            }
        };
        let res =
            Device::register_persistent(&st.server, &tls, &st.server_id, &user, &dir, key).await;
        let (dev, _events) = match res {
            Ok(d) => d,
            Err(e) => {
                // only a key this run made, and only if no store uses it: another process
                // registering into the same directory may be between reading the key it made
                // and writing its store
                if created_key && !dir.join(sotto_call::sealed::STORE_FILE).exists() {
                    let _ = std::fs::remove_file(&key_path);
                }
                let resumable = sotto_call::sealed::read_profile(&dir)
                    .map(|p| !p.registered)
                    .unwrap_or(false);
                return Err(fail(if resumable {
                    format!(
                        "register {user}: {e}; the registration did not finish: run `sotto register` again to resume it"
                    )
                } else {
                    format!("register {user}: {e}")
                }));
            }
        };
        println!(
            "registered {user} (device {}) on {} (server id {})",
            dev.device_id(),
            st.server,
            st.server_id
        );
        println!("identity key: {}", hex::encode(dev.identity_key().serialize()));
        println!(
            "device kept in {} ({})",
            dir.display(),
            if pass.is_some() {
                format!("store encrypted under {PASSPHRASE_ENV}")
            } else {
                format!("store key in {KEY_FILE}")
            }
        );
        Ok(())
    })
}

/// Digits only, so "12345 67890 ..." and "1234567890..." compare equal.
fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// What a user compares before trusting `peer`'s identity: the number trusted until now (if
/// any) and the one the server's device listing offers now (reading it uses up no prekey).
pub struct IdentityNumbers {
    pub trusted: Option<String>,
    pub offered: String,
}

/// The safety numbers to compare for `peer` (device 1).
pub async fn identity_numbers(dev: &Device, peer: &str) -> Result<IdentityNumbers, CliError> {
    let trusted = dev.safety_number(peer, 1);
    let listed = dev
        .listed_safety_number(peer, 1)
        .await
        .map_err(|e| fail(format!("{peer}: {e}")))?;
    let Some(offered) = listed else {
        return Err(fail(format!("{peer}: the server lists no device 1")));
    };
    Ok(IdentityNumbers { trusted, offered })
}

/// Trusts `peer`'s offered identity key if `given` (what the user compared with the peer) is
/// its safety number and the key did not change again meanwhile; returns the number trusted.
/// The one trust path: `sotto trust` and the call screen both use it.
pub async fn trust_compared(dev: &Device, peer: &str, given: &str) -> Result<String, CliError> {
    let listed = identity_numbers(dev, peer).await?.offered;
    if digits(given) != digits(&listed) {
        return Err(fail(format!(
            "the safety number you gave does not match the key the server offers for {peer}: nothing changed"
        )));
    }
    // trusting needs the bundle the new session starts from; its key must be the one whose
    // number the user compared
    let offer = dev
        .offered_identity(peer, 1)
        .await
        .map_err(|e| fail(format!("{peer}: {e}")))?;
    let offered = offer.safety_number.clone();
    if offered != listed {
        return Err(fail(format!(
            "the server's key for {peer} changed again meanwhile: nothing changed; compare again"
        )));
    }
    dev.trust_identity(offer)
        .map_err(|e| fail(format!("{peer}: {e}")))?;
    Ok(offered)
}

pub fn trust(a: TrustArgs) -> Result<(), CliError> {
    let st = a.client.resolve()?;
    runtime()?.block_on(async {
        let (dev, _events) = load_device(&st).await?;
        let IdentityNumbers { trusted, offered } = identity_numbers(&dev, &a.peer).await?;
        if trusted.as_deref() == Some(offered.as_str()) {
            println!("{}'s identity key is the one already trusted", a.peer);
            println!("safety number: {offered}");
            return Ok(());
        }
        let Some(given) = &a.safety_number else {
            match &trusted {
                Some(c) => println!("trusted until now: {c}"),
                None => println!("no identity trusted for {} yet", a.peer),
            }
            println!("the server now offers:  {offered}");
            // no ready-to-paste command: the number must come from comparing with the peer
            println!(
                "compare it with the number {} sees, in person or over a channel you trust; if they match, run\n  sotto trust {} --safety-number \"<the number you both see>\"",
                a.peer, a.peer
            );
            return Err(fail("nothing changed: no --safety-number given"));
        };
        let offered = trust_compared(&dev, &a.peer, given).await?;
        println!("trusted {}'s new identity key; safety number {offered}", a.peer);
        Ok(())
    })
}

pub fn config(a: ConfigArgs) -> Result<(), CliError> {
    let st = a.client.resolve()?;
    st.print();
    if st.user.is_some() {
        let dir = st.device_dir()?;
        println!("device directory: {}", dir.display());
        match sotto_call::sealed::read_profile(&dir) {
            Ok(p) => {
                let (url, id) = device_server(&st, &p);
                println!(
                    "device: {} (device {}), registered on {} (server id {}){}",
                    p.username,
                    p.device_id,
                    p.server,
                    p.server_id,
                    if p.registered {
                        ""
                    } else {
                        ", registration unfinished"
                    }
                );
                println!("signs in to: {url} (server id {id})");
            }
            Err(_) => println!("device: none registered here"),
        }
    }
    Ok(())
}
