//! `sotto relay`: run the untrusted media relay (SFU).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::CliError;

#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    /// Control channel (WebSocket) address participants join rooms on.
    #[arg(long, env = "SOTTO_RELAY_LISTEN", default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// Address for media (ICE/UDP) sockets; the one participants can reach.
    #[arg(long, env = "SOTTO_RELAY_BIND_IP", default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Write every forwarded payload to DIR/capture.bin (inspect with `sotto frame inspect --capture`).
    #[arg(long, env = "SOTTO_RELAY_CAPTURE")]
    capture: Option<PathBuf>,
}

pub fn run(a: RelayArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    rt.block_on(async move {
        let relay = sotto_relay::serve(sotto_relay::RelayConfig {
            listen: a.listen,
            bind_ip: a.bind_ip,
            capture_dir: a.capture.clone(),
        })
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
        // register for SIGINT/SIGTERM before announcing readiness
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        // scripts read this line to learn the port when listening on :0
        println!("relay control on {}", relay.url());
        if let Some(c) = &a.capture {
            println!(
                "capturing forwarded payloads to {}",
                c.join("capture.bin").display()
            );
        }
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        relay.shutdown().await;
        Ok(())
    })
}
