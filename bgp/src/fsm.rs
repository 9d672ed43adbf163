//! The RFC 4271 section 8 finite state machine, sans-IO.
//!
//! A [`Session`] is one BGP peering over one TCP connection at a time. It performs no I/O and
//! reads no clock: the driver feeds it [`Event`]s, received bytes and the current time in
//! milliseconds, and drains [`Action`]s (connect, send these bytes, disconnect, session up or
//! down) with [`Session::poll_action`]. [`Session::poll_timeout`] says when to call
//! [`Session::handle_timeout`] next. The session owns hold-time negotiation, keepalives, the
//! connect-retry backoff, OPEN validation, the NOTIFICATIONs for every error, and the set of
//! routes vipd announces (sent on Established, on ROUTE-REFRESH and on change). Received routes
//! are judged by [`crate::parse_update`] and only counted. Connection collisions (RFC 4271
//! section 6.8) involve two connections, so the driver runs one `Session` per connection and
//! decides with [`resolve_collision`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use crate::attributes::{AsPath, Prefix};
use crate::codes;
use crate::decode::decode;
use crate::encode::encode;
use crate::message::{
    Afi, Capability, GracefulRestartFamily, Message, Notification, Open, Safi, Update,
};
use crate::update::{parse_update, ErrorAction, NextHops, RouteAttributes, UpdateBuilder};

/// Hold time used while waiting for the peer's OPEN (RFC 4271 section 8: "a large value",
/// 4 minutes suggested).
pub const OPEN_SENT_HOLD_MS: u64 = 240_000;
/// Longest administrative shutdown communication (RFC 9003 section 2, which raised RFC 8203's
/// 128 octets).
pub const MAX_SHUTDOWN_MESSAGE_LEN: usize = 255;

/// The six states of RFC 4271 section 8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying; waiting for a start or for the restart backoff to pass.
    Idle,
    /// Waiting for an outgoing TCP connection to complete.
    Connect,
    /// Waiting for a connection (passive) or for the connect-retry timer (after a failure).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the KEEPALIVE that confirms ours.
    OpenConfirm,
    /// The session is up: UPDATEs and KEEPALIVEs flow.
    Established,
}

/// Capabilities vipd offers in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCapabilities {
    /// Multiprotocol IPv4 unicast (RFC 4760).
    pub ipv4_unicast: bool,
    /// Multiprotocol IPv6 unicast (RFC 4760).
    pub ipv6_unicast: bool,
    /// Route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Graceful restart (RFC 4724) with this restart time in seconds (at most 4095).
    pub graceful_restart_time_s: Option<u16>,
}

impl Default for OfferedCapabilities {
    fn default() -> Self {
        OfferedCapabilities {
            ipv4_unicast: true,
            ipv6_unicast: true,
            route_refresh: true,
            graceful_restart_time_s: Some(120),
        }
    }
}

/// Configuration of one peering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS (4-octet; AS_TRANS goes in the OPEN when needed).
    pub local_as: u32,
    /// Our BGP identifier; must be non-zero.
    pub router_id: Ipv4Addr,
    /// The AS the peer must announce.
    pub peer_as: u32,
    /// Hold time we propose, in seconds: 0 (no keepalives) or at least 3.
    pub hold_time_s: u16,
    /// Only accept connections; never emit [`Action::Connect`].
    pub passive: bool,
    /// First connect-retry / restart delay; doubled after each failure.
    pub connect_retry_ms: u64,
    /// Cap of the exponential connect-retry backoff.
    pub connect_retry_max_ms: u64,
    /// Seed of the timer jitter (RFC 4271 section 10): the connect-retry, restart and
    /// keepalive delays are each multiplied by a random factor in [0.75, 1.0], so two speakers
    /// that both connect do not retry in lockstep forever. `None` turns jitter off (tests that
    /// check exact times).
    pub jitter_seed: Option<u64>,
    /// Capabilities to offer.
    pub capabilities: OfferedCapabilities,
    /// Next hops for announced routes.
    pub next_hops: NextHops,
    /// Attributes for announced routes; `None` derives them: AS_PATH `[local_as]` towards an
    /// eBGP peer, an empty AS_PATH and LOCAL_PREF 100 towards an iBGP peer.
    pub route_attributes: Option<RouteAttributes>,
}

