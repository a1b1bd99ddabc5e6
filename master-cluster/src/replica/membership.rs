//! Membership: who the replicas are, and changing it. Replica addresses are their identities:
//! a replica that comes back on another address is a new member to add (and the old one to
//! remove). Only the leader changes membership; elsewhere these calls answer
//! [`MembershipError::NotLeader`] naming the leader.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};

use super::{ReplicaCore, ReplicaError};
use crate::state::{MasterConfig, ReplicaNode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Voter,
    Learner,
}

/// A member as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub region: String,
    pub role: Role,
    /// The last log index the leader knows the member holds; `None` when this replica does
    /// not lead (only the leader tracks replication) or before the member answered.
    pub matched: Option<u64>,
    /// How many entries the member is behind the leader's log, when known.
    pub lag: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("replica {id} does not lead; the leader is {leader:?}")]
    NotLeader {
        id: u64,
        leader: Option<(u64, String)>,
    },
    /// openraft refused the change (a learner that does not exist, a change in progress, an
    /// empty voter set, ...).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// Another membership change is being committed; retry once it is.
    #[error("another membership change is in progress: {0}")]
    InProgress(String),
    /// This replica's Raft core stopped.
    #[error("replica stopped: {0}")]
    Stopped(#[from] openraft::error::Fatal<MasterConfig>),
    /// What was asked has not happened within the wait (it may yet).
    #[error("{0}")]
    NotYet(String),
    /// The learner was added but has not caught up yet (it keeps going).
    #[error("replica {id} is added and catching up: at {matched:?} of {target}")]
    CatchingUp {
        id: u64,
        matched: Option<u64>,
        target: u64,
    },
}

/// Whether removing `removed` from `voters` keeps a quorum, given the members that answer
/// now: the change commits only if a majority of the voters before it *and* of those after
/// it answer (joint consensus), and the cluster then writes only while a majority of those
/// after it do. Removing a live voter while another is down can fail both ways and stop every
/// write until the missing one returns; removing the dead one is what keeps the cluster going.
pub fn quorum_after_removal(
    voters: &BTreeSet<u64>,
    removed: &BTreeSet<u64>,
    answering: &BTreeSet<u64>,
) -> Result<(), String> {
    let after: BTreeSet<u64> = voters.difference(removed).copied().collect();
    if after.is_empty() {
        return Err("a cluster keeps at least one voter".into());
    }
    let majority = |set: &BTreeSet<u64>| set.intersection(answering).count() * 2 > set.len();
    for (set, when) in [(voters, "now"), (&after, "after the removal")] {
        if !majority(set) {
            let silent: Vec<String> = set.difference(answering).map(ToString::to_string).collect();
            return Err(format!(
                "removing {removed:?} would lose the quorum: of the voters {when}                  ({set:?}), {} do not answer; remove those first, or bring them back",
                silent.join(", ")
            ));
        }
    }
    Ok(())
}

/// The last index the leader knows `id` holds (`None` off the leader or before any reply).
fn matched(metrics: &openraft::RaftMetrics<MasterConfig>, id: u64) -> Option<u64> {
    let replication = metrics.replication.as_ref()?;
    let matched = replication.get(&id)?.as_ref()?;
    Some(matched.index)
}

impl ReplicaCore {
    /// Adds the replica `id` (at `node.addr`) as a learner and waits, at most `catch_up`, until it
    /// holds the log up to the change that added it — received by a snapshot when the entries
    /// it needs are purged. Returns the membership's log index. After `catch_up` the learner
    /// stays added and keeps catching up: [`MembershipError::CatchingUp`] says how far it is.
    pub async fn add_learner(
        &self,
        id: u64,
        node: ReplicaNode,
        catch_up: Duration,
    ) -> Result<u64, MembershipError> {
        // openraft's own "blocking" counts a learner within `replication_lag_threshold` (5,000
        // entries by default) as caught up; wait for the exact index instead.
        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        let index = added.log_id.index;
        let caught_up = self
            .raft
            .wait(Some(catch_up))
            .metrics(
                |m| matched(m, id).is_some_and(|matched| matched >= index),
                "learner caught up",
            )
            .await;
        match caught_up {
            Ok(_) => Ok(index),
            Err(_) => Err(MembershipError::CatchingUp {
                id,
                matched: matched(&self.raft.metrics().borrow_watched(), id),
                target: index,
            }),
        }
    }

    /// This replica does not lead: who does, as the metrics say.
    fn not_leader(&self, metrics: &openraft::RaftMetrics<MasterConfig>) -> MembershipError {
        let membership = metrics.membership_config.membership();
        MembershipError::NotLeader {
            id: self.id,
            leader: metrics
                .current_leader
                .and_then(|leader| Some((leader, membership.get_node(&leader)?.addr.clone()))),
        }
    }

