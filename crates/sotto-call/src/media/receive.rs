//! The receive path of one remote track: reassembled frames are decrypted (or wait for their
//! key, bounded), written to the sinks, counted, and keyframe requests go out while the
//! sender's picture cannot be decoded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp::packetizer::Depacketizer;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::consts::*;
use super::shared::{lock, Shared};
use super::{source, MediaEvent, MediaKind, TapFrame};

impl Shared {
    /// Tries to decrypt one reassembled frame; on success hands it to the sinks and the tap.
    /// Never panics on bad input. Counts decrypted frames, not failures (the caller decides
    /// whether a frame without its key yet waits).
    fn try_decrypt(&self, kind: MediaKind, wire: &[u8], rtp_ts: u32) -> Outcome {
        let c = &self.counters[kind.idx()];
        let now = Instant::now();
        let res = lock(&self.ring).decrypt(kind.codec(), b"", wire, now);
        match res {
            Ok(d) => {
                let n = c.frames_decrypted.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    self.emit(MediaEvent::FirstFrameDecrypted(kind));
                }
                if c.failing.swap(false, Ordering::Relaxed) {
                    self.emit(MediaEvent::DecryptRecovered(kind));
                }
                {
                    let mut g = lock(&self.remote_generation);
                    if g.is_none_or(|x| x < d.id.generation) {
                        *g = Some(d.id.generation);
                    }
                }
                if let Err(e) = lock(&self.sinks).write(d.id.sender, kind, &d.frame, rtp_ts) {
                    tracing::warn!("sink: {e}");
                }
                let key_frame = kind == MediaKind::Video && source::is_vp8_key_frame(&d.frame);
                if let Some(tap) = &self.tap {
                    let _ = tap.send(TapFrame {
                        sent: false,
                        kind,
                        frame: d.frame,
                        wire: wire.to_vec(),
                    });
                }
                Outcome::Decrypted {
                    key_frame,
                    sender: d.id.sender,
                }
            }
            // no key for this sender, generation or step yet: it may still arrive
            Err(
                sotto_frame::Error::UnknownKey { .. } | sotto_frame::Error::RatchetTooFar { .. },
            ) => Outcome::NoKeyYet,
            // under a key older than every one we hold for this sender
            Err(sotto_frame::Error::StaleGeneration { .. }) => Outcome::BeforeKey,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Counts a frame that will never decrypt.
    fn count_lost(&self, kind: MediaKind, outcome: &Outcome) {
        let c = &self.counters[kind.idx()];
        match outcome {
            Outcome::BeforeKey => {
                c.frames_before_key.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(_) | Outcome::NoKeyYet => {
                c.frames_failed.fetch_add(1, Ordering::Relaxed);
                if !c.failing.swap(true, Ordering::Relaxed) {
                    let why = match outcome {
                        Outcome::Failed(e) => e.clone(),
                        _ => "no key arrived within KEY_WAIT".into(),
                    };
                    self.emit(MediaEvent::DecryptFailing(kind, why));
                }
            }
            Outcome::Decrypted { .. } => {}
        }
    }
}

/// What became of one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Decrypted: whether it is a VP8 key frame, and whose (its KID's sender id).
    Decrypted { key_frame: bool, sender: u64 },
    /// Its key has not arrived (yet).
    NoKeyYet,
    /// Sent under a key older than every key we hold for its sender (before we were given
    /// access, e.g. a joiner's first frames; or past that key's grace period).
    BeforeKey,
    /// Any other failure (authentication, replay, malformed).
    Failed(String),
}

/// A frame waiting for its key.
struct Held {
    at: Instant,
    wire: Vec<u8>,
    rtp_ts: u32,
}

/// Frames of one remote track waiting for their key, in arrival order, bounded by
/// [`MAX_HELD_FRAMES`], [`MAX_HELD_BYTES`] and [`KEY_WAIT`].
#[derive(Default)]
struct HeldFrames {
    frames: std::collections::VecDeque<Held>,
    bytes: usize,
}

/// Receive side of keyframe requests, per remote video track (a relay slot, which carries one
/// sender after another): after a frame that did not decrypt (key not there yet) or went
/// missing, at the start, and when the track's frames start coming from another sender, the
/// picture cannot be decoded until a key frame; each decrypted inter frame in that state sends a
/// PLI on the track, at most one per [`KEYFRAME_REQUEST_RETRY`].
#[derive(Default)]
struct KeyFrameWait {
    waiting: bool,
    last_request: Option<Instant>,
    /// The sender of the last frame decrypted on the track.
    sender: Option<u64>,
}

impl KeyFrameWait {
    /// Whether to send a PLI now, given the outcome of the frame just handled.
    fn after_frame(&mut self, outcome: &Outcome, now: Instant) -> bool {
        if let Outcome::Decrypted { sender, .. } = outcome {
            // another sender on the track (a relay slot changed hands): its inter frames need
            // its own key frame first
            if self.sender.replace(*sender).is_some_and(|s| s != *sender) {
                self.waiting = true;
            }
        }
        match outcome {
            Outcome::Decrypted {
                key_frame: true, ..
            } => {
                self.waiting = false;
                false
            }
            Outcome::Decrypted {
                key_frame: false, ..
            } if self.waiting => {
                let due = self
                    .last_request
                    .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_RETRY);
                if due {
                    self.last_request = Some(now);
                }
                due
            }
            Outcome::Decrypted { .. } => false,
            // a frame the decoder never gets: it needs a key frame again
            _ => {
                self.waiting = true;
                false
            }
        }
    }
}

