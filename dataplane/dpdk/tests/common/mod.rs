#![allow(dead_code)] // each test file uses a different subset

//! EAL arguments for tests: no hugepages, no PCI, no shared config, one lcore, quiet logs, and a unique
//! file prefix per process so parallel test processes never share DPDK state.

/// EAL options for a test process named `name`, plus `extra` (e.g. `--vdev=net_ring0`).
pub fn eal_args(name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = dpdk::virtual_device_args(&format!("vipd-{name}-{}", std::process::id()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Best-effort removal of the empty runtime directory a failed `Eal::init` leaves behind
/// (a successful one removes it when the `Eal` drops).
pub fn remove_runtime_dir(args: &[String]) {
    let Some(prefix) = args.iter().find_map(|a| a.strip_prefix("--file-prefix=")) else {
        return;
    };
    let mut bases = vec!["/var/run/dpdk".to_string(), "/tmp/dpdk".to_string()];
    if let Ok(xdg) = std::env::var("XDG_RUNTIME_DIR") {
        bases.push(format!("{xdg}/dpdk"));
    }
    for base in bases {
        let _ = std::fs::remove_dir(format!("{base}/{prefix}"));
    }
}

/// `args` as the `&[&str]` that `Eal::init` takes.
pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A recognisable test frame of `len` bytes: broadcast Ethernet header, then `seed + i` bytes.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, seed]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    f
}
