//! `vipd` with `[dataplane] cpus = [1]` (DPDK, one `net_ring` port, EAL main lcore 0) keeps
//! its control threads off CPU 1: every thread but the lcore thread (`vipd-lcore-0`) may run
//! on the other allowed CPUs only, the lcore thread on CPU 1 only, `status` reports
//! `control_cpus` and the start log says where the control threads run (skips unless CPUs 0 and
//! 1 are allowed). Under `taskset -c 0` with `cpus = [0]` nothing is left: vipd warns that the
//! control threads share the lcore CPUs.
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

/// A running vipd on one `net_ring` DPDK port with `[dataplane] cpus`, started through
/// `wrapper` (e.g. `taskset -c 0`) when given.
struct Vipd {
    proc: Proc,
    dir: tempfile::TempDir,
    _runtime_dir: dpdk::RuntimeDir,
}

impl Vipd {
    fn start(name: &str, cpus: &str, wrapper: &[&str]) -> Vipd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let prefix = format!("vipd-aff-{name}-{}", std::process::id());
        let runtime_dir = dpdk::RuntimeDir::new(&prefix);
        let mut eal: Vec<String> = dpdk::virtual_device_args(&prefix); // EAL main lcore: CPU 0
        eal.push("--vdev=net_ring0".into());
        let eal: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
        let config = format!(
            "[dataplane]\nlcores = 1\ncpus = {cpus}\nflow_table_capacity = 4096\neal_args = [{}]\n\
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
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(VIPD);
                c
            }
            None => Command::new(VIPD),
        };
        command
            .arg("--config")
            .arg(&path)
            .args(["--drain-ms", "50"]);
        let log = dir.path().join("vipd.log");
        let socket = dir.path().join("admin.sock");
        let mut proc = Proc::spawn_logged(command, &log);
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for(
            "vipd to open its admin socket",
            Duration::from_secs(30),
            POLL,
            &read_log,
            || {
                if let Some(status) = proc.0.try_wait().unwrap() {
                    panic!(
                        "vipd exited with {status:?} before serving:\n{}",
                        read_log()
                    );
                }
                UnixStream::connect(&socket).ok()
            },
        );
        Vipd {
            proc,
            dir,
            _runtime_dir: runtime_dir,
        }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vipd.log")).unwrap_or_default()
    }

    fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        let exit =
            self.proc
                .wait_exit("vipd to stop on SIGTERM", Duration::from_secs(10), &no_diag);
        assert!(exit.success(), "{exit:?}\n{}", self.log());
    }
}

#[test]
fn vipd_keeps_control_threads_off_the_lcore_cpus() {
    let allowed = allowed_cpus("/proc/self/status").unwrap();
    if !(allowed.contains(&0) && allowed.contains(&1)) {
        eprintln!("SKIP: needs CPUs 0 and 1 allowed, this process has {allowed:?}");
        return;
    }
    let vipd = Vipd::start("apart", "[1]", &[]);
    let status = ok(&vipd.socket(), "status", json!({}));
    assert_eq!(status["dataplane"], "dpdk", "{status}");
    // Of the CPUs vipd may use, all but the lcore's.
    let expected: Vec<usize> = allowed.iter().copied().filter(|&c| c != 1).collect();
    assert_eq!(status["control_cpus"], json!(expected), "{status}");
    // Let the health checks (tokio tasks, maybe blocking-pool threads) run a few rounds, so
    // threads started after the engine are seen too.
    std::thread::sleep(Duration::from_millis(500));

    let all = threads(vipd.proc.0.id());
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
            &expected,
            "control thread {tid} ({name}) runs off CPU 1: {all:?}\n{}",
            vipd.log()
        );
    }
    let line = format!("control threads run on CPUs {expected:?}");
    assert!(vipd.log().contains(&line), "{line:?} in\n{}", vipd.log());
    vipd.stop();
}

#[test]
fn without_cpus_the_lcores_are_not_left_on_the_eal_main_lcore() {
    let allowed = allowed_cpus("/proc/self/status").unwrap();
    if allowed.len() < 2 {
        eprintln!("SKIP: needs 2 CPUs allowed, this process has {allowed:?}");
        return;
    }
    // No `cpus`: the EAL (`-l 0`) pinned the thread that starts the lcores to CPU 0.
    let vipd = Vipd::start("unpinned", "[]", &[]);
    let status = ok(&vipd.socket(), "status", json!({}));
    assert_eq!(status["control_cpus"], json!(allowed), "{status}");
    let all = threads(vipd.proc.0.id());
    assert!(
        all.iter()
            .any(|(_, name, _)| name.starts_with("vipd-lcore-")),
        "{all:?}"
    );
    for (tid, name, cpus) in &all {
        assert_eq!(
            cpus, &allowed,
            "thread {tid} ({name}) may run on every CPU: {all:?}"
        );
    }
    vipd.stop();
}

#[test]
fn vipd_warns_when_the_lcore_cpus_leave_none_for_control_threads() {
    let allowed = allowed_cpus("/proc/self/status").unwrap();
    if !allowed.contains(&0) {
        eprintln!("SKIP: needs CPU 0 allowed, this process has {allowed:?}");
        return;
    }
    if let Some(why) = common::missing_binary(&["taskset"], "apt-get install util-linux") {
        eprintln!("SKIP: {why}");
        return;
    }
    // vipd may use CPU 0 only, and its lcore is pinned there.
    let vipd = Vipd::start("shared", "[0]", &["taskset", "-c", "0"]);
    let status = ok(&vipd.socket(), "status", json!({}));
    assert_eq!(status["control_cpus"], json!([0]), "{status}");
    assert!(
        vipd.log().contains("control threads share the lcore CPUs")
            && vipd
                .log()
                .contains("leave at least one CPU out of [dataplane] cpus"),
        "{}",
        vipd.log()
    );
    for (tid, name, cpus) in threads(vipd.proc.0.id()) {
        assert_eq!(cpus, vec![0], "thread {tid} ({name})");
    }
    vipd.stop();
}
