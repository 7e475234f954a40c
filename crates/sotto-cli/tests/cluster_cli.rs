#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto` against a cluster: three `sotto server` processes on one PostgreSQL and one NATS,
//! configured with two `sotto relay` processes. Alice's device knows nodes 0 and 1, Bob's nodes
//! 2 and 1; node 0 is SIGKILLed before the call, so Alice's `sotto call` moves on to node 1 by
//! itself. Both run `--relay auto`: the cluster places the call at one of its relays (the
//! caller's node records the room in PostgreSQL; no device names a relay), and the call through
//! it decrypts both ways with no frame failing. Root only (PostgreSQL is started with
//! `runuser`); skipped with a message otherwise.

mod common;

use std::process::Stdio;

use common::{decrypted_failed, relay_secret_file, sotto, start_relay, text, SpawnGuarded};
use sotto_server::ServerConfig;
use sotto_testkit::cluster::{Cluster, NodeProcess};
use sotto_testkit::server::SERVER_ID;

const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

#[test]
fn sotto_moves_to_the_next_node_and_the_cluster_places_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(cluster) = rt.block_on(Cluster::start(dir.path(), 0, |_| {
        ServerConfig::new(SERVER_ID)
    })) else {
        return;
    };
    // one secret per relay, each in a directory of its own
    let secret_in = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        relay_secret_file(&d)
    };
    let (s1, s2) = (secret_in("r1"), secret_in("r2"));
    let (_r1, url1) = start_relay(&s1, &[]);
    let (_r2, url2) = start_relay(&s2, &[]);
    let mut args = vec!["server".to_string()];
    args.extend(cluster.node_args());
    for (url, secret) in [(&url1, &s1), (&url2, &s2)] {
        args.extend(["--relay".into(), format!("{url}={}", secret.display())]);
    }
    let mut n0 = NodeProcess::spawn(SOTTO, &args);
    let n1 = NodeProcess::spawn(SOTTO, &args);
    let n2 = NodeProcess::spawn(SOTTO, &args);

    let home = dir.path().join("home");
    for (user, nodes) in [
        ("alice", format!("{},{}", n0.url, n1.url)),
        ("bob", format!("{},{}", n2.url, n1.url)),
    ] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &nodes])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    // alice's first node dies without a word
    n0.kill();

    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let bob_script = scripts.join("bob.txt");
    std::fs::write(
        &bob_script,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let alice_script = scripts.join("alice.txt");
    std::fs::write(
        &alice_script,
        "wait-state connected\nwait 3000\nhangup\nwait 500\n",
    )
    .unwrap();
    let bob = sotto(&home)
        .args(["answer", "--user", "bob", "--relay", "auto", "--script"])
        .arg(&bob_script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let a = sotto(&home)
        .args([
            "call", "bob", "--user", "alice", "--relay", "auto", "--script",
        ])
        .arg(&alice_script)
        .output()
        .unwrap();
    let a = text(&a);
    let b = text(&bob.wait_with_output().unwrap());
    let all = format!("--- alice\n{a}\n--- bob\n{b}");
    for (who, out) in [("alice", &a), ("bob", &b)] {
        let (dec, failed) = decrypted_failed(out);
        assert!(dec > 0, "{who} decrypted nothing\n{all}");
        assert_eq!(failed, 0, "{who}\n{all}");
    }
    drop((n1, n2, cluster));
}
