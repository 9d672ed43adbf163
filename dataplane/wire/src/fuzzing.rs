//! Entry points for fuzzers and corpus replay; not part of the stable API.
//!
//! [`walk_frame`] dissects a frame top-down the way the dataplane does (Ethernet, up to two
//! VLAN tags, ARP / IPv4 / IPv6 with extension headers, TCP / UDP / ICMPv4 / ICMPv6 including
//! the packet quoted in ICMP errors, GUE inner packets) and calls every accessor on the way; it
//! also runs every view's `new_checked` directly on the raw bytes. Any panic is a bug.

#![doc(hidden)]

use core::hint::black_box;
use std::net::IpAddr;

use crate::*;

/// How deep encapsulations (GUE, ICMP quotes) are followed.
const MAX_DEPTH: u8 = 3;

/// Dissects `data` as an Ethernet frame, touching every field. Never panics on any input.
pub fn walk_frame(data: &[u8]) {
    walk_raw(data);
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    black_box((frame.dst_addr(), frame.src_addr(), frame.ethertype()));
    black_box(frame.dst_addr().is_multicast() || frame.src_addr().is_broadcast());
    let _ = black_box(EthernetRepr::parse(&frame));
    let mut kind = frame.ethertype();
    let mut payload = frame.payload();
    for _ in 0..2 {
        if kind != ethertype::VLAN && kind != ethertype::QINQ {
            break;
        }
        let Ok(tag) = VlanHeader::new_checked(payload) else {
            return;
        };
        black_box((tag.pcp(), tag.dei(), tag.vlan_id()));
        let _ = black_box(VlanRepr::parse(&tag));
        kind = tag.ethertype();
        payload = tag.into_payload();
    }
    match kind {
        ethertype::ARP => walk_arp(payload),
        ethertype::IPV4 => walk_ipv4(payload, 0),
        ethertype::IPV6 => walk_ipv6(payload, 0),
        _ => {}
    }
}

/// Every view's `new_checked` on the raw bytes, with all accessors.
fn walk_raw(data: &[u8]) {
    walk_arp(data);
    if let Ok(tag) = VlanHeader::new_checked(data) {
        black_box((
            tag.pcp(),
            tag.dei(),
            tag.vlan_id(),
            tag.ethertype(),
            tag.payload(),
        ));
    }
    walk_ipv4(data, MAX_DEPTH);
    walk_ipv6(data, MAX_DEPTH);
    let v4 = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    walk_tcp(data, &v4, &v4);
    walk_udp(data, &v6, &v6, MAX_DEPTH);
    walk_icmpv4(data, MAX_DEPTH);
    walk_icmpv6(data, &v6, &v6, MAX_DEPTH);
    walk_gue(data, MAX_DEPTH);
    if let Ok(frag) = Ipv6FragmentHeader::new_checked(data) {
        black_box((
            frag.next_header(),
            frag.frag_offset(),
            frag.more_frags(),
            frag.ident(),
        ));
        let _ = black_box((frag.payload(), Ipv6FragmentRepr::parse(&frag)));
    }
    if let Some(&first) = data.first() {
        let _ = black_box(ipv6_upper_layer(first, data.get(1..).unwrap_or_default()));
    }
    black_box(checksum::sum(data));
}

fn walk_arp(data: &[u8]) {
    if let Ok(arp) = ArpPacket::new_checked(data) {
        black_box((arp.hardware_type(), arp.protocol_type(), arp.hardware_len()));
        black_box((
            arp.protocol_len(),
            arp.operation(),
            arp.source_hardware_addr(),
        ));
        black_box((arp.source_protocol_addr(), arp.target_hardware_addr()));
        let _ = black_box((arp.target_protocol_addr(), ArpRepr::parse(&arp)));
    }
}

fn touch_ipv4<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) {
    black_box((
        p.version(),
        p.header_len(),
        p.tos(),
        p.dscp(),
        p.ecn(),
        p.total_len(),
    ));
    black_box((
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
        p.is_fragment(),
    ));
    black_box((
        p.ttl(),
        p.protocol(),
        p.checksum(),
        p.src_addr(),
        p.dst_addr(),
    ));
    let _ = black_box((
        p.options(),
        p.payload(),
        p.verify_checksum(),
        Ipv4Repr::parse(p),
    ));
}

fn walk_ipv4(data: &[u8], depth: u8) {
    let Ok(p) = Ipv4Packet::new_checked(data) else {
        return;
    };
    touch_ipv4(&p);
    if p.frag_offset() != 0 || depth >= MAX_DEPTH {
        return; // non-first fragments carry no upper-layer header
    }
    let (src, dst) = (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()));
    walk_l4(p.protocol(), p.payload(), &src, &dst, depth);
}

fn touch_ipv6<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Option<Ipv6UpperLayer> {
    black_box((
        p.version(),
        p.traffic_class(),
        p.dscp(),
        p.ecn(),
        p.flow_label(),
    ));
    black_box((
        p.payload_len(),
        p.next_header(),
        p.hop_limit(),
        p.src_addr(),
        p.dst_addr(),
    ));
    let _ = black_box((p.payload(), Ipv6Repr::parse(p)));
    let upper = p.upper_layer();
    black_box(upper).ok()
}

