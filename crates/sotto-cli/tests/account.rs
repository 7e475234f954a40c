#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto register`, `sotto call/answer` with devices kept on disk, `sotto trust` and
//! `sotto config`, run as a user would: the real binary against `sotto server` on loopback.

mod common;

use sotto_server::tls::ClientTls;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{decrypted_failed, sotto, start_server, text, SpawnGuarded};
use sotto_call::messages::{Body, CallId, CallMessage};
use sotto_call::sealed::Device;
use sotto_ratchet::{IdentityKeyPair, StoreKeySource};

const SERVER_ID: &str = "account.test";

/// One call: bob answers (script), alice calls (script), both hang up; returns both outputs.
/// Without `url`, each side uses the server its device registered with.
fn call_round(home: &Path, url: Option<&str>, rec: &Path) -> (String, String) {
    let server: Vec<&str> = match url {
        Some(u) => vec!["--server", u, "--server-id", SERVER_ID],
        None => vec![],
    };
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
    let bob = sotto(home)
        .args(["answer", "--user", "bob"])
        .args(&server)
        .arg("--script")
        .arg(&bscript)
        .arg("--record")
        .arg(rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    std::thread::sleep(Duration::from_millis(500));
    let a = sotto(home)
        .args(["call", "bob", "--user", "alice"])
        .args(&server)
        .arg("--script")
        .arg(&ascript)
        .arg("--record")
        .arg(rec)
        .output()
        .unwrap();
    let b = bob.wait_with_output().unwrap();
    (text(&a), text(&b))
}

fn safety_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("safety number: "))
        .unwrap_or_else(|| panic!("no safety number in:\n{out}"))
        .to_string()
}

