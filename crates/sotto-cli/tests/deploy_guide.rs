#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The deployment guide (`docs/deploy.md`) followed on a "public host" the test builds (root
//! only; skipped with a message otherwise): the shipped files in `deploy/` as they are — the
//! server's TOML, the relay's environment file, coturn's config, the secrets script and the
//! systemd units' command lines — with only what an admin edits changed (paths, the host's
//! address), DNS names of the example (`sotto.example.org`, `relay.example.org`,
//! `turn.example.org`) resolving to the host, and certificates from a CA made here in place of
//! the ACME client's. Two users in homes behind NATs then register and call each other with only
//! the client settings of the guide's last section: peer to peer, and through the relay.
//!
//! What differs from a real host, and why: no systemd (the units' `ExecStart` lines are run as
//! they are, `/usr/local/bin/sotto` being this build's binary); coturn's database in the test
//! directory (`--db`); and coturn's `denied-peer-ip` line for 203.0.113.0/24 is dropped, since
//! the lab's "internet" is that documentation range.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{decrypted_failed, lab_call, sotto_in, start_command, summary, text, ChildGuard};
use sotto_testkit::coturn::listening;
use sotto_testkit::netns::{self, Nat, NatLab, PUBLIC_IP};
use sotto_testkit::tls::TestCa;

const NAMES: [&str; 3] = ["sotto.example.org", "relay.example.org", "turn.example.org"];
/// The public address the shipped files use.
const EXAMPLE_PUBLIC_IP: &str = "203.0.113.10";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `deploy/NAME` with `edits` (from, to) applied, written to `dir/NAME`'s file name.
fn install(dir: &Path, name: &str, edits: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("deploy").join(name)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "deploy/{name} no longer has {from:?}");
        text = text.replace(from, to);
    }
    let out = dir.join(Path::new(name).file_name().unwrap());
    std::fs::write(&out, text).unwrap();
    out
}

