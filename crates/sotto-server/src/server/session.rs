//! The authenticated state of a connection, driven by its one task: reading requests, writing
//! answers, pushes and handed-over envelopes, reading the backlog, and closing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::answer;
use crate::consts;
use crate::error::ErrorCode;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::protocol::{decode_client_frame, ClientMessage, ServerMessage};
use crate::server::requests::{handle_request, prepare_write};
use crate::server::shared::Shared;
use crate::server::wire::{close_frame, envelope_frame, frame, frame_text, Ws};
use crate::store::{DeviceAddr, Fenced, StoreResult, StoredEnvelope, WriteOp};
use crate::worker::{Conn, Ended, Out};

/// Why a session ends.
enum End {
    Closed,
    Error(Option<u64>, ErrorCode, &'static str),
}

/// What an authenticated connection's task handles next.
enum Event {
    /// A frame (or the end of the stream) from the peer.
    Incoming(Option<std::result::Result<Message, WsError>>),
    /// The connection must end.
    End(End),
}

/// A `send`/`ack` waiting for room in its connection's outbound queue (its requests are not read
/// meanwhile), and how long it may wait.
struct Stalled {
    op: WriteOp,
    id: u64,
    until: Pin<Box<tokio::time::Sleep>>,
}

/// The authenticated state, driven by the connection's one task: it reads requests, writes
/// answers and pushes from the connection's outbound queue (several frames per system call), and
/// reads the backlog when the store thread asks it to — all from one poll, so a blocked socket
/// write never stops reading and vice versa.
pub(crate) struct Session {
    ws: Ws,
    conn: Arc<Conn>,
    addr: DeviceAddr,
    /// Highest envelope id written; a handed-over envelope that a backlog read already wrote
    /// (id <= cursor) is skipped.
    cursor: u64,
    /// Frames handed to the socket layer and not yet flushed.
    dirty: bool,
    /// The close frame has been handed to the socket layer.
    closing: bool,
    /// Frames read since the last flush.
    reads: u32,
    /// A backlog read in flight on the store thread.
    backlog_rx: Option<oneshot::Receiver<StoreResult<Fenced<Vec<StoredEnvelope>>>>>,
    /// Backlog envelopes read and not yet written.
    backlog: Option<std::vec::IntoIter<StoredEnvelope>>,
    /// The backlog read was a full batch: read again once it is written.
    more_backlog: bool,
    /// Reading is paused until this fires (rate limit).
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Option<Box<Stalled>>,
    /// The server was shutting down when this session started.
    shutting_down: bool,
    /// Envelope rate limit.
    bucket: TokenBucket,
    /// Malformed frames so far.
    malformed: u32,
}

/// Frames written per poll before the task lets others run.
const WRITES_PER_POLL: usize = 256;

impl Session {
    /// Moves queued frames into the socket layer while it accepts them. `Err` when the socket
    /// failed; stops after the close frame.
    fn poll_write(&mut self, shared: &Shared, cx: &mut Context<'_>) -> std::result::Result<(), ()> {
        for _ in 0..WRITES_PER_POLL {
            if self.closing {
                return Ok(());
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => return Ok(()),
            }
            let msg = if let Some(it) = &mut self.backlog {
                let Some(e) = it.next() else {
                    self.backlog = None;
                    if std::mem::take(&mut self.more_backlog) {
                        self.conn.request_backlog();
                    }
                    continue;
                };
                if e.id <= self.cursor {
                    continue;
                }
                self.cursor = e.id;
                Metrics::inc(&shared.metrics.envelopes_delivered_total);
                envelope_frame(e)
            } else if self.backlog_rx.is_some() {
                // Nothing from the queue while a backlog read is in flight: an envelope handed
                // over after that read must not be written before the read's envelopes.
                return Ok(());
            } else {
                match self.conn.pop() {
                    None => return Ok(()),
                    Some(Out::Text(t)) => Message::text(t),
                    Some(Out::Written { id, outcome }) => frame(&answer::message(id, &outcome)),
                    Some(Out::Envelope(e)) => {
                        if e.id <= self.cursor {
                            continue;
                        }
                        self.cursor = e.id;
                        Metrics::inc(&shared.metrics.envelopes_delivered_total);
                        envelope_frame(*e)
                    }
                    Some(Out::Close(code)) => {
                        self.closing = true;
                        close_frame(code)
                    }
                }
            };
            if Pin::new(&mut self.ws).start_send(msg).is_err() {
                return Err(());
            }
            self.dirty = true;
        }
        // More to write: come back after the others have run.
        cx.waker().wake_by_ref();
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> std::result::Result<(), ()> {
        if self.dirty {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Drives writes, backlog reads and a stalled write; returns the next frame read or why the
    /// connection ends.
    fn poll_event(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Event> {
        let closed = Poll::Ready(Event::End(End::Closed));
        // Register first, then look at the flags and the queue: no wake-up is lost.
        self.conn.register(cx.waker());
        match self.conn.ended() {
            Some(Ended::Replaced) => {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::Replaced,
                    "another connection authenticated as this device",
                )))
            }
            Some(Ended::ShuttingDown) => {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::ShuttingDown,
                    "server shutting down",
                )))
            }
            None => {}
        }
        if self.backlog_rx.is_none() && self.backlog.is_none() && self.conn.take_backlog_request() {
            match self.start_backlog_read(shared) {
                Ok(rx) => self.backlog_rx = Some(rx),
                Err(e) => return Poll::Ready(Event::End(e)),
            }
        }
        if let Some(rx) = &mut self.backlog_rx {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(Fenced::Superseded))) => {
                    // whatever woke this stale connection may be for the current one, on
                    // another node: pass the ring on
                    if let Some(r) = &shared.ringer {
                        r.ring(&self.addr);
                    }
                    return Poll::Ready(Event::End(End::Error(
                        None,
                        ErrorCode::Replaced,
                        "another connection authenticated as this device",
                    )));
                }
                Poll::Ready(Ok(Ok(Fenced::Current(envs)))) => {
                    self.backlog_rx = None;
                    self.more_backlog = envs.len() == consts::DELIVERY_BATCH;
                    self.backlog = Some(envs.into_iter());
                }
                Poll::Ready(r) => {
                    let code = match r {
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "backlog read failed");
                            crate::answer::failure_code(&e)
                        }
                        _ => ErrorCode::Internal,
                    };
                    return Poll::Ready(Event::End(End::Error(None, code, "storage failure")));
                }
                Poll::Pending => {}
            }
        }
        if self.poll_write(shared, cx).is_err() {
            return closed;
        }
        let mut read = true;
        if let Some(st) = &mut self.stalled {
            read = false;
            if let Some(slot) = self.conn.try_reserve() {
                if let Some(st) = self.stalled.take() {
                    if shared.worker.submit(st.op, st.id, slot).is_err() {
                        return Poll::Ready(Event::End(End::Error(
                            None,
                            ErrorCode::Internal,
                            "storage failure",
                        )));
                    }
                }
                read = true;
            } else if st.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::SlowConsumer,
                    "not reading",
                )));
            }
        }
        if let Some(p) = &mut self.paused {
            if p.as_mut().poll(cx).is_ready() {
                self.paused = None;
            } else {
                read = false;
            }
        }
        if read {
            if self.reads < consts::READS_PER_FLUSH {
                if let Poll::Ready(m) = Pin::new(&mut self.ws).poll_next(cx) {
                    self.reads += 1;
                    return Poll::Ready(Event::Incoming(m));
                }
            } else {
                // Flush the answers collected so far, then go on reading.
                cx.waker().wake_by_ref();
            }
        }
        self.reads = 0;
        if self.poll_flush(cx).is_err() {
            return closed;
        }
        Poll::Pending
    }

    fn start_backlog_read(
        &self,
        shared: &Shared,
    ) -> std::result::Result<oneshot::Receiver<StoreResult<Fenced<Vec<StoredEnvelope>>>>, End> {
        let a = self.addr.clone();
        // on a cluster, only the device's current connection reads its queue (see
        // `Store::pending_fenced`); a single server's online map already holds one per device
        let fence = shared.clustered().then_some(self.conn.epoch);
        let now = shared.cfg.clock.now_ms();
        let after = self.cursor;
        let conn = self.conn.clone();
        let batch = consts::DELIVERY_BATCH;
        shared
            .worker
            .queue(move |s| {
                let envs = match fence {
                    Some(epoch) => match s.pending_fenced(&a, epoch, after, now, batch)? {
                        Fenced::Current(envs) => envs,
                        Fenced::Superseded => return Ok(Fenced::Superseded),
                    },
                    None => s.pending(&a, after, now, batch)?,
                };
                if envs.len() < batch {
                    // Seen every envelope committed so far: later ones are handed over.
                    conn.lagging.store(false, Ordering::Release);
                }
                Ok(Fenced::Current(envs))
            })
            .map_err(|_| End::Error(None, ErrorCode::Internal, "storage failure"))
    }

    /// Queues the last frames and writes them (at most 2 s), then closes the socket.
    async fn finish(mut self: Box<Self>, shared: &Shared, end: End) {
        // Unwritten backlog stays stored for the next connection.
        self.backlog_rx = None;
        self.backlog = None;
        match end {
            End::Closed => self.conn.push_final(Out::Close(None)),
            End::Error(id, code, why) => {
                shared.metrics.error(code);
                self.conn
                    .push_final(Out::Text(frame_text(&ServerMessage::error(id, code, why))));
                self.conn.push_final(Out::Close(Some(code)));
            }
        }
        let drain = std::future::poll_fn(|cx| {
            self.conn.register(cx.waker());
            if self.poll_write(shared, cx).is_err() {
                return Poll::Ready(());
            }
            if self.closing {
                // Flushes the close frame.
                return Pin::new(&mut self.ws).poll_close(cx).map(|_| ());
            }
            match self.poll_flush(cx) {
                Err(()) => Poll::Ready(()),
                Ok(()) => Poll::Pending,
            }
        });
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(2), drain)).await;
    }
}

