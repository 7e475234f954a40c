//! The group key schedule (`protocol-spec/group.md`): who gets which SFrame key when members join
//! and leave a room. Free of I/O: time and randomness are parameters, and key delivery is an
//! output ([`GroupOutput::SendKey`]) the caller carries over its pairwise encrypted sessions.
//!
//! One [`GroupKeys`] per participant. It owns the participant's own [`SenderKey`]s (one per
//! media stream, each with a room-unique sender id) and a [`KeyRing`] with every other member's
//! keys. The rules:
//!
//! - **Present members** (already in the room when we join) get our current keys.
//! - **Join**: every sender ratchets ([`SenderKey::ratchet`]) and gives the ratcheted key to the
//!   newcomer only, so the newcomer cannot decrypt earlier frames. Existing members follow the
//!   ratchet on their own from the KID; a member that fell [`MAX_RATCHET_AHEAD`] or more steps
//!   behind what it was given is sent the current key too.
//! - **Leave**: every sender draws a fresh key as the next generation and gives it at once to
//!   the members who remain; the sender switches to it [`ROTATION_DELAY`] later, so receivers
//!   usually hold the key before the first frame under it. A join while a rotation is pending
//!   gives the newcomer the pending key as well (no frame was ever sent under it).
//! - **Receivers** keep superseded keys for the ring's grace period, and forget a leaver's keys
//!   [`LEAVER_KEY_RETENTION`] after the leave.
//! - A key that arrives late needs no request: frames fail until it arrives and decrypt after.
//!
//! ```
//! use sotto_call::group::{GroupKeys, GroupOutput};
//! use sotto_frame::{CipherSuite, Codec};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let suite = CipherSuite::default();
//! let mut alice = GroupKeys::new("alice", suite, &[(1, [1u8; 16].as_slice())])?;
//! let mut bob = GroupKeys::new("bob", suite, &[(2, [2u8; 16].as_slice())])?;
//! // bob joins after alice
//! bob.member_present("alice")?; // alice was there first (bob's keys to alice omitted here)
//! for out in alice.member_joined("bob", now)? {
//!     let GroupOutput::SendKey { to, material } = out else { continue };
//!     assert_eq!(to, "bob");
//!     bob.key_received("alice", &material, now)?;
//! }
//! let wire = alice.encrypt(1, Codec::Full, b"frame")?;
//! let (from, frame) = bob.decrypt(Codec::Full, &wire, now)?;
//! assert_eq!((from.as_str(), frame.frame.as_slice()), ("alice", b"frame".as_slice()));
//! # Ok::<(), sotto_call::group::GroupError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use sotto_frame::consts::{MAX_RATCHET_AHEAD, MIN_BASE_KEY_SIZE};
use sotto_frame::{
    BaseKey, CipherSuite, Codec, Decrypted, KeyId, KeyMaterial, KeyRing, RingConfig, SenderKey,
};
use zeroize::Zeroizing;

/// Delay between a leave and the senders' switch to the rotated key (the new key is sent at
/// once; the delay lets it reach the remaining members first).
pub const ROTATION_DELAY: Duration = Duration::from_secs(1);
/// How long a leaver's keys stay in the ring after the leave (for frames still in flight).
pub const LEAVER_KEY_RETENTION: Duration = Duration::from_secs(5);
/// Size of a freshly drawn base key, bytes.
pub const FRESH_KEY_SIZE: usize = 32;
/// Own media streams (sender keys) per participant.
pub const MAX_OWN_STREAMS: usize = 4;
/// Members tracked besides ourselves.
pub const MAX_MEMBERS: usize = 64;
/// Rotations that may wait for [`ROTATION_DELAY`] at once (a burst of leaves).
pub const MAX_PENDING_ROTATIONS: usize = 2;

const _: () = assert!(FRESH_KEY_SIZE >= MIN_BASE_KEY_SIZE);

