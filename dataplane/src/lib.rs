//! The vipd L4 packet core.
//!
//! This crate owns what happens to one burst of frames on one polling core: classify each frame
//! (not for a VIP -> kernel, malformed -> counted drop), find the flow's backend (per-core
//! connection table first, the VIP's Maglev table on a miss), encapsulate it for the backend
//! (IPIP, IPv6-in-IPv6, GUE or L2 DSR) in place, and hand back a verdict. It is sans-IO: frames
//! come in as [`PacketBuf`]s, time comes in as an argument, and nothing here reads a clock,
//! allocates, locks or makes a syscall per packet.
//!
//! Packet parsing lives in the `wire` crate, the Maglev table in `maglev`, the flow table in
//! `conntrack`; this crate glues them into [`Pipeline::process`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
#[cfg(feature = "dpdk")]
pub mod dpdk_io;
pub mod encap;
pub mod engine;
pub mod flow;
pub mod fuzzing;
pub mod io;
pub mod nexthop;
pub mod packet;
pub mod pipeline;
pub mod publish;
pub mod query;
pub mod rss;
pub mod setup;
pub mod tables;
pub mod testing;

pub use counters::{CounterSnapshot, DropReason, LcoreCounters};
pub use engine::{
    Engine, EngineConfig, EngineError, EngineReport, IdlePolicy, Lcore, LcoreStats,
    LcoreStatsSnapshot,
};
pub use io::{Burst, MemoryConfig, MemoryIo, MemoryPorts, PacketIo, MAX_BURST};
pub use packet::{HeapPacket, PacketBuf};
pub use pipeline::{Pipeline, PipelineConfig, Verdict};
pub use publish::{TablesGuard, TablesHandle};
pub use tables::{
    BackendEntry, BackendId, BackendState, ForwardingMode, HashPolicy, Port, Tables, TablesError,
    VipEntry, VipId,
};
