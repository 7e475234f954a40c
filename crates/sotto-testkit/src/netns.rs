//! A small internet in network namespaces, for NAT traversal tests (root only):
//!
//! ```text
//!   home A 192.168.10.2 ── lan 192.168.10.1 [router A] wan 203.0.113.2 ─┐
//!                                                                      ├─ br0 203.0.113.1 [public]
//!   home B 192.168.20.2 ── lan 192.168.20.1 [router B] wan 203.0.113.3 ─┘   signaling, coturn
//! ```
//!
//! The public namespace's default route leads to a gateway nobody answers for, so packets to
//! addresses nobody here has (a peer's LAN address) vanish as they would online.
//! Each router masquerades its home behind its WAN address (nftables) and, like a real home
//! router, drops unsolicited input from the WAN (`ct state new`, forwarded or to itself).
//! Without that drop a peer's early connectivity check claims the router's port in conntrack
//! and hole punching fails, which no real router does. [`Nat::Cone`] keeps the source port for
//! every destination (endpoint-independent mapping); [`Nat::Symmetric`] (`masquerade
//! fully-random`) maps each destination to a random port, so only TURN gets through.
//!
//! Every namespace name carries this process's id and a counter, so parallel tests do not
//! collide; [`NatLab`] deletes them all when dropped, however the test ends. Nothing leaves the
//! namespaces: the public network is a bridge in a namespace of its own.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The public side's own address (signaling server, coturn).
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Router A's WAN (public) address.
pub const ROUTER_A_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Router B's WAN (public) address.
pub const ROUTER_B_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
/// The public side's default gateway: no one has it, so what is sent there is lost.
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// Home A's LAN address.
pub const HOME_A_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 2);
/// Home B's LAN address.
pub const HOME_B_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 2);

/// How a router maps its home's outgoing flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping (plain masquerade keeps the source port).
    Cone,
    /// Endpoint-dependent mapping (`masquerade fully-random`).
    Symmetric,
    /// Endpoint-independent mapping, and no UDP leaves the home at all (a network that lets
    /// only TCP out; what it drops is counted in `udp_blocked`).
    UdpBlocked,
}

/// Why the lab cannot be built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Network namespaces need root.
    NotRoot,
    /// A program is missing.
    Missing(&'static str),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotRoot => f.write_str("not running as root (network namespaces need it)"),
            Unavailable::Missing(p) => write!(f, "`{p}` is not installed"),
        }
    }
}

/// Whether namespaces, nftables and coturn are available (root, `ip`, `nft`, `ss`,
/// `turnserver`).
pub fn available() -> Result<(), Unavailable> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Err(Unavailable::NotRoot);
    }
    for (prog, arg) in [
        ("ip", "-V"),
        ("nft", "--version"),
        ("ss", "-V"),
        ("turnserver", "--version"),
    ] {
        let ok = Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Err(Unavailable::Missing(prog));
        }
    }
    Ok(())
}

static LABS: AtomicU32 = AtomicU32::new(0);

/// The namespaces of one lab; deleted on drop.
pub struct NatLab {
    /// The public namespace (signaling server, coturn).
    pub public: String,
    /// Router A's namespace.
    pub router_a: String,
    /// Router B's namespace.
    pub router_b: String,
    /// Home A's namespace (the caller).
    pub home_a: String,
    /// Home B's namespace (the callee).
    pub home_b: String,
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A router's ruleset: masquerade on the WAN, unsolicited WAN input dropped, and a counter of
/// what it forwards into its home from the other router's WAN address (`from_peer_nat`).
fn router_rules(nat: Nat, peer_wan: Ipv4Addr) -> String {
    let random = match nat {
        Nat::Cone | Nat::UdpBlocked => "",
        Nat::Symmetric => " fully-random",
    };
    let udp = match nat {
        Nat::UdpBlocked => {
            "\n    oifname \"wan\" meta l4proto udp counter name \"udp_blocked\" drop"
        }
        Nat::Cone | Nat::Symmetric => "",
    };
    format!(
        r#"table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade{random}
  }}
}}
table inet filter {{
  counter from_peer_nat {{ }}
  counter udp_blocked {{ }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state new drop{udp}
    iifname "wan" ip saddr {peer_wan} counter name "from_peer_nat"
  }}
}}
"#
    )
}