fn walk_ipv6(data: &[u8], depth: u8) {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let Some(upper) = touch_ipv6(&p) else {
        return;
    };
    if upper.fragment.is_some_and(|f| f.offset != 0) || depth >= MAX_DEPTH {
        return;
    }
    let (src, dst) = (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()));
    if let Some(l4) = p.payload().get(upper.offset..) {
        walk_l4(upper.protocol, l4, &src, &dst, depth);
    }
}

fn walk_l4(protocol: u8, data: &[u8], src: &IpAddr, dst: &IpAddr, depth: u8) {
    match protocol {
        ip_protocol::TCP => walk_tcp(data, src, dst),
        ip_protocol::UDP => walk_udp(data, src, dst, depth),
        ip_protocol::ICMP => walk_icmpv4(data, depth),
        ip_protocol::ICMPV6 => walk_icmpv6(data, src, dst, depth),
        ip_protocol::IPIP => walk_ipv4(data, depth + 1),
        ip_protocol::IPV6 => walk_ipv6(data, depth + 1),
        _ => {}
    }
}

fn walk_tcp(data: &[u8], src: &IpAddr, dst: &IpAddr) {
    if let Ok(t) = TcpPacket::new_checked(data) {
        let flags = t.flags();
        black_box((
            t.src_port(),
            t.dst_port(),
            t.seq_number(),
            t.ack_number(),
            t.header_len(),
        ));
        black_box((
            flags.fin(),
            flags.syn(),
            flags.rst(),
            flags.psh(),
            flags.ack(),
            flags.urg(),
        ));
        black_box((
            t.window_len(),
            t.checksum(),
            t.urgent_at(),
            t.options(),
            t.payload(),
        ));
        let _ = black_box((t.verify_checksum(src, dst), TcpRepr::parse(&t, src, dst)));
    }
}

fn walk_udp(data: &[u8], src: &IpAddr, dst: &IpAddr, depth: u8) {
    let Ok(u) = UdpPacket::new_checked(data) else {
        return;
    };
    black_box((
        u.src_port(),
        u.dst_port(),
        u.len(),
        u.checksum(),
        u.payload(),
    ));
    let _ = black_box((u.verify_checksum(src, dst), UdpRepr::parse(&u, src, dst)));
    walk_gue(u.payload(), depth);
}

fn walk_gue(data: &[u8], depth: u8) {
    if let Ok(g) = GueHeader::new_checked(data) {
        black_box((
            g.variant(),
            g.is_control(),
            g.hlen(),
            g.protocol(),
            g.flags(),
        ));
        let _ = black_box((g.header_len(), g.options(), g.payload(), GueRepr::parse(&g)));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(inner) = gue_inner(data) else {
        return;
    };
    let Some(rest) = data.get(inner.offset..) else {
        return;
    };
    // The inner packet has its own addresses; the outer ones only matter for checksums.
    let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    walk_l4(inner.protocol, rest, &unspecified, &unspecified, depth + 1);
}

fn walk_icmpv4(data: &[u8], depth: u8) {
    let Ok(icmp) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    black_box((
        icmp.msg_type(),
        icmp.code(),
        icmp.checksum(),
        icmp.rest_of_header(),
    ));
    black_box((icmp.echo_ident(), icmp.echo_seq_no(), icmp.next_hop_mtu()));
    black_box((icmp.payload(), icmp.verify_checksum()));
    if !icmpv4_type::is_error(icmp.msg_type()) || depth >= MAX_DEPTH {
        return;
    }
    let Ok(quoted) = Ipv4Packet::new_checked_truncated(icmp.payload()) else {
        return;
    };
    touch_ipv4(&quoted);
    let (src, dst) = (IpAddr::V4(quoted.src_addr()), IpAddr::V4(quoted.dst_addr()));
    if quoted.frag_offset() == 0 {
        walk_l4(quoted.protocol(), quoted.payload(), &src, &dst, depth + 1);
    }
}

fn walk_icmpv6(data: &[u8], src: &IpAddr, dst: &IpAddr, depth: u8) {
    let Ok(icmp) = Icmpv6Packet::new_checked(data) else {
        return;
    };
    black_box((
        icmp.msg_type(),
        icmp.code(),
        icmp.checksum(),
        icmp.rest_of_header(),
    ));
    black_box((
        icmp.mtu(),
        icmp.echo_ident(),
        icmp.echo_seq_no(),
        icmp.payload(),
    ));
    black_box(icmp.verify_checksum_ip(src, dst));
    if !icmpv6_type::is_error(icmp.msg_type()) || depth >= MAX_DEPTH {
        return;
    }
    let Ok(quoted) = Ipv6Packet::new_checked_truncated(icmp.payload()) else {
        return;
    };
    let Some(upper) = touch_ipv6(&quoted) else {
        return;
    };
    let (src, dst) = (IpAddr::V6(quoted.src_addr()), IpAddr::V6(quoted.dst_addr()));
    if upper.fragment.is_none_or(|f| f.offset == 0) {
        if let Some(l4) = quoted.payload().get(upper.offset..) {
            walk_l4(upper.protocol, l4, &src, &dst, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn walk_frame_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            walk_frame(&data);
        }

        #[test]
        fn walk_frame_never_panics_on_plausible_headers(
            kind in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100)],
            first in prop_oneof![Just(0x45u8), Just(0x60), Just(0x00)],
            tail in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut data = vec![0u8; 12];
            data.extend_from_slice(&kind.to_be_bytes());
            data.push(first);
            data.extend_from_slice(&tail);
            walk_frame(&data);
        }
    }
}
