//! Test harness: a real `vip-l7` process, in-process hyper upstreams, an admin client, curl.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, Infallible>;

pub use testutil::free_port;

/// A TLS acceptor for a test upstream: `cert`/`key` PEM files, TLS 1.2 and 1.3, `alpn` offered.
pub fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A TLS client that trusts the certificates in `cert` (PEM), TLS 1.2 and 1.3, `alpn` offered.
pub fn tls_connector(cert: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A running vip-l7; killed on drop.
pub struct L7 {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for L7 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vip-l7")
}

impl L7 {
    /// Writes `config` (with `ADMIN` replaced by the socket path and `DIR` by the temp dir) and
    /// starts vip-l7, waiting until every `wait_ports` accepts.
    pub fn start(config: &str, wait_ports: &[u16]) -> L7 {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config, wait_ports)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str, wait_ports: &[u16]) -> L7 {
        Self::start_with(dir, config, wait_ports, &[])
    }

    /// Like [`start_in`](Self::start_in) with extra command-line arguments.
    pub fn start_with(
        dir: tempfile::TempDir,
        config: &str,
        wait_ports: &[u16],
        args: &[&str],
    ) -> L7 {
        let admin = dir.path().join("admin.sock");
        let cfg_path = dir.path().join("l7.toml");
        let text = config
            .replace("ADMIN", &admin.display().to_string())
            .replace("DIR", &dir.path().display().to_string());
        std::fs::write(&cfg_path, text).unwrap();
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&cfg_path)
            .args(args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut l7 = L7 {
            child,
            dir,
            config: cfg_path,
            admin,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for &p in wait_ports {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Ok(Some(st)) = l7.child.try_wait() {
                    panic!("vip-l7 exited {st}: {}", l7.stderr_text());
                }
                assert!(Instant::now() < deadline, "vip-l7 did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        while !l7.admin.exists() {
            assert!(Instant::now() < deadline, "no admin socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        l7
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// One admin request; returns the whole reply.
    pub fn admin(&self, cmd: &str, args: Value) -> Value {
        let mut s = UnixStream::connect(&self.admin).unwrap();
        let req = json!({"v": 1, "id": 7, "cmd": cmd, "args": args});
        writeln!(s, "{req}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// An in-process upstream; stops (with all its connections) when dropped or `kill`ed.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn upstream_handle(name: String, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    // As strict as nginx: over h2 the :authority is the host, and a Host header beside it is
    // a "duplicate host header" (400).
    if req.version() == http::Version::HTTP_2
        && req.uri().authority().is_some()
        && req.headers().contains_key(http::header::HOST)
    {
        let mut r = Response::new(full("duplicate host header\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        let mut r = Response::new(full(format!("status {code} from {name}\n")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        return r;
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
    }
    if path == "/grpc" {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("all-good"));
        let body = Full::new(Bytes::from_static(b"\0\0\0\0\x05hello"))
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return r;
    }
    if path == "/flaky" && name.starts_with("bad") {
        let mut r = Response::new(full(format!("broken {name}\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return r;
    }
    if path == "/big" {
        return Response::new(full(vec![b'x'; 1 << 20]));
    }
    if let Some(mib) = path.strip_prefix("/big/") {
        // More than socket buffers hold (Linux: up to 4 MiB each way), at most 64 MiB.
        let mib = mib.parse::<usize>().unwrap_or(1).min(64);
        return Response::new(full(vec![b'x'; mib << 20]));
    }
    if path == "/chunked" {
        // A body of unknown length: sent chunked over HTTP/1.1.
        return Response::new(Chunks(vec![&b"chunk one, "[..], b"two, ", b"three"]).boxed());
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    // h2: the :authority; HTTP/1.1: none (origin-form target).
    let authority = req.uri().authority().map(|a| a.to_string());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v = json!({
        "upstream": name, "path": path, "method": method, "version": version,
        "authority": authority, "headers": headers, "body_len": body.len(),
    });
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut()
        .insert("x-upstream", HeaderValue::from_str(&name).unwrap());
    r.headers_mut()
        .insert("connection", HeaderValue::from_static("x-upstream-secret"));
    r.headers_mut()
        .insert("x-upstream-secret", HeaderValue::from_static("1"));
    r
}

/// A body of these pieces, one frame each, whose length it does not announce.
struct Chunks(Vec<&'static [u8]>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let pieces = &mut self.get_mut().0;
        let next = (!pieces.is_empty()).then(|| {
            Ok(hyper::body::Frame::data(Bytes::from_static(
                pieces.remove(0),
            )))
        });
        std::task::Poll::Ready(next)
    }
}

impl Upstream {
    /// An HTTP/1.1 + h2c upstream named `name` on a free port.
    pub async fn start(name: &str) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(l, name)
    }

    pub async fn start_on(port: u16, name: &str) -> Upstream {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Self::serve(l, name)
    }

    fn serve(l: TcpListener, name: &str) -> Upstream {
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_string(), hits.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let n = n.clone();
                        async move { Ok::<_, Infallible>(upstream_handle(n, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// A keep-alive HTTP/1.1 client (hyper legacy pool).
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`, returning status, headers and body.
pub async fn get(
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .request(b.body(Empty::new()).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (p, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((p.status, p.headers, body))
}

/// Runs curl with `args`; returns (exit ok, stdout, stderr).
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed (scripts/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed certificate for `names`, written to `dir/stem.pem` and `dir/stem.key`.
/// The value of the first line of vip-l7's metrics on `port` that starts with `prefix` (0 if none).
pub fn metric(port: u16, prefix: &str) -> f64 {
    let (ok, text, err) = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    assert!(ok, "{err}");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

pub fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// Waits until `f` holds (polling), or panics with `what`.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hand-written upstream on a loopback port, for behaviour no real server library produces on
/// demand. Each accepted connection runs `serve(stream, index, counter)` in a task of its own:
/// `index` counts connections from 0, and `counter` is shared by all of them for whatever the
/// script wants counted (requests, streams). Returns the address, the counter and the accept
/// loop's task.
pub async fn scripted_upstream<F, Fut>(
    serve: F,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream, usize, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let shared = counter.clone();
    let task = tokio::spawn(async move {
        let mut index = 0;
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, index, shared.clone()));
            index += 1;
        }
    });
    (addr, counter, task)
}
