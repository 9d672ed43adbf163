//! Balancing, rate limits, circuit breakers, outlier ejection, timeouts, sticky cookies and
//! metrics, end to end through a real vip-l7 process.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn config(http: u16, clusters: &str, extra: &str) -> String {
    format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n{extra}\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n[[routes]]\ncluster = \"web\"\n{clusters}"
    )
}

fn cluster(settings: &str, ups: &[(&Upstream, u32)]) -> String {
    let mut s = format!("[clusters.web]\n{settings}\n");
    for (u, w) in ups {
        s += &format!(
            "[[clusters.web.upstreams]]\naddress = \"{}\"\nweight = {w}\n",
            u.addr
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_consistent_hash_and_sticky_cookie() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let http = free_port();
    let l7 = L7::start(
        &config(
            http,
            &cluster("balancer = \"weighted_round_robin\"", &[(&a, 3), (&b, 1)]),
            "",
        ),
        &[http],
    );
    let cl = client();
    let url = format!("http://127.0.0.1:{http}/");
    for _ in 0..40 {
        get(&cl, &url, &[]).await.unwrap();
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
    drop(l7);

    // Consistent hash on a header: one user always lands on the same upstream; users spread.
    let http = free_port();
    let _l7 = L7::start(
        &config(
            http,
            &cluster(
                "balancer = \"consistent_hash\"\nhash_on = { header = \"x-user\" }",
                &[(&a, 1), (&b, 1), (&c, 1)],
            ),
            "",
        ),
        &[http],
    );
    let url = format!("http://127.0.0.1:{http}/");
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let u = format!("user{user}");
        let mut first = None;
        for _ in 0..3 {
            let (_, h, _) = get(&cl, &url, &[("x-user", &u)]).await.unwrap();
            let up = h["x-upstream"].to_str().unwrap().to_string();
            assert!(first.get_or_insert(up.clone()) == &up, "{u} moved");
            seen.insert(up);
        }
    }
    assert_eq!(seen.len(), 3, "30 users should reach all 3 upstreams");

    // Sticky cookie: the first answer sets it; requests carrying it stay on that upstream.
    let http = free_port();
    let _l7s = L7::start(
        &config(
            http,
            &cluster(
                "balancer = \"round_robin\"\nsticky_cookie = \"lb\"",
                &[(&a, 1), (&b, 1), (&c, 1)],
            ),
            "",
        ),
        &[http],
    );
    let url = format!("http://127.0.0.1:{http}/");
    let (_, h, _) = get(&cl, &url, &[]).await.unwrap();
    let up = h["x-upstream"].to_str().unwrap().to_string();
    let set = h["set-cookie"].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("lb="), "{set}");
    for _ in 0..10 {
        let (_, h, _) = get(&cl, &url, &[("cookie", &cookie)]).await.unwrap();
        assert_eq!(h["x-upstream"].to_str().unwrap(), up);
        assert!(h.get("set-cookie").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_per_key() {
    let a = Upstream::start("a").await;
    let http = free_port();
    let _l7 = L7::start(
        &config(
            http,
            &cluster(
                "rate_limit = { per_second = 0.5, burst = 3, key_header = \"x-api-key\" }",
                &[(&a, 1)],
            ),
            "",
        ),
        &[http],
    );
    let cl = client();
    let url = format!("http://127.0.0.1:{http}/");
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            get(&cl, &url, &[("x-api-key", "k1")])
                .await
                .unwrap()
                .0
                .as_u16(),
        );
    }
    assert_eq!(codes, vec![200, 200, 200, 429, 429]);
    let (s, _, _) = get(&cl, &url, &[("x-api-key", "k2")]).await.unwrap();
    assert_eq!(s, 200, "another key has its own bucket");
    assert_eq!(a.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_503_at_once() {
    let a = Upstream::start("a").await;
    let http = free_port();
    let _l7 = L7::start(
        &config(
            http,
            &cluster("circuit = { max_requests = 2 }", &[(&a, 1)]),
            "",
        ),
        &[http],
    );
    let url = format!("http://127.0.0.1:{http}/sleep/400");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(if i < 2 { 0 } else { 100 })).await;
            let t = Instant::now();
            let (s, _, _) = get(&client(), &url, &[]).await.unwrap();
            (s.as_u16(), t.elapsed())
        }));
    }
    let mut ok = 0;
    let mut fast_503 = 0;
    for t in tasks {
        let (s, took) = t.await.unwrap();
        match s {
            200 => ok += 1,
            503 if took < Duration::from_millis(200) => fast_503 += 1,
            other => panic!("unexpected {other} after {took:?}"),
        }
    }
    assert_eq!((ok, fast_503), (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_with_cap_and_metrics() {
    let good = Upstream::start("good").await;
    let bad1 = Upstream::start("bad1").await;
    let bad2 = Upstream::start("bad2").await;
    let http = free_port();
    let metrics = free_port();
    let l7 = L7::start(
        &config(
            http,
            &cluster(
                "balancer = \"round_robin\"\noutlier = { consecutive_errors = 3, base_ejection_ms = 60000, max_ejection_percent = 34 }",
                &[(&good, 1), (&bad1, 1), (&bad2, 1)],
            ),
            &format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\""),
        ),
        &[http, metrics],
    );
    let cl = client();
    let url = format!("http://127.0.0.1:{http}/flaky");
    for _ in 0..30 {
        get(&cl, &url, &[]).await.unwrap();
    }
    let r = l7.admin("clusters", json!({"cluster": "web"}));
    let ups = r["result"]["clusters"][0]["upstreams"]
        .as_array()
        .unwrap()
        .clone();
    let ejected: Vec<bool> = ups
        .iter()
        .map(|u| u["ejected"].as_bool().unwrap())
        .collect();
    assert!(!ejected[0], "{r}");
    // The cap (34 % of 3 = 1) keeps the second bad upstream in.
    assert_eq!(ejected.iter().filter(|&&e| e).count(), 1, "{r}");
    let (ok, text, _) = curl(&[&format!("http://127.0.0.1:{metrics}/metrics")]);
    assert!(ok);
    assert!(
        text.contains("vip_l7_ejections_total{cluster=\"web\""),
        "{text}"
    );
    assert!(
        text.contains("vip_l7_requests_total{route=\"routes[0]\",cluster=\"web\""),
        "{text}"
    );
    assert!(
        text.contains("vip_l7_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("vip_l7_client_connections{listener=\"listener0\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_connect_timeouts_and_connect_retry() {
    let a = Upstream::start("a").await;
    let dead = free_port();
    let http = free_port();
    let cfg = config(
        http,
        &format!(
            "[clusters.web]\nbalancer = \"round_robin\"\nrequest_timeout_ms = 300\nconnect_timeout_ms = 200\n[[clusters.web.upstreams]]\naddress = \"{}\"\n[[clusters.web.upstreams]]\naddress = \"127.0.0.1:{dead}\"\n",
            a.addr
        ),
        "",
    );
    let _l7 = L7::start(&cfg, &[http]);
    let cl = client();
    // Every other pick is the dead upstream: the connect failure is retried on `a`.
    for _ in 0..6 {
        let (s, h, b) = get(
            &cl,
            &format!("http://127.0.0.1:{http}/"),
            &[("x-custom", "kept")],
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        assert_eq!(h["x-upstream"], "a");
        // A retried request carries the same headers as the first attempt.
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["headers"]["x-custom"], "kept", "{v}");
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1", "{v}");
        assert!(v["headers"]["x-request-id"].is_string(), "{v}");
    }
    let t = Instant::now();
    let (s, _, _) = get(&cl, &format!("http://127.0.0.1:{http}/sleep/2000"), &[])
        .await
        .unwrap();
    assert_eq!(s, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_peak_ewma_avoid_the_busy_upstream() {
    for balancer in ["least_request", "peak_ewma", "p2c"] {
        let a = Upstream::start("a").await;
        let b = Upstream::start("b").await;
        let http = free_port();
        let _l7 = L7::start(
            &config(
                http,
                &cluster(&format!("balancer = \"{balancer}\""), &[(&a, 1), (&b, 1)]),
                "",
            ),
            &[http],
        );
        // Park 4 slow requests (they spread over a and b), then send fast ones: the fast ones
        // must all complete; hits show both upstreams are used.
        let mut slow = Vec::new();
        for _ in 0..4 {
            let url = format!("http://127.0.0.1:{http}/sleep/300");
            slow.push(tokio::spawn(async move { get(&client(), &url, &[]).await }));
        }
        let cl = client();
        for _ in 0..20 {
            let (s, _, _) = get(&cl, &format!("http://127.0.0.1:{http}/"), &[])
                .await
                .unwrap();
            assert_eq!(s, 200, "{balancer}");
        }
        for s in slow {
            assert_eq!(s.await.unwrap().unwrap().0, 200);
        }
        assert!(
            a.hits() > 0 && b.hits() > 0,
            "{balancer}: {} {}",
            a.hits(),
            b.hits()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_and_connection_limit() {
    let a = Upstream::start("a").await;
    let dead = free_port();
    // No retry budget at all: connect failures reach the client as 502.
    let http = free_port();
    let cfg = config(
        http,
        &format!(
            "[clusters.web]\nbalancer = \"round_robin\"\nretry = {{ attempts = 3, budget_percent = 0, min_concurrent = 0 }}\noutlier = {{ max_ejection_percent = 0 }}\n[[clusters.web.upstreams]]\naddress = \"{}\"\n[[clusters.web.upstreams]]\naddress = \"127.0.0.1:{dead}\"\n",
            a.addr
        ),
        "",
    );
    let _l7 = L7::start(&cfg, &[http]);
    let cl = client();
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(
            get(&cl, &format!("http://127.0.0.1:{http}/"), &[])
                .await
                .unwrap()
                .0
                .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|&&c| c == 502).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 3, "{codes:?}");

    // max_connections = 1: a second concurrent request needs a second connection → 503 at once.
    let http = free_port();
    let _l7b = L7::start(
        &config(
            http,
            &cluster("circuit = { max_connections = 1 }", &[(&a, 1)]),
            "",
        ),
        &[http],
    );
    let slow = {
        let url = format!("http://127.0.0.1:{http}/sleep/500");
        tokio::spawn(async move { get(&client(), &url, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    let (s, _, _) = get(&client(), &format!("http://127.0.0.1:{http}/"), &[])
        .await
        .unwrap();
    assert_eq!(s, 503);
    assert!(t.elapsed() < Duration::from_millis(300));
    assert_eq!(slow.await.unwrap().unwrap().0, 200);
}

/// An h2 upstream (the `h2` crate's server, not vip-l7's code) that resets the first stream of
/// every connection with `reason` and answers the others 200 with "METHOD body". Returns its
/// address and how many streams it has seen.
async fn resetting_h2_upstream(
    reason: h2::Reason,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let (addr, seen, _) = scripted_upstream(move |sock, _, seen| async move {
        let Ok(mut conn) = h2::server::handshake(sock).await else {
            return;
        };
        let mut first = true;
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            if std::mem::take(&mut first) {
                respond.send_reset(reason);
                continue;
            }
            tokio::spawn(async move {
                let method = req.method().to_string();
                let mut body = req.into_body();
                let mut got = Vec::new();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    got.extend_from_slice(&chunk);
                }
                let resp = http::Response::builder().status(200).body(()).unwrap();
                if let Ok(mut send) = respond.send_response(resp, false) {
                    let text = format!("{method} {}", String::from_utf8_lossy(&got));
                    let _ = send.send_data(text.into(), true);
                }
            });
        }
    })
    .await;
    (addr, seen)
}

/// RFC 9113 §8.7: a stream the upstream resets with REFUSED_STREAM was not processed, so even a
/// POST is sent again (here to the same, only upstream); any other reset of a POST is not
/// retried and answers 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_h2_stream_is_retried_for_any_method_other_resets_are_not() {
    use std::sync::atomic::Ordering;
    let (refusing, refused_seen) = resetting_h2_upstream(h2::Reason::REFUSED_STREAM).await;
    let (failing, failed_seen) = resetting_h2_upstream(h2::Reason::INTERNAL_ERROR).await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n\
         [[routes]]\npath_prefix = \"/refused\"\ncluster = \"refusing\"\n\
         [[routes]]\ncluster = \"failing\"\n\
         [clusters.refusing]\nprotocol = \"h2\"\n[[clusters.refusing.upstreams]]\naddress = \"{refusing}\"\n\
         [clusters.failing]\nprotocol = \"h2\"\n[[clusters.failing.upstreams]]\naddress = \"{failing}\"\n"
    );
    let _l7 = L7::start(&cfg, &[http]);
    // curl blocks: off the runtime that serves the upstreams.
    let post = |path: &str| {
        let url = format!("http://127.0.0.1:{http}{path}");
        tokio::task::spawn_blocking(move || {
            curl(&["-w", " %{http_code}", "--data-binary", "payload", &url])
        })
    };
    let (_, out, err) = post("/refused").await.unwrap();
    assert_eq!(out, "POST payload 200", "{err}");
    assert_eq!(
        refused_seen.load(Ordering::SeqCst),
        2,
        "the refused stream, then the retry"
    );
    let (_, out, err) = post("/failed").await.unwrap();
    assert!(out.ends_with(" 502"), "{out} {err}");
    assert_eq!(
        failed_seen.load(Ordering::SeqCst),
        1,
        "a POST whose stream was reset with INTERNAL_ERROR may have been processed: not retried"
    );
}

/// One HTTP/2 frame: (type, flags, stream id, payload).
type Frame = (u8, u8, u32, Vec<u8>);

async fn read_frame(s: &mut tokio::net::TcpStream) -> std::io::Result<Frame> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok((head[3], head[4], stream, payload))
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The server side of an h2 connection's start: the client preface, then an empty SETTINGS.
async fn h2_accept(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).await.is_ok()
        && s.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_ok()
}

/// Reads frames, acknowledging the client's SETTINGS, up to the next HEADERS: its stream id.
async fn next_headers(s: &mut tokio::net::TcpStream) -> Option<u32> {
    use tokio::io::AsyncWriteExt;
    while let Ok((ty, flags, stream, _)) = read_frame(s).await {
        if ty == SETTINGS && flags & 0x1 == 0 {
            let _ = s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
        }
        if ty == HEADERS {
            return Some(stream);
        }
    }
    None
}

const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;

/// A 200 answer on `stream` with `body`: HEADERS (`:status 200` is HPACK static index 8) and
/// DATA with END_STREAM.
fn answer(stream: u32, body: &str) -> Vec<u8> {
    let mut out = frame(HEADERS, 0x4, stream, &[0x88]);
    out.extend(frame(0, 0x1, stream, body.as_bytes()));
    out
}

/// A hand-written h2 upstream that sends a GOAWAY with a chosen last-stream-id, which the `h2`
/// crate's server cannot (its GOAWAY always names the last stream it received). On its first
/// connection it answers the first request "warm", waits for two more streams, sends
/// GOAWAY(NO_ERROR) naming the lower of the two as the last one processed, and closes the
/// connection 200 ms later without answering either. On later connections it answers every
/// request "retried". Returns its address and how many request streams it has seen.
async fn goaway_h2_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let (addr, seen, _) = scripted_upstream(|mut s, index, seen| async move {
        if !h2_accept(&mut s).await {
            return;
        }
        let mut streams = Vec::new();
        while let Some(stream) = next_headers(&mut s).await {
            seen.fetch_add(1, Ordering::SeqCst);
            streams.push(stream);
            if index > 0 {
                let _ = s.write_all(&answer(stream, "retried")).await;
            } else if streams.len() == 1 {
                let _ = s.write_all(&answer(stream, "warm")).await;
            } else if streams.len() == 3 {
                let last = streams[1].min(streams[2]);
                let mut goaway = last.to_be_bytes().to_vec();
                goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                let _ = s.write_all(&frame(GOAWAY, 0, 0, &goaway)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        }
    })
    .await;
    (addr, seen)
}

/// RFC 9113 §6.8: the streams above a GOAWAY's last-stream-id were not processed, so even a POST
/// on one of them is sent again (on a new connection); a POST at or below it may have been
/// processed, so when the connection then closes without an answer it gets 502 and is not
/// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_above_a_goaway_last_stream_id_is_retried_one_below_is_not() {
    use std::sync::atomic::Ordering;
    let (up, seen) = goaway_h2_upstream().await;
    let http = free_port();
    let cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n\
         [[routes]]\ncluster = \"web\"\n[clusters.web]\nprotocol = \"h2\"\n[[clusters.web.upstreams]]\naddress = \"{up}\"\n"
    );
    let _l7 = L7::start(&cfg, &[http]);
    let url = format!("http://127.0.0.1:{http}/");
    // curl blocks: off the runtime that serves the upstream.
    let u = url.clone();
    let (_, out, err) = tokio::task::spawn_blocking(move || curl(&["-w", " %{http_code}", &u]))
        .await
        .unwrap();
    assert_eq!(out, "warm 200", "{err}");
    let posts: Vec<_> = (0..2)
        .map(|_| {
            let u = url.clone();
            tokio::task::spawn_blocking(move || {
                curl(&["-w", " %{http_code}", "--data-binary", "payload", &u])
            })
        })
        .collect();
    let mut answers = Vec::new();
    for p in posts {
        answers.push(p.await.unwrap().1);
    }
    answers.sort_by_key(|a| a.ends_with(" 502"));
    assert!(
        answers[0] == "retried 200" && answers[1].ends_with(" 502"),
        "the POST above the last-stream-id is retried, the one at it is not: {answers:?}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "warm-up, the two POSTs, and one retry"
    );
}

/// A hand-written h2 upstream that processes nothing: on every connection it answers the first
/// request stream with GOAWAY(last-stream-id 0, `code`) and closes 100 ms later. Returns its
/// address and how many request streams it has seen.
async fn goaway_every_stream_h2_upstream(
    code: u32,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let (addr, seen, _) = scripted_upstream(move |mut s, _, seen| async move {
        if h2_accept(&mut s).await && next_headers(&mut s).await.is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut goaway = 0u32.to_be_bytes().to_vec();
            goaway.extend_from_slice(&code.to_be_bytes());
            let _ = s.write_all(&frame(GOAWAY, 0, 0, &goaway)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    (addr, seen)
}

/// Two clusters of one upstream each, whose outlier detection ejects at the first counted
/// error: requests under `prefix` go to `first`, the rest to `second`. Each cluster is
/// (name, extra settings, upstream address).
fn strict_clusters(
    http: u16,
    prefix: &str,
    first: (&str, &str, std::net::SocketAddr),
    second: (&str, &str, std::net::SocketAddr),
) -> String {
    let outlier = "outlier = { consecutive_errors = 1, base_ejection_ms = 60000, max_ejection_percent = 100 }";
    let mut cfg = format!(
        "[admin]\nsocket = \"ADMIN\"\naccess_log = false\n[[listeners]]\naddress = \"127.0.0.1:{http}\"\n\
         [[routes]]\npath_prefix = \"{prefix}\"\ncluster = \"{}\"\n[[routes]]\ncluster = \"{}\"\n",
        first.0, second.0
    );
    for (name, extra, addr) in [first, second] {
        cfg += &format!(
            "[clusters.{name}]\n{extra}\n{outlier}\n[[clusters.{name}.upstreams]]\naddress = \"{addr}\"\n"
        );
    }
    cfg
}

/// The admin socket's view of the first upstream of `cluster`.
fn first_upstream(l7: &L7, cluster: &str) -> serde_json::Value {
    let r = l7.admin("clusters", json!({"cluster": cluster}));
    r["result"]["clusters"][0]["upstreams"][0].clone()
}

/// Outlier detection: a graceful GOAWAY (NO_ERROR: a restart, a drain, a gRPC server's maximum
/// connection age) that leaves a stream unprocessed is routine and not counted against the
/// upstream, however often it happens; a GOAWAY with an error code is. Both clusters would eject
/// their one upstream at its first counted error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_goaway_does_not_count_towards_outlier_ejection_an_error_goaway_does() {
    use std::sync::atomic::Ordering;
    let (graceful, graceful_seen) = goaway_every_stream_h2_upstream(0).await; // NO_ERROR
    let (calm, calm_seen) = goaway_every_stream_h2_upstream(0xb).await; // ENHANCE_YOUR_CALM
    let http = free_port();
    let h2 = "protocol = \"h2\"";
    let cfg = strict_clusters(
        http,
        "/graceful",
        ("graceful", h2, graceful),
        ("calm", h2, calm),
    );
    let l7 = L7::start(&cfg, &[http]);
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{http}{path}");
        tokio::task::spawn_blocking(move || curl(&["-w", " %{http_code}", &url]))
    };
    let upstream = |cluster: &str| first_upstream(&l7, cluster);
    for _ in 0..3 {
        let (_, out, err) = get("/graceful").await.unwrap();
        assert!(out.ends_with(" 502"), "nothing was processed: {out} {err}");
    }
    assert!(
        graceful_seen.load(Ordering::SeqCst) >= 6,
        "each GET was sent again after the GOAWAY"
    );
    let u = upstream("graceful");
    assert_eq!(
        (u["ejected"].as_bool(), u["consecutive_errors"].as_u64()),
        (Some(false), Some(0)),
        "{u}"
    );
    let (_, out, err) = get("/calm").await.unwrap();
    assert!(out.ends_with(" 502"), "{out} {err}");
    assert!(calm_seen.load(Ordering::SeqCst) >= 1);
    let u = upstream("calm");
    assert_eq!(
        (u["ejected"].as_bool(), u["ejections"].as_u64()),
        (Some(true), Some(1)),
        "{u}"
    );
}

/// A client that goes away in the middle of a streamed request body (too large to buffer)
/// fails the upstream exchange, but the upstream did nothing wrong: outlier detection must not
/// count it, or clients could get healthy upstreams ejected. Both clusters would eject their one
/// upstream at its first counted error; HTTP/1.1 and h2 upstreams, Content-Length and chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_does_not_count_against_the_upstream() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("u").await;
    let http = free_port();
    let cfg = strict_clusters(
        http,
        "/h2",
        ("two", "protocol = \"h2\"", up.addr),
        ("one", "", up.addr),
    );
    let l7 = L7::start(&cfg, &[http]);
    let upstream = |cluster: &str| first_upstream(&l7, cluster);
    for path in ["/one", "/h2"] {
        for framing in ["Content-Length: 10000000", "Transfer-Encoding: chunked"] {
            let hits = up.hits();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .unwrap();
            let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let piece = vec![b'x'; 200_000];
            if framing.starts_with("Transfer") {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .unwrap();
            }
            s.write_all(&piece).await.unwrap();
            // The upstream has the request (and part of its body) before the client leaves.
            eventually(
                "the upstream got the request",
                Duration::from_secs(5),
                || up.hits() > hits,
            )
            .await;
            drop(s);
            // Let vip-l7 see the client gone and fail the upstream exchange.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cluster = if path == "/h2" { "two" } else { "one" };
            let u = upstream(cluster);
            assert_eq!(
                (u["ejected"].as_bool(), u["consecutive_errors"].as_u64()),
                (Some(false), Some(0)),
                "{path} {framing}: {u}\n{}",
                l7.stderr_text()
            );
        }
        let (ok, out, err) = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{http}{path}"),
        ]);
        assert!(ok && out == "200", "{path}: {out} {err}");
    }
}
