//! RSS configuration on real DPDK ports: a device with RSS (`net_null`) gets the symmetric
//! Toeplitz key (read back from the device, and symmetric under the software hash), a device
//! without RSS (`net_af_packet`, which spreads by kernel fanout) is refused by
//! `RssMode::Symmetric` and configured without RSS by `RssMode::Auto`.
//!
//! One EAL per process, so this file holds one test.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::net::IpAddr;

use dataplane::dpdk_io::{lcore_port_config, leak_mempool};
use dataplane::rss::{rss_input, toeplitz, RssMode, SYMMETRIC_RSS_KEY};
use dpdk::{DpdkError, Port};

#[test]
fn symmetric_key_where_the_device_has_rss_and_a_clear_choice_where_not() {
    let (eal, _dir) = dpdk_common::eal(
        "rss",
        &["--vdev=net_null0", "--vdev=net_null1", "--vdev=net_null2"],
    );
    let pool =
        leak_mempool(eal, "rss_pool", 4095, 0, dpdk::Mempool::DEFAULT_DATA_ROOM).expect("mempool");

    let null0 = eal.port_by_name("net_null0").expect("net_null0");
    let port = Port::configure(pool, null0, &lcore_port_config(2, RssMode::Symmetric))
        .expect("net_null has RSS");
    assert!(port.rss_enabled());
    let key = port.rss_key().expect("read the key back");
    assert!(key.len() >= 40, "{} byte key", key.len());
    assert_eq!(
        key[..],
        SYMMETRIC_RSS_KEY[..key.len()],
        "the device uses our key"
    );
    let (a, b): (IpAddr, IpAddr) = (
        "198.18.0.7".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
    );
    assert_eq!(
        toeplitz(&key, &rss_input(a, b, Some((40000, 80)))),
        toeplitz(&key, &rss_input(b, a, Some((80, 40000))))
    );
    drop(port);

    // The device's own key when asked for it; one queue means no RSS at all. (Dropping a vdev
    // port closes and releases it, hence one device per case.)
    let null1 = eal.port_by_name("net_null1").expect("net_null1");
    let port = Port::configure(pool, null1, &lcore_port_config(2, RssMode::DeviceKey))
        .expect("device key");
    assert!(port.rss_enabled());
    drop(port);
    let null2 = eal.port_by_name("net_null2").expect("net_null2");
    let port =
        Port::configure(pool, null2, &lcore_port_config(1, RssMode::Symmetric)).expect("one queue");
    assert!(!port.rss_enabled(), "no RSS with one queue");
    drop(port);

    // net_af_packet has no RSS: Symmetric refuses it, naming the fix; Auto configures it without.
    if std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        let afp = eal
            .create_vdev("net_af_packet0", "iface=lo,qpairs=2")
            .expect("af_packet on lo");
        let err = Port::configure(pool, afp, &lcore_port_config(2, RssMode::Symmetric))
            .expect_err("no RSS on af_packet");
        assert!(matches!(err, DpdkError::PortConfig { .. }), "{err}");
        assert!(err.to_string().contains("does not support RSS"), "{err}");
        assert!(err.to_string().contains("auto"), "{err}");
        let port = Port::configure(pool, afp, &lcore_port_config(2, RssMode::Auto))
            .expect("auto falls back");
        assert!(!port.rss_enabled());
        assert_eq!(port.driver_name(), "net_af_packet");
    } else {
        eprintln!("not root: the net_af_packet part is skipped");
    }
}
