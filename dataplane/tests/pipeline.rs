//! Pipeline behaviour, end to end over in-memory frames: frames are built byte by byte
//! (`dataplane::testing`) and outputs are read back with `wire`.

use std::net::IpAddr;

use dataplane::counters::BurstTally;
use dataplane::testing::{backend, port, vip, FrameSpec, CLIENT_MAC, GATEWAY_MAC, PORT_MAC};
use dataplane::{
    BackendEntry, BackendState, CounterSnapshot, DropReason, ForwardingMode, HashPolicy,
    HeapPacket, PacketBuf, Pipeline, PipelineConfig, Tables, Verdict, VipEntry,
};
use proptest::prelude::*;
use wire::{
    ethertype, icmpv4_type, icmpv6_type, ip_protocol, EthernetAddress, EthernetFrame, Icmpv4Packet,
    Icmpv6Packet, Ipv4Packet, Ipv6Packet, UdpPacket,
};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// VIP 0: 203.0.113.10:80/tcp ipip to 3 IPv4 backends (ids 0..3).
/// VIP 1: [2001:db8:f::10]:443/tcp ipip to 2 IPv6 backends (ids 3, 4).
/// VIP 2: 203.0.113.20:53/udp gue to 2 IPv6 backends (ids 5, 6).
fn entries(states: [BackendState; 3]) -> Vec<VipEntry> {
    vec![
        vip(
            0,
            "203.0.113.10",
            80,
            ip_protocol::TCP,
            ForwardingMode::Ipip,
            vec![
                backend(0, "10.0.0.1", states[0]),
                backend(1, "10.0.0.2", states[1]),
                backend(2, "10.0.0.3", states[2]),
            ],
        ),
        vip(
            1,
            "2001:db8:f::10",
            443,
            ip_protocol::TCP,
            ForwardingMode::Ipip,
            vec![
                backend(3, "2001:db8:b::1", BackendState::Active),
                backend(4, "2001:db8:b::2", BackendState::Active),
            ],
        ),
        vip(
            2,
            "203.0.113.20",
            53,
            ip_protocol::UDP,
            ForwardingMode::Gue { port: 6080 },
            vec![
                backend(5, "2001:db8:b::5", BackendState::Active),
                backend(6, "2001:db8:b::6", BackendState::Active),
            ],
        ),
    ]
}

fn tables(mtu: u16) -> Tables {
    Tables::build(vec![port(mtu)], &entries([BackendState::Active; 3])).unwrap()
}

/// Built once: property tests run thousands of cases.
fn shared_tables() -> &'static Tables {
    static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| tables(1500))
}

fn pipeline() -> Pipeline {
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = 4096;
    Pipeline::new(config).unwrap()
}

fn run(p: &mut Pipeline, t: &Tables, frame: &[u8], now_ms: u64) -> (Verdict, HeapPacket) {
    let mut packet = HeapPacket::from_frame(frame, HeapPacket::DEFAULT_HEADROOM);
    let verdict = p.process_one(t, 0, &mut packet, now_ms);
    (verdict, packet)
}

/// Outer destination of an encapsulated frame.
fn outer_dst(frame: &[u8]) -> IpAddr {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    match eth.ethertype() {
        ethertype::IPV4 => IpAddr::V4(Ipv4Packet::new_checked(eth.payload()).unwrap().dst_addr()),
        ethertype::IPV6 => IpAddr::V6(Ipv6Packet::new_checked(eth.payload()).unwrap().dst_addr()),
        other => panic!("not IP: {other:#x}"),
    }
}

#[test]
fn ipv4_tcp_is_encapsulated_ipip_with_intact_inner_packet() {
    let (t, mut p) = (tables(1500), pipeline());
    let mut spec = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, SYN);
    spec.tos = 0xb9; // DSCP 46, ECN 01
    let input = spec.build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    assert_eq!(eth.dst_addr().0, GATEWAY_MAC);
    assert_eq!(eth.src_addr().0, PORT_MAC);
    assert_eq!(eth.ethertype(), ethertype::IPV4);
    let outer = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(outer.verify_checksum());
    assert_eq!(outer.protocol(), ip_protocol::IPIP);
    assert_eq!(outer.src_addr().to_string(), "192.0.2.1");
    assert!(["10.0.0.1", "10.0.0.2", "10.0.0.3"].contains(&outer.dst_addr().to_string().as_str()));
    assert_eq!(outer.tos(), 0xb9);
    assert_eq!(outer.ttl(), 64);
    assert!(outer.dont_frag());
    assert_eq!(
        outer.payload(),
        &input[14..],
        "inner packet is byte-identical"
    );
    assert_eq!(p.flows().len(), 1);
}

