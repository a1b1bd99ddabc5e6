//! Who may do what: the master's one authorisation policy, plain code without IO.
//!
//! Every call on every transport is an [`Operation`]: [`grpc_operation`] names the operation of
//! each gRPC method, [`slap_operation`] that of each SLAP call; a call neither names is refused.
//! [`decide`] answers whether an actor may perform an operation on its [`Target`], from facts
//! the caller read first: the services ask it before they read or write, and `apply.rs` asks it
//! again for every command, from the replicated state, so that every replica decides the same
//! and no write path decides alone. A refusal is a [`Refusal`], which each transport maps once
//! (gRPC `PermissionDenied`, SLAP 403, a command's `Rejection::NotAllowed`).
//!
//! The rules, by who calls:
//! - **operators** administer the cluster (membership, snapshots, certificates, enrollment
//!   tokens, allocation scopes, computers' certificates and definitions) and may do for any
//!   instance what its owner or its node may, but never report for a computer (software states,
//!   usage): only its node knows;
//! - **replicas** replicate (the Raft service), record the certificates they issue and the
//!   liveness of nodes, and use enrollment tokens on a node's behalf; a replica passing a call on
//!   acts as that call's caller;
//! - **a computer** registers and reads itself, reports its software, bangs itself, posts its
//!   usage, renews its certificate when it is due, and acts for the instances on its
//!   partitions (reports, connection parameters, bangs, renames, their certificates);
//! - **a partition** (the instance on it) reads and acts for itself, requests its children and
//!   reads them and the shared instances it hosts;
//! - **a user** reads the catalog, publishes releases (a release stays its first publisher's),
//!   makes one-time tokens for their own clients' certificates, and, by their role in each
//!   project (the master's project functions):
//!   - as a **customer**, requests instance trees in the project and reads and destroys their
//!     own;
//!   - as a **manager**, also sees, supplies and removes software on the project's computers,
//!     sets their allocation scope (not of a computer closed forever: that is the
//!     operators'), gives people roles in the project, and reads and destroys every tree
//!     requested in it.
//!
//!   Where a request may be *placed* is the computers' allocation scopes' say (`placement.rs`).
//!
//! Anyone, even without a certificate, may enroll with a one-time token (the token is the
//! credential) and ask where the HATEOAS API is.

use std::fmt;

use super::command::Op;
use super::model::{
    Actor, AllocationScope, Computer, ComputerId, Instance, InstanceGuid, PartitionId, Placement,
    ProjectId, ProjectRole, Requester, UserId,
};

