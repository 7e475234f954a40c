//! The NACK generator of every sotto chain (the relay's, the participants'): what webrtc-rs
//! 0.21's generator does, with bounded costs.
//!
//! webrtc-rs's receive log clears every sequence number between its highest one and a newer
//! packet's, one at a time: a packet 32 767 ahead costs 32 766 steps, and a sender alternating
//! two numbers half the number space apart makes *every* packet such a jump. Its per-packet NACK
//! counts live in a map pruned by a linear search per entry (quadratic in the missing packets,
//! every interval). Here a jump costs at most the log's size in bits (a whole-log jump zeroes
//! `size / 64` words), and the counts sit beside the log, one per position, reset when the
//! position is reused. What it asks for is the same as webrtc-rs's, interval for interval (a
//! differential test runs both on the same streams).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use rtc::sansio;
use rtc::shared::error::Error;
use rtc::shared::TransportContext;

use super::supports_nack;

/// Half the sequence-number space: a difference below it is "ahead" (RFC 3550 order).
const HALF: u16 = 1 << 15;

/// Which of the last `size` sequence numbers of one stream arrived, and how often each missing
/// one was asked for.
struct ReceiveLog {
    /// One bit per position (`seq & mask`).
    bits: Vec<u64>,
    /// NACKs sent per position, for the number in that position now.
    asked: Vec<u16>,
    mask: u16,
    /// Highest sequence number received.
    end: u16,
    /// Every number up to this one arrived (or fell out of the log).
    last_consecutive: u16,
    started: bool,
}

impl ReceiveLog {
    /// `size`: a power of two, 64..=32 768.
    fn new(size: u16) -> Option<Self> {
        if !(6..=15).any(|i| size == 1 << i) {
            return None;
        }
        Some(ReceiveLog {
            bits: vec![0; usize::from(size / 64)],
            asked: vec![0; usize::from(size)],
            mask: size - 1,
            end: 0,
            last_consecutive: 0,
            started: false,
        })
    }

    fn size(&self) -> u16 {
        self.mask + 1
    }

    fn pos(&self, seq: u16) -> usize {
        usize::from(seq & self.mask)
    }

    fn received(&self, seq: u16) -> bool {
        let p = self.pos(seq);
        self.bits[p / 64] & (1 << (p % 64)) != 0
    }

    fn set(&mut self, seq: u16) {
        let p = self.pos(seq);
        self.bits[p / 64] |= 1 << (p % 64);
    }

    /// Forgets position `seq` (a newer number takes it).
    fn clear(&mut self, seq: u16) {
        let p = self.pos(seq);
        self.bits[p / 64] &= !(1u64 << (p % 64));
        self.asked[p] = 0;
    }

    fn add(&mut self, seq: u16) {
        if !self.started {
            self.started = true;
            self.set(seq);
            let p = self.pos(seq);
            self.asked[p] = 0;
            self.end = seq;
            self.last_consecutive = seq;
            return;
        }
        let diff = seq.wrapping_sub(self.end);
        if diff == 0 {
            return;
        }
        if diff < HALF {
            // the numbers skipped take their positions: at most the whole log is cleared
            if diff > self.size() {
                self.bits.fill(0);
                self.asked.fill(0);
            } else {
                let mut i = self.end.wrapping_add(1);
                while i != seq {
                    self.clear(i);
                    i = i.wrapping_add(1);
                }
                let p = self.pos(seq);
                self.asked[p] = 0;
            }
            self.end = seq;
            if self.last_consecutive.wrapping_add(1) == seq {
                self.last_consecutive = seq;
            } else if seq.wrapping_sub(self.last_consecutive) > self.size() {
                self.last_consecutive = seq.wrapping_sub(self.size());
                self.fix_last_consecutive();
            }
        } else if self.last_consecutive.wrapping_add(1) == seq {
            // late: it may close the gap after the last consecutive number
            self.last_consecutive = seq;
            self.fix_last_consecutive();
        }
        self.set(seq);
    }

    /// Moves `last_consecutive` over the numbers that arrived after it (at most the log).
    fn fix_last_consecutive(&mut self) {
        let mut i = self.last_consecutive.wrapping_add(1);
        while i != self.end.wrapping_add(1) && self.received(i) {
            i = i.wrapping_add(1);
        }
        self.last_consecutive = i.wrapping_sub(1);
    }

    /// The numbers missing after `last_consecutive`, each counted as asked for once more;
    /// those asked for `max` times already (`max` 0: no limit) are left out.
    fn take_missing(&mut self, max: u16) -> Vec<u16> {
        let mut out = Vec::new();
        if !self.started {
            return out;
        }
        let mut i = self.last_consecutive.wrapping_add(1);
        while i != self.end.wrapping_add(1) {
            if !self.received(i) {
                let p = self.pos(i);
                if max == 0 || self.asked[p] < max {
                    self.asked[p] = self.asked[p].saturating_add(1);
                    out.push(i);
                }
            }
            i = i.wrapping_add(1);
        }
        out
    }
}

