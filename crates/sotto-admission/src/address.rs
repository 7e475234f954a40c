//! Which network addresses count as one for per-address limits (the signaling server's
//! registrations, the relay's rooms).

use std::net::{IpAddr, Ipv6Addr};

/// Bits of an IPv6 address that identify one customer for per-address limits: most providers
/// hand a customer a /56 or a /48, so a host could otherwise rotate through its own /64s.
pub const IPV6_PREFIX_BITS: u32 = 56;

/// The key `ip` is counted under: an IPv4 address as itself, an IPv4-mapped IPv6 address as
/// that IPv4 address, any other IPv6 address by its [`IPV6_PREFIX_BITS`] prefix.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX << (128 - IPV6_PREFIX_BITS);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(s: &str) -> IpAddr {
        address_key(s.parse().unwrap())
    }

    #[test]
    fn v4_as_itself_v6_per_prefix_mapped_as_v4() {
        assert_eq!(key("192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:0:1::1"), key("2001:db8:0:ff:1:2:3:4"));
        assert_ne!(key("2001:db8:0:1::1"), key("2001:db8:0:100::1"));
        assert_eq!(key("::ffff:192.0.2.9"), key("192.0.2.9"));
    }
}
