//! Real DPDK, no NIC: frames sent on one `net_ring` port arrive byte-identical on its peer, and
//! on a single `net_ring0` (whose transmit ring is its receive ring). One EAL per process, so
//! everything runs in one test.
#![cfg(not(dpdk_missing))]

mod common;

use dpdk::{Eal, Mbuf, Mempool, Port, PortConfig};

const BURST: usize = 32;

fn send_all(port: &mut Port<'_>, frames: &[Vec<u8>], pool: &Mempool<'_>) {
    let mut out: [Option<Mbuf<'_>>; BURST] = std::array::from_fn(|_| None);
    for (slot, f) in out.iter_mut().zip(frames) {
        *slot = Some(pool.alloc_frame(f).expect("mbuf for frame"));
    }
    let sent = port.tx_burst(0, &mut out);
    assert_eq!(sent, frames.len(), "ring has room for the whole burst");
    assert!(out.iter().all(Option::is_none), "sent slots are taken");
}

fn receive(port: &mut Port<'_>, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut rx: [Option<Mbuf<'_>>; BURST] = std::array::from_fn(|_| None);
    for _ in 0..100 {
        let n = port.rx_burst(0, &mut rx);
        got.extend(
            rx[..n]
                .iter_mut()
                .map(|m| m.take().expect("filled slot").data().to_vec()),
        );
        if got.len() >= want {
            break;
        }
    }
    got
}

#[test]
fn ring_ports_carry_frames_unchanged() {
    let args = common::eal_args("ring", &["--vdev=net_ring0"]);
    let eal = Eal::init(&common::as_strs(&args)).expect("EAL init on net_ring0");
    assert!(
        dpdk::lcore_id() == Some(0),
        "init thread is the main lcore 0"
    );
    assert!(matches!(
        Eal::init(&common::as_strs(&args)),
        Err(dpdk::DpdkError::AlreadyInitialized)
    ));

    let pool = Mempool::new(&eal, "ring_pool", 1023, 0, Mempool::DEFAULT_DATA_ROOM).expect("pool");
    assert_eq!(pool.data_room(), Mempool::DEFAULT_DATA_ROOM);
    let pool_size = pool.available();
    let config = PortConfig::default();

    // Two ports wired back to back.
    let (a_id, b_id) = eal.create_ring_pair("vipd_a", "vipd_b").expect("ring pair");
    assert_ne!(a_id, b_id);
    assert_eq!(
        eal.port_by_name("net_ring_vipd_b").expect("named port"),
        b_id
    );
    let mut a = Port::configure(&pool, a_id, &config).expect("configure a");
    let mut b = Port::configure(&pool, b_id, &config).expect("configure b");
    a.start().expect("start a");
    b.start().expect("start b");
    assert!(
        a.link().expect("link").up,
        "ring ports report link up once started"
    );

    let frames: Vec<Vec<u8>> = (0..BURST)
        .map(|i| common::frame(60 + i * 37, i as u8))
        .collect();
    send_all(&mut a, &frames, &pool);
    let got = receive(&mut b, frames.len());
    assert_eq!(
        got, frames,
        "b receives what a sent, in order, byte for byte"
    );
    assert!(receive(&mut a, 1).is_empty(), "nothing loops back to a");
    let (sa, sb) = (a.stats().expect("stats a"), b.stats().expect("stats b"));
    assert_eq!(sa.opackets, BURST as u64);
    assert_eq!(sb.ipackets, BURST as u64);
    // (net_ring counts packets only, not bytes.)

    // And back the other way, after a stop/start cycle.
    b.stop().expect("stop b");
    b.start().expect("restart b");
    let back: Vec<Vec<u8>> = (0..5).map(|i| common::frame(1514, 100 + i)).collect();
    send_all(&mut b, &back, &pool);
    assert_eq!(receive(&mut a, back.len()), back);

    // A single net_ring0 receives its own transmissions.
    let ring0 = eal
        .port_by_name("net_ring0")
        .expect("net_ring0 from --vdev");
    let mut r = Port::configure(&pool, ring0, &config).expect("configure net_ring0");
    r.start().expect("start net_ring0");
    assert_eq!(
        r.mac().expect("mac"),
        [0; 6],
        "net_ring's MAC is all zeroes"
    );
    let looped: Vec<Vec<u8>> = (0..3).map(|i| common::frame(64, 200 + i)).collect();
    send_all(&mut r, &looped, &pool);
    assert_eq!(receive(&mut r, looped.len()), looped);

    // Every mbuf went back to the pool: nothing leaked on tx, rx or drop.
    assert_eq!(pool.available(), pool_size);

    // Unknown port ids are errors, not crashes.
    let err = Port::configure(&pool, 999, &config).expect_err("port 999");
    assert!(
        matches!(err, dpdk::DpdkError::UnknownPort { port_id: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--vdev"), "{err}");
    assert!(matches!(
        eal.port_by_name("no_such_port"),
        Err(dpdk::DpdkError::UnknownPortName { .. })
    ));

    drop((a, b, r));
    drop(pool);
    drop(eal);
}
