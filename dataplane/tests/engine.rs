//! The polling engine over the in-memory backend: every frame comes out where its verdict says,
//! the figures add up, tables swap under traffic without loss or leak, and stop is prompt.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dataplane::flow::FlowTuple;
use dataplane::testing::{backend, port, vip, FrameSpec};
use dataplane::{
    BackendState, CounterSnapshot, DropReason, Engine, EngineConfig, ForwardingMode, HeapPacket,
    IdlePolicy, Lcore, MemoryConfig, MemoryIo, MemoryPorts, PacketBuf, Tables, TablesHandle,
    VipEntry,
};
use wire::{ethertype, ip_protocol, EthernetFrame, Ipv4Packet};

const SYN: u8 = 0x02;
const VIP: &str = "203.0.113.10";

/// VIP 0: 203.0.113.10:80/tcp IPIP to backend 0 (10.0.0.1, active) and backend 1 (10.0.0.2, in
/// `state`), leaving through `egress_port`; small Maglev tables so 10,000 builds are quick.
fn entries(state: BackendState, egress_port: u16) -> Vec<VipEntry> {
    let mut v = vip(
        0,
        VIP,
        80,
        ip_protocol::TCP,
        ForwardingMode::Ipip,
        vec![
            backend(0, "10.0.0.1", BackendState::Active),
            backend(1, "10.0.0.2", state),
        ],
    );
    v.table_size = 251;
    v.egress_port = egress_port;
    vec![v]
}

fn tables(state: BackendState) -> Tables {
    Tables::build(vec![port(1500)], &entries(state, 0)).unwrap()
}

fn config(lcores: u16) -> EngineConfig {
    let mut config = EngineConfig {
        lcores,
        // Two cores shared with other builds: back off quickly when idle.
        idle: IdlePolicy {
            spin_polls: 64,
            sleep_us: 50,
        },
        ..EngineConfig::default()
    };
    config.pipeline.flow_table.capacity = 1 << 14;
    config
}

fn memory(queues: u16, ring_size: usize) -> MemoryPorts {
    MemoryPorts::new(MemoryConfig {
        ports: 1,
        queues,
        rx_ring_size: ring_size,
        tx_ring_size: ring_size,
        kernel_ring_size: ring_size,
        pool_size: ring_size,
        ..MemoryConfig::default()
    })
    .unwrap()
}

fn syn(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::from(0xC612_0000 | (i >> 14)).to_string(); // 198.18.x.y
    FrameSpec::tcp(&src, VIP, 1024 + (i & 0x3FFF) as u16, 80, SYN).build()
}

fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&dataplane::testing::CLIENT_MAC);
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0; 20]);
    frame
}

/// Outer IPv4 destination of an IPIP frame sent to a backend.
fn outer_dst(frame: &[u8]) -> IpAddr {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), ethertype::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.protocol(), ip_protocol::IPIP);
    IpAddr::V4(ip.dst_addr())
}

fn lcore(ports: &MemoryPorts, handle: &TablesHandle, engine: &EngineConfig) -> Lcore<MemoryIo> {
    Lcore::new(0, engine, ports.io(0), handle.clone(), Instant::now()).unwrap()
}

