//! A port whose link is down is a clear error after the wait, not a hang: `net_ring` supports
//! setting its link down administratively, which is what a pulled cable looks like to
//! `Port::wait_for_link`. One EAL per process, so this file holds one test.
#![cfg(not(dpdk_missing))]

mod common;

use std::time::{Duration, Instant};

use dpdk::{DpdkError, Eal, Mempool, Port, PortConfig};

#[test]
fn link_down_is_an_error_naming_the_fix() {
    let args = common::eal_args("link-down", &["--vdev=net_ring0"]);
    let eal = Eal::init(&common::as_strs(&args)).expect("EAL");
    let pool = Mempool::new(&eal, "link_pool", 1023, 0, Mempool::DEFAULT_DATA_ROOM).expect("pool");
    let id = eal.port_by_name("net_ring0").expect("net_ring0");
    let mut port = Port::configure(&pool, id, &PortConfig::default()).expect("configure");
    port.start().expect("start");
    assert!(
        port.wait_for_link(Duration::from_millis(500))
            .expect("up")
            .up
    );

    port.set_link(false)
        .expect("net_ring can set its link down");
    let started = Instant::now();
    let err = port
        .wait_for_link(Duration::from_millis(200))
        .expect_err("the link is down");
    assert!(started.elapsed() < Duration::from_secs(2), "no hang");
    assert!(
        matches!(err, DpdkError::LinkDown { waited_ms: 200, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("link is down") && msg.contains("check the cable"),
        "{msg}"
    );

    port.set_link(true).expect("and up again");
    assert!(
        port.wait_for_link(Duration::from_millis(500))
            .expect("up")
            .up
    );
}
