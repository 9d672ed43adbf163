//! Starting the engine on the DPDK ports of the config (feature `dpdk`).
//!
//! The EAL gets `[dataplane] eal_args` as given (virtual devices such as `--vdev net_null0`
//! included); every `[[port]]` N must then exist as DPDK port N. Each port is started with one
//! RX and TX queue per lcore (RSS spreads flows over them) and the engine's lcore N polls queue
//! N of every port.
//!
//! A port with `[port.kernel]` gets the kernel exception path: vipd adds a `net_tap` virtual
//! device (`--vdev=net_tap_vipd,iface=TAP`, probed after the config's devices so it does not
//! take a `[[port]]` id), gives the TAP the port's MAC, MTU and the configured addresses with
//! `ip` (iproute2), and every lcore hands frames not for a VIP to its queue of the TAP and relays
//! what the kernel sends into it out of the port ([`DpdkIo::with_kernel_path`]). A port whose
//! `gateway` is given as addresses gets a [`NeighborService`] on a `vipd-neighbor` thread that
//! resolves them by ARP / ND through the lcores ([`DpdkIo::with_neighbors`]) and publishes the
//! MAC into the tables; until then (and after the gateway stops answering) the port's gateway
//! MAC is all zeros and the pipeline drops VIP traffic as `no_next_hop`.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dataplane::dpdk_io::{lcore_ios, lcore_port_config, leak_mempool, start_port, DpdkIo};
use dataplane::nexthop::{
    NeighborChannel, NeighborResolver, NeighborService, ResolverConfig, ResolverTimers,
};
use dataplane::rss::RssMode;
use dataplane::{Engine, EngineConfig, TablesHandle};
use dpdk::{Eal, Mempool, PortConfig};
use wire::EthernetAddress;

use crate::config::{KernelPath, NextHop, ValidConfig};

/// The DPDK device name of the exception path's TAP.
const TAP_DEVICE: &str = "net_tap_vipd";

/// How long `start` waits for the gateways to answer before going on.
const STARTUP_RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// How often the neighbour service runs (reads the lcores' ARP/ND frames, sends due requests).
const NEIGHBOR_INTERVAL: Duration = Duration::from_millis(10);

/// One port's next hop as operators see it (`vipctl status`, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayStatus {
    /// The port.
    pub port: u16,
    /// The gateway's address when it is resolved by ARP/ND; `None` for a static `gateway_mac`.
    pub gateway: Option<IpAddr>,
    /// Its MAC, if known.
    pub mac: Option<[u8; 6]>,
    /// `static`, `incomplete` (no MAC: asking), `reachable` or `probe` (MAC kept, asking again).
    pub state: &'static str,
    /// When the gateway last answered an ARP/ND request (never for a static MAC).
    pub last_answer: Option<Instant>,
}

/// The links and next hops of the engine's ports, watched from the control thread (the lcores
/// own the queues, the EAL answers link queries by port id, the neighbour thread updates
/// `gateways`).
pub struct PortLinks {
    eal: &'static Eal,
    ports: Vec<u16>,
    gateways: Arc<Mutex<Vec<GatewayStatus>>>,
    stop_neighbors: Arc<AtomicBool>,
}

impl Drop for PortLinks {
    fn drop(&mut self) {
        self.stop_neighbors.store(true, Ordering::Relaxed);
    }
}

