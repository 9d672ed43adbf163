//! A running cluster: its upstream states, balancer, pooled client, circuit breaker counters,
//! retry budget, rate limiter and health-check tasks.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::balance::{Picker, UpstreamState};
use crate::config::{self, UpstreamProtocol};
use crate::metrics::Metrics;

/// Body type sent to upstreams and to clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// Boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Decrements a counter when dropped.
#[derive(Debug)]
pub struct CountGuard(Arc<AtomicUsize>);

impl CountGuard {
    /// Increments `c` and returns the guard that undoes it.
    pub fn new(c: &Arc<AtomicUsize>) -> CountGuard {
        c.fetch_add(1, Ordering::Relaxed);
        CountGuard(c.clone())
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream connection: plain TCP or TLS, counted against the cluster's connection limit.
pub struct Conn {
    io: ConnIo,
    h2: bool,
    _guard: CountGuard,
}

enum ConnIo {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        if self.h2 {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Tcp(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Why the connector refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Circuit breaker: too many connections or pending connects.
    #[error("circuit breaker open: {0}")]
    Circuit(&'static str),
    /// Connect timed out.
    #[error("connect to {0} timed out")]
    Timeout(String),
    /// The URI has no usable authority.
    #[error("bad upstream uri {0}")]
    BadUri(String),
    /// Socket error.
    #[error("connect to {0}: {1}")]
    Io(String, io::Error),
}

/// Connects to upstreams named by `http://ip:port` URIs, with timeout, TLS and limits.
#[derive(Clone)]
pub struct Connector {
    connect_timeout: Duration,
    tls: Option<(TlsConnector, Option<String>)>,
    h2: bool,
    connections: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    max_connections: usize,
    max_pending: usize,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Conn>, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if this.connections.load(Ordering::Relaxed) >= this.max_connections {
                return Err(ConnectError::Circuit("max_connections"));
            }
            if this.pending.load(Ordering::Relaxed) >= this.max_pending {
                return Err(ConnectError::Circuit("max_pending"));
            }
            let _pending = CountGuard::new(&this.pending);
            let auth = uri
                .authority()
                .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
            let addr: SocketAddr = auth
                .as_str()
                .parse()
                .map_err(|_| ConnectError::BadUri(uri.to_string()))?;
            let tcp = tokio::time::timeout(this.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| ConnectError::Timeout(addr.to_string()))?
                .map_err(|e| ConnectError::Io(addr.to_string(), e))?;
            let _ = tcp.set_nodelay(true);
            let guard = CountGuard::new(&this.connections);
            let conn = match &this.tls {
                None => Conn {
                    io: ConnIo::Tcp(tcp),
                    h2: this.h2,
                    _guard: guard,
                },
                Some((tls, name)) => {
                    let server_name = match name {
                        Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                            .map_err(|_| ConnectError::BadUri(n.clone()))?,
                        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                    };
                    let s =
                        tokio::time::timeout(this.connect_timeout, tls.connect(server_name, tcp))
                            .await
                            .map_err(|_| ConnectError::Timeout(addr.to_string()))?
                            .map_err(|e| ConnectError::Io(addr.to_string(), e))?;
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    Conn {
                        io: ConnIo::Tls(Box::new(s)),
                        h2,
                        _guard: guard,
                    }
                }
            };
            Ok(TokioIo::new(conn))
        })
    }
}

/// Token buckets keyed by client IP or a header value.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: config::RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most keys a limiter tracks; above this, full buckets are forgotten (memory stays bounded).
const MAX_RATE_KEYS: usize = 100_000;

impl RateLimiter {
    /// A limiter for `cfg`.
    pub fn new(cfg: config::RateLimit) -> RateLimiter {
        RateLimiter {
            cfg,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The header the key comes from (`None` = client IP).
    pub fn key_header(&self) -> Option<&str> {
        self.cfg.key_header.as_deref()
    }

    /// Takes one token for `key`; false = over the limit.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_RATE_KEYS && !map.contains_key(key) {
            let (rate, burst) = (self.cfg.per_second, self.cfg.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_RATE_KEYS {
                return false;
            }
        }
        let e = map.entry(key.to_string()).or_insert((self.cfg.burst, now));
        let refill = now.saturating_duration_since(e.1).as_secs_f64() * self.cfg.per_second;
        e.0 = (e.0 + refill).min(self.cfg.burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A cluster as it runs.
pub struct ClusterRt {
    /// Configuration.
    pub cfg: config::Cluster,
    /// Upstream states, in config order.
    pub upstreams: Vec<Arc<UpstreamState>>,
    /// Balancer.
    pub picker: Picker,
    /// Pooled client.
    pub client: Client<Connector, ProxyBody>,
    /// Upstream connections open.
    pub connections: Arc<AtomicUsize>,
    /// Requests in flight.
    pub active_requests: Arc<AtomicUsize>,
    /// Retries in flight.
    pub active_retries: Arc<AtomicUsize>,
    /// Rate limiter.
    pub rate_limiter: Option<RateLimiter>,
    /// `ip:port` authorities, one per upstream (request URIs are built from them).
    pub authorities: Vec<http::uri::Authority>,
    /// In-flight gauges, one per upstream.
    pub active_gauges: Vec<prometheus_client::metrics::gauge::Gauge>,
    health_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ClusterRt {
    fn drop(&mut self) {
        for t in &self.health_tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for ClusterRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRt")
            .field("name", &self.cfg.name)
            .finish()
    }
}

impl ClusterRt {
    /// Builds a cluster, reusing upstream states of `previous` (same address) so health,
    /// ejection, drain and weight overrides survive a reload. Must run inside a tokio runtime
    /// (it starts the health checks).
    pub fn new(
        cfg: config::Cluster,
        previous: Option<&ClusterRt>,
        epoch: Instant,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<ClusterRt>, crate::tls::TlsError> {
        let upstreams: Vec<Arc<UpstreamState>> = cfg
            .upstreams
            .iter()
            .map(|u| {
                if let Some(old) =
                    previous.and_then(|p| p.upstreams.iter().find(|o| o.address == u.address))
                {
                    if previous.is_some_and(|p| {
                        p.cfg
                            .upstreams
                            .iter()
                            .any(|o| o.address == u.address && o.weight != u.weight)
                    }) {
                        old.set_weight(u.weight);
                    }
                    return old.clone();
                }
                let s = Arc::new(UpstreamState::new(u.address, u.weight, epoch));
                if previous.is_some() {
                    s.start_slow_start();
                }
                // Upstreams start healthy so a fresh process serves at once; `fall` failed
                // probes take one out.
                s
            })
            .collect();
        let h2 = cfg.protocol == UpstreamProtocol::H2;
        let tls = match &cfg.tls {
            Some(t) => Some((
                TlsConnector::from(crate::tls::client_config(t, h2)?),
                t.server_name.clone(),
            )),
            None => None,
        };
        let connections = previous.map(|p| p.connections.clone()).unwrap_or_default();
        let connector = Connector {
            connect_timeout: cfg.connect_timeout,
            tls,
            h2,
            connections: connections.clone(),
            pending: Arc::new(AtomicUsize::new(0)),
            max_connections: cfg.circuit.max_connections as usize,
            max_pending: cfg.circuit.max_pending as usize,
        };
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(cfg.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .set_host(false)
            .http2_only(h2)
            // Windows sized for throughput: 4 MiB per stream, 16 MiB per connection.
            .http2_initial_stream_window_size(4 << 20)
            .http2_initial_connection_window_size(16 << 20)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10));
        let client = b.build(connector);
        let active_gauges = upstreams
            .iter()
            .map(|u| metrics.upstream_gauge(&cfg.name, &u.name))
            .collect();
        let authorities = upstreams
            .iter()
            .map(|u| {
                // A SocketAddr's text form is always a valid authority.
                http::uri::Authority::from_maybe_shared(bytes::Bytes::from(u.name.clone()))
                    .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"))
            })
            .collect();
        let mut rt = ClusterRt {
            authorities,
            active_gauges,
            picker: Picker::new(cfg.balancer, cfg.slow_start, upstreams.len()),
            upstreams,
            client,
            connections,
            active_requests: previous
                .map(|p| p.active_requests.clone())
                .unwrap_or_default(),
            active_retries: Arc::new(AtomicUsize::new(0)),
            rate_limiter: cfg.rate_limit.clone().map(RateLimiter::new),
            health_tasks: Vec::new(),
            cfg,
        };
        if let Some(h) = rt.cfg.health.clone() {
            for u in &rt.upstreams {
                rt.health_tasks.push(tokio::spawn(health_loop(
                    rt.cfg.name.clone(),
                    u.clone(),
                    h.clone(),
                    rt.client.clone(),
                    metrics.clone(),
                )));
            }
        }
        Ok(Arc::new(rt))
    }

    /// Index of the upstream named `addr`.
    pub fn find(&self, addr: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == addr)
    }

    /// Whether a retry fits in the retry budget now.
    pub fn retry_allowed(&self) -> bool {
        let retries = self.active_retries.load(Ordering::Relaxed);
        let active = self.active_requests.load(Ordering::Relaxed);
        let budget = (active * self.cfg.retry.budget_percent as usize / 100)
            .max(self.cfg.retry.min_concurrent as usize);
        retries < budget
    }

    /// Ejects upstream `i` unless that would exceed the cap on the ejected share.
    pub fn maybe_eject(&self, i: usize, metrics: &Metrics) {
        let percent = self.cfg.outlier.max_ejection_percent as usize;
        if percent == 0 {
            return; // ejection disabled
        }
        let ejected = self.upstreams.iter().filter(|u| u.is_ejected()).count();
        // At least one may go when the cluster has two or more, so small clusters still eject.
        let cap = (self.upstreams.len() * percent / 100).max(usize::from(self.upstreams.len() > 1));
        if ejected < cap {
            self.upstreams[i].eject(self.cfg.outlier.base_ejection);
            metrics.ejection(&self.cfg.name, &self.upstreams[i].name);
            tracing::warn!(cluster = %self.cfg.name, upstream = %self.upstreams[i].name, "outlier ejected");
        }
    }
}

async fn health_loop(
    cluster: String,
    up: Arc<UpstreamState>,
    h: config::Health,
    client: Client<Connector, ProxyBody>,
    metrics: Arc<Metrics>,
) {
    let mut ok_run = 0u32;
    let mut fail_run = 0u32;
    let uri: Uri = match format!("http://{}{}", up.address, h.path).parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    // Spread probes of many upstreams over the interval.
    tokio::time::sleep(h.interval.mul_f64(fastrand::f64() * 0.2)).await;
    loop {
        let req = http::Request::get(uri.clone())
            .header(http::header::HOST, up.name.as_str())
            .header(http::header::USER_AGENT, "vip-l7-health")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|e| -> BoxError { match e {} })
                    .boxed(),
            );
        let ok = match req {
            Ok(req) => match tokio::time::timeout(h.timeout, client.request(req)).await {
                Ok(Ok(resp)) => {
                    let good = resp.status().is_success() || resp.status().is_redirection();
                    let _ = tokio::time::timeout(h.timeout, resp.into_body().collect()).await;
                    good
                }
                _ => false,
            },
            Err(_) => false,
        };
        if ok {
            ok_run += 1;
            fail_run = 0;
            if !up.is_healthy() && ok_run >= h.rise {
                up.set_healthy(true);
                tracing::info!(cluster = %cluster, upstream = %up.name, "upstream healthy");
            }
        } else {
            fail_run += 1;
            ok_run = 0;
            if up.is_healthy() && fail_run >= h.fall {
                up.set_healthy(false);
                metrics.health_down(&cluster, &up.name);
                tracing::warn!(cluster = %cluster, upstream = %up.name, "upstream unhealthy");
            }
        }
        tokio::time::sleep(h.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refills_and_stays_bounded() {
        let rl = RateLimiter::new(config::RateLimit {
            per_second: 10.0,
            burst: 2.0,
            key_header: None,
        });
        let t0 = Instant::now();
        assert!(rl.allow("a", t0));
        assert!(rl.allow("a", t0));
        assert!(!rl.allow("a", t0));
        assert!(rl.allow("b", t0), "keys are separate");
        assert!(rl.allow("a", t0 + Duration::from_millis(110)));
        assert!(!rl.allow("a", t0 + Duration::from_millis(110)));
        for i in 0..(MAX_RATE_KEYS + 10) {
            rl.allow(&i.to_string(), t0);
        }
        assert!(rl.buckets.lock().unwrap().len() <= MAX_RATE_KEYS);
    }
}
