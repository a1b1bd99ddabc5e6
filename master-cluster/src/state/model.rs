//! The SlapOS master's domain: computers and their partitions, software releases and supply,
//! instances (requested by users or by other instances) and where they are placed, usage.
//!
//! These are the records stored in the state machine's tables. Names follow the SlapOS design
//! document and the SLAP protocol (`shared/slap-protocol.md`), so the HTTP compatibility layer
//! can map one to one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, assigned by the replica that proposed the command, so
/// that every replica applies the same time.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

string_id!(
    /// A computer's reference, e.g. `COMP-1234`.
    ComputerId
);
string_id!(
    /// A partition's reference on its computer, e.g. `slappart3`.
    PartitionRef
);
string_id!(
    /// A user (person or organisation) that requests instances.
    UserId
);
string_id!(
    /// A software release, identified by the URL of its profile.
    SoftwareReleaseUrl
);
string_id!(
    /// A project (the master's "virtual master"): people with a role in it, the computers it
    /// runs and the instance trees requested in it. E.g. `PROJ-ACME`.
    ProjectId
);

impl ProjectId {
    /// The project everything created before projects belongs to, and where a user's request
    /// goes when they belong to no other. It exists without a record; by default every user is
    /// one of its customers (a record created for it can say otherwise).
    pub fn default_project() -> Self {
        Self(DEFAULT_PROJECT.to_string())
    }
}

/// The name of [`ProjectId::default_project`].
pub const DEFAULT_PROJECT: &str = "default";

/// What a person may do in a project, as the master's project functions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProjectRole {
    /// `production/manager`: runs the project's computers (supplies software, sets their
    /// allocation scope), invites people, and sees and acts on every instance tree in it.
    Manager,
    /// `customer`: requests instance trees in the project and acts on their own.
    Customer,
}

impl ProjectRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "manager" => Some(Self::Manager),
            "customer" => Some(Self::Customer),
            _ => None,
        }
    }
}

/// A project as the master records it; its members are kept apart (`project_members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub title: String,
    /// The role every user has in it without being a member (the default project's customers).
    pub everyone: Option<ProjectRole>,
    pub created_at: Timestamp,
}

impl Project {
    /// The default project as it is without a record.
    pub fn implicit_default() -> Self {
        Self {
            id: ProjectId::default_project(),
            title: "Default project".to_string(),
            everyone: Some(ProjectRole::Customer),
            created_at: Timestamp(0),
        }
    }
}

/// How much of the master one user may hold (`quotas`, set by operators; [`Quota::DEFAULT`]
/// until they do): instance requests that exist (until their node reports them destroyed),
/// those of them waiting for a partition or a host, and the bytes of their parameters. Without
/// it one user could fill every free partition and the state with megabyte parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub instances: u64,
    pub pending: u64,
    pub parameter_bytes: u64,
}

impl Quota {
    /// Far above one person's use of a SlapOS master (its shared-hosting users hold tens to
    /// hundreds of instances), far below what fills a large cluster.
    pub const DEFAULT: Self = Self {
        instances: 1_000,
        pending: 100,
        parameter_bytes: 256 << 20,
    };
}

/// What one user holds against their [`Quota`] (`holdings`), kept by the state machine as
/// their instances are created, placed, changed and forgotten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub instances: u64,
    pub pending: u64,
    pub parameter_bytes: u64,
}

/// One computer partition, named by its computer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    pub computer: ComputerId,
    pub partition: PartitionRef,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.computer, self.partition)
    }
}

/// An instance's stable identity: never reused, unchanged by renames. Shown as `SOFTINST-n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceGuid(pub u64);

impl fmt::Display for InstanceGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOFTINST-{}", self.0)
    }
}

impl InstanceGuid {
    /// Parses `SOFTINST-n`.
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("SOFTINST-")?.parse().ok().map(Self)
    }
}

