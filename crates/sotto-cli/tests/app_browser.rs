#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto app` with a real browser: Chromium (headless, fake camera and microphone) opens the
//! call screen, the test clicks "Call" like a user (over the DevTools protocol), a Rust device
//! (`sotto answer --script`, webrtc-rs) answers, and media flows both ways through SFrame:
//! the page's frame worker decrypts the Rust device's Opus and VP8 (and Chromium decodes the
//! picture), the Rust device decrypts and records the browser's. Then the page hangs up.
//! The signaling server is `wss://` with a certificate of a CA made by the test.
//! Also: the page is refused without the token, from another Origin, and under another Host;
//! two browsers call each other; two browsers and a Rust device call as a group through
//! sotto-relay (invite from the page, a join and a leave, the relay's capture checked); and a
//! browser calls a Rust device relay-only through coturn.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sotto, start_tls_server, text, ChildGuard, SpawnGuarded};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A plain HTTP/1.1 GET on loopback: (status line, headers, body).
fn http_get(addr: &str, path: &str, host: &str) -> (String, String, String) {
    // Chromium's DevTools server keeps the connection open: read the head, then exactly
    // Content-Length bytes, never "until closed"
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let (mut headers, mut len) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push_str(&lower);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (
        status.trim().to_owned(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Where bob's output goes (printed when the page does not show what the test waits for).
static BOB_LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Chromium's DevTools protocol on one page target.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
}

impl Cdp {
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// One DevTools method; its `result`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let msg = json!({"id": self.id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("DevTools answered nothing in 30 s")
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            if v["id"] == self.id {
                return v["result"].clone();
            }
        }
    }

    /// Polls `expr` until it is true (or `limit` passes, then panics with `what`).
    async fn wait(&mut self, expr: &str, limit: Duration, what: &str) {
        let t0 = Instant::now();
        loop {
            if self.eval(expr).await == json!(true) {
                return;
            }
            if t0.elapsed() > limit {
                let screen = self.eval("document.body.innerText").await;
                let bob = BOB_LOG
                    .get()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                panic!("page never showed {what} in {limit:?}; it shows:\n{screen}\nbob printed:\n{bob}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The fake camera and microphone: SMPTE colour bars (a still picture, so any received frame
/// can be compared with it) and [`fake_mic`] around 300 Hz, made by ffmpeg.
fn fake_media(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let y4m = dir.join("camera.y4m");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=640x480:rate=30",
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
        ],
        &y4m,
    );
    (y4m, fake_mic(dir, "mic", 300))
}

/// A fake microphone `dir/<name>.wav`: 60 s of a tone sweeping around `hz` (±200 Hz, once in
/// 2 s: frequency modulation). Not a steady tone: the browser's noise suppression takes one for noise and sends
/// silence. Browsers in one call get different ones, or each one's echo canceller removes
/// its own microphone as the echo of the others' identical sound.
fn fake_mic(dir: &Path, name: &str, hz: u32) -> std::path::PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let src = format!("aevalsrc=0.5*sin(2*PI*{hz}*t+400*sin(PI*t)):s=48000");
    ffmpeg(&["-f", "lavfi", "-i", &src, "-t", "60"], &wav);
    wav
}

fn ffmpeg(args: &[&str], out: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error"])
        .args(args)
        .arg(out)
        .output()
        .expect("ffmpeg is required (.ci/run installs it)");
    assert!(o.status.success(), "{}", text(&o));
}

/// What a browser's fake camera shows.
#[derive(Clone, Copy)]
enum Camera<'a> {
    /// One camera playing this y4m file (Chromium then offers no other).
    File(&'a Path),
    /// Chromium's generated cameras, `n` of them (`fake_device_0`...). Each draws the same
    /// moving picture on green (mean RGB measured 2-10, 127-153, 0-3), except `fake_device_1`,
    /// a 16-bit depth camera (grey) whose frames WebRTC cannot send (Chromium 156 logs "We
    /// cannot send frame with storage type: PIXEL_FORMAT_Y16" and sends nothing).
    Generated(u32),
}

fn chromium(profile: &Path, url: &str, camera: Camera, mic: &Path) -> ChildGuard {
    let mut c = sotto_testkit::browser::chromium(profile);
    c.args([
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--remote-debugging-port=0",
        "--window-size=1100,900",
    ]);
    match camera {
        Camera::File(y4m) => c.arg("--use-fake-device-for-media-stream").arg(format!(
            "--use-file-for-fake-video-capture={}",
            y4m.display()
        )),
        Camera::Generated(n) => c.arg(format!(
            "--use-fake-device-for-media-stream=device-count={n}"
        )),
    };
    c.arg(format!(
        "--use-file-for-fake-audio-capture={}",
        mic.display()
    ))
    .arg(url)
    .spawn_guarded()
}

/// The DevTools page target showing `url_prefix`.
async fn attach(profile: &Path, url_prefix: &str) -> Cdp {
    let t0 = Instant::now();
    let port = loop {
        if let Ok(s) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
            if let Some(p) = s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()) {
                break p;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "Chromium did not start its DevTools"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let addr = format!("127.0.0.1:{port}");
    let ws_url = loop {
        let (_, _, body) = http_get(&addr, "/json/list", &addr);
        let list: Value = serde_json::from_str(&body).unwrap_or(json!([]));
        if let Some(t) = list.as_array().into_iter().flatten().find(|t| {
            t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url_prefix))
        }) {
            break t["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no page target: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    Cdp { ws, id: 0 }
}

/// Browser tests run one at a time (each runs Chromium, a device and often a second one).
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `sotto app` for `user` (registered under `home`, trusting `ca`); returns it and the link it
/// printed.
fn start_app(home: &Path, ca: &Path, url: &str, user: &str) -> (ChildGuard, String) {
    let mut c = sotto(home);
    c.env("SOTTO_CA", ca).args([
        "app",
        "--server",
        url,
        "--server-id",
        "app.test",
        "--user",
        user,
    ]);
    start_app_with(c)
}

/// `sotto app` as `c` says (`sotto ... app ...`); returns it and the link it printed.
fn start_app_with(mut c: Command) -> (ChildGuard, String) {
    let mut app = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_guarded();
    let mut lines = BufReader::new(app.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let link = line
        .trim()
        .strip_prefix("call screen: ")
        .unwrap_or_else(|| panic!("no link line: {line:?}"))
        .to_owned();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while lines.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (app, link)
}

/// Registers `users` on the `wss://` server at `url`.
fn register_all(home: &Path, ca: &Path, url: &str, users: &[&str]) {
    for user in users {
        let out = sotto(home)
            .env("SOTTO_CA", ca)
            .args([
                "register",
                "--server",
                url,
                "--server-id",
                "app.test",
                "--user",
                user,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "register {user}: {}", text(&out));
    }
}

/// The JavaScript expression for `who`'s tile on the call screen (null when there is none).
fn tile(who: &str) -> String {
    format!("document.querySelector('#remotes .tile[data-member=\"{who}\"]')")
}

/// Waits until the page's worker decrypted more than `n` audio and `n` video frames of `who`
/// (counted by the sender id in their KIDs) and `who`'s tile shows the picture.
async fn wait_decrypting_n(page: &mut Cdp, who: &str, n: u64) {
    let t = tile(who);
    page.wait(
        &format!(
            "(t => !!t && +t.dataset.audioDecrypted > {n} && +t.dataset.videoDecrypted > {n})({t})"
        ),
        Duration::from_secs(90),
        &format!("{n} frames decrypted from {who}"),
    )
    .await;
    page.wait(
        &format!("{t}.querySelector('video').videoWidth > 0"),
        Duration::from_secs(60),
        &format!("{who}'s picture"),
    )
    .await;
}

/// [`wait_decrypting_n`] with 20 frames.
async fn wait_decrypting(page: &mut Cdp, who: &str) {
    wait_decrypting_n(page, who, 20).await;
}

/// How many frames `who`'s tile rendered in `ms` milliseconds (`requestVideoFrameCallback`).
async fn frames_rendered(page: &mut Cdp, who: &str, ms: u64) -> u64 {
    let n = page
        .eval(&format!(
            "new Promise((done) => {{ const v = {}.querySelector('video'); let n = 0; \
             const f = () => {{ n++; v.requestVideoFrameCallback(f); }}; \
             v.requestVideoFrameCallback(f); setTimeout(() => done(n), {ms}); }})",
            tile(who)
        ))
        .await;
    n.as_u64().unwrap_or(0)
}

/// The loudest RMS of the sound `who`'s tile plays, over 20 analyser windows (43 ms each) in
/// 2 s, and the strongest frequency (Hz) in that window.
async fn audio_rms(page: &mut Cdp, who: &str) -> (f64, f64) {
    let r = page
        .eval(&format!(
            "new Promise((done) => {{ const ctx = new AudioContext(); \
             const src = ctx.createMediaStreamSource({}.querySelector('video').srcObject); \
             const an = ctx.createAnalyser(); src.connect(an); \
             const b = new Float32Array(an.fftSize), f = new Float32Array(an.frequencyBinCount); \
             let best = 0, hz = 0, n = 0; const t = setInterval(() => {{ \
               an.getFloatTimeDomainData(b); let e = 0; for (const x of b) e += x * x; \
               const rms = Math.sqrt(e / b.length); \
               if (rms > best) {{ best = rms; an.getFloatFrequencyData(f); let k = 0; \
                 for (let i = 1; i < f.length; i++) if (f[i] > f[k]) k = i; \
                 hz = k * ctx.sampleRate / an.fftSize; }} \
               if (++n === 20) {{ clearInterval(t); ctx.close(); done([best, hz]); }} }}, 100); }})",
            tile(who)
        ))
        .await;
    (r[0].as_f64().unwrap_or(0.0), r[1].as_f64().unwrap_or(0.0))
}

/// `who`'s tile dataset value `key` (`generation`, `step`, `videoDecrypted`...) as a number.
async fn tile_number(page: &mut Cdp, who: &str, key: &str) -> Option<u64> {
    let v = page
        .eval(&format!("(t => t && t.dataset.{key})({})", tile(who)))
        .await;
    v.as_str().and_then(|s| s.parse().ok())
}

/// Asserts that the page's worker failed no frame.
async fn assert_none_failed(page: &mut Cdp, who: &str) {
    let failed = page
        .eval("document.querySelector('[data-stat=\"frames failed\"]').textContent")
        .await;
    if failed != json!("0 / 0") {
        panic!(
            "{who}'s page: frames failed {failed}: {}",
            page.eval("document.body.innerText").await
        );
    }
}

/// Whether the page WebSocket (from our own Origin) refuses `token` with code 1008.
async fn hello_refused(host: &str, origin: &str, token: &str) -> bool {
    let mut req = format!("ws://{host}/ws").into_client_request_with_origin(origin);
    let (mut ws, _) = tokio_tungstenite::connect_async(req.take().unwrap())
        .await
        .unwrap();
    let hello = json!({"type": "hello", "token": token}).to_string();
    ws.send(Message::text(hello)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    matches!(closed, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1008)
}

/// Waits until the page shows the call in `state` (`connected`, `ended`...).
/// Alice's and bob's `sotto app` pages on one wss:// server, both welcomed: alice's camera is
/// `alice_camera` (else the colour bars), bob's the colour bars; alice's microphone sounds at
/// 300 ± 200 Hz, bob's in a band of its own (900 ± 200 Hz). `_guards` holds the browsers,
/// their profiles, the two apps and the server (in that drop order).
struct TwoPages {
    alice: Cdp,
    bob: Cdp,
    _guards: (
        [ChildGuard; 2],
        [tempfile::TempDir; 2],
        [ChildGuard; 2],
        ChildGuard,
    ),
}

impl TwoPages {
    async fn open(dir: &Path, alice_camera: Option<Camera<'_>>) -> TwoPages {
        let (server, url, ca) = start_tls_server(dir, "app.test");
        let home = dir.join("home");
        register_all(&home, &ca, &url, &["alice", "bob"]);
        let (camera, mic) = fake_media(dir);
        let (app_a, link_a) = start_app(&home, &ca, &url, "alice");
        let (app_b, link_b) = start_app(&home, &ca, &url, "bob");
        let alice_camera = alice_camera.unwrap_or(Camera::File(&camera));
        let (ba, mut alice, pa) = open_page_with(dir, "alice", &link_a, alice_camera, &mic).await;
        let bob_mic = fake_mic(dir, "bob-mic", 900);
        let (bb, mut bob, pb) = open_page(dir, "bob", &link_b, &camera, &bob_mic).await;
        wait_welcome(&mut alice, "alice").await;
        wait_welcome(&mut bob, "bob").await;
        TwoPages {
            alice,
            bob,
            _guards: ([ba, bb], [pa, pb], [app_a, app_b], server),
        }
    }
}

/// Alice's page dials bob by name and bob's page answers (real clicks): both connected.
async fn alice_calls_bob(alice: &mut Cdp, bob: &mut Cdp) {
    alice
        .eval("document.getElementById('callee').value = 'bob'; true")
        .await;
    alice.click("call").await;
    wait_call_state(bob, "incoming", Duration::from_secs(30)).await;
    bob.click("answer").await;
    for page in [alice, bob] {
        wait_call_state(page, "connected", Duration::from_secs(60)).await;
    }
}

/// Waits until the page greets `me` (its device is connected).
async fn wait_welcome(page: &mut Cdp, me: &str) {
    let expr = format!("document.getElementById('me').textContent === '{me}'");
    page.wait(&expr, Duration::from_secs(30), "the welcome")
        .await;
}

async fn wait_call_state(page: &mut Cdp, state: &str, limit: Duration) {
    let expr = format!("document.body.dataset.callState === '{state}'");
    page.wait(&expr, limit, state).await;
}

/// A browser opening `link`, and its page over DevTools.
async fn open_page(
    dir: &Path,
    name: &str,
    link: &str,
    camera: &Path,
    mic: &Path,
) -> (ChildGuard, Cdp, tempfile::TempDir) {
    open_page_with(dir, name, link, Camera::File(camera), mic).await
}

/// [`open_page`] with the cameras `camera` says.
async fn open_page_with(
    dir: &Path,
    name: &str,
    link: &str,
    camera: Camera<'_>,
    mic: &Path,
) -> (ChildGuard, Cdp, tempfile::TempDir) {
    let profile = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(dir)
        .unwrap();
    let browser = chromium(profile.path(), link, camera, mic);
    let (base, _) = link.split_once("/#").unwrap();
    let page = attach(profile.path(), base).await;
    (browser, page, profile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_and_both_decrypt() {
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let TwoPages {
        mut alice,
        mut bob,
        _guards,
    } = TwoPages::open(dir.path(), None).await;
    alice_calls_bob(&mut alice, &mut bob).await;
    wait_decrypting(&mut alice, "bob").await;
    wait_decrypting(&mut bob, "alice").await;
    // each hears the other: sound with energy, in the other's band
    for (page, other, band) in [
        (&mut alice, "bob", 650.0..1150.0),
        (&mut bob, "alice", 80.0..550.0),
    ] {
        let (rms, hz) = audio_rms(page, other).await;
        println!("{other}'s sound at RMS {rms:.3}, strongest at {hz:.0} Hz");
        assert!(
            rms > 0.01 && band.contains(&hz),
            "{other}'s sound: RMS {rms}, {hz} Hz"
        );
    }
    for (page, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        assert_none_failed(page, who).await;
        let safety = page
            .eval("document.getElementById('safety').textContent")
            .await;
        assert!(safety.as_str().is_some_and(|s| s.split(' ').count() == 12));
    }
    // both see the same safety number
    let (sa, sb) = (
        alice
            .eval("document.getElementById('safety').textContent")
            .await,
        bob.eval("document.getElementById('safety').textContent")
            .await,
    );
    assert_eq!(sa, sb);
    bob.eval("document.getElementById('hangup').click(); true")
        .await;
    for page in [&mut alice, &mut bob] {
        wait_call_state(page, "ended", Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_a_rust_device_and_both_decrypt_each_others_media() {
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // the signaling server speaks wss:// with a certificate of a CA made now, which every
    // device trusts through SOTTO_CA (the browser never talks to it: the device does)
    let (_server, url, ca) = start_tls_server(dir.path(), "app.test");
    let home = dir.path().join("home");
    register_all(&home, &ca, &url, &["alice", "bob"]);
    // bob: a Rust device that answers, stays in the call until alice hangs up
    let script = dir.path().join("bob.txt");
    std::fs::write(
        &script,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let bob = sotto(&home)
        .env("SOTTO_CA", &ca)
        .args([
            "answer",
            "--server",
            &url,
            "--server-id",
            "app.test",
            "--user",
            "bob",
        ])
        .arg("--script")
        .arg(&script)
        .arg("--record")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("bob.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("bob.err")).unwrap())
        .spawn_guarded();
    let _ = BOB_LOG.set(dir.path().join("bob.log"));

    // alice: the app; its first line is the link
    let (mut app, link) = start_app(&home, &ca, &url, "alice");
    let (base, link_token) = link.split_once("/#").unwrap();
    let host = base.trim_start_matches("http://");

    // the server side of the page's defences
    let (status, headers, _) = http_get(host, "/", host);
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{headers}"
    );
    assert!(headers.contains("x-frame-options: deny"), "{headers}");
    let (status, _, _) = http_get(host, "/", "evil.example:80");
    assert!(
        status.contains("421"),
        "a foreign Host is refused: {status}"
    );
    let (status, _, _) = http_get(host, "/../Cargo.toml", host);
    assert!(!status.contains("200"), "{status}");
    let mut bad_origin =
        format!("ws://{host}/ws").into_client_request_with_origin("http://evil.example");
    let refused = tokio_tungstenite::connect_async(bad_origin.take().unwrap()).await;
    assert!(
        refused.is_err(),
        "a WebSocket from another Origin is refused"
    );
    assert!(
        hello_refused(host, base, &"00".repeat(32)).await,
        "a wrong token is refused"
    );

    // the page, as a user would use it
    let (camera, mic) = fake_media(dir.path());
    let (_browser, mut page, _profile) = open_page(dir.path(), "alice", &link, &camera, &mic).await;
    wait_welcome(&mut page, "alice").await;
    // the link's token worked once: shown again (another local user who read it), refused
    assert!(
        hello_refused(host, base, link_token).await,
        "the link's token is refused once used"
    );
    // and the fragment is gone from the address bar
    assert_eq!(page.eval("location.hash").await, json!(""));
    page.eval(
        "document.getElementById('callee').value = 'bob'; \
         document.getElementById('call').click(); true",
    )
    .await;
    wait_call_state(&mut page, "connected", Duration::from_secs(60)).await;
    // Rust → browser: the worker decrypted bob's audio and video, and Chromium decoded the picture
    wait_decrypting(&mut page, "bob").await;
    // the picture keeps coming (frames rendered in one second) and the sound has energy
    let rendered = frames_rendered(&mut page, "bob", 1000).await;
    assert!(rendered >= 5, "frames rendered in 1 s: {rendered}");
    let (rms, _) = audio_rms(&mut page, "bob").await;
    assert!(rms > 0.01, "received audio RMS: {rms}");
    // what the person sees: a screenshot of the call screen, not blank
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap_or_default());
    assert!(
        png.len() > 30_000,
        "screenshot of {} bytes: blank?",
        png.len()
    );
    std::fs::write(dir.path().join("call-screen.png"), &png).unwrap();
    if let Some(out) = std::env::var_os("SOTTO_SCREENSHOT_OUT") {
        std::fs::write(out, &png).unwrap();
    }
    let failed = page
        .eval("document.querySelector('[data-stat=\"frames failed\"]').textContent")
        .await;
    assert_eq!(failed, json!("0 / 0"), "no frame failed in the browser");
    let safety = page
        .eval("document.getElementById('safety').textContent")
        .await;
    assert!(
        safety.as_str().is_some_and(|s| s.split(' ').count() == 12),
        "safety number shown: {safety}"
    );
    // let bob receive a few seconds of the browser's media, then hang up from the page
    tokio::time::sleep(Duration::from_secs(3)).await;
    page.eval("document.getElementById('hangup').click(); true")
        .await;
    wait_call_state(&mut page, "ended", Duration::from_secs(30)).await;

    let mut bob = bob;
    let t0 = Instant::now();
    while bob.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "bob did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = std::fs::read_to_string(dir.path().join("bob.log")).unwrap();
    assert!(
        out.contains("state: connected") && out.contains("peer hung up"),
        "bob saw:\n{out}"
    );
    let (decrypted, failed) = common::decrypted_failed(&out);
    assert!(
        decrypted > 50 && failed == 0,
        "bob decrypted the browser's frames:\n{out}"
    );
    // the browser's VP8, decrypted by bob, decodes
    let ivf = dir.path().join("bob-received.ivf");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&ivf)
        .output()
        .expect("ffprobe (ffmpeg) is required (.ci/run installs it)");
    let probe = String::from_utf8_lossy(&probe.stdout).into_owned();
    let fields: Vec<&str> = probe.trim().split(',').collect();
    assert_eq!(fields.first(), Some(&"vp8"), "{probe}");
    assert!(
        fields
            .get(3)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 10),
        "{probe}"
    );
    // and shows the browser's camera: SSIM of every received frame (scaled back to 640x480)
    // against the still colour bars the fake camera sent. VP8 at a call's bitrate keeps bars
    // well above 0.8; another picture (e.g. Chromium's default fake pattern) scores about 0.3.
    let o = Command::new("ffmpeg")
        .args(["-loglevel", "info", "-i"])
        .arg(&ivf)
        .arg("-i")
        .arg(&camera)
        .args([
            "-lavfi",
            "[0:v]scale=640:480,format=yuv420p[a];[a][1:v]ssim",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let log = text(&o);
    let ssim: f64 = log
        .split("All:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no SSIM in:\n{log}"));
    println!("SSIM of the browser's camera as bob recorded it: {ssim}");
    assert!(ssim > 0.8, "SSIM {ssim}");
    // and the browser's microphone, decrypted by bob, is the fake microphone's sound at its
    // level (ffmpeg's volumedetect: the sweep, amplitude 0.5, is -9 dB and measured -9.2; a
    // steady tone, which the browser's noise suppression fades out, measured -25.5)
    let o = Command::new("ffmpeg")
        .args(["-loglevel", "info", "-i"])
        .arg(dir.path().join("bob-received.ogg"))
        .args(["-af", "volumedetect", "-f", "null", "-"])
        .output()
        .unwrap();
    let log = text(&o);
    let mean: f64 = log
        .split("mean_volume:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no mean_volume in:\n{log}"));
    println!("mean volume of the browser's microphone as bob recorded it: {mean} dB");
    assert!(mean > -18.0, "mean volume {mean} dB");
    let _ = app.kill();
}

trait WithOrigin {
    fn into_client_request_with_origin(
        self,
        origin: &str,
    ) -> Option<tokio_tungstenite::tungstenite::handshake::client::Request>;
}

impl WithOrigin for String {
    fn into_client_request_with_origin(
        self,
        origin: &str,
    ) -> Option<tokio_tungstenite::tungstenite::handshake::client::Request> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = self.into_client_request().ok()?;
        r.headers_mut().insert("origin", origin.parse().ok()?);
        Some(r)
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// The frames of an IVF file (32-byte header, then 12-byte frame headers with a little-endian
/// size).
fn ivf_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 12 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let end = (at + 12 + len).min(data.len());
        out.push(&data[at + 12..end]);
        at = end;
    }
    out
}

/// Sends SIGTERM (a relay flushes its capture on it) and waits for the process to end.
fn terminate(child: &mut ChildGuard) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{pid} did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A group call through sotto-relay of two browsers (alice, carol: `sotto app` pages) and a
/// Rust device (bob: `sotto answer`, webrtc-rs). Alice calls bob, invites carol from her page;
/// carol answers on hers (a join: everyone ratchets); then carol hangs up on her page (a
/// leave: alice and bob rotate to generation 1) and alice ends the call. Every page decrypts
/// every member in that member's tile, bob decrypts both browsers, nobody fails a frame, and
/// the relay's capture holds only SFrame frames, none with a window of what the browsers
/// encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_a_rust_device_call_as_a_group_through_the_relay() {
    const SERVER_ID: &str = "group.test";
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let secret = common::relay_secret_file(dir.path());
    let capture = dir.path().join("capture");
    let (mut relay, relay_url) =
        common::start_relay(&secret, &["--capture", capture.to_str().unwrap()]);
    let (_server, url) = common::start_server_for_relay(dir.path(), SERVER_ID, &relay_url, &secret);
    for user in ["alice", "bob", "carol"] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    // bob: in the call until it ends around him (alice, the last other member, hangs up)
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let script = dir.path().join("bob.txt");
    std::fs::write(
        &script,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let mut bob = sotto(&home)
        .args(["answer", "--user", "bob", "--relay", &relay_url, "--script"])
        .arg(&script)
        .arg("--record")
        .arg(&rec)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("bob.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("bob.err")).unwrap())
        .spawn_guarded();
    let _ = BOB_LOG.set(dir.path().join("bob.log"));
    let app = |user: &str| {
        let mut c = sotto(&home);
        c.args(["app", "--user", user, "--relay", &relay_url]);
        start_app_with(c)
    };
    let (_app_a, link_a) = app("alice");
    let (_app_c, link_c) = app("carol");
    let (camera, _) = fake_media(dir.path());
    let alice_mic = fake_mic(dir.path(), "alice-mic", 1600);
    let (_ba, mut alice, _pa) = open_page(dir.path(), "alice", &link_a, &camera, &alice_mic).await;
    let carol_mic = fake_mic(dir.path(), "carol-mic", 900);
    let (_bc, mut carol, _pc) = open_page(dir.path(), "carol", &link_c, &camera, &carol_mic).await;
    for (page, me) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        wait_welcome(page, me).await;
    }

    // alice calls bob through the relay
    alice
        .eval(
            "document.getElementById('callee').value = 'bob'; \
             document.getElementById('call').click(); true",
        )
        .await;
    wait_call_state(&mut alice, "connected", Duration::from_secs(60)).await;
    wait_decrypting(&mut alice, "bob").await;

    // and invites carol from her page; carol answers on hers (a join: everyone ratchets)
    alice
        .eval(
            "document.getElementById('invitee').value = 'carol'; \
             document.getElementById('invite-button').click(); true",
        )
        .await;
    wait_call_state(&mut carol, "incoming", Duration::from_secs(60)).await;
    carol
        .eval("document.getElementById('answer').click(); true")
        .await;
    wait_call_state(&mut carol, "connected", Duration::from_secs(60)).await;
    for (page, me, others) in [
        (&mut alice, "alice", ["bob", "carol"]),
        (&mut carol, "carol", ["alice", "bob"]),
    ] {
        for who in others {
            wait_decrypting(page, who).await;
            let n = frames_rendered(page, who, 2000).await;
            assert!(n >= 5, "{me}'s page rendered {n} frames of {who} in 2 s");
            let (rms, hz) = audio_rms(page, who).await;
            println!("{me}'s page: {who}'s sound at RMS {rms:.3}, strongest at {hz:.0} Hz");
            assert!(rms > 0.01, "{me}'s page plays {who}'s sound at RMS {rms}");
            // each member's own sound (alice 1400-1800 Hz, carol 700-1100 Hz, bob's bundled
            // 440 Hz tone): the tile plays that member's, not another's
            let band = match who {
                "alice" => 1350.0..1850.0,
                "carol" => 650.0..1150.0,
                _ => 380.0..500.0,
            };
            assert!(
                band.contains(&hz),
                "{me}'s page: {who}'s tile sounds at {hz} Hz"
            );
        }
        // one tile per member, labelled with its name
        let tiles = page
            .eval("[...document.querySelectorAll('#remotes .tile')].map(t => t.dataset.member).join(',')")
            .await;
        assert_eq!(tiles, json!(others.join(",")), "{me}'s tiles");
        assert_none_failed(page, me).await;
    }
    // what alice sees: a tile for bob and one for carol (SOTTO_GROUP_SCREENSHOT_OUT keeps it)
    let shot = alice
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap_or_default());
    assert!(
        png.len() > 30_000,
        "screenshot of {} bytes: blank?",
        png.len()
    );
    if let Some(out) = std::env::var_os("SOTTO_GROUP_SCREENSHOT_OUT") {
        std::fs::write(out, &png).unwrap();
    }
    // the join ratcheted bob's key: alice's worker follows him to a later step of generation 0
    alice
        .wait(
            &format!("(t => !!t && +t.dataset.step >= 1)({})", tile("bob")),
            Duration::from_secs(30),
            "bob's ratcheted key",
        )
        .await;
    // carol's worker opened alice's frames under a step past the one alice began with
    assert!(tile_number(&mut carol, "alice", "step").await >= Some(1));

    // carol leaves from her page (a leave: alice and bob rotate to generation 1)
    carol
        .eval("document.getElementById('hangup').click(); true")
        .await;
    wait_call_state(&mut carol, "ended", Duration::from_secs(30)).await;
    carol
        .wait(
            "document.querySelectorAll('#remotes .tile').length === 0",
            Duration::from_secs(10),
            "no tile once the call ended",
        )
        .await;
    alice
        .wait(
            &format!("{} === null", tile("carol")),
            Duration::from_secs(30),
            "carol's tile removed",
        )
        .await;
    alice
        .wait(
            &format!("(t => !!t && +t.dataset.generation === 1)({})", tile("bob")),
            Duration::from_secs(60),
            "bob's rotated key in use",
        )
        .await;
    // and keeps decrypting bob under it, with nothing failed
    let before = tile_number(&mut alice, "bob", "videoDecrypted")
        .await
        .unwrap();
    alice
        .wait(
            &format!(
                "(t => !!t && +t.dataset.videoDecrypted > {} && t.dataset.generation === '1')({})",
                before + 20,
                tile("bob")
            ),
            Duration::from_secs(60),
            "bob's frames under generation 1",
        )
        .await;
    assert_none_failed(&mut alice, "alice").await;
    let n = frames_rendered(&mut alice, "bob", 2000).await;
    assert!(
        n >= 5,
        "alice's page rendered {n} frames of bob in 2 s after the rotation"
    );
    // alice seals under generation 1 too: let 60 more video frames go to bob under it
    alice
        .wait(
            "document.querySelector('[data-stat=\"our key generation\"]')?.textContent === '1'",
            Duration::from_secs(30),
            "our key generation 1",
        )
        .await;
    let sent = "+document.querySelector('[data-stat=\"frames sent (audio/video)\"]').textContent.split(' / ')[1]";
    let before = alice.eval(sent).await.as_f64().unwrap();
    alice
        .wait(
            &format!("{sent} > {}", before + 60.0),
            Duration::from_secs(60),
            "60 more video frames sent",
        )
        .await;
    alice
        .eval("document.getElementById('hangup').click(); true")
        .await;
    wait_call_state(&mut alice, "ended", Duration::from_secs(30)).await;

    // bob: decrypted both browsers, failed nothing, rotated on carol's leave
    let t0 = Instant::now();
    while bob.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "bob did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = std::fs::read_to_string(dir.path().join("bob.log")).unwrap();
    assert!(
        out.contains("group: carol joined") && out.contains("group: carol left"),
        "bob saw:\n{out}"
    );
    assert!(out.contains("key generation own 1 peer 1"), "bob:\n{out}");
    let (decrypted, failed) = common::decrypted_failed(&out);
    assert!(decrypted > 100 && failed == 0, "bob:\n{out}");
    // one recording per browser (bob-received.ivf of the first sender, bob-received-from-<id>
    // of the other), each with VP8 frames: what the browsers encoded, in clear
    let recordings: Vec<std::path::PathBuf> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("bob-received") && n.ends_with(".ivf")
        })
        .collect();
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    let mut plain = Vec::new();
    for f in &recordings {
        let data = std::fs::read(f).unwrap();
        let frames: Vec<Vec<u8>> = ivf_frames(&data).into_iter().map(<[u8]>::to_vec).collect();
        assert!(frames.len() > 10, "{} frames in {f:?}", frames.len());
        plain.extend(frames);
    }

    // the relay's capture: every frame a whole SFrame frame (Codec::split) whose KID names
    // its sender, and no 16-byte window of a browser's encoded picture past the clear bytes
    terminate(&mut relay);
    let records =
        sotto_relay::capture::parse(&std::fs::read(capture.join("capture.bin")).unwrap()).unwrap();
    let re = sotto_relay::capture::reassemble(&records);
    assert_eq!(re.undepacketizable, 0, "{re:?}");
    let mut kids: std::collections::BTreeMap<String, std::collections::BTreeSet<(u64, u64)>> =
        Default::default();
    let suite = sotto_frame::CipherSuite::default();
    let mut windows = std::collections::HashSet::new();
    for f in &plain {
        let clear = if f[0] & 1 == 0 { 10 } else { 3 };
        for w in f[clear.min(f.len())..].windows(16) {
            windows.insert(w);
        }
    }
    assert!(windows.len() > 1000, "{} windows", windows.len());
    for (index, f) in &re.frames {
        let codec = match f.kind {
            sotto_relay::capture::Kind::Video => sotto_frame::Codec::Vp8,
            sotto_relay::capture::Kind::Audio => sotto_frame::Codec::Opus,
        };
        let parts = codec.split(suite, &f.frame).unwrap_or_else(|e| {
            panic!(
                "captured {:?} frame of {} at {index}: {e}",
                f.kind, f.sender
            )
        });
        let (sid, generation, step) = sotto_frame::KeyId::split_kid(parts.header.kid);
        assert_eq!(
            sid,
            sotto_call::engine::sender_id_for(&f.sender),
            "KID of {}",
            f.sender
        );
        kids.entry(f.sender.clone())
            .or_default()
            .insert((generation, step));
        assert!(
            !f.frame.windows(16).any(|w| windows.contains(w)),
            "captured frame of {} at {index} holds a window of a plaintext frame",
            f.sender
        );
    }
    let frames = re.frames.len();
    println!(
        "relay capture: {} records, {frames} frames ({} broken records), keys per sender: {kids:?}",
        records.len(),
        re.broken
    );
    assert!(frames > 300, "{frames} frames captured");
    // alice and bob ratcheted on carol's join (a step past 0 in generation 0) and rotated on
    // her leave (generation 1); carol sent under generation 0
    for who in ["alice", "bob"] {
        let k = &kids[who];
        assert!(k.iter().any(|&(g, s)| g == 0 && s >= 1), "{who}: {k:?}");
        assert!(k.iter().any(|&(g, _)| g == 1), "{who}: {k:?}");
    }
    assert!(kids["carol"].iter().all(|&(g, _)| g == 0), "{kids:?}");
}

/// A Rust device calls the browser (the other direction than the calls above), both in
/// relay-only (privacy) mode, through a real coturn the signaling server advertises (its
/// `[turn]` section, REST credentials): media flows only through TURN relay candidates on both
/// sides, both decrypt, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_device_calls_the_browser_relay_only_through_coturn() {
    use sotto_testkit::coturn::{Coturn, CoturnOptions};
    const SERVER_ID: &str = "turn.test";
    const SECRET: &str = "app-test-turn-secret";
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let turn = Coturn::start(&CoturnOptions {
        dir: dir.path(),
        netns: None,
        ip: "127.0.0.1".parse().unwrap(),
        port,
        secret: SECRET,
        streams: None,
    });
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
db = "{db}"
server_id = "{SERVER_ID}"
[turn]
secret = "{SECRET}"
uris = ["stun:127.0.0.1:{port}", "turn:127.0.0.1:{port}?transport=udp"]
"#,
            db = dir.path().join("s.db").display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(common::SOTTO);
    cmd.arg("server").arg("--config").arg(&config);
    let (_server, addr) = common::start_command(cmd, "listening on");
    let url = format!("ws://{addr}");
    let home = dir.path().join("home");
    for user in ["alice", "bob"] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    let mut c = sotto(&home);
    c.args(["app", "--user", "alice", "--relay-only"]);
    let (_app, link) = start_app_with(c);
    let (camera, mic) = fake_media(dir.path());
    let (_browser, mut page, _profile) = open_page(dir.path(), "alice", &link, &camera, &mic).await;
    wait_welcome(&mut page, "alice").await;
    // bob calls; the page rings and the user answers
    let script = dir.path().join("bob.txt");
    std::fs::write(&script, "wait-state connected\nwait-state ended\n").unwrap();
    let mut bob = sotto(&home)
        .args(["call", "alice", "--user", "bob", "--relay-only", "--script"])
        .arg(&script)
        // what bob receives is written in the test's directory, never the working directory
        .arg("--record")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("bob.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("bob.err")).unwrap())
        .spawn_guarded();
    let _ = BOB_LOG.set(dir.path().join("bob.log"));
    wait_call_state(&mut page, "incoming", Duration::from_secs(60)).await;
    page.eval("document.getElementById('answer').click(); true")
        .await;
    wait_call_state(&mut page, "connected", Duration::from_secs(60)).await;
    wait_decrypting(&mut page, "bob").await;
    // the page's selected pair: a relay candidate on both ends (Chromium's getStats)
    page.wait(
        "document.querySelector('[data-stat=\"candidate pair\"]')?.textContent === 'relay → relay'",
        Duration::from_secs(30),
        "a relay → relay pair",
    )
    .await;
    let rendered = frames_rendered(&mut page, "bob", 2000).await;
    assert!(rendered >= 5, "frames rendered in 2 s: {rendered}");
    assert_none_failed(&mut page, "alice").await;
    // let bob receive 60 video frames of the browser's, then hang up from the page
    let sent = "+document.querySelector('[data-stat=\"frames sent (audio/video)\"]').textContent.split(' / ')[1]";
    let before = page.eval(sent).await.as_f64().unwrap();
    page.wait(
        &format!("{sent} > {}", before + 60.0),
        Duration::from_secs(60),
        "60 more video frames sent",
    )
    .await;
    page.eval("document.getElementById('hangup').click(); true")
        .await;
    wait_call_state(&mut page, "ended", Duration::from_secs(30)).await;
    let t0 = Instant::now();
    while bob.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "bob did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = common::summary(
        "bob",
        std::fs::read_to_string(dir.path().join("bob.log")).unwrap(),
    );
    println!("bob: pair {:?}/{:?}", s.local, s.remote);
    assert!(s.decrypted > 50 && s.failed == 0, "bob:\n{}", s.out);
    assert_eq!(
        s.local,
        Some(sotto_call::media::CandidateType::Relay),
        "bob's side of the pair:\n{}\ncoturn:\n{}",
        s.out,
        turn.log_text()
    );
    // what bob was told about the browser: relay candidates only
    assert!(!s.remote_candidates.is_empty(), "{}", s.out);
    for (typ, _, _) in &s.remote_candidates {
        assert_eq!(*typ, sotto_call::media::CandidateType::Relay, "{}", s.out);
    }
}

impl Cdp {
    /// Clicks the element `#id` as a user does: the mouse pressed and released at its centre
    /// (DevTools' `Input.dispatchMouseEvent`, not a script's `click()`).
    async fn click(&mut self, id: &str) {
        self.click_on(&format!("document.getElementById('{id}')"))
            .await;
    }

    /// Clicks the element the JavaScript expression `element` gives, with the mouse (as
    /// [`Cdp::click`]).
    async fn click_on(&mut self, element: &str) {
        let at = self
            .eval(&format!(
                "(e => {{ e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})({element})"
            ))
            .await;
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Presses End on the element `#id` (a closed `<select>` then picks its last option and
    /// says `change`, as a user's keyboard does).
    async fn press_end(&mut self, id: &str) {
        self.eval(&format!("document.getElementById('{id}').focus(); true"))
            .await;
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "End", "code": "End",
                       "windowsVirtualKeyCode": 35, "nativeVirtualKeyCode": 35}),
            )
            .await;
        }
    }

    /// Counts, from now on, the page's SDP steps (`window.sdpSteps`: every set local or remote
    /// description) and the tracks it hands to senders (`window.replaced`: "kind:label").
    async fn watch_negotiation(&mut self) {
        self.eval(
            "window.sdpSteps = 0; window.replaced = []; \
             for (const m of ['setLocalDescription', 'setRemoteDescription']) { \
               const f = RTCPeerConnection.prototype[m]; \
               RTCPeerConnection.prototype[m] = function (...a) { window.sdpSteps++; return f.apply(this, a); }; } \
             const r = RTCRtpSender.prototype.replaceTrack; \
             RTCRtpSender.prototype.replaceTrack = function (t) { \
               window.replaced.push(t ? `${t.kind}:${t.label}` : 'none'); return r.call(this, t); }; true",
        )
        .await;
    }
}

/// The mean colour (RGB, 0-255) of the picture `who`'s tile shows now.
async fn tile_colour(page: &mut Cdp, who: &str) -> [f64; 3] {
    let v = page
        .eval(&format!(
            "(v => {{ const c = document.createElement('canvas'); c.width = 64; c.height = 48; \
             const x = c.getContext('2d'); x.drawImage(v, 0, 0, 64, 48); \
             const p = x.getImageData(0, 0, 64, 48).data; const m = [0, 0, 0]; \
             for (let i = 0; i < p.length; i += 4) for (let k = 0; k < 3; k++) m[k] += p[i + k]; \
             return m.map((s) => s / (p.length / 4)); }})({}.querySelector('video'))",
            tile(who)
        ))
        .await;
    let c = |k: usize| v[k].as_f64().unwrap_or(-1.0);
    [c(0), c(1), c(2)]
}

/// Polls `who`'s tile on `page` until its picture's mean colour satisfies `ok` (or 60 s pass).
async fn wait_colour(
    page: &mut Cdp,
    who: &str,
    what: &str,
    ok: impl Fn([f64; 3]) -> bool,
) -> [f64; 3] {
    let t0 = Instant::now();
    loop {
        let c = tile_colour(page, who).await;
        if ok(c) {
            println!(
                "{who}'s tile: {what}, mean colour {c:.0?} after {:?}",
                t0.elapsed()
            );
            return c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{who}'s tile never showed {what}: mean colour {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls the loudest RMS of `who`'s sound on `page` until `ok` holds (or 60 s pass).
async fn wait_sound(page: &mut Cdp, who: &str, what: &str, ok: impl Fn(f64) -> bool) -> (f64, f64) {
    let t0 = Instant::now();
    loop {
        let (rms, hz) = audio_rms(page, who).await;
        if ok(rms) {
            println!(
                "{who}'s sound: {what}, RMS {rms:.4} at {hz:.0} Hz after {:?}",
                t0.elapsed()
            );
            return (rms, hz);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{who}'s sound never was {what}: RMS {rms}"
        );
    }
}

/// Asserts that `page` is still in the call and showed no error (the unsealed-frame check
/// ends the call with one) and that its worker failed no frame.
async fn assert_still_sealed(page: &mut Cdp, me: &str) {
    let (state, error) = (
        page.eval("document.body.dataset.callState").await,
        page.eval("document.getElementById('error').hidden ? '' : document.getElementById('error').textContent")
            .await,
    );
    assert_eq!(state, json!("connected"), "{me}: {error}");
    assert_eq!(error, json!(""), "{me}'s page shows an error");
    assert_none_failed(page, me).await;
}

/// Below this loudest RMS a tile is silent (a muted microphone's Opus decodes to about 0;
/// the fake microphones, amplitude 0.5, arrive around 0.3).
const SILENCE: f64 = 0.003;
/// Above this loudest RMS a tile plays sound.
const SOUND: f64 = 0.01;

/// Two browsers in a call; alice presses "Mute mic" on her page (a real mouse click through
/// DevTools): bob's tile for alice falls silent while her picture keeps coming; "Mute mic"
/// again: her sound is back. "Camera off": bob's tile for her turns black (Chromium sends
/// black frames for a disabled track, at the camera's rate, sealed like any other); "Camera
/// off" again: her colour
/// bars are back. Neither page ever sends a frame the worker did not seal (the page's
/// unsealed-frame check would end the call) and no frame fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_camera_off_from_the_page_reach_the_other_browser() {
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let TwoPages {
        mut alice,
        mut bob,
        _guards,
    } = TwoPages::open(dir.path(), None).await;
    alice_calls_bob(&mut alice, &mut bob).await;
    wait_decrypting(&mut bob, "alice").await;
    wait_sound(&mut bob, "alice", "heard", |r| r > SOUND).await;
    // colour bars: bright on average (black is 0)
    let bars = |c: [f64; 3]| c.iter().sum::<f64>() > 200.0;
    wait_colour(&mut bob, "alice", "her colour bars", bars).await;

    let pressed = |id: &str, on: bool| {
        format!("document.getElementById('{id}').getAttribute('aria-pressed') === '{on}'")
    };
    alice.click("mute-audio").await;
    alice
        .wait(
            &pressed("mute-audio", true),
            Duration::from_secs(30),
            "mic muted",
        )
        .await;
    wait_sound(&mut bob, "alice", "silent", |r| r < SILENCE).await;
    let n = frames_rendered(&mut bob, "alice", 2000).await;
    assert!(
        n >= 5,
        "bob's page rendered {n} frames of muted alice in 2 s"
    );
    wait_colour(&mut bob, "alice", "her colour bars while muted", bars).await;
    alice.click("mute-audio").await;
    alice
        .wait(
            &pressed("mute-audio", false),
            Duration::from_secs(30),
            "mic on",
        )
        .await;
    wait_sound(&mut bob, "alice", "heard again", |r| r > SOUND).await;

    alice.click("mute-video").await;
    alice
        .wait(
            &pressed("mute-video", true),
            Duration::from_secs(30),
            "camera off",
        )
        .await;
    let black = |c: [f64; 3]| c.iter().all(|&v| (0.0..8.0).contains(&v));
    wait_colour(&mut bob, "alice", "black", black).await;
    // Chromium keeps sending (black) frames for a disabled track, at the camera's rate:
    // the picture, not the frame count, says the camera is off
    let off = frames_rendered(&mut bob, "alice", 2000).await;
    println!("bob's page rendered {off} (black) frames of alice in 2 s with her camera off");
    // and her sound still comes
    wait_sound(&mut bob, "alice", "heard with the camera off", |r| {
        r > SOUND
    })
    .await;
    alice.click("mute-video").await;
    alice
        .wait(
            &pressed("mute-video", false),
            Duration::from_secs(30),
            "camera on",
        )
        .await;
    wait_colour(&mut bob, "alice", "her colour bars again", bars).await;
    let on = frames_rendered(&mut bob, "alice", 2000).await;
    println!("bob's page rendered {on} frames of alice in 2 s with her camera on again");
    assert!(on >= 5, "{on} frames in 2 s with the camera on again");
    for (page, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        assert_still_sealed(page, me).await;
    }
    alice.click("hangup").await;
    for page in [&mut alice, &mut bob] {
        wait_call_state(page, "ended", Duration::from_secs(30)).await;
    }
}

/// Alice's browser has three cameras (Chromium's generated ones; as Chromium offers one camera
/// only when it plays a file, they all draw the same picture, and the second is a depth camera
/// WebRTC cannot send) and three microphones (all playing her file). In a call with bob she
/// picks her last camera with the keyboard: its track goes into the video sender with no SDP
/// step on either page, and as the page stops the old camera, bob's tile keeps getting her
/// frames (decrypted, none failing, rendered) only through the new one. With her camera off a
/// switch ("Switch camera": the next one, her first) keeps it off (black on bob's side), and
/// "Camera off" again shows her first camera. Then she picks her last microphone: the audio
/// sender gets that device's track, still without renegotiation, and bob hears her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_camera_and_microphone_reaches_the_other_browser_without_renegotiation() {
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let TwoPages {
        mut alice,
        mut bob,
        _guards,
    } = TwoPages::open(dir.path(), Some(Camera::Generated(3))).await;
    // her page lists her cameras and microphones
    alice
        .wait(
            "document.getElementById('camera').options.length === 3 && \
             document.getElementById('microphone').options.length === 3",
            Duration::from_secs(30),
            "three cameras and three microphones in the pickers",
        )
        .await;
    alice_calls_bob(&mut alice, &mut bob).await;
    wait_decrypting(&mut bob, "alice").await;
    let green = |c: [f64; 3]| c[1] > 90.0 && c[1] > c[0] + 60.0 && c[1] > c[2] + 60.0;
    let black = |c: [f64; 3]| c.iter().all(|&v| (0.0..8.0).contains(&v));
    wait_colour(&mut bob, "alice", "her first camera", green).await;
    for page in [&mut alice, &mut bob] {
        page.watch_negotiation().await;
    }
    let camera_is = |label: &str| {
        format!("document.getElementById('camera').selectedOptions[0].textContent === '{label}'")
    };
    // alice's frames keep reaching bob's tile: 30 more decrypted, and rendered
    async fn keeps_coming(bob: &mut Cdp, what: &str) {
        let n = tile_number(bob, "alice", "videoDecrypted").await.unwrap();
        bob.wait(
            &format!("+{}.dataset.videoDecrypted > {}", tile("alice"), n + 30),
            Duration::from_secs(60),
            &format!("30 more frames of alice decrypted {what}"),
        )
        .await;
        let r = frames_rendered(bob, "alice", 2000).await;
        assert!(
            r >= 5,
            "bob's page rendered {r} frames of alice in 2 s {what}"
        );
    }

    alice.press_end("camera").await;
    alice
        .wait(
            &camera_is("fake_device_2"),
            Duration::from_secs(30),
            "her last camera picked",
        )
        .await;
    alice
        .wait(
            "window.replaced.includes('video:fake_device_2')",
            Duration::from_secs(30),
            "her last camera's track in the video sender",
        )
        .await;
    // the first camera is stopped: what bob gets now comes from the last one
    alice
        .wait(
            "document.getElementById('local').srcObject.getVideoTracks().length === 1",
            Duration::from_secs(10),
            "one camera in the preview",
        )
        .await;
    keeps_coming(&mut bob, "after the switch").await;
    wait_colour(&mut bob, "alice", "her last camera", green).await;

    // camera off, then "Switch camera" (the next one: her first): still off
    alice.click("mute-video").await;
    wait_colour(&mut bob, "alice", "black (camera off)", black).await;
    alice.click("switch-camera").await;
    alice
        .wait(
            &camera_is("fake_device_0"),
            Duration::from_secs(30),
            "her first camera again",
        )
        .await;
    keeps_coming(&mut bob, "with the camera off").await;
    for _ in 0..10 {
        let c = tile_colour(&mut bob, "alice").await;
        assert!(black(c), "a switch turned alice's camera back on: {c:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    alice.click("mute-video").await;
    wait_colour(&mut bob, "alice", "her first camera, on again", green).await;
    keeps_coming(&mut bob, "with the camera on again").await;

    // her last microphone, picked with the keyboard
    let before = alice
        .eval("document.getElementById('microphone').value")
        .await;
    alice.press_end("microphone").await;
    alice
        .wait(
            "window.replaced.some((r) => r.startsWith('audio:'))",
            Duration::from_secs(30),
            "a microphone track handed to the audio sender",
        )
        .await;
    let (now, picked) = (
        alice
            .eval("document.getElementById('microphone').value")
            .await,
        alice
            .eval("document.getElementById('microphone').selectedOptions[0].textContent")
            .await,
    );
    assert_ne!(now, before, "the microphone picker did not move");
    let replaced = alice.eval("window.replaced").await;
    assert!(
        replaced
            .as_array()
            .unwrap()
            .contains(&json!(format!("audio:{}", picked.as_str().unwrap()))),
        "{replaced} (picked {picked})"
    );
    wait_sound(&mut bob, "alice", "heard from her last microphone", |r| {
        r > SOUND
    })
    .await;

    for (page, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        assert_eq!(
            page.eval("window.sdpSteps").await,
            json!(0),
            "{me} renegotiated"
        );
        assert_still_sealed(page, me).await;
    }
    println!("alice's page handed these tracks to its senders: {replaced}");
    alice.click("hangup").await;
    for page in [&mut alice, &mut bob] {
        wait_call_state(page, "ended", Duration::from_secs(30)).await;
    }
}

/// Bob's device 1 gets a new identity key (his second device re-keys it, as a reinstall or a
/// server substituting keys would), and the new key registers. The same steps as the account
/// test's identity change.
async fn rekey_bob(home: &Path, url: &str, server_id: &str) {
    use sotto_call::sealed::Device;
    use sotto_ratchet::{IdentityKeyPair, StoreKeySource};
    use sotto_server::tls::ClientTls;
    let new_kp = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    let key = home.join("bob/store.key");
    let (bob, _ev) = Device::load(
        &home.join("bob"),
        StoreKeySource::KeyFile(&key),
        Some((url, server_id)),
        &ClientTls::default(),
    )
    .await
    .unwrap();
    let second = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    bob.client().add_device(2, &second.public()).await.unwrap();
    let (bob2, _ev2) = sotto_server::Client::connect(sotto_server::ClientConfig::new(
        url, server_id, "bob", 2, second,
    ))
    .await
    .unwrap();
    assert!(bob2.add_device(1, &new_kp.public()).await.unwrap());
    Device::register_with_identity(url, &ClientTls::default(), server_id, "bob", new_kp)
        .await
        .unwrap();
}

/// Bob's identity key changes after alice's device first sealed a call to him. Alice dials him
/// from her page: the device refuses the call and the page shows the warning with both safety
/// numbers (the trusted one and the one the server now offers). A wrong number typed into the
/// page is refused by the device (nothing changes); the right one, typed and confirmed with
/// Trust, goes through the device's trust path (`sotto trust`'s): afterwards `sotto trust bob`
/// says the new key is the one trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_identity_is_compared_and_trusted_from_the_page() {
    const SERVER_ID: &str = "trust.test";
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::start_server(dir.path(), SERVER_ID);
    let home = dir.path().join("home");
    for user in ["alice", "bob"] {
        let o = sotto(&home)
            .args(["register", "--user", user, "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    let app = || {
        let mut c = sotto(&home);
        c.args(["app", "--user", "alice"]);
        start_app_with(c)
    };
    let (camera, mic) = fake_media(dir.path());
    async fn dial(page: &mut Cdp) {
        page.eval("document.getElementById('callee').value = 'bob'; true")
            .await;
        page.click("call").await;
    }
    // alice's device seals a call to bob's first key (bob is away: it only rings), then hangs up
    let (mut first_app, link) = app();
    let (first_browser, mut page, _p1) =
        open_page(dir.path(), "alice1", &link, &camera, &mic).await;
    wait_welcome(&mut page, "alice").await;
    dial(&mut page).await;
    wait_call_state(&mut page, "ringing", Duration::from_secs(60)).await;
    page.click("hangup").await;
    wait_call_state(&mut page, "ended", Duration::from_secs(30)).await;
    drop(first_browser);
    let _ = first_app.kill();
    let _ = first_app.wait();

    // the number alice's device now trusts for bob, as `sotto trust` shows it
    let trust = || {
        sotto(&home)
            .args(["trust", "bob", "--user", "alice", "--server", &url])
            .args(["--server-id", SERVER_ID])
            .output()
            .unwrap()
    };
    let o = trust();
    assert!(o.status.success(), "{}", text(&o));
    let trusted = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("safety number: "))
        .unwrap_or_else(|| panic!("{}", text(&o)))
        .trim()
        .to_owned();

    rekey_bob(&home, &url, SERVER_ID).await;

    // alice's device again, a new page: dialing bob meets his new key
    let (mut app2, link) = app();
    let (_browser, mut page, _p2) = open_page(dir.path(), "alice2", &link, &camera, &mic).await;
    wait_welcome(&mut page, "alice").await;
    dial(&mut page).await;
    page.wait(
        "!document.getElementById('identity-warning').hidden && \
         !document.getElementById('identity-compare').hidden",
        Duration::from_secs(60),
        "the identity warning with both numbers",
    )
    .await;
    let (old, new) = (
        page.eval("document.getElementById('identity-old').textContent")
            .await,
        page.eval("document.getElementById('identity-new').textContent")
            .await,
    );
    println!("bob's safety number: trusted {old}, offered {new}");
    assert_eq!(old, json!(trusted), "the number trusted until now");
    let new = new.as_str().unwrap().to_owned();
    assert_eq!(new.split(' ').count(), 12, "{new}");
    assert_ne!(json!(new), old);

    // a wrong number: the device refuses, the numbers stay shown
    let mut wrong = new.clone().into_bytes();
    wrong[0] = if wrong[0] == b'1' { b'2' } else { b'1' };
    let errors = "document.querySelectorAll('#event-list li[data-kind=\"error\"]').length";
    let before = page.eval(errors).await.as_u64().unwrap();
    /// Types `number` into the page's safety-number field (as keyboard input) and presses Trust.
    async fn type_number(page: &mut Cdp, number: String) {
        page.eval("(e => { e.value = ''; e.focus(); return true; })(document.getElementById('trust-number'))")
            .await;
        page.call("Input.insertText", json!({"text": number})).await;
        page.click("trust-button").await;
    }
    type_number(&mut page, String::from_utf8(wrong).unwrap()).await;
    page.wait(
        &format!("{errors} > {before}"),
        Duration::from_secs(30),
        "the wrong number refused",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('identity-compare').hidden")
            .await,
        json!(false)
    );
    // the right one, without spaces as a person may type it
    type_number(&mut page, new.replace(' ', "")).await;
    page.wait(
        "document.querySelector('#event-list li[data-kind=\"identity_trusted\"]') !== null && \
         document.getElementById('identity-compare').hidden && \
         document.getElementById('identity-warning').hidden",
        Duration::from_secs(30),
        "the new key trusted",
    )
    .await;
    let _ = app2.kill();
    let _ = app2.wait();
    // the device keeps it: `sotto trust` finds the offered key already trusted
    let o = trust();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already trusted") && text(&o).contains(&new),
        "{}",
        text(&o)
    );
}

/// The contact row of `who` on the call screen (null when there is none).
fn contact(who: &str) -> String {
    format!("document.querySelector('#contact-list li[data-contact=\"{who}\"]')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_list_shows_known_peers_with_their_devices_and_calls_one() {
    const SERVER_ID: &str = "contacts.test";
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::start_server(dir.path(), SERVER_ID);
    let home = dir.path().join("home");
    let client = |c: &mut Command, user: &str| {
        c.args(["--user", user, "--server", &url, "--server-id", SERVER_ID]);
    };
    for user in ["alice", "bob", "carol"] {
        let mut c = sotto(&home);
        c.arg("register");
        client(&mut c, user);
        let o = c.output().unwrap();
        assert!(o.status.success(), "register {user}: {}", text(&o));
    }
    // alice's device knows bob before the app starts: she trusted his key as `sotto trust`
    // does after comparing numbers
    let trust = |number: Option<&str>| {
        let mut c = sotto(&home);
        c.args(["trust", "bob"]);
        if let Some(n) = number {
            c.args(["--safety-number", n]);
        }
        client(&mut c, "alice");
        c.output().unwrap()
    };
    let o = trust(None);
    let offered = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("the server now offers:"))
        .unwrap_or_else(|| panic!("{}", text(&o)))
        .trim()
        .to_owned();
    let o = trust(Some(&offered));
    assert!(o.status.success(), "{}", text(&o));

    let mut c = sotto(&home);
    c.arg("app");
    client(&mut c, "alice");
    let (_app, link) = start_app_with(c);
    let (camera, mic) = fake_media(dir.path());
    let (_browser, mut page, _profile) = open_page(dir.path(), "alice", &link, &camera, &mic).await;
    // on connect: bob, with the one device the server lists for him
    page.wait(
        &format!(
            "(c => !!c && c.dataset.devices === '1')({})",
            contact("bob")
        ),
        Duration::from_secs(60),
        "bob in the contacts list with 1 device",
    )
    .await;
    assert_eq!(
        page.eval(&format!(
            "{}.querySelector('.contact-name').textContent",
            contact("bob")
        ))
        .await,
        json!("bob")
    );
    assert_eq!(
        page.eval(&format!("{} === null", contact("carol"))).await,
        json!(true),
        "carol is not known yet"
    );
    // after a call ends the list comes again: carol, called by name (she is away: it only
    // rings), is in it now
    page.eval("document.getElementById('callee').value = 'carol'; true")
        .await;
    page.click("call").await;
    wait_call_state(&mut page, "ringing", Duration::from_secs(60)).await;
    page.click("hangup").await;
    wait_call_state(&mut page, "ended", Duration::from_secs(30)).await;
    page.wait(
        &format!(
            "(c => !!c && c.dataset.devices === '1')({})",
            contact("carol")
        ),
        Duration::from_secs(60),
        "carol in the contacts list after the call",
    )
    .await;
    let names = page
        .eval(
            "[...document.querySelectorAll('#contact-list .contact-name')].map(e => e.textContent)",
        )
        .await;
    assert_eq!(names, json!(["bob", "carol"]));

    // bob's Call button dials him as the name field does: his Rust device rings and answers,
    // and the page decrypts him
    let script = dir.path().join("bob.txt");
    std::fs::write(
        &script,
        "wait-state incoming\nanswer\nwait-state connected\nwait-state ended\n",
    )
    .unwrap();
    let mut c = sotto(&home);
    c.arg("answer");
    client(&mut c, "bob");
    let mut bob = c
        .arg("--script")
        .arg(&script)
        .stdout(std::fs::File::create(dir.path().join("bob.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("bob.err")).unwrap())
        .spawn_guarded();
    page.eval("document.getElementById('callee').value = ''; true")
        .await;
    page.click_on(&format!(
        "{}.querySelector('button.contact-call')",
        contact("bob")
    ))
    .await;
    wait_call_state(&mut page, "connected", Duration::from_secs(90)).await;
    assert_eq!(
        page.eval("document.getElementById('peer').textContent")
            .await,
        json!("↔ bob")
    );
    wait_decrypting(&mut page, "bob").await;
    page.click("hangup").await;
    wait_call_state(&mut page, "ended", Duration::from_secs(30)).await;
    let t0 = Instant::now();
    while bob.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "bob did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
