//! The `[bgp]` section of vipd.toml, its validation, and the per-VIP [`RoutePolicy`].
//!
//! [`BgpConfig`] is what an operator writes: speaker-wide defaults and a `[[bgp.peer]]` list.
//! Syntax (types, unknown keys, malformed communities) is refused by serde with the TOML line;
//! [`BgpConfig::validate`] then reports every semantic problem at once with its field path and
//! what would be allowed. The route a peer gets for a VIP is speaker defaults, then the peer's,
//! then the VIP's [`RoutePolicy`] ([`BgpConfig::route_for`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::attributes::{AsPath, Community, LargeCommunity, MpNextHop};
use crate::fsm::PrefixRoute;
use crate::update::{NextHops, RouteAttributes};

/// The BGP port.
pub const BGP_PORT: u16 = 179;
/// Longest TCP-MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;
/// Most AS_PATH prepends accepted; more is almost always a typo.
pub const MAX_PREPEND: u8 = 16;
/// LOCAL_PREF sent to iBGP peers normally.
pub const DEFAULT_LOCAL_PREF: u32 = 100;
/// LOCAL_PREF sent to iBGP peers while gracefully shutting down (RFC 8326 section 4.2 suggests
/// the lowest).
pub const GRACEFUL_SHUTDOWN_LOCAL_PREF: u32 = 0;

/// The `[bgp]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    /// Our AS number (4-octet).
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Address to accept connections on; no listener when absent and no peer is passive
    /// (then `::`, dual-stack, is used).
    #[serde(default)]
    pub listen_address: Option<IpAddr>,
    /// Port to accept connections on.
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Hold time to propose, in seconds: 0 or 3..=65535.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// First connect-retry delay, in seconds; doubled after each failure.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u32,
    /// Cap of the connect-retry backoff, in seconds.
    #[serde(default = "default_connect_retry_max")]
    pub connect_retry_max: u32,
    /// Seconds between re-announcing with GRACEFUL_SHUTDOWN and withdrawing (RFC 8326).
    #[serde(default = "default_graceful_shutdown_wait")]
    pub graceful_shutdown_wait: u32,
    /// Offer the graceful restart capability (RFC 4724) with this restart time in seconds;
    /// absent = not offered.
    #[serde(default)]
    pub graceful_restart_time: Option<u16>,
    /// IPv4 next hop for IPv4 VIPs: `"self"` (the local address of the session) or an address.
    #[serde(default)]
    pub next_hop_v4: NextHopSetting,
    /// IPv6 next hop for IPv6 VIPs: `"self"` or an address.
    #[serde(default)]
    pub next_hop_v6: NextHopSetting,
    /// Communities on every route, `"ASN:VALUE"`.
    #[serde(default)]
    pub communities: Vec<CommunityValue>,
    /// Large communities on every route, `"GLOBAL:LOCAL1:LOCAL2"`.
    #[serde(default)]
    pub large_communities: Vec<LargeCommunityValue>,
    /// MULTI_EXIT_DISC on every route.
    #[serde(default)]
    pub med: Option<u32>,
    /// Times to prepend our AS towards eBGP peers (0 = path is just our AS).
    #[serde(default)]
    pub as_path_prepend: u8,
    /// The peers.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
}

/// One `[[bgp.peer]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS; equal to `local_as` makes an iBGP session.
    pub remote_as: u32,
    /// Free text shown in summaries.
    #[serde(default)]
    pub description: Option<String>,
    /// Only accept connections from this peer, never connect.
    #[serde(default)]
    pub passive: bool,
    /// The peer's TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Source address for our connections (and the `self` next hop).
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// TCP-MD5 (RFC 2385) key, at most 80 octets.
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and drop segments with TTL below 254.
    #[serde(default)]
    pub ttl_security: bool,
    /// Hold time override, in seconds.
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Families to negotiate; default both.
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
    /// IPv4 next hop override.
    #[serde(default)]
    pub next_hop_v4: Option<NextHopSetting>,
    /// IPv6 next hop override.
    #[serde(default)]
    pub next_hop_v6: Option<NextHopSetting>,
    /// Extra communities for this peer.
    #[serde(default)]
    pub communities: Vec<CommunityValue>,
    /// Extra large communities for this peer.
    #[serde(default)]
    pub large_communities: Vec<LargeCommunityValue>,
    /// MED override for this peer.
    #[serde(default)]
    pub med: Option<u32>,
    /// AS_PATH prepend override for this peer.
    #[serde(default)]
    pub as_path_prepend: Option<u8>,
}

