//! Prometheus text exposition at `http://[metrics] address/metrics`.
//!
//! Each scrape reads the dataplane counters and the model once and encodes them with
//! `prometheus-client`: packets and bytes per VIP and backend, drops by reason, flow-table
//! occupancy, backend health, lcore busy ratio, VIP up / panic state.

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;

use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daemon::Daemon;
use crate::health::HealthState;

type Labels = Vec<(String, String)>;

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(name, help, family.clone());
    family
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Encodes every metric of `daemon` in the Prometheus text format.
pub fn render(daemon: &Daemon) -> String {
    render_with_bgp(daemon, None)
}

/// As [`render`], plus the BGP sessions of `bgp` (the speaker's `bgp.summary`).
pub fn render_with_bgp(daemon: &Daemon, bgp: Option<&serde_json::Value>) -> String {
    let mut registry = Registry::with_prefix("vipd");
    let vip_packets = counter_family(&mut registry, "vip_packets", "Packets received for a VIP");
    let vip_bytes = counter_family(&mut registry, "vip_bytes", "Bytes received for a VIP");
    let backend_packets = counter_family(
        &mut registry,
        "backend_packets",
        "Packets sent to a backend",
    );
    let backend_bytes = counter_family(
        &mut registry,
        "backend_bytes",
        "Bytes sent to a backend (after encapsulation)",
    );
    let drops = counter_family(&mut registry, "drops", "Frames dropped, by reason");
    let backend_health = gauge_family(
        &mut registry,
        "backend_healthy",
        "1 when the backend's health check passes (0 probation/unhealthy)",
    );
    let backend_drained = gauge_family(
        &mut registry,
        "backend_drained",
        "1 when the operator drained the backend",
    );
    let vip_up = gauge_family(
        &mut registry,
        "vip_up",
        "1 when the VIP has a healthy backend (announced)",
    );
    let vip_panic = gauge_family(
        &mut registry,
        "vip_panic",
        "1 when too many backends failed and all are kept (alarm)",
    );
    let busy = gauge_family(
        &mut registry,
        "lcore_busy_ratio",
        "Share of poll rounds that received frames",
    );
    let rx = counter_family(
        &mut registry,
        "lcore_rx_packets",
        "Frames received per lcore",
    );
    let flows = gauge_family(&mut registry, "flow_table_entries", "Flows tracked");
    let flow_capacity = gauge_family(&mut registry, "flow_table_capacity", "Flow-table slots");

    let next_hop = gauge_family(
        &mut registry,
        "port_next_hop_resolved",
        "1 when the port's gateway MAC is known (static, or resolved by ARP/ND); 0 drops frames to backends as no_next_hop",
    );
    let next_hop_age = gauge_family(
        &mut registry,
        "port_next_hop_age_seconds",
        "Seconds since the gateway last answered ARP/ND (resolved gateways that answered)",
    );
    for n in daemon.next_hops() {
        let l = labels(&[
            ("port", n.port.to_string()),
            (
                "gateway",
                n.gateway.map_or("static".to_string(), |g| g.to_string()),
            ),
        ]);
        next_hop
            .get_or_create(&l)
            .set(if n.mac.is_some() { 1.0 } else { 0.0 });
        if let Some(age) = n.age {
            next_hop_age.get_or_create(&l).set(age.as_secs_f64());
        }
    }

    let counters = daemon.counters();
    daemon.with_model(|model| {
        for vip in model.vips() {
            let name = vip.spec.key().to_string();
            let status = model.status(vip);
            let l = labels(&[("vip", name.clone())]);
            if let Some(t) = counters.vips.get(usize::from(vip.id)) {
                vip_packets.get_or_create(&l).inc_by(t.packets);
                vip_bytes.get_or_create(&l).inc_by(t.bytes);
            }
            vip_up
                .get_or_create(&l)
                .set(if status.up { 1.0 } else { 0.0 });
            vip_panic
                .get_or_create(&l)
                .set(if status.panic { 1.0 } else { 0.0 });
            for b in &vip.backends {
                let l = labels(&[
                    ("vip", name.clone()),
                    ("backend", b.spec.address.to_string()),
                ]);
                if let Some(t) = counters.backends.get(usize::from(b.id)) {
                    backend_packets.get_or_create(&l).inc_by(t.packets);
                    backend_bytes.get_or_create(&l).inc_by(t.bytes);
                }
                let healthy = b.health.state() == HealthState::Healthy;
                backend_health
                    .get_or_create(&l)
                    .set(if healthy { 1.0 } else { 0.0 });
                backend_drained
                    .get_or_create(&l)
                    .set(if b.drained { 1.0 } else { 0.0 });
            }
        }
    });
    for reason in dataplane::DropReason::ALL {
        drops
            .get_or_create(&labels(&[("reason", reason.as_str().to_string())]))
            .inc_by(counters.dropped(reason));
    }
    for (i, s) in daemon.lcore_stats().iter().enumerate() {
        let l = labels(&[("lcore", i.to_string())]);
        let polls = s.busy_polls + s.idle_polls;
        busy.get_or_create(&l).set(if polls == 0 {
            0.0
        } else {
            s.busy_polls as f64 / polls as f64
        });
        rx.get_or_create(&l).inc_by(s.rx_packets);
    }
    if let Some((entries, capacity)) = daemon.flow_occupancy() {
        flows.get_or_create(&Vec::new()).set(entries as f64);
        flow_capacity
            .get_or_create(&Vec::new())
            .set(capacity as f64);
    }
    if let Some(peers) = bgp.and_then(serde_json::Value::as_array) {
        bgp_sessions(&mut registry, peers);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// Per-peer BGP session gauges from `bgp.summary` entries.
fn bgp_sessions(registry: &mut Registry, peers: &[serde_json::Value]) {
    let up = gauge_family(
        registry,
        "bgp_session_up",
        "1 when the BGP session is Established",
    );
    let state = gauge_family(
        registry,
        "bgp_session_state",
        "1 for the BGP session's current FSM state",
    );
    let uptime = gauge_family(
        registry,
        "bgp_session_uptime_seconds",
        "Seconds since the BGP session was established",
    );
    let sent = gauge_family(
        registry,
        "bgp_prefixes_sent",
        "Prefixes currently advertised to the peer",
    );
    for peer in peers {
        let address = peer["peer"].as_str().unwrap_or("?").to_string();
        let current = peer["state"].as_str().unwrap_or("?").to_string();
        let l = labels(&[("peer", address.clone())]);
        up.get_or_create(&l)
            .set(if current == "Established" { 1.0 } else { 0.0 });
        state
            .get_or_create(&labels(&[("peer", address), ("state", current)]))
            .set(1.0);
        uptime
            .get_or_create(&l)
            .set(peer["uptime_s"].as_f64().unwrap_or(0.0));
        sent.get_or_create(&l)
            .set(peer["prefixes_sent"].as_f64().unwrap_or(0.0));
    }
}

/// Serves `/metrics` until the task is aborted.
pub async fn serve(daemon: Daemon, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let daemon = daemon.clone();
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            let bgp = daemon.bgp_summary().await;
                            let text = render_with_bgp(&daemon, bgp.as_ref());
                            http::Response::builder()
                                .header(
                                    http::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(bytes::Bytes::from(text)))
                        } else {
                            http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body(Full::new(bytes::Bytes::from_static(
                                    b"only /metrics is served here\n",
                                )))
                        };
                        Ok::<_, Infallible>(response.unwrap_or_default())
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
