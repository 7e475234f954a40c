//! The relay as its owner sees it: how to run one ([`RelayConfig`], [`serve`]), the handle on a
//! running one ([`Relay`]) and the state its sessions share.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sotto_admission::RelaySecret;
use sotto_tls::{ServerTls, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use webrtc::peer_connection::PeerConnection;

use crate::capture::CaptureWriter;
use crate::nat::{check_public_ip, PublicIpError};
use crate::ports::{MediaPorts, UdpPortRange};
use crate::room::Rooms;
use crate::{lock, nack, session};

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Control channel (WebSocket) address.
    pub listen: SocketAddr,
    /// Certificate chain and key (PEM files) for the control channel: with them it is
    /// `wss://`; without, plain `ws://`, which participants accept only on loopback.
    pub tls: Option<TlsFiles>,
    /// Address for the media (ICE) sockets.
    pub bind_ip: IpAddr,
    /// The public address a 1:1 NAT maps `bind_ip` to (a cloud VM's): the relay's host
    /// candidates advertise it instead of `bind_ip` ([`crate::nat`]).
    pub public_ip: Option<IpAddr>,
    /// The UDP ports media sockets bind, one per participant; `None`: any the OS picks.
    pub udp_ports: Option<UdpPortRange>,
    /// Write every forwarded payload here.
    pub capture_dir: Option<PathBuf>,
    /// The secret the signaling server mints relay tokens with: a `join` is admitted only with
    /// a token it verifies (`sotto_admission`). There is no open mode.
    pub token_secret: RelaySecret,
    /// The control URL participants are told to use, which tokens must name
    /// (`--public-url`); `None`: `ws://` or `wss://` and the bound address
    /// ([`Relay::url`]).
    pub public_url: Option<String>,
}

impl RelayConfig {
    /// Loopback, any port, plain `ws://`, no capture, tokens verified with `token_secret`
    /// against the bound address's URL.
    pub fn loopback(token_secret: RelaySecret) -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            public_ip: None,
            udp_ports: None,
            capture_dir: None,
            token_secret,
            public_url: None,
        }
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// RTP packets received from participants.
    pub packets_in: AtomicU64,
    /// RTP packets forwarded (one per receiving member).
    pub packets_out: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from receivers.
    pub keyframe_requests_in: AtomicU64,
    /// Keyframe requests (PLI) sent on to the original sender (receivers' and the relay's own,
    /// on video slot changes).
    pub keyframe_requests_out: AtomicU64,
    /// Audio packets that carried an audio level (RFC 6464) the speaker ranking took.
    pub audio_levels_in: AtomicU64,
    /// NACKs and retransmissions, both hops.
    pub nack: Arc<nack::NackCounters>,
    /// Control connections closed at once: their address (or everyone) already had
    /// [`MAX_PENDING_PER_ADDRESS`](crate::consts::MAX_PENDING_PER_ADDRESS)
    /// ([`MAX_PENDING`](crate::consts::MAX_PENDING)) connections not in a room yet.
    pub pending_refused: AtomicU64,
    /// Silent control connections (no `join` yet) closed to make room for a new one when all
    /// addresses together had [`MAX_PENDING`](crate::consts::MAX_PENDING).
    pub pending_evicted: AtomicU64,
}

/// What every session, forwarding task and the [`Relay`] handle share.
pub(crate) struct Shared {
    /// The control channel's certificate, if any (reloadable).
    pub(crate) tls: Option<ServerTls>,
    pub(crate) rooms: Mutex<Rooms>,
    pub(crate) capture: Option<CaptureWriter>,
    pub(crate) stats: RelayStats,
    pub(crate) bind_ip: IpAddr,
    /// What host candidates on `bind_ip` advertise instead (checked by [`serve`]).
    pub(crate) public_ip: Option<IpAddr>,
    /// The media ports peer connections lease.
    pub(crate) ports: Arc<MediaPorts>,
    pub(crate) closed: AtomicBool,
    /// Connections not in a room yet, per address.
    pub(crate) pending: Mutex<Pending>,
    /// Verifies join tokens.
    pub(crate) token_secret: RelaySecret,
    /// The URL tokens must name.
    pub(crate) public_url: String,
}

/// Connections not in a room yet: counted per address, and those that have not sent `join`
/// yet ("silent") queued oldest first, to be evicted when [`MAX_PENDING`] is reached.
///
/// [`MAX_PENDING`]: crate::consts::MAX_PENDING
#[derive(Default)]
pub(crate) struct Pending {
    by_ip: std::collections::HashMap<IpAddr, usize>,
    silent: std::collections::BTreeMap<u64, (IpAddr, Arc<Eviction>)>,
    next: u64,
}