/// Declares [`Operation`] and [`Operation::ALL`] from one list, so that the list of every
/// operation cannot miss one.
macro_rules! operations {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Everything the master offers, on any transport.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Operation {
            $($(#[$doc])* $name,)*
        }

        impl Operation {
            /// Every operation, in declaration order.
            pub const ALL: &[Operation] = &[$(Operation::$name,)*];
        }
    };
}

operations! {
    /// The internal Raft service: append, vote, install a snapshot, forward, read index.
    Replicate,
    /// A replica's own status (replicas and hosted replicas ask each other).
    ReadReplicaStatus,
    ReadClusterStatus,
    ChangeMembership,
    TakeSnapshot,
    ListCertificates,
    IssueCertificate,
    RecordCertificate,
    RevokeCertificate,
    CreateEnrollmentToken,
    UseEnrollmentToken,
    /// A user's one-time token for their client's certificate: operators for anyone, a user
    /// for themselves.
    CreateCredentialToken,
    UseCredentialToken,
    /// A node exchanges a one-time token for its computer's certificate, or a user's client
    /// for the user's.
    Enroll,
    RecordLiveness,
    /// Where the HATEOAS API is: a constant answer.
    Discover,

    /// The list of computers (a manager's: their projects').
    ListComputers,
    RegisterComputer,
    /// What a node polls: its partitions with their instances' parameters.
    ReadComputer,
    /// A computer as its operators see it: partitions and their occupants, its software.
    InspectComputer,
    SetAllocationScope,
    ReportSoftware,
    BangComputer,
    PostUsage,
    ReadUsage,
    /// A computer's own certificate (SLAP `generate`/`revokeComputerCertificate`).
    ManageComputerCertificate,
    /// A computer renews the certificate it calls with, once it is due.
    RenewCertificate,

    ReadCatalog,
    PublishSoftwareRelease,
    Supply,

    RequestInstance,
    ListInstances,
    ReadInstance,
    DestroyInstance,
    /// What a partition's node or instance reads of it (its parameters, its tree's addresses).
    ReadPartition,
    ReportInstance,
    PublishConnection,
    BangInstance,
    RenameInstance,
    /// The certificate of the instance on a partition.
    FetchPartitionCertificate,
    /// A replica binds a certificate it issued to the instance on a partition.
    BindInstanceCertificate,

    CreateProject,
    /// A project's record and members (or the list of the caller's projects).
    ReadProject,
    /// Gives people roles in a project, or removes them.
    ManageProjectMembers,
    /// Hands a computer to another project.
    MoveComputer,
    /// Sets a user's quota, or everyone's default.
    SetQuota,
    /// A user's quota and what they hold against it.
    ReadQuota,
    /// Alerts (the list is filtered): an instance's for its owner, a project's for its
    /// managers, every one for operators.
    ReadAlerts,
}

impl Operation {
    /// The operation as a verb phrase, for refusals: "user bob may not {verb} {target}".
    pub fn verb(self) -> &'static str {
        use Operation::*;
        match self {
            Replicate => "replicate to",
            ReadReplicaStatus | ReadClusterStatus => "read the status of",
            ChangeMembership => "change the membership of",
            TakeSnapshot => "take a snapshot of",
            ListCertificates => "list the certificates of",
            IssueCertificate => "issue certificates for",
            RecordCertificate => "record certificates in",
            RevokeCertificate => "revoke certificates of",
            CreateEnrollmentToken => "create enrollment tokens for",
            UseEnrollmentToken => "use enrollment tokens of",
            CreateCredentialToken => "create credential tokens for",
            UseCredentialToken => "use credential tokens of",
            Enroll => "enroll in",
            RecordLiveness => "record node liveness in",
            Discover => "discover",
            ListComputers => "list the computers of",
            RegisterComputer => "register",
            ReadComputer | InspectComputer | ReadCatalog | ReadInstance | ReadPartition => "read",
            SetAllocationScope => "set the allocation scope of",
            ReportSoftware => "report software for",
            BangComputer | BangInstance => "bang",
            PostUsage => "post usage for",
            ReadUsage => "read the usage of",
            ManageComputerCertificate => "manage the certificate of",
            RenewCertificate => "renew a certificate in",
            PublishSoftwareRelease => "publish",
            Supply => "supply software to",
            RequestInstance => "request instances in",
            ListInstances => "list the instances of",
            DestroyInstance => "destroy",
            ReportInstance => "report for",
            PublishConnection => "publish connection parameters for",
            RenameInstance => "rename the instance on",
            FetchPartitionCertificate => "fetch the certificate of",
            BindInstanceCertificate => "bind instance certificates in",
            CreateProject => "create projects in",
            ReadProject => "read",
            ManageProjectMembers => "manage the members of",
            MoveComputer => "move computers of",
            SetQuota => "set the quotas of",
            ReadQuota => "read the quota of",
            ReadAlerts => "read the alerts of",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// The operation of a gRPC method, by its path (`/package.Service/Method`); `None` for a
/// method the policy does not know, which is refused.
pub fn grpc_operation(path: &str) -> Option<Operation> {
    use Operation::*;
    let (service, method) = path.strip_prefix("/slapcluster.v1.")?.split_once('/')?;
    Some(match (service, method) {
        (
            "Raft",
            "AppendEntries" | "StreamAppend" | "Vote" | "PreVote" | "InstallSnapshot" | "Forward"
            | "ReadIndex" | "TransferLeader" | "Ping",
        ) => Replicate,
        ("Admin", "ClusterStatus") => ReadClusterStatus,
        ("Admin", "ReplicaStatus") => ReadReplicaStatus,
        ("Admin", "AddMember" | "PromoteMember" | "RemoveMember" | "TransferLeader") => {
            ChangeMembership
        }
        ("Admin", "Snapshot") => TakeSnapshot,
        ("Admin", "RevokeCertificate") => RevokeCertificate,
        ("Admin", "CreateEnrollmentToken") => CreateEnrollmentToken,
        ("Admin", "CreateCredentialToken") => CreateCredentialToken,
        ("Admin", "ListComputers") => ListComputers,
        ("Admin", "ShowComputer") => InspectComputer,
        ("Admin", "SetAllocationScope") => SetAllocationScope,
        ("Admin", "ListCertificates") => ListCertificates,
        ("Admin", "IssueCertificate") => IssueCertificate,
        ("Admin", "CreateProject") => CreateProject,
        ("Admin", "ListProjects" | "ShowProject") => ReadProject,
        ("Admin", "SetProjectMember") => ManageProjectMembers,
        ("Admin", "MoveComputer") => MoveComputer,
        ("Admin", "SetQuota") => SetQuota,
        ("Admin", "ShowQuota") => ReadQuota,
        ("Node", "RegisterComputer") => RegisterComputer,
        ("Node", "PollComputer") => ReadComputer,
        ("Node", "ReportSoftware") => ReportSoftware,
        ("Node", "ReportInstance") => ReportInstance,
        ("Node", "PublishConnection") => PublishConnection,
        ("Node", "PostUsage") => PostUsage,
        ("Node", "Enroll") => Enroll,
        ("Node", "RenewCertificate") => RenewCertificate,
        ("User", "ListSoftwareReleases") => ReadCatalog,
        ("User", "PublishSoftwareRelease") => PublishSoftwareRelease,
        ("User", "Supply") => Supply,
        ("User", "RequestInstance") => RequestInstance,
        ("User", "ShowInstance") => ReadInstance,
        ("User", "ListInstances") => ListInstances,
        ("User", "DestroyInstance") => DestroyInstance,
        ("User", "Usage") => ReadUsage,
        ("User", "ListAlerts") => ReadAlerts,
        _ => return None,
    })
}

/// The operation of a SLAP call, by its name; `None` for a call the policy does not know,
/// which is refused.
pub fn slap_operation(call: &str) -> Option<Operation> {
    use Operation::*;
    Some(match call {
        "getFullComputerInformation" | "getComputerInformation" | "getComputerStatus" => {
            ReadComputer
        }
        "registerComputerPartition" | "getHostingSubscriptionIpList" => ReadPartition,
        "getComputerPartitionStatus" => ReadInstance,
        "getComputerPartitionCertificate" => FetchPartitionCertificate,
        "buildingSoftwareRelease"
        | "availableSoftwareRelease"
        | "destroyedSoftwareRelease"
        | "softwareReleaseError" => ReportSoftware,
        "startedComputerPartition"
        | "stoppedComputerPartition"
        | "destroyedComputerPartition"
        | "softwareInstanceError"
        | "updateComputerPartitionRelatedInstanceList" => ReportInstance,
        "useComputer" => PostUsage,
        "loadComputerConfigurationFromXML" => RegisterComputer,
        // Answers whether the computer exists: computers register themselves.
        "requestComputer" => ReadComputer,
        "computerBang" => BangComputer,
        "getHateoasUrl" => Discover,
        // Searches and documents of the caller's own, decided again on each (`slap/hateoas.rs`).
        "hateoas" => ListInstances,
        "requestComputerPartition" => RequestInstance,
        "setComputerPartitionConnectionXml" => PublishConnection,
        "softwareInstanceBang" => BangInstance,
        "softwareInstanceRename" => RenameInstance,
        "supplySupply" => Supply,
        "getSoftwareReleaseListFromSoftwareProduct" => ReadCatalog,
        "generateComputerCertificate" | "revokeComputerCertificate" => ManageComputerCertificate,
        // The master's web methods behind `slapos node register` and `slapos configure
        // client`: the token in the call is the credential (`slap/tokens.rs`).
        "Person_requestComputer" | "Person_getCertificate" => Enroll,
        _ => return None,
    })
}

/// The operation of a web panel route, by its name (`panel/route.rs`); `None` for a route the
/// policy does not know, which is refused.
pub fn panel_operation(route: &str) -> Option<Operation> {
    use Operation::*;
    Some(match route {
        // The caller's own trees, as ListInstances.
        "home" => ListInstances,
        "instance" => ReadInstance,
        // Requesting the tree again in another state, as `slapos request --state` does.
        "set state" | "request" => RequestInstance,
        "destroy" => DestroyInstance,
        "request form" => ReadCatalog,
        "alerts" => ReadAlerts,
        "computers" => ListComputers,
        "computer" => InspectComputer,
        "members" => ReadProject,
        // What the operators' status page shows.
        "pending" | "cluster" => ReadClusterStatus,
        _ => return None,
    })
}

/// The target of an operation on a computer: its project, the caller's role there, and the
/// computer with its allocation scope.
pub fn computer_target(computer: &Computer, role: Option<ProjectRole>) -> Target<'_> {
    Target::Project(ProjectFacts {
        project: &computer.project,
        role,
        computer: Some((&computer.id, computer.allocation_scope)),
    })
}

/// The operation of a command: `apply.rs` decides every command again, from the replicated
/// state, whichever transport proposed it.
pub fn command_operation(op: &Op) -> Operation {
    use Operation::*;
    match op {
        Op::PublishSoftwareRelease { .. } => PublishSoftwareRelease,
        Op::RegisterComputer(_) => RegisterComputer,
        Op::SetAllocationScope { .. } => SetAllocationScope,
        Op::Supply { .. } => Supply,
        Op::ReportSoftware { .. } => ReportSoftware,
        Op::RequestInstance(_) => RequestInstance,
        Op::PublishConnection { .. } => PublishConnection,
        Op::ReportInstance { .. } | Op::UpdateRelatedInstances { .. } => ReportInstance,
        Op::DestroyInstance { .. } => DestroyInstance,
        Op::BangInstance { .. } => BangInstance,
        Op::BangComputer { .. } => BangComputer,
        Op::RenameInstance { .. } => RenameInstance,
        Op::PostUsage { .. } | Op::PostUsageReports { .. } => PostUsage,
        Op::RecordLiveness { .. } | Op::CheckSilence { .. } => RecordLiveness,
        Op::RecordCertificate { .. } => RecordCertificate,
        Op::RevokeCertificate { .. } => RevokeCertificate,
        Op::CreateEnrollmentToken { .. } => CreateEnrollmentToken,
        Op::UseEnrollmentToken { .. } => UseEnrollmentToken,
        Op::CreateCredentialToken { .. } => CreateCredentialToken,
        Op::UseCredentialToken { .. } => UseCredentialToken,
        Op::BindInstanceCertificate { .. } => BindInstanceCertificate,
        Op::CreateProject { .. } => CreateProject,
        Op::SetProjectMember { .. } => ManageProjectMembers,
        Op::MoveComputer { .. } => MoveComputer,
        Op::SetQuota { .. } => SetQuota,
    }
}

/// What an operation is performed on, with the facts the policy needs about it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The cluster itself, or nothing in particular (a list filtered to the caller's own).
    Cluster,
    Computer(&'a ComputerId),
    /// The instance on a partition, acted for by its node or itself.
    Partition(&'a PartitionId),
    Instance(InstanceFacts<'a>),
    /// A catalog entry: who published it, if it exists.
    Release {
        published_by: Option<&'a Actor>,
    },
    /// A project, or one of its computers, with the caller's role in it.
    Project(ProjectFacts<'a>),
    /// A person's own records (their quota).
    Person(&'a UserId),
    /// An alert: whose instance it is about, if an instance's, and the caller's role in its
    /// project.
    Alert {
        owner: Option<&'a UserId>,
        role: Option<ProjectRole>,
    },
}

/// What it takes to decide about a project or one of its computers.
#[derive(Debug, Clone, Copy)]
pub struct ProjectFacts<'a> {
    pub project: &'a ProjectId,
    /// The caller's role in it (a member's, or what the project gives everyone).
    pub role: Option<ProjectRole>,
    /// For an operation on one of its computers: the computer and its allocation scope.
    pub computer: Option<(&'a ComputerId, AllocationScope)>,
}

/// What it takes to decide about an instance.
#[derive(Debug, Clone, Copy)]
pub struct InstanceFacts<'a> {
    pub instance: &'a Instance,
    /// For a shared instance: where its host is placed.
    pub host_placement: Option<&'a Placement>,
    /// For a partition caller: the instance on its partition.
    pub callers_instance: Option<InstanceGuid>,
    /// For a user caller: their role in the instance's project.
    pub role: Option<ProjectRole>,
}

/// Why an actor may not perform an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{actor} may not {operation} {target}")]
pub struct Refusal {
    /// Who asked, as shown to them (`user alice`).
    pub actor: String,
    pub operation: Operation,
    /// What on (`computer COMP-1`, `instance SOFTINST-3`, `the cluster`).
    pub target: String,
}

/// Whether `actor` may perform `operation` on `target`. Pure: the same inputs always give the
/// same answer, on every replica.
pub fn decide(actor: &Actor, operation: Operation, target: Target<'_>) -> Result<(), Refusal> {
    if allowed(actor, operation, target) {
        Ok(())
    } else {
        Err(Refusal {
            actor: actor.to_string(),
            operation,
            target: describe(target),
        })
    }
}

/// A caller of a kind that may attempt the operation at all ([`may_attempt`]), on a target
/// that is its own where the operation has one.
fn allowed(actor: &Actor, operation: Operation, target: Target<'_>) -> bool {
    may_attempt(actor, operation) && on_target(actor, operation, target)
}

/// What the target adds to [`may_attempt`], for the operations performed on something.
fn on_target(actor: &Actor, operation: Operation, target: Target<'_>) -> bool {
    use Operation::*;
    let operator = matches!(actor, Actor::Operator(_));
    let replica = matches!(actor, Actor::Replica(_));
    match operation {
        RegisterComputer | BangComputer | ReportSoftware | PostUsage | ReadComputer | ReadUsage => {
            operator || replica || is_computer(actor, target)
        }
        PublishSoftwareRelease => match target {
            // A release stays its first publisher's; anyone may publish a new one.
            Target::Release { published_by } => {
                operator || published_by.is_none_or(|by| by == actor)
            }
            _ => false,
        },
        ReadInstance => match target {
            Target::Instance(facts) => may_read_instance(actor, facts),
            _ => false,
        },
        DestroyInstance => match target {
            Target::Instance(facts) => {
                operator
                    || facts.role == Some(ProjectRole::Manager)
                    || matches!(actor, Actor::User(user) if *user == facts.instance.owner)
            }
            _ => false,
        },
        // A root request is made in a project the requester belongs to; an instance requests
        // its children in its own tree's project.
        RequestInstance => match target {
            Target::Project(facts) => operator || facts.role.is_some(),
            _ => matches!(actor, Actor::Partition(_)),
        },
        Supply | ManageProjectMembers => match target {
            Target::Project(facts) => operator || facts.role == Some(ProjectRole::Manager),
            _ => false,
        },
        SetAllocationScope => match target {
            Target::Project(facts) => {
                operator
                    || (facts.role == Some(ProjectRole::Manager)
                        && facts
                            .computer
                            .is_some_and(|(_, scope)| scope != AllocationScope::CloseForever))
            }
            _ => false,
        },
        // The computer itself, or its project's managers.
        InspectComputer => match target {
            Target::Project(facts) => {
                operator
                    || replica
                    || facts.role == Some(ProjectRole::Manager)
                    || matches!((actor, facts.computer), (Actor::Computer(own), Some((id, _))) if own == id)
            }
            _ => operator || replica || is_computer(actor, target),
        },
        // Their own, or anyone's (and the default) for an operator.
        ReadQuota | CreateCredentialToken => match target {
            Target::Person(user) => {
                operator || matches!(actor, Actor::User(own) if own == user)
            }
            _ => operator,
        },
        ReadAlerts => match target {
            Target::Alert { owner, role } => {
                operator
                    || role == Some(ProjectRole::Manager)
                    || matches!((actor, owner), (Actor::User(user), Some(owner)) if user == owner)
            }
            // The list itself, filtered alert by alert.
            _ => true,
        },
        // One project's record, or (on the cluster) the list of the caller's own.
        ReadProject => match target {
            Target::Project(facts) => operator || facts.role.is_some(),
            _ => true,
        },
        ReadPartition
        | ReportInstance
        | PublishConnection
        | BangInstance
        | RenameInstance
        | FetchPartitionCertificate => operator || acts_for_partition(actor, target),
        // Performed on the cluster, or on what the caller owns by definition.
        Replicate
        | ReadReplicaStatus
        | ReadClusterStatus
        | ChangeMembership
        | TakeSnapshot
        | ListCertificates
        | IssueCertificate
        | RecordCertificate
        | RevokeCertificate
        | CreateEnrollmentToken
        | UseEnrollmentToken
        | UseCredentialToken
        | Enroll
        | RecordLiveness
        | Discover
        | ManageComputerCertificate
        | ReadCatalog
        | ListInstances
        // Filtered to what the caller may inspect.
        | ListComputers
        | BindInstanceCertificate
        | CreateProject
        | MoveComputer
        | SetQuota
        // Its own identity's, by definition.
        | RenewCertificate => true,
    }
}

/// The computer itself (or the computer of the partition targeted).
fn is_computer(actor: &Actor, target: Target<'_>) -> bool {
    match (actor, target) {
        (Actor::Computer(own), Target::Computer(computer)) => own == computer,
        _ => false,
    }
}

/// Whether `actor` may perform `operation` on anything at all: the gate's check, made from a
/// call's headers before its body is read; the handler then decides on the target. [`decide`]
/// only narrows it by the target, so the gate never refuses what `decide` would allow.
pub fn may_attempt(actor: &Actor, operation: Operation) -> bool {
    use Operation::*;
    let operator = matches!(actor, Actor::Operator(_));
    let replica = matches!(actor, Actor::Replica(_));
    let computer = matches!(actor, Actor::Computer(_));
    let partition = matches!(actor, Actor::Partition(_));
    let human = matches!(actor, Actor::User(_) | Actor::Operator(_));
    match operation {
        Enroll | Discover | ReadReplicaStatus | ReadCatalog | ReadInstance => true,
        Replicate | UseEnrollmentToken | UseCredentialToken | BindInstanceCertificate => replica,
        RecordCertificate | RecordLiveness => replica || operator,
        ReadClusterStatus
        | ChangeMembership
        | TakeSnapshot
        | ListCertificates
        | IssueCertificate
        | RevokeCertificate
        | CreateEnrollmentToken
        | ManageComputerCertificate
        | CreateProject
        | MoveComputer
        | SetQuota => operator,
        RegisterComputer | BangComputer => operator || computer,
        ReportSoftware | PostUsage | RenewCertificate => computer,
        ReadComputer | ReadUsage => operator || replica || computer,
        InspectComputer => operator || replica || computer || human,
        PublishSoftwareRelease
        | Supply
        | ListInstances
        | DestroyInstance
        | SetAllocationScope
        | ReadProject
        | ManageProjectMembers
        | ListComputers
        | ReadQuota
        | ReadAlerts
        | CreateCredentialToken => human,
        RequestInstance => human || partition,
        ReadPartition
        | ReportInstance
        | PublishConnection
        | BangInstance
        | RenameInstance
        | FetchPartitionCertificate => operator || computer || partition,
    }
}

/// The instance on the partition, or its computer's node.
fn acts_for_partition(actor: &Actor, target: Target<'_>) -> bool {
    match (actor, target) {
        (Actor::Partition(own), Target::Partition(partition)) => own == partition,
        (Actor::Computer(own), Target::Partition(partition)) => *own == partition.computer,
        _ => false,
    }
}

/// A user reads their own instances; a computer what runs on it and the shared instances it
/// hosts; a partition its own instance, its children and the shared instances it hosts.
fn may_read_instance(actor: &Actor, facts: InstanceFacts<'_>) -> bool {
    let instance = facts.instance;
    let on_computer = |placement: Option<&Placement>, computer: &ComputerId| matches!(placement, Some(Placement::Partition(p)) if p.computer == *computer);
    match actor {
        Actor::User(user) => instance.owner == *user || facts.role == Some(ProjectRole::Manager),
        Actor::Computer(computer) => {
            on_computer(Some(&instance.placement), computer)
                || on_computer(facts.host_placement, computer)
        }
        Actor::Partition(_) => facts.callers_instance.is_some_and(|mine| {
            instance.guid == mine
                || instance.requester == Requester::Instance(mine)
                || instance.placement == Placement::Hosted { host: mine }
        }),
        Actor::Operator(_) | Actor::Replica(_) => true,
    }
}

fn describe(target: Target<'_>) -> String {
    match target {
        Target::Cluster => "the cluster".to_string(),
        Target::Computer(computer) => format!("computer {computer}"),
        Target::Partition(partition) => format!("partition {partition}"),
        Target::Instance(facts) => format!("instance {}", facts.instance.guid),
        Target::Release { .. } => "this software release".to_string(),
        Target::Project(ProjectFacts {
            project,
            computer: Some((computer, _)),
            ..
        }) => format!("computer {computer} of project {project}"),
        Target::Project(facts) => format!("project {}", facts.project),
        Target::Person(user) => format!("user {user}"),
        Target::Alert { .. } => "this alert".to_string(),
    }
}

#[cfg(test)]
mod tests;
