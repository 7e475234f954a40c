#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto` over `wss://`: `sotto server` and `sotto relay` with `--tls-cert`/`--tls-key` of a CA
//! made at test time, devices that trust it with `--ca` (and refuse the servers without it), a
//! call through the relay, and certificates renewed with SIGHUP while serving.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    decrypted_failed, relay_secret_file, sotto, start, start_relay, text, tls_args, ChildGuard,
    SpawnGuarded,
};
use sotto_server::tls::{connect, ClientTls};
use sotto_testkit::tls::TestCa;

const SERVER_ID: &str = "wss.test";

fn hangup(c: &ChildGuard) {
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(c.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The DER of the certificate a new TLS connection to `url` is served.
fn served_leaf(url: &str, tls: &ClientTls) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = connect(url, tls).await.unwrap();
        s.peer_certificate().unwrap().to_vec()
    })
}

/// Waits (up to 10 s) until `url` serves `der`: a SIGHUP is handled asynchronously.
fn wait_for_leaf(url: &str, tls: &ClientTls, der: &[u8]) {
    let t0 = Instant::now();
    while served_leaf(url, tls) != der {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{url}: still the old certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn register(home: &Path, user: &str, url: &str, ca: Option<&Path>) -> std::process::Output {
    let mut c = sotto(home);
    c.args([
        "register",
        "--user",
        user,
        "--server",
        url,
        "--server-id",
        SERVER_ID,
    ]);
    if let Some(ca) = ca {
        c.arg("--ca").arg(ca);
    }
    c.output().unwrap()
}

#[test]
fn a_call_goes_through_wss_signaling_and_relay_of_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let ca = TestCa::new("cli");
    let ca_file = ca.write_ca(dir.path(), "ca");
    let (server_files, _) = ca.write_server_cert(dir.path(), "server");
    let (relay_files, _) = ca.write_server_cert(dir.path(), "relay");
    let db = dir.path().join("s.db");
    let mut server_args = vec![
        "server".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--server-id".into(),
        SERVER_ID.into(),
        "--db".into(),
        db.display().to_string(),
    ];
    let secret = relay_secret_file(dir.path());
    let relay_tls = tls_args(&relay_files);
    let args: Vec<&str> = relay_tls.iter().map(String::as_str).collect();
    let (_relay, relay_url) = start_relay(&secret, &args);
    assert!(relay_url.starts_with("wss://127.0.0.1:"), "{relay_url}");
    server_args.extend(tls_args(&server_files));
    server_args.extend([
        "--relay".into(),
        format!("{relay_url}={}", secret.display()),
    ]);
    let args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let (_server, addr) = start(&args, "listening on");
    let url = format!("wss://{addr}");

    // without the CA: the server's certificate is refused, and nothing is registered
    let o = register(&home, "alice", &url, None);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("server certificate refused"),
        "{}",
        text(&o)
    );
    // with it (resuming the registration cut short)
    for user in ["alice", "bob"] {
        let o = register(&home, user, &url, Some(&ca_file));
        assert!(o.status.success(), "{}", text(&o));
    }
    // the CA also comes from the environment, and `sotto config` says where from
    let o = sotto(&home)
        .env("SOTTO_CA", &ca_file)
        .args(["config", "--user", "alice"])
        .output()
        .unwrap();
    assert!(
        text(&o).contains(&format!("ca = {}  (environment)", ca_file.display())),
        "{}",
        text(&o)
    );

    // plain ws:// to a host that is not loopback is refused before anything is dialled
    let o = sotto(&home)
        .args([
            "call",
            "bob",
            "--user",
            "alice",
            "--relay",
            "ws://192.0.2.1:8444",
        ])
        .args(["--script", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("plain ws:// is allowed only to a loopback host"),
        "{}",
        text(&o)
    );

    // a call through the wss relay: both devices verify it with the CA they were given
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let bscript = rec.join("bob.txt");
    std::fs::write(
        &bscript,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let ascript = rec.join("alice.txt");
    std::fs::write(
        &ascript,
        "wait-state connected\nwait 1500\nhangup\nwait 300\n",
    )
    .unwrap();
    let bob = sotto(&home)
        .args(["answer", "--user", "bob", "--relay", &relay_url])
        .arg("--ca")
        .arg(&ca_file)
        .arg("--script")
        .arg(&bscript)
        .arg("--record")
        .arg(&rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    std::thread::sleep(Duration::from_millis(500));
    // alice records nothing (no --record): nothing received lands in her working directory
    let cwd = dir.path().join("alice-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let a = sotto(&home)
        .args(["call", "bob", "--user", "alice", "--relay", &relay_url])
        .arg("--ca")
        .arg(&ca_file)
        .arg("--script")
        .arg(&ascript)
        .current_dir(&cwd)
        .output()
        .unwrap();
    let a = text(&a);
    let b = text(&bob.wait_with_output().unwrap());
    assert!(
        a.contains("state: connected") && b.contains("peer hung up"),
        "--- alice\n{a}\n--- bob\n{b}"
    );
    let (decrypted, failed) = decrypted_failed(&a);
    assert!(decrypted > 0 && failed == 0, "--- alice\n{a}");
    // recording is opt-in, and what bob asked to record only he can read (issue 13: call and
    // answer wrote world-readable recordings into the working directory by default)
    let written: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(
        written.is_empty(),
        "alice recorded without --record: {written:?}"
    );
    for ext in ["ivf", "ogg"] {
        let f = rec.join(format!("bob-received.{ext}"));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

#[test]
fn sighup_renews_the_certificates_of_server_and_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (TestCa::new("a"), TestCa::new("b"));
    let both = ClientTls::with_ca_files([
        ca_a.write_ca(dir.path(), "ca-a"),
        ca_b.write_ca(dir.path(), "ca-b"),
    ])
    .unwrap();
    let (server_files, server_a) = ca_a.write_server_cert(dir.path(), "server");
    let (relay_files, relay_a) = ca_a.write_server_cert(dir.path(), "relay");
    let db = dir.path().join("s.db");
    let mut server_args = vec![
        "server".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--db".into(),
        db.display().to_string(),
    ];
    server_args.extend(tls_args(&server_files));
    let args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let (server, addr) = start(&args, "listening on");
    let url = format!("wss://{addr}");
    let relay_tls = tls_args(&relay_files);
    let args: Vec<&str> = relay_tls.iter().map(String::as_str).collect();
    let (relay, relay_url) = start_relay(&relay_secret_file(dir.path()), &args);
    assert_eq!(served_leaf(&url, &both), server_a.der);
    assert_eq!(served_leaf(&relay_url, &both), relay_a.der);

    // a broken renewal: SIGHUP keeps the certificate in use (and the process)
    std::fs::write(&server_files.cert_chain, "half a certificate").unwrap();
    hangup(&server);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(served_leaf(&url, &both), server_a.der);

    let (server_b, relay_b) = (ca_b.server_cert(), ca_b.server_cert());
    server_b.write(&server_files);
    relay_b.write(&relay_files);
    hangup(&server);
    hangup(&relay);
    wait_for_leaf(&url, &both, &server_b.der);
    wait_for_leaf(&relay_url, &both, &relay_b.der);
    for mut c in [server, relay] {
        assert!(c.try_wait().unwrap().is_none(), "SIGHUP ended a process");
    }
}
