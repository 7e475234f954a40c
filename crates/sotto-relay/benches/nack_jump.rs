//! What a received video packet costs the NACK generator, webrtc-rs 0.21's beside sotto's
//! (`sotto_relay::nack::NackGenerator`, the same NACKs with bounded costs), same run:
//!
//! - *honest*: in order, 5 % lost;
//! - *jumps*: a sender alternating two sequence numbers half the number space apart, so every
//!   packet is a jump of 32 767 (what a malicious member can send the relay, or a relay a
//!   participant).
//!
//! Both with a 512-packet log, a NACK every 50 ms, each packet asked for at most 8 times (the
//! relay's settings). Reports ns per packet (median of `--runs`, default 5) and the ratio.
//! `cargo bench -p sotto-relay --bench nack_jump [-- --runs N]`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rtc::interceptor::{
    AttributedPacket, Interceptor, NackGeneratorBuilder, Packet, RTCPFeedback, StreamInfo,
    TaggedPacket,
};
use rtc::shared::TransportContext;
use sotto_relay::nack::NackGenerator;

const PACKETS: u32 = 200_000;

fn stream() -> StreamInfo {
    StreamInfo {
        ssrc: 7,
        payload_type: 96,
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90_000,
        rtcp_feedback: vec![RTCPFeedback {
            typ: "nack".to_owned(),
            parameter: String::new(),
        }],
        ..Default::default()
    }
}

fn packet(now: Instant, seq: u16) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc: 7,
                payload_type: 96,
                sequence_number: seq,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        })),
    }
}

/// ns per packet of `chain` fed `seq(i)` for `PACKETS` packets, one every 20 µs of virtual time.
fn run(mut chain: impl Interceptor, seq: impl Fn(u32) -> Option<u16>) -> f64 {
    chain.bind_remote_stream(&stream());
    let start = Instant::now();
    let t0 = Instant::now();
    for i in 0..PACKETS {
        let now = start + Duration::from_micros(u64::from(i) * 20);
        let Some(s) = seq(i) else { continue };
        chain.handle_read(packet(now, s)).unwrap();
        while chain.poll_read().is_some() {}
        chain.handle_timeout(now).unwrap();
        while chain.poll_write().is_some() {}
    }
    t0.elapsed().as_nanos() as f64 / f64::from(PACKETS)
}

fn theirs() -> impl Interceptor {
    NackGeneratorBuilder::new()
        .with_size(512)
        .with_interval(Duration::from_millis(50))
        .with_max_nacks_per_packet(8)
        .build()
}

fn ours() -> impl Interceptor {
    NackGenerator::new(512, Duration::from_millis(50), 8)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize);
    let honest = |i: u32| (i % 20 != 7).then_some(i as u16);
    let jumps = |i: u32| Some((i as u16).wrapping_mul(u16::MAX / 2));
    println!(
        "NACK generator, ns per received packet (median of {runs} runs; {PACKETS} packets each)"
    );
    println!(
        "{:<8} {:>12} {:>12} {:>8}",
        "stream", "webrtc-rs", "sotto", "ratio"
    );
    for (name, seq) in [
        ("honest", &honest as &dyn Fn(u32) -> Option<u16>),
        ("jumps", &jumps),
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            a.push(run(theirs(), seq));
            b.push(run(ours(), seq));
        }
        let (a, b) = (median(a), median(b));
        println!("{name:<8} {a:>12.1} {b:>12.1} {:>7.3}x", b / a);
    }
}
