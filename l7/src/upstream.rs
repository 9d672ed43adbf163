//! A running cluster: its upstream states, balancer, pooled client, circuit breaker counters,
//! retry budget, rate limiter and health-check tasks.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
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
    _guard: CountGuard,
}

enum ConnIo {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
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
    /// The configured TLS server name is not a valid DNS name or IP address.
    #[error("bad upstream TLS server name {0:?}")]
    BadUri(String),
    /// Socket error.
    #[error("connect to {0}: {1}")]
    Io(String, io::Error),
}

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (nothing was sent).
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The HTTP/1.1 or h2 handshake on a new connection failed (nothing was sent).
    #[error("upstream handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The request failed on an established connection.
    #[error("upstream request failed: {0}")]
    Request(hyper::Error),
    /// The request failed because its shared h2 connection was lost (I/O error, GOAWAY or
    /// closed); the pool has dropped that connection, so a retry gets a fresh one.
    #[error("upstream h2 connection lost: {0}")]
    H2ConnectionLost(hyper::Error),
    /// The h2 upstream did not process the request (RFC 9113 §8.7): it reset the stream with
    /// REFUSED_STREAM, or its GOAWAY named a lower last-stream-id (§6.8). A retry is safe for
    /// any method.
    #[error("upstream did not process the h2 stream (REFUSED_STREAM, or above a GOAWAY's last-stream-id): {0}")]
    Refused(hyper::Error),
    /// Reading the client's request body to send it upstream failed.
    #[error("could not read the request body to send upstream: {0}")]
    RequestBody(BoxError),
    /// vip-l7's own HTTP/1.1 client failed: an I/O error, or an invalid response.
    #[error(transparent)]
    H1(#[from] crate::h1client::H1Error),
    /// An HTTP/1.1 upstream answered 101 Switching Protocols to a request that did not ask
    /// for an upgrade (RFC 9110 §15.2.2 forbids it); its connection is closed.
    #[error("upstream answered 101 Switching Protocols to a request without Upgrade")]
    UnaskedSwitch,
    /// The h2 upstream did not send SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441), so it cannot
    /// take a WebSocket as an extended CONNECT. Nothing was sent.
    #[error("upstream {0} did not enable the extended CONNECT protocol (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441): WebSocket over h2 needs it, or use an http1 cluster")]
    NoConnectProtocol(SocketAddr),
}

impl UpstreamError {
    /// Nothing reached the upstream: safe to retry for any method.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::Handshake(_)
        )
    }

    /// The upstream did not process the request (refused stream): safe to retry for any
    /// method, on the same upstream too.
    pub fn is_refused(&self) -> bool {
        matches!(self, UpstreamError::Refused(_))
    }

    /// The upstream is going away gracefully: a GOAWAY with NO_ERROR (a restart, a drain, or a
    /// gRPC server's maximum connection age) left this request's stream unprocessed. Routine,
    /// so outlier detection does not count it; a REFUSED_STREAM reset or a GOAWAY with an error
    /// code still counts.
    pub fn is_graceful_goaway(&self) -> bool {
        match self {
            UpstreamError::Refused(e) => h2_error(e).is_some_and(|h| {
                h.is_remote() && h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR)
            }),
            _ => false,
        }
    }

    /// Reading the client's request body failed before it was sent (the own HTTP/1.1
    /// client collects it first). A streamed body that fails under hyper's clients shows as
    /// their own error instead (h1: "error from user's Body stream", h2: a stream reset), so
    /// the proxy flags the body itself as well.
    pub fn is_request_body(&self) -> bool {
        matches!(self, UpstreamError::RequestBody(_))
    }

    /// Refused by the cluster's circuit breaker (max connections or pending connects).
    pub fn is_circuit(&self) -> bool {
        matches!(self, UpstreamError::Connect(ConnectError::Circuit(_)))
    }

    /// The upstream's shared h2 connection was lost under the request: a retry of an
    /// idempotent request may go to the same upstream (on a new connection).
    pub fn is_h2_connection_lost(&self) -> bool {
        matches!(self, UpstreamError::H2ConnectionLost(_))
    }
}

/// The h2 error under a failed hyper request, if there is one.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return Some(h);
        }
        source = s.source();
    }
    None
}

