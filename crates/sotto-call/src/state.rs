//! The call state machine, free of I/O: inputs and `now` in, outputs out.
//!
//! ```text
//!  caller: Idle --dial--> Outgoing(ringing) --answer rx--> Connecting --media up--> Connected
//!  callee: Idle --offer rx--> Incoming --accept--> Connecting --media up--> Connected
//!  any live state --hangup (local or remote) / reject / busy / timeout / media failure--> Ended
//! ```
//! Glare (both sides dial each other): the call whose id is larger survives; the side that loses
//! abandons its own call and accepts the winner's at once (it wanted to talk anyway). See
//! `protocol-spec/call.md`.

use std::time::{Duration, Instant};

pub use crate::consts::{CONNECT_TIMEOUT, RING_TIMEOUT};

/// Which side of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialled.
    Caller,
    /// We were called.
    Callee,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer hung up.
    RemoteHangup,
    /// The peer rejected our call.
    Rejected,
    /// We rejected the call.
    RejectedLocally,
    /// The peer was in another call.
    Busy,
    /// Nobody answered within [`RING_TIMEOUT`].
    RingTimeout,
    /// Media did not connect within [`CONNECT_TIMEOUT`] (e.g. relay-only ICE with no usable
    /// TURN server).
    ConnectTimeout,
    /// The media connection failed or dropped.
    MediaFailed,
    /// We lost a glare and continue with the peer's call instead.
    Superseded,
    /// Something else went wrong (a protocol or setup error), said in words.
    Failed(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::LocalHangup => write!(f, "hung up"),
            EndReason::RemoteHangup => write!(f, "peer hung up"),
            EndReason::Rejected => write!(f, "rejected by peer"),
            EndReason::RejectedLocally => write!(f, "rejected"),
            EndReason::Busy => write!(f, "peer busy"),
            EndReason::RingTimeout => write!(f, "no answer (ring timeout)"),
            EndReason::ConnectTimeout => write!(f, "media did not connect (connect timeout)"),
            EndReason::MediaFailed => write!(f, "media connection failed"),
            EndReason::Superseded => write!(f, "superseded by the peer's simultaneous call"),
            EndReason::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Where a call is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No call yet.
    Idle,
    /// We dialled; the peer's device rings (or the offer is still on its way).
    Outgoing,
    /// The peer calls us; we ring.
    Incoming,
    /// Answered; media is connecting.
    Connecting,
    /// Media flows.
    Connected,
    /// Over.
    Ended(EndReason),
}

impl State {
    /// One word for displays and scripts: idle, ringing, incoming, connecting, connected, ended.
    pub fn word(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Outgoing => "ringing",
            State::Incoming => "incoming",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Ended(_) => "ended",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The user dials.
    Dial,
    /// The peer's offer arrived (authenticated).
    OfferReceived,
    /// The peer's device says it rings.
    RingingReceived,
    /// The user accepts the incoming call.
    Accept,
    /// The user rejects the incoming call.
    Reject,
    /// The user hangs up.
    Hangup,
    /// The peer's answer arrived.
    AnswerReceived,
    /// The peer rejected.
    RejectReceived,
    /// The peer is busy.
    BusyReceived,
    /// The peer hung up.
    HangupReceived,
    /// Media connected.
    MediaConnected,
    /// Media failed.
    MediaFailed,
    /// Setup failed locally (bad SDP, no relay candidates...).
    SetupFailed(String),
    /// We lost a glare.
    GlareLost,
}

/// What to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send our offer.
    SendOffer,
    /// Tell the caller we ring.
    SendRinging,
    /// Alert the user: incoming call.
    Ring,
    /// Send our answer and start media.
    SendAnswer,
    /// Send a reject.
    SendReject,
    /// Send a hangup.
    SendHangup,
    /// Apply the peer's answer and start media.
    ApplyAnswer,
    /// Release media.
    StopMedia,
}

/// An input that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call input {input:?} is not valid in state {state}")]
pub struct IllegalTransition {
    /// The state.
    pub state: &'static str,
    /// The input.
    pub input: Input,
}

