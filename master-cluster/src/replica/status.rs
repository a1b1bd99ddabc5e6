//! The cluster's status as one replica sees it: its own ([`ReplicaStatus`]), and each member's
//! as that member reports it, asked of them all at once. Transport-free: `Admin.ClusterStatus`
//! and the status page each convert it at their edge. (Members answer each other through
//! `Admin.ReplicaStatus`, the one gRPC call made here.)

use std::collections::HashMap;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;

use super::{Member, ReplicaCore, Role};

/// How long a cluster status waits for each member's own answer.
pub const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// What a replica is doing, as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not in the membership (yet, or any more).
    Outside,
}

impl From<Standing> for pb::Role {
    fn from(standing: Standing) -> Self {
        match standing {
            Standing::Leader => Self::Leader,
            Standing::Follower => Self::Follower,
            Standing::Candidate => Self::Candidate,
            Standing::Learner => Self::Learner,
            Standing::Outside => Self::None,
        }
    }
}

/// A replica's report on itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: u64,
    pub addr: String,
    pub region: String,
    pub standing: Standing,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    /// Since it last heard from a leader (a leader: since a quorum acknowledged it).
    pub leader_contact_age: Option<Duration>,
}

/// A member of the membership, with its own report when it answered in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub member: Member,
    pub reported: Option<ReplicaStatus>,
    /// Entries its applied state is behind the furthest log any member reported.
    pub lag: Option<u64>,
    /// This replica's measured round trip to the member (`links`); `None` for itself, or
    /// when the member has not answered a ping lately.
    pub round_trip: Option<Duration>,
}

/// The cluster as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The replica that answered.
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
}

impl MemberStatus {
    /// What the member is doing: a learner by the membership, else as it reported itself;
    /// `None` when it did not answer.
    pub fn standing(&self) -> Option<Standing> {
        if self.member.role == Role::Learner {
            return Some(Standing::Learner);
        }
        self.reported.as_ref().map(|r| r.standing)
    }

    /// Why there is no report from the member, for display; empty when it answered. (The
    /// runbooks quote it; it says [`MEMBER_STATUS_TIMEOUT`] in words.)
    pub fn unreachable(&self) -> String {
        match self.reported {
            Some(_) => String::new(),
            None => "did not answer within a second".into(),
        }
    }
}

impl ReplicaCore {
    /// This replica's report on itself, from Raft's metrics.
    pub fn local_status(&self) -> ReplicaStatus {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let member = metrics
            .membership_config
            .membership()
            .get_node(&self.id())
            .is_some();
        let standing = match metrics.state {
            _ if !member => Standing::Outside,
            ServerState::Leader => Standing::Leader,
            ServerState::Candidate => Standing::Candidate,
            ServerState::Follower => Standing::Follower,
            ServerState::Learner | ServerState::Shutdown => Standing::Learner,
        };
        let node = self.node();
        ReplicaStatus {
            id: self.id(),
            addr: node.addr,
            region: node.region,
            standing,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            leader_contact_age: self.leader_contact_age(),
        }
    }

    /// Each member's own status (this replica's included), asked of them all at once, each
    /// within [`MEMBER_STATUS_TIMEOUT`]; members that did not answer are absent.
    pub async fn member_statuses(&self, members: &[Member]) -> HashMap<u64, ReplicaStatus> {
        let mut asks = tokio::task::JoinSet::new();
        for member in members.iter().filter(|m| m.id != self.id()) {
            let channel = self.peers().channel(&member.addr);
            let id = member.id;
            asks.spawn(async move {
                let mut client = AdminClient::new(channel.ok()?);
                let mut ask = tonic::Request::new(pb::ReplicaStatusRequest::default());
                ask.set_timeout(MEMBER_STATUS_TIMEOUT);
                let answer =
                    tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.replica_status(ask));
                let status = answer.await.ok()?.ok()?.into_inner();
                // Whoever answers at a member's address must be that member.
                (status.id == id).then(|| reported(status))
            });
        }
        let mut statuses = HashMap::new();
        let local = self.local_status();
        statuses.insert(local.id, local);
        while let Some(joined) = asks.join_next().await {
            if let Ok(Some(status)) = joined {
                statuses.insert(status.id, status);
            }
        }
        statuses
    }

    /// Every member as it reports itself, as this replica sees the membership.
    pub async fn cluster_status(&self) -> ClusterStatus {
        let members = self.members();
        let mut statuses = self.member_statuses(&members).await;
        // `member_statuses` always holds this replica's own report.
        let (leader, term) = statuses
            .get(&self.id())
            .map_or((None, 0), |local| (local.leader, local.term));
        let head = statuses
            .values()
            .map(|s| s.last_log_index)
            .max()
            .unwrap_or(0);
        let members = members
            .into_iter()
            .map(|member| {
                let reported = statuses.remove(&member.id);
                MemberStatus {
                    round_trip: self.round_trip(member.id),
                    lag: reported
                        .as_ref()
                        .map(|s| head.saturating_sub(s.applied_index)),
                    member,
                    reported,
                }
            })
            .collect();
        ClusterStatus {
            id: self.id(),
            leader,
            term,
            members,
        }
    }
}

/// A member's answer to `Admin.ReplicaStatus`, as the core reads it.
fn reported(reply: pb::ReplicaStatusReply) -> ReplicaStatus {
    let standing = match reply.role() {
        pb::Role::Leader => Standing::Leader,
        pb::Role::Follower => Standing::Follower,
        pb::Role::Candidate => Standing::Candidate,
        pb::Role::Learner => Standing::Learner,
        pb::Role::None | pb::Role::Unspecified => Standing::Outside,
    };
    ReplicaStatus {
        id: reply.id,
        addr: reply.addr,
        region: reply.region,
        standing,
        term: reply.term,
        leader: (reply.leader != 0).then_some(reply.leader),
        last_log_index: reply.last_log_index,
        applied_index: reply.applied_index,
        snapshot_index: reply.snapshot_index,
        leader_contact_age: reply.leader_contact_age_ms.map(Duration::from_millis),
    }
}