/// An address family of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 unicast.
    Ipv4,
    /// IPv6 unicast.
    Ipv6,
}

/// `"self"` or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NextHopSetting {
    /// The local address of the session, when it is of the prefix's family.
    #[default]
    SelfAddress,
    /// This address.
    Address(IpAddr),
}

impl<'de> Deserialize<'de> for NextHopSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "self" {
            return Ok(NextHopSetting::SelfAddress);
        }
        s.parse().map(NextHopSetting::Address).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid next hop {s:?}: use \"self\" or an IP address"
            ))
        })
    }
}

/// A standard community written `"ASN:VALUE"` (both 0..=65535) or a well-known name
/// (`graceful_shutdown`, `no_export`, `no_advertise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommunityValue(pub Community);

/// A large community written `"GLOBAL:LOCAL1:LOCAL2"` (each 0..=4294967295).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunityValue(pub LargeCommunity);

/// A community that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid community {text:?}: {expected}")]
pub struct CommunityParseError {
    text: String,
    expected: &'static str,
}

impl FromStr for CommunityValue {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = match s.to_ascii_lowercase().as_str() {
            "graceful_shutdown" => Some(Community::GRACEFUL_SHUTDOWN),
            "no_export" => Some(Community::NO_EXPORT),
            "no_advertise" => Some(Community::NO_ADVERTISE),
            _ => None,
        };
        if let Some(c) = named {
            return Ok(CommunityValue(c));
        }
        let err = || CommunityParseError {
            text: s.to_string(),
            expected: "write ASN:VALUE with both parts 0..=65535 (e.g. 65001:100)",
        };
        let (a, v) = s.split_once(':').ok_or_else(err)?;
        let a: u16 = a.trim().parse().map_err(|_| err())?;
        let v: u16 = v.trim().parse().map_err(|_| err())?;
        Ok(CommunityValue(Community::new(a, v)))
    }
}

impl fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 .0 >> 16, self.0 .0 & 0xffff)
    }
}

impl FromStr for LargeCommunityValue {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CommunityParseError {
            text: s.to_string(),
            expected: "write GLOBAL:LOCAL1:LOCAL2 with each part 0..=4294967295",
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [g, l1, l2] = parts.as_slice() else {
            return Err(err());
        };
        let n = |t: &str| t.trim().parse::<u32>().map_err(|_| err());
        Ok(LargeCommunityValue(LargeCommunity {
            global_admin: n(g)?,
            local_data_1: n(l1)?,
            local_data_2: n(l2)?,
        }))
    }
}

impl fmt::Display for LargeCommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "{}:{}:{}",
            c.global_admin, c.local_data_1, c.local_data_2
        )
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
serde_via_str!(CommunityValue);
serde_via_str!(LargeCommunityValue);

fn default_port() -> u16 {
    BGP_PORT
}
fn default_hold_time() -> u16 {
    90
}
fn default_connect_retry() -> u32 {
    5
}
fn default_connect_retry_max() -> u32 {
    120
}
fn default_graceful_shutdown_wait() -> u32 {
    30
}
fn default_families() -> Vec<Family> {
    vec![Family::Ipv4, Family::Ipv6]
}

/// Per-VIP route policy, applied on top of the speaker and peer defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Communities added for this VIP.
    #[serde(default)]
    pub communities: Vec<CommunityValue>,
    /// Large communities added for this VIP.
    #[serde(default)]
    pub large_communities: Vec<LargeCommunityValue>,
    /// MED for this VIP (overrides peer and speaker MED).
    #[serde(default)]
    pub med: Option<u32>,
    /// Extra AS_PATH prepends for this VIP towards eBGP peers (added to the peer's).
    #[serde(default)]
    pub as_path_prepend: u8,
    /// Next hop for this VIP, used for peers when it is of the VIP's family.
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
}

