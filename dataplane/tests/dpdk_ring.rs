//! The engine over real DPDK, no NIC: two `net_ring` ports wired back to back, the engine (one
//! lcore, [`DpdkIo`]) polling one of them and the test playing the wire on the other. Every VIP
//! frame must come back IPIP-encapsulated to one of the VIP's backends with the client's packet
//! unchanged inside, the rest must be counted as kernel or drop, the figures must add up, and
//! every mbuf must be back in its pool at the end.
//!
//! One EAL per process, so this file holds one test.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::dpdk_io::{leak_mempool, start_port, DpdkIo};
use dataplane::testing::{backend, port, vip, FrameSpec, GATEWAY_MAC, PORT_MAC};
use dataplane::{
    BackendState, DropReason, Engine, EngineConfig, ForwardingMode, IdlePolicy, Tables,
    TablesHandle,
};
use dpdk::{Mbuf, PortConfig, PortQueue};

const BURST: usize = 32;
const VIP: &str = "203.0.113.10";
const BACKENDS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tables(engine_port: u16) -> Tables {
    assert_eq!(engine_port, 0, "the first port created is port 0");
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
    Tables::build(vec![port(1500)], &[v]).unwrap()
}

/// What the test sends and what it expects to happen to each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Forward { flow: u16 },
    Kernel,
    Drop,
}

fn client(flow: u16) -> String {
    Ipv4Addr::new(198, 18, (flow >> 8) as u8, flow as u8).to_string()
}

fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&dataplane::testing::CLIENT_MAC);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0; 20]);
    frame
}

/// 100 flows x (SYN, ACK with payload) to the VIP, 60 TCP frames to other addresses and 20 ARP
/// requests (kernel), 15 VIP frames cut inside the TCP header and 15 with a corrupted IPv4
/// header checksum (drops), interleaved.
fn workload() -> Vec<(Vec<u8>, Expect)> {
    let mut frames = Vec::new();
    for flow in 0..100u16 {
        let src = client(flow);
        let sport = 20_000 + flow;
        frames.push((
            FrameSpec::tcp(&src, VIP, sport, 80, SYN).build(),
            Expect::Forward { flow },
        ));
        if flow % 5 == 0 {
            let port = if flow % 2 == 0 { 22 } else { 179 };
            frames.push((
                FrameSpec::tcp(&src, "198.51.100.7", sport, port, SYN).build(),
                Expect::Kernel,
            ));
            frames.push((arp(), Expect::Kernel));
        }
        if flow % 5 == 1 {
            frames.push((
                FrameSpec::tcp(&src, "198.51.100.7", sport, 443, ACK).build(),
                Expect::Kernel,
            ));
            frames.push((
                FrameSpec::tcp(&src, "198.51.100.8", sport, 443, ACK).build(),
                Expect::Kernel,
            ));
        }
        if flow % 20 == 3 || flow % 20 == 9 || flow % 20 == 13 {
            let mut cut = FrameSpec::tcp(&src, VIP, sport, 80, SYN).build();
            cut.truncate(14 + 20 + 10);
            frames.push((cut, Expect::Drop));
            let mut bad = FrameSpec::tcp(&src, VIP, sport, 80, ACK).build();
            bad[14 + 10] ^= 0x5a; // IPv4 header checksum
            frames.push((bad, Expect::Drop));
        }
        let mut ack = FrameSpec::tcp(&src, VIP, sport, 80, ACK);
        ack.payload_len = 100 + usize::from(flow);
        frames.push((ack.build(), Expect::Forward { flow }));
    }
    frames
}

/// Sends every frame on the peer port, in bursts of up to [`BURST`], retrying what a full ring
/// refuses.
fn send(peer: &mut PortQueue<'static>, pool: &'static dpdk::Mempool<'static>, frames: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for chunk in frames.chunks(BURST) {
        let mut out: [Option<Mbuf<'static>>; BURST] = std::array::from_fn(|_| None);
        for (slot, f) in out.iter_mut().zip(chunk) {
            *slot = Some(pool.alloc_frame(f).expect("an mbuf for each frame"));
        }
        while out.iter().any(Option::is_some) {
            assert!(Instant::now() < deadline, "the ring never drained");
            if peer.tx_burst(&mut out) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Receives on the peer until `want` frames arrived and then 200 ms more (to see extras).
fn receive(peer: &mut PortQueue<'static>, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut rx: [Option<Mbuf<'static>>; BURST] = std::array::from_fn(|_| None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_until = None;
    loop {
        let n = peer.rx_burst(&mut rx);
        got.extend(
            rx[..n]
                .iter_mut()
                .map(|m| m.take().expect("filled slot").data().to_vec()),
        );
        if got.len() >= want && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(200));
        }
        let now = Instant::now();
        if quiet_until.is_some_and(|t| now >= t) || now >= deadline {
            return got;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Checks an IPIP frame by its byte layout (independently of `wire`) and returns the outer
/// destination and the inner packet.
fn decap(frame: &[u8]) -> (Ipv4Addr, &[u8]) {
    assert!(frame.len() >= 14 + 20, "frame too short: {frame:02x?}");
    assert_eq!(&frame[0..6], &GATEWAY_MAC, "to the gateway");
    assert_eq!(&frame[6..12], &PORT_MAC, "from the port");
    assert_eq!(&frame[12..14], &[0x08, 0x00], "outer IPv4");
    let ip = &frame[14..34];
    assert_eq!(ip[0], 0x45, "outer IPv4 without options");
    assert_eq!(ip[9], 4, "outer protocol is IPIP");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        frame.len() - 14,
        "outer total length"
    );
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff, "outer checksum");
    assert_eq!(
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(192, 0, 2, 1),
        "outer source is the VIP's encapsulation source"
    );
    (Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]), &frame[34..])
}

