//! The tokio session driver: a thin shell that runs [`Session`]s over real TCP connections.
//!
//! [`Speaker::spawn`] starts one task per configured peer and, when a peer is passive or a
//! listen address is set, one accept task. A peer task owns the peer's sessions: the main one
//! (which connects, for active peers) and, while a connection collision is being resolved
//! (RFC 4271 section 6.8), one more per extra inbound connection. Per connection a reader task
//! forwards bytes to the peer task and a writer task writes what the session sends, so the
//! peer task never blocks on a socket. Time is the milliseconds since the speaker started.
//!
//! The [`SpeakerHandle`] is the API vipd uses: announce and withdraw VIPs with their
//! [`RoutePolicy`], gracefully shut down (RFC 8326), and read summaries.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use crate::attributes::Prefix;
use crate::config::{BgpConfig, ConfigProblem, Family, NextHopSetting, PeerConfig, RoutePolicy};
use crate::fsm::{self, DownReason, OfferedCapabilities, PrefixRoute, Session};
use crate::message::Afi;
use crate::sockopt;
use crate::{resolve_collision, Action, CollisionWinner, Event, State};

/// How long a stopping session may take to flush its NOTIFICATION.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer per connection.
const READ_BUFFER: usize = 16 * 1024;
/// Commands a peer task takes from its queue before it settles and sends.
const CMD_BATCH: usize = 1024;

/// Why the speaker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// [`BgpConfig::validate`] found problems.
    #[error("invalid BGP configuration: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem.
        problems: Vec<ConfigProblem>,
    },
    /// Not called from within a tokio runtime.
    #[error("the BGP speaker needs a tokio runtime: call Speaker::spawn from inside one")]
    NoRuntime,
    /// The listening socket could not be set up.
    #[error("cannot listen for BGP on {addr}: {source} (is another BGP daemon bound to it, or is the address not local?)")]
    Listen {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Why [`SpeakerHandle::reconfigure`] applied nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconfigureError {
    /// [`BgpConfig::validate`] found problems.
    #[error("invalid BGP configuration: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem.
        problems: Vec<ConfigProblem>,
    },
    /// Settings of the whole speaker changed; they take effect on a restart.
    #[error("these [bgp] changes need a restart of the speaker: {}", settings.join(", "))]
    RestartNeeded {
        /// What changed, e.g. `router_id`.
        settings: Vec<String>,
    },
    /// The speaker was stopped (shutdown); it does not start sessions again.
    #[error("the BGP speaker is stopped (vipd is shutting down); nothing was changed")]
    Stopped,
    /// A TCP-MD5 key could not be set on the listening socket.
    #[error("cannot set the TCP-MD5 key of peer {peer} on the BGP listener: {source}")]
    ListenerKey {
        /// The peer.
        peer: IpAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// What [`SpeakerHandle::reconfigure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconfigured {
    /// Peers started.
    pub peers_added: Vec<IpAddr>,
    /// Peers whose sessions were closed (Cease / Administrative Shutdown) and dropped.
    pub peers_removed: Vec<IpAddr>,
    /// Peers whose session settings changed: closed and started again.
    pub peers_reset: Vec<IpAddr>,
    /// Peers kept up whose routes' attributes changed: re-announced in place.
    pub peers_reannounced: Vec<IpAddr>,
}

impl Reconfigured {
    /// Whether nothing changed for any peer.
    pub fn is_empty(&self) -> bool {
        self.peers_added.is_empty()
            && self.peers_removed.is_empty()
            && self.peers_reset.is_empty()
            && self.peers_reannounced.is_empty()
    }
}

/// One peer in [`SpeakerHandle::summary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerSummary {
    /// The peer's address.
    pub peer: IpAddr,
    /// The configured description, if any.
    pub description: Option<String>,
    /// The peer's AS.
    pub remote_as: u32,
    /// The FSM state, e.g. `Established`.
    pub state: String,
    /// Seconds since the session reached Established; 0 when it is not up.
    pub uptime_s: u64,
    /// Prefixes currently advertised to the peer.
    pub prefixes_sent: usize,
    /// Messages received from the peer since start.
    pub messages_received: u64,
    /// Why the last session or connection attempt ended.
    pub last_error: Option<String>,
}

/// One announced VIP in [`SpeakerHandle::routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSummary {
    /// `addr/32` or `addr/128`.
    pub prefix: String,
    /// The VIP's next hop override, or the speaker default (`self` = the session's address).
    pub next_hop: String,
    /// Communities on the route (the VIP's plus the speaker's; peers may add theirs).
    pub communities: Vec<String>,
    /// Large communities on the route (likewise).
    pub large_communities: Vec<String>,
    /// Peers the route is currently advertised to.
    pub peers: Vec<IpAddr>,
}

