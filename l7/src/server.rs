//! The process: listeners (plain and TLS, h1 and h2 on one port; added, changed and removed by
//! reload), the metrics endpoint, the admin socket, signals (SIGHUP reloads, SIGTERM drains),
//! client idle timeouts and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::coalesce::Coalesced;

use crate::config::{self, Config};
use crate::h1server::{self, Outcome, Prefixed};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, ReqBody, Runtime, Shared};
use crate::stall::WriteStall;
use crate::tickets::{TicketKeys, Tickets};
use crate::tls::{self, CertResolver};

/// Most client connections per listener; further accepts wait (bounded memory).
const MAX_CONNECTIONS_PER_LISTENER: usize = 50_000;

/// Why a listener could not be set up (at start or on reload).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address could not be bound.
    #[error("listener {name}: cannot bind {address}: {source}; free the address or change it")]
    Bind {
        /// Listener name.
        name: String,
        /// Its address.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// Its certificates could not be loaded.
    #[error("listener {name}: {source}")]
    Tls {
        /// Listener name.
        name: String,
        /// What was wrong.
        source: tls::TlsError,
    },
    /// The session-ticket key file (`[tls] ticket_keys`) could not be used.
    #[error("[tls] {0}")]
    TicketKeys(tls::TlsError),
}

/// What an accept loop serves new connections with; swapped when a reload changes the listener
/// at the same address (connections already open keep what they started with).
struct ListenerState {
    cfg: Arc<config::Listener>,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
}

struct Running {
    address: SocketAddr,
    state: Arc<ArcSwap<ListenerState>>,
    resolver: Option<Arc<CertResolver>>,
    stop: watch::Sender<bool>,
}

/// A listener bound and ready for its accept loop.
struct Bound {
    tcp: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    stop: watch::Receiver<bool>,
}

/// The running listeners. A reload [`prepare`](Listeners::prepare)s the new set (binding new
/// addresses and loading certificates, so any error refuses the reload), then commits it.
pub struct Listeners {
    running: Mutex<Vec<Running>>,
    spawn: mpsc::UnboundedSender<Bound>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_list()
            .entries(running.iter().map(|r| r.address))
            .finish()
    }
}

enum Plan {
    /// Same address: new settings and certificates for new connections.
    Keep {
        index: usize,
        cfg: Arc<config::Listener>,
        resolver: Option<Arc<CertResolver>>,
    },
    /// A new address, already bound.
    Add {
        tcp: TcpListener,
        cfg: Arc<config::Listener>,
        resolver: Option<Arc<CertResolver>>,
    },
}

/// A new listener set, bound and loaded; [`Listeners::commit`] applies it.
pub struct Prepared {
    plans: Vec<Plan>,
    /// The key file's session-ticket keys; `None`: the process's own.
    ticket_keys: Option<TicketKeys>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} listeners)", self.plans.len())
    }
}

fn bind(l: &config::Listener) -> Result<TcpListener, ListenerError> {
    let err = |source| ListenerError::Bind {
        name: l.name.clone(),
        address: l.address,
        source,
    };
    let std = std::net::TcpListener::bind(l.address).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std).map_err(err)
}

fn state_for(
    cfg: Arc<config::Listener>,
    resolver: Option<&Arc<CertResolver>>,
) -> Result<ListenerState, ListenerError> {
    let tls = match resolver {
        Some(r) => Some(TlsAcceptor::from(tls::server_config(r.clone()).map_err(
            |source| ListenerError::Tls {
                name: cfg.name.clone(),
                source,
            },
        )?)),
        None => None,
    };
    Ok(ListenerState {
        builder: Arc::new(http_builder(&cfg)),
        tls,
        cfg,
    })
}

impl Listeners {
    /// Binds new addresses and loads certificates for `cfg`; nothing running changes.
    pub fn prepare(&self, cfg: &Config) -> Result<Prepared, ListenerError> {
        let ticket_keys = match &cfg.ticket_keys {
            Some(path) => Some(TicketKeys::load(path).map_err(ListenerError::TicketKeys)?),
            None => None,
        };
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut plans = Vec::new();
        for l in &cfg.listeners {
            let resolver = if l.is_tls() {
                Some(Arc::new(CertResolver::new(&l.certificates).map_err(
                    |source| ListenerError::Tls {
                        name: l.name.clone(),
                        source,
                    },
                )?))
            } else {
                None
            };
            let cfg = Arc::new(l.clone());
            match running.iter().position(|r| r.address == l.address) {
                Some(index) => plans.push(Plan::Keep {
                    index,
                    cfg,
                    resolver,
                }),
                None => plans.push(Plan::Add {
                    tcp: bind(l)?,
                    cfg,
                    resolver,
                }),
            }
        }
        Ok(Prepared { plans, ticket_keys })
    }

