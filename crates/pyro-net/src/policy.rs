//! Which destinations a guest may reach: the network policies and their allow lists.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A VM's network, as callers name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkPolicy {
    /// No network device at all.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// Outbound TCP to public addresses (or only to the allow list) and DNS through pyro.
    #[serde(rename = "egress")]
    Egress,
    /// `egress`, and guest ports may be published on the host's 127.0.0.1.
    #[serde(rename = "egress+published-ports")]
    EgressPublishedPorts,
}

impl NetworkPolicy {
    pub const NAMES: [&'static str; 3] = ["off", "egress", "egress+published-ports"];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::Off => "off",
            NetworkPolicy::Egress => "egress",
            NetworkPolicy::EgressPublishedPorts => "egress+published-ports",
        }
    }

    /// Whether the VM gets a network device.
    pub fn has_network(self) -> bool {
        self != NetworkPolicy::Off
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(NetworkPolicy::Off),
            "egress" => Ok(NetworkPolicy::Egress),
            "egress+published-ports" => Ok(NetworkPolicy::EgressPublishedPorts),
            other => Err(format!(
                "unknown network policy '{other}'; expected one of: {}",
                NetworkPolicy::NAMES.join(", ")
            )),
        }
    }
}

/// A destination the caller allows: a host name or IPv4 address, and optionally one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowHost {
    pub host: String,
    pub port: Option<u16>,
}

impl AllowHost {
    fn ip(&self) -> Option<Ipv4Addr> {
        self.host.parse().ok()
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for AllowHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl FromStr for AllowHost {
    type Err = String;

    /// `HOST[:PORT]`: a DNS name or an IPv4 address, then an optional port.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("'{text}' is not HOST[:PORT]: {why}");
        if text.starts_with('[') || text.matches(':').count() > 1 {
            return Err(bad(
                "IPv6 destinations are not supported (the guest network is IPv4)",
            ));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match host.parse::<Ipv4Addr>() {
            Ok(ip) if is_loopback_or_unspecified(ip) => return Err(names_the_host(text)),
            Ok(_) => {}
            Err(_) if is_dns_name(&host) => {}
            Err(_) => {
                return Err(bad(
                    "the host must be a DNS name (letters, digits, '-', '.') or an IPv4 address",
                ))
            }
        }
        Ok(AllowHost { host, port })
    }
}

impl AllowHost {
    /// Refuses an entry that names one of the host's own addresses (which no guest reaches, so
    /// allowing it would only mislead).
    pub fn check_not_the_host(&self) -> Result<(), String> {
        match self.ip() {
            Some(ip) if host_networks().iter().any(|&(own, _)| own == ip) => {
                Err(names_the_host(&self.to_string()))
            }
            _ => Ok(()),
        }
    }
}

fn names_the_host(text: &str) -> String {
    format!(
        "'{text}' is the host itself, which no guest reaches (a guest's 127.0.0.1 is its own); \
         run that service on another machine or in a network namespace and allow its address"
    )
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// What a networked VM may reach. An empty allow list means "any public address".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRules {
    #[serde(default)]
    pub allow: Vec<AllowHost>,
}

/// Why a destination is refused (`None`: allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host itself: loopback, or one of its own addresses.
    Host,
    /// Link-local, private and other special-purpose ranges, and the networks the host is on.
    SpecialRange,
    /// Not in the caller's allow list.
    NotAllowed,
}

/// IPv4 ranges no guest reaches unless the caller allows a destination in them by name or address:
/// private networks, shared address space, link-local (cloud metadata), benchmarking, multicast,
/// reserved and broadcast addresses.
pub fn is_special(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
}

/// Addresses that are the host itself, which no guest ever reaches, allowed or not: `0.0.0.0/8`,
/// loopback, and the host's own interface addresses.
fn is_loopback_or_unspecified(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.octets()[0] == 0
}

/// The host's own IPv4 networks (address and prefix length), read from its interfaces.
pub fn host_networks() -> Vec<(Ipv4Addr, u8)> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: cursor points into the list getifaddrs returned, which stays valid until freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: both pointers are non-null sockaddrs; for AF_INET they are sockaddr_in.
        unsafe {
            if (*entry.ifa_addr).sa_family as i32 != libc::AF_INET {
                continue;
            }
            let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
            let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let prefix = u32::from_be(mask.sin_addr.s_addr).count_ones() as u8;
            found.push((ip, prefix));
        }
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn in_network(ip: Ipv4Addr, network: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - prefix.min(32) as u32)
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// How long the host's own addresses and resolved allowed names are trusted before a fresh look.
const REFRESH: Duration = Duration::from_secs(10);

/// The policy of one VM's gateway: its rules plus what it has learnt (the host's networks, the
/// addresses allowed names resolve to).
pub struct Policy {
    rules: EgressRules,
    state: Mutex<PolicyState>,
}

struct PolicyState {
    host_networks: Vec<(Ipv4Addr, u8)>,
    looked_at: Option<Instant>,
    /// Addresses each allowed name was seen to have (from the host's resolver or DNS answers).
    resolved: HashMap<String, Vec<Ipv4Addr>>,
}

impl Policy {
    pub fn new(rules: EgressRules) -> Policy {
        Policy {
            rules,
            state: Mutex::new(PolicyState {
                host_networks: Vec::new(),
                looked_at: None,
                resolved: HashMap::new(),
            }),
        }
    }