/// Starts speakers.
#[derive(Debug)]
pub struct Speaker;

impl Speaker {
    /// Validates `cfg`, binds the listener if one is needed and starts the peer tasks. Must be
    /// called from within a tokio runtime.
    pub fn spawn(cfg: BgpConfig) -> Result<SpeakerHandle, SpeakerError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(SpeakerError::Invalid { problems });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpeakerError::NoRuntime)?;
        let listener = match cfg.listen_socket() {
            Some(addr) => Some(Arc::new(
                listen(&cfg, addr)
                    .and_then(|s| {
                        let _guard = runtime.enter();
                        TcpListener::from_std(s)
                    })
                    .map_err(|source| SpeakerError::Listen { addr, source })?,
            )),
            None => None,
        };
        let start = Instant::now();
        let cfg = Arc::new(cfg);
        let peers = (0..cfg.peers.len())
            .map(|index| spawn_peer(&runtime, &cfg, index, start))
            .collect();
        let shared = Arc::new(Shared {
            start,
            routes: Mutex::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            roster: Mutex::new(Roster { cfg, peers }),
            accept: Mutex::new(None),
            listener: listener.clone(),
            runtime: runtime.clone(),
        });
        if let Some(listener) = listener {
            let accept = runtime.spawn(accept_loop(listener, Arc::downgrade(&shared)));
            *lock(&shared.accept) = Some(accept.abort_handle());
        }
        Ok(SpeakerHandle { shared })
    }
}

/// Controls a running speaker; cheap to clone. Dropping every handle stops the speaker's tasks
/// abruptly (no NOTIFICATION); use [`SpeakerHandle::graceful_shutdown`] for an orderly stop.
#[derive(Clone, Debug)]
pub struct SpeakerHandle {
    shared: Arc<Shared>,
}

impl SpeakerHandle {
    /// Announces `prefix` as a host route (/32 or /128) to every peer of its family, with
    /// `policy` on top of the speaker and peer defaults. Announcing again with the same policy
    /// does nothing; with another policy it re-announces.
    pub fn announce(&self, prefix: IpAddr, policy: RoutePolicy) {
        let draining = self.shared.draining.load(Ordering::SeqCst);
        {
            let mut routes = lock(&self.shared.routes);
            if routes.get(&prefix) == Some(&policy) {
                return;
            }
            routes.insert(prefix, policy.clone());
        }
        let roster = lock(&self.shared.roster);
        for peer in &roster.peers {
            let route = roster.cfg.route_for(&peer.config, &policy, draining);
            let _ = peer.tx.send(PeerCmd::Announce(Prefix::host(prefix), route));
        }
    }

    /// Withdraws `prefix` from every peer; withdrawing what is not announced does nothing.
    pub fn withdraw(&self, prefix: IpAddr) {
        if lock(&self.shared.routes).remove(&prefix).is_none() {
            return;
        }
        for peer in &lock(&self.shared.roster).peers {
            let _ = peer.tx.send(PeerCmd::Withdraw(vec![Prefix::host(prefix)]));
        }
    }

    /// Withdraws every announced prefix.
    pub fn withdraw_all(&self) {
        let gone: Vec<Prefix> = std::mem::take(&mut *lock(&self.shared.routes))
            .into_keys()
            .map(Prefix::host)
            .collect();
        if gone.is_empty() {
            return;
        }
        for peer in &lock(&self.shared.roster).peers {
            let _ = peer.tx.send(PeerCmd::Withdraw(gone.clone()));
        }
    }

    /// RFC 8326 graceful shutdown: re-announces every route with GRACEFUL_SHUTDOWN (65535:0) and
    /// LOCAL_PREF 0 towards iBGP peers, waits `graceful_shutdown_wait`, withdraws everything,
    /// then closes every session with Cease / Administrative Shutdown. The speaker stays
    /// stopped afterwards.
    pub async fn graceful_shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let routes = lock(&self.shared.routes).clone();
        let wait = {
            let roster = lock(&self.shared.roster);
            for peer in &roster.peers {
                for (prefix, policy) in &routes {
                    let route = roster.cfg.route_for(&peer.config, policy, true);
                    let _ = peer
                        .tx
                        .send(PeerCmd::Announce(Prefix::host(*prefix), route));
                }
            }
            u64::from(roster.cfg.graceful_shutdown_wait)
        };
        if !routes.is_empty() {
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
        self.withdraw_all();
        self.stop(Some("vipd graceful shutdown (RFC 8326)".to_string()))
            .await;
    }

