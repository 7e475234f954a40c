#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Forwarding benchmark, 4 senders x 4 receivers: four webrtc-rs participants send VP8-shaped
//! RTP as fast as webrtc-rs takes it, and a fifth joins receive-only, so every sender's stream
//! goes to four receivers (the three other senders and the listener): 16 forwarded streams.
//! (Four senders plus four separate receive-only participants would need a room of 8;
//! `MAX_ROOM_SIZE` is 5.) Compared, in the same run, with a plain UDP loopback forwarder doing
//! the same fan-out (each datagram of sender i to the four receivers other than i's own).
//!
//! The relay and the UDP forwarder each run in a child process (this binary re-executed with
//! `SOTTO_FORWARD_BENCH_ROLE=relay|udp`, a 2-worker tokio runtime like `sotto relay`), so the CPU
//! per forwarded packet is the forwarder's own (utime + stime from `/proc/PID/stat`), not the
//! participants'. Prints packets/s forwarded, forwarder CPU per forwarded packet and the
//! ratios.
//!
//! Then the same participants (four webrtc-rs publishers, each also subscribed to the three
//! others, and a receive-only listener subscribed to all four) through a **Janus VideoRoom**
//! (Debian's `janus`, [`sotto_testkit::janus`]): the CPU of the Janus process per packet the
//! participants received, beside the relay's per packet they received from it. Janus and its
//! participants run in network namespaces of their own (libnice gathers nothing on loopback), so
//! that row needs root and Janus (`apt-get install janus`); without them it is skipped with a
//! message.
//! Run: `cargo bench -p sotto-relay --bench forward` (about 25 s; `-- --runs N` repeats the
//! three rows N times, interleaved, and prints medians and ranges).

