//! Receive-side scaling: the symmetric Toeplitz key vipd gives NICs, and the Toeplitz hash itself.
//!
//! A NIC with RSS hashes each frame's addresses (and ports) with the Toeplitz function under a
//! secret key and picks the receive queue, hence the lcore, from the hash. The engine keeps
//! per-lcore flow tables, so both directions of a flow (client -> VIP, and the ICMP errors or
//! backend traffic coming back) must reach the same lcore. With the usual random key the hash of
//! `(a, b, pa, pb)` differs from that of `(b, a, pb, pa)`; with a key whose bits repeat every 16
//! (Woo and Park, "Scalable TCP Session Monitoring with Symmetric Receive-side Scaling", 2012),
//! swapping two 32-bit addresses or two 16-bit ports shifts the same key bits over the input, so
//! the hash is the same both ways. [`SYMMETRIC_RSS_KEY`] is that key (`0x6d5a` repeated), long
//! enough for every NIC (52 bytes; a device that wants 40 takes its first 40, still symmetric).
//!
//! [`toeplitz`] is a plain software Toeplitz hash, used by the tests to prove the key symmetric
//! (and by the Microsoft RSS verification vectors to prove the hash right); the packet path never
//! computes it, the NIC does.

use std::net::IpAddr;

/// The symmetric RSS key: `0x6d5a` repeated, 52 bytes (40 for most NICs, 52 for Intel i40e/ice).
pub static SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut key = [0u8; 52];
    let mut i = 0;
    while i < key.len() {
        key[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    key
};

/// How a port spreads received frames over its queues; the `rss` setting of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RssMode {
    /// RSS with [`SYMMETRIC_RSS_KEY`] when the device supports it; otherwise whatever the device
    /// does by itself (e.g. `net_af_packet` spreads over its queues by the kernel's packet-fanout
    /// flow hash, which is symmetric too). The default.
    #[default]
    Auto,
    /// RSS with [`SYMMETRIC_RSS_KEY`]; a device without RSS is a configuration error.
    Symmetric,
    /// RSS with the device's own (usually random, not symmetric) key; a device without RSS is a
    /// configuration error. Only for experiments: the two directions of a flow may meet on
    /// different lcores.
    DeviceKey,
    /// No RSS: every frame arrives on queue 0 (use with one lcore).
    Off,
}

impl std::str::FromStr for RssMode {
    type Err = String;

    fn from_str(s: &str) -> Result<RssMode, String> {
        match s {
            "auto" => Ok(RssMode::Auto),
            "symmetric" => Ok(RssMode::Symmetric),
            "device-key" => Ok(RssMode::DeviceKey),
            "off" => Ok(RssMode::Off),
            other => Err(format!(
                "rss mode {other:?} is not one of auto, symmetric, device-key, off"
            )),
        }
    }
}

/// The Toeplitz hash of `input` under `key`, as NICs compute it: for every set bit `i` of the
/// input (most significant bit of the first byte first), XOR in the 32 key bits starting at bit
/// `i`. The key must be at least 4 bytes longer than the input; missing key bits count as 0.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |bit: usize| -> u32 {
        key.get(bit / 8)
            .map_or(0, |byte| u32::from(byte >> (7 - bit % 8) & 1))
    };
    // The 32-bit window of the key starting at bit 0, slid one bit per input bit.
    let mut window = (0..32).fold(0u32, |w, bit| w << 1 | key_bit(bit));
    let mut hash = 0u32;
    for (i, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte >> (7 - b) & 1 == 1 {
                hash ^= window;
            }
            window = window << 1 | key_bit(i * 8 + b + 32);
        }
    }
    hash
}

