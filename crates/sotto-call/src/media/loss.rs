//! A wire-most interceptor that drops a share of outgoing RTP packets, as a lossy path would.
//!
//! It sits below every other interceptor (closest to the socket), so the NACK responder has
//! already buffered the packet it drops and retransmits it if the receiver asks; retransmissions
//! cross it again and may be dropped again. RTCP is never dropped. With the share at 0 (the
//! default) it is a pass-through.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

/// Where the interceptor sits: below [`Slot::CongestionControl`], i.e. last before the wire.
pub(crate) const LOSS_SLOT: usize = 500;

/// Shared knobs of a [`LossInterceptor`].
#[derive(Default)]
pub(crate) struct LossKnob {
    /// Drop probability in 1/1000.
    pub(crate) per_mille: AtomicU64,
    /// RTP packets dropped so far.
    pub(crate) dropped: AtomicU64,
    /// RTP packets let through so far.
    pub(crate) passed: AtomicU64,
}

pub(crate) struct LossInterceptor {
    knob: Arc<LossKnob>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl LossInterceptor {
    pub(crate) fn new(knob: Arc<LossKnob>) -> Self {
        LossInterceptor {
            knob,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    pub(crate) fn slot() -> Slot {
        Slot::from(LOSS_SLOT)
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_)) {
            let p = self.knob.per_mille.load(Ordering::Relaxed);
            if p > 0 && rand::random::<u64>() % 1000 < p {
                self.knob.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.knob.passed.fetch_add(1, Ordering::Relaxed);
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for LossInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtc::interceptor::{AttributedPacket, Registry};
    use rtc::shared::TransportContext;

    fn pkt(p: Packet) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(p),
        }
    }

    fn run(per_mille: u64, n: usize) -> (usize, Arc<LossKnob>) {
        let knob = Arc::new(LossKnob::default());
        knob.per_mille.store(per_mille, Ordering::Relaxed);
        let mut chain = Registry::new()
            .with(LossInterceptor::slot(), LossInterceptor::new(knob.clone()))
            .build();
        let mut out = 0;
        for _ in 0..n {
            chain
                .handle_write(pkt(Packet::Rtp(rtc::rtp::Packet::default())))
                .unwrap();
            while chain.poll_write().is_some() {
                out += 1;
            }
        }
        (out, knob)
    }

    #[test]
    fn zero_loss_passes_everything() {
        let (out, knob) = run(0, 500);
        assert_eq!(out, 500);
        assert_eq!(knob.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ten_percent_drops_about_ten_percent_of_rtp_and_no_rtcp() {
        let (out, knob) = run(100, 5000);
        let dropped = knob.dropped.load(Ordering::Relaxed) as usize;
        assert_eq!(out + dropped, 5000);
        assert!((350..=650).contains(&dropped), "dropped {dropped} of 5000");
        let mut chain = Registry::new()
            .with(LossInterceptor::slot(), LossInterceptor::new(knob.clone()))
            .build();
        knob.per_mille.store(1000, Ordering::Relaxed);
        chain.handle_write(pkt(Packet::Rtcp(Vec::new()))).unwrap();
        assert!(chain.poll_write().is_some(), "RTCP must never be dropped");
        chain
            .handle_write(pkt(Packet::Rtp(rtc::rtp::Packet::default())))
            .unwrap();
        assert!(
            chain.poll_write().is_none(),
            "all RTP dropped at 1000 per mille"
        );
    }
}
