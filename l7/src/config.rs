//! The vip-l7 configuration file (`/etc/vipd/l7.toml`): schema, parsing and validation.
//!
//! The file is deserialised with unknown fields rejected (a typo is an error, not a silently
//! ignored setting), then checked into a [`Config`]. Every error names the file, the line and the
//! field path (`clusters.web.upstreams[1].address`) and says what is allowed.
//!
//! ```toml
//! [admin]
//! socket = "/run/vip-l7/admin.sock"     # default
//! drain_timeout_ms = 10000              # SIGTERM: how long in-flight requests may finish
//! access_log = true                     # one line per request on stdout
//! [metrics]
//! listen = "127.0.0.1:9102"             # optional Prometheus endpoint
//! [tls]
//! ticket_keys = "/etc/vipd/l7-tickets.keys"  # optional: session-ticket keys shared by every
//!                                       # vip-l7 behind a VIP (see `crate::tickets`); re-read on reload
//!
//! [[listeners]]
//! name = "web"
//! address = "0.0.0.0:443"
//! tls = true                            # https: needs [[listeners.certificates]]
//! header_read_timeout_ms = 10000        # slowloris guard; also closes idle h1 keep-alive
//! idle_timeout_ms = 60000               # no request in flight this long: close (h2: GOAWAY);
//!                                       # also a write the client takes none of this long
//! max_header_bytes = 16384              # 431 above
//! max_uri_bytes = 8192                  # 414 above
//! request_id_in_response = false        # also send X-Request-Id back on proxied responses
//! [[listeners.certificates]]            # the first one is the default when SNI matches none
//! cert = "/etc/vipd/www.pem"
//! key = "/etc/vipd/www.key"
//! names = ["www.example.com", "*.example.com"]   # SNI names this certificate serves
//!
//! [[routes]]
//! host = "*.example.com"                # optional
//! path_prefix = "/api"                  # or path_exact; optional
//! headers = { "x-canary" = "1" }        # optional
//! cluster = "api"
//!
//! [clusters.api]
//! balancer = "p2c"   # round_robin | weighted_round_robin | least_request | p2c | peak_ewma | consistent_hash
//! hash_on = { header = "x-user" }       # consistent_hash: header / cookie / source_ip = true
//! protocol = "http1"                    # http1 | h2
//! tls = { server_name = "api.internal", ca = "/etc/vipd/ca.pem" }   # optional upstream TLS
//! connect_timeout_ms = 1000
//! request_timeout_ms = 15000
//! idle_timeout_ms = 90000
//! slow_start_ms = 0
//! sticky_cookie = "vip_l7_sticky"       # optional
//! health = { path = "/healthz", interval_ms = 2000, timeout_ms = 1000, rise = 2, fall = 3 }
//! outlier = { consecutive_errors = 5, base_ejection_ms = 30000, max_ejection_percent = 50 }
//! retry = { attempts = 2, budget_percent = 20, min_concurrent = 3 }
//! circuit = { max_connections = 1024, max_pending = 1024, max_requests = 1024 }
//! rate_limit = { per_second = 100, burst = 200, key = "client_ip" }   # or key_header = "x-api-key"
//! [[clusters.api.upstreams]]
//! address = "10.0.0.7:8080"
//! weight = 1                            # 1..=65535
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::route::{PathMatch, RouteSpec, RouteTable};

/// Where vip-l7 reads its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vipd/l7.toml";
/// Default admin socket path.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/vip-l7/admin.sock";

