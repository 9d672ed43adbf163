//! Rewrites a received frame, in place, into what leaves the appliance: an encapsulated packet for
//! a backend (IPIP, IPv6-in-IPv6 and the mixed families, GUE variant 1), an L2 DSR frame, or an
//! ICMP message back to the client (echo reply, fragmentation needed, packet too big).
//!
//! Every function here takes a frame whose L3 packet starts at `l3_offset` and has already been
//! trimmed of Ethernet padding, grows or shrinks the front of the buffer as needed (no payload is
//! copied), and writes fresh headers. Outer headers copy the inner DSCP/ECN (RFC 6040 normal mode),
//! carry TTL / hop limit 64 and correct lengths and checksums.
//!
//! Offsets and lengths come from the pipeline's own checked parse of the same frame; a caller
//! passing an offset past the frame is a programming error and panics on slicing (no input from
//! the network can cause it: every frame the pipeline rewrites has passed `new_checked`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wire::{
    ethertype, icmpv4_type, icmpv6_type, ip_protocol, EthernetAddress, EthernetFrame, Icmpv4Packet,
    Icmpv6Packet, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, VlanHeader,
};

use crate::packet::{resize_front, PacketBuf};

/// TTL / hop limit of every header we originate.
pub const DEFAULT_TTL: u8 = 64;
/// IPv4 minimum reassembly size; ICMPv4 errors we send stay within it (RFC 1812 4.3.2.3).
const ICMPV4_ERROR_MAX: usize = 576;
/// IPv6 minimum MTU; ICMPv6 errors we send stay within it (RFC 4443 2.4 (c)).
const ICMPV6_ERROR_MAX: usize = 1280;

/// The frame is to be grown by more than the buffer's headroom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not enough headroom in the packet buffer for the new headers")]
pub struct NoHeadroom;

/// The Ethernet header to write: addresses and an optional 802.1Q tag (the whole TCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Header {
    /// Source MAC.
    pub src: EthernetAddress,
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// 802.1Q tag control information (PCP, DEI, VLAN id), if tagged.
    pub vlan_tci: Option<u16>,
}

impl L2Header {
    /// Bytes this header takes (14, or 18 with a tag).
    #[inline]
    pub fn len(&self) -> usize {
        EthernetFrame::<&[u8]>::HEADER_LEN
            + if self.vlan_tci.is_some() {
                VlanHeader::<&[u8]>::HEADER_LEN
            } else {
                0
            }
    }

    /// Always false: an Ethernet header is never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header at the start of `frame`, with `ethertype` for the payload.
    #[inline]
    fn write(&self, frame: &mut [u8], payload_ethertype: u16) {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_dst_addr(self.dst);
        eth.set_src_addr(self.src);
        match self.vlan_tci {
            None => eth.set_ethertype(payload_ethertype),
            Some(tci) => {
                eth.set_ethertype(ethertype::VLAN);
                let mut tag =
                    VlanHeader::new_unchecked(&mut frame[EthernetFrame::<&[u8]>::HEADER_LEN..]);
                tag.set_pcp((tci >> 13) as u8);
                tag.set_dei(tci & 0x1000 != 0);
                tag.set_vlan_id(tci & 0x0fff);
                tag.set_ethertype(payload_ethertype);
            }
        }
    }
}

/// Longest L2 header we accept: Ethernet plus two 802.1Q / 802.1ad tags.
pub const MAX_L2_LEN: usize = 22;

/// The L2 header of a reply to a received frame: the request's own header, tags included, with
/// the destination set to the sender and the source to our port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyL2 {
    bytes: [u8; MAX_L2_LEN],
    len: usize,
}

impl ReplyL2 {
    /// Takes the first `l3_offset` bytes of `request` (at most [`MAX_L2_LEN`], which the caller's
    /// parser guarantees; a longer header is cut) and swaps in the reply's addresses.
    pub fn from_request(request: &[u8], l3_offset: usize, our_mac: EthernetAddress) -> ReplyL2 {
        let len = l3_offset.min(MAX_L2_LEN).min(request.len());
        let mut bytes = [0u8; MAX_L2_LEN];
        bytes[..len].copy_from_slice(&request[..len]);
        if len >= EthernetFrame::<&[u8]>::HEADER_LEN {
            let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
            let sender = eth.src_addr();
            eth.set_dst_addr(sender);
            eth.set_src_addr(our_mac);
        }
        ReplyL2 { bytes, len }
    }

    /// Bytes of the header.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True only for a request that had no Ethernet header (never produced by the pipeline).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn write(&self, frame: &mut [u8]) {
        frame[..self.len].copy_from_slice(&self.bytes[..self.len]);
    }
}