/// Why the schedule refused something. Decryption failures are one opaque variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Key material from someone who is not a member (or left).
    #[error("key material from a non-member")]
    NotAMember,
    /// Key material for a sender id that another member (or we) already use.
    #[error("sender id {0} belongs to another member")]
    SenderIdClaimed(u64),
    /// We have no own stream with this sender id.
    #[error("no own stream with sender id {0}")]
    UnknownStream(u64),
    /// More than [`MAX_OWN_STREAMS`] own streams, duplicate sender ids, or an unusable key.
    #[error("invalid own streams: {0}")]
    BadStreams(&'static str),
    /// More than [`MAX_MEMBERS`] members.
    #[error("more than MAX_MEMBERS ({MAX_MEMBERS}) members")]
    TooManyMembers,
    /// The caller named itself as a member.
    #[error("a participant is not its own member")]
    SelfMember,
    /// Frame or key error from sotto-frame (decryption failure is opaque there).
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
        /// The key (serialize with [`KeyMaterial::to_bytes`]).
        material: KeyMaterial,
    },
}

struct Pending {
    due: Instant,
    /// One fresh key per own stream, in stream order, already given to the remaining members.
    keys: Vec<Zeroizing<Vec<u8>>>,
}

/// One participant's view of the room's keys.
pub struct GroupKeys {
    me: String,
    suite: CipherSuite,
    streams: Vec<SenderKey>,
    ring: KeyRing,
    /// Other members → the (generation, step) of each own stream we last gave them.
    members: BTreeMap<String, Vec<(u64, u64)>>,
    /// Sender id → member that owns it.
    owners: BTreeMap<u64, String>,
    pending: Vec<Pending>,
    /// Leavers' sender ids to forget, with when.
    forget: Vec<(Instant, u64)>,
}

