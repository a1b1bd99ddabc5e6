//! Calls only the leader can answer — writes and read indexes — made from any replica: tried
//! here first, sent to the leader when this replica does not lead, and retried (bounded) while
//! an election runs.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};

use super::network::Peers;
use super::wire::ForwardError;
use super::{ReplicaCore, WriteError, Written};
use crate::state::Command;

/// Something only the leader can answer: tried locally first, else sent to the leader.
pub(super) trait LeaderCall {
    type Output;
    fn local(&self, replica: &ReplicaCore) -> impl Future<Output = Attempt<Self::Output>> + Send;
    fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> impl Future<Output = Result<Result<Self::Output, ForwardError>, tonic::Status>> + Send;
}

pub(super) struct WriteCall<'a>(pub(super) &'a Command);

impl LeaderCall for WriteCall<'_> {
    type Output = Written;

    async fn local(&self, replica: &ReplicaCore) -> Attempt<Written> {
        replica.batcher.submit(self.0.clone()).await
    }

    async fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> Result<Result<Written, ForwardError>, tonic::Status> {
        let answer = peers.forward(&leader, self.0, timeout).await?;
        Ok(answer.map(|(response, index)| Written { response, index }))
    }
}

pub(super) struct ReadIndexCall;

impl LeaderCall for ReadIndexCall {
    type Output = u64;

    async fn local(&self, replica: &ReplicaCore) -> Attempt<u64> {
        match replica.raft.get_read_log_id().await {
            Ok((read, _)) => Attempt::Done(read.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Attempt::Redirect(to.leader_id.zip(to.leader_node.map(|n| n.addr)))
            }
            Err(e) => Attempt::Fatal(e.to_string()),
        }
    }

    async fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> Result<Result<u64, ForwardError>, tonic::Status> {
        let answer = peers.read_index(&leader, timeout).await?;
        Ok(answer.map(|index| index.unwrap_or(0)))
    }
}

/// One step of [`ReplicaCore::at_leader`].
pub(crate) enum Attempt<T> {
    Done(T),
    /// Not the leader; the leader as this replica knows it.
    Redirect(Option<(u64, String)>),
    /// Not answered within this long; a write may yet take effect.
    TimedOut(Duration),
    Fatal(String),
}

impl ReplicaCore {
    /// Runs `call` here; where this replica does not lead, against the leader; during an
    /// election, waits for one. Bounded by the write timeout, the local attempt included.
    pub(super) async fn at_leader<C: LeaderCall>(&self, call: C) -> Result<C::Output, WriteError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        loop {
            let local = tokio::time::timeout_at(deadline, call.local(self)).await;
            let leader = match local {
                Ok(Attempt::Done(value)) => return Ok(value),
                Ok(Attempt::Redirect(leader)) => leader,
                Ok(Attempt::TimedOut(waited)) => return Err(WriteError::TimedOut(waited)),
                Ok(Attempt::Fatal(reason)) => return Err(WriteError::Stopped(reason)),
                Err(_) => return Err(WriteError::TimedOut(self.write_timeout)),
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::NoLeader(self.write_timeout));
            }
            match leader {
                Some((leader, addr)) if leader != self.id => {
                    match call.remote(&self.peers, addr, remaining).await {
                        Ok(Ok(value)) => return Ok(value),
                        Ok(Err(ForwardError::NotLeader { .. })) => {}
                        Ok(Err(ForwardError::Unavailable(reason))) => {
                            tracing::warn!(leader, %reason, "leader cannot answer; waiting");
                            self.wait_for_leader_change(Some(leader), remaining).await;
                        }
                        Err(status) => {
                            tracing::debug!(leader, %status, "leader unreachable; waiting for a leader");
                            self.wait_for_leader_change(Some(leader), remaining).await;
                        }
                    }
                }
                // No leader known (an election), or the view is stale: wait for a change.
                known => {
                    self.wait_for_leader_change(known.map(|(id, _)| id), remaining)
                        .await
                }
            }
        }
    }

    /// Waits until this replica's view of the leader differs from `leader` (an election
    /// finished, or the leader was found), or `timeout`.
    async fn wait_for_leader_change(&self, leader: Option<u64>, timeout: Duration) {
        let _ = self
            .raft
            .wait(Some(timeout.min(Duration::from_secs(2))))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != leader,
                "leader change",
            )
            .await;
    }
}