    /// Closes every session with Cease / Administrative Shutdown right away (routes are
    /// withdrawn by the peers as the sessions close) and stops the speaker.
    pub async fn stop(&self, message: Option<String>) {
        {
            // Under the roster lock: a reconfigure either finished before (its peers are
            // stopped below) or sees the flag.
            let _roster = lock(&self.shared.roster);
            self.shared.stopped.store(true, Ordering::SeqCst);
        }
        if let Some(accept) = lock(&self.shared.accept).take() {
            accept.abort();
        }
        let mut waits = Vec::new();
        for peer in &lock(&self.shared.roster).peers {
            let (done, wait) = oneshot::channel();
            let cmd = PeerCmd::Stop {
                message: message.clone(),
                done,
            };
            if peer.tx.send(cmd).is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, wait).await;
        }
    }

    /// Applies a changed `[bgp]` section to the running speaker, like `birdc configure`:
    /// added peers start; removed peers get Cease / Administrative Shutdown; a peer whose
    /// session settings changed (address, AS, port, timers, families, next hops, TCP-MD5,
    /// GTSM...) is closed and started again; a peer whose route attributes changed
    /// (communities, MED, prepends) stays up and gets its routes re-announced. Settings of the
    /// whole speaker (`local_as`, `router_id`, the listening socket, removing a TCP-MD5 key
    /// from the listener) are refused with [`ReconfigureError::RestartNeeded`], changing
    /// nothing.
    pub fn reconfigure(&self, new: BgpConfig) -> Result<Reconfigured, ReconfigureError> {
        let problems = new.validate();
        if !problems.is_empty() {
            return Err(ReconfigureError::Invalid { problems });
        }
        let mut roster = lock(&self.shared.roster);
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(ReconfigureError::Stopped);
        }
        let old = roster.cfg.clone();
        let restart = restart_settings(&old, &new, self.shared.listener.is_some());
        if !restart.is_empty() {
            return Err(ReconfigureError::RestartNeeded { settings: restart });
        }
        // The listener's keys first: if one fails, nothing has changed yet.
        if let Some(listener) = &self.shared.listener {
            for p in &new.peers {
                let before = old.peers.iter().find(|o| o.address == p.address);
                if let Some(pw) = &p.password {
                    if before.and_then(|o| o.password.as_ref()) != Some(pw) {
                        sockopt::set_tcp_md5(
                            &SockRef::from(listener.as_ref()),
                            p.address,
                            pw.as_bytes(),
                        )
                        .map_err(|source| {
                            ReconfigureError::ListenerKey {
                                peer: p.address,
                                source,
                            }
                        })?;
                    }
                }
            }
        }
        let new = Arc::new(new);
        let routes = lock(&self.shared.routes).clone();
        let draining = self.shared.draining.load(Ordering::SeqCst);
        let announce_all = |peer: &PeerShared, cfg: &BgpConfig| {
            for (prefix, policy) in &routes {
                let route = cfg.route_for(&peer.config, policy, draining);
                let _ = peer
                    .tx
                    .send(PeerCmd::Announce(Prefix::host(*prefix), route));
            }
        };
        let mut report = Reconfigured::default();
        let mut old_peers = std::mem::take(&mut roster.peers);
        let mut peers = Vec::with_capacity(new.peers.len());
        for (index, pc) in new.peers.iter().enumerate() {
            let kept = old_peers
                .iter()
                .position(|o| o.config.address == pc.address)
                .map(|i| old_peers.swap_remove(i));
            match kept {
                Some(mut peer)
                    if session_settings(&old, &peer.config) == session_settings(&new, pc) =>
                {
                    let reannounce = routes.values().any(|policy| {
                        old.route_for(&peer.config, policy, draining)
                            != new.route_for(pc, policy, draining)
                    });
                    peer.config = pc.clone();
                    if reannounce {
                        announce_all(&peer, &new);
                        report.peers_reannounced.push(pc.address);
                    }
                    peers.push(peer);
                }
                Some(peer) => {
                    stop_peer(&peer, "vipd: BGP configuration changed, session restarting");
                    report.peers_reset.push(pc.address);
                    let peer = spawn_peer(&self.shared.runtime, &new, index, self.shared.start);
                    announce_all(&peer, &new);
                    peers.push(peer);
                }
                None => {
                    report.peers_added.push(pc.address);
                    let peer = spawn_peer(&self.shared.runtime, &new, index, self.shared.start);
                    announce_all(&peer, &new);
                    peers.push(peer);
                }
            }
        }
        for peer in old_peers {
            stop_peer(&peer, "vipd: peer removed from the BGP configuration");
            report.peers_removed.push(peer.config.address);
        }
        roster.cfg = new;
        roster.peers = peers;
        Ok(report)
    }

    /// One line per peer: state, uptime, prefixes sent, last error.
    pub async fn summary(&self) -> Vec<PeerSummary> {
        let now = Instant::now();
        lock(&self.shared.roster)
            .peers
            .iter()
            .map(|p| {
                let s = lock(&p.status);
                PeerSummary {
                    peer: p.config.address,
                    description: p.config.description.clone(),
                    remote_as: p.config.remote_as,
                    state: format!("{:?}", s.state),
                    uptime_s: s
                        .up_since
                        .map(|t| now.saturating_duration_since(t).as_secs())
                        .unwrap_or(0),
                    prefixes_sent: s.prefixes_sent,
                    messages_received: s.messages_received,
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }

    /// One line per announced VIP.
    pub async fn routes(&self) -> Vec<RouteSummary> {
        let routes = lock(&self.shared.routes).clone();
        let roster = lock(&self.shared.roster);
        let cfg = &roster.cfg;
        routes
            .iter()
            .map(|(addr, policy)| {
                let prefix = Prefix::host(*addr);
                let family = if addr.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                };
                let next_hop = match policy.next_hop.filter(|nh| nh.is_ipv4() == addr.is_ipv4()) {
                    Some(nh) => nh.to_string(),
                    None => match if addr.is_ipv4() {
                        cfg.next_hop_v4
                    } else {
                        cfg.next_hop_v6
                    } {
                        NextHopSetting::SelfAddress => "self".to_string(),
                        NextHopSetting::Address(a) => a.to_string(),
                    },
                };
                let peers = roster
                    .peers
                    .iter()
                    .filter(|p| {
                        let s = lock(&p.status);
                        s.state == State::Established && s.families.contains(&prefix.afi())
                    })
                    .filter(|p| p.config.families.contains(&family))
                    .map(|p| p.config.address)
                    .collect();
                RouteSummary {
                    prefix: prefix.to_string(),
                    next_hop,
                    communities: cfg
                        .communities
                        .iter()
                        .chain(&policy.communities)
                        .map(|c| c.to_string())
                        .collect(),
                    large_communities: cfg
                        .large_communities
                        .iter()
                        .chain(&policy.large_communities)
                        .map(|c| c.to_string())
                        .collect(),
                    peers,
                }
            })
            .collect()
    }

    /// Milliseconds since the speaker started (the clock its sessions run on).
    pub fn uptime_ms(&self) -> u64 {
        millis_since(self.shared.start)
    }
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    /// Lock order: `routes` is never held while taking `roster` (reconfigure takes `roster`,
    /// then `routes`).
    routes: Mutex<BTreeMap<IpAddr, RoutePolicy>>,
    /// Graceful shutdown in progress: new announcements carry GRACEFUL_SHUTDOWN too.
    draining: AtomicBool,
    /// [`SpeakerHandle::stop`] was called: no reconfigure starts peers again.
    stopped: AtomicBool,
    /// The running configuration and its peers, replaced together by
    /// [`SpeakerHandle::reconfigure`].
    roster: Mutex<Roster>,
    accept: Mutex<Option<AbortHandle>>,
    /// The listening socket (also owned by the accept loop): added peers' TCP-MD5 keys go here.
    listener: Option<Arc<TcpListener>>,
    runtime: tokio::runtime::Handle,
}

#[derive(Debug)]
struct Roster {
    cfg: Arc<BgpConfig>,
    peers: Vec<PeerShared>,
}

/// Closes a peer's session with Cease / Administrative Shutdown and `message` (RFC 8203); its
/// task ends by itself.
fn stop_peer(peer: &PeerShared, message: &str) {
    let (done, _) = oneshot::channel();
    let _ = peer.tx.send(PeerCmd::Stop {
        message: Some(message.to_string()),
        done,
    });
}

/// What a peer's session is built from: everything but the route attributes and the
/// description. Two equal values mean the session can stay up across a reconfigure.
fn session_settings(cfg: &BgpConfig, peer: &PeerConfig) -> impl PartialEq {
    let mut peer = peer.clone();
    peer.description = None;
    peer.communities.clear();
    peer.large_communities.clear();
    peer.med = None;
    peer.as_path_prepend = None;
    (
        peer,
        (cfg.hold_time, cfg.connect_retry, cfg.connect_retry_max),
        cfg.graceful_restart_time,
        (cfg.next_hop_v4, cfg.next_hop_v6),
    )
}

/// The settings of the whole speaker that changed from `old` to `new` and need a restart.
fn restart_settings(old: &BgpConfig, new: &BgpConfig, listening: bool) -> Vec<String> {
    let mut out = Vec::new();
    if old.local_as != new.local_as {
        out.push("local_as".to_string());
    }
    if old.router_id != new.router_id {
        out.push("router_id".to_string());
    }
    if old.listen_socket() != new.listen_socket() {
        out.push(
            "the listening socket (listen_address, listen_port, or passive peers)".to_string(),
        );
    }
    if listening {
        let all_gtsm =
            |c: &BgpConfig| !c.peers.is_empty() && c.peers.iter().all(|p| p.ttl_security);
        if all_gtsm(old) != all_gtsm(new) {
            out.push("ttl_security on every peer (the listener's GTSM)".to_string());
        }
        for p in &new.peers {
            let had_key = old
                .peers
                .iter()
                .any(|o| o.address == p.address && o.password.is_some());
            if had_key && p.password.is_none() {
                out.push(format!(
                    "bgp.peer {}: password removed (the listener keeps its key)",
                    p.address
                ));
            }
        }
    }
    out
}

/// Starts the task of peer `index` of `cfg`.
fn spawn_peer(
    runtime: &tokio::runtime::Handle,
    cfg: &Arc<BgpConfig>,
    index: usize,
    start: Instant,
) -> PeerShared {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(PeerStatus::default()));
    let task = PeerTask::new(cfg.clone(), index, start, status.clone(), rx);
    runtime.spawn(task.run());
    PeerShared {
        config: cfg.peers[index].clone(),
        status,
        tx,
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
    }
}

