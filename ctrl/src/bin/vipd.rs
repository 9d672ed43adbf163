//! `vipd`, the appliance daemon.
//!
//! `vipd --config FILE [--dry-run] [--admin-socket PATH] [--log-format json|text]` runs the
//! dataplane (DPDK ports from the config, or the in-memory backend with `--dry-run`), health
//! checks, the admin socket and metrics until SIGTERM (graceful, exit 0). SIGHUP reloads.
//! `vipd --check --config FILE` validates the file and exits: 0 valid, 1 invalid, 2 usage.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ctrl::announce;
use ctrl::config::{self, BgpCheck};
use ctrl::daemon::{Daemon, Options};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// vipd: anycast L4 load balancer daemon.
#[derive(Parser, Debug)]
#[command(name = "vipd", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit (0 = valid, 1 = invalid).
    #[arg(long)]
    check: bool,
    /// Run the dataplane on the in-memory backend instead of DPDK ports (no NIC needed;
    /// enables the `traffic.send` admin command).
    #[arg(long)]
    dry_run: bool,
    /// Admin socket path (overrides `[admin] socket`).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Log format on stderr. Filter with RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Milliseconds between withdrawing the VIPs on SIGTERM and stopping the dataplane.
    #[arg(long, default_value_t = 2000)]
    drain_ms: u64,
}

/// The `[bgp]` and `[vip.bgp]` validators `--check` and reload use: the BGP speaker's own
/// config parser.
fn bgp_check() -> Option<BgpCheck> {
    Some(BgpCheck {
        section: announce::check,
        vip_policy: announce::check_policy,
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.check {
        return match config::load_with(&cli.config, bgp_check()) {
            Ok(config) => {
                println!(
                    "{}: OK ({} VIPs, {} backends)",
                    cli.config.display(),
                    config.vips().len(),
                    config.backend_count()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    init_logs(cli.log_format);
    let options = Options {
        config_path: cli.config,
        dry_run: cli.dry_run,
        admin_socket: cli.admin_socket,
        bgp_check: bgp_check(),
        drain: Duration::from_millis(cli.drain_ms),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vipd-ctrl")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vipd: cannot start the control threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async {
        let daemon = Daemon::new(options).map_err(|e| e.to_string())?;
        if announce::start(&daemon)?.is_some() {
            tracing::info!("BGP speaker started");
        }
        daemon.run().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vipd failed");
            eprintln!("vipd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
