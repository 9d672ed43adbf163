//! The `bgp-speak` binary: configuration errors, the stdin command language and its replies.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bgp-speak");

#[test]
fn invalid_configuration_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[bgp]\nlocal_as = 0\nrouter_id = \"192.0.2.1\"\n[[bgp.peer]]\naddress = \"192.0.2.2\"\nremote_as = 0\nfamilies = [\"ipv4\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bgp.local_as"), "{err}");
    assert!(err.contains("bgp.peer[0].remote_as"), "{err}");
}

#[test]
fn commands_answer_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    // Port 9 on loopback: nothing listens, the session stays down; commands still work.
    std::fs::write(
        &path,
        "[bgp]\nlocal_as = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.peer]]\naddress = \"127.0.0.1\"\nport = 9\nremote_as = 65002\nfamilies = [\"ipv4\"]\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |line: &str| {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut reply = String::new();
        stdout.read_line(&mut reply).unwrap();
        reply.trim().to_string()
    };
    assert!(ask("bogus").starts_with("error: unknown command"));
    assert!(ask("announce 192.0.2.300").starts_with("error:"));
    assert!(ask("announce 192.0.2.9 med=x").starts_with("error:"));
    assert!(ask("announce 192.0.2.9 communities=1:99999").starts_with("error:"));
    assert_eq!(
        ask("announce 192.0.2.9 communities=65001:9 med=5 prepend=1"),
        "ok"
    );
    let routes = ask("routes");
    assert!(routes.contains("\"prefix\":\"192.0.2.9/32\""), "{routes}");
    assert!(routes.contains("65001:9"), "{routes}");
    let summary = ask("summary");
    assert!(summary.contains("\"remote_as\":65002"), "{summary}");
    assert!(!summary.contains("Established"), "{summary}");
    assert_eq!(ask("withdraw 192.0.2.9"), "ok");
    assert_eq!(ask("routes"), "[]");
    assert_eq!(ask("stop"), "ok");
    assert!(child.wait().unwrap().success());
}