    pub fn rules(&self) -> &EgressRules {
        &self.rules
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the guest may open a TCP connection to `dst`.
    pub fn check(&self, dst: SocketAddrV4) -> Option<Refusal> {
        let ip = *dst.ip();
        let (own, on_link) = self.host_relation(ip);
        if is_loopback_or_unspecified(ip) || own {
            return Some(Refusal::Host);
        }
        if self.rules.allow.is_empty() {
            return (is_special(ip) || on_link).then_some(Refusal::SpecialRange);
        }
        let state = self.state();
        let allowed = self.rules.allow.iter().any(|allow| {
            allow.port_matches(dst.port())
                && match allow.ip() {
                    Some(allowed_ip) => allowed_ip == ip,
                    None => state
                        .resolved
                        .get(&allow.host)
                        .is_some_and(|ips| ips.contains(&ip)),
                }
        });
        (!allowed).then_some(Refusal::NotAllowed)
    }

    /// Whether `ip` is one of the host's own addresses, and whether it is on a network the host is on.
    fn host_relation(&self, ip: Ipv4Addr) -> (bool, bool) {
        let mut state = self.state();
        if state.looked_at.is_none_or(|at| at.elapsed() > REFRESH) {
            state.host_networks = host_networks();
            state.looked_at = Some(Instant::now());
        }
        let own = state
            .host_networks
            .iter()
            .any(|&(address, _)| ip == address);
        let on_link = state
            .host_networks
            .iter()
            .any(|&(network, prefix)| in_network(ip, network, prefix));
        (own, on_link)
    }

    /// Whether DNS questions about `name` are answered: every name without an allow list; with
    /// one, only the allowed names (so the list also bounds what DNS can be used for).
    pub fn answers(&self, name: &str) -> bool {
        if self.rules.allow.is_empty() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.rules
            .allow
            .iter()
            .any(|a| a.ip().is_none() && a.host == name)
    }

    /// Records addresses an allowed name has (from a DNS answer the guest got, or the host's own
    /// lookup), so connections to them are allowed.
    pub fn learn(&self, name: &str, ips: &[Ipv4Addr]) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.rules.allow.iter().any(|a| a.host == name) {
            return;
        }
        let mut state = self.state();
        let known = state.resolved.entry(name).or_default();
        for ip in ips {
            if !known.contains(ip) {
                known.push(*ip);
            }
        }
    }

    /// The allowed names (not addresses), to resolve when the gateway starts.
    pub fn allowed_names(&self) -> Vec<String> {
        self.rules
            .allow
            .iter()
            .filter(|a| a.ip().is_none())
            .map(|a| a.host.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(text: &str) -> SocketAddrV4 {
        text.parse().unwrap()
    }

    #[test]
    fn allow_hosts_parse() {
        let ok = [
            ("deb.debian.org", ("deb.debian.org", None)),
            ("Example.COM.:443", ("example.com", Some(443))),
            ("10.1.2.3:8080", ("10.1.2.3", Some(8080))),
            ("localhost", ("localhost", None)),
        ];
        for (text, (host, port)) in ok {
            assert_eq!(
                text.parse::<AllowHost>(),
                Ok(AllowHost {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        }
        for bad in [
            "",
            "a:0",
            "a:70000",
            "a:b",
            "[::1]:80",
            "::1",
            "exa mple",
            "-a.com",
            "1.2.3",
            "a..b",
            "127.0.0.1:8000",
            "127.1.2.3",
            "0.0.0.0:80",
        ] {
            assert!(bad.parse::<AllowHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn without_an_allow_list_only_public_addresses_are_reached() {
        let policy = Policy::new(EgressRules::default());
        for refused in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "10.0.2.2:8765",
            "169.254.169.254:80",
            "172.16.0.1:22",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
        ] {
            assert!(policy.check(dst(refused)).is_some(), "{refused}");
        }
        assert_eq!(policy.check(dst("151.101.2.132:80")), None);
    }

    #[test]
    fn an_allow_list_is_the_only_way_out_and_never_reaches_the_host() {
        let rules = EgressRules {
            allow: vec![
                "10.213.0.2:8000".parse().unwrap(),
                "mirror.example".parse().unwrap(),
            ],
        };
        let policy = Policy::new(rules);
        assert_eq!(policy.check(dst("10.213.0.2:8000")), None);
        assert_eq!(
            policy.check(dst("10.213.0.2:8001")),
            Some(Refusal::NotAllowed)
        );
        assert_eq!(
            policy.check(dst("151.101.2.132:80")),
            Some(Refusal::NotAllowed)
        );
        policy.learn("mirror.example.", &["151.101.2.132".parse().unwrap()]);
        assert_eq!(policy.check(dst("151.101.2.132:80")), None);
        policy.learn("other.example", &["151.101.2.133".parse().unwrap()]);
        assert!(policy.check(dst("151.101.2.133:80")).is_some());
        assert!(policy.answers("MIRROR.example."));
        assert!(!policy.answers("other.example"));
        assert_eq!(policy.check(dst("127.0.0.1:8000")), Some(Refusal::Host));
    }

    #[test]
    fn the_hosts_own_networks_are_refused() {
        let policy = Policy::new(EgressRules::default());
        for (ip, _) in host_networks() {
            assert_eq!(
                policy.check(SocketAddrV4::new(ip, 22)),
                Some(Refusal::Host),
                "{ip}"
            );
        }
    }

    #[test]
    fn policies_parse_by_their_names() {
        for name in NetworkPolicy::NAMES {
            assert_eq!(name.parse::<NetworkPolicy>().unwrap().as_str(), name);
        }
        assert!("on".parse::<NetworkPolicy>().is_err());
    }
}