/// Who issued a command; recorded in the audit trail. The services authenticate it (from the
/// caller's certificate) and authorise reads; apply decides which commands it may issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    User(UserId),
    Operator(UserId),
    Computer(ComputerId),
    Partition(PartitionId),
    Replica(u64),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "user {u}"),
            Self::Operator(u) => write!(f, "operator {u}"),
            Self::Computer(c) => write!(f, "computer {c}"),
            Self::Partition(p) => write!(f, "partition {p}"),
            Self::Replica(r) => write!(f, "replica {r}"),
        }
    }
}

/// Whether, and for whom, the marketplace places new instances on a computer: the master's
/// allocation scope categories. A closed computer keeps the instances it has (their nodes
/// keep serving them, their owners may change or destroy them); only new placements stop.
///
/// Stored by variant position: new scopes are added at the end. The first two are what
/// records written before projects call `Open` and `Closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationScope {
    /// `open/public`: instance trees of every project.
    OpenPublic,
    /// `close/noallocation`: its project does not want new instances for now.
    CloseNoAllocation,
    /// `open/project`: instance trees of its own project.
    OpenProject,
    /// `open/personal`: instance trees its project's managers request, for their own use.
    OpenPersonal,
    /// `close/maintenance`: closed for a scheduled maintenance.
    CloseMaintenance,
    /// `close/termination`: closed because the computer will be retired.
    CloseTermination,
    /// `close/forever`: retired; only an operator may open it again.
    CloseForever,
}

impl AllocationScope {
    pub const ALL: [AllocationScope; 7] = [
        Self::OpenPublic,
        Self::OpenProject,
        Self::OpenPersonal,
        Self::CloseNoAllocation,
        Self::CloseMaintenance,
        Self::CloseTermination,
        Self::CloseForever,
    ];

    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::OpenPublic | Self::OpenProject | Self::OpenPersonal
        )
    }

    /// The master's category name (`open/public`, `close/forever`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenPublic => "open/public",
            Self::OpenProject => "open/project",
            Self::OpenPersonal => "open/personal",
            Self::CloseNoAllocation => "close/noallocation",
            Self::CloseMaintenance => "close/maintenance",
            Self::CloseTermination => "close/termination",
            Self::CloseForever => "close/forever",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for AllocationScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address of a partition, as `slapos node format` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAddress {
    pub addr: String,
    pub netmask: String,
}

/// What a node declares about itself when it registers (the computer definition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerDefinition {
    pub id: ComputerId,
    pub address: Option<String>,
    pub netmask: Option<String>,
    pub instance_root: Option<String>,
    pub software_root: Option<String>,
    pub os_type: Option<String>,
    /// SLA attributes (`region`, `cpu_type`, `network_guid`, ...). `None` keeps what the
    /// master knows; a node that does not know its attributes leaves them to the operator.
    pub attributes: Option<BTreeMap<String, String>>,
    pub capabilities: Option<BTreeSet<String>>,
    pub partitions: Vec<PartitionDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDefinition {
    pub reference: PartitionRef,
    pub path: Option<String>,
    pub addresses: Vec<NetworkAddress>,
    pub tap: Option<String>,
    pub user: Option<String>,
}

/// A computer as the master knows it. Its partitions are separate records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computer {
    pub id: ComputerId,
    pub address: Option<String>,
    pub netmask: Option<String>,
    pub instance_root: Option<String>,
    pub software_root: Option<String>,
    pub os_type: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: BTreeSet<String>,
    pub allocation_scope: AllocationScope,
    /// The project that runs it: its managers supply its software and set its scope.
    pub project: ProjectId,
    pub partition_count: u32,
    /// Partitions without an instance. Kept in step with the partitions by every command that
    /// places or frees one (the placement index orders computers by it).
    pub free_count: u32,
    pub registered_at: Timestamp,
    /// When the node last reported its capacity (registered its definition).
    pub capacity_reported_at: Timestamp,
    pub last_bang: Option<Bang>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bang {
    pub at: Timestamp,
    pub message: String,
}

