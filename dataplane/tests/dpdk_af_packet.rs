//! The engine over `net_af_packet` on a veth pair between two network namespaces, with real
//! traffic from the kernel side: Scapy sends through the kernel's veth in the wire namespace, a
//! child process runs the EAL and a 2-lcore engine on the other end (`qpairs=2`), and Scapy
//! checks what comes back.
//!
//! How flows reach lcores here: `net_af_packet` has no RSS (the port reports no hash offloads, so
//! `RssMode::Auto` configures it without); each queue pair is an AF_PACKET socket and the PMD
//! joins them in one `PACKET_FANOUT_HASH` group, so the kernel picks the queue by the packet's
//! flow hash, which it computes symmetrically (`__skb_get_hash_symmetric`). The test proves what
//! that gives: both lcores get traffic and both directions of every flow land on one lcore.
//!
//! Skips (passes after saying why) when not root or Scapy / iproute2 is missing.
#![cfg(feature = "dpdk")]

mod dpdk_common;
mod netns_common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataplane::dpdk_io::{lcore_port_config, leak_mempool, start_port, DpdkIo, DpdkPacket};
use dataplane::rss::RssMode;
use dataplane::testing::{backend, vip};
use dataplane::{
    BackendState, Burst, Engine, ForwardingMode, PacketIo, Port, Tables, TablesHandle,
};
use netns_common::{AfpFlows, ApplianceChild, Wire};
use wire::EthernetAddress;

const VIP: &str = "203.0.113.10";
const BACKENDS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const ENCAP_SOURCE: &str = "192.0.2.1";
const FLOWS: usize = 64;
const CHILD_ENV: &str = "VIPD_AFP_CHILD";

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

/// `(lcore, first bytes)` of each received frame.
type RxLog = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

/// A [`PacketIo`] that logs `(lcore, first bytes)` of every frame it receives (test only: it
/// locks and allocates on the packet path).
struct Recording {
    inner: DpdkIo,
    lcore: u16,
    log: RxLog,
}

impl PacketIo for Recording {
    type Packet = DpdkPacket;

    fn rx_burst(
        &mut self,
        port: u16,
        queue: u16,
        out: &mut Burst<DpdkPacket>,
        max: usize,
    ) -> usize {
        let before = out.len();
        let n = self.inner.rx_burst(port, queue, out, max);
        let mut log = self.log.lock().unwrap();
        for p in &out.as_slice()[before..] {
            let d = p.data();
            log.push((self.lcore, d[..d.len().min(64)].to_vec()));
        }
        n
    }

    fn tx_burst(&mut self, port: u16, queue: u16, packets: &mut Burst<DpdkPacket>) -> usize {
        self.inner.tx_burst(port, queue, packets)
    }

    fn to_kernel(&mut self, queue: u16, packets: &mut Burst<DpdkPacket>) -> usize {
        self.inner.to_kernel(queue, packets)
    }
}

