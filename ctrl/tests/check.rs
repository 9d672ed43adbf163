//! Runs the real `vipd --check` binary on a valid and an invalid file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vipd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipd"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vipd.toml")
}

/// A file in the target's temp dir, unique per test, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn valid_file_exits_zero() {
    let out = vipd()
        .args(["--check", "--config"])
        .arg(example())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (3 VIPs, 7 backends)"), "{stdout}");
    assert!(out.stderr.is_empty());
}

#[test]
fn invalid_file_exits_one_with_located_errors() {
    let file = TempFile::new(
        "vipd.toml",
        "[[vip]]\naddress = \"192.0.2.1\"\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\nweight = 0\n\
         [[vip.backend]]\naddress = \"10.0.1.1\"\n",
    );
    let out = vipd()
        .arg("--check")
        .arg(format!("--config={}", file.0.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.0.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(
        lines[0],
        format!("{name}:7: vip[0].backend[0].weight: must be 1..=65535, got 0")
    );
    assert!(
        lines[1].starts_with(&format!(
            "{name}:9: vip[0].backend[1].address: duplicate of backend[0] (line 6)"
        )),
        "{stderr}"
    );
}

#[test]
fn missing_file_and_bad_usage() {
    let out = vipd()
        .args(["--check", "--config", "/nonexistent/vipd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let out = vipd().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: vipd"));
}

/// `[bgp]` and `[vip.bgp]` are checked by the BGP speaker's own parser, located by line.
#[test]
fn bgp_sections_are_checked_by_the_speaker() {
    let vip = "[[vip]]\naddress = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n\
               encap_source_v4 = \"10.0.0.1\"\n[[vip.backend]]\naddress = \"10.0.1.1\"\n";
    let cases = [
        (
            format!("{vip}[vip.bgp]\ncommunities = [\"not-a-community\"]\n"),
            ":8: vip[0].bgp: invalid community",
        ),
        (
            format!("[bgp]\nlocal_as = 0\nrouter_id = \"10.0.0.1\"\n{vip}"),
            ":1: bgp: bgp.local_as:",
        ),
    ];
    for (text, expected) in cases {
        let file = TempFile::new("bgp.toml", &text);
        let out = vipd()
            .args(["--check", "--config"])
            .arg(&file.0)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "want {expected:?} in:\n{stderr}");
    }
}
