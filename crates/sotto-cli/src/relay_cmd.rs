//! `sotto relay`: run the untrusted media relay (SFU).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use sotto_relay::ports::UdpPortRange;
use sotto_relay::tls::TlsFiles;
use tokio::signal::unix::{signal, SignalKind};

use crate::CliError;

#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    /// Control channel (WebSocket) address participants join rooms on.
    #[arg(long, env = "SOTTO_RELAY_LISTEN", default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// Address for media (ICE/UDP) sockets; the one participants can reach.
    #[arg(long, env = "SOTTO_RELAY_BIND_IP", default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// On a host behind 1:1 NAT (a cloud VM with a private address on its interface): the public
    /// address mapped to --bind-ip, which the relay's ICE host candidates advertise instead.
    #[arg(long, env = "SOTTO_RELAY_PUBLIC_IP")]
    public_ip: Option<IpAddr>,
    /// UDP ports for media, MIN-MAX (e.g. 40000-40999): one per participant, so the range
    /// bounds how many can be joined at once; open exactly these in the firewall. Default: any.
    #[arg(long, env = "SOTTO_RELAY_UDP_PORTS")]
    udp_ports: Option<UdpPortRange>,
    /// Write every forwarded payload to DIR/capture.bin (inspect with `sotto frame inspect --capture`).
    #[arg(long, env = "SOTTO_RELAY_CAPTURE")]
    capture: Option<PathBuf>,
    /// PEM certificate chain (leaf first): the control channel speaks wss://. Needs --tls-key;
    /// both are re-read on SIGHUP. Without them it is plain ws://, which participants accept
    /// only on loopback.
    #[arg(long, env = "SOTTO_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SOTTO_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the secret shared with the signaling server (its `[[relays]]`
    /// `secret_file`), at least 32 bytes, e.g. `openssl rand -hex 32`: only joins with a token
    /// the server minted with it are admitted.
    #[arg(long, env = "SOTTO_RELAY_TOKEN_SECRET_FILE")]
    token_secret_file: PathBuf,
    /// The control URL participants use and tokens name (the server's `[[relays]]` `url`);
    /// default: ws:// (wss:// with TLS) and the listen address.
    #[arg(long, env = "SOTTO_RELAY_PUBLIC_URL")]
    public_url: Option<String>,
}

pub fn run(a: RelayArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let tls = match (a.tls_cert.clone(), a.tls_key.clone()) {
        (Some(c), Some(k)) => Some(TlsFiles::new(c, k)),
        _ => None,
    };
    let token_secret = sotto_relay::admission::RelaySecret::load(&a.token_secret_file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.token_secret_file.display())))?;
    rt.block_on(async move {
        let relay = sotto_relay::serve(sotto_relay::RelayConfig {
            listen: a.listen,
            tls,
            bind_ip: a.bind_ip,
            public_ip: a.public_ip,
            udp_ports: a.udp_ports,
            capture_dir: a.capture.clone(),
            token_secret,
            public_url: a.public_url.clone(),
        })
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
        // register for SIGINT/SIGTERM (and, with TLS, SIGHUP) before announcing readiness
        let usage = |e: std::io::Error| CliError::Usage(e.to_string());
        let mut int = signal(SignalKind::interrupt()).map_err(usage)?;
        let mut term = signal(SignalKind::terminate()).map_err(usage)?;
        // without TLS, SIGHUP keeps its default meaning
        let mut hup = if relay.is_tls() {
            Some(signal(SignalKind::hangup()).map_err(usage)?)
        } else {
            None
        };
        // scripts read this line to learn the port when listening on :0 (the URL clients use
        // and the signaling server's `--relay URL=...` names)
        println!("relay control on {}", relay.public_url());
        if let Some(c) = &a.capture {
            println!(
                "capturing forwarded payloads to {}",
                c.join("capture.bin").display()
            );
        }
        loop {
            let hangup = async {
                if let Some(h) = &mut hup {
                    if h.recv().await.is_some() {
                        return;
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hangup => match relay.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: relay TLS certificate reloaded"),
                    Err(e) => tracing::error!("SIGHUP: relay TLS certificate not reloaded: {e}"),
                },
            }
        }
        relay.shutdown().await;
        Ok(())
    })
}