mod janus;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_relay::{serve, RelayConfig};
use sotto_testkit::relay::{rtp_participant, RemoteRelay, RtpParticipant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

pub(crate) const DURATION: Duration = Duration::from_secs(5);
pub(crate) const WARM_UP: Duration = Duration::from_secs(1);
const PAYLOAD: usize = 1000;
pub(crate) const SENDERS: usize = 4;
/// Receivers per sender: the other senders and one receive-only listener.
const FAN_OUT: usize = SENDERS;
pub(crate) const ROLE: &str = "SOTTO_FORWARD_BENCH_ROLE";
const UDP_RECEIVERS: &str = "SOTTO_FORWARD_BENCH_RECEIVERS";
/// The relay token secret the parent shares with the relay child.
const SECRET: &str = "SOTTO_FORWARD_BENCH_SECRET";

/// Joins the room; every RTP packet it receives counts in `RECEIVED`. `sends`: with a video
/// track (else receive-only).
async fn participant(relay: &RemoteRelay, room: &str, name: &str, sends: bool) -> RtpParticipant {
    let on_track = Box::new(|track: Arc<dyn TrackRemote>| {
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = evt {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    rtp_participant(relay, room, name, sends, on_track).await
}

pub(crate) static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// A forwarder in a child process: this binary with `ROLE` set. It prints one line (its
/// address), then answers each `stats` line on stdin with `<received> <forwarded>`; EOF stops
/// it.
struct Child {
    proc: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    tick: f64,
}

impl Child {
    fn spawn(role: &str, env: &[(&str, String)]) -> (Child, String) {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, role)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(proc.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        (
            Child {
                proc,
                out,
                tick: clock_ticks(),
            },
            first.trim().to_owned(),
        )
    }

    /// (packets received, packets forwarded, the child's CPU time (user + system)) so far.
    fn sample(&mut self) -> (u64, u64, Duration) {
        use std::io::{BufRead, Write};
        let stdin = self.proc.stdin.as_mut().unwrap();
        writeln!(stdin, "stats").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let mut n = line.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (received, forwarded) = (n.next().unwrap(), n.next().unwrap());
        (received, forwarded, cpu_time(self.proc.id(), self.tick))
    }

    fn stop(mut self) {
        drop(self.proc.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.proc.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of `/proc/PID/stat`'s CPU times.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// The CPU time (user + system, all threads) process `pid` has used so far.
pub(crate) fn cpu_time(pid: u32, tick: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // fields 14 and 15 (utime, stime) are the 12th and 13th after the command name
    let f: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Duration::from_secs_f64((f[11] + f[12]) as f64 / tick)
}

/// Sends VP8-shaped RTP (`PAYLOAD` bytes) on each `(track, ssrc)` as fast as webrtc-rs takes
/// it, until `stop`.
pub(crate) fn spawn_senders(
    tracks: Vec<(Arc<TrackLocalStaticRTP>, u32)>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    tracks
        .into_iter()
        .map(|(v, ssrc)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seq = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    seq = seq.wrapping_add(1);
                    let pkt = rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: seq,
                            timestamp: u32::from(seq / 4).wrapping_mul(3000),
                            marker: seq.is_multiple_of(4),
                            ssrc,
                            ..Default::default()
                        },
                        // a VP8 payload descriptor (S bit on each frame's first packet)
                        // and a key-frame tag: the relay switches slots at key frames
                        payload: bytes::Bytes::from(
                            [
                                &[if seq % 4 == 1 { 0x10 } else { 0x00 }, 0x00][..],
                                &vec![seq as u8; PAYLOAD - 2],
                            ]
                            .concat(),
                        ),
                    };
                    if v.write_rtp(pkt).await.is_err() {
                        return;
                    }
                    if seq.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

/// One measurement: packets/s forwarded, forwarder CPU per forwarded packet (µs), packets
/// forwarded per packet received; packets/s the participants received and forwarder CPU per
/// packet they received (µs).
#[derive(Clone, Copy)]
pub(crate) struct Figures {
    rate: f64,
    cpu_us: f64,
    fan_out: f64,
    delivered: f64,
    cpu_us_delivered: f64,
}

impl Figures {
    /// Sets what the participants received: `delivered` packets/s, while the forwarder used
    /// `cpu_per_s` seconds of CPU per second.
    fn with_delivered(mut self, delivered: f64, cpu_per_s: f64) -> Self {
        self.delivered = delivered;
        self.cpu_us_delivered = cpu_per_s * 1e6 / delivered.max(1.0);
        self
    }
}

/// Samples `child` over `DURATION` after `warm_up`.
async fn measure(child: &mut Child, warm_up: Duration) -> Figures {
    tokio::time::sleep(warm_up).await;
    let (i0, n0, c0) = child.sample();
    let t0 = Instant::now();
    tokio::time::sleep(DURATION).await;
    let (i1, n1, c1) = child.sample();
    let t = t0.elapsed().as_secs_f64();
    let n = (n1 - n0).max(1) as f64;
    let cpu = (c1 - c0).as_secs_f64();
    Figures {
        rate: n / t,
        cpu_us: cpu * 1e6 / n,
        fan_out: n / (i1 - i0).max(1) as f64,
        delivered: 0.0,
        cpu_us_delivered: 0.0,
    }
    .with_delivered(0.0, cpu / t)
}

/// Runs in the child: answers `stats` lines with `counts()` (received, forwarded) until stdin
/// closes.
fn serve_stats(counts: impl Fn() -> (u64, u64)) {
    use std::io::{BufRead, Write};
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "stats" {
            let mut out = std::io::stdout().lock();
            let (received, forwarded) = counts();
            writeln!(out, "{received} {forwarded}").unwrap();
            out.flush().unwrap();
        }
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Child: the relay.
fn relay_child() {
    let rt = runtime();
    // the parent mints tokens with the same secret
    let secret = std::env::var(SECRET).unwrap();
    let secret = sotto_relay::admission::RelaySecret::from_bytes(secret.as_bytes()).unwrap();
    let relay = rt.block_on(serve(RelayConfig::loopback(secret))).unwrap();
    println!("{}", relay.url());
    serve_stats(|| {
        let (received, forwarded, _) = relay.stats();
        (received, forwarded)
    });
    rt.block_on(relay.shutdown());
}

/// Child: a plain UDP fan-out forwarder. Each datagram's first byte is its sender's index i;
/// it goes to every receiver address but the i-th (the sender's own).
fn udp_child() {
    use tokio::net::UdpSocket;
    let receivers: Vec<std::net::SocketAddr> = std::env::var(UDP_RECEIVERS)
        .unwrap()
        .split(',')
        .map(|a| a.parse().unwrap())
        .collect();
    let rt = runtime();
    let fwd = rt.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
    println!("{}", fwd.local_addr().unwrap());
    let received = Arc::new(AtomicU64::new(0));
    let forwarded = Arc::new(AtomicU64::new(0));
    let (count_in, count) = (received.clone(), forwarded.clone());
    rt.spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, _)) = fwd.recv_from(&mut buf).await else {
                continue;
            };
            count_in.fetch_add(1, Ordering::Relaxed);
            let from = usize::from(buf[0]);
            for (i, a) in receivers.iter().enumerate() {
                if i != from && fwd.send_to(&buf[..n], a).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    serve_stats(|| {
        (
            received.load(Ordering::Relaxed),
            forwarded.load(Ordering::Relaxed),
        )
    });
    rt.shutdown_background();
}

async fn relay_run() -> Figures {
    let text = sotto_relay::admission::RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
    let secret = sotto_relay::admission::RelaySecret::from_bytes(text.as_bytes()).unwrap();
    let (mut relay, url) = Child::spawn("relay", &[(SECRET, text.trim().to_owned())]);
    let access = RemoteRelay { url, secret };
    let mut ps = Vec::new();
    for i in 0..SENDERS {
        ps.push(participant(&access, "bench", &format!("p{i}"), true).await);
    }
    ps.push(participant(&access, "bench", "listener", false).await);
    let stop = Arc::new(AtomicBool::new(false));
    let tracks = ps
        .iter()
        .filter_map(|p| p.video.clone().map(|v| (v, p.ssrc)))
        .collect();
    let senders = spawn_senders(tracks, &stop);
    tokio::time::sleep(WARM_UP).await;
    let rx0 = RECEIVED.load(Ordering::Relaxed);
    let (_, _, c0) = relay.sample();
    let t0 = Instant::now();
    let f = measure(&mut relay, Duration::ZERO).await;
    let (_, _, c1) = relay.sample();
    let t = t0.elapsed().as_secs_f64();
    let recv = (RECEIVED.load(Ordering::Relaxed) - rx0) as f64 / t;
    let f = f.with_delivered(recv, (c1 - c0).as_secs_f64() / t);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    println!(
        "relay: {:.0} packets/s forwarded ({:.2} per packet received), {:.1} us of \
         relay-process CPU per forwarded packet; participants received {recv:.0} packets/s, \
         {:.1} us of relay CPU per packet received",
        f.rate, f.fan_out, f.cpu_us, f.cpu_us_delivered
    );
    for p in &ps {
        let _ = p.pc.close().await;
    }
    relay.stop();
    f
}

/// The same fan-out with plain UDP: `SENDERS` sender sockets, `SENDERS + 1` receiver sockets
/// (sender i's own at index i, the listener's last), the forwarder in a child process.
async fn udp_run() -> Figures {
    use tokio::net::UdpSocket;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut rx_addrs = Vec::new();
    for _ in 0..=SENDERS {
        let r = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        rx_addrs.push(r.local_addr().unwrap().to_string());
        let (received, stop) = (received.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(50), r.recv(&mut buf)).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let (mut fwd, addr) = Child::spawn("udp", &[(UDP_RECEIVERS, rx_addrs.join(","))]);
    let fwd_addr: std::net::SocketAddr = addr.parse().unwrap();
    for i in 0..SENDERS {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut pkt = vec![0u8; PAYLOAD + 12];
            pkt[0] = i as u8;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(&pkt, fwd_addr).await;
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let f = measure(&mut fwd, WARM_UP).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    fwd.stop();
    println!(
        "udp loopback forwarder: {:.0} packets/s forwarded ({:.2} per packet received), {:.1} us \
         of forwarder-process CPU per forwarded packet",
        f.rate, f.fan_out, f.cpu_us
    );
    f
}

/// Median, lowest and highest of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `what`: median (lowest–highest) over the runs.
fn row(what: &str, v: Vec<f64>) {
    let (m, lo, hi) = spread(v);
    println!("  {what}: {m:.3} ({lo:.3}–{hi:.3})");
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("relay") => return relay_child(),
        Ok("udp") => return udp_child(),
        Ok("janus") => return janus::janus_child(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `--runs N` repeats every row N times, interleaved
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    runtime().block_on(async {
        let (mut relays, mut udps, mut januses) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            relays.push(relay_run().await);
            udps.push(udp_run().await);
            if let Some(j) = tokio::task::spawn_blocking(janus::janus_row).await.unwrap() {
                januses.push(j);
            }
        }
        println!(
            "{SENDERS} senders x {FAN_OUT} receivers, {PAYLOAD}-byte payloads, {runs} run(s), \
             median (range):"
        );
        let ratio = |f: &dyn Fn(usize) -> f64| (0..runs).map(f).collect::<Vec<f64>>();
        row(
            "packets/s forwarded, relay/udp",
            ratio(&|i| relays[i].rate / udps[i].rate.max(1.0)),
        );
        row(
            "CPU per forwarded packet, relay/udp",
            ratio(&|i| relays[i].cpu_us / udps[i].cpu_us.max(f64::MIN_POSITIVE)),
        );
        row(
            "relay us CPU per forwarded packet",
            ratio(&|i| relays[i].cpu_us),
        );
        row(
            "relay us CPU per packet received",
            ratio(&|i| relays[i].cpu_us_delivered),
        );
        if januses.len() == runs {
            row(
                "janus us CPU per packet sent",
                ratio(&|i| januses[i].cpu_us),
            );
            row(
                "janus us CPU per packet received",
                ratio(&|i| januses[i].cpu_us_delivered),
            );
            row(
                "CPU per forwarded packet, relay/janus",
                ratio(&|i| relays[i].cpu_us / januses[i].cpu_us.max(f64::MIN_POSITIVE)),
            );
            row(
                "packets/s forwarded, relay/janus",
                ratio(&|i| relays[i].rate / januses[i].rate.max(1.0)),
            );
            row(
                "packets/s received, relay/janus",
                ratio(&|i| relays[i].delivered / januses[i].delivered.max(1.0)),
            );
            row(
                "CPU per packet received, relay/janus",
                ratio(&|i| {
                    relays[i].cpu_us_delivered / januses[i].cpu_us_delivered.max(f64::MIN_POSITIVE)
                }),
            );
        }
    });
}
