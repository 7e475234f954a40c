#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A group call driven entirely through the `sotto` binary: `sotto server` and `sotto relay` as
//! separate processes, three registered devices; Alice calls Bob through the relay, then invites
//! Carol with the script's `invite` step (the call screen's `i` key), Carol answers, everyone
//! decrypts everyone, Alice hangs up.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{
    decrypted_failed, relay_secret_file, sotto, start_relay, start_server_for_relay, text,
    SpawnGuarded,
};

const SERVER_ID: &str = "group.test";

#[test]
fn a_third_member_is_invited_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let secret = relay_secret_file(dir.path());
    let (mut relay, relay_url) = start_relay(&secret, &[]);
    let (mut server, url) = start_server_for_relay(dir.path(), SERVER_ID, &relay_url, &secret);
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
            .spawn_guarded()
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