/// Whether the upstream did not process the request's stream (RFC 9113 §8.7), so any method
/// may be sent again:
/// - it reset the stream with REFUSED_STREAM ("closed prior to any processing"), or
/// - its GOAWAY named a last-stream-id below the stream (§6.8). The `h2` crate fails exactly
///   those streams with the peer's GOAWAY error when the frame arrives; streams at or below
///   the last-stream-id carry on, and if the connection then closes under them they fail with
///   an I/O error instead (which may follow processing, so it is not retried for a POST).
///   `tests/resilience.rs` checks both sides with a hand-written upstream.
fn h2_unprocessed(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h| {
        h.is_remote()
            && ((h.is_reset() && h.reason() == Some(h2::Reason::REFUSED_STREAM)) || h.is_go_away())
    })
}

/// Whether a failed h2 request means its connection is gone (rather than one stream reset).
fn h2_connection_lost(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return h.is_io() || h.is_go_away();
        }
        if s.is::<io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Opens upstream connections, with timeout, TLS and the circuit-breaker limits.
#[derive(Clone)]
pub struct Connector {
    connect_timeout: Duration,
    tls: Option<(TlsConnector, Option<String>)>,
    connections: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    max_connections: usize,
    max_pending: usize,
}

impl Connector {
    /// Connects to `addr` (TCP_NODELAY on), then TLS when the cluster uses it.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TokioIo<Conn>, ConnectError> {
        if self.connections.load(Ordering::Relaxed) >= self.max_connections {
            return Err(ConnectError::Circuit("max_connections"));
        }
        if self.pending.load(Ordering::Relaxed) >= self.max_pending {
            return Err(ConnectError::Circuit("max_pending"));
        }
        let _pending = CountGuard::new(&self.pending);
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr.to_string()))?
            .map_err(|e| ConnectError::Io(addr.to_string(), e))?;
        let _ = tcp.set_nodelay(true);
        let guard = CountGuard::new(&self.connections);
        let io = match &self.tls {
            None => ConnIo::Tcp(tcp),
            Some((tls, name)) => {
                let server_name = match name {
                    Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|_| ConnectError::BadUri(n.clone()))?,
                    None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                };
                let s = tokio::time::timeout(self.connect_timeout, tls.connect(server_name, tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout(addr.to_string()))?
                    .map_err(|e| ConnectError::Io(addr.to_string(), e))?;
                ConnIo::Tls(Box::new(s))
            }
        };
        Ok(TokioIo::new(Conn { io, _guard: guard }))
    }
}

type H1Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;
type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

/// Most idle HTTP/1.1 connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// How connections of one cluster are made.
struct PoolConfig {
    connector: Connector,
    h2: bool,
    idle_timeout: Duration,
    h1_builder: hyper::client::conn::http1::Builder,
    h2_builder: hyper::client::conn::http2::Builder<TokioExecutor>,
}

/// Pooled keep-alive connections to one upstream: idle HTTP/1.1 connections (reused
/// most-recently-used first, closed after the cluster's idle timeout) or one shared h2
/// connection. A request takes a connection straight from the pool and the response body puts
/// it back once the upstream's response is complete: no pool task, no checkout future.
pub struct UpstreamPool {
    addr: SocketAddr,
    cfg: Arc<PoolConfig>,
    idle: Mutex<Vec<(H1Sender, Instant)>>,
    /// Idle connections of vip-l7's own HTTP/1.1 client (`h1client`), most recent last.
    own_idle: Mutex<Vec<(Box<crate::h1client::H1Conn>, Instant)>>,
    h2: Mutex<Option<H2Conn>>,
    h2_connect: tokio::sync::Mutex<()>,
}

/// The shared h2 connection of an upstream. `id` (a generation number, unique per process)
/// names it: hyper's `SendRequest` has no identity, and a failure must drop only the
/// connection it happened on, never a newer one another request opened meanwhile.
struct H2Conn {
    tx: H2Sender,
    id: u64,
    opened: Instant,
    used: Instant,
    /// Whether the upstream's SETTINGS enabled the extended CONNECT protocol (RFC 8441), as
    /// the connection task last looked.
    connect_protocol: Arc<AtomicBool>,
    /// Asks the connection task to look again (hyper answers only from the connection
    /// handle, which that task owns), and its answer.
    settings_ask: Arc<SettingsAsk>,
}

/// The two sides of "look at the connection's settings again".
#[derive(Default)]
struct SettingsAsk {
    ask: tokio::sync::Notify,
    answered: tokio::sync::Notify,
}

/// What an h2 connection's settings say about extended CONNECT (RFC 8441).
enum ConnectProtocol {
    Enabled,
    Disabled,
    /// The connection is closed or no longer the pool's.
    Gone,
}