impl Session {
    /// Enters the authenticated state: the connection goes online (replacing an earlier one of the
    /// same device) and, on a cluster, tells the other servers to close any older connection of
    /// the device (`epoch` is the one its login claimed).
    pub fn start(shared: &Shared, ws: Ws, addr: DeviceAddr, epoch: u64) -> Box<Self> {
        let limits = &shared.cfg.limits;
        let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        // Lagging, with a backlog read requested, until the first backlog read has caught up (see
        // worker.rs).
        let conn = Arc::new(Conn::new(conn_id, epoch, limits.outbound_queue_frames));
        let shutting_down = {
            let mut online = shared.online();
            // Checked under the map's lock, which `Server::shutdown` takes after setting the flag: a
            // session either sees the flag here or is told by the shutdown.
            if *shared.shutdown.borrow() {
                true
            } else {
                match online.get(&addr) {
                    // two logins here whose claims committed in the other order: the later
                    // claim stays
                    Some(p) if shared.clustered() && p.epoch > epoch => {
                        conn.end(Ended::Replaced);
                    }
                    _ => {
                        if let Some(p) = online.insert(addr.clone(), conn.clone()) {
                            p.end(Ended::Replaced);
                        }
                    }
                }
                false
            }
        };
        if let Some(r) = &shared.ringer {
            r.takeover(&addr, epoch);
        }
        Metrics::inc(&shared.metrics.authenticated_active);
        Box::new(Session {
            ws,
            conn,
            addr,
            cursor: 0,
            dirty: false,
            closing: false,
            reads: 0,
            backlog_rx: None,
            backlog: None,
            more_backlog: false,
            paused: None,
            stalled: None,
            shutting_down,
            bucket: TokenBucket::new(
                limits.envelopes_per_second,
                limits.envelope_burst,
                std::time::Instant::now(),
            ),
            malformed: 0,
        })
    }

