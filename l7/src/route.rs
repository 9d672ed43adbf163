//! Request routing: which cluster serves a request, decided from its host, path and headers.
//!
//! A [`RouteTable`] is built once from [`RouteSpec`]s (validated, so a bad route is an error at
//! load time, not a surprise per request) and then answers [`RouteTable::route`] without I/O,
//! locks or allocation.
//!
//! # Which route wins
//!
//! Among all routes whose host, path and header conditions hold, the winner is the most
//! specific, compared in this order:
//!
//! 1. host: an exact host beats a wildcard (`*.example.com`), a longer wildcard suffix beats a
//!    shorter one, and any wildcard beats a route without a host;
//! 2. path: an exact path beats a prefix, a longer prefix beats a shorter one, and any prefix
//!    beats a route without a path;
//! 3. headers: more header conditions beat fewer;
//! 4. otherwise the route listed first.
//!
//! So a request falls back to a less specific host's routes when the best host has no route for
//! its path.
//!
//! # Matching rules
//!
//! - Hosts are compared without case, without the port (`example.com:8080`), and without one
//!   trailing dot (`example.com.`). IPv6 literals are written `[::1]` in requests (a port may
//!   follow) and `[::1]` or `::1` in routes, and compared as addresses.
//! - `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
//! - Paths are compared with case, after dropping the query (`?...`) and fragment. A prefix
//!   matches whole segments, like a Kubernetes Ingress `Prefix` path: `/api` matches `/api`,
//!   `/api/` and `/api/v1`, not `/apiv2`; a prefix ending in `/` matches everything below it.
//!   Percent-encoding and dot segments are not normalised here.
//! - A header condition holds when some value of that header (name compared without case)
//!   equals the given value exactly.

use std::net::Ipv6Addr;

/// One route as written in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSpec {
    /// Host to match: `api.example.com`, `*.example.com`, `192.0.2.1`, `[2001:db8::1]`;
    /// `None` matches any host (and requests without one).
    pub host: Option<String>,
    /// Path to match; `None` matches any path.
    pub path: Option<PathMatch>,
    /// Header conditions `(name, value)`, all of which must hold.
    pub headers: Vec<(String, String)>,
    /// Cluster that serves matching requests.
    pub cluster: String,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this string.
    Exact(String),
    /// The path starts with this string at a segment boundary (see the module docs).
    Prefix(String),
}

/// Why a [`RouteSpec`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route[{index}]: {kind}")]
pub struct RouteError {
    /// Position of the offending spec in the list given to [`RouteTable::new`].
    pub index: usize,
    /// What is wrong with it.
    pub kind: RouteErrorKind,
}

/// What is wrong with a [`RouteSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteErrorKind {
    /// The host is an empty string.
    #[error("host is empty; leave it out to match any host")]
    EmptyHost,
    /// The host is not a valid name, wildcard or IP literal.
    #[error("host {host:?} is not valid: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path does not start with `/` (this includes an empty path).
    #[error("path {path:?} must start with '/'")]
    PathNotAbsolute {
        /// The path as given.
        path: String,
    },
    /// The path contains `?` or `#`, which never reach the matcher.
    #[error(
        "path {path:?} contains '?' or '#'; queries and fragments are not matched, remove them"
    )]
    PathHasQuery {
        /// The path as given.
        path: String,
    },
    /// A header name is empty or contains characters not allowed in HTTP field names.
    #[error(
        "header name {name:?} is not a valid HTTP field name (letters, digits and !#$%&'*+-.^_`|~)"
    )]
    InvalidHeaderName {
        /// The name as given.
        name: String,
    },
    /// A header value contains control characters or surrounding whitespace.
    #[error("header {name:?} value {value:?} has control characters or leading/trailing whitespace, which never match")]
    InvalidHeaderValue {
        /// Header name.
        name: String,
        /// The value as given.
        value: String,
    },
    /// The same header name appears twice in one route.
    #[error("header {name:?} is listed twice; give one value per header")]
    DuplicateHeader {
        /// Header name (lowercase).
        name: String,
    },
    /// The cluster name is empty.
    #[error("cluster is empty; name the cluster that serves this route")]
    EmptyCluster,
    /// Another route has the same host, path and headers, so this one could never win.
    #[error("same host, path and headers as route[{first}], so it could never be chosen; merge or remove one")]
    Duplicate {
        /// Index of the earlier route.
        first: usize,
    },
}

