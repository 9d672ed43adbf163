//! vip-l7, the L7 proxy that sits behind the L4 tier as one of its backend pools.
//!
//! So far this crate holds request routing ([`route`]): a pure function from a request's host,
//! path and headers to a cluster name. Listeners (tokio, hyper, rustls), clusters and balancing
//! build on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod route;
