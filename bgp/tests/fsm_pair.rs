//! Two `Session`s driven against each other over a simulated TCP connection with simulated time,
//! in the style of quinn-proto's tests: no sockets, no clock, fully deterministic.

use std::net::{IpAddr, Ipv4Addr};

use bgp::attributes::{MpNextHop, Prefix};
use bgp::codes;
use bgp::fsm::{shutdown_message, DownReason, Negotiated};
use bgp::update::NextHops;
use bgp::{
    decode, encode, parse_update, Action, Afi, Config, Event, Message, Notification, RouteRefresh,
    Safi, Session, State, Update,
};

const A_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn prefix(s: &str) -> Prefix {
    Prefix::host(s.parse::<IpAddr>().unwrap())
}

fn next_hops(v4: &str, v6: &str) -> NextHops {
    NextHops {
        ipv4: Some(v4.parse().unwrap()),
        ipv6: Some(MpNextHop::V6 {
            global: v6.parse().unwrap(),
            link_local: None,
        }),
    }
}

/// vipd's side: active, AS 65001.
fn config_a() -> Config {
    let mut c = Config::new(65001, A_ID, 65002, next_hops("192.0.2.1", "2001:db8::a"));
    c.connect_retry_ms = 1_000;
    c.connect_retry_max_ms = 8_000;
    c
}

/// The router's side: passive, AS 65002, proposes a shorter hold time.
fn config_b() -> Config {
    let mut c = Config::new(65002, B_ID, 65001, next_hops("192.0.2.2", "2001:db8::b"));
    c.passive = true;
    c.hold_time_s = 30;
    c.connect_retry_ms = 1_000;
    c
}

/// What one side observed: non-Send actions, and the messages it received.
#[derive(Default)]
struct Log {
    actions: Vec<Action>,
    received: Vec<Message>,
}

