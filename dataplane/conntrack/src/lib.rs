//! Per-lcore connection tracking for vipd's L4 load balancer.
//!
//! One [`FlowTable`] per polling core remembers which backend each client -> VIP flow was sent
//! to, so established connections survive backend-set changes (Katran's LRU flow map, IPVS
//! conntrack). The table has a fixed capacity allocated by [`FlowTable::new`] and never
//! allocates, locks, makes a syscall or reads a clock afterwards: time comes in as `now_ms`.
//! Backends reply directly to clients, so the TCP state is inferred from client packets only.
//! Every flow enters the table as a *new flow* (SynSent for a SYN, Unconfirmed for any other
//! first packet) inside a bounded budget, and is confirmed (established, closing, UDP, other)
//! only by its second packet. So a spoofed random-tuple flood of SYNs, ACKs, UDP datagrams or
//! any other protocol can fill at most `new_flow_percent` of the table and can never evict a
//! live confirmed flow.
//!
//! ```
//! use conntrack::{FlowKey, FlowTable, FlowTableConfig, FlowState, PacketKind};
//! use std::net::Ipv4Addr;
//!
//! let mut table = FlowTable::new(FlowTableConfig::with_capacity(1024))?;
//! let key = FlowKey::v4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1), 40000, 443, 6);
//! let hash = 0x1234_5678; // the pipeline's flow hash of `key`
//! let syn = PacketKind::Tcp { flags: 0x02 };
//! let slot = match table.find(&key, hash, 0) {
//!     Some(slot) => slot,
//!     None => table.insert(&key, hash, 7, syn, 0)?,
//! };
//! assert_eq!(table.view(slot).state, FlowState::SynSent);
//! let slot = table.find(&key, hash, 10).expect("live");
//! table.touch(slot, PacketKind::Tcp { flags: 0x10 }, 10);
//! assert_eq!(table.view(slot).state, FlowState::Established);
//! assert_eq!(table.view(slot).backend, 7);
//!
//! // A non-SYN miss (a flow ECMP moved here, or a flood) waits for its second packet.
//! let moved = FlowKey::v4(Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(198, 51, 100, 1), 1, 443, 6);
//! let ack = PacketKind::Tcp { flags: 0x10 };
//! let slot = table.insert(&moved, 0x9abc, 3, ack, 20)?;
//! assert_eq!(table.view(slot).state, FlowState::Unconfirmed);
//! table.touch(slot, ack, 30);
//! assert_eq!(table.view(slot).state, FlowState::Established);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod key;
mod table;

pub use key::FlowKey;
pub use table::{
    ConfigError, FlowSlot, FlowState, FlowTable, FlowTableConfig, FlowTableStats, FlowView,
    InsertError, PacketKind, Timeouts, MAX_CAPACITY, MIN_CAPACITY,
};
