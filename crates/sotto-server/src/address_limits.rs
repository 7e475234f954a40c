//! Per-address rates as a plain state machine (time is a parameter): what one network address
//! may create, such as accounts. Sybil accounts are what make per-account limits (bundle fetches,
//! relay rooms, a sender's queue share) worth something; this is what bounds them.
//!
//! Addresses count as [`sotto_admission::address_key`] says (IPv6 per /56). Memory is bounded
//! by `max_tracked` entries: at the bound, entries that no longer limit anything are dropped,
//! and if none can be, a new address is refused (an attacker holding that many live entries at
//! once already owns that many addresses).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sotto_admission::address_key;

use crate::limits::TokenBucket;

/// A token bucket per address key: `per_hour` a burst of as many, refilled evenly over an hour.
#[derive(Debug)]
pub struct AddressRates {
    per_hour: u32,
    max_tracked: usize,
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl AddressRates {
    /// Empty table: `per_hour` per address, at most `max_tracked` addresses remembered.
    pub fn new(per_hour: u32, max_tracked: usize) -> Self {
        Self {
            per_hour,
            max_tracked,
            buckets: HashMap::new(),
        }
    }

    /// Takes one for `ip` at `now`, or says how long until one is due (state untouched).
    ///
    /// # Errors
    /// The wait, when `ip`'s bucket is empty or the table is full of live entries.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = address_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_tracked {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_tracked {
                return Err(Duration::from_secs(3600) / self.per_hour.max(1));
            }
        }
        let per_hour = self.per_hour;
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::per_hour(per_hour, now))
            .try_take(now)
    }

    /// Gives back one taken for something that did not happen.
    pub fn give_back(&mut self, ip: IpAddr) {
        if let Some(b) = self.buckets.get_mut(&address_key(ip)) {
            b.give_back();
        }
    }

    /// Addresses remembered (for tests of the memory bound).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limit_and_limit_plus_one_per_address() {
        let t0 = Instant::now();
        let mut r = AddressRates::new(3, 100);
        for _ in 0..3 {
            r.try_take(ip("192.0.2.1"), t0).unwrap();
        }
        let wait = r.try_take(ip("192.0.2.1"), t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1200) + Duration::from_millis(1),
            "{wait:?}"
        );
        // another address is not affected; a third of an hour refills one
        r.try_take(ip("192.0.2.2"), t0).unwrap();
        let t1 = t0 + Duration::from_secs(1200);
        r.try_take(ip("192.0.2.1"), t1).unwrap();
        assert!(r.try_take(ip("192.0.2.1"), t1).is_err());
        // a given-back one is there again
        r.give_back(ip("192.0.2.1"));
        r.try_take(ip("192.0.2.1"), t1).unwrap();
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let mut r = AddressRates::new(2, 100);
        r.try_take(ip("2001:db8:0:1::1"), t0).unwrap();
        // another /64 of the same /56
        r.try_take(ip("2001:db8:0:ff::2"), t0).unwrap();
        assert!(r.try_take(ip("2001:db8:0:7::3"), t0).is_err());
        // another /56
        r.try_take(ip("2001:db8:0:100::1"), t0).unwrap();
        r.try_take(ip("::ffff:192.0.2.9"), t0).unwrap();
        r.try_take(ip("192.0.2.9"), t0).unwrap();
        assert!(r.try_take(ip("::ffff:192.0.2.9"), t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut r = AddressRates::new(2, 4);
        for i in 1..=4 {
            r.try_take(ip(&format!("192.0.2.{i}")), t0).unwrap();
        }
        assert!(r.try_take(ip("192.0.2.5"), t0).is_err());
        assert_eq!(r.tracked(), 4);
        // once the four refill they no longer limit anything and are forgotten
        let t1 = t0 + Duration::from_secs(3600);
        r.try_take(ip("192.0.2.5"), t1).unwrap();
        assert_eq!(r.tracked(), 1);
    }
}
