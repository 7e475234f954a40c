//! What every connection task of one server shares: its configuration, the store thread, the
//! online devices, the per-address connection limiter and the counters.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sotto_tls::ServerTls;
use tokio::sync::watch;

use crate::address_limits::AddressRates;
use crate::error::{ErrorCode, Result};
use crate::fetch_limits::FetchLimits;
use crate::limits::ConnectionLimiter;
use crate::metrics::Metrics;
use crate::protocol::{encode_server_frame, ServerMessage};
use crate::server::config::ServerConfig;
use crate::store::{DeviceAddr, Store, StoreResult};
use crate::worker::{Conn, Gone, OnlineMap, Out, StoreWorker};

pub(crate) struct Shared {
    pub cfg: ServerConfig,
    /// The certificate served, if `cfg.tls` gave one (reloadable).
    pub tls: Option<ServerTls>,
    pub worker: StoreWorker,
    pub online: OnlineMap,
    pub limiter: ConnectionLimiter,
    /// Logged-in connections per address.
    pub authed_limiter: ConnectionLimiter,
    /// Bundle fetches per account, one-time prekeys per target and per (account, target).
    pub fetch_limits: std::sync::Mutex<FetchLimits>,
    /// New accounts per address.
    pub registrations: std::sync::Mutex<AddressRates>,
    pub metrics: Arc<Metrics>,
    pub next_conn: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
    /// Whether the doorbell (if configured) is subscribed.
    pub doorbell_ready: Option<watch::Receiver<bool>>,
    /// The doorbell task (aborted on shutdown).
    pub doorbell_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Rings and takeover notices to the other servers (`None`: a single server).
    pub ringer: Option<crate::doorbell::Ringer>,
    /// This server's name in the cluster (recorded with each connection claim).
    pub node_id: String,
}

impl Shared {
    /// Reads the certificate files if `cfg` names them and starts the store thread over
    /// `store`; connections are limited per address as `cfg` says.
    pub fn start(
        cfg: ServerConfig,
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self> {
        let tls = cfg.tls.clone().map(ServerTls::load).transpose()?;
        let online = OnlineMap::default();
        let metrics = Arc::new(Metrics::default());
        let doorbell = cfg.nats_url.as_ref().map(|u| {
            crate::doorbell::start(
                u.0.to_string(),
                online.clone(),
                cfg.limits.cluster_poll_interval,
            )
        });
        let ringer = doorbell.as_ref().map(|d| d.ringer.clone());
        let worker = StoreWorker::start(store, online.clone(), metrics.clone(), ringer.clone())?;
        let (doorbell_ready, doorbell_task) = match doorbell {
            Some(d) => (Some(d.ready), Some(d.task)),
            None => (None, None),
        };
        let node_id = cfg.node_id.clone().unwrap_or_else(|| {
            let mut b = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        });
        Ok(Self {
            ringer,
            node_id,
            limiter: ConnectionLimiter::new(cfg.limits.max_connections_per_addr),
            authed_limiter: ConnectionLimiter::new(cfg.limits.max_authenticated_per_addr),
            fetch_limits: std::sync::Mutex::new(FetchLimits::new(&cfg.limits)),
            registrations: std::sync::Mutex::new(AddressRates::new(
                cfg.limits.registrations_per_address_per_hour,
                cfg.limits.max_tracked_addresses,
            )),
            cfg,
            tls,
            worker,
            online,
            metrics,
            next_conn: AtomicU64::new(1),
            shutdown,
            doorbell_ready,
            doorbell_task: std::sync::Mutex::new(doorbell_task),
        })
    }

    /// Whether this server shares its store with others (it has a doorbell): logins claim a
    /// connection epoch and queue reads are fenced by it.
    pub fn clustered(&self) -> bool {
        self.ringer.is_some()
    }

    /// Decides a bundle fetch (see [`FetchLimits::decide`]).
    pub fn decide_fetch(
        &self,
        requester: &str,
        target: &DeviceAddr,
    ) -> crate::fetch_limits::FetchDecision {
        self.fetch_limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .decide(requester, target, std::time::Instant::now())
    }

    /// See [`FetchLimits::none_handed_out`].
    pub fn fetch_found_no_one_time(&self, requester: &str, target: &DeviceAddr) {
        self.fetch_limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .none_handed_out(requester, target);
    }

    /// Counts a new account registered from `ip`, or refuses it (see [`AddressRates`]).
    pub fn take_registration(&self, ip: std::net::IpAddr) -> bool {
        self.registrations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take(ip, std::time::Instant::now())
            .is_ok()
    }

    /// A registration counted by [`Self::take_registration`] created no account.
    pub fn registration_not_created(&self, ip: std::net::IpAddr) {
        self.registrations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .give_back(ip);
    }

    pub fn online(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceAddr, Arc<Conn>>> {
        self.online.lock()
    }

    /// Runs `f` on the store thread; a store failure is logged and answered as `internal`.
    pub async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> std::result::Result<T, ErrorCode> {
        store_answer(self.worker.call(f).await)
    }

    /// Tells `addr` its one-time prekey stock is low (`remaining` left): here if it is
    /// connected here, else (on a cluster) through the node it is connected to.
    pub fn prekeys_low(&self, addr: &DeviceAddr, remaining: u32) {
        let here = self.online().contains_key(addr);
        match (&self.ringer, here) {
            (Some(r), false) => r.prekeys_low(addr, remaining),
            _ => self.push(addr, &ServerMessage::PrekeysLow { remaining }),
        }
    }

    /// Pushes `msg` to `addr` if it is online.
    pub fn push(&self, addr: &DeviceAddr, msg: &ServerMessage) {
        if let (Some(c), Ok(text)) = (self.online().get(addr), encode_server_frame(msg)) {
            // Best effort: a push to a connection that is not reading is dropped.
            let _ = c.try_push(Out::Text(text));
        }
    }
}

fn store_answer<T>(
    r: std::result::Result<StoreResult<T>, Gone>,
) -> std::result::Result<T, ErrorCode> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store failure");
            Err(crate::answer::failure_code(&e))
        }
        Err(_) => Err(ErrorCode::Internal),
    }
}
