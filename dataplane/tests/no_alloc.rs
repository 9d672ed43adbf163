//! The hot path allocates nothing: after warm-up, processing bursts of established flows, new
//! flows, fragments, ICMP replies, kernel-bound and malformed frames makes zero heap allocations.
//! (A counting global allocator; this test binary has nothing else running.)

use dataplane::testing::{backend, port, vip, FrameSpec};
use dataplane::{
    BackendState, ForwardingMode, HeapPacket, Pipeline, PipelineConfig, Tables, Verdict,
};
use wire::ip_protocol;

fn tables() -> Tables {
    let mut v4 = vip(
        0,
        "203.0.113.10",
        80,
        ip_protocol::TCP,
        ForwardingMode::Ipip,
        vec![
            backend(0, "10.0.0.1", BackendState::Active),
            backend(1, "10.0.0.2", BackendState::Active),
        ],
    );
    v4.table_size = 251;
    let mut v6 = vip(
        1,
        "2001:db8:f::10",
        80,
        ip_protocol::TCP,
        ForwardingMode::Gue { port: 6080 },
        vec![backend(2, "2001:db8:b::1", BackendState::Active)],
    );
    v6.table_size = 251;
    Tables::build(vec![port(1500)], &[v4, v6]).unwrap()
}

#[test]
fn processing_bursts_allocates_nothing() {
    let tables = tables();
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = 1 << 16;
    let mut pipeline = Pipeline::new(config).unwrap();
    let mut big = FrameSpec::tcp("198.18.0.1", "203.0.113.10", 1, 80, 0x10);
    big.payload_len = 1460;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for i in 0..24u16 {
        frames.push(
            FrameSpec::tcp(
                "198.18.0.1",
                "203.0.113.10",
                1000 + i,
                80,
                if i % 2 == 0 { 0x02 } else { 0x10 },
            )
            .build(),
        );
    }
    frames.push(FrameSpec::tcp("2001:db8:c::1", "2001:db8:f::10", 5, 80, 0x02).build());
    frames.push(FrameSpec::echo("198.18.0.1", "203.0.113.10").build());
    frames.push(big.build()); // frag-needed reply
    frames.push(FrameSpec::tcp("198.18.0.1", "192.0.2.99", 5, 22, 0x02).build()); // kernel
    frames.push(vec![0u8; 7]); // malformed
    let template: Vec<HeapPacket> = frames
        .iter()
        .map(|f| HeapPacket::from_frame(f, 128))
        .collect();
    let mut verdicts = vec![Verdict::ToKernel; template.len()];
    let mut bursts: Vec<Vec<HeapPacket>> = (0..100).map(|_| template.clone()).collect();

    // Warm-up (first-touch of the flow table, lazy statics).
    pipeline.process(&tables, 0, &mut template.clone(), &mut verdicts, 0);

    let info = allocation_counter::measure(|| {
        for (i, burst) in bursts.iter_mut().enumerate() {
            pipeline.process(&tables, 0, burst, &mut verdicts, i as u64);
        }
    });
    assert_eq!(info.count_total, 0, "the packet path allocated: {info:?}");
    assert!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { .. }))
            .count()
            >= 26
    );
}
