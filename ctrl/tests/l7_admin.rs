//! `vipctl l7 ...` against the real `vip-l7` admin socket: clusters as one line per upstream,
//! drain / undrain / weight reach the proxy, and error replies exit 1.
//!
//! vip-l7 is another package's binary: it sits next to vipctl when the workspace is tested
//! (`cargo test --workspace`, as scripts/test does); with `-p ctrl` alone it may be missing and
//! the test says so and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, no_diag, vipctl, vipctl_json, wait_for, Proc, VIPCTL};
use serde_json::Value;

fn vip_l7() -> Option<PathBuf> {
    let path = Path::new(VIPCTL).with_file_name("vip-l7");
    path.exists().then_some(path)
}

fn upstream<'a>(clusters: &'a Value, address: &str) -> &'a Value {
    clusters["clusters"][0]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {clusters}"))
}

#[test]
fn vipctl_drives_vip_l7() {
    let Some(binary) = vip_l7() else {
        eprintln!("skipped: vip-l7 is not built next to vipctl (run cargo test --workspace)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("l7.sock");
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = dir.path().join("l7.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nsocket = \"{}\"\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{}\"\n\
             [[routes]]\npath_prefix = \"/\"\ncluster = \"app\"\n\
             [clusters.app]\n\
             [[clusters.app.upstreams]]\naddress = \"{a}\"\n\
             [[clusters.app.upstreams]]\naddress = \"{b}\"\n",
            socket.display(),
            free_port()
        ),
    )
    .unwrap();
    let _proxy = Proc(
        Command::new(binary)
            .args(["--threads", "1", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "vip-l7 to open its socket",
        Duration::from_secs(20),
        Duration::from_millis(20),
        &no_diag,
        || socket.exists().then_some(()),
    );

    let table = vipctl(&socket, &["l7", "clusters"]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("cluster") && lines[0].trim_end().ends_with("errors"),
        "{table}"
    );
    assert_eq!(
        lines.len(),
        3,
        "a header and one line per upstream:\n{table}"
    );
    assert!(lines[1].contains(&a) && lines[2].contains(&b), "{table}");

    let json = |args: &[&str]| vipctl_json(&socket, args);
    json(&["l7", "drain", "app", &a]);
    assert_eq!(upstream(&json(&["l7", "clusters"]), &a)["draining"], true);
    json(&["l7", "undrain", "app", &a]);
    assert_eq!(upstream(&json(&["l7", "clusters"]), &a)["draining"], false);
    json(&["l7", "weight", "app", &b, "7"]);
    assert_eq!(upstream(&json(&["l7", "clusters"]), &b)["weight"], 7);

    let unknown = vipctl(&socket, &["l7", "drain", "app", "192.0.2.99:80"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}
