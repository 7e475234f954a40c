//! The store thread: one OS thread owns every [`Store`] call, in arrival order.
//!
//! Connections hand it jobs over a channel, so no tokio worker ever blocks on SQLite and there is
//! no `spawn_blocking` hop per call. Reads and rare writes (register, prekeys, backlog reads) are
//! answered over a oneshot. Envelope writes (`send` and `ack`) are pipelined: the connection
//! reserves a slot in its own outbound queue, submits the write and goes on reading; writes that
//! queue up while the thread is busy are applied together by one [`Store::write_batch`] — one
//! transaction, one commit, one fsync (group commit). Only after that commit does the thread put
//! each answer (`stored`, `acked`, or the error) into its reserved slot and hand each stored
//! envelope to its recipient's connection if that connection is online and caught up, so a live
//! recipient gets its envelope without a store read. "stored" therefore always means durable
//! (to the configured [`crate::Durability`]), and an envelope is deleted only by its recipient's
//! `ack` (or by expiry).
//!
//! ## Catching up without gaps or duplicates
//! Each online connection has a `lagging` flag, set when it authenticates. While it is set the
//! store thread does not push envelopes to that connection; it only wakes the connection's
//! writer, which reads its backlog with [`Store::pending`] *through this thread*. The pending
//! job clears the flag when it returns less than a full batch, i.e. when it has seen every
//! envelope committed so far. Because commits and pending reads are serialized on this thread
//! and ids increase in commit order, every envelope is either in a pending answer or pushed after
//! it, never both, never neither. A push that would take more than half of the connection's
//! outbound queue sets the flag again (the envelope stays stored and is read back by the next
//! pending job).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

use crate::consts;
use crate::metrics::Metrics;
use crate::server::write_answer;
use crate::store::{
    DeviceAddr, EnqueueOutcome, Store, StoreError, StoreResult, StoredEnvelope, WriteOp,
    WriteOutcome,
};

/// What a connection's writer sends, in order.
pub(crate) enum Out {
    /// A ready frame (response, push, close).
    Frame(Message),
    /// An envelope handed over by the store thread after its commit.
    Envelope(StoredEnvelope),
}

/// The outbound queue carries boxes so each connection's first channel block stays small.
pub(crate) type OutTx = mpsc::Sender<Box<Out>>;
/// Receiving end of [`OutTx`].
pub(crate) type OutRx = mpsc::Receiver<Box<Out>>;

/// An authenticated connection, as the router sees it.
pub(crate) struct Online {
    pub conn_id: u64,
    pub wake: Arc<Notify>,
    pub kick: Arc<Notify>,
    pub out: OutTx,
    pub lagging: Arc<AtomicBool>,
}

/// Online devices, shared by connections and the store thread.
#[derive(Default, Clone)]
pub(crate) struct OnlineMap(Arc<Mutex<HashMap<DeviceAddr, Online>>>);

impl OnlineMap {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<DeviceAddr, Online>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Call = Box<dyn FnOnce(&dyn Store) + Send>;

/// Where a write's answer goes: a slot reserved in the requesting connection's outbound queue.
struct Answer {
    id: u64,
    slot: mpsc::OwnedPermit<Box<Out>>,
}

enum Job {
    Call(Call),
    Write(WriteOp, Answer),
}

/// The store thread disappeared (only after a panic inside a store implementation).
#[derive(Debug)]
pub(crate) struct Gone;

/// Handle to the store thread; the thread ends when every handle is dropped.
pub(crate) struct StoreWorker {
    tx: std_mpsc::Sender<Job>,
}

impl StoreWorker {
    pub fn start(
        store: Arc<dyn Store>,
        online: OnlineMap,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("sotto-store".into())
            .spawn(move || run(&*store, &online, &metrics, &rx))?;
        Ok(Self { tx })
    }

    /// Runs `f` on the store thread.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<StoreResult<T>, Gone> {
        let (tx, rx) = oneshot::channel();
        let job: Call = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.tx.send(Job::Call(job)).map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Applies `op` in the next group commit, then writes the answer to request `id` into
    /// `slot`.
    pub fn submit(
        &self,
        op: WriteOp,
        id: u64,
        slot: mpsc::OwnedPermit<Box<Out>>,
    ) -> Result<(), Gone> {
        self.tx
            .send(Job::Write(op, Answer { id, slot }))
            .map_err(|_| Gone)
    }
}

fn run(store: &dyn Store, online: &OnlineMap, metrics: &Metrics, rx: &std_mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    let mut ops = Vec::new();
    let mut replies = Vec::new();
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let (op, reply) = match job {
            Job::Call(f) => {
                f(store);
                continue;
            }
            Job::Write(op, reply) => (op, reply),
        };
        ops.push(op);
        replies.push(reply);
        while ops.len() < consts::MAX_WRITE_BATCH {
            match rx.try_recv() {
                Ok(Job::Write(op, reply)) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Ok(call) => {
                    next = Some(call);
                    break;
                }
                Err(_) => break,
            }
        }
        match store.write_batch(&ops) {
            Ok(outcomes) => {
                deliver(online, ops.drain(..), &outcomes);
                for (a, o) in replies.drain(..).zip(outcomes) {
                    let msg = write_answer(metrics, a.id, &Ok(o));
                    a.slot.send(Box::new(Out::Frame(msg)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = ops.len(), "group commit failed");
                ops.clear();
                for a in replies.drain(..) {
                    let msg = write_answer(metrics, a.id, &Err(StoreError(e.0.clone())));
                    a.slot.send(Box::new(Out::Frame(msg)));
                }
            }
        }
    }
}

/// Hands committed envelopes to online, caught-up recipients (see the module docs).
fn deliver(online: &OnlineMap, ops: impl Iterator<Item = WriteOp>, outcomes: &[WriteOutcome]) {
    let mut map: Option<MutexGuard<'_, _>> = None;
    for (op, outcome) in ops.zip(outcomes) {
        let (WriteOp::Enqueue { env, .. }, WriteOutcome::Enqueued(EnqueueOutcome::Stored(id))) =
            (op, outcome)
        else {
            continue;
        };
        let map = map.get_or_insert_with(|| online.lock());
        let Some(o) = map.get(&env.to) else {
            continue;
        };
        if o.lagging.load(Ordering::Acquire) {
            o.wake.notify_one();
            continue;
        }
        // Pushes may fill only half the outbound queue: the rest stays free for responses, so a
        // recipient that reads slowly is switched to backlog reads rather than closed.
        let item = Box::new(Out::Envelope(StoredEnvelope { id: *id, env }));
        if o.out.capacity() <= o.out.max_capacity() / 2 || o.out.try_send(item).is_err() {
            o.lagging.store(true, Ordering::Release);
            o.wake.notify_one();
        }
    }
}
