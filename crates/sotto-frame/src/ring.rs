//! The receiving side: one [`KeyRing`] per call holds every sender's keys, follows their
//! ratchets on demand, keeps superseded keys for a grace period and rejects replays.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::consts::{
    DEFAULT_GRACE_PERIOD, KID_GENERATION_BITS, KID_STEP_BITS, MAX_GENERATIONS, MAX_GRACE_PERIOD,
    MAX_METADATA_SIZE, MAX_OLD_STEPS, MAX_RATCHET_AHEAD, MAX_SENDERS, MAX_SENDER_ID, MAX_STEP,
    REPLAY_WINDOW,
};
use crate::error::Error;
use crate::frame::FrameKey;
use crate::header::Header;
use crate::keys::BaseKey;
use crate::sender::{KeyId, KeyMaterial};
use crate::suite::CipherSuite;

const GEN_SPACE: u64 = 1 << KID_GENERATION_BITS;
const STEP_SPACE: u64 = 1 << KID_STEP_BITS;

/// A sliding window over frame counters (as in SRTP, RFC 3711 §3.3.2): the highest counter seen
/// and a bitmap of the [`REPLAY_WINDOW`] counters below it.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: counter `highest - i` was accepted.
    seen: u128,
}

/// Why the replay window refused a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Never seen, inside the window: may be decrypted.
    Fresh,
    /// Already accepted.
    Duplicate,
    /// Older than the window reaches.
    TooOld,
}

impl ReplayWindow {
    /// Whether `ctr` may be accepted. Does not change the window.
    pub fn check(&self, ctr: u64) -> ReplayVerdict {
        let Some(highest) = self.highest else {
            return ReplayVerdict::Fresh;
        };
        if ctr > highest {
            return ReplayVerdict::Fresh;
        }
        let back = highest - ctr;
        if back >= REPLAY_WINDOW {
            ReplayVerdict::TooOld
        } else if self.seen & (1u128 << back) != 0 {
            ReplayVerdict::Duplicate
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Records `ctr` as accepted. Call only after the frame authenticated.
    pub fn accept(&mut self, ctr: u64) {
        match self.highest {
            None => {
                self.highest = Some(ctr);
                self.seen = 1;
            }
            Some(highest) if ctr > highest => {
                let shift = ctr - highest;
                self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(ctr);
            }
            Some(highest) => {
                let back = highest - ctr;
                if back < REPLAY_WINDOW {
                    self.seen |= 1u128 << back;
                }
            }
        }
    }
}

/// A key for one (sender, generation, step).
struct StepKey {
    step: u64,
    base: BaseKey,
    key: FrameKey,
    replay: ReplayWindow,
    retire_at: Option<Instant>,
}

impl StepKey {
    fn new(suite: CipherSuite, id: KeyId, base: BaseKey) -> Result<Self, Error> {
        let key = FrameKey::derive(suite, id.kid(), base.expose_secret())?;
        Ok(StepKey {
            step: id.step,
            base,
            key,
            replay: ReplayWindow::default(),
            retire_at: None,
        })
    }

    fn alive(&self, now: Instant) -> bool {
        self.retire_at.is_none_or(|t| now < t)
    }
}

struct Generation {
    generation: u64,
    current: StepKey,
    old_steps: Vec<StepKey>,
    retire_at: Option<Instant>,
}

impl Generation {
    fn alive(&self, now: Instant) -> bool {
        self.retire_at.is_none_or(|t| now < t)
    }
}

#[derive(Default)]
struct SenderState {
    /// Kept generations, oldest first; at most [`MAX_GENERATIONS`].
    generations: Vec<Generation>,
    /// Generations below this were dropped and are never accepted again: re-adding their
    /// material would reset their replay windows and let captured frames be replayed.
    floor: u64,
}

impl SenderState {
    fn latest(&self) -> Option<u64> {
        self.generations.iter().map(|g| g.generation).max()
    }

    fn prune(&mut self, now: Instant) {
        for g in self.generations.iter().filter(|g| !g.alive(now)) {
            self.floor = self.floor.max(g.generation.saturating_add(1));
        }
        self.generations.retain(|g| g.alive(now));
        for g in &mut self.generations {
            g.old_steps.retain(|s| s.alive(now));
        }
    }
}

/// A frame that decrypted and passed the replay check. `Debug` prints its length, not its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The key it was sent under (generation and step in full, not modulo).
    pub id: KeyId,
    /// Its frame counter.
    pub ctr: u64,
    /// The encoded frame as the sender passed it to `encrypt` (clear codec bytes included).
    pub frame: Vec<u8>,
}

impl core::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decrypted")
            .field("id", &self.id)
            .field("ctr", &self.ctr)
            .field("frame_len", &self.frame.len())
            .finish()
    }
}