#[test]
fn ten_thousand_swaps_under_traffic_lose_nothing_and_leak_nothing() {
    const SWAPS: usize = 10_000;
    const MIN_FRAMES: u64 = 20_000;
    const FLOWS: u32 = 8192;
    const WINDOW: u64 = 512; // frames in flight at most: below every ring size, so none overflows
    let ports = memory(2, 1024);
    let first = Arc::new(tables(BackendState::Active));
    let mut published: Vec<Weak<Tables>> = vec![Arc::downgrade(&first)];
    let handle = TablesHandle::from_arc(first);
    let engine = Engine::start(config(2), |q| ports.io(q), handle.clone()).unwrap();
    assert_eq!(engine.lcores(), 2);

    let collected = Arc::new(AtomicU64::new(0));
    let publisher = {
        let handle = handle.clone();
        let collected = Arc::clone(&collected);
        std::thread::spawn(move || {
            let mut weaks = Vec::with_capacity(SWAPS);
            let before = collected.load(Ordering::Relaxed);
            for i in 0..SWAPS {
                let state = if i % 2 == 0 {
                    BackendState::Draining
                } else {
                    BackendState::Active
                };
                let tables = Arc::new(tables(state));
                weaks.push(Arc::downgrade(&tables));
                handle.publish_arc(tables);
            }
            (weaks, before, collected.load(Ordering::Relaxed))
        })
    };

    let frames: Vec<Vec<u8>> = (0..FLOWS).map(syn).collect();
    let (mut injected, mut out) = (0u64, 0u64);
    let mut per_backend = [0u64; 2];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !publisher.is_finished() || injected < MIN_FRAMES || out < injected {
        assert!(Instant::now() < deadline, "stuck: {injected} in, {out} out");
        // RSS stand-in: a flow always lands on the same queue.
        while injected - out < WINDOW && (!publisher.is_finished() || injected < MIN_FRAMES) {
            let flow = (injected % u64::from(FLOWS)) as u32;
            let queue = (flow % 2) as u16;
            if !ports.inject(0, queue, &frames[flow as usize]) {
                break;
            }
            injected += 1;
        }
        let before = out;
        for queue in 0..2 {
            while let Some(frame) = ports.take_tx(0, queue) {
                match outer_dst(frame.data()) {
                    IpAddr::V4(a) if a == Ipv4Addr::new(10, 0, 0, 1) => per_backend[0] += 1,
                    IpAddr::V4(a) if a == Ipv4Addr::new(10, 0, 0, 2) => per_backend[1] += 1,
                    other => panic!("sent to {other}, not a backend"),
                }
                ports.recycle(frame);
                out += 1;
            }
        }
        collected.store(out, Ordering::Relaxed);
        if out == before {
            std::thread::yield_now();
        }
    }
    let (weaks, out_at_first_swap, out_at_last_swap) = publisher.join().unwrap();
    published.extend(weaks);
    assert!(
        out_at_last_swap > out_at_first_swap,
        "traffic flowed while tables were swapped ({out_at_first_swap}..{out_at_last_swap})"
    );

    let report = engine.stop().unwrap();
    let total = report.total;
    assert_eq!(out, injected, "every injected frame came out");
    assert_eq!(total.rx_packets, injected);
    assert_eq!(total.tx_packets, injected);
    assert_eq!(
        (
            total.tx_dropped,
            total.dropped,
            total.kernel_packets,
            total.unroutable
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(total.unaccounted(), 0);
    assert!(
        report.lcores.iter().all(|l| l.rx_packets > 0),
        "both lcores worked: {:?}",
        report.lcores
    );
    assert_eq!(report.counters.forwarded, injected);
    assert_eq!(report.counters.dropped_total(), 0);
    assert_eq!(per_backend[0] + per_backend[1], injected);
    assert_eq!(ports.lost(), 0);

    // No leak: every replaced version is freed, only the last one published is alive, and the
    // handle is its only owner.
    assert_eq!(published.len(), SWAPS + 1);
    assert_eq!(handle.reclaim(), 0);
    let alive = published.iter().filter(|t| t.strong_count() > 0).count();
    assert_eq!(alive, 1, "tables versions alive after stop");
    assert_eq!(published[SWAPS].strong_count(), 1);
}

#[test]
fn one_burst_with_mixed_verdicts_goes_everywhere_it_should() {
    let ports = memory(1, 64);
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut lcore = lcore(&ports, &handle, &config(1));
    let frames = [
        syn(1),                                                         // -> backend
        FrameSpec::echo("198.18.0.1", VIP).build(),                     // -> reply on port 0
        FrameSpec::tcp("198.18.0.1", "192.0.2.99", 5, 22, SYN).build(), // -> kernel
        arp(),                                                          // -> kernel
        vec![0u8; 7],                                                   // malformed: drop
        FrameSpec::tcp("198.18.0.1", VIP, 5, 443, SYN).build(),         // no VIP on 443: drop
    ];
    for f in &frames {
        assert!(ports.inject(0, 0, f));
    }
    assert_eq!(lcore.poll(), frames.len(), "one burst");
    let s = lcore.stats().snapshot();
    assert_eq!((s.busy_polls, s.idle_polls), (1, 0));
    assert_eq!((s.tx_packets, s.kernel_packets, s.dropped), (2, 2, 2));
    assert_eq!(s.unaccounted(), 0);

    let to_backend = ports.take_tx(0, 0).unwrap();
    let backends: [IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
    assert!(backends.contains(&outer_dst(to_backend.data())));
    let reply = ports.take_tx(0, 0).unwrap();
    let ip = Ipv4Packet::new_checked(&reply.data()[14..]).unwrap();
    assert_eq!(ip.src_addr().to_string(), VIP, "echo reply from the VIP");
    assert!(ports.take_tx(0, 0).is_none());

    // The exception path gets the frames unchanged, in order.
    assert_eq!(ports.take_kernel(0).unwrap().data(), &frames[2][..]);
    assert_eq!(ports.take_kernel(0).unwrap().data(), &frames[3][..]);
    assert!(ports.take_kernel(0).is_none());

    let c = CounterSnapshot::sum([&*lcore.counters()]);
    assert_eq!(c.dropped(DropReason::L2Malformed), 1);
    assert_eq!(c.dropped(DropReason::NoVipForPort), 1);
    assert_eq!(c.to_kernel, 2);
    assert_eq!(lcore.poll(), 0);
    assert_eq!(lcore.stats().snapshot().idle_polls, 1);
}

/// One port whose TX (4) and kernel (2) queues fill up long before its RX ring (64).
fn tight_queue_ports() -> MemoryPorts {
    MemoryPorts::new(MemoryConfig {
        ports: 1,
        queues: 1,
        rx_ring_size: 64,
        tx_ring_size: 4,
        kernel_ring_size: 2,
        pool_size: 64,
        ..MemoryConfig::default()
    })
    .unwrap()
}

#[test]
fn figures_add_up_when_queues_are_full() {
    let ports = tight_queue_ports();
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut lcore = lcore(&ports, &handle, &config(1));
    let mut frames: Vec<Vec<u8>> = (0..10).map(syn).collect();
    frames.extend((0..3).map(|i| FrameSpec::tcp("198.18.0.1", "192.0.2.99", i, 22, SYN).build()));
    frames.extend([vec![0u8; 3], vec![0u8; 9]]);
    for f in &frames {
        assert!(ports.inject(0, 0, f));
    }
    assert_eq!(lcore.poll(), 15);
    let s = lcore.stats().snapshot();
    assert_eq!(s.rx_packets, 15);
    assert_eq!(
        s.rx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!((s.tx_packets, s.tx_dropped), (4, 6), "TX ring holds 4");
    assert_eq!(
        (s.kernel_packets, s.kernel_dropped),
        (2, 1),
        "kernel ring holds 2"
    );
    assert_eq!(s.dropped, 2);
    assert_eq!(
        s.rx_packets,
        s.tx_packets
            + s.tx_dropped
            + s.kernel_packets
            + s.kernel_dropped
            + s.dropped
            + s.unroutable
    );
    let mut tx_bytes = 0;
    while let Some(f) = ports.take_tx(0, 0) {
        tx_bytes += f.data().len() as u64;
    }
    assert_eq!(s.tx_bytes, tx_bytes, "bytes of the frames actually sent");
    assert_eq!(
        s.tx_bytes,
        4 * (frames[0].len() as u64 + 20),
        "IPIP adds 20 bytes"
    );
    // Refused and dropped buffers went back to the pool (6 TX, 1 kernel, 2 drops).
    assert_eq!(ports.pooled(), 9);
}

/// Bursts whose frames all go one way are handed over whole (no per-frame moves); full queues
/// must still be counted and their refusals freed exactly as in a mixed burst.
#[test]
fn single_destination_bursts_add_up_when_queues_are_full() {
    let ports = tight_queue_ports();
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut lcore = lcore(&ports, &handle, &config(1));

    let forwarded: Vec<Vec<u8>> = (0..10).map(syn).collect();
    for f in &forwarded {
        assert!(ports.inject(0, 0, f));
    }
    assert_eq!(lcore.poll(), 10);
    let s = lcore.stats().snapshot();
    assert_eq!((s.tx_packets, s.tx_dropped, s.unaccounted()), (4, 6, 0));
    assert_eq!(s.tx_bytes, 4 * (forwarded[0].len() as u64 + 20));
    assert_eq!(ports.pooled(), 6, "the 6 refused frames were freed");

    let kernel: Vec<Vec<u8>> = (0..5).map(|_| arp()).collect();
    for f in &kernel {
        assert!(ports.inject(0, 0, f));
    }
    assert_eq!(lcore.poll(), 5);
    let s = lcore.stats().snapshot();
    assert_eq!(
        (s.kernel_packets, s.kernel_dropped, s.unaccounted()),
        (2, 3, 0)
    );
    assert_eq!(
        s.rx_bytes,
        forwarded
            .iter()
            .chain(&kernel)
            .map(|f| f.len() as u64)
            .sum::<u64>()
    );
    // `inject` took 5 buffers from the pool's 6; the 3 refused kernel frames came back.
    assert_eq!(ports.pooled(), 6 - 5 + 3);
    let mut sent = 0;
    while let Some(f) = ports.take_tx(0, 0) {
        assert_eq!(f.data().len(), forwarded[0].len() + 20, "encapsulated");
        sent += 1;
    }
    assert_eq!(sent, 4);
    let mut to_kernel = 0;
    while let Some(f) = ports.take_kernel(0) {
        assert_eq!(f.data(), &kernel[0][..], "unchanged");
        to_kernel += 1;
    }
    assert_eq!(to_kernel, 2);
    // The next poll starts from empty bursts again (the swapped-in ones).
    for f in forwarded.iter().take(3) {
        assert!(ports.inject(0, 0, f));
    }
    assert_eq!(lcore.poll(), 3);
    assert_eq!(lcore.stats().snapshot().tx_packets, 4 + 3);
}

#[test]
fn forwarding_to_a_port_the_engine_does_not_poll_is_counted() {
    let ports = memory(1, 64);
    let t = Tables::build(
        vec![port(1500), port(1500)],
        &entries(BackendState::Active, 1),
    )
    .unwrap();
    let handle = TablesHandle::new(t);
    let mut lcore = lcore(&ports, &handle, &config(1)); // polls port 0 only
    assert!(ports.inject(0, 0, &syn(1)));
    assert_eq!(lcore.poll(), 1);
    let s = lcore.stats().snapshot();
    assert_eq!((s.unroutable, s.tx_packets, s.unaccounted()), (1, 0, 0));
}

#[test]
fn each_burst_sees_the_tables_published_before_it() {
    let ports = memory(1, 64);
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut lcore = lcore(&ports, &handle, &config(1));
    assert!(ports.inject(0, 0, &syn(1)));
    lcore.poll();
    assert!(ports.take_tx(0, 0).is_some(), "a VIP: forwarded");

    handle.publish(Tables::build(vec![port(1500)], &[]).unwrap());
    assert!(ports.inject(0, 0, &syn(1)));
    lcore.poll();
    assert!(ports.take_tx(0, 0).is_none());
    assert!(
        ports.take_kernel(0).is_some(),
        "no longer a VIP address: kernel"
    );
    assert_eq!(
        handle.reclaim(),
        0,
        "the lcore let go of the old tables after its burst"
    );
}

#[test]
fn the_lcore_loop_allocates_nothing() {
    let ports = memory(1, 256);
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut lcore = lcore(&ports, &handle, &config(1));
    let mut frames: Vec<Vec<u8>> = (0..24).map(syn).collect();
    frames.push(FrameSpec::tcp("198.18.0.1", "192.0.2.99", 5, 22, SYN).build());
    frames.push(vec![0u8; 7]);
    frames.push(FrameSpec::echo("198.18.0.1", VIP).build());
    // Buffers big enough for every frame, so injection recycles instead of allocating.
    for _ in 0..64 {
        ports.recycle(HeapPacket::with_capacity(2048));
    }
    let mut allocations = 0;
    for round in 0..50 {
        for f in &frames {
            assert!(ports.inject(0, 0, f));
        }
        let info = allocation_counter::measure(|| {
            assert_eq!(lcore.poll(), frames.len());
        });
        if round > 0 {
            // Round 0 warms up (arc-swap registers this thread's debt slots once).
            allocations += info.count_total;
        }
        while let Some(f) = ports.take_tx(0, 0) {
            ports.recycle(f);
        }
        while let Some(f) = ports.take_kernel(0) {
            ports.recycle(f);
        }
    }
    assert_eq!(allocations, 0, "the lcore allocated on the packet path");
}

#[test]
fn stop_joins_promptly_and_threads_are_named() {
    let ports = memory(2, 64);
    let handle = TablesHandle::new(tables(BackendState::Active));
    let mut config = config(2);
    config.idle.sleep_us = 1000;
    config.cpus = vec![0, 1];
    let engine = Engine::start(config, |q| ports.io(q), handle).unwrap();
    assert_eq!(engine.pinned().len(), 2);
    #[cfg(target_os = "linux")]
    {
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect();
        for n in ["vipd-lcore-0", "vipd-lcore-1"] {
            assert!(names.iter().any(|m| m == n), "{n} not in {names:?}");
        }
    }
    assert!(ports.inject(0, 1, &syn(1)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.total_stats().tx_packets == 0 {
        assert!(Instant::now() < deadline, "frame not forwarded");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let report = engine.stop().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "stop took {took:?}");
    assert_eq!(report.lcores[1].tx_packets, 1, "queue 1 is lcore 1's");
    assert_eq!(report.lcores[0].rx_packets, 0);
    assert!(report.lcores.iter().all(|l| l.idle_polls > 0));
    assert_eq!(report.total.unaccounted(), 0);
}

/// The control plane asks a running lcore about one flow: the lcore that saw the SYN answers
/// with the flow's backend and state, the other lcore has no such flow, an unknown 5-tuple is
/// not found, and unanswered questions can be withdrawn.
#[test]
fn running_lcores_answer_flow_lookups() {
    let ports = memory(2, 64);
    let handle = TablesHandle::new(tables(BackendState::Active));
    let engine = Engine::start(config(2), |q| ports.io(q), handle).unwrap();
    assert!(ports.inject(0, 1, &syn(7)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.total_stats().tx_packets == 0 {
        assert!(Instant::now() < deadline, "frame not forwarded");
        std::thread::sleep(Duration::from_millis(1));
    }
    let sent = ports.take_tx(0, 1).expect("the SYN went to a backend");
    let backend = outer_dst(sent.data());

    let ask = |lcore: usize, tuple: FlowTuple| {
        let query = &engine.flow_queries()[lcore];
        query.post(tuple);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(answer) = query.answer() {
                return answer;
            }
            assert!(Instant::now() < deadline, "lcore {lcore} did not answer");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let tuple = FlowTuple {
        src: IpAddr::V4(Ipv4Addr::from(0xC612_0000)),
        dst: VIP.parse().unwrap(),
        src_port: 1024 + 7,
        dst_port: 80,
        protocol: ip_protocol::TCP,
    };
    let found = ask(1, tuple).expect("lcore 1 tracks the flow");
    let view = found.view;
    assert!(found.now_ms >= view.created_ms);
    let expected = if backend == "10.0.0.1".parse::<IpAddr>().unwrap() {
        0
    } else {
        1
    };
    assert_eq!(
        view.backend & 0xffff,
        expected,
        "the backend the SYN went to"
    );
    assert_eq!(view.state, conntrack::FlowState::SynSent);
    assert_eq!(ask(0, tuple), None, "lcore 0 never saw it");
    let unknown = FlowTuple {
        src_port: 9,
        ..tuple
    };
    assert_eq!(ask(1, unknown), None);

    let report = engine.stop().unwrap();
    assert_eq!(report.total.unaccounted(), 0);
}