/// One call's state machine.
#[derive(Debug, Clone)]
pub struct CallMachine {
    role: Role,
    state: State,
    deadline: Option<Instant>,
    ring_timeout: Duration,
    connect_timeout: Duration,
}

impl CallMachine {
    /// A new call on `role`'s side with the default timeouts.
    pub fn new(role: Role) -> Self {
        Self::with_timeouts(role, RING_TIMEOUT, CONNECT_TIMEOUT)
    }

    /// A new call with explicit timeouts (tests, demos).
    pub fn with_timeouts(role: Role, ring: Duration, connect: Duration) -> Self {
        CallMachine {
            role,
            state: State::Idle,
            deadline: None,
            ring_timeout: ring,
            connect_timeout: connect,
        }
    }

    /// Our side.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// True once ended.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }

    /// When [`CallMachine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn end(&mut self, reason: EndReason, mut out: Vec<Output>) -> Vec<Output> {
        self.state = State::Ended(reason);
        self.deadline = None;
        out.push(Output::StopMedia);
        out
    }

    /// Applies `input` at `now`.
    ///
    /// # Errors
    /// [`IllegalTransition`] if `input` makes no sense now; the state is then unchanged.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<Vec<Output>, IllegalTransition> {
        use Input as I;
        use State as S;
        let illegal = |s: &State, input: Input| IllegalTransition {
            state: s.word(),
            input,
        };
        let out = match (&self.state, self.role, input) {
            (S::Idle, Role::Caller, I::Dial) => {
                self.state = S::Outgoing;
                self.deadline = Some(now + self.ring_timeout);
                vec![Output::SendOffer]
            }
            (S::Idle, Role::Callee, I::OfferReceived) => {
                self.state = S::Incoming;
                self.deadline = Some(now + self.ring_timeout);
                vec![Output::Ring, Output::SendRinging]
            }
            (S::Outgoing, Role::Caller, I::RingingReceived) => vec![],
            (S::Outgoing, Role::Caller, I::AnswerReceived) => {
                self.state = S::Connecting;
                self.deadline = Some(now + self.connect_timeout);
                vec![Output::ApplyAnswer]
            }
            (S::Outgoing, Role::Caller, I::RejectReceived) => self.end(EndReason::Rejected, vec![]),
            (S::Outgoing, Role::Caller, I::BusyReceived) => self.end(EndReason::Busy, vec![]),
            (S::Outgoing, Role::Caller, I::GlareLost) => self.end(EndReason::Superseded, vec![]),
            (S::Incoming, Role::Callee, I::Accept) => {
                self.state = S::Connecting;
                self.deadline = Some(now + self.connect_timeout);
                vec![Output::SendAnswer]
            }
            (S::Incoming, Role::Callee, I::Reject) => {
                self.end(EndReason::RejectedLocally, vec![Output::SendReject])
            }
            (S::Connecting, _, I::MediaConnected) => {
                self.state = S::Connected;
                self.deadline = None;
                vec![]
            }
            (S::Outgoing | S::Incoming | S::Connecting | S::Connected, _, I::Hangup) => {
                self.end(EndReason::LocalHangup, vec![Output::SendHangup])
            }
            (S::Outgoing | S::Incoming | S::Connecting | S::Connected, _, I::HangupReceived) => {
                self.end(EndReason::RemoteHangup, vec![])
            }
            (S::Connecting | S::Connected, _, I::MediaFailed) => {
                self.end(EndReason::MediaFailed, vec![Output::SendHangup])
            }
            (S::Outgoing | S::Incoming | S::Connecting, _, I::SetupFailed(why)) => {
                self.end(EndReason::Failed(why), vec![Output::SendHangup])
            }
            (s, _, input) => return Err(illegal(s, input)),
        };
        Ok(out)
    }

    /// Fires the ring or connect timeout if `now` is past it; returns what to do.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return vec![],
        }
        match self.state {
            State::Outgoing | State::Incoming => {
                self.end(EndReason::RingTimeout, vec![Output::SendHangup])
            }
            State::Connecting => self.end(EndReason::ConnectTimeout, vec![Output::SendHangup]),
            _ => {
                self.deadline = None;
                vec![]
            }
        }
    }
}