impl Log {
    fn updates(&self) -> Vec<Update> {
        self.received
            .iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    fn announced(&self) -> Vec<Prefix> {
        let mut out: Vec<Prefix> = self
            .updates()
            .iter()
            .flat_map(|u| parse_update(u, true).unwrap().announced())
            .collect();
        out.sort();
        out
    }

    fn withdrawn(&self) -> Vec<Prefix> {
        let mut out: Vec<Prefix> = self
            .updates()
            .iter()
            .flat_map(|u| parse_update(u, true).unwrap().withdrawn_all())
            .collect();
        out.sort();
        out
    }

    fn end_of_ribs(&self) -> Vec<(Afi, Safi)> {
        self.updates()
            .iter()
            .filter_map(|u| parse_update(u, true).unwrap().end_of_rib())
            .collect()
    }

    fn keepalives(&self) -> usize {
        self.received
            .iter()
            .filter(|m| **m == Message::Keepalive)
            .count()
    }

    fn notifications(&self) -> Vec<Notification> {
        self.received
            .iter()
            .filter_map(|m| match m {
                Message::Notification(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn ups(&self) -> Vec<Negotiated> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::SessionUp(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn downs(&self) -> Vec<(DownReason, bool)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::SessionDown {
                    reason,
                    was_established,
                } => Some((reason.clone(), *was_established)),
                _ => None,
            })
            .collect()
    }

    fn connects(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| **a == Action::Connect)
            .count()
    }
}

/// What travels on one direction of the simulated connection.
enum Segment {
    Bytes(Vec<u8>),
    Closed,
}

struct Pair {
    a: Session,
    b: Session,
    now_ms: u64,
    connected: bool,
    to_a: Vec<Segment>,
    to_b: Vec<Segment>,
    log_a: Log,
    log_b: Log,
    /// B stops sending and stops running its timers (a hung router).
    b_silent: bool,
    /// Deliver bytes to A one at a time (exercises incremental framing).
    trickle_to_a: bool,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        Pair {
            a: Session::new(a).unwrap(),
            b: Session::new(b).unwrap(),
            now_ms: 0,
            connected: false,
            to_a: Vec::new(),
            to_b: Vec::new(),
            log_a: Log::default(),
            log_b: Log::default(),
            b_silent: false,
            trickle_to_a: false,
        }
    }

    fn start(&mut self) {
        self.b.handle_event(Event::ManualStart, self.now_ms);
        self.a.handle_event(Event::ManualStart, self.now_ms);
        self.pump();
    }

    /// Records every whole message in `bytes` into `log`.
    fn observe(bytes: &[u8], log: &mut Log) {
        let mut rest = bytes;
        while let Some((m, n)) = decode(rest).unwrap() {
            log.received.push(m);
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "Send carries whole messages");
    }

    /// Carries out actions and deliveries until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            while let Some(action) = self.a.poll_action() {
                progress = true;
                match action {
                    Action::Connect => {
                        self.log_a.actions.push(Action::Connect);
                        if self.connected {
                            continue;
                        }
                        if self.b.state() == State::Active {
                            self.connected = true;
                            self.a.handle_event(Event::TcpConnected, self.now_ms);
                            self.b.handle_event(Event::TcpConnected, self.now_ms);
                        } else {
                            self.a.handle_event(Event::TcpFailed, self.now_ms);
                        }
                    }
                    Action::Send(bytes) => {
                        if self.connected {
                            Self::observe(&bytes, &mut self.log_b);
                            self.to_b.push(Segment::Bytes(bytes));
                        }
                    }
                    Action::Disconnect => {
                        if self.connected {
                            self.connected = false;
                            self.to_b.push(Segment::Closed);
                        }
                    }
                    other => self.log_a.actions.push(other),
                }
            }
            while let Some(action) = self.b.poll_action() {
                progress = true;
                match action {
                    Action::Connect => panic!("passive side must not connect"),
                    Action::Send(bytes) => {
                        if self.connected && !self.b_silent {
                            Self::observe(&bytes, &mut self.log_a);
                            self.to_a.push(Segment::Bytes(bytes));
                        }
                    }
                    Action::Disconnect => {
                        if self.connected {
                            self.connected = false;
                            self.to_a.push(Segment::Closed);
                        }
                    }
                    other => self.log_b.actions.push(other),
                }
            }
            for segment in std::mem::take(&mut self.to_b) {
                progress = true;
                match segment {
                    Segment::Bytes(b) => self.b.handle_bytes(&b, self.now_ms),
                    Segment::Closed => self.b.handle_event(Event::TcpFailed, self.now_ms),
                }
            }
            for segment in std::mem::take(&mut self.to_a) {
                progress = true;
                match segment {
                    Segment::Bytes(b) if self.trickle_to_a => {
                        for byte in b {
                            self.a.handle_bytes(&[byte], self.now_ms);
                        }
                    }
                    Segment::Bytes(b) => self.a.handle_bytes(&b, self.now_ms),
                    Segment::Closed => self.a.handle_event(Event::TcpFailed, self.now_ms),
                }
            }
            if !progress {
                return;
            }
        }
        panic!("sessions never settled");
    }

    /// Runs timers and traffic until `until_ms`.
    fn advance_to(&mut self, until_ms: u64) {
        loop {
            self.pump();
            let b_timeout = if self.b_silent {
                None
            } else {
                self.b.poll_timeout()
            };
            let next = [self.a.poll_timeout(), b_timeout]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until_ms => {
                    assert!(t >= self.now_ms, "timeouts never lie in the past");
                    self.now_ms = t;
                    self.a.handle_timeout(t);
                    if !self.b_silent {
                        self.b.handle_timeout(t);
                    }
                }
                _ => break,
            }
        }
        self.now_ms = until_ms;
        self.pump();
    }

    fn advance(&mut self, ms: u64) {
        self.advance_to(self.now_ms + ms);
    }

    fn established(&self) -> bool {
        self.a.state() == State::Established && self.b.state() == State::Established
    }
}

fn established_pair() -> Pair {
    let mut pair = Pair::new(config_a(), config_b());
    pair.a
        .announce(&[prefix("192.0.2.10"), prefix("2001:db8::10")]);
    pair.b.announce(&[prefix("198.51.100.1")]);
    pair.start();
    assert!(pair.established());
    pair
}

