#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The browser call screen's SFrame (`web/sframe.mjs`, WebCrypto) against sotto-frame and against
//! frames sealed by an independent implementation, run in Node (the same WebCrypto API the page's
//! worker uses):
//! - every frame of `sotto-codec-aware-independent.json` opens, follows the ratchet from step 0,
//!   and seals again to the same bytes; the RFC 9605 Appendix C vectors pass;
//! - a differential run: seeded random scenarios (several senders, every suite and codec layout,
//!   ratchets delivered or not, rotations, re-delivered old keys, replays, tampered bytes,
//!   reordering, clocks past the grace period, expiry, removal) are run on sotto-frame's
//!   `KeyRing`, replayed on the JS ring, and every step's outcome (plaintext, key id, counter,
//!   or the error's variant name) must be the same; every frame JS seals is byte-identical to
//!   sotto-frame's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sotto_frame::{CipherSuite, Codec, KeyMaterial, KeyRing, SenderKey};

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn vectors(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../protocol-spec/vectors/sframe")
        .join(name)
}

/// Runs a Node script of web/test and returns its stdout; Node >= 20 is required (`.ci/run`
/// has it for the libsignal interop tests).
fn node(script: &str, arg: &Path) -> String {
    let out = Command::new("node")
        .arg(web().join("test").join(script))
        .arg(arg)
        .output()
        .expect("node (>= 20) is required for the browser's SFrame tests");
    assert!(
        out.status.success(),
        "node {script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn browser_sframe_opens_every_independent_frame_and_the_rfc_vectors() {
    let got: Value = serde_json::from_str(&node(
        "vectors.mjs",
        &vectors("sotto-codec-aware-independent.json"),
    ))
    .unwrap();
    assert_eq!(
        got,
        json!({"opened": 360, "resealed": 360, "ratcheted": 240})
    );
    let got: Value = serde_json::from_str(&node(
        "rfc9605.mjs",
        &vectors("rfc9605-test-vectors-025d568.json"),
    ))
    .unwrap();
    assert_eq!(got, json!({"headers": 289, "sframe": 5, "aes_ctr_hmac": 3}));
}

/// The name of an error's variant (`Replay { .. }` → `Replay`): what the JS side reports as
/// its `code`.
fn variant(e: &sotto_frame::Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

struct Run {
    steps: Vec<Value>,
    expect: Vec<Value>,
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Vp8 => "vp8",
        Codec::Opus => "opus",
        _ => "full",
    }
}

/// A random encoded frame for `codec`: VP8 key frames (bit 0 clear) and delta frames, Opus
/// TOC bytes, sometimes shorter than the clear bytes (refused by both).
fn random_frame(rng: &mut StdRng, codec: Codec) -> Vec<u8> {
    let len = if rng.gen_bool(0.05) {
        rng.gen_range(0..4)
    } else {
        rng.gen_range(10..300)
    };
    let mut f: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    if codec == Codec::Vp8 && !f.is_empty() && rng.gen_bool(0.3) {
        f[0] &= 0xfe; // a key frame: 10 clear bytes
    }
    f
}

fn scenario(suite: CipherSuite, seed: u64, len: usize) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut now_ms: u64 = 0;
    let mut ring = KeyRing::new(suite);
    let mut run = Run {
        steps: vec![json!({"op": "ring", "suite": suite.id()})],
        expect: vec![json!({"ok": ""})],
    };
    let ids = [0u64, 1, 7, 300, (1 << 56) - 1];
    let mut senders: Vec<SenderKey> = ids
        .iter()
        .map(|&id| {
            let key: Vec<u8> = (0..suite.nh()).map(|_| rng.gen()).collect();
            SenderKey::new(suite, id, &key).unwrap()
        })
        .collect();
    let mut history: Vec<KeyMaterial> = Vec::new();
    let mut wires: Vec<(Codec, Vec<u8>, Vec<u8>)> = Vec::new();

    fn hexs(b: &[u8]) -> String {
        hex::encode(b)
    }
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let add = |ring: &mut KeyRing, run: &mut Run, m: &KeyMaterial, now_ms: u64| {
        run.steps
            .push(json!({"op": "add", "material": hexs(&m.to_bytes()), "now": now_ms}));
        run.expect.push(match ring.add_key(m, at(now_ms)) {
            Ok(u) => json!({"ok": format!("{u:?}")}),
            Err(e) => json!({"err": variant(&e)}),
        });
    };
    let decrypt =
        |ring: &mut KeyRing, run: &mut Run, codec: Codec, md: &[u8], w: &[u8], now_ms: u64| {
            run.steps.push(
                json!({"op": "decrypt", "codec": codec_name(codec), "wire": hexs(w),
            "metadata": hexs(md), "now": now_ms}),
            );
            run.expect
                .push(match ring.decrypt(codec, md, w, at(now_ms)) {
                    Ok(d) => json!({"ok": format!("{}/{}/{}/{}/{}", d.id.sender, d.id.generation,
                d.id.step, d.ctr, hexs(&d.frame))}),
                    Err(e) => json!({"err": variant(&e)}),
                });
        };
    // everyone's first key is delivered
    for s in &senders {
        let m = s.material();
        add(&mut ring, &mut run, &m, now_ms);
        history.push(m);
    }
    // the replay window's edge: after counter 129, counter 1 is the oldest inside the window
    // (129 - 128 = 1 is out, 2 is in)
    let mut edge = Vec::new();
    for _ in 0..130 {
        let (m, ctr) = (senders[0].material(), senders[0].next_counter());
        let w = senders[0].encrypt(Codec::Full, &[], b"edge").unwrap();
        run.steps.push(
            json!({"op": "seal", "material": hexs(&m.to_bytes()), "ctr": ctr,
            "codec": "full", "frame": hexs(b"edge"), "metadata": ""}),
        );
        run.expect.push(json!({"ok": hexs(&w)}));
        edge.push(w);
    }
    for i in [129, 0, 1, 2, 2, 128] {
        decrypt(&mut ring, &mut run, Codec::Full, &[], &edge[i], now_ms);
    }
    while run.steps.len() < len {
        let who = rng.gen_range(0..senders.len());
        match rng.gen_range(0..100) {
            // a frame: sealed by both implementations, then decrypted by both rings
            0..=39 => {
                let codec = [Codec::Full, Codec::Vp8, Codec::Opus][rng.gen_range(0..3)];
                let frame = random_frame(&mut rng, codec);
                let md: Vec<u8> = if rng.gen_bool(0.2) {
                    (0..rng.gen_range(1..9)).map(|_| rng.gen()).collect()
                } else {
                    Vec::new()
                };
                let s = &mut senders[who];
                let (m, ctr) = (s.material(), s.next_counter());
                let sealed = s.encrypt(codec, &md, &frame);
                run.steps.push(
                    json!({"op": "seal", "material": hexs(&m.to_bytes()), "ctr": ctr,
                    "codec": codec_name(codec), "frame": hexs(&frame), "metadata": hexs(&md)}),
                );
                match sealed {
                    Ok(w) => {
                        run.expect.push(json!({"ok": hexs(&w)}));
                        decrypt(&mut ring, &mut run, codec, &md, &w, now_ms);
                        wires.push((codec, md, w));
                    }
                    Err(e) => run.expect.push(json!({"err": variant(&e)})),
                }
            }
            // the sender's current key reaches us (after ratchets: an Advanced step)
            40..=49 => {
                let m = senders[who].material();
                add(&mut ring, &mut run, &m, now_ms);
                history.push(m);
            }
            // someone joined: the sender ratchets, the step is not delivered
            // (now and then several joins at once: more steps than a receiver derives ahead)
            50..=57 => {
                let n = if rng.gen_bool(0.1) { 7 } else { 1 };
                for _ in 0..n {
                    senders[who].ratchet().unwrap();
                }
            }
            // someone left: a fresh generation, usually delivered
            60..=62 => {
                let key: Vec<u8> = (0..suite.nh()).map(|_| rng.gen()).collect();
                senders[who].rotate(&key).unwrap();
                if rng.gen_bool(0.7) {
                    let m = senders[who].material();
                    add(&mut ring, &mut run, &m, now_ms);
                    history.push(m);
                }
            }
            // a burst of rotations of which only the last is delivered (the 4-bit generation
            // field wraps: 8 or more generations apart replaces or is refused)
            58..=59 => {
                for _ in 0..rng.gen_range(2..13) {
                    let key: Vec<u8> = (0..suite.nh()).map(|_| rng.gen()).collect();
                    senders[who].rotate(&key).unwrap();
                }
                let m = senders[who].material();
                add(&mut ring, &mut run, &m, now_ms);
                history.push(m);
            }
            // a frame under an older key of this sender (a member still on a superseded step
            // or generation, e.g. before it saw the join), with counters of its own
            63..=68 => {
                let old: Vec<&KeyMaterial> =
                    history.iter().filter(|m| m.id.sender == ids[who]).collect();
                if old.is_empty() {
                    continue;
                }
                let m = old[rng.gen_range(0..old.len())].clone();
                let ctr = 1_000_000 + run.steps.len() as u64;
                let mut late = SenderKey::resume(&m, ctr).unwrap();
                let frame = random_frame(&mut rng, Codec::Opus);
                let sealed = late.encrypt(Codec::Opus, &[], &frame);
                run.steps.push(
                    json!({"op": "seal", "material": hexs(&m.to_bytes()), "ctr": ctr,
                    "codec": "opus", "frame": hexs(&frame), "metadata": ""}),
                );
                match sealed {
                    Ok(w) => {
                        run.expect.push(json!({"ok": hexs(&w)}));
                        decrypt(&mut ring, &mut run, Codec::Opus, &[], &w, now_ms);
                        wires.push((Codec::Opus, Vec::new(), w));
                    }
                    Err(e) => run.expect.push(json!({"err": variant(&e)})),
                }
            }
            // a replay, or an older frame arriving late
            69..=76 if !wires.is_empty() => {
                let from = wires.len().saturating_sub(24);
                let (c, md, w) = wires[rng.gen_range(from..wires.len())].clone();
                decrypt(&mut ring, &mut run, c, &md, &w, now_ms);
            }
            // a tampered frame: any byte (clear codec bytes, header, ciphertext, tag)
            77..=84 if !wires.is_empty() => {
                let (c, md, mut w) = wires[rng.gen_range(0..wires.len())].clone();
                let i = rng.gen_range(0..w.len());
                w[i] ^= 1 << rng.gen_range(0..8);
                decrypt(&mut ring, &mut run, c, &md, &w, now_ms);
            }
            // old material delivered again
            85..=89 if !history.is_empty() => {
                let m = history[rng.gen_range(0..history.len())].clone();
                add(&mut ring, &mut run, &m, now_ms);
            }
            // the clock moves (sometimes past the 5 s grace period)
            90..=95 => now_ms += rng.gen_range(0..4000),
            96..=97 => {
                ring.expire(at(now_ms));
                run.steps.push(json!({"op": "expire", "now": now_ms}));
                run.expect.push(json!({"ok": ""}));
            }
            98..=99 => {
                let id = ids[who];
                ring.remove_sender(id);
                run.steps
                    .push(json!({"op": "remove", "sender": id.to_string()}));
                run.expect.push(json!({"ok": ""}));
            }
            _ => {}
        }
    }
    run
}

