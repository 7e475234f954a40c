//! Helpers shared by the `sotto` binary's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use sotto_call::media::CandidateType;

pub const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

/// A child process (a server, relay or phone) that is killed and reaped when the guard drops,
/// so a test that fails before its own clean-up leaves nothing running. Derefs to the
/// [`Child`]; [`ChildGuard::into_inner`] takes it out for a clean stop.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }

    /// The child, no longer killed on drop (the caller stops or waits for it).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child present until into_inner")
    }

    /// [`Child::wait_with_output`].
    pub fn wait_with_output(self) -> std::io::Result<Output> {
        self.into_inner().wait_with_output()
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child present until into_inner")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until into_inner")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `Command::spawn` whose child is killed when the test ends, however it ends.
pub trait SpawnGuarded {
    fn spawn_guarded(&mut self) -> ChildGuard;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> ChildGuard {
        ChildGuard::new(self.spawn().expect("spawn"))
    }
}

/// `sotto` with a clean client environment (nothing inherited from the developer's shell) and
/// its devices under `home`.
pub fn sotto(home: &Path) -> Command {
    let mut c = Command::new(SOTTO);
    clean_env(&mut c, home);
    c
}

/// [`sotto`] run inside network namespace `ns` (`ip netns exec NS sotto ...`).
pub fn sotto_in(ns: &str, home: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, SOTTO]);
    clean_env(&mut c, home);
    c
}

fn clean_env(c: &mut Command, home: &Path) {
    for v in [
        "SOTTO_SERVER",
        "SOTTO_SERVER_ID",
        "SOTTO_CA",
        "SOTTO_USER",
        "SOTTO_RELAY",
        "SOTTO_ICE",
        "SOTTO_RELAY_ONLY",
        "SOTTO_RECORD",
        "SOTTO_CLIENT_CONFIG",
        "SOTTO_PASSPHRASE",
    ] {
        c.env_remove(v);
    }
    c.env("SOTTO_HOME", home)
        .env("XDG_CONFIG_HOME", home.join("no-config"));
}

/// Standard output then standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts `sotto ARGS` and returns it with the rest of its first stdout line starting with
/// `prefix` (e.g. the address after "listening on"); the rest of its output is drained.
pub fn start(args: &[&str], prefix: &str) -> (ChildGuard, String) {
    let mut c = Command::new(SOTTO);
    c.args(args);
    start_command(c, prefix)
}

/// [`start`] for any command (e.g. `sotto` inside a network namespace).
pub fn start_command(mut c: Command, prefix: &str) -> (ChildGuard, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_guarded();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no '{prefix}' line");
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            // keep draining so the child never blocks on a full pipe
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return (child, rest.trim().to_string());
        }
    }
}

