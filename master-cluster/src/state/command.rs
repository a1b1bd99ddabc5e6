//! Commands the state machine applies, and what each returns.
//!
//! A command is proposed by a replica with the time it assigned and the identity of the caller;
//! it is then applied identically on every replica. A command the domain refuses returns a
//! [`Rejection`] and changes nothing.

use serde::{Deserialize, Serialize};

use super::model::{
    Actor, AllocationScope, ComputerDefinition, ComputerId, InstanceCertificate, InstanceGuid,
    Parameters, PartitionId, PartitionRef, Placement, ProjectId, ProjectRole, Quota,
    RequestedState, SoftwareReleaseUrl, SoftwareState, SupplyState, Timestamp, UsageRecord,
    UsageReport, UserId,
};

/// What one Raft log entry carries: the commands the leader coalesced while the previous
/// entry was being committed (at least one), applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandBatch(pub Vec<Command>);

/// How openraft's logs show an entry: its size, never its parameters (which may hold secrets).
impl std::fmt::Display for CommandBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} command(s)", self.0.len())
    }
}

/// The answers to a [`CommandBatch`], one per command, in order.
pub type BatchResponse = Vec<Response>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub at: Timestamp,
    pub actor: Actor,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Adds or updates a software release in the catalog.
    PublishSoftwareRelease {
        url: SoftwareReleaseUrl,
        title: String,
        software_types: Vec<String>,
    },
    /// Registers a computer or updates it from a new definition. Partitions missing from the
    /// definition are removed if free; a busy one makes the whole command fail.
    RegisterComputer(ComputerDefinition),
    SetAllocationScope {
        computer: ComputerId,
        scope: AllocationScope,
    },
    /// Asks a computer to have (`available`) or remove (`destroyed`) a software release.
    Supply {
        computer: ComputerId,
        url: SoftwareReleaseUrl,
        state: SupplyState,
    },
    /// A node's report about a software release it installs or removes.
    ReportSoftware {
        computer: ComputerId,
        url: SoftwareReleaseUrl,
        state: SoftwareState,
    },
    /// Requests an instance. By a user: a root instance owned by them. By a partition: a child
    /// of the instance on that partition, in the same request tree. Idempotent by requester
    /// and title.
    RequestInstance(InstanceRequest),
    /// Connection parameters published by the instance on `partition`, for itself or for a
    /// shared instance it hosts (`shared_reference`).
    PublishConnection {
        partition: PartitionId,
        shared_reference: Option<String>,
        parameters: Parameters,
    },
    /// A node's report about the instance on `partition` (or a shared instance it hosts).
    ReportInstance {
        partition: PartitionId,
        shared_reference: Option<String>,
        report: InstanceReport,
    },
    /// Destroys an instance and its request tree below it (by a user or an operator).
    DestroyInstance { instance: InstanceGuid },
    /// Asks every instance of the tree of the instance on `partition` to reprocess.
    BangInstance {
        partition: PartitionId,
        message: String,
    },
    /// Asks every instance on a computer to reprocess.
    BangComputer {
        computer: ComputerId,
        message: String,
    },
    /// Renames the instance on `partition` (or a shared instance it hosts).
    RenameInstance {
        partition: PartitionId,
        shared_reference: Option<String>,
        new_title: String,
    },
    /// Usage records posted by a computer's node; a record for the same partition and period
    /// start replaces the earlier one.
    PostUsage {
        computer: ComputerId,
        records: Vec<UsageRecord>,
    },
    /// A replica's summary of the computers whose nodes polled it since its last summary, with
    /// the time of the last poll: node liveness reaches the log this way, never one write per
    /// poll. Unknown computers (a node polling before it registers) are skipped.
    RecordLiveness { seen: Vec<(ComputerId, Timestamp)> },
    /// A replica records a certificate it issued (by replicas and operators only).
    RecordCertificate {
        serial: String,
        identity: String,
        not_after: Timestamp,
    },
    /// Revokes a certificate by serial (operators only). Serials the cluster has no record of
    /// are accepted: the root's and intermediates' are not recorded.
    RevokeCertificate { serial: String, reason: String },
    /// Stores a new enrollment token for `computer` by its hash (operators only).
    CreateEnrollmentToken {
        token_hash: String,
        computer: ComputerId,
        expires_at: Timestamp,
    },
    /// Uses an enrollment token (replicas only, on a node's behalf): answers the computer it
    /// enrolls, once, before it expires.
    UseEnrollmentToken { token_hash: String },
    /// Binds a certificate a replica issued to the instance on `partition` (replicas only).
    /// The first binding stands: while the instance has one, another is refused in favour of
    /// it, unless it `replaces` the current one (a renewal). Answers the bound certificate.
    BindInstanceCertificate {
        instance: InstanceGuid,
        partition: PartitionId,
        serial: String,
        chain_pem: String,
        key_pem: String,
        not_before: Timestamp,
        not_after: Timestamp,
        replaces: Option<String>,
    },
    // New variants go last: log entries name variants by position.
    /// Creates a project, or retitles it (operators only).
    CreateProject { project: ProjectId, title: String },
    /// Gives a user a role in a project, or (`None`) removes them from it (operators and the
    /// project's managers).
    SetProjectMember {
        project: ProjectId,
        user: UserId,
        role: Option<ProjectRole>,
    },
    /// Hands a computer to another project (operators only). Its instances stay where they are.
    MoveComputer {
        computer: ComputerId,
        project: ProjectId,
    },
    /// Sets the quota of `user` (`None`: everyone's default), or (`quota` `None`) removes it
    /// (operators only). What a user already holds beyond a lowered quota stays; only new
    /// requests are refused.
    SetQuota {
        user: Option<UserId>,
        quota: Option<Quota>,
    },
    /// Stores a new credential token for `user` by its hash (operators, or the user): with it
    /// the user's client obtains a certificate (`slapos configure client --token`).
    CreateCredentialToken {
        token_hash: String,
        user: UserId,
        expires_at: Timestamp,
    },
    /// Uses a credential token (replicas only, on a client's behalf): answers the user it
    /// enrolls, once, before it expires.
    UseCredentialToken { token_hash: String },
    /// The instance on `partition` says which children it still requests, by title, after a
    /// run of its node that succeeded (SLAP `updateComputerPartitionRelatedInstanceList`): the
    /// children it requested that are not among them, shared ones included, are destroyed
    /// with their trees, as the SlapOS master's garbage collection did.
    UpdateRelatedInstances {
        partition: PartitionId,
        titles: Vec<String>,
    },
    /// A computer's usage reports, as its node posted them (computers only). A report the
    /// computer posted before, for the same reference and dates, is replaced: a report posted
    /// twice counts once.
    PostUsageReports {
        computer: ComputerId,
        reports: Vec<UsageReport>,
    },
    /// The leader's periodic look at node silence (replicas and operators only): a silence is
    /// the absence of commands, so nothing else would notice it. Every computer whose node
    /// has not polled for `silent_after_s` seconds (as of the command's time) is called
    /// silent, its alert opens, and the instances on it are in warning. The threshold is
    /// kept, so every replica's status answers use the one the cluster last applied.
    CheckSilence { silent_after_s: u64 },
}

