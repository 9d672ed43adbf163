//! `vipctl`, the operator CLI of vipd (and, with `vipctl l7 ...`, of vip-l7).
//!
//! Talks to the admin socket (newline-delimited JSON, see `ctrl::admin`). Prints human tables by
//! default and the raw result with `--json`.
//!
//! Exit codes: 0 success; 1 the daemon answered with an error; 2 usage error; 3 cannot connect to
//! the socket; 4 no or malformed reply (timeout, protocol error).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};

const EXIT_ERROR_REPLY: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONNECT: u8 = 3;
const EXIT_PROTOCOL: u8 = 4;

/// Operator CLI for vipd and vip-l7.
#[derive(Parser, Debug)]
#[command(
    name = "vipctl",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 error reply, 2 usage, 3 cannot connect, 4 no/bad reply."
)]
struct Cli {
    /// Print the daemon's JSON result instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Admin socket (default /run/vipd/admin.sock, or /run/vip-l7/admin.sock for `l7`).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Give up waiting for a reply after this many milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Talk to vip-l7 instead of vipd (same as the `l7` subcommand).
    #[arg(long)]
    l7: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One-screen overview: dataplane, BGP, every VIP's state.
    Status,
    /// VIPs.
    #[command(subcommand)]
    Vip(VipCmd),
    /// Backends of a VIP.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Health of every backend.
    Health,
    /// Counters: per lcore, VIP, backend; drops by reason.
    Stats,
    /// Flow table.
    #[command(subcommand)]
    Flows(FlowsCmd),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// BGP speaker.
    #[command(subcommand)]
    Bgp(BgpCmd),
    /// DPDK ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// vip-l7's admin socket.
    #[command(subcommand)]
    L7(L7Cmd),
    /// Any command with JSON arguments, e.g. `vipctl raw traffic.send '{"packets":[...]}'`.
    Raw {
        /// Command name, e.g. `vip.list`.
        cmd: String,
        /// Arguments object as JSON.
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Shell completion script on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum VipCmd {
    /// List VIPs.
    List,
    /// One VIP and its backends. VIP: `tcp 192.0.2.10:80`, `udp [2001:db8::1]:53`, `tcp 192.0.2.10:*`.
    Show { vip: String },
    /// Add a VIP from a TOML file holding one `[[vip]]` (with its backends and health check).
    Add { file: PathBuf },
    /// Remove a VIP.
    Del { vip: String },
}

#[derive(Subcommand, Debug)]
enum BackendCmd {
    /// Add a backend.
    Add {
        vip: String,
        backend: String,
        #[arg(long)]
        weight: Option<u16>,
        #[arg(long)]
        mac: Option<String>,
    },
    /// Remove a backend.
    Del { vip: String, backend: String },
    /// Set a backend's weight (1..=65535).
    Weight {
        vip: String,
        backend: String,
        weight: u16,
    },
    /// No new flows; tracked flows stay.
    Drain { vip: String, backend: String },
    /// Take new flows again.
    Undrain { vip: String, backend: String },
}

#[derive(Subcommand, Debug)]
enum FlowsCmd {
    /// Flows tracked.
    Count,
    /// The backend, state and age of one flow.
    Lookup {
        src: String,
        src_port: u16,
        dst: String,
        dst_port: u16,
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// The running configuration.
    Show,
    /// Validate a file (default: the daemon's config file) without applying it.
    Validate { path: Option<PathBuf> },
    /// Re-read the config file and apply what changed (like SIGHUP).
    Reload,
}

#[derive(Subcommand, Debug)]
enum BgpCmd {
    /// Sessions.
    Summary,
    /// Announced routes.
    Routes,
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// Set a port's link up or down (maintenance): while a port is down the dataplane is
    /// unhealthy and every VIP is withdrawn from BGP.
    Link {
        /// DPDK port number (the [[port]] order in the config).
        port: u16,
        #[arg(value_parser = ["up", "down"])]
        state: String,
    },
}

#[derive(Subcommand, Debug)]
enum L7Cmd {
    /// Clusters and their backends.
    Clusters,
    /// Drain an upstream of a cluster (e.g. `vipctl l7 drain app 10.0.0.7:80`).
    Drain { cluster: String, upstream: String },
    /// Undrain an upstream.
    Undrain { cluster: String, upstream: String },
    /// Set an upstream's weight.
    Weight {
        cluster: String,
        upstream: String,
        weight: u32,
    },
    /// Reload vip-l7's config.
    Reload,
}

/// (socket default, command, args, how to print)
fn request(command: &Command, l7: bool) -> Result<(bool, String, Value), String> {
    let vip = |v: &str| json!({ "vip": v });
    let vb = |v: &str, b: &str| json!({ "vip": v, "backend": b });
    Ok(match command {
        Command::Status => (l7, "status".into(), json!({})),
        Command::Vip(VipCmd::List) => (false, "vip.list".into(), json!({})),
        Command::Vip(VipCmd::Show { vip: v }) => (false, "vip.show".into(), vip(v)),
        Command::Vip(VipCmd::Add { file }) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            (false, "vip.add".into(), json!({ "toml": text }))
        }
        Command::Vip(VipCmd::Del { vip: v }) => (false, "vip.del".into(), vip(v)),
        Command::Backend(BackendCmd::Add {
            vip: v,
            backend,
            weight,
            mac,
        }) => {
            let mut args = vb(v, backend);
            args["weight"] = json!(weight);
            args["mac"] = json!(mac);
            (false, "backend.add".into(), args)
        }
        Command::Backend(BackendCmd::Del { vip: v, backend }) => {
            (false, "backend.del".into(), vb(v, backend))
        }
        Command::Backend(BackendCmd::Weight {
            vip: v,
            backend,
            weight,
        }) => {
            let mut args = vb(v, backend);
            args["weight"] = json!(weight);
            (false, "backend.weight".into(), args)
        }
        Command::Backend(BackendCmd::Drain { vip: v, backend }) => {
            (false, "backend.drain".into(), vb(v, backend))
        }
        Command::Backend(BackendCmd::Undrain { vip: v, backend }) => {
            (false, "backend.undrain".into(), vb(v, backend))
        }
        Command::Health => (false, "health.show".into(), json!({})),
        Command::Stats => (false, "stats".into(), json!({})),
        Command::Flows(FlowsCmd::Count) => (false, "flows.count".into(), json!({})),
        Command::Flows(FlowsCmd::Lookup {
            src,
            src_port,
            dst,
            dst_port,
            protocol,
        }) => (
            false,
            "flows.lookup".into(),
            json!({"src": src, "src_port": src_port, "dst": dst, "dst_port": dst_port, "protocol": protocol}),
        ),
        Command::Config(ConfigCmd::Show) => (l7, "config.show".into(), json!({})),
        Command::Config(ConfigCmd::Validate { path }) => (
            false,
            "config.validate".into(),
            json!({ "path": path.as_ref().map(|p| p.display().to_string()) }),
        ),
        Command::Config(ConfigCmd::Reload) => (
            l7,
            if l7 { "reload" } else { "config.reload" }.into(),
            json!({}),
        ),
        Command::Bgp(BgpCmd::Summary) => (false, "bgp.summary".into(), json!({})),
        Command::Bgp(BgpCmd::Routes) => (false, "bgp.routes".into(), json!({})),
        Command::Port(PortCmd::Link { port, state }) => (
            false,
            "port.set_link".into(),
            json!({"port": port, "up": state == "up"}),
        ),
        Command::L7(L7Cmd::Clusters) => (true, "clusters".into(), json!({})),
        Command::L7(L7Cmd::Drain { cluster, upstream }) => (
            true,
            "drain".into(),
            json!({"cluster": cluster, "upstream": upstream}),
        ),
        Command::L7(L7Cmd::Undrain { cluster, upstream }) => (
            true,
            "undrain".into(),
            json!({"cluster": cluster, "upstream": upstream}),
        ),
        Command::L7(L7Cmd::Weight {
            cluster,
            upstream,
            weight,
        }) => (
            true,
            "weight".into(),
            json!({"cluster": cluster, "upstream": upstream, "weight": weight}),
        ),
        Command::L7(L7Cmd::Reload) => (true, "reload".into(), json!({})),
        Command::Raw { cmd, args } => {
            let args: Value = serde_json::from_str(args)
                .map_err(|e| format!("args must be a JSON object: {e}"))?;
            if !args.is_object() {
                return Err("args must be a JSON object, e.g. '{}'".into());
            }
            (l7, cmd.clone(), args)
        }
        // Answered locally in main, never sent.
        Command::Completions { .. } => return Err("completions needs no daemon".into()),
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Command::Completions { shell } = cli.command {
        // Into a buffer first: clap_complete panics when stdout closes early (`| head`).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "vipctl", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vipctl: cannot write the completion script: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (l7, cmd, args) = match request(&cli.command, cli.l7) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vipctl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let socket = cli.socket.clone().unwrap_or_else(|| {
        PathBuf::from(if l7 {
            "/run/vip-l7/admin.sock"
        } else {
            ctrl::config::DEFAULT_ADMIN_SOCKET
        })
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vipctl: {e}");
            return ExitCode::from(EXIT_PROTOCOL);
        }
    };
    let reply = runtime.block_on(ctrl::admin::call(
        &socket,
        &cmd,
        args,
        Duration::from_millis(cli.timeout_ms),
    ));
    let reply = match reply {
        Ok(reply) => reply,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            eprintln!("vipctl: cannot connect to {}: {e} (is the daemon running? --socket to choose another)", socket.display());
            return ExitCode::from(EXIT_CONNECT);
        }
        Err(e) => {
            eprintln!("vipctl: {}: {e}", socket.display());
            return ExitCode::from(EXIT_PROTOCOL);
        }
    };
    match reply.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            let result = reply.get("result").cloned().unwrap_or(Value::Null);
            let text = if cli.json {
                serde_json::to_string_pretty(&result).unwrap_or_default() + "\n"
            } else if cmd == "status" && !l7 {
                render_status(&result)
            } else if cmd == "clusters" && l7 {
                render_l7_clusters(&result)
            } else {
                render(&result)
            };
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Some(false) => {
            let error = reply.get("error").cloned().unwrap_or(Value::Null);
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&error).unwrap_or_default()
                );
            }
            eprintln!(
                "vipctl: {}: {}",
                error.get("code").and_then(Value::as_str).unwrap_or("error"),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            );
            ExitCode::from(EXIT_ERROR_REPLY)
        }
        None => {
            eprintln!("vipctl: malformed reply: {reply}");
            ExitCode::from(EXIT_PROTOCOL)
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// Columns aligned, header first.
fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(String::len).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(headers.to_vec()).chain(rows.iter().cloned()) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Generic rendering: a list of objects is a table; an object is `key: value` lines with
/// nested lists of objects as tables.
fn render(v: &Value) -> String {
    match v {
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let mut headers: Vec<String> = Vec::new();
            for item in items {
                if let Some(o) = item.as_object() {
                    for (k, v) in o {
                        if !v.is_array() && !v.is_object() && !headers.contains(k) {
                            headers.push(k.clone());
                        }
                    }
                }
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| headers.iter().map(|h| cell(&i[h.as_str()])).collect())
                .collect();
            table(&headers, &rows)
        }
        Value::Array(items) if items.is_empty() => "(none)\n".into(),
        Value::Object(o) => {
            let mut out = String::new();
            let mut nested = String::new();
            for (k, v) in o {
                match v {
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        nested.push_str(&format!("\n{k}:\n{}", render(v)));
                    }
                    Value::Object(inner)
                        if inner.values().all(|x| !x.is_object() && !x.is_array())
                            && inner.len() > 6 =>
                    {
                        let rows: Vec<Vec<String>> = inner
                            .iter()
                            .filter(|(_, x)| x.as_u64() != Some(0))
                            .map(|(a, b)| vec![a.clone(), cell(b)])
                            .collect();
                        nested.push_str(&format!(
                            "\n{k} (non-zero):\n{}",
                            if rows.is_empty() {
                                "(none)\n".into()
                            } else {
                                table(&["name".into(), "value".into()], &rows)
                            }
                        ));
                    }
                    Value::Array(_) | Value::Object(_) => out.push_str(&format!("{k}: {v}\n")),
                    _ => out.push_str(&format!("{k}: {}\n", cell(v))),
                }
            }
            out + &nested
        }
        other => format!("{}\n", cell(other)),
    }
}

