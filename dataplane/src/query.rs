//! Flow lookups asked of a running lcore.
//!
//! Each lcore owns its flow table and nothing else may touch it, so the control plane cannot
//! read it directly (as it can in the single-threaded dry-run). Instead it posts a 5-tuple in
//! the lcore's [`FlowQuery`] and the lcore answers between two poll rounds. While nothing is
//! asked, the lcore pays one relaxed atomic load per poll round; it never waits for the control
//! plane (the slot's mutex is only taken once a question is posted, when the asker has let go
//! of it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use conntrack::FlowView;

use crate::flow::FlowTuple;

/// A flow an lcore found, with the lcore's clock at the time (the view's times are on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundFlow {
    /// The flow table entry.
    pub view: FlowView,
    /// The lcore's pipeline clock (milliseconds) when it looked.
    pub now_ms: u64,
}

/// One lcore's question-and-answer slot. The asker serialises its questions (one at a time).
#[derive(Debug, Default)]
pub struct FlowQuery {
    asked: AtomicBool,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    question: Option<FlowTuple>,
    answer: Option<Option<FoundFlow>>,
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // The slot is two plain fields, consistent after every critical section.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FlowQuery {
    /// Posts `tuple`, replacing any question or answer still there.
    pub fn post(&self, tuple: FlowTuple) {
        let mut slot = lock(&self.slot);
        slot.question = Some(tuple);
        slot.answer = None;
        drop(slot);
        self.asked.store(true, Ordering::Release);
    }

    /// The answer once the lcore gave it: `Some(None)` = no such flow on this lcore.
    pub fn answer(&self) -> Option<Option<FoundFlow>> {
        if self.asked.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.slot).answer.take()
    }

    /// Withdraws an unanswered question (the asker gave up waiting).
    pub fn cancel(&self) {
        let mut slot = lock(&self.slot);
        slot.question = None;
        slot.answer = None;
        self.asked.store(false, Ordering::Release);
    }

    /// Lcore side, once per poll round: answers a posted question with `lookup`.
    #[inline]
    pub fn serve(&self, lookup: impl FnOnce(&FlowTuple) -> Option<FoundFlow>) {
        if !self.asked.load(Ordering::Relaxed) {
            return;
        }
        self.serve_slow(lookup);
    }

    #[cold]
    fn serve_slow(&self, lookup: impl FnOnce(&FlowTuple) -> Option<FoundFlow>) {
        let mut slot = lock(&self.slot);
        if let Some(question) = slot.question.take() {
            slot.answer = Some(lookup(&question));
        }
        drop(slot);
        self.asked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(port: u16) -> FlowTuple {
        FlowTuple {
            src: "198.51.100.1".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            src_port: port,
            dst_port: 80,
            protocol: 6,
        }
    }

    #[test]
    fn a_question_is_answered_once_by_the_lcore() {
        let q = FlowQuery::default();
        q.serve(|_| panic!("nothing asked"));
        assert_eq!(q.answer(), None);
        q.post(tuple(1000));
        assert_eq!(q.answer(), None, "not answered yet");
        q.serve(|t| {
            assert_eq!(t.src_port, 1000);
            None
        });
        assert_eq!(q.answer(), Some(None));
        assert_eq!(q.answer(), None, "taken");
    }

    #[test]
    fn a_cancelled_question_is_not_answered() {
        let q = FlowQuery::default();
        q.post(tuple(1));
        q.cancel();
        q.serve(|_| panic!("cancelled"));
        assert_eq!(q.answer(), None);
    }
}