impl PortLinks {
    /// The ports that cannot forward, each with why: the link is down (a failed query counts
    /// as down: the dataplane cannot vouch for a port it cannot see), or no gateway of the port
    /// has a MAC (frames to backends would be dropped as `no_next_hop`: announcing VIPs through
    /// it would blackhole their traffic, as a router withdraws routes whose next hop is
    /// unreachable).
    pub fn down(&self) -> Vec<(u16, String)> {
        let mut down: Vec<(u16, String)> = self
            .ports
            .iter()
            .filter_map(|&port| match self.eal.port_link(port) {
                Ok(link) if link.up => None,
                Ok(_) => Some((port, "link down".to_string())),
                Err(e) => Some((port, format!("link state unknown: {e}"))),
            })
            .collect();
        let gateways = self.gateways();
        for &port in &self.ports {
            let mine: Vec<&GatewayStatus> = gateways.iter().filter(|g| g.port == port).collect();
            if !mine.is_empty() && mine.iter().all(|g| g.mac.is_none()) {
                let names: Vec<String> = mine
                    .iter()
                    .filter_map(|g| g.gateway.map(|ip| ip.to_string()))
                    .collect();
                down.push((
                    port,
                    format!(
                        "next hop unresolved: no ARP/ND answer from gateway {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        down
    }

    /// Whether a port's link is up (`None`: the EAL cannot tell).
    pub fn link_up(&self, port: u16) -> Option<bool> {
        self.eal.port_link(port).ok().map(|l| l.up)
    }

    /// Every port's next hop(s), in port order.
    pub fn gateways(&self) -> Vec<GatewayStatus> {
        self.gateways
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets a port's link administratively up or down (operator maintenance, tests).
    pub fn set(&self, port: u16, up: bool) -> Result<(), String> {
        if !self.ports.contains(&port) {
            return Err(format!(
                "port {port} is not one of vipd's ports {:?}",
                self.ports
            ));
        }
        self.eal
            .set_port_link(port, up)
            .map_err(|e| format!("port {port}: {e}"))
    }
}

/// Initialises DPDK and starts the engine; the error says what to fix.
pub fn start(
    config: &ValidConfig,
    mut engine_config: EngineConfig,
    tables: TablesHandle,
) -> Result<(Engine, PortLinks), String> {
    if config.ports.is_empty() {
        return Err(
            "no [[port]] in the config: list the DPDK ports to poll, or run with --dry-run".into(),
        );
    }
    // The config allows one kernel path (validated).
    let kernel: Option<(u16, &KernelPath)> = config
        .ports
        .iter()
        .enumerate()
        .find_map(|(i, p)| Some((u16::try_from(i).ok()?, p.kernel.as_ref()?)));
    let mut args: Vec<String> = config.dataplane.eal_args.clone();
    if let Some((_, k)) = kernel {
        args.push(format!("--vdev={TAP_DEVICE},iface={}", k.tap));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let eal: &'static Eal =
        Box::leak(Box::new(Eal::init(&args).map_err(|e| {
            format!("DPDK EAL refused [dataplane] eal_args {args:?}: {e}")
        })?));
    let available = eal.port_count();
    let wanted =
        u16::try_from(config.ports.len()).map_err(|_| "too many [[port]] entries".to_string())?;
    let tap_id = match kernel {
        None => None,
        Some((_, k)) => {
            let id = eal.port_by_name(TAP_DEVICE).map_err(|e| {
                format!(
                    "the kernel exception path's TAP {:?} was not created ({e}); is the net_tap PMD installed (Debian: dpdk), is vipd root, and is the name free (no such interface yet)?",
                    k.tap
                )
            })?;
            if id < wanted {
                return Err(format!(
                    "the TAP {:?} became DPDK port {id}, which [[port]] {id} expects to be a NIC; list every [[port]] device in [dataplane] eal_args (vipd adds the TAP after them)",
                    k.tap
                ));
            }
            Some(id)
        }
    };
    let taps = u16::from(tap_id.is_some());
    if available < wanted + taps {
        return Err(format!(
            "the config lists {wanted} [[port]] entries but DPDK found {} ports; add devices (PCI allow-list or --vdev) to [dataplane] eal_args",
            available - taps
        ));
    }
    let lcores = config.dataplane.lcores;
    let pool = leak_mempool(eal, "vipd_pool", 16383, 256, Mempool::DEFAULT_DATA_ROOM)
        .map_err(|e| format!("cannot create the mbuf pool: {e}"))?;
    let mut queues = Vec::new();
    for (id, port) in config.ports.iter().enumerate() {
        // Symmetric Toeplitz RSS where the device has it, so both directions of a flow meet on
        // one lcore; devices without RSS (net_af_packet) spread over their queues by themselves.
        let port_config = PortConfig {
            mtu: port.mtu,
            ..lcore_port_config(lcores, RssMode::Auto)
        };
        queues.push(
            start_port(pool, id as u16, &port_config)
                .map_err(|e| format!("cannot start DPDK port {id}: {e}"))?,
        );
    }
    let mut tap_queues = match (tap_id, kernel) {
        (Some(tap_id), Some((port, k))) => {
            let tap_config = PortConfig {
                mtu: k.mtu,
                ..lcore_port_config(lcores, RssMode::Off)
            };
            let q = start_port(pool, tap_id, &tap_config)
                .map_err(|e| format!("cannot start the TAP {:?}: {e}", k.tap))?;
            let mac = config.ports[usize::from(port)].mac.0;
            configure_tap(k, mac)?;
            tracing::info!(tap = %k.tap, port, addresses = ?k.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), "kernel exception path up");
            q.into_iter().map(Some).collect()
        }
        _ => Vec::new(),
    };

    // Next hops: static MACs as they are, gateways to resolve through a neighbour service.
    let mut statuses = Vec::new();
    let mut resolvers: Vec<(NeighborResolver, u16)> = Vec::new();
    for (id, port) in config.ports.iter().enumerate() {
        let id = id as u16; // `wanted` fits in u16
        match &port.gateway {
            NextHop::Mac(mac) => statuses.push(GatewayStatus {
                port: id,
                gateway: None,
                mac: Some(mac.0),
                state: "static",
                last_answer: None,
            }),
            NextHop::Resolve(ips) => {
                for &gateway in ips {
                    let source_ip = port
                        .kernel
                        .as_ref()
                        .and_then(|k| source_for(k, gateway))
                        .ok_or_else(|| format!("port {id}: no [port.kernel] address of the family of gateway {gateway} to send ARP/ND from"))?;
                    let resolver = NeighborResolver::new(ResolverConfig {
                        gateway,
                        source_ip,
                        source_mac: EthernetAddress(port.mac.0),
                        timers: ResolverTimers::default(),
                    })
                    .map_err(|e| format!("port {id}: {e}"))?;
                    statuses.push(status_of(&resolver, id, Instant::now(), 0));
                    resolvers.push((resolver, id));
                }
            }
        }
    }
    let gateways = Arc::new(Mutex::new(statuses));
    let stop_neighbors = Arc::new(AtomicBool::new(false));
    // One resolving port at most: resolving needs the kernel path, which one port has.
    let neighbor_port = resolvers.first().map(|(_, port)| *port);
    let channel = Arc::new(NeighborChannel::new(256));

    let ios = lcore_ios(queues).map_err(|e| e.to_string())?;
    let mut ios: Vec<Option<DpdkIo>> = ios
        .into_iter()
        .enumerate()
        .map(|(lcore, mut io)| {
            if let (Some(tap), Some((port, _))) =
                (tap_queues.get_mut(lcore).and_then(Option::take), kernel)
            {
                io = io.with_kernel_path(tap, port);
            }
            if let Some(port) = neighbor_port {
                io = io.with_neighbors(Arc::clone(&channel), pool, port);
            }
            Some(io)
        })
        .collect();
    engine_config.lcores = lcores;
    engine_config.ports = (0..wanted).collect();
    engine_config.cpus = config.dataplane.cpus.clone();
    let links = PortLinks {
        eal,
        ports: (0..wanted).collect(),
        gateways: Arc::clone(&gateways),
        stop_neighbors: Arc::clone(&stop_neighbors),
    };
    let engine = Engine::start(
        engine_config,
        |q| {
            ios.get_mut(usize::from(q))
                .and_then(Option::take)
                // `lcore_ios` made one I/O per queue (= per lcore) and the engine asks once each.
                .unwrap_or_else(|| unreachable!("one DpdkIo per lcore"))
        },
        tables.clone(),
    )
    .map_err(|e| e.to_string())?;
    let mut resolvers = resolvers.into_iter();
    if let Some((first, port)) = resolvers.next() {
        let mut service = NeighborService::new(first, channel, tables, port);
        for (resolver, port) in resolvers {
            service = service.with_resolver(resolver, port);
        }
        spawn_neighbors(service, gateways, stop_neighbors)
            .map_err(|e| format!("cannot start the neighbour thread: {e}"))?;
        // Give the gateway a moment to answer, so that vipd starts healthy on a working link
        // (and announces nothing it cannot forward); a silent one is reported by the watchdog.
        let deadline = Instant::now() + STARTUP_RESOLVE_WAIT;
        while Instant::now() < deadline && links.gateways().iter().any(|g| g.mac.is_none()) {
            std::thread::sleep(NEIGHBOR_INTERVAL);
        }
        for g in links.gateways().iter().filter(|g| g.mac.is_none()) {
            let gateway = g.gateway.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::warn!(port = g.port, %gateway, waited_ms = STARTUP_RESOLVE_WAIT.as_millis() as u64, "the gateway has not answered ARP/ND yet; still asking");
        }
    }
    Ok((engine, links))
}

/// The address of `k` to send ARP/ND for `gateway` from: one on its subnet, else (an IPv6
/// link-local gateway) the first of its family.
fn source_for(k: &KernelPath, gateway: IpAddr) -> Option<IpAddr> {
    k.addresses
        .iter()
        .find(|a| a.contains(gateway))
        .or_else(|| {
            k.addresses
                .iter()
                .find(|a| a.address.is_ipv4() == gateway.is_ipv4())
        })
        .map(|a| a.address)
}

fn status_of(r: &NeighborResolver, port: u16, epoch: Instant, now_ms: u64) -> GatewayStatus {
    GatewayStatus {
        port,
        gateway: Some(r.gateway()),
        mac: r.mac().map(|m| m.0),
        state: r.state_name(),
        last_answer: r.last_answer_ms().map(|ms| {
            // `ms` is at most `now_ms`: the answer's time on the same clock.
            epoch + Duration::from_millis(ms.min(now_ms))
        }),
    }
}

/// Runs `service` every [`NEIGHBOR_INTERVAL`] on a `vipd-neighbor` thread until `stop`, keeping
/// the gateway part of `statuses` current and logging every change of a gateway's MAC.
fn spawn_neighbors(
    mut service: NeighborService,
    statuses: Arc<Mutex<Vec<GatewayStatus>>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vipd-neighbor".into())
        .spawn(move || {
            let epoch = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                let before: Vec<_> = service.resolvers().iter().map(|(r, _)| r.mac()).collect();
                service.run_once(now_ms);
                let now: Vec<GatewayStatus> = service
                    .resolvers()
                    .iter()
                    .map(|(r, port)| status_of(r, *port, epoch, now_ms))
                    .collect();
                for (old, new) in before.iter().zip(&now) {
                    let gateway = new.gateway.map(|g| g.to_string()).unwrap_or_default();
                    match (old, new.mac) {
                        (_, Some(mac)) if old.map(|m| m.0) != Some(mac) => {
                            tracing::info!(port = new.port, %gateway, mac = %EthernetAddress(mac), "next hop resolved");
                        }
                        (Some(_), None) => {
                            tracing::warn!(port = new.port, %gateway, "next hop lost: the gateway stopped answering ARP/ND; frames to backends are dropped (no_next_hop) until it answers");
                        }
                        _ => {}
                    }
                }
                let mut statuses = statuses.lock().unwrap_or_else(PoisonError::into_inner);
                statuses.retain(|s| s.gateway.is_none());
                statuses.extend(now);
                statuses.sort_by_key(|s| s.port);
                drop(statuses);
                std::thread::sleep(NEIGHBOR_INTERVAL);
            }
        })
        .map(drop)
}

/// Gives the TAP the port's MAC, the MTU and the appliance's addresses, and brings it up.
fn configure_tap(k: &KernelPath, mac: [u8; 6]) -> Result<(), String> {
    let mac = EthernetAddress(mac).to_string();
    let mtu = k.mtu.to_string();
    ip(&["link", "set", "dev", &k.tap, "address", &mac, "mtu", &mtu])?;
    for a in &k.addresses {
        let cidr = a.to_string();
        let mut args = vec!["addr", "replace", &cidr, "dev", &k.tap];
        if a.address.is_ipv6() {
            // No duplicate address detection: the address is usable (for the BGP session) at
            // once rather than after ~1 s of tentative state.
            args.push("nodad");
        }
        ip(&args)?;
    }
    ip(&["link", "set", "dev", &k.tap, "up"])
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        format!(
            "cannot run `ip {}` to set up the kernel exception path: {e} (install iproute2)",
            args.join(" ")
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed while setting up the kernel exception path: {} (vipd needs root / CAP_NET_ADMIN for [port.kernel])",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
