#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A group call driven entirely through the `sotto` binary: `sotto server` and `sotto relay` as
//! separate processes, three registered devices; Alice calls Bob through the relay, then invites
//! Carol with the script's `invite` step (the call screen's `i` key), Carol answers, everyone
//! decrypts everyone, Alice hangs up.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");
const SERVER_ID: &str = "group.test";

fn sotto(home: &Path) -> Command {
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[allow(clippy::zombie_processes)] // killed at the end of the test
fn start(args: &[&str], prefix: &str) -> (Child, String) {
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

fn decrypted_failed(out: &str) -> (u64, u64) {
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

#[test]
fn a_third_member_is_invited_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let db = dir.path().join("s.db");
    let (mut server, addr) = start(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            SERVER_ID,
            "--db",
            db.to_str().unwrap(),
        ],
        "listening on",
    );
    let url = format!("ws://{addr}");
    let (mut relay, relay_url) = start(&["relay", "--listen", "127.0.0.1:0"], "relay control on");
    for user in ["alice", "bob", "carol"] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    // bob stays 7 s (past alice leaving), carol until the call ends around her
    let script = |name: &str, body: &str| {
        let p = rec.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let bob_script = script(
        "bob.txt",
        "wait-state incoming\nanswer\nwait-state connected\nwait 7000\nhangup\nwait 500\n",
    );
    let carol_script = script(
        "carol.txt",
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    );
    let answerer = |user: &str, script: &Path| {
        sotto(&home)
            .args(["answer", "--user", user, "--relay", &relay_url, "--script"])
            .arg(script)
            .arg("--record")
            .arg(&rec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let bob = answerer("bob", &bob_script);
    let carol = answerer("carol", &carol_script);
    std::thread::sleep(Duration::from_millis(500));
    let alice_script = rec.join("alice.txt");
    std::fs::write(
        &alice_script,
        "wait-state connected\nwait 1000\ninvite carol\nwait 3000\nhangup\nwait 500\n",
    )
    .unwrap();
    let a = sotto(&home)
        .args([
            "call", "bob", "--user", "alice", "--relay", &relay_url, "--script",
        ])
        .arg(&alice_script)
        .arg("--record")
        .arg(&rec)
        .output()
        .unwrap();
    let a = text(&a);
    let b = text(&bob.wait_with_output().unwrap());
    let c = text(&carol.wait_with_output().unwrap());
    let all = format!("--- alice\n{a}\n--- bob\n{b}\n--- carol\n{c}");
    assert!(a.contains("group: carol invited"), "{all}");
    assert!(b.contains("group: carol joined"), "{all}");
    assert!(c.contains("state: connected"), "{all}");
    for (who, out) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        let (dec, failed) = decrypted_failed(out);
        assert!(dec > 0, "{who} decrypted nothing\n{all}");
        assert_eq!(failed, 0, "{who}\n{all}");
    }
    // alice left first: bob and carol stayed, each drew a fresh key (generation 1) and used it
    assert!(
        b.contains("group: alice left") && c.contains("group: alice left"),
        "{all}"
    );
    for out in [&b, &c] {
        assert!(out.contains("key generation own 1 peer 1"), "{all}");
    }
    // carol wrote one IVF file per remote sender (alice and bob), each with frames after the
    // 32-byte IVF header
    let files: Vec<(String, u64)> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(n, _)| n.starts_with("carol-received") && n.ends_with(".ivf"))
        .collect();
    assert_eq!(files.len(), 2, "carol's files: {files:?}\n{all}");
    assert!(files.iter().all(|(_, len)| *len > 32 + 12), "{files:?}");
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = server.kill();
    let _ = server.wait();
}
