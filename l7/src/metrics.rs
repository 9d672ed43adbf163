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

    /// One proxied request.
    pub fn request(&self, route: &str, cluster: &str, upstream: &str, status: u16, secs: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
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

    /// Requests in flight to an upstream changed.
    pub fn upstream_active(&self, cluster: &str, upstream: &str, delta: i64) {
        self.upstream_active
            .get_or_create(&vec![
                ("cluster", cluster.to_string()),
                ("upstream", upstream.to_string()),
            ])
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
        let text = m.encode();
        assert!(text.contains("vip_l7_requests_total{route=\"api.example.com/\",cluster=\"api\",upstream=\"10.0.0.1:80\",class=\"5xx\"} 1"), "{text}");
        assert!(text.contains("vip_l7_ejections_total"), "{text}");
        assert!(
            text.contains("vip_l7_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
