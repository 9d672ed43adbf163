//! Backend health: a sans-IO state machine fed with probe results and the time, and the probes
//! themselves (TCP connect, HTTP(S) GET).
//!
//! States: a backend starts in [`HealthState::Probation`] (no new flows yet) and becomes
//! [`HealthState::Healthy`] after `rise` consecutive successful probes; `fall` consecutive
//! failures make it [`HealthState::Unhealthy`] (from probation or healthy), and `rise`
//! successes bring it back. Draining is the operator's flag, kept apart from health (a drained
//! backend is still probed, so undrain shows its true state at once).
//!
//! The panic threshold is applied per VIP by [`crate::model`], not here: this machine only
//! says what the probes saw.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CheckKind, HealthCheck};

/// What the probes say about one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// New (or just configured): not yet `rise` successes; takes no new flows.
    Probation,
    /// Passing: takes new flows.
    Healthy,
    /// Failing: takes no new flows and its flows are re-hashed (unless the VIP is in panic).
    Unhealthy,
}

impl HealthState {
    /// Lower-case name used by the admin socket and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Probation => "probation",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// The health state machine of one backend. Time is milliseconds on any monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    state: HealthState,
    successes: u8,
    failures: u8,
    since_ms: u64,
    last_error: Option<String>,
    probes: u64,
}

/// A state change reported by [`BackendHealth::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: HealthState,
    /// State after.
    pub to: HealthState,
}

impl BackendHealth {
    /// A backend under a health check: in probation from `now_ms`.
    pub fn probation(now_ms: u64) -> BackendHealth {
        BackendHealth {
            state: HealthState::Probation,
            successes: 0,
            failures: 0,
            since_ms: now_ms,
            last_error: None,
            probes: 0,
        }
    }

    /// A backend without a health check: healthy for good.
    pub fn unchecked(now_ms: u64) -> BackendHealth {
        BackendHealth {
            state: HealthState::Healthy,
            ..BackendHealth::probation(now_ms)
        }
    }

    /// Current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// When the current state began (ms).
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// Why the last probe failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Probes observed.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// Consecutive successes / failures so far.
    pub fn streak(&self) -> (u8, u8) {
        (self.successes, self.failures)
    }

    /// Feeds one probe result. `rise` and `fall` are at least 1 (0 is treated as 1).
    pub fn observe(
        &mut self,
        result: Result<(), String>,
        rise: u8,
        fall: u8,
        now_ms: u64,
    ) -> Option<Transition> {
        self.probes += 1;
        let from = self.state;
        match result {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                self.last_error = None;
                if self.state != HealthState::Healthy && self.successes >= rise.max(1) {
                    self.state = HealthState::Healthy;
                }
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.last_error = Some(reason);
                if self.state != HealthState::Unhealthy && self.failures >= fall.max(1) {
                    self.state = HealthState::Unhealthy;
                }
            }
        }
        (from != self.state).then(|| {
            self.since_ms = now_ms;
            Transition {
                from,
                to: self.state,
            }
        })
    }
}

/// Delay before the next probe: the interval plus a uniform random share of the jitter.
pub fn next_delay(check: &HealthCheck, random: &mut fastrand::Rng) -> Duration {
    let jitter = if check.jitter_ms == 0 {
        0
    } else {
        random.u64(0..=check.jitter_ms)
    };
    Duration::from_millis(check.interval_ms + jitter)
}

/// Runs one probe of `address` under `check`: Ok, or why it failed. Never takes longer than the
/// check's timeout.
pub async fn probe(
    check: &HealthCheck,
    address: IpAddr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms);
    match tokio::time::timeout(timeout, probe_inner(check, address, port, tls)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {} ms", check.timeout_ms)),
    }
}