/// The IPv4/TCP 5-tuple of a logged frame, if it is one.
fn tcp_tuple(frame: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16)> {
    if frame.len() < 14 + 20 + 4 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let ip = &frame[14..];
    let l4 = frame.get(14 + ihl..14 + ihl + 4)?;
    Some((
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        u16::from_be_bytes([l4[0], l4[1]]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

/// The appliance side (runs in the child process, in the appliance namespace): EAL with
/// `net_af_packet` on the veth, `qpairs=2`, a 2-lcore engine, until the parent closes stdin; then
/// prints what each lcore received.
#[test]
fn appliance_child() {
    let Ok(iface) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of `af_packet_two_lcores_...` below
    };
    let gateway = parse_mac(&std::env::var("VIPD_AFP_GW").expect("gateway MAC"));
    let vdev = format!("--vdev=net_af_packet0,iface={iface},qpairs=2");
    let (eal, _dir) = dpdk_common::eal("afp", &[&vdev]);
    let pool =
        leak_mempool(eal, "afp_pool", 4095, 0, dpdk::Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    let port_id = eal.port_by_name("net_af_packet0").expect("af_packet port");
    let config = lcore_port_config(2, RssMode::Auto);
    let queues = start_port(pool, port_id, &config).expect("start the af_packet port");
    assert_eq!(queues.len(), 2);
    let mac = Wire::mac_of_local(&iface);

    let v = vip(
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
    let ports = vec![
        Port {
            mac: EthernetAddress(mac),
            gateway_mac: EthernetAddress(gateway),
            mtu: 1500,
            vlan: None,
        };
        usize::from(port_id) + 1
    ];
    let mut v = v;
    v.egress_port = port_id;
    let tables = Tables::build(ports, &[v]).expect("tables");

    let log = Arc::new(Mutex::new(Vec::new()));
    let mut ios: Vec<Option<DpdkIo>> = dataplane::dpdk_io::lcore_ios(vec![queues])
        .expect("lcore ios")
        .into_iter()
        .map(Some)
        .collect();
    let config = netns_common::two_lcore_config(port_id);
    let engine = Engine::start(
        config,
        |q| Recording {
            inner: ios[usize::from(q)].take().expect("one io per lcore"),
            lcore: q,
            log: Arc::clone(&log),
        },
        TablesHandle::new(tables),
    )
    .expect("engine");
    println!("READY {}", hex_mac(&mac));
    netns_common::wait_for_stop();
    let report = engine.stop().expect("engine stops");
    for (lcore, frame) in log.lock().unwrap().iter() {
        if let Some((s, sp, d, dp)) = tcp_tuple(frame) {
            println!("RX {lcore} {s} {sp} {d} {dp}");
        }
    }
    let t = report.total;
    println!(
        "STATS rx={} tx={} kernel={} dropped={} unaccounted={}",
        t.rx_packets,
        t.tx_packets,
        t.kernel_packets,
        t.dropped,
        t.unaccounted()
    );
}

fn hex_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

trait LocalMac {
    fn mac_of_local(iface: &str) -> [u8; 6];
}

impl LocalMac for Wire {
    /// The MAC of an interface in this process's namespace.
    fn mac_of_local(iface: &str) -> [u8; 6] {
        let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
            .expect("interface MAC");
        parse_mac(&s)
    }
}

#[test]
fn af_packet_two_lcores_get_traffic_and_both_directions_of_a_flow_meet() {
    if let Some(why) = netns_common::missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    let wire = Wire::new("p", false);
    let gateway = Wire::mac(&wire.wire_ns, &wire.wire_if);
    let mut child = ApplianceChild::spawn(
        &wire.appliance_ns,
        "appliance_child",
        &[
            (CHILD_ENV, wire.appliance_if.clone()),
            ("VIPD_AFP_GW", gateway.clone()),
        ],
    );
    let port_mac = child.expect_line("READY", Duration::from_secs(30));
    let v = wire.afp_flows(&AfpFlows {
        port_mac: &port_mac,
        gateway_mac: &gateway,
        vip: VIP,
        encap_src: ENCAP_SOURCE,
        backends: &BACKENDS,
        flows: FLOWS,
    });
    let verdict = v.to_string();
    let lines = child.finish(Duration::from_secs(30));
    assert_eq!(v["bad"], serde_json::json!([]), "{verdict}");
    assert_eq!(v["encapsulated"], FLOWS, "{verdict}");
    assert_eq!(v["flows_seen"], FLOWS, "{verdict}");
    assert_eq!(v["backends_used"].as_array().map(Vec::len), Some(3));

    // Which lcore received each direction of each flow.
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let mut fwd: HashMap<(Ipv4Addr, u16), HashSet<u16>> = HashMap::new();
    let mut rev: HashMap<(Ipv4Addr, u16), HashSet<u16>> = HashMap::new();
    let mut per_lcore = [0usize; 2];
    for line in &lines {
        let Some(rest) = line.strip_prefix("RX ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let lcore: u16 = f[0].parse().unwrap();
        let (s, sp, d, dp): (Ipv4Addr, u16, Ipv4Addr, u16) = (
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        );
        if d == vip && dp == 80 {
            fwd.entry((s, sp)).or_default().insert(lcore);
        } else if s == vip && sp == 80 {
            rev.entry((d, dp)).or_default().insert(lcore);
        } else {
            continue;
        }
        per_lcore[usize::from(lcore)] += 1;
    }
    let stats = lines
        .iter()
        .find(|l| l.starts_with("STATS"))
        .expect("child stats");
    eprintln!("{stats}; frames per lcore {per_lcore:?}");
    assert_eq!(fwd.len(), FLOWS, "every forward frame was received");
    assert_eq!(rev.len(), FLOWS, "every reverse frame was received");
    assert!(
        per_lcore.iter().all(|&n| n > 0),
        "both lcores get traffic: {per_lcore:?}"
    );
    for (flow, lcores) in &fwd {
        assert_eq!(lcores.len(), 1, "flow {flow:?} on one lcore");
        assert_eq!(
            rev.get(flow),
            Some(lcores),
            "both directions of flow {flow:?} on the same lcore"
        );
    }
    assert!(stats.contains("unaccounted=0"), "{stats}");
}
