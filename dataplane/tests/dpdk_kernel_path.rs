//! The exception path and next-hop resolution on a DPDK-owned port, with real kernels on both
//! sides.
//!
//! Two namespaces joined by a veth pair. In the appliance namespace a child process runs the EAL
//! with `net_af_packet` on its veth end (which carries no IP address) and `net_tap`, whose kernel
//! interface holds the appliance's address 192.0.2.1/24 and the port's MAC; a 2-lcore engine
//! polls the veth, sends non-VIP frames into the TAP and relays what the kernel sends into the
//! TAP out of the veth; the neighbour service resolves the gateway 192.0.2.254 by ARP and
//! 2001:db8::fe by Neighbor Discovery through the dataplane and publishes its MAC. In the wire namespace the kernel owns 192.0.2.254 on the
//! other veth end and answers that ARP, `ping` and a TCP connection reach the appliance's
//! address through the DPDK port, and Scapy checks that VIP traffic leaves encapsulated to the
//! gateway MAC the dataplane learnt (the tables start with a placeholder MAC).
//!
//! Skips (passes after saying why) when not root or Scapy / iproute2 is missing; without `ping`
//! (iputils-ping) only the ping step is skipped.
#![cfg(feature = "dpdk")]

mod dpdk_common;
mod netns_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk_io::{lcore_ios, lcore_port_config, leak_mempool, start_port};
use dataplane::nexthop::{
    NeighborChannel, NeighborResolver, NeighborService, ResolverConfig, ResolverTimers,
};
use dataplane::rss::RssMode;
use dataplane::testing::{backend, vip};
use dataplane::{BackendState, Engine, ForwardingMode, Port, Tables, TablesHandle};
use netns_common::{run, run_in, AfpFlows, ApplianceChild, Wire};
use wire::EthernetAddress;

const VIP: &str = "203.0.113.10";
const BACKENDS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const APPLIANCE_IP: &str = "192.0.2.1";
const GATEWAY_IP: &str = "192.0.2.254";
const APPLIANCE_IP6: &str = "2001:db8::1";
const GATEWAY_IP6: &str = "2001:db8::fe";
const PLACEHOLDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0];
const ECHO_PORT: u16 = 7777;
const CHILD_ENV: &str = "VIPD_KP_CHILD";

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

fn hex_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A TCP echo server on the appliance's address (held by the TAP), for the parent's client.
fn echo_server() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind((APPLIANCE_IP, ECHO_PORT)) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind the echo server: {e}"),
        }
    };
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 256];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(&buf[..n]);
            }
        }
    });
}

