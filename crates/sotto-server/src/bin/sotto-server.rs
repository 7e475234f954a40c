//! `sotto-server --listen ADDR --db PATH [--config FILE]`: the signaling server. The flags are
//! [`sotto_server::cli::ServerArgs`]; this binary only sets up logging.

use clap::Parser;
use sotto_server::cli::ServerArgs;

/// sotto signaling server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match sotto_server::cli::run(Args::parse().server) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