#[test]
fn engine_over_ring_ports_forwards_counts_and_frees_everything() {
    let (eal, _runtime_dir) = dpdk_common::eal("dpdk-ring", &[]);
    // No per-lcore cache, so `available()` is exact at the end.
    let pool = leak_mempool(
        eal,
        "dpdk_ring_pool",
        4095,
        0,
        dpdk::Mempool::DEFAULT_DATA_ROOM,
    )
    .expect("mempool");
    let pool_size = pool.available();
    let (engine_port, peer_port) = eal
        .create_ring_pair("vipd_engine", "vipd_peer")
        .expect("ring pair");
    let io = DpdkIo::new(start_port(pool, engine_port, &PortConfig::default()).expect("port"))
        .expect("io");
    assert_eq!(io.queue(), 0);
    assert_eq!(io.port_ids().collect::<Vec<_>>(), [engine_port]);
    let io_stats = io.stats();
    let mut peer = start_port(pool, peer_port, &PortConfig::default())
        .expect("peer port")
        .pop()
        .expect("one queue");

    let mut config = EngineConfig {
        ports: vec![engine_port],
        idle: IdlePolicy {
            spin_polls: 64,
            sleep_us: 50,
        },
        ..EngineConfig::default()
    };
    config.pipeline.flow_table.capacity = 4096;
    let mut io = Some(io);
    let engine = Engine::start(
        config,
        |_| io.take().expect("one lcore"),
        TablesHandle::new(tables(engine_port)),
    )
    .expect("engine");

    let work = workload();
    let count = |e: fn(&Expect) -> bool| work.iter().filter(|(_, x)| e(x)).count();
    let forwards = count(|x| matches!(x, Expect::Forward { .. }));
    let kernel = count(|x| *x == Expect::Kernel);
    let drops = count(|x| *x == Expect::Drop);
    assert_eq!((forwards, kernel, drops), (200, 80, 30));
    let frames: Vec<Vec<u8>> = work.iter().map(|(f, _)| f.clone()).collect();
    send(&mut peer, pool, &frames);
    let out = receive(&mut peer, forwards);
    let report = engine.stop().expect("engine stops");

    // Every VIP frame came out exactly once, encapsulated, inner packet unchanged; a flow's
    // frames all went to one backend.
    assert_eq!(out.len(), forwards, "one output per VIP frame, no extras");
    let mut expected: HashMap<&[u8], u16> = work
        .iter()
        .filter_map(|(f, x)| match x {
            Expect::Forward { flow } => Some((&f[14..], *flow)),
            _ => None,
        })
        .collect();
    assert_eq!(expected.len(), forwards, "VIP frames are distinct");
    let backends: HashSet<Ipv4Addr> = BACKENDS.iter().map(|a| a.parse().unwrap()).collect();
    let mut flow_backend: HashMap<u16, Ipv4Addr> = HashMap::new();
    for frame in &out {
        let (dst, inner) = decap(frame);
        assert!(backends.contains(&dst), "{dst} is not a backend");
        let flow = expected
            .remove(inner)
            .expect("the inner packet is a VIP frame sent, byte for byte, seen once");
        assert_eq!(
            *flow_backend.entry(flow).or_insert(dst),
            dst,
            "flow {flow} changed backend"
        );
    }
    assert!(expected.is_empty());
    let used: HashSet<_> = flow_backend.values().collect();
    assert_eq!(used.len(), BACKENDS.len(), "100 flows use every backend");

    // The figures add up.
    let t = report.total;
    assert_eq!(t.rx_packets, work.len() as u64);
    let rx_bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(t.rx_bytes, rx_bytes as u64);
    assert_eq!(t.tx_packets, forwards as u64);
    let tx_bytes: usize = out.iter().map(Vec::len).sum();
    assert_eq!(t.tx_bytes, tx_bytes as u64);
    assert_eq!(t.kernel_packets, kernel as u64);
    assert_eq!(t.dropped, drops as u64);
    assert_eq!(
        (t.tx_dropped, t.kernel_dropped, t.unroutable),
        (0, 0, 0),
        "{t:?}"
    );
    assert_eq!(t.unaccounted(), 0);
    assert_eq!(io_stats.kernel_discarded(), kernel as u64);
    assert!(
        io_stats.lcore_registered(),
        "the lcore thread got an EAL lcore id (mempool caches)"
    );
    let c = report.counters;
    assert_eq!(c.rx.packets, work.len() as u64);
    assert_eq!((c.forwarded, c.to_kernel), (forwards as u64, kernel as u64));
    let dropped: u64 = DropReason::ALL.iter().map(|r| c.dropped(*r)).sum();
    assert_eq!(dropped, drops as u64);
    assert_eq!(c.dropped(DropReason::Ipv4BadChecksum), 15, "{c:?}");

    // Nothing leaked: every mbuf (sent, dropped, discarded, received) is back in the pool.
    assert_eq!(pool.available(), pool_size, "mbufs leaked");
}