async fn probe_inner(
    check: &HealthCheck,
    address: IpAddr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let target = SocketAddr::new(address, port);
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    match check.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Http => http_get(check, address, port, stream).await,
        CheckKind::Https => {
            let config = tls.ok_or_else(|| "no TLS client configuration".to_string())?;
            let name = match &check.host {
                Some(host) => rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?,
                None => rustls_pki_types::ServerName::IpAddress(address.into()),
            };
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake with {target}: {e}"))?;
            http_get(check, address, port, stream).await
        }
    }
}

async fn http_get<S>(
    check: &HealthCheck,
    address: IpAddr,
    port: u16,
    stream: S,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty};
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let host = match &check.host {
        Some(h) => h.clone(),
        None => match address {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        },
    };
    let request = http::Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "vipd-health/1")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("cannot build request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP request: {e}"))?;
        let status = response.status().as_u16();
        // Read (and discard) the body so the server sees a complete exchange.
        let _ = response.into_body().collect().await;
        if status == check.expect_status {
            Ok(())
        } else {
            Err(format!(
                "HTTP status {status}, expected {}",
                check.expect_status
            ))
        }
    }
    .await;
    driver.abort();
    result
}

/// TLS client configuration for HTTPS probes: the system's web PKI roots are not bundled, so
/// verification is either off (`insecure_skip_verify = true`, for self-signed backends) or
/// against no roots at all (every certificate fails, which the probe reports).
pub fn tls_config(insecure: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        // The ring provider supports the default protocol versions; this cannot fail.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tlsutil::AcceptAnyCert::new(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn probation_rises_after_rise_successes() {
        let mut h = BackendHealth::probation(0);
        assert_eq!(h.observe(Ok(()), 2, 3, 100), None);
        assert_eq!(h.state(), HealthState::Probation);
        let t = h.observe(Ok(()), 2, 3, 200).unwrap();
        assert_eq!(
            (t.from, t.to),
            (HealthState::Probation, HealthState::Healthy)
        );
        assert_eq!(h.since_ms(), 200);
    }

    #[test]
    fn healthy_falls_after_fall_failures_and_a_success_resets_the_streak() {
        let mut h = BackendHealth::unchecked(0);
        assert_eq!(h.observe(fail(), 2, 3, 1), None);
        assert_eq!(h.observe(fail(), 2, 3, 2), None);
        assert_eq!(h.observe(Ok(()), 2, 3, 3), None, "streak broken");
        assert_eq!(h.observe(fail(), 2, 3, 4), None);
        assert_eq!(h.observe(fail(), 2, 3, 5), None);
        let t = h.observe(fail(), 2, 3, 6).unwrap();
        assert_eq!(t.to, HealthState::Unhealthy);
        assert_eq!(h.last_error(), Some("connection refused"));
        assert_eq!(h.observe(fail(), 2, 3, 7), None, "already unhealthy");
        assert_eq!(h.observe(Ok(()), 2, 3, 8), None);
        assert_eq!(h.observe(Ok(()), 2, 3, 9).unwrap().to, HealthState::Healthy);
        assert_eq!(h.probes(), 9);
    }

    #[test]
    fn probation_can_fail_straight_to_unhealthy() {
        let mut h = BackendHealth::probation(0);
        assert_eq!(
            h.observe(fail(), 1, 1, 5).unwrap().to,
            HealthState::Unhealthy
        );
        // rise/fall of 0 behave as 1.
        assert_eq!(h.observe(Ok(()), 0, 0, 6).unwrap().to, HealthState::Healthy);
    }

    /// Simulated time: a probe every `interval` from a schedule of up/down periods; the state
    /// changes exactly `rise` / `fall` probes after the backend does.
    #[test]
    fn simulated_schedule() {
        let (rise, fall, interval) = (3u8, 2u8, 1000u64);
        let up = |t: u64| !(10_000..20_000).contains(&t);
        let mut h = BackendHealth::probation(0);
        let mut changes = Vec::new();
        for n in 1..=30u64 {
            let now = n * interval;
            let result = if up(now) { Ok(()) } else { fail() };
            if let Some(t) = h.observe(result, rise, fall, now) {
                changes.push((now, t.to));
            }
        }
        assert_eq!(
            changes,
            vec![
                (3_000, HealthState::Healthy),
                (11_000, HealthState::Unhealthy),
                (22_000, HealthState::Healthy),
            ]
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let toml = "[[vip]]\naddress = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n[vip.health]\ntype = \"tcp\"\ninterval_ms = 100\njitter_ms = 50\n";
        let config = crate::config::parse(toml, "x").unwrap();
        let check = config.vips()[0].health.clone().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<u128> = (0..200)
            .map(|_| next_delay(&check, &mut rng).as_millis())
            .collect();
        assert!(delays.iter().all(|d| (100..=150).contains(d)));
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter varies");
    }

    fn check(text: &str) -> HealthCheck {
        let toml = format!(
            "[[vip]]\naddress = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n[vip.health]\n{text}"
        );
        crate::config::parse(&toml, "x").unwrap().vips()[0]
            .health
            .clone()
            .unwrap()
    }

    /// Serves `status` to every HTTP request on 127.0.0.1, over TLS when `tls` is given.
    async fn server(status: u16, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tls = tls.clone();
                tokio::spawn(async move {
                    async fn respond<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                        mut s: S,
                        status: u16,
                    ) {
                        let mut buf = vec![0u8; 4096];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        assert!(
                            got.starts_with(b"GET /healthz HTTP/1.1\r\n"),
                            "{}",
                            String::from_utf8_lossy(&got)
                        );
                        let _ = s
                            .write_all(
                                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        let _ = s.shutdown().await;
                    }
                    match tls {
                        Some(config) => {
                            if let Ok(s) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            {
                                respond(s, status).await;
                            }
                        }
                        None => respond(stream, status).await,
                    }
                });
            }
        });
        port
    }

    fn self_signed() -> Arc<rustls::ServerConfig> {
        let cert = rcgen::generate_simple_self_signed(vec!["backend.test".to_string()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        Arc::new(config)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let ok_port = server(200, None).await;
        let bad_port = server(503, None).await;
        let tcp = check("type = \"tcp\"\n");
        assert_eq!(probe(&tcp, LOCAL, ok_port, None).await, Ok(()));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(probe(&tcp, LOCAL, closed, None)
            .await
            .unwrap_err()
            .contains("connect 127.0.0.1"));
        let http = check("type = \"http\"\npath = \"/healthz\"\n");
        assert_eq!(probe(&http, LOCAL, ok_port, None).await, Ok(()));
        assert_eq!(
            probe(&http, LOCAL, bad_port, None).await,
            Err("HTTP status 503, expected 200".into())
        );
        let expect_503 = check("type = \"http\"\npath = \"/healthz\"\nexpect_status = 503\n");
        assert_eq!(probe(&expect_503, LOCAL, bad_port, None).await, Ok(()));
    }

    #[tokio::test]
    async fn https_probe_accepts_self_signed_only_when_told() {
        let port = server(200, Some(self_signed())).await;
        let insecure = check("type = \"https\"\npath = \"/healthz\"\ninsecure_skip_verify = true\nhost = \"backend.test\"\n");
        assert_eq!(
            probe(&insecure, LOCAL, port, Some(&tls_config(true))).await,
            Ok(())
        );
        let strict = check("type = \"https\"\npath = \"/healthz\"\nhost = \"backend.test\"\n");
        let err = probe(&strict, LOCAL, port, Some(&tls_config(false)))
            .await
            .unwrap_err();
        assert!(err.contains("TLS handshake"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_backend_times_out() {
        // Accepts TCP but never answers HTTP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let http = check("type = \"http\"\ninterval_ms = 1000\ntimeout_ms = 100\n");
        let started = std::time::Instant::now();
        assert_eq!(
            probe(&http, LOCAL, port, None).await,
            Err("timed out after 100 ms".into())
        );
        assert!(started.elapsed() < Duration::from_millis(900));
        hold.abort();
    }
}
