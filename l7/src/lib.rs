//! vip-l7, the L7 proxy that sits behind the L4 tier as one of its backend pools.
//!
//! - [`config`]: the TOML file, validated with file/line/field errors;
//! - [`route`]: host/path/header routing, a pure function;
//! - [`balance`]: upstream state and the balancing policies (RR, WRR, least-request, P2C,
//!   Maglev consistent hash, peak-EWMA), slow start and outlier ejection;
//! - [`upstream`]: running clusters: pooled client, connector with circuit breaker, retry budget,
//!   rate limits, active health checks;
//! - [`proxy`]: the request path (headers, retries, WebSocket upgrades, trailers);
//! - [`h1codec`]: HTTP/1.1 both ways, sans I/O; [`h1client`]: its I/O shell towards upstreams,
//!   the client for requests whose body is in memory; [`h1server`]: its I/O shell towards
//!   clients, for plain requests (the rest go to hyper's server);
//! - [`tls`]: SNI certificates (reloadable) and upstream TLS;
//! - [`server`]: listeners, signals, graceful drain; [`stall`]: the bound on writes to a client
//!   that stops reading; [`admin`]: the admin socket;
//!   [`metrics`]: Prometheus; [`accesslog`]: one line per request, off the event loop;
//! - [`alloc`]: the global allocator (mimalloc).

// Unsafe code is allowed only in `alloc` (the allocator's FFI), `h1codec::header_value` and
// `proxy::pin_in_place`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod accesslog;
pub mod admin;
pub mod alloc;
pub mod balance;
pub mod coalesce;
pub mod config;
pub mod h1client;
pub mod h1codec;
pub mod h1server;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod server;
pub mod stall;
pub mod tickets;
pub mod tls;
pub mod upstream;
