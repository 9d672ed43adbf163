//! Starting the engine on the DPDK ports of the config (feature `dpdk`).
//!
//! The EAL gets `[dataplane] eal_args` as given (virtual devices such as `--vdev net_null0`
//! included); every `[[port]]` N must then exist as DPDK port N. Each port is started with one
//! RX and TX queue per lcore (RSS spreads flows over them) and the engine's lcore N polls queue
//! N of every port.

use dataplane::dpdk_io::{lcore_ios, lcore_port_config, leak_mempool, start_port, DpdkIo};
use dataplane::rss::RssMode;
use dataplane::{Engine, EngineConfig, TablesHandle};
use dpdk::{Eal, Mempool, PortConfig};

use crate::config::ValidConfig;

/// The links of the engine's ports, watched from the control thread (the lcores own the
/// queues, the EAL answers link queries by port id).
pub struct PortLinks {
    eal: &'static Eal,
    ports: Vec<u16>,
}

impl PortLinks {
    /// The ports whose link is down, each with why (a failed query counts as down: the
    /// dataplane cannot vouch for a port it cannot see).
    pub fn down(&self) -> Vec<(u16, String)> {
        self.ports
            .iter()
            .filter_map(|&port| match self.eal.port_link(port) {
                Ok(link) if link.up => None,
                Ok(_) => Some((port, "link down".to_string())),
                Err(e) => Some((port, format!("link state unknown: {e}"))),
            })
            .collect()
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
    let args: Vec<&str> = config
        .dataplane
        .eal_args
        .iter()
        .map(String::as_str)
        .collect();
    let eal: &'static Eal =
        Box::leak(Box::new(Eal::init(&args).map_err(|e| {
            format!("DPDK EAL refused [dataplane] eal_args {args:?}: {e}")
        })?));
    let available = eal.port_count();
    let wanted =
        u16::try_from(config.ports.len()).map_err(|_| "too many [[port]] entries".to_string())?;
    if available < wanted {
        return Err(format!(
            "the config lists {wanted} [[port]] entries but DPDK found {available} ports; add devices (PCI allow-list or --vdev) to [dataplane] eal_args"
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
    let ios = lcore_ios(queues).map_err(|e| e.to_string())?;
    let mut ios: Vec<Option<DpdkIo>> = ios.into_iter().map(Some).collect();
    engine_config.lcores = lcores;
    engine_config.ports = (0..wanted).collect();
    engine_config.cpus = config.dataplane.cpus.clone();
    let links = PortLinks {
        eal,
        ports: (0..wanted).collect(),
    };
    Engine::start(
        engine_config,
        |q| {
            ios.get_mut(usize::from(q))
                .and_then(Option::take)
                // `lcore_ios` made one I/O per queue (= per lcore) and the engine asks once each.
                .unwrap_or_else(|| unreachable!("one DpdkIo per lcore"))
        },
        tables,
    )
    .map(|engine| (engine, links))
    .map_err(|e| e.to_string())
}
