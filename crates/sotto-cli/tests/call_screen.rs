#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Drives the interactive call screen through its keys in a real terminal (tmux) while the
//! other side answers by script: ringing → connected → muted → switched → ended.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_server, SpawnGuarded};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is required (apt-get install tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_screen(session: &str, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if pane.contains(needle) {
            return pane;
        }
        if t0.elapsed() > Duration::from_secs(40) {
            panic!("screen never showed {needle:?}:\n{pane}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn call_screen_keys_drive_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let sotto = env!("CARGO_BIN_EXE_sotto");
    let (mut server, url) = start_server(dir.path(), "screen.test");
    let home = dir.path().join("home");
    for user in ["alice", "bob"] {
        let out = Command::new(sotto)
            .args(["register", "--server", &url, "--server-id", "screen.test"])
            .args(["--user", user, "--home"])
            .arg(&home)
            .output()
            .unwrap();
        assert!(out.status.success(), "register {user}: {out:?}");
    }
    let script = dir.path().join("bob.txt");
    std::fs::write(
        &script,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let mut bob = Command::new(sotto)
        .args([
            "answer",
            "--server",
            &url,
            "--server-id",
            "screen.test",
            "--user",
            "bob",
            "--script",
        ])
        .arg(&script)
        .arg("--home")
        .arg(&home)
        .arg("--record")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_guarded();
    std::thread::sleep(Duration::from_millis(500));
    let session = format!("sotto-test-{}", std::process::id());
    let cmd = format!(
        "{sotto} call bob --server {url} --server-id screen.test --user alice --record {} --home {}",
        dir.path().display(),
        home.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "110",
        "-y",
        "30",
        &cmd,
    ]);
    let guard = scopeguard(session.clone());

    wait_screen(&session, "state: connected");
    let pane = wait_screen(&session, "frames decrypted");
    assert!(pane.contains("safety number: "), "{pane}");
    tmux(&["send-keys", "-t", &session, "m"]);
    wait_screen(&session, "me: audio MUTED");
    tmux(&["send-keys", "-t", &session, "s"]);
    wait_screen(&session, "source camera2");
    // the invite prompt: typed name shown, Enter sends; a peer-to-peer call cannot grow, so
    // the engine's refusal appears in the event log (and the call goes on)
    tmux(&["send-keys", "-t", &session, "i"]);
    tmux(&["send-keys", "-t", &session, "-l", "carol"]);
    wait_screen(&session, "invite (through the relay): carol_");
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_screen(&session, "invite needs a connected call through a relay");
    // a typed name that is not an account name is not sent: the bar says why
    tmux(&["send-keys", "-t", &session, "i"]);
    tmux(&["send-keys", "-t", &session, "-l", "../Carol"]);
    wait_screen(&session, "invite (through the relay): ../Carol_");
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_screen(&session, "not invited: \"../Carol\" is not an account name");
    tmux(&["send-keys", "-t", &session, "i"]);
    wait_screen(&session, "invite (through the relay): _");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    wait_screen(&session, "[i]nvite");
    tmux(&["send-keys", "-t", &session, "h"]);
    // the event log's "state: ended" (a notice) can be drawn a frame before the header's end
    // reason (the status): wait for the header itself (CI failed here under load on 27bd5cf)
    wait_screen(&session, "state: ended: hung up");
    tmux(&["send-keys", "-t", &session, "q"]);
    drop(guard);

    let out = bob.wait_with_output_timeout();
    assert!(
        out.contains("state: connected") && out.contains("peer hung up"),
        "bob saw:\n{out}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}
fn scopeguard(s: String) -> Session {
    Session(s)
}

trait WaitOut {
    fn wait_with_output_timeout(&mut self) -> String;
}
impl WaitOut for std::process::Child {
    fn wait_with_output_timeout(&mut self) -> String {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.kill();
        let mut s = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut s);
        }
        s
    }
}
