//! The relay's media UDP ports: an optional range ([`UdpPortRange`], `--udp-ports MIN-MAX`) and
//! the leases that hand its ports out, one per participant's peer connection, so a firewall
//! can open exactly that range.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::lock;

/// An inclusive range of UDP ports, `min..=max`, with `1 <= min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPortRange {
    min: u16,
    max: u16,
}

/// Why a UDP port range was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortRangeError {
    /// Not `MIN-MAX` with two port numbers (0-65535).
    #[error("a UDP port range is MIN-MAX, two port numbers such as 40000-40999")]
    Malformed,
    /// Port 0 (which means "any port" to the operating system) as a bound.
    #[error("UDP port 0 cannot bound a range (ports are 1-65535)")]
    Zero,
    /// `MIN` greater than `MAX`.
    #[error("UDP port range {min}-{max}: MIN is greater than MAX")]
    Reversed {
        /// The lower bound given.
        min: u16,
        /// The upper bound given.
        max: u16,
    },
}

impl UdpPortRange {
    /// `min..=max`.
    ///
    /// # Errors
    /// [`PortRangeError::Zero`] for a bound of 0, [`PortRangeError::Reversed`] for
    /// `min > max`.
    pub fn new(min: u16, max: u16) -> Result<Self, PortRangeError> {
        if min == 0 || max == 0 {
            return Err(PortRangeError::Zero);
        }
        if min > max {
            return Err(PortRangeError::Reversed { min, max });
        }
        Ok(UdpPortRange { min, max })
    }

    /// The lowest port.
    pub fn min(&self) -> u16 {
        self.min
    }

    /// The highest port.
    pub fn max(&self) -> u16 {
        self.max
    }

    /// How many ports: how many participants the relay can hold at once (each has one).
    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    /// Never: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }
}

impl FromStr for UdpPortRange {
    type Err = PortRangeError;

    /// `MIN-MAX`, e.g. `40000-40999` (`40000-40000` is one port).
    fn from_str(s: &str) -> Result<Self, PortRangeError> {
        let (min, max) = s.trim().split_once('-').ok_or(PortRangeError::Malformed)?;
        let port = |p: &str| p.parse::<u16>().map_err(|_| PortRangeError::Malformed);
        UdpPortRange::new(port(min)?, port(max)?)
    }
}

impl fmt::Display for UdpPortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// The ports the relay's peer connections bind: any (the OS picks) or those of a range, each
/// leased to one connection at a time.
pub(crate) struct MediaPorts {
    range: Option<UdpPortRange>,
    state: Mutex<Leased>,
}

struct Leased {
    in_use: HashSet<u16>,
    /// Where the next search starts: just after the port last handed out, so a port just
    /// released (its socket possibly still closing) is the last to be reused.
    next: u16,
}

impl MediaPorts {
    pub(crate) fn new(range: Option<UdpPortRange>) -> Self {
        MediaPorts {
            state: Mutex::new(Leased {
                in_use: HashSet::new(),
                next: range.map_or(0, |r| r.min),
            }),
            range,
        }
    }

    /// A port for one peer connection: 0 (any) without a range; else the first port of the
    /// range not leased, searching from where the last search ended. `None` when every port of
    /// the range is leased.
    pub(crate) fn lease(self: &Arc<Self>) -> Option<PortLease> {
        let Some(range) = self.range else {
            return Some(PortLease {
                ports: self.clone(),
                port: 0,
            });
        };
        let mut s = lock(&self.state);
        let mut p = s.next;
        for _ in 0..range.len() {
            let candidate = p;
            p = if p >= range.max { range.min } else { p + 1 };
            if s.in_use.insert(candidate) {
                s.next = p;
                return Some(PortLease {
                    ports: self.clone(),
                    port: candidate,
                });
            }
        }
        None
    }

    /// Whether ports come from a range.
    pub(crate) fn ranged(&self) -> bool {
        self.range.is_some()
    }
}

/// One port leased to one peer connection, given back when dropped (after the connection is
/// closed).
pub(crate) struct PortLease {
    ports: Arc<MediaPorts>,
    port: u16,
}

impl PortLease {
    /// The port to bind (0: any).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if self.port != 0 {
            lock(&self.ports.state).in_use.remove(&self.port);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_parse_and_bad_ones_are_refused_by_kind() {
        let r: UdpPortRange = "40000-40999".parse().unwrap();
        assert_eq!((r.min(), r.max(), r.len()), (40000, 40999, 1000));
        assert_eq!(r.to_string(), "40000-40999");
        assert_eq!("7-7".parse::<UdpPortRange>().unwrap().len(), 1);
        assert!(r.contains(40000) && r.contains(40999) && !r.contains(41000));
        assert_eq!(
            "1-65535".parse::<UdpPortRange>().unwrap().len(),
            usize::from(u16::MAX)
        );
        for bad in [
            "",
            "40000",
            "40000-",
            "-40000",
            "a-b",
            "40000-70000",
            "1-2-3",
            "-1-5",
        ] {
            assert_eq!(
                bad.parse::<UdpPortRange>(),
                Err(PortRangeError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!("0-100".parse::<UdpPortRange>(), Err(PortRangeError::Zero));
        assert_eq!(
            "500-400".parse::<UdpPortRange>(),
            Err(PortRangeError::Reversed { min: 500, max: 400 })
        );
    }

    #[test]
    fn leases_take_each_port_once_and_give_it_back() {
        let ports = Arc::new(MediaPorts::new(Some(UdpPortRange::new(10, 12).unwrap())));
        let a = ports.lease().unwrap();
        let b = ports.lease().unwrap();
        let c = ports.lease().unwrap();
        assert_eq!((a.port(), b.port(), c.port()), (10, 11, 12));
        assert!(ports.lease().is_none(), "range exhausted");
        drop(b);
        let d = ports.lease().unwrap();
        assert_eq!(d.port(), 11);
        drop(a);
        drop(c);
        // the search goes on from after the last port handed out
        assert_eq!(ports.lease().unwrap().port(), 12);
    }

    #[test]
    fn without_a_range_every_lease_is_any_port() {
        let ports = Arc::new(MediaPorts::new(None));
        let leases: Vec<_> = (0..3).map(|_| ports.lease().unwrap()).collect();
        assert!(leases.iter().all(|l| l.port() == 0));
        assert!(!ports.ranged());
    }
}