    /// Applies `p`: kept listeners take their new settings, new ones start accepting, removed
    /// ones stop accepting and close their connections gracefully (in-flight requests finish).
    pub fn commit(&self, p: Prepared) -> Vec<String> {
        let mut notes = Vec::new();
        match Tickets::get() {
            Ok(t) => {
                t.use_keys(p.ticket_keys);
                tracing::info!("TLS session tickets: {}", t.describe());
            }
            // Only if the very first ticketer could not be made, which also fails every
            // TLS listener below with the same error.
            Err(e) => notes.push(format!("TLS session tickets: {e}")),
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep = vec![false; running.len()];
        let mut added = Vec::new();
        for plan in p.plans {
            match plan {
                Plan::Keep {
                    index,
                    cfg,
                    resolver,
                } => {
                    keep[index] = true;
                    let r = &mut running[index];
                    // A TLS listener keeps its resolver (and so its rustls config) and takes
                    // the new certificates.
                    let resolver = match (&r.resolver, resolver) {
                        (Some(old), Some(new)) => {
                            old.replace_with(&new);
                            Some(old.clone())
                        }
                        (_, new) => new,
                    };
                    match state_for(cfg, resolver.as_ref()) {
                        Ok(s) => {
                            r.state.store(Arc::new(s));
                            r.resolver = resolver;
                        }
                        Err(e) => notes.push(format!("{e}; kept its previous settings")),
                    }
                }
                Plan::Add { tcp, cfg, resolver } => match state_for(cfg, resolver.as_ref()) {
                    Ok(s) => {
                        let address = s.cfg.address;
                        tracing::info!(listener = %s.cfg.name, %address, tls = s.tls.is_some(), "listening");
                        let (stop, stop_rx) = watch::channel(false);
                        let state = Arc::new(ArcSwap::from_pointee(s));
                        added.push(Running {
                            address,
                            state: state.clone(),
                            resolver,
                            stop,
                        });
                        // The server's main loop spawns the accept loop; if it is gone the
                        // process is stopping anyway.
                        let _ = self.spawn.send(Bound {
                            tcp,
                            state,
                            stop: stop_rx,
                        });
                    }
                    Err(e) => notes.push(format!("{e}; not started")),
                },
            }
        }
        let mut i = 0;
        running.retain(|r| {
            let k = keep[i];
            i += 1;
            if !k {
                tracing::info!(address = %r.address, "listener removed: closing it gracefully");
                let _ = r.stop.send(true);
            }
            k
        });
        running.extend(added);
        notes
    }

    /// Stops every listener (SIGTERM).
    fn stop_all(&self) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = r.stop.send(true);
        }
    }
}

/// Runs vip-l7 with `config` (read from `config_path`) until SIGTERM/SIGINT, then drains.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let epoch = Instant::now();
    let (spawn_tx, mut spawn_rx) = mpsc::unbounded_channel();
    let listeners = Listeners {
        running: Mutex::new(Vec::new()),
        spawn: spawn_tx,
    };
    let prepared = listeners.prepare(&config)?;
    if let Some(n) = listeners.commit(prepared).into_iter().next() {
        anyhow::bail!("{n}");
    }
    let admin_path = config.admin_socket.clone();
    let metrics_listen = config.metrics_listen;
    let drain_timeout = config.drain_timeout;
    let runtime = Runtime::build(config, None, epoch, &metrics)?;
    let shared = Arc::new(Shared {
        runtime: arc_swap::ArcSwap::from_pointee(runtime),
        metrics: metrics.clone(),
        epoch,
        config_path,
        listeners,
        reload_lock: tokio::sync::Mutex::new(()),
        requests_total: AtomicU64::new(0),
        reloads: AtomicU64::new(0),
        draining: AtomicBool::new(false),
    });

    let admin = crate::admin::bind(&admin_path)?;
    tokio::spawn(crate::admin::serve(admin, shared.clone(), Instant::now()));
    if let Some(addr) = metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics: cannot bind {addr}"))?;
        tokio::spawn(serve_metrics(l, metrics.clone()));
    }

    let graceful = Arc::new(Mutex::new(Some(GracefulShutdown::new())));
    let mut accept_tasks = tokio::task::JoinSet::new();

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(b) = spawn_rx.recv() => {
                accept_tasks.spawn(accept_loop(b, shared.clone(), graceful.clone()));
            }
            Some(_) = accept_tasks.join_next(), if !accept_tasks.is_empty() => {}
            _ = hup.recv() => {
                match shared.reload().await {
                    Ok(w) => for w in w { tracing::warn!("{w}") },
                    Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
                }
            }
        }
    }
    tracing::info!(
        "draining: stopped accepting, waiting up to {:?} for in-flight requests",
        drain_timeout
    );
    shared.draining.store(true, Ordering::Relaxed);
    shared.listeners.stop_all();
    while accept_tasks.join_next().await.is_some() {}
    let g = graceful.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(g) = g {
        if tokio::time::timeout(drain_timeout, g.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
    }
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

fn http_builder(l: &config::Listener) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .max_buf_size(l.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Windows sized for throughput: 1 MiB per stream, 4 MiB per connection.
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_header_list_size(l.max_header_bytes as u32)
        // Rapid reset (CVE-2023-44487) and other stream floods: a few pending resets, then GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        // WebSocket over h2 (RFC 8441).
        .enable_connect_protocol()
        // No h2 PING keep-alive: hyper's takes a lock and reads the clock on every frame
        // received and on every poll of the connection. Dead peers are found by TCP keep-alive
        // instead (`client_keepalive`), for h1 and h2 alike, at no cost per request.
        .keep_alive_interval(None);
    b
}

/// TCP keep-alive on client connections: a peer that vanished (no FIN, no RST) is dropped
/// after about `KEEPALIVE_IDLE + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL` of silence.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

fn client_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}

