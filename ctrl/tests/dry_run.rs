//! Starts the real `vipd --dry-run` against real local TCP and HTTP backends and drives it over
//! its admin socket: health checks take a killed backend out of the table, a drained backend
//! keeps its flows but gets no new ones, a reload under traffic loses no packet, metrics serve,
//! SIGTERM exits 0.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{free_port, no_diag, ok, request, Proc, POLL, VIPCTL, VIPD};
use serde_json::{json, Value};

/// A backend on 127.0.0.N: accepts TCP, and answers HTTP with `status` if `http`. Dropping it
/// closes the listener (the backend "dies").
struct Backend {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ip: &str, http_status: Option<u16>) -> Backend {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        if let Some(status) = http_status {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_millis(500)))
                                .unwrap();
                            let mut buf = [0u8; 2048];
                            let mut got = Vec::new();
                            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => got.extend_from_slice(&buf[..n]),
                                }
                            }
                            let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(20), POLL, &no_diag, || {
        check().then_some(())
    });
}

fn backend_state(socket: &Path, vip: &str, address: &str) -> (String, String) {
    let v = ok(socket, "vip.show", json!({"vip": vip}));
    let b = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address)
        .unwrap()
        .clone();
    (
        b["health"].as_str().unwrap().to_string(),
        b["dataplane"].as_str().unwrap().to_string(),
    )
}

const VIP: &str = "tcp 192.0.2.10:80";
const HTTP_VIP: &str = "tcp 192.0.2.20:80";

/// Sends one packet per (client port, flags) and returns the backend of each.
fn send(
    socket: &Path,
    ports: impl IntoIterator<Item = u16>,
    dst: &str,
    flags: &str,
) -> Vec<(u16, String)> {
    let ports: Vec<u16> = ports.into_iter().collect();
    let packets: Vec<Value> = ports
        .iter()
        .map(|p| json!({"src": "198.51.100.7", "src_port": p, "dst": dst, "dst_port": 80, "protocol": "tcp", "flags": flags}))
        .collect();
    let r = ok(socket, "traffic.send", json!({"packets": packets}));
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), ports.len());
    ports
        .iter()
        .zip(results)
        .map(|(p, r)| {
            assert_eq!(r["verdict"], "forward", "port {p}: {r}");
            (*p, r["backend"].as_str().unwrap().to_string())
        })
        .collect()
}

