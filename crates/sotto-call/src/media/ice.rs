//! ICE policy: the candidate types a path is made of ([`CandidateType`]), how long ICE waits
//! before it settles for a worse kind of pair (the acceptance waits given to webrtc-rs), and what
//! a relay candidate reveals in privacy (relay-only) mode ([`hide_related_address`]).
//!
//! One client configuration serves every network: STUN and TURN servers together, so ICE
//! gathers host, server-reflexive and relay candidates and checks all pairs at once. The
//! controlling agent nominates the best *valid* pair once the waits of both its candidates'
//! types have passed since checks started: a relay pair that is valid early still waits
//! [`RELAY_ACCEPTANCE_WAIT`], in which a direct pair that works (hole punched through cone
//! NATs) becomes valid and wins on priority. When nothing direct works (symmetric NATs), the
//! relay pair is nominated at that wait.

use std::time::Duration;

use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::transport::RTCIceCandidateType;

/// The kind of an ICE candidate (RFC 8445 §5.1.1.1), one side of a candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// An address of a local interface.
    Host,
    /// Our address as a STUN server saw it (the NAT's public side).
    ServerReflexive,
    /// An address learnt from a connectivity check (a NAT mapping no server told us about).
    PeerReflexive,
    /// An address allocated on a TURN server: media goes through it.
    Relay,
}

impl CandidateType {
    /// The SDP / stats token: `host`, `srflx`, `prflx`, `relay`.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relay => "relay",
        }
    }

    /// Whether media on a pair with this candidate goes through a TURN server.
    pub fn is_relay(self) -> bool {
        self == CandidateType::Relay
    }

    pub(super) fn from_webrtc(t: RTCIceCandidateType) -> Option<Self> {
        match t {
            RTCIceCandidateType::Host => Some(CandidateType::Host),
            RTCIceCandidateType::Srflx => Some(CandidateType::ServerReflexive),
            RTCIceCandidateType::Prflx => Some(CandidateType::PeerReflexive),
            RTCIceCandidateType::Relay => Some(CandidateType::Relay),
            _ => None,
        }
    }
}

impl std::fmt::Display for CandidateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token that is not a candidate type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ICE candidate type (host, srflx, prflx, relay)")]
pub struct UnknownCandidateType;

impl std::str::FromStr for CandidateType {
    type Err = UnknownCandidateType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(CandidateType::Host),
            "srflx" => Ok(CandidateType::ServerReflexive),
            "prflx" => Ok(CandidateType::PeerReflexive),
            "relay" => Ok(CandidateType::Relay),
            _ => Err(UnknownCandidateType),
        }
    }
}

/// How long a valid pair with a server-reflexive candidate waits before it may be nominated
/// (webrtc-rs default: 500 ms). Host pairs do not wait.
pub const SRFLX_ACCEPTANCE_WAIT: Duration = Duration::from_millis(300);
/// How long a valid pair with a peer-reflexive candidate waits before it may be nominated
/// (webrtc-rs default: 1 s). Through a NAT the peer's checks often arrive before its trickled
/// server-reflexive candidate, so a direct pair starts out peer-reflexive.
pub const PRFLX_ACCEPTANCE_WAIT: Duration = Duration::from_millis(500);
/// How long a valid relay pair waits before it may be nominated (webrtc-rs default: 2 s): the
/// time a direct pair gets to become valid and win. Long enough for a trickled
/// server-reflexive candidate to cross the signaling server and for hole punching to answer
/// (a few check intervals), short enough that a call that needs TURN is not kept waiting.
pub const RELAY_ACCEPTANCE_WAIT: Duration = Duration::from_millis(1000);

/// The webrtc-rs settings with our acceptance waits.
pub(super) fn setting_engine() -> SettingEngine {
    SettingEngineBuilder::new()
        .with_srflx_acceptance_min_wait(Some(SRFLX_ACCEPTANCE_WAIT))
        .with_prflx_acceptance_min_wait(Some(PRFLX_ACCEPTANCE_WAIT))
        .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE_WAIT))
        .build()
}