#[test]
fn registered_devices_call_across_restarts_and_a_changed_key_needs_trust() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (mut server, url) = start_server(dir.path(), SERVER_ID);
    let reg = |user: &str| {
        sotto(&home)
            .args([
                "register",
                "--user",
                user,
                "--server",
                &url,
                "--server-id",
                SERVER_ID,
            ])
            .output()
            .unwrap()
    };
    for user in ["alice", "bob"] {
        let o = reg(user);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("registered {user} (device 1)")),
            "{}",
            text(&o)
        );
    }
    // a second registration is refused, clearly, and the device is untouched
    let store = home.join("alice/store.bin");
    let before = std::fs::read(&store).unwrap();
    let o = reg("alice");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already holds the registered device alice"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&store).unwrap(), before);
    // a passphrase that is empty or too short is refused before anything is made
    for (pass, why) in [("", "set but empty"), ("short", "MIN_PASSPHRASE_BYTES")] {
        let o = sotto(&home)
            .env("SOTTO_PASSPHRASE", pass)
            .args(["register", "--user", "dora", "--server", &url])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains(why), "{}", text(&o));
        assert!(!home.join("dora/store.bin").exists());
    }
    // calling without a device says how to get one
    let o = sotto(&home)
        .args([
            "call", "bob", "--user", "carol", "--server", &url, "--script", "-",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("sotto register"), "{}", text(&o));

    // two calls, each by fresh processes: the same identities and sessions come back from disk
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let mut numbers = Vec::new();
    for round in 0..2 {
        // the second round relies on the server recorded at registration
        let (a, b) = call_round(&home, (round == 0).then_some(url.as_str()), &rec);
        assert!(
            a.contains("state: connected") && b.contains("peer hung up"),
            "round {round}\n{a}\n{b}"
        );
        assert!(
            decrypted_failed(&a).0 > 0 && decrypted_failed(&b).0 > 0,
            "round {round}\n{a}\n{b}"
        );
        assert!(!a.contains("warning") && !b.contains("warning"), "{a}\n{b}");
        let (sa, sb) = (safety_line(&a), safety_line(&b));
        assert_eq!(sa, sb, "both sides compute the same number");
        numbers.push(sa);
    }
    assert_eq!(numbers[0], numbers[1], "identities survive restarts");

    // bob's device 1 gets a new key (his second device re-keys it: a reinstall, or a server
    // substituting keys); the new key then signs in and rings alice
    let rt = tokio::runtime::Runtime::new().unwrap();
    let new_kp = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    let (newbob, mut nbev) = rt.block_on(async {
        let key = home.join("bob/store.key");
        let (bob, _ev) = Device::load(
            &home.join("bob"),
            StoreKeySource::KeyFile(&key),
            Some((&url, SERVER_ID)),
            &ClientTls::default(),
        )
        .await
        .unwrap();
        let second = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
        bob.client().add_device(2, &second.public()).await.unwrap();
        let (bob2, _ev2) = sotto_server::Client::connect(sotto_server::ClientConfig::new(
            &url, SERVER_ID, "bob", 2, second,
        ))
        .await
        .unwrap();
        assert!(bob2.add_device(1, &new_kp.public()).await.unwrap());
        Device::register_with_identity(
            &url,
            &ClientTls::default(),
            SERVER_ID,
            "bob",
            new_kp.clone(),
        )
        .await
        .unwrap()
    });
    let ascript = rec.join("alice-wait.txt");
    std::fs::write(&ascript, "wait 2500\nquit\n").unwrap();
    let alice = sotto(&home)
        .args([
            "answer",
            "--user",
            "alice",
            "--server",
            &url,
            "--server-id",
            SERVER_ID,
        ])
        .arg("--script")
        .arg(&ascript)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    std::thread::sleep(Duration::from_millis(700));
    rt.block_on(async {
        let m = CallMessage::new(CallId::random(), 0, Body::Ringing);
        newbob.send("alice", 1, &m).await.unwrap();
    });
    let a = text(&alice.wait_with_output().unwrap());
    assert!(
        a.contains("warning: bob's identity key changed"),
        "alice is warned:\n{a}"
    );
    assert!(!a.contains("incoming call"), "and does not ring:\n{a}");
    // alice calling bob: she still holds a session with his old key, which would carry the
    // offer to a device that cannot open it; she is warned and nothing is sent
    let cscript = rec.join("alice-call.txt");
    std::fs::write(&cscript, "wait 2000\nquit\n").unwrap();
    let o = sotto(&home)
        .args(["call", "bob", "--user", "alice", "--server", &url])
        .args(["--server-id", SERVER_ID, "--script"])
        .arg(&cscript)
        .output()
        .unwrap();
    let c = text(&o);
    assert!(
        c.contains("warning: bob's identity key changed"),
        "the caller is warned:\n{c}"
    );
    assert!(
        c.contains("failed: bob's identity key changed"),
        "the call ends there:\n{c}"
    );
    let got = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(800), newbob.next(&mut nbev)).await
    });
    assert!(got.is_err(), "nothing reached bob's new key: {got:?}");

    // trust: without a number it shows what to compare and changes nothing; a wrong number is
    // refused; the right one is accepted and kept
    let trust = |extra: &[&str]| {
        sotto(&home)
            .args([
                "trust",
                "bob",
                "--user",
                "alice",
                "--server",
                &url,
                "--server-id",
                SERVER_ID,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = trust(&[]);
    assert!(!o.status.success(), "{}", text(&o));
    let shown = text(&o);
    let offered = shown
        .lines()
        .find_map(|l| l.strip_prefix("the server now offers:"))
        .unwrap_or_else(|| panic!("{shown}"))
        .trim()
        .to_string();
    assert_ne!(offered, numbers[0]);
    assert!(
        shown.contains(&numbers[0]),
        "the old number is shown too:\n{shown}"
    );
    let mut wrong = offered.clone().into_bytes();
    wrong[0] = if wrong[0] == b'1' { b'2' } else { b'1' };
    let o = trust(&["--safety-number", std::str::from_utf8(&wrong).unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not match"), "{}", text(&o));
    let o = trust(&["--safety-number", &offered.replace(' ', "")]);
    assert!(o.status.success(), "{}", text(&o));
    let o = trust(&[]);
    assert!(o.status.success(), "already trusted:\n{}", text(&o));
    assert!(text(&o).contains("already trusted"), "{}", text(&o));
    // (that the new key's messages then open, both ways and across restarts, is
    // sotto-call's tests/device_persist.rs)
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn config_precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("client.toml");
    std::fs::write(
        &file,
        "server = \"ws://file:1\"\nuser = \"filed\"\nrelay_only = true\nrelay = \"ws://relay-file:2\"\nca = \"file-ca.pem\"\n",
    )
    .unwrap();
    let show = |env: &[(&str, &std::ffi::OsStr)], flags: &[&std::ffi::OsStr]| {
        let o = sotto(&home)
            .envs(env.iter().copied())
            .arg("config")
            .args(flags)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let cfg = ("SOTTO_CLIENT_CONFIG", file.as_os_str());
    let line = |out: &str, key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in\n{out}"))
            .to_string()
    };
    // defaults only
    let out = show(&[], &[]);
    assert_eq!(
        line(&out, "server"),
        "server = ws://127.0.0.1:8443  (default)"
    );
    assert_eq!(line(&out, "relay_only"), "relay_only = false  (default)");
    assert_eq!(
        line(&out, "ca"),
        "ca = (none: the system's roots only)  (default)"
    );
    // the file over the defaults
    let out = show(&[cfg], &[]);
    assert_eq!(line(&out, "server"), "server = ws://file:1  (file)");
    assert_eq!(line(&out, "server_id"), "server_id = file:1  (default)");
    assert_eq!(line(&out, "user"), "user = filed  (file)");
    assert_eq!(line(&out, "relay_only"), "relay_only = true  (file)");
    assert_eq!(line(&out, "ca"), "ca = file-ca.pem  (file)");
    // the environment over the file
    let out = show(
        &[
            cfg,
            ("SOTTO_SERVER", os("ws://env:3")),
            ("SOTTO_RELAY_ONLY", os("false")),
            ("SOTTO_CA", os("env-ca.pem")),
        ],
        &[],
    );
    assert_eq!(line(&out, "ca"), "ca = env-ca.pem  (environment)");
    assert_eq!(line(&out, "server"), "server = ws://env:3  (environment)");
    assert_eq!(
        line(&out, "relay_only"),
        "relay_only = false  (environment)"
    );
    assert_eq!(line(&out, "relay"), "relay = ws://relay-file:2  (file)");
    // the flag over the environment
    let out = show(
        &[("SOTTO_SERVER", os("ws://env:3"))],
        &[
            os("--server"),
            os("ws://flag:4"),
            os("--relay-only"),
            os("--config"),
            file.as_os_str(),
            os("--ca"),
            os("flag-ca.pem"),
        ],
    );
    assert_eq!(line(&out, "ca"), "ca = flag-ca.pem  (flag)");
    assert_eq!(line(&out, "server"), "server = ws://flag:4  (flag)");
    assert_eq!(line(&out, "relay_only"), "relay_only = true  (flag)");
    assert_eq!(line(&out, "user"), "user = filed  (file)");
    // a bad file is a clear error naming it, and so is an unknown key
    std::fs::write(&file, "server = \n").unwrap();
    let o = sotto(&home)
        .env("SOTTO_CLIENT_CONFIG", &file)
        .arg("config")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("client.toml"), "{}", text(&o));
    std::fs::write(&file, "sever = \"ws://typo:1\"\n").unwrap();
    let o = sotto(&home)
        .env("SOTTO_CLIENT_CONFIG", &file)
        .arg("config")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("sever"), "{}", text(&o));
}