impl Config {
    /// A configuration with RFC 4271's suggested timers (hold 90 s) and a 5 s..120 s backoff.
    pub fn new(local_as: u32, router_id: Ipv4Addr, peer_as: u32, next_hops: NextHops) -> Config {
        Config {
            local_as,
            router_id,
            peer_as,
            hold_time_s: 90,
            passive: false,
            connect_retry_ms: 5_000,
            connect_retry_max_ms: 120_000,
            jitter_seed: Some(fastrand::u64(..)),
            capabilities: OfferedCapabilities::default(),
            next_hops,
            route_attributes: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Hold time 1 or 2.
    #[error("hold time {hold_time_s}s is not allowed: use 0 (no keepalives) or at least 3")]
    HoldTime {
        /// The configured value.
        hold_time_s: u16,
    },
    /// Router id 0.0.0.0.
    #[error("router id 0.0.0.0 is not allowed: set a non-zero router id")]
    RouterId,
    /// AS 0 on either side.
    #[error("AS 0 is reserved (RFC 7607): set real local and peer AS numbers")]
    ZeroAs,
    /// Restart time over 12 bits.
    #[error("graceful restart time {restart_time_s}s does not fit 12 bits: use at most 4095")]
    RestartTime {
        /// The configured value.
        restart_time_s: u16,
    },
    /// Backoff of 0 ms, or a cap below the first delay.
    #[error("connect retry must be at least 1 ms and not above its cap ({connect_retry_ms} ms > {connect_retry_max_ms} ms?)")]
    ConnectRetry {
        /// First delay.
        connect_retry_ms: u64,
        /// Cap.
        connect_retry_max_ms: u64,
    },
}

/// Input events other than received bytes and timer expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start (or keep) the session up; it restarts itself after failures until stopped.
    ManualStart,
    /// Stop the session: Cease / Administrative Shutdown (6/2) with an optional RFC 8203
    /// shutdown communication, then stay Idle.
    ManualStop {
        /// Shutdown communication shown in the peer's logs; truncated to 255 octets.
        message: Option<String>,
    },
    /// The TCP connection is up (our connect succeeded, or the driver accepted one).
    TcpConnected,
    /// The connect attempt failed, or the established connection closed.
    TcpFailed,
}

/// Why a session (or connection attempt past OpenSent) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// [`Event::ManualStop`].
    ManualStop,
    /// We sent this NOTIFICATION (an error of the peer, or our hold timer expired).
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection closed without a NOTIFICATION.
    ConnectionClosed,
}

/// What was agreed with the peer when the session came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS.
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Hold time in seconds: the smaller of both proposals; 0 means no keepalives.
    pub hold_time_s: u16,
    /// Both sides speak 4-octet ASNs.
    pub four_octet_as: bool,
    /// Address families both sides enabled.
    pub families: Vec<Afi>,
    /// The peer accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// The peer advertised graceful restart.
    pub graceful_restart: bool,
}

/// An output of the state machine, drained with [`Session::poll_action`] in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer, then report [`Event::TcpConnected`] or
    /// [`Event::TcpFailed`].
    Connect,
    /// Write these bytes (one or more whole messages) to the connection.
    Send(Vec<u8>),
    /// Close the connection once the preceding [`Action::Send`]s are written.
    Disconnect,
    /// The session reached Established.
    SessionUp(Negotiated),
    /// The session or connection attempt ended and the state is Idle again.
    SessionDown {
        /// Why.
        reason: DownReason,
        /// Whether the session had been Established.
        was_established: bool,
    },
}

/// Counters for what the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages decoded from the peer.
    pub messages_received: u64,
    /// UPDATEs received.
    pub updates_received: u64,
    /// Prefixes the peer announced (ignored by vipd).
    pub prefixes_announced: u64,
    /// Prefixes the peer withdrew, including treat-as-withdraw.
    pub prefixes_withdrawn: u64,
    /// UPDATEs handled as treat-as-withdraw (RFC 7606).
    pub treat_as_withdraw: u64,
    /// Attributes discarded (RFC 7606).
    pub attributes_discarded: u64,
    /// End-of-RIB markers received.
    pub end_of_rib_received: u64,
    /// ROUTE-REFRESH requests answered.
    pub route_refreshes: u64,
    /// Times the session reached Established.
    pub established_transitions: u64,
}

/// Which connection to keep when both sides connected at once (RFC 4271 section 6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionWinner {
    /// Keep the connection we initiated; close the accepted one with Cease 6/7.
    LocallyInitiated,
    /// Keep the connection the peer initiated; close ours with Cease 6/7.
    RemotelyInitiated,
}

/// RFC 4271 section 6.8: the connection initiated by the speaker with the higher BGP
/// identifier (compared as 32-bit unsigned integers) survives.
///
/// The driver runs one [`Session`] per connection. When a second connection's session reaches
/// OpenConfirm (the peer's identifier is then in [`Session::negotiated`]) while the other is in
/// OpenSent or OpenConfirm, it calls this and [`Session::close_for_collision`] on the loser. A
/// session already Established always wins against a new connection.
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> CollisionWinner {
    if u32::from(local_id) > u32::from(remote_id) {
        CollisionWinner::LocallyInitiated
    } else {
        CollisionWinner::RemotelyInitiated
    }
}

