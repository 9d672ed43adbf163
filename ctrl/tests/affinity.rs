//! `vipd` with `[dataplane] cpus = [1]` (DPDK, one `net_ring` port, EAL main lcore 0) keeps
//! its control threads off CPU 1: every thread but the lcore thread (`vipd-lcore-0`) may run
//! on CPU 0 only, the lcore thread on CPU 1 only, `status` reports `control_cpus = [0]` and the
//! start log says where the control threads run. Skips when CPUs 0 and 1 are not both allowed.
#![cfg(feature = "dpdk")]

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::{no_diag, ok, wait_for, Proc, POLL, VIPD};
use serde_json::json;

/// The CPUs in a `Cpus_allowed_list` value such as `0-2,5`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

fn allowed_cpus(status_file: &str) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(parse_cpu_list(line))
}

/// (thread id, name, allowed CPUs) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String, Vec<usize>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = entry.unwrap().path();
        let tid = path.file_name().unwrap().to_string_lossy().into_owned();
        // A thread may exit between the listing and the reads.
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(cpus) = allowed_cpus(&path.join("status").to_string_lossy()) else {
            continue;
        };
        out.push((tid, comm.trim_end().to_string(), cpus));
    }
    out
}

#[test]
fn parse_cpu_list_reads_ranges_and_singles() {
    assert_eq!(parse_cpu_list("0-2,5\n"), vec![0, 1, 2, 5]);
    assert_eq!(parse_cpu_list("1"), vec![1]);
}

#[test]
fn vipd_keeps_control_threads_off_the_lcore_cpus() {
    let allowed = allowed_cpus("/proc/self/status").unwrap();
    if !(allowed.contains(&0) && allowed.contains(&1)) {
        eprintln!("SKIP: needs CPUs 0 and 1 allowed, this process has {allowed:?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let log = dir.path().join("vipd.log");
    let prefix = format!("vipd-aff-{}", std::process::id());
    let _runtime_dir = dpdk::RuntimeDir::new(&prefix);
    let mut eal: Vec<String> = dpdk::virtual_device_args(&prefix); // EAL main lcore: CPU 0
    eal.push("--vdev=net_ring0".into());
    let eal: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
    let config = format!(
        "[dataplane]\nlcores = 1\ncpus = [1]\nflow_table_capacity = 4096\neal_args = [{}]\n\
         [[port]]\nmac = \"02:00:00:00:00:01\"\ngateway_mac = \"02:00:00:00:00:fe\"\n\
         [admin]\nsocket = \"{}\"\n\
         [[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
         [vip.health]\ntype = \"tcp\"\nport = {}\ninterval_ms = 100\ntimeout_ms = 50\n\
         [[vip.backend]]\naddress = \"127.0.0.1\"\n",
        eal.join(", "),
        socket.display(),
        common::free_port(),
    );
    let path = dir.path().join("vipd.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(VIPD);
    command
        .arg("--config")
        .arg(&path)
        .args(["--drain-ms", "50"]);
    let mut vipd = Proc::spawn_logged(command, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "vipd to open its admin socket",
        Duration::from_secs(30),
        POLL,
        &show_log,
        || {
            if let Some(status) = vipd.0.try_wait().unwrap() {
                panic!(
                    "vipd exited with {status:?} before serving:\n{}",
                    show_log()
                );
            }
            UnixStream::connect(&socket).ok()
        },
    );
    let status = ok(&socket, "status", json!({}));
    assert_eq!(status["dataplane"], "dpdk", "{status}");
    assert_eq!(status["control_cpus"], json!([0]), "{status}");
    // Let the health checks (tokio tasks, maybe blocking-pool threads) run a few rounds, so
    // threads started after the engine are seen too.
    std::thread::sleep(Duration::from_millis(500));

    let pid = vipd.0.id();
    let all = threads(pid);
    let lcores: Vec<_> = all
        .iter()
        .filter(|(_, name, _)| name.starts_with("vipd-lcore-"))
        .collect();
    assert_eq!(lcores.len(), 1, "one lcore thread: {all:?}");
    assert_eq!(
        lcores[0].2,
        vec![1],
        "the lcore thread runs on CPU 1: {all:?}"
    );
    let control: Vec<_> = all
        .iter()
        .filter(|(_, name, _)| !name.starts_with("vipd-lcore-"))
        .collect();
    // The main thread and tokio's two workers at least; the EAL's interrupt thread, which the
    // EAL itself puts on the CPUs outside its `-l 0`, i.e. on the lcore CPU.
    assert!(control.len() >= 3, "{all:?}");
    assert!(
        control
            .iter()
            .any(|(_, name, _)| name.starts_with("eal-intr")),
        "{all:?}"
    );
    for (tid, name, cpus) in &control {
        assert_eq!(
            cpus,
            &vec![0],
            "control thread {tid} ({name}) runs on CPU 0 only: {all:?}\n{}",
            show_log()
        );
    }
    assert!(
        show_log().contains("control threads run on CPUs [0]"),
        "{}",
        show_log()
    );

    vipd.signal(libc::SIGTERM);
    let exit = vipd.wait_exit("vipd to stop on SIGTERM", Duration::from_secs(10), &no_diag);
    assert!(exit.success(), "{exit:?}\n{}", show_log());
}
