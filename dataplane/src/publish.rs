//! RCU-style publication of [`Tables`] to the polling cores.
//!
//! The control plane builds a whole new [`Tables`] and [`TablesHandle::publish`]es it; each lcore
//! [`TablesHandle::load`]s the current tables once per burst and keeps that guard for the burst.
//! Publication is a single atomic pointer swap: an lcore never waits and never takes a lock, a
//! burst sees one consistent version, and the next burst sees the new one.
//!
//! Reclamation: the tables a publish replaces are kept on a retired list by the control plane
//! until no lcore holds them any more (their `Arc` count is back to 1), and only then dropped, by
//! the control plane ([`TablesHandle::reclaim`], also run by every publish). So an lcore never
//! frees a `Tables` (a large deallocation) on the packet path, and old tables live exactly as
//! long as the slowest lcore's burst that uses them.
//!
//! Why `arc-swap`: it is the widely used, maintained, small crate for an atomically swappable
//! `Arc`, whose `load` is lock-free and in the common case does not even touch the shared
//! reference count (per-thread debt slots), so lcores reading the same tables do not bounce a
//! cache line. Writing that ourselves would need `unsafe` hazard-pointer code, which this crate
//! forbids.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::tables::Tables;

/// What an lcore holds for one burst: the tables current when the burst started.
pub type TablesGuard = arc_swap::Guard<Arc<Tables>>;

struct Shared {
    current: ArcSwap<Tables>,
    /// Replaced tables that an lcore may still be reading. Control-plane side only: lcores never
    /// touch this lock.
    retired: Mutex<Vec<Arc<Tables>>>,
}

/// The published forwarding tables: shared by the control plane (writer) and every lcore
/// (readers). Clone it to give each side a handle.
#[derive(Clone)]
pub struct TablesHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TablesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesHandle")
            .field("retired", &self.retired())
            .finish_non_exhaustive()
    }
}

impl TablesHandle {
    /// Publishes `initial` as the first version.
    pub fn new(initial: Tables) -> TablesHandle {
        TablesHandle::from_arc(Arc::new(initial))
    }

    /// Publishes `initial` (already shared) as the first version.
    pub fn from_arc(initial: Arc<Tables>) -> TablesHandle {
        TablesHandle {
            shared: Arc::new(Shared {
                current: ArcSwap::new(initial),
                retired: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current tables, for one burst. Lock-free and allocation-free (after the first call on
    /// a thread, which registers the thread's debt slots with `arc-swap`). Hold it no longer than
    /// a burst: a held guard keeps its version alive.
    #[inline]
    pub fn load(&self) -> TablesGuard {
        self.shared.current.load()
    }

    /// The current tables as an owned `Arc` (control plane, admin queries).
    pub fn current(&self) -> Arc<Tables> {
        self.shared.current.load_full()
    }

    /// Makes `tables` the version every lcore's next burst sees (control plane only).
    pub fn publish(&self, tables: Tables) {
        self.publish_arc(Arc::new(tables));
    }

    /// As [`TablesHandle::publish`], for tables already in an `Arc` (keep a `Weak` to watch
    /// them being freed).
    pub fn publish_arc(&self, tables: Arc<Tables>) {
        let old = self.shared.current.swap(tables);
        let mut retired = self.lock_retired();
        retired.push(old);
        reclaim_locked(&mut retired);
    }

    /// Drops the replaced tables no lcore holds any more. Returns how many are still held.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.lock_retired();
        reclaim_locked(&mut retired);
        retired.len()
    }

    /// Replaced tables still held by some lcore (or by an `Arc` the control plane kept).
    pub fn retired(&self) -> usize {
        self.lock_retired().len()
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Tables>>> {
        // The list stays consistent even if a holder panicked: it is only pushed to and filtered.
        self.shared
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `arc-swap` converts every outstanding `load` guard into a counted reference when the pointer
/// is swapped, so a count of 1 (our own) proves no reader is left.
fn reclaim_locked(retired: &mut Vec<Arc<Tables>>) {
    retired.retain(|t| Arc::strong_count(t) > 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;

    #[test]
    fn replaced_tables_are_freed_once_no_guard_holds_them() {
        let first = Arc::new(Tables::default());
        let first_weak: Weak<Tables> = Arc::downgrade(&first);
        let handle = TablesHandle::from_arc(first);
        let guard = handle.load();
        handle.publish(Tables::default());
        assert_eq!(handle.retired(), 1, "a burst still reads the first version");
        assert!(first_weak.upgrade().is_some());
        assert!(Arc::ptr_eq(&guard, &first_weak.upgrade().unwrap()));
        drop(guard);
        assert_eq!(handle.reclaim(), 0);
        assert!(first_weak.upgrade().is_none(), "freed by the control plane");
        let current = handle.current();
        assert!(Arc::ptr_eq(&current, &handle.load()));
    }
}