impl Op {
    /// Roughly how many bytes the command takes in a log entry: enough to keep the leader's
    /// batches of commands within a message size, not an exact count.
    pub fn weight(&self) -> usize {
        const BASE: usize = 256;
        let parameters = |p: &Parameters| p.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        BASE + match self {
            Op::RegisterComputer(definition) => definition.partitions.len() * BASE,
            Op::RequestInstance(request) => {
                parameters(&request.parameters) + parameters(&request.sla)
            }
            Op::PublishConnection { parameters: p, .. } => parameters(p),
            Op::ReportSoftware {
                state: SoftwareState::Error { log },
                ..
            }
            | Op::ReportInstance {
                report: InstanceReport::Error { log },
                ..
            } => log.len(),
            Op::PostUsage { records, .. } => records.len() * BASE,
            Op::PostUsageReports { reports, .. } => {
                reports.iter().map(|r| r.movements.len() * BASE).sum()
            }
            Op::RecordLiveness { seen } => seen.len() * 64,
            Op::BangInstance { message, .. } | Op::BangComputer { message, .. } => message.len(),
            Op::UpdateRelatedInstances { titles, .. } => titles.iter().map(String::len).sum(),
            Op::RecordCertificate { identity, .. } => identity.len(),
            Op::RevokeCertificate { reason, .. } => reason.len(),
            Op::CreateEnrollmentToken { .. }
            | Op::UseEnrollmentToken { .. }
            | Op::CreateCredentialToken { .. }
            | Op::UseCredentialToken { .. } => 0,
            Op::BindInstanceCertificate {
                chain_pem, key_pem, ..
            } => chain_pem.len() + key_pem.len(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRequest {
    pub title: String,
    pub software_release: SoftwareReleaseUrl,
    pub software_type: String,
    pub parameters: Parameters,
    pub sla: Parameters,
    pub shared: bool,
    pub state: RequestedState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceReport {
    Started,
    Stopped,
    Destroyed,
    Error { log: String },
}

/// What a command produced, or why it was refused (and changed nothing).
pub type Response = Result<Outcome, Rejection>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing more to say.
    Done,
    /// Applied, and nothing changed (a repeated command).
    Unchanged,
    ComputerRegistered {
        partitions_added: u32,
        partitions_removed: u32,
        /// Pending requests that the new capacity let the marketplace place.
        placed: u32,
    },
    Instance(InstanceSummary),
    /// An enrollment token was used: the computer it enrolls.
    Enrolled {
        computer: ComputerId,
    },
    /// Pending requests placed as a consequence (a freed partition, a computer opened, a
    /// software release supplied).
    Placed {
        placed: u32,
    },
    /// The certificate bound to an instance.
    InstanceCertificate(Box<InstanceCertificate>),
    /// A credential token was used: the user it enrolls.
    Credentialed {
        user: UserId,
    },
}

/// The answer to a request: enough for the requester to know where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub guid: InstanceGuid,
    pub title: String,
    pub requested_state: RequestedState,
    pub placement: Placement,
    pub timestamp: Timestamp,
    /// False when the request repeated the instance exactly.
    pub changed: bool,
}

/// Why a command was refused. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("unknown computer {0}")]
    UnknownComputer(ComputerId),
    #[error("unknown partition {0}")]
    UnknownPartition(PartitionId),
    #[error("unknown instance {0}")]
    UnknownInstance(InstanceGuid),
    #[error("partition {0} holds no instance")]
    PartitionFree(PartitionId),
    #[error("partition {partition} holds no shared instance {reference:?}")]
    UnknownSharedInstance {
        partition: PartitionId,
        reference: String,
    },
    #[error("partition {partition} cannot be removed: instance {instance} runs on it")]
    PartitionBusy {
        partition: PartitionId,
        instance: InstanceGuid,
    },
    #[error("{what} is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        what: String,
        bytes: usize,
        max: usize,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{actor} may not {action}")]
    NotAllowed { actor: String, action: String },
    #[error("instance {0} is being destroyed; request it again once it is gone")]
    BeingDestroyed(InstanceGuid),
    #[error("there is no instance {title:?} to destroy")]
    NothingToDestroy { title: String },
    #[error("partition {0} does not belong to computer {1}")]
    WrongComputer(PartitionRef, ComputerId),
    #[error("user {0} has no instance titled {1:?}")]
    UnknownTitle(UserId, String),
    #[error("the token is unknown, used, expired or not for this")]
    BadEnrollmentToken,
    #[error("unknown project {0}")]
    UnknownProject(ProjectId),
    #[error("{count} {what}; at most {max} are accepted")]
    TooMany {
        what: String,
        count: usize,
        max: usize,
    },
    // New variants go last: replicas of two releases exchange rejections by position.
    #[error(
        "{user} holds {held} {what}, and this would make {wanted}: the quota is {max} (an \
         operator can raise it with slapctl quota set)"
    )]
    OverQuota {
        user: UserId,
        what: String,
        held: u64,
        wanted: u64,
        max: u64,
    },
}