#[test]
fn one_flow_one_backend_and_flows_spread() {
    let (t, mut p) = (tables(1500), pipeline());
    let mut seen = std::collections::HashMap::new();
    for i in 0..300u16 {
        let syn = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 10000 + i, 80, SYN).build();
        let ack = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 10000 + i, 80, ACK).build();
        let first = outer_dst(run(&mut p, &t, &syn, 0).1.data());
        let second = outer_dst(run(&mut p, &t, &ack, 1).1.data());
        assert_eq!(first, second, "flow {i} moved");
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "every backend gets flows: {seen:?}");
    assert!(seen.values().all(|&n| n > 50), "roughly even: {seen:?}");
    assert_eq!(p.flows().len(), 300);
}

#[test]
fn drained_backend_keeps_its_flows_but_gets_no_new_ones() {
    let mut p = pipeline();
    let before = tables(1500);
    let mut flows = Vec::new();
    for i in 0..200u16 {
        let f = FrameSpec::tcp("198.18.0.2", "203.0.113.10", 20000 + i, 80, SYN).build();
        flows.push((i, outer_dst(run(&mut p, &before, &f, 0).1.data())));
    }
    let drained: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(flows.iter().any(|(_, b)| *b == drained));
    let after = Tables::build(
        vec![port(1500)],
        &entries([
            BackendState::Draining,
            BackendState::Active,
            BackendState::Active,
        ]),
    )
    .unwrap();
    for (i, b) in &flows {
        let f = FrameSpec::tcp("198.18.0.2", "203.0.113.10", 20000 + i, 80, ACK).build();
        assert_eq!(
            outer_dst(run(&mut p, &after, &f, 10).1.data()),
            *b,
            "existing flow {i} kept its backend"
        );
    }
    for i in 0..200u16 {
        let f = FrameSpec::tcp("198.18.0.3", "203.0.113.10", 30000 + i, 80, SYN).build();
        assert_ne!(
            outer_dst(run(&mut p, &after, &f, 10).1.data()),
            drained,
            "new flow {i} avoided the drained backend"
        );
    }
}

#[test]
fn flows_of_a_down_backend_are_rehashed() {
    let mut p = pipeline();
    let before = tables(1500);
    let down: IpAddr = "10.0.0.2".parse().unwrap();
    let mut moved = 0;
    let after = Tables::build(
        vec![port(1500)],
        &entries([
            BackendState::Active,
            BackendState::Down,
            BackendState::Active,
        ]),
    )
    .unwrap();
    for i in 0..200u16 {
        let f = FrameSpec::tcp("198.18.0.4", "203.0.113.10", 20000 + i, 80, SYN).build();
        let b = outer_dst(run(&mut p, &before, &f, 0).1.data());
        let f = FrameSpec::tcp("198.18.0.4", "203.0.113.10", 20000 + i, 80, ACK).build();
        let now = outer_dst(run(&mut p, &after, &f, 10).1.data());
        assert_ne!(now, down);
        if b == down {
            moved += 1;
        } else {
            assert_eq!(now, b, "flows on healthy backends stay");
        }
    }
    assert!(moved > 0);
    let s = CounterSnapshot::sum([&*p.counters()]);
    assert_eq!(s.flows_rehashed, moved);
}

#[test]
fn ipv6_flow_to_ipv6_backend_and_gue_ipv4_in_ipv6() {
    let (t, mut p) = (tables(1500), pipeline());
    let input = FrameSpec::tcp("2001:db8:c::1", "2001:db8:f::10", 5555, 443, SYN).build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    let outer = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(outer.next_header(), ip_protocol::IPV6);
    assert_eq!(outer.payload(), &input[14..]);

    let input = FrameSpec::udp("198.18.0.9", "203.0.113.20", 7777, 53).build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    let outer = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(outer.next_header(), ip_protocol::UDP);
    let udp = UdpPacket::new_checked(outer.payload()).unwrap();
    assert_eq!(udp.dst_port(), 6080);
    assert!(udp.src_port() >= 0xC000);
    assert!(udp.verify_checksum(&IpAddr::V6(outer.src_addr()), &IpAddr::V6(outer.dst_addr())));
    assert_eq!(
        udp.payload(),
        &input[14..],
        "GUE variant 1: the UDP payload is the inner IP packet"
    );
}

