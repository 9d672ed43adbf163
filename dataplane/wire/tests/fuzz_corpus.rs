//! Replays the checked-in fuzz corpus through `wire::fuzzing::walk_frame` on stable Rust.
//!
//! The corpus (`fuzz/corpus/walk_frame/`) is the minimized output of the cargo-fuzz target of
//! the same name plus handcrafted seed frames; see `fuzz/README.md`. A panic here is a parser
//! bug found by the fuzzer (or a regression of one).

use std::fs;
use std::path::Path;

#[test]
fn replay_walk_frame_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/walk_frame");
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fuzz corpus {}: {e}", dir.display()));
    let mut replayed = 0usize;
    for entry in entries {
        let path = entry.expect("corpus directory entry").path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        wire::fuzzing::walk_frame(&data);
        replayed += 1;
    }
    assert!(
        replayed >= 20,
        "expected at least 20 corpus files in {}, found {replayed}",
        dir.display()
    );
}

#[test]
fn seeds_parse_down_to_their_upper_layer() {
    // The handcrafted seeds must stay meaningful: the SYN seed parses all the way to TCP.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/walk_frame");
    let data = fs::read(dir.join("seed_eth_ipv4_tcp_syn")).expect("seed_eth_ipv4_tcp_syn exists");
    let frame = wire::EthernetFrame::new_checked(&data[..]).unwrap();
    assert_eq!(frame.ethertype(), wire::ethertype::IPV4);
    let ip = wire::Ipv4Packet::new_checked(frame.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.protocol(), wire::ip_protocol::TCP);
    let tcp = wire::TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.flags().syn());
    assert_eq!(tcp.dst_port(), 80);
}
