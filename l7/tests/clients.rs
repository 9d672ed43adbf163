//! vip-l7 end to end with real clients: curl (h1, h2c, TLS with SNI), a Python client, a
//! WebSocket echo, gRPC-style trailers over h2, failover, reload under load, admin socket,
//! SIGTERM drain.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn cluster(name: &str, extra: &str, ups: &[&Upstream]) -> String {
    let mut s = format!("[clusters.{name}]\n{extra}\n");
    for u in ups {
        s += &format!("[[clusters.{name}.upstreams]]\naddress = \"{}\"\n", u.addr);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h1_h2_tls_sni_and_forwarded_headers() {
    let up = Upstream::start("u1").await;
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = write_cert(dir.path(), "a", &["a.test"]);
    let (b_cert, b_key) = write_cert(dir.path(), "b", &["b.test"]);
    let (http, https) = (free_port(), free_port());
    let cfg = format!(
        r#"
[admin]
socket = "ADMIN"
[[listeners]]
address = "127.0.0.1:{http}"
request_id_in_response = true
[[listeners]]
address = "127.0.0.1:{https}"
tls = true
[[listeners.certificates]]
cert = "{}"
key = "{}"
names = ["a.test"]
[[listeners.certificates]]
cert = "{}"
key = "{}"
names = ["b.test"]
[[routes]]
cluster = "web"
{}"#,
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        cluster("web", "", &[&up])
    );
    let l7 = L7::start_in(dir, &cfg, &[http, https]);
    let base = format!("http://127.0.0.1:{http}");

    // HTTP/1.1: forwarded headers, request id, hop-by-hop removal both ways.
    let (ok, out, err) = curl(&[
        "-i",
        "--http1.1",
        "-H",
        "Connection: keep-alive, x-secret",
        "-H",
        "x-secret: 1",
        "-H",
        "X-Forwarded-For: 198.51.100.7",
        &format!("{base}/hello?x=1"),
    ]);
    assert!(ok, "{err}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("x-request-id:"), "{head}");
    assert!(!head.to_lowercase().contains("x-upstream-secret"), "{head}");
    let v: Value = serde_json::from_str(body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{http}"));
    assert!(h.get("x-secret").is_none(), "{h}");
    assert!(h["x-request-id"].as_str().unwrap().len() >= 16);
    assert_eq!(v["path"], "/hello");

    // An incoming request id is kept.
    let (_, out, _) = curl(&["-H", "X-Request-Id: abc-123", &format!("{base}/")]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["headers"]["x-request-id"], "abc-123");

    // h2c with prior knowledge.
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &format!("{base}/h2"),
    ]);
    assert!(ok, "{err}");
    assert!(out.ends_with("\n2"), "{out}");

    // TLS: SNI picks the certificate (curl verifies it against the name), ALPN h2 and http/1.1.
    let cas = l7.dir.path().join("cas.pem");
    std::fs::write(
        &cas,
        std::fs::read_to_string(&a_cert).unwrap() + &std::fs::read_to_string(&b_cert).unwrap(),
    )
    .unwrap();
    for name in ["a.test", "b.test"] {
        for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let (ok, out, err) = curl(&[
                flag,
                "--cacert",
                cas.to_str().unwrap(),
                "--resolve",
                &format!("{name}:{https}:127.0.0.1"),
                "-w",
                "\n%{http_version}",
                &format!("https://{name}:{https}/tls"),
            ]);
            assert!(ok, "{name} {flag}: {err}");
            assert!(out.ends_with(&format!("\n{want}")), "{out}");
            let v: Value = serde_json::from_str(out.rsplit_once('\n').unwrap().0).unwrap();
            assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        }
    }
    // This listener keeps the default: the request id goes upstream, not back to the client.
    for flag in ["--http2", "--http1.1"] {
        let (ok, out, err) = curl(&["-ski", flag, &format!("https://127.0.0.1:{https}/id")]);
        assert!(ok, "{err}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(" 200"), "{head}");
        assert!(!head.to_lowercase().contains("x-request-id"), "{head}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["headers"]["x-request-id"].as_str().map(str::len),
            Some(32),
            "{v}"
        );
    }
    // Only a.test's certificate is valid for a.test: trusting b alone must fail for a.test.
    let (ok, _, _) = curl(&[
        "--cacert",
        b_cert.to_str().unwrap(),
        "--resolve",
        &format!("a.test:{https}:127.0.0.1"),
        &format!("https://a.test:{https}/"),
    ]);
    assert!(!ok, "a.test must be served with a.test's certificate");
    // TLS 1.1 and below are refused.
    let (ok, _, _) = curl(&[
        "-k",
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        &format!("https://127.0.0.1:{https}/"),
    ]);
    assert!(!ok, "TLS 1.1 must be refused");
    // TLS 1.2 works.
    let (ok, _, err) = curl(&[
        "-k",
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        &format!("https://127.0.0.1:{https}/"),
    ]);
    assert!(ok, "TLS 1.2: {err}");

    // Certificate reload without restart: replace a.test's certificate, reload, and curl must
    // now trust only the new one.
    let new_dir = tempfile::tempdir().unwrap();
    let (n_cert, n_key) = write_cert(new_dir.path(), "a2", &["a.test"]);
    std::fs::copy(&n_cert, &a_cert).unwrap();
    std::fs::copy(&n_key, &a_key).unwrap();
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], true, "{r}");
    let (ok, _, err) = curl(&[
        "--cacert",
        n_cert.to_str().unwrap(),
        "--resolve",
        &format!("a.test:{https}:127.0.0.1"),
        &format!("https://a.test:{https}/"),
    ]);
    assert!(ok, "new certificate after reload: {err}");

    // One access-log line per request.
    let log = l7.stdout_text();
    assert!(
        log.lines().filter(|l| l.contains("\"/hello?x=1\"")).count() == 1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_websocket_echo() {
    let ws_port = free_port();
    let http = free_port();
    let cfg = format!(
        r#"
[admin]
socket = "ADMIN"
[[listeners]]
address = "127.0.0.1:{http}"
request_id_in_response = true
[[routes]]
cluster = "ws"
[clusters.ws]
[[clusters.ws.upstreams]]
address = "127.0.0.1:{ws_port}"
"#
    );
    let l7 = L7::start(&cfg, &[http]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_echo.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(ws_port.to_string())
        .arg(http.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}\n{}\nvip-l7: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        l7.stderr_text()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("websocket echo ok"), "{stdout}");
    assert!(stdout.contains("http.client ok"), "{stdout}");
}

/// An h2 upstream gets the client's host as its `:authority` and no Host header beside it
/// (nginx answers 400 "duplicate host header" to both); an HTTP/1.1 upstream gets the Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_gets_the_clients_host_as_its_authority() {
    let up = Upstream::start("a1").await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n\
         [[routes]]\npath_prefix = \"/one\"\ncluster = \"one\"\n[[routes]]\ncluster = \"two\"\n{}{}",
        cluster("one", "", &[&up]),
        cluster(
            "two",
            "protocol = \"h2\"\nhealth = { path = \"/healthz\", interval_ms = 50, timeout_ms = 500, rise = 1, fall = 1 }",
            &[&up]
        ),
    );
    let _l7 = L7::start(&cfg, &[http]);
    // Health probes (h2, with the upstream's address as :authority and no Host) pass.
    let probes = up.hits();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(up.hits() >= probes + 3, "no health probes went out");
    let seen = |args: &[&str]| -> Value {
        let (ok, out, err) = curl(args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    // h1 client, h2 upstream: Host becomes the :authority.
    let v = seen(&[
        "-H",
        "Host: app.example",
        &format!("http://127.0.0.1:{http}/two"),
    ]);
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_eq!(v["authority"], "app.example", "{v}");
    assert!(v["headers"].get("host").is_none(), "{v}");
    assert_eq!(v["headers"]["x-forwarded-host"], "app.example", "{v}");
    // h2 client (its :authority), h2 upstream.
    let v = seen(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{http}/two/h2"),
    ]);
    assert_eq!(v["authority"], format!("127.0.0.1:{http}"), "{v}");
    assert!(v["headers"].get("host").is_none(), "{v}");
    // HTTP/1.1 upstream: the Host header, in origin form.
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let v = seen(&[
            flag,
            "-H",
            "Host: app.example",
            &format!("http://127.0.0.1:{http}/one"),
        ]);
        assert_eq!(v["version"], "HTTP/1.1", "{v}");
        assert!(v["authority"].is_null(), "{v}");
        assert_eq!(v["headers"]["host"], "app.example", "{flag}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_over_h2() {
    let up = Upstream::start("g1").await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"grpc\"\n{}",
        cluster("grpc", "protocol = \"h2\"", &[&up])
    );
    let l7 = L7::start(&cfg, &[http]);
    let msg = l7.dir.path().join("msg.bin");
    std::fs::write(&msg, b"\0\0\0\0\0").unwrap();
    let msg_arg = format!("@{}", msg.display());
    // And a hyper h2 client sees the trailers as a trailers frame.
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://127.0.0.1:{http}/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x05hello");
    // curl over h2c carries the gRPC request and response (curl 7.88 does not print h2 trailers).
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        "-H",
        "te: trailers",
        "-H",
        "content-type: application/grpc",
        "--data-binary",
        &msg_arg,
        &format!("http://127.0.0.1:{http}/grpc"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "200 10");
    // nghttp (nghttp2-client), when installed, shows the trailers frame on the wire.
    if let Ok(o) = Command::new("nghttp")
        .args(["-v", "-H", "te: trailers", "-d", msg.to_str().unwrap()])
        .arg(format!("http://127.0.0.1:{http}/grpc"))
        .output()
    {
        let v = String::from_utf8_lossy(&o.stdout);
        assert!(v.contains("grpc-status: 0"), "{v}");
        assert!(v.contains("grpc-message: all-good"), "{v}");
    } else {
        eprintln!("nghttp not installed: trailers checked with the hyper h2 client only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_an_upstream_dies_and_health_checks() {
    let u1 = Upstream::start("u1").await;
    let u2 = Upstream::start("u2").await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"web\"\n{}",
        cluster(
            "web",
            "balancer = \"round_robin\"\nhealth = { path = \"/healthz\", interval_ms = 100, timeout_ms = 200, rise = 2, fall = 2 }\nretry = { attempts = 3 }",
            &[&u1, &u2]
        )
    );
    let l7 = L7::start(&cfg, &[http]);
    let c = client();
    let url = format!("http://127.0.0.1:{http}/");
    for _ in 0..20 {
        let (s, _, _) = get(&c, &url, &[]).await.unwrap();
        assert_eq!(s, 200);
    }
    assert!(
        u1.hits() >= 5 && u2.hits() >= 5,
        "{} {}",
        u1.hits(),
        u2.hits()
    );

    // Kill u2 while a client keeps sending: no client-visible error (connect failures are
    // retried on u1), then health checks mark u2 down.
    let errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (errors, stop, url) = (errors.clone(), stop.clone(), url.clone());
        tokio::spawn(async move {
            let c = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match get(&c, &url, &[]).await {
                    Ok((s, _, _)) if s == 200 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    u2.kill();
    eventually("u2 marked unhealthy", Duration::from_secs(5), || {
        let r = l7.admin("clusters", json!({}));
        r["result"]["clusters"][0]["upstreams"][1]["health"] == "unhealthy"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let n = load.await.unwrap();
    assert!(n > 20, "only {n} requests");
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "client-visible errors during failover"
    );

    // Recovery: u2 back on the same port → healthy again after `rise` probes.
    let u2b = Upstream::start_on(u2.addr.port(), "u2b").await;
    eventually("u2 healthy again", Duration::from_secs(5), || {
        let r = l7.admin("clusters", json!({}));
        r["result"]["clusters"][0]["upstreams"][1]["health"] == "healthy"
    })
    .await;
    for _ in 0..10 {
        get(&c, &url, &[]).await.unwrap();
    }
    assert!(u2b.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_commands_and_reload_under_load() {
    let u1 = Upstream::start("u1").await;
    let u2 = Upstream::start("u2").await;
    let http = free_port();
    let make = |extra: &str| {
        format!(
            "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"web\"\n{extra}\n{}",
            cluster("web", "balancer = \"round_robin\"", &[&u1, &u2])
        )
    };
    let l7 = L7::start(&make(""), &[http]);
    let mode = std::fs::metadata(&l7.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let st = l7.admin("status", json!({}));
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["v"], 1);
    assert_eq!(st["id"], 7);
    assert_eq!(st["result"]["clusters"], 1);

    let cl = l7.admin("clusters", json!({}));
    let ups = &cl["result"]["clusters"][0]["upstreams"];
    assert_eq!(ups[0]["address"], u1.addr.to_string());
    assert_eq!(ups[0]["health"], "healthy");
    assert_eq!(ups[0]["weight"], 1);

    // drain u2: all traffic to u1.
    let r = l7.admin(
        "drain",
        json!({"cluster": "web", "upstream": u2.addr.to_string()}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let c = client();
    let url = format!("http://127.0.0.1:{http}/");
    let before = u2.hits();
    for _ in 0..10 {
        get(&c, &url, &[]).await.unwrap();
    }
    assert_eq!(u2.hits(), before);
    let r = l7.admin(
        "undrain",
        json!({"cluster": "web", "upstream": u2.addr.to_string()}),
    );
    assert_eq!(r["result"]["draining"], false);
    let r = l7.admin(
        "weight",
        json!({"cluster": "web", "upstream": u2.addr.to_string(), "weight": 5}),
    );
    assert_eq!(r["result"]["weight"], 5, "{r}");

    // Structured errors.
    let r = l7.admin("nope", json!({}));
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"]["code"], "unknown_command");
    let r = l7.admin("drain", json!({"cluster": "web", "upstream": "1.2.3.4:5"}));
    assert_eq!(r["error"]["code"], "not_found");
    let r = l7.admin(
        "weight",
        json!({"cluster": "web", "upstream": u1.addr.to_string(), "weight": 0}),
    );
    assert_eq!(r["error"]["code"], "bad_args");
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&l7.admin).unwrap();
        s.write_all(
            b"{not json\n{\"v\":2,\"cmd\":\"status\"}\n{\"v\":1,\"id\":\"x\",\"cmd\":\"status\"}\n",
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            lines.push(serde_json::from_str::<Value>(&l).unwrap());
        }
        // vipd's codes: the server is the same.
        assert_eq!(lines[0]["error"]["code"], "bad_json");
        assert_eq!(lines[1]["error"]["code"], "unsupported_version");
        assert_eq!(lines[2]["ok"], true);
        assert_eq!(lines[2]["id"], "x");
        // A line over 64 KiB: request_too_large, then the connection closes.
        let mut s = std::os::unix::net::UnixStream::connect(&l7.admin).unwrap();
        s.write_all(&vec![b'x'; 100 * 1024]).unwrap();
        s.write_all(b"\n").unwrap();
        let mut r = BufReader::new(s);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["error"]["code"], "request_too_large", "{v}");
        l.clear();
        assert_eq!(r.read_line(&mut l).unwrap(), 0, "closed");
    }

    // Reload under load: no client-visible error; keep-alive connections survive.
    let errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (errors, stop, url) = (errors.clone(), stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match get(&c, &url, &[]).await {
                    Ok((s, _, _)) if s == 200 => {}
                    other => {
                        eprintln!("error during reload: {other:?}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            n
        }));
    }
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let extra = format!("[[routes]]\npath_prefix = \"/v{i}\"\ncluster = \"web\"\n");
        std::fs::write(
            &l7.config,
            make(&extra).replace("ADMIN", l7.admin.to_str().unwrap()),
        )
        .unwrap();
        let r = l7.admin("reload", json!({}));
        assert_eq!(r["ok"], true, "{r}");
    }
    // An invalid config is refused and the old one keeps serving.
    std::fs::write(&l7.config, "[[listeners]]\naddress = \"nope\"\n").unwrap();
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"]["code"], "reload_failed");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("l7.toml:2"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total > 50, "only {total} requests");
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    let st = l7.admin("status", json!({}));
    assert_eq!(st["result"]["reloads"], 5);
    assert_eq!(st["result"]["routes"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let u1 = Upstream::start("u1").await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\ndrain_timeout_ms = 5000\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"web\"\n{}",
        cluster("web", "", &[&u1])
    );
    let mut l7 = L7::start(&cfg, &[http]);
    let url = format!("http://127.0.0.1:{http}/sleep/700");
    let inflight = tokio::spawn(async move {
        let c = client();
        get(&c, &url, &[]).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &l7.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No longer accepting.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_err());
    let (s, _, _) = inflight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(s, 200);
    let status = loop {
        if let Some(st) = l7.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "vip-l7 did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit {status}: {}", l7.stderr_text());
    assert!(!l7.alive());
}

#[test]
fn check_flag_validates_and_names_file_line_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l7.toml");
    // Writes `text` as the config and runs `--check`: (exit code, stdout, stderr).
    let check = |text: &str| {
        std::fs::write(&p, text).unwrap();
        let out = Command::new(bin())
            .arg("--config")
            .arg(&p)
            .arg("--check")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let valid = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\ncluster = \"a\"\n[clusters.a]\n[[clusters.a.upstreams]]\naddress = \"127.0.0.1:2\"\n";
    let (code, out, err) = check(valid);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("OK"), "{out}");
    let (code, _, err) = check(&format!("{valid}weight = 70000\n"));
    assert_eq!(code, Some(2));
    let want = format!("{}:8: clusters.a.upstreams[0].weight", p.display());
    assert!(err.contains(&want), "{err}");
    // The session-ticket key file is read and checked too.
    let keys = dir.path().join("tickets.keys");
    std::fs::write(&keys, "# made by hand\nnot-a-key\n").unwrap();
    let (code, _, err) = check(&format!("[tls]\nticket_keys = \"tickets.keys\"\n{valid}"));
    assert_eq!(code, Some(2));
    let want = format!(
        "[tls] ticket keys {}: line 2: 9 characters, want 96 hex digits",
        keys.display()
    );
    assert!(err.contains(&want), "{err}");
}

/// An upstream that speaks TLS (ALPN h2 and http/1.1) with `cert`/`key`.
async fn tls_upstream(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let acceptor = tls_acceptor(cert, key, &[b"h2", b"http/1.1"]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("tls upstream saw {:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_h1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "up", &["up.test"]);
    let (other, _) = write_cert(dir.path(), "other", &["other.test"]);
    let (addr, task) = tls_upstream(&cert, &key).await;
    let http = free_port();
    let cfg = format!(
        r#"
[admin]
socket = "ADMIN"
[[listeners]]
address = "127.0.0.1:{http}"
[[routes]]
path_prefix = "/h1"
cluster = "h1"
[[routes]]
path_prefix = "/h2"
cluster = "h2"
[[routes]]
path_prefix = "/wrongca"
cluster = "wrongca"
[clusters.h1]
tls = {{ server_name = "up.test", ca = "{c}" }}
[[clusters.h1.upstreams]]
address = "{addr}"
[clusters.h2]
protocol = "h2"
tls = {{ server_name = "up.test", ca = "{c}" }}
[[clusters.h2.upstreams]]
address = "{addr}"
[clusters.wrongca]
tls = {{ server_name = "up.test", ca = "{o}" }}
retry = {{ attempts = 1 }}
[[clusters.wrongca.upstreams]]
address = "{addr}"
[[routes]]
path_prefix = "/insecure"
cluster = "insecure"
[clusters.insecure]
tls = {{ ca = "{o}", insecure_skip_verify = true }}
[[clusters.insecure.upstreams]]
address = "{addr}"
"#,
        c = cert.display(),
        o = other.display()
    );
    let _l7 = L7::start_in(dir, &cfg, &[http]);
    let (ok, out, err) = curl(&[&format!("http://127.0.0.1:{http}/h1")]);
    assert!(ok, "{err}");
    assert_eq!(out, "tls upstream saw HTTP/1.1");
    let (ok, out, err) = curl(&[&format!("http://127.0.0.1:{http}/h2")]);
    assert!(ok, "{err}");
    assert_eq!(out, "tls upstream saw HTTP/2.0");
    let (_, out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{http}/wrongca"),
    ]);
    assert_eq!(
        out, "502",
        "an upstream certificate from an untrusted CA must fail"
    );
    // insecure_skip_verify accepts the same certificate (lab use).
    let (ok, out, err) = curl(&[&format!("http://127.0.0.1:{http}/insecure")]);
    assert!(ok, "{err}");
    assert_eq!(out, "tls upstream saw HTTP/1.1");
    task.abort();
}

/// Session resumption with an independent client (Python's ssl, i.e. OpenSSL): TLS 1.3 and
/// TLS 1.2 sessions still resume after 300 other clients' sessions (a server-side session cache
/// of rustls' default 256 entries would have forgotten them) and after a configuration reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_after_many_clients_and_a_reload() {
    let up = Upstream::start("u1").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "a", &["a.test"]);
    let https = free_port();
    let cfg = tls_config(https, (&cert, &key), &up, None);
    let l7 = L7::start_in(dir, &cfg, &[https]);
    let mut py = ResumeClient::start();
    assert_eq!(py.ask(&format!("keep {https}")).await, "kept");
    assert_eq!(py.ask(&format!("churn {https} 300")).await, "churned");
    let both_resumed = "TLSv1.3 resumed TLSv1.2 resumed";
    assert_eq!(
        py.ask(&format!("offer {https}")).await,
        both_resumed,
        "after 300 other sessions"
    );
    let r = l7.admin("reload", json!({}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        py.ask(&format!("offer {https}")).await,
        both_resumed,
        "after a reload"
    );
}

/// One TLS listener on `port` with certificate `cert` routing to `up`; `[tls] ticket_keys`
/// when `keys` is given.
fn tls_config(
    port: u16,
    (cert, key): (&std::path::Path, &std::path::Path),
    up: &Upstream,
    keys: Option<&std::path::Path>,
) -> String {
    let tls = keys.map_or(String::new(), |k| {
        format!("[tls]\nticket_keys = \"{}\"\n", k.display())
    });
    format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n{tls}[[listeners]]\naddress = \"127.0.0.1:{port}\"\ntls = true\n\
         [[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n[[routes]]\ncluster = \"web\"\n{}",
        cert.display(),
        key.display(),
        cluster("web", "", &[up])
    )
}

/// `tests/tls_resume.py`: a Python (OpenSSL) TLS client that keeps sessions and offers them
/// again, driven one command line at a time.
struct ResumeClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ResumeClient {
    fn start() -> ResumeClient {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_resume.py");
        let mut child = tokio::process::Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        use tokio::io::AsyncBufReadExt;
        ResumeClient {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// Sends one command; its answer line.
    async fn ask(&mut self, cmd: &str) -> String {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(120), self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = self.child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                panic!("tls_resume.py gave no answer to {cmd:?} ({other:?}): {err}");
            }
        }
    }
}

/// Two session-ticket keys, as `openssl rand -hex 48` makes them.
const TICKET_KEY_1: &str = "6f2c0e9a41d5b3877c1e0f4a9b2d6e13a8c4f7e2905b1d3c6e8f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d";
const TICKET_KEY_2: &str = "d0c8b6a4f2e0d8c6b4a2f0e8d6c4b2a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_across_vip_l7s_sharing_a_ticket_key_file() {
    let up = Upstream::start("u1").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "a", &["a.test"]);
    let (keys_a, keys_b) = (dir.path().join("a.keys"), dir.path().join("b.keys"));
    std::fs::write(&keys_a, format!("# fleet ticket keys\n{TICKET_KEY_1}\n")).unwrap();
    std::fs::write(&keys_b, format!("{TICKET_KEY_1}\n")).unwrap();
    std::fs::set_permissions(&keys_b, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = L7::start(&tls_config(pa, (&cert, &key), &up, Some(&keys_a)), &[pa]);
    let b = L7::start(&tls_config(pb, (&cert, &key), &up, Some(&keys_b)), &[pb]);
    let c = L7::start(&tls_config(pc, (&cert, &key), &up, None), &[pc]);
    let reload = |l7: &L7| {
        let r = l7.admin("reload", json!({}));
        assert_eq!(r["ok"], true, "{r}");
    };
    let mut py = ResumeClient::start();
    let (resumed, full) = (
        "TLSv1.3 resumed TLSv1.2 resumed",
        "TLSv1.3 full TLSv1.2 full",
    );

    // A session from a resumes on b, which has the same key; not on c, which has its own.
    assert_eq!(py.ask(&format!("keep {pa}")).await, "kept");
    assert_eq!(py.ask(&format!("offer {pb}")).await, resumed);
    assert_eq!(py.ask(&format!("offer {pc}")).await, full);

    // Rotation on b: key 2 first. Key 1's tickets still resume there, and b's new tickets
    // are made with key 2, which a does not have.
    std::fs::write(&keys_b, format!("{TICKET_KEY_2}\n{TICKET_KEY_1}\n")).unwrap();
    reload(&b);
    assert_eq!(py.ask(&format!("offer {pb}")).await, resumed);
    assert_eq!(py.ask(&format!("keep {pb}")).await, "kept");
    assert_eq!(py.ask(&format!("offer {pa}")).await, full);

    // Key 1 dropped from b: a's sessions no longer resume there.
    std::fs::write(&keys_b, format!("{TICKET_KEY_2}\n")).unwrap();
    reload(&b);
    assert_eq!(py.ask(&format!("keep {pa}")).await, "kept");
    assert_eq!(py.ask(&format!("offer {pb}")).await, full);

    // A broken key file is refused with the line at fault, and b keeps its keys: its tickets
    // still resume on a once a has key 2.
    std::fs::write(&keys_b, format!("{}\n", &TICKET_KEY_2[..90])).unwrap();
    let r = b.admin("reload", json!({}));
    assert_eq!(r["ok"], false, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("b.keys") && msg.contains("line 1: 90 characters, want 96"),
        "{msg}"
    );
    std::fs::write(&keys_a, format!("{TICKET_KEY_2}\n")).unwrap();
    reload(&a);
    assert_eq!(py.ask(&format!("keep {pb}")).await, "kept");
    assert_eq!(py.ask(&format!("offer {pa}")).await, resumed);
    // Which keys are in use is in the status and the log.
    let st = a.admin("status", json!({}));
    let want = format!(
        "key file: 1 key, encrypting with key name {}",
        &TICKET_KEY_2[..32]
    );
    assert_eq!(st["result"]["tls_tickets"], want.as_str(), "{st}");
    assert!(a.stderr_text().contains(&want), "{}", a.stderr_text());
    // The test's key files are world-readable: a warning says so.
    assert!(
        b.stderr_text()
            .contains("readable by others (mode 644); chmod 600 it"),
        "{}",
        b.stderr_text()
    );
    let st = c.admin("status", json!({}));
    assert_eq!(
        st["result"]["tls_tickets"],
        "per-process keys (no [tls] ticket_keys)"
    );
}
