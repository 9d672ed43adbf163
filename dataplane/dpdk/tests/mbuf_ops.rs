//! Real DPDK mbufs: headroom, prepend, adj, truncate and append behave like
//! `dataplane::PacketBuf` requires, and the tx path hands back what the device did not take.
#![cfg(not(dpdk_missing))]

mod common;

use dpdk::{Eal, Mbuf, Mempool, Port, PortConfig};

#[test]
fn mbufs_move_their_front_and_back() {
    let args = common::eal_args("mbuf", &["--vdev=net_ring0"]);
    let eal = Eal::init(&common::as_strs(&args)).expect("EAL init");
    let pool = Mempool::new(&eal, "mbuf_pool", 63, 0, Mempool::DEFAULT_DATA_ROOM).expect("pool");

    let frame = common::frame(100, 7);
    let mut m = pool.alloc_frame(&frame).expect("alloc");
    assert_eq!(m.data(), &frame[..]);
    assert_eq!(m.len(), 100);
    assert_eq!(m.segments(), 1);
    assert!(m.is_contiguous());
    assert_eq!(m.headroom(), 128, "RTE_PKTMBUF_HEADROOM");
    assert_eq!(m.tailroom(), 2048 - 100);

    // prepend grows the front; refuses more than the headroom, changing nothing.
    assert!(m.prepend(20));
    assert_eq!(m.len(), 120);
    assert_eq!(m.headroom(), 108);
    assert_eq!(&m.data()[20..], &frame[..]);
    m.data_mut()[..20].fill(0xee);
    assert!(!m.prepend(109));
    assert!(!m.prepend(usize::MAX));
    assert_eq!(m.len(), 120);

    // adj removes from the front; refuses more than the frame.
    assert!(!m.adj(121));
    assert!(m.adj(20));
    assert_eq!(m.data(), &frame[..]);
    assert_eq!(m.headroom(), 128);

    // truncate shortens; a longer length is a no-op.
    m.truncate(500);
    assert_eq!(m.len(), 100);
    m.truncate(60);
    assert_eq!(m.data(), &frame[..60]);
    m.truncate(0);
    assert!(m.is_empty());
    assert!(m.append(2049).is_none(), "append past the tailroom fails");
    m.append(4).expect("append").copy_from_slice(b"abcd");
    assert_eq!(m.data(), b"abcd");
    m.prefetch();

    // Frames larger than one mbuf are refused.
    assert!(pool.alloc_frame(&vec![0u8; 2049]).is_none());

    // Pool exhaustion is None, and dropping mbufs refills it.
    let all: Vec<Mbuf<'_>> = std::iter::from_fn(|| pool.alloc()).collect();
    assert_eq!(all.len(), 62, "63 minus the one still held");
    assert!(pool.alloc().is_none());
    drop(all);
    assert_eq!(pool.available(), 62);

    // into_raw / from_raw round trip keeps the frame.
    let raw = m.into_raw();
    // SAFETY: raw came from into_raw of an mbuf of `pool`, which is still alive.
    let m = unsafe { Mbuf::from_raw(raw) };
    assert_eq!(m.data(), b"abcd");
    drop(m);

    // tx_burst on a full device queue hands back what it did not take: net_ring0's ring holds
    // 1023 frames by default, so a small pool never fills it; use the empty-slot contract instead.
    let port_id = eal.port_by_name("net_ring0").expect("net_ring0");
    let mut port = Port::configure(&pool, port_id, &PortConfig::default()).expect("configure");
    port.start().expect("start");
    let mut burst: [Option<Mbuf<'_>>; 4] = [
        None,
        Some(pool.alloc_frame(b"one").expect("a")),
        None,
        Some(pool.alloc_frame(b"two").expect("b")),
    ];
    assert_eq!(
        port.tx_burst(0, &mut burst),
        2,
        "only the Some slots are sent"
    );
    assert!(burst.iter().all(Option::is_none));
    let mut rx: [Option<Mbuf<'_>>; 4] = [None, None, None, None];
    assert_eq!(port.rx_burst(0, &mut rx), 2);
    assert_eq!(rx[0].as_ref().map(|m| m.data()), Some(&b"one"[..]));
    assert_eq!(rx[1].as_ref().map(|m| m.data()), Some(&b"two"[..]));
    drop(rx);

    // MTU checks name the fix.
    let err = Port::configure(
        &pool,
        port_id,
        &PortConfig {
            mtu: 9000,
            ..PortConfig::default()
        },
    )
    .expect_err("jumbo MTU does not fit a 2048-byte mbuf");
    assert!(
        err.to_string().contains("data_room") || err.to_string().contains("MTU"),
        "{err}"
    );
    let err = Port::configure(
        &pool,
        port_id,
        &PortConfig {
            rx_queues: 64,
            ..PortConfig::default()
        },
    )
    .expect_err("net_ring0 has one queue");
    assert!(err.to_string().contains("rx queues"), "{err}");

    drop(port);
    assert_eq!(pool.available(), 63, "no mbuf leaked");
}
