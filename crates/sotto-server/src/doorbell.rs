//! The doorbell between servers that share one PostgreSQL: after a commit stores an envelope for
//! a device that is not connected here, the store thread rings that device's NATS core subject;
//! every server subscribes to all of them and, for a device connected to it, wakes the
//! connection to read its backlog from the store. The doorbell carries nothing but the address:
//! the envelopes are in the database, so a lost ring only delays delivery until the device's next
//! ring or reconnection, and never loses or duplicates anything.
//!
//! With a doorbell the store thread never pushes envelopes straight to a connection: it wakes the
//! connection to read its backlog instead. Another server may have committed a lower id for the
//! same recipient whose ring is still on its way; a push of the higher id would move the
//! connection's cursor past it. Reads in id order cannot skip one, because a recipient's ids
//! increase in commit order (see [`crate::store::PgStore`]).
//!
//! The same task carries takeovers: a device that logs in on one server claims a new connection
//! epoch in the store and that server publishes it on the device's takeover subject; a server
//! holding an older connection of the device closes it with `replaced`. A lost takeover notice
//! cannot leave two connections delivering one queue: the older one's next queue read is fenced
//! by the store (see [`crate::store::Store::pending_fenced`]) and closes it the same way.
//!
//! Low-prekey notices for a device connected elsewhere travel the same way (best effort, as on
//! one server).
//!
//! Rings can be lost (NATS down or restarting, a full queue); envelopes then wait in the store
//! and are delivered by the next read of the recipient's queue: every server re-reads the queue
//! of each device connected to it when its NATS connection comes back and every
//! [`crate::consts::CLUSTER_POLL_INTERVAL`].

use std::fmt::Write as _;

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::consts::{DOORBELL_QUEUE, NATS_CONNECT_TIMEOUT, NATS_PUBLISH_TIMEOUT, NATS_RETRY};
use crate::protocol::{encode_server_frame, ServerMessage};
use crate::store::DeviceAddr;
use crate::worker::{Ended, OnlineMap, Out};

/// Low-prekey notices travel on `sotto.prekeys_low.<hex of the username>.<device>`, the
/// payload the stock left in decimal: the node the device is connected to pushes `prekeys_low`.
const PREKEYS_LOW_PREFIX: &str = "sotto.prekeys_low";

/// Ring subjects are `sotto.doorbell.<hex of the username>.<device>`.
const SUBJECT_PREFIX: &str = "sotto.doorbell";

/// Takeover subjects are `sotto.takeover.<hex of the username>.<device>`; the payload is the new
/// connection's epoch in decimal.
const TAKEOVER_PREFIX: &str = "sotto.takeover";

/// The subject of `addr`'s doorbell (usernames are hex-encoded: any name is a valid token).
pub(crate) fn subject(addr: &DeviceAddr) -> String {
    subject_under(SUBJECT_PREFIX, addr)
}

fn subject_under(prefix: &str, addr: &DeviceAddr) -> String {
    let mut s = String::with_capacity(prefix.len() + 2 * addr.user.len() + 12);
    s.push_str(prefix);
    s.push('.');
    for b in addr.user.bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s.push('.');
    s.push_str(&addr.device.to_string());
    s
}

/// The address a doorbell subject names, if it is one.
pub(crate) fn parse(subject: &str) -> Option<DeviceAddr> {
    parse_under(SUBJECT_PREFIX, subject)
}

fn parse_under(prefix: &str, subject: &str) -> Option<DeviceAddr> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (hex, device) = rest.split_once('.')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(DeviceAddr::new(
        String::from_utf8(bytes).ok()?,
        device.parse().ok()?,
    ))
}

/// What the doorbell task publishes.
enum Bell {
    /// Wake the device's connection to read its queue.
    Ring(DeviceAddr),
    /// The device has a new connection with this epoch: older ones close.
    Takeover(DeviceAddr, u64),
    /// The device's one-time prekey stock is this low: tell it.
    PrekeysLow(DeviceAddr, u32),
}

/// Rings doorbells from the store thread and announces takeovers (never blocks: a message that
/// does not fit the queue is dropped, which only delays: see the module docs).
#[derive(Clone)]
pub(crate) struct Ringer(mpsc::Sender<Bell>);