    /// Serves the authenticated connection until it ends.
    pub async fn run(mut self: Box<Self>, shared: &Shared) {
        let end = loop {
            if self.shutting_down {
                break End::Error(None, ErrorCode::ShuttingDown, "server shutting down");
            }
            let s = &mut *self;
            let msg = match std::future::poll_fn(|cx| s.poll_event(shared, cx)).await {
                Event::End(e) => break e,
                Event::Incoming(m) => m,
            };
            let (id, m) = match self.on_frame(shared, msg) {
                Step::Next => continue,
                Step::End(e) => break e,
                Step::Request(id, m) => (id, m),
            };
            let (response, slow_down) = Box::pin(handle_request(shared, &self.addr, id, m)).await;
            if reply(shared, &self.conn, response).is_err() {
                break End::Error(None, ErrorCode::SlowConsumer, "not reading");
            }
            if let Some(d) = slow_down {
                self.pause(d);
            }
        };
        {
            let mut online = shared.online();
            if online
                .get(&self.addr)
                .is_some_and(|o| o.conn_id == self.conn.conn_id)
            {
                online.remove(&self.addr);
            }
        }
        Metrics::dec(&shared.metrics.authenticated_active);
        Box::pin(self.finish(shared, end)).await;
    }

    /// The offender is slowed: its frames are not read until a token is due.
    fn pause(&mut self, d: Duration) {
        self.paused = Some(Box::pin(tokio::time::sleep(d.min(Duration::from_secs(1)))));
    }