impl NatLab {
    /// Builds the lab with both routers doing `nat`.
    ///
    /// # Panics
    /// Any `ip`/`nft` step fails (the namespaces made so far are deleted).
    pub fn new(nat: Nat) -> NatLab {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let id = format!("sotto{}-{n}", std::process::id());
        let lab = NatLab {
            public: format!("{id}-pub"),
            router_a: format!("{id}-ra"),
            router_b: format!("{id}-rb"),
            home_a: format!("{id}-ha"),
            home_b: format!("{id}-hb"),
        };
        for ns in lab.all() {
            run(&["ip", "netns", "add", ns], None);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"], None);
        }
        let p = lab.public.as_str();
        run(
            &["ip", "-n", p, "link", "add", "br0", "type", "bridge"],
            None,
        );
        run(
            &[
                "ip",
                "-n",
                p,
                "addr",
                "add",
                &format!("{PUBLIC_IP}/24"),
                "dev",
                "br0",
            ],
            None,
        );
        run(&["ip", "-n", p, "link", "set", "br0", "up"], None);
        // The rest of the internet: a default route, as a public host has, via a gateway nobody
        // answers for (packets to it vanish). Without one, coturn's send to a peer's private
        // (unroutable) address fails at once (ENETUNREACH) and coturn closes that client's
        // whole allocation.
        run(
            &[
                "ip",
                "-n",
                p,
                "route",
                "add",
                "default",
                "via",
                &INTERNET_GATEWAY.to_string(),
            ],
            None,
        );
        for (router, home, wan, lan_net, port, peer_wan) in [
            (
                &lab.router_a,
                &lab.home_a,
                ROUTER_A_WAN,
                10,
                "pa",
                ROUTER_B_WAN,
            ),
            (
                &lab.router_b,
                &lab.home_b,
                ROUTER_B_WAN,
                20,
                "pb",
                ROUTER_A_WAN,
            ),
        ] {
            let (r, h) = (router.as_str(), home.as_str());
            // WAN: router <-> public bridge
            run(
                &[
                    "ip", "-n", r, "link", "add", "wan", "type", "veth", "peer", "name", port,
                    "netns", p,
                ],
                None,
            );
            run(
                &["ip", "-n", p, "link", "set", port, "master", "br0", "up"],
                None,
            );
            run(
                &[
                    "ip",
                    "-n",
                    r,
                    "addr",
                    "add",
                    &format!("{wan}/24"),
                    "dev",
                    "wan",
                ],
                None,
            );
            run(&["ip", "-n", r, "link", "set", "wan", "up"], None);
            // LAN: home <-> router
            run(
                &[
                    "ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "lan",
                    "netns", r,
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "-n",
                    r,
                    "addr",
                    "add",
                    &format!("192.168.{lan_net}.1/24"),
                    "dev",
                    "lan",
                ],
                None,
            );
            run(&["ip", "-n", r, "link", "set", "lan", "up"], None);
            run(
                &[
                    "ip",
                    "-n",
                    h,
                    "addr",
                    "add",
                    &format!("192.168.{lan_net}.2/24"),
                    "dev",
                    "eth0",
                ],
                None,
            );
            run(&["ip", "-n", h, "link", "set", "eth0", "up"], None);
            run(
                &[
                    "ip",
                    "-n",
                    h,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("192.168.{lan_net}.1"),
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "netns",
                    "exec",
                    r,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
                None,
            );
            run(
                &["ip", "netns", "exec", r, "nft", "-f", "-"],
                Some(&router_rules(nat, peer_wan)),
            );
        }
        lab
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.public,
            &self.router_a,
            &self.router_b,
            &self.home_a,
            &self.home_b,
        ]
    }

    /// `program` to be run inside namespace `ns` (`ip netns exec NS PROGRAM`).
    pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Bytes router `router` forwarded into its home from the other router's WAN address: media
    /// that went straight from NAT to NAT.
    pub fn bytes_from_peer_nat(&self, router: &str) -> u64 {
        counter_bytes(router, "from_peer_nat")
    }

    /// Bytes of UDP router `router` dropped on their way out ([`Nat::UdpBlocked`]; 0 otherwise).
    pub fn udp_blocked_bytes(&self, router: &str) -> u64 {
        counter_bytes(router, "udp_blocked")
    }

    /// Makes `names` resolve to the public address in every namespace of the lab (DNS as a
    /// deployment has it): `ip netns exec` mounts `/etc/netns/NS/hosts` over `/etc/hosts`.
    /// Removed with the lab.
    pub fn name_public_host(&self, names: &[&str]) {
        let hosts = format!(
            "127.0.0.1 localhost\n::1 localhost\n{PUBLIC_IP} {}\n",
            names.join(" ")
        );
        for ns in self.all() {
            let dir = std::path::Path::new("/etc/netns").join(ns);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("hosts"), &hosts).unwrap();
        }
    }

    /// The public address as an [`IpAddr`].
    pub fn public_ip() -> IpAddr {
        IpAddr::V4(PUBLIC_IP)
    }
}

/// The byte count of nftables counter `name` in router `router`'s `inet filter` table.
fn counter_bytes(router: &str, name: &str) -> u64 {
    let o = run(
        &[
            "ip", "netns", "exec", router, "nft", "list", "counter", "inet", "filter", name,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "bytes")
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {text}"))
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