/// A configuration error: file, line (when known), field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path, e.g. `clusters.web.upstreams[0].address`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw schema (serde).

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    clusters: BTreeMap<String, RawCluster>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<PathBuf>,
    drain_timeout_ms: Option<u64>,
    access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ticket_keys: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    address: Spanned<String>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    certificates: Vec<RawCert>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    max_uri_bytes: Option<usize>,
    #[serde(default)]
    request_id_in_response: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    path_exact: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    cluster: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    balancer: Option<Spanned<String>>,
    hash_on: Option<RawHashOn>,
    protocol: Option<Spanned<String>>,
    tls: Option<RawUpstreamTls>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    slow_start_ms: Option<u64>,
    sticky_cookie: Option<String>,
    health: Option<RawHealth>,
    outlier: Option<RawOutlier>,
    retry: Option<RawRetry>,
    circuit: Option<RawCircuit>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHashOn {
    header: Option<String>,
    cookie: Option<String>,
    #[serde(default)]
    source_ip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    server_name: Option<String>,
    ca: Option<Spanned<PathBuf>>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutlier {
    consecutive_errors: Option<u32>,
    base_ejection_ms: Option<u64>,
    max_ejection_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    budget_percent: Option<u32>,
    min_concurrent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCircuit {
    max_connections: Option<u32>,
    max_pending: Option<u32>,
    max_requests: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: f64,
    burst: Option<f64>,
    key: Option<String>,
    key_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Whether to write one access-log line per request (stdout).
    pub access_log: bool,
    /// Prometheus listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Session-ticket key file shared between vip-l7 processes (`[tls] ticket_keys`); its
    /// contents are read when listeners are set up, at start and on every reload.
    pub ticket_keys: Option<PathBuf>,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Routes (validated into a table by [`Config::route_table`]).
    pub routes: Vec<RouteSpec>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
}

impl Config {
    /// The route table (validated during parsing, so this cannot fail for a parsed config).
    pub fn route_table(&self) -> Result<RouteTable, crate::route::RouteError> {
        RouteTable::new(self.routes.clone())
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name used in logs and metrics.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// Certificates for TLS (empty for plain HTTP); the first is the default.
    pub certificates: Vec<CertFiles>,
    /// How long a client may take to send a request head, counted from the end of the
    /// previous response on a keep-alive connection (so it is also the h1 idle timeout).
    pub header_read_timeout: Duration,
    /// A client connection (h1 or h2) with no request in flight for this long is closed; on h2
    /// with a GOAWAY. Also how long a write to a client that takes none of it may wait before
    /// the connection is closed ([`crate::stall::WriteStall`]).
    pub idle_timeout: Duration,
    /// Largest request head (431 above).
    pub max_header_bytes: usize,
    /// Longest request target (414 above).
    pub max_uri_bytes: usize,
    /// Whether proxied responses carry the request's X-Request-Id back to the client (Envoy's
    /// `always_set_request_id_in_response`; off by default, as there and in HAProxy and nginx).
    /// Responses vip-l7 makes itself (502, 503, 429, ...) always carry it.
    pub request_id_in_response: bool,
}

impl Listener {
    /// Whether this is an HTTPS listener.
    pub fn is_tls(&self) -> bool {
        !self.certificates.is_empty()
    }
}

/// A certificate chain and key file pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// SNI names served with this certificate (`www.example.com`, `*.example.com`).
    pub names: Vec<String>,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// Round robin over available upstreams.
    RoundRobin,
    /// Smooth weighted round robin.
    WeightedRoundRobin,
    /// Fewest active requests per weight.
    LeastRequest,
    /// Power of two random choices, fewer active requests wins.
    P2c,
    /// Consistent hash (Maglev) on a request key.
    ConsistentHash,
    /// Peak-EWMA latency times outstanding requests, over two random choices.
    PeakEwma,
}

impl Balancer {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "round_robin",
            Balancer::WeightedRoundRobin => "weighted_round_robin",
            Balancer::LeastRequest => "least_request",
            Balancer::P2c => "p2c",
            Balancer::ConsistentHash => "consistent_hash",
            Balancer::PeakEwma => "peak_ewma",
        }
    }
}

/// What a consistent hash is computed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (or h2 when TLS ALPN picks it).
    Http1,
    /// HTTP/2 only (prior knowledge on plain TCP).
    H2,
}

/// TLS towards upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI and verified name; defaults to the upstream's IP.
    pub server_name: Option<String>,
    /// CA bundle; absent = no trusted roots unless `insecure_skip_verify`.
    pub ca: Option<PathBuf>,
    /// Skip certificate verification (lab use only).
    pub insecure_skip_verify: bool,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Path to GET; 2xx/3xx is healthy.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
}

