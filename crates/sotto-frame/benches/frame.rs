//! `cargo bench -p sotto-frame`: SFrame encrypt+decrypt of 160 B (audio), 1200 B (one packet of
//! video) and 50 KB (a key frame) against raw AES-128-GCM seal+open of the same bytes with the
//! same backend (RustCrypto `aes-gcm`), measured in the same run; prints the throughput ratio and
//! the bytes SFrame adds per frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput};
use sotto_frame::{CipherSuite, Codec, KeyRing, SenderKey};

const SIZES: [usize; 3] = [160, 1200, 50_000];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_open");
    for size in SIZES {
        let frame: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));

        let raw = Aes128Gcm::new_from_slice(&[0x42; 16]).unwrap();
        let nonce = [7u8; 12];
        group.bench_with_input(BenchmarkId::new("raw_aes128gcm", size), &frame, |b, f| {
            b.iter(|| {
                let n = Nonce::from_slice(&nonce);
                let ct = raw.encrypt(n, Payload { msg: f, aad: b"" }).unwrap();
                let pt = raw.decrypt(n, Payload { msg: &ct, aad: b"" }).unwrap();
                black_box(pt)
            })
        });

        for (name, suite) in [
            ("sframe_aes128gcm", CipherSuite::Aes128GcmSha256_128),
            ("sframe_ctr_hmac80", CipherSuite::Aes128CtrHmacSha256_80),
        ] {
            let mut sender = SenderKey::new(suite, 3, &[0x42; 16]).unwrap();
            let mut ring = KeyRing::new(suite);
            let now = Instant::now();
            ring.add_key(&sender.material(), now).unwrap();
            group.bench_with_input(BenchmarkId::new(name, size), &frame, |b, f| {
                b.iter(|| {
                    let wire = sender.encrypt(Codec::Full, b"", f).unwrap();
                    let got = ring.decrypt(Codec::Full, b"", &wire, now).unwrap();
                    black_box(got.frame)
                })
            });
        }
    }
    group.finish();
}

fn mean_ns(dir: &std::path::Path, name: &str, size: usize) -> Option<f64> {
    let path = dir
        .join("seal_open")
        .join(name)
        .join(size.to_string())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn report() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target"))
        })
        .join("criterion");
    println!("\nSFrame vs raw AES-128-GCM seal+open, same backend, same run (throughput ratio, goal >= 0.9):");
    println!(
        "{:>8} {:>14} {:>18} {:>8} {:>18} {:>8}",
        "size", "raw ns", "sframe-gcm ns", "ratio", "sframe-ctr80 ns", "ratio"
    );
    for size in SIZES {
        let (Some(raw), Some(gcm), Some(ctr)) = (
            mean_ns(&dir, "raw_aes128gcm", size),
            mean_ns(&dir, "sframe_aes128gcm", size),
            mean_ns(&dir, "sframe_ctr_hmac80", size),
        ) else {
            println!("{size:>8} (no estimates found under {})", dir.display());
            continue;
        };
        println!(
            "{size:>8} {raw:>14.0} {gcm:>18.0} {:>8.3} {ctr:>18.0} {:>8.3}",
            raw / gcm,
            raw / ctr
        );
    }
    println!("\nBytes added per frame (KID < 8, CTR < 256 / sotto sender 1 with KID 0x100):");
    for suite in [
        CipherSuite::Aes128GcmSha256_128,
        CipherSuite::Aes256GcmSha512_128,
        CipherSuite::Aes128CtrHmacSha256_80,
    ] {
        let mut s0 = SenderKey::new(suite, 0, &[1; 16]).unwrap();
        let mut s1 = SenderKey::new(suite, 1, &[1; 16]).unwrap();
        let small = (0..200)
            .map(|_| s0.encrypt(Codec::Full, b"", &[0; 100]).unwrap().len() - 100)
            .max()
            .unwrap();
        let ours = (0..200)
            .map(|_| s1.encrypt(Codec::Full, b"", &[0; 100]).unwrap().len() - 100)
            .max()
            .unwrap();
        println!("  {:<28} {small:>3} B   {ours:>3} B", suite.name());
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
