//! `bgp-speak`: runs vipd's BGP speaker from a TOML file's `[bgp]` section and takes commands
//! on stdin, one per line. Every command answers one line on stdout: `ok`, `error: ...`, or
//! JSON for `summary` and `routes`.
//!
//! ```text
//! announce IP [communities=A:B,...] [large_communities=G:L1:L2,...] [med=N] [prepend=N] [next_hop=IP]
//! withdraw IP
//! withdraw-all
//! summary            # JSON array of peers
//! routes             # JSON array of announced routes
//! shutdown           # RFC 8326 graceful shutdown, then exit
//! stop               # Cease to every peer now, then exit
//! ```
//! End of input stops like `stop`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bgp::speaker::{Speaker, SpeakerHandle};
use bgp::{BgpConfig, RoutePolicy};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Announce VIPs over BGP, driven by commands on stdin.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML file with a [bgp] section (vipd.toml works).
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let cfg = BgpConfig::from_toml_file_contents(&text)
        .with_context(|| format!("in {}", args.config.display()))?;
    let speaker = Speaker::spawn(cfg)?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match run(&speaker, line).await {
            Ok(Some(reply)) => println!("{reply}"),
            Ok(None) => {
                println!("ok");
                return Ok(());
            }
            Err(e) => println!("error: {e:#}"),
        }
    }
    speaker.stop(None).await;
    Ok(())
}

/// Runs one command; `Ok(None)` means exit.
async fn run(speaker: &SpeakerHandle, line: &str) -> anyhow::Result<Option<String>> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let ip = |w: Option<&str>| -> anyhow::Result<IpAddr> {
        let w = w.context("missing IP address")?;
        w.parse()
            .with_context(|| format!("{w:?} is not an IP address"))
    };
    match verb {
        "announce" => {
            let addr = ip(words.next())?;
            let policy = parse_policy(words)?;
            speaker.announce(addr, policy);
        }
        "withdraw" => speaker.withdraw(ip(words.next())?),
        "withdraw-all" => speaker.withdraw_all(),
        "summary" => return Ok(Some(serde_json::to_string(&speaker.summary().await)?)),
        "routes" => return Ok(Some(serde_json::to_string(&speaker.routes().await)?)),
        "shutdown" => {
            speaker.graceful_shutdown().await;
            return Ok(None);
        }
        "stop" => {
            speaker.stop(None).await;
            return Ok(None);
        }
        other => bail!(
            "unknown command {other:?}: use announce, withdraw, withdraw-all, summary, routes, shutdown or stop"
        ),
    }
    Ok(Some("ok".to_string()))
}

fn parse_policy<'a>(words: impl Iterator<Item = &'a str>) -> anyhow::Result<RoutePolicy> {
    let mut policy = RoutePolicy::default();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .with_context(|| format!("{word:?}: write key=value"))?;
        let list = || value.split(',').filter(|s| !s.is_empty());
        match key {
            "communities" => {
                for c in list() {
                    policy.communities.push(c.parse()?);
                }
            }
            "large_communities" => {
                for c in list() {
                    policy.large_communities.push(c.parse()?);
                }
            }
            "med" => policy.med = Some(value.parse().context("med: use 0..=4294967295")?),
            "prepend" => policy.as_path_prepend = value.parse().context("prepend: use 0..=16")?,
            "next_hop" => {
                policy.next_hop = Some(value.parse().context("next_hop: use an IP address")?)
            }
            other => bail!(
                "unknown option {other:?}: use communities, large_communities, med, prepend or next_hop"
            ),
        }
    }
    Ok(policy)
}