async fn accept_loop(
    b: Bound,
    shared: Arc<Shared>,
    graceful: Arc<Mutex<Option<GracefulShutdown>>>,
) {
    let Bound {
        tcp,
        state,
        mut stop,
    } = b;
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_LISTENER));
    loop {
        if *stop.borrow() {
            return;
        }
        // A closed channel (the listener was dropped from the registry) also stops it.
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, client) = tokio::select! {
            _ = stop.changed() => return,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %state.load().cfg.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let watcher = match graceful.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(g) => g.watcher(),
            None => return,
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = client_keepalive(&stream) {
            tracing::debug!(%client, "cannot enable TCP keep-alive: {e}");
        }
        let shared = shared.clone();
        let st = state.load_full();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _watcher = watcher;
            let name = st.cfg.name.clone();
            shared.metrics.connection(&name, 1);
            serve_conn(stream, client, st, shared.clone(), stop).await;
            shared.metrics.connection(&name, -1);
        });
    }
}

/// Requests in flight on one client connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Returns once the connection has had no request in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let wait = if self.active.load(Ordering::Acquire) > 0 {
                timeout
            } else {
                let idle = Duration::from_millis(
                    self.now_ms()
                        .saturating_sub(self.idle_since_ms.load(Ordering::Acquire)),
                );
                match timeout.checked_sub(idle) {
                    Some(w) if !w.is_zero() => w,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts one request (or one tunnel) as in flight on its connection while it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Activity>);

impl ActiveGuard {
    /// Marks one more request in flight on the connection.
    pub fn new(a: &Arc<Activity>) -> ActiveGuard {
        a.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(a.clone())
    }
}

impl Clone for ActiveGuard {
    fn clone(&self) -> ActiveGuard {
        ActiveGuard::new(&self.0)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0
                .idle_since_ms
                .store(self.0.now_ms(), Ordering::Release);
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped).
pub struct ActiveBody<B> {
    inner: B,
    _guard: ActiveGuard,
}

impl<B> Body for ActiveBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection until it ends, closing it gracefully (h2: GOAWAY, in-flight streams
/// finish) when its listener stops or it has been idle for the listener's `idle_timeout`.
macro_rules! drive {
    ($conn:expr, $activity:expr, $idle:expr, $stop:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = $stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = $activity.idle_for($idle), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

async fn serve_conn(
    stream: TcpStream,
    client: SocketAddr,
    st: Arc<ListenerState>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = st.cfg.clone();
    let info = Arc::new(ConnInfo::new(client, st.tls.is_some(), cfg.clone()));
    if *stop.borrow_and_update() {
        return;
    }
    // Below TLS and every server: a client that stops reading is dropped after the idle timeout.
    let stream = WriteStall::new(stream, cfg.idle_timeout);
    let Some(acceptor) = &st.tls else {
        let mut stream = stream;
        if let Outcome::HandOver(read) =
            h1server::serve(&mut stream, &shared, &info, &mut stop).await
        {
            serve_hyper(Prefixed::new(read, stream), &st, shared, info, stop).await;
        }
        return;
    };
    // The handshake must finish within the header read timeout (TLS slowloris).
    let mut s = match tokio::time::timeout(cfg.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%client, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    if s.get_ref().1.alpn_protocol() == Some(b"h2") {
        // Responses of many streams share one TLS record and one write.
        serve_hyper(Coalesced::new(s), &st, shared, info, stop).await;
    } else if let Outcome::HandOver(read) = h1server::serve(&mut s, &shared, &info, &mut stop).await
    {
        serve_hyper(Prefixed::new(read, s), &st, shared, info, stop).await;
    }
}

/// Serves a connection with hyper's server (h1 or h2, which it tells by the first bytes).
async fn serve_hyper<IO>(
    io: IO,
    st: &ListenerState,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let act = activity.clone();
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let guard = ActiveGuard::new(&act);
        // Tunnels (WebSocket over h2, extended CONNECT) hold a guard while they run.
        if req.method() == http::Method::CONNECT {
            req.extensions_mut().insert(guard.clone());
        }
        let fut = proxy::handle(shared.clone(), info.clone(), req.map(ReqBody::Hyper));
        async move {
            let resp = fut.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| ActiveBody {
                inner,
                _guard: guard,
            }))
        }
    });
    drive!(
        st.builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc),
        activity,
        st.cfg.idle_timeout,
        stop
    );
}

async fn serve_metrics(l: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let m = m.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy::metrics_response(&m)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_connections_get_tcp_keepalive() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (_c, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (s, _) = accepted.unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(!sock.keepalive().unwrap(), "off until vip-l7 turns it on");
        client_keepalive(&s).unwrap();
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
