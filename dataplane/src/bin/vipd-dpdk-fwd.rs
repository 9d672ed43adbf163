//! `vipd-dpdk-fwd`: forwarding throughput of the engine over DPDK virtual ports, for
//! `scripts/bench-dataplane`.
//!
//! ```text
//! vipd-dpdk-fwd --setup SETUP.toml [--mode ring|null] [--seconds 10] [--warmup-ms 1000]
//!               [--engine-cpu 1] [--gen-cpu 0] [--vip 203.0.113.10] [--vip-port 80] [--flows 1024]
//! ```
//! The EAL runs on virtual devices only (no hugepages, no PCI); the engine runs one lcore with
//! the tables of `SETUP.toml` on port 0, pinned to `--engine-cpu`.
//!
//! * `--mode ring` (default): two `net_ring` ports wired back to back. The engine polls port 0;
//!   a generator thread pinned to `--gen-cpu` keeps port 1's transmit ring full of pre-built TCP
//!   ACK frames (54 bytes, `--flows` client 5-tuples) to `--vip:--vip-port`, and receives and
//!   frees whatever the engine sends back. Every frame takes the full VIP path: parse, flow
//!   table, Maglev, IPIP encapsulation in the mbuf's headroom, TX. The figure is frames the
//!   engine sent per second.
//! * `--mode null`: one `net_null` port. Its RX makes zero-filled 64-byte frames without bound;
//!   they are not for a VIP, so the engine hands them to the exception path (which frees them).
//!   That measures RX (mbuf allocation), parse and verdict, no TX. The figure is frames the
//!   engine received per second.
//!
//! After `--warmup-ms` the tool counts for `--seconds`, stops, and prints one JSON object.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dataplane::dpdk_io::{leak_mempool, start_port, DpdkIo};
use dataplane::testing::FrameSpec;
use dataplane::{setup, Engine, EngineConfig, IdlePolicy, TablesHandle};
use dpdk::{Eal, Mbuf, Mempool, PortConfig, PortQueue, RuntimeDir};

const USAGE: &str = "usage: vipd-dpdk-fwd --setup SETUP.toml [--mode ring|null] [--seconds 10] \
     [--warmup-ms 1000] [--engine-cpu 1] [--gen-cpu 0] [--vip 203.0.113.10] [--vip-port 80] \
     [--flows 1024]";

/// Frames per generator burst.
const GEN_BURST: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ring,
    Null,
}

struct Args {
    setup: String,
    mode: Mode,
    seconds: f64,
    warmup_ms: u64,
    engine_cpu: usize,
    gen_cpu: usize,
    vip: Ipv4Addr,
    vip_port: u16,
    flows: u16,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        setup: String::new(),
        mode: Mode::Ring,
        seconds: 10.0,
        warmup_ms: 1000,
        engine_cpu: 1,
        gen_cpu: 0,
        vip: Ipv4Addr::new(203, 0, 113, 10),
        vip_port: 80,
        flows: 1024,
    };
    let mut setup = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        let bad = || format!("{flag} {value:?}: not a valid value; {USAGE}");
        match flag.as_str() {
            "--setup" => setup = Some(value.clone()),
            "--mode" => {
                args.mode = match value.as_str() {
                    "ring" => Mode::Ring,
                    "null" => Mode::Null,
                    _ => bail!("--mode {value:?}: expected ring or null"),
                }
            }
            "--seconds" => args.seconds = value.parse().with_context(bad)?,
            "--warmup-ms" => args.warmup_ms = value.parse().with_context(bad)?,
            "--engine-cpu" => args.engine_cpu = value.parse().with_context(bad)?,
            "--gen-cpu" => args.gen_cpu = value.parse().with_context(bad)?,
            "--vip" => args.vip = value.parse().with_context(bad)?,
            "--vip-port" => args.vip_port = value.parse().with_context(bad)?,
            "--flows" => args.flows = value.parse().with_context(bad)?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    args.setup = setup.with_context(|| format!("missing --setup; {USAGE}"))?;
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number of seconds, e.g. 10");
    }
    if args.flows == 0 {
        bail!("--flows must be at least 1");
    }
    Ok(args)
}