#[test]
fn browser_sframe_ring_matches_sotto_frame_step_for_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut steps, mut outcomes) = (0, std::collections::BTreeMap::<String, usize>::new());
    for id in 1..=5u16 {
        let suite = CipherSuite::from_id(id).unwrap();
        for seed in 0..2u64 {
            let run = scenario(suite, u64::from(id) * 1000 + seed, 650);
            let file = dir.path().join(format!("s{id}-{seed}.json"));
            std::fs::write(&file, serde_json::to_vec(&run.steps).unwrap()).unwrap();
            let got: Vec<Value> = serde_json::from_str(&node("replay.mjs", &file)).unwrap();
            assert_eq!(
                got.len(),
                run.expect.len(),
                "suite {id} seed {seed}: step count"
            );
            for (i, (g, e)) in got.iter().zip(&run.expect).enumerate() {
                assert_eq!(
                    g, e,
                    "suite {id} seed {seed} step {i}: {}\nJS gave {g}, sotto-frame {e}",
                    run.steps[i]
                );
                let kind = match (e.get("err"), run.steps[i]["op"].as_str()) {
                    (Some(err), _) => format!("err {}", err.as_str().unwrap_or("?")),
                    (None, Some(op)) => format!("ok {op}"),
                    (None, None) => "?".into(),
                };
                *outcomes.entry(kind).or_default() += 1;
            }
            steps += got.len();
        }
    }
    println!("{steps} steps compared: {outcomes:?}");
    // the scenarios must reach the interesting outcomes, or the comparison proves little
    for kind in [
        "ok decrypt",
        "ok seal",
        "err Replay",
        "err AuthenticationFailed",
        "err UnknownKey",
        "err StaleGeneration",
        "err RatchetTooFar",
        "err CodecFrameTooShort",
    ] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 0,
            "no {kind:?} in {outcomes:?}"
        );
    }
}

