//! When a device answers the server's "prekeys low": at once the first time, then with a
//! backoff while the "lows" keep coming (someone is draining the stock), as a plain state
//! machine (time is a parameter). With [`MAX_STORED_ONE_TIME_PREKEYS`] this bounds what a drain
//! can make a device mint and store.
//!
//! [`MAX_STORED_ONE_TIME_PREKEYS`]: super::MAX_STORED_ONE_TIME_PREKEYS

use std::time::{Duration, Instant};

use super::{PREKEY_REPLENISH_BACKOFF_MAX, PREKEY_REPLENISH_BACKOFF_MIN};

/// What to do about a "prekeys low".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replenish {
    /// Publish a batch now.
    Now,
    /// Ignore it: the last batch was too recent; a "low" after this instant is answered.
    NotBefore(Instant),
}

/// The backoff between two replenishments.
#[derive(Debug, Clone)]
pub struct ReplenishBackoff {
    next_allowed: Option<Instant>,
    wait: Duration,
}

impl Default for ReplenishBackoff {
    fn default() -> Self {
        Self {
            next_allowed: None,
            wait: PREKEY_REPLENISH_BACKOFF_MIN,
        }
    }
}

impl ReplenishBackoff {
    /// Decides a "prekeys low" received at `now`.
    pub fn on_low(&mut self, now: Instant) -> Replenish {
        if let Some(allowed) = self.next_allowed {
            if now < allowed {
                return Replenish::NotBefore(allowed);
            }
            // still low within one wait after it ended: the drain goes on, wait longer
            self.wait = if now < allowed + self.wait {
                (self.wait * 2).min(PREKEY_REPLENISH_BACKOFF_MAX)
            } else {
                PREKEY_REPLENISH_BACKOFF_MIN
            };
        }
        self.next_allowed = Some(now + self.wait);
        Replenish::Now
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_low_at_once_then_the_wait_and_the_wait_plus_one() {
        let t0 = Instant::now();
        let mut b = ReplenishBackoff::default();
        assert_eq!(b.on_low(t0), Replenish::Now);
        let end = t0 + PREKEY_REPLENISH_BACKOFF_MIN;
        assert_eq!(
            b.on_low(end - Duration::from_millis(1)),
            Replenish::NotBefore(end)
        );
        assert_eq!(b.on_low(end), Replenish::Now);
    }

    #[test]
    fn a_drain_doubles_the_wait_up_to_the_cap_and_quiet_resets_it() {
        let t0 = Instant::now();
        let mut b = ReplenishBackoff::default();
        let mut t = t0;
        let mut published = 0;
        // a "low" every second for four hours
        while t < t0 + Duration::from_secs(4 * 3600) {
            if b.on_low(t) == Replenish::Now {
                published += 1;
            }
            t += Duration::from_secs(1);
        }
        // 30 s, 1, 2, 4, 8, 16 min, then every 30 min: about a dozen batches, not 14 400
        assert!((10..=14).contains(&published), "{published}");
        assert_eq!(b.wait, PREKEY_REPLENISH_BACKOFF_MAX);
        // a quiet spell longer than the wait: back to the shortest wait
        let later = t + 2 * PREKEY_REPLENISH_BACKOFF_MAX;
        assert_eq!(b.on_low(later), Replenish::Now);
        assert_eq!(b.wait, PREKEY_REPLENISH_BACKOFF_MIN);
    }
}
