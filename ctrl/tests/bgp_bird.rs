//! vipd's embedded BGP speaker against a real BIRD 2, end to end: the real `vipd --dry-run` in
//! one network namespace health-checks a real backend and peers over a veth with BIRD in a
//! second namespace (the "top of rack").
//!
//! - the VIP appears in BIRD's RIB while its backend is healthy; `vipctl bgp summary` and
//!   `vipctl bgp routes` show the session and the route;
//! - when the VIP's last backend dies, the route leaves BIRD's RIB; when it comes back, the
//!   route returns. The time from the health check marking the backend down to the withdrawal
//!   in BIRD's RIB is measured and printed (the issue's goal: < 1 s beyond detection);
//! - SIGTERM: graceful shutdown, the route leaves BIRD, vipd exits 0.
//!
//! Needs root (network namespaces) and `bird`/`birdc`; skips otherwise.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{is_root, missing_binary, no_diag, vipctl, vipctl_json, wait_for, Bird, Proc, VIPD};
use serde_json::Value;

const VIP: &str = "192.0.2.10";
const BACKEND_PORT: u16 = 8081;
/// Polling period: the withdrawal times are measured with it.
const FAST: Duration = Duration::from_millis(5);

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need it)".into());
    }
    missing_binary(
        &["bird", "birdc", "ip", "curl"],
        "apt-get install bird2 iproute2",
    )
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("vbgp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Waits (polling every 5 ms) until `check` holds; returns when it first did.
fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) -> Instant {
    wait_for(what, timeout, FAST, &no_diag, || check().then(Instant::now))
}

struct Rack {
    dir: tempfile::TempDir,
    lb: Netns,
    _tor: Netns,
    bird: Bird,
}

