//! `vipd` (not dry-run) starts the engine on the DPDK ports of its config: one `net_ring`
//! virtual port, no hugepages, a file prefix unique to this process. The lcore must be polling
//! (its figures advance), `status` must report the DPDK dataplane, a port whose link goes down
//! must make the dataplane unhealthy (the BGP link then withdraws every VIP) and healthy again
//! when it comes back, and SIGTERM must stop it with exit code 0.
#![cfg(feature = "dpdk")]

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{no_diag, ok, request, wait_for, Proc, POLL, VIPD};
use serde_json::{json, Value};

fn call(socket: &Path, cmd: &str) -> Value {
    ok(socket, cmd, json!({}))
}

fn polls(stats: &Value) -> u64 {
    let l = &stats["lcores"][0];
    l["busy_polls"].as_u64().unwrap() + l["idle_polls"].as_u64().unwrap()
}

#[test]
fn vipd_runs_the_engine_on_dpdk_ports_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let prefix = format!("vipd-ctrl-{}", std::process::id());
    let _runtime_dir = dpdk::RuntimeDir::new(&prefix);
    let mut eal: Vec<String> = dpdk::virtual_device_args(&prefix);
    // net_ring: a virtual port whose link can be set down (net_null cannot).
    eal.push("--vdev=net_ring0".into());
    let eal: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
    let config = format!(
        "[dataplane]\nlcores = 1\nflow_table_capacity = 4096\neal_args = [{}]\n\
         [[port]]\nmac = \"02:00:00:00:00:01\"\ngateway_mac = \"02:00:00:00:00:fe\"\n\
         [admin]\nsocket = \"{}\"\n\
         [[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\n",
        eal.join(", "),
        socket.display()
    );
    let path = dir.path().join("vipd.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(VIPD)
        .arg("--config")
        .arg(&path)
        .args(["--drain-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vipd = Proc(child);
    wait_for(
        "vipd to open its admin socket",
        Duration::from_secs(30),
        POLL,
        &no_diag,
        || {
            if let Some(status) = vipd.0.try_wait().unwrap() {
                let log = vipd.take_stderr();
                panic!("vipd exited with {status:?} before serving:\n{log}");
            }
            UnixStream::connect(&socket).ok()
        },
    );
    let status = call(&socket, "status");
    assert_eq!(status["dataplane"], "dpdk");
    assert_eq!(status["lcores"], 1);
    assert_eq!(status["vips"][0]["up"], true);
    let before = polls(&call(&socket, "stats"));
    std::thread::sleep(Duration::from_millis(200));
    let after = polls(&call(&socket, "stats"));
    assert!(
        after > before,
        "the lcore polls the DPDK port ({before} -> {after})"
    );

    // Flow lookups reach the lcore that owns the flow table: an unknown 5-tuple is not found
    // (the lcore answered), not "not available".
    let lookup = request(
        &socket,
        "flows.lookup",
        json!({"src": "198.51.100.1", "src_port": 1234, "dst": "192.0.2.10", "dst_port": 80}),
    );
    assert_eq!(lookup["error"]["code"], "not_found", "{lookup}");

    // A port whose link goes down: the watchdog (1 s period) marks the dataplane unhealthy.
    assert_eq!(status["dataplane_healthy"], true, "{status}");
    let wait_health = |healthy: bool| {
        wait_for(
            &format!("dataplane_healthy == {healthy}"),
            Duration::from_secs(10),
            POLL,
            &|| call(&socket, "status").to_string(),
            || {
                let s = call(&socket, "status");
                (s["dataplane_healthy"] == healthy).then_some(s)
            },
        )
    };
    ok(&socket, "port.set_link", json!({"port": 0, "up": false}));
    let down = wait_health(false);
    assert_eq!(down["dataplane_problem"], "port 0: link down", "{down}");
    ok(&socket, "port.set_link", json!({"port": 0, "up": true}));
    wait_health(true);

    vipd.signal(libc::SIGTERM);
    let exit = vipd.wait_exit("vipd to stop on SIGTERM", Duration::from_secs(10), &no_diag);
    assert!(exit.success(), "{exit:?}");
}