/// The appliance side (the child process, in the appliance namespace).
#[test]
fn appliance_child() {
    let Ok(iface) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of the test below
    };
    let tap_if = std::env::var("VIPD_KP_TAP").expect("tap name");
    let mac =
        parse_mac(&std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).unwrap());
    let afp = format!("--vdev=net_af_packet0,iface={iface},qpairs=2");
    let tap = format!("--vdev=net_tap0,iface={tap_if}");
    let (eal, _dir) = dpdk_common::eal("kp", &[&afp, &tap]);
    let pool =
        leak_mempool(eal, "kp_pool", 8191, 0, dpdk::Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    let afp_id = eal.port_by_name("net_af_packet0").expect("af_packet port");
    let tap_id = eal.port_by_name("net_tap0").expect("tap port");
    let afp_queues = start_port(pool, afp_id, &lcore_port_config(2, RssMode::Auto)).expect("afp");
    let tap_queues = start_port(pool, tap_id, &lcore_port_config(2, RssMode::Off)).expect("tap");

    // The TAP is the appliance's kernel interface: the port's MAC and the appliance's address.
    run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{tap_if}.disable_ipv6=1"),
    ]);
    run(&["ip", "link", "set", &tap_if, "address", &hex_mac(&mac)]);
    run(&[
        "ip",
        "addr",
        "add",
        &format!("{APPLIANCE_IP}/24"),
        "dev",
        &tap_if,
    ]);
    run(&["ip", "link", "set", &tap_if, "up"]);

    let mut v = vip(
        0,
        VIP,
        80,
        6,
        ForwardingMode::Ipip,
        BACKENDS
            .iter()
            .enumerate()
            .map(|(i, a)| backend(i as u16, a, BackendState::Active))
            .collect(),
    );
    v.egress_port = afp_id;
    let ports = vec![
        Port {
            mac: EthernetAddress(mac),
            gateway_mac: EthernetAddress(PLACEHOLDER_MAC),
            mtu: 1500,
            vlan: None,
        };
        usize::from(afp_id.max(tap_id)) + 1
    ];
    let tables = TablesHandle::new(Tables::build(ports, &[v]).expect("tables"));

    let channel = Arc::new(NeighborChannel::new(64));
    let resolver = NeighborResolver::new(ResolverConfig {
        gateway: GATEWAY_IP.parse().unwrap(),
        source_ip: APPLIANCE_IP.parse().unwrap(),
        source_mac: EthernetAddress(mac),
        timers: ResolverTimers {
            retry_ms: 200,
            ..ResolverTimers::default()
        },
    })
    .expect("resolver");
    let resolver6 = NeighborResolver::new(ResolverConfig {
        gateway: GATEWAY_IP6.parse().unwrap(),
        source_ip: APPLIANCE_IP6.parse().unwrap(),
        source_mac: EthernetAddress(mac),
        timers: ResolverTimers {
            retry_ms: 200,
            ..ResolverTimers::default()
        },
    })
    .expect("IPv6 resolver");
    let stop = Arc::new(AtomicBool::new(false));
    let service = NeighborService::new(resolver, Arc::clone(&channel), tables.clone(), afp_id)
        .with_resolver(resolver6, afp_id)
        .spawn(Duration::from_millis(5), Arc::clone(&stop))
        .expect("neighbour thread");

    let mut ios: Vec<_> = lcore_ios(vec![afp_queues])
        .expect("lcore ios")
        .into_iter()
        .zip(tap_queues)
        .map(|(io, tap)| {
            Some(io.with_kernel_path(tap, afp_id).with_neighbors(
                Arc::clone(&channel),
                pool,
                afp_id,
            ))
        })
        .collect();
    let io_stats: Vec<_> = ios.iter().flatten().map(|io| io.stats()).collect();
    let config = netns_common::two_lcore_config(afp_id);
    let engine = Engine::start(
        config,
        |q| ios[usize::from(q)].take().expect("one io per lcore"),
        tables.clone(),
    )
    .expect("engine");
    echo_server();

    let deadline = Instant::now() + Duration::from_secs(10);
    let resolved = loop {
        let gw = tables.current().port(afp_id).expect("port").gateway_mac.0;
        if gw != PLACEHOLDER_MAC {
            break gw;
        }
        assert!(Instant::now() < deadline, "the gateway was never resolved");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("RESOLVED {}", hex_mac(&resolved));
    println!("READY {}", hex_mac(&mac));

    netns_common::wait_for_stop();
    let report = engine.stop().expect("engine stops");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let service = service.join().expect("neighbour thread");
    let sum = |f: fn(&dataplane::dpdk_io::DpdkIoStats) -> u64| -> u64 {
        io_stats.iter().map(|s| f(s)).sum()
    };
    for (resolver, _) in service.resolvers() {
        let mac = resolver.mac().map_or("none".to_string(), |m| hex_mac(&m.0));
        println!("NEIGH {} {mac}", resolver.gateway());
    }
    let t = report.total;
    println!(
        "STATS rx={} tx={} kernel={} kernel_dropped={} from_kernel={} from_kernel_dropped={} \
         neighbor_sent={} published={} unaccounted={}",
        t.rx_packets,
        t.tx_packets,
        t.kernel_packets,
        t.kernel_dropped,
        sum(|s| s.from_kernel()),
        sum(|s| s.from_kernel_dropped()),
        sum(|s| s.neighbor_sent()),
        service.published(),
        t.unaccounted()
    );
}

