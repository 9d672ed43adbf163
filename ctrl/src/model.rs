//! The runtime model: the running configuration plus what the config does not hold (backend
//! health, operator drains, dataplane ids), and how it becomes dataplane [`Tables`].
//!
//! Identity: a VIP is its [`VipKey`]; a backend is (VIP key, backend address). Ids handed to the
//! dataplane stay the same for as long as the VIP or backend exists, through reloads and admin
//! changes, so tracked flows keep their backend. A freed backend id is reused with its
//! generation bumped, so flows of the old backend do not follow the id.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU16;

use dataplane::tables::{self, BackendEntry, BackendState, ForwardingMode, Port, VipEntry};
use dataplane::{Tables, TablesError};
use serde_json::{json, Value};

use crate::config::{self, Backend, Forwarding, HashMode, Protocol, ValidConfig, Vip, VipKey};
use crate::health::{BackendHealth, HealthState, Transition};

/// One backend at run time.
#[derive(Clone, Debug)]
pub struct BackendRt {
    /// Dataplane id.
    pub id: u16,
    /// Generation of the id.
    pub generation: u16,
    /// As configured (weight may be changed by the operator).
    pub spec: Backend,
    /// Probe results.
    pub health: BackendHealth,
    /// Operator drain: no new flows, tracked flows stay.
    pub drained: bool,
}

/// One VIP at run time.
#[derive(Clone, Debug)]
pub struct VipRt {
    /// Dataplane id.
    pub id: u16,
    /// As configured (backends live in `backends`).
    pub spec: Vip,
    /// Backends, in configuration order.
    pub backends: Vec<BackendRt>,
}

/// What a VIP's backends add up to after the panic threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipStatus {
    /// At least one healthy, undrained backend: announce the VIP.
    pub up: bool,
    /// Too many backends failed together: all are kept in the table.
    pub panic: bool,
    /// Healthy and undrained backends.
    pub healthy: usize,
    /// Backends.
    pub total: usize,
}

/// What a reload (or admin change) changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    /// VIPs added.
    pub vips_added: Vec<String>,
    /// VIPs removed.
    pub vips_removed: Vec<String>,
    /// VIPs whose settings changed (forwarding, hash, table size, health check...).
    pub vips_changed: Vec<String>,
    /// Backends added, as `vip backend`.
    pub backends_added: Vec<String>,
    /// Backends removed.
    pub backends_removed: Vec<String>,
    /// Backends whose weight or MAC changed.
    pub backends_changed: Vec<String>,
    /// Settings that need a restart to take effect (ports, lcores, admin socket path...).
    pub restart_needed: Vec<String>,
    /// Other settings the daemon applied live (the metrics address, admin limits).
    pub applied: Vec<String>,
    /// What the BGP speaker changed live (peers added, removed, reset, re-announced).
    pub bgp: Vec<String>,
    /// `[bgp]` differs from the running config (the daemon applies it to the speaker).
    #[serde(skip)]
    pub bgp_changed: bool,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// No such VIP.
    #[error("no VIP {0}; see `vipctl vip list`")]
    NoVip(String),
    /// No such backend.
    #[error("VIP {0} has no backend {1}; see `vipctl vip show`")]
    NoBackend(String, IpAddr),
    /// Already there.
    #[error("{0} already exists")]
    Exists(String),
    /// The change would make tables the dataplane refuses.
    #[error("{0}")]
    Invalid(String),
    /// Out of ids.
    #[error("too many backends: at most {0}")]
    TooMany(usize),
}

/// The runtime model; see the module docs.
#[derive(Clone, Debug)]
pub struct Model {
    config: ValidConfig,
    vips: Vec<VipRt>,
    ports: Vec<Port>,
    free_vip_ids: Vec<u16>,
    next_vip_id: u16,
    free_backend_ids: Vec<u16>,
    next_backend_id: u16,
    generations: HashMap<u16, u16>,
    panic_threshold: u8,
}

/// The port used when the config has none (dry-run).
pub fn default_port() -> Port {
    Port {
        mac: wire::EthernetAddress([0x02, 0, 0, 0, 0, 1]),
        gateway_mac: wire::EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]),
        mtu: 1500,
        vlan: None,
    }
}