/// A minimal HTTP/1.1 server for the Chromium test: serves web/ (ES modules as
/// `text/javascript`, which module workers require) and the vector files, and hands the body
/// of `POST /result` to the test.
fn serve_for_chromium() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let (status, ctype, body): (&str, &str, Vec<u8>) =
                    if method == "POST" && path == "/result" {
                        let mut b = vec![0; len];
                        reader.read_exact(&mut b).unwrap();
                        let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
                        ("200 OK", "text/plain", Vec::new())
                    } else {
                        let file = match path {
                            "/" => Some(web().join("test/chromium.html")),
                            "/chromium.mjs" | "/worker.mjs" | "/check_vectors.mjs" => {
                                Some(web().join("test").join(&path[1..]))
                            }
                            "/sframe.mjs" => Some(web().join("sframe.mjs")),
                            "/vectors/sotto-codec-aware-independent.json" => {
                                Some(vectors("sotto-codec-aware-independent.json"))
                            }
                            "/vectors/rfc9605-test-vectors-025d568.json" => {
                                Some(vectors("rfc9605-test-vectors-025d568.json"))
                            }
                            _ => None,
                        };
                        match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
                            Some((f, b)) => {
                                let ctype = match f.extension().and_then(|e| e.to_str()) {
                                    Some("mjs") => "text/javascript",
                                    Some("html") => "text/html; charset=utf-8",
                                    _ => "application/json",
                                };
                                ("200 OK", ctype, b)
                            }
                            None => ("404 Not Found", "text/plain", Vec::new()),
                        }
                    };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            });
        }
    });
    (base, rx)
}

/// The same vector checks in Chromium's WebCrypto, inside a module worker (where the call
/// screen's frame transform runs). Chromium is required (`.ci/run` installs Debian's).
#[test]
fn browser_sframe_in_chromium_opens_every_independent_frame() {
    let (url, results) = serve_for_chromium();
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = sotto_testkit::browser::chromium(profile.path())
        .arg(format!("{url}/"))
        .spawn()
        .expect("chromium is required for the browser tests (.ci/run installs it)");
    let got = results.recv_timeout(Duration::from_secs(120));
    let _ = chromium.kill();
    let _ = chromium.wait();
    let got: Value =
        serde_json::from_str(&got.expect("Chromium reported nothing in 120 s")).unwrap();
    assert!(got.get("error").is_none(), "{got}");
    println!("{}", got["userAgent"]);
    assert_eq!(
        got["independent"],
        json!({"opened": 360, "resealed": 360, "ratcheted": 240})
    );
    assert_eq!(
        got["rfc9605"],
        json!({"headers": 289, "sframe": 5, "aes_ctr_hmac": 3})
    );
}
