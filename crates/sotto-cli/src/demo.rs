//! `sotto demo`: a complete encrypted call on loopback with nothing installed: an embedded
//! signaling server (temporary SQLite), two headless participants with bundled media, a call
//! with mute, camera switch and key rotation, then a report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_call::core::CallState;
use sotto_call::engine::RelayChoice;
use sotto_call::engine::{default_machine, Command, Engine, MediaFactory, Notice, Status};
use sotto_call::media::{IvfSource, MediaConfig, TapFrame};
use sotto_call::sealed::Device;
use sotto_server::tls::ClientTls;
use sotto_server::{Server, ServerConfig, SqliteStore};
use tokio::sync::mpsc;

use crate::CliError;

/// Longest the whole demo may take before it gives up.
pub const DEMO_TIME_LIMIT: Duration = Duration::from_secs(55);
const SERVER_ID: &str = "demo.sotto";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory for the received media files (default: a new temporary directory, kept).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds of media before and after each step.
    #[arg(long, default_value_t = 2)]
    step_secs: u64,
    /// Send media peer to peer instead of through the untrusted relay.
    #[arg(long)]
    p2p: bool,
}

struct Log {
    t0: Instant,
}

impl Log {
    fn say(&self, s: impl AsRef<str>) {
        println!("[{:5.2}s] {}", self.t0.elapsed().as_secs_f64(), s.as_ref());
    }
}

fn media(
    out: PathBuf,
    who: &'static str,
    tap: mpsc::UnboundedSender<(String, TapFrame)>,
) -> MediaFactory {
    Box::new(move |id| {
        let mut c = MediaConfig::loopback(id)?;
        c.record_prefix = Some(out.join(format!("{who}-received")));
        let (tx, mut rx) = mpsc::unbounded_channel::<TapFrame>();
        let fwd = tap.clone();
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let _ = fwd.send((who.to_string(), f));
            }
        });
        c.tap = Some(tx);
        Ok(c)
    })
}

/// The part of a plaintext frame that SFrame encrypts (after the codec's clear bytes).
fn encrypted_part(f: &TapFrame) -> &[u8] {
    let clear = f.kind.codec().clear_len(&f.frame).unwrap_or(f.frame.len());
    &f.frame[clear..]
}

fn fail(what: impl Into<String>) -> CliError {
    CliError::Demo(what.into())
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))?;
    rt.block_on(async move {
        match tokio::time::timeout(DEMO_TIME_LIMIT, demo(args)).await {
            Ok(r) => r,
            Err(_) => Err(fail(format!(
                "demo did not finish within {DEMO_TIME_LIMIT:?}"
            ))),
        }
    })
}

