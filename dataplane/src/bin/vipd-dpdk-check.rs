//! `vipd-dpdk-check`: brings up the EAL and one port the way the engine does and reports it, or
//! says what is wrong and how to fix it. An operator's pre-flight check (and the subject of the
//! fault tests: every failure is an error message and exit status 1, never a crash or a hang).
//!
//! ```text
//! vipd-dpdk-check --port NAME [--lcores 1] [--rss auto|symmetric|device-key|off]
//!                 [--link-wait-ms 2000] [--mbufs 4095] -- EAL ARGS...
//! ```
//! Everything after `--` goes to `rte_eal_init` unchanged, e.g.
//! `-- --no-huge -m 256 --no-pci --vdev=net_af_packet0,iface=eth1,qpairs=2`. The port (named
//! as DPDK names it: the vdev name, or a PCI address) is configured with one queue pair per lcore
//! and the RSS mode, started, and given `--link-wait-ms` to come up. On success one JSON line on
//! stdout describes it (driver, MAC, queues, RSS, link speed).

use std::time::Duration;

use anyhow::{bail, Context};
use dataplane::dpdk_io::lcore_port_config;
use dataplane::rss::RssMode;
use dpdk::{Eal, Mempool, Port, RuntimeDir};

const USAGE: &str = "usage: vipd-dpdk-check --port NAME [--lcores 1] \
     [--rss auto|symmetric|device-key|off] [--link-wait-ms 2000] [--mbufs 4095] -- EAL ARGS...";

struct Args {
    port: String,
    lcores: u16,
    rss: RssMode,
    link_wait_ms: u64,
    mbufs: u32,
    eal: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        port: String::new(),
        lcores: 1,
        rss: RssMode::Auto,
        link_wait_ms: 2000,
        mbufs: 4095,
        eal: Vec::new(),
    };
    let mut port = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            args.eal = it.by_ref().collect();
            break;
        }
        if matches!(flag.as_str(), "-h" | "--help") {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        let bad = || format!("{flag} {value:?}: not a valid value; {USAGE}");
        match flag.as_str() {
            "--port" => port = Some(value.clone()),
            "--lcores" => args.lcores = value.parse().with_context(bad)?,
            "--rss" => args.rss = value.parse().map_err(anyhow::Error::msg)?,
            "--link-wait-ms" => args.link_wait_ms = value.parse().with_context(bad)?,
            "--mbufs" => args.mbufs = value.parse().with_context(bad)?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    args.port = port.with_context(|| format!("missing --port; {USAGE}"))?;
    if args.lcores == 0 {
        bail!("--lcores must be at least 1");
    }
    if args.eal.is_empty() {
        bail!("no EAL arguments after --; e.g. -- --no-huge -m 256 --vdev=net_null0");
    }
    Ok(args)
}

fn run(args: &Args) -> anyhow::Result<String> {
    let eal_args: Vec<&str> = args.eal.iter().map(String::as_str).collect();
    // DPDK leaves its runtime directory behind when init fails; remove it if empty.
    let _runtime_dir = eal_args
        .iter()
        .find_map(|a| a.strip_prefix("--file-prefix="))
        .map(RuntimeDir::new);
    let eal = Eal::init(&eal_args).context("starting the DPDK EAL")?;
    let pool = Mempool::new(
        &eal,
        "check_pool",
        args.mbufs,
        0,
        Mempool::DEFAULT_DATA_ROOM,
    )
    .context("creating the mbuf pool (lower --mbufs or give the EAL more memory with -m)")?;
    let port_id = eal.port_by_name(&args.port).with_context(|| {
        format!(
            "the EAL has {} port(s); add a --vdev for {:?} or bind its NIC to vfio-pci (if the \
             --vdev is there, its driver failed to probe it: see the EAL log above, e.g. an \
             iface that does not exist)",
            eal.port_count(),
            args.port
        )
    })?;
    let config = lcore_port_config(args.lcores, args.rss);
    let mut port = Port::configure(&pool, port_id, &config)
        .with_context(|| format!("configuring port {:?}", args.port))?;
    port.start()
        .with_context(|| format!("starting port {:?}", args.port))?;
    let link = port
        .wait_for_link(Duration::from_millis(args.link_wait_ms))
        .with_context(|| format!("port {:?}", args.port))?;
    let mac = port.mac()?;
    let summary = serde_json::json!({
        "port": args.port,
        "port_id": port_id,
        "driver": port.driver_name(),
        "mac": mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        "queues": args.lcores,
        "rss": port.rss_enabled(),
        "link_up": link.up,
        "speed_mbps": link.speed_mbps,
    });
    drop(port);
    drop(pool);
    drop(eal);
    Ok(summary.to_string())
}

fn main() {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("vipd-dpdk-check: {e:#}");
            std::process::exit(1);
        }
    }
}