/// Tunables of a [`KeyRing`]; the defaults are the named constants.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// How long superseded keys stay usable.
    pub grace_period: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

/// Every sender's keys, for one call and one cipher suite. No clock of its own: each call that
/// depends on time takes `now`.
///
/// Guarantees: a frame that fails (for any reason) changes nothing; plaintext is returned only
/// after its tag verified; a counter is accepted at most once per key.
pub struct KeyRing {
    suite: CipherSuite,
    config: RingConfig,
    senders: HashMap<u64, SenderState>,
}

impl core::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyRing")
            .field("suite", &self.suite)
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

/// How [`KeyRing::add_key`] used the material it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUpdate {
    /// A new sender or a new generation.
    Added,
    /// A later ratchet step of a generation we had.
    Advanced,
    /// Nothing new: we had this step or a later one.
    AlreadyKnown,
}

impl KeyRing {
    /// An empty ring for `suite` with the default [`RingConfig`].
    pub fn new(suite: CipherSuite) -> Self {
        Self::with_config(suite, RingConfig::default())
    }

    /// An empty ring with explicit tunables.
    pub fn with_config(suite: CipherSuite, config: RingConfig) -> Self {
        KeyRing {
            suite,
            config,
            senders: HashMap::new(),
        }
    }

    /// The ring's cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Number of senders tracked.
    pub fn sender_count(&self) -> usize {
        self.senders.len()
    }

    /// The newest generation and its current step known for `sender`.
    pub fn current(&self, sender: u64) -> Option<(u64, u64)> {
        let s = self.senders.get(&sender)?;
        let g = s.generations.iter().max_by_key(|g| g.generation)?;
        Some((g.generation, g.current.step))
    }

