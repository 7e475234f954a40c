//! Rate and connection limits as plain state machines: time is a parameter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// A full bucket of `per_minute` tokens refilled at `per_minute` a minute.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute.max(1)),
            tokens: f64::from(per_minute),
            last: now,
        }
    }

    /// A full bucket of `per_hour` tokens refilled at `per_hour` an hour.
    pub fn per_hour(per_hour: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(per_hour) / 3600.0,
            burst: f64::from(per_hour.max(1)),
            tokens: f64::from(per_hour),
            last: now,
        }
    }

    /// Returns a token taken for something that did not happen (at most up to the burst).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Whether the bucket has refilled completely by `now` (it then limits nothing and can be
    /// forgotten: a new bucket is the same).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token if available; otherwise returns how long until one is.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

/// A per-minute token bucket as a store keeps it for a limit shared by every server on that
/// store: the same rule as [`TokenBucket::per_minute`], on wall-clock milliseconds (the servers
/// share no `Instant`). Sans-IO: the store reads it, applies [`SharedBucket::try_take`] and
/// writes it back in one transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedBucket {
    /// Tokens left at `last_ms`.
    pub tokens: f64,
    /// When it was last taken from, ms.
    pub last_ms: u64,
}

impl SharedBucket {
    /// A full bucket of `per_minute` tokens.
    pub fn full(per_minute: u32, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(per_minute),
            last_ms: now_ms,
        }
    }

    /// Refills for the time since it was last used, then takes one token if there is one.
    pub fn try_take(&mut self, per_minute: u32, now_ms: u64) -> bool {
        let rate = f64::from(per_minute) / 60_000.0;
        let burst = f64::from(per_minute.max(1));
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Returns a token taken for something that did not happen (at most up to the burst).
    pub fn give_back(&mut self, per_minute: u32) {
        self.tokens = (self.tokens + 1.0).min(f64::from(per_minute.max(1)));
    }

    /// Whether it is certainly full by `now_ms` (a stored one can then be forgotten).
    pub fn idle_for_a_minute(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) >= 60_000
    }
}

/// Counts live connections per IP address.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection slot; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimiter {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for `ip`, or `None` if it already has `max`.
    pub fn acquire(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{ENVELOPES_PER_SECOND, ENVELOPE_BURST, MAX_CONNECTIONS_PER_ADDR};

    #[test]
    fn bucket_burst_limit_and_limit_plus_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(ENVELOPES_PER_SECOND, ENVELOPE_BURST, t0);
        for _ in 0..ENVELOPE_BURST {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) / ENVELOPES_PER_SECOND + Duration::from_micros(1));
    }

    #[test]
    fn bucket_sustained_rate_limit_and_limit_plus_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(ENVELOPES_PER_SECOND, ENVELOPE_BURST, t0);
        while b.try_take(t0).is_ok() {}
        // One second later exactly ENVELOPES_PER_SECOND more are allowed, not one more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..ENVELOPES_PER_SECOND {
            assert!(b.try_take(t1).is_ok());
        }
        assert!(b.try_take(t1).is_err());
    }

    #[test]
    fn connections_limit_and_limit_plus_one() {
        let l = ConnectionLimiter::new(MAX_CONNECTIONS_PER_ADDR);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let slots: Vec<_> = (0..MAX_CONNECTIONS_PER_ADDR)
            .map(|_| l.acquire(ip).unwrap())
            .collect();
        assert!(l.acquire(ip).is_none());
        assert!(l.acquire(other).is_some(), "other addresses unaffected");
        drop(slots);
        assert!(l.acquire(ip).is_some(), "slots are released on drop");
    }
}
