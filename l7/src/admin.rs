//! The admin Unix socket, with vipd's conventions: newline-delimited JSON, one request per line,
//! `{"v":1,"id":..,"cmd":"..","args":{..}}` → `{"v":1,"id":..,"ok":true,"result":..}` or
//! `{"v":1,"id":..,"ok":false,"error":{"code":"..","message":".."}}`. Every problem is a
//! structured reply; the connection stays open.
//!
//! Commands: `status`, `clusters`, `drain` / `undrain` `{cluster, upstream}`,
//! `weight` `{cluster, upstream, weight}`, `reload`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::proxy::Shared;

/// Longest request line accepted (bounded memory).
const MAX_LINE: usize = 64 * 1024;

/// Binds the socket (creating its directory, replacing a stale socket) with mode 0660.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("admin socket: cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "admin socket {} is in use by a running vip-l7; stop it or set [admin] socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("admin socket: cannot remove stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("admin socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("admin socket: cannot chmod {}", path.display()))?;
    Ok(l)
}

/// Serves admin connections forever.
pub async fn serve(l: UnixListener, shared: Arc<Shared>, started: Instant) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = match (&mut r)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if n == 0 {
                    return;
                }
                let reply = if line.len() > MAX_LINE {
                    let r = error(Value::Null, "too_large", "request line longer than 64 KiB");
                    let _ = w.write_all(format!("{r}\n").as_bytes()).await;
                    return;
                } else {
                    handle_line(&shared, &line, started).await
                };
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn error(id: Value, code: &str, message: &str) -> Value {
    json!({"v": 1, "id": id, "ok": false, "error": {"code": code, "message": message}})
}

fn ok(id: Value, result: Value) -> Value {
    json!({"v": 1, "id": id, "ok": true, "result": result})
}

/// Answers one request line.
pub async fn handle_line(shared: &Shared, line: &[u8], started: Instant) -> Value {
    let req: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error(Value::Null, "bad_request", &format!("not JSON: {e}")),
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    match req.get("v").and_then(Value::as_u64) {
        Some(1) => {}
        _ => return error(id, "bad_version", "set \"v\": 1"),
    }
    let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
        return error(id, "bad_request", "missing \"cmd\" string");
    };
    let empty = json!({});
    let args = req.get("args").unwrap_or(&empty);
    match command(shared, cmd, args, started).await {
        Ok(v) => ok(id, v),
        Err((code, msg)) => error(id, code, &msg),
    }
}

type CmdResult = Result<Value, (&'static str, String)>;

fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, (&'static str, String)> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or(("bad_args", format!("missing string argument \"{name}\"")))
}

async fn command(shared: &Shared, cmd: &str, args: &Value, started: Instant) -> CmdResult {
    match cmd {
        "status" => {
            let rt = shared.runtime.load();
            Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": started.elapsed().as_secs(),
                "config": shared.config_path.display().to_string(),
                "listeners": rt.config.listeners.iter().map(|l| json!({
                    "name": l.name, "address": l.address.to_string(), "tls": l.is_tls(),
                })).collect::<Vec<_>>(),
                "routes": rt.routes.len(),
                "clusters": rt.clusters.len(),
                "requests": shared.requests_total.load(Ordering::Relaxed),
                "reloads": shared.reloads.load(Ordering::Relaxed),
                "draining": shared.draining.load(Ordering::Relaxed),
                "tls_tickets": crate::tickets::Tickets::get()
                    .map_or_else(|e| e.to_string(), |t| t.describe()),
            }))
        }
        "clusters" => {
            let rt = shared.runtime.load();
            let mut names: Vec<&String> = rt.clusters.keys().collect();
            names.sort();
            let only = args.get("cluster").and_then(Value::as_str);
            if let Some(c) = only {
                if !rt.clusters.contains_key(c) {
                    return Err(("not_found", format!("no cluster named {c:?}")));
                }
            }
            let list: Vec<Value> = names
                .into_iter()
                .filter(|n| only.is_none_or(|o| o == n.as_str()))
                .map(|n| {
                    let c = &rt.clusters[n];
                    json!({
                        "name": n,
                        "balancer": c.cfg.balancer.name(),
                        "active_requests": c.active_requests.load(Ordering::Relaxed),
                        "connections": c.connections.load(Ordering::Relaxed),
                        "upstreams": c.upstreams.iter().map(|u| json!({
                            "address": u.name,
                            "health": if u.is_healthy() { "healthy" } else { "unhealthy" },
                            "ejected": u.is_ejected(),
                            "draining": u.is_draining(),
                            "available": u.is_available(),
                            "weight": u.weight(),
                            "active_requests": u.active.load(Ordering::Relaxed),
                            "ejections": u.ejections.load(Ordering::Relaxed),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(json!({ "clusters": list }))
        }
        "drain" | "undrain" | "weight" => {
            let cluster = arg_str(args, "cluster")?;
            let upstream = arg_str(args, "upstream")?;
            let rt = shared.runtime.load();
            let c = rt
                .clusters
                .get(cluster)
                .ok_or(("not_found", format!("no cluster named {cluster:?}")))?;
            let i = c.find(upstream).ok_or((
                "not_found",
                format!("cluster {cluster:?} has no upstream {upstream:?} (give ip:port)"),
            ))?;
            let u = &c.upstreams[i];
            match cmd {
                "drain" => u.set_draining(true),
                "undrain" => u.set_draining(false),
                _ => {
                    let w = args
                        .get("weight")
                        .and_then(Value::as_u64)
                        .filter(|w| (1..=65535).contains(w))
                        .ok_or((
                            "bad_args",
                            "\"weight\" must be an integer 1..=65535 (drain to stop traffic)"
                                .to_string(),
                        ))?;
                    u.set_weight(w as u32);
                }
            }
            Ok(json!({
                "cluster": cluster, "upstream": upstream,
                "draining": u.is_draining(), "weight": u.weight(),
            }))
        }
        "reload" => match shared.reload().await {
            Ok(warnings) => Ok(json!({ "reloaded": true, "warnings": warnings })),
            Err(e) => Err(("reload_failed", e.to_string())),
        },
        other => Err((
            "unknown_command",
            format!(
                "unknown cmd {other:?}; use status, clusters, drain, undrain, weight or reload"
            ),
        )),
    }
}
