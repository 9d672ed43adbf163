//! The vipd daemon: the dataplane (in-memory with `--dry-run`, DPDK otherwise), health
//! checkers, the admin socket, metrics, reload and graceful shutdown, on a tokio runtime whose
//! threads are not the polling cores.
//!
//! BGP hooks: [`Daemon::announcements`] (VIP address -> up/down, with the VIP's raw `[vip.bgp]`
//! policy, and `shutting_down`), [`Daemon::dataplane_health`], [`Daemon::set_bgp`] (a
//! [`BgpAdmin`] answering `bgp.summary` / `bgp.routes`, and called on SIGTERM before draining),
//! and [`Daemon::config`] for the raw `[bgp]` table.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dataplane::io::{MemoryConfig, MemoryIo, MemoryPorts};
#[cfg(feature = "dpdk")]
use dataplane::query::FlowQuery;
use dataplane::query::FoundFlow;
use dataplane::{
    CounterSnapshot, DropReason, EngineConfig, Lcore, LcoreStatsSnapshot, TablesHandle,
};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::admin::{self, AdminError, BoxFuture, Handler};
use crate::config::{self, Backend, BgpCheck, HealthCheck, MacAddr, ValidConfig, VipKey};
use crate::health;
use crate::model::{self, Model, ModelError};

/// What the BGP speaker should announce.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Announcements {
    /// VIP address -> whether it is up (some VIP on it has a healthy backend), with the VIP's
    /// raw `[vip.bgp]` policy table.
    pub vips: BTreeMap<IpAddr, VipAnnouncement>,
    /// SIGTERM received: withdraw everything gracefully.
    pub shutting_down: bool,
}

/// One VIP address's announcement.
#[derive(Clone, Debug, PartialEq)]
pub struct VipAnnouncement {
    /// Announce (true) or withdraw (false).
    pub up: bool,
    /// The raw `[vip.bgp]` table, if the VIP has one.
    pub policy: Option<toml::Value>,
}

/// Whether the dataplane forwards: unhealthy when an lcore stops making progress or a port
/// link is down (the BGP speaker then withdraws everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneHealth {
    /// Forwarding works.
    pub healthy: bool,
    /// Why not, when unhealthy.
    pub reason: Option<String>,
}

impl Default for DataplaneHealth {
    fn default() -> Self {
        DataplaneHealth {
            healthy: true,
            reason: None,
        }
    }
}

/// One next hop of a port, as `status` and the metrics show it.
#[derive(Clone, Debug, PartialEq)]
pub struct NextHopStatus {
    /// The port.
    pub port: u16,
    /// Whether the port's link is up (`None`: unknown, or the dry-run dataplane).
    pub link_up: Option<bool>,
    /// The gateway's address when it is resolved by ARP/ND; `None` for a static MAC.
    pub gateway: Option<IpAddr>,
    /// The gateway's MAC, if known.
    pub mac: Option<MacAddr>,
    /// `static`, `incomplete`, `reachable`, `probe`, or `not resolved (dry-run)`.
    pub state: &'static str,
    /// Time since the gateway last answered ARP/ND.
    pub age: Option<Duration>,
}

/// The BGP speaker as the admin socket and shutdown see it.
pub trait BgpAdmin: Send + Sync {
    /// `bgp.summary`: sessions and their states.
    fn summary(&self) -> BoxFuture<'_, Value>;
    /// `bgp.routes`: what is announced to whom.
    fn routes(&self) -> BoxFuture<'_, Value>;
    /// Graceful shutdown (RFC 8326 community, withdraw, close); called on SIGTERM.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// Applies a reloaded `[bgp]` table (`None`: the section was removed) to the running
    /// speaker. `Ok` lists what changed; `Err` says why it needs a restart instead.
    fn reconfigure(&self, bgp: Option<&toml::Value>) -> Result<Vec<String>, String>;
}

/// How the daemon was started.
#[derive(Clone, Debug)]
pub struct Options {
    /// Config file.
    pub config_path: PathBuf,
    /// In-memory dataplane instead of DPDK.
    pub dry_run: bool,
    /// Admin socket path overriding the config's.
    pub admin_socket: Option<PathBuf>,
    /// Validates `[bgp]` on load and reload.
    pub bgp_check: Option<BgpCheck>,
    /// Time between SIGTERM (after BGP withdrawal) and stopping the dataplane.
    pub drain: Duration,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad config.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The config's VIPs do not make valid tables.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// The dataplane did not start.
    #[error("dataplane: {0}")]
    Dataplane(String),
    /// The admin socket could not be bound.
    #[error("admin socket: {0}")]
    Admin(std::io::Error),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on [metrics] address: {0} (another vipd running? change or remove [metrics])")]
    Metrics(std::io::Error),
}

/// The in-memory dataplane of `--dry-run`: one lcore, polled on demand by `traffic.send`.
struct DryRun {
    ports: MemoryPorts,
    lcore: Mutex<Lcore<MemoryIo>>,
    epoch: Instant,
}

enum Dataplane {
    DryRun(Box<DryRun>),
    #[cfg(feature = "dpdk")]
    Engine(Mutex<Option<dataplane::Engine>>, crate::dpdk::PortLinks),
}

struct Checker {
    task: tokio::task::AbortHandle,
    spec: (HealthCheck, u16, u16),
}

struct Inner {
    options: Options,
    model: Mutex<Model>,
    tables: TablesHandle,
    dataplane: Dataplane,
    epoch: Instant,
    announcements: watch::Sender<Announcements>,
    dataplane_health: watch::Sender<DataplaneHealth>,
    bgp: Mutex<Option<Arc<dyn BgpAdmin>>>,
    /// Serialises flow lookups posted to the lcores.
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    flow_queries: tokio::sync::Mutex<()>,
    checkers: Mutex<HashMap<(VipKey, IpAddr), Checker>>,
    shutdown: Notify,
    reloads: Mutex<(u64, u64)>,
    /// The CPUs of the control threads (DPDK dataplane only; the dry run has no lcore threads).
    control_cpus: Option<Vec<usize>>,
    alarms: Mutex<Vec<String>>,
    /// The admin socket's limits; a reload changes them for new connections.
    admin_limits: watch::Sender<admin::Limits>,
    /// The metrics server task, when `[metrics]` is set; a reload replaces it.
    metrics_server: Mutex<Option<tokio::task::AbortHandle>>,
}

fn admin_limits(a: &config::AdminSettings) -> admin::Limits {
    admin::Limits {
        max_request_bytes: a.max_request_bytes,
        idle_timeout: Duration::from_millis(a.idle_timeout_ms),
    }
}

