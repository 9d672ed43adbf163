//! The tokio driver over real loopback TCP: against a scripted peer written with the crate's own
//! codec (announce, withdraw, graceful shutdown, malformed input, reconnect), and speaker
//! against speaker (TCP-MD5, both active), and RFC 4271 collision resolution both ways.
//! Routers (BIRD, FRR) are in interop.rs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use testutil::free_port;

use bgp::attributes::{Community, PathAttribute, Prefix};
use bgp::config::BgpConfig;
use bgp::speaker::{Speaker, SpeakerHandle};
use bgp::{decode, encode, parse_update, Afi, Capability, Message, Open, RoutePolicy, Safi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const STEP: Duration = Duration::from_secs(10);

fn config(text: &str) -> BgpConfig {
    BgpConfig::from_toml_file_contents(text).unwrap()
}

/// A scripted BGP peer on one accepted connection.
struct FakePeer {
    stream: TcpStream,
    rx: Vec<u8>,
    end_of_ribs: Vec<(Afi, Safi)>,
}

impl FakePeer {
    async fn accept(listener: &TcpListener) -> FakePeer {
        let (stream, _) = timeout(STEP, listener.accept()).await.unwrap().unwrap();
        FakePeer {
            stream,
            rx: Vec::new(),
            end_of_ribs: Vec::new(),
        }
    }

    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some((m, n)) = decode(&self.rx).unwrap() {
                self.rx.drain(..n);
                return Some(m);
            }
            let mut buf = [0u8; 4096];
            let n = timeout(STEP, self.stream.read(&mut buf))
                .await
                .unwrap()
                .ok()?;
            if n == 0 {
                return None;
            }
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    async fn send(&mut self, m: &Message) {
        let mut out = Vec::new();
        encode(m, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Answers the speaker's OPEN and completes the handshake.
    async fn handshake(&mut self, my_as: u32) -> Open {
        let Some(Message::Open(theirs)) = self.recv().await else {
            panic!("expected OPEN");
        };
        let caps = vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
        ];
        let open = Open::new(my_as, 9, Ipv4Addr::new(10, 9, 9, 9), caps);
        self.send(&Message::Open(open)).await;
        self.send(&Message::Keepalive).await;
        assert_eq!(self.recv().await, Some(Message::Keepalive));
        theirs
    }

    /// The next UPDATE, skipping KEEPALIVEs and End-of-RIB markers.
    async fn next_update(&mut self) -> bgp::ParsedUpdate {
        loop {
            match self.recv().await {
                Some(Message::Update(u)) => {
                    let p = parse_update(&u, true).unwrap();
                    match p.end_of_rib() {
                        Some(eor) => self.end_of_ribs.push(eor),
                        None => return p,
                    }
                }
                Some(Message::Keepalive) => {}
                other => panic!("expected UPDATE, got {other:?}"),
            }
        }
    }
}

fn host(s: &str) -> Prefix {
    Prefix::host(s.parse().unwrap())
}

fn communities(p: &bgp::ParsedUpdate) -> Vec<Community> {
    p.attributes
        .iter()
        .find_map(|a| match a {
            PathAttribute::Communities(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn announces_withdraws_and_survives_malformed_input() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let speaker = Speaker::spawn(config(&format!(
        r#"
        [bgp]
        local_as = 65001
        router_id = "192.0.2.1"
        hold_time = 9
        connect_retry = 1
        graceful_shutdown_wait = 1
        next_hop_v6 = "2001:db8::1"
        communities = ["65001:100"]
        [[bgp.peer]]
        address = "127.0.0.1"
        port = {port}
        remote_as = 65002
        "#
    )))
    .unwrap();
    // Announced before the session is up: sent on Established.
    speaker.announce("192.0.2.10".parse().unwrap(), RoutePolicy::default());

    let mut peer = FakePeer::accept(&listener).await;
    let open = peer.handshake(65002).await;
    assert_eq!(open.peer_as(), 65001);
    assert_eq!(open.hold_time_s, 9);
    assert!(
        !open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart { .. })),
        "graceful restart is off unless configured"
    );
    let first = peer.next_update().await;
    assert_eq!(first.announced(), vec![host("192.0.2.10")]);
    assert!(first
        .attributes
        .contains(&PathAttribute::NextHop(Ipv4Addr::LOCALHOST)));
    assert_eq!(communities(&first), vec![Community::new(65001, 100)]);

    // A per-VIP policy; announcing it twice sends it once.
    let policy = RoutePolicy {
        communities: vec!["65001:7".parse().unwrap()],
        med: Some(42),
        ..RoutePolicy::default()
    };
    speaker.announce("2001:db8::10".parse().unwrap(), policy.clone());
    speaker.announce("2001:db8::10".parse().unwrap(), policy);
    let v6 = peer.next_update().await;
    assert_eq!(v6.announced(), vec![host("2001:db8::10")]);
    assert_eq!(
        peer.end_of_ribs,
        vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)],
        "End-of-RIB for both families after the initial announcements"
    );
    assert!(v6.attributes.contains(&PathAttribute::MultiExitDisc(42)));
    assert_eq!(
        communities(&v6),
        vec![Community::new(65001, 7), Community::new(65001, 100)]
    );

    speaker.withdraw("192.0.2.10".parse().unwrap());
    speaker.withdraw("192.0.2.10".parse().unwrap());
    let w = peer.next_update().await;
    assert_eq!(w.withdrawn_all(), vec![host("192.0.2.10")]);

    let summary = speaker.summary().await;
    assert_eq!(summary[0].state, "Established");
    assert_eq!(summary[0].prefixes_sent, 1);
    let routes = speaker.routes().await;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].prefix, "2001:db8::10/128");
    assert_eq!(routes[0].peers, vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);

    // Many VIPs announced together (one call each, as vipd does on a health change) go out
    // in one UPDATE; withdrawn together, in one more.
    let vips: Vec<IpAddr> = (1..=100)
        .map(|i| IpAddr::from(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    for vip in &vips {
        speaker.announce(*vip, RoutePolicy::default());
    }
    let batch = peer.next_update().await;
    let want: Vec<Prefix> = vips.iter().map(|v| Prefix::host(*v)).collect();
    assert_eq!(batch.announced(), want, "100 announcements, one UPDATE");
    for vip in &vips {
        speaker.withdraw(*vip);
    }
    let batch = peer.next_update().await;
    assert_eq!(batch.withdrawn_all(), want, "100 withdrawals, one UPDATE");

    // A broken header: NOTIFICATION Message Header Error / Connection Not Synchronized, close.
    peer.stream.write_all(&[0u8; 19]).await.unwrap();
    loop {
        match peer.recv().await {
            Some(Message::Notification(n)) => {
                assert_eq!((n.code, n.subcode), (1, 1));
                break;
            }
            Some(Message::Keepalive) => {}
            other => panic!("expected NOTIFICATION, got {other:?}"),
        }
    }
    assert_eq!(
        peer.recv().await,
        None,
        "connection closed after NOTIFICATION"
    );
    let summary = speaker.summary().await;
    assert!(
        summary[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("Message Header Error"),
        "{summary:?}"
    );

    // The speaker reconnects after its backoff and announces what is current.
    let mut peer = FakePeer::accept(&listener).await;
    peer.handshake(65002).await;
    let again = peer.next_update().await;
    assert_eq!(again.announced(), vec![host("2001:db8::10")]);

    // Graceful shutdown: GRACEFUL_SHUTDOWN re-announcement, withdrawal, Cease 6/2.
    let started = Instant::now();
    let shutdown = {
        let speaker = speaker.clone();
        tokio::spawn(async move { speaker.graceful_shutdown().await })
    };
    let g = peer.next_update().await;
    assert!(communities(&g).contains(&Community::GRACEFUL_SHUTDOWN));
    let w = peer.next_update().await;
    assert_eq!(w.withdrawn_all(), vec![host("2001:db8::10")]);
    assert!(started.elapsed() >= Duration::from_millis(900), "waited");
    loop {
        match peer.recv().await {
            Some(Message::Notification(n)) => {
                assert_eq!((n.code, n.subcode), (6, 2));
                break;
            }
            Some(Message::Keepalive) => {}
            other => panic!("expected Cease, got {other:?}"),
        }
    }
    timeout(STEP, shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_peer_as_is_refused_with_bad_peer_as() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let speaker = Speaker::spawn(config(&format!(
        r#"
        [bgp]
        local_as = 65001
        router_id = "192.0.2.1"
        connect_retry = 1
        graceful_restart_time = 120
        [[bgp.peer]]
        address = "127.0.0.1"
        port = {port}
        remote_as = 65002
        families = ["ipv4"]
        "#
    )))
    .unwrap();
    let mut peer = FakePeer::accept(&listener).await;
    let Some(Message::Open(theirs)) = peer.recv().await else {
        panic!("expected OPEN");
    };
    assert!(
        theirs.capabilities.iter().any(|c| matches!(
            c,
            Capability::GracefulRestart {
                restart_time_s: 120,
                ..
            }
        )),
        "graceful restart offered when configured: {theirs:?}"
    );
    let open = Open::new(65099, 9, Ipv4Addr::new(10, 9, 9, 9), Vec::new());
    peer.send(&Message::Open(open)).await;
    let Some(Message::Notification(n)) = peer.recv().await else {
        panic!("expected NOTIFICATION");
    };
    assert_eq!((n.code, n.subcode), (2, 2));
    assert_ne!(speaker.summary().await[0].state, "Established");
}

fn pair_config(
    me: &str,
    router_id: &str,
    peer: &str,
    port: u16,
    passive: bool,
    password: &str,
) -> BgpConfig {
    let password = if password.is_empty() {
        String::new()
    } else {
        format!("password = \"{password}\"")
    };
    config(&format!(
        r#"
        [bgp]
        local_as = 65001
        router_id = "{router_id}"
        listen_address = "{me}"
        listen_port = {port}
        connect_retry = 1
        hold_time = 9
        [[bgp.peer]]
        address = "{peer}"
        port = {port}
        remote_as = 65001
        local_address = "{me}"
        passive = {passive}
        families = ["ipv4"]
        {password}
        "#
    ))
}

async fn wait_established(speakers: &[&SpeakerHandle], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut all = true;
        for s in speakers {
            all &= s.summary().await[0].state == "Established";
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn tcp_md5_keys_must_match() {
    let port = free_port();
    let a = Speaker::spawn(pair_config(
        "127.0.0.11",
        "10.0.0.11",
        "127.0.0.12",
        port,
        false,
        "right",
    ))
    .unwrap();
    let b = Speaker::spawn(pair_config(
        "127.0.0.12",
        "10.0.0.12",
        "127.0.0.11",
        port,
        true,
        "right",
    ))
    .unwrap();
    assert!(wait_established(&[&a, &b], Duration::from_secs(10)).await);
    a.stop(None).await;
    b.stop(None).await;

    let port = free_port();
    let a = Speaker::spawn(pair_config(
        "127.0.0.13",
        "10.0.0.13",
        "127.0.0.14",
        port,
        false,
        "right",
    ))
    .unwrap();
    let b = Speaker::spawn(pair_config(
        "127.0.0.14",
        "10.0.0.14",
        "127.0.0.13",
        port,
        true,
        "wrong",
    ))
    .unwrap();
    assert!(
        !wait_established(&[&a, &b], Duration::from_secs(3)).await,
        "mismatched TCP-MD5 keys must not establish"
    );
}

#[tokio::test]
async fn two_active_listening_speakers_settle_on_one_session() {
    let port = free_port();
    let a = Speaker::spawn(pair_config(
        "127.0.0.21",
        "10.0.0.21",
        "127.0.0.22",
        port,
        false,
        "",
    ))
    .unwrap();
    let b = Speaker::spawn(pair_config(
        "127.0.0.22",
        "10.0.0.22",
        "127.0.0.21",
        port,
        false,
        "",
    ))
    .unwrap();
    let ok = wait_established(&[&a, &b], Duration::from_secs(10)).await;
    assert!(ok, "{:?}\n{:?}", a.summary().await, b.summary().await);
    // Stable: no flapping after the collision was resolved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in [&a, &b] {
        let sum = s.summary().await;
        assert_eq!(sum[0].state, "Established", "{sum:?}");
        assert!(sum[0].uptime_s >= 1, "{sum:?}");
    }
}

/// RFC 4271 section 6.8 against a scripted peer that opens a second connection while the
/// speaker's own is in OpenSent: the connection initiated by the higher BGP identifier stays,
/// the other is closed with Cease / Connection Collision Resolution (6/7).
async fn collision_with(speaker_id: &str, speaker_addr: &str, expect_outbound_kept: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let listen_port = free_port();
    let speaker = Speaker::spawn(config(&format!(
        r#"
        [bgp]
        local_as = 65001
        router_id = "{speaker_id}"
        listen_address = "{speaker_addr}"
        listen_port = {listen_port}
        connect_retry = 1
        [[bgp.peer]]
        address = "127.0.0.1"
        port = {port}
        remote_as = 65002
        local_address = "{speaker_addr}"
        families = ["ipv4"]
        "#
    )))
    .unwrap();
    speaker.announce("192.0.2.77".parse().unwrap(), RoutePolicy::default());
    // c1: the speaker's connection to us.
    let mut c1 = FakePeer::accept(&listener).await;
    let Some(Message::Open(_)) = c1.recv().await else {
        panic!("expected OPEN on the speaker's connection");
    };
    // c2: ours to the speaker, from the configured peer address.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let target = format!("{speaker_addr}:{listen_port}").parse().unwrap();
    let stream = timeout(STEP, socket.connect(target))
        .await
        .unwrap()
        .unwrap();
    let mut c2 = FakePeer {
        stream,
        rx: Vec::new(),
        end_of_ribs: Vec::new(),
    };
    let Some(Message::Open(_)) = c2.recv().await else {
        panic!("expected OPEN on our connection");
    };
    let caps = vec![Capability::Multiprotocol {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    }];
    let open = Message::Open(Open::new(65002, 9, Ipv4Addr::new(10, 9, 9, 9), caps));
    c1.send(&open).await;
    assert_eq!(c1.recv().await, Some(Message::Keepalive));
    c2.send(&open).await;
    assert_eq!(c2.recv().await, Some(Message::Keepalive));
    let (mut kept, mut closed) = if expect_outbound_kept {
        (c1, c2)
    } else {
        (c2, c1)
    };
    match closed.recv().await {
        Some(Message::Notification(n)) => assert_eq!((n.code, n.subcode), (6, 7)),
        other => panic!("expected Cease 6/7 on the losing connection, got {other:?}"),
    }
    assert_eq!(closed.recv().await, None);
    kept.send(&Message::Keepalive).await;
    let update = kept.next_update().await;
    assert_eq!(update.announced(), vec![host("192.0.2.77")]);
    let summary = speaker.summary().await;
    assert_eq!(summary[0].state, "Established", "{summary:?}");
}

#[tokio::test]
async fn collision_keeps_the_peers_connection_when_its_id_is_higher() {
    collision_with("10.0.0.1", "127.0.0.31", false).await;
}

#[tokio::test]
async fn collision_keeps_our_connection_when_our_id_is_higher() {
    collision_with("10.200.0.1", "127.0.0.32", true).await;
}

#[tokio::test]
async fn session_over_ipv6_uses_its_address_as_the_ipv6_next_hop() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipping: no IPv6 loopback");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let speaker = Speaker::spawn(config(&format!(
        r#"
        [bgp]
        local_as = 65001
        router_id = "192.0.2.1"
        connect_retry = 1
        next_hop_v4 = "192.0.2.1"
        [[bgp.peer]]
        address = "::1"
        port = {port}
        remote_as = 65002
        "#
    )))
    .unwrap();
    speaker.announce("2001:db8::77".parse().unwrap(), RoutePolicy::default());
    speaker.announce("192.0.2.77".parse().unwrap(), RoutePolicy::default());
    let mut peer = FakePeer::accept(&listener).await;
    peer.handshake(65002).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let u = peer.next_update().await;
        for a in &u.attributes {
            match a {
                PathAttribute::NextHop(nh) => seen.push(IpAddr::from(*nh)),
                PathAttribute::MpReach(m) => match m.next_hop {
                    bgp::attributes::MpNextHop::V6 { global, .. } => seen.push(global.into()),
                    bgp::attributes::MpNextHop::V4(a) => seen.push(a.into()),
                },
                _ => {}
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        ]
    );
}