/// The RSS input NICs hash for a TCP/UDP packet: source address, destination address, source
/// port, destination port (network byte order). Mixed families hash the addresses only.
pub fn rss_input(src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> Vec<u8> {
    let mut input = Vec::with_capacity(36);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            input.extend_from_slice(&s.octets());
            input.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            input.extend_from_slice(&s.octets());
            input.extend_from_slice(&d.octets());
        }
        _ => return input,
    }
    if let Some((sp, dp)) = ports {
        input.extend_from_slice(&sp.to_be_bytes());
        input.extend_from_slice(&dp.to_be_bytes());
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Microsoft's documented default RSS key (not symmetric).
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn microsoft_verification_vectors() {
        // "Verifying the RSS hash calculation" (Windows driver docs), IPv4 rows.
        let cases = [
            (
                [66, 9, 149, 187],
                2794,
                [161, 142, 100, 80],
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                [199, 92, 111, 2],
                14230,
                [65, 69, 140, 83],
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                [24, 19, 198, 95],
                12898,
                [12, 22, 207, 184],
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
            (
                [38, 27, 205, 30],
                48228,
                [209, 142, 163, 6],
                2217,
                0x8298_9176,
                0xafc7_327f,
            ),
            (
                [153, 39, 163, 191],
                44251,
                [202, 188, 127, 2],
                1303,
                0x5d18_09c5,
                0x10e8_28a2,
            ),
        ];
        for (src, sp, dst, dp, ip_only, with_ports) in cases {
            let (s, d) = (v4(src), v4(dst));
            assert_eq!(toeplitz(&MS_KEY, &rss_input(s, d, None)), ip_only);
            assert_eq!(
                toeplitz(&MS_KEY, &rss_input(s, d, Some((sp, dp)))),
                with_ports
            );
        }
    }

    #[test]
    fn the_default_key_is_not_symmetric_but_ours_is() {
        let (a, b) = (v4([66, 9, 149, 187]), v4([161, 142, 100, 80]));
        let fwd = rss_input(a, b, Some((2794, 1766)));
        let rev = rss_input(b, a, Some((1766, 2794)));
        assert_ne!(toeplitz(&MS_KEY, &fwd), toeplitz(&MS_KEY, &rev));
        assert_eq!(
            toeplitz(&SYMMETRIC_RSS_KEY, &fwd),
            toeplitz(&SYMMETRIC_RSS_KEY, &rev)
        );
        // ... and it still spreads: two different flows hash differently.
        let other = rss_input(a, b, Some((2795, 1766)));
        assert_ne!(
            toeplitz(&SYMMETRIC_RSS_KEY, &fwd),
            toeplitz(&SYMMETRIC_RSS_KEY, &other)
        );
    }

    #[test]
    fn rss_modes_parse() {
        assert_eq!("auto".parse(), Ok(RssMode::Auto));
        assert_eq!("symmetric".parse(), Ok(RssMode::Symmetric));
        assert_eq!("device-key".parse(), Ok(RssMode::DeviceKey));
        assert_eq!("off".parse(), Ok(RssMode::Off));
        let err = "on".parse::<RssMode>().unwrap_err();
        assert!(err.contains("auto, symmetric"), "{err}");
    }

    proptest! {
        #[test]
        fn symmetric_for_ipv4(a: [u8; 4], b: [u8; 4], pa: u16, pb: u16, key_len in 12usize..=52) {
            let key = &SYMMETRIC_RSS_KEY[..key_len.max(16)];
            let (a, b) = (v4(a), v4(b));
            prop_assert_eq!(
                toeplitz(key, &rss_input(a, b, Some((pa, pb)))),
                toeplitz(key, &rss_input(b, a, Some((pb, pa))))
            );
            prop_assert_eq!(
                toeplitz(key, &rss_input(a, b, None)),
                toeplitz(key, &rss_input(b, a, None))
            );
        }

        #[test]
        fn symmetric_for_ipv6(a: [u8; 16], b: [u8; 16], pa: u16, pb: u16) {
            let (a, b) = (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)));
            let key = &SYMMETRIC_RSS_KEY[..40];
            prop_assert_eq!(
                toeplitz(key, &rss_input(a, b, Some((pa, pb)))),
                toeplitz(key, &rss_input(b, a, Some((pb, pa))))
            );
        }

        /// The hash is linear over XOR (what makes the proof above a proof for every input and
        /// not just the sampled ones: symmetry only depends on the key's 16-bit period).
        #[test]
        fn toeplitz_is_xor_linear(x: [u8; 12], y: [u8; 12]) {
            let xy: Vec<u8> = x.iter().zip(&y).map(|(a, b)| a ^ b).collect();
            let k = &SYMMETRIC_RSS_KEY[..];
            prop_assert_eq!(toeplitz(k, &xy), toeplitz(k, &x) ^ toeplitz(k, &y));
        }
    }
}
