//! Interop with real routers: BIRD 2 and FRR (Debian packages), each in its own network
//! namespace joined to the speaker's namespace(s) by veth pairs. The speaker is the
//! `bgp-speak` binary, driven over stdin like an operator would.
//!
//! Checked: sessions establish with BIRD (TCP-MD5 on) and FRR; an IPv4 /32 and an IPv6 /128
//! reach the router's RIB and the namespace's kernel FIB; withdrawals reach the router; two
//! speakers announcing one VIP give an ECMP route with two next hops in BIRD's kernel table;
//! the GRACEFUL_SHUTDOWN community is visible at FRR; after the speaker is SIGKILLed the route
//! is gone within the hold time. The withdraw latency (command → gone from `birdc show route`)
//! is measured and printed (`cargo test -p bgp --test interop -- --nocapture`).
//!
//! Needs root, `ip`, `bird`/`birdc` and FRR (`/usr/lib/frr/{zebra,bgpd}`, `vtysh`); each test
//! skips with a message when something is missing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SPEAKER_BIN: &str = env!("CARGO_BIN_EXE_bgp-speak");
const HOLD_TIME_S: u64 = 3;

fn have(bin: &str) -> bool {
    if bin.starts_with('/') {
        return Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).exists()))
        .unwrap_or(false)
}

/// Why this machine cannot run a test needing `bins`, if it cannot.
fn skip_reason(bins: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (network namespaces need root)".into());
    }
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (apt-get install bird2 frr iproute2)",
            missing.join(", ")
        ));
    }
    None
}