async fn wait_notice(e: &mut Engine, want: impl Fn(&Notice) -> bool) -> Result<Notice, CliError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), e.notice()).await {
            Ok(Some(n)) if want(&n) => return Ok(n),
            Ok(Some(_)) => continue,
            _ => return Err(fail("expected event did not come")),
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), CliError> {
    let log = Log { t0: Instant::now() };
    let work = tempfile::Builder::new()
        .prefix("sotto-demo-")
        .tempdir()
        .map_err(|e| fail(e.to_string()))?;
    let out = match args.out {
        Some(p) => p,
        None => work.path().join("media"),
    };
    std::fs::create_dir_all(&out).map_err(|e| CliError::io(&out, e))?;
    let step = Duration::from_secs(args.step_secs.max(1));

    println!("sotto demo: an end-to-end-encrypted call on loopback, through an untrusted relay\n");
    // the relay first: the server mints join tokens for it with the secret they share (a
    // fresh random one; a deployment keeps it in a file both read)
    let capture_dir = work.path().join("relay-capture");
    let secret_text =
        sotto_relay::admission::RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
    let secret = sotto_relay::admission::RelaySecret::from_bytes(secret_text.as_bytes())
        .map_err(|e| fail(format!("relay secret: {e}")))?;
    let relay = if args.p2p {
        None
    } else {
        let mut rc = sotto_relay::RelayConfig::loopback(secret.clone());
        rc.capture_dir = Some(capture_dir.clone());
        let r = sotto_relay::serve(rc)
            .await
            .map_err(|e| fail(format!("relay: {e}")))?;
        Some(r)
    };
    let db = work.path().join("signaling.db");
    let store = SqliteStore::open(&db, Default::default()).map_err(|e| fail(e.to_string()))?;
    let mut cfg = ServerConfig::new(SERVER_ID);
    if let Some(r) = &relay {
        cfg.relays = vec![sotto_server::RelayEntry {
            url: r.public_url().to_owned(),
            secret,
        }];
    }
    let server = Server::bind(cfg, Arc::new(store), "127.0.0.1:0")
        .await
        .map_err(|e| fail(format!("signaling server: {e}")))?;
    log.say(format!(
        "signaling server on {} (SQLite {}): it routes sealed envelopes it cannot read",
        server.url(),
        db.display()
    ));
    if let Some(r) = &relay {
        log.say(format!(
            "untrusted media relay (SFU) on {}, capture on: it forwards RTP whose payloads are SFrame ciphertext, and holds no key; it admits only joins with a token the server minted for that call's members",
            r.url()
        ));
    }

    let (tap_tx, mut tap_rx) = mpsc::unbounded_channel();
    let mut engines = Vec::new();
    for who in ["alice", "bob", "carol"] {
        let (dev, events) = Device::register(&server.url(), &ClientTls::default(), SERVER_ID, who)
            .await
            .map_err(|e| fail(format!("register {who}: {e}")))?;
        log.say(format!(
            "{who} registered: identity key {}…, signed + Kyber1024 + {} one-time prekeys published",
            &hex::encode(dev.identity_key().serialize())[..16],
            sotto_call::sealed::ONE_TIME_PREKEYS
        ));
        engines.push(Engine::spawn_with_relay(
            dev,
            events,
            media(out.clone(), who, tap_tx.clone()),
            default_machine,
            // the server places the call's room at its relay (it has one here)
            relay.as_ref().map(|_| RelayChoice::Placed),
        ));
    }
    drop(tap_tx);
    let mut carol = engines.pop().ok_or_else(|| fail("no carol"))?;
    let mut bob = engines.pop().ok_or_else(|| fail("no bob"))?;
    let alice = engines.pop().ok_or_else(|| fail("no alice"))?;

    let dial_at = Instant::now();
    log.say("alice calls bob (PQXDH session from bob's prekey bundle; the offer travels inside the Double Ratchet)");
    alice.command(Command::Dial("bob".into())).await;
    wait_notice(&mut bob, |n| matches!(n, Notice::Incoming(_))).await?;
    log.say(format!(
        "bob's device rings after {:.0} ms; bob answers",
        dial_at.elapsed().as_secs_f64() * 1000.0
    ));
    bob.command(Command::Answer).await;
    let a = alice
        .wait_state(CallState::Connected, Duration::from_secs(20))
        .await
        .ok_or_else(|| fail("alice never connected"))?;
    log.say(format!(
        "connected ({} ms after dial); media flows, every frame SFrame-encrypted",
        dial_at.elapsed().as_millis()
    ));
    log.say(format!(
        "safety number: {}",
        a.safety_number.clone().unwrap_or_default()
    ));

    tokio::time::sleep(step).await;
    log.say("alice mutes her microphone (bob is told inside the ratchet)");
    alice.command(Command::MuteAudio(true)).await;
    tokio::time::sleep(step / 2).await;
    log.say(format!(
        "bob sees alice muted: {}",
        bob.status().borrow().peer_audio_muted
    ));
    alice.command(Command::MuteAudio(false)).await;
    log.say("alice unmutes and switches camera (camera2): no renegotiation, frames stay encrypted");
    alice
        .command(Command::SwitchSource(
            IvfSource::camera2().map_err(|e| fail(e.to_string()))?,
        ))
        .await;
    tokio::time::sleep(step).await;
    let c = if relay.is_some() {
        log.say("alice invites carol: alice and bob ratchet their keys (RFC 9605 §5.1) and give the new step to carol only");
        alice.command(Command::Invite("carol".into())).await;
        wait_notice(&mut carol, |n| matches!(n, Notice::Incoming(_))).await?;
        carol.command(Command::Answer).await;
        carol
            .wait_state(CallState::Connected, Duration::from_secs(20))
            .await
            .ok_or_else(|| fail("carol never connected"))?;
        log.say("carol is in the call: three participants through the relay");
        tokio::time::sleep(step).await;
        log.say("carol leaves: alice and bob draw fresh keys, give them only to each other, switch 500 ms later");
        carol.command(Command::Hangup).await;
        let c = carol
            .wait_state(CallState::Ended, Duration::from_secs(10))
            .await
            .ok_or_else(|| fail("carol did not end"))?;
        tokio::time::sleep(step).await;
        Some(c)
    } else {
        log.say("alice and bob rotate their media keys (next generation through the ratchet, used 500 ms later)");
        alice.command(Command::RotateKey).await;
        bob.command(Command::RotateKey).await;
        tokio::time::sleep(step).await;
        None
    };
    log.say("bob hangs up");
    bob.command(Command::Hangup).await;
    let a = alice
        .wait_state(CallState::Ended, Duration::from_secs(10))
        .await
        .ok_or_else(|| fail("alice did not end"))?;
    let b = bob
        .wait_state(CallState::Ended, Duration::from_secs(10))
        .await
        .ok_or_else(|| fail("bob did not end"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(alice);
    drop(bob);
    drop(carol);

    let mut frames: Vec<(String, TapFrame)> = Vec::new();
    while let Ok(f) = tap_rx.try_recv() {
        frames.push(f);
    }
    let relay_used = relay.is_some();
    let captured = match relay {
        Some(r) => {
            r.flush_capture();
            let (pin, pout, _) = r.stats();
            r.shutdown().await;
            Some((pin, pout, capture_dir.join("capture.bin")))
        }
        None => None,
    };
    report(&a, &b, c.as_ref(), &frames, &out, captured)?;
    server.shutdown().await;
    if !work.path().starts_with(&out) || relay_used {
        // keep the media directory when it lives inside the work directory
        let kept = work.keep();
        let _ = std::fs::remove_file(kept.join("signaling.db"));
    }
    Ok(())
}

fn report(
    a: &Status,
    b: &Status,
    c: Option<&Status>,
    frames: &[(String, TapFrame)],
    out: &std::path::Path,
    captured: Option<(u64, u64, PathBuf)>,
) -> Result<(), CliError> {
    println!("\nreport");
    let setup = a
        .setup_time
        .map(|d| format!("{} ms", d.as_millis()))
        .unwrap_or("-".into());
    println!("  setup time (dial -> first decrypted video frame at alice): {setup}");
    println!(
        "  safety numbers equal on both sides: {}",
        if a.safety_number.is_some() && a.safety_number == b.safety_number {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "  {:<6} {:>11} {:>11} {:>11} {:>8} {:>12} {:>6} {:>9}",
        "", "sent", "received", "decrypted", "failed", "key gen own", "peer", "ICE pair"
    );
    let mut ok = true;
    let mut rows = vec![("alice", a), ("bob", b)];
    if let Some(c) = c {
        rows.push(("carol", c));
    }
    for (who, s) in rows {
        let m = s.media.clone().unwrap_or_default();
        let sent = m.audio.frames_sent + m.video.frames_sent;
        let rec = m.audio.frames_received + m.video.frames_received;
        let dec = m.audio.frames_decrypted + m.video.frames_decrypted;
        let failed = m.audio.frames_failed + m.video.frames_failed;
        ok &= failed == 0 && dec > 0;
        println!(
            "  {:<6} {:>11} {:>11} {:>11} {:>8} {:>12} {:>6} {:>9}",
            who,
            sent,
            rec,
            dec,
            failed,
            m.local_generation,
            m.remote_generation
                .map(|g| g.to_string())
                .unwrap_or("-".into()),
            m.pair_type.map_or("-".into(), |t| t.to_string())
        );
    }
    // Every decrypted frame must equal a frame the other side encoded, and no ciphertext may
    // contain a 16-byte window of any plaintext frame's encrypted part.
    let sent: std::collections::HashMap<&[u8], &TapFrame> = frames
        .iter()
        .filter(|(_, f)| f.sent)
        .map(|(_, f)| (f.wire.as_slice(), f))
        .collect();
    let mut compared = 0usize;
    let mut mismatched = 0usize;
    for (_, f) in frames.iter().filter(|(_, f)| !f.sent) {
        compared += 1;
        match sent.get(f.wire.as_slice()) {
            Some(s) if s.frame == f.frame => {}
            _ => mismatched += 1,
        }
    }
    if c.is_some() {
        let generation = |f: &TapFrame| -> Option<u64> {
            let clear = f.kind.codec().clear_len(&f.wire).ok()?;
            let (h, _) = sotto_frame::Header::decode(&f.wire[clear..]).ok()?;
            Some(sotto_frame::KeyId::split_kid(h.kid).1)
        };
        let after_leave = frames
            .iter()
            .filter(|(w, f)| f.sent && w != "carol" && generation(f) == Some(1))
            .count();
        let carol_got = frames
            .iter()
            .filter(|(w, f)| !f.sent && w == "carol")
            .count();
        let carol_after = frames
            .iter()
            .filter(|(w, f)| !f.sent && w == "carol" && generation(f) == Some(1))
            .count();
        println!(
            "  carol decrypted {carol_got} frames while in the call; after she left, alice and bob sent {after_leave} frames under a key generation never sent to her (carol decrypted {carol_after})"
        );
        ok &= carol_got > 0 && after_leave > 0 && carol_after == 0;
    }
    let mut leaks = 0usize;
    for (_, f) in frames.iter().filter(|(_, f)| f.sent) {
        let secret = encrypted_part(f);
        if secret.len() >= 16 {
            let windows: std::collections::HashSet<&[u8]> = secret.windows(16).collect();
            if f.wire.windows(16).any(|w| windows.contains(w)) {
                leaks += 1;
            }
        }
    }
    println!(
        "  {compared} received frames compared byte for byte with what the sender encoded: {} mismatched",
        mismatched
    );
    println!(
        "  {} sent frames checked: {} carried a 16-byte window of their plaintext on the wire",
        frames.iter().filter(|(_, f)| f.sent).count(),
        leaks
    );
    ok &= mismatched == 0 && leaks == 0 && compared > 0;
    if let Some((pin, pout, path)) = captured {
        let data = std::fs::read(&path).map_err(|e| CliError::io(&path, e))?;
        let records = sotto_relay::capture::parse(&data).map_err(|e| fail(e.to_string()))?;
        let windows: std::collections::HashSet<&[u8]> = frames
            .iter()
            .filter(|(_, f)| f.sent)
            .flat_map(|(_, f)| encrypted_part(f).windows(16))
            .collect();
        let dirty = records
            .iter()
            .filter(|r| r.payload.windows(16).any(|w| windows.contains(w)))
            .count();
        let cframes = sotto_relay::capture::frames(&records);
        let sframes = cframes
            .iter()
            .filter(|f| {
                let codec = match f.kind {
                    sotto_relay::capture::Kind::Video => sotto_frame::Codec::Vp8,
                    sotto_relay::capture::Kind::Audio => sotto_frame::Codec::Opus,
                };
                codec
                    .clear_len(&f.frame)
                    .is_ok_and(|c| sotto_frame::Header::decode(&f.frame[c..]).is_ok())
            })
            .count();
        println!(
            "  the relay received {pin} RTP packets and forwarded {pout}; its capture ({}) holds {} payloads: {}",
            path.display(),
            records.len(),
            if dirty == 0 { "none contained plaintext".to_string() } else { format!("{dirty} CONTAINED PLAINTEXT") }
        );
        println!(
            "  {sframes} of {} frames reassembled from the capture parse as RFC 9605 SFrame frames (inspect them: sotto frame inspect --capture {})",
            cframes.len(),
            path.display()
        );
        ok &= dirty == 0 && !records.is_empty() && sframes == cframes.len();
    }
    println!(
        "  end: alice \"{}\", bob \"{}\"",
        a.end_reason
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        b.end_reason
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    println!("\nreceived media (decrypted), playable with ffplay:");
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        println!("  ffplay {}", f.display());
    }
    if ok {
        println!("\ndemo OK");
        Ok(())
    } else {
        Err(fail("demo checks failed (see report)"))
    }
}
