//! [`DpdkIo`] keeps the [`PacketIo`] contract on real DPDK virtual devices: `rx_burst` honours
//! `max` and the burst's room without losing or reordering frames, `tx_burst` leaves what a full
//! queue refuses at the front of the burst in order, `to_kernel` frees and counts, mbufs behave
//! as [`PacketBuf`]s, queues are dealt out to lcores, and no mbuf leaks.
//!
//! One EAL per process, so this file holds one test.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::time::{Duration, Instant};

use dataplane::dpdk_io::{lcore_ios, leak_mempool, start_port, DpdkIo, DpdkIoError};
use dataplane::{Burst, PacketBuf, PacketIo, MAX_BURST};
use dpdk::{Mbuf, Mempool, PortConfig, PortQueue};

/// A recognisable frame: its first two bytes are `seq`.
fn frame(seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60 + usize::from(seq % 50)];
    f[..2].copy_from_slice(&seq.to_be_bytes());
    f
}

fn seq(data: &[u8]) -> u16 {
    u16::from_be_bytes([data[0], data[1]])
}

fn peer_send(
    peer: &mut PortQueue<'static>,
    pool: &'static Mempool<'static>,
    seqs: std::ops::Range<u16>,
) {
    let seqs: Vec<u16> = seqs.collect();
    for chunk in seqs.chunks(32) {
        let mut out: [Option<Mbuf<'static>>; 32] = std::array::from_fn(|_| None);
        for (slot, &s) in out.iter_mut().zip(chunk) {
            *slot = Some(pool.alloc_frame(&frame(s)).expect("mbuf"));
        }
        assert_eq!(peer.tx_burst(&mut out), chunk.len(), "peer ring has room");
    }
}

fn peer_receive(peer: &mut PortQueue<'static>) -> Vec<u16> {
    let mut got = Vec::new();
    let mut rx: [Option<Mbuf<'static>>; 32] = std::array::from_fn(|_| None);
    loop {
        let n = peer.rx_burst(&mut rx);
        if n == 0 {
            return got;
        }
        got.extend(rx[..n].iter_mut().map(|m| seq(m.take().unwrap().data())));
    }
}

/// The `PacketBuf` contract, through the trait only.
fn packet_buf_contract<P: PacketBuf>(p: &mut P) {
    assert_eq!(p.data(), &[1, 2, 3, 4]);
    assert_eq!(p.headroom(), 128, "RTE_PKTMBUF_HEADROOM");
    assert!(!p.prepend(129), "more than the headroom");
    assert!(p.prepend(20));
    assert_eq!((p.data().len(), p.headroom()), (24, 108));
    p.data_mut()[..20].fill(9);
    assert!(!p.adj(25), "longer than the frame");
    assert!(p.adj(19));
    assert_eq!(p.data(), &[9, 1, 2, 3, 4]);
    p.truncate(3);
    assert_eq!(p.data(), &[9, 1, 2]);
    p.truncate(10);
    assert_eq!(p.data(), &[9, 1, 2], "truncate never grows");
}

#[test]
fn dpdk_io_keeps_the_packet_io_contract() {
    let (eal, _runtime_dir) = dpdk_common::eal("dpdk-io", &[]);
    let pool =
        leak_mempool(eal, "dpdk_io_pool", 4095, 0, Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    let pool_size = pool.available();

    let mut m = pool.alloc_frame(&[1, 2, 3, 4]).expect("mbuf");
    packet_buf_contract(&mut m);
    drop(m);

    let (a, b) = eal.create_ring_pair("io_a", "io_b").expect("ring pair");
    let mut io = DpdkIo::new(start_port(pool, a, &PortConfig::default()).unwrap()).unwrap();
    let mut peer = start_port(pool, b, &PortConfig::default())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        format!("{io:?}"),
        format!("DpdkIo {{ queue: 0, ports: [{a}], .. }}")
    );

    // RX: `max` and the burst's room are honoured; nothing is lost or reordered (DPDK receives
    // 32 at a time, the rest waits in the io).
    peer_send(&mut peer, pool, 0..70);
    let mut rx: Burst<Mbuf<'static>> = Burst::new(MAX_BURST);
    assert_eq!(io.rx_burst(a, 1, &mut rx, MAX_BURST), 0, "no queue 1");
    assert_eq!(
        io.rx_burst(b, 0, &mut rx, MAX_BURST),
        0,
        "port b is not polled"
    );
    assert_eq!(io.rx_burst(a + 7, 0, &mut rx, MAX_BURST), 0, "no such port");
    assert_eq!(io.rx_burst(a, 0, &mut rx, 0), 0);
    assert_eq!(io.rx_burst(a, 0, &mut rx, 5), 5);
    let mut small: Burst<Mbuf<'static>> = Burst::new(3);
    assert_eq!(io.rx_burst(a, 0, &mut small, MAX_BURST), 3, "room of 3");
    let mut order: Vec<u16> = rx
        .drain()
        .chain(small.drain())
        .map(|m| seq(m.data()))
        .collect();
    loop {
        let n = io.rx_burst(a, 0, &mut rx, MAX_BURST);
        if n == 0 {
            break;
        }
        assert!(n <= MAX_BURST);
        order.extend(rx.drain().map(|m| seq(m.data())));
    }
    assert_eq!(order, (0..70).collect::<Vec<_>>(), "every frame, in order");

    // TX of more than one DPDK burst goes out whole and in order.
    let mut tx: Burst<Mbuf<'static>> = Burst::new(2 * MAX_BURST);
    for s in 0..50 {
        assert!(tx.push(pool.alloc_frame(&frame(s)).unwrap()).is_ok());
    }
    assert_eq!(io.tx_burst(a, 1, &mut tx), 0, "no queue 1");
    assert_eq!(io.tx_burst(b, 0, &mut tx), 0, "port b is not polled");
    assert_eq!(tx.len(), 50, "refused frames stay");
    assert_eq!(io.tx_burst(a, 0, &mut tx), 50);
    assert!(tx.is_empty());
    assert_eq!(peer_receive(&mut peer), (0..50).collect::<Vec<_>>());

    // A full TX queue: the ring to the peer holds 1024 frames (1023 usable); fill it to 1000,
    // then 40 more take 23 and leave the last 17 at the front of the burst, in order.
    let mut filled = 0u16;
    while filled < 1000 {
        let n = (1000 - filled).min(MAX_BURST as u16);
        for s in filled..filled + n {
            assert!(tx.push(pool.alloc_frame(&frame(s)).unwrap()).is_ok());
        }
        assert_eq!(io.tx_burst(a, 0, &mut tx), usize::from(n));
        filled += n;
    }
    for s in 1000..1040 {
        assert!(tx.push(pool.alloc_frame(&frame(s)).unwrap()).is_ok());
    }
    assert_eq!(io.tx_burst(a, 0, &mut tx), 23, "the ring had 23 free slots");
    let left: Vec<u16> = tx.as_slice().iter().map(|m| seq(m.data())).collect();
    assert_eq!(
        left,
        (1023..1040).collect::<Vec<_>>(),
        "unsent stay in order"
    );
    assert_eq!(io.tx_burst(a, 0, &mut tx), 0, "still full");
    assert_eq!(tx.len(), 17);
    let got = peer_receive(&mut peer);
    assert_eq!(got, (0..1023).collect::<Vec<_>>());
    assert_eq!(io.tx_burst(a, 0, &mut tx), 17, "room again");
    assert_eq!(peer_receive(&mut peer), (1023..1040).collect::<Vec<_>>());

    // The packet path does not allocate: receive, send back, hand to the kernel.
    peer_send(&mut peer, pool, 0..96);
    let mut kernel: Burst<Mbuf<'static>> = Burst::new(MAX_BURST);
    let mut moved = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..3 {
            moved += io.rx_burst(a, 0, &mut rx, 20);
            moved += io.rx_burst(a, 0, &mut rx, MAX_BURST);
            for m in rx.drain_front(4) {
                let _ = kernel.push(m);
            }
            io.to_kernel(0, &mut kernel);
            io.tx_burst(a, 0, &mut rx);
        }
    });
    assert_eq!(info.count_total, 0, "the packet path allocated: {info:?}");
    assert_eq!(moved, 96);
    assert_eq!(peer_receive(&mut peer).len(), 96 - 12);
    assert_eq!(io.stats().kernel_discarded(), 12);

    // The exception path frees and counts for now.
    let stats = io.stats();
    for s in 0..7 {
        assert!(kernel.push(pool.alloc_frame(&frame(s)).unwrap()).is_ok());
    }
    assert_eq!(io.to_kernel(1, &mut kernel), 0, "not this lcore's queue");
    assert_eq!(io.to_kernel(0, &mut kernel), 7);
    assert!(kernel.is_empty());
    assert_eq!(stats.kernel_discarded(), 12 + 7);

    // Frames left in the io's RX stash are freed with it.
    peer_send(&mut peer, pool, 0..10);
    let deadline = Instant::now() + Duration::from_secs(5);
    while io.rx_burst(a, 0, &mut rx, 1) == 0 {
        assert!(Instant::now() < deadline);
    }
    drop(rx);
    drop(io);

    // Queues are dealt out to lcores: queue i of every port to lcore i.
    let id0 = eal.create_vdev("net_null0", "").expect("net_null0");
    let id1 = eal.create_vdev("net_null1", "").expect("net_null1");
    let two = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let ios = lcore_ios(vec![
        start_port(pool, id0, &two).unwrap(),
        start_port(pool, id1, &two).unwrap(),
    ])
    .unwrap();
    assert_eq!(ios.len(), 2);
    for (i, io) in ios.iter().enumerate() {
        assert_eq!(usize::from(io.queue()), i);
        assert_eq!(io.port_ids().collect::<Vec<_>>(), [id0, id1]);
    }
    drop(ios);

    // Misfits are refused: no queues, ports with different queue counts, and queues of
    // different indexes for one lcore.
    assert_eq!(lcore_ios(Vec::new()).unwrap_err(), DpdkIoError::NoQueues);
    assert_eq!(DpdkIo::new(Vec::new()).unwrap_err(), DpdkIoError::NoQueues);
    let id2 = eal.create_vdev("net_null2", "").expect("net_null2");
    let id3 = eal.create_vdev("net_null3", "").expect("net_null3");
    let err = lcore_ios(vec![
        start_port(pool, id2, &two).unwrap(),
        start_port(pool, id3, &PortConfig::default()).unwrap(),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        DpdkIoError::QueueCounts {
            port: id3,
            queues: 1,
            expected: 2
        }
    );
    assert!(err.to_string().contains("one queue per lcore"), "{err}");
    let id4 = eal.create_vdev("net_null4", "").expect("net_null4");
    let id5 = eal.create_vdev("net_null5", "").expect("net_null5");
    let mut q4 = start_port(pool, id4, &two).unwrap();
    let mut q5 = start_port(pool, id5, &PortConfig::default()).unwrap();
    let err = DpdkIo::new(vec![q5.remove(0), q4.remove(1)]).unwrap_err();
    assert_eq!(
        err,
        DpdkIoError::MixedQueues {
            port: id4,
            queue: 1,
            expected: 0
        }
    );

    // Nothing leaked. (net_null ports keep no mbufs; the ring ports' queues are empty.)
    assert_eq!(pool.available(), pool_size, "mbufs leaked");
}
