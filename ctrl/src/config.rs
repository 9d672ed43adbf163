//! The vipd configuration file (`/etc/vipd/vipd.toml`): its schema, and validation into typed
//! values.
//!
//! "Parse, don't validate": the file is first deserialised into loose `Raw*` structs that keep
//! every value's byte span, then checked field by field into [`ValidConfig`], which has no public
//! constructor. Code holding a `ValidConfig` can rely on every rule below without re-checking.
//! Validation reports every problem it finds, not only the first, and each [`Problem`] names the
//! file, the line, the field path (`vip[1].backend[0].weight`) and what is allowed, so an
//! operator can fix a file in one pass.
//!
//! Schema (`ctrl/examples/vipd.toml` is the commented reference; every section but `[[vip]]` is
//! optional, and all `[[vip]]` fields but `address` and `protocol` are optional):
//!
//! ```toml
//! [dataplane]
//! lcores = 1                    # 1..=128 polling cores
//! cpus = [2, 3]                 # CPU of lcore N
//! eal_args = ["--vdev", "net_null0"]  # DPDK EAL arguments
//! flow_table_capacity = 1048576 # per lcore, 1024..=2^26
//!
//! [[port]]                      # DPDK port N is the N-th [[port]]
//! mac = "02:00:00:00:00:01"
//! gateway_mac = "02:00:00:00:00:fe" # static next hop, or:
//! gateway = "192.0.2.254"       # resolved by ARP/ND (or ["192.0.2.254", "2001:db8::fe"])
//! mtu = 1500                    # 576..=9216
//! vlan = 100                    # 1..=4094, absent = untagged (not with `gateway`)
//!
//! [port.kernel]                 # kernel exception path (at most one port); `gateway` needs it
//! tap = "vipd0"                 # TAP interface vipd creates (net_tap)
//! addresses = ["192.0.2.1/24", "2001:db8::1/64"]  # the appliance's own, put on the TAP
//! mtu = 1500                    # default the port's
//!
//! [admin]
//! socket = "/run/vipd/admin.sock"
//! max_request_bytes = 65536
//! idle_timeout_ms = 30000
//!
//! [metrics]
//! address = "127.0.0.1:9110"
//!
//! [health]
//! panic_threshold = 50          # percent, 0 = off
//!
//! [bgp]                         # kept raw (`ValidConfig::bgp`), checked by a `BgpCheck` hook
//!
//! [[vip]]
//! address = "192.0.2.10"        # IPv4 or IPv6
//! port = 443                    # 1..=65535; 0 or absent = all ports
//! protocol = "tcp"              # "tcp" | "udp"
//! forwarding = "ipip"           # "ipip" (default) | "gue" | "l2dsr"
//! hash = "5-tuple"              # "5-tuple" (default) | "3-tuple" | "dst-port"
//! table_size = 65537            # 65537 (default) | 655373
//! encap_source_v4 = "10.0.0.1"  # outer source for IPv4 backends (ipip/gue)
//! encap_source_v6 = "fd00::1"   # outer source for IPv6 backends (ipip/gue)
//!
//! [vip.health]                  # absent: backends are always healthy
//! type = "http"                 # "tcp" | "http" | "https"
//! port = 8080                   # default the VIP's port (required for all-ports VIPs)
//! path = "/healthz"             # http(s)
//! expect_status = 200           # http(s)
//! interval_ms = 2000
//! timeout_ms = 1000             # <= interval_ms
//! jitter_ms = 0                 # <= interval_ms
//! rise = 2
//! fall = 3
//! insecure_skip_verify = false  # https: accept self-signed certificates
//! host = "www.example.com"      # http(s) Host header / SNI
//!
//! [vip.bgp]                     # kept raw, handed to the BGP speaker with the VIP
//!
//! [[vip.backend]]
//! address = "10.0.1.1"
//! weight = 1                    # 1..=65535, default 1
//! mac = "02:00:00:00:00:01"     # required for l2dsr
//! health_port = 8081            # probe this port instead of [vip.health] port
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU16;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

/// Largest config file accepted.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Where vipd reads its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vipd/vipd.toml";

/// A configuration that passed every check. Only [`parse`] and [`load`] build one.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    vips: Vec<Vip>,
    /// Polling cores and DPDK EAL settings (`[dataplane]`).
    pub dataplane: DataplaneSettings,
    /// Ports in port-id order (`[[port]]`); empty means one default port (dry-run).
    pub ports: Vec<PortConfig>,
    /// Admin socket settings (`[admin]`).
    pub admin: AdminSettings,
    /// Prometheus listen address (`[metrics] address`), if any.
    pub metrics: Option<SocketAddr>,
    /// Percentage of a VIP's backends that may fail together before the panic mode keeps them
    /// all (`[health] panic_threshold`, default 50).
    pub panic_threshold: u8,
    /// The raw `[bgp]` table, for the BGP speaker to parse.
    bgp: Option<toml::Value>,
}

impl ValidConfig {
    /// The VIPs, in file order. No two share address, port and protocol.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// Number of backends over all VIPs.
    pub fn backend_count(&self) -> usize {
        self.vips.iter().map(|v| v.backends.len()).sum()
    }

    /// The raw `[bgp]` table, unparsed (the BGP crate owns its schema).
    pub fn bgp(&self) -> Option<&toml::Value> {
        self.bgp.as_ref()
    }

    /// Replaces the VIP list (used by the admin socket's `vip.add` / `vip.del`).
    pub fn set_vips(&mut self, vips: Vec<Vip>) {
        self.vips = vips;
    }
}

/// `[dataplane]`: polling cores and DPDK settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Polling cores (lcores), 1..=128; default 1.
    pub lcores: u16,
    /// CPU to pin lcore N to (`cpus[N]`); may be empty.
    pub cpus: Vec<usize>,
    /// DPDK EAL arguments, e.g. `["-l", "2-3", "--file-prefix", "vipd"]`.
    pub eal_args: Vec<String>,
    /// Flow-table entries per lcore, 1024..=2^26; default 1,048,576.
    pub flow_table_capacity: usize,
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        DataplaneSettings {
            lcores: 1,
            cpus: Vec::new(),
            eal_args: Vec::new(),
            flow_table_capacity: 1 << 20,
        }
    }
}

/// One `[[port]]`: a DPDK port (its id is its index in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's MAC (source of frames sent).
    pub mac: MacAddr,
    /// The next hop for encapsulated traffic: a static MAC, or gateway addresses resolved by
    /// ARP / Neighbor Discovery from the dataplane.
    pub gateway: NextHop,
    /// IP MTU, 576..=9216; default 1500.
    pub mtu: u16,
    /// 802.1Q VLAN id towards the backends, 1..=4094.
    pub vlan: Option<u16>,
    /// The kernel exception path of this port (`[port.kernel]`), if any.
    pub kernel: Option<KernelPath>,
}

impl PortConfig {
    /// The static gateway MAC, if the next hop is configured that way.
    pub fn gateway_mac(&self) -> Option<MacAddr> {
        match &self.gateway {
            NextHop::Mac(mac) => Some(*mac),
            NextHop::Resolve(_) => None,
        }
    }
}

/// How a port's next hop (gateway) MAC is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// `gateway_mac = "02:00:00:00:00:fe"`: fixed.
    Mac(MacAddr),
    /// `gateway = "192.0.2.254"` (or one IPv4 and one IPv6 address): resolved by ARP / ND
    /// through the port, from the address of the same family on `[port.kernel]`.
    Resolve(Vec<IpAddr>),
}

/// `[port.kernel]`: the kernel exception path of a port. vipd creates the TAP interface
/// (DPDK `net_tap`), gives it the port's MAC, these addresses and MTU, and brings it up;
/// frames not for a VIP go to it and what the kernel sends into it leaves through the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPath {
    /// The TAP interface's name, e.g. `vipd0`.
    pub tap: String,
    /// The appliance's own addresses on this link, with prefix length.
    pub addresses: Vec<IfAddr>,
    /// The TAP's MTU; default the port's.
    pub mtu: u16,
}

/// An interface address with its prefix length, e.g. `192.0.2.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub address: IpAddr,
    /// The prefix length (0..=32 or 0..=128).
    pub prefix_len: u8,
}

impl IfAddr {
    /// Whether `ip` is on this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for IfAddr {
    type Err = String;

    /// Parses `address/prefix_len`, e.g. `192.0.2.1/24` or `2001:db8::1/64`.
    fn from_str(text: &str) -> Result<IfAddr, String> {
        let bad = || {
            format!(
                "must be an address with its prefix length like \"192.0.2.1/24\" or \"2001:db8::1/64\", got {text:?}"
            )
        };
        let (address, len) = text.split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!(
                "prefix length {prefix_len} is longer than {max} bits in {text:?}"
            ));
        }
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            return Err(format!(
                "must be a unicast address of this host (not unspecified, multicast or loopback), got {text:?}"
            ));
        }
        Ok(IfAddr {
            address,
            prefix_len,
        })
    }
}

/// `[admin]`: the admin socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Socket path; default `/run/vipd/admin.sock`.
    pub socket: PathBuf,
    /// Largest request line in bytes, 256..=16 MiB; default 65536.
    pub max_request_bytes: usize,
    /// A connection idle this long is closed (ms), 100..=3,600,000; default 30,000.
    pub idle_timeout_ms: u64,
}

/// Where the admin socket lives unless configured.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/vipd/admin.sock";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            max_request_bytes: 65_536,
            idle_timeout_ms: 30_000,
        }
    }
}