#[test]
fn not_for_a_vip_goes_to_the_kernel_unchanged() {
    let (t, mut p) = (tables(1500), pipeline());
    let bgp = FrameSpec::tcp("198.18.0.1", "192.0.2.1", 40000, 179, SYN).build();
    let (verdict, out) = run(&mut p, &t, &bgp, 0);
    assert_eq!(verdict, Verdict::ToKernel);
    assert_eq!(out.data(), &bgp[..]);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(run(&mut p, &t, &arp, 0).0, Verdict::ToKernel);
}

#[test]
fn unknown_port_on_a_vip_address_is_a_counted_drop() {
    let (t, mut p) = (tables(1500), pipeline());
    let f = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 8080, SYN).build();
    assert_eq!(
        run(&mut p, &t, &f, 0).0,
        Verdict::Drop(DropReason::NoVipForPort)
    );
    assert_eq!(
        CounterSnapshot::sum([&*p.counters()]).dropped(DropReason::NoVipForPort),
        1
    );
}

#[test]
fn too_big_with_df_gets_frag_needed_and_without_df_is_dropped() {
    let (t, mut p) = (tables(1500), pipeline());
    let mut spec = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, ACK);
    spec.payload_len = 1500 - 40; // a full 1500-byte packet; IPIP adds 20
    let input = spec.build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    assert_eq!(eth.dst_addr().0, CLIENT_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr().to_string(), "203.0.113.10");
    assert_eq!(ip.dst_addr().to_string(), "198.18.0.1");
    assert!(usize::from(ip.total_len()) <= 576);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), icmpv4_type::DEST_UNREACHABLE);
    assert_eq!(icmp.code(), 4);
    assert_eq!(icmp.next_hop_mtu(), 1480);
    assert_eq!(
        &icmp.payload()[..28],
        &input[14..42],
        "quotes the original header"
    );

    spec.dont_frag = false;
    assert_eq!(
        run(&mut p, &t, &spec.build(), 0).0,
        Verdict::Drop(DropReason::TooBigNoDf)
    );

    // Exactly at the limit fits.
    spec.dont_frag = true;
    spec.payload_len = 1480 - 40;
    assert_eq!(outer_len(run(&mut p, &t, &spec.build(), 0).1.data()), 1500);
}

fn outer_len(frame: &[u8]) -> usize {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    usize::from(Ipv4Packet::new_checked(eth.payload()).unwrap().total_len())
}

#[test]
fn too_big_ipv6_gets_packet_too_big() {
    let (t, mut p) = (tables(1500), pipeline());
    let mut spec = FrameSpec::tcp("2001:db8:c::1", "2001:db8:f::10", 5555, 443, ACK);
    spec.payload_len = 1500 - 60;
    let (verdict, out) = run(&mut p, &t, &spec.build(), 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src_addr().to_string(), "2001:db8:f::10");
    assert!(40 + usize::from(ip.payload_len()) <= 1280);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv6_type::PACKET_TOO_BIG);
    assert_eq!(icmp.mtu(), 1460);
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
}

#[test]
fn icmp_error_about_a_flow_goes_to_the_flows_backend() {
    let (t, mut p) = (tables(1500), pipeline());
    for i in 0..50u16 {
        let syn = FrameSpec::tcp("198.18.0.7", "203.0.113.10", 1000 + i, 80, SYN).build();
        let owner = outer_dst(run(&mut p, &t, &syn, 0).1.data());
        // A router on the way to the client says the backend's reply (VIP:80 -> client) is too big.
        let reply = FrameSpec::tcp("203.0.113.10", "198.18.0.7", 80, 1000 + i, ACK).build();
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0x00];
        icmp.extend_from_slice(&reply[14..14 + 28]);
        let c = wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let frame = raw_ipv4_frame("198.51.100.254", "203.0.113.10", ip_protocol::ICMP, &icmp);
        let (verdict, out) = run(&mut p, &t, &frame, 1);
        assert_eq!(verdict, Verdict::Forward { port: 0 });
        assert_eq!(
            outer_dst(out.data()),
            owner,
            "ICMP error {i} follows its flow"
        );
    }
}

