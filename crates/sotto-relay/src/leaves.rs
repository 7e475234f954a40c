//! Who left which room when: a leaver's token minted before its leave does not admit it again
//! (a re-invite brings a fresh one).

use std::collections::{HashMap, VecDeque};

use crate::consts::{LEAVE_MEMORY, MAX_REMEMBERED_LEAVES};

/// Leave times (milliseconds since the Unix epoch) per `(room, participant)`, bounded by
/// [`MAX_REMEMBERED_LEAVES`] and [`LEAVE_MEMORY`].
#[derive(Default)]
pub(crate) struct Leaves {
    at: HashMap<(String, String), u64>,
    /// Insertion order, for forgetting the oldest (may hold stale keys of re-recorded leaves).
    order: VecDeque<((String, String), u64)>,
    /// Every token minted at or before this was minted before some forgotten leave.
    floor_ms: u64,
}

impl Leaves {
    /// `participant` left `room` at `now_ms`.
    pub(crate) fn record(&mut self, room: &str, participant: &str, now_ms: u64) {
        self.expire(now_ms);
        let key = (room.to_owned(), participant.to_owned());
        self.at.insert(key.clone(), now_ms);
        self.order.push_back((key, now_ms));
        while self.at.len() > MAX_REMEMBERED_LEAVES {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            if self.at.get(&k) == Some(&t) {
                self.at.remove(&k);
                self.floor_ms = self.floor_ms.max(t);
            }
        }
        // stale order entries (a leave recorded again) are bounded too
        if self.order.len() > 2 * MAX_REMEMBERED_LEAVES {
            let at = &self.at;
            self.order.retain(|(k, t)| at.get(k) == Some(t));
        }
    }

    /// When `participant` last left `room`, as far as the relay can tell (the floor when its
    /// leave may have been forgotten).
    pub(crate) fn left_at(&self, room: &str, participant: &str) -> Option<u64> {
        let key = (room.to_owned(), participant.to_owned());
        let own = self.at.get(&key).copied();
        match (own, self.floor_ms) {
            (o, 0) => o,
            (Some(t), f) => Some(t.max(f)),
            (None, f) => Some(f),
        }
    }

    /// Forgets leaves older than [`LEAVE_MEMORY`]: every token minted before them has expired.
    fn expire(&mut self, now_ms: u64) {
        let memory = LEAVE_MEMORY.as_millis() as u64;
        while let Some((k, t)) = self.order.front() {
            if now_ms.saturating_sub(*t) <= memory {
                break;
            }
            if self.at.get(k) == Some(t) {
                self.at.remove(k);
            }
            self.order.pop_front();
        }
        if now_ms.saturating_sub(self.floor_ms) > memory {
            self.floor_ms = 0;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_conservative_when_full() {
        let mut l = Leaves::default();
        let t0 = 1_000_000;
        l.record("r", "bob", t0);
        assert_eq!(l.left_at("r", "bob"), Some(t0));
        assert_eq!(l.left_at("r", "alice"), None);
        l.record("r", "bob", t0 + 5);
        assert_eq!(l.left_at("r", "bob"), Some(t0 + 5));
        // at the limit nothing is forgotten; one more forgets the oldest and raises the floor
        for i in 1..MAX_REMEMBERED_LEAVES {
            l.record("r", &format!("p{i}"), t0 + 10 + i as u64);
        }
        assert_eq!(l.len(), MAX_REMEMBERED_LEAVES);
        assert_eq!(l.left_at("r", "alice"), None);
        l.record("r", "last", t0 + 100_000);
        assert_eq!(l.len(), MAX_REMEMBERED_LEAVES);
        assert_eq!(l.left_at("r", "bob"), Some(t0 + 5));
        assert_eq!(l.left_at("r", "alice"), Some(t0 + 5));
        // after LEAVE_MEMORY all is forgotten
        let later = t0 + 100_000 + LEAVE_MEMORY.as_millis() as u64 + 1;
        l.record("r", "x", later);
        assert_eq!(l.left_at("r", "bob"), None);
        assert_eq!(l.left_at("r", "x"), Some(later));
        assert_eq!(l.len(), 1);
    }
}
