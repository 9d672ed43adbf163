//! Real DPDK on `net_null`: a port created on the command line and one created at run time
//! start, report link and MAC, count what they send and receive, and an unknown PMD is an error.
#![cfg(not(dpdk_missing))]

mod common;

use dpdk::{DpdkError, Eal, Mbuf, Mempool, Port, PortConfig};

#[test]
fn null_ports_start_and_count() {
    let args = common::eal_args("null", &["--vdev=net_null0"]);
    let eal = Eal::init(&common::as_strs(&args)).expect("EAL init");
    assert_eq!(eal.port_count(), 1);
    let pool = Mempool::new(&eal, "null_pool", 511, 32, Mempool::DEFAULT_DATA_ROOM).expect("pool");

    let id = eal.port_by_name("net_null0").expect("net_null0");
    let mut port = Port::configure(&pool, id, &PortConfig::default()).expect("configure");
    port.start().expect("start");
    assert!(port.link().expect("link").up);
    let mac = port.mac().expect("mac");
    assert_ne!(mac, [0; 6], "net_null has a random MAC");
    assert_eq!(
        mac[0] & 0x03,
        0x02,
        "random MACs are locally administered unicast: {mac:02x?}"
    );
    assert_eq!(
        port.stats().expect("stats"),
        dpdk::PortStats::default(),
        "fresh counters"
    );

    // net_null drops what it is given and counts it.
    let mut tx: [Option<Mbuf<'_>>; 8] =
        std::array::from_fn(|i| pool.alloc_frame(&common::frame(64, i as u8)));
    assert_eq!(port.tx_burst(0, &mut tx), 8);
    drop(tx);
    // net_null receives synthetic 64-byte frames, as many as asked for.
    let mut rx: [Option<Mbuf<'_>>; 16] = std::array::from_fn(|_| None);
    let n = port.rx_burst(0, &mut rx);
    assert_eq!(n, 16);
    assert!(rx.iter().all(|m| m.as_ref().is_some_and(|m| m.len() == 64)));
    let stats = port.stats().expect("stats");
    assert_eq!(stats.opackets, 8);
    assert_eq!(stats.ipackets, 16);
    assert_eq!(stats.ierrors, 0);
    assert_eq!(stats.imissed, 0);
    drop(rx);

    // A second null port, created at run time, with two queues each way.
    let id2 = eal.create_vdev("net_null1", "").expect("hotplug net_null1");
    assert_ne!(id, id2);
    let two = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let mut port2 = Port::configure(&pool, id2, &two).expect("configure net_null1");
    port2.start().expect("start net_null1");
    let mut rx: [Option<Mbuf<'_>>; 4] = std::array::from_fn(|_| None);
    assert_eq!(port2.rx_burst(1, &mut rx), 4, "queue 1 works");
    drop(rx);
    // One handle per queue, each polled from its own thread.
    let received: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = port2
            .queues()
            .expect("queues of a started port")
            .into_iter()
            .map(|mut q| {
                scope.spawn(move || {
                    let mut rx: [Option<Mbuf<'_>>; 8] = std::array::from_fn(|_| None);
                    let n = q.rx_burst(&mut rx);
                    let mut tx = rx;
                    let sent = q.tx_burst(&mut tx);
                    assert_eq!(sent, n, "net_null takes everything");
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("queue thread"))
            .sum()
    });
    assert_eq!(received, 16, "8 frames on each of 2 queues");
    port2.stop().expect("stop");
    assert!(
        port2.queues().is_err(),
        "a stopped port has no queues to hand out"
    );
    let mut rx: [Option<Mbuf<'_>>; 4] = std::array::from_fn(|_| None);
    assert_eq!(
        port2.rx_burst(0, &mut rx),
        0,
        "a stopped port receives nothing"
    );
    drop(rx);

    // No PMD is called net_nonexistent: an error naming the call, not a crash.
    let err = eal
        .create_vdev("net_nonexistent0", "")
        .expect_err("unknown PMD");
    assert!(
        matches!(
            err,
            DpdkError::Call {
                call: "rte_vdev_init",
                ..
            }
        ),
        "{err}"
    );

    // Unknown port id.
    let err = Port::configure(&pool, 4242, &PortConfig::default()).expect_err("no port 4242");
    assert!(
        matches!(
            err,
            DpdkError::UnknownPort {
                port_id: 4242,
                available: 2
            }
        ),
        "{err}"
    );

    // Cleanup, then a second init: refused with an error, not a crash.
    drop((port, port2));
    drop(pool);
    drop(eal);
    let err = Eal::init(&common::as_strs(&args)).expect_err("init after cleanup");
    assert!(matches!(err, DpdkError::AlreadyInitialized), "{err}");
}