fn raw_ipv4_frame(src: &str, dst: &str, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = PORT_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.parse::<std::net::Ipv4Addr>().unwrap().octets());
    ip[16..20].copy_from_slice(&dst.parse::<std::net::Ipv4Addr>().unwrap().octets());
    let c = wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

#[test]
fn fragments_of_one_datagram_share_a_backend_and_are_not_tracked() {
    let (t, mut p) = (tables(1500), pipeline());
    for id in 0..40u16 {
        let mut first = FrameSpec::tcp("198.18.1.1", "203.0.113.10", 3000 + id, 80, ACK);
        first.payload_len = 64;
        let mut frame = first.build();
        frame[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
        frame[14 + 6] = 0x20; // MF
        refresh_ipv4_checksum(&mut frame);
        let b1 = outer_dst(run(&mut p, &t, &frame, 0).1.data());
        let mut second = raw_ipv4_frame("198.18.1.1", "203.0.113.10", ip_protocol::TCP, &[0u8; 24]);
        second[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
        second[14 + 6..14 + 8].copy_from_slice(&(84u16 / 8 * 8 / 8).to_be_bytes()); // offset 80 bytes / 8
        refresh_ipv4_checksum(&mut second);
        let b2 = outer_dst(run(&mut p, &t, &second, 0).1.data());
        assert_eq!(b1, b2, "datagram {id}");
    }
    assert_eq!(p.flows().len(), 0);
}

fn refresh_ipv4_checksum(frame: &mut [u8]) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = wire::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn echo_requests_to_a_vip_are_answered() {
    let (t, mut p) = (tables(1500), pipeline());
    let (verdict, out) = run(
        &mut p,
        &t,
        &FrameSpec::echo("198.18.0.1", "203.0.113.10").build(),
        0,
    );
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    assert_eq!(eth.dst_addr().0, CLIENT_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr().to_string(), "198.18.0.1");
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv4_type::ECHO_REPLY);
    assert!(icmp.verify_checksum());

    let (verdict, out) = run(
        &mut p,
        &t,
        &FrameSpec::echo("2001:db8:c::1", "2001:db8:f::10").build(),
        0,
    );
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv6_type::ECHO_REPLY);
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
}

#[test]
fn vlan_tagged_input_and_ethernet_padding() {
    let (t, mut p) = (tables(1500), pipeline());
    let mut spec = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, SYN);
    spec.vlan = Some(100);
    let mut input = spec.build();
    let ip = input[18..].to_vec();
    input.extend_from_slice(&[0xAA; 10]); // padding after the IP packet
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    assert_eq!(eth.ethertype(), ethertype::IPV4, "egress port is untagged");
    let outer = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(outer.payload(), &ip[..], "no padding inside the tunnel");
    assert_eq!(eth.payload().len(), outer.total_len() as usize);
}

#[test]
fn malformed_frames_are_dropped_under_their_reason() {
    let (t, mut p) = (tables(1500), pipeline());
    let good = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, SYN).build();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::L2Malformed),
        (good[..14 + 19].to_vec(), DropReason::Ipv4Malformed),
        (
            {
                let mut f = good.clone();
                f[14] = 0x44; // IHL 4
                f
            },
            DropReason::Ipv4Malformed,
        ),
        (
            {
                let mut f = good.clone();
                f[14 + 10] ^= 0xff;
                f
            },
            DropReason::Ipv4BadChecksum,
        ),
        (
            {
                let mut f = good[..14 + 20 + 10].to_vec();
                f[16..18].copy_from_slice(&30u16.to_be_bytes());
                refresh_ipv4_checksum(&mut f);
                f
            },
            DropReason::TcpMalformed,
        ),
        (
            {
                let mut f = good[..12].to_vec();
                for _ in 0..3 {
                    f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
                }
                f.extend_from_slice(&good[12..]);
                f
            },
            DropReason::VlanTooDeep,
        ),
    ];
    for (i, (frame, reason)) in cases.iter().enumerate() {
        assert_eq!(
            run(&mut p, &t, frame, 0).0,
            Verdict::Drop(*reason),
            "case {i}"
        );
    }
    let s = CounterSnapshot::sum([&*p.counters()]);
    assert_eq!(s.dropped_total(), cases.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Any bytes: no panic, exactly one verdict each, and the counters add up.
    #[test]
    fn arbitrary_frames_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..32)) {
        let t = shared_tables();
        let mut p = pipeline();
        let mut burst: Vec<HeapPacket> = frames.iter().map(|f| HeapPacket::from_frame(f, 128)).collect();
        let mut verdicts = vec![Verdict::ToKernel; burst.len()];
        let tally = p.process(t, 0, &mut burst, &mut verdicts, 5);
        let s = CounterSnapshot::sum([&*p.counters()]);
        prop_assert_eq!(s.rx.packets, frames.len() as u64);
        prop_assert_eq!(s.forwarded + s.to_kernel + s.dropped_total(), frames.len() as u64);
        // The returned tally is the burst's share of the counters, verdict by verdict.
        prop_assert_eq!(tally, expected_tally(&frames, &verdicts));
        prop_assert_eq!((tally.frames, tally.bytes), (s.rx.packets, s.rx.bytes));
        prop_assert_eq!((tally.forwarded, tally.to_kernel, tally.dropped), (s.forwarded, s.to_kernel, s.dropped_total()));
    }

    /// Mutations of a valid VIP frame (the interesting region): no panic, counters add up.
    #[test]
    fn mutated_vip_frames_never_panic(flips in prop::collection::vec((0usize..80, any::<u8>()), 1..8), cut in 0usize..100) {
        let t = shared_tables();
        let mut p = pipeline();
        let mut f = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, SYN).build();
        f.extend_from_slice(&[0u8; 40]);
        for (at, v) in flips { if at < f.len() { f[at] = v; } }
        f.truncate(f.len().saturating_sub(cut));
        let (_, _) = run(&mut p, t, &f, 0);
        let s = CounterSnapshot::sum([&*p.counters()]);
        prop_assert_eq!(s.forwarded + s.to_kernel + s.dropped_total(), 1);
    }
}

