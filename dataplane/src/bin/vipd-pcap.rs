//! `vipd-pcap`: runs the frames of a pcap file through one pipeline and writes what it sends.
//!
//! The golden-pcap oracle uses it: Scapy writes the input frames, this tool forwards them with
//! the real pipeline (in bursts, packet timestamps as the clock), and Scapy checks the output.
//!
//! ```text
//! vipd-pcap --setup SETUP.toml --input IN.pcap --output OUT.pcap --verdicts OUT.jsonl
//! ```
//! `OUT.pcap` holds every frame the pipeline sends (to backends or back to clients), in input
//! order, with the input frame's timestamp. `OUT.jsonl` has one line per input frame:
//! `{"index":0,"verdict":"forward","port":0,"output_index":0}`,
//! `{"index":1,"verdict":"kernel"}` or `{"index":2,"verdict":"drop","reason":"tcp_malformed"}`.
//! A summary of the counters goes to stdout as JSON.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use dataplane::{
    setup, CounterSnapshot, DropReason, HeapPacket, PacketBuf, Pipeline, PipelineConfig, Verdict,
};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;

const BURST: usize = 32;

struct Args {
    setup: String,
    input: String,
    output: String,
    verdicts: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut setup = None;
    let mut input = None;
    let mut output = None;
    let mut verdicts = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--setup" => &mut setup,
            "--input" => &mut input,
            "--output" => &mut output,
            "--verdicts" => &mut verdicts,
            "-h" | "--help" => {
                println!("usage: vipd-pcap --setup SETUP.toml --input IN.pcap --output OUT.pcap --verdicts OUT.jsonl");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        };
        *slot = Some(it.next().with_context(|| format!("{flag} needs a value"))?);
    }
    let need =
        |v: Option<String>, name: &str| v.with_context(|| format!("missing {name}; see --help"));
    Ok(Args {
        setup: need(setup, "--setup")?,
        input: need(input, "--input")?,
        output: need(output, "--output")?,
        verdicts: need(verdicts, "--verdicts")?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let text =
        std::fs::read_to_string(&args.setup).with_context(|| format!("reading {}", args.setup))?;
    let tables = setup::parse(&text).with_context(|| format!("{}: invalid setup", args.setup))?;
    let mut reader = PcapReader::new(
        File::open(&args.input).with_context(|| format!("opening {}", args.input))?,
    )
    .with_context(|| format!("{}: not a pcap file", args.input))?;
    if reader.header().datalink != DataLink::ETHERNET {
        bail!(
            "{}: link type {:?}, expected Ethernet",
            args.input,
            reader.header().datalink
        );
    }
    let mut writer = PcapWriter::new(BufWriter::new(File::create(&args.output)?))?;
    let mut verdict_out = BufWriter::new(File::create(&args.verdicts)?);
    let mut pipeline = Pipeline::new(PipelineConfig::default()).context("creating the pipeline")?;

    let mut frames: Vec<(Duration, HeapPacket)> = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.with_context(|| format!("{}: reading a frame", args.input))?;
        frames.push((
            packet.timestamp,
            HeapPacket::from_frame(&packet.data, HeapPacket::DEFAULT_HEADROOM),
        ));
    }

    let mut index = 0usize;
    let mut output_index = 0usize;
    let mut verdicts = [Verdict::ToKernel; BURST];
    for chunk in frames.chunks_mut(BURST) {
        // One clock reading per burst, as a polling core does: the burst's first timestamp.
        let now_ms = chunk.first().map_or(0, |(ts, _)| ts.as_millis() as u64);
        let timestamps: Vec<Duration> = chunk.iter().map(|(ts, _)| *ts).collect();
        let mut burst: Vec<HeapPacket> = chunk.iter().map(|(_, p)| p.clone()).collect();
        pipeline.process(&tables, 0, &mut burst, &mut verdicts, now_ms);
        for ((packet, verdict), ts) in burst.iter().zip(verdicts.iter()).zip(timestamps) {
            let line = match verdict {
                Verdict::Forward { port } => {
                    let data = packet.data();
                    writer.write_packet(&PcapPacket::new(ts, data.len() as u32, data))?;
                    output_index += 1;
                    format!(
                        "{{\"index\":{index},\"verdict\":\"forward\",\"port\":{port},\"output_index\":{}}}",
                        output_index - 1
                    )
                }
                Verdict::ToKernel => format!("{{\"index\":{index},\"verdict\":\"kernel\"}}"),
                Verdict::Drop(reason) => {
                    format!(
                        "{{\"index\":{index},\"verdict\":\"drop\",\"reason\":\"{}\"}}",
                        reason.as_str()
                    )
                }
            };
            writeln!(verdict_out, "{line}")?;
            index += 1;
        }
    }
    verdict_out.flush()?;
    let counters = pipeline.counters();
    let s = CounterSnapshot::sum([&*counters]);
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .filter(|r| s.dropped(**r) > 0)
        .map(|r| (r.as_str().to_string(), s.dropped(*r).into()))
        .collect();
    let summary = serde_json::json!({
        "rx_packets": s.rx.packets,
        "forwarded": s.forwarded,
        "to_kernel": s.to_kernel,
        "icmp_generated": s.icmp_generated,
        "flows": pipeline.flows().len(),
        "drops": drops,
    });
    println!("{summary}");
    Ok(())
}
