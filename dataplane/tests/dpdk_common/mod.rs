//! The EAL of a DPDK test process: no hugepages, no PCI, no shared config, one lcore, quiet
//! logs, a file prefix unique to the process. The EAL is leaked (the engine's I/O must be
//! `'static`), so it is never cleaned up; [`RuntimeDir`] removes the empty runtime directory
//! DPDK leaves behind when the test ends.
#![allow(dead_code)] // each test file uses a different subset

use dpdk::Eal;

pub use dpdk::RuntimeDir;

/// Initialises the EAL for test `name` with `extra` arguments and leaks it.
pub fn eal(name: &str, extra: &[&str]) -> (&'static Eal, RuntimeDir) {
    let prefix = format!("vipd-{name}-{}", std::process::id());
    let mut args = dpdk::virtual_device_args(&prefix);
    args.extend(extra.iter().map(|s| s.to_string()));
    let dir = RuntimeDir::new(&prefix);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let eal = Eal::init(&args).expect("EAL init");
    (Box::leak(Box::new(eal)), dir)
}