/// The headers of a request, as far as routing needs them.
///
/// Implemented for slices of `(name, value)` pairs; the proxy implements it for its header map.
pub trait Headers {
    /// Whether some header named `name` (given in lowercase; compare without case) has exactly
    /// the value `value`.
    fn has_value(&self, name: &str, value: &str) -> bool;
}

impl Headers for [(&str, &str)] {
    fn has_value(&self, name: &str, value: &str) -> bool {
        self.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && *v == value)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn has_value(&self, name: &str, value: &str) -> bool {
        Headers::has_value(&self[..], name, value)
    }
}

impl Headers for [(String, String)] {
    fn has_value(&self, name: &str, value: &str) -> bool {
        self.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    }
}

impl Headers for Vec<(String, String)> {
    fn has_value(&self, name: &str, value: &str) -> bool {
        Headers::has_value(&self[..], name, value)
    }
}

/// Validated routes, ordered by specificity, ready to answer [`RouteTable::route`].
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Most specific first; ties keep the order of the specs.
    routes: Vec<Route>,
    /// Whether any route matches on the host (else the request's host is not even parsed).
    by_host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// Lowercase, no trailing dot.
    Exact(String),
    /// Lowercase suffix including the leading dot: `.example.com`.
    Wildcard(String),
    Ipv6(Ipv6Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Any,
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
struct Route {
    host: HostPattern,
    path: PathPattern,
    /// Lowercase names, sorted, for duplicate detection.
    headers: Vec<(String, String)>,
    cluster: String,
    /// Position in the specs given to [`RouteTable::new`].
    index: usize,
}

impl Route {
    /// Sort key: larger is more specific (see the module docs).
    fn specificity(&self) -> (u8, usize, u8, usize, usize) {
        let (host_kind, host_len) = match &self.host {
            HostPattern::Any => (0, 0),
            HostPattern::Wildcard(suffix) => (1, suffix.len()),
            HostPattern::Exact(host) => (2, host.len()),
            HostPattern::Ipv6(_) => (2, 0),
        };
        let (path_kind, path_len) = match &self.path {
            PathPattern::Any => (0, 0),
            PathPattern::Prefix(prefix) => (1, prefix.len()),
            PathPattern::Exact(path) => (2, path.len()),
        };
        (host_kind, host_len, path_kind, path_len, self.headers.len())
    }

    fn matches<H: Headers + ?Sized>(
        &self,
        host: &RequestHost<'_>,
        path: &str,
        headers: &H,
    ) -> bool {
        let host_ok = match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(want), RequestHost::Name(got)) => want.eq_ignore_ascii_case(got),
            (HostPattern::Wildcard(suffix), RequestHost::Name(got)) => {
                wildcard_matches(suffix, got)
            }
            (HostPattern::Ipv6(want), RequestHost::Ipv6(got)) => want == got,
            _ => false,
        };
        host_ok
            && match &self.path {
                PathPattern::Any => true,
                PathPattern::Exact(want) => path == want,
                PathPattern::Prefix(prefix) => prefix_matches(prefix, path),
            }
            && self
                .headers
                .iter()
                .all(|(name, value)| headers.has_value(name, value))
    }
}