/// The tally `process` must return for `frames` (as received) and the verdicts it gave them.
fn expected_tally(frames: &[Vec<u8>], verdicts: &[Verdict]) -> BurstTally {
    let ports: Vec<u16> = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Forward { port } => Some(*port),
            _ => None,
        })
        .collect();
    let mixed = ports.windows(2).any(|w| w[0] != w[1]);
    BurstTally {
        frames: frames.len() as u64,
        bytes: frames.iter().map(|f| f.len() as u64).sum(),
        forwarded: ports.len() as u64,
        to_kernel: verdicts.iter().filter(|v| **v == Verdict::ToKernel).count() as u64,
        dropped: verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Drop(_)))
            .count() as u64,
        forward_port: if mixed { None } else { ports.first().copied() },
        mixed_ports: mixed,
    }
}

/// What the engine dispatches on: a burst's tally says when every frame has one destination.
#[test]
fn the_burst_tally_says_when_a_burst_has_one_destination() {
    let t = shared_tables();
    let mut p = pipeline();
    let vip_frame = |port: u16| FrameSpec::tcp("198.18.0.1", "203.0.113.10", port, 80, SYN).build();
    let kernel_frame = FrameSpec::tcp("198.18.0.1", "192.0.2.99", 40000, 22, SYN).build();
    let malformed = vec![0u8; 10];
    let run_burst = |p: &mut Pipeline, frames: &[Vec<u8>]| {
        let mut burst: Vec<HeapPacket> = frames
            .iter()
            .map(|f| HeapPacket::from_frame(f, HeapPacket::DEFAULT_HEADROOM))
            .collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::Misconfigured); frames.len()];
        let tally = p.process(t, 0, &mut burst, &mut verdicts, 1);
        assert_eq!(tally, expected_tally(frames, &verdicts));
        (tally, verdicts)
    };

    let (tally, verdicts) = run_burst(&mut p, &vec![kernel_frame.clone(); 5]);
    assert!(verdicts.iter().all(|v| *v == Verdict::ToKernel));
    assert!(tally.all_to_kernel());
    assert_eq!(tally.all_forwarded_to(), None);

    let vips: Vec<Vec<u8>> = (0..40).map(|i| vip_frame(40000 + i)).collect();
    let (tally, _) = run_burst(&mut p, &vips);
    assert_eq!(
        (tally.frames, tally.forwarded),
        (40, 40),
        "two groups, one tally"
    );
    assert_eq!(tally.all_forwarded_to(), Some(0));
    assert!(!tally.all_to_kernel());

    let (tally, verdicts) = run_burst(&mut p, &[vip_frame(1), kernel_frame, malformed]);
    assert_eq!(
        verdicts[1..],
        [Verdict::ToKernel, Verdict::Drop(DropReason::L2Malformed)]
    );
    assert_eq!((tally.forwarded, tally.to_kernel, tally.dropped), (1, 1, 1));
    assert!(!tally.all_to_kernel());
    assert_eq!(
        tally.all_forwarded_to(),
        None,
        "not every frame is forwarded"
    );

    let s = CounterSnapshot::sum([&*p.counters()]);
    assert_eq!(s.rx.packets, 5 + 40 + 3);
    assert_eq!((s.forwarded, s.to_kernel), (41, 6));
}

