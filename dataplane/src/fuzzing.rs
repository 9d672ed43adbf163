//! The pipeline fuzz harness, shared by the cargo-fuzz target (`dataplane/fuzz`) and the test
//! that replays its corpus on stable (`tests/fuzz_corpus.rs`).
//!
//! The input is split into frames at each `0xFF 0xFE 0xFD` marker (so one input can carry
//! several frames of one flow, e.g. a SYN then its ICMP error); each frame runs through one
//! pipeline over the tables of `scripts/oracle/setup.toml`, which has every forwarding mode,
//! family mix and hash policy. Invariants checked: no panic, one counted verdict per frame, and
//! a forwarded frame is never empty or larger than the input plus the headroom we may use.
#![doc(hidden)]

use std::sync::OnceLock;

use crate::counters::CounterSnapshot;
use crate::packet::{HeapPacket, PacketBuf};
use crate::pipeline::{Pipeline, PipelineConfig, Verdict};
use crate::tables::Tables;

const SETUP: &str = include_str!("../../scripts/oracle/setup.toml");
const MARKER: &[u8] = &[0xFF, 0xFE, 0xFD];

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| match crate::setup::parse(SETUP) {
        Ok(t) => t,
        Err(e) => panic!("scripts/oracle/setup.toml: {e}"),
    })
}

/// Runs `data` (frames separated by `0xFF 0xFE 0xFD`) through a fresh pipeline; panics when an
/// invariant breaks.
pub fn run_frames(data: &[u8]) {
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = 1024;
    // Small counter arrays: a fresh pipeline per input must be cheap (the setup has 14 VIPs).
    config.max_vips = 64;
    config.max_backends = 256;
    let Ok(mut pipeline) = Pipeline::new(config) else {
        panic!("pipeline config")
    };
    let frames = split(data);
    let mut burst: Vec<HeapPacket> = frames
        .iter()
        .map(|f| HeapPacket::from_frame(f, HeapPacket::DEFAULT_HEADROOM))
        .collect();
    let mut verdicts = vec![Verdict::ToKernel; burst.len()];
    pipeline.process(tables(), 0, &mut burst, &mut verdicts, 1);
    for ((packet, verdict), input) in burst.iter().zip(&verdicts).zip(&frames) {
        if let Verdict::Forward { .. } = verdict {
            let len = packet.data().len();
            assert!(len >= 14, "forwarded a {len}-byte frame");
            assert!(
                len <= input.len() + HeapPacket::DEFAULT_HEADROOM,
                "forwarded frame grew past the headroom"
            );
        }
    }
    let s = CounterSnapshot::sum([&*pipeline.counters()]);
    assert_eq!(s.rx.packets, frames.len() as u64);
    assert_eq!(
        s.forwarded + s.to_kernel + s.dropped_total(),
        frames.len() as u64,
        "every frame counted once"
    );
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        frames.push(&rest[..at]);
        rest = &rest[at + MARKER.len()..];
    }
    frames.push(rest);
    frames
}
