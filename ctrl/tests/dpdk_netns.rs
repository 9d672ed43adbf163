//! The real `vipd` on a DPDK-owned port with the kernel exception path and an ARP-resolved
//! gateway, against a real BIRD 2.
//!
//! Two network namespaces joined by a veth pair. In the appliance namespace `vipd` runs the EAL
//! with `net_af_packet` on its veth end, which carries NO IP address; `[port.kernel]` makes vipd
//! create a `net_tap` TAP holding the appliance's address 10.0.0.1/24 and `gateway` makes it
//! resolve 10.0.0.2 by ARP through the dataplane. In the wire namespace the kernel owns 10.0.0.2
//! (the gateway, i.e. the top of rack) and BIRD 2 peers with vipd. The test proves:
//!
//! (a) `ping` from the wire namespace reaches the appliance's address through DPDK and the TAP;
//! (b) the gateway's MAC is resolved by ARP (`vipctl --json status` shows it, `resolved`);
//! (c) the BGP session from vipd to BIRD comes up over the DPDK port (the TAP's kernel TCP) and
//!     BIRD's RIB holds the VIP route;
//! (d) VIP traffic sent from the wire namespace comes back IP-in-IP encapsulated from the port's
//!     MAC to the resolved gateway MAC (Scapy checks every frame: dataplane/tests/scapy).
//!
//! A second scenario gives vipd a gateway nobody answers for: vipd still starts, reports the
//! next hop unresolved (status, metrics) and the dataplane unhealthy (so BGP would withdraw), and
//! drops VIP traffic as `no_next_hop` rather than sending it to a made-up MAC.
//!
//! A third gives the TAP the name of an existing interface: vipd exits 1 naming the TAP and the
//! fixes.
//!
//! The scenarios take one lock: each runs a busy-polling vipd, and the machine is small.
//!
//! Needs root, iproute2, BIRD 2 (`bird`, `birdc`), `ping` and Scapy for `/usr/bin/python3`;
//! skips (passes after saying why) otherwise.
#![cfg(feature = "dpdk")]

mod common;
#[path = "../../dataplane/tests/netns_common/mod.rs"]
mod netns_common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, missing_binary, request, vipctl_ok, wait_for, Bird, Proc, POLL, VIPD};
use netns_common::{run_in, AfpFlows, Wire};
use serde_json::{json, Value};

const APPLIANCE: &str = "10.0.0.1";
const GATEWAY: &str = "10.0.0.2";
const APPLIANCE6: &str = "fd00::1";
const GATEWAY6: &str = "fd00::2";
const VIP: &str = "203.0.113.10";
const BACKENDS: [&str; 3] = ["10.1.0.1", "10.1.0.2", "10.1.0.3"];

fn skip_reason() -> Option<String> {
    if let Some(why) = netns_common::missing_prerequisite() {
        return Some(why);
    }
    missing_binary(
        &["bird", "birdc", "ping", "curl"],
        "apt-get install bird2 iputils-ping curl",
    )
}

/// `ip addr add <cidr> dev <wire_if> <extra>` in the wire namespace.
fn wire_address(wire: &Wire, cidr: &str, extra: &[&str]) {
    let mut args = vec!["ip", "addr", "add", cidr, "dev", &wire.wire_if];
    args.extend_from_slice(extra);
    run_in(&wire.wire_ns, &args);
}

/// One vipd at a time (each busy-polls a CPU).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn vipd_config(
    dir: &Path,
    wire: &Wire,
    port_mac: &str,
    tap: &str,
    prefix: &str,
    gateway: &str,
) -> PathBuf {
    let mut eal = dpdk::virtual_device_args(prefix);
    eal.push(format!("--vdev=net_af_packet0,iface={}", wire.appliance_if));
    let eal: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
    let backends: String = BACKENDS
        .iter()
        .map(|b| format!("[[vip.backend]]\naddress = \"{b}\"\n"))
        .collect();
    let text = format!(
        r#"
[dataplane]
lcores = 1
flow_table_capacity = 4096
eal_args = [{eal}]

[[port]]
mac = "{port_mac}"
gateway = {gateway}

[port.kernel]
tap = "{tap}"
addresses = ["{APPLIANCE}/24", "{APPLIANCE6}/64"]

[admin]
socket = "{socket}"

[metrics]
address = "127.0.0.1:{metrics_port}"
{bgp}
[[vip]]
address = "{VIP}"
port = 80
protocol = "tcp"
encap_source_v4 = "{APPLIANCE}"
{backends}"#,
        eal = eal.join(", "),
        socket = dir.join("vipd.sock").display(),
        metrics_port = free_port(),
        bgp = common::vipd_bgp_toml(APPLIANCE, GATEWAY),
    );
    let path = dir.join("vipd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts vipd in the appliance namespace and waits for its admin socket.
fn start_vipd(wire: &Wire, config: &Path, socket: &Path, log: &Path) -> Proc {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &wire.appliance_ns,
        VIPD,
        "--drain-ms",
        "50",
        "--config",
    ])
    .arg(config);
    let mut vipd = Proc::spawn_logged(c, log);
    let diag = || std::fs::read_to_string(log).unwrap_or_default();
    wait_for(
        "vipd's admin socket",
        Duration::from_secs(30),
        POLL,
        &diag,
        || {
            if let Ok(Some(status)) = vipd.0.try_wait() {
                panic!("vipd exited with {status:?}:\n{}", diag());
            }
            UnixStream::connect(socket).ok()
        },
    );
    vipd
}