    /// Installs key material received (through the encrypted channel) from a sender.
    /// A newer generation starts the grace period of the older ones; a later step of a known
    /// generation replaces its current key, the old one kept for the grace period.
    ///
    /// # Errors
    /// [`Error::SuiteMismatch`], [`Error::TooManySenders`], or [`Error::StaleGeneration`] for a
    /// generation older than every one kept.
    pub fn add_key(&mut self, material: &KeyMaterial, now: Instant) -> Result<KeyUpdate, Error> {
        if material.suite != self.suite {
            return Err(Error::SuiteMismatch);
        }
        let id = material.id;
        if id.sender > MAX_SENDER_ID {
            return Err(Error::InvalidKeyId("sender id too large"));
        }
        if id.step > MAX_STEP || id.generation > MAX_STEP {
            return Err(Error::InvalidKeyId("generation or step out of range"));
        }
        if !self.senders.contains_key(&id.sender) && self.senders.len() >= MAX_SENDERS {
            return Err(Error::TooManySenders { limit: MAX_SENDERS });
        }
        let retire = retire_time(now, self.config.grace_period);
        let suite = self.suite;
        let state = self.senders.entry(id.sender).or_default();
        state.prune(now);
        if id.generation < state.floor {
            return Err(Error::StaleGeneration { kid: id.kid() });
        }

        if let Some(g) = state
            .generations
            .iter_mut()
            .find(|g| g.generation == id.generation)
        {
            if id.step <= g.current.step {
                return Ok(KeyUpdate::AlreadyKnown);
            }
            let new = StepKey::new(suite, id, material.base_key.clone())?;
            let mut old = core::mem::replace(&mut g.current, new);
            old.retire_at = Some(retire);
            g.old_steps.push(old);
            if g.old_steps.len() > MAX_OLD_STEPS {
                g.old_steps.remove(0);
            }
            return Ok(KeyUpdate::Advanced);
        }

        let latest = state.latest();
        if let Some(latest) = latest {
            let oldest = state.generations.iter().map(|g| g.generation).min();
            if id.generation < latest
                && state.generations.len() >= MAX_GENERATIONS
                && oldest.is_some_and(|o| id.generation < o)
            {
                return Err(Error::StaleGeneration { kid: id.kid() });
            }
            if latest.abs_diff(id.generation) >= GEN_SPACE / 2 {
                // Too far apart for the 4-bit generation field to tell them apart.
                if id.generation < latest {
                    return Err(Error::StaleGeneration { kid: id.kid() });
                }
                // We missed many rotations: the (authenticated) new material replaces
                // everything we kept for this sender.
                state.floor = state.floor.max(latest.saturating_add(1));
                state.generations.clear();
            }
        }
        let newest = latest.is_none_or(|l| id.generation > l);
        let generation = Generation {
            generation: id.generation,
            current: StepKey::new(suite, id, material.base_key.clone())?,
            old_steps: Vec::new(),
            retire_at: if newest { None } else { Some(retire) },
        };
        if newest {
            for g in &mut state.generations {
                g.retire_at.get_or_insert(retire);
            }
        }
        state.generations.push(generation);
        state.generations.sort_by_key(|g| g.generation);
        while state.generations.len() > MAX_GENERATIONS {
            let dropped = state.generations.remove(0);
            state.floor = state.floor.max(dropped.generation.saturating_add(1));
        }
        Ok(KeyUpdate::Added)
    }

    /// Forgets a sender entirely (for instance when they left and their grace period ended).
    pub fn remove_sender(&mut self, sender: u64) {
        self.senders.remove(&sender);
    }