/// Passive outlier detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive 5xx / gateway errors that eject an upstream.
    pub consecutive_errors: u32,
    /// First ejection time; the n-th ejection lasts n times this.
    pub base_ejection: Duration,
    /// Largest share of upstreams ejected at once, percent.
    pub max_ejection_percent: u32,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts (1 = no retry).
    pub attempts: u32,
    /// Retries in flight may be at most this share of active requests, percent.
    pub budget_percent: u32,
    /// Retries always allowed up to this many concurrent retries.
    pub min_concurrent: u32,
}

/// Circuit breaker limits per cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    /// Open upstream connections.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending: u32,
    /// Requests in flight.
    pub max_requests: u32,
}

/// Token bucket rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Refill rate.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
    /// Key: `None` = client IP, `Some(h)` = the value of header `h`.
    pub key_header: Option<String>,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Address.
    pub address: SocketAddr,
    /// Weight 1..=65535.
    pub weight: u32,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Balancer.
    pub balancer: Balancer,
    /// Hash key for [`Balancer::ConsistentHash`].
    pub hash_on: Option<HashOn>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Upstream TLS.
    pub tls: Option<UpstreamTls>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (until response headers).
    pub request_timeout: Duration,
    /// Pooled idle connection lifetime.
    pub idle_timeout: Duration,
    /// Slow start ramp for new or recovered upstreams (zero = off).
    pub slow_start: Duration,
    /// Sticky cookie name.
    pub sticky_cookie: Option<String>,
    /// Active health checks.
    pub health: Option<Health>,
    /// Outlier detection.
    pub outlier: Outlier,
    /// Retries.
    pub retry: Retry,
    /// Circuit breaker.
    pub circuit: Circuit,
    /// Rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Upstreams.
    pub upstreams: Vec<Upstream>,
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(path, &text)
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<Range<usize>>, field: String, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s)),
            field,
            message,
        }
    }
}

