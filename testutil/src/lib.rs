//! Helpers shared by the workspace's integration tests (a dev-dependency only).

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u16 = 10_000;

/// A TCP port on 127.0.0.1 that is free right now, for a server that another process (or a
/// later call) will bind.
///
/// The port comes from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`),
/// so no outgoing connection can take it as its local port between this call and the bind.
/// Asking the kernel for port 0 gave an ephemeral port, and a concurrent test's client once
/// took it first (EADDRINUSE in CI). Each process starts at an offset from its PID and walks
/// forward, so test binaries running side by side do not hand out the same ports; a port is
/// returned only if it can be bound now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let end = ephemeral_start().max(FIRST + 1_000);
    let span = u32::from(end - FIRST);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = FIRST + n as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    // Everything below the ephemeral range is taken: fall back to the kernel's choice.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// First port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(
                p >= FIRST && p < ephemeral_start().max(FIRST + 1_000),
                "{p}"
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