impl RouteTable {
    /// Validates `specs` and orders them for lookup. Reports the first invalid spec.
    pub fn new(specs: Vec<RouteSpec>) -> Result<RouteTable, RouteError> {
        let mut routes: Vec<Route> = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let mut route = compile(spec).map_err(|kind| RouteError { index, kind })?;
            route.index = index;
            if let Some(first) = routes.iter().position(|r| {
                r.host == route.host && r.path == route.path && r.headers == route.headers
            }) {
                return Err(RouteError {
                    index,
                    kind: RouteErrorKind::Duplicate { first },
                });
            }
            routes.push(route);
        }
        // Stable sort: equally specific routes keep their configured order.
        routes.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        let by_host = routes.iter().any(|r| r.host != HostPattern::Any);
        Ok(RouteTable { routes, by_host })
    }

    /// The cluster for a request, or `None` when no route matches (answer 404).
    ///
    /// `host` is the Host header or `:authority` (a port is ignored; empty when the request has
    /// none), `path` the request target in origin form (a query is ignored).
    pub fn route<H: Headers + ?Sized>(&self, host: &str, path: &str, headers: &H) -> Option<&str> {
        self.route_indexed(host, path, headers).map(|(_, c)| c)
    }

    /// Like [`route`](Self::route), also returning the matching route's position in the specs
    /// (for per-route metrics).
    pub fn route_indexed<H: Headers + ?Sized>(
        &self,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Option<(usize, &str)> {
        // Every route takes any host: no need to parse it (`Unmatchable` matches `Any`).
        let host = if self.by_host {
            RequestHost::parse(host)
        } else {
            RequestHost::Unmatchable
        };
        let path = strip_query(path);
        self.routes
            .iter()
            .find(|r| r.matches(&host, path, headers))
            .map(|r| (r.index, r.cluster.as_str()))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes (every request gets `None`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The host of a request after dropping port and trailing dot; case is kept (compared later
/// without case, which avoids allocating a lowercase copy per request).
#[derive(Debug)]
enum RequestHost<'a> {
    /// No host, or one that cannot match any host pattern.
    Unmatchable,
    Name(&'a str),
    Ipv6(Ipv6Addr),
}

impl<'a> RequestHost<'a> {
    fn parse(raw: &'a str) -> RequestHost<'a> {
        let raw = raw.trim_matches(|c: char| c == ' ' || c == '\t');
        if let Some(bracketed) = raw.strip_prefix('[') {
            let Some((inner, after)) = bracketed.split_once(']') else {
                return RequestHost::Unmatchable;
            };
            let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
            return match (port_ok, inner.parse()) {
                (true, Ok(addr)) => RequestHost::Ipv6(addr),
                _ => RequestHost::Unmatchable,
            };
        }
        // Not valid in a Host header, but unambiguous: a bare IPv6 address has no port.
        // (Two colons at least: a name with a port has one, so it skips the address parser.)
        if raw.bytes().filter(|&b| b == b':').nth(1).is_some() {
            if let Ok(addr) = raw.parse::<Ipv6Addr>() {
                return RequestHost::Ipv6(addr);
            }
        }
        let name = match raw.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return RequestHost::Unmatchable,
            None => raw,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.starts_with('.') {
            return RequestHost::Unmatchable;
        }
        RequestHost::Name(name)
    }
}

/// Whether `port` (the text after `:`) is up to 5 digits; RFC 3986 allows an empty port.
fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn wildcard_matches(suffix: &str, host: &str) -> bool {
    let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
    // At least one character of label before the suffix, and that label not empty.
    host.len() > suffix.len()
        && host
            .get(host.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        && host.get(host.len() - suffix.len() - 1) != Some(&b'.')
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

fn compile(spec: RouteSpec) -> Result<Route, RouteErrorKind> {
    if spec.cluster.is_empty() {
        return Err(RouteErrorKind::EmptyCluster);
    }
    let host = match spec.host {
        None => HostPattern::Any,
        Some(host) => compile_host(&host)?,
    };
    let path = match spec.path {
        None => PathPattern::Any,
        Some(PathMatch::Exact(path)) => PathPattern::Exact(check_path(path)?),
        Some(PathMatch::Prefix(path)) => PathPattern::Prefix(check_path(path)?),
    };
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in spec.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(RouteErrorKind::InvalidHeaderName { name });
        }
        let bad_value = value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
            || value.starts_with([' ', '\t'])
            || value.ends_with([' ', '\t']);
        if bad_value {
            return Err(RouteErrorKind::InvalidHeaderValue { name, value });
        }
        let name = name.to_ascii_lowercase();
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(RouteErrorKind::DuplicateHeader { name });
        }
        headers.push((name, value));
    }
    headers.sort();
    Ok(Route {
        host,
        path,
        headers,
        cluster: spec.cluster,
        index: 0,
    })
}

fn compile_host(host: &str) -> Result<HostPattern, RouteErrorKind> {
    let invalid = |reason| RouteErrorKind::InvalidHost {
        host: host.to_string(),
        reason,
    };
    if host.is_empty() {
        return Err(RouteErrorKind::EmptyHost);
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(addr) = literal.parse::<Ipv6Addr>() {
        return Ok(HostPattern::Ipv6(addr));
    }
    if host.starts_with('[') {
        return Err(invalid("brackets hold an IPv6 address, and no port"));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let (wildcard, name) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, name),
    };
    if name.contains(':') {
        return Err(invalid("hosts match without the port; remove \":port\""));
    }
    if name.contains('*') {
        return Err(invalid(
            "'*' is only allowed as the whole first label, as in \"*.example.com\"; leave the host out to match any host",
        ));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("has an empty label (\"..\", or a leading dot)"));
        }
        if label.len() > 63 {
            return Err(invalid("has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' are allowed (use punycode for IDNs)",
            ));
        }
    }
    Ok(if wildcard {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

fn check_path(path: String) -> Result<String, RouteErrorKind> {
    if !path.starts_with('/') {
        return Err(RouteErrorKind::PathNotAbsolute { path });
    }
    if path.contains(['?', '#']) {
        return Err(RouteErrorKind::PathHasQuery { path });
    }
    Ok(path)
}

/// RFC 9110 `tchar`: the characters allowed in a header field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_HEADERS: [(&str, &str); 0] = [];

    fn spec(host: Option<&str>, path: Option<PathMatch>, cluster: &str) -> RouteSpec {
        RouteSpec {
            host: host.map(str::to_string),
            path,
            headers: Vec::new(),
            cluster: cluster.to_string(),
        }
    }

    fn prefix(p: &str) -> Option<PathMatch> {
        Some(PathMatch::Prefix(p.to_string()))
    }

    fn exact(p: &str) -> Option<PathMatch> {
        Some(PathMatch::Exact(p.to_string()))
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable {
        RouteTable::new(specs).unwrap()
    }

    fn error_kind(specs: Vec<RouteSpec>) -> RouteErrorKind {
        RouteTable::new(specs).unwrap_err().kind
    }

    #[test]
    fn host_precedence_exact_then_longest_wildcard_then_any() {
        let t = table(vec![
            spec(None, None, "default"),
            spec(Some("*.example.com"), None, "wild"),
            spec(Some("*.api.example.com"), None, "wild-api"),
            spec(Some("www.example.com"), None, "www"),
        ]);
        let r = |host| t.route(host, "/", &NO_HEADERS);
        assert_eq!(r("www.example.com"), Some("www"));
        assert_eq!(r("shop.example.com"), Some("wild"));
        assert_eq!(r("a.b.example.com"), Some("wild"), "wildcards span labels");
        assert_eq!(r("v1.api.example.com"), Some("wild-api"));
        assert_eq!(r("api.example.com"), Some("wild"));
        assert_eq!(r("example.com"), Some("default"), "wildcard needs a label");
        assert_eq!(
            r("badexample.com"),
            Some("default"),
            "suffix match is per label"
        );
        assert_eq!(r("other.org"), Some("default"));
    }

    #[test]
    fn hosts_ignore_case_port_and_trailing_dot() {
        let t = table(vec![
            spec(Some("WWW.Example.COM."), None, "www"),
            spec(Some("*.example.com"), None, "wild"),
        ]);
        for host in [
            "www.example.com",
            "WWW.EXAMPLE.COM",
            "www.example.com:8080",
            "www.example.com.",
            "www.example.com.:443",
            "www.example.com:",
            " www.example.com ",
        ] {
            assert_eq!(t.route(host, "/", &NO_HEADERS), Some("www"), "{host:?}");
        }
        assert_eq!(t.route("A.Example.Com:80", "/", &NO_HEADERS), Some("wild"));
        // Malformed ports and double dots never match a host pattern.
        for host in [
            "www.example.com:http",
            "www.example.com:123456",
            "www.example.com..",
            ".example.com",
        ] {
            assert_eq!(t.route(host, "/", &NO_HEADERS), None, "{host:?}");
        }
    }

    #[test]
    fn empty_host_only_matches_hostless_routes() {
        let t = table(vec![spec(Some("example.com"), None, "named")]);
        assert_eq!(t.route("", "/", &NO_HEADERS), None);
        let t = table(vec![
            spec(Some("example.com"), None, "named"),
            spec(None, None, "any"),
        ]);
        assert_eq!(t.route("", "/", &NO_HEADERS), Some("any"));
        assert_eq!(t.route(":80", "/", &NO_HEADERS), Some("any"));
        assert_eq!(t.route(".", "/", &NO_HEADERS), Some("any"));
    }

    #[test]
    fn ipv6_literal_hosts() {
        let t = table(vec![
            spec(Some("[::1]"), None, "loopback"),
            spec(Some("2001:db8::1"), None, "doc"),
            spec(None, None, "any"),
        ]);
        let r = |host| t.route(host, "/", &NO_HEADERS);
        assert_eq!(r("[::1]:8080"), Some("loopback"));
        assert_eq!(r("[::1]"), Some("loopback"));
        assert_eq!(
            r("[0:0:0:0:0:0:0:1]:80"),
            Some("loopback"),
            "compared as addresses"
        );
        assert_eq!(r("[2001:DB8::1]"), Some("doc"));
        assert_eq!(r("::1"), Some("loopback"), "bare literal without port");
        assert_eq!(r("[::2]:8080"), Some("any"));
        assert_eq!(r("[::1"), Some("any"), "unclosed bracket matches no host");
        assert_eq!(r("[::1]x"), Some("any"));
        assert_eq!(r("[::1]:99999999"), Some("any"));
        assert_eq!(r("[not-an-ip]:80"), Some("any"));
    }

    #[test]
    fn path_exact_beats_prefix_and_longest_prefix_wins() {
        let t = table(vec![
            spec(None, None, "any"),
            spec(None, prefix("/"), "root"),
            spec(None, prefix("/api"), "api"),
            spec(None, prefix("/api/v2/"), "api-v2"),
            spec(None, exact("/api/health"), "health"),
        ]);
        let r = |path| t.route("example.com", path, &NO_HEADERS);
        assert_eq!(r("/api/health"), Some("health"));
        assert_eq!(r("/api/health/x"), Some("api"), "exact is exact");
        assert_eq!(r("/api"), Some("api"));
        assert_eq!(r("/api/"), Some("api"));
        assert_eq!(r("/api/v1/users"), Some("api"));
        assert_eq!(r("/api/v2/users"), Some("api-v2"));
        assert_eq!(r("/api/v2"), Some("api"), "prefix /api/v2/ needs the slash");
        assert_eq!(r("/apiv2"), Some("root"), "prefixes match whole segments");
        assert_eq!(r("/API"), Some("root"), "paths are case-sensitive");
        assert_eq!(
            r("*"),
            Some("any"),
            "non-origin-form target only matches any-path"
        );
        assert_eq!(r(""), Some("any"));
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        let t = table(vec![
            spec(None, exact("/search"), "search"),
            spec(None, prefix("/"), "root"),
        ]);
        assert_eq!(t.route("h", "/search?q=/api", &NO_HEADERS), Some("search"));
        assert_eq!(t.route("h", "/search#top", &NO_HEADERS), Some("search"));
        assert_eq!(t.route("h", "/searching?x", &NO_HEADERS), Some("root"));
    }

    #[test]
    fn headers_break_ties_and_all_must_hold() {
        let with_headers = |headers: &[(&str, &str)], cluster: &str| RouteSpec {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..spec(Some("api.example.com"), prefix("/v1"), cluster)
        };
        let t = table(vec![
            with_headers(&[], "stable"),
            with_headers(&[("X-Canary", "1")], "canary"),
            with_headers(&[("x-canary", "1"), ("x-region", "eu")], "canary-eu"),
        ]);
        let r = |headers: &[(&str, &str)]| t.route("api.example.com", "/v1/x", headers);
        assert_eq!(r(&[]), Some("stable"));
        assert_eq!(r(&[("x-canary", "1")]), Some("canary"));
        assert_eq!(r(&[("X-CANARY", "1")]), Some("canary"), "names ignore case");
        assert_eq!(
            r(&[("x-canary", "TRUE")]),
            Some("stable"),
            "values are exact"
        );
        assert_eq!(
            r(&[("x-canary", "1"), ("x-region", "eu")]),
            Some("canary-eu")
        );
        assert_eq!(r(&[("x-canary", "1"), ("x-region", "us")]), Some("canary"));
        assert_eq!(
            r(&[("x-canary", "0"), ("x-canary", "1")]),
            Some("canary"),
            "any value"
        );
    }

    #[test]
    fn precedence_is_host_then_path_then_headers() {
        let canary = RouteSpec {
            headers: vec![("x-canary".into(), "1".into())],
            ..spec(None, exact("/app"), "any-host-exact-path-header")
        };
        let t = table(vec![
            canary,
            spec(Some("*.example.com"), prefix("/"), "wild-root"),
            spec(Some("*.example.com"), prefix("/app"), "wild-app"),
            spec(Some("www.example.com"), None, "www-any-path"),
        ]);
        let h = [("x-canary", "1")];
        // A more specific host wins over a more specific path and over headers.
        assert_eq!(t.route("www.example.com", "/app", &h), Some("www-any-path"));
        assert_eq!(t.route("a.example.com", "/app", &h), Some("wild-app"));
        assert_eq!(t.route("a.example.com", "/other", &h), Some("wild-root"));
        assert_eq!(
            t.route("other.org", "/app", &h),
            Some("any-host-exact-path-header")
        );
        assert_eq!(t.route("other.org", "/app", &NO_HEADERS), None);
    }

    #[test]
    fn falls_back_to_less_specific_host() {
        let t = table(vec![
            spec(Some("api.example.com"), prefix("/v1"), "api-v1"),
            spec(None, None, "default"),
        ]);
        assert_eq!(
            t.route("api.example.com", "/v1/x", &NO_HEADERS),
            Some("api-v1")
        );
        assert_eq!(
            t.route("api.example.com", "/v2", &NO_HEADERS),
            Some("default")
        );
    }

    #[test]
    fn equal_specificity_keeps_configured_order() {
        let a = RouteSpec {
            headers: vec![("x-a".into(), "1".into())],
            ..spec(None, None, "first")
        };
        let b = RouteSpec {
            headers: vec![("x-b".into(), "1".into())],
            ..spec(None, None, "second")
        };
        let both = [("x-a", "1"), ("x-b", "1")];
        assert_eq!(
            table(vec![a.clone(), b.clone()]).route("h", "/", &both),
            Some("first")
        );
        assert_eq!(table(vec![b, a]).route("h", "/", &both), Some("second"));
    }

    #[test]
    fn empty_table_routes_nothing() {
        let t = table(vec![]);
        assert!(t.is_empty());
        assert_eq!(t.route("example.com", "/", &NO_HEADERS), None);
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        assert_eq!(
            error_kind(vec![spec(Some(""), None, "c")]),
            RouteErrorKind::EmptyHost
        );
        for host in [
            "*",
            "*.",
            "a.*.example.com",
            "*example.com",
            "example.com:8080",
            "exa mple.com",
            "a..b",
            ".example.com",
            "[::1]:80",
            "[example.com]",
            "ünicode.example",
        ] {
            assert!(
                matches!(
                    error_kind(vec![spec(Some(host), None, "c")]),
                    RouteErrorKind::InvalidHost { .. }
                ),
                "{host:?}"
            );
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(RouteTable::new(vec![spec(Some(&long_label), None, "c")]).is_err());
    }

    #[test]
    fn invalid_paths_are_rejected() {
        for path in [exact(""), prefix(""), prefix("api"), exact("api/x")] {
            assert!(
                matches!(
                    error_kind(vec![spec(None, path.clone(), "c")]),
                    RouteErrorKind::PathNotAbsolute { .. }
                ),
                "{path:?}"
            );
        }
        assert!(matches!(
            error_kind(vec![spec(None, prefix("/a?b"), "c")]),
            RouteErrorKind::PathHasQuery { .. }
        ));
    }

    #[test]
    fn invalid_headers_clusters_and_duplicates_are_rejected() {
        let with = |headers: Vec<(&str, &str)>| RouteSpec {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..spec(None, None, "c")
        };
        assert!(matches!(
            error_kind(vec![with(vec![("", "v")])]),
            RouteErrorKind::InvalidHeaderName { .. }
        ));
        assert!(matches!(
            error_kind(vec![with(vec![("x y", "v")])]),
            RouteErrorKind::InvalidHeaderName { .. }
        ));
        assert!(matches!(
            error_kind(vec![with(vec![("x", "a\r\nb")])]),
            RouteErrorKind::InvalidHeaderValue { .. }
        ));
        assert!(matches!(
            error_kind(vec![with(vec![("x", " padded")])]),
            RouteErrorKind::InvalidHeaderValue { .. }
        ));
        assert_eq!(
            error_kind(vec![with(vec![("X-A", "1"), ("x-a", "2")])]),
            RouteErrorKind::DuplicateHeader { name: "x-a".into() }
        );
        assert_eq!(
            error_kind(vec![spec(None, None, "")]),
            RouteErrorKind::EmptyCluster
        );

        // Duplicates: same host (after normalisation), path and header set.
        let err = RouteTable::new(vec![
            spec(None, None, "a"),
            spec(Some("Example.com."), prefix("/x"), "b"),
            spec(Some("example.com"), prefix("/x"), "c"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            RouteError {
                index: 2,
                kind: RouteErrorKind::Duplicate { first: 1 }
            }
        );
        assert_eq!(
            err.to_string(),
            "route[2]: same host, path and headers as route[1], so it could never be chosen; merge or remove one"
        );
        let err = RouteTable::new(vec![
            with(vec![("a", "1"), ("b", "2")]),
            with(vec![("B", "2"), ("A", "1")]),
        ])
        .unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::Duplicate { first: 0 });
    }

    proptest::proptest! {
        /// Any request, however malformed, is answered without panicking.
        #[test]
        fn route_never_panics(host in "\\PC{0,40}", path in "\\PC{0,40}", name in "\\PC{0,8}", value in "\\PC{0,8}") {
            let t = table(vec![
                spec(Some("*.example.com"), prefix("/a"), "x"),
                spec(Some("[::1]"), exact("/"), "y"),
                spec(None, None, "z"),
            ]);
            let headers = [(name.as_str(), value.as_str())];
            proptest::prop_assert!(t.route(&host, &path, &headers).is_some());
        }

        /// The chosen prefix route is the longest prefix that matches at a segment boundary.
        #[test]
        fn longest_matching_prefix_wins(
            prefixes in proptest::collection::btree_set("(/[ab]{1,2}){1,3}/?", 1..8),
            path in "(/[ab]{1,2}){0,4}/?",
        ) {
            let specs: Vec<RouteSpec> =
                prefixes.iter().map(|p| spec(None, prefix(p), p)).collect();
            let t = table(specs);
            // Oracle, written independently of `prefix_matches`: compare segment lists.
            let segments = |s: &str| s.split('/').skip(1).map(str::to_string).collect::<Vec<_>>();
            let matches = |p: &str| {
                let (ps, xs) = (segments(p), segments(&path));
                if p.ends_with('/') {
                    // "/a/" covers "/a/" and everything below it.
                    let dir = &ps[..ps.len() - 1];
                    xs.len() > dir.len() && xs[..dir.len()] == *dir
                } else {
                    xs.len() >= ps.len() && xs[..ps.len()] == *ps
                }
            };
            let best = prefixes.iter().filter(|p| matches(p)).max_by_key(|p| p.len());
            proptest::prop_assert_eq!(t.route("h", &path, &NO_HEADERS), best.map(String::as_str));
        }

        /// Case, a port and a trailing dot never change the answer.
        #[test]
        fn host_spelling_does_not_matter(label in "[a-z][a-z0-9-]{0,10}", port in 0u16..=65535) {
            let t = table(vec![
                spec(Some("exact.example.com"), None, "exact"),
                spec(Some("*.example.com"), None, "wild"),
                spec(None, None, "any"),
            ]);
            let host = format!("{label}.example.com");
            let want = t.route(&host, "/", &NO_HEADERS);
            for variant in [
                host.to_ascii_uppercase(),
                format!("{host}."),
                format!("{host}:{port}"),
                format!("{}.:{port}", host.to_ascii_uppercase()),
            ] {
                let got = t.route(&variant, "/", &NO_HEADERS);
                proptest::prop_assert_eq!(got, want, "{}", variant);
            }
        }
    }
}
