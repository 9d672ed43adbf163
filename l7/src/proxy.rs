//! The request path: route, limit, pick an upstream, rewrite headers, forward (with retries),
//! and hand the response back with hop-by-hop headers removed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use crate::config::{self, Config, HashOn};
use crate::metrics::{Metrics, RouteMetrics};
use crate::route::{Headers, RouteTable};
use crate::upstream::{BoxError, ClusterRt, CountGuard, ProxyBody, UpstreamError};

/// Request bodies up to this size are buffered so the request can be retried (and go upstream
/// through vip-l7's own HTTP/1.1 client).
pub(crate) const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Most attempts per request (the config allows up to 10).
const MAX_ATTEMPTS: usize = 16;

// Header names used on every request, built once (a `&str` name is parsed on each use).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A client request's body: hyper's, or the whole body already read by vip-l7's own HTTP/1.1
/// server path ([`crate::h1server`]; empty for a request without one).
#[derive(Debug)]
pub enum ReqBody {
    /// Read by hyper's server connection.
    Hyper(Incoming),
    /// All of it, already in memory.
    Read(Bytes),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Read(b) if b.is_empty() => Poll::Ready(None),
            ReqBody::Read(b) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(b))))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::Read(b) => b.is_empty(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::Read(b) => SizeHint::with_exact(b.len() as u64),
        }
    }
}

/// One configuration generation: routes and running clusters.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Config,
    /// Routes.
    pub routes: RouteTable,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<ClusterRt>>,
    /// Metric handles by route index.
    pub route_metrics: Vec<RouteMetrics>,
    /// The cluster of each route, by route index (no lookup by name per request).
    pub route_clusters: Vec<Option<Arc<ClusterRt>>>,
}

/// Why a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The file is invalid.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// TLS material is invalid.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Routes are invalid.
    #[error("{0}")]
    Route(#[from] crate::route::RouteError),
    /// A listener cannot be bound or its certificates loaded.
    #[error("{0}")]
    Listener(#[from] crate::server::ListenerError),
}

impl Runtime {
    /// Builds a runtime from `config`, carrying upstream state over from `previous`.
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        epoch: Instant,
        metrics: &Arc<Metrics>,
    ) -> Result<Runtime, ApplyError> {
        let routes = config.route_table()?;
        let mut clusters = HashMap::new();
        for (name, c) in &config.clusters {
            let prev = previous
                .and_then(|p| p.clusters.get(name))
                .map(|a| a.as_ref());
            clusters.insert(
                name.clone(),
                ClusterRt::new(c.clone(), prev, epoch, metrics)?,
            );
        }
        let route_metrics = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let names: Vec<String> = clusters
                    .get(&r.cluster)
                    .map(|c| c.upstreams.iter().map(|u| u.name.clone()).collect())
                    .unwrap_or_default();
                metrics.route_metrics(&format!("routes[{i}]"), &r.cluster, &names)
            })
            .collect();
        let route_clusters = config
            .routes
            .iter()
            .map(|r| clusters.get(&r.cluster).cloned())
            .collect();
        Ok(Runtime {
            config,
            routes,
            clusters,
            route_metrics,
            route_clusters,
        })
    }
}

/// State shared by all connections.
#[derive(Debug)]
pub struct Shared {
    /// Current configuration generation.
    pub runtime: ArcSwap<Runtime>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock origin for upstream state.
    pub epoch: Instant,
    /// Config file (reload reads it again).
    pub config_path: PathBuf,
    /// The running listeners (reload adds, changes and removes them).
    pub listeners: crate::server::Listeners,
    /// Serialises reloads.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Requests handled.
    pub requests_total: AtomicU64,
    /// Reloads applied.
    pub reloads: AtomicU64,
    /// Set once SIGTERM arrived.
    pub draining: AtomicBool,
}

impl Shared {
    /// Reads the config file again and applies it: routes, clusters, listeners and
    /// certificates. On any error (including a new listener address that cannot be bound) the
    /// running configuration stays.
    pub async fn reload(&self) -> Result<Vec<String>, ApplyError> {
        let _g = self.reload_lock.lock().await;
        let path = self.config_path.clone();
        let cfg = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| {
                ApplyError::Config(config::ConfigError {
                    file: self.config_path.clone(),
                    line: None,
                    field: String::new(),
                    message: format!("reload task failed: {e}"),
                })
            })??;
        let old = self.runtime.load_full();
        // Bind new listener addresses and load every certificate before swapping anything.
        let listeners = self.listeners.prepare(&cfg)?;
        let rt = Runtime::build(cfg, Some(&old), self.epoch, &self.metrics)?;
        let warnings = self.listeners.commit(listeners);
        self.runtime.store(Arc::new(rt));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!("configuration reloaded");
        Ok(warnings)
    }
}

/// What a request handler knows about its connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client address.
    pub client: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Listener limits.
    pub listener: Arc<config::Listener>,
    /// Client IP as text.
    pub client_ip: String,
    /// Client IP as a header value (X-Forwarded-For).
    pub client_ip_header: HeaderValue,
}

impl ConnInfo {
    /// Connection facts for a client at `client`.
    pub fn new(client: SocketAddr, tls: bool, listener: Arc<config::Listener>) -> ConnInfo {
        let client_ip = client.ip().to_string();
        // An IP address in text form is always a valid header value.
        let client_ip_header =
            HeaderValue::from_str(&client_ip).unwrap_or_else(|_| HeaderValue::from_static("-"));
        ConnInfo {
            client,
            tls,
            listener,
            client_ip,
            client_ip_header,
        }
    }
}