async fn request_key_frame(shared: &Shared, track: &Arc<dyn TrackRemote>) {
    let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    match track.write_rtcp(vec![Box::new(pli)]).await {
        Ok(()) => {
            shared.counters[MediaKind::Video.idx()]
                .keyframe_requests_sent
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!("PLI: {e}"),
    }
}

pub(super) async fn receive_loop<D: Depacketizer>(
    shared: Arc<Shared>,
    track: Arc<dyn TrackRemote>,
    kind: MediaKind,
    mut builder: SampleBuilder<D>,
) {
    let mut wait = KeyFrameWait {
        waiting: true,
        ..KeyFrameWait::default()
    };
    let mut held = HeldFrames::default();
    let mut keys = shared.key_epoch.subscribe();
    loop {
        let evt = tokio::select! {
            evt = track.poll() => evt,
            changed = keys.changed(), if !held.frames.is_empty() => {
                if changed.is_err() {
                    break;
                }
                let pli = retry_held(&shared, kind, &mut held, &mut wait, Instant::now());
                if pli {
                    request_key_frame(&shared, &track).await;
                }
                continue;
            }
        };
        let Some(evt) = evt else { break };
        if shared.closed.load(Ordering::Relaxed) {
            break;
        }
        if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
            let loss = shared.rx_loss_per_mille.load(Ordering::Relaxed);
            if loss > 0 && rand::random::<u64>() % 1000 < loss {
                continue;
            }
            shared.counters[kind.idx()]
                .packets_received
                .fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            builder.push(now, packet);
            let mut pli = false;
            while let Some(sample) = builder.pop(now) {
                let c = &shared.counters[kind.idx()];
                c.frames_received.fetch_add(1, Ordering::Relaxed);
                c.bytes_received
                    .fetch_add(sample.data.len() as u64, Ordering::Relaxed);
                if sample.prev_dropped_packets > sample.prev_padding_packets {
                    wait.waiting = true;
                }
                // behind frames still waiting for their key: wait in line (keeps the order)
                if !held.frames.is_empty() {
                    hold(
                        &shared,
                        kind,
                        &mut held,
                        &sample.data,
                        sample.packet_timestamp,
                        now,
                    );
                    pli |= retry_held(&shared, kind, &mut held, &mut wait, now);
                    continue;
                }
                match shared.try_decrypt(kind, &sample.data, sample.packet_timestamp) {
                    Outcome::NoKeyYet => hold(
                        &shared,
                        kind,
                        &mut held,
                        &sample.data,
                        sample.packet_timestamp,
                        now,
                    ),
                    o => {
                        shared.count_lost(kind, &o);
                        pli |= kind == MediaKind::Video && wait.after_frame(&o, now);
                    }
                }
            }
            if pli {
                request_key_frame(&shared, &track).await;
            }
        }
    }
}