macro_rules! skip_unless {
    ($($bin:expr),*) => {
        if let Some(why) = skip_reason(&["ip", $($bin),*]) {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// Runs a command, returning stdout; panics with stderr when it fails.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, returning stdout and stderr together, whatever the exit status.
fn output(args: &[&str]) -> String {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("cannot run {args:?}: {e}"),
    }
}

/// Polls `cond` every 50 ms until it holds or `within` passes; returns the time it took.
fn wait_until(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
    diagnostics: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out after {within:?} waiting for {what}\n{}",
        diagnostics()
    );
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("vipdbgp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Joins `a` and `b` with a veth pair named `ifname` on both sides, with `<net4>.1/24`,
/// `<net6>::1/64` on `a` and `.2` / `::2` on `b`.
fn veth(a: &Netns, b: &Netns, ifname: &str, net4: &str, net6: &str) {
    run(&[
        "ip",
        "-n",
        a.name(),
        "link",
        "add",
        ifname,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        b.name(),
    ]);
    for (ns, host) in [(a, "1"), (b, "2")] {
        let v4 = format!("{net4}.{host}/24");
        let v6 = format!("{net6}::{host}/64");
        run(&["ip", "-n", ns.name(), "addr", "add", &v4, "dev", ifname]);
        run(&[
            "ip",
            "-n",
            ns.name(),
            "addr",
            "add",
            &v6,
            "dev",
            ifname,
            "nodad",
        ]);
        run(&["ip", "-n", ns.name(), "link", "set", ifname, "up"]);
    }
}

/// A daemon started in a namespace, killed on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(ns: &Netns, args: &[&str], log: &Path) -> Daemon {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bgp-speak` in a namespace, driven over stdin.
struct Speak {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
}

impl Speak {
    fn start(ns: &Netns, dir: &Path, name: &str, toml: &str) -> Speak {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let stderr_path = dir.join(format!("{name}.log"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), SPEAKER_BIN])
            .arg(&cfg)
            .env("RUST_LOG", "bgp=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Speak {
            child,
            stdin,
            stdout,
            stderr_path,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn reply(&mut self) -> String {
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        reply.trim().to_string()
    }

    /// Sends a command and returns its one-line answer.
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        let reply = self.reply();
        assert!(!reply.starts_with("error"), "{line}: {reply}");
        reply
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        run(&["kill", &format!("-{name}"), &self.child.id().to_string()]);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Speak {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory the `frr` user can use too.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("vipd-bgp-interop")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn speaker_toml(router_id: &str, peer: &str, next_hop_v6: &str, extra_peer: &str) -> String {
    format!(
        r#"
[bgp]
local_as = 65001
router_id = "{router_id}"
hold_time = {HOLD_TIME_S}
connect_retry = 1
graceful_shutdown_wait = 3
next_hop_v6 = "{next_hop_v6}"

[[bgp.peer]]
address = "{peer}"
remote_as = 65000
{extra_peer}
"#
    )
}

/// BIRD in `ns`, passive towards each `(neighbor, local address, password)`.
struct Bird {
    _daemon: Daemon,
    socket: PathBuf,
    log: PathBuf,
}

impl Bird {
    fn start(ns: &Netns, dir: &Path, neighbors: &[(&str, &str, Option<&str>)]) -> Bird {
        let log = dir.join("bird.log");
        let mut conf = format!(
            r#"
router id 10.255.0.1;
log "{}" all;
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths yes; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; merge paths yes; }}
"#,
            log.display()
        );
        for (i, (neighbor, local, password)) in neighbors.iter().enumerate() {
            let password = password
                .map(|p| format!("password \"{p}\";"))
                .unwrap_or_default();
            conf.push_str(&format!(
                r#"
protocol bgp s{i} {{
  local {local} as 65000;
  neighbor {neighbor} as 65001;
  passive on;
  hold time {HOLD_TIME_S};
  error wait time 1, 2;
  {password}
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
"#
            ));
        }
        let conf_path = dir.join("bird.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let socket = dir.join("bird.ctl");
        let daemon = Daemon::start(
            ns,
            &[
                "bird",
                "-f",
                "-c",
                conf_path.to_str().unwrap(),
                "-s",
                socket.to_str().unwrap(),
                "-P",
                dir.join("bird.pid").to_str().unwrap(),
            ],
            &dir.join("bird.out"),
        );
        let bird = Bird {
            _daemon: daemon,
            socket,
            log,
        };
        wait_until(
            "BIRD control socket",
            Duration::from_secs(10),
            || bird.socket.exists(),
            || std::fs::read_to_string(dir.join("bird.out")).unwrap_or_default(),
        );
        bird
    }

    fn birdc(&self, args: &[&str]) -> String {
        let mut cmd = vec!["birdc", "-s", self.socket.to_str().unwrap()];
        cmd.extend_from_slice(args);
        output(&cmd)
    }

    fn established(&self, protocol: &str) -> bool {
        self.birdc(&["show", "protocols", protocol])
            .contains("Established")
    }

    fn has_route(&self, prefix: &str) -> bool {
        self.birdc(&["show", "route", prefix])
            .lines()
            .any(|l| l.starts_with(prefix))
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- birdc show protocols all\n{}\n--- birdc show route all\n{}\n--- bird log\n{}",
            self.birdc(&["show", "protocols", "all"]),
            self.birdc(&["show", "route", "all"]),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

fn kernel_route(ns: &Netns, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    output(&["ip", "-n", ns.name(), family, "route", "show", prefix])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
fn bird_md5_routes_withdraw_latency_and_kill() {
    skip_unless!("bird", "birdc");
    let dir = scratch();
    let router = Netns::new("b1r");
    let speaker_ns = Netns::new("b1s");
    veth(&router, &speaker_ns, "v0", "10.0.1", "fd00:1");
    let bird = Bird::start(
        &router,
        dir.path(),
        &[("10.0.1.2", "10.0.1.1", Some("vipd-md5"))],
    );
    let mut speak = Speak::start(
        &speaker_ns,
        dir.path(),
        "speak",
        &speaker_toml(
            "10.0.1.2",
            "10.0.1.1",
            "fd00:1::2",
            "password = \"vipd-md5\"",
        ),
    );
    let diag = |speak_log: String| format!("{}\n--- speaker log\n{speak_log}", bird.diagnostics());
    speak.cmd("announce 192.0.2.10");
    speak.cmd("announce 2001:db8::10");

    let took = wait_until(
        "BIRD session Established (TCP-MD5)",
        Duration::from_secs(15),
        || bird.established("s0"),
        || diag(speak.log()),
    );
    eprintln!("BIRD session with TCP-MD5 established after {took:?}");
    for prefix in ["192.0.2.10/32", "2001:db8::10/128"] {
        wait_until(
            &format!("{prefix} in BIRD's RIB"),
            Duration::from_secs(10),
            || bird.has_route(prefix),
            || diag(speak.log()),
        );
    }
    wait_until(
        "IPv4 VIP in the router namespace's kernel FIB",
        Duration::from_secs(10),
        || kernel_route(&router, "192.0.2.10").contains("via 10.0.1.2"),
        || diag(speak.log()),
    );
    wait_until(
        "IPv6 VIP in the router namespace's kernel FIB",
        Duration::from_secs(10),
        || kernel_route(&router, "2001:db8::10").contains("via fd00:1::2"),
        || diag(speak.log()),
    );
    let summary = speak.cmd("summary");
    assert!(summary.contains("\"state\":\"Established\""), "{summary}");
    assert!(summary.contains("\"prefixes_sent\":2"), "{summary}");

    // Withdraw latency: command written to the speaker -> prefix gone from `birdc show route`.
    let mut samples = Vec::new();
    for _ in 0..20 {
        speak.cmd("announce 192.0.2.20");
        wait_until(
            "192.0.2.20 in BIRD",
            Duration::from_secs(10),
            || bird.has_route("192.0.2.20/32"),
            || diag(speak.log()),
        );
        let start = Instant::now();
        speak.cmd("withdraw 192.0.2.20");
        while bird.has_route("192.0.2.20/32") {
            assert!(start.elapsed() < Duration::from_secs(10), "withdrawal lost");
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "withdraw latency (speaker command -> gone from birdc show route), n={}: min {:?} median {:?} p90 {:?} max {:?}",
        samples.len(),
        samples[0],
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples[samples.len() - 1]
    );

    // A withdrawal reaches the RIB and the FIB.
    speak.cmd("withdraw 192.0.2.10");
    wait_until(
        "192.0.2.10 withdrawn from BIRD",
        Duration::from_secs(10),
        || !bird.has_route("192.0.2.10/32"),
        || diag(speak.log()),
    );
    wait_until(
        "192.0.2.10 gone from the kernel FIB",
        Duration::from_secs(10),
        || kernel_route(&router, "192.0.2.10").trim().is_empty(),
        || diag(speak.log()),
    );
    assert!(bird.has_route("2001:db8::10/128"), "the other VIP stays");

    // SIGSTOP: the connection stays open but keepalives stop, so only BIRD's hold timer can
    // remove the route. After SIGCONT the speaker reconnects and announces again.
    let stopped = Instant::now();
    speak.signal("STOP");
    wait_until(
        "2001:db8::10 gone after the hold time with the speaker frozen",
        Duration::from_secs(HOLD_TIME_S + 3),
        || !bird.has_route("2001:db8::10/128"),
        || diag(speak.log()),
    );
    let gone = stopped.elapsed();
    println!("route gone {gone:?} after SIGSTOP of the speaker (hold time {HOLD_TIME_S} s)");
    assert!(
        gone >= Duration::from_millis(1500),
        "gone after {gone:?}: before the hold time could expire"
    );
    speak.signal("CONT");
    wait_until(
        "session re-established and 2001:db8::10 announced again",
        Duration::from_secs(15),
        || bird.has_route("2001:db8::10/128"),
        || diag(speak.log()),
    );

    // SIGKILL: no NOTIFICATION, no withdrawal; the route must still go within the hold time.
    let killed = Instant::now();
    speak.kill();
    wait_until(
        "2001:db8::10 gone after the speaker was killed",
        Duration::from_secs(HOLD_TIME_S + 2),
        || !bird.has_route("2001:db8::10/128"),
        || diag(speak.log()),
    );
    println!(
        "route gone {:?} after SIGKILL of the speaker (hold time {HOLD_TIME_S} s)",
        killed.elapsed()
    );
    assert!(kernel_route(&router, "2001:db8::10").trim().is_empty());
}

#[test]
fn bird_refuses_a_wrong_md5_key() {
    skip_unless!("bird", "birdc");
    let dir = scratch();
    let router = Netns::new("b3r");
    let speaker_ns = Netns::new("b3s");
    veth(&router, &speaker_ns, "v0", "10.0.1", "fd00:1");
    let bird = Bird::start(
        &router,
        dir.path(),
        &[("10.0.1.2", "10.0.1.1", Some("right"))],
    );
    let speak = Speak::start(
        &speaker_ns,
        dir.path(),
        "speak",
        &speaker_toml("10.0.1.2", "10.0.1.1", "fd00:1::2", "password = \"wrong\""),
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert!(
            !bird.established("s0"),
            "established with a wrong TCP-MD5 key\n{}\n{}",
            bird.diagnostics(),
            speak.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gtsm_refuses_a_router_sending_ttl_1() {
    // BIRD without `ttl security` sends eBGP segments with TTL 1; a GTSM speaker (IP_MINTTL
    // 254) must not let them in.
    skip_unless!("bird", "birdc");
    let dir = scratch();
    let router = Netns::new("b4r");
    let speaker_ns = Netns::new("b4s");
    veth(&router, &speaker_ns, "v0", "10.0.1", "fd00:1");
    let bird = Bird::start(&router, dir.path(), &[("10.0.1.2", "10.0.1.1", None)]);
    let speak = Speak::start(
        &speaker_ns,
        dir.path(),
        "speak",
        &speaker_toml("10.0.1.2", "10.0.1.1", "fd00:1::2", "ttl_security = true"),
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert!(
            !bird.established("s0"),
            "established although BIRD sends TTL 1 and the speaker requires 254\n{}\n{}",
            bird.diagnostics(),
            speak.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bird_ecmp_from_two_speakers() {
    skip_unless!("bird", "birdc");
    let dir = scratch();
    let router = Netns::new("b2r");
    let s1 = Netns::new("b2s1");
    let s2 = Netns::new("b2s2");
    veth(&router, &s1, "v1", "10.0.1", "fd00:1");
    veth(&router, &s2, "v2", "10.0.2", "fd00:2");
    let bird = Bird::start(
        &router,
        dir.path(),
        &[
            ("10.0.1.2", "10.0.1.1", None),
            ("10.0.2.2", "10.0.2.1", None),
        ],
    );
    let mut a = Speak::start(
        &s1,
        dir.path(),
        "speak1",
        &speaker_toml("10.0.1.2", "10.0.1.1", "fd00:1::2", ""),
    );
    let mut b = Speak::start(
        &s2,
        dir.path(),
        "speak2",
        &speaker_toml("10.0.2.2", "10.0.2.1", "fd00:2::2", ""),
    );
    for s in [&mut a, &mut b] {
        s.cmd("announce 192.0.2.30");
        s.cmd("announce 2001:db8::30");
    }
    let (log_a, log_b) = (a.stderr_path.clone(), b.stderr_path.clone());
    let diag = || {
        format!(
            "{}\n--- kernel\n{}\n--- speaker 1\n{}\n--- speaker 2\n{}",
            bird.diagnostics(),
            output(&["ip", "-n", router.name(), "route"]),
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            std::fs::read_to_string(&log_b).unwrap_or_default(),
        )
    };
    wait_until(
        "IPv4 ECMP route with both speakers as next hops",
        Duration::from_secs(15),
        || {
            let r = kernel_route(&router, "192.0.2.30");
            r.contains("nexthop via 10.0.1.2") && r.contains("nexthop via 10.0.2.2")
        },
        diag,
    );
    wait_until(
        "IPv6 ECMP route with both speakers as next hops",
        Duration::from_secs(10),
        || {
            let r = kernel_route(&router, "2001:db8::30");
            r.contains("via fd00:1::2") && r.contains("via fd00:2::2")
        },
        diag,
    );
    // One speaker withdraws: a single next hop remains.
    a.cmd("withdraw 192.0.2.30");
    wait_until(
        "IPv4 route via the remaining speaker only",
        Duration::from_secs(10),
        || {
            let r = kernel_route(&router, "192.0.2.30");
            r.contains("via 10.0.2.2") && !r.contains("10.0.1.2")
        },
        diag,
    );
}

/// zebra + bgpd in `ns`, passive towards `neighbor`.
struct Frr {
    _zebra: Daemon,
    _bgpd: Daemon,
    dir: PathBuf,
}

impl Frr {
    fn start(ns: &Netns, dir: &Path, neighbor: &str) -> Frr {
        let d = dir.display();
        std::fs::write(dir.join("zebra.conf"), "hostname r\n").unwrap();
        std::fs::write(
            dir.join("bgpd.conf"),
            format!(
                "frr defaults traditional
hostname r
log file {d}/bgpd.log
router bgp 65000
 bgp router-id 10.255.0.2
 no bgp ebgp-requires-policy
 neighbor {neighbor} remote-as 65001
 neighbor {neighbor} passive
 neighbor {neighbor} ttl-security hops 1
 neighbor {neighbor} timers {k} {HOLD_TIME_S}
 address-family ipv6 unicast
  neighbor {neighbor} activate
 exit-address-family
",
                k = 1
            ),
        )
        .unwrap();
        for f in ["zebra.conf", "bgpd.conf"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let common = |name: &str| -> Vec<String> {
            vec![
                format!("/usr/lib/frr/{name}"),
                "-f".into(),
                format!("{d}/{name}.conf"),
                "-i".into(),
                format!("{d}/{name}.pid"),
                "-z".into(),
                format!("{d}/zserv.api"),
                "--vty_socket".into(),
                d.to_string(),
                // The vty sockets belong to the frrvty group, which the frr user is in.
                "-u".into(),
                "frr".into(),
                "-g".into(),
                "frr".into(),
            ]
        };
        let zebra_args = common("zebra");
        let zebra = Daemon::start(
            ns,
            &zebra_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &dir.join("zebra.out"),
        );
        wait_until(
            "zebra's API socket",
            Duration::from_secs(10),
            || dir.join("zserv.api").exists(),
            || std::fs::read_to_string(dir.join("zebra.out")).unwrap_or_default(),
        );
        let bgpd_args = common("bgpd");
        let bgpd = Daemon::start(
            ns,
            &bgpd_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &dir.join("bgpd.out"),
        );
        let frr = Frr {
            _zebra: zebra,
            _bgpd: bgpd,
            dir: dir.to_path_buf(),
        };
        wait_until(
            "bgpd's vty socket",
            Duration::from_secs(10),
            || dir.join("bgpd.vty").exists(),
            || frr.diagnostics(),
        );
        frr
    }

    fn vtysh(&self, command: &str) -> String {
        output(&[
            "vtysh",
            "--vty_socket",
            self.dir.to_str().unwrap(),
            "-c",
            command,
        ])
    }

    fn route_json(&self, prefix: &str) -> String {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.vtysh(&format!("show bgp {family} unicast {prefix} json"))
    }

    fn has_route(&self, prefix: &str) -> bool {
        self.route_json(prefix)
            .contains(&format!("\"prefix\":\"{prefix}\""))
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- show bgp summary\n{}\n--- bgpd.out\n{}\n--- bgpd.log\n{}",
            self.vtysh("show bgp summary"),
            std::fs::read_to_string(self.dir.join("bgpd.out")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("bgpd.log")).unwrap_or_default(),
        )
    }
}

#[test]
fn frr_routes_withdraw_and_graceful_shutdown() {
    skip_unless!("vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd");
    let dir = scratch();
    let router = Netns::new("f1r");
    let speaker_ns = Netns::new("f1s");
    veth(&router, &speaker_ns, "v0", "10.0.3", "fd00:3");
    let frr = Frr::start(&router, dir.path(), "10.0.3.2");
    let mut speak = Speak::start(
        &speaker_ns,
        dir.path(),
        "speak",
        // GTSM on both sides: FRR drops segments with TTL < 254, so this only comes up if the
        // speaker sends with TTL 255.
        &speaker_toml("10.0.3.2", "10.0.3.1", "fd00:3::2", "ttl_security = true"),
    );
    let diag = |log: String| format!("{}\n--- speaker log\n{log}", frr.diagnostics());
    speak.cmd("announce 192.0.2.40 communities=65001:40");
    speak.cmd("announce 2001:db8::40");
    for prefix in ["192.0.2.40/32", "2001:db8::40/128"] {
        wait_until(
            &format!("{prefix} in FRR's BGP table"),
            Duration::from_secs(15),
            || frr.has_route(prefix),
            || diag(speak.log()),
        );
    }
    let json = frr.route_json("192.0.2.40/32");
    assert!(json.contains("65001:40"), "VIP community at FRR: {json}");
    wait_until(
        "IPv4 VIP in the kernel FIB via zebra",
        Duration::from_secs(10),
        || kernel_route(&router, "192.0.2.40").contains("via 10.0.3.2"),
        || diag(speak.log()),
    );
    wait_until(
        "IPv6 VIP in the kernel FIB via zebra",
        Duration::from_secs(10),
        || kernel_route(&router, "2001:db8::40").contains("via fd00:3::2"),
        || diag(speak.log()),
    );

    speak.cmd("withdraw 2001:db8::40");
    wait_until(
        "2001:db8::40 withdrawn at FRR",
        Duration::from_secs(10),
        || !frr.has_route("2001:db8::40/128"),
        || diag(speak.log()),
    );

    // Graceful shutdown: FRR sees 65535:0 during the wait, then the withdrawal.
    speak.send("shutdown");
    wait_until(
        "GRACEFUL_SHUTDOWN community at FRR",
        Duration::from_secs(3),
        || {
            frr.route_json("192.0.2.40/32")
                .contains("graceful-shutdown")
        },
        || diag(speak.log()),
    );
    assert_eq!(speak.reply(), "ok");
    wait_until(
        "192.0.2.40 withdrawn after graceful shutdown",
        Duration::from_secs(5),
        || !frr.has_route("192.0.2.40/32"),
        || diag(speak.log()),
    );
    let log = std::fs::read_to_string(dir.path().join("bgpd.log")).unwrap_or_default();
    assert!(
        log.to_lowercase().contains("administrative shutdown")
            || log.contains("6/2")
            || frr
                .vtysh("show bgp neighbors 10.0.3.2")
                .contains("Administrative Shutdown"),
        "FRR saw the Cease / Administrative Shutdown: {}",
        frr.vtysh("show bgp neighbors 10.0.3.2")
    );
}
