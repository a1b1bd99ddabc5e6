//! What operators watch a replica by: Prometheus metrics, health and readiness, and a status
//! page, served over plain HTTP on `http_listen` (an operations network: the page names
//! computers and pending requests, and nothing there changes state).
//!
//! - [`ReplicaMetrics`]: counters and histograms recorded on the hot paths (storage through
//!   raft-store's [`raft_store::Observer`], calls through [`layer::CallMetricsLayer`], polls
//!   and placements in the replica and services); [`exposition`] adds what is read at scrape
//!   time (term, leader, indexes, per-follower lag, pending requests).
//! - [`readiness`]: whether a load balancer or a node should send this replica work (plain
//!   decision code).
//! - [`page`]: the status page, rendered from plain data without IO.
//! - [`http`]: the axum server tying them to `/metrics`, `/healthz`, `/readyz` and `/`.

pub mod http;
pub mod layer;
pub mod page;

use openraft::async_runtime::WatchReceiver as _;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use slapcluster_api::metrics::{Counter, Exposition, Family, Gauge, Histogram};

use crate::replica::{ReplicaCore, Role};

/// How many leader changes a replica remembers for its status page.
pub const ELECTIONS_KEPT: usize = 20;

/// A replica that heard from a leader less recently than this is not ready.
pub const READY_CONTACT: Duration = Duration::from_secs(3);

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

/// What readiness is decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessInput {
    /// `None` when this replica is not in the membership.
    pub role: Option<Role>,
    pub is_leader: bool,
    pub leader: Option<u64>,
    /// For a leader: since a quorum last acknowledged it; otherwise since it last heard from
    /// the leader.
    pub contact_age: Option<Duration>,
}

/// Ready to serve nodes and users: a member that knows a leader it heard from within
/// [`READY_CONTACT`] (its reads are then at most that stale, and its writes reach the
/// leader). `Err` says why not.
pub fn readiness(input: &ReadinessInput) -> Result<String, String> {
    if input.role.is_none() {
        return Err("not a member of the cluster (yet)".into());
    }
    let Some(leader) = input.leader else {
        return Err("no leader known (an election is under way)".into());
    };
    match input.contact_age {
        None => Err(format!("never heard from leader {leader}")),
        Some(age) if age > READY_CONTACT => Err(format!(
            "last contact with leader {leader} {} ms ago",
            age.as_millis()
        )),
        Some(age) => Ok(format!(
            "ready: {} with leader {leader}, contact {} ms ago",
            if input.is_leader {
                "leading"
            } else {
                "following"
            },
            age.as_millis()
        )),
    }
}

