//! Prekey-bundle fetch limits as a plain state machine (time is a parameter): fetches per
//! requesting account, one-time prekeys handed out per target device, and at most one one-time
//! prekey per (requester, target) pair per window. Memory is bounded by
//! [`crate::consts::MAX_TRACKED_FETCH_KEYS`] entries per table.
//!
//! Only the requester's own fetches are ever refused: limits on a *target* withhold its
//! one-time prekeys (the bundle is still served, and PQXDH runs on the signed prekey and the
//! last-resort Kyber prekey), so nobody can stop others from calling a user by fetching her
//! bundles, and nobody can drain her one-time prekeys faster than the target limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::limits::TokenBucket;
use crate::server::Limits;
use crate::store::DeviceAddr;

/// What a fetch may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchDecision {
    /// Serve the bundle with a one-time prekey (if the target has one left).
    WithOneTime,
    /// Serve the bundle without a one-time prekey (target or pair limit).
    WithoutOneTime,
    /// Refuse the fetch (`fetch_rate_limited`); a token is available again after this long.
    Refused(Duration),
}

/// The three tables.
#[derive(Debug)]
pub struct FetchLimits {
    per_requester: u32,
    per_target: u32,
    window: Duration,
    max_keys: usize,
    requesters: HashMap<String, TokenBucket>,
    targets: HashMap<DeviceAddr, TokenBucket>,
    pairs: HashMap<(String, DeviceAddr), Instant>,
}

/// The entry for `key`, inserted with `new` if there is room (after dropping the entries
/// `stale` says no longer limit anything); `None` when the table is full of live entries.
fn entry<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    key: K,
    max: usize,
    stale: impl Fn(&V) -> bool,
    new: impl FnOnce() -> V,
) -> Option<&mut V> {
    if !map.contains_key(&key) && map.len() >= max {
        map.retain(|_, v| !stale(v));
        if map.len() >= max {
            return None;
        }
    }
    Some(map.entry(key).or_insert_with(new))
}

