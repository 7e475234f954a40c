//! The store thread: one OS thread owns every [`Store`] call, in arrival order.
//!
//! Connections hand it jobs over a channel, so no tokio worker ever blocks on SQLite and there is
//! no `spawn_blocking` hop per call. Reads and rare writes (register, prekeys, backlog reads) are
//! answered over a oneshot. Envelope writes (`send` and `ack`) are pipelined: the connection
//! reserves a slot in its own outbound queue, submits the write and goes on reading; writes that
//! queue up while the thread is busy are applied together by one [`Store::write_batch`] — one
//! transaction, one commit, one fsync (group commit). Only after that commit does the thread put
//! each write's typed outcome into its reserved slot (the connection turns it into the answer,
//! `stored`, `acked` or the error, with [`crate::answer`] and encodes it) and hand each stored
//! envelope to its recipient's connection if that connection is online and caught up, so a live
//! recipient gets its envelope without a store read. "stored" therefore always means durable
//! (to the configured [`crate::Durability`]), and an envelope is deleted only by its recipient's
//! `ack` (or by expiry).
//!
//! ## Catching up without gaps or duplicates
//! Each online connection has a `lagging` flag, set when it authenticates. While it is set the
//! store thread does not push envelopes to that connection; it only wakes the connection's
//! task, which reads its backlog with [`Store::pending`] *through this thread*. The pending
//! job clears the flag when it returns less than a full batch, i.e. when it has seen every
//! envelope committed so far. Because commits and pending reads are serialized on this thread
//! and ids increase in commit order, every envelope is either in a pending answer or pushed after
//! it, never both, never neither. A push that would take more than half of the connection's
//! outbound queue sets the flag again (the envelope stays stored and is read back by the next
//! pending job). While a backlog read is in flight the connection writes nothing from its queue,
//! so an envelope handed over after that read can never be written before the read's envelopes;
//! an envelope it has already written (id at most its cursor) is skipped on either path.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};

use futures_util::task::AtomicWaker;
use tokio::sync::oneshot;

use crate::answer::{self, Written};
use crate::consts;
use crate::doorbell::Ringer;
use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::store::{
    DeviceAddr, EnqueueOutcome, Store, StoreResult, StoredEnvelope, WriteOp, WriteOutcome,
};

/// What a connection writes, in order.
pub(crate) enum Out {
    /// An encoded server frame (response or push).
    Text(String),
    /// The outcome of the pipelined write that request `id` asked for, handed over by the store
    /// thread after its commit (answered and encoded when written, see [`crate::answer`]).
    Written { id: u64, outcome: Written },
    /// An envelope handed over by the store thread after its commit (encoded when written).
    Envelope(Box<StoredEnvelope>),
    /// Close the connection, with this error code as the reason (`None`: normal close).
    Close(Option<ErrorCode>),
}

/// Why a connection was told to end from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Another connection authenticated as the same device.
    Replaced,
    /// The server is shutting down.
    ShuttingDown,
}

struct Queue {
    items: VecDeque<Out>,
    /// Slots promised to writes still waiting for their commit.
    reserved: usize,
}

/// One authenticated connection as the router and the store thread see it: its bounded outbound
/// queue, and the flags that wake its task. One allocation per connection; the connection's task
/// is the only consumer.
pub(crate) struct Conn {
    pub conn_id: u64,
    /// The connection epoch its device claimed in the store (0 on a single server, which
    /// claims none; see [`Store::claim_connection`]).
    pub epoch: u64,
    cap: usize,
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    /// Set while the connection must read its backlog from the store (see the module docs).
    pub lagging: AtomicBool,
    /// A backlog read is requested.
    backlog: AtomicBool,
    /// 0, or an [`Ended`] reason + 1.
    ended: AtomicU8,
}

/// A place reserved in a connection's outbound queue; dropping it unused gives it back.
pub(crate) struct Slot(Option<Arc<Conn>>);

