//! The group key schedule (`protocol-spec/group.md`): who gets which SFrame key when members join
//! and leave a call, and which key each participant encrypts under. Free of I/O: time and
//! randomness are parameters; key delivery ([`GroupOutput::SendKey`]) and the data plane
//! ([`GroupOutput::UseSendKey`], [`GroupOutput::InstallKey`], [`GroupOutput::ForgetSender`]) are
//! outputs the caller carries out. This is the one implementation of these rules: the call core
//! ([`crate::core`]) feeds it every membership change, and the media layer only encrypts and
//! decrypts under the keys it is told to use.
//!
//! One [`GroupKeys`] per participant and call. It owns the schedule's view of the participant's
//! own [`SenderKey`]s (one per media stream, each with a call-unique sender id), and knows which
//! key each member was given. The rules:
//!
//! - **Roster**: only members ([`GroupKeys::admit`], or given a key) may hand us keys; a key for a
//!   sender id that we or another member use is refused.
//! - **Present members** (already in the room when we join, or the peer of a 1:1 call) get our
//!   current keys.
//! - **Join**: every sender ratchets ([`SenderKey::ratchet`]) and gives the ratcheted key to the
//!   newcomer only, so the newcomer cannot decrypt earlier frames. Existing members follow the
//!   ratchet on their own from the KID; a member that fell [`MAX_RATCHET_AHEAD`] or more steps
//!   behind what it was given is sent the current key too.
//! - **Leave**: every sender draws a fresh key as the next generation and gives it at once to
//!   the members who remain; the sender switches to it the activation delay
//!   ([`KEY_ACTIVATION_DELAY`] unless configured) later, so receivers usually hold the key before
//!   the first frame under it. A second leave while a rotation is pending draws *another* key,
//!   given only to who remains then (the second leaver never holds the key finally used); at most
//!   [`MAX_PENDING_ROTATIONS`] wait at once. A join while a rotation is pending gives the newcomer
//!   the pending keys as well (no frame was ever sent under them).
//! - **Rotation on demand** (counter running low, or asked for): as a leave, without a leaver.
//! - **Receivers** keep superseded keys for the ring's grace period, and forget a leaver's keys
//!   [`LEAVER_KEY_RETENTION`] after the leave; until then the leaver's sender id cannot be
//!   claimed again.
//! - A key that arrives late needs no request: frames fail until it arrives and decrypt after.
//!
//! ```
//! use sotto_call::group::{GroupKeys, GroupOutput};
//! use sotto_frame::CipherSuite;
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let suite = CipherSuite::default();
//! let mut alice = GroupKeys::new("alice", suite, &[(1, [1u8; 16].as_slice())])?;
//! // bob joins after alice: alice ratchets and gives bob the new step only
//! let out = alice.member_joined("bob", now)?;
//! assert!(out.iter().any(|o| matches!(o, GroupOutput::UseSendKey { material } if material.id.step == 1)));
//! assert!(out.iter().any(|o| matches!(o, GroupOutput::SendKey { to, material } if to == "bob" && material.id.step == 1)));
//! # Ok::<(), sotto_call::group::GroupError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use sotto_frame::consts::{MAX_RATCHET_AHEAD, MIN_BASE_KEY_SIZE};
use sotto_frame::{BaseKey, CipherSuite, KeyId, KeyMaterial, SenderKey};
use zeroize::Zeroizing;

pub use crate::consts::{
    FRESH_KEY_SIZE, KEY_ACTIVATION_DELAY, LEAVER_KEY_RETENTION, MAX_KEY_ACTIVATION_DELAY,
    MAX_PENDING_ROTATIONS,
};
/// Own media streams (sender keys) per participant.
pub const MAX_OWN_STREAMS: usize = 4;
/// Members tracked besides ourselves.
pub const MAX_MEMBERS: usize = 64;

const _: () = assert!(FRESH_KEY_SIZE >= MIN_BASE_KEY_SIZE);

