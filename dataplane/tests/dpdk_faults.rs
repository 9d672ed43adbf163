//! Faults at start-up, each in its own process (`vipd-dpdk-check`, which brings up the EAL and a
//! port the way the engine does): an EAL argument DPDK refuses, a `--vdev` no installed PMD
//! provides, a port that does not exist, a driver that fails to probe its device, and no
//! hugepages. Each must end with exit status 1 (not a signal), within seconds (not a hang), and a
//! message on stderr that names the fix. (A link that stays down: `dpdk/tests/link_down.rs`.)
#![cfg(feature = "dpdk")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `vipd-dpdk-check` with `args` and EAL arguments `eal` (plus a unique file prefix);
/// returns (exit code, stderr).
fn check(case: &str, args: &[&str], eal: &[&str]) -> (Option<i32>, String) {
    let prefix = format!("--file-prefix=vipd-fault-{case}-{}", std::process::id());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vipd-dpdk-check"));
    cmd.args(args)
        .arg("--")
        .args(eal)
        .arg(&prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn vipd-dpdk-check");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: vipd-dpdk-check hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    // A failed rte_eal_init can leave its runtime files behind; the prefix is this test's own.
    let dir = prefix.trim_start_matches("--file-prefix=");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{dir}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VDEV_EAL: [&str; 7] = [
    "--no-huge",
    "--no-telemetry",
    "-m",
    "128",
    "--no-pci",
    "--no-shconf",
    "--log-level=*:error",
];

fn eal_with(extra: &str) -> Vec<&str> {
    let mut v = VDEV_EAL.to_vec();
    v.push(extra);
    v
}

#[test]
fn a_good_port_passes() {
    let (code, err) = check(
        "ok",
        &["--port", "net_null0"],
        &eal_with("--vdev=net_null0"),
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn eal_init_failure() {
    let (code, err) = check(
        "eal",
        &["--port", "net_null0"],
        &eal_with("--definitely-not-an-eal-option"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rte_eal_init failed"), "{err}");
    assert!(
        err.contains("an EAL argument is unknown or invalid"),
        "{err}"
    );
}

#[test]
fn missing_pmd() {
    let (code, err) = check(
        "pmd",
        &["--port", "net_nonexistent0"],
        &eal_with("--vdev=net_nonexistent0"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("pmds-23.0"),
        "names the plugin directory: {err}"
    );
}

#[test]
fn unknown_port() {
    let (code, err) = check(
        "port",
        &["--port", "net_ring9"],
        &eal_with("--vdev=net_null0"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no port is named \"net_ring9\""), "{err}");
    assert!(err.contains("add a --vdev"), "{err}");
}

#[test]
fn driver_fails_to_probe() {
    let (code, err) = check(
        "probe",
        &["--port", "net_af_packet0"],
        &eal_with("--vdev=net_af_packet0,iface=vipd-no-such-if"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("failed to probe"), "{err}");
}

#[test]
fn no_hugepages() {
    let free = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")
                .map(|v| v.trim().to_string())
        });
    if free.as_deref() != Some("0") {
        eprintln!("skipped: this machine has free hugepages ({free:?}), so they are not missing");
        return;
    }
    // Hugepage memory asked for (no --no-huge) on a machine without any.
    let (code, err) = check(
        "huge",
        &["--port", "net_null0"],
        &[
            "-m",
            "128",
            "--no-pci",
            "--log-level=*:error",
            "--vdev=net_null0",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no free hugepages"), "{err}");
    assert!(err.contains("--no-huge"), "{err}");
}

#[test]
fn bad_tool_arguments() {
    let (code, err) = check("args", &["--port", "net_null0", "--lcores", "0"], &VDEV_EAL);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--lcores must be at least 1"), "{err}");
}
