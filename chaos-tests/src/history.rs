//! What a chaos run records: every client operation with its invocation and completion times
//! (microseconds since the run started), what it asked and what it saw, and every fault with
//! its interval. Saved as JSON beside the run's summary.

use serde::{Deserialize, Serialize};

/// An instance's requested state as the workload sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Requested {
    Started,
    Stopped,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freshness {
    Linearizable,
    Stale,
}

/// What a client asked, on the instance `Op::key` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `RequestInstance` (idempotent by title) with parameter `v` and a requested state.
    Request { v: u64, state: Requested },
    /// `PublishConnection` of connection parameter `c`, as the computer, on the instance's
    /// partition.
    Publish { c: u64, partition: String },
    /// `ShowInstance`.
    Read { freshness: Freshness },
    /// A call the authorisation policy must refuse, made by the key's user: it changes
    /// nothing and must never succeed.
    Intrude { intrusion: Intrusion },
}

/// What a tenant tries that is not theirs to do (the workload's two users are customers of
/// two different projects; the computer belongs to the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intrusion {
    /// Supply software to the computer (its project's managers only).
    Supply,
    /// Publish connection parameters for the instance's partition (its node or itself only).
    PublishAsUser,
    /// Request a tree in the other user's project (its members only).
    RequestInOtherProject,
}

/// What the instance looked like in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seen {
    pub guid: String,
    pub v: Option<u64>,
    pub state: Option<Requested>,
    pub c: Option<u64>,
    /// `COMPUTER/slappartN` when placed.
    pub partition: Option<String>,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged; for a read, `None` when the instance does not exist.
    Ok(Option<Seen>),
    /// Refused before anything happened (a definite failure).
    Failed(String),
    /// No answer, or an answer that does not say whether it happened (a timeout, a lost
    /// connection, no leader after a forward): it may or may not have taken effect.
    Unknown(String),
}

/// The worker number of the write that shows the cluster serves again after healing.
pub const LIVENESS_WORKER: usize = usize::MAX;
/// The worker number of the final reads.
pub const FINAL_WORKER: usize = usize::MAX - 1;
/// The worker number of the nemesis's probes of stranded replicas.
pub const PROBE_WORKER: usize = usize::MAX - 2;

/// How a worker is named in reports.
pub fn worker_name(worker: usize) -> String {
    match worker {
        LIVENESS_WORKER => "liveness".into(),
        FINAL_WORKER => "final".into(),
        PROBE_WORKER => "probe".into(),
        w => format!("w{w}"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// The workload's worker, or one of the harness's own (`LIVENESS_WORKER` and beside it).
    pub worker: usize,
    /// Which replica the call went to.
    pub replica: usize,
    /// `user/title`.
    pub key: String,
    pub call: Call,
    pub invoked_us: u64,
    pub completed_us: u64,
    pub outcome: Outcome,
}

/// A fault, from injection to healing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub description: String,
    pub started_us: u64,
    pub healed_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub replicas: usize,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
}
