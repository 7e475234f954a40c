//! Client-side settings shared by `register`, `call`, `answer`, `trust` and `config`.
//!
//! Precedence, highest first: command-line flag, `SOTTO_*` environment variable, the TOML file,
//! the default. The file is `--config FILE` (or `SOTTO_CLIENT_CONFIG`); without either,
//! `$XDG_CONFIG_HOME/sotto/client.toml` (`~/.config/sotto/client.toml`) is read if it exists.
//!
//! | flag | environment | file key | default |
//! | --- | --- | --- | --- |
//! | `--config` | `SOTTO_CLIENT_CONFIG` | | `~/.config/sotto/client.toml` if present |
//! | `--server` | `SOTTO_SERVER` | `server` | the registered device's server, else `ws://127.0.0.1:8443` |
//! | `--server-id` | `SOTTO_SERVER_ID` | `server_id` | the registered device's, else host:port of the server URL |
//! | `--ca` | `SOTTO_CA` | `ca` | none: the system's CA roots only |
//! | `--user` | `SOTTO_USER` | `user` | (required) |
//! | `--home` | `SOTTO_HOME` | `home` | `$XDG_DATA_HOME/sotto` (`~/.local/share/sotto`) |
//! | `--relay` | `SOTTO_RELAY` | `relay` (a URL, or `auto`: the server places each call) | none: peer to peer |
//! | `--ice` (repeatable) | `SOTTO_ICE` (comma-separated) | `ice` (string or list) | the signaling server's STUN/TURN servers |
//! | `--relay-only` | `SOTTO_RELAY_ONLY` | `relay_only` | false |
//! | `--record` | `SOTTO_RECORD` | `record` | none: nothing received is written to disk |
//!
//! Servers (signaling and relay) are `wss://`, verified against the system's CA roots plus the
//! certificates in the `ca` PEM file (a private CA); there is no way to skip verification.
//! Plain `ws://` is refused unless the host is loopback (127.0.0.0/8, `::1`, `localhost`).
//!
//! The store passphrase is never read from a file or a flag: `SOTTO_PASSPHRASE` (Argon2id), or
//! else the 32-byte key file `store.key` created next to the store at registration.

use std::path::{Path, PathBuf};

use sotto_call::engine::RelayChoice;
use sotto_server::tls::ClientTls;

use crate::CliError;

/// Largest client config file read.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Default signaling server.
pub const DEFAULT_SERVER: &str = "ws://127.0.0.1:8443";

/// Flags every client command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// TOML file with defaults for these flags.
    #[arg(long, env = "SOTTO_CLIENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Signaling server URL [default: ws://127.0.0.1:8443].
    #[arg(long, env = "SOTTO_SERVER")]
    pub server: Option<String>,
    /// The server's identity bound into authentication [default: host:port of --server].
    #[arg(long, env = "SOTTO_SERVER_ID")]
    pub server_id: Option<String>,
    /// PEM file of extra CA certificates (e.g. a private CA) that wss:// servers (signaling
    /// and relay) are verified against, besides the system's roots.
    #[arg(long, env = "SOTTO_CA")]
    pub ca: Option<PathBuf>,
    /// Our account name.
    #[arg(long, env = "SOTTO_USER")]
    pub user: Option<String>,
    /// Where devices are kept (one directory per account) [default: ~/.local/share/sotto].
    #[arg(long, env = "SOTTO_HOME")]
    pub home: Option<PathBuf>,
    /// Send media through this sotto-relay (control URL) instead of peer to peer; `auto`:
    /// through the relay the signaling server places each call at.
    #[arg(long, env = "SOTTO_RELAY")]
    pub relay: Option<String>,
    /// STUN/TURN server URL for ICE (e.g. stun:host:3478, turn:host:3478?transport=udp);
    /// repeat it for several. Replaces the servers the signaling server advertises (the
    /// default); TURN credentials come from the signaling server either way.
    #[arg(long, env = "SOTTO_ICE", value_delimiter = ',')]
    pub ice: Vec<String>,
    /// Use relay (TURN) candidates only.
    #[arg(long, env = "SOTTO_RELAY_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub relay_only: Option<bool>,
    /// Record what we receive and decrypt into this directory (`<user>-received*.ivf/.ogg`,
    /// files readable by the owner only); by default nothing is written.
    #[arg(long, env = "SOTTO_RECORD")]
    pub record: Option<PathBuf>,
}

/// The client config file (every key optional; unknown keys are refused).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    server: Option<String>,
    server_id: Option<String>,
    ca: Option<PathBuf>,
    user: Option<String>,
    home: Option<PathBuf>,
    relay: Option<String>,
    ice: Option<IceList>,
    relay_only: Option<bool>,
    record: Option<PathBuf>,
}

/// `ice` in the file: one URL or a list.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum IceList {
    One(String),
    Many(Vec<String>),
}

impl IceList {
    fn joined(&self) -> String {
        match self {
            IceList::One(u) => u.clone(),
            IceList::Many(v) => v.join(","),
        }
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "file",
            Source::Default => "default",
        })
    }
}