/// One semantic problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// Where, e.g. `bgp.peer[1].hold_time`.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// TOML syntax or types.
    #[error("invalid BGP configuration: {0}")]
    Syntax(#[from] toml::de::Error),
    /// No `[bgp]` table.
    #[error("the configuration has no [bgp] section: add one with local_as and router_id")]
    MissingSection,
    /// Semantic problems.
    #[error("invalid BGP configuration: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

impl BgpConfig {
    /// Reads the `[bgp]` section of a whole TOML file (other sections are ignored) and
    /// validates it.
    pub fn from_toml_file_contents(text: &str) -> Result<BgpConfig, ConfigFileError> {
        #[derive(Deserialize)]
        struct File {
            bgp: Option<BgpConfig>,
        }
        let file: File = toml::from_str(text)?;
        let cfg = file.bgp.ok_or(ConfigFileError::MissingSection)?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigFileError::Invalid { problems })
        }
    }

    /// Every semantic problem, each with its field path; empty when the configuration is usable.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |path: String, message: String| out.push(ConfigProblem { path, message });
        if self.local_as == 0 {
            problem(
                "bgp.local_as".into(),
                "AS 0 is reserved (RFC 7607): use 1..=4294967295".into(),
            );
        }
        if self.router_id.is_unspecified() {
            problem(
                "bgp.router_id".into(),
                "0.0.0.0 is not a valid router id: use a non-zero IPv4 address, e.g. a loopback"
                    .into(),
            );
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            problem(
                "bgp.hold_time".into(),
                format!(
                    "{} s is not allowed: use 0 (no keepalives) or 3..=65535",
                    self.hold_time
                ),
            );
        }
        if self.listen_port == 0 {
            problem("bgp.listen_port".into(), "port 0: use 1..=65535".into());
        }
        if self.connect_retry == 0 {
            problem(
                "bgp.connect_retry".into(),
                "0 s would retry in a busy loop: use at least 1".into(),
            );
        }
        if self.connect_retry_max < self.connect_retry {
            problem(
                "bgp.connect_retry_max".into(),
                format!(
                    "{} s is below connect_retry ({} s): use at least connect_retry",
                    self.connect_retry_max, self.connect_retry
                ),
            );
        }
        if let Some(t) = self.graceful_restart_time {
            if t > 4095 {
                problem(
                    "bgp.graceful_restart_time".into(),
                    format!("{t} s does not fit the 12-bit field: use 0..=4095"),
                );
            }
        }
        check_next_hop(&mut problem, "bgp.next_hop_v4", self.next_hop_v4, true);
        check_next_hop(&mut problem, "bgp.next_hop_v6", self.next_hop_v6, false);
        if self.as_path_prepend > MAX_PREPEND {
            problem(
                "bgp.as_path_prepend".into(),
                format!("{} prepends: use 0..={MAX_PREPEND}", self.as_path_prepend),
            );
        }
        if self.peers.is_empty() {
            problem(
                "bgp.peer".into(),
                "no peers: add at least one [[bgp.peer]] with address and remote_as".into(),
            );
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let at = |field: &str| format!("bgp.peer[{i}].{field}");
            if self.peers[..i]
                .iter()
                .any(|p| p.address == peer.address && p.port == peer.port)
            {
                problem(
                    at("address"),
                    format!(
                        "{} is configured twice: each peer address (and port) once",
                        peer.address
                    ),
                );
            }
            if peer.address.is_unspecified() || peer.address.is_multicast() {
                problem(
                    at("address"),
                    format!("{} cannot be a peer: use a unicast address", peer.address),
                );
            }
            if peer.remote_as == 0 {
                problem(
                    at("remote_as"),
                    "AS 0 is reserved (RFC 7607): use 1..=4294967295".into(),
                );
            }
            if peer.port == 0 {
                problem(at("port"), "port 0: use 1..=65535".into());
            }
            if let Some(local) = peer.local_address {
                if local.is_ipv4() != peer.address.is_ipv4() {
                    problem(
                        at("local_address"),
                        format!(
                            "{local} is not of the same family as the peer address {}",
                            peer.address
                        ),
                    );
                }
            }
            if let Some(pw) = &peer.password {
                if pw.is_empty() || pw.len() > MD5_MAX_KEY_LEN {
                    problem(
                        at("password"),
                        format!(
                            "TCP-MD5 key of {} octets: use 1..={MD5_MAX_KEY_LEN} octets",
                            pw.len()
                        ),
                    );
                }
            }
            if let Some(h) = peer.hold_time {
                if h == 1 || h == 2 {
                    problem(
                        at("hold_time"),
                        format!("{h} s is not allowed: use 0 (no keepalives) or 3..=65535"),
                    );
                }
            }
            if peer.families.is_empty() {
                problem(
                    at("families"),
                    "no families: use [\"ipv4\"], [\"ipv6\"] or both".into(),
                );
            }
            if let Some(nh) = peer.next_hop_v4 {
                check_next_hop(&mut problem, &at("next_hop_v4"), nh, true);
            }
            if let Some(nh) = peer.next_hop_v6 {
                check_next_hop(&mut problem, &at("next_hop_v6"), nh, false);
            }
            if let Some(p) = peer.as_path_prepend {
                if p > MAX_PREPEND {
                    problem(
                        at("as_path_prepend"),
                        format!("{p} prepends: use 0..={MAX_PREPEND}"),
                    );
                }
            }
            // `self` needs a local address of the family: a v4 session has none for IPv6.
            for (family, setting, field) in [
                (
                    Family::Ipv4,
                    self.next_hop_for(peer, Family::Ipv4),
                    "next_hop_v4",
                ),
                (
                    Family::Ipv6,
                    self.next_hop_for(peer, Family::Ipv6),
                    "next_hop_v6",
                ),
            ] {
                let session_v4 = peer.address.is_ipv4();
                if peer.families.contains(&family)
                    && setting == NextHopSetting::SelfAddress
                    && session_v4 != (family == Family::Ipv4)
                {
                    problem(
                        at(field),
                        format!(
                            "\"self\" cannot give an {} next hop on a session over {}: set {} to an address or leave the family out of families",
                            if family == Family::Ipv4 { "IPv4" } else { "IPv6" },
                            peer.address,
                            field
                        ),
                    );
                }
            }
        }
        out
    }

    /// The next-hop setting for `peer` and `family`.
    pub fn next_hop_for(&self, peer: &PeerConfig, family: Family) -> NextHopSetting {
        match family {
            Family::Ipv4 => peer.next_hop_v4.unwrap_or(self.next_hop_v4),
            Family::Ipv6 => peer.next_hop_v6.unwrap_or(self.next_hop_v6),
        }
    }

    /// Whether `peer` is iBGP.
    pub fn is_ibgp(&self, peer: &PeerConfig) -> bool {
        peer.remote_as == self.local_as
    }

    /// The next hops for `peer` given the local address of its session.
    pub fn next_hops(&self, peer: &PeerConfig, local: Option<IpAddr>) -> NextHops {
        let v4 = match self.next_hop_for(peer, Family::Ipv4) {
            NextHopSetting::Address(IpAddr::V4(a)) => Some(a),
            NextHopSetting::Address(IpAddr::V6(_)) => None,
            NextHopSetting::SelfAddress => match local {
                Some(IpAddr::V4(a)) => Some(a),
                Some(IpAddr::V6(a)) => a.to_ipv4_mapped(),
                None => None,
            },
        };
        let v6 = match self.next_hop_for(peer, Family::Ipv6) {
            NextHopSetting::Address(IpAddr::V6(a)) => Some(a),
            NextHopSetting::Address(IpAddr::V4(_)) => None,
            NextHopSetting::SelfAddress => match local {
                Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => Some(a),
                _ => None,
            },
        };
        NextHops {
            ipv4: v4,
            ipv6: v6.map(v6_next_hop),
        }
    }

    /// The route `peer` gets for a VIP with `policy`; `graceful_shutdown` adds the RFC 8326
    /// community (and the lowest LOCAL_PREF towards iBGP peers).
    pub fn route_for(
        &self,
        peer: &PeerConfig,
        policy: &RoutePolicy,
        graceful_shutdown: bool,
    ) -> PrefixRoute {
        let ibgp = self.is_ibgp(peer);
        let prepend = peer
            .as_path_prepend
            .unwrap_or(self.as_path_prepend)
            .saturating_add(policy.as_path_prepend);
        let as_path = if ibgp {
            AsPath::default()
        } else {
            AsPath::sequence(vec![self.local_as; 1 + usize::from(prepend)])
        };
        let mut attributes = RouteAttributes::new(as_path);
        attributes.med = policy.med.or(peer.med).or(self.med);
        if ibgp {
            attributes.local_pref = Some(if graceful_shutdown {
                GRACEFUL_SHUTDOWN_LOCAL_PREF
            } else {
                DEFAULT_LOCAL_PREF
            });
        }
        let mut communities: Vec<Community> = self
            .communities
            .iter()
            .chain(&peer.communities)
            .chain(&policy.communities)
            .map(|c| c.0)
            .collect();
        if graceful_shutdown {
            communities.push(Community::GRACEFUL_SHUTDOWN);
        }
        communities.sort();
        communities.dedup();
        attributes.communities = communities;
        let mut large: Vec<LargeCommunity> = self
            .large_communities
            .iter()
            .chain(&peer.large_communities)
            .chain(&policy.large_communities)
            .map(|c| c.0)
            .collect();
        large.sort();
        large.dedup();
        attributes.large_communities = large;
        let next_hops = match policy.next_hop {
            Some(IpAddr::V4(a)) => NextHops {
                ipv4: Some(a),
                ipv6: None,
            },
            Some(IpAddr::V6(a)) => NextHops {
                ipv4: None,
                ipv6: Some(v6_next_hop(a)),
            },
            None => NextHops::default(),
        };
        PrefixRoute {
            attributes: Some(attributes),
            next_hops,
        }
    }

    /// The socket address of `peer`.
    pub fn peer_socket(peer: &PeerConfig) -> SocketAddr {
        SocketAddr::new(peer.address, peer.port)
    }

    /// Where to listen, if anywhere: the configured address, or `::` when a peer is passive.
    pub fn listen_socket(&self) -> Option<SocketAddr> {
        let addr = self.listen_address.or_else(|| {
            self.peers
                .iter()
                .any(|p| p.passive)
                .then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        })?;
        Some(SocketAddr::new(addr, self.listen_port))
    }
}