#[test]
fn l2_dsr_rewrites_only_the_macs_and_v6_vip_reaches_v4_backend() {
    let backend_mac = EthernetAddress([0x02, 0xbe, 0, 0, 0, 7]);
    let mut dsr = vip(
        0,
        "203.0.113.30",
        0,
        ip_protocol::TCP,
        ForwardingMode::L2Dsr,
        vec![BackendEntry {
            mac: Some(backend_mac),
            ..backend(0, "10.0.0.7", BackendState::Active)
        }],
    );
    dsr.hash = HashPolicy::ThreeTuple;
    let six_in_four = vip(
        1,
        "2001:db8:f::30",
        80,
        ip_protocol::TCP,
        ForwardingMode::Ipip,
        vec![backend(1, "10.0.0.8", BackendState::Active)],
    );
    let mut tagged = port(1500);
    tagged.vlan = Some(42);
    let t = Tables::build(vec![tagged], &[dsr, six_in_four]).unwrap();
    let mut p = pipeline();

    let input = FrameSpec::tcp("198.18.0.1", "203.0.113.30", 40000, 8443, SYN).build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    assert_eq!(eth.dst_addr(), backend_mac);
    assert_eq!(eth.src_addr().0, PORT_MAC);
    assert_eq!(eth.ethertype(), ethertype::VLAN);
    let tag = wire::VlanHeader::new_checked(eth.payload()).unwrap();
    assert_eq!(tag.vlan_id(), 42);
    assert_eq!(tag.ethertype(), ethertype::IPV4);
    assert_eq!(tag.payload(), &input[14..], "the IP packet is untouched");

    let input = FrameSpec::tcp("2001:db8:c::1", "2001:db8:f::30", 5555, 80, SYN).build();
    let (verdict, out) = run(&mut p, &t, &input, 0);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    let eth = EthernetFrame::new_checked(out.data()).unwrap();
    let tag = wire::VlanHeader::new_checked(eth.payload()).unwrap();
    let outer = Ipv4Packet::new_checked(tag.payload()).unwrap();
    assert_eq!(
        outer.protocol(),
        ip_protocol::IPV6,
        "IPv6 in IPv4 (protocol 41)"
    );
    assert_eq!(outer.dst_addr().to_string(), "10.0.0.8");
    assert!(
        outer.dont_frag(),
        "IPv6 inside may not be fragmented on the way"
    );
    assert_eq!(outer.payload(), &input[14..]);
}

#[test]
fn generated_icmp_is_rate_limited_per_core() {
    let t = tables(1500);
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = 1024;
    config.icmp_per_second = 10;
    config.icmp_burst = 5;
    let mut p = Pipeline::new(config).unwrap();
    let ping = FrameSpec::echo("198.18.0.1", "203.0.113.10").build();
    let verdicts: Vec<Verdict> = (0..8).map(|_| run(&mut p, &t, &ping, 1_000).0).collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { .. }))
            .count(),
        5,
        "{verdicts:?}"
    );
    assert_eq!(verdicts[7], Verdict::Drop(DropReason::IcmpRateLimited));
    // 10 per second: one more after 100 ms, none at 150 ms, one at 200 ms.
    assert!(matches!(
        run(&mut p, &t, &ping, 1_100).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(
        run(&mut p, &t, &ping, 1_150).0,
        Verdict::Drop(DropReason::IcmpRateLimited)
    );
    assert!(matches!(
        run(&mut p, &t, &ping, 1_200).0,
        Verdict::Forward { .. }
    ));
    // Frag-needed replies share the budget.
    let mut big = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, ACK);
    big.payload_len = 1460;
    assert_eq!(
        run(&mut p, &t, &big.build(), 1_200).0,
        Verdict::Drop(DropReason::IcmpRateLimited)
    );
    assert!(matches!(
        run(&mut p, &t, &big.build(), 1_300).0,
        Verdict::Forward { .. }
    ));
    let s = CounterSnapshot::sum([&*p.counters()]);
    assert_eq!(s.dropped(DropReason::IcmpRateLimited), 5);
}

