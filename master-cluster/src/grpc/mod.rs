//! Every gRPC service of a replica, on one port behind one gate:
//! - `public`: the services of the wire contract's clients, `Node` for computers' agents,
//!   `User` for users (and instances requesting children), `Admin` for operators;
//! - `raft`: the internal service other replicas call (appends, votes, snapshots, forwarded
//!   writes and read indexes), for replicas only;
//! - `gate` authenticates every call before its body is decoded, `call_metrics` times it.
//!
//! Each handler decodes its request into a domain command or query, runs it through the
//! replica (writes reach the leader, reads honour their consistency), and maps the outcome to
//! the wire in one place: [`rejected`] for the domain's refusals, [`unavailable`] for a cluster
//! that cannot answer now, [`failed`] for a replica that cannot read its own state.

mod call_metrics;
mod gate;
pub(crate) mod public;
mod raft;

use std::sync::Arc;

use slapcluster_api::v1::admin_server::AdminServer;
use slapcluster_api::v1::node_server::NodeServer;
use slapcluster_api::v1::raft_server::RaftServer;
use slapcluster_api::v1::user_server::UserServer;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::server::Router;

use crate::limits::{MAX_CLIENT_MESSAGE_BYTES, bounded};
use crate::replica::{CallError, Consistency, ReadError, ReplicaCore, WriteError};
use crate::state::model::{Actor, PartitionId};
use crate::state::{Op, Outcome, Rejection, RejectionKind};

pub use slapcluster_api::client::ACTOR_HEADER;

/// Largest message between replicas: a batch of entries or a snapshot chunk.
const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// Every service of a replica, on one port.
pub(crate) fn router(
    core: &Arc<ReplicaCore>,
) -> Router<
    tower::layer::util::Stack<
        gate::GateLayer,
        tower::layer::util::Stack<call_metrics::CallMetricsLayer, tower::layer::util::Identity>,
    >,