/// The `ExecStart=` command line of `deploy/systemd/UNIT`, split on spaces.
fn exec_start(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped).
fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Waits until a TCP socket listens on `PUBLIC_IP:port` or `0.0.0.0:port` in `ns`.
fn wait_tcp(ns: &str, port: u16, what: &str) {
    let t0 = Instant::now();
    while !listening(Some(ns), "-Htln", PUBLIC_IP.into(), port)
        && !listening(Some(ns), "-Htln", [0, 0, 0, 0].into(), port)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what} is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_deployment_guide_serves_calls_peer_to_peer_and_through_the_relay() {
    let test = "the_deployment_guide_serves_calls_peer_to_peer_and_through_the_relay";
    if let Err(why) = netns::available() {
        println!("SKIPPED {test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = NatLab::new(Nat::Cone);
    lab.name_public_host(&NAMES);

    // section 3: the certificate pair the ACME hook installs for the servers and for coturn
    let ca = TestCa::new("deploy");
    let ca_file = ca.write_ca(d, "ca");
    let (tls, _) = ca.write_server_cert_for(d, "tls", &NAMES);
    let p = |p: &Path| p.display().to_string();
    // section 2: the configs installed, with an admin's edits (paths, this host's address)
    let toml = install(
        d,
        "sotto-server.toml",
        &[
            ("/etc/sotto/tls/fullchain.pem", p(&tls.cert_chain)),
            ("/etc/sotto/tls/privkey.pem", p(&tls.private_key)),
            ("/var/lib/sotto/signaling.db", p(&d.join("signaling.db"))),
            (
                "/etc/sotto/relay-token.secret",
                p(&d.join("relay-token.secret")),
            ),
        ],
    );
    let relay_env = install(
        d,
        "sotto-relay.env",
        &[
            ("/etc/sotto/tls/fullchain.pem", p(&tls.cert_chain)),
            ("/etc/sotto/tls/privkey.pem", p(&tls.private_key)),
            (
                "/etc/sotto/relay-token.secret",
                p(&d.join("relay-token.secret")),
            ),
            (
                &format!("SOTTO_RELAY_BIND_IP={EXAMPLE_PUBLIC_IP}"),
                format!("SOTTO_RELAY_BIND_IP={PUBLIC_IP}"),
            ),
        ],
    );
    let coturn_conf = install(
        d,
        "coturn/turnserver.conf",
        &[
            ("/etc/coturn/tls/fullchain.pem", p(&tls.cert_chain)),
            ("/etc/coturn/tls/privkey.pem", p(&tls.private_key)),
            ("denied-peer-ip=203.0.113.0-203.0.113.255\n", String::new()),
            (
                "log-file=stdout",
                format!("log-file={}", p(&d.join("turn.log"))),
            ),
        ],
    );
    // section 4: the secrets script, as shipped
    let o = std::process::Command::new("sh")
        .arg(repo().join("deploy/gen-secrets.sh"))
        .arg("--server-toml")
        .arg(&toml)
        .arg("--coturn-conf")
        .arg(&coturn_conf)
        .arg("--relay-secret")
        .arg(d.join("relay-token.secret"))
        .output()
        .unwrap();
    assert!(o.status.success(), "gen-secrets.sh: {}", text(&o));
    let toml_text = std::fs::read_to_string(&toml).unwrap();
    assert!(!toml_text.contains("@TURN_SECRET@"));

    // section 5: the three units' command lines
    let coturn_cmd = exec_start("coturn.service");
    assert_eq!(coturn_cmd[0], "/usr/bin/turnserver");
    let mut turn = NatLab::command(&lab.public, "turnserver");
    turn.args(coturn_cmd[1..].iter().map(|a| {
        if a == "/etc/turnserver.conf" {
            p(&coturn_conf)
        } else {
            a.clone()
        }
    }))
    .arg(format!("--db={}", p(&d.join("turn.db"))))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _turn = ChildGuard::new(turn.spawn().unwrap());
    wait_tcp(&lab.public, 5349, "coturn (TLS)");

    let server_cmd = exec_start("sotto-server.service");
    assert_eq!(
        server_cmd[..3],
        ["/usr/local/bin/sotto", "server", "--config"]
    );
    let mut server = NatLab::command(&lab.public, common::SOTTO);
    server.arg("server").arg("--config").arg(&toml);
    let (_server, _) = start_command(server, "listening on");

    let relay_cmd = exec_start("sotto-relay.service");
    assert_eq!(relay_cmd, ["/usr/local/bin/sotto", "relay"]);
    let mut relay = NatLab::command(&lab.public, common::SOTTO);
    relay.arg("relay").envs(env_file(&relay_env));
    let (_relay, url) = start_command(relay, "relay control on");
    assert_eq!(url, "wss://relay.example.org:8443");

    // section 7: client settings (server, server id, the CA a private deployment would hand out)
    let home = d.join("home");
    for (ns, user) in [(&lab.home_a, "alice"), (&lab.home_b, "bob")] {
        let o = sotto_in(ns, &home)
            .args([
                "register",
                "--user",
                user,
                "--server",
                "wss://sotto.example.org",
            ])
            .args(["--server-id", "sotto.example.org", "--ca"])
            .arg(&ca_file)
            .output()
            .unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    let homes = (lab.home_a.as_str(), lab.home_b.as_str());
    // peer to peer (the advertised STUN/TURN servers; the cone NATs let a direct pair through)
    let (a, b) = lab_call(homes, &home, &ca_file, d, &[]);
    for (who, out) in [("alice", a), ("bob", b)] {
        let s = summary(who, out);
        assert!(s.decrypted > 20 && s.failed == 0, "{who}:\n{}", s.out);
    }
    // through the relay
    let (a, b) = lab_call(homes, &home, &ca_file, d, &["--relay", &url]);
    for (who, out) in [("alice", &a), ("bob", &b)] {
        let (decrypted, failed) = decrypted_failed(out);
        assert!(decrypted > 20 && failed == 0, "{who}:\n{out}");
    }
    assert!(
        std::fs::read_to_string(d.join("turn.log"))
            .unwrap_or_default()
            .contains("TLS"),
        "coturn did not start its TLS listener as configured"
    );
}
