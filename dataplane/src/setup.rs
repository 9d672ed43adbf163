//! A small TOML description of ports and VIPs that builds [`Tables`] directly, for tools and tests
//! that run the pipeline without the daemon (`vipd-pcap`, the golden-pcap oracle, benchmarks).
//!
//! Field names follow `vipd.toml`'s `[[vip]]` section so a fixture reads like a config; ids are
//! assigned in file order (VIP i has id i; backends are numbered across all VIPs).
//!
//! ```toml
//! [[port]]
//! mac = "02:00:00:00:00:01"
//! gateway_mac = "02:00:00:00:00:fe"
//! mtu = 1500
//!
//! [[vip]]
//! address = "203.0.113.10"
//! port = 80                 # absent or 0: all ports
//! protocol = "tcp"          # tcp | udp
//! forwarding = "gue"        # ipip | gue | l2dsr
//! gue_port = 6080
//! hash = "5-tuple"          # 5-tuple | 3-tuple | dst-port
//! encap_source_v4 = "192.0.2.1"
//! [[vip.backend]]
//! address = "198.51.100.1"
//! state = "active"          # active | draining | down
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use wire::{ip_protocol, EthernetAddress};

use crate::tables::{
    BackendEntry, BackendState, ForwardingMode, HashPolicy, Port, Tables, TablesError, VipEntry,
    DEFAULT_GUE_PORT,
};

/// Why a setup file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// TOML syntax or an unknown / mistyped field.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value that parsed but is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// The entries do not form valid tables.
    #[error(transparent)]
    Tables(#[from] TablesError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupFile {
    #[serde(default)]
    port: Vec<PortSection>,
    #[serde(default)]
    vip: Vec<VipSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSection {
    mac: String,
    gateway_mac: String,
    #[serde(default = "default_mtu")]
    mtu: u16,
    vlan: Option<u16>,
}

fn default_mtu() -> u16 {
    1500
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VipSection {
    address: IpAddr,
    #[serde(default)]
    port: u16,
    protocol: String,
    #[serde(default = "default_forwarding")]
    forwarding: String,
    gue_port: Option<u16>,
    #[serde(default = "default_hash")]
    hash: String,
    #[serde(default = "default_table_size")]
    table_size: u32,
    encap_source_v4: Option<Ipv4Addr>,
    encap_source_v6: Option<Ipv6Addr>,
    #[serde(default)]
    egress_port: u16,
    #[serde(default)]
    backend: Vec<BackendSection>,
}

fn default_forwarding() -> String {
    "ipip".into()
}
fn default_hash() -> String {
    "5-tuple".into()
}
fn default_table_size() -> u32 {
    maglev::DEFAULT_TABLE_SIZE
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSection {
    address: IpAddr,
    #[serde(default = "default_weight")]
    weight: u32,
    mac: Option<String>,
    #[serde(default = "default_state")]
    state: String,
}

fn default_weight() -> u32 {
    1
}
fn default_state() -> String {
    "active".into()
}

fn mac(text: &str, field: &str) -> Result<EthernetAddress, SetupError> {
    text.parse().map_err(|_| {
        SetupError::Invalid(format!(
            "{field}: {text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
        ))
    })
}

/// Parses a setup file's text into tables.
pub fn parse(text: &str) -> Result<Tables, SetupError> {
    let file: SetupFile = toml::from_str(text)?;
    let mut ports = Vec::new();
    for (i, p) in file.port.iter().enumerate() {
        ports.push(Port {
            mac: mac(&p.mac, &format!("port[{i}].mac"))?,
            gateway_mac: mac(&p.gateway_mac, &format!("port[{i}].gateway_mac"))?,
            mtu: p.mtu,
            vlan: p.vlan,
        });
    }
    let mut entries = Vec::new();
    let mut next_backend = 0u16;
    for (i, v) in file.vip.iter().enumerate() {
        let field = |name: &str| format!("vip[{i}].{name}");
        let protocol = match v.protocol.as_str() {
            "tcp" => ip_protocol::TCP,
            "udp" => ip_protocol::UDP,
            other => {
                return Err(SetupError::Invalid(format!(
                    "{}: {other:?}: use tcp or udp",
                    field("protocol")
                )))
            }
        };
        let mode = match v.forwarding.as_str() {
            "ipip" => ForwardingMode::Ipip,
            "gue" => ForwardingMode::Gue {
                port: v.gue_port.unwrap_or(DEFAULT_GUE_PORT),
            },
            "l2dsr" => ForwardingMode::L2Dsr,
            other => {
                return Err(SetupError::Invalid(format!(
                    "{}: {other:?}: use ipip, gue or l2dsr",
                    field("forwarding")
                )))
            }
        };
        let hash = match v.hash.as_str() {
            "5-tuple" => HashPolicy::FiveTuple,
            "3-tuple" => HashPolicy::ThreeTuple,
            "dst-port" => HashPolicy::DstPort,
            other => {
                return Err(SetupError::Invalid(format!(
                    "{}: {other:?}: use 5-tuple, 3-tuple or dst-port",
                    field("hash")
                )))
            }
        };
        let mut backends = Vec::new();
        for (j, b) in v.backend.iter().enumerate() {
            let state = match b.state.as_str() {
                "active" => BackendState::Active,
                "draining" => BackendState::Draining,
                "down" => BackendState::Down,
                other => {
                    return Err(SetupError::Invalid(format!(
                        "{}: {other:?}: use active, draining or down",
                        field(&format!("backend[{j}].state"))
                    )))
                }
            };
            let mac = b
                .mac
                .as_deref()
                .map(|m| mac(m, &field(&format!("backend[{j}].mac"))))
                .transpose()?;
            backends.push(BackendEntry {
                id: next_backend,
                generation: 0,
                address: b.address,
                weight: b.weight,
                state,
                mac,
            });
            next_backend = next_backend
                .checked_add(1)
                .ok_or_else(|| SetupError::Invalid("too many backends".into()))?;
        }
        let id = u16::try_from(i).map_err(|_| SetupError::Invalid("too many VIPs".into()))?;
        entries.push(VipEntry {
            id,
            address: v.address,
            port: v.port,
            protocol,
            mode,
            hash,
            table_size: v.table_size,
            encap_source_v4: v.encap_source_v4,
            encap_source_v6: v.encap_source_v6,
            egress_port: v.egress_port,
            backends,
        });
    }
    Ok(Tables::build(ports, &entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let t = parse(
            r#"
            [[port]]
            mac = "02:00:00:00:00:01"
            gateway_mac = "02:00:00:00:00:fe"
            [[vip]]
            address = "203.0.113.10"
            port = 80
            protocol = "tcp"
            forwarding = "gue"
            encap_source_v4 = "192.0.2.1"
            [[vip.backend]]
            address = "198.51.100.1"
            [[vip.backend]]
            address = "198.51.100.2"
            state = "draining"
            "#,
        )
        .unwrap();
        assert_eq!(t.vips().len(), 1);
        assert_eq!(t.port(0).unwrap().mtu, 1500);
        assert_eq!(
            t.backend(1).unwrap().address(),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("[[vip]]\naddress = \"10.0.0.1\"\nprotocol = \"sctp\"\n").unwrap_err();
        assert_eq!(e.to_string(), "vip[0].protocol: \"sctp\": use tcp or udp");
        let e =
            parse("[[vip]]\naddress = \"10.0.0.1\"\nprotocol = \"tcp\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse("[[port]]\nmac = \"zz\"\ngateway_mac = \"02:00:00:00:00:01\"\n").unwrap_err();
        assert!(e.to_string().starts_with("port[0].mac"), "{e}");
    }
}