/// The shutdown communication of a Cease / Administrative Shutdown or Reset NOTIFICATION
/// (RFC 8203 / RFC 9003), if it carries a well-formed one.
pub fn shutdown_message(notification: &Notification) -> Option<String> {
    let is_shutdown = notification.code == codes::error::CEASE
        && (notification.subcode == codes::cease::ADMINISTRATIVE_SHUTDOWN
            || notification.subcode == codes::cease::ADMINISTRATIVE_RESET);
    let (&len, text) = notification.data.split_first()?;
    if !is_shutdown || usize::from(len) != text.len() {
        return None;
    }
    String::from_utf8(text.to_vec()).ok()
}

/// The NOTIFICATION data for a shutdown communication: one length octet and UTF-8 text,
/// truncated at a character boundary to 255 octets.
fn shutdown_data(message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_SHUTDOWN_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let text = message.as_bytes().get(..end).unwrap_or_default();
    let mut data = Vec::with_capacity(1 + text.len());
    // end <= 255 by construction.
    data.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
    data.extend_from_slice(text);
    data
}

/// How one announced prefix differs from the session defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixRoute {
    /// Attributes for this prefix; `None` uses the session's (see [`Config::route_attributes`]).
    pub attributes: Option<RouteAttributes>,
    /// Next hops overriding the session's, per family.
    pub next_hops: NextHops,
}

/// One BGP peering. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    /// Set by ManualStart, cleared by ManualStop: restart automatically after failures.
    enabled: bool,
    actions: VecDeque<Action>,
    rx: Vec<u8>,
    /// Current connect-retry / restart delay.
    backoff_ms: u64,
    /// Draws the timer jitter; `None` when [`Config::jitter_seed`] is.
    jitter: Option<fastrand::Rng>,
    connect_retry_at: Option<u64>,
    restart_at: Option<u64>,
    hold_at: Option<u64>,
    keepalive_at: Option<u64>,
    negotiated: Option<Negotiated>,
    /// Hold time agreed in OpenConfirm/Established, in ms (0 = none).
    hold_ms: u64,
    announced: BTreeMap<Prefix, PrefixRoute>,
    /// Route changes made while Established and not sent yet: they go out together, as few
    /// UPDATEs as their attributes allow, when the driver next polls for actions.
    unsent_announce: BTreeSet<Prefix>,
    unsent_withdraw: BTreeSet<Prefix>,
    attributes: RouteAttributes,
    stats: Stats,
}

impl Session {
    /// A session in Idle; send [`Event::ManualStart`] to bring it up.
    pub fn new(config: Config) -> Result<Session, ConfigError> {
        if config.hold_time_s == 1 || config.hold_time_s == 2 {
            return Err(ConfigError::HoldTime {
                hold_time_s: config.hold_time_s,
            });
        }
        if config.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if config.local_as == 0 || config.peer_as == 0 {
            return Err(ConfigError::ZeroAs);
        }
        if let Some(t) = config.capabilities.graceful_restart_time_s {
            if t > 0x0fff {
                return Err(ConfigError::RestartTime { restart_time_s: t });
            }
        }
        if config.connect_retry_ms == 0 || config.connect_retry_ms > config.connect_retry_max_ms {
            return Err(ConfigError::ConnectRetry {
                connect_retry_ms: config.connect_retry_ms,
                connect_retry_max_ms: config.connect_retry_max_ms,
            });
        }
        let attributes = config.route_attributes.clone().unwrap_or_else(|| {
            if config.local_as == config.peer_as {
                let mut a = RouteAttributes::new(AsPath::default());
                a.local_pref = Some(100);
                a
            } else {
                RouteAttributes::new(AsPath::sequence(vec![config.local_as]))
            }
        });
        Ok(Session {
            backoff_ms: config.connect_retry_ms,
            jitter: config.jitter_seed.map(fastrand::Rng::with_seed),
            config,
            state: State::Idle,
            enabled: false,
            actions: VecDeque::new(),
            rx: Vec::new(),
            connect_retry_at: None,
            restart_at: None,
            hold_at: None,
            keepalive_at: None,
            negotiated: None,
            hold_ms: 0,
            announced: BTreeMap::new(),
            unsent_announce: BTreeSet::new(),
            unsent_withdraw: BTreeSet::new(),
            attributes,
            stats: Stats::default(),
        })
    }

