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

use std::fmt::Write as _;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::consts::{DOORBELL_QUEUE, NATS_CONNECT_TIMEOUT, NATS_PUBLISH_TIMEOUT, NATS_RETRY};
use crate::store::DeviceAddr;
use crate::worker::OnlineMap;

/// Subjects are `sotto.doorbell.<hex of the username>.<device>`.
const SUBJECT_PREFIX: &str = "sotto.doorbell";

/// The subject of `addr`'s doorbell (usernames are hex-encoded: any name is a valid token).
pub(crate) fn subject(addr: &DeviceAddr) -> String {
    let mut s = String::with_capacity(SUBJECT_PREFIX.len() + 2 * addr.user.len() + 12);
    s.push_str(SUBJECT_PREFIX);
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
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
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

/// Rings doorbells from the store thread (never blocks: a ring that does not fit the queue is
/// dropped, which only delays).
#[derive(Clone)]
pub(crate) struct Ringer(mpsc::Sender<DeviceAddr>);

impl Ringer {
    /// Rings `to`'s doorbell.
    pub fn ring(&self, to: &DeviceAddr) {
        if self.0.try_send(to.clone()).is_err() {
            tracing::warn!("doorbell queue full: a ring dropped (delivery waits for the next)");
        }
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
/// publishes rings and wakes local connections until aborted.
pub(crate) fn start(url: String, online: OnlineMap) -> Doorbell {
    let (tx, rx) = mpsc::channel(DOORBELL_QUEUE);
    let (ready_tx, ready) = watch::channel(false);
    let task = tokio::spawn(run(url, rx, online, ready_tx));
    Doorbell {
        ringer: Ringer(tx),
        ready,
        task,
    }
}

async fn connect(url: &str) -> async_nats::Client {
    loop {
        let opts = async_nats::ConnectOptions::new().connection_timeout(NATS_CONNECT_TIMEOUT);
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
    mut rings: mpsc::Receiver<DeviceAddr>,
    online: OnlineMap,
    ready: watch::Sender<bool>,
) {
    let (client, mut sub) = loop {
        let client = connect(&url).await;
        let subscribed = tokio::time::timeout(
            NATS_CONNECT_TIMEOUT,
            client.subscribe(format!("{SUBJECT_PREFIX}.>")),
        )
        .await;
        if let Ok(Ok(sub)) = subscribed {
            // the subscription is registered at the NATS server once the flush returns
            if let Ok(Ok(())) = tokio::time::timeout(NATS_CONNECT_TIMEOUT, client.flush()).await {
                break (client, sub);
            }
        }
        tracing::warn!("doorbell: NATS subscribe failed; retrying");
        tokio::time::sleep(NATS_RETRY).await;
    };
    let _ = ready.send(true);
    tracing::info!("doorbell: subscribed on NATS");
    loop {
        tokio::select! {
            ring = rings.recv() => {
                let Some(to) = ring else { return };
                // publish only queues the message in the client (it reconnects by itself)
                let sent = tokio::time::timeout(
                    NATS_PUBLISH_TIMEOUT,
                    client.publish(subject(&to), Default::default()),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!("doorbell: a ring was not published (delivery waits)");
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                if let Some(addr) = parse(&msg.subject) {
                    if let Some(c) = online.lock().get(&addr) {
                        c.request_backlog();
                    }
                }
            }
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
    }
}
