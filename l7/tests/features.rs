//! vip-l7 features with real clients: the client idle timeout (h2 GOAWAY), circuit breaker on
//! pending connects, retries after transport errors, listener changes on reload, WebSocket over
//! h2 (RFC 8441).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

fn cluster(name: &str, extra: &str, ups: &[&str]) -> String {
    let mut s = format!("[clusters.{name}]\n{extra}\n");
    for u in ups {
        s += &format!("[[clusters.{name}.upstreams]]\naddress = \"{u}\"\n");
    }
    s
}

type H2Send = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An h2 (prior knowledge) client connection; the handle resolves when the connection ends.
async fn h2_connect(port: u16) -> (H2Send, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

async fn h2_get(send: &mut H2Send, port: u16, path: &str) -> (u16, Bytes) {
    send.ready().await.unwrap();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_get_goaway_but_not_while_a_stream_is_open() {
    let up = Upstream::start("u1").await;
    let port = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\nidle_timeout_ms = 700\n[[routes]]\ncluster = \"web\"\n{}",
        cluster("web", "", &[&up.addr.to_string()])
    );
    let _l7 = L7::start(&cfg, &[port]);

    // An idle h2 connection is closed (GOAWAY, then EOF: the client's connection task ends
    // cleanly) about idle_timeout after its last stream.
    let (mut send, conn) = h2_connect(port).await;
    let (status, _) = h2_get(&mut send, port, "/").await;
    assert_eq!(status, 200);
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("idle h2 connection was not closed within 5 s");
    let idle = t0.elapsed();
    assert!(
        matches!(r, Ok(Ok(()))),
        "the close was not a clean GOAWAY: {r:?}"
    );
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_millis(2500),
        "closed after {idle:?}, idle_timeout is 700 ms"
    );

    // A stream slower than the idle timeout is not cut; the connection closes only once it is
    // idle again.
    let (mut send, mut conn) = h2_connect(port).await;
    let t0 = Instant::now();
    let (status, body) = h2_get(&mut send, port, "/sleep/1800").await;
    assert_eq!(status, 200, "{body:?}");
    assert!(t0.elapsed() >= Duration::from_millis(1800));
    assert!(
        !conn.is_finished(),
        "connection closed while a stream was open"
    );
    // Still usable right after the slow stream.
    let (status, _) = h2_get(&mut send, port, "/").await;
    assert_eq!(status, 200);
    let r = tokio::time::timeout(Duration::from_secs(5), &mut conn)
        .await
        .expect("connection not closed after the slow stream ended");
    assert!(r.unwrap().is_ok());

    // nghttp (a second h2 implementation), when installed: a stream longer than the idle
    // timeout completes, and only the client says GOAWAY (vip-l7 does not cut it short).
    if let Ok(o) = std::process::Command::new("nghttp")
        .args(["-v", &format!("http://127.0.0.1:{port}/sleep/1200")])
        .output()
    {
        let v = String::from_utf8_lossy(&o.stdout);
        assert!(v.contains(":status: 200"), "{v}");
        assert!(!v.contains("recv GOAWAY"), "{v}");
    }

    // h1 keep-alive connections follow the same idle timeout.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t0 = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "idle h1 connection not closed");
    assert!(t0.elapsed() < Duration::from_millis(2500));
}

/// The value of the metric line that starts with `prefix` (0 when absent).
/// A TCP server that accepts and then never says anything (a stalled TLS handshake);
/// returns its address and the number of connections accepted.
async fn stalled_server() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            n2.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, n, task)
}

/// Reads up to the end of a request head (the empty line); false if the connection ends first.
async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
    }
    true
}

