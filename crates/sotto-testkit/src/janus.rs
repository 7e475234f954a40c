//! A throwaway Janus (Debian's `janus`, 1.1) with only its VideoRoom plugin (the SFU) and its
//! WebSocket transport, on a free loopback port, killed when the guard drops; and a small client
//! of its JSON API over that WebSocket: sessions, plugin handles, VideoRoom publishers and
//! multistream subscribers, each a plain webrtc-rs peer.
//!
//! Used as the reference SFU beside sotto-relay in the forward bench. The configuration is
//! written to a temporary directory at start: no other plugin, transport, event handler or
//! logger loaded. Janus (libnice) gathers no candidate on a loopback interface, so it runs in a
//! network namespace of its own ([`JanusNet`], root only): a veth pair whose two ends carry
//! Janus's address and its peers'; nothing leaves the namespace.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Janus may take to open its WebSocket port.
pub const JANUS_START_LIMIT: Duration = Duration::from_secs(20);
/// How long one request may wait for Janus's answer (a plugin's asynchronous event included).
pub const JANUS_REPLY_LIMIT: Duration = Duration::from_secs(20);

const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
const BIN: &str = "/usr/bin/janus";

/// A running Janus.
pub struct Janus {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Janus's address in a [`JanusNet`].
pub const JANUS_IP: Ipv4Addr = Ipv4Addr::new(10, 223, 0, 1);
/// Its peers' address in a [`JanusNet`].
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 223, 0, 2);
/// The interface holding [`JANUS_IP`] (Janus gathers candidates on it only).
pub const JANUS_IFACE: &str = "v0";

/// Two network namespaces joined by a veth pair: Janus's (`v0`, [`JANUS_IP`]) and its peers'
/// (`v1`, [`PEER_IP`]). Two, not one: libnice sends out of the interface it gathered on, and a
/// packet whose source is a local address arriving on another interface of the same namespace
/// is dropped as a martian. Both deleted on drop.
pub struct JanusNet {
    /// The peers' namespace (run the participants in it with `ip netns exec NAME …`).
    pub name: String,
    /// Janus's namespace (give it to [`Janus::start`]).
    pub janus: String,
}

impl JanusNet {
    /// Creates them; `Err` (why) unless root with `ip` installed.
    pub fn create() -> Result<JanusNet, crate::netns::Unavailable> {
        crate::netns::available()?;
        let name = format!("sotto-janus-peers-{}", std::process::id());
        let janus = format!("sotto-janus-{}", std::process::id());
        for n in [&name, &janus] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
        let ip = |args: &str| {
            let ok = Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args}");
        };
        ip(&format!("netns add {name}"));
        ip(&format!("netns add {janus}"));
        let net = JanusNet { name, janus };
        let (p, j) = (&net.name, &net.janus);
        ip(&format!("-n {p} link set lo up"));
        ip(&format!("-n {j} link set lo up"));
        ip(&format!(
            "-n {p} link add v1 type veth peer name {JANUS_IFACE} netns {j}"
        ));
        ip(&format!("-n {j} addr add {JANUS_IP}/30 dev {JANUS_IFACE}"));
        ip(&format!("-n {p} addr add {PEER_IP}/30 dev v1"));
        ip(&format!("-n {j} link set {JANUS_IFACE} up"));
        ip(&format!("-n {p} link set v1 up"));
        // a default route (multicast group joins, such as webrtc-rs's mDNS, need one); it
        // leads nowhere outside the namespaces
        ip(&format!("-n {p} route add default dev v1"));
        ip(&format!("-n {j} route add default dev {JANUS_IFACE}"));
        Ok(net)
    }
}