#[test]
fn vipd_peers_with_bird_over_a_dpdk_port_through_the_tap_with_an_arp_resolved_gateway() {
    common::skip_if!(skip_reason());
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let wire = Wire::new("vd", false);
    wire_address(&wire, &format!("{GATEWAY}/24"), &[]);
    let gateway_mac = Wire::mac(&wire.wire_ns, &wire.wire_if);
    let port_mac = Wire::mac(&wire.appliance_ns, &wire.appliance_if);
    let tap = format!("vt{}d", std::process::id());
    let prefix = format!("vipd-netns-{}", std::process::id());
    let _runtime_dir = dpdk::RuntimeDir::new(&prefix);
    // The gateway answers Neighbor Discovery too (IPv6 on the wire side only; no DAD delay).
    run_in(
        &wire.wire_ns,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=0", wire.wire_if),
        ],
    );
    wire_address(&wire, &format!("{GATEWAY6}/64"), &["nodad"]);
    let gateways = format!("[\"{GATEWAY}\", \"{GATEWAY6}\"]");
    let config = vipd_config(dir.path(), &wire, &port_mac, &tap, &prefix, &gateways);
    let socket = dir.path().join("vipd.sock");

    common::vipd_check(&config);

    // BIRD 2 in the wire namespace: the top of rack, peering with the appliance's address.
    let bird = Bird::start(&wire.wire_ns, dir.path(), GATEWAY, APPLIANCE);
    let birdc = |args: &[&str]| bird.birdc(args);

    // The real vipd in the appliance namespace (`ip netns exec` execs it: the pid is vipd's).
    let vipd_log = dir.path().join("vipd.log");
    let mut vipd = start_vipd(&wire, &config, &socket, &vipd_log);
    let diag = || {
        format!(
            "vipd log:\n{}\nbird:\n{}",
            std::fs::read_to_string(&vipd_log).unwrap_or_default(),
            birdc(&["show", "protocols", "all", "lb1"])
        )
    };

    // The DPDK-owned veth carries no address; the TAP holds the appliance's.
    let veth = run_in(
        &wire.appliance_ns,
        &["ip", "-4", "-o", "addr", "show", "dev", &wire.appliance_if],
    );
    assert!(veth.trim().is_empty(), "the veth carries no IP: {veth}");
    let tap_addr = run_in(
        &wire.appliance_ns,
        &["ip", "-o", "addr", "show", "dev", &tap],
    );
    assert!(
        tap_addr.contains(&format!("{APPLIANCE}/24"))
            && tap_addr.contains(&format!("{APPLIANCE6}/64")),
        "the TAP holds the appliance's addresses: {tap_addr}"
    );
    let tap_mac = Wire::mac(&wire.appliance_ns, &tap);
    assert_eq!(tap_mac, port_mac, "the TAP has the port's MAC");

    // (b) The gateway's MAC, learnt by ARP (and ND for the IPv6 gateway) through the dataplane.
    let ports = wait_for(
        "the gateway MAC resolved by ARP and ND",
        Duration::from_secs(20),
        POLL,
        &diag,
        || {
            let status: Value =
                serde_json::from_str(&vipctl_ok(&socket, &["--json", "status"])).unwrap();
            let ports = status["ports"].as_array().cloned().unwrap_or_default();
            (ports.len() == 2 && ports.iter().all(|p| p["next_hop"] == "resolved")).then_some(ports)
        },
    );
    for (port, gateway) in ports.iter().zip([GATEWAY, GATEWAY6]) {
        assert_eq!(port["port"], 0, "{port}");
        assert_eq!(port["gateway"], gateway, "{port}");
        assert_eq!(port["gateway_mac"], gateway_mac.as_str(), "{port}");
        assert_eq!(port["state"], "reachable", "{port}");
        assert_eq!(port["link_up"], true, "{port}");
        assert!(port["age_s"].as_f64().is_some_and(|a| a < 35.0), "{port}");
    }
    let human = vipctl_ok(&socket, &["status"]);
    assert!(
        human.contains(&gateway_mac) && human.contains("resolved (reachable)"),
        "vipctl status shows the next hop:\n{human}"
    );

    // (a) Ping the appliance's address through DPDK and the TAP.
    let ping = run_in(
        &wire.wire_ns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "3", APPLIANCE],
    );
    assert!(ping.contains("3 received"), "{ping}");
    let neigh = run_in(&wire.wire_ns, &["ip", "neigh", "show", APPLIANCE]);
    assert!(neigh.contains(&port_mac), "the TAP answered ARP: {neigh}");
    let ping6 = run_in(
        &wire.wire_ns,
        &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", APPLIANCE6],
    );
    assert!(ping6.contains("3 received"), "{ping6}");

    // (c) BGP over the DPDK port: BIRD's session is up and its RIB holds the VIP.
    wait_for(
        "the VIP route in BIRD's RIB",
        Duration::from_secs(30),
        POLL,
        &diag,
        || {
            let route = birdc(&["show", "route", &format!("{VIP}/32")]);
            route.contains(&format!("{VIP}/32")).then_some(())
        },
    );
    let protocols = birdc(&["show", "protocols", "lb1"]);
    assert!(protocols.contains("Established"), "{protocols}");
    let status = request(&socket, "status", json!({}));
    assert_eq!(status["result"]["dataplane_healthy"], true, "{status}");

    // (d) VIP traffic from the wire comes back encapsulated to the resolved gateway MAC.
    let v = wire.afp_flows(&AfpFlows {
        port_mac: &port_mac,
        gateway_mac: &gateway_mac,
        vip: VIP,
        encap_src: APPLIANCE,
        backends: &BACKENDS,
        flows: 16,
    });
    let verdict = v.to_string();
    assert_eq!(v["bad"], json!([]), "{verdict}");
    assert_eq!(v["flows_seen"], 16, "{verdict}");
    let stats = request(&socket, "stats", json!({}));
    assert_eq!(stats["result"]["drops"]["no_next_hop"], 0, "{stats}");

    let log = std::fs::read_to_string(&vipd_log).unwrap_or_default();
    // vipd waits for the gateway before serving: the next hop is known before anything is
    // announced.
    let resolved_at = log
        .find("next hop resolved")
        .expect("the resolution is logged");
    let announced_at = log
        .find("BGP: announce")
        .expect("the announcement is logged");
    assert!(resolved_at < announced_at, "{log}");
    assert!(log.contains("kernel exception path up"), "{log}");

    // SIGTERM: graceful BGP shutdown, exit 0.
    vipd.signal(libc::SIGTERM);
    let exit = vipd.wait_exit("vipd to exit on SIGTERM", Duration::from_secs(20), &diag);
    assert!(exit.success(), "{exit:?}\n{}", diag());
    // BIRD handles the withdrawal and the session's close asynchronously: give it a moment.
    wait_for(
        "BIRD to drop the VIP route after vipd's graceful shutdown",
        Duration::from_secs(5),
        Duration::from_millis(50),
        &|| birdc(&["show", "route", &format!("{VIP}/32")]),
        || {
            (!birdc(&["show", "route", &format!("{VIP}/32")]).contains(&format!("{VIP}/32")))
                .then_some(())
        },
    );
    let log = std::fs::read_to_string(&vipd_log).unwrap_or_default();
    assert!(!log.contains("took over 10 s"), "{log}");
    eprintln!("dpdk_netns: {:?}", started.elapsed());
}

