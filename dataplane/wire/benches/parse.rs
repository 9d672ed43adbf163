//! Hot-path figures: dissecting an Ethernet/IPv4/TCP frame to its 5-tuple, and the checksum.
//!
//! Run: `cargo bench -p wire --bench parse`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wire::{
    ethertype, ip_protocol, EthernetFrame, Ipv4Packet, Ipv4Repr, TcpFlags, TcpPacket, TcpRepr,
};

fn frame() -> Vec<u8> {
    let mut buf = vec![0u8; 14 + 20 + 20 + 64];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_ethertype(ethertype::IPV4);
    let ip = Ipv4Repr {
        src_addr: [198, 51, 100, 7].into(),
        dst_addr: [203, 0, 113, 10].into(),
        protocol: ip_protocol::TCP,
        payload_len: 20 + 64,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    };
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp);
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1,
        ack_number: 2,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window_len: 1024,
        payload_len: 64,
    };
    let mut tp = TcpPacket::new_unchecked(ipp.payload_mut());
    tcp.emit(&mut tp);
    tp.fill_checksum(&IpAddr::V4(ip.src_addr), &IpAddr::V4(ip.dst_addr));
    buf
}

/// What the pipeline does per packet before the flow lookup.
#[inline(never)]
fn five_tuple(data: &[u8]) -> Option<(u32, u32, u16, u16, u8, u8)> {
    let eth = EthernetFrame::new_checked(data).ok()?;
    if eth.ethertype() != ethertype::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.into_payload()).ok()?;
    if ip.protocol() != ip_protocol::TCP || ip.is_fragment() {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.into_payload()).ok()?;
    Some((
        u32::from(ip.src_addr()),
        u32::from(ip.dst_addr()),
        tcp.src_port(),
        tcp.dst_port(),
        tcp.flags().0,
        ip.ttl(),
    ))
}

fn benches(c: &mut Criterion) {
    let data = frame();
    assert!(five_tuple(&data).is_some());
    c.bench_function("eth_ipv4_tcp_five_tuple", |b| {
        b.iter(|| five_tuple(black_box(&data)))
    });
    c.bench_function("ipv4_header_verify_checksum", |b| {
        let ip = Ipv4Packet::new_checked(&data[14..]).unwrap();
        b.iter(|| black_box(&ip).verify_checksum())
    });
    let mut group = c.benchmark_group("checksum_sum");
    for len in [20usize, 64, 1500] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |b| {
            b.iter(|| wire::checksum::sum(black_box(&payload)))
        });
    }
    group.finish();
}

criterion_group!(parse, benches);
criterion_main!(parse);