impl Drop for JanusNet {
    fn drop(&mut self) {
        for n in [&self.name, &self.janus] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Janus {
    /// Starts Janus on [`JANUS_IP`] in namespace `netns` (a [`JanusNet`]'s `janus`; the
    /// calling process must be in its peers' namespace) and waits until its WebSocket port
    /// accepts connections. `None` (with a line on stderr) if Janus is not installed.
    pub fn start(netns: &str) -> Option<Janus> {
        if !Path::new(BIN).exists() || !Path::new(LIB).join("plugins").exists() {
            eprintln!("SKIPPED (Janus): not installed (apt-get install janus)");
            return None;
        }
        // a free port: Janus's namespace is new, nothing else listens there
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), port);
        // SOTTO_JANUS_LOG=FILE keeps Janus's log (debug level 5: SDPs, ICE)
        let log = match std::env::var_os("SOTTO_JANUS_LOG") {
            Some(f) => Stdio::from(std::fs::File::create(f).unwrap()),
            None => Stdio::null(),
        };
        let level = if std::env::var_os("SOTTO_JANUS_LOG").is_some() {
            "--debug-level=5"
        } else {
            "--debug-level=3"
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, BIN])
            .arg("-F")
            .arg(dir.path())
            .args(["--disable-colors", level])
            .args(std::env::var_os("SOTTO_JANUS_LOG").map(|_| "--libnice-debug"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while TcpStream::connect((JANUS_IP, port)).is_err() {
            let exited = child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && t0.elapsed() < JANUS_START_LIMIT,
                "janus did not come up on {JANUS_IP}:{port} (exit {exited:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Janus {
            child,
            ip: JANUS_IP,
            port,
            _dir: dir,
        })
    }

    /// Its process id (for its CPU time in `/proc/PID/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://IP:PORT`.
    pub fn url(&self) -> String {
        format!("ws://{}:{}", self.ip, self.port)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every plugin, transport, event handler and logger Debian ships but the VideoRoom plugin and
/// the WebSocket transport, disabled by file name.
fn disabled(kind: &str, keep: &str) -> String {
    let mut v: Vec<String> = std::fs::read_dir(Path::new(LIB).join(kind))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".so") && n != keep)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(",")
}

fn write_config(dir: &Path, port: u16) {
    let main = format!(
        "general: {{\n  configs_folder = \"{d}\"\n  plugins_folder = \"{LIB}/plugins\"\n  \
         transports_folder = \"{LIB}/transports\"\n  events_folder = \"{LIB}/events\"\n  \
         loggers_folder = \"{LIB}/loggers\"\n  debug_level = 3\n  session_timeout = 120\n}}\n\
         plugins: {{ disable = \"{p}\" }}\ntransports: {{ disable = \"{t}\" }}\n\
         events: {{ broadcast = false\n  disable = \"{e}\" }}\nloggers: {{ disable = \"{l}\" }}\n\
         nat: {{ ice_enforce_list = \"{JANUS_IFACE}\" }}\n",
        d = dir.display(),
        p = disabled("plugins", "libjanus_videoroom.so"),
        t = disabled("transports", "libjanus_websockets.so"),
        e = disabled("events", ""),
        l = disabled("loggers", ""),
    );
    let ws = format!(
        "general: {{\n  json = \"compact\"\n  ws = true\n  ws_port = {port}\n  \
         ws_ip = \"{JANUS_IP}\"\n  wss = false\n}}\nadmin: {{ admin_ws = false\n  admin_wss = false }}\n"
    );
    std::fs::write(dir.join("janus.jcfg"), main).unwrap();
    std::fs::write(dir.join("janus.transport.websockets.jcfg"), ws).unwrap();
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n").unwrap();
}

type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

/// One Janus session over its own WebSocket (Janus ends the session, and every handle of it,
/// when the socket closes).
pub struct JanusSession {
    ws: Ws,
    id: u64,
    next: u64,
}

