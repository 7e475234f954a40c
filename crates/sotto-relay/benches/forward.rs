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
//! ratios. Run: `cargo bench -p sotto-relay --bench forward` (about 15 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_relay::{serve, RelayConfig};
use sotto_testkit::relay::{rtp_participant, RemoteRelay, RtpParticipant};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

const DURATION: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
const PAYLOAD: usize = 1000;
const SENDERS: usize = 4;
/// Receivers per sender: the other senders and one receive-only listener.
const FAN_OUT: usize = SENDERS;
const ROLE: &str = "SOTTO_FORWARD_BENCH_ROLE";
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

static RECEIVED: AtomicU64 = AtomicU64::new(0);

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
        let tick = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        (Child { proc, out, tick }, first.trim().to_owned())
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.proc.id())).unwrap();
        // fields 14 and 15 (utime, stime) are the 12th and 13th after the command name
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let cpu = Duration::from_secs_f64((f[11] + f[12]) as f64 / self.tick);
        (received, forwarded, cpu)
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

/// One measurement: packets/s forwarded, forwarder CPU per forwarded packet (µs), packets
/// forwarded per packet received.
struct Figures {
    rate: f64,
    cpu_us: f64,
    fan_out: f64,
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
    Figures {
        rate: n / t,
        cpu_us: (c1 - c0).as_secs_f64() * 1e6 / n,
        fan_out: n / (i1 - i0).max(1) as f64,
    }
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

fn runtime() -> tokio::runtime::Runtime {
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
    let mut senders = Vec::new();
    for p in &ps {
        let Some(v) = p.video.clone() else { continue };
        let (ssrc, stop) = (p.ssrc, stop.clone());
        senders.push(tokio::spawn(async move {
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
                    payload: bytes::Bytes::from(vec![seq as u8; PAYLOAD]),
                };
                if v.write_rtp(pkt).await.is_err() {
                    return;
                }
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let rx0 = RECEIVED.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let f = measure(&mut relay, Duration::ZERO).await;
    let recv = (RECEIVED.load(Ordering::Relaxed) - rx0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    println!(
        "relay: {:.0} packets/s forwarded ({:.2} per packet received), {:.1} us of \
         relay-process CPU per forwarded packet; participants received {recv:.0} packets/s",
        f.rate, f.fan_out, f.cpu_us
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

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("relay") => return relay_child(),
        Ok("udp") => return udp_child(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; nothing else to parse
    runtime().block_on(async {
        let relay = relay_run().await;
        let udp = udp_run().await;
        println!(
            "{SENDERS} senders x {FAN_OUT} receivers, {PAYLOAD}-byte payloads: packets/s ratio \
             relay/udp {:.3}; CPU per packet relay/udp {:.2}",
            relay.rate / udp.rate.max(1.0),
            relay.cpu_us / udp.cpu_us.max(f64::MIN_POSITIVE)
        );
    });
}