impl Slot {
    /// Puts `item` into the reserved place and wakes the connection.
    pub fn send(mut self, item: Out) {
        if let Some(c) = self.0.take() {
            {
                let mut q = c.lock();
                q.reserved -= 1;
                q.items.push_back(item);
            }
            c.waker.wake();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.lock().reserved -= 1;
            c.waker.wake();
        }
    }
}

impl Conn {
    /// A connection whose queue holds at most `cap` items (answers, pushes and reserved slots).
    /// It starts lagging, with a backlog read requested.
    pub fn new(conn_id: u64, epoch: u64, cap: usize) -> Self {
        Self {
            conn_id,
            epoch,
            cap: cap.max(1),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                reserved: 0,
            }),
            waker: AtomicWaker::new(),
            lagging: AtomicBool::new(true),
            backlog: AtomicBool::new(true),
            ended: AtomicU8::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_below(&self, item: Out, limit: usize) -> Result<(), Out> {
        {
            let mut q = self.lock();
            if q.items.len() + q.reserved >= limit {
                return Err(item);
            }
            q.items.push_back(item);
        }
        self.waker.wake();
        Ok(())
    }

    /// Queues `item` unless the queue is full.
    pub fn try_push(&self, item: Out) -> Result<(), Out> {
        self.push_below(item, self.cap)
    }

    /// Queues `item` if the queue stays at most half full (pushes leave room for answers).
    pub fn try_push_half(&self, item: Out) -> Result<(), Out> {
        self.push_below(item, self.cap / 2)
    }

    /// Queues `item` whatever the fill (the last frames of a closing connection).
    pub fn push_final(&self, item: Out) {
        self.lock().items.push_back(item);
        self.waker.wake();
    }

    /// Reserves a place for an answer, unless the queue is full.
    pub fn try_reserve(self: &Arc<Self>) -> Option<Slot> {
        let mut q = self.lock();
        if q.items.len() + q.reserved >= self.cap {
            return None;
        }
        q.reserved += 1;
        Some(Slot(Some(self.clone())))
    }

    /// The next queued item.
    pub fn pop(&self) -> Option<Out> {
        let mut q = self.lock();
        let item = q.items.pop_front();
        if q.items.is_empty() && q.items.capacity() > consts::OUTBOUND_RETAINED_SLOTS {
            // A burst is over: an idle connection keeps only a small queue.
            q.items.shrink_to(consts::OUTBOUND_RETAINED_SLOTS);
        }
        item
    }

    /// Asks the connection to read its backlog from the store.
    pub fn request_backlog(&self) {
        self.backlog.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Takes a pending backlog request.
    pub fn take_backlog_request(&self) -> bool {
        self.backlog.swap(false, Ordering::AcqRel)
    }

    /// Tells the connection to end.
    pub fn end(&self, why: Ended) {
        let v = match why {
            Ended::Replaced => 1,
            Ended::ShuttingDown => 2,
        };
        self.ended.store(v, Ordering::Release);
        self.waker.wake();
    }

    /// Whether (and why) the connection was told to end.
    pub fn ended(&self) -> Option<Ended> {
        match self.ended.load(Ordering::Acquire) {
            1 => Some(Ended::Replaced),
            2 => Some(Ended::ShuttingDown),
            _ => None,
        }
    }

    /// Registers the connection task's waker; check the queue and flags after this.
    pub fn register(&self, w: &std::task::Waker) {
        self.waker.register(w);
    }
}

/// Online devices, shared by connections and the store thread.
#[derive(Default, Clone)]
pub(crate) struct OnlineMap(Arc<Mutex<HashMap<DeviceAddr, Arc<Conn>>>>);

impl OnlineMap {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<DeviceAddr, Arc<Conn>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Call = Box<dyn FnOnce(&dyn Store) + Send>;

/// Where a write's answer goes: a slot reserved in the requesting connection's outbound queue.
struct Reply {
    id: u64,
    slot: Slot,
}

enum Job {
    Call(Call),
    Write(WriteOp, Reply),
}

/// The store thread disappeared (only after a panic inside a store implementation).
#[derive(Debug)]
pub(crate) struct Gone;

/// Handle to the store thread; the thread ends when every handle is dropped.
pub(crate) struct StoreWorker {
    tx: std_mpsc::Sender<Job>,
}

impl StoreWorker {
    /// Starts the store thread; with `ringer` (servers sharing one database), stored envelopes
    /// for devices not connected here ring their doorbell, and those connected here read them
    /// from the store rather than being handed them (see [`crate::doorbell`]).
    pub fn start(
        store: Arc<dyn Store>,
        online: OnlineMap,
        metrics: Arc<Metrics>,
        ringer: Option<Ringer>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("sotto-store".into())
            .spawn(move || run(&*store, &online, &metrics, ringer.as_ref(), &rx))?;
        Ok(Self { tx })
    }

