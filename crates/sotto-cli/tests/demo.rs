#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Runs `sotto demo` exactly as the README says and checks its report and its media files.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sotto_demo_runs_and_reports_a_clean_encrypted_call() {
    let out = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["demo", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(took < Duration::from_secs(60), "demo took {took:?}");
    for needle in [
        "bob's device rings",
        "safety numbers equal on both sides: yes",
        "0 mismatched",
        "0 carried a 16-byte window",
        "end: alice \"peer hung up\", bob \"hung up\"",
        "none contained plaintext",
        "carol is in the call: three participants through the relay",
        "under a key generation never sent to her (carol decrypted 0)",
        "demo OK",
    ] {
        assert!(text.contains(needle), "report lacks {needle:?}:\n{text}");
    }
    // per participant: decrypted > 0 and failed == 0, key generation 1 on both sides
    for who in ["alice", "bob"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(who) && l.contains("host"))
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        let decrypted: u64 = cols[3].parse().unwrap();
        let failed: u64 = cols[4].parse().unwrap();
        assert!(decrypted > 200, "{line}");
        assert_eq!(failed, 0, "{line}");
        assert_eq!(cols[5], "1", "own key generation after rotation: {line}");
        assert_eq!(cols[6], "1", "peer key generation after rotation: {line}");
    }
    // every frame reassembled from the relay's capture parses as SFrame: `sotto frame inspect`
    let line = text
        .lines()
        .find(|l| l.contains("sotto frame inspect --capture"))
        .unwrap();
    let (shown, total) = {
        let w: Vec<&str> = line.split_whitespace().collect();
        (
            w[0].parse::<usize>().unwrap(),
            w[2].parse::<usize>().unwrap(),
        )
    };
    assert!(total > 100 && shown == total, "{line}");
    let capture = line.rsplit(' ').next().unwrap().trim_end_matches(')');
    let inspect = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["frame", "inspect", "--capture", capture])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let itext = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(
        itext.lines().filter(|l| l.starts_with("frame ")).count(),
        total
    );
    assert!(itext.contains("suite AES_128_GCM_SHA256_128") && itext.contains("kid 0x"));
    // the received files decode with ffmpeg (an implementation we did not write)
    for f in [
        "bob-received.ivf",
        "bob-received.ogg",
        "alice-received.ivf",
        "alice-received.ogg",
    ] {
        let p = out.path().join(f);
        let st = Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i"])
            .arg(&p)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg is required (apt-get install ffmpeg)");
        assert!(
            st.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert!(
            std::fs::metadata(&p).unwrap().len() > 1000,
            "{f} is nearly empty"
        );
    }
}