/// How often a WebSocket request on a young h2 connection has the server's extended CONNECT
/// setting looked at again (and how long it waits for each answer).
const SETTINGS_POLL: Duration = Duration::from_millis(2);

/// The next h2 connection generation.
static H2_GENERATION: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The request target in origin form (`/path?query`), as HTTP/1.1 sends it to an origin.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none()
        && uri.authority().is_none()
        && uri.path_and_query().is_some_and(|p| !p.as_str().is_empty())
    {
        return; // already in origin form
    }
    let pq = uri
        .path_and_query()
        .filter(|p| !p.as_str().is_empty())
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *uri = Uri::from(pq);
}

impl UpstreamPool {
    /// Upstream connections that are idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        lock(&self.idle).len() + lock(&self.own_idle).len() + usize::from(lock(&self.h2).is_some())
    }

    /// Sends `req` (an absolute URI naming this upstream) on a pooled connection, opening one
    /// when none is idle. A pooled HTTP/1.1 connection that turns out to be closed before the
    /// request was written is skipped, so a stale keep-alive connection costs no error.
    pub async fn request(
        self: &Arc<Self>,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<PoolBody>, UpstreamError> {
        if self.cfg.h2 {
            return self.request_h2(req).await;
        }
        origin_form(req.uri_mut());
        // Only a request that asks for an upgrade may be answered 101 (RFC 9110 §15.2.2).
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let in_memory = req
            .body()
            .size_hint()
            .exact()
            // The bodies the proxy buffers; larger or streamed ones take hyper's client.
            .is_some_and(|n| n <= crate::proxy::MAX_BUFFERED_BODY);
        if !upgrade && in_memory {
            return self.request_own(req).await;
        }
        loop {
            let (mut tx, reused) = match self.checkout().await {
                Some(tx) => (tx, true),
                // Boxed: connecting is rare and its future (TCP, TLS, handshake) is large; the
                // request future, moved and copied on every request, stays small.
                None => (Box::pin(self.connect_h1()).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) if !upgrade && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                    // Dropping the response drops the switched connection.
                    return Err(UpstreamError::UnaskedSwitch);
                }
                Ok(resp) => {
                    // After a protocol switch the connection belongs to the tunnel.
                    let back = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                        .then(|| (tx, self.clone()));
                    return Ok(resp.map(|inner| PoolBody::hyper(inner, back)));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }

    async fn request_h2(
        &self,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<PoolBody>, UpstreamError> {
        let mut fresh = false;
        loop {
            let (mut tx, id) = self.h2_conn(&mut fresh).await?;
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|inner| PoolBody::hyper(inner, None))),
                Err(e) => req = self.h2_send_failed(id, &tx, &mut fresh, e)?,
            }
        }
    }

    /// The shared h2 connection and its id, opened when there is none (`fresh` then becomes
    /// true: a failure on it is not retried on yet another one).
    async fn h2_conn(&self, fresh: &mut bool) -> Result<(H2Sender, u64), UpstreamError> {
        if let Some(c) = self.h2_cached() {
            return Ok(c);
        }
        *fresh = true;
        Box::pin(self.connect_h2()).await
    }

    /// After `try_send_request` failed on h2 connection `id`: a request that never left (the
    /// shared connection went away before its stream started) comes back to be sent once more
    /// on a new connection, unless this one was already `fresh`; anything else is the error.
    fn h2_send_failed(
        &self,
        id: u64,
        tx: &H2Sender,
        fresh: &mut bool,
        mut e: hyper::client::conn::TrySendError<http::Request<ProxyBody>>,
    ) -> Result<http::Request<ProxyBody>, UpstreamError> {
        match e.take_message() {
            Some(r) if !*fresh => {
                self.forget_h2(id);
                *fresh = true;
                Ok(r)
            }
            Some(_) => {
                self.forget_h2(id);
                Err(UpstreamError::H2ConnectionLost(e.into_error()))
            }
            None => Err(self.h2_failed(id, tx, e.into_error())),
        }
    }

    /// Classifies a failed h2 request: when its connection is gone, that connection (and only
    /// that one) leaves the pool.
    fn h2_failed(&self, id: u64, tx: &H2Sender, e: hyper::Error) -> UpstreamError {
        let unprocessed = h2_unprocessed(&e);
        if tx.is_closed() || h2_connection_lost(&e) {
            self.forget_h2(id);
            if unprocessed {
                return UpstreamError::Refused(e);
            }
            UpstreamError::H2ConnectionLost(e)
        } else if unprocessed {
            UpstreamError::Refused(e)
        } else {
            UpstreamError::Request(e)
        }
    }

    /// Opens a WebSocket on the upstream's shared h2 connection: `req` is an extended CONNECT
    /// (RFC 8441: method CONNECT, a `hyper::ext::Protocol` extension, no body). The caller
    /// takes the tunnel from the 200 response with `hyper::upgrade::on`.
    pub async fn extended_connect(
        &self,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let mut fresh = false;
        loop {
            let (mut tx, id) = self.h2_conn(&mut fresh).await?;
            match self.connect_protocol(&tx, id).await {
                ConnectProtocol::Enabled => {}
                ConnectProtocol::Disabled => {
                    return Err(UpstreamError::NoConnectProtocol(self.addr))
                }
                ConnectProtocol::Gone => {
                    // The connection ended (or failed for another request) before its
                    // settings said anything: once more on a new one.
                    self.forget_h2(id);
                    if !fresh {
                        fresh = true;
                        continue;
                    }
                    return Err(match tx.ready().await {
                        Err(e) => UpstreamError::H2ConnectionLost(e),
                        Ok(()) => UpstreamError::NoConnectProtocol(self.addr),
                    });
                }
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) => req = self.h2_send_failed(id, &tx, &mut fresh, e)?,
            }
        }
    }

    /// Whether the upstream sent SETTINGS_ENABLE_CONNECT_PROTOCOL on connection `id`. The
    /// connection task looks at the settings when asked: the server's SETTINGS arrive after
    /// the handshake returns, so on a connection younger than the connect timeout this asks
    /// again every 2 ms until they say so or that age is reached; an older connection is asked
    /// once (its settings have long arrived, however late they came).
    async fn connect_protocol(&self, tx: &H2Sender, id: u64) -> ConnectProtocol {
        let Some((flag, opened, asked)) = lock(&self.h2)
            .as_ref()
            .filter(|c| c.id == id)
            .map(|c| (c.connect_protocol.clone(), c.opened, c.settings_ask.clone()))
        else {
            return ConnectProtocol::Gone;
        };
        let settle = self.cfg.connector.connect_timeout;
        loop {
            if flag.load(Ordering::Acquire) {
                return ConnectProtocol::Enabled;
            }
            if tx.is_closed() {
                return ConnectProtocol::Gone;
            }
            let old = opened.elapsed() >= settle;
            let answer = asked.answered.notified();
            tokio::pin!(answer);
            answer.as_mut().enable();
            asked.ask.notify_one();
            // The task answers on its next poll; bounded in case it is gone.
            let _ = tokio::time::timeout(SETTINGS_POLL, answer).await;
            if flag.load(Ordering::Acquire) {
                return ConnectProtocol::Enabled;
            }
            if old {
                return ConnectProtocol::Disabled;
            }
            tokio::time::sleep(SETTINGS_POLL).await;
        }
    }

    /// The shared h2 connection, when open: its sender and id.
    fn h2_cached(&self) -> Option<(H2Sender, u64)> {
        let mut g = lock(&self.h2);
        match g.as_mut() {
            Some(c) if !c.tx.is_closed() => {
                c.used = Instant::now();
                Some((c.tx.clone(), c.id))
            }
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    /// Drops the cached h2 connection if it is connection `id` (the one that failed); a newer
    /// connection stays.
    fn forget_h2(&self, id: u64) {
        let mut g = lock(&self.h2);
        if g.as_ref().is_some_and(|c| c.id == id) {
            *g = None;
        }
    }

    async fn connect_h2(&self) -> Result<(H2Sender, u64), UpstreamError> {
        // One connect at a time: concurrent first requests share the connection it makes.
        let _one = self.h2_connect.lock().await;
        if let Some(c) = self.h2_cached() {
            return Ok(c);
        }
        let io = self.cfg.connector.connect(self.addr).await?;
        let (mut tx, conn) = self
            .cfg
            .h2_builder
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        let addr = self.addr;
        let opened = Instant::now();
        let connect_protocol = Arc::new(AtomicBool::new(false));
        let flag = connect_protocol.clone();
        let settings_ask = Arc::new(SettingsAsk::default());
        let asked = settings_ask.clone();
        // Only the connection handle can tell whether the server's SETTINGS enabled extended
        // CONNECT, and hyper drives the h2 connection in a task of its own (this handle is not
        // woken by incoming frames). So this task looks whenever a request asks
        // (`connect_protocol`), and costs nothing on connections no WebSocket uses.
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut ask = std::pin::pin!(asked.ask.notified());
            let r = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = std::future::Future::poll(conn.as_mut(), cx) {
                    return Poll::Ready(r);
                }
                while std::future::Future::poll(ask.as_mut(), cx).is_ready() {
                    flag.store(
                        conn.is_extended_connect_protocol_enabled(),
                        Ordering::Release,
                    );
                    asked.answered.notify_waiters();
                    ask.set(asked.ask.notified());
                }
                Poll::Pending
            })
            .await;
            if let Err(e) = r {
                tracing::debug!(upstream = %addr, "h2 upstream connection ended: {e}");
            }
        });
        tx.ready().await.map_err(UpstreamError::Handshake)?;
        let id = H2_GENERATION.fetch_add(1, Ordering::Relaxed);
        *lock(&self.h2) = Some(H2Conn {
            tx: tx.clone(),
            id,
            opened,
            used: Instant::now(),
            connect_protocol,
            settings_ask,
        });
        Ok((tx, id))
    }

    async fn connect_h1(&self) -> Result<H1Sender, UpstreamError> {
        let io = self.cfg.connector.connect(self.addr).await?;
        let (tx, conn) = self
            .cfg
            .h1_builder
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, "upstream connection ended: {e}");
            }
        });
        Ok(tx)
    }

    /// A request on vip-l7's own HTTP/1.1 client (`h1client`): its body is in memory. A pooled
    /// connection that fails while the request is written is skipped (the upstream cannot have a
    /// complete request), as with hyper's pool.
    async fn request_own(
        self: &Arc<Self>,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<PoolBody>, UpstreamError> {
        use crate::h1client::{H1Conn, H1Error};
        let (parts, body) = req.into_parts();
        let body = if body.is_end_stream() {
            Bytes::new()
        } else {
            // Boxed: rare (a GET has no body), and kept out of every request's future.
            Box::pin(body.collect())
                .await
                .map_err(UpstreamError::RequestBody)?
                .to_bytes()
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        loop {
            let (conn, reused) = match self.own_checkout() {
                Some(c) => (c, true),
                None => {
                    let io = Box::pin(self.cfg.connector.connect(self.addr)).await?;
                    (H1Conn::new(io.into_inner()), false)
                }
            };
            match conn
                .send(&parts.method, target, &parts.headers, &body)
                .await
            {
                Ok(r) if r.head.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(UpstreamError::UnaskedSwitch);
                }
                Ok(r) => {
                    let mut resp = http::Response::new(PoolBody::own(r.body, self.clone()));
                    *resp.status_mut() = r.head.status;
                    *resp.version_mut() = r.head.version;
                    *resp.headers_mut() = r.head.headers;
                    return Ok(resp);
                }
                Err(H1Error::Write(_)) if reused => continue,
                Err(e) => return Err(UpstreamError::H1(e)),
            }
        }
    }

    /// The most recently used idle own-client connection that is still open with nothing unread.
    fn own_checkout(&self) -> Option<Box<crate::h1client::H1Conn>> {
        loop {
            let (mut conn, since) = lock(&self.own_idle).pop()?;
            if since.elapsed() < self.cfg.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    fn own_checkin(&self, mut conn: Box<crate::h1client::H1Conn>) {
        conn.shrink();
        let mut idle = lock(&self.own_idle);
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push((conn, Instant::now()));
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<H1Sender> {
        loop {
            let (mut tx, since) = lock(&self.idle).pop()?;
            if tx.is_closed() || since.elapsed() >= self.cfg.idle_timeout {
                continue; // dropping the sender closes the connection
            }
            if tx.is_ready() || tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    fn checkin(&self, tx: H1Sender) {
        if tx.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push((tx, Instant::now()));
        }
    }

    /// Closes connections idle longer than the idle timeout.
    fn sweep(&self) {
        let timeout = self.cfg.idle_timeout;
        let expired: Vec<(H1Sender, Instant)> = {
            let mut idle = lock(&self.idle);
            // Oldest first: the idle list is pushed and popped at its end.
            let n = idle
                .iter()
                .take_while(|(tx, since)| tx.is_closed() || since.elapsed() >= timeout)
                .count();
            idle.drain(..n).collect()
        };
        drop(expired);
        let expired: Vec<_> = {
            let mut idle = lock(&self.own_idle);
            let n = idle
                .iter()
                .take_while(|(_, since)| since.elapsed() >= timeout)
                .count();
            idle.drain(..n).collect()
        };
        drop(expired);
        let mut h2 = lock(&self.h2);
        if h2
            .as_ref()
            .is_some_and(|c| c.tx.is_closed() || c.used.elapsed() >= timeout)
        {
            *h2 = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An upstream response body. Once the upstream has sent all of it, the HTTP/1.1 connection goes
/// back to the pool; a body dropped before its end closes the connection instead.
pub struct PoolBody {
    inner: Inner,
    checkin: Option<(H1Sender, Arc<UpstreamPool>)>,
}

enum Inner {
    /// From hyper's client (h2 upstreams, streamed request bodies, upgrades).
    Hyper(Incoming),
    /// From vip-l7's own HTTP/1.1 client; the pool takes the connection back at the end.
    Own(crate::h1client::H1Body, Arc<UpstreamPool>),
}

impl std::fmt::Debug for PoolBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBody")
            .field("pooled", &self.checkin.is_some())
            .finish()
    }
}

impl PoolBody {
    fn hyper(inner: Incoming, checkin: Option<(H1Sender, Arc<UpstreamPool>)>) -> PoolBody {
        PoolBody {
            inner: Inner::Hyper(inner),
            checkin,
        }
    }

    fn own(body: crate::h1client::H1Body, pool: Arc<UpstreamPool>) -> PoolBody {
        let mut b = PoolBody {
            inner: Inner::Own(body, pool),
            checkin: None,
        };
        b.give_back(); // a response without a body is complete already
        b
    }

    fn give_back(&mut self) {
        match &mut self.inner {
            Inner::Hyper(_) => {
                if let Some((tx, pool)) = self.checkin.take() {
                    pool.checkin(tx);
                }
            }
            Inner::Own(body, pool) => {
                if let Some(conn) = body.take_reusable() {
                    pool.own_checkin(conn);
                }
            }
        }
    }
}

impl Drop for PoolBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for PoolBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = match &mut this.inner {
            Inner::Hyper(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            Inner::Own(body, _) => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
        };
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(inner) => inner.is_end_stream(),
            Inner::Own(body, _) => body.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(inner) => inner.size_hint(),
            Inner::Own(body, _) => body.size_hint(),
        }
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
    /// Pooled upstream connections, one pool per upstream (same order as `upstreams`).
    pub pools: Vec<Arc<UpstreamPool>>,
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
            connections: connections.clone(),
            pending: Arc::new(AtomicUsize::new(0)),
            max_connections: cfg.circuit.max_connections as usize,
            max_pending: cfg.circuit.max_pending as usize,
        };
        let mut h2_builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        h2_builder
            .timer(TokioTimer::new())
            // Windows sized for throughput: 4 MiB per stream, 16 MiB per connection.
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let pool_cfg = Arc::new(PoolConfig {
            connector,
            h2,
            idle_timeout: cfg.idle_timeout,
            h1_builder: hyper::client::conn::http1::Builder::new(),
            h2_builder,
        });
        let pools: Vec<Arc<UpstreamPool>> = upstreams
            .iter()
            .map(|u| {
                Arc::new(UpstreamPool {
                    addr: u.address,
                    cfg: pool_cfg.clone(),
                    idle: Mutex::new(Vec::new()),
                    own_idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    h2_connect: tokio::sync::Mutex::new(()),
                })
            })
            .collect();
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
            pools,
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
            for (u, pool) in rt.upstreams.iter().zip(&rt.pools) {
                rt.health_tasks.push(tokio::spawn(health_loop(
                    rt.cfg.name.clone(),
                    u.clone(),
                    h.clone(),
                    pool.clone(),
                    metrics.clone(),
                )));
            }
        }
        let pools = rt.pools.clone();
        let every = rt
            .cfg
            .idle_timeout
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        rt.health_tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for p in &pools {
                    p.sweep();
                }
            }
        }));
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
    pool: Arc<UpstreamPool>,
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
        let mut req = http::Request::get(uri.clone());
        if !pool.cfg.h2 {
            // h2 carries the host in :authority (the URI's); a Host beside it is refused by
            // strict servers (nginx: "duplicate host header").
            req = req.header(http::header::HOST, up.name.as_str());
        }
        let req = req.header(http::header::USER_AGENT, "vip-l7-health").body(
            Empty::<Bytes>::new()
                .map_err(|e| -> BoxError { match e {} })
                .boxed(),
        );
        let ok = match req {
            Ok(req) => match tokio::time::timeout(h.timeout, pool.request(req)).await {
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
    use std::convert::Infallible;
    use std::future::Future;
    use std::path::Path;

    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Cluster `c` with `extra` settings and `upstreams`, parsed like a config file.
    fn cluster(extra: &str, upstreams: &[SocketAddr]) -> Arc<ClusterRt> {
        let mut t = String::from(
            "[admin]\nsocket = \"/nonexistent/l7.sock\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\ncluster = \"c\"\n[clusters.c]\n",
        );
        t.push_str(extra);
        t.push('\n');
        for u in upstreams {
            t.push_str(&format!("[[clusters.c.upstreams]]\naddress = \"{u}\"\n"));
        }
        let mut cfg = config::parse(Path::new("test.toml"), &t).unwrap();
        let c = cfg.clusters.remove("c").unwrap();
        ClusterRt::new(c, None, Instant::now(), &Arc::new(Metrics::new())).unwrap()
    }

    /// An HTTP/1.1 (or h2) upstream answering "ok <path>" after `delay`; counts connections.
    async fn upstream(h2: bool, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = service_fn(move |req: http::Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    let body = format!("ok {}", req.uri().path());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                tokio::spawn(async move {
                    let io = TokioIo::new(s);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: SocketAddr, path: &str) -> http::Request<ProxyBody> {
        http::Request::get(format!("http://{addr}{path}"))
            .header(http::header::HOST, addr.to_string())
            .body(
                Empty::<Bytes>::new()
                    .map_err(|e| -> BoxError { match e {} })
                    .boxed(),
            )
            .unwrap()
    }

    async fn body_text(resp: http::Response<PoolBody>) -> String {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn h1_keep_alive_connections_are_pooled_and_reused() {
        let (addr, accepted) = upstream(false, Duration::ZERO).await;
        let c = cluster("", &[addr]);
        let pool = &c.pools[0];
        for i in 0..20 {
            let resp = pool.request(get(addr, &format!("/{i}"))).await.unwrap();
            assert_eq!(body_text(resp).await, format!("ok /{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
        assert_eq!(pool.idle_connections(), 1);
        // Concurrent requests open more connections, which then all go back to the pool.
        let reqs = (0..8).map(|i| {
            let pool = pool.clone();
            async move { body_text(pool.request(get(addr, &format!("/c{i}"))).await.unwrap()).await }
        });
        let bodies = futures_join_all(reqs).await;
        assert!(bodies
            .iter()
            .enumerate()
            .all(|(i, b)| *b == format!("ok /c{i}")));
        let opened = accepted.load(Ordering::SeqCst);
        assert!((2..=8).contains(&opened), "{opened} connections");
        assert_eq!(pool.idle_connections(), opened);
        assert_eq!(c.connections.load(Ordering::SeqCst), opened);
        // A body dropped before its end does not go back to the pool (its connection closes).
        let resp = pool.request(get(addr, "/x")).await.unwrap();
        assert_eq!(pool.idle_connections(), opened - 1);
        drop(resp);
        assert_eq!(pool.idle_connections(), opened - 1);
    }

    async fn futures_join_all<F: Future<Output = String> + Send + 'static>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<String> {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_skipped_without_error() {
        // Answers one request per connection, then closes it without saying so.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        let c = cluster("", &[addr]);
        for _ in 0..5 {
            let resp = c.pools[0].request(get(addr, "/")).await.unwrap();
            assert_eq!(body_text(resp).await, "ok");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (addr, accepted) = upstream(false, Duration::ZERO).await;
        let c = cluster("idle_timeout_ms = 100", &[addr]);
        let resp = c.pools[0].request(get(addr, "/")).await.unwrap();
        body_text(resp).await;
        assert_eq!(c.pools[0].idle_connections(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(c.pools[0].idle_connections(), 0, "swept");
        assert_eq!(c.connections.load(Ordering::SeqCst), 0, "closed");
        let resp = c.pools[0].request(get(addr, "/")).await.unwrap();
        assert_eq!(body_text(resp).await, "ok /");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn h2_requests_share_one_connection() {
        let (addr, accepted) = upstream(true, Duration::from_millis(20)).await;
        let c = cluster("protocol = \"h2\"", &[addr]);
        let reqs = (0..16).map(|i| {
            let pool = c.pools[0].clone();
            async move { body_text(pool.request(get(addr, &format!("/{i}"))).await.unwrap()).await }
        });
        let bodies = futures_join_all(reqs).await;
        assert!(bodies
            .iter()
            .enumerate()
            .all(|(i, b)| *b == format!("ok /{i}")));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connect_failures_and_the_connection_limit_are_told_apart() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let c = cluster("", &[dead]);
        let e = c.pools[0].request(get(dead, "/")).await.unwrap_err();
        assert!(e.is_connect() && !e.is_circuit(), "{e}");

        let (addr, _) = upstream(false, Duration::from_millis(300)).await;
        let c = cluster("circuit = { max_connections = 1 }", &[addr]);
        let pool = c.pools[0].clone();
        let slow = tokio::spawn(async move { pool.request(get(addr, "/slow")).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let e = c.pools[0].request(get(addr, "/")).await.unwrap_err();
        assert!(e.is_circuit() && e.is_connect(), "{e}");
        slow.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn forget_h2_drops_only_the_connection_that_failed() {
        let (addr, accepted) = upstream(true, Duration::ZERO).await;
        let c = cluster("protocol = \"h2\"", &[addr]);
        let pool = &c.pools[0];
        let cached_id = || lock(&pool.h2).as_ref().map(|c| c.id);
        body_text(pool.request(get(addr, "/a")).await.unwrap()).await;
        let a = cached_id().unwrap();
        // A failure on connection `a` drops it, though it does not report itself closed.
        assert!(!lock(&pool.h2).as_ref().unwrap().tx.is_closed());
        pool.forget_h2(a);
        assert_eq!(cached_id(), None);
        body_text(pool.request(get(addr, "/b")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
        let b = cached_id().unwrap();
        assert_ne!(a, b);
        // A late failure report for `a` (closed by now) leaves the newer connection alone.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.forget_h2(a);
        assert_eq!(cached_id(), Some(b));
        body_text(pool.request(get(addr, "/c")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "b is reused");
    }

    #[tokio::test]
    async fn an_h2_stream_reset_keeps_the_connection() {
        // The service fails on /reset: hyper resets that stream; the connection lives on.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let svc = service_fn(|req: http::Request<Incoming>| async move {
                    if req.uri().path() == "/reset" {
                        return Err(io::Error::other("reset this stream"));
                    }
                    Ok(http::Response::new(Full::new(Bytes::from("ok"))))
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let c = cluster("protocol = \"h2\"", &[addr]);
        let pool = &c.pools[0];
        body_text(pool.request(get(addr, "/")).await.unwrap()).await;
        let id = lock(&pool.h2).as_ref().map(|c| c.id);
        let e = pool.request(get(addr, "/reset")).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Request(_)), "{e}");
        assert!(!e.is_h2_connection_lost());
        assert_eq!(lock(&pool.h2).as_ref().map(|c| c.id), id, "kept");
        assert_eq!(
            body_text(pool.request(get(addr, "/")).await.unwrap()).await,
            "ok"
        );
    }

    /// An h2 upstream on hyper's server, with or without SETTINGS_ENABLE_CONNECT_PROTOCOL,
    /// answering an extended CONNECT with 200.
    async fn h2_connect_upstream(enable: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let svc = service_fn(|_req: http::Request<Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                });
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                if enable {
                    b.enable_connect_protocol();
                }
                tokio::spawn(async move {
                    let _ = b.serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        addr
    }

    fn extended_connect_req(addr: SocketAddr) -> http::Request<ProxyBody> {
        let mut r = get(addr, "/ws");
        *r.method_mut() = http::Method::CONNECT;
        r.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        r
    }

    #[tokio::test]
    async fn extended_connect_needs_the_upstream_setting() {
        let addr = h2_connect_upstream(true).await;
        let c = cluster("protocol = \"h2\"", &[addr]);
        // On a fresh connection (the server's SETTINGS not in yet) and on the open one.
        for _ in 0..2 {
            let resp = c.pools[0]
                .extended_connect(extended_connect_req(addr))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let addr = h2_connect_upstream(false).await;
        let c = cluster("protocol = \"h2\"\nconnect_timeout_ms = 200", &[addr]);
        for _ in 0..2 {
            let t0 = Instant::now();
            let e = c.pools[0]
                .extended_connect(extended_connect_req(addr))
                .await
                .unwrap_err();
            assert!(matches!(e, UpstreamError::NoConnectProtocol(_)), "{e}");
            assert!(t0.elapsed() < Duration::from_millis(400));
        }
        // Not an h2 server at all: the connection dies, which is not a missing setting.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let c = cluster("protocol = \"h2\"", &[addr]);
        let e = c.pools[0]
            .extended_connect(extended_connect_req(addr))
            .await
            .unwrap_err();
        assert!(
            !matches!(e, UpstreamError::NoConnectProtocol(_)),
            "{e}: a dead connection is not a missing setting"
        );
    }

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