/// The running daemon. Clone it freely (a handle).
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic elsewhere does not poison it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Daemon {
    /// Loads the config and builds the dataplane; nothing is served until [`Daemon::run`].
    pub fn new(options: Options) -> Result<Daemon, StartError> {
        let config = config::load_with(&options.config_path, options.bgp_check)?;
        let epoch = Instant::now();
        let model = Model::new(config.clone(), 0)?;
        let tables = TablesHandle::new(
            model
                .tables()
                .map_err(|e| ModelError::Invalid(e.to_string()))?,
        );
        let mut engine_config = EngineConfig::default();
        engine_config.pipeline.flow_table.capacity = config.dataplane.flow_table_capacity;
        let mut control_cpus = None;
        let dataplane = if options.dry_run {
            engine_config.lcores = 1;
            let ports = MemoryPorts::new(MemoryConfig::default())
                .map_err(|e| StartError::Dataplane(e.to_string()))?;
            let lcore = Lcore::new(0, &engine_config, ports.io(0), tables.clone(), epoch)
                .map_err(|e| StartError::Dataplane(e.to_string()))?;
            Dataplane::DryRun(Box::new(DryRun {
                ports,
                lcore: Mutex::new(lcore),
                epoch,
            }))
        } else {
            // Before the EAL pins this thread to its main lcore.
            let allowed = crate::affinity::allowed_cpus();
            let dataplane = start_dpdk(&config, engine_config, tables.clone())?;
            control_cpus = place_control_threads(allowed, &config);
            dataplane
        };
        let (announcements, _) = watch::channel(Announcements::default());
        let (dataplane_health, _) = watch::channel(DataplaneHealth::default());
        let limits = admin_limits(&config.admin);
        let daemon = Daemon {
            inner: Arc::new(Inner {
                options,
                model: Mutex::new(model),
                tables,
                dataplane,
                epoch,
                announcements,
                dataplane_health,
                bgp: Mutex::new(None),
                flow_queries: tokio::sync::Mutex::new(()),
                checkers: Mutex::new(HashMap::new()),
                shutdown: Notify::new(),
                reloads: Mutex::new((0, 0)),
                control_cpus,
                alarms: Mutex::new(Vec::new()),
                admin_limits: watch::Sender::new(limits),
                metrics_server: Mutex::new(None),
            }),
        };
        // Before anything subscribes: a port that is down or has no next hop at start must not
        // be announced, not even until the watchdog's first round.
        let health = assess_dataplane(None, &daemon.ports_down());
        if let (false, Some(reason)) = (health.healthy, &health.reason) {
            tracing::error!(%reason, "dataplane unhealthy: VIPs will be withdrawn");
        }
        daemon.inner.dataplane_health.send_replace(health);
        daemon.update_announcements();
        Ok(daemon)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// VIP announcements for the BGP speaker; updated on every health or config change.
    pub fn announcements(&self) -> watch::Receiver<Announcements> {
        self.inner.announcements.subscribe()
    }

    /// Dataplane health for the BGP speaker.
    pub fn dataplane_health(&self) -> watch::Receiver<DataplaneHealth> {
        self.inner.dataplane_health.subscribe()
    }

    /// Installs the BGP speaker: `bgp.summary` / `bgp.routes` answer through it and SIGTERM
    /// calls its `shutdown` before draining.
    pub fn set_bgp(&self, bgp: Box<dyn BgpAdmin>) {
        *lock(&self.inner.bgp) = Some(Arc::from(bgp));
    }

    /// The BGP speaker's `bgp.summary`, when one is installed.
    pub async fn bgp_summary(&self) -> Option<Value> {
        let bgp = lock(&self.inner.bgp).clone()?;
        Some(bgp.summary().await)
    }

    /// The running configuration (its `bgp()` is the raw `[bgp]` table).
    pub fn config(&self) -> ValidConfig {
        lock(&self.inner.model).config().clone()
    }

    /// The handle the lcores read their tables from: for other publishers such as a next-hop
    /// resolver (`Tables::with_gateway_mac`); the daemon's own rebuilds keep published ports.
    pub fn tables(&self) -> TablesHandle {
        self.inner.tables.clone()
    }

    /// The admin socket path in use.
    pub fn admin_socket(&self) -> PathBuf {
        self.inner
            .options
            .admin_socket
            .clone()
            .unwrap_or_else(|| lock(&self.inner.model).config().admin.socket.clone())
    }

    /// Asks [`Daemon::run`] to shut down gracefully (what SIGTERM does).
    pub fn request_shutdown(&self) {
        self.inner.shutdown.notify_one();
    }

    /// Rebuilds and publishes the tables, then updates announcements and alarms.
    fn publish(&self) {
        let model = lock(&self.inner.model);
        match model.tables_reusing(&self.inner.tables.current()) {
            Ok(tables) => self.inner.tables.publish(tables),
            // The model only accepts changes whose tables build; this is a bug if reached.
            Err(e) => tracing::error!(error = %e, "cannot build tables; keeping the previous ones"),
        }
        let mut alarms = Vec::new();
        for vip in model.vips() {
            let s = model.status(vip);
            if s.panic {
                alarms.push(format!(
                    "{}: panic mode: {} of {} backends failed, all kept in the table",
                    vip.spec.key(),
                    s.total - s.healthy,
                    s.total
                ));
            }
        }
        drop(model);
        let mut current = lock(&self.inner.alarms);
        for alarm in &alarms {
            if !current.contains(alarm) {
                tracing::warn!(alarm = %alarm, "health panic threshold exceeded");
            }
        }
        *current = alarms;
        drop(current);
        self.update_announcements();
    }

    fn update_announcements(&self) {
        let map = lock(&self.inner.model).announcements();
        self.inner.announcements.send_modify(|a| {
            a.vips = map
                .into_iter()
                .map(|(address, (up, policy))| (address, VipAnnouncement { up, policy }))
                .collect();
        });
    }

    /// Starts, restarts or stops health checkers to match the model.
    fn sync_checkers(&self) {
        let mut wanted: HashMap<(VipKey, IpAddr), (HealthCheck, u16, u16)> = HashMap::new();
        for vip in lock(&self.inner.model).vips() {
            let Some(check) = &vip.spec.health else {
                continue;
            };
            for b in &vip.backends {
                let port = b.spec.health_port.unwrap_or(check.port).get();
                wanted.insert(
                    (vip.spec.key(), b.spec.address),
                    (check.clone(), port, b.generation),
                );
            }
        }
        let mut checkers = lock(&self.inner.checkers);
        checkers.retain(|key, c| {
            let keep = wanted.get(key) == Some(&c.spec);
            if !keep {
                c.task.abort();
            }
            keep
        });
        for (key, spec) in wanted {
            if checkers.contains_key(&key) {
                continue;
            }
            let task =
                tokio::spawn(self.clone().check_loop(key.0, key.1, spec.clone())).abort_handle();
            checkers.insert(key, Checker { task, spec });
        }
    }

    async fn check_loop(
        self,
        vip: VipKey,
        address: IpAddr,
        (check, port, generation): (HealthCheck, u16, u16),
    ) {
        let tls = (check.kind == config::CheckKind::Https)
            .then(|| health::tls_config(check.insecure_skip_verify));
        let mut rng = fastrand::Rng::new();
        // Spread the first probes of many backends over one interval.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=check.interval_ms / 4))).await;
        loop {
            let result = health::probe(&check, address, port, tls.as_ref()).await;
            let now = self.now_ms();
            let transition =
                lock(&self.inner.model).observe(&vip, address, generation, result.clone(), now);
            if let Some(t) = transition {
                tracing::info!(vip = %vip, backend = %address, from = t.from.as_str(), to = t.to.as_str(), error = result.err().unwrap_or_default(), "backend health changed");
                self.publish();
            }
            tokio::time::sleep(health::next_delay(&check, &mut rng)).await;
        }
    }

    /// Validates the config file again and applies what changed. The running config stays
    /// when the file is invalid.
    pub fn reload(&self) -> Result<model::Diff, AdminError> {
        let mut result = config::load_with(
            &self.inner.options.config_path,
            self.inner.options.bgp_check,
        )
        .map_err(|e| {
            AdminError::new(
                "invalid_config",
                format!("config not reloaded, the running config stays:\n{e}"),
            )
        })
        .and_then(|new| {
            let mut model = lock(&self.inner.model);
            // Apply to a copy first: a reload that would make bad tables changes nothing.
            let mut next = model.clone();
            let mut diff = next
                .reload(new, self.now_ms())
                .map_err(|e| AdminError::new("invalid_config", e.to_string()))?;
            if let Err(e) = next.tables() {
                return Err(AdminError::new(
                    "invalid_config",
                    format!("{e}; the running config stays until the file is fixed"),
                ));
            }
            // A new metrics address is bound before anything changes: if it cannot be, the
            // whole reload is refused.
            let (old_metrics, new_metrics) = (model.config().metrics, next.config().metrics);
            let metrics = match new_metrics {
                Some(address) if new_metrics != old_metrics => Some((
                    address,
                    std::net::TcpListener::bind(address).map_err(|e| {
                        AdminError::new(
                            "invalid_config",
                            format!("cannot serve metrics on {address}: {e}; the running config stays (free the address or choose another)"),
                        )
                    })?,
                )),
                _ => None,
            };
            let old_limits = admin_limits(&model.config().admin);
            let new_limits = admin_limits(&next.config().admin);
            *model = next;
            drop(model);
            if new_metrics != old_metrics {
                if let Some(m) = lock(&self.inner.metrics_server).take() {
                    m.abort();
                }
                match metrics {
                    Some((address, listener)) => {
                        if let Err(e) = self.serve_metrics(address, listener) {
                            diff.restart_needed
                                .push(format!("metrics: cannot serve on {address}: {e}"));
                        }
                    }
                    None => tracing::info!("metrics stopped"),
                }
                diff.applied.push(format!(
                    "metrics: {} -> {}",
                    old_metrics.map_or("off".into(), |a| a.to_string()),
                    new_metrics.map_or("off".into(), |a| a.to_string())
                ));
            }
            if (new_limits.max_request_bytes, new_limits.idle_timeout)
                != (old_limits.max_request_bytes, old_limits.idle_timeout)
            {
                self.inner.admin_limits.send_replace(new_limits);
                diff.applied.push(format!(
                    "admin limits: max_request_bytes {}, idle_timeout_ms {} (new connections)",
                    new_limits.max_request_bytes,
                    new_limits.idle_timeout.as_millis()
                ));
            }
            Ok(diff)
        });
        let mut counts = lock(&self.inner.reloads);
        match &mut result {
            Ok(diff) => {
                counts.0 += 1;
                drop(counts);
                if diff.bgp_changed {
                    self.reconfigure_bgp(diff);
                }
                tracing::info!(diff = %serde_json::to_string(diff).unwrap_or_default(), "config reloaded");
                self.publish();
                self.sync_checkers();
            }
            Err(e) => {
                counts.1 += 1;
                tracing::warn!(error = %e.message, "config reload rejected");
            }
        }
        result
    }

    /// Serves metrics on `listener` (bound to `address`), replacing any metrics server.
    fn serve_metrics(
        &self,
        address: std::net::SocketAddr,
        listener: std::net::TcpListener,
    ) -> std::io::Result<()> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(std::io::Error::other("not called on the daemon's runtime"));
        }
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(%address, "metrics listening");
        let task = tokio::spawn(crate::metrics::serve(self.clone(), listener)).abort_handle();
        if let Some(old) = lock(&self.inner.metrics_server).replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Hands a changed `[bgp]` to the running speaker; what it cannot apply is reported as
    /// `restart_needed`.
    fn reconfigure_bgp(&self, diff: &mut model::Diff) {
        let bgp = lock(&self.inner.bgp).clone();
        let raw = lock(&self.inner.model).config().bgp().cloned();
        let outcome = match (&bgp, &raw) {
            (Some(bgp), raw) => bgp.reconfigure(raw.as_ref()),
            (None, _) => {
                Err("vipd started without a BGP speaker; adding [bgp] needs a restart".into())
            }
        };
        match outcome {
            Ok(changes) => {
                for change in &changes {
                    tracing::info!(change = %change, "BGP reconfigured");
                }
                diff.bgp = changes;
            }
            Err(why) => {
                tracing::warn!(reason = %why, "[bgp] change not applied until vipd restarts");
                diff.restart_needed.push(format!("bgp: {why}"));
            }
        }
    }

    /// Serves the admin socket and metrics, runs health checks, and waits for SIGTERM / SIGINT
    /// (graceful: BGP shutdown, drain, stop) or [`Daemon::request_shutdown`]. SIGHUP reloads.
    pub async fn run(self) -> Result<(), StartError> {
        let path = self.admin_socket();
        let listener = admin::bind(&path).map_err(StartError::Admin)?;
        let _socket_file = admin::SocketFile(path.clone());
        let metrics = lock(&self.inner.model).config().metrics;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(admin::serve(
            Arc::new(self.clone()),
            listener,
            self.inner.admin_limits.subscribe(),
        )));
        if let Some(address) = metrics {
            let listener = std::net::TcpListener::bind(address).map_err(StartError::Metrics)?;
            self.serve_metrics(address, listener)
                .map_err(StartError::Metrics)?;
        }
        tasks.push(tokio::spawn(self.clone().watchdog()));
        self.sync_checkers();
        self.publish();
        tracing::info!(socket = %path.display(), dry_run = self.inner.options.dry_run, "vipd running");

        let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.reload();
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = self.inner.shutdown.notified() => break,
            }
        }
        tracing::info!("shutting down: withdrawing VIPs, then draining");
        self.inner
            .announcements
            .send_modify(|a| a.shutting_down = true);
        let bgp = lock(&self.inner.bgp).clone();
        if let Some(bgp) = bgp {
            if tokio::time::timeout(Duration::from_secs(10), bgp.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("BGP graceful shutdown took over 10 s; stopping anyway");
            }
        }
        tokio::time::sleep(self.inner.options.drain).await;
        for (_, c) in lock(&self.inner.checkers).drain() {
            c.task.abort();
        }
        for t in tasks {
            t.abort();
        }
        if let Some(m) = lock(&self.inner.metrics_server).take() {
            m.abort();
        }
        self.stop_dataplane();
        tracing::info!("vipd stopped");
        Ok(())
    }

    fn stop_dataplane(&self) {
        match &self.inner.dataplane {
            Dataplane::DryRun(_) => {}
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(engine, _) => {
                if let Some(engine) = lock(engine).take() {
                    match engine.stop() {
                        Ok(report) => tracing::info!(
                            rx = report.total.rx_packets,
                            tx = report.total.tx_packets,
                            "dataplane stopped"
                        ),
                        Err(e) => tracing::error!(error = %e, "dataplane stopped with an error"),
                    }
                }
            }
        }
    }

    /// `port.set_link {port, up}`: takes a DPDK port's link down (maintenance: the watchdog
    /// then withdraws every VIP) or up again.
    fn set_port_link(&self, args: &Value) -> Result<Value, AdminError> {
        let port = args
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| AdminError::bad_args("port: a DPDK port number is required"))?;
        let up = args
            .get("up")
            .and_then(Value::as_bool)
            .ok_or_else(|| AdminError::bad_args("up: true or false is required"))?;
        match &self.inner.dataplane {
            Dataplane::DryRun(_) => {
                let _ = (port, up);
                Err(AdminError::new(
                    "not_available",
                    "the dry-run dataplane has no DPDK ports".to_string(),
                ))
            }
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(_, links) => {
                links
                    .set(port, up)
                    .map_err(|e| AdminError::new("port_link_failed", e))?;
                tracing::warn!(port, up, "port link set by the operator");
                Ok(json!({"port": port, "up": up}))
            }
        }
    }

    /// Ports whose link is down, with why (none in dry-run).
    pub fn ports_down(&self) -> Vec<(u16, String)> {
        match &self.inner.dataplane {
            Dataplane::DryRun(_) => Vec::new(),
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(_, links) => links.down(),
        }
    }

    /// Every port's next hop(s): resolved by ARP/ND on DPDK, as configured in dry-run.
    pub fn next_hops(&self) -> Vec<NextHopStatus> {
        match &self.inner.dataplane {
            Dataplane::DryRun(_) => {
                let config = self.config();
                let mut out = Vec::new();
                for (i, p) in config.ports.iter().enumerate() {
                    let port = u16::try_from(i).unwrap_or(u16::MAX);
                    match &p.gateway {
                        config::NextHop::Mac(mac) => out.push(NextHopStatus {
                            port,
                            link_up: None,
                            gateway: None,
                            mac: Some(*mac),
                            state: "static",
                            age: None,
                        }),
                        config::NextHop::Resolve(ips) => {
                            out.extend(ips.iter().map(|ip| NextHopStatus {
                                port,
                                link_up: None,
                                gateway: Some(*ip),
                                mac: None,
                                state: "not resolved (dry-run)",
                                age: None,
                            }))
                        }
                    }
                }
                out
            }
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(_, links) => links
                .gateways()
                .into_iter()
                .map(|g| NextHopStatus {
                    port: g.port,
                    link_up: links.link_up(g.port),
                    gateway: g.gateway,
                    mac: g.mac.map(MacAddr),
                    state: g.state,
                    age: g.last_answer.map(|t| t.elapsed()),
                })
                .collect(),
        }
    }

    /// Marks the dataplane unhealthy when an lcore stops polling, a port's link is down or a
    /// port has no next hop (no gateway MAC: its traffic would be dropped, so the VIPs are
    /// withdrawn rather than blackholed).
    async fn watchdog(self) {
        let mut last: Vec<u64> = Vec::new();
        let mut first = true;
        loop {
            // The first check at once (a port down or without a next hop at start must not be
            // announced for a second), then every second.
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            first = false;
            let polls: Vec<u64> = self
                .lcore_stats()
                .iter()
                .map(|s| s.busy_polls + s.idle_polls)
                .collect();
            // The dry-run lcore is polled on demand, never on its own.
            let stalled = if self.inner.options.dry_run || last.is_empty() {
                None
            } else {
                polls.iter().zip(&last).position(|(a, b)| a == b)
            };
            let health = assess_dataplane(stalled, &self.ports_down());
            if let (false, Some(reason)) = (health.healthy, &health.reason) {
                if *self.inner.dataplane_health.borrow() != health {
                    tracing::error!(%reason, "dataplane unhealthy: VIPs will be withdrawn");
                }
            }
            self.inner.dataplane_health.send_if_modified(|h| {
                let changed = *h != health;
                *h = health.clone();
                changed
            });
            last = polls;
        }
    }

    /// Per-lcore I/O figures.
    pub fn lcore_stats(&self) -> Vec<LcoreStatsSnapshot> {
        match &self.inner.dataplane {
            Dataplane::DryRun(d) => vec![lock(&d.lcore).stats().snapshot()],
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(e, _) => lock(e).as_ref().map(|e| e.stats()).unwrap_or_default(),
        }
    }

    /// Pipeline counters, summed over lcores.
    pub fn counters(&self) -> CounterSnapshot {
        match &self.inner.dataplane {
            Dataplane::DryRun(d) => {
                let counters = lock(&d.lcore).counters();
                CounterSnapshot::sum([&*counters])
            }
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(e, _) => lock(e).as_ref().map(|e| e.counters()).unwrap_or_default(),
        }
    }

    /// (flows tracked, capacity) over lcores.
    pub fn flow_occupancy(&self) -> Option<(usize, usize)> {
        match &self.inner.dataplane {
            Dataplane::DryRun(d) => {
                let lcore = lock(&d.lcore);
                let flows = lcore.pipeline().flows();
                Some((flows.len(), flows.capacity()))
            }
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(..) => {
                let stats = self.lcore_stats();
                let per_lcore = lock(&self.inner.model)
                    .config()
                    .dataplane
                    .flow_table_capacity;
                let flows: u64 = stats.iter().map(|s| s.flows).sum();
                Some((
                    usize::try_from(flows).unwrap_or(usize::MAX),
                    per_lcore * stats.len(),
                ))
            }
        }
    }

    /// A snapshot of the model, for metrics.
    pub(crate) fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&lock(&self.inner.model))
    }

    fn vip_arg(&self, args: &Value) -> Result<VipKey, AdminError> {
        if let Some(text) = args.get("vip").and_then(Value::as_str) {
            return parse_vip_key(text).map_err(AdminError::bad_args);
        }
        let address = str_arg(args, "address")?;
        let port = args.get("port").and_then(Value::as_u64).unwrap_or(0);
        let port = u16::try_from(port)
            .map_err(|_| AdminError::bad_args(format!("port must be 0..=65535, got {port}")))?;
        let protocol = args
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("tcp");
        model::vip_key(address, port, protocol).map_err(AdminError::bad_args)
    }

    fn changed(&self, result: Result<(), ModelError>) -> Result<Value, AdminError> {
        result.map_err(model_error)?;
        self.publish();
        self.sync_checkers();
        Ok(json!({"changed": true}))
    }

    async fn dispatch(&self, cmd: &str, args: &Value) -> Result<Value, AdminError> {
        let now = self.now_ms();
        match cmd {
            "status" => Ok(self.status()),
            "vip.list" => {
                let m = lock(&self.inner.model);
                Ok(Value::Array(
                    m.vips()
                        .iter()
                        .map(|v| {
                            let mut j = m.vip_json(v, now);
                            if let Some(o) = j.as_object_mut() {
                                o.remove("backends");
                            }
                            j
                        })
                        .collect(),
                ))
            }
            "vip.show" => {
                let key = self.vip_arg(args)?;
                let m = lock(&self.inner.model);
                let vip = m
                    .vip(&key)
                    .ok_or_else(|| model_error(ModelError::NoVip(key.to_string())))?;
                Ok(m.vip_json(vip, now))
            }
            "vip.add" => {
                let text = str_arg(args, "toml")?;
                let spec = model::vip_from_toml(text).map_err(|e| AdminError::new("invalid", e))?;
                let r = lock(&self.inner.model).add_vip(spec, now);
                self.changed(r)
            }
            "vip.del" => {
                let key = self.vip_arg(args)?;
                let r = lock(&self.inner.model).del_vip(&key);
                self.changed(r)
            }
            "backend.add" => {
                let key = self.vip_arg(args)?;
                let address = ip_arg(args, "backend")?;
                let weight = weight_arg(args)?.unwrap_or(NonZeroU16::MIN);
                let mac = match args.get("mac").and_then(Value::as_str) {
                    Some(m) => Some(m.parse::<MacAddr>().map_err(AdminError::bad_args)?),
                    None => None,
                };
                let r = lock(&self.inner.model).add_backend(
                    &key,
                    Backend::new(address, weight, mac),
                    now,
                );
                self.changed(r)
            }
            "backend.del" => {
                let key = self.vip_arg(args)?;
                let address = ip_arg(args, "backend")?;
                let r = lock(&self.inner.model).del_backend(&key, address);
                self.changed(r)
            }
            "backend.weight" => {
                let key = self.vip_arg(args)?;
                let address = ip_arg(args, "backend")?;
                let weight = weight_arg(args)?
                    .ok_or_else(|| AdminError::bad_args("weight is required: 1..=65535"))?;
                let r = lock(&self.inner.model).set_weight(&key, address, weight);
                self.changed(r)
            }
            "backend.drain" | "backend.undrain" => {
                let key = self.vip_arg(args)?;
                let address = ip_arg(args, "backend")?;
                let r = lock(&self.inner.model).set_drained(&key, address, cmd == "backend.drain");
                let changed = r.map_err(model_error)?;
                if changed {
                    tracing::info!(vip = %key, backend = %address, cmd, "operator change");
                    self.publish();
                }
                Ok(json!({"changed": changed}))
            }
            "health.show" => {
                let m = lock(&self.inner.model);
                let mut out = Vec::new();
                for v in m.vips() {
                    let s = m.status(v);
                    for b in &v.backends {
                        let mut j = m.backend_json(b, s.panic, now);
                        if let Some(o) = j.as_object_mut() {
                            o.insert("vip".into(), json!(v.spec.key().to_string()));
                            o.insert(
                                "check".into(),
                                json!(v.spec.health.as_ref().map(|h| h.kind.as_str())),
                            );
                        }
                        out.push(j);
                    }
                }
                Ok(Value::Array(out))
            }
            "stats" => Ok(self.stats()),
            "flows.count" => match self.flow_occupancy() {
                Some((flows, capacity)) => Ok(json!({"flows": flows, "capacity": capacity})),
                None => Err(not_available("flow counts")),
            },
            "flows.lookup" => self.flow_lookup(args).await,
            "port.set_link" => self.set_port_link(args),
            "config.show" => Ok(config_json(&lock(&self.inner.model).config().clone())),
            "config.validate" => {
                let path = args
                    .get("path")
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.inner.options.config_path.clone());
                match config::load_with(&path, self.inner.options.bgp_check) {
                    Ok(c) => Ok(
                        json!({"valid": true, "path": path.display().to_string(), "vips": c.vips().len(), "backends": c.backend_count()}),
                    ),
                    Err(e) => Err(AdminError::new("invalid_config", e.to_string())),
                }
            }
            "config.reload" => self
                .reload()
                .map(|d| serde_json::to_value(d).unwrap_or(Value::Null)),
            "bgp.summary" | "bgp.routes" => {
                let bgp = lock(&self.inner.bgp).clone();
                let Some(bgp) = bgp else {
                    return Err(AdminError::new(
                        "bgp_disabled",
                        "BGP is not running in this vipd (no [bgp] speaker configured)",
                    ));
                };
                Ok(if cmd == "bgp.summary" {
                    bgp.summary().await
                } else {
                    bgp.routes().await
                })
            }
            "traffic.send" => self.traffic_send(args),
            _ => Err(AdminError::new(
                "unknown_command",
                format!("unknown command {cmd:?}; try \"status\", \"vip.list\", \"stats\"..."),
            )),
        }
    }

    fn status(&self) -> Value {
        let m = lock(&self.inner.model);
        let vips: Vec<Value> = m.vips().iter().map(|v| {
            let s = m.status(v);
            json!({"vip": v.spec.key().to_string(), "up": s.up, "panic": s.panic, "healthy": s.healthy, "total": s.total})
        }).collect();
        drop(m);
        let health = self.inner.dataplane_health.borrow().clone();
        let (ok, failed) = *lock(&self.inner.reloads);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "dataplane": if self.inner.options.dry_run { "memory (dry-run)" } else { "dpdk" },
            "control_cpus": self.inner.control_cpus,
            "dataplane_healthy": health.healthy,
            "dataplane_problem": health.reason,
            "uptime_s": self.inner.epoch.elapsed().as_secs(),
            "lcores": self.lcore_stats().len(),
            "bgp": lock(&self.inner.bgp).is_some(),
            "reloads": ok,
            "reloads_failed": failed,
            "alarms": lock(&self.inner.alarms).clone(),
            "ports": self.next_hops().iter().map(|n| json!({
                "port": n.port,
                "link_up": n.link_up,
                "gateway": n.gateway.map(|g| g.to_string()),
                "gateway_mac": n.mac.map(|m| m.to_string()),
                "next_hop": if n.mac.is_some() { "resolved" } else { "unresolved" },
                "state": n.state,
                "age_s": n.age.map(|a| (a.as_secs_f64() * 10.0).round() / 10.0),
            })).collect::<Vec<_>>(),
            "vips": vips,
        })
    }

    fn stats(&self) -> Value {
        let counters = self.counters();
        let m = lock(&self.inner.model);
        let traffic = |list: &[dataplane::counters::Traffic], id: u16| {
            list.get(usize::from(id))
                .map_or((0, 0), |t| (t.packets, t.bytes))
        };
        let mut vips = Vec::new();
        let mut backends = Vec::new();
        for v in m.vips() {
            let (packets, bytes) = traffic(&counters.vips, v.id);
            vips.push(json!({"vip": v.spec.key().to_string(), "packets": packets, "bytes": bytes}));
            for b in &v.backends {
                let (packets, bytes) = traffic(&counters.backends, b.id);
                backends.push(json!({"vip": v.spec.key().to_string(), "backend": b.spec.address.to_string(), "packets": packets, "bytes": bytes}));
            }
        }
        let drops: serde_json::Map<String, Value> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(counters.dropped(*r))))
            .collect();
        let lcores: Vec<Value> = self.lcore_stats().iter().enumerate().map(|(i, s)| json!({
            "lcore": i, "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes, "tx_packets": s.tx_packets,
            "tx_bytes": s.tx_bytes, "tx_dropped": s.tx_dropped, "kernel_packets": s.kernel_packets,
            "dropped": s.dropped, "busy_polls": s.busy_polls, "idle_polls": s.idle_polls,
        })).collect();
        json!({
            "lcores": lcores,
            "vips": vips,
            "backends": backends,
            "drops": drops,
            "forwarded": counters.forwarded,
            "to_kernel": counters.to_kernel,
            "flows_rehashed": counters.flows_rehashed,
            "flow_insert_failed": counters.flow_insert_failed,
        })
    }

    fn backend_by_id(&self, id: u16, generation: u16) -> Option<IpAddr> {
        let m = lock(&self.inner.model);
        m.vips()
            .iter()
            .flat_map(|v| v.backends.iter())
            .find(|b| b.id == id && b.generation == generation)
            .map(|b| b.spec.address)
    }

    #[allow(irrefutable_let_patterns)] // refutable with the `dpdk` feature
    async fn flow_lookup(&self, args: &Value) -> Result<Value, AdminError> {
        let t = tuple_arg(args)?;
        let tuple = dataplane::flow::FlowTuple {
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            protocol: t.protocol,
        };
        let (lcore, found) = match &self.inner.dataplane {
            Dataplane::DryRun(d) => {
                let now_ms = u64::try_from(d.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                let lcore = lock(&d.lcore);
                let found = lcore
                    .pipeline()
                    .flow(&self.inner.tables.load(), &tuple, now_ms)
                    .map(|view| FoundFlow { view, now_ms });
                (0, found)
            }
            #[cfg(feature = "dpdk")]
            Dataplane::Engine(e, _) => {
                let queries: Vec<Arc<FlowQuery>> = lock(e)
                    .as_ref()
                    .map(|e| e.flow_queries().to_vec())
                    .unwrap_or_default();
                self.ask_lcores(&queries, tuple).await?
            }
        };
        let Some(FoundFlow { view, now_ms }) = found else {
            return Err(AdminError::new(
                "not_found",
                "no tracked flow with this 5-tuple",
            ));
        };
        let (id, generation) = ((view.backend & 0xffff) as u16, (view.backend >> 16) as u16);
        Ok(json!({
            "lcore": lcore,
            "backend": self.backend_by_id(id, generation).map(|a| a.to_string()),
            "backend_id": id,
            "state": view.state.to_string(),
            "age_ms": now_ms.saturating_sub(view.created_ms),
            "idle_ms": now_ms.saturating_sub(view.last_seen_ms),
        }))
    }

    /// Posts `tuple` to every lcore (each owns its flow table) and waits up to 1 s for their
    /// answers; returns the lcore that tracks the flow, if one does.
    #[cfg(feature = "dpdk")]
    async fn ask_lcores(
        &self,
        queries: &[Arc<FlowQuery>],
        tuple: dataplane::flow::FlowTuple,
    ) -> Result<(usize, Option<FoundFlow>), AdminError> {
        // One question at a time per lcore slot.
        let _serial = self.inner.flow_queries.lock().await;
        for q in queries {
            q.post(tuple);
        }
        let mut answers: Vec<Option<Option<FoundFlow>>> = vec![None; queries.len()];
        let deadline = Instant::now() + Duration::from_secs(1);
        while answers.iter().any(Option::is_none) {
            for (q, a) in queries.iter().zip(answers.iter_mut()) {
                if a.is_none() {
                    *a = q.answer();
                }
            }
            if Instant::now() > deadline {
                let silent: Vec<usize> = (0..answers.len())
                    .filter(|&i| answers[i].is_none())
                    .collect();
                for &i in &silent {
                    queries[i].cancel();
                }
                return Err(AdminError::new(
                    "lcore_timeout",
                    format!("lcores {silent:?} did not answer within 1 s; see `vipctl status` (a stalled lcore makes the dataplane unhealthy)"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(answers
            .into_iter()
            .enumerate()
            .find_map(|(i, a)| a.flatten().map(|f| (i, Some(f))))
            .unwrap_or((0, None)))
    }

    /// `traffic.send` (dry-run only): builds frames for the given flows, runs each through the
    /// in-memory lcore and reports its verdict and backend.
    #[allow(irrefutable_let_patterns)] // refutable with the `dpdk` feature
    fn traffic_send(&self, args: &Value) -> Result<Value, AdminError> {
        let Dataplane::DryRun(d) = &self.inner.dataplane else {
            return Err(not_available("traffic.send (dry-run only)"));
        };
        let packets = args.get("packets").and_then(Value::as_array).ok_or_else(|| AdminError::bad_args("packets: a list of {src, src_port, dst, dst_port, protocol, flags} is required"))?;
        if packets.len() > 10_000 {
            return Err(AdminError::bad_args("at most 10000 packets per call"));
        }
        let mut frames = Vec::with_capacity(packets.len());
        for p in packets {
            let t = tuple_arg(p)?;
            if t.src.is_ipv4() != t.dst.is_ipv4() {
                return Err(AdminError::bad_args(
                    "src and dst must be of one address family",
                ));
            }
            let flags = match p.get("flags").and_then(Value::as_str).unwrap_or("syn") {
                "syn" => 0x02,
                "ack" => 0x10,
                "fin" => 0x11,
                "rst" => 0x04,
                other => {
                    return Err(AdminError::bad_args(format!(
                        "flags must be \"syn\", \"ack\", \"fin\" or \"rst\", got {other:?}"
                    )))
                }
            };
            let spec = dataplane::testing::FrameSpec {
                vlan: None,
                src: t.src,
                dst: t.dst,
                l4: if t.protocol == wire::ip_protocol::UDP {
                    dataplane::testing::L4::Udp {
                        src_port: t.src_port,
                        dst_port: t.dst_port,
                    }
                } else {
                    dataplane::testing::L4::Tcp {
                        src_port: t.src_port,
                        dst_port: t.dst_port,
                        flags,
                    }
                },
                payload_len: 16,
                tos: 0,
                dont_frag: true,
            };
            frames.push(spec.build());
        }
        let macs: HashMap<[u8; 6], IpAddr> = {
            let m = lock(&self.inner.model);
            m.vips()
                .iter()
                .flat_map(|v| v.backends.iter())
                .filter_map(|b| Some((b.spec.mac?.0, b.spec.address)))
                .collect()
        };
        let mut lcore = lock(&d.lcore);
        let mut results = Vec::with_capacity(frames.len());
        for frame in frames {
            if !d.ports.inject(0, 0, &frame) {
                results.push(json!({"verdict": "drop", "reason": "rx_ring_full"}));
                continue;
            }
            lcore.poll();
            if let Some(out) = d.ports.take_tx(0, 0) {
                let backend = outer_destination(dataplane::PacketBuf::data(&out), &macs);
                results
                    .push(json!({"verdict": "forward", "backend": backend.map(|a| a.to_string())}));
                d.ports.recycle(out);
            } else if let Some(out) = d.ports.take_kernel(0) {
                results.push(json!({"verdict": "kernel"}));
                d.ports.recycle(out);
            } else {
                results.push(json!({"verdict": "drop"}));
            }
        }
        Ok(json!({"results": results}))
    }
}

/// The backend a frame sent by the pipeline goes to: the outer IP destination (IPIP, GUE), or
/// the backend owning the destination MAC (L2 DSR).
fn outer_destination(frame: &[u8], macs: &HashMap<[u8; 6], IpAddr>) -> Option<IpAddr> {
    let dst_mac: [u8; 6] = frame.get(..6)?.try_into().ok()?;
    if let Some(a) = macs.get(&dst_mac) {
        return Some(*a);
    }
    let mut offset = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(offset..offset + 2)?.try_into().ok()?);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        offset += 4;
        ethertype = u16::from_be_bytes(frame.get(offset..offset + 2)?.try_into().ok()?);
    }
    let ip = offset + 2;
    match ethertype {
        0x0800 => {
            let b: [u8; 4] = frame.get(ip + 16..ip + 20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        0x86dd => {
            let b: [u8; 16] = frame.get(ip + 24..ip + 40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
}

fn tuple_arg(args: &Value) -> Result<Tuple, AdminError> {
    let port = |name: &str| -> Result<u16, AdminError> {
        let v = args
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| AdminError::bad_args(format!("{name} is required: 0..=65535")))?;
        u16::try_from(v)
            .map_err(|_| AdminError::bad_args(format!("{name} must be 0..=65535, got {v}")))
    };
    let protocol = match args
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("tcp")
    {
        "tcp" => wire::ip_protocol::TCP,
        "udp" => wire::ip_protocol::UDP,
        other => {
            return Err(AdminError::bad_args(format!(
                "protocol must be \"tcp\" or \"udp\", got {other:?}"
            )))
        }
    };
    Ok(Tuple {
        src: ip_arg(args, "src")?,
        dst: ip_arg(args, "dst")?,
        src_port: port("src_port")?,
        dst_port: port("dst_port")?,
        protocol,
    })
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, AdminError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AdminError::bad_args(format!("{name} is required (a string)")))
}

fn ip_arg(args: &Value, name: &str) -> Result<IpAddr, AdminError> {
    let text = str_arg(args, name)?;
    text.parse().map_err(|_| {
        AdminError::bad_args(format!(
            "{name} must be an IPv4 or IPv6 address, got {text:?}"
        ))
    })
}

fn weight_arg(args: &Value) -> Result<Option<NonZeroU16>, AdminError> {
    match args.get("weight") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|w| u16::try_from(w).ok())
            .and_then(NonZeroU16::new)
            .map(Some)
            .ok_or_else(|| AdminError::bad_args(format!("weight must be 1..=65535, got {v}"))),
    }
}

/// Parses `tcp 192.0.2.10:80`, `udp [2001:db8::1]:53` or `tcp 192.0.2.10:*` (as listed by
/// `vip.list`), or the short `192.0.2.10:80` (TCP).
pub fn parse_vip_key(text: &str) -> Result<VipKey, String> {
    let bad = || {
        format!("vip must look like \"tcp 192.0.2.10:80\", \"udp [2001:db8::1]:53\" or \"tcp 192.0.2.10:*\", got {text:?}")
    };
    let (protocol, rest) = match text.split_once(' ') {
        Some((p, rest)) => (p, rest.trim()),
        None => ("tcp", text),
    };
    let (address, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    let port = match port {
        "*" => 0,
        p => p.parse::<u16>().map_err(|_| bad())?,
    };
    model::vip_key(address, port, protocol)
}

fn model_error(e: ModelError) -> AdminError {
    let code = match e {
        ModelError::NoVip(_) | ModelError::NoBackend(..) => "not_found",
        ModelError::Exists(_) => "exists",
        ModelError::Invalid(_) | ModelError::TooMany(_) => "invalid",
    };
    AdminError::new(code, e.to_string())
}

fn not_available(what: &str) -> AdminError {
    AdminError::new("not_available", format!("{what} is not available on this dataplane (the DPDK lcores own their flow tables); use --dry-run or the metrics"))
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, StartError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| StartError::Dataplane(format!("cannot install a signal handler: {e}")))
}

/// The running config as JSON (`config.show`).
fn config_json(c: &ValidConfig) -> Value {
    json!({
        "dataplane": {"lcores": c.dataplane.lcores, "cpus": c.dataplane.cpus, "eal_args": c.dataplane.eal_args, "flow_table_capacity": c.dataplane.flow_table_capacity},
        "ports": c.ports.iter().map(port_json).collect::<Vec<_>>(),
        "admin": {"socket": c.admin.socket.display().to_string(), "max_request_bytes": c.admin.max_request_bytes, "idle_timeout_ms": c.admin.idle_timeout_ms},
        "metrics": c.metrics.map(|a| a.to_string()),
        "panic_threshold": c.panic_threshold,
        "bgp": c.bgp().map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        "vips": c.vips().iter().map(|v| json!({
            "vip": v.key().to_string(),
            "forwarding": v.forwarding.as_str(),
            "hash": v.hash.as_str(),
            "table_size": v.table_size.slots(),
            "encap_source_v4": v.encap_source_v4.map(|a| a.to_string()),
            "encap_source_v6": v.encap_source_v6.map(|a| a.to_string()),
            "health": v.health.as_ref().map(|h| json!({"type": h.kind.as_str(), "port": h.port.get(), "path": h.path, "expect_status": h.expect_status, "interval_ms": h.interval_ms, "timeout_ms": h.timeout_ms, "jitter_ms": h.jitter_ms, "rise": h.rise, "fall": h.fall, "insecure_skip_verify": h.insecure_skip_verify})),
            "backends": v.backends.iter().map(|b| json!({"address": b.address.to_string(), "weight": b.weight.get(), "mac": b.mac.map(|m| m.to_string())})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// One `[[port]]` as JSON (`config.show`).
fn port_json(p: &config::PortConfig) -> Value {
    let (gateway_mac, gateway) = match &p.gateway {
        config::NextHop::Mac(mac) => (Some(mac.to_string()), Vec::new()),
        config::NextHop::Resolve(ips) => (None, ips.iter().map(IpAddr::to_string).collect()),
    };
    json!({
        "mac": p.mac.to_string(),
        "gateway_mac": gateway_mac,
        "gateway": gateway,
        "mtu": p.mtu,
        "vlan": p.vlan,
        "kernel": p.kernel.as_ref().map(|k| json!({
            "tap": k.tap,
            "addresses": k.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mtu": k.mtu,
        })),
    })
}

impl Handler for Daemon {
    fn handle<'a>(
        &'a self,
        cmd: &'a str,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<Value, AdminError>> {
        Box::pin(self.dispatch(cmd, args))
    }
}

/// The dataplane's health from the watchdog's findings: a stalled lcore or a port whose link
/// is down makes it unhealthy (every reason is named).
fn assess_dataplane(stalled_lcore: Option<usize>, ports_down: &[(u16, String)]) -> DataplaneHealth {
    let mut reasons: Vec<String> = Vec::new();
    if let Some(lcore) = stalled_lcore {
        reasons.push(format!("lcore {lcore} made no progress for 1 s"));
    }
    reasons.extend(
        ports_down
            .iter()
            .map(|(port, why)| format!("port {port}: {why}")),
    );
    if reasons.is_empty() {
        DataplaneHealth::default()
    } else {
        DataplaneHealth {
            healthy: false,
            reason: Some(reasons.join("; ")),
        }
    }
}

/// Moves every thread but the lcore threads off the lcore CPUs (`[dataplane] cpus`), once the
/// engine has started, and logs where they run. Returns their CPUs, `None` if unknown.
fn place_control_threads(
    allowed: std::io::Result<Vec<usize>>,
    config: &ValidConfig,
) -> Option<Vec<usize>> {
    use crate::affinity::{self, Placement};
    let allowed = match allowed {
        Ok(allowed) => allowed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the CPUs vipd may use: control threads may share the lcore CPUs");
            return None;
        }
    };
    let lcore_cpus: Vec<usize> = config
        .dataplane
        .cpus
        .iter()
        .take(usize::from(config.dataplane.lcores))
        .copied()
        .collect();
    let lcores = usize::from(config.dataplane.lcores);
    if !lcore_cpus.is_empty() && lcore_cpus.len() < lcores {
        tracing::warn!(lcore_cpus = ?lcore_cpus, "[dataplane] cpus lists {} CPUs for {lcores} lcores: lcores {}.. are not pinned and share the control threads' CPUs; list one CPU per lcore", lcore_cpus.len(), lcore_cpus.len());
    }
    let placement = affinity::control_cpus(&allowed, &lcore_cpus);
    match &placement {
        Placement::Unpinned(cpus) => {
            tracing::info!(control_cpus = ?cpus, "control threads and lcores run on every CPU vipd may use ([dataplane] cpus is not set: lcores are not pinned; set it on real NICs)");
        }
        Placement::Shared(cpus) => {
            tracing::warn!(control_cpus = ?cpus, lcore_cpus = ?lcore_cpus, "control threads share the lcore CPUs: [dataplane] cpus covers every CPU vipd may use, so health checks, BGP and the admin socket can preempt the lcores; leave at least one CPU out of [dataplane] cpus (or widen vipd's CPU set)");
        }
        Placement::Apart(cpus) => match affinity::confine_control_threads(cpus) {
            Ok(moved) => {
                tracing::info!(control_cpus = ?cpus, lcore_cpus = ?lcore_cpus, threads = moved, "control threads run on CPUs {cpus:?}, off the lcore CPUs");
            }
            Err(e) => {
                tracing::warn!(error = %e, "control threads may share the lcore CPUs");
                return None;
            }
        },
    }
    // The EAL pinned this thread (and so the threads it started) to its main lcore: undo it
    // when the control threads stay on every CPU, for the unpinned lcores too (without `cpus`
    // they would all share the EAL's main-lcore CPU).
    let spread = match placement {
        Placement::Apart(_) => Ok(0),
        Placement::Shared(_) => affinity::confine_control_threads(placement.cpus()),
        Placement::Unpinned(_) => affinity::spread_all_threads(placement.cpus()),
    };
    if let Err(e) = spread {
        tracing::warn!(error = %e, "cannot spread the threads over {:?}", placement.cpus());
    }
    Some(placement.cpus().to_vec())
}

#[cfg(not(feature = "dpdk"))]
fn start_dpdk(_: &ValidConfig, _: EngineConfig, _: TablesHandle) -> Result<Dataplane, StartError> {
    Err(StartError::Dataplane(
        "this vipd was built without DPDK support (cargo feature `dpdk`); run with --dry-run or rebuild with --features dpdk".into(),
    ))
}

#[cfg(feature = "dpdk")]
fn start_dpdk(
    config: &ValidConfig,
    engine_config: EngineConfig,
    tables: TablesHandle,
) -> Result<Dataplane, StartError> {
    let (engine, links) =
        crate::dpdk::start(config, engine_config, tables).map_err(StartError::Dataplane)?;
    Ok(Dataplane::Engine(Mutex::new(Some(engine)), links))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    const CONFIG: &str = "[[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
        [[vip.backend]]\naddress = \"10.0.1.1\"\n[[vip.backend]]\naddress = \"10.0.1.2\"\n";

    fn dry_run_daemon(dir: &Path) -> Daemon {
        dry_run_daemon_with(dir, CONFIG)
    }

    /// A dry-run daemon on `config` (written to `dir/vipd.toml`), its admin socket in `dir`,
    /// no BGP check and no drain time.
    fn dry_run_daemon_with(dir: &Path, config: &str) -> Daemon {
        let path = dir.join("vipd.toml");
        std::fs::write(&path, config).unwrap();
        Daemon::new(Options {
            config_path: path,
            dry_run: true,
            admin_socket: Some(dir.join("admin.sock")),
            bgp_check: None,
            drain: Duration::ZERO,
        })
        .unwrap()
    }

    const COMMANDS: &[&str] = &[
        "status",
        "vip.list",
        "vip.show",
        "vip.add",
        "vip.del",
        "backend.add",
        "backend.del",
        "backend.weight",
        "backend.drain",
        "backend.undrain",
        "health.show",
        "stats",
        "flows.count",
        "flows.lookup",
        "port.set_link",
        "config.show",
        "config.validate",
        "config.reload",
        "bgp.summary",
        "bgp.routes",
        "traffic.send",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u16>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,24}".prop_map(Value::from),
            prop::sample::select(vec![
                "tcp 192.0.2.10:80",
                "192.0.2.10",
                "10.0.1.1",
                "10.0.1.9",
                "udp [::1]:53",
                "tcp",
                "syn",
                "/",
                "fd00::1"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            let key = prop_oneof![
                prop::sample::select(vec![
                    "vip", "backend", "weight", "mac", "address", "port", "protocol", "toml",
                    "path", "packets", "src", "dst", "src_port", "dst_port", "flags"
                ])
                .prop_map(String::from),
                "\\PC{0,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn stalled_lcores_and_down_ports_make_the_dataplane_unhealthy() {
        assert_eq!(assess_dataplane(None, &[]), DataplaneHealth::default());
        let stalled = assess_dataplane(Some(1), &[]);
        assert!(!stalled.healthy);
        assert_eq!(
            stalled.reason.as_deref(),
            Some("lcore 1 made no progress for 1 s")
        );
        let both = assess_dataplane(Some(0), &[(1, "link down".into())]);
        assert!(!both.healthy);
        assert_eq!(
            both.reason.as_deref(),
            Some("lcore 0 made no progress for 1 s; port 1: link down")
        );
        assert!(!assess_dataplane(None, &[(0, "link down".into())]).healthy);
    }

    /// Random commands with random JSON arguments, and random request lines, against the real
    /// daemon: every one gets a structured reply (and the daemon keeps answering).
    #[test]
    fn random_requests_get_structured_replies() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let daemon = runtime.block_on(async { dry_run_daemon(dir.path()) });
        let check = |reply: Vec<u8>| -> Result<(), TestCaseError> {
            let v: Value =
                serde_json::from_slice(&reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&v["v"], &json!(1));
            match v["ok"].as_bool() {
                Some(true) => prop_assert!(v.get("result").is_some()),
                Some(false) => {
                    prop_assert!(v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()));
                    prop_assert!(v["error"]["message"].is_string());
                }
                None => prop_assert!(false, "no ok field: {}", v),
            }
            Ok(())
        };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(
                    prop_oneof![
                        prop::sample::select(COMMANDS.to_vec()).prop_map(String::from),
                        "\\PC{0,12}"
                    ],
                    json_value(),
                ),
                |(cmd, args)| {
                    let line = json!({"v": 1, "id": 1, "cmd": cmd, "args": args}).to_string();
                    check(runtime.block_on(admin::answer(&daemon, line.as_bytes())))
                },
            )
            .unwrap();
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..200), |bytes| {
                check(runtime.block_on(admin::answer(&daemon, &bytes)))
            })
            .unwrap();
        // Still serving, still consistent.
        let status = runtime.block_on(admin::answer(&daemon, br#"{"v":1,"cmd":"status"}"#));
        let v: Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["ok"], true);
        runtime.block_on(async { daemon.inner.tables.current() });
    }

    #[test]
    fn vip_keys_parse_in_every_listed_form() {
        assert_eq!(
            parse_vip_key("tcp 192.0.2.10:80").unwrap().to_string(),
            "tcp 192.0.2.10:80"
        );
        assert_eq!(
            parse_vip_key("udp [2001:db8::1]:53").unwrap().to_string(),
            "udp [2001:db8::1]:53"
        );
        assert_eq!(parse_vip_key("tcp 192.0.2.10:*").unwrap().port, None);
        assert_eq!(
            parse_vip_key("192.0.2.10:443").unwrap().to_string(),
            "tcp 192.0.2.10:443"
        );
        for bad in [
            "",
            "tcp",
            "sctp 1.2.3.4:1",
            "tcp 1.2.3.4:70000",
            "tcp host:80",
        ] {
            assert!(parse_vip_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outer_destination_reads_ipv4_ipv6_and_macs() {
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[30..34].copy_from_slice(&[10, 0, 1, 2]);
        assert_eq!(
            outer_destination(&f, &HashMap::new()),
            Some("10.0.1.2".parse().unwrap())
        );
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(outer_destination(&f, &HashMap::new()).is_some());
        let mac = [2, 0, 0, 0, 0, 9];
        f[..6].copy_from_slice(&mac);
        let macs = HashMap::from([(mac, "10.9.9.9".parse().unwrap())]);
        assert_eq!(
            outer_destination(&f, &macs),
            Some("10.9.9.9".parse().unwrap())
        );
        assert_eq!(outer_destination(&[1, 2], &macs), None);
    }

    struct FakeBgp(
        Arc<std::sync::atomic::AtomicBool>,
        watch::Receiver<Announcements>,
    );

    impl BgpAdmin for FakeBgp {
        fn summary(&self) -> BoxFuture<'_, Value> {
            Box::pin(async { json!({"peers": 1}) })
        }
        fn routes(&self) -> BoxFuture<'_, Value> {
            Box::pin(async { json!([]) })
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            // Called after the announcements say shutting_down.
            assert!(self.1.borrow().shutting_down);
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {})
        }
        fn reconfigure(&self, _: Option<&toml::Value>) -> Result<Vec<String>, String> {
            Err("not in this test".into())
        }
    }

    /// The BGP hooks: announcements follow health, `bgp.*` commands go to the installed
    /// speaker, and shutdown marks `shutting_down` and calls the speaker's graceful shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bgp_hooks_follow_health_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            loop {
                let _ = backend.accept().await;
            }
        });
        let daemon = dry_run_daemon_with(
            dir.path(),
            &format!(
                "[[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n\
                 [vip.health]\ntype = \"tcp\"\nport = {port}\ninterval_ms = 20\ntimeout_ms = 20\nrise = 1\nfall = 1\n\
                 [vip.bgp]\nmed = 5\n[[vip.backend]]\naddress = \"127.0.0.1\"\n"
            ),
        );
        let mut announcements = daemon.announcements();
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(
            !announcements.borrow().vips[&vip].up,
            "probation: not announced yet"
        );
        assert_eq!(
            announcements.borrow().vips[&vip]
                .policy
                .as_ref()
                .and_then(|p| p.get("med"))
                .and_then(|m| m.as_integer()),
            Some(5)
        );
        assert!(daemon.dataplane_health().borrow().healthy);
        let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
        daemon.set_bgp(Box::new(FakeBgp(
            Arc::clone(&called),
            daemon.announcements(),
        )));
        let running = tokio::spawn(daemon.clone().run());
        let wait = |want: bool, rx: &mut watch::Receiver<Announcements>| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rx.wait_for(|a| a.vips[&vip].up == want),
                )
                .await
                .unwrap()
                .unwrap();
            }
        };
        wait(true, &mut announcements).await;
        accept.abort();
        let _ = accept.await; // the listener is closed now
        wait(false, &mut announcements).await;
        let summary = admin::answer(&daemon, br#"{"v":1,"cmd":"bgp.summary"}"#).await;
        assert!(String::from_utf8_lossy(&summary).contains("\"peers\":1"));
        daemon.request_shutdown();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(called.load(std::sync::atomic::Ordering::SeqCst));
        assert!(announcements.borrow().shutting_down);
        assert!(!dir.path().join("admin.sock").exists());
    }

    async fn cmd(daemon: &Daemon, cmd: &str, args: Value) -> Value {
        let line = json!({"v": 1, "id": 9, "cmd": cmd, "args": args}).to_string();
        serde_json::from_slice(&admin::answer(daemon, line.as_bytes()).await).unwrap()
    }

    /// vip.add / backend.add through the admin protocol, then traffic to an IPv6 VIP over GUE
    /// and to an L2 DSR VIP: `traffic.send` names the backend from the outer IPv6 header and
    /// from the destination MAC.
    #[tokio::test]
    async fn admin_added_ipv6_gue_and_l2dsr_vips_forward() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dry_run_daemon(dir.path());
        let r = cmd(&daemon, "vip.add", json!({"toml": "[[vip]]\naddress = \"2001:db8::10\"\nport = 53\nprotocol = \"udp\"\nforwarding = \"gue\"\nencap_source_v6 = \"fd00::1\"\n[[vip.backend]]\naddress = \"fd00:2::1\"\n"})).await;
        assert_eq!(r["ok"], true, "{r}");
        let r = cmd(&daemon, "vip.add", json!({"toml": "[[vip]]\naddress = \"192.0.2.30\"\nprotocol = \"tcp\"\nforwarding = \"l2dsr\"\n[[vip.backend]]\naddress = \"192.168.10.11\"\nmac = \"02:00:00:00:0a:0b\"\n"})).await;
        assert_eq!(r["ok"], true, "{r}");
        let dup = cmd(
            &daemon,
            "vip.add",
            json!({"toml": "[[vip]]\naddress = \"192.0.2.30\"\nprotocol = \"tcp\"\n"}),
        )
        .await;
        assert_eq!(dup["error"]["code"], "exists");
        let bad = cmd(
            &daemon,
            "vip.add",
            json!({"toml": "[[vip]]\naddress = \"192.0.2.31\"\n"}),
        )
        .await;
        assert_eq!(bad["error"]["code"], "invalid");
        assert!(
            bad["error"]["message"]
                .as_str()
                .unwrap()
                .contains("vip[0].protocol"),
            "{bad}"
        );
        // L2 DSR needs the MAC.
        let r = cmd(
            &daemon,
            "backend.add",
            json!({"vip": "tcp 192.0.2.30:*", "backend": "192.168.10.12"}),
        )
        .await;
        assert_eq!(r["error"]["code"], "invalid", "{r}");
        let r = cmd(&daemon, "backend.add", json!({"vip": "tcp 192.0.2.30:*", "backend": "192.168.10.12", "mac": "02:00:00:00:0a:0c", "weight": 3})).await;
        assert_eq!(r["ok"], true, "{r}");

        let r = cmd(&daemon, "traffic.send", json!({"packets": [
            {"src": "2001:db8:ffff::7", "src_port": 5353, "dst": "2001:db8::10", "dst_port": 53, "protocol": "udp"},
            {"src": "198.51.100.9", "src_port": 40000, "dst": "192.0.2.30", "dst_port": 22, "flags": "syn"},
            {"src": "198.51.100.9", "src_port": 40001, "dst": "203.0.113.99", "dst_port": 22},
        ]})).await;
        let results = &r["result"]["results"];
        assert_eq!(
            results[0],
            json!({"verdict": "forward", "backend": "fd00:2::1"}),
            "{r}"
        );
        assert_eq!(results[1]["verdict"], "forward");
        assert!(
            ["192.168.10.11", "192.168.10.12"].contains(&results[1]["backend"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(results[2]["verdict"], "kernel", "not a VIP");
        let r = cmd(&daemon, "traffic.send", json!({"packets": [{"src": "198.51.100.9", "src_port": 1, "dst": "2001:db8::10", "dst_port": 53}]})).await;
        assert_eq!(r["error"]["code"], "bad_args", "mixed families: {r}");
        let r = cmd(&daemon, "vip.del", json!({"vip": "udp [2001:db8::10]:53"})).await;
        assert_eq!(r["ok"], true);
        assert_eq!(
            cmd(&daemon, "vip.list", json!({})).await["result"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    /// Dry-run with a resolved gateway: status, metrics and config.show show the port's next
    /// hop as configured and unresolved (no ARP in memory), and traffic to a backend through
    /// it is a `no_next_hop` drop rather than a frame to a made-up MAC.
    #[tokio::test]
    async fn dry_run_reports_an_unresolved_next_hop_and_drops_no_next_hop() {
        let dir = tempfile::tempdir().unwrap();
        let port = "[[port]]\nmac = \"02:00:00:00:00:01\"\ngateway = \"10.0.0.254\"\n\
                    [port.kernel]\ntap = \"vipd0\"\naddresses = [\"10.0.0.1/24\"]\n\
                    [[port]]\nmac = \"02:00:00:00:00:02\"\ngateway_mac = \"02:00:00:00:00:fe\"\n";
        let daemon = dry_run_daemon_with(dir.path(), &format!("{port}{CONFIG}"));
        let status = cmd(&daemon, "status", json!({})).await;
        assert_eq!(
            status["result"]["ports"],
            json!([
                {"port": 0, "link_up": null, "gateway": "10.0.0.254", "gateway_mac": null,
                 "next_hop": "unresolved", "state": "not resolved (dry-run)", "age_s": null},
                {"port": 1, "link_up": null, "gateway": null, "gateway_mac": "02:00:00:00:00:fe",
                 "next_hop": "resolved", "state": "static", "age_s": null},
            ]),
            "{status}"
        );
        let shown = cmd(&daemon, "config.show", json!({})).await;
        assert_eq!(
            shown["result"]["ports"][0],
            json!({"mac": "02:00:00:00:00:01", "gateway_mac": null, "gateway": ["10.0.0.254"],
                   "mtu": 1500, "vlan": null,
                   "kernel": {"tap": "vipd0", "addresses": ["10.0.0.1/24"], "mtu": 1500}}),
            "{shown}"
        );
        let r = cmd(&daemon, "traffic.send", json!({"packets": [
            {"src": "198.51.100.9", "src_port": 40000, "dst": "192.0.2.10", "dst_port": 80, "flags": "syn"},
        ]}))
        .await;
        assert_eq!(
            r["result"]["results"][0]["verdict"], "drop",
            "no gateway MAC: {r}"
        );
        let stats = cmd(&daemon, "stats", json!({})).await;
        assert_eq!(stats["result"]["drops"]["no_next_hop"], 1, "{stats}");
        let metrics = crate::metrics::render(&daemon);
        assert!(
            metrics.contains("vipd_port_next_hop_resolved{port=\"0\",gateway=\"10.0.0.254\"} 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vipd_port_next_hop_resolved{port=\"1\",gateway=\"static\"} 1"),
            "{metrics}"
        );
    }
}
