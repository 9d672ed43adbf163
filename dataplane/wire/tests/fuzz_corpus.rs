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

/// Dissects like tshark's `frame.protocols` (without `ethertype` and payload-only layers) and
/// verifies every checksum of a complete layer.
fn dissect(frame: &[u8]) -> (String, bool) {
    use std::net::IpAddr;
    use wire::*;

    fn l3(kind: u16, data: &[u8], quoted: bool, out: &mut Vec<&'static str>) -> bool {
        match kind {
            ethertype::ARP => {
                out.push("arp");
                ArpRepr::parse(&ArpPacket::new_checked(data).unwrap()).is_ok()
            }
            ethertype::IPV4 => {
                let ip = if quoted {
                    Ipv4Packet::new_checked_truncated(data).unwrap()
                } else {
                    Ipv4Packet::new_checked(data).unwrap()
                };
                out.push("ip");
                let ok = ip.verify_checksum();
                if ip.is_fragment() {
                    return ok;
                }
                let (s, d) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
                ok && l4(ip.protocol(), ip.into_payload(), &s, &d, quoted, out)
            }
            ethertype::IPV6 => {
                let ip = if quoted {
                    Ipv6Packet::new_checked_truncated(data).unwrap()
                } else {
                    Ipv6Packet::new_checked(data).unwrap()
                };
                out.push("ipv6");
                let mut nh = ip.next_header();
                let payload = ip.into_payload();
                let upper = ipv6_upper_layer(nh, payload).unwrap();
                let mut at = 0;
                while at < upper.offset {
                    out.push(match nh {
                        ip_protocol::HOPOPT => "ipv6.hopopts",
                        ip_protocol::IPV6_ROUTE => "ipv6.routing",
                        ip_protocol::IPV6_OPTS => "ipv6.dstopts",
                        ip_protocol::AH => "ah",
                        _ => "ipv6.fraghdr",
                    });
                    let len = match nh {
                        ip_protocol::AH => (usize::from(payload[at + 1]) + 2) * 4,
                        ip_protocol::IPV6_FRAG => 8,
                        _ => (usize::from(payload[at + 1]) + 1) * 8,
                    };
                    nh = payload[at];
                    at += len;
                }
                if upper.fragment.is_some() {
                    return true; // tshark shows fragments as data
                }
                let (s, d) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
                l4(
                    upper.protocol,
                    &payload[upper.offset..],
                    &s,
                    &d,
                    quoted,
                    out,
                )
            }
            _ => false,
        }
    }

    fn l4(
        proto: u8,
        data: &[u8],
        s: &IpAddr,
        d: &IpAddr,
        quoted: bool,
        out: &mut Vec<&'static str>,
    ) -> bool {
        match proto {
            ip_protocol::TCP => {
                out.push("tcp");
                quoted || TcpPacket::new_checked(data).unwrap().verify_checksum(s, d)
            }
            ip_protocol::UDP => {
                out.push("udp");
                quoted || UdpPacket::new_checked(data).unwrap().verify_checksum(s, d)
            }
            ip_protocol::ICMP => {
                out.push("icmp");
                let icmp = Icmpv4Packet::new_checked(data).unwrap();
                let ok = icmp.verify_checksum();
                if icmpv4_type::is_error(icmp.msg_type()) {
                    return ok && l3(ethertype::IPV4, icmp.into_payload(), true, out);
                }
                ok
            }
            ip_protocol::ICMPV6 => {
                out.push("icmpv6");
                let icmp = Icmpv6Packet::new_checked(data).unwrap();
                let ok = icmp.verify_checksum_ip(s, d);
                if icmpv6_type::is_error(icmp.msg_type()) {
                    return ok && l3(ethertype::IPV6, icmp.into_payload(), true, out);
                }
                ok
            }
            ip_protocol::IPIP => l3(ethertype::IPV4, data, quoted, out),
            ip_protocol::IPV6 => l3(ethertype::IPV6, data, quoted, out),
            _ => true,
        }
    }

    let mut out = vec!["eth"];
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let mut kind = eth.ethertype();
    let mut payload = eth.into_payload();
    while kind == ethertype::VLAN || kind == ethertype::QINQ {
        out.push(if kind == ethertype::VLAN {
            "vlan"
        } else {
            "ieee8021ad"
        });
        let tag = VlanHeader::new_checked(payload).unwrap();
        kind = tag.ethertype();
        payload = tag.into_payload();
    }
    let ok = l3(kind, payload, false, &mut out);
    (out.join(":"), ok)
}

#[test]
fn seeds_agree_with_tshark() {
    // `frame.protocols` as printed by tshark 4 for each seed (seeds/check_with_tshark.py),
    // minus `ethertype` and payload-only dissectors; tshark also found no bad checksum.
    let expected = [
        ("seed_eth_arp_request", "eth:arp"),
        ("seed_eth_ipv4_frag_later", "eth:ip"),
        ("seed_eth_ipv4_gue_v0_tcp", "eth:ip:udp"),
        ("seed_eth_ipv4_gue_v1_ipv4_tcp", "eth:ip:udp"),
        ("seed_eth_ipv4_icmp_echo", "eth:ip:icmp"),
        ("seed_eth_ipv4_icmp_frag_needed", "eth:ip:icmp:ip:tcp"),
        ("seed_eth_ipv4_icmp_time_exceeded_udp", "eth:ip:icmp:ip:udp"),
        ("seed_eth_ipv4_ipip_tcp", "eth:ip:ip:tcp"),
        ("seed_eth_ipv4_options_udp", "eth:ip:udp"),
        ("seed_eth_ipv4_tcp_padded", "eth:ip:tcp"),
        ("seed_eth_ipv4_tcp_syn", "eth:ip:tcp"),
        (
            "seed_eth_ipv6_ext_chain_tcp",
            "eth:ipv6:ipv6.hopopts:ipv6.routing:ipv6.dstopts:ah:tcp",
        ),
        ("seed_eth_ipv6_frag_first_udp", "eth:ipv6:ipv6.fraghdr"),
        ("seed_eth_ipv6_frag_later", "eth:ipv6:ipv6.fraghdr"),
        ("seed_eth_ipv6_gue_v1_ipv6_tcp", "eth:ipv6:udp"),
        ("seed_eth_ipv6_icmpv6_echo", "eth:ipv6:icmpv6"),
        ("seed_eth_ipv6_icmpv6_ptb", "eth:ipv6:icmpv6:ipv6:udp"),
        ("seed_eth_ipv6_in_ipv6_udp", "eth:ipv6:ipv6:udp"),
        ("seed_eth_qinq_ipv6_tcp", "eth:ieee8021ad:vlan:ipv6:tcp"),
        ("seed_eth_vlan_ipv4_udp", "eth:vlan:ip:udp"),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/walk_frame");
    for (name, stack) in expected {
        let data = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (ours, checksums_ok) = dissect(&data);
        assert_eq!(ours, stack, "{name}: protocol stack differs from tshark");
        assert!(
            checksums_ok,
            "{name}: a checksum tshark accepts failed to verify"
        );
    }
}
