//! `bench`: routes envelopes between client pairs through `sotto-server` and through a baseline
//! relay written with Node's `ws` (`bench/node-relay/relay.mjs`), same load generator, same run,
//! loopback only, bounded in count and time.
//!
//! ```text
//! cargo build --release -p sotto-server --bins
//! (cd crates/sotto-server/bench/node-relay && npm ci)
//! target/release/bench --idle 1000,10000 --pairs 100 --envelopes 200
//! ```
//!
//! For each idle-connection count K: start a fresh server process, open K idle authenticated
//! connections (RSS before/after → memory per idle connection), then P sender→receiver pairs each
//! route M envelopes (window of W unanswered sends per sender; receivers ack every envelope) →
//! envelopes/s and send→delivery latency p50/p99. 10 000 connections need `ulimit -n` ≥ ~10 100
//! for the generator and for each server process.
//!
//! A cluster: `--postgres-url URL --nats-url URL --nodes 1,3` starts that many `sotto-server`
//! processes on the one PostgreSQL and NATS for each count; pair i's sender signs in at node
//! i mod N and its receiver at node (i + 1) mod N, so with N > 1 every envelope crosses nodes
//! (stored by one, rung over NATS, read by the other), and the idle connections are spread over
//! the nodes. Server CPU is the sum over the nodes. `--with-sqlite` runs SQLite (at
//! `--durability`) first in the same run, for comparison. Usernames carry a random per-run
//! prefix, so one database serves every run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use sotto_server::protocol::{
    decode_server_frame, encode_client_frame, ClientMessage, ServerMessage, B64,
};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// Signaling benchmark: sotto-server vs a Node `ws` relay.
#[derive(Parser, Debug)]
struct Args {
    /// Idle connection counts to test, comma separated.
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    idle: Vec<usize>,
    /// Sender/receiver pairs routing envelopes.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Envelopes per sender.
    #[arg(long, default_value_t = 200)]
    envelopes: usize,
    /// Unanswered sends allowed per sender.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Ciphertext bytes per envelope.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// `sotto` storage: full, normal (SQLite synchronous=FULL/NORMAL) or memory.
    #[arg(long, default_value = "normal")]
    durability: String,
    /// Run `sotto` on PostgreSQL at this connection string instead of SQLite (--durability is
    /// then ignored; each idle count needs an empty database: run one count per fresh database).
    #[arg(long)]
    postgres_url: Option<String>,
    /// NATS URL for the doorbell between nodes (with --postgres-url).
    #[arg(long)]
    nats_url: Option<String>,
    /// Node counts to run on PostgreSQL, comma separated (with --postgres-url; more than one
    /// needs --nats-url).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// With --postgres-url: also run SQLite (at --durability) first, in the same run.
    #[arg(long)]
    with_sqlite: bool,
    /// Also report the CPU per envelope of every process with one of these names (e.g.
    /// `postgres,nats-server`: the database's backends and NATS), comma separated.
    #[arg(long, value_delimiter = ',')]
    also_cpu: Vec<String>,
    /// Which servers: sotto, node, or both.
    #[arg(long, default_value = "both")]
    target: String,
    /// Path of relay.mjs (default: next to this crate).
    #[arg(long)]
    relay: Option<PathBuf>,
}

struct Proc {
    child: Child,
    url: String,
}

/// The server processes of one run (one, or a cluster's nodes).
struct Procs(Vec<Proc>);

impl Procs {
    fn urls(&self) -> Vec<String> {
        self.0.iter().map(|p| p.url.clone()).collect()
    }

    /// CPU time of every process together.
    fn cpu(&self) -> Duration {
        self.0
            .iter()
            .map(|p| cpu_time(&p.child.id().to_string()))
            .sum()
    }

    fn rss_kib(&self) -> u64 {
        self.0.iter().map(|p| rss_kib(p.child.id())).sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_listen_line(child: &mut Child) -> Result<String, BoxErr> {
    use std::io::BufRead;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut r = std::io::BufReader::new(out);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err("server exited".into());
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            return Ok(format!("ws://{a}"));
        }
    }
}

/// Where a `sotto` run stores: SQLite (or memory) per --durability, or PostgreSQL with nodes.
enum Store<'a> {
    Sqlite,
    Postgres { url: &'a str, nats: Option<&'a str> },
}

fn spawn_sotto(dir: &std::path::Path, durability: &str, store: &Store<'_>) -> Result<Proc, BoxErr> {
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "server_id = \"bench\"\ndurability = \"{}\"\n[limits]\nenvelopes_per_second = 1000000\nenvelope_burst = 1000000\nmax_connections_per_addr = 100000\nmax_authenticated_per_addr = 100000\nmax_queued_per_device = 100000\nmax_queued_per_sender = 100000\nregistrations_per_address_per_hour = 100000\n",
            if durability == "memory" { "normal" } else { durability }
        ),
    )?;
    let exe = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .join("sotto-server");
    let mut cmd = Command::new(exe);
    cmd.args(["--listen", "127.0.0.1:0", "--config"]).arg(&cfg);
    match store {
        Store::Postgres { url, nats } => {
            cmd.env("SOTTO_POSTGRES_URL", url);
            if let Some(n) = nats {
                cmd.env("SOTTO_NATS_URL", n);
            }
        }
        Store::Sqlite => {
            cmd.arg("--db").arg(if durability == "memory" {
                PathBuf::from(":memory:")
            } else {
                dir.join("bench.db")
            });
        }
    };
    let mut child = cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).spawn()?;
    let url = read_listen_line(&mut child)?;
    Ok(Proc { child, url })
}