/// `sotto server` on a free loopback port with its database in `dir`, and `extra` flags;
/// returns it and its address.
fn start_server_with(dir: &Path, server_id: &str, extra: &[String]) -> (ChildGuard, String) {
    let db = dir.join("s.db");
    let mut args = vec![
        "server".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--server-id".into(),
        server_id.into(),
        "--db".into(),
        db.display().to_string(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(&args, "listening on")
}

/// `sotto server` on a free loopback port with its database in `dir`; returns it and its URL.
pub fn start_server(dir: &Path, server_id: &str) -> (ChildGuard, String) {
    let (child, addr) = start_server_with(dir, server_id, &[]);
    (child, format!("ws://{addr}"))
}

/// A fresh relay token secret file in `dir` (what a deployment makes with
/// `openssl rand -hex 32`), shared by `sotto relay` and `sotto server`.
pub fn relay_secret_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("relay-token.secret");
    let text = sotto_relay::admission::RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
    std::fs::write(&p, text.as_bytes()).unwrap();
    p
}

/// `sotto relay` on `127.0.0.1:0` with the secret in `secret` and `extra` flags; returns it and
/// its control URL.
pub fn start_relay(secret: &Path, extra: &[&str]) -> (ChildGuard, String) {
    let mut args = vec![
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--token-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start(&args, "relay control on")
}

/// [`start_server`] minting join tokens for the relay at `relay_url` with the secret in
/// `secret`.
pub fn start_server_for_relay(
    dir: &Path,
    server_id: &str,
    relay_url: &str,
    secret: &Path,
) -> (ChildGuard, String) {
    let relay = format!("{relay_url}={}", secret.display());
    let (child, addr) = start_server_with(dir, server_id, &["--relay".into(), relay]);
    (child, format!("ws://{addr}"))
}

/// The numbers after `decrypted` and `failed` in a script run's summary line.
pub fn decrypted_failed(out: &str) -> (u64, u64) {
    let l = out
        .lines()
        .find(|l| l.starts_with("frames sent"))
        .unwrap_or_else(|| panic!("no frame line in:\n{out}"));
    let num = |w: &str| -> u64 {
        l.split_whitespace()
            .skip_while(|x| *x != w)
            .nth(1)
            .unwrap()
            .trim_end_matches(';')
            .parse()
            .unwrap()
    };
    (num("decrypted"), num("failed"))
}

/// What one side printed at the end of a call.
#[derive(Debug)]
pub struct Summary {
    pub out: String,
    /// Local side of the selected pair.
    pub local: Option<CandidateType>,
    /// Remote side (`None`: a candidate webrtc-rs does not report, e.g. learnt from a check).
    pub remote: Option<CandidateType>,
    pub decrypted: u64,
    pub failed: u64,
    /// `(type, address, related address)` of every candidate the peer sent.
    pub remote_candidates: Vec<(CandidateType, String, String)>,
    pub setup_ms: Option<u64>,
}

/// Parses the summary `sotto call/answer --script` prints (panics, naming `who`, if absent).
pub fn summary(who: &str, out: String) -> Summary {
    let frames = out
        .lines()
        .find(|l| l.starts_with("frames sent"))
        .unwrap_or_else(|| panic!("{who}: no summary in:\n{out}"));
    let pair = frames
        .split("; pair ")
        .nth(1)
        .unwrap_or_else(|| panic!("{who}: no pair in {frames}"));
    let (l, r) = pair
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("{who}: no candidate pair selected:\n{out}"));
    let ty = |t: &str| {
        t.parse::<CandidateType>()
            .unwrap_or_else(|_| panic!("{who}: {t:?} is no candidate type in:\n{out}"))
    };
    let (decrypted, failed) = decrypted_failed(&out);
    let remote_candidates = out
        .lines()
        .find_map(|l| l.strip_prefix("remote candidates: "))
        .unwrap_or_default()
        .split(", ")
        .filter(|c| !c.is_empty())
        .map(|c| {
            // "relay 203.0.113.1:49160 raddr 0.0.0.0"
            let w: Vec<&str> = c.split_whitespace().collect();
            let addr = w[1].rsplit_once(':').map_or(w[1], |a| a.0).to_owned();
            (ty(w[0]), addr, w.get(3).copied().unwrap_or("-").to_owned())
        })
        .collect();
    let setup_ms = out
        .lines()
        .find_map(|l| l.strip_prefix("setup time "))
        .and_then(|t| t.trim_end_matches(" ms").parse().ok());
    Summary {
        local: (l != "-").then(|| ty(l)),
        remote: (r != "-").then(|| ty(r)),
        decrypted,
        failed,
        remote_candidates,
        setup_ms,
        out,
    }
}

/// `--tls-cert FILE --tls-key FILE` for `sotto server` / `sotto relay`.
pub fn tls_args(files: &sotto_server::tls::TlsFiles) -> [String; 4] {
    [
        "--tls-cert".into(),
        files.cert_chain.display().to_string(),
        "--tls-key".into(),
        files.private_key.display().to_string(),
    ]
}

/// `sotto server` on a free loopback port speaking `wss://` with a certificate of a CA made
/// now; returns it, its URL and the CA file devices pass with `--ca` / `SOTTO_CA`.
pub fn start_tls_server(dir: &Path, server_id: &str) -> (ChildGuard, String, std::path::PathBuf) {
    let ca = sotto_testkit::tls::TestCa::new("test");
    let ca_file = ca.write_ca(dir, "ca");
    let (files, _) = ca.write_server_cert(dir, "server");
    let (child, addr) = start_server_with(dir, server_id, &tls_args(&files));
    (child, format!("wss://{addr}"), ca_file)
}

/// In network namespaces: bob (in `ns_b`) answers by script, alice (in `ns_a`) calls him with
/// `alice_flags`, media for 3 s, alice hangs up. Both use the account directory `home` and the
/// CA file `ca` and record into `dir`. Returns alice's and bob's output.
#[allow(dead_code)]
pub fn lab_call(
    (ns_a, ns_b): (&str, &str),
    home: &Path,
    ca: &Path,
    dir: &Path,
    alice_flags: &[&str],
) -> (String, String) {
    let bscript = dir.join("bob.txt");
    std::fs::write(
        &bscript,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let ascript = dir.join("alice.txt");
    std::fs::write(
        &ascript,
        "wait-state connected\nwait 3000\nhangup\nwait 300\n",
    )
    .unwrap();
    let bob = sotto_in(ns_b, home)
        .args(["answer", "--user", "bob", "--ca"])
        .arg(ca)
        .arg("--script")
        .arg(&bscript)
        .arg("--record")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    // bob logs in (a call to an offline device waits in its queue anyway)
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let a = sotto_in(ns_a, home)
        .args(["call", "bob", "--user", "alice", "--ca"])
        .arg(ca)
        .args(alice_flags)
        .arg("--script")
        .arg(&ascript)
        .arg("--record")
        .arg(dir)
        .output()
        .unwrap();
    let b = bob.wait_with_output().unwrap();
    (text(&a), text(&b))
}