#[test]
fn established_flows_survive_a_syn_flood_and_a_backend_change() {
    // A small table so the flood is many times its capacity.
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = 2048;
    let mut p = Pipeline::new(config).unwrap();
    let before = tables(1500);
    let mut owners = Vec::new();
    for i in 0..300u16 {
        let syn = FrameSpec::tcp("198.18.2.1", "203.0.113.10", 10000 + i, 80, SYN).build();
        let ack = FrameSpec::tcp("198.18.2.1", "203.0.113.10", 10000 + i, 80, ACK).build();
        run(&mut p, &before, &syn, 0);
        owners.push(outer_dst(run(&mut p, &before, &ack, 1).1.data()));
    }
    // 20,000 spoofed SYNs from distinct sources (10x the table), in bursts, 1 ms apart.
    let mut burst: Vec<HeapPacket> = Vec::new();
    let mut verdicts = vec![Verdict::ToKernel; 32];
    for i in 0..20_000u32 {
        let src = format!("100.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
        burst.push(HeapPacket::from_frame(
            &FrameSpec::tcp(&src, "203.0.113.10", 4242, 80, SYN).build(),
            128,
        ));
        if burst.len() == 32 {
            p.process(&before, 0, &mut burst, &mut verdicts, 2 + u64::from(i / 32));
            burst.clear();
        }
    }
    // Now a fourth backend joins: Maglev moves about a quarter of the hash space to it.
    let mut entries = entries([BackendState::Active; 3]);
    entries[0]
        .backends
        .push(backend(7, "10.0.0.4", BackendState::Active));
    let after = Tables::build(vec![port(1500)], &entries).unwrap();
    let now = 2 + 20_000 / 32 + 1;
    let mut would_move = 0;
    for (i, owner) in owners.iter().enumerate() {
        let i = i as u16;
        let ack = FrameSpec::tcp("198.18.2.1", "203.0.113.10", 10000 + i, 80, ACK).build();
        assert_eq!(
            outer_dst(run(&mut p, &after, &ack, now).1.data()),
            *owner,
            "flow {i} kept its backend"
        );
        // Without the flow table, Maglev alone would send some of them elsewhere.
        let fresh = FrameSpec::tcp("198.18.2.1", "203.0.113.10", 10000 + i, 80, ACK).build();
        let mut q = pipeline();
        if outer_dst(run(&mut q, &after, &fresh, now).1.data()) != *owner {
            would_move += 1;
        }
    }
    assert!(
        would_move > 20,
        "the backend change moves {would_move} of 300 untracked flows"
    );
    let s = CounterSnapshot::sum([&*p.counters()]);
    assert!(
        s.flow_insert_failed > 0 || p.flows().stats().evicted_new_flows > 0,
        "the flood hit the budget"
    );
}

/// A port whose gateway MAC is unknown (all zeros: the ARP/ND resolver has none) drops VIP
/// traffic as `no_next_hop` instead of sending it to a zero MAC; once the MAC is published the
/// same flow is forwarded to it. Backends with their own MAC (L2 DSR) do not need the gateway.
#[test]
fn an_unknown_gateway_mac_is_a_counted_no_next_hop_drop() {
    let unknown = tables(1500)
        .with_gateway_mac(0, EthernetAddress([0; 6]))
        .unwrap();
    let mut p = pipeline();
    let syn = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 40000, 80, SYN).build();
    let (verdict, _) = run(&mut p, &unknown, &syn, 0);
    assert_eq!(verdict, Verdict::Drop(DropReason::NoNextHop));
    assert_eq!(DropReason::NoNextHop.as_str(), "no_next_hop");
    assert!(DropReason::ALL.contains(&DropReason::NoNextHop));
    let counters = CounterSnapshot::sum([&*p.counters()]);
    assert_eq!(counters.dropped(DropReason::NoNextHop), 1);
    assert_eq!(counters.forwarded, 0);
    let known = unknown
        .with_gateway_mac(0, EthernetAddress(GATEWAY_MAC))
        .unwrap();
    let (verdict, out) = run(&mut p, &known, &syn, 1);
    assert_eq!(verdict, Verdict::Forward { port: 0 });
    assert_eq!(&out.data()[0..6], &GATEWAY_MAC);
}
