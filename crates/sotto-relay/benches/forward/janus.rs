//! The Janus row: the relay's participants, publishing to and subscribing from a Janus
//! VideoRoom. Janus's packets in and out are counted on its side of the veth pair (so they
//! include its few RTCP and STUN packets), the participants count what they received, and
//! Janus's CPU is its process's.
//!
//! Janus gathers no candidate on loopback, so this row runs in a child process (this binary,
//! `ROLE=janus`) inside a network namespace of its own ([`JanusNet`], root only; skipped with
//! a message otherwise): Janus and the participants talk over a veth pair inside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_testkit::janus::{
    create_room, publish, subscribe, Janus, JanusNet, JanusSession, JANUS_IFACE, PEER_IP,
};
use sotto_testkit::plain::PlainPeer;
use sotto_testkit::relay::vp8_track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::{
    clock_ticks, cpu_time, runtime, spawn_senders, Figures, DURATION, RECEIVED, ROLE, SENDERS,
    WARM_UP,
};

const ROOM: u64 = 4242;
/// The child's environment: the name of Janus's namespace.
const JANUS_NS: &str = "SOTTO_FORWARD_BENCH_JANUS_NS";

/// A peer whose every received RTP packet counts in `RECEIVED`.
async fn counting_peer() -> PlainPeer {
    let on_track = Box::new(|track: Arc<dyn TrackRemote>| {
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = evt {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    PlainPeer::build_on(&format!("{PEER_IP}:0"), None, Some(on_track)).await
}

/// Packets (received, sent) on Janus's side of the veth pair so far: everything Janus received
/// from and sent to its participants (RTP, and the few RTCP and STUN packets beside it).
fn wire(janus_ns: &str) -> (u64, u64) {
    let read = |what: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", janus_ns, "cat"])
            .arg(format!(
                "/sys/class/net/{JANUS_IFACE}/statistics/{what}_packets"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (read("rx"), read("tx"))
}

/// The parent's side: runs [`janus_child`] in a fresh [`JanusNet`] and reads its figures (one
/// line `FIGURES rate cpu_us fan_out delivered cpu_us_delivered`). `None` (with a message)
/// without root, `ip` or Janus.
pub(crate) fn janus_row() -> Option<Figures> {
    let net = match JanusNet::create() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED (Janus row): {e}");
            return None;
        }
    };
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &net.name])
        .arg(std::env::current_exe().unwrap())
        .env(ROLE, "janus")
        .env(JANUS_NS, &net.janus)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    print!(
        "{}",
        text.lines()
            .filter(|l| !l.starts_with("FIGURES"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let line = text.lines().find_map(|l| l.strip_prefix("FIGURES "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Some(Figures {
        rate: v[0],
        cpu_us: v[1],
        fan_out: v[2],
        delivered: v[3],
        cpu_us_delivered: v[4],
    })
}

/// Child (inside the namespace): the row, its figures printed on stdout.
pub(crate) fn janus_child() {
    if let Some(f) = runtime().block_on(janus_run()) {
        println!(
            "FIGURES {} {} {} {} {}",
            f.rate, f.cpu_us, f.fan_out, f.delivered, f.cpu_us_delivered
        );
    }
}

/// `SENDERS` publishers, each also subscribed to the others, and a listener subscribed to all:
/// the relay run's 16 streams. `None` if Janus is not installed.
async fn janus_run() -> Option<Figures> {
    let janus = Janus::start(&std::env::var(JANUS_NS).unwrap())?;
    let url = janus.url();
    let mut admin = JanusSession::open(&url).await;
    create_room(&mut admin, ROOM, SENDERS + 1).await;
    let mut keep = vec![admin.keep_alive()];
    let (mut tracks, mut feeds, mut peers) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SENDERS {
        let name = format!("p{i}");
        let peer = PlainPeer::build_on(&format!("{PEER_IP}:0"), None, None).await;
        let ssrc = rand::random::<u32>();
        let video = Arc::new(vp8_track(&name, ssrc));
        peer.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let mut s = JanusSession::open(&url).await;
        let (answer, feed) = publish(&mut s, ROOM, &name, peer.offer().await.unwrap()).await;
        peer.accept_answer(answer).await.unwrap();
        peer.wait_connected(&name).await;
        keep.push(s.keep_alive());
        tracks.push((video, ssrc));
        feeds.push(feed);
        peers.push(peer);
    }
    for i in 0..=SENDERS {
        let others: Vec<u64> = (0..SENDERS).filter(|&j| j != i).map(|j| feeds[j]).collect();
        let peer = counting_peer().await;
        let mut s = JanusSession::open(&url).await;
        subscribe(&mut s, ROOM, &others, |offer| async {
            peer.answer(offer).await.unwrap()
        })
        .await;
        peer.wait_connected(&format!("subscriber {i}")).await;
        keep.push(s.keep_alive());
        peers.push(peer);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let senders = spawn_senders(tracks, &stop);
    tokio::time::sleep(WARM_UP).await;
    let tick = clock_ticks();
    let ns = std::env::var(JANUS_NS).unwrap();
    let (rx0, c0, w0) = (
        RECEIVED.load(Ordering::Relaxed),
        cpu_time(janus.pid(), tick),
        wire(&ns),
    );
    let t0 = Instant::now();
    tokio::time::sleep(DURATION).await;
    let (rx1, c1, w1) = (
        RECEIVED.load(Ordering::Relaxed),
        cpu_time(janus.pid(), tick),
        wire(&ns),
    );
    let t = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let (rx, cpu) = ((rx1 - rx0) as f64, (c1 - c0).as_secs_f64());
    let (janus_in, janus_out) = ((w1.0 - w0.0) as f64, (w1.1 - w0.1) as f64);
    let f = Figures {
        rate: janus_out / t,
        cpu_us: cpu * 1e6 / janus_out.max(1.0),
        fan_out: janus_out / janus_in.max(1.0),
        delivered: 0.0,
        cpu_us_delivered: 0.0,
    }
    .with_delivered(rx / t, cpu / t);
    println!(
        "janus videoroom: {:.0} packets/s sent ({:.2} per packet received), {:.1} us of \
         janus-process CPU per packet sent; participants received {:.0} packets/s, {:.1} us of \
         janus CPU per packet received",
        f.rate, f.fan_out, f.cpu_us, f.delivered, f.cpu_us_delivered
    );
    for p in &peers {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.pc.close()).await;
    }
    keep.iter().for_each(|k| k.abort());
    Some(f)
}