/// TCP ACKs from `flows` client 5-tuples to the VIP.
fn vip_frames(vip: Ipv4Addr, vip_port: u16, flows: u16) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|flow| {
            let [hi, lo] = flow.to_be_bytes();
            let src = Ipv4Addr::new(198, 18, hi, lo).to_string();
            FrameSpec::tcp(
                &src,
                &vip.to_string(),
                10_000 + flow % 50_000,
                vip_port,
                0x10,
            )
            .build()
        })
        .collect()
}

/// The wire side of the ring pair: keeps `queue`'s TX ring full of copies of `frames` (fresh
/// mbufs from `pool`) and frees what the engine sends back, until `stop`. Returns how many
/// loops it made and in how many the pool was empty.
fn generate(
    pool: &'static Mempool<'static>,
    mut queue: PortQueue<'static>,
    frames: &[Vec<u8>],
    stop: &AtomicBool,
    sent_total: &AtomicU64,
    returned_total: &AtomicU64,
) -> (u64, u64) {
    let mut out: [Option<Mbuf<'static>>; GEN_BURST] = std::array::from_fn(|_| None);
    let mut back: [Option<Mbuf<'static>>; GEN_BURST] = std::array::from_fn(|_| None);
    let mut next = 0usize;
    let mut sent = 0u64;
    let mut returned = 0u64;
    let mut alloc_failed = 0u64;
    let mut loops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        loops += 1;
        for slot in out.iter_mut().filter(|s| s.is_none()) {
            // `next` stays below frames.len() (reset on wrap); frames is not empty (--flows >= 1).
            let Some(frame) = frames.get(next) else { break };
            next += 1;
            if next == frames.len() {
                next = 0;
            }
            match pool.alloc_frame(frame) {
                Some(m) => *slot = Some(m),
                None => {
                    // Pool empty for now: the engine and the rings hold the mbufs.
                    alloc_failed += 1;
                    break;
                }
            }
        }
        sent += queue.tx_burst(&mut out) as u64;
        let n = queue.rx_burst(&mut back);
        returned += n as u64;
        back.iter_mut().for_each(|m| drop(m.take()));
        sent_total.store(sent, Ordering::Relaxed);
        returned_total.store(returned, Ordering::Relaxed);
    }
    (loops, alloc_failed)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let text =
        std::fs::read_to_string(&args.setup).with_context(|| format!("reading {}", args.setup))?;
    let tables = setup::parse(&text).with_context(|| format!("{}: invalid setup", args.setup))?;
    if tables.port(0).is_none() {
        bail!(
            "{}: the engine's port is port 0; add a [[port]]",
            args.setup
        );
    }

    let prefix_name = format!("vipd-dpdk-fwd-{}", std::process::id());
    // The leaked EAL never cleans up; remove its (empty) runtime directory on every exit.
    let _runtime_dir = RuntimeDir::new(&prefix_name);
    let eal_args = dpdk::virtual_device_args(&prefix_name);
    let eal_args: Vec<&str> = eal_args.iter().map(String::as_str).collect();
    let eal: &'static Eal = Box::leak(Box::new(
        Eal::init(&eal_args).context("starting the DPDK EAL")?,
    ));
    let pool = leak_mempool(eal, "vipd_fwd_pool", 16383, 256, Mempool::DEFAULT_DATA_ROOM)
        .context("creating the mbuf pool")?;

    let (engine_port, wire_port) = match args.mode {
        Mode::Ring => {
            let (a, b) = eal
                .create_ring_pair("fwd_a", "fwd_b")
                .context("creating the net_ring pair")?;
            (a, Some(b))
        }
        Mode::Null => (
            eal.create_vdev("net_null0", "")
                .context("creating the net_null port")?,
            None,
        ),
    };
    if engine_port != 0 {
        bail!("the engine's port came up as port {engine_port}, not 0");
    }
    let queues = start_port(pool, engine_port, &PortConfig::default())
        .context("starting the engine's port")?;
    let io = DpdkIo::new(queues).context("building the lcore's I/O")?;

    let stop = Arc::new(AtomicBool::new(false));
    let gen_sent = Arc::new(AtomicU64::new(0));
    let gen_returned = Arc::new(AtomicU64::new(0));
    let mut generator = None;
    if let Some(wire_port) = wire_port {
        let mut wire = start_port(pool, wire_port, &PortConfig::default())
            .context("starting the generator's port")?;
        let queue = wire.pop().context("the generator's port has no queue")?;
        let frames = vip_frames(args.vip, args.vip_port, args.flows);
        let (stop, sent, returned) = (stop.clone(), gen_sent.clone(), gen_returned.clone());
        let gen_cpu = args.gen_cpu;
        generator = Some(std::thread::spawn(move || {
            let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: gen_cpu });
            let (loops, empty_pool) = generate(pool, queue, &frames, &stop, &sent, &returned);
            (pinned, loops, empty_pool)
        }));
    }

    let config = EngineConfig {
        ports: vec![engine_port],
        cpus: vec![args.engine_cpu],
        // Never sleep: a benchmark measures the busy loop.
        idle: IdlePolicy {
            spin_polls: u32::MAX,
            sleep_us: 0,
        },
        ..EngineConfig::default()
    };
    let engine =
        Engine::start_one(config, io, TablesHandle::new(tables)).context("starting the engine")?;
    let engine_pinned = engine.pinned().first().copied().unwrap_or(false);

    std::thread::sleep(Duration::from_millis(args.warmup_ms));
    let before = engine.total_stats();
    let gen_before = gen_sent.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let after = engine.total_stats();
    let gen_after = gen_sent.load(Ordering::Relaxed);
    let elapsed_s = started.elapsed().as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    let gen_pinned = match generator {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?,
        ),
        None => None,
    };
    let report = engine.stop().context("stopping the engine")?;

    let rx = after.rx_packets - before.rx_packets;
    let tx = after.tx_packets - before.tx_packets;
    let kernel = after.kernel_packets - before.kernel_packets;
    let dropped = after.dropped - before.dropped;
    let (mode, measured, packets) = match args.mode {
        Mode::Ring => ("ring", "engine TX frames/s: VIP path, IPIP encap", tx),
        Mode::Null => (
            "null",
            "engine RX frames/s: parse + verdict, kernel path",
            rx,
        ),
    };
    let summary = serde_json::json!({
        "mode": mode,
        "measured": measured,
        "seconds": elapsed_s,
        "packets": packets,
        "mpps": packets as f64 / elapsed_s / 1e6,
        "rx_packets": rx,
        "tx_packets": tx,
        "tx_dropped": after.tx_dropped - before.tx_dropped,
        "kernel_packets": kernel,
        "dropped": dropped,
        "engine_busy_polls": after.busy_polls - before.busy_polls,
        "engine_idle_polls": after.idle_polls - before.idle_polls,
        "forwarded_total": report.counters.forwarded,
        "rx_total": report.total.rx_packets,
        "generator_sent": gen_after - gen_before,
        "generator_returned_total": gen_returned.load(Ordering::Relaxed),
        "engine_cpu": args.engine_cpu,
        "engine_pinned": engine_pinned,
        "generator_cpu": wire_port.map(|_| args.gen_cpu),
        "generator_pinned": gen_pinned.map(|g| g.0),
        "generator_loops": gen_pinned.map(|g| g.1),
        "generator_empty_pool_loops": gen_pinned.map(|g| g.2),
    });
    println!("{summary}");
    Ok(())
}