fn spawn_node(relay: &std::path::Path) -> Result<Proc, BoxErr> {
    let mut child = Command::new("node")
        .arg(relay)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()?;
    let url = read_listen_line(&mut child)?;
    Ok(Proc { child, url })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time (user + system, all threads) a process has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: &str) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// CPU time of every running process whose name (`/proc/PID/comm`) is one of `names`.
fn cpu_of_named(names: &[String]) -> Duration {
    if names.is_empty() {
        return Duration::ZERO;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| names.iter().any(|n| n == c.trim()))
        })
        .map(|pid| cpu_time(&pid))
        .sum()
}

async fn recv(ws: &mut Ws) -> Result<ServerMessage, BoxErr> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
            Some(Ok(Message::Text(t))) => {
                return Ok(decode_server_frame(t.as_bytes(), usize::MAX)?)
            }
            Some(Ok(_)) => continue,
            _ => return Err("closed".into()),
        }
    }
}

async fn connect(url: &str, user: &str) -> Result<Ws, BoxErr> {
    // tungstenite's default 128 KiB read buffer is zeroed on every read; that would spend the
    // generator's CPU (shared with the server under test) on memset.
    let cfg =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), true).await?;
    let ServerMessage::Challenge { nonce, server } = recv(&mut ws).await? else {
        return Err("no challenge".into());
    };
    let key = sotto_ratchet::IdentityKeyPair::generate(&mut rand::thread_rng());
    let sig = sotto_server::auth::sign(&key, &server, &nonce.0, user, 1);
    let msg = ClientMessage::Register {
        username: user.to_owned(),
        device_id: 1,
        identity_key: B64(key.public().serialize().to_vec()),
        signature: B64(sig.to_vec()),
    };
    ws.send(Message::text(encode_client_frame(0, &msg)?))
        .await?;
    match recv(&mut ws).await? {
        ServerMessage::Authenticated { .. } => Ok(ws),
        other => Err(format!("auth: {other:?}").into()),
    }
}

