//! `sotto-server --listen ADDR --db PATH [--config FILE]`: the signaling server.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use sotto_server::config::FileConfig;
use sotto_server::{MemoryStore, Server, ServerConfig, SqliteStore, Store};

/// sotto signaling server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "SOTTO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long, env = "SOTTO_LISTEN")]
    listen: Option<String>,
    /// SQLite database file (default ./sotto-signaling.db; `:memory:` for a throwaway RAM store).
    #[arg(long, env = "SOTTO_DB")]
    db: Option<PathBuf>,
    /// Server identity bound into authentication signatures (default: the listen address).
    #[arg(long, env = "SOTTO_SERVER_ID")]
    server_id: Option<String>,
    /// Prometheus metrics address (GET /metrics).
    #[arg(long, env = "SOTTO_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// coturn static-auth-secret (prefer the environment to the command line).
    #[arg(long, env = "SOTTO_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> sotto_server::Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::parse(
            &std::fs::read_to_string(p).map_err(|e| sotto_server::Error::Config(e.to_string()))?,
        )?,
        None => FileConfig::default(),
    };
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8443".into());
    let db = args
        .db
        .clone()
        .or(file.db.clone().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("sotto-signaling.db"));
    let server_id = args
        .server_id
        .clone()
        .or(file.server_id.clone())
        .unwrap_or_else(|| listen.clone());
    let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen.clone());
    let mut cfg = ServerConfig::new(server_id);
    cfg.limits = file.limits();
    cfg.turn = file.turn(args.turn_secret.clone());
    // `--db :memory:` keeps everything in RAM (nothing survives a restart): for benchmarks and
    // throwaway test servers only.
    let store: Arc<dyn Store> = if db.as_os_str() == ":memory:" {
        tracing::warn!("in-memory store: nothing survives a restart");
        Arc::new(MemoryStore::new())
    } else {
        Arc::new(
            SqliteStore::open(&db, file.durability()?)
                .map_err(|e| sotto_server::Error::Storage(e.to_string()))?,
        )
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        let mut server = Server::spawn(cfg, store, listener)?;
        if let Some(m) = metrics_listen {
            let l = tokio::net::TcpListener::bind(&m).await?;
            println!("metrics on http://{}/metrics", l.local_addr()?);
            server.serve_metrics(l);
        }
        // Tests and scripts read this line to learn the port when listening on :0.
        println!("listening on {}", server.local_addr());
        shutdown_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