/// Why the schedule refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Key material from someone who is not a member (or left).
    #[error("key material from a non-member")]
    NotAMember,
    /// Key material for a sender id that another member (or we) already use.
    #[error("sender id {0} belongs to another member")]
    SenderIdClaimed(u64),
    /// More than [`MAX_OWN_STREAMS`] own streams, duplicate sender ids, or an unusable key.
    #[error("invalid own streams: {0}")]
    BadStreams(&'static str),
    /// More than [`MAX_MEMBERS`] members.
    #[error("more than MAX_MEMBERS ({MAX_MEMBERS}) members")]
    TooManyMembers,
    /// The caller named itself as a member.
    #[error("a participant is not its own member")]
    SelfMember,
    /// Key error from sotto-frame.
    #[error("sframe: {0}")]
    Frame(#[from] sotto_frame::Error),
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupOutput {
    /// Send `material` to member `to` over the pairwise encrypted session (never in clear).
    SendKey {
        /// Recipient.
        to: String,
        /// The key.
        material: KeyMaterial,
    },
    /// Data plane: encrypt our stream with sender id `material.id.sender` under this key from
    /// now on (a new step or generation: the frame counter starts again).
    UseSendKey {
        /// The key.
        material: KeyMaterial,
    },
    /// Data plane: add this key of member `from` to the receive ring.
    InstallKey {
        /// Its owner.
        from: String,
        /// The key.
        material: KeyMaterial,
    },
    /// Data plane: forget every key of this sender id (a leaver's retention ended).
    ForgetSender {
        /// The sender id.
        sender: u64,
    },
}

struct Pending {
    due: Instant,
    /// One fresh key per own stream, in stream order, already given to the remaining members.
    keys: Vec<Zeroizing<Vec<u8>>>,
}

/// One participant's view of the call's keys.
pub struct GroupKeys {
    me: String,
    suite: CipherSuite,
    streams: Vec<SenderKey>,
    activation_delay: Duration,
    /// Everyone who may hand us keys (call members), whether or not they hold ours.
    roster: BTreeSet<String>,
    /// Members given our keys → the (generation, step) of each own stream we last gave them.
    given: BTreeMap<String, Vec<(u64, u64)>>,
    /// Sender id → member that owns it.
    owners: BTreeMap<u64, String>,
    pending: Vec<Pending>,
    /// Leavers' sender ids to forget, with when.
    forget: Vec<(Instant, u64)>,
    /// A peer-to-peer 1:1 call: the peer may use our own sender id.
    pairwise: bool,
}

impl core::fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupKeys")
            .field("me", &self.me)
            .field("streams", &self.streams.len())
            .field("roster", &self.roster)
            .field("pending_rotations", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl GroupKeys {
    /// A participant `me` with own streams `(sender id, initial base key)`, alone so far.
    ///
    /// # Errors
    /// [`GroupError::BadStreams`] for no streams, more than [`MAX_OWN_STREAMS`], duplicate
    /// sender ids, or a key sotto-frame refuses.
    pub fn new(me: &str, suite: CipherSuite, streams: &[(u64, &[u8])]) -> Result<Self, GroupError> {
        if streams.is_empty() || streams.len() > MAX_OWN_STREAMS {
            return Err(GroupError::BadStreams("1..=MAX_OWN_STREAMS streams"));
        }
        let ids: BTreeSet<u64> = streams.iter().map(|(s, _)| *s).collect();
        if ids.len() != streams.len() {
            return Err(GroupError::BadStreams("duplicate sender id"));
        }
        let streams = streams
            .iter()
            .map(|(id, key)| SenderKey::new(suite, *id, key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| GroupError::BadStreams("sender key refused"))?;
        Ok(GroupKeys {
            me: me.to_owned(),
            suite,
            streams,
            activation_delay: KEY_ACTIVATION_DELAY,
            roster: BTreeSet::new(),
            given: BTreeMap::new(),
            owners: BTreeMap::new(),
            pending: Vec::new(),
            forget: Vec::new(),
            pairwise: false,
        })
    }

    /// Sets how long after a rotation is handed out we switch to it (capped at
    /// [`MAX_KEY_ACTIVATION_DELAY`]: a leaver can read our media until the switch). Applies to
    /// rotations started from now on.
    pub fn set_activation_delay(&mut self, d: Duration) {
        self.activation_delay = d.min(MAX_KEY_ACTIVATION_DELAY);
    }

    /// A peer-to-peer 1:1 call: the one other member may use a sender id equal to ours (its
    /// keys live in a ring of their own; nobody has to tell senders apart by id). Never for a
    /// call through a relay.
    pub fn set_pairwise(&mut self, pairwise: bool) {
        self.pairwise = pairwise;
    }

    /// The activation delay in force.
    pub fn activation_delay(&self) -> Duration {
        self.activation_delay
    }

    /// Our name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Members who hold our keys, sorted.
    pub fn members(&self) -> Vec<String> {
        self.given.keys().cloned().collect()
    }

    /// Whether `who` holds our keys.
    pub fn holds_our_key(&self, who: &str) -> bool {
        self.given.contains_key(who)
    }

    /// Whether `who` is on the roster.
    pub fn is_member(&self, who: &str) -> bool {
        self.roster.contains(who)
    }

    /// The key id each own stream currently encrypts under.
    pub fn current_keys(&self) -> Vec<KeyId> {
        self.streams.iter().map(SenderKey::id).collect()
    }

    /// The keys each own stream currently encrypts under, as [`GroupOutput::UseSendKey`]s (to
    /// set up a data plane that starts now).
    pub fn use_current(&self) -> Vec<GroupOutput> {
        self.streams
            .iter()
            .map(|s| GroupOutput::UseSendKey {
                material: s.material(),
            })
            .collect()
    }

    /// Number of rotations given out but not yet applied.
    pub fn pending_rotations(&self) -> usize {
        self.pending.len()
    }

    /// When [`GroupKeys::poll`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let p = self.pending.iter().map(|p| p.due);
        let f = self.forget.iter().map(|(t, _)| *t);
        p.chain(f).min()
    }

    fn check_new_member(&self, who: &str) -> Result<(), GroupError> {
        if who == self.me {
            return Err(GroupError::SelfMember);
        }
        if !self.roster.contains(who) && self.roster.len() >= MAX_MEMBERS {
            return Err(GroupError::TooManyMembers);
        }
        Ok(())
    }

    /// Puts `who` on the roster: its keys are accepted from now on; it gets none of ours yet.
    ///
    /// # Errors
    /// [`GroupError::SelfMember`], [`GroupError::TooManyMembers`].
    pub fn admit(&mut self, who: &str) -> Result<Vec<GroupOutput>, GroupError> {
        self.check_new_member(who)?;
        self.roster.insert(who.to_owned());
        Ok(self.forget_now(who))
    }

    /// A leaver taken back on the roster (invited again) starts afresh: the keys of its earlier
    /// membership are forgotten now (its new keys start again at generation 0), not later.
    fn forget_now(&mut self, who: &str) -> Vec<GroupOutput> {
        let (now, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.forget)
            .into_iter()
            .partition(|(_, s)| self.owners.get(s).is_some_and(|o| o == who));
        self.forget = keep;
        now.into_iter()
            .map(|(_, sender)| {
                self.owners.remove(&sender);
                GroupOutput::ForgetSender { sender }
            })
            .collect()
    }

    fn give_current(&mut self, to: &str, out: &mut Vec<GroupOutput>) {
        let mut given = Vec::with_capacity(self.streams.len());
        for s in &self.streams {
            let id = s.id();
            given.push((id.generation, id.step));
            out.push(GroupOutput::SendKey {
                to: to.to_owned(),
                material: s.material(),
            });
        }
        self.given.insert(to.to_owned(), given);
    }

    fn pending_material(&self, n: usize) -> Result<Vec<KeyMaterial>, GroupError> {
        let Some(p) = self.pending.get(n) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(self.streams.len());
        for (s, key) in self.streams.iter().zip(&p.keys) {
            let id = s.id();
            out.push(KeyMaterial {
                suite: self.suite,
                id: KeyId {
                    sender: id.sender,
                    generation: id.generation + 1 + n as u64,
                    step: 0,
                },
                base_key: BaseKey::new(key)?,
            });
        }
        Ok(out)
    }

    fn give_pending(&self, to: &str, out: &mut Vec<GroupOutput>) -> Result<(), GroupError> {
        for n in 0..self.pending.len() {
            for material in self.pending_material(n)? {
                out.push(GroupOutput::SendKey {
                    to: to.to_owned(),
                    material,
                });
            }
        }
        Ok(())
    }

    /// `who` was already in the room when we joined (or is our 1:1 peer): give them our current
    /// (and pending) keys. Repeated calls give nothing more.
    ///
    /// # Errors
    /// [`GroupError::SelfMember`], [`GroupError::TooManyMembers`].
    pub fn member_present(&mut self, who: &str) -> Result<Vec<GroupOutput>, GroupError> {
        self.check_new_member(who)?;
        self.roster.insert(who.to_owned());
        let mut out = self.forget_now(who);
        if self.given.contains_key(who) {
            return Ok(out);
        }
        self.give_current(who, &mut out);
        self.give_pending(who, &mut out)?;
        Ok(out)
    }

    /// `who` joined after us: ratchet every own stream, give the newcomer the ratcheted (and
    /// any pending) keys; existing members follow the ratchet on their own.
    ///
    /// # Errors
    /// [`GroupError::SelfMember`], [`GroupError::TooManyMembers`].
    pub fn member_joined(
        &mut self,
        who: &str,
        _now: Instant,
    ) -> Result<Vec<GroupOutput>, GroupError> {
        self.check_new_member(who)?;
        self.roster.insert(who.to_owned());
        let mut out = self.forget_now(who);
        if self.given.contains_key(who) {
            // a repeated announcement: nothing new to protect
            return Ok(out);
        }
        for s in &mut self.streams {
            s.ratchet()?;
        }
        out.extend(self.use_current());
        self.give_current(who, &mut out);
        self.give_pending(who, &mut out)?;
        // members too far behind to follow the ratchet from the KID get the current key
        let behind: Vec<String> = self
            .given
            .iter()
            .filter(|(_, given)| {
                self.streams.iter().zip(given.iter()).any(|(s, (g, st))| {
                    let id = s.id();
                    id.generation == *g && id.step.saturating_sub(*st) >= MAX_RATCHET_AHEAD
                })
            })
            .map(|(m, _)| m.clone())
            .collect();
        for m in behind {
            self.give_current(&m, &mut out);
        }
        Ok(out)
    }

    /// `who` left: if they held our keys, draw a fresh key per own stream and give it at once to
    /// every member who holds ours and remains; switch to it after the activation delay (in
    /// [`GroupKeys::poll`]). Their own keys are forgotten [`LEAVER_KEY_RETENTION`] after `now`.
    /// Unknown leavers change nothing.
    ///
    /// # Errors
    /// [`GroupError::Frame`] only if sotto-frame refused a fresh key (it cannot at this size).
    pub fn member_left<R: RngCore + CryptoRng>(
        &mut self,
        who: &str,
        now: Instant,
        rng: &mut R,
    ) -> Result<Vec<GroupOutput>, GroupError> {
        if !self.roster.remove(who) {
            return Ok(Vec::new());
        }
        let theirs: Vec<u64> = self
            .owners
            .iter()
            .filter(|(_, o)| o.as_str() == who)
            .map(|(s, _)| *s)
            .collect();
        // their frames still in flight decrypt (and are attributed to them) until forgotten
        for s in theirs {
            self.forget.push((now + LEAVER_KEY_RETENTION, s));
        }
        if self.given.remove(who).is_none() {
            return Ok(Vec::new());
        }
        self.rotate(now, rng)
    }

    /// Draws the next generation of every own stream and gives it at once to every member who
    /// holds our keys; we switch to it after the activation delay. Used when a member leaves
    /// and when a key nears its counter limit. At most [`MAX_PENDING_ROTATIONS`] wait: beyond
    /// that the queued ones are applied at once first.
    ///
    /// # Errors
    /// [`GroupError::Frame`] only if sotto-frame refused a fresh key (it cannot at this size).
    pub fn rotate<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Result<Vec<GroupOutput>, GroupError> {
        let mut out = Vec::new();
        if self.pending.len() >= MAX_PENDING_ROTATIONS {
            // a burst: apply what is queued now rather than grow the queue
            self.apply_pending(&mut out)?;
        }
        let mut keys = Vec::with_capacity(self.streams.len());
        for _ in &self.streams {
            let mut k = Zeroizing::new(vec![0u8; FRESH_KEY_SIZE]);
            rng.fill_bytes(&mut k);
            keys.push(k);
        }
        self.pending.push(Pending {
            due: now + self.activation_delay,
            keys,
        });
        // every member who holds our keys gets the new pending key (the newest entry)
        let fresh = self.pending_material(self.pending.len() - 1)?;
        for to in self.given.keys() {
            for material in &fresh {
                out.push(GroupOutput::SendKey {
                    to: to.clone(),
                    material: material.clone(),
                });
            }
        }
        Ok(out)
    }

    fn apply_pending(&mut self, out: &mut Vec<GroupOutput>) -> Result<(), GroupError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for p in self.pending.drain(..) {
            for (s, key) in self.streams.iter_mut().zip(&p.keys) {
                s.rotate(key)?;
            }
        }
        // what each member holds is now the new generation at step 0
        let given: Vec<(u64, u64)> = self
            .streams
            .iter()
            .map(|s| (s.id().generation, s.id().step))
            .collect();
        for g in self.given.values_mut() {
            g.clone_from(&given);
        }
        out.extend(self.use_current());
        Ok(())
    }

    /// Applies rotations whose delay ran out (the newest due one wins: every earlier one is
    /// skipped over) and forgets leavers' keys whose retention ended.
    ///
    /// # Errors
    /// [`GroupError::Frame`] if sotto-frame refused a rotation (it cannot for drawn keys).
    pub fn poll(&mut self, now: Instant) -> Result<Vec<GroupOutput>, GroupError> {
        let mut out = Vec::new();
        if self.pending.last().is_some_and(|p| p.due <= now) {
            self.apply_pending(&mut out)?;
        } else if self.pending.first().is_some_and(|p| p.due <= now) {
            // apply the due prefix, keep the rest
            let due = self.pending.iter().take_while(|p| p.due <= now).count();
            let rest = self.pending.split_off(due);
            self.apply_pending(&mut out)?;
            self.pending = rest;
        }
        let (gone, keep): (Vec<_>, Vec<_>) = self.forget.drain(..).partition(|(t, _)| *t <= now);
        self.forget = keep;
        for (_, sender) in gone {
            if self
                .owners
                .get(&sender)
                .is_some_and(|o| !self.roster.contains(o))
            {
                self.owners.remove(&sender);
            }
            out.push(GroupOutput::ForgetSender { sender });
        }
        Ok(out)
    }

    /// Takes key material `from` a member sent us (after the caller decrypted it from the
    /// pairwise session with `from`): returns the [`GroupOutput::InstallKey`] to carry out.
    ///
    /// # Errors
    /// [`GroupError::NotAMember`], [`GroupError::SenderIdClaimed`] (the id is ours or another
    /// member's, or a leaver's still retained), [`GroupError::Frame`] (suite mismatch).
    pub fn key_received(
        &mut self,
        from: &str,
        material: &KeyMaterial,
        _now: Instant,
    ) -> Result<Vec<GroupOutput>, GroupError> {
        if !self.roster.contains(from) {
            return Err(GroupError::NotAMember);
        }
        if material.suite != self.suite {
            return Err(GroupError::Frame(sotto_frame::Error::SuiteMismatch));
        }
        let sender = material.id.sender;
        if !self.pairwise && self.streams.iter().any(|s| s.id().sender == sender) {
            return Err(GroupError::SenderIdClaimed(sender));
        }
        if let Some(owner) = self.owners.get(&sender) {
            if owner != from {
                return Err(GroupError::SenderIdClaimed(sender));
            }
        }
        if self.forget.iter().any(|(_, s)| *s == sender) {
            // a leaver's id still retained: not reusable until forgotten
            return Err(GroupError::SenderIdClaimed(sender));
        }
        self.owners.insert(sender, from.to_owned());
        Ok(vec![GroupOutput::InstallKey {
            from: from.to_owned(),
            material: material.clone(),
        }])
    }

    /// The member who owns sender id `sender`, if any.
    pub fn owner_of(&self, sender: u64) -> Option<&str> {
        self.owners.get(&sender).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