/// What kind of refusal a [`Rejection`] is: what each transport maps to its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// It names something that does not exist.
    NotFound,
    /// The caller may not (the policy, or a bad enrollment token).
    Forbidden,
    /// Over the caller's quota: its own doing, not the cluster's.
    OverQuota,
    /// Malformed, too large or too many.
    Invalid,
    /// Not in this state (a busy or free partition, an instance being destroyed).
    Conflict,
}

impl Rejection {
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::UnknownComputer(_)
            | Rejection::UnknownPartition(_)
            | Rejection::UnknownInstance(_)
            | Rejection::UnknownSharedInstance { .. }
            | Rejection::UnknownTitle(..)
            | Rejection::UnknownProject(_)
            | Rejection::NothingToDestroy { .. } => RejectionKind::NotFound,
            Rejection::BadEnrollmentToken | Rejection::NotAllowed { .. } => {
                RejectionKind::Forbidden
            }
            Rejection::OverQuota { .. } => RejectionKind::OverQuota,
            Rejection::TooLarge { .. }
            | Rejection::TooMany { .. }
            | Rejection::Invalid { .. }
            | Rejection::WrongComputer(..) => RejectionKind::Invalid,
            Rejection::PartitionFree(_)
            | Rejection::PartitionBusy { .. }
            | Rejection::BeingDestroyed(_) => RejectionKind::Conflict,
        }
    }
}
