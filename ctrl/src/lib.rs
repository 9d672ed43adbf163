//! Control plane of the vipd appliance: configuration now; health checks, the admin socket,
//! metrics and the BGP speaker's wiring come next.
//!
//! The binaries `vipd` (daemon) and, later, `vipctl` (operator CLI) are thin shells over this
//! library so everything that can be tested without a process is tested here.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
