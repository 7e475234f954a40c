//! Helpers shared by the `sotto` binary's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

/// `sotto` with a clean client environment (nothing inherited from the developer's shell) and
/// its devices under `home`.
pub fn sotto(home: &Path) -> Command {
    let mut c = Command::new(SOTTO);
    for v in [
        "SOTTO_SERVER",
        "SOTTO_SERVER_ID",
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
    c
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
#[allow(clippy::zombie_processes)] // the caller kills or stops it
pub fn start(args: &[&str], prefix: &str) -> (Child, String) {
    let mut child = Command::new(SOTTO)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

/// `sotto server` on a free loopback port with its database in `dir`; returns it and its URL.
pub fn start_server(dir: &Path, server_id: &str) -> (Child, String) {
    let db = dir.join("s.db");
    let (child, addr) = start(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            server_id,
            "--db",
            db.to_str().unwrap(),
        ],
        "listening on",
    );
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
