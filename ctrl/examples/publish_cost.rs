//! What a backend health change costs the control plane: building every VIP's Maglev table
//! again (`Model::tables`) versus rebuilding only the changed VIP's (`Model::tables_reusing`).
//!
//! `cargo run --release -p ctrl --example publish_cost -- [VIPS] [BACKENDS_PER_VIP]`
//! (defaults 100 and 10). Prints the median of 15 rebuilds of each kind.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ctrl::config;
use ctrl::model::Model;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let vips: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let backends: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    anyhow::ensure!(
        (1..=4000).contains(&vips) && (1..=250).contains(&backends),
        "1..=4000 VIPs, 1..=250 backends each"
    );
    let mut text = String::new();
    for v in 0..vips {
        let _ = write!(
            text,
            "[[vip]]\naddress = \"10.{}.{}.1\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"192.0.2.1\"\n",
            v / 250,
            v % 250
        );
        for b in 0..backends {
            let _ = write!(
                text,
                "[[vip.backend]]\naddress = \"172.16.{}.{}\"\n",
                v % 250,
                b + 1
            );
        }
    }
    let config = config::parse(&text, "generated").map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = config.vips()[0].key();
    let victim = config.vips()[0].backends[0].address;
    let mut model = Model::new(config, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut full = Vec::new();
    let mut reusing = Vec::new();
    let mut previous = model.tables()?;
    for round in 0..15 {
        // One backend of one VIP changes (drained / undrained), as a health change would.
        model
            .set_drained(&key, victim, round % 2 == 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        let _ = model.tables()?;
        full.push(started.elapsed());
        let started = Instant::now();
        previous = model.tables_reusing(&previous)?;
        reusing.push(started.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "{vips} VIPs x {backends} backends (65,537-slot tables): full rebuild {:?}, changed VIP only {:?}",
        median(full),
        median(reusing)
    );
    Ok(())
}