/// Queues a frame whose key has not arrived; the oldest is dropped (counted failed) when a bound
/// is reached.
fn hold(
    shared: &Shared,
    kind: MediaKind,
    held: &mut HeldFrames,
    wire: &[u8],
    rtp_ts: u32,
    now: Instant,
) {
    while !held.frames.is_empty()
        && (held.frames.len() >= MAX_HELD_FRAMES || held.bytes + wire.len() > MAX_HELD_BYTES)
    {
        if let Some(old) = held.frames.pop_front() {
            held.bytes -= old.wire.len();
            shared.count_lost(kind, &Outcome::NoKeyYet);
        }
    }
    if wire.len() > MAX_HELD_BYTES {
        return shared.count_lost(kind, &Outcome::NoKeyYet);
    }
    held.bytes += wire.len();
    held.frames.push_back(Held {
        at: now,
        wire: wire.to_vec(),
        rtp_ts,
    });
}

/// Tries every held frame again, in order: decrypted ones go on, ones older than every key we
/// hold or held longer than [`KEY_WAIT`] are dropped and counted, the rest keep waiting.
/// Returns whether a keyframe request is due.
fn retry_held(
    shared: &Shared,
    kind: MediaKind,
    held: &mut HeldFrames,
    wait: &mut KeyFrameWait,
    now: Instant,
) -> bool {
    let mut pli = false;
    let mut keep = std::collections::VecDeque::new();
    while let Some(h) = held.frames.pop_front() {
        match shared.try_decrypt(kind, &h.wire, h.rtp_ts) {
            Outcome::NoKeyYet if now.duration_since(h.at) < KEY_WAIT => {
                keep.push_back(h);
                continue;
            }
            o @ Outcome::Decrypted { .. } => {
                shared.counters[kind.idx()]
                    .frames_waited_for_key
                    .fetch_add(1, Ordering::Relaxed);
                pli |= kind == MediaKind::Video && wait.after_frame(&o, now);
            }
            o => {
                shared.count_lost(kind, &o);
                pli |= kind == MediaKind::Video && wait.after_frame(&o, now);
            }
        }
        held.bytes -= h.wire.len();
    }
    held.frames = keep;
    pli
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key_frame: bool, sender: u64) -> Outcome {
        Outcome::Decrypted { key_frame, sender }
    }

    #[test]
    fn a_track_whose_frames_come_from_another_sender_waits_for_its_key_frame() {
        let t = Instant::now();
        let mut w = KeyFrameWait {
            waiting: true,
            ..KeyFrameWait::default()
        };
        // the start: an inter frame asks, the key frame ends the wait
        assert!(w.after_frame(&frame(false, 1), t));
        assert!(!w.after_frame(&frame(true, 1), t));
        assert!(!w.after_frame(&frame(false, 1), t + KEYFRAME_REQUEST_RETRY));
        // the slot now carries sender 2, starting with an inter frame: ask for its key frame
        let later = t + KEYFRAME_REQUEST_RETRY * 2;
        assert!(w.after_frame(&frame(false, 2), later));
        assert!(
            !w.after_frame(&frame(false, 2), later),
            "one per retry interval"
        );
        assert!(!w.after_frame(&frame(true, 2), later));
        // starting with its key frame: nothing to ask
        assert!(!w.after_frame(&frame(true, 3), later));
        assert!(!w.after_frame(&frame(false, 3), later + KEYFRAME_REQUEST_RETRY));
    }
}
