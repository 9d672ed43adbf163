//! Prometheus metrics (prometheus-client), labelled by route (`host`+cluster), cluster and
//! upstream.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Metric handles of one route, created once per configuration so the request path does no
/// label formatting, hashing or locking.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// `[upstream][status class]`; the last row is "answered by the proxy" (`upstream=""`).
    requests: Vec<[Counter; 5]>,
    latency: Histogram,
}

impl RouteMetrics {
    /// Records one request; `upstream` is an index into the cluster's upstreams, `None` when
    /// the proxy answered itself.
    pub fn record(&self, upstream: Option<usize>, status: u16, secs: f64) {
        let row = upstream
            .filter(|&u| u + 1 < self.requests.len())
            .unwrap_or(self.requests.len() - 1);
        self.requests[row][class_index(status)].inc();
        self.latency.observe(secs);
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: HistFamily,
    connections: Family<Labels, Gauge>,
    upstream_active: Family<Labels, Gauge>,
    ejections: Family<Labels, Counter>,
    health_down: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0002, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vip_l7");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connections: Family::default(),
            upstream_active: Family::default(),
            ejections: Family::default(),
            health_down: Family::default(),
            rejected: Family::default(),
            retries: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by route, cluster, upstream and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers by route and cluster",
            m.latency.clone(),
        );
        registry.register(
            "client_connections",
            "Open client connections by listener",
            m.connections.clone(),
        );
        registry.register(
            "upstream_active_requests",
            "Requests in flight by cluster and upstream",
            m.upstream_active.clone(),
        );
        registry.register(
            "ejections",
            "Outlier ejections by cluster and upstream",
            m.ejections.clone(),
        );
        registry.register(
            "health_down",
            "Active health check transitions to unhealthy",
            m.health_down.clone(),
        );
        registry.register(
            "rejected",
            "Requests answered by the proxy itself, by reason",
            m.rejected.clone(),
        );
        registry.register("retries", "Retries by cluster", m.retries.clone());
        Metrics { registry, ..m }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// Handles for route `route` of `cluster` with `upstreams`.
    pub fn route_metrics(&self, route: &str, cluster: &str, upstreams: &[String]) -> RouteMetrics {
        let row = |up: &str| -> [Counter; 5] {
            CLASSES.map(|class| {
                self.requests
                    .get_or_create(&vec![
                        ("route", route.to_string()),
                        ("cluster", cluster.to_string()),
                        ("upstream", up.to_string()),
                        ("class", class.to_string()),
                    ])
                    .clone()
            })
        };
        let mut requests: Vec<[Counter; 5]> = upstreams.iter().map(|u| row(u)).collect();
        requests.push(row(""));
        let latency = self
            .latency
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("cluster", cluster.to_string()),
            ])
            .clone();
        RouteMetrics { requests, latency }
    }

    /// The in-flight gauge of one upstream.
    pub fn upstream_gauge(&self, cluster: &str, upstream: &str) -> Gauge {
        self.upstream_active
            .get_or_create(&vec![
                ("cluster", cluster.to_string()),
                ("upstream", upstream.to_string()),
            ])
            .clone()
    }

    /// One request without a route (answered by the proxy).
    pub fn request(&self, route: &str, cluster: &str, upstream: &str, status: u16, secs: f64) {
        let class = CLASSES[class_index(status)];
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("cluster", cluster.to_string()),
                ("upstream", upstream.to_string()),
                ("class", class.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("cluster", cluster.to_string()),
            ])
            .observe(secs);
    }

    /// A client connection opened (+1) or closed (-1).
    pub fn connection(&self, listener: &str, delta: i64) {
        self.connections
            .get_or_create(&vec![("listener", listener.to_string())])
            .inc_by(delta);
    }

    /// An outlier ejection.
    pub fn ejection(&self, cluster: &str, upstream: &str) {
        self.ejections
            .get_or_create(&vec![
                ("cluster", cluster.to_string()),
                ("upstream", upstream.to_string()),
            ])
            .inc();
    }

    /// A health check took an upstream out.
    pub fn health_down(&self, cluster: &str, upstream: &str) {
        self.health_down
            .get_or_create(&vec![
                ("cluster", cluster.to_string()),
                ("upstream", upstream.to_string()),
            ])
            .inc();
    }

    /// A request the proxy answered itself (`reason`: no_route, rate_limited, circuit_open, ...).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A retry.
    pub fn retry(&self, cluster: &str) {
        self.retries
            .get_or_create(&vec![("cluster", cluster.to_string())])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labels() {
        let m = Metrics::new();
        m.request("api.example.com/", "api", "10.0.0.1:80", 503, 0.01);
        m.ejection("api", "10.0.0.1:80");
        let rm = m.route_metrics("routes[1]", "api", &["10.0.0.2:80".to_string()]);
        rm.record(Some(0), 200, 0.001);
        rm.record(None, 429, 0.0);
        let text = m.encode();
        assert!(text.contains("vip_l7_requests_total{route=\"routes[1]\",cluster=\"api\",upstream=\"10.0.0.2:80\",class=\"2xx\"} 1"), "{text}");
        assert!(text.contains("vip_l7_requests_total{route=\"routes[1]\",cluster=\"api\",upstream=\"\",class=\"4xx\"} 1"), "{text}");
        assert!(text.contains("vip_l7_requests_total{route=\"api.example.com/\",cluster=\"api\",upstream=\"10.0.0.1:80\",class=\"5xx\"} 1"), "{text}");
        assert!(text.contains("vip_l7_ejections_total"), "{text}");
        assert!(
            text.contains("vip_l7_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