/// Settings after the precedence rules.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub server_id: String,
    /// Extra CA certificates (PEM file) besides the system's roots.
    pub ca: Option<PathBuf>,
    pub user: Option<String>,
    pub home: PathBuf,
    pub relay: Option<RelayChoice>,
    /// STUN/TURN URLs given by the user; empty: the ones the signaling server advertises.
    pub ice: Vec<String>,
    pub relay_only: bool,
    /// Where to record what is received; `None`: nothing is written.
    pub record: Option<PathBuf>,
    /// Whether `server` / `server_id` were given (flag, environment or file) rather than
    /// defaulted: a registered device otherwise uses the server it registered with.
    pub server_given: bool,
    pub server_id_given: bool,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// `(key, value, source)` for `sotto config`, in table order.
    pub shown: Vec<(&'static str, String, Source)>,
}

/// Picks flag/env (clap already put the flag over the environment) over file over default, and
/// says which it was: a clap value equal to the set environment variable is the environment's.
fn pick<T: Clone + ToString>(cli: &Option<T>, env: &str, file: &Option<T>) -> Option<(T, Source)> {
    if let Some(v) = cli {
        let from_env = std::env::var(env).is_ok_and(|e| e == v.to_string());
        return Some((v.clone(), if from_env { Source::Env } else { Source::Flag }));
    }
    file.clone().map(|v| (v, Source::File))
}

fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sotto").join("client.toml"))
}

fn default_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sotto")
}