impl Pending {
    fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// How a silent connection learns it was evicted.
#[derive(Default)]
pub(crate) struct Eviction {
    notify: Notify,
    done: AtomicBool,
}

/// A control connection counted as not in a room yet; the count drops with it (when the
/// participant is admitted, or the connection ends first, or it is evicted while silent).
pub(crate) struct PendingSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
    id: u64,
    eviction: Arc<Eviction>,
}

impl PendingSlot {
    /// A slot for a new connection from `ip`, or `None` when its address already has
    /// [`MAX_PENDING_PER_ADDRESS`]. When all addresses together have [`MAX_PENDING`], the
    /// oldest connection that has not sent `join` yet is evicted to make room: a flood of
    /// silent connections from many addresses cannot keep a participant out (it would have to
    /// open connections faster than a participant sends its `join`); if every pending
    /// connection has sent `join` (they are negotiating), `None`.
    ///
    /// [`MAX_PENDING_PER_ADDRESS`]: crate::consts::MAX_PENDING_PER_ADDRESS
    /// [`MAX_PENDING`]: crate::consts::MAX_PENDING
    pub(crate) fn acquire(shared: &Arc<Shared>, ip: IpAddr) -> Option<PendingSlot> {
        use crate::consts::{MAX_PENDING, MAX_PENDING_PER_ADDRESS};
        let mut p = lock(&shared.pending);
        let mine = p.by_ip.get(&ip).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        let total: usize = p.by_ip.values().sum();
        if total >= MAX_PENDING {
            let (_, (old_ip, old)) = p.silent.pop_first()?;
            p.release(old_ip);
            old.done.store(true, Ordering::Relaxed);
            old.notify.notify_one();
            shared.stats.pending_evicted.fetch_add(1, Ordering::Relaxed);
        }
        *p.by_ip.entry(ip).or_insert(0) += 1;
        let id = p.next;
        p.next += 1;
        let eviction = Arc::new(Eviction::default());
        p.silent.insert(id, (ip, eviction.clone()));
        Some(PendingSlot {
            shared: shared.clone(),
            ip,
            id,
            eviction,
        })
    }

    /// Resolves when this connection was evicted (it stayed silent while the relay was full).
    pub(crate) async fn evicted(&self) {
        self.eviction.notify.notified().await
    }

