//! `vipd-dpdk-pcap`: runs the frames of a pcap file through the engine over a DPDK `net_pcap`
//! port and writes what it sends.
//!
//! ```text
//! vipd-dpdk-pcap --setup SETUP.toml --input IN.pcap --output OUT.pcap [--idle-ms 500]
//! ```
//! The EAL gets one `net_pcap` vdev (`rx_pcap=IN.pcap,tx_pcap=OUT.pcap`), no hugepages and no PCI;
//! the engine runs one lcore on it with the tables of `SETUP.toml` (port 0 is the pcap port).
//! When nothing has been received for `--idle-ms` (after the last input frame, or from the start
//! for an empty file) the engine stops and its figures go to stdout as JSON. `OUT.pcap` holds
//! every frame the engine sent, with DPDK's send time as the timestamp.
//!
//! Unlike `vipd-pcap` there are no per-frame verdicts: the engine reports counts, not which
//! input frame became which output frame, and the clock is the wall clock, not the capture's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dataplane::dpdk_io::{leak_mempool, start_port, DpdkIo};
use dataplane::{setup, DropReason, Engine, EngineConfig, IdlePolicy, TablesHandle};
use dpdk::{Eal, PortConfig, RuntimeDir};

/// Bytes per mbuf: the 128-byte headroom and a 16 KiB frame. net_pcap splits a frame longer than
/// one mbuf into a chain, and the engine sees only the first segment of a chain (it would drop
/// the frame as malformed), so jumbo test frames need big mbufs.
const PCAP_DATA_ROOM: u16 = 128 + 16 * 1024;

struct Args {
    setup: String,
    input: String,
    output: String,
    idle_ms: u64,
}

const USAGE: &str =
    "usage: vipd-dpdk-pcap --setup SETUP.toml --input IN.pcap --output OUT.pcap [--idle-ms 500]";

fn parse_args() -> anyhow::Result<Args> {
    let mut setup = None;
    let mut input = None;
    let mut output = None;
    let mut idle_ms = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--setup" => &mut setup,
            "--input" => &mut input,
            "--output" => &mut output,
            "--idle-ms" => &mut idle_ms,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        };
        *slot = Some(it.next().with_context(|| format!("{flag} needs a value"))?);
    }
    let need =
        |v: Option<String>, name: &str| v.with_context(|| format!("missing {name}; {USAGE}"));
    let idle_ms = match idle_ms {
        Some(text) => text
            .parse()
            .with_context(|| format!("--idle-ms {text:?}: expected milliseconds, e.g. 500"))?,
        None => 500,
    };
    Ok(Args {
        setup: need(setup, "--setup")?,
        input: need(input, "--input")?,
        output: need(output, "--output")?,
        idle_ms,
    })
}

/// A vdev argument value cannot contain the separators of DPDK's `key=value,key=value` syntax.
fn vdev_path(path: &str, flag: &str) -> anyhow::Result<String> {
    if path.is_empty() || path.contains([',', '=', ' ']) {
        bail!(
            "{flag} {path:?}: DPDK vdev arguments cannot hold ',', '=' or spaces; use another path"
        );
    }
    Ok(path.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let text =
        std::fs::read_to_string(&args.setup).with_context(|| format!("reading {}", args.setup))?;
    let tables = setup::parse(&text).with_context(|| format!("{}: invalid setup", args.setup))?;
    // net_pcap fails late and vaguely on a missing input; say it here.
    std::fs::metadata(&args.input).with_context(|| format!("opening {}", args.input))?;
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        vdev_path(&args.input, "--input")?,
        vdev_path(&args.output, "--output")?
    );
    let prefix_name = format!("vipd-dpdk-pcap-{}", std::process::id());
    // The leaked EAL is never cleaned up; remove the (empty) runtime directory it leaves, on
    // every exit from here on.
    let _runtime_dir = RuntimeDir::new(&prefix_name);
    let mut eal_args = dpdk::virtual_device_args(&prefix_name);
    eal_args.push(vdev);
    let eal_args: Vec<&str> = eal_args.iter().map(String::as_str).collect();
    // The engine's I/O is 'static: the EAL, the pool and the port live until the process exits.
    let eal: &'static Eal = Box::leak(Box::new(
        Eal::init(&eal_args).context("starting the DPDK EAL with a net_pcap port")?,
    ));
    let port_id = eal
        .port_by_name("net_pcap0")
        .context("finding the net_pcap port")?;
    if tables.port(port_id).is_none() {
        bail!(
            "{}: the net_pcap port is port {port_id} but the setup has no such [[port]]",
            args.setup
        );
    }
    let pool = leak_mempool(eal, "vipd_pcap_pool", 4095, 256, PCAP_DATA_ROOM)
        .context("creating the mbuf pool")?;
    let queues =
        start_port(pool, port_id, &PortConfig::default()).context("starting the net_pcap port")?;
    let io = DpdkIo::new(queues).context("building the lcore's I/O")?;
    let io_stats = io.stats();

    let config = EngineConfig {
        ports: vec![port_id],
        idle: IdlePolicy {
            spin_polls: 256,
            sleep_us: 100,
        },
        ..EngineConfig::default()
    };
    let engine =
        Engine::start_one(config, io, TablesHandle::new(tables)).context("starting the engine")?;

    let idle = Duration::from_millis(args.idle_ms);
    let mut last_rx = engine.total_stats().rx_packets;
    let mut last_change = Instant::now();
    while last_change.elapsed() < idle {
        std::thread::sleep(Duration::from_millis(10));
        let rx = engine.total_stats().rx_packets;
        if rx != last_rx {
            last_rx = rx;
            last_change = Instant::now();
        }
    }
    let report = engine.stop().context("stopping the engine")?;

    let t = report.total;
    let c = &report.counters;
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .filter(|r| c.dropped(**r) > 0)
        .map(|r| (r.as_str().to_string(), c.dropped(*r).into()))
        .collect();
    let summary = serde_json::json!({
        "rx_packets": t.rx_packets,
        "rx_bytes": t.rx_bytes,
        "tx_packets": t.tx_packets,
        "tx_bytes": t.tx_bytes,
        "tx_dropped": t.tx_dropped,
        "kernel_packets": t.kernel_packets,
        "kernel_discarded": io_stats.kernel_discarded(),
        "dropped": t.dropped,
        "unroutable": t.unroutable,
        "forwarded": c.forwarded,
        "to_kernel": c.to_kernel,
        "icmp_generated": c.icmp_generated,
        "drops": drops,
    });
    println!("{summary}");
    Ok(())
}