fn v6_next_hop(global: Ipv6Addr) -> MpNextHop {
    MpNextHop::V6 {
        global,
        link_local: None,
    }
}

fn check_next_hop(
    problem: &mut impl FnMut(String, String),
    path: &str,
    setting: NextHopSetting,
    want_v4: bool,
) {
    if let NextHopSetting::Address(a) = setting {
        if a.is_ipv4() != want_v4 {
            problem(
                path.to_string(),
                format!(
                    "{a} is not an {} address: use \"self\" or an {} address",
                    if want_v4 { "IPv4" } else { "IPv6" },
                    if want_v4 { "IPv4" } else { "IPv6" }
                ),
            );
        } else if a.is_unspecified() || a.is_multicast() {
            problem(
                path.to_string(),
                format!("{a} cannot be a next hop: use \"self\" or a unicast address"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [bgp]
        local_as = 65001
        router_id = "192.0.2.1"
        hold_time = 30
        communities = ["65001:100", "no_export"]
        large_communities = ["65001:1:2"]
        med = 10

        [[bgp.peer]]
        address = "192.0.2.254"
        remote_as = 65000
        password = "s3cret"
        ttl_security = true
        next_hop_v6 = "2001:db8::1"

        [[bgp.peer]]
        address = "2001:db8::fe"
        remote_as = 65001
        passive = true
        families = ["ipv6"]
        communities = ["65001:200"]
        as_path_prepend = 2
    "#;

    #[test]
    fn example_parses_and_validates() {
        let cfg = BgpConfig::from_toml_file_contents(EXAMPLE).unwrap();
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].port, 179);
        assert_eq!(cfg.peers[0].families, vec![Family::Ipv4, Family::Ipv6]);
        assert_eq!(cfg.communities[1].0, Community::NO_EXPORT);
        assert_eq!(
            cfg.listen_socket(),
            Some("[::]:179".parse().unwrap()),
            "a passive peer needs a listener"
        );
    }

    #[test]
    fn documented_example_is_valid() {
        let doc = include_str!("../../docs/bgp.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let cfg = BgpConfig::from_toml_file_contents(&doc[start..end]).unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.hold_time, 9);
    }

    #[test]
    fn problems_name_their_fields() {
        let text = r#"
            [bgp]
            local_as = 0
            router_id = "0.0.0.0"
            hold_time = 2
            connect_retry = 10
            connect_retry_max = 5
            next_hop_v4 = "2001:db8::1"
            [[bgp.peer]]
            address = "192.0.2.2"
            remote_as = 0
            password = ""
            [[bgp.peer]]
            address = "192.0.2.2"
            remote_as = 65002
            local_address = "2001:db8::1"
            families = []
        "#;
        let Err(ConfigFileError::Invalid { problems }) = BgpConfig::from_toml_file_contents(text)
        else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "bgp.local_as",
            "bgp.router_id",
            "bgp.hold_time",
            "bgp.connect_retry_max",
            "bgp.next_hop_v4",
            "bgp.peer[0].remote_as",
            "bgp.peer[0].password",
            "bgp.peer[1].address",
            "bgp.peer[1].local_address",
            "bgp.peer[1].families",
        ] {
            assert!(paths.contains(&want), "{want} missing from {problems:#?}");
        }
        // IPv6 family over an IPv4 session with next_hop_v6 = self.
        assert!(paths.contains(&"bgp.peer[0].next_hop_v6"), "{problems:#?}");
    }

    #[test]
    fn syntax_errors_say_what_is_allowed() {
        let bad_community =
            "[bgp]\nlocal_as = 1\nrouter_id = \"1.1.1.1\"\ncommunities = [\"70000:1\"]\n";
        let e = BgpConfig::from_toml_file_contents(bad_community)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ASN:VALUE"), "{e}");
        let unknown = "[bgp]\nlocal_as = 1\nrouter_id = \"1.1.1.1\"\nhold = 3\n";
        let e = BgpConfig::from_toml_file_contents(unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hold"), "{e}");
        assert!(matches!(
            BgpConfig::from_toml_file_contents("[other]\n"),
            Err(ConfigFileError::MissingSection)
        ));
        assert!("1:2:3:4".parse::<LargeCommunityValue>().is_err());
        assert_eq!(
            "65001:7:8"
                .parse::<LargeCommunityValue>()
                .unwrap()
                .to_string(),
            "65001:7:8"
        );
    }

    #[test]
    fn route_combines_speaker_peer_and_vip_policy() {
        let cfg = BgpConfig::from_toml_file_contents(EXAMPLE).unwrap();
        let policy = RoutePolicy {
            communities: vec!["65001:300".parse().unwrap()],
            med: Some(5),
            as_path_prepend: 1,
            next_hop: Some("192.0.2.99".parse().unwrap()),
            ..RoutePolicy::default()
        };
        let ebgp = cfg.route_for(&cfg.peers[0], &policy, false);
        let a = ebgp.attributes.unwrap();
        assert_eq!(a.as_path, AsPath::sequence(vec![65001, 65001]));
        assert_eq!(a.med, Some(5));
        assert_eq!(a.local_pref, None);
        assert_eq!(
            a.communities,
            vec![
                Community::new(65001, 100),
                Community::new(65001, 300),
                Community::NO_EXPORT
            ]
        );
        assert_eq!(ebgp.next_hops.ipv4, Some("192.0.2.99".parse().unwrap()));

        let ibgp = cfg.route_for(&cfg.peers[1], &RoutePolicy::default(), true);
        let a = ibgp.attributes.unwrap();
        assert_eq!(a.as_path, AsPath::default(), "no AS prepended on iBGP");
        assert_eq!(a.local_pref, Some(GRACEFUL_SHUTDOWN_LOCAL_PREF));
        assert!(a.communities.contains(&Community::GRACEFUL_SHUTDOWN));
        assert!(a.communities.contains(&Community::new(65001, 200)));
        assert_eq!(a.med, Some(10));
    }

    #[test]
    fn self_next_hop_follows_the_session_address() {
        let cfg = BgpConfig::from_toml_file_contents(EXAMPLE).unwrap();
        let nh = cfg.next_hops(&cfg.peers[0], Some("192.0.2.1".parse().unwrap()));
        assert_eq!(nh.ipv4, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(nh.ipv6, Some(v6_next_hop("2001:db8::1".parse().unwrap())));
        let nh = cfg.next_hops(&cfg.peers[1], Some("2001:db8::1".parse().unwrap()));
        assert_eq!(nh.ipv4, None);
        assert!(nh.ipv6.is_some());
    }
}