impl Ringer {
    /// Rings `to`'s doorbell.
    pub fn ring(&self, to: &DeviceAddr) {
        if self.0.try_send(Bell::Ring(to.clone())).is_err() {
            tracing::warn!("doorbell queue full: a ring dropped (delivery waits for the next)");
        }
    }

    /// Tells the server `addr` is connected to that its one-time prekey stock is `remaining`.
    pub fn prekeys_low(&self, addr: &DeviceAddr, remaining: u32) {
        if self
            .0
            .try_send(Bell::PrekeysLow(addr.clone(), remaining))
            .is_err()
        {
            tracing::warn!("doorbell queue full: a low-prekey notice dropped");
        }
    }

    /// Tells every server that `addr` has a new connection with `epoch`.
    pub fn takeover(&self, addr: &DeviceAddr, epoch: u64) {
        if self
            .0
            .try_send(Bell::Takeover(addr.clone(), epoch))
            .is_err()
        {
            tracing::warn!("doorbell queue full: a takeover notice dropped (the fence closes it)");
        }
    }
}

/// What a server does with a takeover notice for a device connected to it with `local_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnTakeover {
    /// The local connection is older: close it as `replaced`.
    CloseLocal,
    /// The local connection is the announced one or newer (the notice is its own, or late).
    Keep,
}

/// Decides a takeover notice: only a strictly newer epoch replaces a connection.
pub(crate) fn on_takeover(local_epoch: u64, announced: u64) -> OnTakeover {
    if announced > local_epoch {
        OnTakeover::CloseLocal
    } else {
        OnTakeover::Keep
    }
}

/// The doorbell task's handles: the ringer for the store thread, and whether it is subscribed.
pub(crate) struct Doorbell {
    pub ringer: Ringer,
    pub ready: watch::Receiver<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the doorbell task on the current runtime: it connects to NATS at `url` (retrying every
/// [`NATS_RETRY`] until it succeeds; the client then reconnects by itself), subscribes, and
/// publishes rings and takeovers, wakes and closes local connections, and has every local
/// connection re-read its queue every `poll` and whenever NATS reconnects, until aborted.
pub(crate) fn start(url: String, online: OnlineMap, poll: Duration) -> Doorbell {
    let (tx, rx) = mpsc::channel(DOORBELL_QUEUE);
    let (ready_tx, ready) = watch::channel(false);
    let task = tokio::spawn(run(url, rx, online, ready_tx, poll));
    Doorbell {
        ringer: Ringer(tx),
        ready,
        task,
    }
}

/// Asks every local connection to read its queue.
fn reread_all(online: &OnlineMap) {
    for c in online.lock().values() {
        c.request_backlog();
    }
}

async fn connect(url: &str, reconnected: &mpsc::Sender<()>) -> async_nats::Client {
    loop {
        let tx = reconnected.clone();
        let opts = async_nats::ConnectOptions::new()
            .connection_timeout(NATS_CONNECT_TIMEOUT)
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    if matches!(ev, async_nats::Event::Connected) {
                        // coalesces: one pending re-read is enough
                        let _ = tx.try_send(());
                    }
                }
            });
        match tokio::time::timeout(NATS_CONNECT_TIMEOUT, opts.connect(url)).await {
            Ok(Ok(c)) => return c,
            Ok(Err(e)) => tracing::warn!(error = %e, "doorbell: NATS connect failed; retrying"),
            Err(_) => tracing::warn!("doorbell: NATS connect timed out; retrying"),
        }
        tokio::time::sleep(NATS_RETRY).await;
    }
}

