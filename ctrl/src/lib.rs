//! Control plane of the vipd appliance: configuration, backend health, the runtime model that
//! turns both into dataplane tables, the admin socket, metrics and the daemon that runs them.
//!
//! The binaries `vipd` (daemon) and `vipctl` (operator CLI) are thin shells over this library so
//! everything that can be tested without a process is tested here.

#![deny(unsafe_code)] // allowed only in `affinity`
#![warn(missing_docs)]

/// The admin socket protocol (shared with vip-l7; the `adminsock` crate).
pub use adminsock as admin;
pub mod affinity;
pub mod announce;
pub mod config;
pub mod daemon;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod health;
pub mod metrics;
pub mod model;