#[test]
fn reach_established_and_exchange_announcements_and_end_of_rib() {
    let pair = established_pair();
    let up_a = pair.log_a.ups();
    let up_b = pair.log_b.ups();
    assert_eq!(up_a.len(), 1);
    assert_eq!(up_b.len(), 1);
    assert_eq!(up_a[0].peer_as, 65002);
    assert_eq!(up_a[0].peer_id, B_ID);
    assert_eq!(up_b[0].peer_id, A_ID);
    // min(90, 30)
    assert_eq!(up_a[0].hold_time_s, 30);
    assert_eq!(up_b[0].hold_time_s, 30);
    assert!(up_a[0].four_octet_as && up_a[0].route_refresh && up_a[0].graceful_restart);
    assert_eq!(up_a[0].families, vec![Afi::IPV4, Afi::IPV6]);

    assert_eq!(
        pair.log_b.announced(),
        vec![prefix("192.0.2.10"), prefix("2001:db8::10")]
    );
    assert_eq!(pair.log_a.announced(), vec![prefix("198.51.100.1")]);
    assert_eq!(
        pair.log_b.end_of_ribs(),
        vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)]
    );
    // Routes come before the End-of-RIB markers.
    let updates = pair.log_b.updates();
    let last_route = updates
        .iter()
        .rposition(|u| !parse_update(u, true).unwrap().announced().is_empty())
        .unwrap();
    let first_eor = updates
        .iter()
        .position(|u| parse_update(u, true).unwrap().end_of_rib().is_some())
        .unwrap();
    assert!(last_route < first_eor);

    let stats = pair.b.stats();
    assert_eq!(stats.prefixes_announced, 2);
    assert_eq!(stats.end_of_rib_received, 2);
    assert_eq!(stats.established_transitions, 1);
    assert_eq!(pair.a.stats().prefixes_announced, 1);
}

#[test]
fn keepalives_keep_the_session_up_across_many_hold_periods() {
    let mut pair = established_pair();
    let start_a = pair.log_a.keepalives();
    let start_b = pair.log_b.keepalives();
    // 20 hold periods of 30 s.
    pair.advance(20 * 30_000);
    assert!(pair.established());
    assert!(pair.log_a.downs().is_empty() && pair.log_b.downs().is_empty());
    // One keepalive every hold/3 = 10 s each way, jittered to 7.5..10 s (RFC 4271 section 10).
    for sent in [
        pair.log_a.keepalives() - start_a,
        pair.log_b.keepalives() - start_b,
    ] {
        assert!((60..=80).contains(&sent), "{sent} keepalives in 600 s");
    }
    // Both wake up no later than the next keepalive.
    assert!(pair.a.poll_timeout().unwrap() <= pair.now_ms + 10_000);
}

#[test]
fn silent_peer_hits_the_hold_timer_and_gets_4_0() {
    let mut pair = established_pair();
    let silent_since = pair.now_ms;
    pair.b_silent = true;
    pair.advance(29_999);
    assert_eq!(pair.a.state(), State::Established);
    pair.advance(1);
    assert_ne!(pair.a.state(), State::Established);
    let hold_expired = Notification::new(codes::error::HOLD_TIMER_EXPIRED, 0);
    assert_eq!(
        pair.log_a.downs(),
        vec![(DownReason::NotificationSent(hold_expired.clone()), true)]
    );
    assert_eq!(pair.log_b.notifications(), vec![hold_expired]);
    assert_eq!(pair.now_ms - silent_since, 30_000);
}

#[test]
fn wrong_peer_as_gets_2_2_and_retries_with_backoff() {
    let mut a = config_a();
    a.peer_as = 65099;
    // Exact restart times: no jitter (its bounds are tested in fsm.rs).
    a.jitter_seed = None;
    let mut pair = Pair::new(a, config_b());
    pair.start();
    assert!(!pair.established());
    let bad_as = pair.log_b.notifications();
    assert_eq!(bad_as.len(), 1);
    assert_eq!(
        (bad_as[0].code, bad_as[0].subcode),
        (codes::error::OPEN_MESSAGE, codes::open::BAD_PEER_AS)
    );
    assert_eq!(bad_as[0].data, 65002u16.to_be_bytes().to_vec());
    assert!(matches!(
        pair.log_b.downs()[0].0,
        DownReason::NotificationReceived(_)
    ));
    assert_eq!(pair.log_a.connects(), 1);
    // A restarts after 1 s, then 2 s, 4 s, 8 s, 8 s (cap): 5 more attempts in 23 s.
    pair.advance(23_000);
    assert_eq!(pair.log_a.connects(), 6);
    assert!(pair.log_a.ups().is_empty());
}

#[test]
fn bad_bgp_identifier_gets_2_3() {
    let mut b = config_b();
    b.router_id = A_ID;
    let mut pair = Pair::new(config_a(), b);
    pair.start();
    let n = pair.log_b.notifications();
    assert_eq!(
        (n[0].code, n[0].subcode),
        (2, codes::open::BAD_BGP_IDENTIFIER)
    );
}