impl Rack {
    fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("vipd.sock")
    }

    fn bird_has_vip(&self) -> bool {
        self.bird.has_route(&format!("{VIP}/32"))
    }

    fn bird(&self, args: &[&str]) -> String {
        self.bird.birdc(args)
    }

    fn backend(&self) -> Proc {
        let mut c = self.lb.exec(&[
            "/usr/bin/python3",
            "-m",
            "http.server",
            &BACKEND_PORT.to_string(),
            "--bind",
            "127.0.0.1",
        ]);
        c.current_dir(self.dir.path());
        Proc::spawn_logged(c, &self.dir.path().join("backend.log"))
    }

    fn vipctl(&self, args: &[&str]) -> Output {
        vipctl(&self.admin_socket(), args)
    }

    fn vipctl_json(&self, args: &[&str]) -> Value {
        vipctl_json(&self.admin_socket(), args)
    }

    fn backend_health(&self) -> String {
        let out = self.vipctl(&["--json", "vip", "show", &format!("tcp {VIP}:80")]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["backends"][0]["health"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }
}

fn rack() -> Rack {
    let dir = tempfile::tempdir().unwrap();
    let lb = Netns::new("lb");
    let tor = Netns::new("tor");
    let (a, b) = (
        format!("vl{}", std::process::id() % 100_000),
        format!("vt{}", std::process::id() % 100_000),
    );
    run(&[
        "ip", "link", "add", &a, "netns", &lb.0, "type", "veth", "peer", "name", &b, "netns",
        &tor.0,
    ]);
    run(&["ip", "-n", &lb.0, "addr", "add", "10.0.0.1/30", "dev", &a]);
    run(&["ip", "-n", &tor.0, "addr", "add", "10.0.0.2/30", "dev", &b]);
    run(&["ip", "-n", &lb.0, "link", "set", &a, "up"]);
    run(&["ip", "-n", &tor.0, "link", "set", &b, "up"]);
    let bird = Bird::start(&tor.0, dir.path(), "10.0.0.2", "10.0.0.1");
    Rack {
        dir,
        lb,
        _tor: tor,
        bird,
    }
}

fn vipd_config(rack: &Rack) -> PathBuf {
    let path = rack.dir.path().join("vipd.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[metrics]
address = "127.0.0.1:9110"
{bgp}
[[vip]]
address = "{VIP}"
port = 80
protocol = "tcp"
encap_source_v4 = "10.0.0.1"

[vip.health]
type = "tcp"
port = {BACKEND_PORT}
interval_ms = 100
timeout_ms = 100
rise = 1
fall = 2

[vip.bgp]
communities = ["65001:100"]

[[vip.backend]]
address = "127.0.0.1"
"#,
            bgp = common::vipd_bgp_toml("10.0.0.1", "10.0.0.2")
        ),
    )
    .unwrap();
    path
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn vipd_announces_withdraws_on_health_and_shuts_down_gracefully() {
    common::skip_if!(skip_reason());
    let rack = rack();
    let config = vipd_config(&rack);
    common::vipd_check(&config);

    let mut backend = Some(rack.backend());
    let mut c = rack
        .lb
        .exec(&[VIPD, "--dry-run", "--drain-ms", "100", "--config"]);
    c.arg(&config)
        .arg("--admin-socket")
        .arg(rack.admin_socket());
    let mut vipd = Proc::spawn_logged(c, &rack.dir.path().join("vipd.log"));
    let diag = |rack: &Rack| {
        format!(
            "vipd log:\n{}\nbird:\n{}",
            std::fs::read_to_string(rack.dir.path().join("vipd.log")).unwrap_or_default(),
            rack.bird(&["show", "protocols", "all", "lb1"])
        )
    };

    let up = Duration::from_secs(20);
    wait_until("the admin socket", up, || rack.admin_socket().exists());
    wait_until("the route in BIRD", up, || rack.bird_has_vip());
    let route = rack.bird(&["show", "route", "all", &format!("{VIP}/32")]);
    assert!(route.contains("10.0.0.1"), "next hop self: {route}");
    assert!(
        route.contains("(65001,100)"),
        "the VIP's community: {route}"
    );

    // The operator's view.
    let summary = rack.vipctl_json(&["bgp", "summary"]);
    let peer = &summary.as_array().expect("summary is a list")[0];
    assert_eq!(peer["peer"], "10.0.0.2", "{summary}");
    assert_eq!(peer["state"], "Established", "{summary}");
    assert_eq!(peer["prefixes_sent"], 1, "{summary}");
    let routes = rack.vipctl_json(&["bgp", "routes"]);
    assert_eq!(routes[0]["prefix"], format!("{VIP}/32"), "{routes}");
    let human = rack.vipctl(&["bgp", "summary"]);
    assert!(human.status.success());
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("10.0.0.2") && human.contains("Established"),
        "{human}"
    );

    // BGP session state in the metrics (scraped inside vipd's namespace).
    let metrics = rack
        .lb
        .exec(&["curl", "-sf", "http://127.0.0.1:9110/metrics"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("vipd_bgp_session_up{peer=\"10.0.0.2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vipd_bgp_prefixes_sent{peer=\"10.0.0.2\"} 1"),
        "{metrics}"
    );

    // Last backend dies -> withdrawn; back -> announced. Measured over a few rounds.
    let mut beyond_detection = Vec::new();
    let mut total = Vec::new();
    for round in 0..5 {
        let killed = Instant::now();
        drop(backend.take());
        let detected = wait_until("health check to fail the backend", up, || {
            rack.backend_health() == "unhealthy"
        });
        let gone = wait_until("the withdrawal in BIRD", up, || !rack.bird_has_vip());
        beyond_detection.push(gone - detected);
        total.push(gone - killed);
        assert!(
            gone - detected < Duration::from_secs(5),
            "round {round}: withdrawal took {:?} after detection\n{}",
            gone - detected,
            diag(&rack)
        );
        backend = Some(rack.backend());
        wait_until("the route back in BIRD", up, || rack.bird_has_vip());
    }
    println!(
        "health-check failure -> withdrawal in BIRD's RIB: median {:?} beyond detection \
         (max {:?}); median {:?} from the backend's death (tcp check, interval 100 ms, fall 2)",
        median(beyond_detection.clone()),
        beyond_detection.iter().max().unwrap(),
        median(total)
    );

    // A [bgp] change on reload is applied live: a community added to every route reaches
    // BIRD without the session going down; a router_id change is refused as restart_needed.
    let text = std::fs::read_to_string(&config).unwrap();
    let since = |rack: &Rack| {
        rack.bird(&["show", "protocols", "lb1"])
            .lines()
            .find(|l| l.contains("lb1"))
            .unwrap_or_default()
            .to_string()
    };
    let before = since(&rack);
    std::fs::write(
        &config,
        text.replace(
            "graceful_shutdown_wait = 1",
            "graceful_shutdown_wait = 1\ncommunities = [\"65001:7\"]",
        ),
    )
    .unwrap();
    let diff = common::ok(&rack.admin_socket(), "config.reload", serde_json::json!({}));
    assert_eq!(diff["restart_needed"], serde_json::json!([]), "{diff}");
    assert_eq!(
        diff["bgp"],
        serde_json::json!(["peer 10.0.0.2 re-announced (route attributes changed)"]),
        "{diff}"
    );
    wait_until("the new community in BIRD", up, || {
        rack.bird(&["show", "route", "all", &format!("{VIP}/32")])
            .contains("(65001,7)")
    });
    assert_eq!(
        since(&rack),
        before,
        "the session stayed up across the reload"
    );
    std::fs::write(
        &config,
        text.replace("router_id = \"10.0.0.1\"", "router_id = \"10.0.0.9\""),
    )
    .unwrap();
    let diff = common::ok(&rack.admin_socket(), "config.reload", serde_json::json!({}));
    let restart = diff["restart_needed"].to_string();
    assert!(restart.contains("router_id"), "{diff}");
    assert_eq!(
        since(&rack),
        before,
        "a refused [bgp] change leaves the session alone"
    );

    // SIGTERM: graceful shutdown withdraws and closes the session; exit 0.
    vipd.signal(libc::SIGTERM);
    wait_until("the withdrawal on SIGTERM", up, || !rack.bird_has_vip());
    let status = vipd.wait_exit("vipd to exit", up, &|| diag(&rack));
    assert!(status.success(), "vipd exit {status}\n{}", diag(&rack));
    let protocols = rack.bird(&["show", "protocols", "all", "lb1"]);
    assert!(
        protocols.contains("Administrative shutdown") || !protocols.contains("Established"),
        "BIRD should see the session closed: {protocols}"
    );
}