/// A computer partition: a user, a directory, addresses and a tap. Which instance holds it is
/// kept apart (the `occupants` table), so that placing an instance does not rewrite this
/// record: it changes only when the node registers a new definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub reference: PartitionRef,
    /// Sort order among the computer's partitions: the number in `slappartN` (so that
    /// `slappart2` comes before `slappart10`), or the definition's order for other names.
    pub ordinal: u64,
    pub path: Option<String>,
    pub addresses: Vec<NetworkAddress>,
    pub tap: Option<String>,
    pub user: Option<String>,
}

/// A software release in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareRelease {
    pub url: SoftwareReleaseUrl,
    pub title: String,
    pub software_types: BTreeSet<String>,
    pub published_by: Actor,
    pub published_at: Timestamp,
}

/// What the master asks a computer to do with a software release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupplyState {
    Available,
    Destroyed,
}

/// What the node last reported about a software release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SoftwareState {
    Building,
    Available,
    Error { log: String },
    Destroyed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub requested: SupplyState,
    pub reported: Option<SoftwareState>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedState {
    Started,
    Stopped,
    Destroyed,
}

impl RequestedState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Destroyed => "destroyed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedState {
    Started,
    Stopped,
    Destroyed,
}

/// Where an instance runs, or why it does not run yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Waits for capacity; placed as soon as a matching partition (or host) appears.
    Pending { reason: String },
    /// Can never be placed as requested (an unknown SLA key, say); requesting it again with
    /// other conditions tries again.
    Unplaceable { reason: String },
    /// A normal instance on its partition.
    Partition(PartitionId),
    /// A shared instance, hosted by a normal instance.
    Hosted { host: InstanceGuid },
}

/// Who requested an instance: a user (it is the root of a request tree) or another instance
/// (from inside its partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requester {
    User(UserId),
    Instance(InstanceGuid),
}

/// An instance (a software instance, or a shared "slave" instance). Its parameters and
/// connection parameters are stored apart, so that frequent small updates (reported state,
/// timestamps) do not rewrite them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub guid: InstanceGuid,
    pub owner: UserId,
    /// The project its tree was requested in (a child's is its root's).
    pub project: ProjectId,
    pub title: String,
    /// The root of the request tree (itself for a root).
    pub root: InstanceGuid,
    pub requester: Requester,
    pub software_release: SoftwareReleaseUrl,
    pub software_type: String,
    pub sla: BTreeMap<String, String>,
    pub shared: bool,
    /// For a shared instance: how its host names it in `slave_instance_list` (its guid).
    pub shared_reference: Option<String>,
    pub requested_state: RequestedState,
    pub placement: Placement,
    pub reported_state: Option<ReportedState>,
    pub last_error: Option<String>,
    /// The last status the node reported, sent back so that nodes do not re-post it.
    pub access_status: Option<String>,
    /// Changes whenever the node must reprocess the partition (state, software, type,
    /// parameters, hosted shared instances, a child's connection parameters).
    pub timestamp: Timestamp,
    pub created_at: Timestamp,
    /// Set when the node reported the instance destroyed while children still existed: the
    /// partition is freed when the last child is gone.
    pub destroyed_reported: bool,
}

/// Instance and connection parameters: names to string values, as SLAP carries them.
pub type Parameters = BTreeMap<String, String>;

/// Resource use of one partition over one period, as posted by its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub partition: PartitionRef,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub movements: Vec<UsageMovement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageMovement {
    /// E.g. `CPU Consumption`.
    pub resource: String,
    /// E.g. `cpu`, `memory`, `disk`, `network`, or anything an instance reports.
    pub category: String,
    pub quantity: f64,
}

/// A usage report as a SlapOS node posts it: one transaction of the TioXML journal of `slapos
/// node report` or `slapos node collect`, with every field it carries. A report posted again
/// (the node timed out waiting for the answer) is the same report: see [`UsageReport::same`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The transaction's reference: the computer's (`node report`), `<date>-global` (`node
    /// collect`).
    pub reference: String,
    pub title: String,
    /// As the node wrote them: local times without a zone (`2026-12-05 00:00:00`).
    pub start_date: String,
    pub stop_date: String,
    pub currency: String,
    pub payment_mode: String,
    pub category: String,
    /// When the replica that took it received it.
    pub received_at: Timestamp,
    pub movements: Vec<ReportedMovement>,
}

