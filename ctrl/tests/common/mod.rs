//! Helpers shared by ctrl's integration tests (`mod common;` in each test file): a child
//! process guard, logged spawning, the admin socket's NDJSON requests, `vipctl` runners,
//! polling, free ports and the "is X installed" skip checks.

// Each test file is its own crate and uses only some of these helpers: the rest would be
// dead code there, and clippy -D warnings would fail on it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const VIPD: &str = env!("CARGO_BIN_EXE_vipd");
pub const VIPCTL: &str = env!("CARGO_BIN_EXE_vipctl");

/// The usual polling period of [`wait_for`].
pub const POLL: Duration = Duration::from_millis(50);

/// A child process killed (by its pid) and reaped on drop, however the test ends.
pub struct Proc(pub Child);

impl Proc {
    /// Spawns `command` with no stdin and its stdout and stderr both going to the file `log`.
    pub fn spawn_logged(mut command: Command, log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc(child)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) takes plain integers; `pid` is our own child, still unreaped (this
        // guard waits for it only when dropped), so it cannot be a recycled pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// All the child's stderr (spawned with `Stdio::piped()`), once it has exited.
    pub fn take_stderr(&mut self) -> String {
        let mut log = String::new();
        let mut stderr = self
            .0
            .stderr
            .take()
            .expect("stderr is piped and not taken yet");
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    }

    /// Polls every 20 ms until the child exits; panics with `what` and `diag()` after
    /// `timeout`.
    pub fn wait_exit(
        &mut self,
        what: &str,
        timeout: Duration,
        diag: &dyn Fn() -> String,
    ) -> ExitStatus {
        wait_for(what, timeout, Duration::from_millis(20), diag, || {
            self.0.try_wait().unwrap()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every `poll` until it gives a value and returns that value; panics with
/// `what` and `diag()` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    diag: &dyn Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            diag()
        );
        std::thread::sleep(poll);
    }
}

/// No diagnostics for [`wait_for`].
pub fn no_diag() -> String {
    String::new()
}

/// A TCP port free on 127.0.0.1 right now, below the ephemeral range (see `testutil`).
#[allow(unused_imports)] // not every test binary that includes this module needs it
pub use testutil::free_port;

/// One admin-socket request (NDJSON, protocol v1, the command as its id); returns the whole
/// reply after checking that it echoes the version and the id.
pub fn request(socket: &Path, cmd: &str, args: Value) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    writeln!(
        stream,
        "{}",
        json!({"v": 1, "id": cmd, "cmd": cmd, "args": args})
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["v"], 1, "{reply}");
    assert_eq!(reply["id"], cmd, "{reply}");
    reply
}

/// An admin-socket request that must succeed (`ok == true`); returns its `result`.
pub fn ok(socket: &Path, cmd: &str, args: Value) -> Value {
    let reply = request(socket, cmd, args);
    assert_eq!(reply["ok"], true, "{cmd}: {reply}");
    reply["result"].clone()
}

/// Runs `vipctl --socket <socket> <args>`, whatever its exit code.
pub fn vipctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(VIPCTL)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `vipctl`, which must succeed; returns its stdout.
pub fn vipctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = vipctl(socket, args);
    assert!(
        out.status.success(),
        "vipctl {args:?}: {out:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `vipctl --json <args>`, which must succeed; returns its JSON.
pub fn vipctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&vipctl_ok(socket, &all)).unwrap()
}

/// Runs `vipd --check --config <config>`, which must succeed.
pub fn vipd_check(config: &Path) {
    let check = Command::new(VIPD)
        .args(["--check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "vipd --check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// vipd's `[bgp]` section (AS 65001, short timers) with one IPv4 peer: BIRD as [`Bird`]
/// starts it (AS 65000 at `peer`), vipd at `local`.
pub fn vipd_bgp_toml(local: &str, peer: &str) -> String {
    format!(
        r#"
[bgp]
local_as = 65001
router_id = "{local}"
hold_time = 3
connect_retry = 1
graceful_shutdown_wait = 1

[[bgp.peer]]
address = "{peer}"
remote_as = 65000
local_address = "{local}"
families = ["ipv4"]
"#
    )
}

/// Ends the calling test, which passes, after printing why it skipped, when `$reason` (an
/// `Option<String>`, e.g. from [`missing_binary`]) is `Some`.
#[allow(unused_macros)] // used by only some test files
macro_rules! skip_if {
    ($reason:expr) => {
        if let Some(why) = $reason {
            eprintln!("skipped: {why}");
            return;
        }
    };
}
#[allow(unused_imports)] // used by only some test files
pub(crate) use skip_if;

/// Whether `bin` is on PATH.
pub fn installed(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a test must skip when one of `bins` is missing (`hint` says how to install them).
pub fn missing_binary(bins: &[&str], hint: &str) -> Option<String> {
    bins.iter()
        .find(|bin| !installed(bin))
        .map(|bin| format!("{bin} is not installed ({hint})"))
}

/// BIRD 2 in network namespace `ns`, the top of rack: AS 65000 at `local`, protocol `lb1`
/// peering with vipd (AS 65001) at `neighbor`, importing everything. Stopped on drop.
pub struct Bird {
    ns: String,
    ctl: PathBuf,
    _proc: Proc,
}

impl Bird {
    /// Writes `bird.conf` into `dir` and starts BIRD (control socket, pid file and log there).
    pub fn start(ns: &str, dir: &Path, local: &str, neighbor: &str) -> Bird {
        let conf = dir.join("bird.conf");
        std::fs::write(
            &conf,
            format!(
                "router id {local};\n\
                 protocol device {{}}\n\
                 protocol bgp lb1 {{\n\
                   local {local} as 65000;\n\
                   neighbor {neighbor} as 65001;\n\
                   hold time 3;\n\
                   connect retry time 1;\n\
                   ipv4 {{ import all; export none; }};\n\
                 }}\n"
            ),
        )
        .unwrap();
        let ctl = dir.join("bird.ctl");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(dir.join("bird.pid"));
        let proc = Proc::spawn_logged(c, &dir.join("bird.log"));
        Bird {
            ns: ns.to_string(),
            ctl,
            _proc: proc,
        }
    }

    /// `birdc <args>` in BIRD's namespace; its stdout.
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(&self.ctl)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether BIRD's RIB holds `prefix`.
    pub fn has_route(&self, prefix: &str) -> bool {
        self.birdc(&["show", "route", prefix]).contains(prefix)
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
