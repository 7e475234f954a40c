#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The deployment guide's server configuration (`deploy/sotto-server.toml`) loads with the
//! server's own loader ([`ServerArgs::resolve`], what `sotto server --config` runs) and means
//! what the guide says, so the example cannot rot. Its secret files are pointed at temporary
//! files first (the installed paths do not exist here).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_server::cli::{Resolved, ServerArgs};
use sotto_server::config::StoreChoice;
use sotto_server::store::Durability;
use sotto_server::tls::TlsFiles;

fn example_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sotto-server.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `text` with the value of every `secret_file = "..."` line replaced by `path`.
fn with_secret_files(text: &str, path: &Path) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("secret_file") {
                format!("secret_file = {:?}", path.display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without its `[[relays]]` tables.
fn without_relays(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_relays = false;
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            in_relays = t.starts_with("[[relays]]");
        }
        if !in_relays {
            out.push(l);
        }
    }
    out.join("\n")
}

fn resolve(dir: &Path, name: &str, text: &str) -> sotto_server::Result<Resolved> {
    let file: PathBuf = dir.join(name);
    std::fs::write(&file, text).unwrap();
    ServerArgs {
        config: Some(file),
        ..ServerArgs::default()
    }
    .resolve()
}

#[test]
fn the_deployment_example_loads_with_the_servers_loader() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("relay-token.secret");
    std::fs::write(&secret, "c290dG8gZGVwbG95IGV4YW1wbGUgcmVsYXkgc2VjcmV0").unwrap();
    let text = with_secret_files(&example_text(), &secret);

    // everything but [[relays]] must load on any branch
    let r = resolve(dir.path(), "no-relays.toml", &without_relays(&text)).unwrap();
    assert_eq!(r.listen, "0.0.0.0:443");
    match &r.store {
        StoreChoice::Sqlite { db, durability } => {
            assert_eq!(*db, PathBuf::from("/var/lib/sotto/signaling.db"));
            assert_eq!(*durability, Durability::Full);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(r.config.server_id, "sotto.example.org");
    assert_eq!(
        r.config.tls,
        Some(TlsFiles::new(
            "/etc/sotto/tls/fullchain.pem",
            "/etc/sotto/tls/privkey.pem"
        ))
    );
    // the [limits] written out are the defaults, as the file says
    let defaults = sotto_server::Limits::default();
    let l = &r.config.limits;
    assert_eq!(l.max_frame_bytes, defaults.max_frame_bytes);
    assert_eq!(l.max_queued_per_device, defaults.max_queued_per_device);
    assert_eq!(l.envelopes_per_second, defaults.envelopes_per_second);
    assert_eq!(l.envelope_burst, defaults.envelope_burst);
    assert_eq!(
        l.max_connections_per_addr,
        defaults.max_connections_per_addr
    );
    assert_eq!(
        l.max_authenticated_per_addr,
        defaults.max_authenticated_per_addr
    );
    assert_eq!(l.auth_timeout, Duration::from_secs(10));
    assert_eq!(l.auth_timeout, defaults.auth_timeout);
    assert_eq!(l.max_envelope_ttl_secs, defaults.max_envelope_ttl_secs);
    let turn = r.config.turn.as_ref().expect("[turn] configured");
    // the placeholder gen-secrets.sh replaces (the same in deploy/coturn/turnserver.conf)
    assert_eq!(turn.secret, b"@TURN_SECRET@");
    assert_eq!(turn.ttl_secs, 600);
    assert_eq!(turn.uris.len(), 4);
    for scheme in ["stun:", "turn:", "turns:"] {
        assert!(
            turn.uris.iter().any(|u| u.starts_with(scheme)),
            "{scheme} {:?}",
            turn.uris
        );
    }

    // the whole file, [[relays]] included, loads: the relay is the example's
    let full = resolve(dir.path(), "full.toml", &text).unwrap();
    let urls: Vec<&str> = full.config.relays.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, ["wss://relay.example.org:8443"]);
}

#[test]
fn the_coturn_example_shares_the_servers_turn_secret_placeholder() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/coturn/turnserver.conf");
    let conf = std::fs::read_to_string(p).unwrap();
    let lines: Vec<&str> = conf.lines().map(str::trim).collect();
    assert!(lines.contains(&"use-auth-secret"));
    assert!(lines.contains(&"static-auth-secret=@TURN_SECRET@"));
    assert!(example_text().contains("secret = \"@TURN_SECRET@\""));
    // the hardening the guide promises
    for needed in [
        "no-cli",
        "no-multicast-peers",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=::1",
    ] {
        assert!(lines.contains(&needed), "{needed}");
    }
    assert!(!lines
        .iter()
        .any(|l| l.starts_with("web-admin") || l.starts_with("allow-loopback-peers")));
}