/// `n` connections as `{prefix}{i}`, connection i at `urls[(i + shift) % urls.len()]`.
async fn connect_many(
    urls: &[String],
    shift: usize,
    prefix: &str,
    n: usize,
) -> Result<Vec<Ws>, BoxErr> {
    let prefix = prefix.to_owned();
    let results: Vec<Result<Ws, BoxErr>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let url = urls[(i + shift) % urls.len()].clone();
            let user = format!("{prefix}{i}");
            async move { connect(&url, &user).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

struct RouteResult {
    envelopes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn route(urls: &[String], run: &str, args: &Args) -> Result<RouteResult, BoxErr> {
    let senders = connect_many(urls, 0, &format!("{run}s"), args.pairs).await?;
    // with several nodes, each receiver is on the node after its sender's
    let receivers = connect_many(urls, 1, &format!("{run}r"), args.pairs).await?;
    let base = Instant::now();
    let mut tasks = Vec::new();
    for (i, (s, r)) in senders.into_iter().zip(receivers).enumerate() {
        let (m, window, size) = (args.envelopes, args.window, args.size);
        let to_user = format!("{run}r{i}");
        // Receiver: collect latencies, ack everything.
        let recv_task = tokio::spawn(async move {
            let (mut tx, mut rx) = r.split();
            let mut lat = Vec::with_capacity(m);
            let mut next = 1u64;
            while lat.len() < m {
                let Some(Ok(Message::Text(t))) = rx.next().await else {
                    return Err::<Vec<Duration>, BoxErr>("receiver closed".into());
                };
                if let ServerMessage::Envelope(e) = decode_server_frame(t.as_bytes(), usize::MAX)? {
                    let mut ns = [0u8; 8];
                    ns.copy_from_slice(e.ciphertext.0.get(..8).ok_or("short")?);
                    let sent = Duration::from_nanos(u64::from_be_bytes(ns));
                    lat.push(base.elapsed().saturating_sub(sent));
                    let ack = ClientMessage::Ack {
                        envelope_id: e.envelope_id,
                    };
                    tx.send(Message::text(encode_client_frame(next, &ack)?))
                        .await?;
                    next += 1;
                }
            }
            Ok(lat)
        });
        let send_task = tokio::spawn(async move {
            let (mut tx, mut rx) = s.split();
            let permits = Arc::new(Semaphore::new(window));
            let p2 = permits.clone();
            let answers = tokio::spawn(async move {
                let mut n = 0;
                while n < m {
                    match rx.next().await {
                        Some(Ok(Message::Text(t))) => {
                            if let Ok(ServerMessage::Stored { .. }) =
                                decode_server_frame(t.as_bytes(), usize::MAX)
                            {
                                n += 1;
                                p2.add_permits(1);
                            } else {
                                return Err::<(), BoxErr>(format!("sender got {t}").into());
                            }
                        }
                        _ => return Err("sender closed".into()),
                    }
                }
                Ok(())
            });
            for k in 0..m {
                permits.acquire().await?.forget();
                let mut body = vec![0u8; size.max(8)];
                body[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
                let msg = ClientMessage::Send {
                    to_user: to_user.clone(),
                    to_device: 1,
                    ttl_secs: 60,
                    ciphertext: B64(body),
                };
                tx.send(Message::text(encode_client_frame(k as u64 + 1, &msg)?))
                    .await?;
            }
            answers.await??;
            Ok::<(), BoxErr>(())
        });
        tasks.push((send_task, recv_task));
    }
    let mut latencies = Vec::new();
    for (s, r) in tasks {
        s.await??;
        latencies.extend(r.await??);
    }
    let elapsed = base.elapsed();
    latencies.sort();
    Ok(RouteResult {
        envelopes: args.pairs * args.envelopes,
        elapsed,
        latencies,
    })
}

fn pct(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

async fn run_one(name: &str, procs: Procs, idle: usize, args: &Args) -> Result<(), BoxErr> {
    // a fresh name space per run: one PostgreSQL database serves every run
    let run = format!("b{:08x}", rand::random::<u32>());
    let urls = procs.urls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = procs.rss_kib();
    let t = Instant::now();
    let idle_conns = connect_many(&urls, 0, &format!("{run}idle"), idle).await?;
    let connect_time = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = procs.rss_kib();
    let per_conn = (rss1.saturating_sub(rss0) as f64 * 1024.0) / idle.max(1) as f64;
    let (server0, gen0, other0) = (procs.cpu(), cpu_time("self"), cpu_of_named(&args.also_cpu));
    let r = tokio::time::timeout(Duration::from_secs(300), route(&urls, &run, args)).await??;
    let (server1, gen1, other1) = (procs.cpu(), cpu_time("self"), cpu_of_named(&args.also_cpu));
    let rate = r.envelopes as f64 / r.elapsed.as_secs_f64();
    // CPU per routed envelope (connecting the pairs included), server and load generator.
    let per_env = |d: Duration| d.as_secs_f64() * 1e6 / r.envelopes as f64;
    println!(
        "{name:>10} | idle {idle:>6} | connect+auth {:>6.2}s | RSS {:>7} KiB -> {:>7} KiB | {:>7.0} B/idle conn | {:>8.0} env/s | p50 {:>8.2?} | p99 {:>8.2?} | CPU/env server {:>5.1} us, generator {:>5.1} us, {} {:>5.1} us",
        connect_time.as_secs_f64(),
        rss0,
        rss1,
        per_conn,
        rate,
        pct(&r.latencies, 0.5),
        pct(&r.latencies, 0.99),
        per_env(server1.saturating_sub(server0)),
        per_env(gen1.saturating_sub(gen0)),
        if args.also_cpu.is_empty() {
            "others".to_owned()
        } else {
            args.also_cpu.join("+")
        },
        per_env(other1.saturating_sub(other0)),
    );
    drop(idle_conns);
    drop(procs);
    Ok(())
}

fn main() -> Result<(), BoxErr> {
    let args = Args::parse();
    let relay = args.relay.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/node-relay/relay.mjs")
    });
    // Explicit, so TOKIO_WORKER_THREADS (inherited by the servers) does not change the generator.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!(
            "pairs {} x envelopes {} (window {}, {} B), sotto durability {}",
            args.pairs, args.envelopes, args.window, args.size, args.durability
        );
        for &idle in &args.idle {
            if args.target != "node" {
                let sqlite = args.postgres_url.is_none() || args.with_sqlite;
                if sqlite {
                    let dir = tempfile_dir()?;
                    let p = spawn_sotto(&dir, &args.durability, &Store::Sqlite)?;
                    run_one(
                        &format!("sqlite {}", args.durability),
                        Procs(vec![p]),
                        idle,
                        &args,
                    )
                    .await?;
                    let _ = std::fs::remove_dir_all(&dir);
                }
                if let Some(url) = &args.postgres_url {
                    for &n in &args.nodes {
                        if n > 1 && args.nats_url.is_none() {
                            return Err("--nodes above 1 needs --nats-url".into());
                        }
                        let dir = tempfile_dir()?;
                        let store = Store::Postgres {
                            url,
                            nats: args.nats_url.as_deref(),
                        };
                        let procs = (0..n.max(1))
                            .map(|_| spawn_sotto(&dir, &args.durability, &store))
                            .collect::<Result<Vec<_>, _>>()?;
                        run_one(&format!("pg x{n}"), Procs(procs), idle, &args).await?;
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
            if args.target != "sotto" {
                let p = spawn_node(&relay)?;
                run_one("node", Procs(vec![p]), idle, &args).await?;
            }
        }
        Ok(())
    })
}

fn tempfile_dir() -> Result<PathBuf, BoxErr> {
    let d = std::env::temp_dir().join(format!(
        "sotto-bench-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