#[test]
fn cease_shuts_down_cleanly_with_a_shutdown_communication() {
    let mut pair = established_pair();
    pair.a.handle_event(
        Event::ManualStop {
            message: Some("vipd maintenance".into()),
        },
        pair.now_ms,
    );
    pair.pump();
    assert_eq!(pair.a.state(), State::Idle);
    let n = pair.log_b.notifications();
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].code, n[0].subcode),
        (codes::error::CEASE, codes::cease::ADMINISTRATIVE_SHUTDOWN)
    );
    assert_eq!(shutdown_message(&n[0]).as_deref(), Some("vipd maintenance"));
    assert_eq!(pair.log_a.downs(), vec![(DownReason::ManualStop, true)]);
    assert_eq!(
        pair.log_b.downs(),
        vec![(DownReason::NotificationReceived(n[0].clone()), true)]
    );
    // A stays down: no reconnects, no timers.
    let connects = pair.log_a.connects();
    pair.advance(600_000);
    assert_eq!(pair.log_a.connects(), connects);
    assert_eq!(pair.a.poll_timeout(), None);
    // B went back to listening.
    assert_eq!(pair.b.state(), State::Active);
    // And a new start brings the session back.
    pair.a.handle_event(Event::ManualStart, pair.now_ms);
    pair.pump();
    assert!(pair.established());
}

#[test]
fn withdrawals_and_new_announcements_are_delivered() {
    let mut pair = established_pair();
    pair.a
        .withdraw(&[prefix("192.0.2.10"), prefix("2001:db8::10")]);
    pair.a.announce(&[prefix("192.0.2.11")]);
    // Withdrawing what is not announced sends nothing.
    pair.a.withdraw(&[prefix("203.0.113.1")]);
    pair.pump();
    assert_eq!(
        pair.log_b.withdrawn(),
        vec![prefix("192.0.2.10"), prefix("2001:db8::10")]
    );
    assert!(pair.log_b.announced().contains(&prefix("192.0.2.11")));
    let stats = pair.b.stats();
    assert_eq!(stats.prefixes_withdrawn, 2);
    assert_eq!(stats.prefixes_announced, 3);
    assert_eq!(
        pair.a.announced().copied().collect::<Vec<_>>(),
        vec![prefix("192.0.2.11")]
    );
}

#[test]
fn route_refresh_is_answered_by_resending_that_family() {
    let mut pair = established_pair();
    let before = pair.log_b.updates().len();
    let mut rr = Vec::new();
    encode(
        &Message::RouteRefresh(RouteRefresh {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        }),
        &mut rr,
    )
    .unwrap();
    pair.a.handle_bytes(&rr, pair.now_ms);
    pair.pump();
    let updates = pair.log_b.updates();
    assert_eq!(updates.len(), before + 1);
    assert_eq!(
        parse_update(updates.last().unwrap(), true)
            .unwrap()
            .announced(),
        vec![prefix("2001:db8::10")]
    );
    assert_eq!(pair.a.stats().route_refreshes, 1);
}

#[test]
fn dropped_connection_reconnects_and_reannounces() {
    let mut pair = established_pair();
    // The router closes the connection without a NOTIFICATION.
    pair.b.handle_event(Event::TcpFailed, pair.now_ms);
    pair.connected = false;
    pair.a.handle_event(Event::TcpFailed, pair.now_ms);
    pair.pump();
    assert_eq!(
        pair.log_a.downs(),
        vec![(DownReason::ConnectionClosed, true)]
    );
    pair.advance(5_000);
    assert!(pair.established());
    assert_eq!(pair.a.stats().established_transitions, 2);
    // Everything was announced again on the new session.
    let announced = pair.log_b.announced();
    assert_eq!(
        announced
            .iter()
            .filter(|p| **p == prefix("192.0.2.10"))
            .count(),
        2
    );
}

#[test]
fn incremental_framing_one_byte_at_a_time() {
    let mut pair = Pair::new(config_a(), config_b());
    pair.trickle_to_a = true;
    pair.b
        .announce(&[prefix("198.51.100.1"), prefix("2001:db8::99")]);
    pair.start();
    assert!(pair.established());
    assert_eq!(pair.a.stats().prefixes_announced, 2);
    pair.advance(100_000);
    assert!(pair.established());
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let mut a = config_a();
    a.hold_time_s = 0;
    let mut pair = Pair::new(a, config_b());
    pair.start();
    assert!(pair.established());
    assert_eq!(pair.log_a.ups()[0].hold_time_s, 0);
    let keepalives = pair.log_b.keepalives();
    assert_eq!(pair.a.poll_timeout(), None);
    pair.b_silent = true;
    pair.advance(3_600_000);
    assert!(pair.established());
    assert_eq!(pair.log_b.keepalives(), keepalives);
}

