//! A frame larger than the mbuf data room arrives from `net_pcap` as a chain of mbufs; `DpdkIo`
//! must drop and count it rather than hand the pipeline its first segment as if it were the whole
//! frame. Frames around it pass untouched, in order.
//!
//! One EAL per process, so this file holds one test.
#![cfg(feature = "dpdk")]

mod dpdk_common;

use std::fs::File;
use std::time::{Duration, Instant};

use dataplane::dpdk_io::{leak_mempool, start_port, DpdkIo};
use dataplane::{Burst, PacketIo, MAX_BURST};
use dpdk::{Mempool, PortConfig};
use pcap_file::pcap::{PcapPacket, PcapWriter};

fn frame(seq: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0xAB; len];
    f[0] = seq;
    f
}

#[test]
fn chained_mbufs_are_dropped_and_counted() {
    let dir = std::env::temp_dir();
    let input = dir.join(format!("vipd-chain-in-{}.pcap", std::process::id()));
    let output = dir.join(format!("vipd-chain-out-{}.pcap", std::process::id()));
    {
        let mut w = PcapWriter::new(File::create(&input).unwrap()).unwrap();
        for (i, (seq, len)) in [(0u8, 60usize), (1, 3000), (2, 60)].iter().enumerate() {
            let f = frame(*seq, *len);
            w.write_packet(&PcapPacket::new(
                Duration::from_millis(i as u64),
                f.len() as u32,
                &f,
            ))
            .unwrap();
        }
    }
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let (eal, _runtime) = dpdk_common::eal("pcapchain", &[&vdev]);
    let port = eal.port_by_name("net_pcap0").expect("net_pcap0");
    // The default data room (2176 bytes) is smaller than the 3000-byte frame.
    let pool =
        leak_mempool(eal, "chain_pool", 1023, 0, Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    let mut io =
        DpdkIo::new(start_port(pool, port, &PortConfig::default()).expect("port")).expect("io");
    let stats = io.stats();

    let mut burst = Burst::new(MAX_BURST);
    let deadline = Instant::now() + Duration::from_secs(5);
    while burst.len() < 2 && Instant::now() < deadline {
        io.rx_burst(port, 0, &mut burst, MAX_BURST);
    }
    let seqs: Vec<u8> = burst.as_slice().iter().map(|m| m.data()[0]).collect();
    assert_eq!(seqs, vec![0, 2], "the small frames pass, in order");
    assert!(burst.as_slice().iter().all(|m| m.data().len() == 60));
    assert_eq!(
        stats.rx_chained_dropped(),
        1,
        "the 3000-byte frame was chained and dropped"
    );
    drop(burst);
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
}