/// A server that reads each request head and then resets the connection (RST) without an
/// answer; counts the requests it read.
async fn resetting_server() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    scripted_upstream(|mut s, _, n| async move {
        if read_head(&mut s).await {
            n.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_zero_linger();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_circuit_breaker_answers_503_at_once() {
    let (stall, accepted, _task) = stalled_server().await;
    let (port, mport) = (free_port(), free_port());
    // Upstream TLS against a server that never answers: each connect stays pending (TCP up,
    // handshake stalled) until connect_timeout_ms.
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[[routes]]\ncluster = \"slow\"\n{}",
        cluster(
            "slow",
            "connect_timeout_ms = 4000\ntls = { insecure_skip_verify = true }\ncircuit = { max_pending = 1 }\nretry = { attempts = 1 }",
            &[&stall.to_string()]
        )
    );
    let _l7 = L7::start(&cfg, &[port, mport]);
    let url = format!("http://127.0.0.1:{port}/");
    let first = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]))
    };
    eventually(
        "the first connect is pending",
        Duration::from_secs(5),
        || accepted.load(Ordering::SeqCst) == 1,
    )
    .await;
    // The pending slot is taken: the next request is refused at once, without a connect.
    let t0 = Instant::now();
    let (ok, out, err) = curl(&["-i", &url]);
    let took = t0.elapsed();
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("circuit breaker open"), "{out}");
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a second connect was made"
    );
    assert_eq!(
        metric(mport, "vip_l7_rejected_total{reason=\"circuit_open\"}"),
        1.0
    );
    // The first request ends with the connect timeout as a gateway error, and the slot is
    // free again afterwards (the next request connects rather than being refused).
    let (ok, code, err) = first.await.unwrap();
    assert!(ok, "{err}");
    assert!(code == "502" || code == "504", "{code}");
    let (_, code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "1",
        &url,
    ]);
    assert_eq!(
        code, "000",
        "the request waited on a new connect (curl timed out)"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_after_a_reset_within_the_budget() {
    let good = Upstream::start("good").await;
    let (bad_r, reads_r, _t1) = resetting_server().await;
    let (bad_nb, reads_nb, _t2) = resetting_server().await;
    let (port, mport) = (free_port(), free_port());
    let common = "balancer = \"round_robin\"\noutlier = { max_ejection_percent = 0 }";
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\npath_prefix = \"/r\"\ncluster = \"r\"\n[[routes]]\npath_prefix = \"/nb\"\ncluster = \"nb\"\n{}{}",
        cluster(
            "r",
            &format!("{common}\nretry = {{ attempts = 2, budget_percent = 100, min_concurrent = 10 }}"),
            &[&bad_r.to_string(), &good.addr.to_string()]
        ),
        cluster(
            "nb",
            &format!("{common}\nretry = {{ attempts = 2, budget_percent = 0, min_concurrent = 0 }}"),
            &[&bad_nb.to_string(), &good.addr.to_string()]
        ),
    );
    let _l7 = L7::start(&cfg, &[port, mport]);
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        let (ok, out, err) = curl(&a);
        assert!(ok, "{err}");
        out
    };

    // GET: every request succeeds; those sent to the resetting upstream first were retried on
    // the other one.
    for i in 0..6 {
        assert_eq!(code(&[&format!("http://127.0.0.1:{port}/r/{i}")]), "200");
    }
    let resets = reads_r.load(Ordering::SeqCst);
    assert!(
        resets >= 2,
        "round robin sent {resets} GETs to the resetting upstream"
    );
    assert_eq!(
        metric(mport, "vip_l7_retries_total{cluster=\"r\"}"),
        resets as f64
    );

    // POST is not idempotent: the reset is the answer (502), no retry.
    let mut failed = 0;
    for i in 0..6 {
        match code(&["-d", "x=1", &format!("http://127.0.0.1:{port}/r/p{i}")]).as_str() {
            "200" => {}
            "502" => failed += 1,
            other => panic!("POST answered {other}"),
        }
    }
    assert!(
        failed >= 2,
        "only {failed} POSTs reached the resetting upstream"
    );
    assert_eq!(reads_r.load(Ordering::SeqCst), resets + failed);
    assert_eq!(
        metric(mport, "vip_l7_retries_total{cluster=\"r\"}"),
        resets as f64,
        "a POST was retried"
    );

    // A zero retry budget: GETs that hit the resetting upstream fail too.
    let mut failed = 0;
    for i in 0..6 {
        match code(&[&format!("http://127.0.0.1:{port}/nb/{i}")]).as_str() {
            "200" => {}
            "502" => failed += 1,
            other => panic!("GET answered {other}"),
        }
    }
    assert!(failed >= 2);
    assert_eq!(reads_nb.load(Ordering::SeqCst), failed);
    assert_eq!(metric(mport, "vip_l7_retries_total{cluster=\"nb\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_listeners() {
    let up_a = Upstream::start("a").await;
    let up_b = Upstream::start("b").await;
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let listener = |port: u16, extra: &str| {
        format!("[[listeners]]\nname = \"l{port}\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n")
    };
    let config = |listeners: &str, up: &Upstream| {
        format!(
            "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n{listeners}[[routes]]\ncluster = \"web\"\n{}",
            cluster("web", "", &[&up.addr.to_string()])
        )
    };
    let l7 = L7::start(
        &config(&(listener(p1, "") + &listener(p2, "")), &up_a),
        &[p1, p2],
    );
    let get = |port: u16, path: &str| {
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
    };
    assert_eq!(get(p1, "/").1, "200");

    // A slow request on p1, in flight across the reload that removes p1.
    let slow = tokio::task::spawn_blocking(move || {
        curl(&[
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{p1}/sleep/1500"),
        ])
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Remove p1, add p3, change p2 (a lower max_uri_bytes).
    std::fs::write(
        &l7.config,
        config(
            &(listener(p2, "max_uri_bytes = 64") + &listener(p3, "")),
            &up_a,
        )
        .replace("ADMIN", &l7.admin.display().to_string()),
    )
    .unwrap();
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], true, "{r}");
    // p3 serves, p1 refuses new connections, p2 has its new limit.
    assert_eq!(get(p3, "/").1, "200");
    let (ok, _, err) = get(p1, "/");
    assert!(!ok && err.contains("(7)"), "p1 still accepts: {err}");
    assert_eq!(get(p2, "/short").1, "200");
    assert_eq!(get(p2, &format!("/{}", "x".repeat(100))).1, "414");
    // The request in flight on the removed listener finished normally.
    let (ok, out, err) = slow.await.unwrap();
    assert!(ok, "{err}");
    assert!(
        out.ends_with(" 200") && out.contains("\"upstream\":\"a\""),
        "{out}"
    );

    // A listener that cannot be bound refuses the whole reload: routes, clusters and listeners
    // all stay as they were.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p4 = taken.local_addr().unwrap().port();
    std::fs::write(
        &l7.config,
        config(
            &(listener(p2, "") + &listener(p3, "") + &listener(p4, "")),
            &up_b,
        )
        .replace("ADMIN", &l7.admin.display().to_string()),
    )
    .unwrap();
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "reload_failed");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("l{p4}")) && msg.contains("cannot bind"),
        "{msg}"
    );
    let (ok, out, err) = curl(&[&format!("http://127.0.0.1:{p3}/")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"upstream\":\"a\""),
        "old cluster kept: {out}"
    );
    assert_eq!(get(p2, &format!("/{}", "x".repeat(100))).1, "414");
    assert_eq!(up_b.hits(), 0);
    drop(taken);

    // The listener at p3 turns into HTTPS in place (same address, new settings); a keep-alive
    // connection opened before stays plain HTTP until it ends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut old_conn = tokio::net::TcpStream::connect(("127.0.0.1", p3))
        .await
        .unwrap();
    let (cert, key) = write_cert(l7.dir.path(), "c", &["c.test"]);
    let tls = format!(
        "tls = true\n[[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"c.test\"]",
        cert.display(),
        key.display()
    );
    std::fs::write(
        &l7.config,
        config(&(listener(p2, "") + &listener(p3, &tls)), &up_b)
            .replace("ADMIN", &l7.admin.display().to_string()),
    )
    .unwrap();
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], true, "{r}");
    let (ok, out, err) = curl(&[
        "-k",
        "--resolve",
        &format!("c.test:{p3}:127.0.0.1"),
        &format!("https://c.test:{p3}/"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"upstream\":\"b\""), "{out}");
    assert!(!get(p3, "/").0, "plain HTTP still served on p3");
    old_conn
        .write_all(b"GET /old HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = old_conn.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// The Python WebSocket echo upstream (`ws_echo.py PORT --serve`); killed on drop.
struct WsEcho(std::process::Child);

impl WsEcho {
    fn start(port: u16) -> WsEcho {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_echo.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg("--serve")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        WsEcho(child)
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sample `Sec-WebSocket-Key` of RFC 6455 section 1.3.
const SAMPLE_WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// curl's HTTP/1.1 WebSocket upgrade request to `url` (with `key`, if any, and `version`),
/// headers included in the output (`-i`); the 101 is not followed up.
fn curl_ws_handshake(key: Option<&str>, version: &str, url: &str) -> (bool, String, String) {
    let key = key.map(|k| format!("Sec-WebSocket-Key: {k}"));
    let version = format!("Sec-WebSocket-Version: {version}");
    let mut args = vec![
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
    ];
    if let Some(k) = &key {
        args.extend(["-H", k]);
    }
    args.extend(["-H", &version, url]);
    curl(&args)
}

/// An RFC 8441 extended CONNECT for a WebSocket to `url`.
fn ws_connect(url: String) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(url)
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())
        .unwrap()
}

/// A masked client WebSocket frame (RFC 6455 5.2).
fn ws_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match data.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = fastrand::u32(..).to_be_bytes();
    f.extend_from_slice(&mask);
    f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame: (opcode, payload).
async fn ws_read(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    let n = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut data = vec![0u8; n];
    s.read_exact(&mut data).await.unwrap();
    (h[0] & 0x0f, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_h2_extended_connect() {
    use tokio::io::AsyncWriteExt;
    let ws_port = free_port();
    let _echo = WsEcho::start(ws_port);
    let (port, tls_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "ws", &["ws.test"]);
    // A short idle timeout: the open tunnel must keep the connection up past it.
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\nidle_timeout_ms = 600\n\
         request_id_in_response = true\n\
         [[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = true\n\
         [[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"ws.test\"]\n\
         [[routes]]\npath_prefix = \"/chat\"\ncluster = \"ws\"\n[[routes]]\ncluster = \"h2only\"\n{}{}",
        cert.display(),
        key.display(),
        cluster("ws", "", &[&format!("127.0.0.1:{ws_port}")]),
        cluster("h2only", "protocol = \"h2\"", &[&format!("127.0.0.1:{ws_port}")]),
    );
    let l7 = L7::start_in(dir, &cfg, &[port, tls_port]);

    let (mut send, conn) = h2_connect(port).await;
    // A first exchange, so the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) are in.
    let (status, body) = h2_get(&mut send, port, "/chat/plain").await;
    assert_eq!(status, 200, "{body:?}");
    let connect = |path: &str, protocol: &'static str| {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static(protocol))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    send.ready().await.unwrap();
    let resp = send
        .send_request(connect("/chat", "websocket"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}\n{}", l7.stderr_text());
    assert!(resp.headers().contains_key("x-request-id"));
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws.write_all(&ws_frame(1, b"hello")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (1, b"hello".to_vec()));
    // Quiet for longer than the idle timeout: the tunnel counts as in flight.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let big = vec![b'x'; 70_000];
    ws.write_all(&ws_frame(2, &big)).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (2, big));
    assert!(!conn.is_finished());

    // A second tunnel on the same connection, at the same time.
    send.ready().await.unwrap();
    let resp = send
        .send_request(connect("/chat/2", "websocket"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut ws2 = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws2.write_all(&ws_frame(1, b"second")).await.unwrap();
    assert_eq!(ws_read(&mut ws2).await, (1, b"second".to_vec()));
    ws.write_all(&ws_frame(1, b"first again")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (1, b"first again".to_vec()));

    // Other protocols and h2-only clusters are refused with an answer, not a hang.
    send.ready().await.unwrap();
    let resp = send
        .send_request(connect("/chat", "x-other"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    send.ready().await.unwrap();
    let resp = send
        .send_request(connect("/other", "websocket"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);

    // Close frames end the tunnels; then the connection goes idle and is closed.
    ws.write_all(&ws_frame(8, b"")).await.unwrap();
    ws2.write_all(&ws_frame(8, b"")).await.unwrap();
    drop((ws, ws2));
    let r = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(r.is_ok(), "connection not closed after the tunnels ended");

    // Over TLS with ALPN h2, as browsers do it.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .unwrap();
    let s = tls_connector(&cert, &[b"h2"])
        .connect(
            rustls::pki_types::ServerName::try_from("ws.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (status, _) = h2_get(&mut send, tls_port, "/chat/plain").await;
    assert_eq!(status, 200);
    send.ready().await.unwrap();
    let req = ws_connect(format!("https://ws.test:{tls_port}/chat"));
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws.write_all(&ws_frame(1, b"over tls")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (1, b"over tls".to_vec()));
}

/// Reads one WebSocket frame, masked or not: (opcode, payload); `None` at EOF.
async fn ws_read_frame(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.ok()?;
    let n = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut mask).await.ok()?;
    }
    let mut data = vec![0u8; n];
    s.read_exact(&mut data).await.ok()?;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Some((h[0] & 0x0f, data))
}

/// An unmasked server WebSocket frame.
fn ws_server_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match data.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(data);
    f
}

/// What an h2 WebSocket upstream saw of one request: method, `:protocol`, headers.
type Seen = (http::Method, Option<String>, http::HeaderMap);

/// An h2 WebSocket echo upstream on hyper's server (RFC 8441 on its side): an extended
/// CONNECT with `:protocol websocket` gets 200 and its frames echoed; anything else gets
/// "plain <path>". Without `connect_protocol` it does not send SETTINGS_ENABLE_CONNECT_PROTOCOL.
struct H2WsEcho {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2WsEcho {
    async fn start(connect_protocol: bool) -> H2WsEcho {
        Self::start_with(connect_protocol, None).await
    }

    /// Over TLS (ALPN h2) with `cert`/`key`.
    async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> H2WsEcho {
        let acceptor = tls_acceptor(cert, key, &[b"h2"]);
        Self::start_with(true, Some(acceptor)).await
    }

    async fn start_with(
        connect_protocol: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> H2WsEcho {
        use http_body_util::Full;
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let (count, log) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                let svc = hyper::service::service_fn(
                    move |mut req: http::Request<hyper::body::Incoming>| {
                        let protocol = req
                            .extensions()
                            .get::<hyper::ext::Protocol>()
                            .map(|p| p.as_str().to_string());
                        log.lock().unwrap().push((
                            req.method().clone(),
                            protocol.clone(),
                            req.headers().clone(),
                        ));
                        let path = req.uri().path().to_string();
                        async move {
                            if req.method() == http::Method::CONNECT
                                && protocol.as_deref() == Some("websocket")
                            {
                                let on = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let Ok(up) = on.await else { return };
                                    let mut s = TokioIo::new(up);
                                    while let Some((op, data)) = ws_read_frame(&mut s).await {
                                        if s.write_all(&ws_server_frame(op, &data)).await.is_err()
                                            || op == 8
                                        {
                                            break;
                                        }
                                    }
                                    let _ = s.shutdown().await;
                                });
                                return Ok::<_, std::convert::Infallible>(http::Response::new(
                                    Full::new(Bytes::new()),
                                ));
                            }
                            Ok(http::Response::new(Full::new(Bytes::from(format!(
                                "plain {path}"
                            )))))
                        }
                    },
                );
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                if connect_protocol {
                    b.enable_connect_protocol();
                }
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        None => {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(s).await {
                                let _ = b.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        H2WsEcho {
            addr,
            connections,
            seen,
            task,
        }
    }

    /// The extended CONNECTs seen so far.
    fn connects(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == http::Method::CONNECT)
            .cloned()
            .collect()
    }
}

/// Runs the Python WebSocket client (`ws_echo.py --client`) through vip-l7 at `path`.
async fn python_ws_client(port: u16, path: &str) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_echo.py");
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args([script, "--client", &port.to_string(), &path])
            .output()
            .expect("/usr/bin/python3 runs")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_h2_upstreams_is_an_extended_connect() {
    use tokio::io::AsyncWriteExt;
    let echo = H2WsEcho::start(true).await;
    let (plain_a, plain_b) = (H2WsEcho::start(false).await, H2WsEcho::start(false).await);
    let port = free_port();
    // `noproto`: two h2 upstreams without SETTINGS_ENABLE_CONNECT_PROTOCOL and an outlier
    // detector that would eject one at its first counted failure.
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         request_id_in_response = true\n\
         [[routes]]\npath_prefix = \"/noproto\"\ncluster = \"noproto\"\n\
         [[routes]]\ncluster = \"ws2\"\n{}{}",
        cluster("ws2", "protocol = \"h2\"", &[&echo.addr.to_string()]),
        cluster(
            "noproto",
            "protocol = \"h2\"\nconnect_timeout_ms = 300\noutlier = { consecutive_errors = 1 }",
            &[&plain_a.addr.to_string(), &plain_b.addr.to_string()]
        ),
    );
    let l7 = L7::start(&cfg, &[port]);

    // An h2 client's extended CONNECT goes upstream as an extended CONNECT.
    let (mut send, _conn) = h2_connect(port).await;
    let (status, body) = h2_get(&mut send, port, "/first").await;
    assert_eq!((status, &body[..]), (200, &b"plain /first"[..]));
    let connect = |path: &str| ws_connect(format!("http://127.0.0.1:{port}{path}"));
    send.ready().await.unwrap();
    let resp = send.send_request(connect("/chat")).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}\n{}", l7.stderr_text());
    assert!(resp.headers().contains_key("x-request-id"));
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws.write_all(&ws_frame(1, b"hello")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (1, b"hello".to_vec()));
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.write_all(&ws_frame(2, &big)).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (2, big.clone()));

    // A second tunnel at the same time, on the same client connection.
    send.ready().await.unwrap();
    let resp = send.send_request(connect("/chat/2")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut ws2 = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws2.write_all(&ws_frame(1, b"second")).await.unwrap();
    assert_eq!(ws_read(&mut ws2).await, (1, b"second".to_vec()));

    // An HTTP/1.1 client's Upgrade, while both tunnels are open: it gets 101 with the
    // Sec-WebSocket-Accept for its own key, and echoes text and 70,000 bytes binary.
    let out = python_ws_client(port, "/chat/py").await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("websocket echo ok"),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        l7.stderr_text()
    );
    ws.write_all(&ws_frame(2, &big)).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (2, big));
    ws2.write_all(&ws_frame(1, b"second again")).await.unwrap();
    assert_eq!(ws_read(&mut ws2).await, (1, b"second again".to_vec()));

    // All three tunnels (and the GET) shared one upstream h2 connection; each went up as
    // :method CONNECT, :protocol websocket, without the HTTP/1.1 handshake headers.
    assert_eq!(echo.connections.load(Ordering::SeqCst), 1);
    let connects = echo.connects();
    assert_eq!(connects.len(), 3, "{connects:?}");
    for (_, protocol, h) in &connects {
        assert_eq!(protocol.as_deref(), Some("websocket"));
        for gone in ["sec-websocket-key", "upgrade", "connection"] {
            assert!(!h.contains_key(gone), "{gone} sent upstream: {h:?}");
        }
        assert_eq!(h["sec-websocket-version"], "13");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }
    ws.write_all(&ws_frame(8, b"")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await.0, 8);
    ws2.write_all(&ws_frame(8, b"")).await.unwrap();
    assert_eq!(ws_read(&mut ws2).await.0, 8);

    // A bad h1 handshake is answered by vip-l7: no key → 400; another version → 426.
    let base = format!("http://127.0.0.1:{port}/chat");
    let (ok, out, err) = curl_ws_handshake(None, "13", &base);
    assert!(ok && out.starts_with("HTTP/1.1 400"), "{out}{err}");
    let (ok, out, err) = curl_ws_handshake(Some(SAMPLE_WS_KEY), "8", &base);
    assert!(ok && out.starts_with("HTTP/1.1 426"), "{out}{err}");
    assert!(
        out.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{out}"
    );

    // Upstreams that did not enable extended CONNECT: 502 with the reason, from h2 and h1
    // clients, and no outlier ejection (it is a configuration mismatch).
    send.ready().await.unwrap();
    let resp = send.send_request(connect("/noproto")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"), "{body}");
    for _ in 0..2 {
        let (ok, out, err) = curl_ws_handshake(
            Some(SAMPLE_WS_KEY),
            "13",
            &format!("http://127.0.0.1:{port}/noproto/x"),
        );
        assert!(ok && out.starts_with("HTTP/1.1 502"), "{out}{err}");
        assert!(out.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"), "{out}");
    }
    assert!(plain_a.connects().is_empty() && plain_b.connects().is_empty());
    let clusters = l7.admin("clusters", json!({}));
    let noproto = clusters["result"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "noproto")
        .unwrap();
    for u in noproto["upstreams"].as_array().unwrap() {
        assert_eq!(u["ejected"], false, "{noproto}");
    }
    // Plain requests to those upstreams still work.
    let (ok, out, err) = curl(&[&format!("http://127.0.0.1:{port}/noproto/get")]);
    assert!(ok && out == "plain /noproto/get", "{out}{err}");
}

/// A TCP relay to `to` that holds back everything the upstream sends for `delay` after each
/// connection opens (so its SETTINGS arrive that late); the other direction flows at once.
async fn slow_settings_relay(to: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
                });
                tokio::time::sleep(delay).await;
                let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
            });
        }
    });
    addr
}

/// An h2 upstream whose SETTINGS (with SETTINGS_ENABLE_CONNECT_PROTOCOL) arrive later than the
/// cluster's connect timeout: a WebSocket before they came gets 502 (nothing is sent up), and
/// one after gets its tunnel on the same upstream connection: the setting is looked at again
/// when a request needs it, not only while the connection is young.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_an_h2_upstream_whose_settings_come_late() {
    use tokio::io::AsyncWriteExt;
    let echo = H2WsEcho::start(true).await;
    let relay = slow_settings_relay(echo.addr, Duration::from_millis(1500)).await;
    let port = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\ncluster = \"late\"\n{}",
        cluster(
            "late",
            "protocol = \"h2\"\nconnect_timeout_ms = 200",
            &[&relay.to_string()]
        ),
    );
    let l7 = L7::start(&cfg, &[port]);
    let (mut send, _conn) = h2_connect(port).await;
    let connect = |path: &str| ws_connect(format!("http://127.0.0.1:{port}{path}"));
    let opened = Instant::now();
    send.ready().await.unwrap();
    let resp = send.send_request(connect("/early")).await.unwrap();
    assert_eq!(resp.status(), 502, "{resp:?}");
    assert!(
        opened.elapsed() < Duration::from_millis(1400),
        "the early answer waited for the settings: {:?}",
        opened.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(opened.elapsed())).await;
    send.ready().await.unwrap();
    let resp = send.send_request(connect("/late")).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}\n{}", l7.stderr_text());
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ws.write_all(&ws_frame(1, b"late hello")).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (1, b"late hello".to_vec()));
    assert_eq!(
        echo.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    let connects = echo.connects();
    assert_eq!(
        connects.len(),
        1,
        "only the late tunnel went up: {connects:?}"
    );
}