/// The outer headers of a tunnel to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Outer source (the VIP's encapsulation source of the backend's family).
    pub src: IpAddr,
    /// Outer destination (the backend).
    pub dst: IpAddr,
    /// GUE `(source port, destination port)`; `None` for plain IPIP.
    pub gue_ports: Option<(u16, u16)>,
    /// Inner DSCP/ECN byte, copied to the outer header.
    pub tos: u8,
    /// IPv6 outer flow label (flow entropy for ECMP on the way to the backend).
    pub flow_label: u32,
    /// IPv4 outer identification.
    pub ident: u16,
    /// IPv4 outer DF (set when the inner packet may not be fragmented).
    pub dont_frag: bool,
}

impl Tunnel {
    /// Bytes the tunnel adds in front of the inner IP packet (outer IP, plus UDP for GUE).
    #[inline]
    pub fn overhead(&self) -> usize {
        tunnel_overhead(self.dst.is_ipv6(), self.gue_ports.is_some())
    }
}

/// Bytes a tunnel adds: outer IPv4 (20) or IPv6 (40), plus 8 for GUE's UDP header.
#[inline]
pub fn tunnel_overhead(outer_ipv6: bool, gue: bool) -> usize {
    (if outer_ipv6 { 40 } else { 20 }) + if gue { 8 } else { 0 }
}

/// Encapsulates the IP packet at `l3_offset` (protocol `inner_protocol`: `ip_protocol::IPIP` for
/// IPv4 inside, `ip_protocol::IPV6` for IPv6 inside) and writes `l2` in front of it.
pub fn encapsulate<P: PacketBuf + ?Sized>(
    packet: &mut P,
    l3_offset: usize,
    inner_protocol: u8,
    tunnel: &Tunnel,
    l2: &L2Header,
) -> Result<(), NoHeadroom> {
    let inner_len = packet.data().len() - l3_offset;
    let ip_offset = l2.len();
    let header_len = ip_offset + tunnel.overhead();
    if !resize_front(packet, header_len as isize - l3_offset as isize) {
        return Err(NoHeadroom);
    }
    let frame = packet.data_mut();
    let (ip_protocol_field, ip_payload_len) = match tunnel.gue_ports {
        Some(_) => (ip_protocol::UDP, inner_len + 8),
        None => (inner_protocol, inner_len),
    };
    match (tunnel.src, tunnel.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            l2.write(frame, ethertype::IPV4);
            let repr = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                protocol: ip_protocol_field,
                payload_len: ip_payload_len,
                ttl: DEFAULT_TTL,
                tos: tunnel.tos,
                ident: tunnel.ident,
                dont_frag: tunnel.dont_frag,
            };
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut frame[ip_offset..]));
        }
        (src, dst) => {
            l2.write(frame, ethertype::IPV6);
            let repr = Ipv6Repr {
                src_addr: as_v6(src),
                dst_addr: as_v6(dst),
                next_header: ip_protocol_field,
                payload_len: ip_payload_len,
                hop_limit: DEFAULT_TTL,
                traffic_class: tunnel.tos,
                flow_label: tunnel.flow_label & 0x000f_ffff,
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut frame[ip_offset..]));
        }
    }
    if let Some((src_port, dst_port)) = tunnel.gue_ports {
        let udp_offset = header_len - 8;
        let mut udp = UdpPacket::new_unchecked(&mut frame[udp_offset..]);
        udp.set_src_port(src_port);
        udp.set_dst_port(dst_port);
        udp.set_len((inner_len + 8) as u16);
        udp.set_checksum(0);
        // IPv4: a zero UDP checksum means "none" (RFC 768), as Linux fou sends by default; the inner
        // packet keeps its own checksums. IPv6 requires one (RFC 8200 8.1), so compute it.
        if tunnel.dst.is_ipv6() {
            udp.fill_checksum(&tunnel.src, &tunnel.dst);
        }
    }
    Ok(())
}

/// L2 DSR: the IP packet is untouched; only the Ethernet header (and tag) is rewritten.
pub fn rewrite_l2<P: PacketBuf + ?Sized>(
    packet: &mut P,
    l3_offset: usize,
    payload_ethertype: u16,
    l2: &L2Header,
) -> Result<(), NoHeadroom> {
    if !resize_front(packet, l2.len() as isize - l3_offset as isize) {
        return Err(NoHeadroom);
    }
    l2.write(packet.data_mut(), payload_ethertype);
    Ok(())
}