impl Headers for HeaderMap {
    fn has_value(&self, name: &str, value: &str) -> bool {
        self.get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

fn text_body(s: impl Into<Bytes>) -> ProxyBody {
    Full::new(s.into())
        .map_err(|e: Infallible| -> BoxError { match e {} })
        .boxed()
}

fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|e: Infallible| -> BoxError { match e {} })
        .boxed()
}

/// Sets the request's X-Request-Id on a proxied response when the listener says so
/// (`request_id_in_response`, replacing one the upstream sent); otherwise the response goes
/// back with whatever the upstream sent. Responses vip-l7 makes itself ([`local_response`])
/// always carry the id: it is what ties the client's error to vip-l7's access log.
fn echo_request_id(h: &mut HeaderMap, info: &ConnInfo, request_id: &HeaderValue) {
    if info.listener.request_id_in_response {
        h.insert(X_REQUEST_ID, request_id.clone());
    }
}

fn local_response(status: StatusCode, msg: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut r = Response::new(text_body(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    r
}

/// Hop-by-hop headers that are always removed (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// The position of `n` in [`HOP_BY_HOP`]: one `match` on the name's text (by length first)
/// instead of up to eight `HeaderName` comparisons per header.
fn hop_by_hop_index(n: &HeaderName) -> Option<usize> {
    match n.as_str() {
        "connection" => Some(0),
        "transfer-encoding" => Some(1),
        "upgrade" => Some(2),
        "te" => Some(3),
        "proxy-authenticate" => Some(4),
        "proxy-authorization" => Some(5),
        "keep-alive" => Some(6),
        "proxy-connection" => Some(7),
        _ => None,
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus any named in
/// `Connection`. `te: trailers` is kept: gRPC needs it end to end on h2.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names (most messages carry none or only `Connection`), then remove
    // just the ones present: a removal hashes the name even when it is absent.
    let mut present = 0u8;
    // A field literally named `close` (`Connection: close` would name it).
    let mut close_field = false;
    for k in h.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        } else if k.as_str() == "close" {
            close_field = true;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection: keep-alive` or `close`, on nearly every HTTP/1.1 message, names no other
    // field: then there is nothing to look up and remove.
    let options_only = !close_field
        && h.get_all(header::CONNECTION).iter().all(|v| {
            v.as_bytes().split(|&b| b == b',').all(|t| {
                let t = t.trim_ascii();
                t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
            })
        });
    if present & 1 != 0 && !options_only {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `keep-alive` goes below anyway.
            .filter(|n| !n.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    let te_trailers = present & (1 << 3) != 0
        && h.get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("trailers"))
            });
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_upgrade(req: &Request<ReqBody>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let random = fastrand::u128(..).to_le_bytes();
    for (pair, byte) in id.chunks_exact_mut(2).zip(random) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn sticky_value(upstream: &str) -> String {
    format!("{:016x}", crate::balance::key_hash(upstream.as_bytes()))
}

/// A response body that holds counters until the client has the whole body.
struct Guarded<B> {
    inner: B,
    _active: CountGuard,
    _retry: Option<CountGuard>,
    _upstream: Option<UpstreamActive>,
}

/// Keeps the per-upstream in-flight gauge up while a response streams.
struct UpstreamActive {
    cluster: Arc<ClusterRt>,
    index: usize,
}

impl UpstreamActive {
    fn new(cluster: Arc<ClusterRt>, index: usize) -> UpstreamActive {
        cluster.upstreams[index]
            .active
            .fetch_add(1, Ordering::Relaxed);
        cluster.active_gauges[index].inc();
        UpstreamActive { cluster, index }
    }
}

impl Drop for UpstreamActive {
    fn drop(&mut self) {
        self.cluster.upstreams[self.index]
            .active
            .fetch_sub(1, Ordering::Relaxed);
        self.cluster.active_gauges[self.index].dec();
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The future [`handle`] returns.
pub type HandleFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// Serves one request. Never fails: every problem is an HTTP answer.
///
/// The request's state machine is large (headers, the upstream exchange, timers); it is boxed
/// once here so the servers move a pointer, not the whole state, into each h2 stream task and
/// h1 dispatcher slot.
pub fn handle(shared: Arc<Shared>, info: Arc<ConnInfo>, req: Request<ReqBody>) -> HandleFuture {
    // Written straight into its allocation: `Box::pin(handle_request(..))` builds the state on
    // the stack first and then copies all of it into the box.
    pin_in_place(|| handle_request(shared, info, req))
}

/// `Box::pin(make())`, with `make`'s value written straight into the allocation (`Box::write`
/// once the MSRV reaches 1.87).
#[inline(always)]
#[allow(unsafe_code)]
fn pin_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the line above initialised the slot.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// [`handle`] unboxed, for a caller that pins it in its own state (vip-l7's HTTP/1.1 server path,
/// one request at a time per connection): no allocation, and no copy of the state into a box,
/// per request.
pub async fn handle_request(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: Request<ReqBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    shared.requests_total.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let version = req.version();
    // Shared copies of the request's own bytes (reference counts, no allocation or parsing).
    let path_and_query = req.uri().path_and_query().cloned();
    let path = path_and_query.as_ref().map_or("/", |p| p.as_str());
    let mut request_id = req
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| v.len() <= 128 && !v.is_empty())
        .cloned()
        .unwrap_or_else(new_request_id);
    // Unique per request, so never worth a slot in an HPACK dynamic table: "sensitive" makes
    // h2 send it as a never-indexed literal instead of inserting (and evicting) every time.
    request_id.set_sensitive(true);
    let authority = req.uri().authority().cloned();
    let host_header = match authority {
        Some(_) => None,
        None => req.headers().get(header::HOST).cloned(),
    };
    let host = match (&authority, &host_header) {
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.to_str().unwrap_or(""),
        (None, None) => "",
    };
    let rt = shared.runtime.load_full();
    let (resp, route, cluster, upstream) =
        forward(&shared, &info, &rt, req, &request_id, host, path).await;
    let status = resp.status().as_u16();
    let secs = start.elapsed().as_secs_f64();
    match route.and_then(|r| rt.route_metrics.get(r)) {
        Some(m) => m.record(upstream, status, secs),
        None => shared.metrics.request("", "", "", status, secs),
    }
    if rt.config.access_log {
        // One line per request: client, request line, status, cluster, upstream, time, id.
        let line = format!(
            "{} {:?} {} {:?} {:?} {} {} {} {:.3}ms {}\n",
            info.client.ip(),
            host,
            method,
            path,
            version,
            status,
            cluster.as_ref().map_or("-", |c| c.cfg.name.as_str()),
            match (&cluster, upstream) {
                (Some(c), Some(u)) => c.upstreams[u].name.as_str(),
                _ => "-",
            },
            secs * 1000.0,
            request_id.to_str().unwrap_or("-"),
        );
        if !crate::accesslog::log(line) {
            shared.metrics.rejected("access_log_dropped");
        }
    }
    Ok(resp)
}

/// The response, and for metrics and the access log: route index, cluster, upstream index.
type Forwarded = (
    Response<ProxyBody>,
    Option<usize>,
    Option<Arc<ClusterRt>>,
    Option<usize>,
);

async fn forward(
    shared: &Arc<Shared>,
    info: &ConnInfo,
    rt: &Runtime,
    mut req: Request<ReqBody>,
    request_id: &HeaderValue,
    host: &str,
    path: &str,
) -> Forwarded {
    let metrics = &shared.metrics;
    let reject = |status: StatusCode, reason: &'static str, msg: &str| -> Forwarded {
        metrics.rejected(reason);
        (local_response(status, msg, request_id), None, None, None)
    };
    if path.len() > info.listener.max_uri_bytes {
        return reject(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "request target too long",
        );
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > info.listener.max_header_bytes {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "request headers too large",
        );
    }
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some() {
        // Boxed: its state is as large as the whole proxy path's and would otherwise be part
        // of every request's future (allocated, moved and dropped per request).
        return Box::pin(extended_connect(
            shared, info, rt, req, request_id, host, path,
        ))
        .await;
    }
    if req.method() == Method::CONNECT {
        return reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect",
            "CONNECT is not supported",
        );
    }
    let Some((route_index, _)) = rt.routes.route_indexed(host, path, req.headers()) else {
        return reject(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route for this host and path",
        );
    };
    let Some(cluster) = rt.route_clusters.get(route_index).cloned().flatten() else {
        return reject(StatusCode::NOT_FOUND, "no_route", "route names no cluster");
    };
    if cluster.cfg.protocol == config::UpstreamProtocol::H2 && is_websocket_upgrade(&req) {
        let tunnel = websocket_h1_to_h2(shared, info, route_index, cluster, req, request_id, host);
        return Box::pin(tunnel).await;
    }
    let named = |resp: Response<ProxyBody>, up: Option<usize>| -> Forwarded {
        (resp, Some(route_index), Some(cluster.clone()), up)
    };
    let local = |status: StatusCode, reason: &'static str, msg: &str| -> Forwarded {
        metrics.rejected(reason);
        named(local_response(status, msg, request_id), None)
    };

    let active_guard = match admit(&cluster, info, req.headers()) {
        Ok(g) => g,
        Err((status, reason, msg)) => return local(status, reason, msg),
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));

    // Headers for the upstream.
    let upgrade = is_upgrade(&req);
    let upgrade_value = req.headers().get(header::UPGRADE).cloned();
    let mut headers = std::mem::take(req.headers_mut());
    strip_hop_by_hop(&mut headers);
    if upgrade {
        if let Some(v) = upgrade_value {
            headers.insert(header::UPGRADE, v);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    add_forwarding_headers(&mut headers, info, host, request_id);

    // Balancing keys.
    let key_hash = balance_key(&cluster, &headers, info);
    let sticky_index = cluster.cfg.sticky_cookie.as_ref().and_then(|name| {
        let v = cookie(&headers, name)?;
        cluster
            .upstreams
            .iter()
            .position(|u| u.is_available() && sticky_value(&u.name) == v)
    });
    // After the balancing keys, which may hash on the Host.
    let h2_authority = if cluster.cfg.protocol == config::UpstreamProtocol::H2 {
        take_h2_authority(&mut headers)
    } else {
        None
    };

    // Body: buffered (retryable) when small and known, else streamed once.
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let method = req.method().clone();
    let idempotent = matches!(
        method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let body = req.into_body();
    let buffered = !upgrade
        && body
            .size_hint()
            .upper()
            .is_some_and(|u| u <= MAX_BUFFERED_BODY);
    let mut streaming: Option<ReqBody> = None;
    let mut bytes = Bytes::new();
    if let ReqBody::Read(b) = body {
        // Read with the head (at most `MAX_BUFFERED_BODY`, so `buffered`), or none.
        bytes = b;
    } else if buffered && body.is_end_stream() {
        // No body (a GET): nothing to read.
    } else if buffered {
        // Boxed: rare (a GET has no body), and kept out of every request's future.
        let collect = Box::pin(tokio::time::timeout(
            cluster.cfg.request_timeout,
            body.collect(),
        ));
        match collect.await {
            Ok(Ok(c)) => bytes = c.to_bytes(),
            Ok(Err(_)) => {
                return local(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "could not read the request body",
                )
            }
            Err(_) => {
                return local(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "request body not received in time",
                )
            }
        }
    } else {
        streaming = Some(body);
    }
    let attempts = if buffered {
        cluster.cfg.retry.attempts
    } else {
        1
    };
    let scheme = if cluster.cfg.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    // HTTP/1.1 upstreams get the target in origin form: no absolute URI to build and strip.
    let origin_form = cluster.cfg.protocol == config::UpstreamProtocol::Http1;

    // Upstreams tried so far, on the stack (config caps attempts at 10).
    let mut tried_buf = [0usize; MAX_ATTEMPTS];
    // The upstream whose failure is reported if every attempt fails.
    let mut last_failed: Option<usize> = None;
    let mut retry_guard: Option<CountGuard> = None;
    // An upstream whose shared h2 connection was lost under the request (the retry then gets
    // the new connection its pool opens), or that refused the stream: when no other upstream
    // is left to try, the retry goes to it again.
    let mut again: Option<usize> = None;
    // Whether the streamed request body failed (the client's side, not the upstream's).
    let mut body_failed: Option<Arc<AtomicBool>> = None;
    // Whether `headers` still holds the request's headers (the last attempt may move them).
    let mut headers_left = true;
    let attempts = (attempts as usize).min(MAX_ATTEMPTS);
    for attempt in 0..attempts {
        let tried = &tried_buf[..attempt]; // one upstream per attempt so far
        if attempt > 0 {
            // The previous attempt took the headers: no retry was possible.
            if !headers_left {
                break;
            }
            if !cluster.retry_allowed() {
                break;
            }
            metrics.retry(&cluster.cfg.name);
            retry_guard.get_or_insert_with(|| CountGuard::new(&cluster.active_retries));
        }
        let pick = match sticky_index.filter(|i| !tried.contains(i)) {
            Some(i) => Some(i),
            // One upstream: what every policy would answer, without building a candidate list.
            None if cluster.upstreams.len() == 1 => {
                (tried.is_empty() && cluster.upstreams[0].is_available()).then_some(0)
            }
            None => cluster.picker.pick(&cluster.upstreams, tried, key_hash),
        };
        let same = again.take();
        let pick = pick.or(same);
        let Some(idx) = pick else {
            if tried.is_empty() {
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_upstream",
                    "no healthy upstream in cluster",
                );
            }
            break;
        };
        tried_buf[attempt] = idx;
        let up = cluster.upstreams[idx].clone();
        let uri = if origin_form {
            Ok(Uri::from(path_and_query.clone()))
        } else {
            Uri::builder()
                .scheme(scheme.clone())
                .authority(
                    h2_authority
                        .clone()
                        .unwrap_or_else(|| cluster.authorities[idx].clone()),
                )
                .path_and_query(path_and_query.clone())
                .build()
        };
        let uri: Uri = match uri {
            Ok(u) => u,
            Err(_) => {
                return local(
                    StatusCode::BAD_REQUEST,
                    "bad_uri",
                    "request target is not valid",
                )
            }
        };
        let body: ProxyBody = match streaming.take() {
            Some(b) => {
                // Set when the client's body fails under the upstream exchange, which then
                // fails with whatever error its protocol makes of it (h1: hyper's "user body"
                // error, h2: a stream reset), none of which tells the body apart for sure.
                let failed = body_failed.get_or_insert_with(Default::default).clone();
                b.map_err(move |e| -> BoxError {
                    failed.store(true, Ordering::Relaxed);
                    Box::new(e)
                })
                .boxed()
            }
            // No body (a GET): an empty body is a zero-sized type, so boxing it allocates
            // nothing.
            None if bytes.is_empty() => empty_body(),
            None => text_body(bytes.clone()),
        };
        let mut out = Request::new(body);
        *out.method_mut() = method.clone();
        *out.uri_mut() = uri;
        // Every attempt goes to an upstream not tried yet, or (h2) to the same one after its
        // connection was lost: when no next attempt can happen (the last attempt, or an
        // HTTP/1.1 cluster of one upstream), the headers move instead of being copied.
        let retry_possible = attempt + 1 < attempts
            && (attempt + 1 < cluster.upstreams.len()
                || cluster.cfg.protocol == config::UpstreamProtocol::H2);
        *out.headers_mut() = if retry_possible {
            headers.clone()
        } else {
            headers_left = false;
            std::mem::take(&mut headers)
        };
        let upstream_active = UpstreamActive::new(cluster.clone(), idx);
        // Latency samples feed only the peak-EWMA policy; other clusters skip the clock reads
        // (and the exponential). A reload to peak_ewma starts from the previous samples.
        let t0 = (cluster.cfg.balancer == config::Balancer::PeakEwma).then(Instant::now);
        let observe = || {
            if let Some(t0) = t0 {
                up.observe_latency(t0.elapsed());
            }
        };
        let result =
            tokio::time::timeout(cluster.cfg.request_timeout, cluster.pools[idx].request(out))
                .await;
        match result {
            Ok(Ok(mut resp)) => {
                observe();
                let status = resp.status();
                let gateway_error = matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) || status.is_server_error();
                if up.record_outcome(gateway_error, cluster.cfg.outlier.consecutive_errors) {
                    cluster.maybe_eject(idx, metrics);
                }
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_up) = client_upgrade {
                        let upstream_up = hyper::upgrade::on(&mut resp);
                        tokio::spawn(async move {
                            let _hold = (upstream_active, active_guard);
                            if let (Ok(c), Ok(u)) = tokio::join!(client_up, upstream_up) {
                                let mut c = TokioIo::new(c);
                                let mut u = TokioIo::new(u);
                                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                            }
                        });
                        let (parts, _) = resp.into_parts();
                        let mut r = Response::from_parts(parts, text_body(Bytes::new()));
                        echo_request_id(r.headers_mut(), info, request_id);
                        return named(r, Some(idx));
                    }
                }
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                echo_request_id(&mut parts.headers, info, request_id);
                if let Some(name) = &cluster.cfg.sticky_cookie {
                    if sticky_index != Some(idx) {
                        let v = format!("{name}={}; Path=/; HttpOnly", sticky_value(&up.name));
                        if let Ok(v) = HeaderValue::from_str(&v) {
                            parts.headers.append(header::SET_COOKIE, v);
                        }
                    }
                }
                let body = Guarded {
                    inner: body,
                    _active: active_guard,
                    _retry: retry_guard,
                    _upstream: Some(upstream_active),
                };
                return named(Response::from_parts(parts, body.boxed()), Some(idx));
            }
            Ok(Err(e)) => {
                observe();
                if e.is_circuit() {
                    return local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "circuit_open",
                        "cluster at its connection limit (circuit breaker open)",
                    );
                }
                if e.is_request_body()
                    || body_failed
                        .as_ref()
                        .is_some_and(|f| f.load(Ordering::Relaxed))
                {
                    // The client's side failed (most often: it left mid-upload). Not the
                    // upstream's fault: not counted against it, and not retried.
                    tracing::debug!(upstream = %up.name, error = %e, "request body failed");
                    return local(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        "could not read the request body",
                    );
                }
                if !e.is_graceful_goaway()
                    && up.record_outcome(true, cluster.cfg.outlier.consecutive_errors)
                {
                    cluster.maybe_eject(idx, metrics);
                }
                tracing::debug!(upstream = %up.name, error = %e, "upstream request failed");
                last_failed = Some(idx);
                // Connect failures and h2 streams the upstream did not process (REFUSED_STREAM,
                // or above its GOAWAY's last-stream-id) are safe to retry for any method; other
                // failures only for idempotent methods.
                if !(e.is_connect() || e.is_refused() || idempotent) {
                    break;
                }
                if (e.is_h2_connection_lost() || e.is_refused()) && up.is_available() {
                    again = Some(idx);
                }
            }
            Err(_) => {
                observe();
                if up.record_outcome(true, cluster.cfg.outlier.consecutive_errors) {
                    cluster.maybe_eject(idx, metrics);
                }
                metrics.rejected("upstream_timeout");
                return named(
                    local_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream did not answer in time",
                        request_id,
                    ),
                    Some(idx),
                );
            }
        }
    }
    metrics.rejected("upstream_error");
    let msg = match last_failed {
        Some(i) => format!("upstream {} failed", cluster.upstreams[i].name),
        None => "upstream failed".to_string(),
    };
    named(
        local_response(StatusCode::BAD_GATEWAY, &msg, request_id),
        last_failed,
    )
}

/// Admission to a cluster: its rate limit (429) and its `max_requests` circuit breaker (503).
/// On admission the returned guard counts the request as active until dropped.
fn admit(
    cluster: &ClusterRt,
    info: &ConnInfo,
    headers: &HeaderMap,
) -> Result<CountGuard, (StatusCode, &'static str, &'static str)> {
    if let Some(rl) = &cluster.rate_limiter {
        let key = match rl.key_header() {
            None => info.client_ip.clone(),
            Some(h) => headers
                .get(h)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
        };
        if !rl.allow(&key, Instant::now()) {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded",
            ));
        }
    }
    if cluster.active_requests.load(Ordering::Relaxed) >= cluster.cfg.circuit.max_requests as usize
    {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            "cluster at max_requests (circuit breaker open)",
        ));
    }
    Ok(CountGuard::new(&cluster.active_requests))
}

/// X-Forwarded-For (appended), -Proto and -Host, Host when the client sent none (h2), and the
/// request id, on the headers that go to an upstream.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    info: &ConnInfo,
    host: &str,
    request_id: &HeaderValue,
) {
    // Entries: one hash of each name, whether it is there or not.
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            let joined = e.get().to_str().ok().and_then(|prev| {
                HeaderValue::from_str(&format!("{prev}, {}", info.client_ip)).ok()
            });
            if let Some(v) = joined {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            e.insert(info.client_ip_header.clone());
        }
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if info.tls { "https" } else { "http" }),
    );
    if !host.is_empty() {
        // The Host header the client sent is already a valid value: share it.
        let forwarded = match headers.entry(header::HOST) {
            header::Entry::Occupied(e) if e.get().as_bytes() == host.as_bytes() => {
                Some(e.get().clone())
            }
            header::Entry::Occupied(_) => HeaderValue::from_str(host).ok(),
            header::Entry::Vacant(e) => HeaderValue::from_str(host).ok().inspect(|v| {
                e.insert(v.clone());
            }),
        };
        if let Some(v) = forwarded {
            headers.insert(X_FORWARDED_HOST, v);
        }
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// For a request to an h2 upstream: the Host header, taken out of `headers`, as the authority
/// to send in `:authority` (RFC 9113 §8.3.1: an h2 request carries its authority there, and a
/// server may reject a Host that differs from it, as nginx rejects any Host next to an
/// `:authority`). `None` (the Host is kept) when there is none or it is no valid authority; the
/// upstream's address is the `:authority` then.
fn take_h2_authority(headers: &mut HeaderMap) -> Option<http::uri::Authority> {
    let authority = http::uri::Authority::try_from(headers.get(header::HOST)?.as_bytes()).ok()?;
    headers.remove(header::HOST);
    Some(authority)
}

/// The consistent-hash key of a request, as the cluster's `hash_on` says.
fn balance_key(cluster: &ClusterRt, headers: &HeaderMap, info: &ConnInfo) -> Option<u64> {
    let value = match &cluster.cfg.hash_on {
        Some(HashOn::Header(h)) => headers.get(h.as_str())?.as_bytes(),
        Some(HashOn::Cookie(c)) => cookie(headers, c)?.as_bytes(),
        Some(HashOn::SourceIp) => info.client_ip.as_bytes(),
        None => return None,
    };
    Some(crate::balance::key_hash(value))
}

/// 16 bytes in base64 (22 digits, `==`).
fn base64_16(bytes: [u8; 16]) -> [u8; 24] {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18];
    raw[..16].copy_from_slice(&bytes);
    let mut out = [0u8; 24];
    for (i, c) in raw.chunks(3).enumerate() {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        for k in 0..4 {
            out[i * 4 + k] = B64[((n >> (18 - 6 * k)) & 63) as usize];
        }
    }
    out[22] = b'=';
    out[23] = b'=';
    out
}

/// A random `Sec-WebSocket-Key` (16 random bytes in base64).
fn websocket_key() -> HeaderValue {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    raw[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    // Base64 digits are always a valid header value.
    HeaderValue::from_bytes(&base64_16(raw))
        .unwrap_or_else(|_| HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

/// The GUID of the WebSocket opening handshake (RFC 6455 section 1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(B64[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: 16 bytes in base64 (RFC 6455 section 4.1).
fn valid_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)),
/// RFC 6455 section 4.2.2.
fn websocket_accept(key: &[u8]) -> HeaderValue {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID);
    // Base64 digits are always a valid header value.
    HeaderValue::from_str(&base64(ctx.finish().as_ref()))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// An HTTP/1.1 WebSocket opening request: `GET` with `Connection: upgrade` and
/// `Upgrade: websocket`.
fn is_websocket_upgrade(req: &Request<ReqBody>) -> bool {
    req.method() == Method::GET
        && is_upgrade(req)
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
}

/// How the client opened its WebSocket, which decides how the tunnel is answered.
enum WsClient {
    /// RFC 8441 extended CONNECT on h2: the tunnel opens with 200.
    H2,
    /// HTTP/1.1 `Upgrade: websocket`: the tunnel opens with 101 and this
    /// `Sec-WebSocket-Accept`, computed from the client's key.
    H1 { accept: HeaderValue },
}

/// WebSocket over h2 (RFC 8441): an extended CONNECT with `:protocol = websocket` is routed
/// like a GET of its `:path` and tunnelled to an upstream (see [`websocket_tunnel`]).
async fn extended_connect(
    shared: &Arc<Shared>,
    info: &ConnInfo,
    rt: &Runtime,
    req: Request<ReqBody>,
    request_id: &HeaderValue,
    host: &str,
    path: &str,
) -> Forwarded {
    let metrics = &shared.metrics;
    let websocket = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        metrics.rejected("connect");
        let r = local_response(
            StatusCode::NOT_IMPLEMENTED,
            "extended CONNECT supports only :protocol websocket",
            request_id,
        );
        return (r, None, None, None);
    }
    let Some((route_index, cluster_name)) = rt.routes.route_indexed(host, path, req.headers())
    else {
        metrics.rejected("no_route");
        let r = local_response(
            StatusCode::NOT_FOUND,
            "no route for this host and path",
            request_id,
        );
        return (r, None, None, None);
    };
    let Some(cluster) = rt.clusters.get(cluster_name).cloned() else {
        metrics.rejected("no_route");
        let r = local_response(StatusCode::NOT_FOUND, "route names no cluster", request_id);
        return (r, None, None, None);
    };
    websocket_tunnel(
        shared,
        info,
        route_index,
        cluster,
        req,
        request_id,
        host,
        WsClient::H2,
    )
    .await
}

/// An HTTP/1.1 client's WebSocket for an h2 cluster: the handshake is checked here (RFC 6455
/// section 4.2.1) and the tunnel opened upstream as an extended CONNECT.
async fn websocket_h1_to_h2(
    shared: &Arc<Shared>,
    info: &ConnInfo,
    route_index: usize,
    cluster: Arc<ClusterRt>,
    req: Request<ReqBody>,
    request_id: &HeaderValue,
    host: &str,
) -> Forwarded {
    let metrics = &shared.metrics;
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes() != b"13") {
        metrics.rejected("websocket_version");
        let mut r = local_response(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket needs Sec-WebSocket-Version: 13",
            request_id,
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return (r, Some(route_index), Some(cluster), None);
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY);
    let Some(key) = key.filter(|k| valid_websocket_key(k.as_bytes())) else {
        metrics.rejected("websocket_key");
        let r = local_response(
            StatusCode::BAD_REQUEST,
            "WebSocket needs a Sec-WebSocket-Key of 16 bytes in base64",
            request_id,
        );
        return (r, Some(route_index), Some(cluster), None);
    };
    let accept = websocket_accept(key.as_bytes());
    let client = WsClient::H1 { accept };
    websocket_tunnel(
        shared,
        info,
        route_index,
        cluster,
        req,
        request_id,
        host,
        client,
    )
    .await
}

/// Opens a WebSocket tunnel through `cluster` and splices it to the client's side.
///
/// Upstream: an `http1` cluster gets an HTTP/1.1 Upgrade (with a fresh `Sec-WebSocket-Key`)
/// and opens with 101; an `h2` cluster gets an extended CONNECT with `:protocol websocket` on
/// its shared connection (RFC 8441 section 5: no `Sec-WebSocket-Key`, `Upgrade` or
/// `Connection`) and opens with 200. An h2 upstream without SETTINGS_ENABLE_CONNECT_PROTOCOL
/// gets nothing: the answer is 502, not counted against it by outlier detection. A refusal
/// (4xx, 5xx) goes back as it is. Connect failures are retried on another upstream.
#[allow(clippy::too_many_arguments)]
async fn websocket_tunnel(
    shared: &Arc<Shared>,
    info: &ConnInfo,
    route_index: usize,
    cluster: Arc<ClusterRt>,
    mut req: Request<ReqBody>,
    request_id: &HeaderValue,
    host: &str,
    client: WsClient,
) -> Forwarded {
    let metrics = &shared.metrics;
    let named = |resp: Response<ProxyBody>, up: Option<usize>| -> Forwarded {
        (resp, Some(route_index), Some(cluster.clone()), up)
    };
    let local = |status: StatusCode, reason: &'static str, msg: &str| -> Forwarded {
        metrics.rejected(reason);
        named(local_response(status, msg, request_id), None)
    };
    let h2_upstream = cluster.cfg.protocol == config::UpstreamProtocol::H2;
    let active_guard = match admit(&cluster, info, req.headers()) {
        Ok(g) => g,
        Err((status, reason, msg)) => return local(status, reason, msg),
    };
    // The client connection counts the tunnel as a request in flight while it runs (idle
    // timeout); the server put this guard on the request.
    let conn_guard = req.extensions_mut().remove::<crate::server::ActiveGuard>();
    let client_upgrade = hyper::upgrade::on(&mut req);
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut headers = std::mem::take(req.headers_mut());
    strip_hop_by_hop(&mut headers);
    // The client's key (h1) belongs to its own handshake, answered here.
    headers.remove(header::SEC_WEBSOCKET_KEY);
    if !h2_upstream {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    add_forwarding_headers(&mut headers, info, host, request_id);
    let key_hash = balance_key(&cluster, &headers, info);
    let h2_authority = if h2_upstream {
        take_h2_authority(&mut headers)
    } else {
        None
    };
    let scheme = if cluster.cfg.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let mut tried: Vec<usize> = Vec::new();
    let mut retry_guard: Option<CountGuard> = None;
    for attempt in 0..cluster.cfg.retry.attempts.max(1) {
        if attempt > 0 {
            if !cluster.retry_allowed() {
                break;
            }
            metrics.retry(&cluster.cfg.name);
            retry_guard.get_or_insert_with(|| CountGuard::new(&cluster.active_retries));
        }
        let Some(idx) = cluster.picker.pick(&cluster.upstreams, &tried, key_hash) else {
            if tried.is_empty() {
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_upstream",
                    "no healthy upstream in cluster",
                );
            }
            break;
        };
        tried.push(idx);
        let up = cluster.upstreams[idx].clone();
        let uri = match Uri::builder()
            .scheme(scheme.clone())
            .authority(
                h2_authority
                    .clone()
                    .unwrap_or_else(|| cluster.authorities[idx].clone()),
            )
            .path_and_query(path_and_query.clone())
            .build()
        {
            Ok(u) => u,
            Err(_) => {
                return local(
                    StatusCode::BAD_REQUEST,
                    "bad_uri",
                    "request target is not valid",
                )
            }
        };
        let mut out = Request::new(text_body(Bytes::new()));
        *out.uri_mut() = uri;
        *out.headers_mut() = headers.clone();
        if h2_upstream {
            *out.method_mut() = Method::CONNECT;
            out.extensions_mut()
                .insert(hyper::ext::Protocol::from_static("websocket"));
        }
        let upstream_active = UpstreamActive::new(cluster.clone(), idx);
        let t0 = Instant::now();
        let pool = &cluster.pools[idx];
        let exchange = async {
            if h2_upstream {
                pool.extended_connect(out)
                    .await
                    .map(|r| r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed()))
            } else {
                pool.request(out).await.map(|r| r.map(|b| b.boxed()))
            }
        };
        let result = tokio::time::timeout(cluster.cfg.request_timeout, exchange).await;
        let mut resp = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                up.observe_latency(t0.elapsed());
                if e.is_circuit() {
                    return local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "circuit_open",
                        "cluster at its connection limit (circuit breaker open)",
                    );
                }
                if let UpstreamError::NoConnectProtocol(_) = e {
                    // A configuration mismatch, not a failing upstream: no outlier count.
                    tracing::warn!(cluster = %cluster.cfg.name, "WebSocket refused: {e}");
                    metrics.rejected("websocket_no_connect_protocol");
                    let r = local_response(StatusCode::BAD_GATEWAY, &e.to_string(), request_id);
                    return named(r, Some(idx));
                }
                if up.record_outcome(true, cluster.cfg.outlier.consecutive_errors) {
                    cluster.maybe_eject(idx, metrics);
                }
                tracing::debug!(upstream = %up.name, error = %e, "WebSocket upgrade failed");
                if e.is_connect() || e.is_h2_connection_lost() {
                    continue;
                }
                break;
            }
            Err(_) => {
                if up.record_outcome(true, cluster.cfg.outlier.consecutive_errors) {
                    cluster.maybe_eject(idx, metrics);
                }
                metrics.rejected("upstream_timeout");
                let r = local_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream did not answer in time",
                    request_id,
                );
                return named(r, Some(idx));
            }
        };
        up.observe_latency(t0.elapsed());
        let status = resp.status();
        if up.record_outcome(
            status.is_server_error(),
            cluster.cfg.outlier.consecutive_errors,
        ) {
            cluster.maybe_eject(idx, metrics);
        }
        let opened = if h2_upstream {
            status == StatusCode::OK
        } else {
            status == StatusCode::SWITCHING_PROTOCOLS
        };
        if !opened {
            if status.is_success() || status.is_informational() {
                // It would open the tunnel at the client with nothing behind it.
                metrics.rejected("upstream_error");
                let r = local_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream did not switch to WebSocket",
                    request_id,
                );
                return named(r, Some(idx));
            }
            // A refusal (401, 403, 404, ...) goes back as it is.
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            echo_request_id(&mut parts.headers, info, request_id);
            let body = Guarded {
                inner: body,
                _active: active_guard,
                _retry: None,
                _upstream: Some(upstream_active),
            };
            return named(Response::from_parts(parts, body.boxed()), Some(idx));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _hold = (upstream_active, active_guard, retry_guard, conn_guard);
            if let (Ok(c), Ok(u)) = tokio::join!(client_upgrade, upstream_upgrade) {
                let mut c = TokioIo::new(c);
                let mut u = TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
        let mut r = Response::new(text_body(Bytes::new()));
        if let WsClient::H1 { accept } = client {
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            if let Some(v) = resp.headers().get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        echo_request_id(r.headers_mut(), info, request_id);
        return named(r, Some(idx));
    }
    metrics.rejected("upstream_error");
    let r = local_response(
        StatusCode::BAD_GATEWAY,
        "no upstream accepted the WebSocket",
        request_id,
    );
    named(r, tried.last().copied())
}

/// A plain-text answer for the metrics endpoint.
pub fn metrics_response(metrics: &Metrics) -> Response<ProxyBody> {
    let mut r = Response::new(text_body(metrics.encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// Default request timeout bound used when no cluster applies.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let ids: Vec<HeaderValue> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{s}"
            );
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // All 16 digits show up in both positions of a byte: no nibble is lost.
        let all: String = ids.iter().map(|v| v.to_str().unwrap()).collect();
        for parity in 0..2 {
            let digits: std::collections::HashSet<char> =
                all.chars().skip(parity).step_by(2).collect();
            assert_eq!(digits.len(), 16, "parity {parity}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h[header::TE], "trailers");

        // Without hop-by-hop headers nothing changes; each kind alone is found.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("keep-alive"));
            h.insert("x-keep", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn connection_options_and_named_fields() {
        // Options only: Connection goes, everything else stays.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" Close ,keep-alive"),
        );
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // A named field among options is removed, in any of several Connection values.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("close, X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        // `Connection: close` with a field named `close`: that field is connection-specific.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // A field named `close` without Connection stays.
        let mut h = HeaderMap::new();
        h.insert("close", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn websocket_keys_are_base64_of_16_bytes() {
        assert_eq!(&base64_16([0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA==");
        let seq: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(&base64_16(seq), b"AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(&base64_16([0xff; 16]), b"/////////////////////w==");
        assert_ne!(websocket_key(), websocket_key());
    }

    #[test]
    fn websocket_accept_follows_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let seq: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(base64(&seq).as_bytes(), &base64_16(seq));
        assert!(valid_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_websocket_key(websocket_key().as_bytes()));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25j*Q==",
            b"dGhlIHNhbXBsZSBub25jZQ===",
        ] {
            assert!(!valid_websocket_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn forwarding_headers_reuse_the_host_and_append_to_x_forwarded_for() {
        let listener = Arc::new(config::Listener {
            name: "l".into(),
            address: "127.0.0.1:80".parse().unwrap(),
            certificates: Vec::new(),
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_uri_bytes: 8192,
            request_id_in_response: false,
        });
        let info = ConnInfo::new("192.0.2.7:5000".parse().unwrap(), true, listener);
        let id = HeaderValue::from_static("abc");

        // h1: the client's Host is kept and forwarded; an X-Forwarded-For gets the client added.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        add_forwarding_headers(&mut h, &info, "example.com:8080", &id);
        assert_eq!(h[header::HOST], "example.com:8080");
        assert_eq!(h[X_FORWARDED_HOST], "example.com:8080");
        assert_eq!(h[X_FORWARDED_FOR], "198.51.100.1, 192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_REQUEST_ID], "abc");
        assert_eq!(h.len(), 5, "{h:?}");

        // h2: no Host header, the :authority becomes Host and X-Forwarded-Host.
        let mut h = HeaderMap::new();
        add_forwarding_headers(&mut h, &info, "h2.example", &id);
        assert_eq!(h[header::HOST], "h2.example");
        assert_eq!(h[X_FORWARDED_HOST], "h2.example");
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");

        // An absolute-form target whose authority differs from Host: Host stays, the
        // authority is forwarded; an invalid or empty host adds neither.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("other"));
        add_forwarding_headers(&mut h, &info, "target.example", &id);
        assert_eq!(h[header::HOST], "other");
        assert_eq!(h[X_FORWARDED_HOST], "target.example");
        for bad in ["", "bad\nhost"] {
            let mut h = HeaderMap::new();
            add_forwarding_headers(&mut h, &info, bad, &id);
            assert!(!h.contains_key(header::HOST), "{bad:?}");
            assert!(!h.contains_key(X_FORWARDED_HOST), "{bad:?}");
        }
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sticky=abc; b=2"),
        );
        assert_eq!(cookie(&h, "sticky"), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