/// A VIP's active health check (`[vip.health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// TCP connect, or HTTP(S) GET.
    pub kind: CheckKind,
    /// Port probed on each backend; defaults to the VIP's port (required for all-ports VIPs).
    pub port: NonZeroU16,
    /// HTTP path, starting with `/`; default `/`.
    pub path: String,
    /// Expected HTTP status, 100..=599; default 200.
    pub expect_status: u16,
    /// Milliseconds between probes, 10..=3,600,000; default 2000.
    pub interval_ms: u64,
    /// Probe timeout in ms, 1..=interval; default 1000 (or the interval if shorter).
    pub timeout_ms: u64,
    /// Up to this many ms added at random to each interval, 0..=interval; default 0.
    pub jitter_ms: u64,
    /// Consecutive successes to become healthy, 1..=100; default 2.
    pub rise: u8,
    /// Consecutive failures to become unhealthy, 1..=100; default 3.
    pub fall: u8,
    /// HTTPS only: accept any certificate (self-signed backends). Default false.
    pub insecure_skip_verify: bool,
    /// HTTP `Host` header; default the backend address.
    pub host: Option<String>,
}

/// One virtual IP service.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Vip {
    /// Address announced over BGP and matched by the dataplane.
    pub address: IpAddr,
    /// Destination port; `None` means all ports.
    pub port: Option<NonZeroU16>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// How packets reach the backends.
    pub forwarding: Forwarding,
    /// Which header fields pick the backend.
    pub hash: HashMode,
    /// Maglev lookup table size.
    pub table_size: TableSize,
    /// Outer source address for encapsulating to IPv4 backends; present whenever an IPv4
    /// backend uses `ipip` or `gue`.
    pub encap_source_v4: Option<Ipv4Addr>,
    /// Outer source address for encapsulating to IPv6 backends; present whenever an IPv6
    /// backend uses `ipip` or `gue`.
    pub encap_source_v6: Option<Ipv6Addr>,
    /// Backends, in file order, with distinct addresses.
    pub backends: Vec<Backend>,
    /// Active health check; none means every backend is healthy unless drained.
    pub health: Option<HealthCheck>,
    /// The VIP's raw `[vip.bgp]` policy table (communities, MED...), for the BGP speaker.
    pub bgp: Option<toml::Value>,
}

impl Vip {
    /// The identity of this VIP: what must be unique across the file.
    pub fn key(&self) -> VipKey {
        VipKey {
            address: self.address,
            port: self.port,
            protocol: self.protocol,
        }
    }
}

/// Address, port and protocol: what identifies a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// VIP address.
    pub address: IpAddr,
    /// Port, `None` for all ports.
    pub port: Option<NonZeroU16>,
    /// Protocol.
    pub protocol: Protocol,
}

impl fmt::Display for VipKey {
    /// `tcp 192.0.2.10:80`, `udp [2001:db8::1]:53`, `tcp 192.0.2.10:*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.protocol.as_str())?;
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}")?,
            IpAddr::V6(a) => write!(f, "[{a}]")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => write!(f, ":*"),
        }
    }
}

/// One real server behind a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backend {
    /// Backend address (the inner destination stays the VIP).
    pub address: IpAddr,
    /// Relative share of new flows.
    pub weight: NonZeroU16,
    /// Destination MAC for `l2dsr`; always present when the VIP uses `l2dsr`.
    pub mac: Option<MacAddr>,
    /// Port the health check probes on this backend instead of the check's port.
    pub health_port: Option<NonZeroU16>,
}

impl Backend {
    /// A backend of weight 1 without MAC (for the admin socket's `backend.add`).
    pub fn new(address: IpAddr, weight: NonZeroU16, mac: Option<MacAddr>) -> Backend {
        Backend {
            address,
            weight,
            mac,
            health_port: None,
        }
    }
}

/// Declares a config enum with its spellings, `as_str` and the "must be ..." message.
macro_rules! choice_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value with its spelling in the config file.
            pub const CHOICES: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            /// The spelling in the config file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Parses the config spelling; the error says which spellings are allowed.
            fn from_str(text: &str) -> Result<Self, String> {
                Self::CHOICES
                    .iter()
                    .find(|(spelling, _)| *spelling == text)
                    .map(|(_, value)| *value)
                    .ok_or_else(|| format!("must be {}, got {text:?}", one_of(Self::CHOICES.iter().map(|(s, _)| format!("{s:?}")))))
            }
        }
    };
}

choice_enum! {
    /// Kind of health probe.
    CheckKind {
        /// TCP connect.
        Tcp = "tcp",
        /// HTTP GET, status compared.
        Http = "http",
        /// HTTPS GET, status compared.
        Https = "https",
    }
}