    /// Hands the leadership to the voter `to` and waits, at most `wait`, until it leads;
    /// returns `(leader, term)` then. Only the leader hands over (elsewhere this names it);
    /// a leader asked to hand over to itself just answers.
    pub async fn transfer_leader(
        &self,
        to: u64,
        wait: Duration,
    ) -> Result<(u64, u64), MembershipError> {
        {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            if metrics.current_leader != Some(self.id) {
                return Err(self.not_leader(&metrics));
            }
            if !membership.voter_ids().any(|id| id == to) {
                return Err(MembershipError::Refused(format!(
                    "replica {to} is not a voter: only a voter can lead"
                )));
            }
            if to == self.id {
                return Ok((to, metrics.current_term));
            }
        }
        self.raft.trigger().transfer_leader(to).await?;
        let led = self
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader == Some(to), "the new leader")
            .await;
        match led {
            Ok(metrics) => Ok((to, metrics.current_term)),
            Err(_) => Err(MembershipError::NotYet(format!(
                "replica {to} does not lead after {wait:?} (it may be behind, or unreachable)"
            ))),
        }
    }

    /// Makes learners voters.
    pub async fn promote(&self, ids: BTreeSet<u64>) -> Result<u64, MembershipError> {
        self.change(ChangeMembers::AddVoterIds(ids)).await
    }

    /// Removes members: voters stop voting, and every named member leaves the membership.
    /// `answering` are the members that answered the leader just before (see
    /// [`quorum_after_removal`]); only the leader removes, elsewhere this names it.
    pub async fn remove(
        &self,
        ids: BTreeSet<u64>,
        answering: &BTreeSet<u64>,
    ) -> Result<u64, MembershipError> {
        let (voters, learners): (BTreeSet<u64>, BTreeSet<u64>) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            if metrics.current_leader != Some(self.id) {
                return Err(self.not_leader(&metrics));
            }
            // openraft would commit a membership entry that changes nothing.
            if let Some(unknown) = ids.iter().find(|id| membership.get_node(id).is_none()) {
                return Err(MembershipError::Refused(format!(
                    "replica {unknown} is not a member"
                )));
            }
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            quorum_after_removal(&voters, &ids, answering).map_err(MembershipError::Refused)?;
            ids.into_iter().partition(|id| voters.contains(id))
        };
        // Removing a voter (`retain` off) also takes it out of the membership, in one change.
        // A second change after it could find it still committing and be refused, leaving the
        // caller to retry a removal that has happened: learners go first, by their own change.
        let mut index = None;
        if !learners.is_empty() {
            index = Some(self.change(ChangeMembers::RemoveNodes(learners)).await?);
        }
        if !voters.is_empty() {
            index = Some(self.change(ChangeMembers::RemoveVoters(voters)).await?);
        }
        // `ids` is not empty: every id is a member, hence a voter or a learner.
        index.ok_or_else(|| MembershipError::Refused("no replica to remove".into()))
    }

    /// Whether this replica is a voter of the membership it holds. Read from Raft's own state,
    /// not from [`Self::members`]: Raft's metrics start at defaults and show the stored
    /// membership only once Raft has reported them, so just after a start they may say
    /// nothing yet (a restarted voter would take itself for a newcomer).
    pub async fn is_voter(&self) -> Result<bool, ReplicaError> {
        let id = self.id;
        self.raft
            .with_raft_state(move |state| {
                state
                    .membership_state
                    .effective()
                    .membership()
                    .voter_ids()
                    .any(|voter| voter == id)
            })
            .await
            .map_err(ReplicaError::from)
    }

    /// Every member with its role and, on the leader, how far it has replicated.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        membership
            .nodes()
            .map(|(&id, node)| {
                let matched = matched(&metrics, id);
                let role = if metrics.current_leader == Some(id) {
                    Role::Leader
                } else if voters.contains(&id) {
                    Role::Voter
                } else {
                    Role::Learner
                };
                Member {
                    id,
                    addr: node.addr.clone(),
                    region: node.region.clone(),
                    role,
                    matched,
                    lag: matched.map(|m| last.saturating_sub(m)),
                }
            })
            .collect()
    }

    async fn change(
        &self,
        change: ChangeMembers<u64, ReplicaNode>,
    ) -> Result<u64, MembershipError> {
        let changed = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(changed.log_id.index)
    }

    fn membership_error(
        &self,
        error: RaftError<MasterConfig, ClientWriteError<MasterConfig>>,
    ) -> MembershipError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
                MembershipError::NotLeader {
                    id: self.id,
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                e @ openraft::error::ChangeMembershipError::InProgress(_),
            )) => MembershipError::InProgress(e.to_string()),
            // openraft 0.10 guards the second step of a voter change (leaving the joint
            // config) with the joint entry's log id: another change committed in between (a
            // replica joining at the same time) fails it, the joint config committed. Asking
            // again completes it, as for a change in progress.
            RaftError::APIError(e @ ClientWriteError::PreconditionFailed(_)) => {
                MembershipError::InProgress(e.to_string())
            }
            RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))
            | RaftError::APIError(e @ ClientWriteError::LogEntryDiscarded(_)) => {
                MembershipError::Refused(e.to_string())
            }
            RaftError::Fatal(fatal) => MembershipError::Stopped(fatal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn removing_the_dead_voter_keeps_the_quorum_and_removing_a_live_one_does_not() {
        let voters = set(&[1, 2, 3]);
        let answering = set(&[1, 2]);
        assert_eq!(
            quorum_after_removal(&voters, &set(&[3]), &answering),
            Ok(())
        );
        let refused = quorum_after_removal(&voters, &set(&[2]), &answering);
        assert!(
            refused
                .as_ref()
                .is_err_and(|why| why.contains("after the removal") && why.contains('3')),
            "{refused:?}"
        );
    }

    #[test]
    fn a_healthy_cluster_may_shrink_but_not_to_nothing() {
        let voters = set(&[1, 2, 3, 4, 5]);
        assert_eq!(
            quorum_after_removal(&voters, &set(&[4, 5]), &voters),
            Ok(())
        );
        assert!(quorum_after_removal(&set(&[1]), &set(&[1]), &set(&[1])).is_err());
        // Learners (not voters) come and go freely.
        assert_eq!(
            quorum_after_removal(&voters, &set(&[9]), &set(&[1, 2, 3])),
            Ok(())
        );
    }

    #[test]
    fn without_a_majority_now_nothing_is_removed() {
        let voters = set(&[1, 2, 3]);
        let refused = quorum_after_removal(&voters, &set(&[3]), &set(&[1]));
        assert!(refused.is_err_and(|why| why.contains("voters now")));
    }
}
