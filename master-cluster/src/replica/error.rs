//! Why a replica could not start, read, write or carry a call through: one variant per cause,
//! with its source, and none of them a transport's. `CallError` is what the transports map.

use std::net::SocketAddr;
use std::time::Duration;

use crate::state::MasterConfig;

/// Why a replica could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] raft_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// openraft's core stopped (a storage failure it could not go on from, or shutdown).
    #[error("raft stopped: {0}")]
    Raft(#[from] openraft::error::Fatal<MasterConfig>),
    #[error("initialising the cluster: {0}")]
    Initialize(
        #[from]
        openraft::error::RaftError<MasterConfig, openraft::error::InitializeError<MasterConfig>>,
    ),
    #[error("loading the revoked certificates: {0}")]
    Revocations(#[source] Box<ReadError>),
    #[error("the gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A task of the replica's (opening the store, serving, Raft's core) panicked or was
    /// cancelled.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a read (a node's poll, a user's query) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The consistency asked for could not be reached (no leader, this replica behind).
    #[error(transparent)]
    Barrier(#[from] WriteError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Storage(#[from] raft_store::StoreError),
    /// The read's task (a read transaction, off the runtime's workers) panicked or was
    /// cancelled.
    #[error("the read did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The replica is stopping: its change notifications have ended.
    #[error("replica stopped")]
    Stopped,
}

/// Why a write or a consistent read did not get an answer. A domain refusal is not an error:
/// it is the [`Response`](crate::state::Response)'s `Err`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader could be reached in time (an election, a partition): retry later.
    #[error("no leader could answer within {0:?}; retry")]
    NoLeader(Duration),
    /// This replica did not apply `index` within `waited`: it is behind; retry or ask another.
    #[error(
        "this replica has not applied index {index} after {waited:?}; retry or ask another replica"
    )]
    Behind { index: u64, waited: Duration },
    /// The leader did not answer within the write timeout (it may have lost its leadership
    /// meanwhile). A write may yet take effect: retry it (commands are idempotent).
    #[error("not answered within {0:?}; the write may yet take effect: retry")]
    TimedOut(Duration),
    /// The leader was asked but could not confirm the write ({0}): it may yet take effect.
    /// Not sent again by the replica, since a repeat could land after later writes.
    #[error("the leader could not confirm the write ({0}); it may yet take effect: retry")]
    Unconfirmed(String),
    /// This replica's Raft core could not carry the call through.
    #[error("this replica cannot answer: {0}")]
    Core(#[from] CoreError),
}

/// Why this replica's Raft core could not carry a write or read through, one cause each. All
/// are this replica's: another replica may answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    /// The replica is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The write batcher's task has ended: the replica is stopping.
    #[error("the write batcher has stopped")]
    BatcherStopped,
    /// The Raft core ended before it answered a batch it had taken.
    #[error("the Raft core stopped before it answered")]
    Unanswered,
    /// The Raft core stopped: shut down, panicked, or failed on its storage.
    #[error("the Raft core stopped: {0}")]
    Stopped(#[from] openraft::error::Fatal<MasterConfig>),
    /// The Raft core refused a write for a reason other than leadership.
    #[error("the Raft core refused the write: {0}")]
    Refused(#[from] openraft::error::ClientWriteError<MasterConfig>),
    /// This leader could not confirm its leadership with a quorum for a linearizable read.
    #[error("no quorum confirmed the leader: {0}")]
    NoQuorum(#[from] openraft::error::QuorumNotEnough<MasterConfig>),
    /// The state machine answered a batch with another number of responses (a bug).
    #[error("the state machine answered {answered} responses for {commands} commands")]
    Mismatch { answered: usize, commands: usize },
}

/// Why a caller's command did not take effect, in the domain's terms: each transport maps it
/// to its own answer once (gRPC statuses in `grpc`, HTTP statuses in `slap`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The domain refused it (the caller's mistake, or the policy): never retried.
    #[error(transparent)]
    Rejected(#[from] crate::state::Rejection),
    /// The cluster could not answer now (no leader, a lagging or stopping replica): retry.
    #[error(transparent)]
    Unavailable(#[from] WriteError),
}