choice_enum! {
    /// Transport protocol of a VIP.
    Protocol {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

choice_enum! {
    /// How the dataplane delivers packets to backends.
    #[derive(Default)]
    Forwarding {
        /// IP-in-IP (4in4, 6in6, 4in6, 6in4); the default.
        #[default]
        Ipip = "ipip",
        /// Generic UDP Encapsulation, variant 1.
        Gue = "gue",
        /// Layer-2 direct server return: rewrite the destination MAC only.
        L2Dsr = "l2dsr",
    }
}

choice_enum! {
    /// Which packet fields select the backend.
    #[derive(Default)]
    HashMode {
        /// Source and destination address and port, and protocol; the default.
        #[default]
        FiveTuple = "5-tuple",
        /// Source and destination address, and protocol.
        ThreeTuple = "3-tuple",
        /// Destination port only.
        DstPort = "dst-port",
    }
}

/// Size of a VIP's Maglev lookup table; Maglev needs a prime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TableSize {
    /// 65,537 slots; the default, enough for a few hundred backends.
    #[default]
    Standard,
    /// 655,373 slots, for thousands of backends or finer weights.
    Large,
}

impl TableSize {
    /// Number of slots in the table.
    pub fn slots(self) -> u32 {
        match self {
            TableSize::Standard => 65_537,
            TableSize::Large => 655_373,
        }
    }

    fn from_slots(slots: i64) -> Result<TableSize, String> {
        match slots {
            65_537 => Ok(TableSize::Standard),
            655_373 => Ok(TableSize::Large),
            _ => Err(format!(
                "must be 65537 or 655373 (Maglev needs one of these primes), got {slots}"
            )),
        }
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether this is an individual (unicast) address: group bit clear, not all zeros.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 0x01 == 0 && self.0 != [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Parses six colon-separated hex octets, e.g. `02:00:5e:10:00:01`.
    fn from_str(text: &str) -> Result<MacAddr, String> {
        let bad = || format!("must be a MAC address like \"02:00:00:00:00:01\", got {text:?}");
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One thing wrong with a config file, located by line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given to [`parse`] or [`load`].
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Field path such as `vip[1].backend[0].weight`; empty for syntax errors.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `vipd.toml:12: vip[1].backend[0].weight: must be 1..=65535, got 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

/// Why a configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not valid; one entry per problem, in file order.
    #[error("{}", join_lines(problems))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The located problems (empty for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn one_of(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Checks of the raw BGP tables, each returning one message per problem (empty when valid).
/// The BGP speaker's config parser plugs in here so `vipd --check` and reload cover them too.
#[derive(Clone, Copy, Debug)]
pub struct BgpCheck {
    /// Checks `[bgp]`.
    pub section: fn(&toml::Value) -> Vec<String>,
    /// Checks one VIP's `[vip.bgp]` policy.
    pub vip_policy: fn(&toml::Value) -> Vec<String>,
}

/// Reads and validates the config file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<ValidConfig, ConfigError> {
    load_with(path, None)
}

/// As [`load`], also checking `[bgp]` with `bgp_check`.
pub fn load_with(
    path: impl AsRef<Path>,
    bgp_check: Option<BgpCheck>,
) -> Result<ValidConfig, ConfigError> {
    let path = path.as_ref();
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Not a device or a FIFO (which could block or never end), and not absurdly large.
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file of at most {MAX_FILE_BYTES} bytes"),
        )));
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse_with(&text, &path.display().to_string(), bgp_check)
}

/// Validates config `text`; `file_name` is used in error messages only.
pub fn parse(text: &str, file_name: &str) -> Result<ValidConfig, ConfigError> {
    parse_with(text, file_name, None)
}

/// As [`parse`], also checking `[bgp]` with `bgp_hook`.
pub fn parse_with(
    text: &str,
    file_name: &str,
    bgp_hook: Option<BgpCheck>,
) -> Result<ValidConfig, ConfigError> {
    let mut checker = Checker {
        file: file_name,
        text,
        problems: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            checker.report(span, String::new(), err.message().trim_end().to_string());
            return Err(ConfigError::Invalid {
                problems: checker.problems,
            });
        }
    };

    let mut seen_vips: HashMap<VipKey, (usize, usize)> = HashMap::new();
    let mut vips = Vec::with_capacity(raw.vip.len());
    for (index, raw_vip) in raw.vip.iter().enumerate() {
        if let Some(vip) = checker.vip(index, raw_vip, &mut seen_vips) {
            vips.push(vip);
        }
    }
    let dataplane = checker.dataplane(raw.dataplane.as_ref());
    let ports: Vec<PortConfig> = raw
        .port
        .iter()
        .enumerate()
        .filter_map(|(i, p)| checker.port(i, p))
        .collect();
    // One TAP: the engine's lcores hand every non-VIP frame to one kernel path.
    for (i, p) in raw.port.iter().enumerate().skip(1) {
        if let Some(k) = &p.get_ref().kernel {
            if raw.port[..i].iter().any(|q| q.get_ref().kernel.is_some()) {
                checker.report(
                    k.span(),
                    format!("port[{i}].kernel"),
                    "only one [[port]] may have a kernel exception path (vipd hands every frame not for a VIP to one TAP); remove it here, or from the other port".into(),
                );
            }
        }
    }
    let admin = checker.admin(raw.admin.as_ref());
    let metrics = raw.metrics.as_ref().and_then(|m| {
        checker.field(
            m.span(),
            "metrics.address".to_string(),
            m.get_ref().address.as_ref(),
            Err("required in [metrics]: host:port to serve Prometheus metrics on, e.g. address = \"127.0.0.1:9110\""),
            |text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    format!("must be an address and port like \"127.0.0.1:9110\" or \"[::1]:9110\", got {text:?}")
                })
            },
        )
    });
    let panic_threshold = match raw.health.as_ref() {
        None => Some(50),
        Some(h) => checker.field(
            h.span(),
            "health.panic_threshold".to_string(),
            h.get_ref().panic_threshold.as_ref(),
            Ok(50),
            |&v| {
                u8::try_from(v).ok().filter(|v| *v <= 100).ok_or_else(|| {
                    format!("must be a percentage 0..=100 (0 disables the panic mode), got {v}")
                })
            },
        ),
    };
    if let Some(bgp) = &raw.bgp {
        if !bgp.get_ref().is_table() {
            checker.report(
                bgp.span(),
                "bgp".to_string(),
                "must be a table: [bgp]".to_string(),
            );
        } else if let Some(hook) = bgp_hook {
            for message in (hook.section)(bgp.get_ref()) {
                checker.report(bgp.span(), "bgp".to_string(), message);
            }
        }
    }
    if let Some(hook) = bgp_hook {
        for (index, raw_vip) in raw.vip.iter().enumerate() {
            if let Some(policy) = raw_vip
                .get_ref()
                .bgp
                .as_ref()
                .filter(|b| b.get_ref().is_table())
            {
                for message in (hook.vip_policy)(policy.get_ref()) {
                    checker.report(policy.span(), format!("vip[{index}].bgp"), message);
                }
            }
        }
    }
    if checker.problems.is_empty() {
        Ok(ValidConfig {
            vips,
            dataplane: dataplane.unwrap_or_default(),
            ports,
            admin: admin.unwrap_or_default(),
            metrics,
            panic_threshold: panic_threshold.unwrap_or(50),
            bgp: raw.bgp.map(Spanned::into_inner),
        })
    } else {
        checker.problems.sort_by_key(|p| p.line);
        Err(ConfigError::Invalid {
            problems: checker.problems,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    vip: Vec<Spanned<RawVip>>,
    dataplane: Option<Spanned<RawDataplane>>,
    #[serde(default)]
    port: Vec<Spanned<RawPort>>,
    admin: Option<Spanned<RawAdmin>>,
    metrics: Option<Spanned<RawMetrics>>,
    health: Option<Spanned<RawHealthDefaults>>,
    bgp: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    lcores: Option<Spanned<i64>>,
    cpus: Option<Spanned<Vec<i64>>>,
    eal_args: Option<Spanned<Vec<String>>>,
    flow_table_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    mac: Option<Spanned<String>>,
    gateway_mac: Option<Spanned<String>>,
    gateway: Option<Spanned<toml::Value>>,
    mtu: Option<Spanned<i64>>,
    vlan: Option<Spanned<i64>>,
    kernel: Option<Spanned<RawKernel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    tap: Option<Spanned<String>>,
    addresses: Option<Spanned<Vec<String>>>,
    mtu: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<Spanned<String>>,
    max_request_bytes: Option<Spanned<i64>>,
    idle_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthDefaults {
    panic_threshold: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawHealth {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<i64>>,
    interval_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    jitter_ms: Option<Spanned<i64>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    insecure_skip_verify: Option<Spanned<bool>>,
    host: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    forwarding: Option<Spanned<String>>,
    hash: Option<Spanned<String>>,
    table_size: Option<Spanned<i64>>,
    encap_source_v4: Option<Spanned<String>>,
    encap_source_v6: Option<Spanned<String>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
    health: Option<Spanned<RawHealth>>,
    bgp: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
    health_port: Option<Spanned<i64>>,
}

/// Validation state: the source for line numbers, and the problems found so far.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        let bytes = self.text.as_bytes();
        let before = bytes.get(..offset).unwrap_or(bytes);
        before.iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn report(&mut self, span: Range<usize>, field: String, message: String) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: self.line(span.start),
            field,
            message,
        });
    }

    /// Checks one optional field: `absent` is its default, or the message for a missing
    /// required field; `convert` turns a present value into the typed one.
    fn field<T, U>(
        &mut self,
        table_span: Range<usize>,
        path: String,
        raw: Option<&Spanned<T>>,
        absent: Result<U, &str>,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match raw {
            None => match absent {
                Ok(default) => Some(default),
                Err(message) => {
                    self.report(table_span, path, message.to_string());
                    None
                }
            },
            Some(value) => match convert(value.get_ref()) {
                Ok(typed) => Some(typed),
                Err(message) => {
                    self.report(value.span(), path, message);
                    None
                }
            },
        }
    }

    /// An integer field within `range`, default `default`.
    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        table_span: Range<usize>,
        path: String,
        raw: Option<&Spanned<i64>>,
        default: Result<T, &str>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> Option<T> {
        self.field(table_span, path, raw, default, |&v| {
            if range.contains(&v) {
                T::try_from(v).map_err(|_| {
                    format!("must be {}..={}{what}, got {v}", range.start(), range.end())
                })
            } else {
                Err(format!(
                    "must be {}..={}{what}, got {v}",
                    range.start(),
                    range.end()
                ))
            }
        })
    }

    fn dataplane(&mut self, raw: Option<&Spanned<RawDataplane>>) -> Option<DataplaneSettings> {
        let Some(raw) = raw else {
            return Some(DataplaneSettings::default());
        };
        let span = raw.span();
        let raw = raw.get_ref();
        let defaults = DataplaneSettings::default();
        let lcores = self.int(
            span.clone(),
            "dataplane.lcores".into(),
            raw.lcores.as_ref(),
            Ok(1u16),
            1..=128,
            " polling cores",
        );
        let cpus = self.field(
            span.clone(),
            "dataplane.cpus".into(),
            raw.cpus.as_ref(),
            Ok(Vec::new()),
            |list| {
                list.iter()
                    .map(|&c| {
                        usize::try_from(c)
                            .ok()
                            .filter(|c| *c < 4096)
                            .ok_or_else(|| format!("must list CPU ids 0..=4095, got {c}"))
                    })
                    .collect()
            },
        );
        let eal_args = self.field(
            span.clone(),
            "dataplane.eal_args".into(),
            raw.eal_args.as_ref(),
            Ok(Vec::new()),
            |list| Ok(list.clone()),
        );
        let flow_table_capacity = self.int(
            span,
            "dataplane.flow_table_capacity".into(),
            raw.flow_table_capacity.as_ref(),
            Ok(defaults.flow_table_capacity),
            1024..=(1 << 26),
            " flow entries per lcore",
        );
        Some(DataplaneSettings {
            lcores: lcores?,
            cpus: cpus?,
            eal_args: eal_args?,
            flow_table_capacity: flow_table_capacity?,
        })
    }

    fn mac_field(
        &mut self,
        span: Range<usize>,
        path: String,
        raw: Option<&Spanned<String>>,
        absent: Result<Option<MacAddr>, &str>,
    ) -> Option<Option<MacAddr>> {
        self.field(span, path, raw, absent, |text| {
            let mac = text.parse::<MacAddr>()?;
            if mac.is_unicast() {
                Ok(Some(mac))
            } else {
                Err(format!(
                    "must be a unicast MAC address (not multicast, broadcast or all zeros), got {text:?}"
                ))
            }
        })
    }

    fn port(&mut self, index: usize, raw: &Spanned<RawPort>) -> Option<PortConfig> {
        let span = raw.span();
        let raw = raw.get_ref();
        let path = format!("port[{index}]");
        let mac = self.mac_field(
            span.clone(),
            format!("{path}.mac"),
            raw.mac.as_ref(),
            Err("required: the port's MAC address, e.g. mac = \"02:00:00:00:00:01\""),
        );
        let mtu = self.int(
            span.clone(),
            format!("{path}.mtu"),
            raw.mtu.as_ref(),
            Ok(1500u16),
            576..=9216,
            "",
        );
        let vlan = self.field(
            span.clone(),
            format!("{path}.vlan"),
            raw.vlan.as_ref(),
            Ok(None),
            |&v| {
                if (1..=4094).contains(&v) {
                    Ok(Some(v as u16))
                } else {
                    Err(format!(
                        "must be a VLAN id 1..=4094, or absent for untagged, got {v}"
                    ))
                }
            },
        );
        let kernel = match &raw.kernel {
            None => Some(None),
            Some(k) => self.kernel(&path, k, mtu.unwrap_or(1500)).map(Some),
        };
        let gateway = match (&raw.gateway_mac, &raw.gateway) {
            (Some(_), Some(g)) => {
                self.report(
                    g.span(),
                    format!("{path}.gateway"),
                    "give either gateway_mac (a static next-hop MAC) or gateway (addresses resolved by ARP/ND), not both".into(),
                );
                None
            }
            (None, None) => {
                self.report(
                    span,
                    format!("{path}.gateway"),
                    "required: the next hop towards the backends, either gateway = \"192.0.2.254\" (resolved by ARP/ND; needs [port.kernel] with an address on its subnet) or gateway_mac = \"02:00:00:00:00:fe\" (static)".into(),
                );
                None
            }
            (Some(_), None) => self
                .mac_field(
                    span,
                    format!("{path}.gateway_mac"),
                    raw.gateway_mac.as_ref(),
                    Ok(None),
                )
                .flatten()
                .map(NextHop::Mac),
            (None, Some(g)) => self.gateway(&path, g, kernel.as_ref(), vlan),
        };
        Some(PortConfig {
            mac: mac??,
            gateway: gateway?,
            mtu: mtu?,
            vlan: vlan?,
            kernel: kernel?,
        })
    }

    /// `[port.kernel]`; `port_mtu` is the TAP's default MTU.
    fn kernel(
        &mut self,
        port_path: &str,
        raw: &Spanned<RawKernel>,
        port_mtu: u16,
    ) -> Option<KernelPath> {
        let span = raw.span();
        let raw = raw.get_ref();
        let path = format!("{port_path}.kernel");
        let tap = self.field(
            span.clone(),
            format!("{path}.tap"),
            raw.tap.as_ref(),
            Err("required: the name of the TAP interface vipd creates for the kernel, e.g. tap = \"vipd0\""),
            |name| {
                let ok = !name.is_empty()
                    && name.len() < 16
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                    && name != "."
                    && name != "..";
                if ok {
                    Ok(name.clone())
                } else {
                    Err(format!("must be an interface name of 1..=15 letters, digits, '-', '_' or '.', got {name:?}"))
                }
            },
        );
        let addresses = self.field(
            span.clone(),
            format!("{path}.addresses"),
            raw.addresses.as_ref(),
            Err("required: the appliance's own addresses on this link with prefix length, e.g. addresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]"),
            |list| {
                if list.is_empty() {
                    return Err("must list at least one address, e.g. [\"192.0.2.1/24\"]".into());
                }
                let parsed = list
                    .iter()
                    .map(|a| a.parse::<IfAddr>())
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, a) in parsed.iter().enumerate() {
                    if parsed[..i].iter().any(|b| b.address == a.address) {
                        return Err(format!("lists {} twice", a.address));
                    }
                }
                Ok(parsed)
            },
        );
        let mtu = self.int(
            span,
            format!("{path}.mtu"),
            raw.mtu.as_ref(),
            Ok(port_mtu),
            576..=9216,
            "",
        );
        Some(KernelPath {
            tap: tap?,
            addresses: addresses?,
            mtu: mtu?,
        })
    }

    /// `gateway`: one address, or a list of at most one per family, each on the subnet of an
    /// address of `[port.kernel]` (IPv6: or link-local).
    fn gateway(
        &mut self,
        port_path: &str,
        raw: &Spanned<toml::Value>,
        kernel: Option<&Option<KernelPath>>,
        vlan: Option<Option<u16>>,
    ) -> Option<NextHop> {
        let path = format!("{port_path}.gateway");
        let texts: Vec<&toml::Value> = match raw.get_ref() {
            toml::Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        let parsed: Result<Vec<IpAddr>, String> = texts
            .iter()
            .map(|v| {
                let text = v.as_str().ok_or_else(|| {
                    format!(
                        "must be an address or a list of addresses like \"192.0.2.254\", got {v}"
                    )
                })?;
                let ip: IpAddr = text.parse().map_err(|_| {
                    format!("must be an IPv4 or IPv6 address like \"192.0.2.254\", got {text:?}")
                })?;
                if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                    return Err(format!("must be a unicast address, got {text:?}"));
                }
                if let IpAddr::V4(v4) = ip {
                    if v4.is_broadcast() {
                        return Err(format!("must be a unicast address, got {text:?}"));
                    }
                }
                Ok(ip)
            })
            .collect();
        let problem = match &parsed {
            Err(e) => Some(e.clone()),
            Ok(list) if list.is_empty() || list.len() > 2 => Some(format!(
                "must be one address, or a list of one IPv4 and one IPv6 address, got {} addresses",
                list.len()
            )),
            Ok(list) if list.len() == 2 && list[0].is_ipv4() == list[1].is_ipv4() => Some(
                "lists two addresses of one family; give at most one IPv4 and one IPv6 gateway"
                    .into(),
            ),
            Ok(_) if matches!(vlan, Some(Some(_))) => Some(
                "ARP/ND resolution is not supported on a VLAN-tagged port (vlan is set); give gateway_mac instead".into(),
            ),
            Ok(list) => match kernel {
                Some(None) => Some(
                    "needs [port.kernel] on this port: ARP/ND requests are sent from the appliance's address there, e.g. [port.kernel] tap = \"vipd0\", addresses = [\"192.0.2.1/24\"]".into(),
                ),
                // [port.kernel] invalid: reported there.
                None => return None,
                Some(Some(k)) => list.iter().find_map(|gw| {
                    let on_link = k.addresses.iter().any(|a| {
                        a.contains(*gw)
                            || matches!((a.address, gw), (IpAddr::V6(_), IpAddr::V6(g)) if g.segments()[0] & 0xffc0 == 0xfe80)
                    });
                    (!on_link).then(|| {
                        format!(
                            "{gw} is not on the subnet of any of {port_path}.kernel.addresses; add an address of that subnet (the ARP/ND source) or fix the gateway"
                        )
                    })
                }),
            },
        };
        match problem {
            Some(message) => {
                self.report(raw.span(), path, message);
                None
            }
            None => parsed.ok().map(NextHop::Resolve),
        }
    }

    fn admin(&mut self, raw: Option<&Spanned<RawAdmin>>) -> Option<AdminSettings> {
        let Some(raw) = raw else {
            return Some(AdminSettings::default());
        };
        let span = raw.span();
        let raw = raw.get_ref();
        let d = AdminSettings::default();
        let socket = self.field(span.clone(), "admin.socket".into(), raw.socket.as_ref(), Ok(d.socket), |text| {
            if text.starts_with('/') && text.len() < 108 {
                Ok(PathBuf::from(text))
            } else {
                Err(format!("must be an absolute path shorter than 108 bytes (a Unix socket limit), got {text:?}"))
            }
        });
        let max_request_bytes = self.int(
            span.clone(),
            "admin.max_request_bytes".into(),
            raw.max_request_bytes.as_ref(),
            Ok(d.max_request_bytes),
            256..=(16 << 20),
            " bytes",
        );
        let idle_timeout_ms = self.int(
            span,
            "admin.idle_timeout_ms".into(),
            raw.idle_timeout_ms.as_ref(),
            Ok(d.idle_timeout_ms),
            100..=3_600_000,
            " ms",
        );
        Some(AdminSettings {
            socket: socket?,
            max_request_bytes: max_request_bytes?,
            idle_timeout_ms: idle_timeout_ms?,
        })
    }

    fn health(
        &mut self,
        path: &str,
        vip_port: Option<NonZeroU16>,
        raw: &Spanned<RawHealth>,
    ) -> Option<HealthCheck> {
        let span = raw.span();
        let raw = raw.get_ref();
        let path = format!("{path}.health");
        let kind = self.field(
            span.clone(),
            format!("{path}.type"),
            raw.kind.as_ref(),
            Err("required: \"tcp\", \"http\" or \"https\""),
            |t| t.parse::<CheckKind>(),
        );
        let port = match vip_port {
            Some(p) => self.int(span.clone(), format!("{path}.port"), raw.port.as_ref(), Ok(p.get()), 1..=65535, ""),
            None => self.int(span.clone(), format!("{path}.port"), raw.port.as_ref(), Err("required for an all-ports VIP: the port to probe on each backend, e.g. port = 80"), 1..=65535, ""),
        }
        .and_then(NonZeroU16::new);
        let is_http = matches!(kind, Some(CheckKind::Http | CheckKind::Https));
        if !is_http {
            for (name, present) in [
                ("path", raw.path.is_some()),
                ("expect_status", raw.expect_status.is_some()),
                ("host", raw.host.is_some()),
                ("insecure_skip_verify", raw.insecure_skip_verify.is_some()),
            ] {
                if present && kind.is_some() {
                    self.report(
                        span.clone(),
                        format!("{path}.{name}"),
                        "only allowed with type = \"http\" or \"https\"; remove it or change type"
                            .to_string(),
                    );
                }
            }
        }
        if kind == Some(CheckKind::Http) && raw.insecure_skip_verify.is_some() {
            self.report(
                span.clone(),
                format!("{path}.insecure_skip_verify"),
                "only allowed with type = \"https\"".to_string(),
            );
        }
        let url_path = self.field(span.clone(), format!("{path}.path"), raw.path.as_ref(), Ok("/".to_string()), |p| {
            if p.starts_with('/') && p.len() <= 1024 && p.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(p.clone())
            } else {
                Err(format!("must start with \"/\", be printable ASCII without spaces and at most 1024 bytes, got {p:?}"))
            }
        });
        let expect_status = self.int(
            span.clone(),
            format!("{path}.expect_status"),
            raw.expect_status.as_ref(),
            Ok(200u16),
            100..=599,
            " (an HTTP status)",
        );
        let interval_ms = self.int(
            span.clone(),
            format!("{path}.interval_ms"),
            raw.interval_ms.as_ref(),
            Ok(2000u64),
            10..=3_600_000,
            " ms",
        );
        let iv = interval_ms.unwrap_or(3_600_000);
        let timeout_ms = self.int(
            span.clone(),
            format!("{path}.timeout_ms"),
            raw.timeout_ms.as_ref(),
            Ok(1000u64.min(iv)),
            1..=iv as i64,
            " ms (at most interval_ms)",
        );
        let jitter_ms = self.int(
            span.clone(),
            format!("{path}.jitter_ms"),
            raw.jitter_ms.as_ref(),
            Ok(0u64),
            0..=iv as i64,
            " ms (at most interval_ms)",
        );
        let rise = self.int(
            span.clone(),
            format!("{path}.rise"),
            raw.rise.as_ref(),
            Ok(2u8),
            1..=100,
            " consecutive successes",
        );
        let fall = self.int(
            span.clone(),
            format!("{path}.fall"),
            raw.fall.as_ref(),
            Ok(3u8),
            1..=100,
            " consecutive failures",
        );
        let insecure = raw
            .insecure_skip_verify
            .as_ref()
            .is_some_and(|v| *v.get_ref());
        let host = self.field(span, format!("{path}.host"), raw.host.as_ref(), Ok(None), |h| {
            if !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) {
                Ok(Some(h.clone()))
            } else {
                Err(format!("must be a host name (letters, digits, '-', '.', at most 255 bytes), got {h:?}"))
            }
        });
        Some(HealthCheck {
            kind: kind?,
            port: port?,
            path: url_path?,
            expect_status: expect_status?,
            interval_ms: interval_ms?,
            timeout_ms: timeout_ms?,
            jitter_ms: jitter_ms?,
            rise: rise?,
            fall: fall?,
            insecure_skip_verify: insecure,
            host: host?,
        })
    }

    fn vip(
        &mut self,
        index: usize,
        raw: &Spanned<RawVip>,
        seen: &mut HashMap<VipKey, (usize, usize)>,
    ) -> Option<Vip> {
        let span = raw.span();
        let raw = raw.get_ref();
        let path = format!("vip[{index}]");

        let address = self.field(
            span.clone(),
            format!("{path}.address"),
            raw.address.as_ref(),
            Err("required: the VIP's IPv4 or IPv6 address, e.g. address = \"192.0.2.10\""),
            |text| parse_ip(text),
        );
        let port = self.field(
            span.clone(),
            format!("{path}.port"),
            raw.port.as_ref(),
            Ok(None),
            |&port| match port {
                0 => Ok(None),
                _ => u16::try_from(port)
                    .ok()
                    .and_then(NonZeroU16::new)
                    .map(Some)
                    .ok_or_else(|| {
                        format!("must be 1..=65535, or 0 / absent for all ports, got {port}")
                    }),
            },
        );
        let protocol = self.field(
            span.clone(),
            format!("{path}.protocol"),
            raw.protocol.as_ref(),
            Err("required: \"tcp\" or \"udp\""),
            |text| text.parse::<Protocol>(),
        );
        let forwarding = self.field(
            span.clone(),
            format!("{path}.forwarding"),
            raw.forwarding.as_ref(),
            Ok(Forwarding::default()),
            |text| text.parse::<Forwarding>(),
        );
        let hash = self.field(
            span.clone(),
            format!("{path}.hash"),
            raw.hash.as_ref(),
            Ok(HashMode::default()),
            |text| text.parse::<HashMode>(),
        );
        let table_size = self.field(
            span.clone(),
            format!("{path}.table_size"),
            raw.table_size.as_ref(),
            Ok(TableSize::default()),
            |&slots| TableSize::from_slots(slots),
        );
        let encap_source_v4 = self.field(
            span.clone(),
            format!("{path}.encap_source_v4"),
            raw.encap_source_v4.as_ref(),
            Ok(None),
            |text| match parse_ip(text)? {
                IpAddr::V4(a) => Ok(Some(a)),
                IpAddr::V6(_) => Err(format!("must be an IPv4 address, got {text:?}")),
            },
        );
        let encap_source_v6 = self.field(
            span.clone(),
            format!("{path}.encap_source_v6"),
            raw.encap_source_v6.as_ref(),
            Ok(None),
            |text| match parse_ip(text)? {
                IpAddr::V6(a) => Ok(Some(a)),
                IpAddr::V4(_) => Err(format!("must be an IPv6 address, got {text:?}")),
            },
        );

        if let (Some(address), Some(port), Some(protocol)) = (address, port, protocol) {
            let key = VipKey {
                address,
                port,
                protocol,
            };
            let line = self.line(raw.address.as_ref().map_or(span.start, |a| a.span().start));
            if let Some(&(first_index, first_line)) = seen.get(&key) {
                self.report(
                    raw.address.as_ref().map_or(span.clone(), |a| a.span()),
                    path.clone(),
                    format!(
                        "duplicate of vip[{first_index}] (line {first_line}): \
                         both are {key}; each address, port and protocol may appear once"
                    ),
                );
            } else {
                seen.insert(key, (index, line));
            }
        }

        let mut backends = Vec::with_capacity(raw.backend.len());
        let mut seen_backends: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        let mut family_checked = [false; 2];
        for (b_index, raw_backend) in raw.backend.iter().enumerate() {
            let b_span = raw_backend.span();
            let raw_backend = raw_backend.get_ref();
            let b_path = format!("{path}.backend[{b_index}]");
            let b_address = self.field(
                b_span.clone(),
                format!("{b_path}.address"),
                raw_backend.address.as_ref(),
                Err("required: the backend's IPv4 or IPv6 address, e.g. address = \"10.0.1.1\""),
                |text| parse_ip(text),
            );
            let weight = self.field(
                b_span.clone(),
                format!("{b_path}.weight"),
                raw_backend.weight.as_ref(),
                Ok(NonZeroU16::MIN),
                |&weight| {
                    u16::try_from(weight)
                        .ok()
                        .and_then(NonZeroU16::new)
                        .ok_or_else(|| format!("must be 1..=65535, got {weight}"))
                },
            );
            let mac = self.field(
                b_span.clone(),
                format!("{b_path}.mac"),
                raw_backend.mac.as_ref(),
                Ok(None),
                |text| {
                    let mac = text.parse::<MacAddr>()?;
                    if mac.is_unicast() {
                        Ok(Some(mac))
                    } else {
                        Err(format!(
                            "must be a unicast MAC address (not multicast, broadcast or all zeros), got {text:?}"
                        ))
                    }
                },
            );
            if forwarding == Some(Forwarding::L2Dsr) && raw_backend.mac.is_none() {
                self.report(
                    b_span.clone(),
                    format!("{b_path}.mac"),
                    "required when forwarding = \"l2dsr\": the backend's MAC address, \
                     e.g. mac = \"02:00:00:00:00:01\""
                        .to_string(),
                );
            }

            let address_span = raw_backend
                .address
                .as_ref()
                .map_or(b_span.clone(), |a| a.span());
            if let Some(b_address) = b_address {
                if let Some(&(first_index, first_line)) = seen_backends.get(&b_address) {
                    self.report(
                        address_span.clone(),
                        format!("{b_path}.address"),
                        format!(
                            "duplicate of backend[{first_index}] (line {first_line}): \
                             {b_address} appears twice in {path}; list each backend once \
                             and use weight to give it a larger share"
                        ),
                    );
                } else {
                    let line = self.line(address_span.start);
                    seen_backends.insert(b_address, (b_index, line));
                }

                // Encapsulation needs an outer source of the backend's family.
                let (family, family_slot, source_missing, source_field) = match b_address {
                    IpAddr::V4(_) => ("IPv4", 0, raw.encap_source_v4.is_none(), "encap_source_v4"),
                    IpAddr::V6(_) => ("IPv6", 1, raw.encap_source_v6.is_none(), "encap_source_v6"),
                };
                let encapsulates = matches!(forwarding, Some(Forwarding::Ipip | Forwarding::Gue));
                if encapsulates && source_missing && !family_checked[family_slot] {
                    family_checked[family_slot] = true;
                    let mode = forwarding.map_or("", Forwarding::as_str);
                    self.report(
                        address_span,
                        format!("{path}.{source_field}"),
                        format!(
                            "required: backend[{b_index}] ({b_address}) is {family} and \
                             forwarding = \"{mode}\" needs an {family} outer source address; \
                             set {source_field} in {path}"
                        ),
                    );
                }
            }

            let health_port = self.field(
                b_span.clone(),
                format!("{b_path}.health_port"),
                raw_backend.health_port.as_ref(),
                Ok(None),
                |&p| {
                    u16::try_from(p)
                        .ok()
                        .and_then(NonZeroU16::new)
                        .map(Some)
                        .ok_or_else(|| format!("must be 1..=65535, got {p}"))
                },
            );
            if raw_backend.health_port.is_some() && raw.health.is_none() {
                self.report(
                    b_span.clone(),
                    format!("{b_path}.health_port"),
                    format!("only allowed when {path} has a [vip.health] check"),
                );
            }

            if let (Some(address), Some(weight), Some(mac), Some(health_port)) =
                (b_address, weight, mac, health_port)
            {
                backends.push(Backend {
                    address,
                    weight,
                    mac,
                    health_port,
                });
            }
        }

        // Outer None: invalid (reported); inner None: no check configured.
        let health: Option<Option<HealthCheck>> = match (&raw.health, port) {
            (None, _) => Some(None),
            (Some(h), Some(vip_port)) => self.health(&path, vip_port, h).map(Some),
            (Some(_), None) => None,
        };
        if let Some(bgp) = &raw.bgp {
            if !bgp.get_ref().is_table() {
                self.report(
                    bgp.span(),
                    format!("{path}.bgp"),
                    "must be a table: [vip.bgp]".to_string(),
                );
            }
        }

        Some(Vip {
            health: health?,
            bgp: raw.bgp.as_ref().map(|b| b.get_ref().clone()),
            address: address?,
            port: port?,
            protocol: protocol?,
            forwarding: forwarding?,
            hash: hash?,
            table_size: table_size?,
            encap_source_v4: encap_source_v4?,
            encap_source_v6: encap_source_v6?,
            backends,
        })
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map_err(|_| format!("must be an IPv4 or IPv6 address, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` expecting failure; returns the problems as `line: field: message` strings.
    fn problems(text: &str) -> Vec<String> {
        match parse(text, "vipd.toml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(err) => err.problems().iter().map(Problem::to_string).collect(),
        }
    }

    /// Asserts exactly one problem, and that it reads `expected`.
    fn assert_one(text: &str, expected: &str) {
        assert_eq!(problems(text), vec![expected.to_string()]);
    }

    const TCP_VIP: &str = "[[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n";

    #[test]
    fn example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vipd.toml");
        let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.vips().len(), 3);
        assert_eq!(config.backend_count(), 7);
        let https = &config.vips()[0];
        assert_eq!(https.key().to_string(), "tcp 192.0.2.10:443");
        assert_eq!(https.backends[2].weight.get(), 50);
        assert_eq!(https.encap_source_v6, Some("fd00::1".parse().unwrap()));
        let dns = &config.vips()[1];
        assert_eq!(dns.key().to_string(), "udp [2001:db8::53]:53");
        assert_eq!(
            (dns.forwarding, dns.hash),
            (Forwarding::Gue, HashMode::ThreeTuple)
        );
        assert_eq!(dns.backends[0].weight.get(), 1, "weight defaults to 1");
        let dsr = &config.vips()[2];
        assert_eq!(dsr.key().to_string(), "tcp 192.0.2.20:*");
        assert_eq!(dsr.table_size.slots(), 655_373);
        assert_eq!(dsr.backends[1].mac, Some(MacAddr([2, 0, 0, 0, 0x0a, 0x0c])));
        // The other sections.
        assert_eq!(config.dataplane.lcores, 1);
        assert!(config.dataplane.eal_args.contains(&"--no-huge".to_string()));
        assert_eq!(config.ports.len(), 1);
        assert_eq!(
            config.ports[0].gateway_mac().map(|m| m.to_string()),
            Some("02:00:00:00:00:fe".to_string())
        );
        assert_eq!(config.admin.socket, Path::new(DEFAULT_ADMIN_SOCKET));
        assert_eq!(config.metrics, Some("127.0.0.1:9110".parse().unwrap()));
        assert_eq!(config.panic_threshold, 50);
        let check = https.health.as_ref().unwrap();
        assert_eq!(
            (check.kind, check.port.get(), check.path.as_str()),
            (CheckKind::Https, 8443, "/healthz")
        );
        assert!(check.insecure_skip_verify);
        assert_eq!(
            https.backends[0].health_port.map(NonZeroU16::get),
            Some(9443)
        );
        assert!(https.bgp.is_some());
        assert_eq!(dns.health.as_ref().unwrap().kind, CheckKind::Tcp);
        assert!(dsr.health.is_none());
    }

    #[test]
    fn defaults_apply() {
        let config = parse(TCP_VIP, "vipd.toml").unwrap();
        let vip = &config.vips()[0];
        assert_eq!(vip.forwarding, Forwarding::Ipip);
        assert_eq!(vip.hash, HashMode::FiveTuple);
        assert_eq!(vip.table_size, TableSize::Standard);
        assert_eq!(vip.port.map(NonZeroU16::get), Some(80));
        assert!(vip.backends.is_empty());
        assert!(parse("", "vipd.toml").unwrap().vips().is_empty());
        let all_ports = parse(&TCP_VIP.replace("port = 80", "port = 0"), "x").unwrap();
        assert_eq!(all_ports.vips()[0].port, None);
    }

    #[test]
    fn backend_weight_out_of_range() {
        let text = format!("{TCP_VIP}\n[[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 0\n");
        assert_one(
            &text,
            "vipd.toml:9: vip[0].backend[0].weight: must be 1..=65535, got 0",
        );
        let text = text.replace("weight = 0", "weight = 65536");
        assert_one(
            &text,
            "vipd.toml:9: vip[0].backend[0].weight: must be 1..=65535, got 65536",
        );
        let text = text.replace("weight = 65536", "weight = 65535");
        assert!(parse(&text, "vipd.toml").is_ok());
    }

    #[test]
    fn second_vip_backend_error_names_both_indexes() {
        let text = format!(
            "{TCP_VIP}\n{}\n[[vip.backend]]\naddress = \"10.0.1.1\"\nweight = -3\n",
            TCP_VIP.replace("port = 80", "port = 81")
        );
        assert_one(
            &text,
            "vipd.toml:15: vip[1].backend[0].weight: must be 1..=65535, got -3",
        );
    }

    #[test]
    fn bad_vip_address() {
        assert_one(
            &TCP_VIP.replace("192.0.2.10", "192.0.2.300"),
            "vipd.toml:2: vip[0].address: must be an IPv4 or IPv6 address, got \"192.0.2.300\"",
        );
    }

    #[test]
    fn missing_required_fields_point_at_the_table() {
        let got = problems("# comment\n[[vip]]\nport = 80\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("vipd.toml:2: vip[0].address: required"),
            "{got:?}"
        );
        assert!(got[1].starts_with("vipd.toml:2: vip[0].protocol: required: \"tcp\" or \"udp\""));

        let got = problems(&format!("{TCP_VIP}\n[[vip.backend]]\nweight = 2\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("vipd.toml:7: vip[0].backend[0].address: required"));
    }

    #[test]
    fn bad_port() {
        for port in ["-1", "65536", "100000"] {
            assert_one(
                &TCP_VIP.replace("port = 80", &format!("port = {port}")),
                &format!(
                    "vipd.toml:3: vip[0].port: must be 1..=65535, or 0 / absent for all ports, got {port}"
                ),
            );
        }
    }

    #[test]
    fn bad_choices_list_the_allowed_spellings() {
        assert_one(
            &TCP_VIP.replace("\"tcp\"", "\"sctp\""),
            "vipd.toml:4: vip[0].protocol: must be \"tcp\" or \"udp\", got \"sctp\"",
        );
        assert_one(
            &format!("{TCP_VIP}forwarding = \"gre\"\n"),
            "vipd.toml:6: vip[0].forwarding: must be \"ipip\", \"gue\" or \"l2dsr\", got \"gre\"",
        );
        assert_one(
            &format!("{TCP_VIP}hash = \"4-tuple\"\n"),
            "vipd.toml:6: vip[0].hash: must be \"5-tuple\", \"3-tuple\" or \"dst-port\", got \"4-tuple\"",
        );
    }

    #[test]
    fn table_size_must_be_an_allowed_prime() {
        for size in ["65536", "65521", "0"] {
            assert_one(
                &format!("{TCP_VIP}table_size = {size}\n"),
                &format!(
                    "vipd.toml:6: vip[0].table_size: must be 65537 or 655373 (Maglev needs one of these primes), got {size}"
                ),
            );
        }
        let large = parse(&format!("{TCP_VIP}table_size = 655373\n"), "x").unwrap();
        assert_eq!(large.vips()[0].table_size, TableSize::Large);
    }

    #[test]
    fn encap_source_of_the_wrong_family() {
        assert_one(
            &TCP_VIP.replace("\"10.0.0.1\"", "\"fd00::1\""),
            "vipd.toml:5: vip[0].encap_source_v4: must be an IPv4 address, got \"fd00::1\"",
        );
        assert_one(
            &format!("{TCP_VIP}encap_source_v6 = \"10.0.0.2\"\n"),
            "vipd.toml:6: vip[0].encap_source_v6: must be an IPv6 address, got \"10.0.0.2\"",
        );
    }

    #[test]
    fn backend_family_needs_matching_encap_source() {
        let text = format!(
            "{TCP_VIP}\n[[vip.backend]]\naddress = \"10.0.1.1\"\n\n[[vip.backend]]\naddress = \"fd00::7\"\n\n[[vip.backend]]\naddress = \"fd00::8\"\n"
        );
        // Reported once per family, at the first backend that needs it.
        assert_one(
            &text,
            "vipd.toml:11: vip[0].encap_source_v6: required: backend[1] (fd00::7) is IPv6 and \
             forwarding = \"ipip\" needs an IPv6 outer source address; set encap_source_v6 in vip[0]",
        );
        let v4_missing = "[[vip]]\naddress = \"192.0.2.1\"\nprotocol = \"udp\"\nforwarding = \"gue\"\n\n[[vip.backend]]\naddress = \"10.0.1.1\"\n";
        let got = problems(v4_missing);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("vipd.toml:7: vip[0].encap_source_v4: required: backend[0] (10.0.1.1) is IPv4 and forwarding = \"gue\""),
            "{got:?}"
        );
        // L2 DSR does not encapsulate, so it needs no source address.
        let dsr = v4_missing.replace("\"gue\"", "\"l2dsr\"") + "mac = \"02:00:00:00:00:01\"\n";
        assert!(parse(&dsr, "x").is_ok());
    }

    #[test]
    fn l2dsr_backend_without_mac() {
        let text =
            "[[vip]]\naddress = \"192.0.2.1\"\nprotocol = \"tcp\"\nforwarding = \"l2dsr\"\n\n\
                    [[vip.backend]]\naddress = \"10.0.1.1\"\nmac = \"02:00:00:00:00:01\"\n\n\
                    [[vip.backend]]\naddress = \"10.0.1.2\"\n";
        let got = problems(text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "vipd.toml:10: vip[0].backend[1].mac: required when forwarding = \"l2dsr\""
            ),
            "{got:?}"
        );
    }

    #[test]
    fn bad_mac() {
        let base = "[[vip]]\naddress = \"192.0.2.1\"\nprotocol = \"tcp\"\nforwarding = \"l2dsr\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\n";
        for mac in [
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "0g:00:00:00:00:01",
            "2:00:00:00:00:01",
        ] {
            assert_one(
                &format!("{base}mac = \"{mac}\"\n"),
                &format!("vipd.toml:7: vip[0].backend[0].mac: must be a MAC address like \"02:00:00:00:00:01\", got \"{mac}\""),
            );
        }
        for mac in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            let got = problems(&format!("{base}mac = \"{mac}\"\n"));
            assert_eq!(got.len(), 1);
            assert!(got[0].starts_with("vipd.toml:7: vip[0].backend[0].mac: must be a unicast MAC"));
        }
        let ok = parse(&format!("{base}mac = \"02:AB:cd:00:00:01\"\n"), "x").unwrap();
        assert_eq!(
            ok.vips()[0].backends[0].mac.unwrap().to_string(),
            "02:ab:cd:00:00:01"
        );
    }

    #[test]
    fn duplicate_vip() {
        let text = format!("{TCP_VIP}\n{TCP_VIP}");
        assert_one(
            &text,
            "vipd.toml:8: vip[1]: duplicate of vip[0] (line 2): both are tcp 192.0.2.10:80; \
             each address, port and protocol may appear once",
        );
        // Same address and port with another protocol, or another port, is a different VIP.
        assert!(parse(
            &format!("{TCP_VIP}\n{}", TCP_VIP.replace("tcp", "udp")),
            "x"
        )
        .is_ok());
        assert!(parse(
            &format!("{TCP_VIP}\n{}", TCP_VIP.replace("80", "8080")),
            "x"
        )
        .is_ok());
        // Equal addresses spelled differently are still duplicates.
        let v6 = "[[vip]]\naddress = \"2001:db8::1\"\nprotocol = \"udp\"\n";
        let got = problems(&format!(
            "{v6}{}",
            v6.replace("2001:db8::1", "2001:DB8:0::1")
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("vipd.toml:5: vip[1]: duplicate of vip[0] (line 2)"));
    }

    #[test]
    fn duplicate_backend() {
        let text = format!(
            "{TCP_VIP}[[vip.backend]]\naddress = \"10.0.1.1\"\n[[vip.backend]]\naddress = \"10.0.1.2\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\n"
        );
        let got = problems(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "vipd.toml:11: vip[0].backend[2].address: duplicate of backend[0] (line 7): 10.0.1.1 appears twice in vip[0]"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn syntax_and_type_errors_carry_the_line() {
        let got = problems(&format!("{TCP_VIP}weight = 3\n"));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("vipd.toml:6: unknown field `weight`"),
            "{got:?}"
        );

        let got = problems(&TCP_VIP.replace("port = 80", "port = \"80\""));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("vipd.toml:3: invalid type: string \"80\""),
            "{got:?}"
        );

        let got = problems("[[vip]]\naddress = \"192.0.2.1\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("vipd.toml:2: "), "{got:?}");
    }

    #[test]
    fn all_problems_are_reported_in_line_order() {
        let text = "[[vip]]\naddress = \"nope\"\nprotocol = \"icmp\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 0\n";
        let got = problems(text);
        let lines: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap()).collect();
        // The encap source problem (line 5) is found after the weight (line 6) but sorted first.
        assert_eq!(
            lines,
            ["vipd.toml:2", "vipd.toml:3", "vipd.toml:5", "vipd.toml:6"],
            "{got:?}"
        );
    }

    #[test]
    fn load_reports_unreadable_file() {
        let err = load("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = load("/nonexistent/vipd.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err
            .to_string()
            .starts_with("/nonexistent/vipd.toml: cannot read config file"));
    }

    const PORT: &str = "[[port]]\nmac = \"02:00:00:00:00:01\"\n";
    const KERNEL: &str =
        "[port.kernel]\ntap = \"vipd0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n";

    #[test]
    fn port_with_a_kernel_path_and_a_resolved_gateway() {
        let text = format!(
            "{PORT}gateway = [\"192.0.2.254\", \"fe80::1\"]\nmtu = 9000\n{KERNEL}{TCP_VIP}"
        );
        let c = parse(&text, "x").unwrap();
        let p = &c.ports[0];
        assert_eq!(
            p.gateway,
            NextHop::Resolve(vec![
                "192.0.2.254".parse().unwrap(),
                "fe80::1".parse().unwrap()
            ])
        );
        assert_eq!(p.gateway_mac(), None);
        let k = p.kernel.as_ref().unwrap();
        assert_eq!(k.tap, "vipd0");
        assert_eq!(k.mtu, 9000, "the TAP's MTU defaults to the port's");
        assert_eq!(
            k.addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.0.2.1/24", "2001:db8::1/64"]
        );
        // One address is fine; a static MAC with a kernel path too.
        let one = format!("{PORT}gateway = \"2001:db8::fe\"\n{KERNEL}");
        assert!(parse(&one, "x").is_ok());
        let fixed = format!("{PORT}gateway_mac = \"02:00:00:00:00:fe\"\n{KERNEL}mtu = 1400\n");
        let c = parse(&fixed, "x").unwrap();
        assert_eq!(c.ports[0].kernel.as_ref().unwrap().mtu, 1400);
        assert!(IfAddr::from_str("10.1.2.3/8")
            .unwrap()
            .contains("10.200.0.1".parse().unwrap()));
        assert!(!IfAddr::from_str("10.1.2.3/32")
            .unwrap()
            .contains("10.1.2.4".parse().unwrap()));
        assert!(IfAddr::from_str("10.1.2.3/0")
            .unwrap()
            .contains("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn next_hop_and_kernel_path_errors() {
        let mac = "gateway_mac = \"02:00:00:00:00:fe\"\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("{PORT}{mac}gateway = \"192.0.2.254\"\n{KERNEL}"), "vipd.toml:4: port[0].gateway: give either gateway_mac (a static next-hop MAC) or gateway (addresses resolved by ARP/ND), not both"),
            (format!("{PORT}gateway = \"192.0.2.254\"\n"), "vipd.toml:3: port[0].gateway: needs [port.kernel] on this port"),
            (format!("{PORT}gateway = \"198.51.100.1\"\n{KERNEL}"), "vipd.toml:3: port[0].gateway: 198.51.100.1 is not on the subnet of any of port[0].kernel.addresses"),
            (format!("{PORT}gateway = \"gw\"\n{KERNEL}"), "vipd.toml:3: port[0].gateway: must be an IPv4 or IPv6 address like \"192.0.2.254\", got \"gw\""),
            (format!("{PORT}gateway = 7\n{KERNEL}"), "vipd.toml:3: port[0].gateway: must be an address or a list of addresses"),
            (format!("{PORT}gateway = \"255.255.255.255\"\n{KERNEL}"), "vipd.toml:3: port[0].gateway: must be a unicast address"),
            (format!("{PORT}gateway = [\"192.0.2.254\", \"192.0.2.253\"]\n{KERNEL}"), "vipd.toml:3: port[0].gateway: lists two addresses of one family"),
            (format!("{PORT}gateway = []\n{KERNEL}"), "vipd.toml:3: port[0].gateway: must be one address, or a list of one IPv4 and one IPv6 address, got 0"),
            (format!("{PORT}gateway = \"192.0.2.254\"\nvlan = 10\n{KERNEL}"), "vipd.toml:3: port[0].gateway: ARP/ND resolution is not supported on a VLAN-tagged port"),
            (format!("{PORT}{mac}[port.kernel]\naddresses = [\"192.0.2.1/24\"]\n"), "vipd.toml:4: port[0].kernel.tap: required: the name of the TAP interface"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"a/b\"\naddresses = [\"192.0.2.1/24\"]\n"), "vipd.toml:5: port[0].kernel.tap: must be an interface name of 1..=15"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\n"), "vipd.toml:4: port[0].kernel.addresses: required: the appliance's own addresses"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\naddresses = [\"192.0.2.1\"]\n"), "vipd.toml:6: port[0].kernel.addresses: must be an address with its prefix length like"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\naddresses = [\"192.0.2.1/33\"]\n"), "vipd.toml:6: port[0].kernel.addresses: prefix length 33 is longer than 32 bits"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\naddresses = [\"224.0.0.1/4\"]\n"), "vipd.toml:6: port[0].kernel.addresses: must be a unicast address of this host"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\naddresses = []\n"), "vipd.toml:6: port[0].kernel.addresses: must list at least one address"),
            (format!("{PORT}{mac}[port.kernel]\ntap = \"vipd0\"\naddresses = [\"192.0.2.1/24\", \"192.0.2.1/25\"]\n"), "vipd.toml:6: port[0].kernel.addresses: lists 192.0.2.1 twice"),
            (format!("{PORT}{mac}{KERNEL}mtu = 70000\n"), "vipd.toml:7: port[0].kernel.mtu: must be 576..=9216, got 70000"),
            (format!("{PORT}{mac}{KERNEL}tun = \"x\"\n"), "vipd.toml:7: unknown field `tun`, expected one of `tap`, `addresses`, `mtu`"),
            (format!("{PORT}{mac}{KERNEL}{PORT}{mac}{}", KERNEL.replace("vipd0", "vipd1")), "vipd.toml:10: port[1].kernel: only one [[port]] may have a kernel exception path"),
        ];
        for (text, expected) in &cases {
            let got = problems(text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert!(
                got[0].to_string().starts_with(expected),
                "{text}\n  got:      {}\n  expected: {expected}",
                got[0]
            );
        }
    }

    /// Every new section's validation errors, each located and saying what is allowed.
    #[test]
    fn section_errors_name_line_field_and_allowed_values() {
        let cases: &[(&str, &str)] = &[
            ("[dataplane]\nlcores = 0\n", "vipd.toml:2: dataplane.lcores: must be 1..=128 polling cores, got 0"),
            ("[dataplane]\ncpus = [1, -2]\n", "vipd.toml:2: dataplane.cpus: must list CPU ids 0..=4095, got -2"),
            ("[dataplane]\nflow_table_capacity = 10\n", "vipd.toml:2: dataplane.flow_table_capacity: must be 1024..=67108864 flow entries per lcore, got 10"),
            ("[dataplane]\neal_args = [1]\n", "vipd.toml:2: invalid type: integer `1`, expected a string"),
            ("[[port]]\ngateway_mac = \"02:00:00:00:00:fe\"\n", "vipd.toml:1: port[0].mac: required: the port's MAC address"),
            ("[[port]]\nmac = \"02:00:00:00:00:01\"\n", "vipd.toml:1: port[0].gateway: required: the next hop towards the backends, either gateway = "),
            ("[[port]]\nmac = \"ff:ff:ff:ff:ff:ff\"\ngateway_mac = \"02:00:00:00:00:fe\"\n", "vipd.toml:2: port[0].mac: must be a unicast MAC"),
            ("[[port]]\nmac = \"02:00:00:00:00:01\"\ngateway_mac = \"02:00:00:00:00:fe\"\nmtu = 100\n", "vipd.toml:4: port[0].mtu: must be 576..=9216, got 100"),
            ("[[port]]\nmac = \"02:00:00:00:00:01\"\ngateway_mac = \"02:00:00:00:00:fe\"\nvlan = 4095\n", "vipd.toml:4: port[0].vlan: must be a VLAN id 1..=4094, or absent for untagged, got 4095"),
            ("[admin]\nsocket = \"admin.sock\"\n", "vipd.toml:2: admin.socket: must be an absolute path shorter than 108 bytes"),
            ("[admin]\nmax_request_bytes = 1\n", "vipd.toml:2: admin.max_request_bytes: must be 256..=16777216 bytes, got 1"),
            ("[admin]\nidle_timeout_ms = 5\n", "vipd.toml:2: admin.idle_timeout_ms: must be 100..=3600000 ms, got 5"),
            ("[admin]\nsokcet = \"/x\"\n", "vipd.toml:2: unknown field `sokcet`, expected one of"),
            ("[metrics]\naddress = \"localhost\"\n", "vipd.toml:2: metrics.address: must be an address and port like"),
            ("[metrics]\n", "vipd.toml:1: metrics.address: required in [metrics]"),
            ("[health]\npanic_threshold = 101\n", "vipd.toml:2: health.panic_threshold: must be a percentage 0..=100"),
            ("bgp = 3\n", "vipd.toml:1: bgp: must be a table: [bgp]"),
        ];
        for (text, expected) in cases {
            let got = problems(text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert!(
                got[0].starts_with(expected),
                "{text}:\n got  {}\n want {expected}",
                got[0]
            );
        }
    }

    #[test]
    fn health_check_errors() {
        let h = |extra: &str| format!("{TCP_VIP}[vip.health]\n{extra}");
        let cases: Vec<(String, &str)> = vec![
            (h("port = 80\n"), "vipd.toml:6: vip[0].health.type: required: \"tcp\", \"http\" or \"https\""),
            (h("type = \"icmp\"\n"), "vipd.toml:7: vip[0].health.type: must be \"tcp\", \"http\" or \"https\", got \"icmp\""),
            (h("type = \"tcp\"\npath = \"/x\"\n"), "vipd.toml:6: vip[0].health.path: only allowed with type = \"http\" or \"https\""),
            (h("type = \"http\"\ninsecure_skip_verify = true\n"), "vipd.toml:6: vip[0].health.insecure_skip_verify: only allowed with type = \"https\""),
            (h("type = \"http\"\npath = \"healthz\"\n"), "vipd.toml:8: vip[0].health.path: must start with \"/\""),
            (h("type = \"http\"\nexpect_status = 99\n"), "vipd.toml:8: vip[0].health.expect_status: must be 100..=599 (an HTTP status), got 99"),
            (h("type = \"tcp\"\ninterval_ms = 5\n"), "vipd.toml:8: vip[0].health.interval_ms: must be 10..=3600000 ms, got 5"),
            (h("type = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 200\n"), "vipd.toml:9: vip[0].health.timeout_ms: must be 1..=100 ms (at most interval_ms), got 200"),
            (h("type = \"tcp\"\ninterval_ms = 100\njitter_ms = 101\n"), "vipd.toml:9: vip[0].health.jitter_ms: must be 0..=100 ms (at most interval_ms), got 101"),
            (h("type = \"tcp\"\nrise = 0\n"), "vipd.toml:8: vip[0].health.rise: must be 1..=100 consecutive successes, got 0"),
            (h("type = \"tcp\"\nfall = 101\n"), "vipd.toml:8: vip[0].health.fall: must be 1..=100 consecutive failures, got 101"),
            (h("type = \"tcp\"\nport = 0\n"), "vipd.toml:8: vip[0].health.port: must be 1..=65535, got 0"),
            (h("type = \"http\"\nhost = \"a b\"\n"), "vipd.toml:8: vip[0].health.host: must be a host name"),
            (h("type = \"tcp\"\nretries = 1\n"), "vipd.toml:8: unknown field `retries`"),
            (format!("{}[vip.health]\ntype = \"tcp\"\n", TCP_VIP.replace("port = 80\n", "")), "vipd.toml:5: vip[0].health.port: required for an all-ports VIP"),
            (format!("{TCP_VIP}[[vip.backend]]\naddress = \"10.0.1.1\"\nhealth_port = 80\n"), "vipd.toml:6: vip[0].backend[0].health_port: only allowed when vip[0] has a [vip.health] check"),
            (format!("{TCP_VIP}[vip.health]\ntype = \"tcp\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\nhealth_port = 70000\n"), "vipd.toml:10: vip[0].backend[0].health_port: must be 1..=65535, got 70000"),
            (format!("{TCP_VIP}bgp = 1\n"), "vipd.toml:6: vip[0].bgp: must be a table: [vip.bgp]"),
        ];
        for (text, expected) in &cases {
            let got = problems(text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert!(
                got[0].starts_with(expected),
                "{text}:\n got  {}\n want {expected}",
                got[0]
            );
        }
    }

    #[test]
    fn health_defaults_and_sections_parse() {
        let text = format!("{TCP_VIP}[vip.health]\ntype = \"http\"\n[vip.bgp]\nmed = 10\n[bgp]\nlocal_as = 65001\n[dataplane]\nlcores = 2\ncpus = [2, 3]\n[[port]]\nmac = \"02:00:00:00:00:01\"\ngateway_mac = \"02:00:00:00:00:fe\"\n");
        let c = parse(&text, "x").unwrap();
        let h = c.vips()[0].health.clone().unwrap();
        assert_eq!(
            (h.kind, h.port.get(), h.path.as_str(), h.expect_status),
            (CheckKind::Http, 80, "/", 200)
        );
        assert_eq!(
            (h.interval_ms, h.timeout_ms, h.jitter_ms, h.rise, h.fall),
            (2000, 1000, 0, 2, 3)
        );
        assert!(!h.insecure_skip_verify);
        assert_eq!(
            c.vips()[0]
                .bgp
                .as_ref()
                .and_then(|b| b.get("med"))
                .and_then(|v| v.as_integer()),
            Some(10)
        );
        assert_eq!(
            c.bgp()
                .and_then(|b| b.get("local_as"))
                .and_then(|v| v.as_integer()),
            Some(65001)
        );
        assert_eq!(
            (c.dataplane.lcores, c.dataplane.cpus.as_slice()),
            (2, &[2usize, 3][..])
        );
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.panic_threshold, 50);
        assert_eq!(c.admin, AdminSettings::default());
        assert_eq!(c.metrics, None);
    }

    #[test]
    fn bgp_hook_problems_are_located_at_the_bgp_table() {
        fn section(v: &toml::Value) -> Vec<String> {
            if v.get("local_as").is_none() {
                vec!["local_as: required".to_string()]
            } else {
                Vec::new()
            }
        }
        fn vip_policy(v: &toml::Value) -> Vec<String> {
            if v.get("med").is_some_and(|m| m.as_integer().is_none()) {
                vec!["med: a number".to_string()]
            } else {
                Vec::new()
            }
        }
        let hook = Some(BgpCheck {
            section,
            vip_policy,
        });
        let err = parse_with("# c\n[bgp]\nrouter_id = \"1.2.3.4\"\n", "f", hook).unwrap_err();
        assert_eq!(
            err.problems()[0].to_string(),
            "f:2: bgp: local_as: required"
        );
        assert!(parse_with("[bgp]\nlocal_as = 1\n", "f", hook).is_ok());
        assert!(parse_with("", "f", hook).is_ok(), "no [bgp]: BGP disabled");
        let vip = "[[vip]]\naddress = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n\
                   encap_source_v4 = \"10.0.0.1\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\n";
        assert!(parse_with(&format!("{vip}[vip.bgp]\nmed = 5\n"), "f", hook).is_ok());
        let err = parse_with(&format!("{vip}[vip.bgp]\nmed = \"x\"\n"), "f", hook).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(
            err.problems()[0]
                .to_string()
                .ends_with("vip[0].bgp: med: a number"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Any text, valid TOML or not, gives a config or located problems, never a panic.
        #[test]
        fn parse_never_panics(text in "(\\PC|\n){0,200}") {
            if let Err(err) = parse(&text, "f") {
                let lines = text.lines().count().max(1);
                for problem in err.problems() {
                    proptest::prop_assert!(problem.line >= 1 && problem.line <= lines + 1);
                }
            }
        }

        /// Corrupting one byte of the example never panics, and any problem points inside it.
        #[test]
        fn mutated_example_never_panics(offset in 0usize..2000, byte in 0x20u8..0x7f) {
            let mut text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vipd.toml")).unwrap();
            let offset = offset % text.len();
            text[offset] = byte;
            let text = String::from_utf8(text).unwrap();
            if let Err(err) = parse(&text, "f") {
                proptest::prop_assert!(!err.problems().is_empty());
                for problem in err.problems() {
                    proptest::prop_assert!(problem.line <= text.lines().count() + 1);
                }
            }
        }
    }
}