async fn run(
    url: String,
    mut bells: mpsc::Receiver<Bell>,
    online: OnlineMap,
    ready: watch::Sender<bool>,
    poll: Duration,
) {
    let (reconnected_tx, mut reconnected) = mpsc::channel(1);
    let (client, mut rings, mut takeovers, mut low) = loop {
        let client = connect(&url, &reconnected_tx).await;
        let subscribed = tokio::time::timeout(NATS_CONNECT_TIMEOUT, async {
            let rings = client.subscribe(format!("{SUBJECT_PREFIX}.>")).await?;
            let takeovers = client.subscribe(format!("{TAKEOVER_PREFIX}.>")).await?;
            let low = client.subscribe(format!("{PREKEYS_LOW_PREFIX}.>")).await?;
            Ok::<_, async_nats::SubscribeError>((rings, takeovers, low))
        })
        .await;
        if let Ok(Ok((rings, takeovers, low))) = subscribed {
            // the subscriptions are registered at the NATS server once the flush returns
            if let Ok(Ok(())) = tokio::time::timeout(NATS_CONNECT_TIMEOUT, client.flush()).await {
                break (client, rings, takeovers, low);
            }
        }
        tracing::warn!("doorbell: NATS subscribe failed; retrying");
        tokio::time::sleep(NATS_RETRY).await;
    };
    let _ = ready.send(true);
    tracing::info!("doorbell: subscribed on NATS");
    // rings published by others before the subscription was registered were missed
    reread_all(&online);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            bell = bells.recv() => {
                let (subject, payload) = match bell {
                    None => return,
                    Some(Bell::Ring(to)) => (subject(&to), Default::default()),
                    Some(Bell::Takeover(addr, epoch)) => (
                        subject_under(TAKEOVER_PREFIX, &addr),
                        epoch.to_string().into_bytes().into(),
                    ),
                    Some(Bell::PrekeysLow(addr, remaining)) => (
                        subject_under(PREKEYS_LOW_PREFIX, &addr),
                        remaining.to_string().into_bytes().into(),
                    ),
                };
                // publish only queues the message in the client (it reconnects by itself)
                let sent =
                    tokio::time::timeout(NATS_PUBLISH_TIMEOUT, client.publish(subject, payload))
                        .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!("doorbell: a message was not published (the poll makes up)");
                }
            }
            msg = rings.next() => {
                let Some(msg) = msg else { return };
                if let Some(addr) = parse(&msg.subject) {
                    if let Some(c) = online.lock().get(&addr) {
                        c.request_backlog();
                    }
                }
            }
            msg = takeovers.next() => {
                let Some(msg) = msg else { return };
                let announced = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|e| e.parse::<u64>().ok());
                if let (Some(addr), Some(epoch)) =
                    (parse_under(TAKEOVER_PREFIX, &msg.subject), announced)
                {
                    if let Some(c) = online.lock().get(&addr) {
                        if on_takeover(c.epoch, epoch) == OnTakeover::CloseLocal {
                            c.end(Ended::Replaced);
                        }
                    }
                }
            }
            msg = low.next() => {
                let Some(msg) = msg else { return };
                let remaining = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|e| e.parse::<u32>().ok());
                if let (Some(addr), Some(remaining)) =
                    (parse_under(PREKEYS_LOW_PREFIX, &msg.subject), remaining)
                {
                    let frame = encode_server_frame(&ServerMessage::PrekeysLow { remaining });
                    if let (Some(c), Ok(text)) = (online.lock().get(&addr), frame) {
                        // best effort, as on one server
                        let _ = c.try_push(Out::Text(text));
                    }
                }
            }
            Some(()) = reconnected.recv() => {
                tracing::info!("doorbell: NATS (re)connected; re-reading every local queue");
                reread_all(&online);
            }
            _ = tick.tick() => reread_all(&online),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_any_username() {
        for (user, device) in [("alice", 1), ("a.b*>", 7), ("ünï", u32::MAX)] {
            let a = DeviceAddr::new(user, device);
            let s = subject(&a);
            assert!(!s[SUBJECT_PREFIX.len() + 1..].contains(['*', '>', ' ']));
            assert_eq!(s.matches('.').count(), 3, "{s}");
            assert_eq!(parse(&s), Some(a));
        }
        for bad in [
            "sotto.doorbell.616",
            "sotto.doorbell.zz.1",
            "sotto.doorbell.61.x",
            "other.61.1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let a = DeviceAddr::new("bob", 3);
        let t = subject_under(TAKEOVER_PREFIX, &a);
        assert_eq!(parse(&t), None, "a takeover is not a ring");
        assert_eq!(parse_under(TAKEOVER_PREFIX, &t), Some(a));
    }

    #[test]
    fn only_a_newer_epoch_takes_over() {
        assert_eq!(on_takeover(4, 5), OnTakeover::CloseLocal);
        assert_eq!(on_takeover(5, 5), OnTakeover::Keep, "its own notice");
        assert_eq!(on_takeover(6, 5), OnTakeover::Keep, "a late notice");
    }
}
