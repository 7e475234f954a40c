//! `sotto call USER` and `sotto answer`: a real device on a real signaling server, with the
//! call screen (default) or a script (`--script FILE`, `-` for stdin) driving the same commands.

use std::path::PathBuf;
use std::time::Duration;

use sotto_call::core::CallState;
use sotto_call::engine::RelayChoice;
use sotto_call::engine::{
    default_machine, Command as EngineCmd, Engine, MediaFactory, Notice, Status,
};
use sotto_call::media::{
    make_webrtc, CandidateType, IceServer, IvfSource, MediaConfig, MediaMaker, MediaMaking,
    MediaStats, OggOpusSource,
};
use sotto_call::messages::valid_member_name;
use sotto_call::sealed::Device;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use crate::screen::{self, Command, Screen, ScriptStep};
use crate::settings::{ClientArgs, Settings};
use crate::CliError;

/// How long a `wait-state` script step waits.
pub const SCRIPT_WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How long a call's setup waits for the signaling server's TURN credentials (without them the
/// call goes on with the STUN servers only).
pub const TURN_GRANT_WAIT: Duration = Duration::from_secs(5);

/// Each call's media: fresh TURN credentials from the signaling server (they expire), the ICE
/// servers it advertises (or the user's `--ice` URLs instead), then a webrtc-rs peer. One
/// configuration for every network: STUN and TURN together, and ICE picks the path.
struct PhoneMedia {
    client: sotto_server::Client,
    /// The user's `--ice` URLs; empty: the signaling server's.
    ice: Vec<String>,
    /// Sources, recording and relay-only; the ICE servers are filled in per call.
    base: MediaFactory,
}

impl MediaMaker for PhoneMedia {
    fn make(&self, sender_id: u64) -> MediaMaking {
        let cfg = (self.base)(sender_id);
        let client = self.client.clone();
        let given = self.ice.clone();
        Box::pin(async move {
            let mut cfg = cfg?;
            cfg.ice_servers = call_ice_servers(&client, given).await;
            if !cfg.ice_servers.is_empty() || cfg.relay_only {
                // candidates from every interface, not only loopback
                cfg.bind = std::net::IpAddr::from([0, 0, 0, 0]);
            }
            make_webrtc(cfg, sender_id).await
        })
    }
}

/// One call's ICE servers: fresh TURN credentials from the signaling server (waited for at most
/// [`TURN_GRANT_WAIT`]) with the URIs it advertises, or the user's `given` URLs instead.
pub async fn call_ice_servers(client: &sotto_server::Client, given: Vec<String>) -> Vec<IceServer> {
    let grant = match tokio::time::timeout(TURN_GRANT_WAIT, client.turn_credentials()).await {
        Ok(Ok(g)) => Some(g),
        Ok(Err(e)) => {
            tracing::debug!("no TURN credentials: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("no TURN credentials within {TURN_GRANT_WAIT:?}");
            None
        }
    };
    let urls = match (&grant, given.is_empty()) {
        (Some(g), true) => g.uris.clone(),
        _ => given,
    };
    let (user, pass) = grant.as_ref().map_or((String::new(), String::new()), |g| {
        (g.username.clone(), g.password.clone())
    });
    IceServer::for_urls(&urls, &user, &pass)
}

#[derive(clap::Args, Debug)]
pub struct PhoneArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Use a throwaway identity registered for this run only (nothing kept on disk; the name
    /// must be free on the server) instead of the device `sotto register` created.
    #[arg(long)]
    ephemeral: bool,
    /// Non-interactive: read steps from FILE (`-` for stdin) instead of showing the call screen.
    #[arg(long)]
    script: Option<String>,
    /// VP8 IVF file to send (default: bundled test pattern).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Ogg Opus file to send (default: bundled tone).
    #[arg(long)]
    audio: Option<PathBuf>,
}

/// `s` safe to print: every control character (and every bidirectional override) is escaped
/// as Rust writes it (`\u{1b}`, `\n`), everything else is kept. Text that came from the peer or
/// the network (names, reasons, notices) goes through this before it reaches the terminal, so
/// nobody can send us escape sequences that redraw, retitle or recolour it.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A notice as a line of the event log (the call screen's and the browser page's); names,
/// reasons and errors may come from the peer or the network and go through [`printable`].
pub fn notice_line(n: &Notice) -> String {
    match n {
        Notice::Incoming(from) => format!("incoming call from {}", printable(from)),
        Notice::IdentityChanged(who) => format!("{}'s identity key changed", printable(who)),
        Notice::Member(m) => format!("group: {}", printable(&m.to_string())),
        Notice::State(s) => format!("state: {s}"),
        Notice::Dropped(w) => format!("dropped: {}", printable(&w.to_string())),
        Notice::KeyRotated(g) => format!("our media key is now generation {g}"),
        Notice::PeerKey { from, generation } => format!(
            "{}'s media key generation {generation} installed",
            printable(from)
        ),
        Notice::Error(e) => format!("error: {}", printable(&e.to_string())),
        other => printable(&format!("{other:?}")),
    }
}

fn fail(s: impl Into<String>) -> CliError {
    CliError::Usage(s.into())
}

pub fn run(peer: Option<String>, a: PhoneArgs) -> Result<(), CliError> {
    let settings = a.client.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(phone(peer, a, settings))
}

async fn phone(peer: Option<String>, a: PhoneArgs, st: Settings) -> Result<(), CliError> {
    let user = st.user()?.to_string();
    // a relay URL that would be refused is refused now, not when the first call needs it
    if let Some(r) = st.relay.as_ref().and_then(RelayChoice::url) {
        sotto_server::tls::check_url(r).map_err(|e| fail(format!("relay: {e}")))?;
    }
    let (dev, events) = if a.ephemeral {
        Device::register(&st.server, &st.client_tls()?, &st.server_id, &user)
            .await
            .map_err(|e| fail(format!("register {user}: {}", printable(&e.to_string()))))?
    } else {
        crate::account::load_device(&st).await?
    };
    let video = match &a.video {
        Some(p) => IvfSource::open(p).map_err(|e| fail(e.to_string()))?,
        None => IvfSource::camera1().map_err(|e| fail(e.to_string()))?,
    };
    let audio = match &a.audio {
        Some(p) => OggOpusSource::open(p).map_err(|e| fail(e.to_string()))?,
        None => OggOpusSource::tone().map_err(|e| fail(e.to_string()))?,
    };
    let record = st
        .record
        .as_ref()
        .map(|dir| dir.join(format!("{user}-received")));
    let relay_only = st.relay_only;
    let turn_tls = st.client_tls()?;
    let media = PhoneMedia {
        client: dev.client().clone(),
        ice: st.ice.clone(),
        base: Box::new(move |id| {
            let mut c = MediaConfig::loopback(id)?;
            c.video = Some(video.clone());
            c.audio = Some(audio.clone());
            c.relay_only = relay_only;
            c.turn_tls = turn_tls.clone();
            c.record_prefix = record.clone();
            Ok(c)
        }),
    };
    let mut engine = Engine::spawn_with_media(
        dev,
        events,
        Box::new(media),
        default_machine,
        st.relay.clone(),
    );
    if let Some(p) = &peer {
        engine.command(EngineCmd::Dial(p.clone())).await;
    }
    // status → screen model
    let (screen_tx, screen_rx) = watch::channel(Screen {
        me: user.clone(),
        state: "idle".into(),
        source: "camera1".into(),
        ..Screen::default()
    });
    let mut status = engine.status();
    let interactive = a.script.is_none();
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(16);
    let screen_task = {
        let screen_tx = screen_tx.clone();
        tokio::spawn(async move {
            loop {
                let s = status.borrow_and_update().clone();
                screen_tx.send_modify(|sc| apply_status(sc, &s));
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let ui = if interactive {
        Some(tokio::spawn(screen::run_tui(
            screen_rx.clone(),
            cmd_tx.clone(),
        )))
    } else {
        let path = a.script.clone().unwrap_or_default();
        let tx = cmd_tx.clone();
        let st = engine.status();
        Some(tokio::spawn(async move {
            run_script(&path, tx, st).await;
            Ok(())
        }))
    };
    drop(cmd_tx);
    let mut audio_muted = false;
    let mut video_muted = false;
    let mut camera2 = false;
    loop {
        tokio::select! {
            c = cmd_rx.recv() => {
                let Some(c) = c else { break };
                match c {
                    Command::Answer => engine.command(EngineCmd::Answer).await,
                    Command::Reject => engine.command(EngineCmd::Reject).await,
                    Command::Hangup => engine.command(EngineCmd::Hangup).await,
                    Command::MuteAudio => { audio_muted = !audio_muted; engine.command(EngineCmd::MuteAudio(audio_muted)).await }
                    Command::MuteVideo => { video_muted = !video_muted; engine.command(EngineCmd::MuteVideo(video_muted)).await }
                    Command::SwitchSource => {
                        camera2 = !camera2;
                        let src = if camera2 { IvfSource::camera2() } else { IvfSource::camera1() };
                        if let Ok(src) = src { engine.command(EngineCmd::SwitchSource(src)).await; }
                    }
                    // the screen and the script parser check names already; this is the last
                    // stop before the engine
                    Command::Invite(user) if !valid_member_name(&user) => {
                        let note = screen::invalid_invite_note(&user);
                        if !interactive {
                            println!("{note}");
                        }
                        screen_tx.send_modify(|s| s.push_log(note));
                    }
                    Command::Invite(user) => engine.command(EngineCmd::Invite(user)).await,
                    Command::Quit => {
                        if !matches!(engine.status().borrow().state, CallState::Idle | CallState::Ended) {
                            engine.command(EngineCmd::Hangup).await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        break;
                    }
                }
            }
            n = engine.notice() => {
                let Some(n) = n else { break };
                if let Notice::IdentityChanged(who) = &n {
                    let who = printable(who);
                    let w = format!(
                        "{who}'s identity key changed: nothing goes to or comes from the new key. \
                         Compare the new safety number (`sotto trust {who}`) with {who} in person, \
                         then `sotto trust {who} --safety-number \"...\"`"
                    );
                    screen_tx.send_modify(|s| s.identity_warning = Some(w.clone()));
                    if !interactive {
                        println!("warning: {w}");
                    }
                }
                let line = notice_line(&n);
                if !interactive {
                    println!("{line}");
                }
                screen_tx.send_modify(|s| s.push_log(line));
            }
        }
    }
    if let Some(ui) = ui {
        ui.abort();
    }
    screen_task.abort();
    let s = engine.status().borrow().clone();
    if !interactive {
        print_summary(&s);
    }
    Ok(())
}

/// Copies the engine's status into the screen model; the peer's name and the end reason (which
/// may be the peer's hangup text) go through [`printable`].
fn apply_status(sc: &mut Screen, s: &Status) {
    sc.peer = s.peer.as_deref().map(printable);
    sc.state = match (&s.end_reason, s.state) {
        (Some(r), CallState::Ended) => format!("ended: {}", printable(&r.to_string())),
        (_, st) => st.to_string(),
    };
    sc.safety_number = s.safety_number.as_deref().map(printable);
    sc.audio_muted = s.audio_muted;
    sc.video_muted = s.video_muted;
    sc.peer_audio_muted = s.peer_audio_muted;
    sc.peer_video_muted = s.peer_video_muted;
    if let Some(src) = &s.source {
        sc.source = printable(src);
    }
    sc.stats.clear();
    if let Some(m) = &s.media {
        let rows = [
            ("connection", printable(&m.state)),
            ("candidate pair", pair_text(m)),
            (
                "bitrate out/in",
                format!(
                    "{} / {} kbit/s",
                    m.send_bitrate / 1000,
                    m.recv_bitrate / 1000
                ),
            ),
            (
                "rtt",
                m.rtt
                    .map(|r| format!("{:.1} ms", r.as_secs_f64() * 1000.0))
                    .unwrap_or("-".into()),
            ),
            (
                "frames sent",
                (m.audio.frames_sent + m.video.frames_sent).to_string(),
            ),
            (
                "frames decrypted",
                (m.audio.frames_decrypted + m.video.frames_decrypted).to_string(),
            ),
            (
                "frames failed",
                (m.audio.frames_failed + m.video.frames_failed).to_string(),
            ),
            (
                "key generation",
                format!(
                    "own {} / peer {}",
                    m.local_generation,
                    m.remote_generation
                        .map(|g| g.to_string())
                        .unwrap_or("-".into())
                ),
            ),
        ];
        sc.stats = rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    }
    if let Some(t) = s.setup_time {
        sc.stats
            .push(("setup time".into(), format!("{} ms", t.as_millis())));
    }
}

/// The closing lines of a script run; the end reason may be the peer's hangup text, so text
/// fields go through [`printable`].
fn print_summary(s: &Status) {
    println!(
        "summary: state {} ({})",
        s.state,
        printable(
            &s.end_reason
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        )
    );
    if let Some(n) = &s.safety_number {
        println!("safety number: {}", printable(n));
    }
    if let Some(m) = &s.media {
        println!(
            "frames sent {} decrypted {} failed {}; key generation own {} peer {}; pair {}",
            m.audio.frames_sent + m.video.frames_sent,
            m.audio.frames_decrypted + m.video.frames_decrypted,
            m.audio.frames_failed + m.video.frames_failed,
            m.local_generation,
            m.remote_generation
                .map(|g| g.to_string())
                .unwrap_or("-".into()),
            pair_text(m)
        );
        let seen: Vec<String> = m
            .remote_candidates
            .iter()
            .map(|c| {
                format!(
                    "{} {}:{} raddr {}",
                    c.typ,
                    printable(&c.address),
                    c.port,
                    if c.related_address.is_empty() {
                        "-".to_owned()
                    } else {
                        printable(&c.related_address)
                    }
                )
            })
            .collect();
        println!("remote candidates: {}", seen.join(", "));
    }
    if let Some(t) = s.setup_time {
        println!("setup time {} ms", t.as_millis());
    }
}

/// The selected candidate pair, local type then remote type (`host/srflx`, `relay/relay`), `-`
/// for a side not known (yet).
pub fn pair_text(m: &MediaStats) -> String {
    let t = |c: Option<CandidateType>| c.map_or("-", CandidateType::as_str);
    match (m.pair_type, m.remote_pair_type) {
        (None, None) => "-".into(),
        (l, r) => format!("{}/{}", t(l), t(r)),
    }
}

async fn run_script(path: &str, tx: mpsc::Sender<Command>, status: watch::Receiver<Status>) {
    let lines: Vec<String> = if path == "-" {
        let mut v = Vec::new();
        let mut r = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = r.next_line().await {
            v.push(l);
        }
        v
    } else {
        match tokio::fs::read_to_string(path).await {
            Ok(s) => s.lines().map(str::to_string).collect(),
            Err(e) => {
                eprintln!("sotto: script {path}: {e}");
                let _ = tx.send(Command::Quit).await;
                return;
            }
        }
    };
    for (n, line) in lines.iter().enumerate() {
        match screen::parse_script_line(line) {
            Ok(None) => {}
            Ok(Some(ScriptStep::Do(c))) => {
                let quit = c == Command::Quit;
                let _ = tx.send(c).await;
                if quit {
                    return;
                }
            }
            Ok(Some(ScriptStep::Wait(d))) => tokio::time::sleep(d).await,
            Ok(Some(ScriptStep::WaitState(w))) => {
                let mut rx = status.clone();
                let ok = tokio::time::timeout(SCRIPT_WAIT_LIMIT, async {
                    loop {
                        if rx.borrow_and_update().state.word() == w {
                            return;
                        }
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                })
                .await
                .is_ok();
                if !ok {
                    eprintln!(
                        "sotto: script line {}: state {w} not reached within {SCRIPT_WAIT_LIMIT:?}",
                        n + 1
                    );
                    break;
                }
            }
            Err(e) => {
                eprintln!("sotto: script line {}: {e}", n + 1);
                break;
            }
        }
    }
    let _ = tx.send(Command::Quit).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("bob"), "bob");
        assert_eq!(
            printable("caf\u{e9} \u{1f4de} ok"),
            "caf\u{e9} \u{1f4de} ok"
        );
        assert_eq!(
            printable("\u{1b}[2J\u{1b}]0;owned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}"
        );
        assert_eq!(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(printable("\u{0}\u{7f}\u{9b}"), "\\u{0}\\u{7f}\\u{9b}");
        assert_eq!(printable("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(printable(""), "");
        for s in ["\u{1b}[31mred", "x\u{8}\u{8}y", "\u{9b}31m"] {
            assert!(!printable(s).chars().any(char::is_control), "{s:?}");
        }
    }

    #[tokio::test]
    async fn a_script_invite_of_a_bad_name_stops_the_script_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let run = |text: &'static str| {
            let path = dir.path().join("s.txt");
            async move {
                std::fs::write(&path, text).unwrap();
                let (tx, mut rx) = mpsc::channel(16);
                let (_st, st_rx) = watch::channel(Status::default());
                run_script(path.to_str().unwrap(), tx, st_rx).await;
                let mut got = Vec::new();
                while let Some(c) = rx.recv().await {
                    got.push(c);
                }
                got
            }
        };
        assert_eq!(
            run("invite carol\nhangup\n").await,
            vec![
                Command::Invite("carol".into()),
                Command::Hangup,
                Command::Quit
            ]
        );
        for bad in [
            "invite ../x\nhangup\n",
            "invite Carol\nhangup\n",
            "invite b\u{1b}[2J\nhangup\n",
        ] {
            assert_eq!(run(bad).await, vec![Command::Quit], "{bad:?}");
        }
    }

    #[test]
    fn peer_text_in_status_is_escaped_on_the_screen() {
        let st = Status {
            peer: Some("m\u{1b}[2Jallory".into()),
            state: CallState::Ended,
            end_reason: Some(sotto_call::state::EndReason::Failed(
                "peer hung up: \u{1b}]0;pwned\u{7}".into(),
            )),
            ..Status::default()
        };
        let mut sc = Screen::default();
        apply_status(&mut sc, &st);
        assert_eq!(sc.peer.as_deref(), Some("m\\u{1b}[2Jallory"));
        assert_eq!(
            sc.state,
            "ended: failed: peer hung up: \\u{1b}]0;pwned\\u{7}"
        );
        assert!(!sc.state.chars().any(char::is_control));
    }
}
