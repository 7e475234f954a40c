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

/// How long the caller lets the callee ring.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long media may take to connect after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

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
}