#[test]
fn malformed_update_resets_with_3_x_and_treat_as_withdraw_does_not() {
    let mut pair = established_pair();
    // Treat-as-withdraw: ORIGIN with value 7. The session stays up.
    let mut bytes = Vec::new();
    let update = Update {
        withdrawn_routes: vec![],
        path_attributes: vec![0x40, 1, 1, 7, 0x40, 2, 0, 0x40, 3, 4, 192, 0, 2, 2],
        nlri: vec![32, 198, 51, 100, 7],
    };
    encode(&Message::Update(update), &mut bytes).unwrap();
    pair.a.handle_bytes(&bytes, pair.now_ms);
    pair.pump();
    assert!(pair.established());
    assert_eq!(pair.a.stats().treat_as_withdraw, 1);
    // Session reset: MP_REACH_NLRI twice.
    // AFI 1, SAFI 1, 4-octet next hop, reserved, no prefixes.
    let mp = [0x80, 14, 9, 0, 1, 1, 4, 10, 0, 0, 1, 0];
    let mut mp_twice = Vec::new();
    encode(
        &Message::Update(Update {
            path_attributes: [&mp[..], &mp[..]].concat(),
            ..Update::default()
        }),
        &mut mp_twice,
    )
    .unwrap();
    pair.a.handle_bytes(&mp_twice, pair.now_ms);
    pair.pump();
    assert_eq!(pair.a.state(), State::Idle);
    let n = pair.log_b.notifications();
    assert_eq!(
        (n[0].code, n[0].subcode),
        (
            codes::error::UPDATE_MESSAGE,
            codes::update::MALFORMED_ATTRIBUTE_LIST
        )
    );
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    // An OPEN in Established: 5/3.
    let mut pair = established_pair();
    let mut open = Vec::new();
    encode(
        &Message::Open(bgp::Open::new(65002, 90, B_ID, vec![])),
        &mut open,
    )
    .unwrap();
    pair.a.handle_bytes(&open, pair.now_ms);
    pair.pump();
    let n = pair.log_b.notifications();
    assert_eq!(
        (n[0].code, n[0].subcode),
        (codes::error::FSM, codes::fsm::UNEXPECTED_IN_ESTABLISHED)
    );

    // A KEEPALIVE in OpenSent: 5/1.
    let mut s = Session::new(config_a()).unwrap();
    s.handle_event(Event::ManualStart, 0);
    s.handle_event(Event::TcpConnected, 0);
    while s.poll_action().is_some() {}
    let mut ka = Vec::new();
    encode(&Message::Keepalive, &mut ka).unwrap();
    s.handle_bytes(&ka, 0);
    let sent: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    let Action::Send(bytes) = &sent[0] else {
        panic!("expected a NOTIFICATION, got {sent:?}");
    };
    assert_eq!(
        decode(bytes).unwrap().unwrap().0,
        Message::Notification(Notification::new(5, codes::fsm::UNEXPECTED_IN_OPEN_SENT))
    );
    assert_eq!(sent[1], Action::Disconnect);
}