impl FetchLimits {
    /// Empty tables with `limits`' values.
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_requester: limits.bundle_fetches_per_minute,
            per_target: limits.one_time_prekeys_per_target_per_minute,
            window: limits.one_time_prekey_repeat_window,
            max_keys: limits.max_tracked_fetch_keys,
            requesters: HashMap::new(),
            targets: HashMap::new(),
            pairs: HashMap::new(),
        }
    }

    /// Decides a fetch of `target`'s bundle by account `requester` at `now`, and counts it.
    pub fn decide(&mut self, requester: &str, target: &DeviceAddr, now: Instant) -> FetchDecision {
        let (per_requester, per_target, window) =
            (self.per_requester, self.per_target, self.window);
        let Some(bucket) = entry(
            &mut self.requesters,
            requester.to_owned(),
            self.max_keys,
            |b| b.is_full(now),
            || TokenBucket::per_minute(per_requester, now),
        ) else {
            return FetchDecision::Refused(Duration::from_secs(60));
        };
        if let Err(wait) = bucket.try_take(now) {
            return FetchDecision::Refused(wait);
        }
        let pair = (requester.to_owned(), target.clone());
        let recent = |t: &Instant| now.saturating_duration_since(*t) < window;
        if self.pairs.get(&pair).is_some_and(recent) {
            return FetchDecision::WithoutOneTime;
        }
        // room for the pair first, so a target token is not spent on a fetch that cannot be
        // remembered
        if !self.pairs.contains_key(&pair) && self.pairs.len() >= self.max_keys {
            self.pairs.retain(|_, t| recent(t));
            if self.pairs.len() >= self.max_keys {
                return FetchDecision::WithoutOneTime;
            }
        }
        let Some(target_bucket) = entry(
            &mut self.targets,
            target.clone(),
            self.max_keys,
            |b| b.is_full(now),
            || TokenBucket::per_minute(per_target, now),
        ) else {
            return FetchDecision::WithoutOneTime;
        };
        if target_bucket.try_take(now).is_err() {
            return FetchDecision::WithoutOneTime;
        }
        self.pairs.insert(pair, now);
        FetchDecision::WithOneTime
    }

    /// A fetch decided [`FetchDecision::WithOneTime`] handed out no one-time prekey (none in
    /// stock, or no bundle at all): the pair's and the target's allowance are given back.
    pub fn none_handed_out(&mut self, requester: &str, target: &DeviceAddr) {
        self.pairs.remove(&(requester.to_owned(), target.clone()));
        if let Some(b) = self.targets.get_mut(target) {
            b.give_back();
        }
    }

    /// Entries held (requesters, targets, pairs): for tests of the memory bound.
    pub fn tracked(&self) -> (usize, usize, usize) {
        (self.requesters.len(), self.targets.len(), self.pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_requester: u32, per_target: u32, max_keys: usize) -> Limits {
        Limits {
            bundle_fetches_per_minute: per_requester,
            one_time_prekeys_per_target_per_minute: per_target,
            one_time_prekey_repeat_window: Duration::from_secs(3600),
            max_tracked_fetch_keys: max_keys,
            ..Limits::default()
        }
    }

    fn bob(d: u32) -> DeviceAddr {
        DeviceAddr::new("bob", d)
    }

    #[test]
    fn requester_limit_and_limit_plus_one() {
        let t0 = Instant::now();
        let mut f = FetchLimits::new(&limits(5, 100, 100));
        for i in 0..5 {
            assert!(!matches!(
                f.decide("mallory", &bob(i + 1), t0),
                FetchDecision::Refused(_)
            ));
            assert!(!matches!(
                f.decide("x", &bob(1), t0),
                FetchDecision::Refused(_)
            ));
        }
        assert!(matches!(
            f.decide("mallory", &bob(9), t0),
            FetchDecision::Refused(_)
        ));
        // another account is not affected, and a minute refills
        assert!(!matches!(
            f.decide("alice", &bob(9), t0),
            FetchDecision::Refused(_)
        ));
        assert!(!matches!(
            f.decide("mallory", &bob(9), t0 + Duration::from_secs(60)),
            FetchDecision::Refused(_)
        ));
    }

    #[test]
    fn one_one_time_prekey_per_pair_per_window() {
        let t0 = Instant::now();
        let mut f = FetchLimits::new(&limits(100, 100, 100));
        assert_eq!(f.decide("alice", &bob(1), t0), FetchDecision::WithOneTime);
        assert_eq!(
            f.decide("alice", &bob(1), t0),
            FetchDecision::WithoutOneTime
        );
        assert_eq!(f.decide("alice", &bob(2), t0), FetchDecision::WithOneTime);
        assert_eq!(f.decide("carol", &bob(1), t0), FetchDecision::WithOneTime);
        let later = t0 + Duration::from_secs(3599);
        assert_eq!(
            f.decide("alice", &bob(1), later),
            FetchDecision::WithoutOneTime
        );
        let after = t0 + Duration::from_secs(3600);
        assert_eq!(
            f.decide("alice", &bob(1), after),
            FetchDecision::WithOneTime
        );
        // a fetch that found no one-time prekey to hand out keeps the allowance
        f.none_handed_out("alice", &bob(1));
        assert_eq!(
            f.decide("alice", &bob(1), after),
            FetchDecision::WithOneTime
        );
    }

    #[test]
    fn target_limit_and_limit_plus_one_withholds_but_serves() {
        let t0 = Instant::now();
        let mut f = FetchLimits::new(&limits(100, 3, 100));
        for i in 0..3 {
            assert_eq!(
                f.decide(&format!("s{i}"), &bob(1), t0),
                FetchDecision::WithOneTime
            );
        }
        assert_eq!(f.decide("s3", &bob(1), t0), FetchDecision::WithoutOneTime);
        assert_eq!(f.decide("s3", &bob(2), t0), FetchDecision::WithOneTime);
        // 20 s refill one token at 3 a minute
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(f.decide("s3", &bob(1), t1), FetchDecision::WithOneTime);
        assert_eq!(f.decide("s4", &bob(1), t1), FetchDecision::WithoutOneTime);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut f = FetchLimits::new(&limits(2, 2, 4));
        for i in 0..4 {
            assert_eq!(
                f.decide(&format!("s{i}"), &bob(i + 1), t0),
                FetchDecision::WithOneTime
            );
        }
        // a fifth requester cannot be tracked while the four are live: refused, nothing grows
        assert!(matches!(
            f.decide("s4", &bob(1), t0),
            FetchDecision::Refused(_)
        ));
        assert_eq!(f.tracked(), (4, 4, 4));
        // once their buckets refill they are forgotten; pairs still live withhold the
        // one-time prekey instead
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(f.decide("s4", &bob(9), t1), FetchDecision::WithoutOneTime);
        let (r, t, p) = f.tracked();
        assert!(r <= 4 && t <= 4 && p <= 4);
        let t2 = t0 + Duration::from_secs(3600);
        assert_eq!(f.decide("s5", &bob(9), t2), FetchDecision::WithOneTime);
    }
}