fn ports_of(config: &ValidConfig) -> Vec<Port> {
    if config.ports.is_empty() {
        return vec![default_port()];
    }
    config
        .ports
        .iter()
        .map(|p| Port {
            mac: wire::EthernetAddress(p.mac.0),
            // A resolved gateway starts unknown (all zeros: the pipeline drops with
            // `no_next_hop`) until the neighbour service publishes its MAC.
            gateway_mac: wire::EthernetAddress(p.gateway_mac().map_or([0; 6], |m| m.0)),
            mtu: p.mtu,
            vlan: p.vlan,
        })
        .collect()
}

impl Model {
    /// A model of `config` at time `now_ms`; backends under a health check start in probation.
    pub fn new(config: ValidConfig, now_ms: u64) -> Result<Model, ModelError> {
        let mut model = Model {
            ports: ports_of(&config),
            panic_threshold: config.panic_threshold,
            config: config.clone(),
            vips: Vec::new(),
            free_vip_ids: Vec::new(),
            next_vip_id: 0,
            free_backend_ids: Vec::new(),
            next_backend_id: 0,
            generations: HashMap::new(),
        };
        for vip in config.vips() {
            let rt = model.new_vip(vip.clone(), now_ms)?;
            model.vips.push(rt);
        }
        model
            .tables()
            .map_err(|e| ModelError::Invalid(e.to_string()))?;
        Ok(model)
    }

    /// The running configuration (with admin changes applied).
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// The VIPs.
    pub fn vips(&self) -> &[VipRt] {
        &self.vips
    }

    fn alloc_vip_id(&mut self) -> Result<u16, ModelError> {
        if let Some(id) = self.free_vip_ids.pop() {
            return Ok(id);
        }
        if usize::from(self.next_vip_id) >= tables::MAX_VIPS {
            return Err(ModelError::TooMany(tables::MAX_VIPS));
        }
        self.next_vip_id += 1;
        Ok(self.next_vip_id - 1)
    }

    fn alloc_backend_id(&mut self) -> Result<(u16, u16), ModelError> {
        let id = match self.free_backend_ids.pop() {
            Some(id) => id,
            None => {
                if usize::from(self.next_backend_id) >= tables::MAX_BACKENDS {
                    return Err(ModelError::TooMany(tables::MAX_BACKENDS));
                }
                self.next_backend_id += 1;
                self.next_backend_id - 1
            }
        };
        let generation = self.generations.entry(id).or_insert(0);
        *generation = generation.wrapping_add(1);
        Ok((id, *generation))
    }

    fn new_backend(
        &mut self,
        spec: Backend,
        checked: bool,
        now_ms: u64,
    ) -> Result<BackendRt, ModelError> {
        let (id, generation) = self.alloc_backend_id()?;
        Ok(BackendRt {
            id,
            generation,
            spec,
            health: if checked {
                BackendHealth::probation(now_ms)
            } else {
                BackendHealth::unchecked(now_ms)
            },
            drained: false,
        })
    }

    fn new_vip(&mut self, mut spec: Vip, now_ms: u64) -> Result<VipRt, ModelError> {
        let id = self.alloc_vip_id()?;
        let checked = spec.health.is_some();
        let mut backends = Vec::with_capacity(spec.backends.len());
        for b in std::mem::take(&mut spec.backends) {
            backends.push(self.new_backend(b, checked, now_ms)?);
        }
        Ok(VipRt { id, spec, backends })
    }

    fn release_vip(&mut self, vip: VipRt) {
        self.free_vip_ids.push(vip.id);
        for b in vip.backends {
            self.free_backend_ids.push(b.id);
        }
    }

    /// Per-VIP status with the panic threshold applied.
    pub fn status(&self, vip: &VipRt) -> VipStatus {
        let total = vip.backends.len();
        let eligible: Vec<&BackendRt> = vip.backends.iter().filter(|b| !b.drained).collect();
        let healthy = eligible
            .iter()
            .filter(|b| b.health.state() == HealthState::Healthy)
            .count();
        let failed = eligible
            .iter()
            .filter(|b| b.health.state() == HealthState::Unhealthy)
            .count();
        let threshold = usize::from(self.panic_threshold);
        let panic =
            threshold > 0 && !eligible.is_empty() && failed * 100 > threshold * eligible.len();
        VipStatus {
            up: healthy > 0,
            panic,
            healthy,
            total,
        }
    }