impl UsageReport {
    /// Whether `other` reports the same as this one, whenever it was received.
    pub fn same(&self, other: &UsageReport) -> bool {
        self == &UsageReport {
            received_at: self.received_at,
            ..other.clone()
        }
    }
}

/// One movement of a [`UsageReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedMovement {
    pub resource: String,
    pub title: String,
    /// As the node wrote it: a partition, a partition's user (`node collect`), or the computer.
    pub reference: String,
    /// The partition `reference` names, by its reference or its user (when only one partition
    /// has that user); `None` for the computer as a whole.
    pub partition: Option<PartitionRef>,
    pub quantity: f64,
    pub price: f64,
    /// As written: a rate, `None`, or empty.
    pub vat: String,
    pub category: String,
}

/// A certificate a replica issued, as the cluster records it (the certificate itself stays
/// with its holder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Lowercase hex, as `ca::Serial` prints it.
    pub serial: String,
    /// The identity URI it carries (`urn:slapcluster:ROLE:ID`).
    pub identity: String,
    pub not_after: Timestamp,
    pub issued_at: Timestamp,
    pub issued_by: Actor,
}

/// The certificate of an instance that runs on a partition: one key and certificate, bound to
/// the instance (never to the partition's later occupants), returned unchanged to its node on
/// every call until it is due for renewal, and revoked with every earlier one when the
/// node has destroyed the instance and its partition is freed. The key is kept in the replicated state, as the SlapOS master keeps
/// it on the instance, because the node fetches it anew for the partition on every run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCertificate {
    pub partition: PartitionId,
    /// The current certificate's serial (lowercase hex).
    pub serial: String,
    /// Its chain, leaf first, in PEM.
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Every serial ever bound to the instance, the current one last.
    pub serials: Vec<String>,
}

/// A one-time token with which a new computer's node obtains its first certificate. Only its
/// hash is stored: the token itself travels once, from the operator to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub computer: ComputerId,
    pub expires_at: Timestamp,
    pub issued_by: Actor,
    /// When a node used it; a token is good once.
    pub used_at: Option<Timestamp>,
}

/// A one-time token with which a user's client obtains a certificate of the user's
/// (`slapos configure client --token`). Only its hash is stored, as for [`EnrollmentToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialToken {
    pub user: UserId,
    pub expires_at: Timestamp,
    pub issued_by: Actor,
    /// When a client used it; a token is good once.
    pub used_at: Option<Timestamp>,
}

/// A revoked certificate: every replica refuses it from the moment this is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: Timestamp,
    pub by: Actor,
    pub reason: String,
}

/// One accepted change: who, when, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Timestamp,
    pub actor: Actor,
    pub action: String,
    pub target: String,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertSubject {
    Instance(InstanceGuid),
    Computer(ComputerId),
}

impl fmt::Display for AlertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertSubject::Instance(guid) => write!(f, "instance {guid}"),
            AlertSubject::Computer(computer) => write!(f, "computer {computer}"),
        }
    }
}

/// An alert: open while its subject's status is failing (`status.rs`), closed when the
/// subject recovers or is gone. Opened and closed as commands are applied, so every replica
/// has the same alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub subject: AlertSubject,
    /// How people name the subject: the instance's title, the computer's id.
    pub title: String,
    /// Who may read it besides operators and the project's managers: the instance's owner.
    pub owner: Option<UserId>,
    /// The instance's or the computer's project.
    pub project: ProjectId,
    pub opened_at: Timestamp,
    /// The failing status's words when it opened.
    pub reason: String,
    pub closed_at: Option<Timestamp>,
    /// The status's words when it closed (or that the subject is gone).
    pub closed_because: Option<String>,
}
