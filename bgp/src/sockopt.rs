//! Socket options the driver sets before connect/listen: TCP-MD5 signatures (RFC 2385) and the
//! Generalized TTL Security Mechanism (GTSM, RFC 5082).
//!
//! Linux-only; this module holds the crate's only `unsafe` (the raw `setsockopt` calls, for
//! options neither std nor socket2 wrap).

#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use socket2::Socket;

/// `TCP_MD5SIG_MAXKEYLEN` in linux/tcp.h.
const MD5_MAX_KEY_LEN: usize = 80;
/// TTL / hop limit GTSM sends with.
pub const GTSM_TTL: u32 = 255;
/// Lowest TTL / hop limit GTSM accepts: one hop away.
pub const GTSM_MIN_TTL: u32 = 254;

/// `struct tcp_md5sig` of linux/tcp.h: the peer address as a `sockaddr_storage` (128 octets,
/// 8-aligned), flags, prefix length, key length, interface index and the key.
#[repr(C, align(8))]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Writes `addr` as a `sockaddr_in` / `sockaddr_in6` (port 0) in native layout.
fn sockaddr_bytes(addr: IpAddr) -> [u8; 128] {
    let mut out = [0u8; 128];
    match addr {
        IpAddr::V4(a) => {
            let family = (libc::AF_INET as u16).to_ne_bytes();
            out[..2].copy_from_slice(&family);
            out[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            let family = (libc::AF_INET6 as u16).to_ne_bytes();
            out[..2].copy_from_slice(&family);
            out[8..24].copy_from_slice(&a.octets());
        }
    }
    out
}

fn setsockopt<T>(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket option too large"))?;
    // SAFETY: the fd belongs to `socket`, which outlives the call; `value` points to a live,
    // initialised `T` of exactly `len` bytes that the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs a TCP-MD5 key for segments to and from `peer` on `socket` (a connecting socket or a
/// listener; on an IPv6 socket an IPv4 peer is keyed by its v4-mapped address). An empty key
/// removes it.
pub fn set_tcp_md5(socket: &Socket, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP-MD5 key of {} octets: at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let socket_v6 = socket.domain()? == socket2::Domain::IPV6;
    let addr = match peer {
        IpAddr::V4(a) if socket_v6 => IpAddr::V6(a.to_ipv6_mapped()),
        other => other,
    };
    let mut sig = TcpMd5Sig {
        addr: sockaddr_bytes(addr),
        flags: 0,
        prefix_len: 0,
        key_len: 0,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // key.len() <= 80 checked above.
    sig.key_len = key.len() as u16;
    setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM: send with TTL (hop limit) 255 and have the kernel drop segments that arrive with less
/// than 254, i.e. from further than one hop.
pub fn set_gtsm(socket: &Socket) -> io::Result<()> {
    let min: libc::c_int = GTSM_MIN_TTL as libc::c_int;
    if socket.domain()? == socket2::Domain::IPV6 {
        socket.set_unicast_hops_v6(GTSM_TTL)?;
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)?;
        // IPv4 peers on a dual-stack socket arrive as IPv4 packets; cover them too. Fails on
        // a v6-only socket, which then has no IPv4 peers.
        let _ = socket.set_ttl_v4(GTSM_TTL);
        let _ = setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &min);
    } else {
        socket.set_ttl_v4(GTSM_TTL)?;
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &min)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};

    #[test]
    fn struct_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::size_of::<libc::sockaddr_storage>(), 128);
    }

    #[test]
    fn options_apply_to_v4_and_v6_sockets() {
        for (domain, peer) in [
            (Domain::IPV4, "127.0.0.1".parse().unwrap()),
            (Domain::IPV6, "::1".parse().unwrap()),
            (Domain::IPV6, "127.0.0.1".parse().unwrap()),
        ] {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).unwrap();
            set_tcp_md5(&s, peer, b"secret").unwrap();
            set_gtsm(&s).unwrap();
            set_tcp_md5(&s, peer, b"").unwrap();
        }
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        assert!(set_tcp_md5(&s, "127.0.0.1".parse().unwrap(), &[b'x'; 81]).is_err());
        set_gtsm(&s).unwrap();
        assert_eq!(s.ttl_v4().unwrap(), GTSM_TTL);
    }
}