#[test]
fn an_unanswered_gateway_leaves_the_next_hop_unresolved_the_dataplane_unhealthy_and_drops_counted()
{
    common::skip_if!(skip_reason());
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wire = Wire::new("vu", false);
    // The wire side owns 10.0.0.2; the configured gateway 10.0.0.9 does not exist.
    wire_address(&wire, &format!("{GATEWAY}/24"), &[]);
    let port_mac = Wire::mac(&wire.appliance_ns, &wire.appliance_if);
    let tap = format!("vt{}u", std::process::id());
    let prefix = format!("vipd-netns-u-{}", std::process::id());
    let _runtime_dir = dpdk::RuntimeDir::new(&prefix);
    let config = vipd_config(dir.path(), &wire, &port_mac, &tap, &prefix, "\"10.0.0.9\"");
    let socket = dir.path().join("vipd.sock");
    let log = dir.path().join("vipd.log");
    let _vipd = start_vipd(&wire, &config, &socket, &log);
    let diag = || std::fs::read_to_string(&log).unwrap_or_default();

    let status = request(&socket, "status", json!({}))["result"].clone();
    let port = &status["ports"][0];
    assert_eq!(port["gateway"], "10.0.0.9", "{status}");
    assert_eq!(port["next_hop"], "unresolved", "{status}");
    assert_eq!(port["state"], "incomplete", "{status}");
    assert_eq!(port["gateway_mac"], Value::Null, "{status}");
    // Checked at once at start: unhealthy, so nothing is announced through this port.
    assert_eq!(status["dataplane_healthy"], false, "{status}");
    assert_eq!(
        status["dataplane_problem"],
        "port 0: next hop unresolved: no ARP/ND answer from gateway 10.0.0.9",
        "{status}"
    );
    let human = vipctl_ok(&socket, &["status"]);
    assert!(
        human.contains("UNHEALTHY") && human.contains("unresolved (incomplete)"),
        "{human}"
    );
    let log_text = diag();
    assert!(
        log_text.contains("the gateway has not answered ARP/ND yet"),
        "{log_text}"
    );
    // Unhealthy from the start: the VIP is never announced (the speaker only withdraws).
    assert!(
        log_text.contains("dataplane unhealthy: VIPs will be withdrawn"),
        "{log_text}"
    );
    assert!(!log_text.contains("BGP: announce"), "{log_text}");

    // The exception path works regardless (the kernel does its own ARP for 10.0.0.2).
    let ping = run_in(
        &wire.wire_ns,
        &["ping", "-c", "2", "-i", "0.2", "-W", "3", APPLIANCE],
    );
    assert!(ping.contains("2 received"), "{ping}");

    // VIP traffic: counted no_next_hop drops, nothing encapsulated leaves.
    let send = format!(
        "import time\nfrom scapy.all import *\nconf.verb = 0\n\
         f = [Ether(dst='{port_mac}')/IP(src='198.18.0.1', dst='{VIP}')/TCP(sport=20000 + i, dport=80, flags='S') for i in range(8)]\n\
         s = AsyncSniffer(iface='{iface}', lfilter=lambda p: IP in p and p[IP].proto == 4)\n\
         s.start(); time.sleep(0.5)\n\
         sendp(f, iface='{iface}', inter=0.01)\n\
         time.sleep(0.5)\n\
         print(len(s.stop()))\n",
        iface = wire.wire_if
    );
    let encapsulated = run_in(&wire.wire_ns, &["/usr/bin/python3", "-c", &send]);
    assert_eq!(encapsulated.trim(), "0", "nothing goes to a made-up MAC");
    let drops = wait_for(
        "no_next_hop drops",
        Duration::from_secs(5),
        POLL,
        &diag,
        || {
            let stats = request(&socket, "stats", json!({}));
            let n = stats["result"]["drops"]["no_next_hop"].as_u64()?;
            (n >= 8).then_some(n)
        },
    );
    assert_eq!(drops, 8);

    // The metrics say the same.
    let config_text = std::fs::read_to_string(&config).unwrap();
    let metrics = config_text
        .lines()
        .find_map(|l| l.strip_prefix("address = \"127.0.0.1:"))
        .and_then(|a| a.strip_suffix('"'))
        .unwrap()
        .to_string();
    // vipd serves them on the appliance namespace's loopback.
    let body = run_in(
        &wire.appliance_ns,
        &[
            "curl",
            "-sf",
            &format!("http://127.0.0.1:{metrics}/metrics"),
        ],
    );
    assert!(
        body.contains("vipd_port_next_hop_resolved{port=\"0\",gateway=\"10.0.0.9\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("vipd_drops_total{reason=\"no_next_hop\"} 8"),
        "{body}"
    );
}

/// A TAP name that is already an interface: vipd exits 1 with an error naming the TAP and the
/// fixes, instead of running without an exception path.
#[test]
fn a_taken_tap_name_is_a_clear_start_up_error() {
    common::skip_if!(skip_reason());
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wire = Wire::new("vt", false);
    let tap = format!("vt{}t", std::process::id());
    run_in(
        &wire.appliance_ns,
        &[
            "ip",
            "link",
            "add",
            &tap,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{tap}p"),
        ],
    );
    let port_mac = Wire::mac(&wire.appliance_ns, &wire.appliance_if);
    let prefix = format!("vipd-netns-t-{}", std::process::id());
    let _runtime_dir = dpdk::RuntimeDir::new(&prefix);
    let config = vipd_config(
        dir.path(),
        &wire,
        &port_mac,
        &tap,
        &prefix,
        &format!("\"{GATEWAY}\""),
    );
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &wire.appliance_ns, VIPD, "--config"])
        .arg(&config);
    let log = dir.path().join("vipd.log");
    let mut vipd = Proc::spawn_logged(c, &log);
    let diag = || std::fs::read_to_string(&log).unwrap_or_default();
    let exit = vipd.wait_exit("vipd to refuse to start", Duration::from_secs(30), &diag);
    assert_eq!(exit.code(), Some(1), "{}", diag());
    let text = diag();
    assert!(
        text.contains(&format!(
            "the kernel exception path's TAP {tap:?} was not created"
        )) && text.contains("is the name free"),
        "{text}"
    );
}