/// An h2 upstream that answers "ok <path>" and kills each connection (closes it without an
/// answer or GOAWAY) when the `kill_at`-th request arrives on it; counts connections and kills.
async fn h2_killing_upstream(
    kill_at: usize,
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (connections, kills) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (conns, killed) = (connections.clone(), kills.clone());
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        while let Ok((s, _)) = l.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let kill = Arc::new(tokio::sync::Notify::new());
            let (k, seen) = (kill.clone(), Arc::new(AtomicUsize::new(0)));
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (k, n) = (k.clone(), seen.fetch_add(1, Ordering::SeqCst) + 1);
                    async move {
                        if n == kill_at {
                            k.notify_one();
                            std::future::pending::<()>().await;
                        }
                        let body = format!("ok {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
            let killed = killed.clone();
            tasks.spawn(async move {
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = kill.notified() => {
                        killed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, connections, kills, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_h2_upstream_connection_died_is_retried_on_a_new_connection() {
    let (addr, connections, kills, _task) = h2_killing_upstream(3).await;
    // Kills every connection at its first request.
    let (addr1, connections1, kills1, _task1) = h2_killing_upstream(1).await;
    let good = Upstream::start("good").await;
    let (port, mport) = (free_port(), free_port());
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n[[routes]]\npath_prefix = \"/two\"\n\
         cluster = \"two\"\n[[routes]]\ncluster = \"h2\"\n{}{}",
        cluster(
            "h2",
            "protocol = \"h2\"\nretry = { attempts = 2, min_concurrent = 100 }",
            &[&addr.to_string()]
        ),
        cluster(
            "two",
            "protocol = \"h2\"\nbalancer = \"round_robin\"\noutlier = { max_ejection_percent = 0 }\n\
             retry = { attempts = 2, min_concurrent = 100 }",
            &[&addr1.to_string(), &good.addr.to_string()]
        ),
    );
    let l7 = L7::start(&cfg, &[port, mport]);
    // 30 GETs one after another on one keep-alive connection (curl reuses it): every third
    // request on an upstream connection kills that connection under the request; each such GET
    // is retried on a new connection to the same upstream and answered.
    let urls: Vec<String> = (0..30)
        .map(|i| format!("http://127.0.0.1:{port}/r{i}"))
        .collect();
    let mut args = vec!["-w", "%{http_code}\n"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let (ok, out, err) = curl(&args);
    assert!(ok, "{err}");
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes.len(), 30, "{out}");
    assert!(
        codes.iter().all(|c| *c == "200"),
        "{out}\n{}",
        l7.stderr_text()
    );
    let k = kills.load(Ordering::SeqCst);
    assert!(k >= 14, "only {k} connections were killed");
    assert_eq!(connections.load(Ordering::SeqCst), k + 1);
    let retries = metric(mport, "vip_l7_retries_total{cluster=\"h2\"}");
    assert_eq!(retries as usize, k, "one retry per killed connection");

    // With another upstream left to try, the retry goes there, not back to the one whose
    // connection died.
    let urls: Vec<String> = (0..10)
        .map(|i| format!("http://127.0.0.1:{port}/two/{i}"))
        .collect();
    let mut args = vec!["-w", "%{http_code}\n"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let (ok, out, err) = curl(&args);
    assert!(ok, "{err}");
    assert_eq!(out, "200\n".repeat(10), "{}", l7.stderr_text());
    let k1 = kills1.load(Ordering::SeqCst);
    assert!(k1 >= 1, "the killing upstream got no request");
    assert_eq!(
        connections1.load(Ordering::SeqCst),
        k1,
        "no retry went back to it"
    );
    assert_eq!(good.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_an_h2_upstream_over_tls() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "up", &["up.test"]);
    let echo = H2WsEcho::start_tls(&cert, &key).await;
    let port = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\ncluster = \"tls\"\n{}",
        cluster(
            "tls",
            &format!(
                "protocol = \"h2\"\ntls = {{ server_name = \"up.test\", ca = \"{}\" }}",
                cert.display()
            ),
            &[&echo.addr.to_string()]
        ),
    );
    let l7 = L7::start_in(dir, &cfg, &[port]);
    // The first WebSocket opens the TLS connection (its settings are not in yet).
    let out = python_ws_client(port, "/tls/py").await;
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        l7.stderr_text()
    );
    let (mut send, _conn) = h2_connect(port).await;
    send.ready().await.unwrap();
    let req = ws_connect(format!("http://127.0.0.1:{port}/tls/h2"));
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", l7.stderr_text());
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let big = vec![7u8; 100_000];
    ws.write_all(&ws_frame(2, &big)).await.unwrap();
    assert_eq!(ws_read(&mut ws).await, (2, big));
    assert_eq!(echo.connections.load(Ordering::SeqCst), 1);
    assert_eq!(echo.connects().len(), 2);
}

/// A broken HTTP/1.1 server that answers every request head with 101 Switching Protocols, asked
/// for or not, then holds the connection for a second; counts the requests it read.
async fn switching_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let (addr, n, _) = scripted_upstream(|mut s, _, n| async move {
        if read_head(&mut s).await {
            n.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    (addr, n)
}

/// RFC 9110 §15.2.2: a server may switch protocols only when the request asked for it. A 101 to
/// a plain GET is the upstream's error (502), never passed on to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_to_a_request_without_upgrade_is_a_502() {
    let (switching, reads) = switching_server().await;
    let port = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\ncluster = \"s\"\n{}",
        cluster("s", "", &[&switching.to_string()]),
    );
    let l7 = L7::start(&cfg, &[port]);
    for i in 0..2 {
        let (ok, out, err) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/{i}"),
        ]);
        assert!(ok, "{err}");
        assert_eq!(out, "502", "GET {i}\n{}", l7.stderr_text());
    }
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}

/// A scripted HTTP/1.1 upstream for the own client: it reads request heads (and Content-Length
/// bodies) on keep-alive connections and answers by path. Counts connections and requests.
async fn scripted_h1_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c2, r2) = (conns.clone(), reqs.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let reqs = r2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    reqs.fetch_add(1, Ordering::SeqCst);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer: &[u8] = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
                        "/close" => b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        "/badlen" => b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                        "/bye" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye",
                        "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                        "/trickle" => {
                            // The head in 3-byte pieces: its empty line arrives split.
                            let answer = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 7\r\n\r\ntrickle";
                            for piece in answer.chunks(3) {
                                if s.write_all(piece).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            continue;
                        }
                        "/big" => {
                            let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n".to_vec();
                            big.resize(big.len() + 3_000_000, b'z');
                            if s.write_all(&big).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if matches!(path.as_str(), "/close" | "/badlen" | "/short") {
                        return;
                    }
                    if path == "/bye" {
                        // Closes the idle connection a moment later, as upstreams with a short
                        // keep-alive timeout do.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, reqs)
}

/// vip-l7's own HTTP/1.1 client (h1client): keep-alive reuse, chunked and close-delimited
/// bodies, 1xx before the final response, a head in small pieces, HEAD, a pooled connection the upstream has closed,
/// and invalid or truncated responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_http1_client_framing_reuse_and_bad_responses() {
    let (up, conns, reqs) = scripted_h1_upstream().await;
    let port = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\ncluster = \"s\"\n{}",
        cluster("s", "outlier = { max_ejection_percent = 0 }", &[&up.to_string()]),
    );
    let l7 = L7::start(&cfg, &[port]);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let get = |args: &[&str]| {
        let mut a = vec!["-s", "-w", " %{http_code}", "--max-time", "5"];
        a.extend_from_slice(args);
        let (_, out, err) = curl(&a);
        (out, err)
    };
    // Keep-alive: three requests, one upstream connection.
    for p in ["/a", "/b", "/c"] {
        assert_eq!(get(&[&url(p)]).0, "ok 200", "{}", l7.stderr_text());
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // Chunked with an extension and trailers; 100 Continue skipped.
    assert_eq!(get(&[&url("/chunked")]).0, "hello world 200");
    assert_eq!(get(&[&url("/continue")]).0, "ok 200");
    // A head that trickles in, its empty line split across reads.
    assert_eq!(get(&[&url("/trickle")]).0, "trickle 200");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "still the one connection");
    // HEAD: no body is waited for, whatever Content-Length says.
    let (out, err) = get(&["-I", &url("/head")]);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with(" 200"),
        "{out} {err}"
    );
    // A close-delimited HTTP/1.0 body ends at the close; that connection is not reused.
    assert_eq!(get(&[&url("/close")]).0, "close-delimited 200");
    assert_eq!(get(&[&url("/d")]).0, "ok 200");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // The upstream closes the pooled connection while it is idle: the next request, a POST,
    // goes on a new connection without an error.
    assert_eq!(get(&["--data-binary", "x", &url("/bye")]).0, "bye 200");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&["--data-binary", "x", &url("/e")]).0,
        "ok 200",
        "{}",
        l7.stderr_text()
    );
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    // An invalid Content-Length is the upstream's error: 502.
    assert!(get(&[&url("/badlen")]).0.ends_with(" 502"));
    // A body cut short: the client gets the head, then its connection is cut (curl error 18).
    let (ok, _, err) = curl(&["-s", "--max-time", "5", &url("/short")]);
    assert!(!ok, "a truncated body is not passed off as complete: {err}");
    assert_eq!(get(&[&url("/f")]).0, "ok 200");
    // A large body streams through whole, and its connection is reused after it.
    let before = conns.load(Ordering::SeqCst);
    let (out, err) = get(&["-o", "/dev/null", "-w", "%{size_download}", &url("/big")]);
    assert_eq!(out, "3000000", "{err}");
    assert_eq!(get(&[&url("/g")]).0, "ok 200");
    assert_eq!(conns.load(Ordering::SeqCst), before);
    assert!(reqs.load(Ordering::SeqCst) >= 15);
}
