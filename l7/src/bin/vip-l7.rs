//! `vip-l7 --config /etc/vipd/l7.toml [--check]`: the L7 proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc (see `l7::alloc` for why and how it is called).
#[global_allocator]
static ALLOC: l7::alloc::MiAlloc = l7::alloc::MiAlloc;

/// vip-l7: TLS termination, HTTP/1.1 and HTTP/2 routing and balancing behind vipd.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = l7::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration (including certificates) and exit.
    #[arg(long)]
    check: bool,
    /// Override the admin socket path from the file.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Worker threads; default: the CPUs this process may run on. With 1, a single-threaded
    /// event loop (no work-stealing overhead), like one nginx worker.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIP_L7_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut config = match l7::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vip-l7: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = args.admin_socket {
        config.admin_socket = p;
    }
    if args.check {
        if let Some(path) = &config.ticket_keys {
            if let Err(e) = l7::tickets::TicketKeys::load(path) {
                eprintln!("vip-l7: {}: [tls] {e}", args.config.display());
                return ExitCode::from(2);
            }
        }
        for l in &config.listeners {
            if l.is_tls() {
                if let Err(e) = l7::tls::CertResolver::new(&l.certificates) {
                    eprintln!(
                        "vip-l7: {}: listener {}: {e}",
                        args.config.display(),
                        l.name
                    );
                    return ExitCode::from(2);
                }
            }
        }
        println!(
            "{}: OK ({} listeners, {} routes, {} clusters)",
            args.config.display(),
            config.listeners.len(),
            config.routes.len(),
            config.clusters.len()
        );
        return ExitCode::SUCCESS;
    }
    let rt = match runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vip-l7: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(l7::server::run(args.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vip-l7: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime for `--threads` (default: the CPUs this process may run on, which honours
/// taskset and cpusets). With one thread, tokio's current-thread runtime: a single event loop
/// without work stealing or cross-thread wakeups, like one nginx worker.
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let threads = match threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::runtime;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn threads_pick_the_runtime() {
        let flavor = |t| runtime(t).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(Some(1)), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(2)), RuntimeFlavor::MultiThread);
        let m = runtime(Some(3)).unwrap().metrics();
        assert_eq!(m.num_workers(), 3);
        assert!(runtime(Some(0)).unwrap_err().contains("at least 1"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let expect = if cpus == 1 {
            RuntimeFlavor::CurrentThread
        } else {
            RuntimeFlavor::MultiThread
        };
        assert_eq!(flavor(None), expect);
    }
}