    /// The dataplane state of one backend of `vip` given the VIP's panic status.
    pub fn backend_state(b: &BackendRt, panic: bool) -> BackendState {
        if b.drained {
            return BackendState::Draining;
        }
        match b.health.state() {
            HealthState::Healthy => BackendState::Active,
            // Probation: not proven yet; no new flows, nothing to re-hash.
            HealthState::Probation => BackendState::Draining,
            HealthState::Unhealthy if panic => BackendState::Active,
            HealthState::Unhealthy => BackendState::Down,
        }
    }

    /// The dataplane entries of every VIP.
    pub fn entries(&self) -> Vec<VipEntry> {
        self.vips
            .iter()
            .map(|vip| {
                let panic = self.status(vip).panic;
                let s = &vip.spec;
                VipEntry {
                    id: vip.id,
                    address: s.address,
                    port: s.port.map_or(0, NonZeroU16::get),
                    protocol: match s.protocol {
                        Protocol::Tcp => wire::ip_protocol::TCP,
                        Protocol::Udp => wire::ip_protocol::UDP,
                    },
                    mode: match s.forwarding {
                        Forwarding::Ipip => ForwardingMode::Ipip,
                        Forwarding::Gue => ForwardingMode::Gue {
                            port: tables::DEFAULT_GUE_PORT,
                        },
                        Forwarding::L2Dsr => ForwardingMode::L2Dsr,
                    },
                    hash: match s.hash {
                        HashMode::FiveTuple => tables::HashPolicy::FiveTuple,
                        HashMode::ThreeTuple => tables::HashPolicy::ThreeTuple,
                        HashMode::DstPort => tables::HashPolicy::DstPort,
                    },
                    table_size: s.table_size.slots(),
                    encap_source_v4: s.encap_source_v4,
                    encap_source_v6: s.encap_source_v6,
                    egress_port: 0,
                    backends: vip
                        .backends
                        .iter()
                        .map(|b| BackendEntry {
                            id: b.id,
                            generation: b.generation,
                            address: b.spec.address,
                            weight: u32::from(b.spec.weight.get()),
                            state: Model::backend_state(b, panic),
                            mac: b.spec.mac.map(|m| wire::EthernetAddress(m.0)),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Builds the dataplane tables (every VIP's Maglev table).
    pub fn tables(&self) -> Result<Tables, TablesError> {
        Tables::build(self.ports.clone(), &self.entries())
    }

    /// As [`Model::tables`], reusing the Maglev table of every VIP whose backend set did not
    /// change since `previous`: a health change rebuilds only its own VIP's table.
    ///
    /// Ports are taken from `previous` when it has them all: a next-hop resolver may have
    /// published a learned gateway MAC there (`Tables::with_gateway_mac`), which a health change
    /// must not undo. (Port settings only change with a restart.)
    pub fn tables_reusing(&self, previous: &Tables) -> Result<Tables, TablesError> {
        let published: Vec<Port> = (0..self.ports.len())
            .filter_map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| previous.port(i))
                    .copied()
            })
            .collect();
        let ports = if published.len() == self.ports.len() {
            published
        } else {
            self.ports.clone()
        };
        Tables::build_reusing(ports, &self.entries(), Some(previous))
    }

    /// VIP address -> (up, the VIP's raw BGP policy). An address is up when any of its VIPs is.
    pub fn announcements(&self) -> BTreeMap<IpAddr, (bool, Option<toml::Value>)> {
        let mut map: BTreeMap<IpAddr, (bool, Option<toml::Value>)> = BTreeMap::new();
        for vip in &self.vips {
            let up = self.status(vip).up;
            let entry = map
                .entry(vip.spec.address)
                .or_insert((false, vip.spec.bgp.clone()));
            entry.0 |= up;
            if entry.1.is_none() {
                entry.1 = vip.spec.bgp.clone();
            }
        }
        map
    }

    /// Finds a VIP by key.
    pub fn vip(&self, key: &VipKey) -> Option<&VipRt> {
        self.vips.iter().find(|v| v.spec.key() == *key)
    }

    fn vip_mut(&mut self, key: &VipKey) -> Result<&mut VipRt, ModelError> {
        self.vips
            .iter_mut()
            .find(|v| v.spec.key() == *key)
            .ok_or_else(|| ModelError::NoVip(key.to_string()))
    }

    fn backend_mut(&mut self, key: &VipKey, address: IpAddr) -> Result<&mut BackendRt, ModelError> {
        self.vip_mut(key)?
            .backends
            .iter_mut()
            .find(|b| b.spec.address == address)
            .ok_or_else(|| ModelError::NoBackend(key.to_string(), address))
    }

    /// Feeds a probe result; returns the transition, if any. Unknown backends (removed while
    /// the probe ran) or a stale generation are ignored.
    pub fn observe(
        &mut self,
        key: &VipKey,
        address: IpAddr,
        generation: u16,
        result: Result<(), String>,
        now_ms: u64,
    ) -> Option<Transition> {
        let vip = self.vips.iter_mut().find(|v| v.spec.key() == *key)?;
        let (rise, fall) = vip
            .spec
            .health
            .as_ref()
            .map_or((1, 1), |h| (h.rise, h.fall));
        let b = vip
            .backends
            .iter_mut()
            .find(|b| b.spec.address == address && b.generation == generation)?;
        b.health.observe(result, rise, fall, now_ms)
    }

    /// Operator drain / undrain. Returns whether it changed.
    pub fn set_drained(
        &mut self,
        key: &VipKey,
        address: IpAddr,
        drained: bool,
    ) -> Result<bool, ModelError> {
        let b = self.backend_mut(key, address)?;
        Ok(std::mem::replace(&mut b.drained, drained) != drained)
    }

    /// Operator weight change.
    pub fn set_weight(
        &mut self,
        key: &VipKey,
        address: IpAddr,
        weight: NonZeroU16,
    ) -> Result<(), ModelError> {
        self.backend_mut(key, address)?.spec.weight = weight;
        self.sync_config();
        Ok(())
    }

    /// Adds a backend to a VIP.
    pub fn add_backend(
        &mut self,
        key: &VipKey,
        spec: Backend,
        now_ms: u64,
    ) -> Result<(), ModelError> {
        let vip = self.vip_mut(key)?;
        if vip.backends.iter().any(|b| b.spec.address == spec.address) {
            return Err(ModelError::Exists(format!(
                "backend {} of {key}",
                spec.address
            )));
        }
        if vip.spec.forwarding == Forwarding::L2Dsr && spec.mac.is_none() {
            return Err(ModelError::Invalid(format!(
                "{key} uses l2dsr: give the backend's mac"
            )));
        }
        let checked = vip.spec.health.is_some();
        let rt = self.new_backend(spec, checked, now_ms)?;
        self.vip_mut(key)?.backends.push(rt);
        self.check_or_undo(|m| {
            if let Ok(v) = m.vip_mut(key) {
                if let Some(b) = v.backends.pop() {
                    m.free_backend_ids.push(b.id);
                }
            }
        })
    }

    /// Removes a backend from a VIP.
    pub fn del_backend(&mut self, key: &VipKey, address: IpAddr) -> Result<(), ModelError> {
        let vip = self.vip_mut(key)?;
        let index = vip
            .backends
            .iter()
            .position(|b| b.spec.address == address)
            .ok_or_else(|| ModelError::NoBackend(key.to_string(), address))?;
        let b = vip.backends.remove(index);
        self.free_backend_ids.push(b.id);
        self.sync_config();
        Ok(())
    }

    /// Adds a VIP.
    pub fn add_vip(&mut self, spec: Vip, now_ms: u64) -> Result<(), ModelError> {
        if self.vip(&spec.key()).is_some() {
            return Err(ModelError::Exists(spec.key().to_string()));
        }
        let rt = self.new_vip(spec, now_ms)?;
        self.vips.push(rt);
        self.check_or_undo(|m| {
            if let Some(v) = m.vips.pop() {
                m.release_vip(v);
            }
        })
    }

    /// Removes a VIP.
    pub fn del_vip(&mut self, key: &VipKey) -> Result<(), ModelError> {
        let index = self
            .vips
            .iter()
            .position(|v| v.spec.key() == *key)
            .ok_or_else(|| ModelError::NoVip(key.to_string()))?;
        let vip = self.vips.remove(index);
        self.release_vip(vip);
        self.sync_config();
        Ok(())
    }

    /// Keeps the change if the tables still build, else undoes it and reports why.
    fn check_or_undo(&mut self, undo: impl FnOnce(&mut Model)) -> Result<(), ModelError> {
        match self.tables() {
            Ok(_) => {
                self.sync_config();
                Ok(())
            }
            Err(e) => {
                undo(self);
                Err(ModelError::Invalid(e.to_string()))
            }
        }
    }

    /// Writes the VIP list (with admin changes) back into the running config (`config show`).
    fn sync_config(&mut self) {
        let vips = self
            .vips
            .iter()
            .map(|v| {
                let mut spec = v.spec.clone();
                spec.backends = v.backends.iter().map(|b| b.spec.clone()).collect();
                spec
            })
            .collect();
        self.config.set_vips(vips);
    }

    /// Applies a new configuration: VIPs and backends that did not change keep their ids,
    /// health and drain state (so their flows are untouched); changed ones are updated in
    /// place; new ones start in probation. Returns what changed.
    pub fn reload(&mut self, new: ValidConfig, now_ms: u64) -> Result<Diff, ModelError> {
        let mut diff = Diff::default();
        if new.ports != self.config.ports {
            diff.restart_needed.push("port".into());
        }
        if new.dataplane != self.config.dataplane {
            diff.restart_needed.push("dataplane".into());
        }
        // The admin limits and `[metrics]` are applied live by the daemon (it binds a new
        // metrics address before the reload commits); the socket path needs a restart.
        if new.admin.socket != self.config.admin.socket {
            diff.restart_needed.push("admin.socket".into());
        }
        diff.bgp_changed = new.bgp() != self.config.bgp();
        let old_vips = std::mem::take(&mut self.vips);
        let mut old: HashMap<VipKey, VipRt> =
            old_vips.into_iter().map(|v| (v.spec.key(), v)).collect();
        let mut vips = Vec::with_capacity(new.vips().len());
        for spec in new.vips() {
            let key = spec.key();
            let Some(mut rt) = old.remove(&key) else {
                diff.vips_added.push(key.to_string());
                vips.push(self.new_vip(spec.clone(), now_ms)?);
                continue;
            };
            let mut settings = spec.clone();
            settings.backends = Vec::new();
            if settings != rt.spec {
                diff.vips_changed.push(key.to_string());
            }
            let checked = spec.health.is_some();
            let check_changed = settings.health != rt.spec.health;
            rt.spec = settings;
            let mut old_backends: HashMap<IpAddr, BackendRt> =
                rt.backends.drain(..).map(|b| (b.spec.address, b)).collect();
            for b in &spec.backends {
                match old_backends.remove(&b.address) {
                    Some(mut brt) => {
                        if brt.spec != *b {
                            diff.backends_changed.push(format!("{key} {}", b.address));
                            brt.spec = b.clone();
                        }
                        if check_changed {
                            brt.health = if checked {
                                BackendHealth::probation(now_ms)
                            } else {
                                BackendHealth::unchecked(now_ms)
                            };
                        }
                        rt.backends.push(brt);
                    }
                    None => {
                        diff.backends_added.push(format!("{key} {}", b.address));
                        rt.backends
                            .push(self.new_backend(b.clone(), checked, now_ms)?);
                    }
                }
            }
            for (address, b) in old_backends {
                diff.backends_removed.push(format!("{key} {address}"));
                self.free_backend_ids.push(b.id);
            }
            vips.push(rt);
        }
        for (key, rt) in old {
            diff.vips_removed.push(key.to_string());
            self.release_vip(rt);
        }
        diff.vips_removed.sort();
        diff.backends_removed.sort();
        self.vips = vips;
        self.panic_threshold = new.panic_threshold;
        // Keep the running dataplane, port and admin socket settings: they need a restart.
        let mut config = new;
        config.dataplane = self.config.dataplane.clone();
        config.admin.socket = self.config.admin.socket.clone();
        config.ports = self.config.ports.clone();
        self.config = config;
        self.sync_config();
        Ok(diff)
    }

    /// JSON view of one VIP for the admin socket.
    pub fn vip_json(&self, vip: &VipRt, now_ms: u64) -> Value {
        let status = self.status(vip);
        json!({
            "vip": vip.spec.key().to_string(),
            "id": vip.id,
            "address": vip.spec.address.to_string(),
            "port": vip.spec.port.map_or(0, NonZeroU16::get),
            "protocol": vip.spec.protocol.as_str(),
            "forwarding": vip.spec.forwarding.as_str(),
            "hash": vip.spec.hash.as_str(),
            "table_size": vip.spec.table_size.slots(),
            "health_check": vip.spec.health.as_ref().map(|h| h.kind.as_str()),
            "up": status.up,
            "panic": status.panic,
            "healthy": status.healthy,
            "total": status.total,
            "backends": vip.backends.iter().map(|b| self.backend_json(b, status.panic, now_ms)).collect::<Vec<_>>(),
        })
    }

    /// JSON view of one backend.
    pub fn backend_json(&self, b: &BackendRt, panic: bool, now_ms: u64) -> Value {
        let (successes, failures) = b.health.streak();
        json!({
            "address": b.spec.address.to_string(),
            "id": b.id,
            "generation": b.generation,
            "weight": b.spec.weight.get(),
            "mac": b.spec.mac.map(|m| m.to_string()),
            "health": b.health.state().as_str(),
            "drained": b.drained,
            "dataplane": match Model::backend_state(b, panic) {
                BackendState::Active => "active",
                BackendState::Draining => "draining",
                BackendState::Down => "down",
            },
            "since_ms": now_ms.saturating_sub(b.health.since_ms()),
            "successes": successes,
            "failures": failures,
            "probes": b.health.probes(),
            "last_error": b.health.last_error(),
        })
    }
}

/// Parses `tcp 192.0.2.10:80`, `192.0.2.10:80/tcp`-free forms used by the admin socket:
/// `{address, port, protocol}` fields.
pub fn vip_key(address: &str, port: u16, protocol: &str) -> Result<VipKey, String> {
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("address must be an IPv4 or IPv6 address, got {address:?}"))?;
    let protocol: Protocol = protocol.parse().map_err(|e| format!("protocol {e}"))?;
    Ok(VipKey {
        address,
        port: NonZeroU16::new(port),
        protocol,
    })
}

/// A VIP spec from admin-socket fields, validated like a config file entry.
pub fn vip_from_toml(text: &str) -> Result<Vip, String> {
    let config = config::parse(text, "vip.add").map_err(|e| e.to_string())?;
    config
        .vips()
        .first()
        .cloned()
        .ok_or_else(|| "no [[vip]] given".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[[vip]]\naddress = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nencap_source_v4 = \"10.0.0.1\"\n[vip.health]\ntype = \"tcp\"\nrise = 1\nfall = 1\n\
        [[vip.backend]]\naddress = \"10.0.1.1\"\n[[vip.backend]]\naddress = \"10.0.1.2\"\n[[vip.backend]]\naddress = \"10.0.1.3\"\n[[vip.backend]]\naddress = \"10.0.1.4\"\n";

    fn model() -> (Model, VipKey) {
        let config = config::parse(TEXT, "x").unwrap();
        let key = config.vips()[0].key();
        (Model::new(config, 0).unwrap(), key)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(m: &mut Model, key: &VipKey, addr: &str, ok: bool) {
        let generation = m
            .vip(key)
            .unwrap()
            .backends
            .iter()
            .find(|b| b.spec.address == ip(addr))
            .unwrap()
            .generation;
        let result = if ok { Ok(()) } else { Err("down".into()) };
        m.observe(key, ip(addr), generation, result, 1);
    }

    #[test]
    fn probation_vip_is_down_until_a_backend_rises() {
        let (mut m, key) = model();
        let vip = m.vip(&key).unwrap();
        assert!(!m.status(vip).up);
        assert!(m.entries()[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Draining));
        set(&mut m, &key, "10.0.1.1", true);
        let vip = m.vip(&key).unwrap();
        assert!(m.status(vip).up);
        assert!(m.announcements()[&ip("192.0.2.10")].0);
    }

    #[test]
    fn panic_threshold_keeps_failed_backends_when_most_fail() {
        let (mut m, key) = model();
        for a in ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"] {
            set(&mut m, &key, a, true);
        }
        set(&mut m, &key, "10.0.1.1", false);
        set(&mut m, &key, "10.0.1.2", false);
        // 2 of 4 = 50%: not more than the threshold, so they are ejected.
        let s = m.status(m.vip(&key).unwrap());
        assert!(!s.panic);
        let states: Vec<_> = m.entries()[0].backends.iter().map(|b| b.state).collect();
        assert_eq!(states[..2], [BackendState::Down, BackendState::Down]);
        set(&mut m, &key, "10.0.1.3", false);
        // 3 of 4 = 75% > 50%: panic, all kept.
        let s = m.status(m.vip(&key).unwrap());
        assert!(s.panic && s.up);
        assert!(m.entries()[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active));
        set(&mut m, &key, "10.0.1.4", false);
        let s = m.status(m.vip(&key).unwrap());
        assert!(s.panic && !s.up, "no healthy backend: down even in panic");
        // Tables still build with everything in panic.
        m.tables().unwrap();
    }

    #[test]
    fn drain_and_weight_and_admin_changes() {
        let (mut m, key) = model();
        set(&mut m, &key, "10.0.1.1", true);
        assert!(m.set_drained(&key, ip("10.0.1.1"), true).unwrap());
        assert!(!m.status(m.vip(&key).unwrap()).up);
        assert_eq!(m.entries()[0].backends[0].state, BackendState::Draining);
        assert!(matches!(
            m.set_drained(&key, ip("10.9.9.9"), true),
            Err(ModelError::NoBackend(..))
        ));
        m.set_weight(&key, ip("10.0.1.2"), NonZeroU16::new(7).unwrap())
            .unwrap();
        assert_eq!(m.entries()[0].backends[1].weight, 7);
        assert_eq!(m.config().vips()[0].backends[1].weight.get(), 7);
        m.add_backend(&key, Backend::new(ip("10.0.1.9"), NonZeroU16::MIN, None), 0)
            .unwrap();
        assert!(matches!(
            m.add_backend(&key, Backend::new(ip("10.0.1.9"), NonZeroU16::MIN, None), 0),
            Err(ModelError::Exists(_))
        ));
        // An IPv6 backend without encap_source_v6 is refused and nothing changes.
        let e = m.add_backend(&key, Backend::new(ip("fd00::1"), NonZeroU16::MIN, None), 0);
        assert!(matches!(e, Err(ModelError::Invalid(_))), "{e:?}");
        assert_eq!(m.vip(&key).unwrap().backends.len(), 5);
        m.del_backend(&key, ip("10.0.1.9")).unwrap();
        assert_eq!(m.config().backend_count(), 4);
        m.del_vip(&key).unwrap();
        assert!(m.vips().is_empty());
        assert!(matches!(m.del_vip(&key), Err(ModelError::NoVip(_))));
    }

    #[test]
    fn a_published_gateway_mac_survives_a_rebuild() {
        let (mut m, key) = model();
        let mut learned = default_port();
        learned.gateway_mac = wire::EthernetAddress([2, 0xaa, 0, 0, 0, 1]);
        let previous = Tables::build(vec![learned], &m.entries()).unwrap();
        set(&mut m, &key, "10.0.1.1", true);
        let next = m.tables_reusing(&previous).unwrap();
        assert_eq!(next.port(0).unwrap().gateway_mac, learned.gateway_mac);
        // Without a usable previous version, the configured ports are used.
        let next = m.tables_reusing(&Tables::default()).unwrap();
        assert_eq!(
            next.port(0).unwrap().gateway_mac,
            default_port().gateway_mac
        );
    }

    #[test]
    fn a_resolved_gateway_starts_unknown_and_port_changes_need_a_restart() {
        let port = "[[port]]\nmac = \"02:00:00:00:00:01\"\ngateway = \"192.0.2.254\"\n\
                    [port.kernel]\ntap = \"vipd0\"\naddresses = [\"192.0.2.1/24\"]\n";
        let config = config::parse(&format!("{port}{TEXT}"), "x").unwrap();
        let mut m = Model::new(config, 0).unwrap();
        // All zeros: the pipeline drops (no_next_hop) until the neighbour service publishes.
        assert_eq!(m.tables().unwrap().port(0).unwrap().gateway_mac.0, [0; 6]);
        for changed in [
            port.replace("vipd0", "vipd1"),
            port.replace("192.0.2.1/24", "192.0.2.2/24"),
            port.replace("gateway = \"192.0.2.254\"", "gateway = \"192.0.2.253\""),
        ] {
            let new = config::parse(&format!("{changed}{TEXT}"), "x").unwrap();
            let diff = m.clone().reload(new, 0).unwrap();
            assert_eq!(diff.restart_needed, ["port"], "{changed}");
        }
        let same = config::parse(&format!("{port}{TEXT}"), "x").unwrap();
        assert!(m.reload(same, 0).unwrap().restart_needed.is_empty());
    }

    #[test]
    fn reload_keeps_ids_and_state_of_what_did_not_change() {
        let (mut m, key) = model();
        set(&mut m, &key, "10.0.1.1", true);
        m.set_drained(&key, ip("10.0.1.2"), true).unwrap();
        let before: Vec<(u16, u16)> = m
            .vip(&key)
            .unwrap()
            .backends
            .iter()
            .map(|b| (b.id, b.generation))
            .collect();
        let new_text = TEXT.replace("address = \"10.0.1.4\"", "address = \"10.0.1.5\"")
            + "[[vip]]\naddress = \"192.0.2.11\"\nprotocol = \"udp\"\n";
        let diff = m.reload(config::parse(&new_text, "x").unwrap(), 5).unwrap();
        assert_eq!(diff.vips_added, vec!["udp 192.0.2.11:*"]);
        assert_eq!(diff.backends_added, vec!["tcp 192.0.2.10:80 10.0.1.5"]);
        assert_eq!(diff.backends_removed, vec!["tcp 192.0.2.10:80 10.0.1.4"]);
        assert!(diff.vips_changed.is_empty() && diff.restart_needed.is_empty());
        let vip = m.vip(&key).unwrap();
        let after: Vec<(u16, u16)> = vip.backends.iter().map(|b| (b.id, b.generation)).collect();
        assert_eq!(after[..3], before[..3]);
        assert_eq!(vip.backends[0].health.state(), HealthState::Healthy);
        assert!(vip.backends[1].drained);
        // The new backend never carries the removed one's identity.
        assert_ne!(after[3], before[3]);
        // A freed id comes back with a new generation.
        m.del_backend(&key, ip("10.0.1.5")).unwrap();
        m.add_backend(&key, Backend::new(ip("10.0.1.6"), NonZeroU16::MIN, None), 5)
            .unwrap();
        let reused = m.vip(&key).unwrap().backends[3].clone();
        assert_eq!(reused.id, after[3].0);
        assert_ne!(reused.generation, after[3].1);
        let new_text = new_text.replace("10.0.1.5", "10.0.1.6");
        // Same file again: nothing changes.
        let diff = m.reload(config::parse(&new_text, "x").unwrap(), 6).unwrap();
        assert!(diff.is_empty(), "{diff:?}");
        // A changed check restarts probation.
        let diff = m
            .reload(
                config::parse(&new_text.replace("fall = 1", "fall = 2"), "x").unwrap(),
                7,
            )
            .unwrap();
        assert_eq!(diff.vips_changed, vec!["tcp 192.0.2.10:80"]);
        assert_eq!(
            m.vip(&key).unwrap().backends[0].health.state(),
            HealthState::Probation
        );
    }
}