/// Glare: both sides dialled. The call with the larger id survives (ids are random and
/// distinct, so both sides decide the same way). Returns true if *our* call survives.
pub fn glare_we_win(our_call_id: &[u8; 16], their_call_id: &[u8; 16]) -> bool {
    our_call_id > their_call_id
}

/// What to do with a new authenticated offer (for a call id we do not have yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferVerdict {
    /// No live call: start a callee machine and ring.
    Ring,
    /// In another live call: answer `Busy` bound to the offer's call id; the current call is
    /// untouched.
    Busy,
    /// Glare and our call id is larger: ignore the offer, the peer abandons its call and accepts
    /// ours.
    GlareKeepOurs,
    /// Glare and the peer's call id is larger: feed [`Input::GlareLost`] to our machine (no
    /// hangup is sent) and accept the peer's call at once.
    GlareTakeTheirs,
}

/// Decides what a new offer means given the call we are in (`current`, our call's id, and
/// whether the offer comes from the same peer device we are dialling).
///
/// Glare is: we are the caller, still `Outgoing`, and the offer comes from the peer we dial.
/// Equal ids (which random 128-bit ids make practically impossible) resolve as
/// [`OfferVerdict::GlareKeepOurs`] on both sides, so both calls then end by ring timeout rather
/// than connecting twice.
pub fn offer_verdict(
    current: Option<(&CallMachine, &[u8; 16])>,
    from_same_peer: bool,
    their_call_id: &[u8; 16],
) -> OfferVerdict {
    let Some((m, ours)) = current else {
        return OfferVerdict::Ring;
    };
    if m.is_ended() || m.state() == &State::Idle {
        return OfferVerdict::Ring;
    }
    if from_same_peer && m.role() == Role::Caller && m.state() == &State::Outgoing {
        if glare_we_win(ours, their_call_id) || ours == their_call_id {
            OfferVerdict::GlareKeepOurs
        } else {
            OfferVerdict::GlareTakeTheirs
        }
    } else {
        OfferVerdict::Busy
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn caller_happy_path() {
        let now = t0();
        let mut m = CallMachine::new(Role::Caller);
        assert_eq!(m.handle(Input::Dial, now).unwrap(), vec![Output::SendOffer]);
        assert_eq!(m.state().word(), "ringing");
        assert_eq!(m.handle(Input::RingingReceived, now).unwrap(), vec![]);
        assert_eq!(
            m.handle(Input::AnswerReceived, now).unwrap(),
            vec![Output::ApplyAnswer]
        );
        assert_eq!(m.handle(Input::MediaConnected, now).unwrap(), vec![]);
        assert_eq!(m.state(), &State::Connected);
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(
            m.handle(Input::Hangup, now).unwrap(),
            vec![Output::SendHangup, Output::StopMedia]
        );
        assert_eq!(m.state(), &State::Ended(EndReason::LocalHangup));
    }

    #[test]
    fn callee_happy_path_and_remote_hangup() {
        let now = t0();
        let mut m = CallMachine::new(Role::Callee);
        assert_eq!(
            m.handle(Input::OfferReceived, now).unwrap(),
            vec![Output::Ring, Output::SendRinging]
        );
        assert_eq!(
            m.handle(Input::Accept, now).unwrap(),
            vec![Output::SendAnswer]
        );
        m.handle(Input::MediaConnected, now).unwrap();
        assert_eq!(
            m.handle(Input::HangupReceived, now).unwrap(),
            vec![Output::StopMedia]
        );
        assert_eq!(m.state(), &State::Ended(EndReason::RemoteHangup));
    }

    #[test]
    fn reject_busy_and_timeouts() {
        let now = t0();
        let mut callee = CallMachine::new(Role::Callee);
        callee.handle(Input::OfferReceived, now).unwrap();
        assert_eq!(
            callee.handle(Input::Reject, now).unwrap(),
            vec![Output::SendReject, Output::StopMedia]
        );
        let mut caller = CallMachine::new(Role::Caller);
        caller.handle(Input::Dial, now).unwrap();
        caller.handle(Input::RejectReceived, now).unwrap();
        assert_eq!(caller.state(), &State::Ended(EndReason::Rejected));
        let mut caller = CallMachine::new(Role::Caller);
        caller.handle(Input::Dial, now).unwrap();
        caller.handle(Input::BusyReceived, now).unwrap();
        assert_eq!(caller.state(), &State::Ended(EndReason::Busy));

        let mut caller = CallMachine::with_timeouts(
            Role::Caller,
            Duration::from_secs(5),
            Duration::from_secs(3),
        );
        caller.handle(Input::Dial, now).unwrap();
        assert!(caller
            .handle_timeout(now + Duration::from_millis(4999))
            .is_empty());
        assert_eq!(caller.state().word(), "ringing");
        assert_eq!(
            caller.handle_timeout(now + Duration::from_secs(5)),
            vec![Output::SendHangup, Output::StopMedia]
        );
        assert_eq!(caller.state(), &State::Ended(EndReason::RingTimeout));

        let mut c = CallMachine::with_timeouts(
            Role::Caller,
            Duration::from_secs(5),
            Duration::from_secs(3),
        );
        c.handle(Input::Dial, now).unwrap();
        c.handle(Input::AnswerReceived, now + Duration::from_secs(1))
            .unwrap();
        assert!(c.handle_timeout(now + Duration::from_secs(3)).is_empty());
        c.handle_timeout(now + Duration::from_secs(4));
        assert_eq!(c.state(), &State::Ended(EndReason::ConnectTimeout));
    }

    #[test]
    fn illegal_inputs_are_errors_and_change_nothing() {
        let now = t0();
        let mut m = CallMachine::new(Role::Caller);
        for bad in [
            Input::Accept,
            Input::AnswerReceived,
            Input::Hangup,
            Input::MediaConnected,
            Input::OfferReceived,
        ] {
            let e = m.handle(bad.clone(), now).unwrap_err();
            assert_eq!(e.input, bad);
            assert_eq!(m.state(), &State::Idle);
        }
        m.handle(Input::Dial, now).unwrap();
        assert!(m.handle(Input::Dial, now).is_err());
        assert!(m.handle(Input::Accept, now).is_err());
        assert_eq!(m.state().word(), "ringing");
        let mut callee = CallMachine::new(Role::Callee);
        assert!(callee.handle(Input::Dial, now).is_err());
        callee.handle(Input::OfferReceived, now).unwrap();
        assert!(callee.handle(Input::AnswerReceived, now).is_err());
        callee.handle(Input::Hangup, now).unwrap();
        // nothing moves an ended call
        for late in [
            Input::HangupReceived,
            Input::MediaConnected,
            Input::Hangup,
            Input::Accept,
        ] {
            assert!(callee.handle(late, now).is_err());
        }
        assert_eq!(callee.state(), &State::Ended(EndReason::LocalHangup));
    }

    #[test]
    fn glare_is_decided_the_same_way_on_both_sides() {
        let a = [1u8; 16];
        let mut b = [1u8; 16];
        b[15] = 2;
        assert!(glare_we_win(&b, &a));
        assert!(!glare_we_win(&a, &b));
        let mut m = CallMachine::new(Role::Caller);
        m.handle(Input::Dial, t0()).unwrap();
        m.handle(Input::GlareLost, t0()).unwrap();
        assert_eq!(m.state(), &State::Ended(EndReason::Superseded));
    }

    fn all_inputs() -> Vec<Input> {
        vec![
            Input::Dial,
            Input::OfferReceived,
            Input::RingingReceived,
            Input::Accept,
            Input::Reject,
            Input::Hangup,
            Input::AnswerReceived,
            Input::RejectReceived,
            Input::BusyReceived,
            Input::HangupReceived,
            Input::MediaConnected,
            Input::MediaFailed,
            Input::SetupFailed("x".into()),
            Input::GlareLost,
        ]
    }

    const RING: Duration = Duration::from_secs(30);
    const CONNECT: Duration = Duration::from_secs(20);

    /// A machine driven into `word` by legal inputs at `now`.
    fn machine_in(role: Role, word: &str, now: Instant) -> Option<CallMachine> {
        let mut m = CallMachine::with_timeouts(role, RING, CONNECT);
        let path: &[Input] = match (role, word) {
            (_, "idle") => &[],
            (Role::Caller, "ringing") => &[Input::Dial],
            (Role::Callee, "incoming") => &[Input::OfferReceived],
            (Role::Caller, "connecting") => &[Input::Dial, Input::AnswerReceived],
            (Role::Callee, "connecting") => &[Input::OfferReceived, Input::Accept],
            (Role::Caller, "connected") => {
                &[Input::Dial, Input::AnswerReceived, Input::MediaConnected]
            }
            (Role::Callee, "connected") => {
                &[Input::OfferReceived, Input::Accept, Input::MediaConnected]
            }
            (Role::Caller, "ended") => &[Input::Dial, Input::Hangup],
            (Role::Callee, "ended") => &[Input::OfferReceived, Input::Reject],
            _ => return None,
        };
        for i in path {
            m.handle(i.clone(), now).unwrap();
        }
        assert_eq!(m.state().word(), word);
        Some(m)
    }

    /// The normative table of legal transitions (protocol-spec/call.md §5): (role, state,
    /// input) → (next state, outputs). Everything else is an `IllegalTransition`.
    fn legal(role: Role, state: &str, input: &Input) -> Option<(State, Vec<Output>)> {
        use Output::*;
        let end = |r: EndReason, send_hangup: bool| {
            let mut o = vec![];
            if send_hangup {
                o.push(SendHangup);
            }
            o.push(StopMedia);
            Some((State::Ended(r), o))
        };
        let live = matches!(state, "ringing" | "incoming" | "connecting" | "connected");
        match (role, state, input) {
            (Role::Caller, "idle", Input::Dial) => Some((State::Outgoing, vec![SendOffer])),
            (Role::Callee, "idle", Input::OfferReceived) => {
                Some((State::Incoming, vec![Ring, SendRinging]))
            }
            (Role::Caller, "ringing", Input::RingingReceived) => Some((State::Outgoing, vec![])),
            (Role::Caller, "ringing", Input::AnswerReceived) => {
                Some((State::Connecting, vec![ApplyAnswer]))
            }
            (Role::Caller, "ringing", Input::RejectReceived) => end(EndReason::Rejected, false),
            (Role::Caller, "ringing", Input::BusyReceived) => end(EndReason::Busy, false),
            (Role::Caller, "ringing", Input::GlareLost) => end(EndReason::Superseded, false),
            (Role::Callee, "incoming", Input::Accept) => {
                Some((State::Connecting, vec![SendAnswer]))
            }
            (Role::Callee, "incoming", Input::Reject) => Some((
                State::Ended(EndReason::RejectedLocally),
                vec![SendReject, StopMedia],
            )),
            (_, "connecting", Input::MediaConnected) => Some((State::Connected, vec![])),
            (_, _, Input::Hangup) if live => end(EndReason::LocalHangup, true),
            (_, _, Input::HangupReceived) if live => end(EndReason::RemoteHangup, false),
            (_, "connecting" | "connected", Input::MediaFailed) => {
                end(EndReason::MediaFailed, true)
            }
            (_, "ringing" | "incoming" | "connecting", Input::SetupFailed(w)) => {
                end(EndReason::Failed(w.clone()), true)
            }
            _ => None,
        }
    }

    #[test]
    fn every_state_times_every_input_matches_the_table() {
        let now = t0();
        let later = now + Duration::from_secs(1);
        let mut legal_seen = 0;
        let mut illegal_seen = 0;
        for role in [Role::Caller, Role::Callee] {
            for word in [
                "idle",
                "ringing",
                "incoming",
                "connecting",
                "connected",
                "ended",
            ] {
                for input in all_inputs() {
                    let Some(mut m) = machine_in(role, word, now) else {
                        continue;
                    };
                    let before = (m.state().clone(), m.poll_timeout());
                    match (legal(role, word, &input), m.handle(input.clone(), later)) {
                        (Some((next, outs)), Ok(got)) => {
                            legal_seen += 1;
                            assert_eq!(got, outs, "{role:?} {word} {input:?}");
                            assert_eq!(m.state(), &next, "{role:?} {word} {input:?}");
                            let deadline = match next {
                                State::Outgoing | State::Incoming if word == "idle" => {
                                    Some(later + RING)
                                }
                                State::Outgoing | State::Incoming => before.1,
                                State::Connecting => Some(later + CONNECT),
                                _ => None,
                            };
                            assert_eq!(m.poll_timeout(), deadline, "{role:?} {word} {input:?}");
                        }
                        (None, Err(e)) => {
                            illegal_seen += 1;
                            assert_eq!(e.input, input);
                            assert_eq!(e.state, word);
                            assert_eq!((m.state().clone(), m.poll_timeout()), before);
                        }
                        (want, got) => {
                            panic!("{role:?} {word} {input:?}: want {want:?}, got {got:?}")
                        }
                    }
                }
            }
        }
        // 2 roles x 5 reachable states x 14 inputs
        assert_eq!(legal_seen + illegal_seen, 2 * 5 * 14);
        assert_eq!(legal_seen, 31);
    }

    #[test]
    fn timeouts_fire_exactly_at_the_deadline_in_each_state() {
        let now = t0();
        for (role, word, reason) in [
            (Role::Caller, "ringing", Some(EndReason::RingTimeout)),
            (Role::Callee, "incoming", Some(EndReason::RingTimeout)),
            (Role::Caller, "connecting", Some(EndReason::ConnectTimeout)),
            (Role::Callee, "connecting", Some(EndReason::ConnectTimeout)),
            (Role::Caller, "idle", None),
            (Role::Caller, "connected", None),
            (Role::Callee, "ended", None),
        ] {
            let mut m = machine_in(role, word, now).unwrap();
            let Some(reason) = reason else {
                assert_eq!(m.poll_timeout(), None, "{word}");
                assert!(m.handle_timeout(now + Duration::from_secs(3600)).is_empty());
                assert_eq!(m.state().word(), word);
                continue;
            };
            let d = m.poll_timeout().unwrap();
            assert!(m.handle_timeout(d - Duration::from_nanos(1)).is_empty());
            assert_eq!(m.state().word(), word);
            assert_eq!(
                m.handle_timeout(d),
                vec![Output::SendHangup, Output::StopMedia]
            );
            assert_eq!(m.state(), &State::Ended(reason));
            assert_eq!(m.poll_timeout(), None);
            // a late timeout call changes nothing
            assert!(m.handle_timeout(d + RING).is_empty());
        }
    }

    #[test]
    fn ringing_ack_does_not_extend_the_ring_timeout() {
        let now = t0();
        let mut m = CallMachine::with_timeouts(Role::Caller, RING, CONNECT);
        m.handle(Input::Dial, now).unwrap();
        m.handle(Input::RingingReceived, now + Duration::from_secs(29))
            .unwrap();
        assert_eq!(m.poll_timeout(), Some(now + RING));
    }

    #[test]
    fn hangup_from_each_side_in_each_live_state() {
        let now = t0();
        for role in [Role::Caller, Role::Callee] {
            for word in ["ringing", "incoming", "connecting", "connected"] {
                let Some(mut local) = machine_in(role, word, now) else {
                    continue;
                };
                let mut remote = local.clone();
                assert!(local
                    .handle(Input::Hangup, now)
                    .unwrap()
                    .contains(&Output::SendHangup));
                assert_eq!(local.state(), &State::Ended(EndReason::LocalHangup));
                assert!(!remote
                    .handle(Input::HangupReceived, now)
                    .unwrap()
                    .contains(&Output::SendHangup));
                assert_eq!(remote.state(), &State::Ended(EndReason::RemoteHangup));
            }
        }
    }

    #[test]
    fn offer_verdicts_busy_and_glare() {
        let now = t0();
        let (small, big) = ([1u8; 16], [2u8; 16]);
        assert_eq!(offer_verdict(None, false, &small), OfferVerdict::Ring);
        for word in ["idle", "ended"] {
            let m = machine_in(Role::Caller, word, now).unwrap();
            assert_eq!(
                offer_verdict(Some((&m, &small)), true, &big),
                OfferVerdict::Ring
            );
        }
        // both sides dial each other: exactly one keeps its call
        let alice = machine_in(Role::Caller, "ringing", now).unwrap();
        let bob = alice.clone();
        let a = offer_verdict(Some((&alice, &small)), true, &big);
        let b = offer_verdict(Some((&bob, &big)), true, &small);
        assert_eq!(a, OfferVerdict::GlareTakeTheirs);
        assert_eq!(b, OfferVerdict::GlareKeepOurs);
        // a third party calling while we dial, or anyone while we are in a call: busy
        assert_eq!(
            offer_verdict(Some((&alice, &small)), false, &big),
            OfferVerdict::Busy
        );
        for (role, word) in [
            (Role::Caller, "connecting"),
            (Role::Caller, "connected"),
            (Role::Callee, "incoming"),
            (Role::Callee, "connecting"),
            (Role::Callee, "connected"),
        ] {
            let m = machine_in(role, word, now).unwrap();
            for same in [false, true] {
                assert_eq!(
                    offer_verdict(Some((&m, &small)), same, &big),
                    OfferVerdict::Busy,
                    "{role:?} {word}"
                );
            }
        }
        let m = machine_in(Role::Caller, "ringing", now).unwrap();
        assert_eq!(
            offer_verdict(Some((&m, &small)), true, &small),
            OfferVerdict::GlareKeepOurs
        );
    }

    /// Glare played out on two machines with a fake clock: the loser's call ends `Superseded`
    /// without a hangup on the wire, the loser accepts the winner's call, both connect.
    #[test]
    fn glare_played_out_ends_in_one_call() {
        let now = t0();
        let (a_id, b_id) = ([3u8; 16], [9u8; 16]);
        let mut a_out = CallMachine::new(Role::Caller);
        let mut b_out = CallMachine::new(Role::Caller);
        a_out.handle(Input::Dial, now).unwrap();
        b_out.handle(Input::Dial, now).unwrap();
        // each receives the other's offer
        let av = offer_verdict(Some((&a_out, &a_id)), true, &b_id);
        let bv = offer_verdict(Some((&b_out, &b_id)), true, &a_id);
        assert_eq!(
            (av, bv),
            (OfferVerdict::GlareTakeTheirs, OfferVerdict::GlareKeepOurs)
        );
        assert_eq!(
            a_out.handle(Input::GlareLost, now).unwrap(),
            vec![Output::StopMedia]
        );
        let mut a_in = CallMachine::new(Role::Callee);
        a_in.handle(Input::OfferReceived, now).unwrap();
        assert_eq!(
            a_in.handle(Input::Accept, now).unwrap(),
            vec![Output::SendAnswer]
        );
        b_out.handle(Input::AnswerReceived, now).unwrap();
        a_in.handle(Input::MediaConnected, now).unwrap();
        b_out.handle(Input::MediaConnected, now).unwrap();
        assert_eq!(a_in.state(), &State::Connected);
        assert_eq!(b_out.state(), &State::Connected);
        assert_eq!(a_out.state(), &State::Ended(EndReason::Superseded));
    }
}
