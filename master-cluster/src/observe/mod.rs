//! What operators watch a replica by: Prometheus metrics, health and readiness, and a status
//! page, served over plain HTTP on `http_listen` (an operations network: the page names
//! computers and pending requests, and nothing there changes state).
//!
//! - [`exposition`]: the replica's metrics (recorded on the hot paths; gRPC calls
//!   through `grpc`'s call-metrics layer) and what is read at scrape time (term, leader,
//!   indexes, per-follower lag, pending requests), in Prometheus' text format.
//! - [`readiness`]: whether a load balancer or a node should send this replica work (plain
//!   decision code).
//! - [`page`]: the status page, rendered from plain data without IO.
//! - [`http`]: the axum server tying them to `/metrics`, `/healthz`, `/readyz` and `/`.

pub mod http;
pub mod page;

use openraft::async_runtime::WatchReceiver as _;
use std::time::{Duration, SystemTime};

use slapcluster_metrics::Exposition;

use crate::replica::{ReplicaCore, Role};

/// A replica that heard from a leader less recently than this is not ready.
pub const READY_CONTACT: Duration = Duration::from_secs(3);

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

/// What a scrape reads from the replica's applied state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    /// Instances waiting for a partition or a host.
    pub pending: u64,
    /// Open alerts about instances and about computers.
    pub open_alerts: (u64, u64),
}

impl StateGauges {
    pub fn read(txn: &redb::ReadTransaction) -> Result<Self, crate::state::StateError> {
        Ok(Self {
            pending: crate::state::query::pending_count(txn)?,
            open_alerts: crate::state::query::open_alert_counts(txn)?,
        })
    }
}

/// Every metric of the replica, as one scrape; `state` is read from the applied state by the
/// caller.
pub fn exposition(core: &ReplicaCore, state: StateGauges) -> String {
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
        "slapcluster_peer_round_trip_seconds",
        "This replica's smoothed round trip to each other member, from its pings (NaN: no answer lately).",
        "peer",
        members
            .iter()
            .filter(|m| m.id != core.id())
            .map(|m| (m.id.to_string(), core.round_trip(m.id).map_or(f64::NAN, seconds))),
    );
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
        state.pending as f64,
    );
    out.gauges(
        "slapcluster_alerts_open",
        "Open alerts in this replica's applied state, by what they are about: an instance \
         failing (its node reported an error, or it cannot be placed) or a computer whose node \
         is silent.",
        "subject",
        [
            ("instance".to_string(), state.open_alerts.0 as f64),
            ("computer".to_string(), state.open_alerts.1 as f64),
        ],
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
    out.gauge(
        "slapcluster_raft_log_bytes",
        "Encoded bytes of the Raft log's entries, as the snapshot schedule last weighed them.",
        m.raft_log_bytes.get() as f64,
    );
    out.gauge(
        "slapcluster_snapshot_bytes",
        "Bytes of the current snapshot, as the snapshot schedule last weighed them.",
        m.snapshot_bytes.get() as f64,
    );
    out.counter(
        "slapcluster_snapshots_scheduled_total",
        "Snapshots this replica's schedule triggered (snapshot_every, snapshot_log_percent).",
        m.snapshots_scheduled.get(),
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
}