    /// Handles a frame read from the peer, unless it is a request that needs an answer from
    /// [`handle_request`].
    fn on_frame(
        &mut self,
        shared: &Shared,
        msg: Option<std::result::Result<Message, WsError>>,
    ) -> Step {
        let limits = &shared.cfg.limits;
        let bytes = match msg {
            None | Some(Ok(Message::Close(_))) => return Step::End(End::Closed),
            Some(Err(WsError::Capacity(_))) => {
                return Step::End(End::Error(
                    None,
                    ErrorCode::FrameTooLarge,
                    "frame exceeds the size limit",
                ))
            }
            Some(Err(_)) => return Step::End(End::Closed),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                return self.malformed(
                    shared,
                    None,
                    ErrorCode::Malformed,
                    "binary frames are not used",
                )
            }
            Some(Ok(_)) => return Step::Next,
        };
        let f = match decode_client_frame(bytes.as_bytes(), limits.max_frame_bytes) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::FrameTooLarge => {
                return Step::End(End::Error(e.id, e.code, "frame exceeds the size limit"))
            }
            Err(e) => return self.malformed(shared, e.id, e.code, "malformed frame"),
        };
        drop(bytes);
        let m @ (ClientMessage::Send { .. } | ClientMessage::Ack { .. }) = f.msg else {
            return Step::Request(f.id, f.msg);
        };
        let op = match prepare_write(shared, &self.addr, &mut self.bucket, f.id, m) {
            Ok(op) => op,
            Err(answer) => {
                let (response, slow_down) = *answer;
                if reply(shared, &self.conn, response).is_err() {
                    return Step::End(End::Error(None, ErrorCode::SlowConsumer, "not reading"));
                }
                if let Some(d) = slow_down {
                    self.pause(d);
                }
                return Step::Next;
            }
        };
        // Pipelined: the store thread answers into the slot reserved here, after the group
        // commit; this task goes on reading. A full outbound queue means the peer is not reading:
        // its requests are not read until the queue has room, but not for longer than
        // OUTBOUND_WAIT.
        match self.conn.try_reserve() {
            Some(slot) => {
                if shared.worker.submit(op, f.id, slot).is_err() {
                    return Step::End(End::Error(None, ErrorCode::Internal, "storage failure"));
                }
            }
            None => {
                self.stalled = Some(Box::new(Stalled {
                    op,
                    id: f.id,
                    until: Box::pin(tokio::time::sleep(consts::OUTBOUND_WAIT)),
                }));
            }
        }
        Step::Next
    }

    /// Answers a malformed frame, or ends the connection after too many.
    fn malformed(
        &mut self,
        shared: &Shared,
        id: Option<u64>,
        code: ErrorCode,
        why: &'static str,
    ) -> Step {
        self.malformed += 1;
        if self.malformed >= shared.cfg.limits.max_malformed_frames {
            return Step::End(End::Error(id, code, "too many malformed frames"));
        }
        if reply(shared, &self.conn, ServerMessage::error(id, code, why)).is_err() {
            return Step::End(End::Error(None, ErrorCode::SlowConsumer, "not reading"));
        }
        Step::Next
    }
}

/// What the connection's task does after a frame.
enum Step {
    /// Read on.
    Next,
    /// A request for [`handle_request`].
    Request(u64, ClientMessage),
    /// End the connection.
    End(End),
}

/// Queues `msg`, the answer to a request, counting it if it is an error.
fn reply(shared: &Shared, conn: &Conn, msg: ServerMessage) -> std::result::Result<(), ()> {
    if let ServerMessage::Error { code, .. } = &msg {
        shared.metrics.error(*code);
    }
    conn.try_push(Out::Text(frame_text(&msg))).map_err(|_| ())
}