#[test]
fn open_sent_waits_four_minutes_for_the_peer_open() {
    let mut s = Session::new(config_a()).unwrap();
    s.handle_event(Event::ManualStart, 0);
    s.handle_event(Event::TcpConnected, 10);
    assert_eq!(s.state(), State::OpenSent);
    assert_eq!(s.poll_timeout(), Some(10 + 240_000));
    s.handle_timeout(10 + 240_000);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn collision_loser_is_closed_with_cease_6_7() {
    let mut pair = established_pair();
    assert_eq!(
        bgp::resolve_collision(A_ID, B_ID),
        bgp::CollisionWinner::RemotelyInitiated
    );
    pair.a.close_for_collision(pair.now_ms);
    pair.pump();
    let n = pair.log_b.notifications();
    assert_eq!(
        (n[0].code, n[0].subcode),
        (
            codes::error::CEASE,
            codes::cease::CONNECTION_COLLISION_RESOLUTION
        )
    );
}

#[test]
fn ipv6_only_peer_gets_no_ipv4_routes() {
    let mut b = config_b();
    b.capabilities.ipv4_unicast = false;
    let mut pair = Pair::new(config_a(), b);
    pair.a
        .announce(&[prefix("192.0.2.10"), prefix("2001:db8::10")]);
    pair.start();
    assert!(pair.established());
    assert_eq!(pair.log_b.announced(), vec![prefix("2001:db8::10")]);
    assert_eq!(pair.log_b.end_of_ribs(), vec![(Afi::IPV6, Safi::UNICAST)]);
}

#[test]
fn per_prefix_routes_carry_their_own_attributes_and_next_hop() {
    use bgp::attributes::{AsPath, Community, PathAttribute};
    use bgp::update::RouteAttributes;
    use bgp::PrefixRoute;

    let mut pair = established_pair();
    let before = pair.log_b.updates().len();
    let mut attributes = RouteAttributes::new(AsPath::sequence(vec![65001, 65001]));
    attributes.communities = vec![Community::new(65001, 7)];
    let route = PrefixRoute {
        attributes: Some(attributes),
        next_hops: NextHops {
            ipv4: Some("192.0.2.99".parse().unwrap()),
            ipv6: None,
        },
    };
    pair.a.announce_route(prefix("192.0.2.50"), route.clone());
    pair.a.announce_route(prefix("192.0.2.51"), route.clone());
    pair.pump();
    let updates = pair.log_b.updates()[before..].to_vec();
    assert_eq!(
        updates.len(),
        1,
        "two routes with one set of attributes, one UPDATE"
    );
    let parsed = parse_update(&updates[0], true).unwrap();
    assert_eq!(
        parsed.announced(),
        vec![prefix("192.0.2.50"), prefix("192.0.2.51")]
    );
    assert!(parsed
        .attributes
        .contains(&PathAttribute::NextHop("192.0.2.99".parse().unwrap())));
    assert!(parsed
        .attributes
        .contains(&PathAttribute::Communities(vec![Community::new(65001, 7)])));

    // The same route again sends nothing.
    pair.a.announce_route(prefix("192.0.2.50"), route.clone());
    pair.pump();
    assert_eq!(pair.log_b.updates().len(), before + 1);

    // A changed route is re-announced, only for that prefix.
    let mut changed = route;
    changed.next_hops.ipv4 = None;
    pair.a.announce_route(prefix("192.0.2.51"), changed);
    pair.pump();
    let updates = pair.log_b.updates()[before + 1..].to_vec();
    assert_eq!(updates.len(), 1);
    let parsed = parse_update(&updates[0], true).unwrap();
    assert_eq!(parsed.announced(), vec![prefix("192.0.2.51")]);
    assert!(parsed
        .attributes
        .contains(&PathAttribute::NextHop("192.0.2.1".parse().unwrap())));
}

#[test]
fn route_changes_made_together_go_out_in_few_updates_in_order() {
    let mut pair = established_pair();
    let before = pair.log_b.updates().len();
    let many: Vec<Prefix> = (1..=200)
        .map(|i| prefix(&format!("198.51.100.{}", i % 250)))
        .chain((1..=50).map(|i| prefix(&format!("2001:db8:1::{i:x}"))))
        .collect();
    for p in &many {
        pair.a.announce(&[*p]);
    }
    pair.pump();
    let updates = pair.log_b.updates()[before..].to_vec();
    assert_eq!(updates.len(), 2, "one UPDATE per family");
    let mut announced: Vec<Prefix> = updates
        .iter()
        .flat_map(|u| parse_update(u, true).unwrap().announced())
        .collect();
    announced.sort();
    let mut want = many.clone();
    want.sort();
    want.dedup();
    assert_eq!(announced, want);

    // Withdraw most of them one call at a time, and re-announce one just withdrawn and
    // withdraw one just announced in the same batch: the last word wins.
    let before = pair.log_b.updates().len();
    for p in &many[..150] {
        pair.a.withdraw(&[*p]);
    }
    pair.a.announce(&[many[0]]);
    pair.a.announce(&[prefix("203.0.113.1")]);
    pair.a.withdraw(&[prefix("203.0.113.1")]);
    pair.pump();
    let updates = pair.log_b.updates()[before..].to_vec();
    assert_eq!(
        updates.len(),
        2,
        "one withdrawal UPDATE, then one announcement"
    );
    let withdrawn = parse_update(&updates[0], true).unwrap().withdrawn_all();
    assert_eq!(withdrawn.len(), 149 + 1, "{withdrawn:?}");
    assert!(!withdrawn.contains(&many[0]));
    assert_eq!(
        parse_update(&updates[1], true).unwrap().announced(),
        vec![many[0]]
    );
}