/// `vipctl l7 clusters`: one line per upstream, like HAProxy's `show servers state`.
fn render_l7_clusters(v: &Value) -> String {
    let headers: Vec<String> = [
        "cluster",
        "balancer",
        "upstream",
        "health",
        "weight",
        "active",
        "draining",
        "ejected",
        "ejections",
        "errors",
    ]
    .map(String::from)
    .to_vec();
    let empty = Vec::new();
    let clusters = v["clusters"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .flat_map(|c| {
            let upstreams = c["upstreams"].as_array().unwrap_or(&empty);
            upstreams.iter().map(move |u| {
                vec![
                    cell(&c["name"]),
                    cell(&c["balancer"]),
                    cell(&u["address"]),
                    cell(&u["health"]),
                    cell(&u["weight"]),
                    cell(&u["active_requests"]),
                    cell(&u["draining"]),
                    cell(&u["ejected"]),
                    cell(&u["ejections"]),
                    cell(&u["consecutive_errors"]),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        // Not the shape this vipctl knows: show it generically rather than nothing.
        return render(v);
    }
    table(&headers, &rows)
}

/// `vipctl status`: like `birdc show protocols`, one line per VIP.
fn render_status(s: &Value) -> String {
    let mut out = format!(
        "vipd {}  dataplane {} ({})  lcores {}  uptime {}s  bgp {}  reloads {} ok / {} failed\n",
        cell(&s["version"]),
        cell(&s["dataplane"]),
        if s["dataplane_healthy"].as_bool() == Some(true) {
            "healthy".to_string()
        } else {
            format!("UNHEALTHY: {}", cell(&s["dataplane_problem"]))
        },
        cell(&s["lcores"]),
        cell(&s["uptime_s"]),
        if s["bgp"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        cell(&s["reloads"]),
        cell(&s["reloads_failed"]),
    );
    for alarm in s["alarms"].as_array().into_iter().flatten() {
        out.push_str(&format!("ALARM: {}\n", cell(alarm)));
    }
    let rows: Vec<Vec<String>> = s["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                cell(&v["vip"]),
                if v["up"].as_bool() == Some(true) {
                    "up".into()
                } else {
                    "down".into()
                },
                format!("{}/{}", cell(&v["healthy"]), cell(&v["total"])),
                if v["panic"].as_bool() == Some(true) {
                    "PANIC".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let ports: Vec<Vec<String>> = s["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                cell(&p["port"]),
                match p["link_up"].as_bool() {
                    Some(true) => "up".into(),
                    Some(false) => "DOWN".into(),
                    None => "-".into(),
                },
                p["gateway"].as_str().unwrap_or("-").to_string(),
                p["gateway_mac"].as_str().unwrap_or("-").to_string(),
                format!("{} ({})", cell(&p["next_hop"]), cell(&p["state"])),
                p["age_s"]
                    .as_f64()
                    .map_or("-".to_string(), |a| format!("{a:.1}s")),
            ]
        })
        .collect();
    out.push('\n');
    if !ports.is_empty() {
        out += &table(
            &[
                "Port".into(),
                "Link".into(),
                "Gateway".into(),
                "Gateway MAC".into(),
                "Next hop".into(),
                "Answered".into(),
            ],
            &ports,
        );
        out.push('\n');
    }
    out + &table(
        &[
            "VIP".into(),
            "State".into(),
            "Healthy".into(),
            "Alarm".into(),
        ],
        &rows,
    )
}