fn read_file(path: &Path) -> Result<FileSettings, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(path, e))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(CliError::Usage(format!(
            "{}: {} bytes exceeds MAX_CONFIG_BYTES ({MAX_CONFIG_BYTES})",
            path.display(),
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Server identity from a URL: its host:port. For a cluster's list of nodes (comma-separated,
/// as the client takes it), the first node's: one service has one identity, whichever node
/// answers (a cluster whose configured `server_id` differs needs `--server-id`).
pub fn server_id_of(url: &str) -> String {
    let first = url
        .split(',')
        .map(str::trim)
        .find(|u| !u.is_empty())
        .unwrap_or_default();
    first
        .trim_start_matches("ws://")
        .trim_start_matches("wss://")
        .trim_end_matches('/')
        .to_string()
}

impl ClientArgs {
    /// Reads the config file (if any) and applies the precedence rules.
    ///
    /// # Errors
    /// An unreadable, oversized or malformed file (named), or an unknown key in it.
    pub fn resolve(&self) -> Result<Settings, CliError> {
        let (file, config_file) = match &self.config {
            Some(p) => (read_file(p)?, Some(p.clone())),
            None => match default_config_file().filter(|p| p.exists()) {
                Some(p) => (read_file(&p)?, Some(p)),
                None => (FileSettings::default(), None),
            },
        };
        let mut shown = Vec::new();
        let mut show = |k: &'static str, v: String, s: Source| shown.push((k, v, s));

        let (server, s) = pick(&self.server, "SOTTO_SERVER", &file.server)
            .unwrap_or((DEFAULT_SERVER.to_string(), Source::Default));
        let server_given = s != Source::Default;
        show("server", server.clone(), s);
        let (server_id, s) = pick(&self.server_id, "SOTTO_SERVER_ID", &file.server_id)
            .unwrap_or((server_id_of(&server), Source::Default));
        let server_id_given = s != Source::Default;
        show("server_id", server_id.clone(), s);
        let ca = pick(
            &self.ca.as_ref().map(|p| p.display().to_string()),
            "SOTTO_CA",
            &file.ca.as_ref().map(|p| p.display().to_string()),
        );
        show(
            "ca",
            ca.as_ref()
                .map_or("(none: the system's roots only)".into(), |c| c.0.clone()),
            ca.as_ref().map_or(Source::Default, |c| c.1),
        );
        let user = pick(&self.user, "SOTTO_USER", &file.user);
        match &user {
            Some((u, s)) => show("user", u.clone(), *s),
            None => show("user", "(none)".into(), Source::Default),
        }
        let home_pick = pick(
            &self.home.as_ref().map(|p| p.display().to_string()),
            "SOTTO_HOME",
            &file.home.as_ref().map(|p| p.display().to_string()),
        );
        let (home, s) = match home_pick {
            Some((h, s)) => (PathBuf::from(h), s),
            None => (default_home(), Source::Default),
        };
        show("home", home.display().to_string(), s);
        let relay = pick(&self.relay, "SOTTO_RELAY", &file.relay);
        show(
            "relay",
            relay
                .as_ref()
                .map_or("(none: peer to peer)".into(), |r| r.0.clone()),
            relay.as_ref().map_or(Source::Default, |r| r.1),
        );
        let ice_given = (!self.ice.is_empty()).then(|| self.ice.join(","));
        let ice = pick(
            &ice_given,
            "SOTTO_ICE",
            &file.ice.as_ref().map(IceList::joined),
        );
        show(
            "ice",
            ice.as_ref().map_or(
                "(none given: the signaling server's STUN/TURN servers)".into(),
                |r| r.0.clone(),
            ),
            ice.as_ref().map_or(Source::Default, |r| r.1),
        );
        let (relay_only, s) = pick(&self.relay_only, "SOTTO_RELAY_ONLY", &file.relay_only)
            .unwrap_or((false, Source::Default));
        show("relay_only", relay_only.to_string(), s);
        let record_pick = pick(
            &self.record.as_ref().map(|p| p.display().to_string()),
            "SOTTO_RECORD",
            &file.record.as_ref().map(|p| p.display().to_string()),
        );
        let (record, s) = match record_pick {
            Some((r, s)) => (Some(PathBuf::from(r)), s),
            None => (None, Source::Default),
        };
        show(
            "record",
            record
                .as_ref()
                .map_or_else(|| "(off)".into(), |r| r.display().to_string()),
            s,
        );
        Ok(Settings {
            server,
            server_id,
            ca: ca.map(|c| PathBuf::from(c.0)),
            user: user.map(|u| u.0),
            home,
            relay: relay.map(|r| relay_choice(&r.0)),
            ice: ice.map_or_else(Vec::new, |r| {
                r.0.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            relay_only,
            record,
            server_given,
            server_id_given,
            config_file,
            shown,
        })
    }
}

impl Settings {
    /// The account name, or a usage error saying how to give one.
    pub fn user(&self) -> Result<&str, CliError> {
        self.user.as_deref().ok_or_else(|| {
            CliError::Usage(
                "no user: pass --user NAME (or SOTTO_USER, or `user` in the config file)".into(),
            )
        })
    }

    /// The CAs servers are verified against: the system's roots plus the `ca` file's.
    ///
    /// # Errors
    /// The `ca` file cannot be read or holds no usable certificate (named).
    pub fn client_tls(&self) -> Result<ClientTls, CliError> {
        ClientTls::with_ca_files(self.ca.iter()).map_err(|e| CliError::Usage(format!("ca: {e}")))
    }

    /// The directory of `user`'s device.
    pub fn device_dir(&self) -> Result<PathBuf, CliError> {
        let u = self.user()?;
        if u.is_empty()
            || !u
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            || u.starts_with('.')
        {
            return Err(CliError::Usage(format!(
                "user {u:?}: names are [a-z0-9._-], not starting with a dot"
            )));
        }
        Ok(self.home.join(u))
    }

    /// Prints the resolved settings and where each came from.
    pub fn print(&self) {
        match &self.config_file {
            Some(p) => println!("config file: {}", p.display()),
            None => println!("config file: (none)"),
        }
        for (k, v, s) in &self.shown {
            println!("{k} = {v}  ({s})");
        }
    }
}

/// `--relay`: `auto` (the server places each call), or a relay's control URL.
fn relay_choice(text: &str) -> RelayChoice {
    if text == "auto" {
        RelayChoice::Placed
    } else {
        RelayChoice::Url(text.to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn with_file(text: &str, ice: Vec<String>) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.toml");
        std::fs::write(&p, text).unwrap();
        ClientArgs {
            config: Some(p),
            ice,
            ..ClientArgs::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn the_server_id_of_a_list_of_nodes_is_the_first_nodes() {
        assert_eq!(
            server_id_of("wss://s.example.org:443/"),
            "s.example.org:443"
        );
        assert_eq!(server_id_of("ws://127.0.0.1:9000"), "127.0.0.1:9000");
        // before: "a.example.org,wss://b.example.org", an identity no node has
        assert_eq!(
            server_id_of("wss://a.example.org, wss://b.example.org"),
            "a.example.org"
        );
        assert_eq!(server_id_of(" ,wss://b.example.org"), "b.example.org");
    }

    #[test]
    fn ice_urls_default_to_none_given_and_come_as_a_list_or_one_string() {
        if std::env::var_os("SOTTO_ICE").is_some() {
            eprintln!("SOTTO_ICE is set in this environment: precedence test skipped");
            return;
        }
        // none given: the signaling server's servers are used
        assert!(with_file("", vec![]).ice.is_empty());
        assert_eq!(
            with_file(r#"ice = "stun:a:3478""#, vec![]).ice,
            vec!["stun:a:3478"]
        );
        assert_eq!(
            with_file(
                r#"ice = ["stun:a:3478", "turn:a:3478?transport=udp"]"#,
                vec![]
            )
            .ice,
            vec!["stun:a:3478", "turn:a:3478?transport=udp"]
        );
        // repeated flags replace the file's list
        let s = with_file(
            r#"ice = ["stun:a:3478"]"#,
            vec!["stun:b:3478".into(), "turn:b:3478".into()],
        );
        assert_eq!(s.ice, vec!["stun:b:3478", "turn:b:3478"]);
        assert!(s.shown.iter().any(|(k, v, src)| *k == "ice"
            && v == "stun:b:3478,turn:b:3478"
            && *src == Source::Flag));
    }
}
