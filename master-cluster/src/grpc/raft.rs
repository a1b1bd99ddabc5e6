//! The internal Raft service: what other replicas call on this one (appends, votes, snapshots,
//! forwarded writes and read indexes). Replicas only: the gate refuses every other caller.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::ReadPolicy;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::{AppendEntriesResponse, StreamAppendError};
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;
use slapcluster_api::v1::RaftPayload;
use slapcluster_api::v1::raft_server;
use tonic::{Request, Response, Status, Streaming};

use super::replica_only;
use crate::lock;
use crate::replica::wire::{self, ForwardError};
use crate::replica::{Attempt, ReplicaCore, Written};
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

/// A [`RaftService::stream_append`] answer stream.
type Answers = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    type StreamAppendStream = Answers;

    /// The leader's appends, several in flight, into openraft's pipelined receiver; answered
    /// in order. A message that does not decode, or a broken stream, ends the appends: what
    /// was received is answered, then the stream ends with that status. openraft keeps at
    /// most 64 appends in flight per stream, each at most the Raft message limit: a stream
    /// holds at most that much (replicas only: the gate refuses anyone else). It ends when
    /// this replica stops.
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Answers>, Status> {
        replica_only(&self.core, &request)?;
        let refused = Arc::new(Mutex::new(None::<Status>));
        let refusal = Arc::clone(&refused);
        let appends = futures_util::stream::unfold(request.into_inner(), move |mut incoming| {
            let refusal = Arc::clone(&refusal);
            async move {
                let failure = match incoming.message().await {
                    Ok(Some(message)) => {
                        match wire::decode("append-entries request", &message.payload) {
                            Ok(append) => return Some((append, incoming)),
                            Err(status) => status,
                        }
                    }
                    Ok(None) => return None,
                    Err(status) => status,
                };
                *lock(&refusal) = Some(failure);
                None
            }
        });
        // The leader keeps its stream open while it leads: a stopping replica ends both halves
        // (the request half is read by a task of openraft's, which holds it until it ends).
        let appends = appends.take_until(self.core.stopping());
        let core = Arc::clone(&self.core);
        let answers = self.core.raft().stream_append(appends).map(move |answer| {
            // As for a unary append: only a current leader's appends are answered
            // otherwise than with a higher vote, and they are the leader contact.
            if matches!(answer, Ok(Ok(_) | Err(StreamAppendError::Conflict(_)))) {
                core.heard_from_leader();
            }
            Ok(RaftPayload {
                payload: wire::encode(&answer),
            })
        });
        let end = futures_util::stream::once(async move { lock(&refused).take() })
            .filter_map(|refusal| async move { refusal.map(Err) });
        let answers = answers.chain(end).take_until(self.core.stopping());
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append_entries(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("append-entries request", &request.into_inner().payload)?;
        let answer = self.core.raft().append_entries(rpc).await;
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
        let rpc = wire::decode_vote_request(&request.into_inner().payload)?;
        reply(&self.core.raft().vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode_vote_request(&request.into_inner().payload)?;
        reply(&self.core.raft().pre_vote(rpc).await)
    }

    async fn transfer_leader(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("transfer-leader request", &request.into_inner().payload)?;
        reply(&self.core.raft().handle_transfer_leader(rpc).await)
    }

    /// Answered at once, without reading the payload (see `replica::links`).
    async fn ping(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        reply(&())
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let rpc = wire::decode("install-snapshot request", &request.into_inner().payload)?;
        reply(&ChunkedSnapshotReceiver::install_snapshot(self.core.raft(), rpc).await)
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let command: Command = wire::decode("forwarded command", &request.into_inner().payload)?;
        let answer = match self.core.submit_forwarded(command).await {
            Attempt::Done(Written { response, index }) => Ok((response, index)),
            Attempt::Redirect(leader) => Err(ForwardError::NotLeader { leader }),
            Attempt::TimedOut(waited) => Err(ForwardError::Unavailable(format!(
                "not committed within {waited:?}; it may yet be"
            ))),
            // Crosses to the follower as text: its caller reads it in its error.
            Attempt::Stopped(cause) => Err(ForwardError::Unavailable(cause.to_string())),
        };
        reply(&answer)
    }

    async fn read_index(&self, request: Request<RaftPayload>) -> Reply {
        replica_only(&self.core, &request)?;
        let answer = match self
            .core
            .raft()
            .get_read_log_id(ReadPolicy::ReadIndex)
            .await
        {
            // `Some` always (a leader has committed its own entry); an option on the wire for
            // replicas of earlier releases, which could answer none.
            Ok((read, _applied)) => Ok(Some(read.log_id().index)),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(to))) => {
                Err(ForwardError::NotLeader {
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(ForwardError::Unavailable(e.to_string())),
        };
        reply(&answer)
    }
}