/// Turns an IPv4 packet into an ICMP "fragmentation needed" (type 3, code 4) for its sender,
/// sourced from the address it was sent to (the VIP), announcing `mtu` as the next-hop MTU, and
/// quoting as much of the packet as fits in 576 bytes.
pub fn icmpv4_frag_needed<P: PacketBuf + ?Sized>(
    packet: &mut P,
    l3_offset: usize,
    mtu: u16,
    ident: u16,
    l2: &ReplyL2,
) -> Result<(), NoHeadroom> {
    let (client, vip) = {
        let ip = Ipv4Packet::new_unchecked(&packet.data()[l3_offset..]);
        (ip.src_addr(), ip.dst_addr())
    };
    let quoted = (packet.data().len() - l3_offset).min(ICMPV4_ERROR_MAX - 20 - 8);
    packet.truncate(l3_offset + quoted);
    let ip_offset = l2.len();
    let icmp_offset = ip_offset + 20;
    if !resize_front(packet, (icmp_offset + 8) as isize - l3_offset as isize) {
        return Err(NoHeadroom);
    }
    let frame = packet.data_mut();
    l2.write(frame);
    write_ipv4(
        frame,
        ip_offset,
        vip,
        client,
        ip_protocol::ICMP,
        8 + quoted,
        ident,
    );
    let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[icmp_offset..]);
    icmp.set_msg_type(icmpv4_type::DEST_UNREACHABLE);
    icmp.set_code(wire::icmpv4_code::FRAG_NEEDED);
    icmp.set_rest_of_header(0);
    icmp.set_next_hop_mtu(mtu);
    icmp.fill_checksum();
    Ok(())
}

/// Turns an IPv6 packet into an ICMPv6 Packet Too Big for its sender, sourced from the VIP,
/// carrying `mtu` and quoting as much of the packet as fits in 1280 bytes.
pub fn icmpv6_packet_too_big<P: PacketBuf + ?Sized>(
    packet: &mut P,
    l3_offset: usize,
    mtu: u32,
    l2: &ReplyL2,
) -> Result<(), NoHeadroom> {
    let (client, vip) = {
        let ip = Ipv6Packet::new_unchecked(&packet.data()[l3_offset..]);
        (ip.src_addr(), ip.dst_addr())
    };
    let quoted = (packet.data().len() - l3_offset).min(ICMPV6_ERROR_MAX - 40 - 8);
    packet.truncate(l3_offset + quoted);
    let ip_offset = l2.len();
    let icmp_offset = ip_offset + 40;
    if !resize_front(packet, (icmp_offset + 8) as isize - l3_offset as isize) {
        return Err(NoHeadroom);
    }
    let frame = packet.data_mut();
    l2.write(frame);
    write_ipv6(
        frame,
        ip_offset,
        vip,
        client,
        ip_protocol::ICMPV6,
        8 + quoted,
    );
    let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[icmp_offset..]);
    icmp.set_msg_type(icmpv6_type::PACKET_TOO_BIG);
    icmp.set_code(0);
    icmp.set_mtu(mtu);
    icmp.fill_checksum(&vip, &client);
    Ok(())
}

/// Answers an ICMP(v6) echo request in place: MACs and addresses swapped, type changed,
/// checksums fixed incrementally. The frame keeps its length and tags.
pub fn echo_reply<P: PacketBuf + ?Sized>(
    packet: &mut P,
    l3_offset: usize,
    ipv6: bool,
    l4_offset: usize,
    l2: &ReplyL2,
) {
    let frame = packet.data_mut();
    l2.write(frame);
    let l3 = l3_offset;
    let l4 = l4_offset;
    if ipv6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[l3..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(DEFAULT_TTL);
        // Swapping the addresses leaves the pseudo-header sum as it was.
        let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[l4..]);
        let old = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
        icmp.set_msg_type(icmpv6_type::ECHO_REPLY);
        let new = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
        let sum = wire::checksum::update_u16(icmp.checksum(), old, new);
        icmp.set_checksum(sum);
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[l3..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(DEFAULT_TTL);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[l4..]);
        let old = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
        icmp.set_msg_type(icmpv4_type::ECHO_REPLY);
        let new = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
        let sum = wire::checksum::update_u16(icmp.checksum(), old, new);
        icmp.set_checksum(sum);
    }
}

fn write_ipv4(
    frame: &mut [u8],
    at: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    ident: u16,
) {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len,
        ttl: DEFAULT_TTL,
        tos: 0,
        ident,
        dont_frag: false,
    };
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut frame[at..]));
}

fn write_ipv6(
    frame: &mut [u8],
    at: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload_len: usize,
) {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header,
        payload_len,
        hop_limit: DEFAULT_TTL,
        traffic_class: 0,
        flow_label: 0,
    };
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut frame[at..]));
}

fn as_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}