> {
    tonic::transport::Server::builder()
        // Outermost, so that refusals at the gate are timed and counted too.
        .layer(call_metrics::CallMetricsLayer {
            metrics: core.metrics().clone(),
        })
        .layer(gate::GateLayer { core: core.clone() })
        .add_service(
            RaftServer::new(raft::RaftService { core: core.clone() })
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .add_service(
            NodeServer::new(public::NodeService { core: core.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(
            UserServer::new(public::UserService { core: core.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(public::AdminService { core: core.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
}

/// Who is calling. Over TLS: the identity in the caller's certificate, verified on this call
/// (chain, validity, revocation); a replica passing on a call it received names that call's
/// caller in the [`ACTOR_HEADER`], and is trusted to. In plaintext: the header alone.
///
/// The gate (`grpc/gate.rs`) already did this before the call's body was read, and left the
/// actor in the request's extensions: it is taken from there.
pub fn caller<T>(core: &ReplicaCore, request: &tonic::Request<T>) -> Result<Actor, Status> {
    if let Some(gate::Authenticated(actor)) = request.extensions().get() {
        return Ok(actor.clone());
    }
    let certificates = request.peer_certs();
    authenticate(
        core,
        certificates.as_deref().map(Vec::as_slice),
        request.metadata(),
    )
}

/// Who is calling, from the chain the caller presented and the call's headers (see
/// [`caller`]).
pub(crate) fn authenticate(
    core: &ReplicaCore,
    certificates: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    metadata: &MetadataMap,
) -> Result<Actor, Status> {
    let Some(tls) = core.tls() else {
        return actor(metadata);
    };
    let identity = tls
        .verify_caller(certificates, &core.revoked())
        .map_err(|refusal| {
            tracing::info!(%refusal, "caller refused");
            Status::unauthenticated(refusal.to_string())
        })?;
    match identity {
        ca::Identity::Replica(id) => match metadata.get(ACTOR_HEADER) {
            Some(_) => actor(metadata),
            None => Ok(Actor::Replica(id)),
        },
        other => crate::replica::identity_actor(other)
            .ok_or_else(|| Status::internal("a replica's identity read as another's")),
    }
}

/// The policy's refusals, as gRPC answers.
impl From<crate::state::policy::Refusal> for Status {
    fn from(refusal: crate::state::policy::Refusal) -> Self {
        tracing::info!(%refusal, "call refused");
        Status::permission_denied(refusal.to_string())
    }
}

/// Only replicas may call the internal Raft service (over TLS; anyone in plaintext).
pub fn replica_only<T>(core: &ReplicaCore, request: &tonic::Request<T>) -> Result<(), Status> {
    if core.tls().is_none() {
        return Ok(());
    }
    match caller(core, request)? {
        Actor::Replica(_) if request.metadata().get(ACTOR_HEADER).is_none() => Ok(()),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the Raft service"
        ))),
    }
}

/// Who is calling, from the [`ACTOR_HEADER`]: `user:NAME`, `operator:NAME`, `computer:ID` or
/// `partition:COMPUTER/PARTITION`.
fn actor(metadata: &MetadataMap) -> Result<Actor, Status> {
    let value = metadata
        .get(ACTOR_HEADER)
        .ok_or_else(|| Status::unauthenticated(format!("no {ACTOR_HEADER} header")))?
        .to_str()
        .map_err(|_| Status::unauthenticated(format!("{ACTOR_HEADER} is not text")))?;
    parse_actor(value).ok_or_else(|| {
        Status::unauthenticated(format!(
            "{ACTOR_HEADER} {value:?}: say user:NAME, operator:NAME, computer:ID or \
             partition:COMPUTER/PARTITION"
        ))
    })
}

fn parse_actor(value: &str) -> Option<Actor> {
    let (role, id) = value.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    Some(match role {
        "user" => Actor::User(id.into()),
        "operator" => Actor::Operator(id.into()),
        "computer" => Actor::Computer(id.into()),
        "partition" => {
            let (computer, partition) = id.split_once('/')?;
            if computer.is_empty() || partition.is_empty() {
                return None;
            }
            Actor::Partition(PartitionId {
                computer: computer.into(),
                partition: partition.into(),
            })
        }
        _ => return None,
    })
}

/// A domain refusal: the caller's mistake, never retried.
pub fn rejected(rejection: &Rejection) -> Status {
    let message = bounded(rejection.to_string());
    match rejection.kind() {
        RejectionKind::NotFound => Status::not_found(message),
        RejectionKind::Forbidden => Status::permission_denied(message),
        RejectionKind::OverQuota => Status::resource_exhausted(message),
        RejectionKind::Invalid => Status::invalid_argument(message),
        RejectionKind::Conflict => Status::failed_precondition(message),
    }
}

/// The cluster could not answer now (no leader, a lagging or stopping replica): retry.
pub fn unavailable(error: &WriteError) -> Status {
    Status::unavailable(error.to_string())
}

/// A read that did not complete.
pub fn failed(error: &ReadError) -> Status {
    match error {
        ReadError::Barrier(e) => unavailable(e),
        // The replica cannot read its own state: the caller should try another replica.
        ReadError::State(_) | ReadError::Storage(_) | ReadError::Task(_) | ReadError::Stopped => {
            tracing::error!(%error, "read failed");
            Status::internal(error.to_string())
        }
    }
}

pub fn consistency(value: i32) -> Consistency {
    match slapcluster_api::v1::Consistency::try_from(value) {
        Ok(slapcluster_api::v1::Consistency::Stale) => Consistency::Stale,
        _ => Consistency::Linearizable,
    }
}

/// Commits `op` on behalf of `actor`; the domain's refusal becomes the call's error.
pub(crate) async fn write(
    core: &ReplicaCore,
    actor: Actor,
    op: Op,
) -> Result<(Outcome, u64), Status> {
    core.execute(actor, op).await.map_err(|error| match error {
        CallError::Rejected(rejection) => rejected(&rejection),
        CallError::Unavailable(error) => unavailable(&error),
    })
}

fn write_reply((outcome, index): (Outcome, u64)) -> slapcluster_api::v1::WriteReply {
    slapcluster_api::v1::WriteReply {
        index,
        changed: outcome != Outcome::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_parse_from_their_header_form() {
        assert_eq!(parse_actor("user:alice"), Some(Actor::User("alice".into())));
        assert_eq!(
            parse_actor("partition:COMP-1/slappart0"),
            Some(Actor::Partition(PartitionId {
                computer: "COMP-1".into(),
                partition: "slappart0".into()
            }))
        );
        for bad in [
            "",
            "user",
            "user:",
            "partition:COMP-1",
            "partition:/p",
            "root:x",
        ] {
            assert_eq!(parse_actor(bad), None, "{bad:?}");
        }
        let mut metadata = MetadataMap::new();
        assert_eq!(
            actor(&metadata).expect_err("missing").code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(ACTOR_HEADER, "computer:COMP-9".parse().expect("ascii"));
        assert_eq!(
            actor(&metadata).expect("parses"),
            Actor::Computer("COMP-9".into())
        );
    }
}