impl core::fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupKeys")
            .field("me", &self.me)
            .field("streams", &self.streams.len())
            .field("members", &self.members.keys().collect::<Vec<_>>())
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
        Self::with_ring_config(me, suite, streams, RingConfig::default())
    }

    /// As [`GroupKeys::new`] with explicit receive-ring tunables (grace period).
    ///
    /// # Errors
    /// As [`GroupKeys::new`].
    pub fn with_ring_config(
        me: &str,
        suite: CipherSuite,
        streams: &[(u64, &[u8])],
        ring: RingConfig,
    ) -> Result<Self, GroupError> {
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
            ring: KeyRing::with_config(suite, ring),
            members: BTreeMap::new(),
            owners: BTreeMap::new(),
            pending: Vec::new(),
            forget: Vec::new(),
        })
    }

    /// Our name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Other members, sorted.
    pub fn members(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// The key id each own stream currently encrypts under.
    pub fn current_keys(&self) -> Vec<KeyId> {
        self.streams.iter().map(SenderKey::id).collect()
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
        if !self.members.contains_key(who) && self.members.len() >= MAX_MEMBERS {
            return Err(GroupError::TooManyMembers);
        }
        Ok(())
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
        self.members.insert(to.to_owned(), given);
    }

    fn give_pending(&self, to: &str, out: &mut Vec<GroupOutput>) -> Result<(), GroupError> {
        for (n, p) in self.pending.iter().enumerate() {
            for (s, key) in self.streams.iter().zip(&p.keys) {
                let id = s.id();
                out.push(GroupOutput::SendKey {
                    to: to.to_owned(),
                    material: KeyMaterial {
                        suite: self.suite,
                        id: KeyId {
                            sender: id.sender,
                            generation: id.generation + 1 + n as u64,
                            step: 0,
                        },
                        base_key: BaseKey::new(key)?,
                    },
                });
            }
        }
        Ok(())
    }

    /// `who` was already in the room when we joined: give them our current (and pending) keys.
    ///
    /// # Errors
    /// [`GroupError::SelfMember`], [`GroupError::TooManyMembers`].
    pub fn member_present(&mut self, who: &str) -> Result<Vec<GroupOutput>, GroupError> {
        self.check_new_member(who)?;
        let mut out = Vec::new();
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
        if self.members.contains_key(who) {
            // a repeated announcement: nothing new to protect
            return Ok(Vec::new());
        }
        for s in &mut self.streams {
            s.ratchet()?;
        }
        let mut out = Vec::new();
        self.give_current(who, &mut out);
        self.give_pending(who, &mut out)?;
        // members too far behind to follow the ratchet from the KID get the current key
        let behind: Vec<String> = self
            .members
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

    /// `who` left: draw a fresh key per own stream, give it at once to every remaining member,
    /// switch to it [`ROTATION_DELAY`] after `now` (in [`GroupKeys::poll`]); forget the leaver's
    /// keys [`LEAVER_KEY_RETENTION`] after `now`. Unknown leavers change nothing.
    ///
    /// # Errors
    /// [`GroupError::Frame`] only if sotto-frame refused a fresh key (it cannot at this size).
    pub fn member_left<R: RngCore + CryptoRng>(
        &mut self,
        who: &str,
        now: Instant,
        rng: &mut R,
    ) -> Result<Vec<GroupOutput>, GroupError> {
        if self.members.remove(who).is_none() {
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
        if self.pending.len() >= MAX_PENDING_ROTATIONS {
            // a burst of leaves: apply what is queued now rather than grow the queue
            self.apply_pending()?;
        }
        let mut keys = Vec::with_capacity(self.streams.len());
        for _ in &self.streams {
            let mut k = Zeroizing::new(vec![0u8; FRESH_KEY_SIZE]);
            rng.fill_bytes(&mut k);
            keys.push(k);
        }
        self.pending.push(Pending {
            due: now + ROTATION_DELAY,
            keys,
        });
        // every remaining member gets the new pending key (the newest entry)
        let n = self.pending.len() - 1;
        let mut out = Vec::new();
        let remaining: Vec<String> = self.members.keys().cloned().collect();
        for to in remaining {
            for (s, key) in self.streams.iter().zip(&self.pending[n].keys) {
                let id = s.id();
                out.push(GroupOutput::SendKey {
                    to: to.clone(),
                    material: KeyMaterial {
                        suite: self.suite,
                        id: KeyId {
                            sender: id.sender,
                            generation: id.generation + 1 + n as u64,
                            step: 0,
                        },
                        base_key: BaseKey::new(key)?,
                    },
                });
            }
        }
        Ok(out)
    }

    fn apply_pending(&mut self) -> Result<(), GroupError> {
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
        for g in self.members.values_mut() {
            g.clone_from(&given);
        }
        Ok(())
    }

    /// Applies rotations whose delay ran out and forgets leavers' keys whose retention ended.
    ///
    /// # Errors
    /// [`GroupError::Frame`] if sotto-frame refused a rotation (it cannot for drawn keys).
    pub fn poll(&mut self, now: Instant) -> Result<(), GroupError> {
        if self.pending.last().is_some_and(|p| p.due <= now) {
            self.apply_pending()?;
        } else if self.pending.first().is_some_and(|p| p.due <= now) {
            // apply the due prefix, keep the rest
            let due = self.pending.iter().take_while(|p| p.due <= now).count();
            let rest = self.pending.split_off(due);
            self.apply_pending()?;
            self.pending = rest;
        }
        let (gone, keep): (Vec<_>, Vec<_>) = self.forget.drain(..).partition(|(t, _)| *t <= now);
        self.forget = keep;
        for (_, sender) in gone {
            self.owners.remove(&sender);
            self.ring.remove_sender(sender);
        }
        self.ring.expire(now);
        Ok(())
    }

    /// Installs key material `from` a member sent us (after the caller decrypted it from the
    /// pairwise session with `from`).
    ///
    /// # Errors
    /// [`GroupError::NotAMember`], [`GroupError::SenderIdClaimed`] (the id is ours or another
    /// member's), [`GroupError::Frame`] (stale generation, suite mismatch...).
    pub fn key_received(
        &mut self,
        from: &str,
        material: &KeyMaterial,
        now: Instant,
    ) -> Result<(), GroupError> {
        if !self.members.contains_key(from) {
            return Err(GroupError::NotAMember);
        }
        let sender = material.id.sender;
        if self.streams.iter().any(|s| s.id().sender == sender) {
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
        self.ring.add_key(material, now)?;
        self.owners.insert(sender, from.to_owned());
        Ok(())
    }

    /// Encrypts one encoded frame on own stream `sender`.
    ///
    /// # Errors
    /// [`GroupError::UnknownStream`], or sotto-frame's errors (counter exhausted, sizes).
    pub fn encrypt(
        &mut self,
        sender: u64,
        codec: Codec,
        frame: &[u8],
    ) -> Result<Vec<u8>, GroupError> {
        let s = self
            .streams
            .iter_mut()
            .find(|s| s.id().sender == sender)
            .ok_or(GroupError::UnknownStream(sender))?;
        Ok(s.encrypt(codec, b"", frame)?)
    }

    /// Decrypts a frame from any member; returns who sent it (by the KID's sender id, as
    /// bound by the key material that member gave us) and the frame.
    ///
    /// # Errors
    /// [`GroupError::Frame`] (opaque authentication failure, unknown key, replay...).
    pub fn decrypt(
        &mut self,
        codec: Codec,
        wire: &[u8],
        now: Instant,
    ) -> Result<(String, Decrypted), GroupError> {
        let d = self.ring.decrypt(codec, b"", wire, now)?;
        let who = self
            .owners
            .get(&d.id.sender)
            .cloned()
            .unwrap_or_else(|| String::from("(left)"));
        Ok((who, d))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::VecDeque;

    const SUITE: CipherSuite = CipherSuite::Aes128GcmSha256_128;

    /// A room of participants whose key messages travel through a queue the test controls.
    struct Room {
        t0: Instant,
        now: Instant,
        rng: StdRng,
        p: BTreeMap<String, GroupKeys>,
        /// (from, to, material) not yet delivered
        mail: VecDeque<(String, String, KeyMaterial)>,
        /// every key material each participant ever received (to attack with later)
        seen: BTreeMap<String, Vec<KeyMaterial>>,
        next_id: u64,
    }

    impl Room {
        fn new() -> Self {
            let t0 = Instant::now();
            Room {
                t0,
                now: t0,
                rng: StdRng::seed_from_u64(7),
                p: BTreeMap::new(),
                mail: VecDeque::new(),
                seen: BTreeMap::new(),
                next_id: 1,
            }
        }
        fn post(&mut self, from: &str, out: Vec<GroupOutput>) {
            for GroupOutput::SendKey { to, material } in out {
                self.mail.push_back((from.to_owned(), to, material));
            }
        }
        fn deliver_all(&mut self) {
            while let Some(m) = self.mail.pop_front() {
                self.deliver(m);
            }
        }
        fn deliver(&mut self, (from, to, material): (String, String, KeyMaterial)) {
            self.seen
                .entry(to.clone())
                .or_default()
                .push(material.clone());
            if let Some(p) = self.p.get_mut(&to) {
                p.key_received(&from, &material, self.now).unwrap();
            }
        }
        /// `who` joins: learns the members present, each of them hears `member_joined`.
        fn join(&mut self, who: &str) {
            let mut key = [0u8; 16];
            self.rng.fill_bytes(&mut key);
            let mut g = GroupKeys::new(who, SUITE, &[(self.next_id, key.as_slice())]).unwrap();
            self.next_id += 1;
            let present: Vec<String> = self.p.keys().cloned().collect();
            let mut mine = Vec::new();
            for m in &present {
                mine.extend(g.member_present(m).unwrap());
            }
            self.p.insert(who.to_owned(), g);
            self.post(who, mine);
            for m in present {
                let now = self.now;
                let out = self.p.get_mut(&m).unwrap().member_joined(who, now).unwrap();
                self.post(&m, out);
            }
        }
        fn left_at(&mut self, member: &str, who: &str) {
            let now = self.now;
            let out = self
                .p
                .get_mut(member)
                .unwrap()
                .member_left(who, now, &mut self.rng)
                .unwrap();
            self.post(member, out);
        }
        fn leave(&mut self, who: &str) {
            self.p.remove(who);
            let rest: Vec<String> = self.p.keys().cloned().collect();
            for m in rest {
                self.left_at(&m, who);
            }
            // the leaver's undelivered keys would be refused (NotAMember); drop both directions
            self.mail.retain(|(from, to, _)| to != who && from != who);
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
            let now = self.now;
            for g in self.p.values_mut() {
                g.poll(now).unwrap();
            }
        }
        fn send(&mut self, who: &str, n: u32) -> Vec<u8> {
            let g = self.p.get_mut(who).unwrap();
            let sender = g.current_keys()[0].sender;
            let frame = format!("{who} frame {n} at {:?}", self.now - self.t0).into_bytes();
            g.encrypt(sender, Codec::Full, &frame).unwrap()
        }
        /// every member decrypts one fresh frame of every other member
        fn all_decrypt_all(&mut self, n: u32) {
            let names: Vec<String> = self.p.keys().cloned().collect();
            for s in &names {
                let wire = self.send(s, n);
                for r in names.iter().filter(|r| *r != s) {
                    let now = self.now;
                    let (from, d) = self
                        .p
                        .get_mut(r)
                        .unwrap()
                        .decrypt(Codec::Full, &wire, now)
                        .unwrap_or_else(|e| panic!("{r} cannot decrypt {s}: {e}"));
                    assert_eq!(&from, s);
                    assert!(d.frame.starts_with(s.as_bytes()));
                }
            }
        }
    }

    /// Tries every key material `keys` and every ratchet step ahead of each against `wire`.
    fn any_key_opens(keys: &[KeyMaterial], wire: &[u8], now: Instant) -> bool {
        keys.iter().any(|k| {
            let mut ring = KeyRing::new(SUITE);
            ring.add_key(k, now).unwrap();
            ring.decrypt(Codec::Full, b"", wire, now).is_ok()
        })
    }

    #[test]
    fn leaver_cannot_decrypt_after_rotation() {
        let mut r = Room::new();
        for n in ["alice", "bob", "carol"] {
            r.join(n);
        }
        r.deliver_all();
        r.all_decrypt_all(0);
        // carol leaves, keeping her keys to attack with
        let mut carol = r.p.remove("carol").unwrap();
        for m in ["alice", "bob"] {
            r.left_at(m, "carol");
        }
        r.mail.retain(|(_, to, _)| to != "carol");
        r.deliver_all();
        // carol's last frame, still in flight, reads as hers during the retention
        let carol_sender = carol.current_keys()[0].sender;
        let last = carol.encrypt(carol_sender, Codec::Full, b"bye").unwrap();
        let now = r.now;
        let (from, _) =
            r.p.get_mut("bob")
                .unwrap()
                .decrypt(Codec::Full, &last, now)
                .unwrap();
        assert_eq!(from, "carol");
        let last2 = carol.encrypt(carol_sender, Codec::Full, b"bye 2").unwrap();
        // before the switch, frames still use the old key: bob reads them, carol too (expected)
        let early = r.send("alice", 1);
        assert!(carol.decrypt(Codec::Full, &early, r.now).is_ok());
        r.advance(ROTATION_DELAY);
        assert_eq!(r.p["alice"].current_keys()[0].generation, 1);
        r.all_decrypt_all(2);
        r.advance(LEAVER_KEY_RETENTION);
        let now = r.now;
        assert!(r
            .p
            .get_mut("bob")
            .unwrap()
            .decrypt(Codec::Full, &last2, now)
            .is_err());
        for s in ["alice", "bob"] {
            let wire = r.send(s, 3);
            assert!(carol.decrypt(Codec::Full, &wire, r.now).is_err());
            let seen = r.seen.get("carol").cloned().unwrap_or_default();
            assert!(!seen.is_empty());
            assert!(
                !any_key_opens(&seen, &wire, r.now),
                "{s}'s frame opened by a leaver key"
            );
            // and the remaining member does read it (so the check above can fail)
            let other = if s == "alice" { "bob" } else { "alice" };
            let now = r.now;
            assert!(r
                .p
                .get_mut(other)
                .unwrap()
                .decrypt(Codec::Full, &wire, now)
                .is_ok());
        }
    }

    #[test]
    fn joiner_cannot_decrypt_frames_from_before_the_join() {
        let mut r = Room::new();
        r.join("alice");
        r.join("bob");
        r.deliver_all();
        let before: Vec<Vec<u8>> = (0..3).map(|i| r.send("alice", i)).collect();
        let before_bob = r.send("bob", 0);
        r.join("carol");
        r.deliver_all();
        let seen = r.seen["carol"].clone();
        for w in before.iter().chain([&before_bob]) {
            assert!(r
                .p
                .get_mut("carol")
                .unwrap()
                .decrypt(Codec::Full, w, r.now)
                .is_err());
            assert!(!any_key_opens(&seen, w, r.now));
        }
        // bob never got alice's ratcheted key, yet follows the ratchet from the KID
        r.all_decrypt_all(5);
        // one ratchet for bob's join, one for carol's
        assert_eq!(r.p["alice"].current_keys()[0].step, 2);
    }

    #[test]
    fn two_joins_in_the_same_second() {
        let mut r = Room::new();
        r.join("alice");
        r.join("bob");
        r.deliver_all();
        r.all_decrypt_all(0);
        r.join("carol");
        r.join("dave");
        r.deliver_all();
        r.all_decrypt_all(1);
        assert_eq!(r.p["alice"].current_keys()[0].step, 3);
    }

    #[test]
    fn many_joins_without_frames_still_leave_everyone_on_the_right_keys() {
        let mut r = Room::new();
        r.join("m0");
        r.join("m1");
        r.deliver_all();
        for i in 2..(2 + MAX_RATCHET_AHEAD as usize + 3) {
            r.join(&format!("m{i}"));
            r.deliver_all();
        }
        r.all_decrypt_all(1);
    }

    #[test]
    fn join_racing_a_leave_in_either_order() {
        let mut r = Room::new();
        for n in ["alice", "bob", "carol"] {
            r.join(n);
        }
        r.deliver_all();
        let carol = r.p.remove("carol").unwrap();
        drop(carol);
        let carol_seen = r.seen["carol"].clone();
        // alice hears the leave first, bob the join first
        r.left_at("alice", "carol");
        let mut key = [0u8; 16];
        r.rng.fill_bytes(&mut key);
        let mut dave = GroupKeys::new("dave", SUITE, &[(50, key.as_slice())]).unwrap();
        let mut mine = Vec::new();
        for m in ["alice", "bob"] {
            mine.extend(dave.member_present(m).unwrap());
        }
        r.p.insert("dave".into(), dave);
        r.post("dave", mine);
        let now = r.now;
        let out =
            r.p.get_mut("alice")
                .unwrap()
                .member_joined("dave", now)
                .unwrap();
        r.post("alice", out);
        let out =
            r.p.get_mut("bob")
                .unwrap()
                .member_joined("dave", now)
                .unwrap();
        r.post("bob", out);
        r.left_at("bob", "carol");
        r.mail.retain(|(_, to, _)| to != "carol");
        r.deliver_all();
        r.advance(ROTATION_DELAY);
        r.all_decrypt_all(1);
        for s in ["alice", "bob", "dave"] {
            let w = r.send(s, 2);
            assert!(!any_key_opens(&carol_seen, &w, r.now), "carol reads {s}");
        }
        assert_eq!(r.p["alice"].current_keys()[0].generation, 1);
        assert_eq!(r.p["bob"].current_keys()[0].generation, 1);
    }

    #[test]
    fn a_late_key_recovers_by_itself() {
        let mut r = Room::new();
        r.join("alice");
        r.join("bob");
        r.deliver_all();
        r.join("carol");
        // hold back alice's key to carol
        let held: Vec<_> = r
            .mail
            .iter()
            .filter(|(f, t, _)| f == "alice" && t == "carol")
            .cloned()
            .collect();
        r.mail.retain(|(f, t, _)| !(f == "alice" && t == "carol"));
        r.deliver_all();
        let w = r.send("alice", 0);
        assert!(r
            .p
            .get_mut("carol")
            .unwrap()
            .decrypt(Codec::Full, &w, r.now)
            .is_err());
        for m in held {
            r.deliver(m);
        }
        r.all_decrypt_all(1);
        // a rotated key that arrives after the switch
        r.leave("carol");
        let held: Vec<_> = r
            .mail
            .iter()
            .filter(|(f, t, _)| f == "alice" && t == "bob")
            .cloned()
            .collect();
        r.mail.retain(|(f, t, _)| !(f == "alice" && t == "bob"));
        r.deliver_all();
        r.advance(ROTATION_DELAY);
        let w = r.send("alice", 2);
        let now = r.now;
        assert!(r
            .p
            .get_mut("bob")
            .unwrap()
            .decrypt(Codec::Full, &w, now)
            .is_err());
        for m in held {
            r.deliver(m);
        }
        r.all_decrypt_all(3);
    }

    #[test]
    fn old_keys_work_for_the_grace_period_then_stop() {
        let mut r = Room::new();
        for n in ["alice", "bob", "carol"] {
            r.join(n);
        }
        r.deliver_all();
        let in_flight = r.send("alice", 0);
        let in_flight2 = r.send("alice", 1);
        r.leave("carol");
        r.deliver_all();
        r.advance(ROTATION_DELAY);
        let now = r.now;
        assert!(r
            .p
            .get_mut("bob")
            .unwrap()
            .decrypt(Codec::Full, &in_flight, now)
            .is_ok());
        r.advance(sotto_frame::consts::DEFAULT_GRACE_PERIOD);
        let now = r.now;
        // superseded key retired: the second old frame no longer opens, a new one does
        assert!(r
            .p
            .get_mut("bob")
            .unwrap()
            .decrypt(Codec::Full, &in_flight2, now)
            .is_err());
        r.all_decrypt_all(9);
    }

    #[test]
    fn rotation_applies_exactly_at_the_delay() {
        let mut r = Room::new();
        for n in ["alice", "bob", "carol"] {
            r.join(n);
        }
        r.deliver_all();
        r.leave("carol");
        r.advance(ROTATION_DELAY - Duration::from_millis(1));
        assert_eq!(r.p["alice"].current_keys()[0].generation, 0);
        assert_eq!(r.p["alice"].pending_rotations(), 1);
        r.advance(Duration::from_millis(1));
        assert_eq!(r.p["alice"].current_keys()[0].generation, 1);
        assert_eq!(r.p["alice"].pending_rotations(), 0);
    }

    #[test]
    fn leave_bursts_are_bounded_and_still_correct() {
        let mut r = Room::new();
        for n in ["a", "b", "c", "d", "e"] {
            r.join(n);
        }
        r.deliver_all();
        r.leave("c");
        r.leave("d");
        assert_eq!(r.p["a"].pending_rotations(), MAX_PENDING_ROTATIONS);
        let e_seen = r.seen.get("e").cloned().unwrap_or_default();
        r.leave("e");
        assert_eq!(r.p["a"].pending_rotations(), 1);
        r.deliver_all();
        r.advance(ROTATION_DELAY);
        r.all_decrypt_all(1);
        let w = r.send("a", 2);
        assert!(!any_key_opens(&e_seen, &w, r.now));
    }

    #[test]
    fn refuses_non_members_claimed_ids_and_limits() {
        let now = Instant::now();
        let mut a = GroupKeys::new("a", SUITE, &[(1, &[1; 16])]).unwrap();
        let b = GroupKeys::new("b", SUITE, &[(2, &[2; 16])]).unwrap();
        let m = |id: u64| KeyMaterial {
            suite: SUITE,
            id: KeyId {
                sender: id,
                generation: 0,
                step: 0,
            },
            base_key: BaseKey::new(&[3; 16]).unwrap(),
        };
        assert_eq!(a.key_received("b", &m(2), now), Err(GroupError::NotAMember));
        a.member_present("b").unwrap();
        a.member_present("c").unwrap();
        a.key_received("b", &m(2), now).unwrap();
        assert_eq!(
            a.key_received("c", &m(2), now),
            Err(GroupError::SenderIdClaimed(2))
        );
        assert_eq!(
            a.key_received("c", &m(1), now),
            Err(GroupError::SenderIdClaimed(1))
        );
        assert_eq!(a.member_present("a"), Err(GroupError::SelfMember));
        assert!(matches!(
            a.encrypt(7, Codec::Full, b"x"),
            Err(GroupError::UnknownStream(7))
        ));
        drop(b);
        let keys: Vec<(u64, [u8; 16])> =
            (0..=MAX_OWN_STREAMS as u64).map(|i| (i, [1; 16])).collect();
        let refs: Vec<(u64, &[u8])> = keys.iter().map(|(i, k)| (*i, k.as_slice())).collect();
        assert!(GroupKeys::new("a", SUITE, &refs[..MAX_OWN_STREAMS]).is_ok());
        assert!(matches!(
            GroupKeys::new("a", SUITE, &refs),
            Err(GroupError::BadStreams(_))
        ));
        let mut g = GroupKeys::new("g", SUITE, &[(1, &[1; 16])]).unwrap();
        for i in 0..MAX_MEMBERS {
            g.member_present(&format!("m{i}")).unwrap();
        }
        assert_eq!(
            g.member_present("one-more"),
            Err(GroupError::TooManyMembers)
        );
    }

    #[test]
    fn debug_prints_no_keys() {
        let g = GroupKeys::new("alice", SUITE, &[(1, &[0xAB; 16])]).unwrap();
        let s = format!("{g:?}");
        assert!(s.contains("alice") && !s.contains("171") && !s.to_lowercase().contains("ab, ab"));
    }
}
