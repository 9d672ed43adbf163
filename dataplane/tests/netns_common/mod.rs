//! Network namespaces, veth pairs and child processes for the DPDK tests that need real kernel
//! traffic (`net_af_packet`, `net_tap`).
//!
//! A test makes two namespaces joined by a veth pair: the *wire* namespace, where Scapy (Debian's
//! `/usr/bin/python3`) and the kernel play the other hosts, and the *appliance* namespace, where a
//! child process (this same test binary, re-run under `ip netns exec` with `--exact`) runs the EAL
//! and the engine on its end of the pair. One EAL per process, so every scenario gets its own
//! child. Everything is named after the test's pid and a tag and removed on drop; the child is
//! killed by pid on drop.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Why a test cannot run here (it then passes after printing this), or `None`.
pub fn missing_prerequisite() -> Option<String> {
    // SAFETY-free check: /proc/self/status says the effective uid.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !euid_root {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    if !ok(Command::new("ip").arg("-V")) {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if !ok(Command::new("/usr/bin/python3").args(["-c", "import scapy.all"])) {
        return Some("Scapy is not installed for /usr/bin/python3 (apt python3-scapy)".into());
    }
    None
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command and panics with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args` inside namespace `ns`.
pub fn run_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// Two namespaces and a veth pair between them; deleted on drop.
pub struct Wire {
    /// The appliance's namespace (DPDK runs here).
    pub appliance_ns: String,
    /// The other hosts' namespace (Scapy and the kernel run here).
    pub wire_ns: String,
    /// The veth end in the appliance namespace (DPDK's `iface`), without an IP address.
    pub appliance_if: String,
    /// The veth end in the wire namespace.
    pub wire_if: String,
}

impl Wire {
    /// Creates `vipd-<tag>-<pid>-{a,w}` joined by veth `va<pid><tag>` / `vw<pid><tag>` (tag: one
    /// or two characters), both up, IPv6 off (no autoconfiguration noise) unless `ipv6`.
    pub fn new(tag: &str, ipv6: bool) -> Wire {
        let pid = std::process::id();
        let wire = Wire {
            appliance_ns: format!("vipd-{tag}-{pid}-a"),
            wire_ns: format!("vipd-{tag}-{pid}-w"),
            appliance_if: format!("va{pid}{tag}"),
            wire_if: format!("vw{pid}{tag}"),
        };
        assert!(wire.appliance_if.len() <= 15, "interface name too long");
        run(&["ip", "netns", "add", &wire.appliance_ns]);
        run(&["ip", "netns", "add", &wire.wire_ns]);
        run(&[
            "ip",
            "link",
            "add",
            &wire.appliance_if,
            "netns",
            &wire.appliance_ns,
            "type",
            "veth",
            "peer",
            "name",
            &wire.wire_if,
            "netns",
            &wire.wire_ns,
        ]);
        for (ns, iface) in [
            (&wire.appliance_ns, &wire.appliance_if),
            (&wire.wire_ns, &wire.wire_if),
        ] {
            let v6 = if ipv6 { "0" } else { "1" };
            run_in(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{iface}.disable_ipv6={v6}"),
                ],
            );
            run_in(ns, &["ip", "link", "set", iface, "up"]);
            run_in(ns, &["ip", "link", "set", "lo", "up"]);
        }
        wire
    }

    /// The MAC address of `iface` in `ns`.
    pub fn mac(ns: &str, iface: &str) -> String {
        run_in(ns, &["cat", &format!("/sys/class/net/{iface}/address")])
            .trim()
            .to_string()
    }

    /// Runs a Scapy script (a file next to the tests) in the wire namespace with `args` and
    /// returns its stdout (the script prints one JSON line last).
    pub fn scapy(&self, script: &str, args: &[&str]) -> String {
        // Through the workspace root: ctrl's tests include this module too.
        let path = format!(
            "{}/../dataplane/tests/scapy/{script}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut all = vec!["/usr/bin/python3", path.as_str()];
        all.extend_from_slice(args);
        run_in(&self.wire_ns, &all)
    }

    /// Sends `flows.flows` VIP flows from the wire with `afp_flows.py` and returns its verdict
    /// (the JSON line it prints last: `bad`, `encapsulated`, `flows_seen`, `backends_used`, ...).
    pub fn afp_flows(&self, flows: &AfpFlows) -> serde_json::Value {
        let count = flows.flows.to_string();
        let backends = flows.backends.join(",");
        let out = self.scapy(
            "afp_flows.py",
            &[
                "--iface",
                &self.wire_if,
                "--port-mac",
                flows.port_mac,
                "--gateway-mac",
                flows.gateway_mac,
                "--vip",
                flows.vip,
                "--encap-src",
                flows.encap_src,
                "--backends",
                &backends,
                "--flows",
                &count,
            ],
        );
        let verdict = out.lines().last().unwrap_or_default();
        eprintln!("scapy: {verdict}");
        serde_json::from_str(verdict).expect("scapy's JSON line")
    }
}

/// What `afp_flows.py` sends and expects back: VIP flows in, IPIP frames from `port_mac` to
/// `gateway_mac` with `encap_src` as the outer source, towards one of `backends`.
pub struct AfpFlows<'a> {
    pub port_mac: &'a str,
    pub gateway_mac: &'a str,
    pub vip: &'a str,
    pub encap_src: &'a str,
    pub backends: &'a [&'a str],
    pub flows: usize,
}

impl Drop for Wire {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.appliance_ns, &self.wire_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The child process running the appliance side; killed (by pid) and reaped on drop.
pub struct ApplianceChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ApplianceChild {
    /// Re-runs this test binary's test `entry` in namespace `ns` with `env`; the child reads its
    /// parameters from the environment and talks line by line on stdout.
    pub fn spawn(ns: &str, entry: &str, env: &[(&str, String)]) -> ApplianceChild {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the appliance child");
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ApplianceChild {
            child,
            stdin,
            lines,
        }
    }

    /// Waits for a line containing `prefix` (other lines are echoed) and returns the rest.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // The test harness's "test name ... " has no newline before our output.
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].trim().to_string();
                    }
                    eprintln!("child: {line}");
                }
                Err(e) => panic!("the appliance child never printed {prefix:?}: {e:?}"),
            }
        }
    }

    /// Sends a line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Closes the child's stdin (its cue to stop) and collects every line until it exits.
    pub fn finish(mut self, timeout: Duration) -> Vec<String> {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the appliance child hung"),
            }
        }
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "the appliance child failed: {status}");
        out
    }
}

impl Drop for ApplianceChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In the child: blocks until the parent closes stdin (or sends `stop`).
pub fn wait_for_stop() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line {
            Ok(l) if l.trim() == "stop" => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The engine config of the namespace tests: two lcores polling `port`, backing off quickly when
/// idle (the machine's two CPUs are shared with the kernel side), a small flow table.
pub fn two_lcore_config(port: u16) -> dataplane::EngineConfig {
    let mut config = dataplane::EngineConfig {
        lcores: 2,
        ports: vec![port],
        idle: dataplane::IdlePolicy {
            spin_polls: 64,
            sleep_us: 100,
        },
        ..dataplane::EngineConfig::default()
    };
    config.pipeline.flow_table.capacity = 4096;
    config
}
