//! The internal Raft service: what other replicas call on this one.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::raft::AppendEntriesResponse;
use slapcluster_api::v1::RaftPayload;
use slapcluster_api::v1::raft_server;
use tonic::{Request, Response, Status};

use super::wire::{self, ForwardError};
use super::{Attempt, ReplicaCore, Written};
use crate::service::replica_only;
use crate::state::Command;

pub struct RaftService {
    /// Forwarded writes join this replica's batches like local ones.
    pub(crate) core: Arc<ReplicaCore>,
}

type Reply = Result<Response<RaftPayload>, Status>;

fn reply<T: serde::Serialize>(value: &T) -> Reply {
    Ok(Response::new(RaftPayload {
        payload: wire::encode(value),
    }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("append-entries request", &request.into_inner().payload)?;
        let answer = self.core.raft.append_entries(rpc).await;
        // Only a current leader's append-entries is accepted (a stale one gets a higher
        // vote back): that is the leader contact a node's poll reports.
        if matches!(
            answer,
            Ok(AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict)
        ) {
            self.core.heard_from_leader();
        }
        reply(&answer)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("vote request", &request.into_inner().payload)?;
        reply(&self.core.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("install-snapshot request", &request.into_inner().payload)?;
        reply(&self.core.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let command: Command = wire::decode("forwarded command", &request.into_inner().payload)?;
        let answer = match self.core.batcher.submit(command).await {
            Attempt::Done(Written { response, index }) => Ok((response, index)),
            Attempt::Redirect(leader) => Err(ForwardError::NotLeader { leader }),
            Attempt::TimedOut(waited) => Err(ForwardError::Unavailable(format!(
                "not committed within {waited:?}; it may yet be"
            ))),
            Attempt::Fatal(reason) => Err(ForwardError::Unavailable(reason)),
        };
        reply(&answer)
    }

    async fn read_index(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let answer = match self.core.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map(|id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Err(ForwardError::NotLeader {
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(ForwardError::Unavailable(e.to_string())),
        };
        reply(&answer)
    }
}