    /// Runs `f` on the store thread.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<StoreResult<T>, Gone> {
        self.queue(f)?.await.map_err(|_| Gone)
    }

    /// Queues `f` for the store thread; its result arrives on the returned receiver.
    pub fn queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<oneshot::Receiver<StoreResult<T>>, Gone> {
        let (tx, rx) = oneshot::channel();
        let job: Call = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.tx.send(Job::Call(job)).map_err(|_| Gone)?;
        Ok(rx)
    }

    /// Applies `op` in the next group commit, then puts its outcome, for request `id`, into
    /// `slot`.
    pub fn submit(&self, op: WriteOp, id: u64, slot: Slot) -> Result<(), Gone> {
        self.tx
            .send(Job::Write(op, Reply { id, slot }))
            .map_err(|_| Gone)
    }
}

fn run(
    store: &dyn Store,
    online: &OnlineMap,
    metrics: &Metrics,
    ringer: Option<&Ringer>,
    rx: &std_mpsc::Receiver<Job>,
) {
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
                deliver(online, ringer, ops.drain(..), &outcomes);
                for (a, o) in replies.drain(..).zip(outcomes) {
                    hand_over(metrics, a, Ok(o));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = ops.len(), "group commit failed");
                ops.clear();
                let code = answer::failure_code(&e);
                for a in replies.drain(..) {
                    hand_over(metrics, a, Err(code));
                }
            }
        }
    }
}

/// Counts a write's outcome and puts it into the requester's reserved slot.
fn hand_over(metrics: &Metrics, a: Reply, outcome: Written) {
    answer::count(metrics, &outcome);
    a.slot.send(Out::Written { id: a.id, outcome });
}

/// Hands committed envelopes to online, caught-up recipients (see the module docs); with a
/// doorbell, wakes online recipients to read them and rings the others' doorbells.
fn deliver(
    online: &OnlineMap,
    ringer: Option<&Ringer>,
    ops: impl Iterator<Item = WriteOp>,
    outcomes: &[WriteOutcome],
) {
    let mut map: Option<MutexGuard<'_, _>> = None;
    for (op, outcome) in ops.zip(outcomes) {
        let (WriteOp::Enqueue { env, .. }, WriteOutcome::Enqueued(EnqueueOutcome::Stored(id))) =
            (op, outcome)
        else {
            continue;
        };
        let map = map.get_or_insert_with(|| online.lock());
        let Some(c) = map.get(&env.to) else {
            if let Some(r) = ringer {
                r.ring(&env.to);
            }
            continue;
        };
        if ringer.is_some() || c.lagging.load(Ordering::Acquire) {
            c.request_backlog();
            continue;
        }
        // Pushes may fill only half the outbound queue: the rest stays free for responses, so a
        // recipient that reads slowly is switched to backlog reads rather than closed.
        let item = Out::Envelope(Box::new(StoredEnvelope { id: *id, env }));
        if c.try_push_half(item).is_err() {
            c.lagging.store(true, Ordering::Release);
            c.request_backlog();
        }
    }
}