impl ReplicaCore {
    /// The input of [`readiness`] as of now.
    pub fn readiness_input(&self) -> ReadinessInput {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let role = self
            .members()
            .into_iter()
            .find(|m| m.id == self.id())
            .map(|m| m.role);
        ReadinessInput {
            role,
            is_leader: metrics.current_leader == Some(self.id()),
            leader: metrics.current_leader,
            contact_age: self.leader_contact_age(),
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Every metric of the replica, as one scrape. `pending` is the number of requests waiting
/// for capacity (read from the state by the caller).
pub fn exposition(core: &ReplicaCore, pending: u64) -> String {
    let m = core.metrics();
    let raft = core.raft().metrics().borrow_watched().clone();
    let members = core.members();
    let is_leader = raft.current_leader == Some(core.id());
    let mut out = Exposition::default();
    let index = |id: Option<raft_store::LogId>| id.map_or(0.0, |id| id.index as f64);
    if let Some(tls) = core.tls() {
        let epoch = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let cert = &tls.certificate;
        out.gauge(
            "slapcluster_certificate_not_after_seconds",
            "When this replica's certificate expires (Unix time).",
            epoch(cert.not_after),
        );
        out.gauge(
            "slapcluster_certificate_renewal_due",
            "1 once this replica's certificate is in the last third of its life: issue it a \
             new one (slapmaster cert issue); the replica loads it without a restart.",
            if ca::renewal_due(cert.not_before, cert.not_after, SystemTime::now()) {
                1.0
            } else {
                0.0
            },
        );
    }
    out.gauge(
        "slapcluster_raft_term",
        "The current Raft term.",
        raft.current_term as f64,
    );
    out.gauge(
        "slapcluster_raft_leader",
        "The id of the leader this replica knows (0: none).",
        raft.current_leader.unwrap_or(0) as f64,
    );
    out.gauge(
        "slapcluster_raft_is_leader",
        "1 on the leader, 0 elsewhere.",
        if is_leader { 1.0 } else { 0.0 },
    );
    out.gauge(
        "slapcluster_raft_last_log_index",
        "The last index in this replica's log.",
        raft.last_log_index.unwrap_or(0) as f64,
    );
    out.gauge(
        "slapcluster_raft_applied_index",
        "The last log index applied to this replica's state.",
        index(raft.last_applied),
    );
    out.gauge(
        "slapcluster_raft_snapshot_index",
        "The last log index in this replica's snapshot.",
        index(raft.snapshot),
    );
    if let Some(age) = core.leader_contact_age() {
        out.gauge(
            "slapcluster_raft_leader_contact_age_seconds",
            "On a follower, since it last heard from the leader; on the leader, since a quorum last acknowledged it.",
            seconds(age),
        );
    }
    if is_leader {
        let mut matched: Vec<u64> = members
            .iter()
            .filter(|m| m.role != Role::Learner)
            .map(|m| {
                if m.id == core.id() {
                    raft.last_log_index.unwrap_or(0)
                } else {
                    m.matched.unwrap_or(0)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        // The highest index a majority of voters hold: what the leader can commit.
        let quorum = matched.len() / 2;
        if let Some(&commit) = matched.get(quorum) {
            out.gauge(
                "slapcluster_raft_commit_index",
                "On the leader: the highest log index a majority of voters hold.",
                commit as f64,
            );
        }
        out.gauges(
            "slapcluster_raft_follower_lag_entries",
            "On the leader: log entries each other member is behind its log.",
            "follower",
            members
                .iter()
                .filter(|m| m.id != core.id())
                .map(|m| (m.id.to_string(), m.lag.map_or(f64::NAN, |l| l as f64))),
        );
    }
    out.gauges(
        "slapcluster_members",
        "Members of the cluster by role, as this replica sees the membership.",
        "role",
        [Role::Leader, Role::Voter, Role::Learner].map(|role| {
            let count = members.iter().filter(|m| m.role == role).count();
            (format!("{role:?}").to_lowercase(), count as f64)
        }),
    );
    out.counter(
        "slapcluster_leader_changes_total",
        "Leader changes (or leaderless terms) this replica saw since it started.",
        m.leader_changes.get(),
    );
    out.histogram(
        "slapcluster_log_fsync_seconds",
        "Appending entries to the log durably (one frame written and synced, shared by every append queued meanwhile).",
        &m.log_append,
    );
    out.counter(
        "slapcluster_log_appended_entries_total",
        "Log entries appended durably.",
        m.log_appended_entries.get(),
    );
    out.histogram(
        "slapcluster_apply_seconds",
        "Applying a batch of committed entries to the state (one transaction).",
        &m.apply,
    );
    out.counter(
        "slapcluster_applied_entries_total",
        "Log entries applied.",
        m.applied_entries.get(),
    );
    out.histograms(
        "slapcluster_request_seconds",
        "gRPC calls served by this replica, by call (long-polls included, until they answer).",
        "call",
        &m.calls,
    );
    out.counters(
        "slapcluster_request_errors_total",
        "gRPC calls this replica answered with an error status, by call.",
        "call",
        &m.call_errors,
    );
    out.histograms(
        "slapcluster_slap_request_seconds",
        "SLAP HTTP calls served by this replica, by call.",
        "call",
        &m.slap_calls,
    );
    out.counters(
        "slapcluster_slap_request_errors_total",
        "SLAP HTTP calls this replica answered with a status of 400 or more, by call.",
        "call",
        &m.slap_call_errors,
    );
    out.counters(
        "slapcluster_instance_requests_total",
        "Instance requests answered by this replica that changed something, by where the instance stands (partition, hosted, pending, unplaceable).",
        "placement",
        &m.instance_requests,
    );
    out.counter(
        "slapcluster_placed_later_total",
        "Pending requests placed once capacity appeared, through calls answered by this replica.",
        m.placed_later.get(),
    );
    out.gauge(
        "slapcluster_pending_requests",
        "Instances waiting for a partition or a host, in this replica's applied state.",
        pending as f64,
    );
    out.counter(
        "slapcluster_node_polls_total",
        "Node polls (periodic and long) served by this replica.",
        m.node_polls.get(),
    );
    out.gauge(
        "slapcluster_long_polls_open",
        "Node long-polls waiting on this replica now.",
        m.long_polls_open.get() as f64,
    );
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(role: Option<Role>, leader: Option<u64>, age_ms: Option<u64>) -> ReadinessInput {
        ReadinessInput {
            role,
            is_leader: false,
            leader,
            contact_age: age_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_replica_is_ready_only_as_a_member_in_touch_with_a_leader() {
        assert!(readiness(&input(Some(Role::Voter), Some(1), Some(50))).is_ok());
        assert!(readiness(&input(Some(Role::Learner), Some(1), Some(2999))).is_ok());
        let not = |i| readiness(&i).expect_err("not ready");
        assert!(not(input(None, Some(1), Some(5))).contains("not a member"));
        assert!(not(input(Some(Role::Voter), None, Some(5))).contains("no leader"));
        assert!(not(input(Some(Role::Voter), Some(1), None)).contains("never heard"));
        assert!(not(input(Some(Role::Voter), Some(1), Some(3001))).contains("3001 ms"));
    }

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
