//! The admin Unix socket, with vipd's conventions: newline-delimited JSON, one request per line,
//! `{"v":1,"id":..,"cmd":"..","args":{..}}` → `{"v":1,"id":..,"ok":true,"result":..}` or
//! `{"v":1,"id":..,"ok":false,"error":{"code":"..","message":".."}}`. The server is vipd's
//! (`adminsock`): the same error codes, limits (64 KiB lines, 30 s idle, 256 connections) and
//! socket handling.
//!
//! Commands: `status`, `clusters`, `drain` / `undrain` `{cluster, upstream}`,
//! `weight` `{cluster, upstream, weight}`, `reload`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adminsock::{AdminError, BoxFuture, Handler, Limits};
use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use crate::proxy::Shared;

/// vipd's defaults: request lines up to 64 KiB, idle connections closed after 30 s.
const LIMITS: Limits = Limits {
    max_request_bytes: 64 * 1024,
    idle_timeout: Duration::from_secs(30),
};

/// Binds the socket (creating its directory, replacing a stale socket) with mode 0660.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    adminsock::bind(path).with_context(|| format!("admin socket {}", path.display()))
}

/// vip-l7's commands behind vipd's admin server.
struct Admin {
    shared: Arc<Shared>,
    started: Instant,
}

impl Handler for Admin {
    fn handle<'a>(
        &'a self,
        cmd: &'a str,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<Value, AdminError>> {
        Box::pin(command(&self.shared, cmd, args, self.started))
    }
}

/// Serves admin connections forever.
pub async fn serve(l: UnixListener, shared: Arc<Shared>, started: Instant) {
    // The limits are fixed: the sender may go, the receiver keeps the value.
    let (_fixed, limits) = tokio::sync::watch::channel(LIMITS);
    adminsock::serve(Arc::new(Admin { shared, started }), l, limits).await;
}

type CmdResult = Result<Value, AdminError>;

fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, AdminError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AdminError::bad_args(format!("missing string argument \"{name}\"")))
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
                    return Err(AdminError::new(
                        "not_found",
                        format!("no cluster named {c:?}"),
                    ));
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
                            "consecutive_errors": u.consecutive_errors(),
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
            let c = rt.clusters.get(cluster).ok_or_else(|| {
                AdminError::new("not_found", format!("no cluster named {cluster:?}"))
            })?;
            let i = c.find(upstream).ok_or_else(|| {
                AdminError::new(
                    "not_found",
                    format!("cluster {cluster:?} has no upstream {upstream:?} (give ip:port)"),
                )
            })?;
            let u = &c.upstreams[i];
            match cmd {
                "drain" => u.set_draining(true),
                "undrain" => u.set_draining(false),
                _ => {
                    let w = args
                        .get("weight")
                        .and_then(Value::as_u64)
                        .filter(|w| (1..=65535).contains(w))
                        .ok_or_else(|| {
                            AdminError::bad_args(
                                "\"weight\" must be an integer 1..=65535 (drain to stop traffic)",
                            )
                        })?;
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
            Err(e) => Err(AdminError::new("reload_failed", e.to_string())),
        },
        other => Err(AdminError::new(
            "unknown_command",
            format!(
                "unknown cmd {other:?}; use status, clusters, drain, undrain, weight or reload"
            ),
        )),
    }
}