    /// Drops every key whose grace period ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        for s in self.senders.values_mut() {
            s.prune(now);
        }
        self.senders.retain(|_, s| !s.generations.is_empty());
    }

    /// Decrypts one frame as it came off the wire (clear codec bytes first for codec-aware
    /// mode). Follows the sender's ratchet forward by up to [`MAX_RATCHET_AHEAD`] steps when
    /// the KID asks for it; the ratcheted key is kept only if the frame authenticates.
    ///
    /// # Errors
    /// [`Error::MalformedHeader`], [`Error::UnknownKey`], [`Error::StaleGeneration`],
    /// [`Error::RatchetTooFar`], [`Error::Replay`], [`Error::CounterOutOfWindow`],
    /// [`Error::AuthenticationFailed`], size limits. On any error the ring is unchanged.
    pub fn decrypt(
        &mut self,
        codec: Codec,
        metadata: &[u8],
        wire: &[u8],
        now: Instant,
    ) -> Result<Decrypted, Error> {
        let limit = self.suite.max_wire_frame_size();
        if wire.len() > limit {
            return Err(Error::FrameTooLarge {
                len: wire.len(),
                limit,
            });
        }
        if metadata.len() > MAX_METADATA_SIZE {
            return Err(Error::MetadataTooLarge {
                len: metadata.len(),
                limit: MAX_METADATA_SIZE,
            });
        }
        let clear = codec.clear_len(wire)?;
        let (clear_bytes, sframe) = wire.split_at(clear);
        let (header, consumed) = Header::decode(sframe)?;
        let (header_bytes, body) = sframe.split_at(consumed);
        if body.len() < self.suite.nt() {
            return Err(Error::AuthenticationFailed);
        }
        let kid = header.kid;
        let (sender, gen_low, step_low) = KeyId::split_kid(kid);
        let retire = retire_time(now, self.config.grace_period);
        let suite = self.suite;
        let state = self
            .senders
            .get_mut(&sender)
            .ok_or(Error::UnknownKey { kid })?;

        // Which generation? Only live ones count.
        let latest = state
            .generations
            .iter()
            .filter(|g| g.alive(now))
            .map(|g| g.generation)
            .max()
            .ok_or(Error::UnknownKey { kid })?;
        let Some(gen) = state
            .generations
            .iter_mut()
            .find(|g| g.alive(now) && g.generation % GEN_SPACE == gen_low)
        else {
            let ahead = (gen_low + GEN_SPACE - latest % GEN_SPACE) % GEN_SPACE;
            return Err(if ahead < GEN_SPACE / 2 {
                Error::UnknownKey { kid }
            } else {
                Error::StaleGeneration { kid }
            });
        };
        let generation = gen.generation;
        let aad: [&[u8]; 2] = [clear_bytes, metadata];

        // Which step? Current, a retained older one, or a bounded ratchet forward.
        let current_low = gen.current.step % STEP_SPACE;
        if current_low == step_low {
            let pt = open_checked(&gen.current, header, header_bytes, &aad, body)?;
            gen.current.replay.accept(header.ctr);
            return Ok(done(sender, generation, gen.current.step, header.ctr, pt));
        }
        if let Some(old) = gen
            .old_steps
            .iter_mut()
            .find(|s| s.alive(now) && s.step % STEP_SPACE == step_low)
        {
            let pt = open_checked(old, header, header_bytes, &aad, body)?;
            old.replay.accept(header.ctr);
            // The sender still uses this step: keep it while it does (a frame that claimed a
            // later step must not cut off the sender's genuine frames).
            old.retire_at = Some(retire);
            return Ok(done(sender, generation, old.step, header.ctr, pt));
        }
        let ahead = (step_low + STEP_SPACE - current_low) % STEP_SPACE;
        if ahead >= STEP_SPACE / 2 {
            return Err(Error::StaleGeneration { kid });
        }
        if ahead > MAX_RATCHET_AHEAD {
            return Err(Error::RatchetTooFar { kid });
        }
        // Tentative ratchet: derived on the side, committed only after authentication.
        let mut base = gen.current.base.clone();
        for _ in 0..ahead {
            base = base.ratchet(suite);
        }
        let id = KeyId {
            sender,
            generation,
            step: gen
                .current
                .step
                .checked_add(ahead)
                .ok_or(Error::RatchetTooFar { kid })?,
        };
        let mut candidate = StepKey::new(suite, id, base)?;
        let pt = open_checked(&candidate, header, header_bytes, &aad, body)?;
        candidate.replay.accept(header.ctr);
        let mut old = core::mem::replace(&mut gen.current, candidate);
        old.retire_at = Some(retire);
        gen.old_steps.push(old);
        if gen.old_steps.len() > MAX_OLD_STEPS {
            gen.old_steps.remove(0);
        }
        Ok(done(sender, generation, id.step, header.ctr, pt))
    }
}

/// `now + grace`, saturating far in the future instead of overflowing.
fn retire_time(now: Instant, grace: Duration) -> Instant {
    now.checked_add(grace.min(MAX_GRACE_PERIOD)).unwrap_or(now)
}

fn open_checked(
    key: &StepKey,
    header: Header,
    header_bytes: &[u8],
    aad: &[&[u8]; 2],
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    match key.replay.check(header.ctr) {
        ReplayVerdict::Fresh => {}
        ReplayVerdict::Duplicate => {
            return Err(Error::Replay {
                kid: header.kid,
                ctr: header.ctr,
            })
        }
        ReplayVerdict::TooOld => {
            return Err(Error::CounterOutOfWindow {
                kid: header.kid,
                ctr: header.ctr,
            })
        }
    }
    key.key.open(header.ctr, header_bytes, aad, aad[0], body)
}

fn done(sender: u64, generation: u64, step: u64, ctr: u64, frame: Vec<u8>) -> Decrypted {
    Decrypted {
        id: KeyId {
            sender,
            generation,
            step,
        },
        ctr,
        frame,
    }
}