#[derive(Debug)]
struct PeerShared {
    config: PeerConfig,
    status: Arc<Mutex<PeerStatus>>,
    tx: mpsc::UnboundedSender<PeerCmd>,
}

#[derive(Debug, Clone)]
struct PeerStatus {
    state: State,
    up_since: Option<Instant>,
    prefixes_sent: usize,
    messages_received: u64,
    families: Vec<Afi>,
    last_error: Option<String>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        PeerStatus {
            state: State::Idle,
            up_since: None,
            prefixes_sent: 0,
            messages_received: 0,
            families: Vec::new(),
            last_error: None,
        }
    }
}

/// A poisoned lock only means another task panicked while holding plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
enum PeerCmd {
    Announce(Prefix, PrefixRoute),
    Withdraw(Vec<Prefix>),
    Incoming(TcpStream),
    Stop {
        message: Option<String>,
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
enum IoEvent {
    Connected(u64, io::Result<TcpStream>),
    Read(u64, Vec<u8>),
    Closed(u64),
}

/// Binds the listening socket with TCP-MD5 keys for every peer that has a password, and GTSM
/// when every peer asks for it (accepted sockets of GTSM peers get it either way).
fn listen(cfg: &BgpConfig, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    for peer in &cfg.peers {
        if let Some(pw) = &peer.password {
            sockopt::set_tcp_md5(&socket, peer.address, pw.as_bytes())?;
        }
    }
    if !cfg.peers.is_empty() && cfg.peers.iter().all(|p| p.ttl_security) {
        sockopt::set_gtsm(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(64)?;
    Ok(socket.into())
}

async fn accept_loop(listener: Arc<TcpListener>, shared: std::sync::Weak<Shared>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let from = from.ip().to_canonical();
        let roster = lock(&shared.roster);
        let Some(peer) = roster.peers.iter().find(|p| p.config.address == from) else {
            tracing::info!(%from, "BGP connection from an unconfigured address closed");
            continue;
        };
        if peer.config.ttl_security {
            if let Err(e) = sockopt::set_gtsm(&SockRef::from(&stream)) {
                tracing::warn!(%from, error = %e, "cannot set GTSM on accepted connection; closing");
                continue;
            }
        }
        let _ = peer.tx.send(PeerCmd::Incoming(stream));
    }
}

/// Opens a connection to `peer` with its socket options.
async fn connect(peer: PeerConfig) -> io::Result<TcpStream> {
    let addr = BgpConfig::peer_socket(&peer);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(pw) = &peer.password {
        sockopt::set_tcp_md5(&socket, peer.address, pw.as_bytes())?;
    }
    if peer.ttl_security {
        sockopt::set_gtsm(&socket)?;
    }
    if let Some(local) = peer.local_address {
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    let std_stream: std::net::TcpStream = socket.into();
    let stream = TcpSocket::from_std_stream(std_stream).connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One session and its current connection.
struct Slot {
    session: Session,
    conn: Option<u64>,
    outbound: bool,
    connecting: Option<(u64, AbortHandle)>,
    reader: Option<AbortHandle>,
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    writer_tasks: Vec<JoinHandle<()>>,
}

impl Slot {
    fn has_connection(&self) -> bool {
        matches!(
            self.session.state(),
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    fn close_connection(&mut self) {
        if let Some((_, h)) = self.connecting.take() {
            h.abort();
        }
        if let Some(h) = self.reader.take() {
            h.abort();
        }
        // The writer task flushes what is queued, then shuts the socket down.
        self.writer = None;
        self.conn = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.close_connection();
    }
}

struct PeerTask {
    cfg: Arc<BgpConfig>,
    peer: PeerConfig,
    start: Instant,
    status: Arc<Mutex<PeerStatus>>,
    cmds: mpsc::UnboundedReceiver<PeerCmd>,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    io_rx: mpsc::UnboundedReceiver<IoEvent>,
    /// Slot 0 is the main session; others are inbound connections racing it.
    slots: Vec<Slot>,
    routes: BTreeMap<Prefix, PrefixRoute>,
    next_id: u64,
    up_since: Option<Instant>,
}

impl PeerTask {
    fn new(
        cfg: Arc<BgpConfig>,
        index: usize,
        start: Instant,
        status: Arc<Mutex<PeerStatus>>,
        cmds: mpsc::UnboundedReceiver<PeerCmd>,
    ) -> PeerTask {
        let peer = cfg.peers[index].clone();
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        PeerTask {
            cfg,
            peer,
            start,
            status,
            cmds,
            io_tx,
            io_rx,
            slots: Vec::new(),
            routes: BTreeMap::new(),
            next_id: 0,
            up_since: None,
        }
    }

    fn now(&self) -> u64 {
        millis_since(self.start)
    }

    fn session_config(&self) -> fsm::Config {
        let cfg = &self.cfg;
        let peer = &self.peer;
        let mut c = fsm::Config::new(
            cfg.local_as,
            cfg.router_id,
            peer.remote_as,
            cfg.next_hops(peer, peer.local_address),
        );
        c.hold_time_s = peer.hold_time.unwrap_or(cfg.hold_time);
        c.passive = peer.passive;
        c.connect_retry_ms = u64::from(cfg.connect_retry) * 1000;
        c.connect_retry_max_ms = u64::from(cfg.connect_retry_max) * 1000;
        c.capabilities = OfferedCapabilities {
            ipv4_unicast: peer.families.contains(&Family::Ipv4),
            ipv6_unicast: peer.families.contains(&Family::Ipv6),
            route_refresh: true,
            graceful_restart_time_s: cfg.graceful_restart_time,
        };
        c
    }

    fn new_slot(&self) -> Option<Slot> {
        let mut session = match Session::new(self.session_config()) {
            Ok(s) => s,
            Err(e) => {
                // validate() refuses what Session::new refuses; this is a bug if reached.
                tracing::error!(peer = %self.peer.address, error = %e, "BGP session config refused");
                return None;
            }
        };
        for (prefix, route) in &self.routes {
            session.announce_route(*prefix, route.clone());
        }
        Some(Slot {
            session,
            conn: None,
            outbound: false,
            connecting: None,
            reader: None,
            writer: None,
            writer_tasks: Vec::new(),
        })
    }

    async fn run(mut self) {
        let Some(mut main) = self.new_slot() else {
            return;
        };
        main.session.handle_event(Event::ManualStart, self.now());
        self.slots.push(main);
        self.settle();
        loop {
            let deadline = self
                .slots
                .iter()
                .filter_map(|s| s.session.poll_timeout())
                .min()
                .map(|ms| self.start + Duration::from_millis(ms));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.cmds.recv() => {
                    // Take every command already queued (up to a bound) before settling, so
                    // route changes made together go out in as few UPDATEs as possible.
                    let mut next = cmd;
                    let mut taken = 0;
                    loop {
                        match next {
                            Some(PeerCmd::Stop { message, done }) => {
                                self.stop(message).await;
                                let _ = done.send(());
                                return;
                            }
                            Some(cmd) => self.handle_cmd(cmd),
                            // Every handle is gone: stop without ceremony.
                            None => return,
                        }
                        taken += 1;
                        if taken == CMD_BATCH {
                            break;
                        }
                        match self.cmds.try_recv() {
                            Ok(cmd) => next = Some(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = self.io_rx.recv() => self.handle_io(ev),
                () = sleep => {
                    let now = self.now();
                    for slot in &mut self.slots {
                        slot.session.handle_timeout(now);
                    }
                }
            }
            self.settle();
        }
    }

    fn handle_cmd(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Announce(prefix, route) => {
                self.routes.insert(prefix, route.clone());
                for slot in &mut self.slots {
                    slot.session.announce_route(prefix, route.clone());
                }
            }
            PeerCmd::Withdraw(prefixes) => {
                for p in &prefixes {
                    self.routes.remove(p);
                }
                for slot in &mut self.slots {
                    slot.session.withdraw(&prefixes);
                }
            }
            PeerCmd::Incoming(stream) => self.incoming(stream),
            PeerCmd::Stop { .. } => {}
        }
    }

    fn incoming(&mut self, stream: TcpStream) {
        let now = self.now();
        let takes_it = self
            .slots
            .first()
            .is_some_and(|main| main.session.accepts_connection());
        if takes_it {
            if let Some(main) = self.slots.first_mut() {
                // Our own attempt, if any, is abandoned for the peer's connection.
                main.close_connection();
                main.outbound = false;
            }
            self.attach(0, stream);
            return;
        }
        // The main session has a connection: race this one (collision), unless stopping.
        let Some(mut slot) = self.new_slot() else {
            return;
        };
        slot.session.handle_event(Event::ManualStart, now);
        // An active session's first action is Connect: this slot already has its connection.
        while let Some(a) = slot.session.poll_action() {
            if a != Action::Connect {
                tracing::debug!(?a, "unexpected action on a new collision slot");
            }
        }
        if !slot.session.accepts_connection() {
            return;
        }
        self.slots.push(slot);
        self.attach(self.slots.len() - 1, stream);
    }

    /// Gives `stream` to slot `index` and starts its reader and writer.
    fn attach(&mut self, index: usize, stream: TcpStream) {
        let id = self.next_id;
        self.next_id += 1;
        let local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        let _ = stream.set_nodelay(true);
        let next_hops = self
            .cfg
            .next_hops(&self.peer, local.or(self.peer.local_address));
        let (mut rd, mut wr) = stream.into_split();
        let io_tx = self.io_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_BUFFER];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = io_tx.send(IoEvent::Closed(id));
                        return;
                    }
                    Ok(n) => {
                        let chunk = buf.get(..n).unwrap_or_default().to_vec();
                        if io_tx.send(IoEvent::Read(id, chunk)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = wrx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let now = self.now();
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        slot.conn = Some(id);
        slot.reader = Some(reader.abort_handle());
        slot.writer = Some(wtx);
        slot.writer_tasks.retain(|t| !t.is_finished());
        slot.writer_tasks.push(writer);
        slot.session.set_next_hops(next_hops);
        slot.session.handle_event(Event::TcpConnected, now);
    }

    fn handle_io(&mut self, ev: IoEvent) {
        let now = self.now();
        match ev {
            IoEvent::Connected(attempt, result) => {
                let Some(index) = self
                    .slots
                    .iter()
                    .position(|s| s.connecting.as_ref().is_some_and(|(a, _)| *a == attempt))
                else {
                    return;
                };
                if let Some(slot) = self.slots.get_mut(index) {
                    slot.connecting = None;
                }
                match result {
                    Ok(stream) => {
                        if let Some(slot) = self.slots.get_mut(index) {
                            slot.outbound = true;
                        }
                        self.attach(index, stream);
                    }
                    Err(e) => {
                        lock(&self.status).last_error = Some(format!("connect: {e}"));
                        if let Some(slot) = self.slots.get_mut(index) {
                            slot.session.handle_event(Event::TcpFailed, now);
                        }
                    }
                }
            }
            IoEvent::Read(id, bytes) => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.conn == Some(id)) {
                    slot.session.handle_bytes(&bytes, now);
                }
            }
            IoEvent::Closed(id) => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.conn == Some(id)) {
                    slot.close_connection();
                    slot.session.handle_event(Event::TcpFailed, now);
                }
            }
        }
    }

    /// Carries out every session's actions, resolves collisions, drops finished collision
    /// slots and publishes the status.
    fn settle(&mut self) {
        for _ in 0..4 {
            for index in 0..self.slots.len() {
                self.drain(index);
            }
            if !self.resolve_collisions() {
                break;
            }
        }
        // A collision slot that won replaces a main session that lost.
        if let Some(main) = self.slots.first() {
            if !main.has_connection() {
                if let Some(winner) = self.slots.iter().skip(1).position(|s| s.has_connection()) {
                    self.slots.swap(0, winner + 1);
                }
            }
        }
        let mut index = 1;
        while index < self.slots.len() {
            if self.slots[index].has_connection() {
                index += 1;
            } else {
                self.slots.remove(index);
            }
        }
        self.publish();
    }

    /// RFC 4271 section 6.8 between the sessions of this peer. Returns whether it closed one.
    fn resolve_collisions(&mut self) -> bool {
        let now = self.now();
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].has_connection())
            .collect();
        if live.len() < 2 {
            return false;
        }
        let established = live
            .iter()
            .copied()
            .find(|i| self.slots[*i].session.state() == State::Established);
        if let Some(keep) = established {
            for &i in &live {
                if i != keep {
                    self.slots[i].session.close_for_collision(now);
                }
            }
            return true;
        }
        let confirmed: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| self.slots[*i].session.state() == State::OpenConfirm)
            .collect();
        let [a, b, ..] = confirmed.as_slice() else {
            return false;
        };
        let Some(remote_id) = self.slots[*a].session.negotiated().map(|n| n.peer_id) else {
            return false;
        };
        let keep_outbound =
            resolve_collision(self.cfg.router_id, remote_id) == CollisionWinner::LocallyInitiated;
        let loser = if self.slots[*a].outbound == keep_outbound {
            *b
        } else {
            *a
        };
        tracing::info!(peer = %self.peer.address, keep_outbound, "BGP connection collision resolved");
        self.slots[loser].session.close_for_collision(now);
        true
    }

    fn drain(&mut self, index: usize) {
        while let Some(action) = self
            .slots
            .get_mut(index)
            .and_then(|s| s.session.poll_action())
        {
            match action {
                Action::Connect => {
                    let attempt = self.next_id;
                    self.next_id += 1;
                    let io_tx = self.io_tx.clone();
                    let peer = self.peer.clone();
                    let task = tokio::spawn(async move {
                        let result = connect(peer).await;
                        let _ = io_tx.send(IoEvent::Connected(attempt, result));
                    });
                    if let Some(slot) = self.slots.get_mut(index) {
                        if let Some((_, old)) =
                            slot.connecting.replace((attempt, task.abort_handle()))
                        {
                            old.abort();
                        }
                    }
                }
                Action::Send(bytes) => {
                    if let Some(w) = self.slots.get(index).and_then(|s| s.writer.as_ref()) {
                        let _ = w.send(bytes);
                    }
                }
                Action::Disconnect => {
                    if let Some(slot) = self.slots.get_mut(index) {
                        slot.close_connection();
                    }
                }
                Action::SessionUp(n) => {
                    tracing::info!(peer = %self.peer.address, peer_as = n.peer_as, hold_time_s = n.hold_time_s, "BGP session established");
                    self.up_since = Some(Instant::now());
                }
                Action::SessionDown {
                    reason,
                    was_established,
                } => {
                    let text = match &reason {
                        DownReason::ManualStop => "stopped".to_string(),
                        DownReason::NotificationSent(n) => format!("sent NOTIFICATION {n}"),
                        DownReason::NotificationReceived(n) => {
                            format!("received NOTIFICATION {n}")
                        }
                        DownReason::ConnectionClosed => "connection closed by peer".to_string(),
                    };
                    tracing::warn!(peer = %self.peer.address, was_established, reason = %text, "BGP session down");
                    if was_established {
                        self.up_since = None;
                    }
                    lock(&self.status).last_error = Some(text);
                }
            }
        }
    }

    fn publish(&self) {
        let Some(main) = self.slots.first() else {
            return;
        };
        let state = main.session.state();
        let families = main
            .session
            .negotiated()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        let prefixes_sent = if state == State::Established {
            self.routes
                .keys()
                .filter(|p| families.contains(&p.afi()))
                .count()
        } else {
            0
        };
        let mut s = lock(&self.status);
        s.state = state;
        s.up_since = if state == State::Established {
            self.up_since
        } else {
            None
        };
        s.prefixes_sent = prefixes_sent;
        s.messages_received = self
            .slots
            .iter()
            .map(|s| s.session.stats().messages_received)
            .sum();
        s.families = families;
    }

    async fn stop(&mut self, message: Option<String>) {
        // Route changes queued before the stop (a withdraw_all) go out before the Cease.
        for index in 0..self.slots.len() {
            self.drain(index);
        }
        let now = self.now();
        for slot in &mut self.slots {
            slot.session.handle_event(
                Event::ManualStop {
                    message: message.clone(),
                },
                now,
            );
        }
        for index in 0..self.slots.len() {
            self.drain(index);
        }
        self.publish();
        let mut writers = Vec::new();
        for slot in &mut self.slots {
            slot.close_connection();
            writers.append(&mut slot.writer_tasks);
        }
        for w in writers {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, w).await;
        }
    }
}
