//! `sotto`: the one command of the sotto stack.
//!
//! Subcommands: `demo` (a whole encrypted call on loopback), `register` (a device kept on disk),
//! `call`/`answer` (the call screen or a script), `trust` (accept a changed peer key after
//! comparing safety numbers), `config` (settings in effect), `server` (signaling), `relay` (the
//! untrusted SFU), `frame inspect|decrypt` (SFrame debugging).

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod account;
mod app_cmd;
mod demo;
mod frame_cmd;
mod phone;
mod relay_cmd;
mod screen;
mod settings;

/// sotto: end-to-end-encrypted calls through servers nobody has to trust.
#[derive(Parser, Debug)]
#[command(name = "sotto", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create this device: an identity kept (encrypted) on disk, registered on the server.
    Register(account::RegisterArgs),
    /// Call USER with this device: dial, show the call screen (or run --script).
    Call {
        /// Who to call.
        peer: String,
        #[command(flatten)]
        args: phone::PhoneArgs,
    },
    /// Wait for a call with this device: ring on an incoming call.
    Answer {
        #[command(flatten)]
        args: phone::PhoneArgs,
    },
    /// This device with the browser call screen: camera, microphone, answer/reject, mute,
    /// switch camera, safety number (served on 127.0.0.1; prints the link).
    App(app_cmd::AppArgs),
    /// Accept PEER's changed identity key once you compared the new safety number.
    Trust(account::TrustArgs),
    /// Show the client settings in effect and where each comes from (flag, environment, file).
    Config(account::ConfigArgs),
    /// Run the signaling server (accounts, prekeys, sealed envelopes; SQLite, or PostgreSQL).
    Server(sotto_server::cli::ServerArgs),
    /// Run the untrusted media relay (SFU): forwards SFrame ciphertext, holds no key.
    Relay(relay_cmd::RelayArgs),
    /// Run a complete encrypted call on loopback (embedded server, bundled media) and report.
    Demo(demo::DemoArgs),
    /// SFrame tools: decode headers from a payload, decrypt with a given key.
    #[command(subcommand)]
    Frame(frame_cmd::FrameCmd),
}

/// Everything that ends the command with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or an input was wrong.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The demo failed a step or a check.
    #[error("demo: {0}")]
    Demo(String),
    /// Frames did not parse or decrypt.
    #[error("{0}")]
    Frame(String),
}

impl CliError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Frame(f) => frame_cmd::run(f),
        Cmd::Demo(d) => demo::run(d),
        Cmd::Server(a) => sotto_server::cli::run(a).map_err(|e| CliError::Usage(e.to_string())),
        Cmd::Relay(a) => relay_cmd::run(a),
        Cmd::App(a) => app_cmd::run(a),
        Cmd::Call { peer, args } => phone::run(Some(peer), args),
        Cmd::Register(a) => account::register(a),
        Cmd::Trust(a) => account::trust(a),
        Cmd::Config(a) => account::config(a),
        Cmd::Answer { args } => phone::run(None, args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto: {e}");
            ExitCode::FAILURE
        }
    }
}