    /// The connection sent `join`: it is no longer evicted for room (it still counts).
    pub(crate) fn joined(&self) {
        lock(&self.shared.pending).silent.remove(&self.id);
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut p = lock(&self.shared.pending);
        p.silent.remove(&self.id);
        // an evicted slot was released when it was evicted
        if !self.eviction.done.load(Ordering::Relaxed) {
            p.release(self.ip);
        }
    }
}

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl Relay {
    /// The control channel URL: `wss://addr` with TLS, else `ws://addr`. (With TLS,
    /// participants must use a name the certificate holds.)
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// The control URL join tokens must name: [`RelayConfig::public_url`], or [`Relay::url`].
    pub fn public_url(&self) -> &str {
        &self.shared.public_url
    }

    /// Whether the control channel speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Reads the control channel's certificate chain and key again (e.g. renewed) and serves
    /// them to every connection accepted from now on; open connections are not dropped.
    ///
    /// # Errors
    /// [`RelayError::Tls`]: a file that cannot be read, holds no certificate or key, or a key
    /// that does not match (the certificate served before stays in use), or
    /// [`sotto_tls::Error::NotConfigured`] for a relay without TLS.
    pub fn reload_tls(&self) -> Result<(), RelayError> {
        let tls = self
            .shared
            .tls
            .as_ref()
            .ok_or(RelayError::Tls(sotto_tls::Error::NotConfigured))?;
        tls.reload()?;
        tracing::info!("relay TLS certificate reloaded");
        Ok(())
    }

    /// Bound control address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters.
    pub fn stats(&self) -> (u64, u64, u64) {
        let s = &self.shared.stats;
        (
            s.packets_in.load(Ordering::Relaxed),
            s.packets_out.load(Ordering::Relaxed),
            s.bytes_in.load(Ordering::Relaxed),
        )
    }

    /// Control connections closed at once by the pre-join limits (see
    /// [`RelayStats::pending_refused`]).
    pub fn pending_refused(&self) -> u64 {
        self.shared.stats.pending_refused.load(Ordering::Relaxed)
    }

    /// Keyframe requests received from receivers and forwarded to senders: `(in, out)`.
    pub fn keyframe_requests(&self) -> (u64, u64) {
        let s = &self.shared.stats;
        (
            s.keyframe_requests_in.load(Ordering::Relaxed),
            s.keyframe_requests_out.load(Ordering::Relaxed),
        )
    }

    /// Retransmission counters (NACKs to senders, their late repairs, NACKs from receivers and
    /// the relay's retransmissions to them).
    pub fn retransmissions(&self) -> nack::RetransmissionStats {
        self.shared.stats.nack.snapshot()
    }

    /// Test knob (feature `test-hooks`): drop this share (per mille, capped at 1000) of the RTP
    /// the relay sends, right before the wire, as lossy relay-to-receiver paths would. The NACK
    /// responder has buffered each dropped packet and resends it when the receiver asks; resent
    /// packets may be dropped again. RTCP is spared. 0, the default, disables it.
    #[cfg(feature = "test-hooks")]
    pub fn set_outgoing_loss_per_mille(&self, p: u64) {
        self.shared
            .stats
            .nack
            .loss_per_mille
            .store(p.min(1000), Ordering::Relaxed);
    }

    /// Members of `room` now.
    pub fn members(&self, room: &str) -> Vec<String> {
        lock(&self.shared.rooms).names(room)
    }

    /// Audio packets whose audio level the speaker ranking took (see
    /// [`RelayStats::audio_levels_in`]).
    pub fn audio_levels_in(&self) -> u64 {
        self.shared.stats.audio_levels_in.load(Ordering::Relaxed)
    }

    /// `room`'s speaker places now ([`crate::speakers`]), if the room exists.
    pub fn speakers(&self, room: &str) -> Option<crate::speakers::Ranking> {
        lock(&self.shared.rooms).get(room).map(|r| r.ranking())
    }

    /// Stops accepting, closes every peer connection and flushes the capture.
    pub async fn shutdown(self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        let pcs: Vec<Arc<dyn PeerConnection>> = lock(&self.shared.rooms)
            .all_members()
            .map(|m| {
                m.feedback.iter().for_each(|t| t.abort());
                m.pc.clone()
            })
            .collect();
        for pc in pcs {
            let _ = pc.close().await;
        }
        if let Some(c) = &self.shared.capture {
            c.flush();
        }
    }

    /// Flushes the capture file.
    pub fn flush_capture(&self) {
        if let Some(c) = &self.shared.capture {
            c.flush();
        }
    }
}

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Socket or file.
    #[error("relay: {0}")]
    Io(#[from] std::io::Error),
    /// The certificate or key files of the control channel.
    #[error("relay: {0}")]
    Tls(#[from] sotto_tls::Error),
    /// [`RelayConfig::public_ip`] cannot stand for [`RelayConfig::bind_ip`].
    #[error("relay: {0}")]
    PublicIp(#[from] PublicIpError),
}

/// Starts a relay: its control channel is TLS if `cfg.tls` names a certificate and key, else
/// plain (with a warning if the address is not loopback).
///
/// # Errors
/// [`RelayError::Tls`] for certificate files that cannot be read or do not match, and
/// [`RelayError::PublicIp`] for a public address that cannot stand for the bind address (both
/// checked before anything is bound); [`RelayError::Io`] for the socket or the capture file.
pub async fn serve(cfg: RelayConfig) -> Result<Relay, RelayError> {
    if let Some(public) = cfg.public_ip {
        check_public_ip(cfg.bind_ip, public)?;
    }
    let tls = cfg.tls.clone().map(ServerTls::load).transpose()?;
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    sotto_tls::warn_if_plaintext_exposed("the relay control channel", addr, tls.is_some());
    let capture = match &cfg.capture_dir {
        Some(d) => Some(CaptureWriter::create(d)?),
        None => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let shared = Arc::new(Shared {
        tls,
        rooms: Mutex::new(Rooms::default()),
        capture,
        stats: RelayStats::default(),
        bind_ip: cfg.bind_ip,
        public_ip: cfg.public_ip,
        ports: Arc::new(MediaPorts::new(cfg.udp_ports)),
        closed: AtomicBool::new(false),
        pending: Mutex::default(),
        token_secret: cfg.token_secret.clone(),
        public_url,
    });
    let stop = Arc::new(Notify::new());
    let (s2, stop2) = (shared.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                acc = listener.accept() => {
                    let Ok((tcp, peer)) = acc else {
                        // out of descriptors or the like: do not spin
                        tokio::time::sleep(crate::consts::ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    };
                    let Some(slot) = PendingSlot::acquire(&s2, peer.ip()) else {
                        s2.stats.pending_refused.fetch_add(1, Ordering::Relaxed);
                        drop(tcp);
                        continue;
                    };
                    let s = s2.clone();
                    tokio::spawn(async move {
                        if let Err(e) = session::session(s, tcp, peer.ip(), slot).await {
                            tracing::debug!("relay session: {e}");
                        }
                    });
                }
                _ = stop2.notified() => return,
            }
        }
    });
    Ok(Relay { addr, shared, stop })
}