impl JanusSession {
    /// Connects (subprotocol `janus-protocol`) and creates a session.
    pub async fn open(url: &str) -> JanusSession {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "janus-protocol".parse().unwrap());
        let (ws, _) =
            tokio::time::timeout(JANUS_REPLY_LIMIT, tokio_tungstenite::connect_async(req))
                .await
                .expect("janus websocket: timed out")
                .unwrap();
        let mut s = JanusSession { ws, id: 0, next: 0 };
        let r = s.call(json!({"janus": "create"})).await;
        s.id = r["data"]["id"]
            .as_u64()
            .expect("janus create: no session id");
        s
    }

    /// Sends `msg` (with this session's id and a fresh transaction) and returns Janus's reply
    /// to it: the first message of that transaction that is not an `ack`. Panics on an
    /// `error` reply or a plugin error.
    async fn call(&mut self, msg: Value) -> Value {
        self.call_until(msg, false).await
    }

    /// [`JanusSession::call`]; with `ack`, Janus's `ack` is the reply (requests Janus only
    /// acknowledges, such as `trickle`).
    async fn call_until(&mut self, mut msg: Value, ack: bool) -> Value {
        self.next += 1;
        let tx = format!("t{}", self.next);
        msg["transaction"] = json!(tx);
        if self.id != 0 {
            msg["session_id"] = json!(self.id);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let reply = tokio::time::timeout(JANUS_REPLY_LIMIT, async {
            loop {
                let m = self.ws.next().await.expect("janus closed").unwrap();
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["transaction"] == json!(tx) && (ack || v["janus"] != "ack") {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("janus: no reply to {msg}"));
        assert_ne!(reply["janus"], "error", "janus refused {msg}: {reply}");
        let data = &reply["plugindata"]["data"];
        assert!(
            data.get("error").is_none(),
            "janus videoroom refused {msg}: {reply}"
        );
        reply
    }

    /// Attaches a handle to the VideoRoom plugin.
    pub async fn attach(&mut self) -> u64 {
        let r = self
            .call(json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await;
        r["data"]["id"]
            .as_u64()
            .expect("janus attach: no handle id")
    }

    /// A VideoRoom request on `handle`, with an SDP (`jsep`) if given; returns the plugin's
    /// data and the SDP of the reply, if any.
    pub async fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> (Value, Option<String>) {
        let mut msg = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let r = self.call(msg).await;
        let sdp = r["jsep"]["sdp"].as_str().map(str::to_owned);
        (r["plugindata"]["data"].clone(), sdp)
    }

    /// Tells Janus the handle's ICE gathering is complete (every candidate is in its SDP).
    pub async fn candidates_complete(&mut self, handle: u64) {
        let done =
            json!({"janus": "trickle", "handle_id": handle, "candidate": {"completed": true}});
        self.call_until(done, true).await;
    }

    /// Keeps the session's socket read (and Janus's events drained) until the returned task
    /// is aborted or the socket closes; sends a keepalive every 20 s.
    pub fn keep_alive(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(20));
            loop {
                tokio::select! {
                    m = self.ws.next() => if !matches!(m, Some(Ok(_))) { return },
                    _ = tick.tick() => {
                        let ka = json!({"janus": "keepalive", "session_id": self.id, "transaction": "ka"});
                        if self.ws.send(Message::text(ka.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }
}

/// Creates VideoRoom `room` (no bitrate cap, room for `publishers`).
pub async fn create_room(s: &mut JanusSession, room: u64, publishers: usize) {
    let h = s.attach().await;
    s.message(
        h,
        json!({"request": "create", "room": room, "publishers": publishers, "bitrate": 0}),
        None,
    )
    .await;
}

/// Joins `room` as publisher `name` and publishes `offer` (an SDP with every candidate):
/// returns Janus's answer SDP and the feed id others subscribe to.
pub async fn publish(s: &mut JanusSession, room: u64, name: &str, offer: String) -> (String, u64) {
    let h = s.attach().await;
    let (joined, _) = s
        .message(
            h,
            json!({"request": "join", "ptype": "publisher", "room": room, "display": name}),
            None,
        )
        .await;
    let feed = joined["id"].as_u64().expect("janus join: no feed id");
    let (_, answer) = s
        .message(
            h,
            json!({"request": "publish", "audio": false, "video": true, "data": false}),
            Some(json!({"type": "offer", "sdp": offer})),
        )
        .await;
    s.candidates_complete(h).await;
    (answer.expect("janus publish: no answer"), feed)
}

/// Subscribes to `feeds` of `room` on one multistream handle: Janus's offer SDP, then
/// `answer(offer)` is sent back with `start`.
pub async fn subscribe<F, Fut>(s: &mut JanusSession, room: u64, feeds: &[u64], answer: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let h = s.attach().await;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    let (_, offer) = s
        .message(
            h,
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
        )
        .await;
    let sdp = answer(offer.expect("janus subscribe: no offer")).await;
    s.message(
        h,
        json!({"request": "start"}),
        Some(json!({"type": "answer", "sdp": sdp})),
    )
    .await;
    s.candidates_complete(h).await;
}
