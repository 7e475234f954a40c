#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sotto app` with a real browser: Chromium (headless, fake camera and microphone) opens the
//! call screen, the test clicks "Call" like a user (over the DevTools protocol), a Rust device
//! (`sotto answer --script`, webrtc-rs) answers, and media flows both ways through SFrame:
//! the page's frame worker decrypts the Rust device's Opus and VP8 (and Chromium decodes the
//! picture), the Rust device decrypts and records the browser's. Then the page hangs up.
//! The signaling server is `wss://` with a certificate of a CA made by the test.
//! Also: the page is refused without the token, from another Origin, and under another Host.

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
/// can be compared with it) and a 440 Hz tone, made by ffmpeg.
fn fake_media(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (y4m, wav) = (dir.join("camera.y4m"), dir.join("mic.wav"));
    let runs: [(&[&str], &Path); 2] = [
        (
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
        ),
        (
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "3",
            ],
            &wav,
        ),
    ];
    for (args, out) in runs {
        let o = Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error"])
            .args(args)
            .arg(out)
            .output()
            .expect("ffmpeg is required (.ci/run installs it)");
        assert!(o.status.success(), "{}", text(&o));
    }
    (y4m, wav)
}

fn chromium(profile: &Path, url: &str, camera: &Path, mic: &Path) -> ChildGuard {
    sotto_testkit::browser::chromium(profile)
        .args([
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
            "--window-size=1100,900",
        ])
        .arg(format!(
            "--use-file-for-fake-video-capture={}",
            camera.display()
        ))
        .arg(format!(
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
    let mut app = sotto(home)
        .env("SOTTO_CA", ca)
        .args([
            "app",
            "--server",
            url,
            "--server-id",
            "app.test",
            "--user",
            user,
        ])
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

/// Waits until the page's worker decrypted more than 20 audio and 20 video frames and the
/// page shows the remote picture.
async fn wait_decrypting(page: &mut Cdp, who: &str) {
    page.wait(
        "(() => { const c = document.querySelector('[data-stat=\"frames decrypted\"]'); \
         if (!c) return false; const [a, v] = c.textContent.split(' / ').map(Number); \
         return a > 20 && v > 20; })()",
        Duration::from_secs(60),
        &format!("frames decrypted from {who}"),
    )
    .await;
    page.wait(
        "document.getElementById('remote').videoWidth > 0",
        Duration::from_secs(30),
        &format!("{who}'s picture"),
    )
    .await;
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
    let (_server, url, ca) = start_tls_server(dir.path(), "app.test");
    let home = dir.path().join("home");
    register_all(&home, &ca, &url, &["alice", "bob"]);
    let (camera, mic) = fake_media(dir.path());
    let (_a, link_a) = start_app(&home, &ca, &url, "alice");
    let (_b, link_b) = start_app(&home, &ca, &url, "bob");
    let (_ba, mut alice, _pa) = open_page(dir.path(), "alice", &link_a, &camera, &mic).await;
    let (_bb, mut bob, _pb) = open_page(dir.path(), "bob", &link_b, &camera, &mic).await;
    for (page, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        page.wait(
            &format!("document.getElementById('me').textContent === '{me}'"),
            Duration::from_secs(30),
            "the welcome",
        )
        .await;
    }
    alice
        .eval(
            "document.getElementById('callee').value = 'bob'; \
             document.getElementById('call').click(); true",
        )
        .await;
    wait_call_state(&mut bob, "incoming", Duration::from_secs(30)).await;
    bob.eval("document.getElementById('answer').click(); true")
        .await;
    for page in [&mut alice, &mut bob] {
        wait_call_state(page, "connected", Duration::from_secs(60)).await;
    }
    wait_decrypting(&mut alice, "bob").await;
    wait_decrypting(&mut bob, "alice").await;
    for page in [&mut alice, &mut bob] {
        let failed = page
            .eval("document.querySelector('[data-stat=\"frames failed\"]').textContent")
            .await;
        if failed != json!("0 / 0") {
            panic!(
                "frames failed {failed}: {}",
                page.eval("document.body.innerText").await
            );
        }
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
    page.wait(
        "document.getElementById('me').textContent === 'alice'",
        Duration::from_secs(30),
        "the welcome",
    )
    .await;
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
    let rendered = page
        .eval(
            "new Promise((done) => { const v = document.getElementById('remote'); let n = 0; \
             const f = () => { n++; v.requestVideoFrameCallback(f); }; \
             v.requestVideoFrameCallback(f); setTimeout(() => done(n), 1000); })",
        )
        .await;
    assert!(
        rendered.as_u64().is_some_and(|n| n >= 5),
        "frames rendered in 1 s: {rendered}"
    );
    let rms = page
        .eval(
            "new Promise((done) => { const ctx = new AudioContext(); \
             const src = ctx.createMediaStreamSource(document.getElementById('remote').srcObject); \
             const an = ctx.createAnalyser(); src.connect(an); \
             setTimeout(() => { const b = new Float32Array(an.fftSize); \
               an.getFloatTimeDomainData(b); let e = 0; for (const x of b) e += x * x; \
               done(Math.sqrt(e / b.length)); }, 700); })",
        )
        .await;
    assert!(
        rms.as_f64().is_some_and(|r| r > 0.01),
        "received audio RMS: {rms}"
    );
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
