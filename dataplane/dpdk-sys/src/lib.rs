//! Raw FFI to DPDK 22.11: bindgen output over `libdpdk` (found with pkg-config, linked shared so
//! the EAL loads poll-mode drivers from its plugin directory) and a C shim whose `shim_*`
//! functions stand in for DPDK's static-inline functions and macros (`rte_eth_rx_burst`,
//! `rte_pktmbuf_*`, `rte_errno`, `rte_lcore_id`, ...). Only FFI, no logic: the safe wrapper is the
//! `dpdk` crate.
//!
//! When libdpdk or libclang is missing at build time the crate is empty (`cfg(dpdk_missing)`, see
//! `build.rs`) and [`AVAILABLE`] is false.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    missing_docs,
    unknown_lints,
    unnecessary_transmutes,
    clippy::all,
    clippy::pedantic
)]

/// Whether this build has DPDK (false: libdpdk or libclang was missing when it was built).
pub const AVAILABLE: bool = cfg!(not(dpdk_missing));

#[cfg(not(dpdk_missing))]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