fn config(
    dir: &Path,
    metrics: u16,
    tcp: &[&Backend],
    http: &[&Backend],
    extra_backend: Option<&Backend>,
) -> String {
    let mut text = format!(
        "[admin]\nsocket = \"{}\"\nidle_timeout_ms = 5000\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n\
         [dataplane]\nflow_table_capacity = 4096\n\
         [[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
         [vip.health]\ntype = \"tcp\"\ninterval_ms = 200\ntimeout_ms = 200\njitter_ms = 20\nrise = 1\nfall = 3\n",
        dir.join("admin.sock").display()
    );
    for b in tcp.iter().chain(extra_backend.iter()) {
        text += &format!(
            "[[vip.backend]]\naddress = \"{}\"\nhealth_port = {}\n",
            b.address.ip(),
            b.address.port()
        );
    }
    text += "[[vip]]\naddress = \"192.0.2.20\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
             [vip.health]\ntype = \"http\"\npath = \"/healthz\"\nexpect_status = 200\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 3\n";
    for b in http {
        text += &format!(
            "[[vip.backend]]\naddress = \"{}\"\nhealth_port = {}\n",
            b.address.ip(),
            b.address.port()
        );
    }
    text
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn dry_run_health_drain_reload_metrics_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let b2 = Backend::start("127.0.0.2", None);
    let b3 = Backend::start("127.0.0.3", None);
    let b4 = Backend::start("127.0.0.4", None);
    let h5 = Backend::start("127.0.0.5", Some(200));
    let h6 = Backend::start("127.0.0.6", Some(503));
    let metrics = free_port();
    let path = dir.path().join("vipd.toml");
    std::fs::write(
        &path,
        config(dir.path(), metrics, &[&b2, &b3, &b4], &[&h5, &h6], None),
    )
    .unwrap();
    let child = Command::new(VIPD)
        .arg("--config")
        .arg(&path)
        .args(["--dry-run", "--drain-ms", "100", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vipd = Proc(child);
    wait_for("the admin socket", || {
        socket.exists() && UnixStream::connect(&socket).is_ok()
    });

    // Health: the three TCP backends rise; the HTTP backend answering 503 does not.
    wait_for("3 healthy TCP backends", || {
        ok(&socket, "vip.show", json!({"vip": VIP}))["healthy"] == 3
    });
    wait_for("HTTP checks", || {
        backend_state(&socket, HTTP_VIP, "127.0.0.6").0 == "unhealthy"
            && backend_state(&socket, HTTP_VIP, "127.0.0.5").0 == "healthy"
    });
    let http_flows = send(&socket, 1..=50, "192.0.2.20", "syn");
    assert!(
        http_flows.iter().all(|(_, b)| b == "127.0.0.5"),
        "{http_flows:?}"
    );

    // Flows spread over the three backends, then become established.
    let first = send(&socket, 1000..1300, "192.0.2.10", "syn");
    send(&socket, 1000..1300, "192.0.2.10", "ack");
    let used: HashSet<&str> = first.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(used.len(), 3, "{used:?}");
    let looked = ok(
        &socket,
        "flows.lookup",
        json!({"src": "198.51.100.7", "src_port": 1000, "dst": "192.0.2.10", "dst_port": 80}),
    );
    assert_eq!(looked["backend"], first[0].1.as_str());
    assert_eq!(looked["state"], "established");
    assert!(
        ok(&socket, "flows.count", json!({}))["flows"]
            .as_u64()
            .unwrap()
            >= 300
    );

    // Kill 127.0.0.3: it leaves the table; its flows move, new flows avoid it.
    drop(b3);
    wait_for("127.0.0.3 down", || {
        backend_state(&socket, VIP, "127.0.0.3") == ("unhealthy".into(), "down".into())
    });
    let after_kill = send(&socket, 2000..2300, "192.0.2.10", "syn");
    assert!(after_kill.iter().all(|(_, b)| b != "127.0.0.3"));
    let moved = send(&socket, 1000..1300, "192.0.2.10", "ack");
    assert!(moved.iter().all(|(_, b)| b != "127.0.0.3"));
    for ((port, before), (_, now)) in first.iter().zip(&moved) {
        if before != "127.0.0.3" {
            assert_eq!(before, now, "flow {port} kept its live backend");
        }
    }
    assert!(
        ok(&socket, "status", json!({}))["alarms"]
            .as_array()
            .unwrap()
            .is_empty(),
        "1 of 3 failed: no panic"
    );

    // Drain 127.0.0.2: its established flows stay, new flows avoid it.
    assert_eq!(
        ok(
            &socket,
            "backend.drain",
            json!({"vip": VIP, "backend": "127.0.0.2"})
        )["changed"],
        true
    );
    let established: HashMap<u16, String> = moved.iter().cloned().collect();
    let again = send(&socket, 1000..1300, "192.0.2.10", "ack");
    for (port, b) in &again {
        assert_eq!(
            &established[port], b,
            "flow {port} stays on its backend while draining"
        );
    }
    assert!(
        again.iter().any(|(_, b)| b == "127.0.0.2"),
        "some old flows are on the drained backend"
    );
    let new = send(&socket, 3000..3300, "192.0.2.10", "syn");
    assert!(
        new.iter().all(|(_, b)| b == "127.0.0.4"),
        "only 127.0.0.4 takes new flows"
    );
    ok(
        &socket,
        "backend.undrain",
        json!({"vip": VIP, "backend": "127.0.0.2"}),
    );

    // Reload under traffic: a new backend, one fewer HTTP backend; established flows keep their
    // backend and every packet is forwarded.
    let b7 = Backend::start("127.0.0.7", None);
    let tracked: HashMap<u16, String> = send(&socket, 4000..4200, "192.0.2.10", "syn")
        .into_iter()
        .collect();
    send(&socket, 4000..4200, "192.0.2.10", "ack");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (socket, stop, tracked) = (socket.clone(), Arc::clone(&stop), tracked.clone());
        thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                for (port, b) in send(&socket, 4000..4200, "192.0.2.10", "ack") {
                    assert_eq!(tracked[&port], b, "flow {port} moved during reload");
                }
                rounds += 1;
            }
            rounds
        })
    };
    std::fs::write(
        &path,
        config(dir.path(), metrics, &[&b2, &b4], &[&h5], Some(&b7)),
    )
    .unwrap();
    let diff = ok(&socket, "config.reload", json!({}));
    assert_eq!(
        diff["backends_added"],
        json!(["tcp 192.0.2.10:80 127.0.0.7"]),
        "{diff}"
    );
    assert_eq!(
        diff["backends_removed"],
        json!(["tcp 192.0.2.10:80 127.0.0.3", "tcp 192.0.2.20:80 127.0.0.6"]),
        "{diff}"
    );
    // SIGHUP reloads too (nothing changed this time).
    vipd.signal(libc::SIGHUP);
    wait_for("the SIGHUP reload", || {
        ok(&socket, "status", json!({}))["reloads"] == 2
    });
    wait_for("the new backend to rise", || {
        ok(&socket, "vip.show", json!({"vip": VIP}))["healthy"] == 3
    });
    // An invalid file is refused with its reason; the running config stays.
    std::fs::write(&path, "[[vip]]\naddress = \"nope\"\n").unwrap();
    let refused = request(&socket, "config.reload", json!({}));
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "invalid_config");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vip[0].address"),
        "{refused}"
    );
    assert_eq!(
        ok(&socket, "vip.list", json!({})).as_array().unwrap().len(),
        2
    );
    stop.store(true, Ordering::Relaxed);
    assert!(traffic.join().unwrap() >= 3);
    let stats = ok(&socket, "stats", json!({}));
    assert_eq!(
        stats["lcores"][0]["rx_packets"], stats["lcores"][0]["tx_packets"],
        "no packet lost: {stats}"
    );
    assert_eq!(stats["lcores"][0]["dropped"], 0);

    // Metrics.
    let text = scrape(metrics);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("vipd_vip_up{vip=\"tcp 192.0.2.10:80\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vipd_backend_healthy{vip=\"tcp 192.0.2.10:80\",backend=\"127.0.0.7\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vipd_drops_total{reason=\"misconfigured\"} 0"),
        "{text}"
    );
    assert!(text.contains("vipd_flow_table_entries"), "{text}");

    // Unknown, malformed and BGP commands get structured errors.
    assert_eq!(
        request(&socket, "nope", json!({}))["error"]["code"],
        "unknown_command"
    );
    assert_eq!(
        request(&socket, "bgp.summary", json!({}))["error"]["code"],
        "bgp_disabled"
    );
    assert_eq!(
        request(&socket, "vip.show", json!({"vip": "tcp 1.2.3.4:9"}))["error"]["code"],
        "not_found"
    );
    assert_eq!(
        request(
            &socket,
            "backend.weight",
            json!({"vip": VIP, "backend": "127.0.0.2", "weight": 0})
        )["error"]["code"],
        "bad_args"
    );

    // vipctl over the same socket: tables, --json, exit codes.
    let vipctl = |args: &[&str]| {
        let out = common::vipctl(&socket, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = vipctl(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.lines().next().unwrap().starts_with("vipd "), "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["tcp", "192.0.2.10:80", "up", "3/3", "-"]),
        "{out}"
    );
    let (code, out, _) = vipctl(&["--json", "vip", "list"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, out, _) = vipctl(&["vip", "show", VIP]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("127.0.0.7") && out.contains("healthy"),
        "{out}"
    );
    let (code, _, err) = vipctl(&["backend", "drain", VIP, "10.9.9.9"]);
    assert_eq!(code, Some(1), "error reply");
    assert!(err.contains("not_found"), "{err}");
    assert_eq!(vipctl(&["backend", "weight", VIP]).0, Some(2), "usage");
    let out = Command::new(VIPCTL)
        .args(["--socket", "/nonexistent/admin.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "cannot connect");
    let out = Command::new(VIPCTL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("vipctl"));
    let (code, _, _) = vipctl(&["backend", "weight", VIP, "127.0.0.4", "5"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        ok(&socket, "config.show", json!({}))["vips"][0]["backends"][1]["weight"],
        5
    );

    // SIGTERM: graceful, exit 0, socket removed.
    vipd.signal(libc::SIGTERM);
    let status = vipd.wait_exit("vipd to stop on SIGTERM", Duration::from_secs(10), &no_diag);
    let log = vipd.take_stderr();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!socket.exists());
    // Structured JSON logs.
    assert!(
        log.lines().any(|l| l.contains("\"backend health changed\"")
            && serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
    drop(b7);
}

/// `[metrics]` and the admin limits change on reload without a restart: a new metrics address
/// is bound before the reload commits (an address in use refuses the whole reload), and new
/// admin connections take the new limits. Only the admin socket path needs a restart.
#[test]
fn reload_moves_metrics_and_changes_admin_limits_live() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let path = dir.path().join("vipd.toml");
    let vip = "[[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
               [[vip.backend]]\naddress = \"127.0.0.2\"\n";
    let write = |admin_extra: &str, metrics: Option<u16>| {
        let metrics = metrics.map_or(String::new(), |p| {
            format!("[metrics]\naddress = \"127.0.0.1:{p}\"\n")
        });
        let text = format!(
            "[admin]\nsocket = \"{}\"\n{admin_extra}{metrics}{vip}",
            socket.display()
        );
        std::fs::write(&path, text).unwrap();
    };
    let (m1, m2) = (free_port(), free_port());
    write("", Some(m1));
    let child = Command::new(VIPD)
        .arg("--config")
        .arg(&path)
        .args(["--dry-run", "--drain-ms", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _vipd = Proc(child);
    wait_for("the admin socket", || {
        socket.exists() && UnixStream::connect(&socket).is_ok()
    });
    let serves = |port: u16| scrape(port).starts_with("HTTP/1.1 200");
    assert!(serves(m1));

    // Moved: the new address serves, the old one is closed.
    write("", Some(m2));
    let diff = ok(&socket, "config.reload", json!({}));
    assert_eq!(
        diff["applied"],
        json!([format!("metrics: 127.0.0.1:{m1} -> 127.0.0.1:{m2}")]),
        "{diff}"
    );
    assert_eq!(diff["restart_needed"], json!([]), "{diff}");
    assert!(serves(m2));
    wait_for("the old metrics address to close", || {
        TcpStream::connect(("127.0.0.1", m1)).is_err()
    });

    // An address in use refuses the whole reload; metrics stay where they were.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    write("max_request_bytes = 300\n", Some(busy));
    let refused = request(&socket, "config.reload", json!({}));
    assert_eq!(refused["error"]["code"], "invalid_config", "{refused}");
    let msg = refused["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("cannot serve metrics on 127.0.0.1:{busy}")),
        "{msg}"
    );
    assert!(serves(m2));
    let long = json!({"v": 1, "id": 1, "cmd": "status", "args": {"pad": "x".repeat(400)}});
    assert_eq!(
        request(&socket, "status", json!({"pad": "x".repeat(400)}))["ok"],
        true
    );

    // Admin limits apply to new connections; metrics off; a socket path change needs a restart.
    write("max_request_bytes = 300\n", None);
    let diff = ok(&socket, "config.reload", json!({}));
    assert_eq!(
        diff["applied"],
        json!([
            format!("metrics: 127.0.0.1:{m2} -> off"),
            "admin limits: max_request_bytes 300, idle_timeout_ms 30000 (new connections)"
        ]),
        "{diff}"
    );
    wait_for("metrics to stop", || {
        TcpStream::connect(("127.0.0.1", m2)).is_err()
    });
    let mut s = UnixStream::connect(&socket).unwrap();
    writeln!(s, "{long}").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("request_too_large"), "{reply}");
    // Started again from off.
    write("max_request_bytes = 300\n", Some(m1));
    let diff = ok(&socket, "config.reload", json!({}));
    assert_eq!(
        diff["applied"],
        json!([format!("metrics: off -> 127.0.0.1:{m1}")]),
        "{diff}"
    );
    assert!(serves(m1));
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("admin.sock", "other.sock"),
    )
    .unwrap();
    let diff = ok(&socket, "config.reload", json!({}));
    assert_eq!(diff["restart_needed"], json!(["admin.socket"]), "{diff}");
}