    /// Whether the session can take a new TCP connection now (Connect or Active). The driver
    /// closes connections it accepts while this is false, or resolves the collision.
    pub fn accepts_connection(&self) -> bool {
        matches!(self.state, State::Connect | State::Active)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What was negotiated, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Counters of what the peer sent.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The prefixes currently announced (or to be announced once Established).
    pub fn announced(&self) -> impl Iterator<Item = &Prefix> {
        self.announced.keys()
    }

    /// Replaces the session's default next hops (e.g. with the local address of the
    /// connection once it is known). Routes already sent are not re-sent.
    pub fn set_next_hops(&mut self, next_hops: NextHops) {
        self.config.next_hops = next_hops;
    }

    /// The next output, in the order it must be carried out. Route changes made since the
    /// last call go out once everything queued before them has been taken.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.send_unsent_routes();
        }
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] must next be called, in the driver's milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.connect_retry_at,
            self.restart_at,
            self.hold_at,
            self.keepalive_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feeds an event that happened at `now_ms`.
    pub fn handle_event(&mut self, event: Event, now_ms: u64) {
        match event {
            Event::ManualStart => {
                self.enabled = true;
                if self.state == State::Idle {
                    self.start(now_ms);
                }
            }
            Event::ManualStop { message } => {
                self.enabled = false;
                self.restart_at = None;
                let data = message.as_deref().map(shutdown_data).unwrap_or_default();
                let notification = Notification::with_data(
                    codes::error::CEASE,
                    codes::cease::ADMINISTRATIVE_SHUTDOWN,
                    data,
                );
                match self.state {
                    State::Idle => {}
                    State::Connect | State::Active => {
                        self.push(Action::Disconnect);
                        self.go_idle(DownReason::ManualStop, now_ms);
                    }
                    State::OpenSent | State::OpenConfirm | State::Established => {
                        self.send(&Message::Notification(notification));
                        self.push(Action::Disconnect);
                        self.go_idle(DownReason::ManualStop, now_ms);
                    }
                }
            }
            Event::TcpConnected => match self.state {
                State::Connect | State::Active => {
                    self.connect_retry_at = None;
                    self.rx.clear();
                    let open = self.open();
                    self.send(&Message::Open(open));
                    self.hold_at = Some(now_ms.saturating_add(OPEN_SENT_HOLD_MS));
                    self.state = State::OpenSent;
                }
                // A second connection is the driver's collision to resolve; a connection while
                // Idle was not asked for. Either way this session ignores it.
                _ => {}
            },
            Event::TcpFailed => match self.state {
                State::Idle => {}
                State::Connect | State::Active | State::OpenSent => {
                    // RFC 4271 8.2.2: back to Active, retry after the (growing) backoff.
                    self.clear_session_timers();
                    self.rx.clear();
                    self.state = State::Active;
                    self.grow_backoff();
                    self.arm_connect_retry(now_ms);
                }
                State::OpenConfirm | State::Established => {
                    self.go_idle(DownReason::ConnectionClosed, now_ms);
                }
            },
        }
    }

    /// Handles the expiry of any timer due at or before `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let due = |t: Option<u64>| t.is_some_and(|t| t <= now_ms);
        if due(self.hold_at) {
            self.hold_at = None;
            let n = Notification::new(codes::error::HOLD_TIMER_EXPIRED, 0);
            self.fail(n, now_ms);
            return;
        }
        if due(self.keepalive_at) {
            self.send(&Message::Keepalive);
            self.arm_keepalive(now_ms);
        }
        if due(self.restart_at) {
            self.restart_at = None;
            if self.enabled && self.state == State::Idle {
                self.start(now_ms);
            }
        }
        if due(self.connect_retry_at) {
            self.connect_retry_at = None;
            match self.state {
                State::Connect => {
                    // The attempt hangs: abort it and try again.
                    self.push(Action::Disconnect);
                    self.grow_backoff();
                    self.push(Action::Connect);
                    self.arm_connect_retry(now_ms);
                }
                State::Active if !self.config.passive => {
                    self.push(Action::Connect);
                    self.state = State::Connect;
                    self.arm_connect_retry(now_ms);
                }
                _ => {}
            }
        }
    }

    /// Feeds bytes read from the connection at `now_ms`. Any number of bytes may arrive at
    /// once; partial messages are kept until the rest comes.
    pub fn handle_bytes(&mut self, bytes: &[u8], now_ms: u64) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.rx.extend_from_slice(bytes);
        let mut offset = 0;
        while let Some(buf) = self.rx.get(offset..) {
            match decode(buf) {
                Ok(Some((message, consumed))) => {
                    offset += consumed;
                    self.stats.messages_received += 1;
                    self.handle_message(message, now_ms);
                    if !matches!(
                        self.state,
                        State::OpenSent | State::OpenConfirm | State::Established
                    ) {
                        // The connection was closed; what follows is not for this session.
                        self.rx.clear();
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(e.notification(), now_ms);
                    self.rx.clear();
                    return;
                }
            }
        }
        self.rx.drain(..offset.min(self.rx.len()));
    }

    /// Adds `prefixes` to the announced set with the session's attributes and next hops; if
    /// Established they are sent at the next [`Session::poll_action`].
    pub fn announce(&mut self, prefixes: &[Prefix]) {
        let new: Vec<Prefix> = prefixes
            .iter()
            .filter(|p| !self.announced.contains_key(p))
            .copied()
            .collect();
        for p in &new {
            self.announced.insert(*p, PrefixRoute::default());
        }
        self.queue_announcements(&new);
    }

    /// Announces `prefix` with its own attributes and next hops (per-VIP policy). If
    /// Established and the route is new or changed, it is sent at the next
    /// [`Session::poll_action`]; the same route again sends nothing.
    pub fn announce_route(&mut self, prefix: Prefix, route: PrefixRoute) {
        if self.announced.get(&prefix) == Some(&route) {
            return;
        }
        self.announced.insert(prefix, route);
        self.queue_announcements(&[prefix]);
    }

    /// Removes `prefixes` from the announced set; if Established the withdrawal is sent at the
    /// next [`Session::poll_action`], together with any other made before it.
    pub fn withdraw(&mut self, prefixes: &[Prefix]) {
        let gone: Vec<Prefix> = prefixes
            .iter()
            .filter(|p| self.announced.remove(p).is_some())
            .copied()
            .collect();
        if self.state == State::Established {
            for p in gone {
                self.unsent_announce.remove(&p);
                self.unsent_withdraw.insert(p);
            }
        }
    }

    /// Replaces the attributes of announced routes (e.g. to add the RFC 8326 GRACEFUL_SHUTDOWN
    /// community before maintenance) and re-announces everything if Established.
    pub fn set_route_attributes(&mut self, attributes: RouteAttributes) {
        self.attributes = attributes;
        let all: Vec<Prefix> = self.announced.keys().copied().collect();
        self.queue_announcements(&all);
    }

    fn queue_announcements(&mut self, prefixes: &[Prefix]) {
        if self.state == State::Established {
            for p in prefixes {
                self.unsent_withdraw.remove(p);
                self.unsent_announce.insert(*p);
            }
        }
    }

    /// Sends the queued withdrawals (one UPDATE holds as many as fit), then the queued
    /// announcements grouped by attributes; drops them when the session is not Established
    /// (establishing sends the whole announced set anyway).
    fn send_unsent_routes(&mut self) {
        if self.unsent_announce.is_empty() && self.unsent_withdraw.is_empty() {
            return;
        }
        let withdraw: Vec<Prefix> = std::mem::take(&mut self.unsent_withdraw)
            .into_iter()
            .collect();
        let announce: Vec<Prefix> = std::mem::take(&mut self.unsent_announce)
            .into_iter()
            .collect();
        if self.state != State::Established {
            return;
        }
        let families = self.families();
        let withdraw: Vec<Prefix> = withdraw
            .into_iter()
            .filter(|p| families.contains(&p.afi()))
            .collect();
        for update in UpdateBuilder::withdraw(&withdraw) {
            self.send(&Message::Update(update));
        }
        self.send_announcements(&announce);
    }

    /// Closes this connection because the driver resolved a collision against it (Cease 6/7).
    /// The session then restarts after its backoff like after any other failure.
    pub fn close_for_collision(&mut self, now_ms: u64) {
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            let n = Notification::new(
                codes::error::CEASE,
                codes::cease::CONNECTION_COLLISION_RESOLUTION,
            );
            self.fail(n, now_ms);
        }
    }

    fn handle_message(&mut self, message: Message, now_ms: u64) {
        use codes::{error, fsm};
        if let Message::Notification(n) = message {
            self.push(Action::Disconnect);
            self.go_idle(DownReason::NotificationReceived(n), now_ms);
            return;
        }
        match (self.state, message) {
            (State::OpenSent, Message::Open(open)) => self.handle_open(open, now_ms),
            (State::OpenSent, _) => self.fail(
                Notification::new(error::FSM, fsm::UNEXPECTED_IN_OPEN_SENT),
                now_ms,
            ),
            (State::OpenConfirm, Message::Keepalive) => self.establish(now_ms),
            (State::OpenConfirm, _) => self.fail(
                Notification::new(error::FSM, fsm::UNEXPECTED_IN_OPEN_CONFIRM),
                now_ms,
            ),
            (State::Established, Message::Keepalive) => self.arm_hold(now_ms),
            (State::Established, Message::Update(update)) => {
                self.arm_hold(now_ms);
                self.handle_update(&update, now_ms);
            }
            (State::Established, Message::RouteRefresh(rr)) => {
                self.arm_hold(now_ms);
                if rr.safi == Safi::UNICAST && self.families().contains(&rr.afi) {
                    self.stats.route_refreshes += 1;
                    let family: Vec<Prefix> = self
                        .announced
                        .keys()
                        .filter(|p| p.afi() == rr.afi)
                        .copied()
                        .collect();
                    self.send_announcements(&family);
                }
                // RFC 2918 section 4: a refresh for a family not negotiated is ignored.
            }
            (State::Established, _) => self.fail(
                Notification::new(error::FSM, fsm::UNEXPECTED_IN_ESTABLISHED),
                now_ms,
            ),
            // handle_bytes only decodes in the three states above.
            _ => {}
        }
    }

    fn handle_open(&mut self, open: Open, now_ms: u64) {
        use codes::{error, open as sub};
        let peer_as = open.peer_as();
        if peer_as != self.config.peer_as {
            // Data: the My AS field as received (RFC 4271 section 6.2 leaves it open; BIRD
            // and FRR log the AS they saw).
            let n = Notification::with_data(
                error::OPEN_MESSAGE,
                sub::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
            );
            self.fail(n, now_ms);
            return;
        }
        if open.bgp_id == self.config.router_id {
            let n = Notification::new(error::OPEN_MESSAGE, sub::BAD_BGP_IDENTIFIER);
            self.fail(n, now_ms);
            return;
        }
        let ours = &self.config.capabilities;
        let peer_mp: Vec<(Afi, Safi)> = open
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
                _ => None,
            })
            .collect();
        let peer_has = |afi: Afi| {
            peer_mp.contains(&(afi, Safi::UNICAST)) || (peer_mp.is_empty() && afi == Afi::IPV4)
        };
        let mut families = Vec::new();
        if ours.ipv4_unicast && peer_has(Afi::IPV4) {
            families.push(Afi::IPV4);
        }
        if ours.ipv6_unicast && peer_has(Afi::IPV6) {
            families.push(Afi::IPV6);
        }
        let hold_time_s = self.config.hold_time_s.min(open.hold_time_s);
        let negotiated = Negotiated {
            peer_as,
            peer_id: open.bgp_id,
            hold_time_s,
            four_octet_as: open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::FourOctetAs(_))),
            families,
            route_refresh: open.capabilities.contains(&Capability::RouteRefresh),
            graceful_restart: open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart { .. })),
        };
        self.hold_ms = u64::from(hold_time_s) * 1000;
        self.negotiated = Some(negotiated);
        self.send(&Message::Keepalive);
        self.arm_hold(now_ms);
        self.arm_keepalive(now_ms);
        self.state = State::OpenConfirm;
    }

    fn establish(&mut self, now_ms: u64) {
        self.state = State::Established;
        self.backoff_ms = self.config.connect_retry_ms;
        self.stats.established_transitions += 1;
        self.arm_hold(now_ms);
        if let Some(n) = self.negotiated.clone() {
            self.push(Action::SessionUp(n));
        }
        self.unsent_announce.clear();
        self.unsent_withdraw.clear();
        let all: Vec<Prefix> = self.announced.keys().copied().collect();
        self.send_announcements(&all);
        for afi in self.families() {
            self.send(&Message::Update(UpdateBuilder::end_of_rib(afi)));
        }
    }

    fn handle_update(&mut self, update: &Update, now_ms: u64) {
        self.stats.updates_received += 1;
        let four_octet_as = self.negotiated.as_ref().is_some_and(|n| n.four_octet_as);
        match parse_update(update, four_octet_as) {
            Ok(parsed) => {
                if parsed.end_of_rib().is_some() {
                    self.stats.end_of_rib_received += 1;
                }
                if parsed.treat_as_withdraw() {
                    self.stats.treat_as_withdraw += 1;
                }
                self.stats.attributes_discarded += parsed
                    .errors
                    .iter()
                    .filter(|e| e.action == ErrorAction::AttributeDiscard)
                    .count() as u64;
                self.stats.prefixes_announced += parsed.announced().len() as u64;
                self.stats.prefixes_withdrawn += parsed.withdrawn_all().len() as u64;
            }
            Err(e) => self.fail(e.notification(), now_ms),
        }
    }

    /// Families negotiated in the current session.
    fn families(&self) -> Vec<Afi> {
        self.negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default()
    }

    fn send_announcements(&mut self, prefixes: &[Prefix]) {
        let families = self.families();
        let four_octet_as = self.negotiated.as_ref().is_some_and(|n| n.four_octet_as);
        // Prefixes sharing attributes and next hops go out together.
        let mut groups: Vec<(RouteAttributes, NextHops, Vec<Prefix>)> = Vec::new();
        for p in prefixes.iter().filter(|p| families.contains(&p.afi())) {
            let Some(route) = self.announced.get(p) else {
                continue;
            };
            let attributes = route
                .attributes
                .clone()
                .unwrap_or_else(|| self.attributes.clone());
            let next_hops = NextHops {
                ipv4: route.next_hops.ipv4.or(self.config.next_hops.ipv4),
                ipv6: route.next_hops.ipv6.or(self.config.next_hops.ipv6),
            };
            match groups
                .iter_mut()
                .find(|(a, n, _)| *a == attributes && *n == next_hops)
            {
                Some((_, _, group)) => group.push(*p),
                None => groups.push((attributes, next_hops, vec![*p])),
            }
        }
        for (attributes, next_hops, group) in groups {
            let builder = UpdateBuilder {
                attributes,
                next_hops,
                four_octet_as,
            };
            // A family without a next hop cannot be announced; the other family still is.
            for family in [Afi::IPV4, Afi::IPV6] {
                let of_family: Vec<Prefix> = group
                    .iter()
                    .filter(|p| p.afi() == family)
                    .copied()
                    .collect();
                if of_family.is_empty() {
                    continue;
                }
                if let Ok(updates) = builder.announce(&of_family) {
                    for update in updates {
                        self.send(&Message::Update(update));
                    }
                }
            }
        }
    }

    fn open(&self) -> Open {
        let ours = &self.config.capabilities;
        let mut caps = Vec::new();
        let mut families = Vec::new();
        if ours.ipv4_unicast {
            families.push(Afi::IPV4);
        }
        if ours.ipv6_unicast {
            families.push(Afi::IPV6);
        }
        for afi in &families {
            caps.push(Capability::Multiprotocol {
                afi: *afi,
                safi: Safi::UNICAST,
            });
        }
        if ours.route_refresh {
            caps.push(Capability::RouteRefresh);
        }
        if let Some(restart_time_s) = ours.graceful_restart_time_s {
            caps.push(Capability::GracefulRestart {
                restart_state: false,
                restart_time_s,
                // vipd keeps forwarding while its speaker restarts (the dataplane is separate).
                families: families
                    .iter()
                    .map(|afi| GracefulRestartFamily {
                        afi: *afi,
                        safi: Safi::UNICAST,
                        forwarding_state: true,
                    })
                    .collect(),
            });
        }
        Open::new(
            self.config.local_as,
            self.config.hold_time_s,
            self.config.router_id,
            caps,
        )
    }

    fn start(&mut self, now_ms: u64) {
        self.restart_at = None;
        self.negotiated = None;
        self.rx.clear();
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.push(Action::Connect);
            self.state = State::Connect;
            self.arm_connect_retry(now_ms);
        }
    }

    /// Sends `notification`, closes the connection and goes Idle.
    fn fail(&mut self, notification: Notification, now_ms: u64) {
        self.send(&Message::Notification(notification.clone()));
        self.push(Action::Disconnect);
        self.go_idle(DownReason::NotificationSent(notification), now_ms);
    }

    fn go_idle(&mut self, reason: DownReason, now_ms: u64) {
        let was_established = self.state == State::Established;
        let had_connection = matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        );
        self.state = State::Idle;
        self.clear_session_timers();
        self.connect_retry_at = None;
        self.rx.clear();
        if had_connection || reason == DownReason::ManualStop {
            self.push(Action::SessionDown {
                reason,
                was_established,
            });
        }
        if self.enabled {
            self.restart_at = Some(now_ms.saturating_add(self.jittered(self.backoff_ms)));
            self.grow_backoff();
        }
    }

    fn clear_session_timers(&mut self) {
        self.hold_at = None;
        self.keepalive_at = None;
    }

    fn grow_backoff(&mut self) {
        self.backoff_ms = self
            .backoff_ms
            .saturating_mul(2)
            .min(self.config.connect_retry_max_ms);
    }

    fn arm_connect_retry(&mut self, now_ms: u64) {
        if !self.config.passive {
            self.connect_retry_at = Some(now_ms.saturating_add(self.jittered(self.backoff_ms)));
        }
    }

    fn arm_hold(&mut self, now_ms: u64) {
        self.hold_at = (self.hold_ms > 0).then(|| now_ms.saturating_add(self.hold_ms));
    }

    fn arm_keepalive(&mut self, now_ms: u64) {
        let interval = self.jittered(self.hold_ms / 3);
        self.keepalive_at = (self.hold_ms > 0).then(|| now_ms.saturating_add(interval));
    }

    /// `ms` times a random factor in [0.75, 1.0] (RFC 4271 section 10), or `ms` without jitter.
    fn jittered(&mut self, ms: u64) -> u64 {
        match &mut self.jitter {
            Some(rng) => ms - ms * u64::from(rng.u8(..=64)) / 256,
            None => ms,
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Encodes `message` and queues it, appending to a queued [`Action::Send`] when that is the
    /// last action so a burst of UPDATEs goes out in one write.
    fn send(&mut self, message: &Message) {
        let mut bytes = Vec::new();
        // Messages built here always fit (UpdateBuilder splits, OPEN caps are few); an
        // encode error would be a bug, and sending nothing is the safe outcome.
        if encode(message, &mut bytes).is_err() {
            return;
        }
        if let Some(Action::Send(pending)) = self.actions.back_mut() {
            pending.extend_from_slice(&bytes);
        } else {
            self.actions.push_back(Action::Send(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            65001,
            Ipv4Addr::new(192, 0, 2, 1),
            65002,
            NextHops::default(),
        )
    }

    #[test]
    fn config_validation() {
        let mut c = config();
        c.hold_time_s = 2;
        assert!(matches!(Session::new(c), Err(ConfigError::HoldTime { .. })));
        let mut c = config();
        c.router_id = Ipv4Addr::UNSPECIFIED;
        assert_eq!(Session::new(c).unwrap_err(), ConfigError::RouterId);
        let mut c = config();
        c.connect_retry_max_ms = 1;
        assert!(Session::new(c).is_err());
        let mut c = config();
        c.capabilities.graceful_restart_time_s = Some(4096);
        assert!(Session::new(c).is_err());
        assert!(Session::new(config()).is_ok());
    }

    #[test]
    fn collision_keeps_higher_identifier() {
        let low = Ipv4Addr::new(10, 0, 0, 1);
        let high = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            resolve_collision(high, low),
            CollisionWinner::LocallyInitiated
        );
        assert_eq!(
            resolve_collision(low, high),
            CollisionWinner::RemotelyInitiated
        );
        // Compared as unsigned integers, not as signed or as strings.
        assert_eq!(
            resolve_collision(
                Ipv4Addr::new(128, 0, 0, 0),
                Ipv4Addr::new(127, 255, 255, 255)
            ),
            CollisionWinner::LocallyInitiated
        );
    }

    #[test]
    fn shutdown_communication_round_trip_and_truncation() {
        let data = shutdown_data("maintenance, back at 10:00");
        let n = Notification::with_data(6, 2, data);
        assert_eq!(
            shutdown_message(&n).as_deref(),
            Some("maintenance, back at 10:00")
        );
        let long = "é".repeat(200); // 400 octets
        let data = shutdown_data(&long);
        assert_eq!(data[0], 254, "cut at a character boundary");
        assert_eq!(data.len(), 255);
        assert!(shutdown_message(&Notification::with_data(6, 2, vec![5, b'a'])).is_none());
        assert!(shutdown_message(&Notification::with_data(6, 3, vec![1, b'a'])).is_none());
    }

    #[test]
    fn backoff_doubles_to_cap_and_passive_never_connects() {
        let mut c = config();
        c.connect_retry_ms = 1000;
        c.connect_retry_max_ms = 3000;
        c.jitter_seed = None;
        let mut s = Session::new(c.clone()).unwrap();
        s.handle_event(Event::ManualStart, 0);
        assert_eq!(s.poll_action(), Some(Action::Connect));
        assert_eq!(s.poll_timeout(), Some(1000));
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            s.handle_event(Event::TcpFailed, now);
            assert_eq!(s.state(), State::Active);
            let at = s.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            s.handle_timeout(now);
            assert_eq!(s.poll_action(), Some(Action::Connect));
            assert_eq!(s.state(), State::Connect);
        }
        assert_eq!(delays, vec![2000, 3000, 3000, 3000]);

        c.passive = true;
        let mut p = Session::new(c).unwrap();
        p.handle_event(Event::ManualStart, 0);
        assert_eq!(p.state(), State::Active);
        assert_eq!(p.poll_action(), None);
        assert_eq!(p.poll_timeout(), None);
    }

    /// The delays of one failing session under jitter, starting from 1 s, capped at 3 s.
    fn jittered_delays(seed: u64) -> Vec<u64> {
        let mut c = config();
        c.connect_retry_ms = 1000;
        c.connect_retry_max_ms = 3000;
        c.jitter_seed = Some(seed);
        let mut s = Session::new(c).unwrap();
        s.handle_event(Event::ManualStart, 0);
        let mut now = 0;
        let mut delays = vec![s.poll_timeout().unwrap()];
        for _ in 0..20 {
            s.handle_event(Event::TcpFailed, now);
            let at = s.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            s.handle_timeout(now);
        }
        delays
    }

    #[test]
    fn connect_retry_is_jittered_between_three_quarters_and_the_whole_delay() {
        let a = jittered_delays(1);
        let base = |i: usize| [1000, 2000].get(i).copied().unwrap_or(3000);
        for (i, d) in a.iter().enumerate() {
            assert!(
                *d >= base(i) * 3 / 4 && *d <= base(i),
                "delay {i}: {d} ms in {a:?}"
            );
        }
        assert!(
            a.iter().skip(2).any(|d| *d < 2900),
            "no jitter drawn: {a:?}"
        );
        // Two speakers that fail together do not retry in lockstep.
        assert_ne!(a, jittered_delays(2));
    }
}
