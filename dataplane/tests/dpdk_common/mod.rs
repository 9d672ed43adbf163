//! The EAL of a DPDK test process: no hugepages, no PCI, no shared config, one lcore, quiet
//! logs, a file prefix unique to the process. The EAL is leaked (the engine's I/O must be
//! `'static`), so it is never cleaned up; [`RuntimeDir`] removes the empty runtime directory
//! DPDK leaves behind when the test ends.
#![allow(dead_code)] // each test file uses a different subset

use dpdk::Eal;

/// Removes `<base>/<file-prefix>` (only if empty) on drop, wherever DPDK put it.
pub struct RuntimeDir(String);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let mut bases = vec!["/var/run/dpdk".to_string(), "/tmp/dpdk".to_string()];
        if let Ok(xdg) = std::env::var("XDG_RUNTIME_DIR") {
            bases.push(format!("{xdg}/dpdk"));
        }
        for base in bases {
            let _ = std::fs::remove_dir(format!("{base}/{}", self.0));
        }
    }
}

/// Initialises the EAL for test `name` with `extra` arguments and leaks it.
pub fn eal(name: &str, extra: &[&str]) -> (&'static Eal, RuntimeDir) {
    let prefix = format!("vipd-{name}-{}", std::process::id());
    let mut args: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-l",
        "0",
        "--log-level=*:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--file-prefix={prefix}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    let dir = RuntimeDir(prefix);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let eal = Eal::init(&args).expect("EAL init");
    (Box::leak(Box::new(eal)), dir)
}