/// Parses and validates configuration text; `file` is used in error messages and to resolve
/// relative certificate paths.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let cx = Ctx { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        cx.err(e.span(), String::new(), msg)
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| -> PathBuf {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    // Every duration is in milliseconds, at least `min` and at most one day.
    let ms = |v: Option<u64>, d: u64, min: u64, field: &dyn Fn() -> String| {
        let v = v.unwrap_or(d);
        if v < min || v > 86_400_000 {
            return Err(cx.err(
                None,
                field(),
                format!("must be {min}..=86400000 milliseconds, got {v}"),
            ));
        }
        Ok(Duration::from_millis(v))
    };

    let metrics_listen = match &raw.metrics {
        Some(m) => Some(m.listen.get_ref().parse::<SocketAddr>().map_err(|_| {
            cx.err(
                Some(m.listen.span()),
                "metrics.listen".into(),
                format!("{:?} is not an ip:port address", m.listen.get_ref()),
            )
        })?),
        None => None,
    };

    let ticket_keys = match raw.tls.as_ref().and_then(|t| t.ticket_keys.as_ref()) {
        Some(p) => {
            let path = resolve(p.get_ref());
            if !path.is_file() {
                return Err(cx.err(
                    Some(p.span()),
                    "tls.ticket_keys".into(),
                    format!(
                        "{} does not exist or is not a file; make one with `openssl rand -hex 48 > FILE`",
                        path.display()
                    ),
                ));
            }
            Some(path)
        }
        None => None,
    };

    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        return Err(cx.err(
            None,
            "listeners".into(),
            "no [[listeners]]; add at least one with an address".into(),
        ));
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let field = format!("listeners[{i}]");
        let address = l.address.get_ref().parse::<SocketAddr>().map_err(|_| {
            cx.err(
                Some(l.address.span()),
                format!("{field}.address"),
                format!(
                    "{:?} is not an ip:port address (e.g. \"0.0.0.0:443\")",
                    l.address.get_ref()
                ),
            )
        })?;
        if let Some(j) = listeners
            .iter()
            .position(|o: &Listener| o.address == address)
        {
            return Err(cx.err(
                Some(l.address.span()),
                format!("{field}.address"),
                format!("{address} is already the address of listeners[{j}]; give each listener its own address"),
            ));
        }
        if l.tls && l.certificates.is_empty() {
            return Err(cx.err(
                Some(l.address.span()),
                format!("{field}.certificates"),
                "tls = true needs at least one [[listeners.certificates]] with cert and key".into(),
            ));
        }
        if !l.tls && !l.certificates.is_empty() {
            return Err(cx.err(
                Some(l.address.span()),
                format!("{field}.tls"),
                "certificates are given but tls is not true; set tls = true".into(),
            ));
        }
        let mut certificates = Vec::new();
        for (j, c) in l.certificates.iter().enumerate() {
            for (what, p) in [("cert", &c.cert), ("key", &c.key)] {
                let path = resolve(p.get_ref());
                if !path.is_file() {
                    return Err(cx.err(
                        Some(p.span()),
                        format!("{field}.certificates[{j}].{what}"),
                        format!("{} does not exist or is not a file", path.display()),
                    ));
                }
            }
            certificates.push(CertFiles {
                cert: resolve(c.cert.get_ref()),
                key: resolve(c.key.get_ref()),
                names: c.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            });
        }
        let max_header_bytes = l.max_header_bytes.unwrap_or(16 * 1024);
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(cx.err(
                Some(l.address.span()),
                format!("{field}.max_header_bytes"),
                format!("must be 1024..=1048576, got {max_header_bytes}"),
            ));
        }
        listeners.push(Listener {
            name: l.name.clone().unwrap_or_else(|| format!("listener{i}")),
            address,
            certificates,
            header_read_timeout: ms(l.header_read_timeout_ms, 10_000, 1, &|| {
                format!("{field}.header_read_timeout_ms")
            })?,
            idle_timeout: ms(l.idle_timeout_ms, 60_000, 1, &|| {
                format!("{field}.idle_timeout_ms")
            })?,
            max_header_bytes,
            max_uri_bytes: l.max_uri_bytes.unwrap_or(8192),
            request_id_in_response: l.request_id_in_response,
        });
    }

    let mut clusters = BTreeMap::new();
    for (name, c) in &raw.clusters {
        let field = format!("clusters.{name}");
        let balancer = match c.balancer.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
            None | Some(("p2c", _)) => Balancer::P2c,
            Some(("round_robin", _)) => Balancer::RoundRobin,
            Some(("weighted_round_robin", _)) => Balancer::WeightedRoundRobin,
            Some(("least_request", _)) => Balancer::LeastRequest,
            Some(("consistent_hash", _)) => Balancer::ConsistentHash,
            Some(("peak_ewma", _)) => Balancer::PeakEwma,
            Some((other, span)) => {
                return Err(cx.err(
                    Some(span),
                    format!("{field}.balancer"),
                    format!("unknown balancer {other:?}; use round_robin, weighted_round_robin, least_request, p2c, consistent_hash or peak_ewma"),
                ))
            }
        };
        let hash_on =
            match &c.hash_on {
                None => None,
                Some(h) => Some(match (&h.header, &h.cookie, h.source_ip) {
                    (Some(hd), None, false) => HashOn::Header(hd.to_ascii_lowercase()),
                    (None, Some(ck), false) => HashOn::Cookie(ck.clone()),
                    (None, None, true) => HashOn::SourceIp,
                    _ => return Err(cx.err(
                        c.balancer.as_ref().map(|b| b.span()),
                        format!("{field}.hash_on"),
                        "give exactly one of header = \"..\", cookie = \"..\" or source_ip = true"
                            .into(),
                    )),
                }),
            };
        if balancer == Balancer::ConsistentHash && hash_on.is_none() {
            return Err(cx.err(
                c.balancer.as_ref().map(|b| b.span()),
                format!("{field}.hash_on"),
                "consistent_hash needs hash_on = { header = \"..\" }, { cookie = \"..\" } or { source_ip = true }".into(),
            ));
        }
        let protocol = match c
            .protocol
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("http1", _)) => UpstreamProtocol::Http1,
            Some(("h2", _)) => UpstreamProtocol::H2,
            Some((other, span)) => {
                return Err(cx.err(
                    Some(span),
                    format!("{field}.protocol"),
                    format!("unknown protocol {other:?}; use http1 or h2"),
                ))
            }
        };
        let tls = match &c.tls {
            None => None,
            Some(t) => {
                if let Some(ca) = &t.ca {
                    let p = resolve(ca.get_ref());
                    if !p.is_file() {
                        return Err(cx.err(
                            Some(ca.span()),
                            format!("{field}.tls.ca"),
                            format!("{} does not exist or is not a file", p.display()),
                        ));
                    }
                }
                Some(UpstreamTls {
                    server_name: t.server_name.clone(),
                    ca: t.ca.as_ref().map(|c| resolve(c.get_ref())),
                    insecure_skip_verify: t.insecure_skip_verify,
                })
            }
        };
        if c.upstreams.is_empty() {
            return Err(cx.err(
                None,
                format!("{field}.upstreams"),
                "cluster has no upstreams; add [[clusters.NAME.upstreams]] with an address".into(),
            ));
        }
        let mut upstreams: Vec<Upstream> = Vec::new();
        for (j, u) in c.upstreams.iter().enumerate() {
            let address = u.address.get_ref().parse::<SocketAddr>().map_err(|_| {
                cx.err(
                    Some(u.address.span()),
                    format!("{field}.upstreams[{j}].address"),
                    format!("{:?} is not an ip:port address", u.address.get_ref()),
                )
            })?;
            if upstreams.iter().any(|x| x.address == address) {
                return Err(cx.err(
                    Some(u.address.span()),
                    format!("{field}.upstreams[{j}].address"),
                    format!("{address} is listed twice in this cluster"),
                ));
            }
            let weight = match &u.weight {
                None => 1,
                Some(w) if (1..=65535).contains(w.get_ref()) => *w.get_ref() as u32,
                Some(w) => {
                    return Err(cx.err(
                        Some(w.span()),
                        format!("{field}.upstreams[{j}].weight"),
                        format!(
                            "upstream {address}: weight must be 1..=65535, got {}",
                            w.get_ref()
                        ),
                    ))
                }
            };
            upstreams.push(Upstream { address, weight });
        }
        let health = match c.health.as_ref() {
            None => None,
            Some(h) => Some(Health {
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                interval: ms(h.interval_ms, 2000, 10, &|| {
                    format!("{field}.health.interval_ms")
                })?,
                timeout: ms(h.timeout_ms, 1000, 1, &|| {
                    format!("{field}.health.timeout_ms")
                })?,
                rise: h.rise.unwrap_or(2).max(1),
                fall: h.fall.unwrap_or(3).max(1),
            }),
        };
        if let Some(h) = &health {
            if !h.path.starts_with('/') {
                return Err(cx.err(
                    None,
                    format!("{field}.health.path"),
                    format!("{:?} must start with '/'", h.path),
                ));
            }
        }
        let outlier = Outlier {
            consecutive_errors: c
                .outlier
                .as_ref()
                .and_then(|o| o.consecutive_errors)
                .unwrap_or(5)
                .max(1),
            base_ejection: ms(
                c.outlier.as_ref().and_then(|o| o.base_ejection_ms),
                30_000,
                1,
                &|| format!("{field}.outlier.base_ejection_ms"),
            )?,
            max_ejection_percent: c
                .outlier
                .as_ref()
                .and_then(|o| o.max_ejection_percent)
                .unwrap_or(50)
                .min(100),
        };
        let retry = Retry {
            attempts: c
                .retry
                .as_ref()
                .and_then(|r| r.attempts)
                .unwrap_or(2)
                .clamp(1, 10),
            budget_percent: c
                .retry
                .as_ref()
                .and_then(|r| r.budget_percent)
                .unwrap_or(20),
            min_concurrent: c.retry.as_ref().and_then(|r| r.min_concurrent).unwrap_or(3),
        };
        let circuit = Circuit {
            max_connections: c
                .circuit
                .as_ref()
                .and_then(|r| r.max_connections)
                .unwrap_or(4096),
            max_pending: c
                .circuit
                .as_ref()
                .and_then(|r| r.max_pending)
                .unwrap_or(4096),
            max_requests: c
                .circuit
                .as_ref()
                .and_then(|r| r.max_requests)
                .unwrap_or(4096),
        };
        let rate_limit = match &c.rate_limit {
            None => None,
            Some(r) => {
                if !(r.per_second > 0.0 && r.per_second.is_finite()) {
                    return Err(cx.err(
                        None,
                        format!("{field}.rate_limit.per_second"),
                        format!("must be a positive number, got {}", r.per_second),
                    ));
                }
                let key_header = match (r.key.as_deref(), &r.key_header) {
                    (None | Some("client_ip"), None) => None,
                    (None | Some("header"), Some(h)) => Some(h.to_ascii_lowercase()),
                    _ => {
                        return Err(cx.err(
                            None,
                            format!("{field}.rate_limit.key"),
                            "use key = \"client_ip\" (default) or key_header = \"NAME\"".into(),
                        ))
                    }
                };
                Some(RateLimit {
                    per_second: r.per_second,
                    burst: r.burst.unwrap_or(r.per_second).max(1.0),
                    key_header,
                })
            }
        };
        clusters.insert(
            name.clone(),
            Cluster {
                name: name.clone(),
                balancer,
                hash_on,
                protocol,
                tls,
                connect_timeout: ms(c.connect_timeout_ms, 1000, 1, &|| {
                    format!("{field}.connect_timeout_ms")
                })?,
                request_timeout: ms(c.request_timeout_ms, 15_000, 1, &|| {
                    format!("{field}.request_timeout_ms")
                })?,
                idle_timeout: ms(c.idle_timeout_ms, 90_000, 1, &|| {
                    format!("{field}.idle_timeout_ms")
                })?,
                slow_start: ms(c.slow_start_ms, 0, 0, &|| format!("{field}.slow_start_ms"))?,
                sticky_cookie: c.sticky_cookie.clone(),
                health,
                outlier,
                retry,
                circuit,
                rate_limit,
                upstreams,
            },
        );
    }

    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let field = format!("routes[{i}]");
        let path = match (&r.path_prefix, &r.path_exact) {
            (Some(p), None) => Some(PathMatch::Prefix(p.clone())),
            (None, Some(p)) => Some(PathMatch::Exact(p.clone())),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(cx.err(
                    Some(r.cluster.span()),
                    field,
                    "give path_prefix or path_exact, not both".into(),
                ))
            }
        };
        if !clusters.contains_key(r.cluster.get_ref()) {
            return Err(cx.err(
                Some(r.cluster.span()),
                format!("{field}.cluster"),
                format!(
                    "no cluster named {:?}; define [clusters.{}]",
                    r.cluster.get_ref(),
                    r.cluster.get_ref()
                ),
            ));
        }
        routes.push(RouteSpec {
            host: r.host.clone(),
            path,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cluster: r.cluster.get_ref().clone(),
        });
    }
    if let Err(e) = RouteTable::new(routes.clone()) {
        let span = raw.routes.get(e.index).map(|r| r.cluster.span());
        return Err(cx.err(span, format!("routes[{}]", e.index), e.kind.to_string()));
    }

    Ok(Config {
        admin_socket: raw
            .admin
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET)),
        drain_timeout: ms(raw.admin.drain_timeout_ms, 10_000, 0, &|| {
            "admin.drain_timeout_ms".to_string()
        })?,
        access_log: raw.admin.access_log.unwrap_or(true),
        metrics_listen,
        ticket_keys,
        listeners,
        routes,
        clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[[routes]]