/// Asks each NACK-capable remote stream's sender, every `interval`, for the packets missing
/// from its log (webrtc-rs's `NackGeneratorInterceptor`, bounded; module docs).
pub struct NackGenerator {
    size: u16,
    interval: Duration,
    max_nacks_per_packet: u16,
    sender_ssrc: u32,
    logs: HashMap<u32, ReceiveLog>,
    next: Option<Instant>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl NackGenerator {
    /// A log of `size` packets per stream (a power of two, 64..=32 768; another size tracks
    /// nothing), a NACK every `interval`, each packet asked for at most `max_nacks_per_packet`
    /// times (0: no limit).
    pub fn new(size: u16, interval: Duration, max_nacks_per_packet: u16) -> Self {
        NackGenerator {
            size,
            interval,
            max_nacks_per_packet,
            sender_ssrc: rand::random(),
            logs: HashMap::new(),
            next: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    fn generate(&mut self, now: Instant) {
        let mut ssrcs: Vec<u32> = self.logs.keys().copied().collect();
        ssrcs.sort_unstable();
        for ssrc in ssrcs {
            let Some(log) = self.logs.get_mut(&ssrc) else {
                continue;
            };
            let missing = log.take_missing(self.max_nacks_per_packet);
            if missing.is_empty() {
                continue;
            }
            let nack = TransportLayerNack {
                sender_ssrc: self.sender_ssrc,
                media_ssrc: ssrc,
                nacks: nack_pairs_from_sequence_numbers(&missing),
            };
            self.write.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
            });
        }
    }
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for NackGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            if let Some(log) = self.logs.get_mut(&p.header.ssrc) {
                log.add(p.header.sequence_number);
                if self.next.is_none() {
                    self.next = Some(msg.now + self.interval);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if self.next.is_some_and(|t| now >= t) {
            self.next = Some(now + self.interval);
            self.generate(now);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next
    }
}

impl Interceptor for NackGenerator {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if supports_nack(info) {
            if let Some(log) = ReceiveLog::new(self.size) {
                self.logs.insert(info.ssrc, log);
            }
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.logs.remove(&info.ssrc);
    }

    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rtc::interceptor::NackGeneratorBuilder;
    use rtc::sansio::Protocol;

    use super::super::fixtures::{rtp, tagged, video_stream, SSRC};
    use super::*;

    /// The sequence numbers each NACK in `out` names, per NACK.
    fn named(out: Vec<TaggedPacket>) -> Vec<Vec<u16>> {
        out.into_iter()
            .filter_map(|m| match m.message.packet {
                Packet::Rtcp(ps) => Some(
                    ps.iter()
                        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                        .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// Feeds `seqs` (one per ms) to `chain`, firing its timer; the NACKs it sent, per interval.
    fn run(chain: &mut impl Interceptor, start: Instant, seqs: &[u16]) -> Vec<Vec<u16>> {
        chain.bind_remote_stream(&video_stream());
        let mut nacks = Vec::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let now = start + Duration::from_millis(i as u64);
            chain.handle_timeout(now).unwrap();
            nacks.extend(named(std::iter::from_fn(|| chain.poll_write()).collect()));
            chain.handle_read(tagged(now, rtp(seq))).unwrap();
            while chain.poll_read().is_some() {}
        }
        nacks
    }

    /// A stream with loss, reordering, a wrap and jumps (forward past the log, and back).
    fn honest_stream(seed: u64) -> Vec<u16> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seq: u16 = rng.gen();
        let mut out = Vec::new();
        for i in 0..6_000 {
            seq = seq.wrapping_add(1);
            if i % 300 == 299 {
                // a jump: within the log, about its size, or far past it
                seq = seq.wrapping_add(match i % 900 {
                    299 => rng.gen_range(2..600),
                    599 => rng.gen_range(600..1_200),
                    _ => rng.gen_range(1_200..20_000),
                });
            }
            match rng.gen_range(0..100) {
                0..=7 => {} // lost
                8..=10 => {
                    // late: after the next one
                    out.push(seq.wrapping_add(1));
                    out.push(seq);
                    seq = seq.wrapping_add(1);
                }
                _ => out.push(seq),
            }
        }
        out
    }

    /// Differential against webrtc-rs 0.21's generator: on the same streams, the same NACKs in
    /// the same intervals.
    #[test]
    fn asks_for_what_webrtc_rs_asks_for_interval_for_interval() {
        for seed in 0..6u64 {
            for (size, interval, max) in [(512, 50, 8), (64, 20, 0), (1024, 100, 3)] {
                let seqs = honest_stream(seed);
                let start = Instant::now();
                let interval = Duration::from_millis(interval);
                let mut theirs = NackGeneratorBuilder::new()
                    .with_size(size)
                    .with_interval(interval)
                    .with_max_nacks_per_packet(max)
                    .build();
                let mut ours = NackGenerator::new(size, interval, max);
                let a = run(&mut theirs, start, &seqs);
                let b = run(&mut ours, start, &seqs);
                assert!(
                    a.len() > 20,
                    "seed {seed}: the stream makes NACKs ({})",
                    a.len()
                );
                assert_eq!(a, b, "seed {seed}, size {size}");
            }
        }
    }

    /// A sender alternating two numbers half the space apart makes every packet a jump: the log
    /// stays correct (each packet is the newest, the NACKs name at most the log) at a bounded
    /// cost (measured by `cargo bench -p sotto-relay --bench nack_jump`, not here).
    #[test]
    fn alternating_half_space_jumps_keep_the_log_bounded() {
        let mut g = NackGenerator::new(512, Duration::from_millis(50), 8);
        g.bind_remote_stream(&video_stream());
        let start = Instant::now();
        let mut seq = 0u16;
        for i in 0..2_000u64 {
            seq = seq.wrapping_add(HALF - 1);
            let now = start + Duration::from_millis(i);
            g.handle_read(tagged(now, rtp(seq))).unwrap();
            while g.poll_read().is_some() {}
            g.handle_timeout(now).unwrap();
            for n in named(std::iter::from_fn(|| g.poll_write()).collect()) {
                assert!(n.len() <= 512, "{}", n.len());
            }
        }
        let log = &g.logs[&SSRC];
        assert_eq!(log.end, seq);
        assert!(log.received(seq));
    }
}
