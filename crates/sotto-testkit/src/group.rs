//! Members' group key schedules ([`sotto_call::group::GroupKeys`], the one the call core runs)
//! with key deliveries carried in process instead of over the pairwise ratchet sessions: a room
//! of media peers whose keys follow the real rules (ratchet on join, fresh generation on leave,
//! the activation delay, leavers forgotten after retention) without a signaling server, for
//! media-layer tests of large rooms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sotto_call::group::{GroupKeys, GroupOutput};
use sotto_call::media::MediaPeer;
use sotto_frame::CipherSuite;

/// Members, each with its schedule and media peer.
#[derive(Default)]
pub struct KeyedRoom {
    members: BTreeMap<String, (GroupKeys, Arc<MediaPeer>)>,
    /// Keys delivered so far (`SendKey` carried out).
    pub keys_sent: u64,
}

impl KeyedRoom {
    /// `name` (sender id `sender`, suite `suite`) joins with `peer`: it encrypts under its
    /// schedule's key; every member already there sees a join (ratchets, gives it the new
    /// step) and is present to it (gets its key).
    pub fn join(
        &mut self,
        name: &str,
        sender: u64,
        suite: CipherSuite,
        peer: Arc<MediaPeer>,
        now: Instant,
    ) {
        let base: [u8; 32] = rand::random();
        let mut keys = GroupKeys::new(name, suite, &[(sender, &base[..])]).unwrap();
        let others: Vec<String> = self.members.keys().cloned().collect();
        for o in &others {
            keys.admit(o).unwrap();
        }
        let first = keys.use_current();
        self.members.insert(name.to_string(), (keys, peer));
        self.apply(name, first, now);
        for o in &others {
            let out = self.schedule(o).member_joined(name, now).unwrap();
            self.apply(o, out, now);
        }
        for o in &others {
            let out = self.schedule(name).member_present(o).unwrap();
            self.apply(name, out, now);
        }
    }

    /// `name` leaves: every member who remains draws a fresh generation for the others.
    pub fn leave(&mut self, name: &str, now: Instant) {
        self.members.remove(name);
        let others: Vec<String> = self.members.keys().cloned().collect();
        for o in &others {
            let out = self
                .schedule(o)
                .member_left(name, now, &mut rand::rngs::OsRng)
                .unwrap();
            self.apply(o, out, now);
        }
    }

    /// Activation delays and retention that ran out by `now`.
    pub fn poll(&mut self, now: Instant) {
        let names: Vec<String> = self.members.keys().cloned().collect();
        for n in &names {
            let out = self.schedule(n).poll(now).unwrap();
            self.apply(n, out, now);
        }
    }

    fn schedule(&mut self, name: &str) -> &mut GroupKeys {
        &mut self.members.get_mut(name).unwrap().0
    }

    /// Carries out `from`'s outputs: deliveries become the recipient's `key_received`.
    fn apply(&mut self, from: &str, outs: Vec<GroupOutput>, now: Instant) {
        let Some((_, peer)) = self.members.get(from) else {
            return;
        };
        let peer = peer.clone();
        for o in outs {
            match o {
                GroupOutput::SendKey { to, material } => {
                    self.keys_sent += 1;
                    if !self.members.contains_key(&to) {
                        continue;
                    }
                    let out = self
                        .schedule(&to)
                        .key_received(from, &material, now)
                        .unwrap();
                    self.apply(&to, out, now);
                }
                GroupOutput::UseSendKey { material } => peer.use_send_key(&material).unwrap(),
                GroupOutput::InstallKey { material, .. } => {
                    peer.install_remote_key(&material).unwrap()
                }
                GroupOutput::ForgetSender { sender } => peer.forget_sender(sender),
                _ => panic!("an output this driver does not know"),
            }
        }
    }
}

/// Waits `d`, polling `room`'s schedules every 20 ms (the call core's timers).
pub async fn idle(room: &Mutex<KeyedRoom>, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        room.lock().unwrap().poll(Instant::now());
        tokio::time::sleep(Duration::from_millis(20).min(end - tokio::time::Instant::now())).await;
    }
}
