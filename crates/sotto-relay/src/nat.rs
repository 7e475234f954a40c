//! A relay behind 1:1 NAT (a cloud VM: a private address on the interface, a public one mapped to
//! it): the host candidates of its offer advertise the public address (`--public-ip`).
//!
//! webrtc-rs 0.21.1 has `SettingEngineBuilder::with_nat_1to1_ips`, but nothing reads the setting
//! (its host candidates always carry the socket's address), so the relay rewrites its offer
//! here, the one place it does. The relay's ICE agent keeps its candidate on the private
//! address: checks sent to the public address arrive, translated, on that socket.

use std::net::IpAddr;

/// Why `--public-ip` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicIpError {
    /// The media bind address is a wildcard: the public address must map to one interface
    /// address (`--bind-ip`).
    #[error("--public-ip needs --bind-ip to be the interface address it maps to, not a wildcard")]
    WildcardBind,
    /// Public and bind addresses of different families (IPv4 and IPv6).
    #[error("--public-ip and --bind-ip must both be IPv4 or both IPv6")]
    Family,
    /// Unspecified, multicast or broadcast: no participant can send media there.
    #[error("--public-ip must be a unicast address participants can reach")]
    NotUnicast,
}

/// Checks that `public` can stand for `bind` in the relay's host candidates.
///
/// # Errors
/// [`PublicIpError`].
pub fn check_public_ip(bind: IpAddr, public: IpAddr) -> Result<(), PublicIpError> {
    if bind.is_unspecified() {
        return Err(PublicIpError::WildcardBind);
    }
    if bind.is_ipv4() != public.is_ipv4() {
        return Err(PublicIpError::Family);
    }
    let broadcast = matches!(public, IpAddr::V4(v4) if v4.is_broadcast());
    if public.is_unspecified() || public.is_multicast() || broadcast {
        return Err(PublicIpError::NotUnicast);
    }
    Ok(())
}

/// `sdp` with the address of every host candidate on `bind` replaced by `public`; every other
/// line unchanged, byte for byte.
pub(crate) fn advertise_public_ip(sdp: &str, bind: IpAddr, public: IpAddr) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        match rewrite_candidate(line, bind, public) {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
    }
    out
}

/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ host ...`
/// on `bind`, with `public` as its address; `None` for any other line.
fn rewrite_candidate(line: &str, bind: IpAddr, public: IpAddr) -> Option<String> {
    let body = line.strip_prefix("a=candidate:")?;
    let content = body.trim_end_matches(['\r', '\n']);
    let ending = &body[content.len()..];
    let fields: Vec<&str> = content.split(' ').collect();
    let is_host = fields.get(6) == Some(&"typ") && fields.get(7) == Some(&"host");
    let on_bind = fields.get(4).and_then(|a| a.parse::<IpAddr>().ok()) == Some(bind);
    if !(is_host && on_bind) {
        return None;
    }
    let public = public.to_string();
    let mut fields = fields;
    fields[4] = &public;
    Some(format!("a=candidate:{}{ending}", fields.join(" ")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 0.0.0.0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2130706431 10.0.0.5 40001 typ host\r\n\
        a=candidate:2 1 udp 2130706431 10.0.0.6 40002 typ host\r\n\
        a=candidate:3 1 udp 1694498815 198.51.100.1 40001 typ srflx raddr 10.0.0.5 rport 40001\r\n\
        a=end-of-candidates\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_candidates_on_the_bind_address_advertise_the_public_one() {
        let out = advertise_public_ip(OFFER, ip("10.0.0.5"), ip("203.0.113.7"));
        let expected = OFFER.replace(
            "2130706431 10.0.0.5 40001 typ host",
            "2130706431 203.0.113.7 40001 typ host",
        );
        assert_eq!(out, expected);
        // another interface's and non-host candidates are untouched (the srflx's raddr too)
        assert!(out.contains("10.0.0.6 40002 typ host"));
        assert!(out.contains("typ srflx raddr 10.0.0.5"));
    }

    #[test]
    fn bare_newlines_and_odd_lines_pass_through() {
        let sdp = "a=candidate:1 1 udp 1 10.0.0.5 1 typ host\na=candidate:short\n";
        assert_eq!(
            advertise_public_ip(sdp, ip("10.0.0.5"), ip("203.0.113.7")),
            "a=candidate:1 1 udp 1 203.0.113.7 1 typ host\na=candidate:short\n"
        );
    }

    #[test]
    fn unusable_public_addresses_are_refused_by_kind() {
        let v4 = ip("10.0.0.5");
        assert_eq!(check_public_ip(v4, ip("203.0.113.7")), Ok(()));
        assert_eq!(
            check_public_ip(ip("0.0.0.0"), ip("203.0.113.7")),
            Err(PublicIpError::WildcardBind)
        );
        assert_eq!(
            check_public_ip(v4, ip("2001:db8::1")),
            Err(PublicIpError::Family)
        );
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255"] {
            assert_eq!(
                check_public_ip(v4, ip(bad)),
                Err(PublicIpError::NotUnicast),
                "{bad}"
            );
        }
    }
}