#[test]
fn spawn_errors_say_what_is_wrong() {
    let text = |port: u16| {
        format!(
            "[bgp]\nlocal_as = 65001\nrouter_id = \"192.0.2.1\"\nlisten_address = \"127.0.0.1\"\nlisten_port = {port}\n[[bgp.peer]]\naddress = \"127.0.0.2\"\nremote_as = 65002\nfamilies = [\"ipv4\"]\n"
        )
    };
    let e = Speaker::spawn(config(&text(1179))).unwrap_err();
    assert!(matches!(e, bgp::SpeakerError::NoRuntime), "{e}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = Speaker::spawn(config(&text(port))).unwrap_err();
    assert!(matches!(e, bgp::SpeakerError::Listen { .. }), "{e}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");

    let mut invalid = config(&text(port));
    invalid.hold_time = 1;
    let e = Speaker::spawn(invalid).unwrap_err();
    assert!(e.to_string().contains("bgp.hold_time"), "{e}");
}

/// The next NOTIFICATION, skipping everything else; `None` if the connection closes first.
async fn next_notification(peer: &mut FakePeer) -> Option<bgp::Notification> {
    loop {
        match peer.recv().await? {
            Message::Notification(n) => return Some(n),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn reconfigure_adds_removes_resets_and_reannounces_peers() {
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let (pa, pb) = (
        la.local_addr().unwrap().port(),
        lb.local_addr().unwrap().port(),
    );
    let text = |communities: &str, hold_a: u16, with_b: bool, router_id: &str| {
        let b = if with_b {
            format!(
                "[[bgp.peer]]\naddress = \"127.0.0.2\"\nport = {pb}\nremote_as = 65003\n\
                 description = \"tor-b\""
            )
        } else {
            String::new()
        };
        format!(
            r#"
            [bgp]
            local_as = 65001
            router_id = "{router_id}"
            connect_retry = 1
            next_hop_v6 = "2001:db8::1"
            communities = [{communities}]
            [[bgp.peer]]
            address = "127.0.0.1"
            port = {pa}
            remote_as = 65002
            hold_time = {hold_a}
            {b}
            "#
        )
    };
    let speaker = Speaker::spawn(config(&text("\"65001:1\"", 9, false, "192.0.2.1"))).unwrap();
    speaker.announce("192.0.2.10".parse().unwrap(), RoutePolicy::default());
    let mut a = FakePeer::accept(&la).await;
    a.handshake(65002).await;
    let first = a.next_update().await;
    assert_eq!(communities(&first), vec![Community::new(65001, 1)]);

    // Route attributes only: the session stays, the route is re-announced.
    let r = speaker
        .reconfigure(config(&text("\"65001:2\"", 9, false, "192.0.2.1")))
        .unwrap();
    assert_eq!(r.peers_reannounced, vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);
    assert!(r.peers_added.is_empty() && r.peers_reset.is_empty() && r.peers_removed.is_empty());
    let again = a.next_update().await;
    assert_eq!(again.announced(), vec![host("192.0.2.10")]);
    assert_eq!(communities(&again), vec![Community::new(65001, 2)]);

    // A new peer starts and gets the routes; the old one is left alone.
    let r = speaker
        .reconfigure(config(&text("\"65001:2\"", 9, true, "192.0.2.1")))
        .unwrap();
    assert_eq!(r.peers_added, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
    assert!(r.peers_reannounced.is_empty() && r.peers_reset.is_empty());
    let mut b = FakePeer::accept(&lb).await;
    b.handshake(65003).await;
    assert_eq!(b.next_update().await.announced(), vec![host("192.0.2.10")]);
    let summary = speaker.summary().await;
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[1].description.as_deref(), Some("tor-b"));

    // Whole-speaker settings: refused, nothing changes.
    let e = speaker
        .reconfigure(config(&text("\"65001:2\"", 9, true, "192.0.2.9")))
        .unwrap_err();
    assert!(e.to_string().contains("router_id"), "{e}");
    let mut invalid = config(&text("\"65001:2\"", 9, true, "192.0.2.1"));
    invalid.peers[0].hold_time = Some(2);
    let e = speaker.reconfigure(invalid).unwrap_err();
    assert!(e.to_string().contains("hold_time"), "{e}");
    assert_eq!(speaker.summary().await.len(), 2);

    // A session setting of peer A: A is closed (Cease, Administrative Shutdown) and comes
    // back on a new connection with the routes; B stays up.
    let r = speaker
        .reconfigure(config(&text("\"65001:2\"", 30, true, "192.0.2.1")))
        .unwrap();
    assert_eq!(r.peers_reset, vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);
    let n = next_notification(&mut a)
        .await
        .expect("Cease to the reset peer");
    assert_eq!((n.code, n.subcode), (6, 2));
    let mut a = FakePeer::accept(&la).await;
    let open = a.handshake(65002).await;
    assert_eq!(open.hold_time_s, 30);
    assert_eq!(a.next_update().await.announced(), vec![host("192.0.2.10")]);

    // Peer B removed: Cease with a message, and it is gone from the summary.
    let r = speaker
        .reconfigure(config(&text("\"65001:2\"", 30, false, "192.0.2.1")))
        .unwrap();
    assert_eq!(
        r.peers_removed,
        vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
    );
    let n = next_notification(&mut b)
        .await
        .expect("Cease to the removed peer");
    assert_eq!((n.code, n.subcode), (6, 2));
    assert!(
        String::from_utf8_lossy(&n.data).contains("removed"),
        "{:?}",
        n.data
    );
    let summary = speaker.summary().await;
    assert_eq!(summary.len(), 1);
    // A stayed up through B's removal.
    speaker.withdraw("192.0.2.10".parse().unwrap());
    assert_eq!(
        a.next_update().await.withdrawn_all(),
        vec![host("192.0.2.10")]
    );
    assert!(speaker
        .reconfigure(config(&text("\"65001:2\"", 30, false, "192.0.2.1")))
        .unwrap()
        .is_empty());

    // Once stopped (shutdown), a reconfigure starts nothing again.
    speaker.stop(None).await;
    let e = speaker
        .reconfigure(config(&text("\"65001:2\"", 30, true, "192.0.2.1")))
        .unwrap_err();
    assert!(matches!(e, bgp::ReconfigureError::Stopped), "{e}");
    assert_eq!(speaker.summary().await.len(), 1);
}
