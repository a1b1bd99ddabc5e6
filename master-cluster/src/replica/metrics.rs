//! What a replica counts as it works (storage through raft-store's [`raft_store::Observer`],
//! calls, polls, placements) and the leader changes it saw. Recorded here, below every
//! transport; [`crate::observe`] exposes them.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use slapcluster_metrics::{Counter, Family, Gauge, Histogram};

/// How many leader changes a replica remembers for its status page.
pub const ELECTIONS_KEPT: usize = 20;

/// Recorded on the hot paths; everything is an atomic (or a map of them, for labelled ones).
#[derive(Debug, Default)]
pub struct ReplicaMetrics {
    pub log_append: Histogram,
    pub log_appended_entries: Counter,
    pub apply: Histogram,
    pub applied_entries: Counter,
    /// gRPC calls served, by `Service/Method`.
    pub calls: Family<Histogram>,
    /// Calls answered with a gRPC error, by `Service/Method`.
    pub call_errors: Family<Counter>,
    /// SLAP calls served, by call name.
    pub slap_calls: Family<Histogram>,
    /// SLAP calls answered with a status of 400 or more, by call name.
    pub slap_call_errors: Family<Counter>,
    /// Instance requests answered here that changed something, by where the instance stands.
    pub instance_requests: Family<Counter>,
    /// Pending requests placed later, when capacity appeared (supply, registration, opening).
    pub placed_later: Counter,
    pub node_polls: Counter,
    pub long_polls_open: std::sync::Arc<Gauge>,
    pub leader_changes: Counter,
    /// The Raft log's bytes and the current snapshot's, as the snapshot schedule last weighed
    /// them (set after it decided), and the snapshots it triggered.
    pub raft_log_bytes: Gauge,
    pub snapshot_bytes: Gauge,
    pub snapshots_scheduled: Counter,
}

impl raft_store::Observer for ReplicaMetrics {
    fn log_appended(&self, entries: usize, took: Duration) {
        self.log_append.observe(took);
        self.log_appended_entries
            .add(u64::try_from(entries).unwrap_or(u64::MAX));
    }

    fn applied(&self, entries: usize, took: Duration) {
        self.apply.observe(took);
        self.applied_entries
            .add(u64::try_from(entries).unwrap_or(u64::MAX));
    }
}

/// A leader change this replica saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub at: SystemTime,
    pub term: u64,
    /// `None` while no leader is known (an election under way).
    pub leader: Option<u64>,
}

/// The last [`ELECTIONS_KEPT`] leader changes, oldest first.
#[derive(Debug, Default)]
pub struct Elections(std::sync::Mutex<VecDeque<Election>>);

impl Elections {
    /// Records `(term, leader)` if it differs from the last one recorded.
    pub fn observe(&self, term: u64, leader: Option<u64>) -> bool {
        let mut kept = crate::lock(&self.0);
        if kept
            .back()
            .is_some_and(|last| last.term == term && last.leader == leader)
        {
            return false;
        }
        if kept.len() == ELECTIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back(Election {
            at: SystemTime::now(),
            term,
            leader,
        });
        true
    }

    pub fn recent(&self) -> Vec<Election> {
        crate::lock(&self.0).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_keep_the_last_changes_only() {
        let elections = Elections::default();
        assert!(elections.observe(1, Some(1)));
        assert!(
            !elections.observe(1, Some(1)),
            "no change, nothing recorded"
        );
        for term in 2..40 {
            elections.observe(term, None);
            elections.observe(term, Some(term % 3));
        }
        let recent = elections.recent();
        assert_eq!(recent.len(), ELECTIONS_KEPT);
        assert_eq!(
            recent.last().map(|e| (e.term, e.leader)),
            Some((39, Some(0)))
        );
    }
}