fn stat(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

#[test]
fn kernel_path_and_arp_resolved_gateway_over_a_dpdk_port() {
    if let Some(why) = netns_common::missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    let have_ping = std::process::Command::new("ping")
        .arg("-V")
        .output()
        .is_ok();
    let wire = Wire::new("k", false);
    run_in(
        &wire.wire_ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{GATEWAY_IP}/24"),
            "dev",
            &wire.wire_if,
        ],
    );
    // The gateway answers Neighbor Discovery too (IPv6 on the wire side only; no DAD delay).
    run_in(
        &wire.wire_ns,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=0", wire.wire_if),
        ],
    );
    run_in(
        &wire.wire_ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{GATEWAY_IP6}/64"),
            "dev",
            &wire.wire_if,
            "nodad",
        ],
    );
    let gateway_mac = Wire::mac(&wire.wire_ns, &wire.wire_if);
    let tap_if = format!("vt{}k", std::process::id());
    let mut child = ApplianceChild::spawn(
        &wire.appliance_ns,
        "appliance_child",
        &[
            (CHILD_ENV, wire.appliance_if.clone()),
            ("VIPD_KP_TAP", tap_if),
        ],
    );
    let resolved = child.expect_line("RESOLVED", Duration::from_secs(30));
    assert_eq!(
        resolved, gateway_mac,
        "the gateway MAC learnt by ARP through DPDK"
    );
    let port_mac = child.expect_line("READY", Duration::from_secs(10));

    // The DPDK-owned veth end has no address: everything below goes through the TAP.
    let addrs = run_in(
        &wire.appliance_ns,
        &["ip", "-4", "-o", "addr", "show", "dev", &wire.appliance_if],
    );
    assert!(addrs.trim().is_empty(), "the veth carries no IP: {addrs}");

    if have_ping {
        let ping = run_in(
            &wire.wire_ns,
            &["ping", "-c", "3", "-i", "0.2", "-W", "3", APPLIANCE_IP],
        );
        assert!(ping.contains("3 received"), "{ping}");
    } else {
        eprintln!("ping (iputils-ping) is not installed: the ping step is skipped");
    }

    let client = format!(
        "import socket\ns = socket.create_connection(('{APPLIANCE_IP}', {ECHO_PORT}), timeout=5)\n\
         s.sendall(b'vipd exception path')\nprint(s.recv(100).decode())\n"
    );
    let echo = run_in(&wire.wire_ns, &["/usr/bin/python3", "-c", &client]);
    assert_eq!(echo.trim(), "vipd exception path");

    // The neighbour entry the wire's kernel made for the appliance is the port's MAC (the TAP's
    // ARP reply left through DPDK).
    let neigh = run_in(&wire.wire_ns, &["ip", "neigh", "show", APPLIANCE_IP]);
    assert!(neigh.contains(&port_mac), "{neigh}");

    let v = wire.afp_flows(&AfpFlows {
        port_mac: &port_mac,
        gateway_mac: &gateway_mac,
        vip: VIP,
        encap_src: "192.0.2.1",
        backends: &BACKENDS,
        flows: 16,
    });
    let verdict = v.to_string();
    assert_eq!(v["bad"], serde_json::json!([]), "{verdict}");
    assert_eq!(v["flows_seen"], 16, "{verdict}");

    let lines = child.finish(Duration::from_secs(30));
    let stats = lines
        .iter()
        .find(|l| l.contains("STATS"))
        .expect("child stats");
    eprintln!("{stats}");
    let expected_from_kernel = if have_ping { 5 } else { 3 };
    assert!(
        stat(stats, "from_kernel") >= expected_from_kernel,
        "ping replies, TCP, ARP: {stats}"
    );
    assert!(stat(stats, "neighbor_sent") >= 1, "{stats}");
    // Both gateways resolved through the dataplane, ARP for IPv4 and ND for IPv6, each a new
    // MAC for its resolver: one publish each.
    for gateway in [GATEWAY_IP, GATEWAY_IP6] {
        let line = format!("NEIGH {gateway} {gateway_mac}");
        assert!(
            lines.iter().any(|l| l.contains(&line)),
            "{line} in {lines:?}"
        );
    }
    assert_eq!(stat(stats, "published"), 2, "{stats}");
    assert_eq!(stat(stats, "unaccounted"), 0, "{stats}");
    assert_eq!(stat(stats, "kernel_dropped"), 0, "{stats}");
}
