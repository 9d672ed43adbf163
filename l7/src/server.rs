//! The process: listeners (plain and TLS, h1 and h2 on one port), the metrics endpoint, the
//! admin socket, signals (SIGHUP reloads, SIGTERM drains) and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, Runtime, Shared};
use crate::tls::{self, CertResolver};

/// Most client connections per listener; further accepts wait (bounded memory).
const MAX_CONNECTIONS_PER_LISTENER: usize = 50_000;

struct Bound {
    cfg: Arc<config::Listener>,
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Runs vip-l7 with `config` (read from `config_path`) until SIGTERM/SIGINT, then drains.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let epoch = Instant::now();
    let mut bound = Vec::new();
    let mut resolvers = Vec::new();
    for l in &config.listeners {
        let tcp = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listener {}: cannot bind {}", l.name, l.address))?;
        let tls = if l.is_tls() {
            let r = Arc::new(CertResolver::new(&l.certificates)?);
            resolvers.push((l.address, r.clone()));
            Some(TlsAcceptor::from(tls::server_config(r)?))
        } else {
            None
        };
        tracing::info!(listener = %l.name, address = %l.address, tls = l.is_tls(), "listening");
        bound.push(Bound {
            cfg: Arc::new(l.clone()),
            tcp,
            tls,
        });
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
        resolvers,
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

    let graceful = Arc::new(std::sync::Mutex::new(Some(GracefulShutdown::new())));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    for b in bound {
        accept_tasks.push(tokio::spawn(accept_loop(
            b,
            shared.clone(),
            graceful.clone(),
            stop_rx.clone(),
        )));
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
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
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
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
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

async fn accept_loop(
    b: Bound,
    shared: Arc<Shared>,
    graceful: Arc<std::sync::Mutex<Option<GracefulShutdown>>>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&b.cfg));
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_LISTENER));
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, client) = tokio::select! {
            _ = stop.changed() => return,
            r = b.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %b.cfg.name, "accept failed: {e}");
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
        let shared = shared.clone();
        let builder = builder.clone();
        let cfg = b.cfg.clone();
        let tls = b.tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            shared.metrics.connection(&cfg.name, 1);
            serve_conn(
                stream,
                client,
                cfg.clone(),
                tls,
                builder,
                shared.clone(),
                watcher,
            )
            .await;
            shared.metrics.connection(&cfg.name, -1);
        });
    }
}

async fn serve_conn(
    stream: TcpStream,
    client: SocketAddr,
    cfg: Arc<config::Listener>,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let info = Arc::new(ConnInfo::new(client, tls.is_some(), cfg.clone()));
    let svc = service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req));
    match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
        }
        Some(acceptor) => {
            // The handshake must finish within the header read timeout (TLS slowloris).
            let s = match tokio::time::timeout(cfg.header_read_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%client, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
            let _ = watcher.watch(conn).await;
        }
    }
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