/// A candidate attribute (`candidate:… typ relay raddr 192.168.1.2 rport 5000 …`, with or
/// without the `a=` / `candidate:` prefix) with its related address and port replaced by
/// `0.0.0.0` / `::` and `0`, as browsers do for privacy. The related address of a relay
/// candidate is the host (LAN) address the allocation was made from; the peer needs it for
/// nothing (RFC 8445 uses it for diagnostics only), so in relay-only mode it is not sent. Other
/// candidate types, and attributes without `raddr`, are returned unchanged.
pub fn hide_related_address(candidate: &str) -> String {
    let tokens: Vec<&str> = candidate.split(' ').collect();
    let is_relay = tokens
        .windows(2)
        .any(|w| w[0] == "typ" && w[1] == CandidateType::Relay.as_str());
    if !is_relay {
        return candidate.to_owned();
    }
    let mut out: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        match (tokens[i], tokens.get(i + 1)) {
            ("raddr", Some(addr)) => {
                out.push("raddr");
                out.push(if addr.contains(':') { "::" } else { "0.0.0.0" });
                i += 2;
            }
            ("rport", Some(_)) => {
                out.push("rport");
                out.push("0");
                i += 2;
            }
            (t, _) => {
                out.push(t);
                i += 1;
            }
        }
    }
    out.join(" ")
}

/// An SDP with [`hide_related_address`] applied to each of its `a=candidate` lines.
pub fn hide_related_addresses_in_sdp(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\r', '\n']);
            if body.starts_with("a=candidate:") {
                let end = &line[body.len()..];
                format!("{}{end}", hide_related_address(body))
            } else {
                line.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn relay_candidate_loses_its_related_address() {
        let c = "candidate:1 1 udp 16777215 203.0.113.5 50000 typ relay raddr 192.168.10.2 rport 41234 generation 0";
        assert_eq!(
            hide_related_address(c),
            "candidate:1 1 udp 16777215 203.0.113.5 50000 typ relay raddr 0.0.0.0 rport 0 generation 0"
        );
        let v6 = "candidate:1 1 udp 1 2001:db8::5 50000 typ relay raddr fd00::2 rport 4";
        assert_eq!(
            hide_related_address(v6),
            "candidate:1 1 udp 1 2001:db8::5 50000 typ relay raddr :: rport 0"
        );
    }

    #[test]
    fn other_candidates_are_untouched() {
        for c in [
            "candidate:1 1 udp 2130706431 192.168.10.2 41234 typ host",
            "candidate:2 1 udp 1694498815 198.51.100.7 41234 typ srflx raddr 192.168.10.2 rport 41234",
            "candidate:1 1 udp 1 203.0.113.5 50000 typ relay",
            "",
        ] {
            assert_eq!(hide_related_address(c), c);
        }
    }

    #[test]
    fn sdp_candidate_lines_are_rewritten_and_the_rest_kept() {
        let sdp = "v=0\r\na=candidate:1 1 udp 1 203.0.113.5 50000 typ relay raddr 10.0.0.2 rport 9\r\na=end-of-candidates\r\n";
        assert_eq!(
            hide_related_addresses_in_sdp(sdp),
            "v=0\r\na=candidate:1 1 udp 1 203.0.113.5 50000 typ relay raddr 0.0.0.0 rport 0\r\na=end-of-candidates\r\n"
        );
    }

    #[test]
    fn candidate_types_round_trip() {
        for t in [
            CandidateType::Host,
            CandidateType::ServerReflexive,
            CandidateType::PeerReflexive,
            CandidateType::Relay,
        ] {
            assert_eq!(t.as_str().parse::<CandidateType>(), Ok(t));
        }
        assert_eq!("turn".parse::<CandidateType>(), Err(UnknownCandidateType));
    }

    #[test]
    fn relay_waits_longer_than_any_direct_pair() {
        assert!(RELAY_ACCEPTANCE_WAIT > SRFLX_ACCEPTANCE_WAIT);
        assert!(RELAY_ACCEPTANCE_WAIT > PRFLX_ACCEPTANCE_WAIT);
    }
}