path_prefix = "/api"
cluster = "api"

[clusters.api]
balancer = "consistent_hash"
hash_on = { header = "X-User" }
[[clusters.api.upstreams]]
address = "127.0.0.1:9000"
weight = 3
[[clusters.api.upstreams]]
address = "127.0.0.1:9001"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(Path::new("l7.toml"), GOOD).unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert!(!c.listeners[0].is_tls());
        assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(60));
        let api = &c.clusters["api"];
        assert_eq!(api.balancer, Balancer::ConsistentHash);
        assert_eq!(api.hash_on, Some(HashOn::Header("x-user".into())));
        assert_eq!(api.upstreams[0].weight, 3);
        assert_eq!(api.upstreams[1].weight, 1);
        assert_eq!(api.retry.attempts, 2);
        assert_eq!(c.admin_socket, PathBuf::from(DEFAULT_ADMIN_SOCKET));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace("weight = 3", "weight = 0");
        let e = parse(Path::new("/etc/vipd/l7.toml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(14), "{e}");
        assert_eq!(e.field, "clusters.api.upstreams[0].weight");
        let s = e.to_string();
        assert!(s.starts_with("/etc/vipd/l7.toml:14: clusters.api.upstreams[0].weight: upstream 127.0.0.1:9000: weight must be 1..=65535, got 0"), "{s}");

        let bad = GOOD.replace("cluster = \"api\"", "cluster = \"nope\"");
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(7), "routes[0].cluster"));

        let bad = GOOD.replace("balancer = ", "balancr = ");
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.message.contains("balancr"), "{e}");

        let bad = GOOD.replace("127.0.0.1:9001", "localhost");
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.field, "clusters.api.upstreams[1].address");

        let bad = GOOD.replace("hash_on = { header = \"X-User\" }", "");
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.field, "clusters.api.hash_on");

        let bad = GOOD.replace(
            "hash_on = { header = \"X-User\" }",
            "hash_on = { header = \"X-User\" }\nhealth = { interval_ms = 0 }",
        );
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.field, "clusters.api.health.interval_ms", "{e}");
        let bad = GOOD.replace(
            "hash_on = { header = \"X-User\" }",
            "hash_on = { header = \"X-User\" }\nrequest_timeout_ms = 0",
        );
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert!(
            e.to_string()
                .contains("must be 1..=86400000 milliseconds, got 0"),
            "{e}"
        );

        let bad = GOOD.replacen(
            "[[listeners]]",
            "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]",
            1,
        );
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.field, "listeners[1].address", "{e}");
        assert!(
            e.message.contains("already the address of listeners[0]"),
            "{e}"
        );
        let bad = GOOD.replacen("[[listeners]]", "[[listeners]]\nidle_timeout_ms = 0", 1);
        let e = parse(Path::new("l7.toml"), &bad).unwrap_err();
        assert_eq!(e.field, "listeners[0].idle_timeout_ms", "{e}");

        let e = parse(Path::new("l7.toml"), "listeners = 3").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = parse(Path::new("l7.toml"), "").unwrap_err();
        assert_eq!(e.field, "listeners");
    }

    #[test]
    fn tls_listener_needs_existing_cert_files() {
        let text = r#"
[[listeners]]
address = "127.0.0.1:8443"
tls = true
[[listeners.certificates]]
cert = "missing.pem"
key = "missing.key"
"#;
        let e = parse(Path::new("/nonexistent/l7.toml"), text).unwrap_err();
        assert_eq!(e.field, "listeners[0].certificates[0].cert");
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("/nonexistent/missing.pem"), "{e}");
    }

    #[test]
    fn ticket_keys_must_name_an_existing_file() {
        let text =
            "[tls]\nticket_keys = \"fleet.keys\"\n[[listeners]]\naddress = \"127.0.0.1:80\"\n";
        let e = parse(Path::new("/nonexistent/l7.toml"), text).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("tls.ticket_keys", Some(2)));
        assert!(
            e.message.contains("/nonexistent/fleet.keys does not exist"),
            "{e}"
        );
        assert!(e.message.contains("openssl rand -hex 48"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.keys"), "").unwrap();
        let c = parse(&dir.path().join("l7.toml"), text).unwrap();
        assert_eq!(c.ticket_keys, Some(dir.path().join("fleet.keys")));
        let e = parse(Path::new("l7.toml"), "[tls]\nticket_key = \"x\"\n").unwrap_err();
        assert!(e.message.contains("unknown field `ticket_key`"), "{e}");
    }

    /// Every section and most keys, with no file references (so validation runs past the
    /// certificate checks): the seed for the mutation test below.
    const FULL: &str = r#"
[admin]
socket = "/run/vip-l7/admin.sock"
drain_timeout_ms = 10000
access_log = true
[metrics]
listen = "127.0.0.1:9102"
[[listeners]]
name = "web"
address = "0.0.0.0:8080"
header_read_timeout_ms = 10000
idle_timeout_ms = 60000
max_header_bytes = 16384
max_uri_bytes = 8192
request_id_in_response = true
[[routes]]
host = "*.example.com"
path_prefix = "/api"
headers = { "x-canary" = "1" }
cluster = "api"
[[routes]]
path_exact = "/"
cluster = "web"
[clusters.api]
balancer = "consistent_hash"
hash_on = { cookie = "session" }
protocol = "h2"
connect_timeout_ms = 1000
request_timeout_ms = 15000
idle_timeout_ms = 90000
slow_start_ms = 5000
sticky_cookie = "vip_l7_sticky"
health = { path = "/healthz", interval_ms = 2000, timeout_ms = 1000, rise = 2, fall = 3 }
outlier = { consecutive_errors = 5, base_ejection_ms = 30000, max_ejection_percent = 50 }
retry = { attempts = 2, budget_percent = 20, min_concurrent = 3 }
circuit = { max_connections = 1024, max_pending = 1024, max_requests = 1024 }
rate_limit = { per_second = 100, burst = 200, key_header = "x-api-key" }
[[clusters.api.upstreams]]
address = "10.0.0.7:8080"
weight = 1
[[clusters.api.upstreams]]
address = "[2001:db8::7]:8080"
weight = 65535
[clusters.web]
balancer = "peak_ewma"
rate_limit = { per_second = 1, burst = 1, key = "client_ip" }
[[clusters.web.upstreams]]
address = "127.0.0.1:9000"
"#;

    /// Values that sit on or past the edges of what the fields take.
    const NASTY: &[&str] = &[
        "0",
        "-1",
        "1",
        "65536",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "1e309",
        "-0.0",
        "nan",
        "inf",
        "\"\"",
        "\"\\u0000\"",
        "\"[::]:0\"",
        "\"999.1.1.1:1\"",
        "\"*\"",
        "\"/\"",
        "[]",
        "{}",
        "true",
        "1979-05-27T07:32:00Z",
    ];

    #[test]
    fn full_example_parses() {
        let c = parse(Path::new("l7.toml"), FULL).unwrap();
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.routes.len(), 2);
    }

    /// One runtime for every case (building a cluster starts its health-check tasks).
    fn fuzz_runtime() -> &'static tokio::runtime::Runtime {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 2000, ..Default::default() })]

        /// The file is operator input: any value put on the right of any `key =` (numbers out of
        /// range, wrong types, empty strings, NaN), and any bytes replaced, cut or inserted,
        /// give a config or an error naming the file, never a panic.
        #[test]
        fn edited_configs_parse_or_fail_cleanly(
            values in proptest::collection::vec((0usize..64, 0usize..NASTY.len()), 1..4),
            bytes in proptest::collection::vec((0usize..4096, 0u8..3, proptest::prelude::any::<u8>()), 0..3),
        ) {
            let mut lines: Vec<String> = FULL.lines().map(str::to_string).collect();
            for (line, value) in values {
                let n = line % lines.len();
                if let Some(eq) = lines[n].find(" = ") {
                    let key = lines[n][..eq].to_string();
                    lines[n] = format!("{key} = {}", NASTY[value]);
                }
            }
            let mut b = lines.join("\n").into_bytes();
            for (pos, kind, byte) in bytes {
                let p = pos % (b.len() + 1);
                match kind {
                    0 if p < b.len() => b[p] = byte,
                    1 => b.truncate(p),
                    _ => b.insert(p, byte),
                }
            }
            let text = String::from_utf8_lossy(&b);
            match parse(Path::new("l7.toml"), &text) {
                Err(e) => proptest::prop_assert!(e.to_string().starts_with("l7.toml"), "{e}"),
                // What validation lets through must also build: routes, balancers (Maglev
                // tables), rate limiters, pools.
                Ok(c) => fuzz_runtime().block_on(async {
                    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
                    let built = crate::proxy::Runtime::build(c, None, std::time::Instant::now(), &metrics);
                    proptest::prop_assert!(built.is_ok(), "{:?}", built.err().map(|e| e.to_string()));
                    Ok(())
                })?,
            }
        }
    }
}
