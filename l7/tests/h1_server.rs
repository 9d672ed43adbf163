//! vip-l7's own HTTP/1.1 server path against real clients: Python's http.client (an independent
//! decoder) and curl, over plain TCP and TLS.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_exchanges_decoded_by_python_and_curl() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "t", &["t.test"]);
    let (http, https) = (free_port(), free_port());
    let cfg = format!(
        r#"
[admin]
socket = "ADMIN"
access_log = false
[[listeners]]
address = "127.0.0.1:{http}"
header_read_timeout_ms = 800
[[listeners]]
address = "127.0.0.1:{https}"
tls = true
[[listeners.certificates]]
cert = "{}"
key = "{}"
[[routes]]
cluster = "web"
[clusters.web]
[[clusters.web.upstreams]]
address = "{}"
"#,
        cert.display(),
        key.display(),
        up.addr
    );
    let mut l7 = L7::start_with(dir, &cfg, &[http, https], &["--threads", "1"]);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h1_exchanges.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args([script, &http.to_string(), "800"])
            .output()
            .expect("/usr/bin/python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches(" ok\n").count(), 4, "{stdout}");

    // TLS without h2 in ALPN: the same path over rustls; several requests on one connection.
    let url = format!("https://127.0.0.1:{https}/t");
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-sk",
            "--http1.1",
            "-w",
            "|%{http_code} %{num_connects}\n",
            &url,
            &url,
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let codes: Vec<_> = out.lines().filter_map(|l| l.split('|').nth(1)).collect();
    assert_eq!(codes, ["200 1", "200 0", "200 0"], "{out}");
    assert!(out.contains("\"path\":\"/t\""), "{out}");
    assert!(l7.alive());
}

/// A client that goes away while its request is in flight: the request is dropped, and with it
/// the upstream exchange, long before the upstream would have answered (hyper's server does the
/// same). A client that pipelines its next request meanwhile is not mistaken for one that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_request() {
    let up = Upstream::start("u").await;
    let (http, mport) = (free_port(), free_port());
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"web\"\n\
         [clusters.web]\nrequest_timeout_ms = 20000\n[[clusters.web.upstreams]]\naddress = \"{}\"\n",
        up.addr
    );
    let _l7 = L7::start_with(
        tempfile::tempdir().unwrap(),
        &cfg,
        &[http, mport],
        &["--threads", "1"],
    );
    let active = "vip_l7_upstream_active_requests{";

    // Pipelined: the second request waits for the first, which takes its time.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    c.write_all(b"GET /sleep/300 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut c, &mut got).unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.contains("\"path\":\"/after\""), "{got}");

    let mut c = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    c.write_all(b"GET /sleep/10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    eventually("the request is in flight", Duration::from_secs(5), || {
        metric(mport, active) == 1.0
    })
    .await;
    let t = Instant::now();
    drop(c);
    eventually("the request is dropped", Duration::from_secs(5), || {
        metric(mport, active) == 0.0
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A client that stops reading in the middle of a response: once a write has waited the
/// listener's idle timeout, the connection is closed and the upstream exchange with it, instead
/// of both being held until TCP gives up (nginx's `send_timeout`, HAProxy's `timeout client`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_idle_timeout() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "t", &["t.test"]);
    let (http, https, slow, mport) = (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{http}\"\nidle_timeout_ms = 1000\n\
         [[listeners]]\naddress = \"127.0.0.1:{https}\"\nidle_timeout_ms = 1000\ntls = true\n\
         [[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{slow}\"\nidle_timeout_ms = 5000\nheader_read_timeout_ms = 300\n\
         [[routes]]\ncluster = \"web\"\n\
         [clusters.web]\n[[clusters.web.upstreams]]\naddress = \"{}\"\n",
        cert.display(),
        key.display(),
        up.addr
    );
    let _l7 = L7::start_with(dir, &cfg, &[http, https, slow, mport], &["--threads", "1"]);
    let active = "vip_l7_upstream_active_requests{";
    let request = b"GET /big/16 HTTP/1.1\r\nHost: x\r\n\r\n";
    // Not read from, the response stalls; vip-l7 gives up on it after the idle timeout.
    let stalls = || async {
        eventually("the response is under way", Duration::from_secs(5), || {
            metric(mport, active) == 1.0
        })
        .await;
        let t = Instant::now();
        // Not before 500 ms: a request answered ahead of the stalled one (the hand-over case's
        // POST) leaves the gauge at 0 for a moment, which is not the drop this waits for.
        eventually(
            "the stalled response is dropped",
            Duration::from_secs(10),
            || t.elapsed() >= Duration::from_millis(500) && metric(mport, active) == 0.0,
        )
        .await;
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(700), "{waited:?}");
    };

    // Over TLS: the flushes of rustls's records are bounded the same way.
    let mut tls = tls_connector(&cert, &[b"http/1.1"])
        .connect(
            rustls::pki_types::ServerName::try_from("t.test").unwrap(),
            small_window(https).await,
        )
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tls, request)
        .await
        .unwrap();
    stalls().await;
    drop(tls);

    // A connection handed to hyper's server (by a chunked request first) is bounded the same way.
    let mut h = small_window(http).await;
    let handed_over = [
        &b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            [..],
        request,
    ]
    .concat();
    tokio::io::AsyncWriteExt::write_all(&mut h, &handed_over)
        .await
        .unwrap();
    stalls().await;
    drop(h);

    let mut c = small_window(http).await;
    tokio::io::AsyncWriteExt::write_all(&mut c, request)
        .await
        .unwrap();
    stalls().await;
    // The client finds the connection closed after part of the response.
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got),
    )
    .await
    .expect("the connection is closed");
    assert!(
        read.is_err() || got.len() < (16 << 20),
        "{} bytes",
        got.len()
    );
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));

    // A write that stalls for a while and then completes: the wait for the next request head is
    // still the header read timeout (300 ms) from the end of the response, not what is left of
    // the stalled write's idle timeout (5 s).
    let mut c = small_window(slow).await;
    tokio::io::AsyncWriteExt::write_all(&mut c, b"GET /big/16 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let whole = loop {
        let n = tokio::io::AsyncReadExt::read(&mut c, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
        if let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() == head + 4 + (16 << 20) {
                break Instant::now();
            }
        }
    };
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut c, &mut chunk),
    )
    .await
    .expect("the idle connection is closed");
    assert_eq!(n.unwrap(), 0);
    let idle = whole.elapsed();
    assert!(
        idle < Duration::from_secs(2),
        "closed {idle:?} after the response"
    );
}

/// A client socket with a small receive window (4 KiB), connected to `port`: with a 16 MiB
/// response, more than the sockets on its way buffer, its writer stalls when it stops reading.
async fn small_window(port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}
