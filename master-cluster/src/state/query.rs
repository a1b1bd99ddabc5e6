//! Reads of the master's state, each from one consistent read transaction (raft-store's
//! `StateMachineStore::begin_read`). These are what the services answer: a node's poll, an
//! instance, a user's instances, the catalog, usage, the audit trail, and why an instance is
//! not placed.

use redb::{ReadableTable, ReadableTableMetadata};

use super::keys::Key;
use super::model::{
    Actor, Alert, AlertSubject, AuditRecord, Computer, ComputerId, EnrollmentToken, Holding,
    Instance, InstanceGuid, IssuedCertificate, Parameters, Partition, PartitionRef, Placement,
    Project, ProjectId, ProjectRole, Quota, Revocation, SoftwareRelease, SoftwareReleaseUrl,
    SoftwareState, SupplyState, Timestamp, UsageRecord, UsageReport, UserId,
};
use super::placement::{self, Choice};
use super::status::StatusChange;
use super::tables::{self, StateError, Tables};

type ReadTables = Tables<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;

/// Everything a node needs about its computer: what to install, and every partition with
/// what to run there.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerView {
    pub computer: Computer,
    /// When its node last polled a replica, as of the last liveness summary (not part of the
    /// version: summaries do not wake long-polls).
    pub last_seen: Option<Timestamp>,
    pub software: Vec<SoftwareView>,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareView {
    pub url: SoftwareReleaseUrl,
    pub requested: SupplyState,
    pub reported: Option<SoftwareState>,
}

/// A partition and, unless it is free, the instance it must run.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionView {
    pub partition: Partition,
    pub instance: Option<InstanceView>,
}

/// An instance with everything that is stored apart from it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    pub instance: Instance,
    pub parameters: Parameters,
    pub connection: Parameters,
    pub root_title: String,
    /// Shared instances this instance hosts, with their parameters.
    pub shared_instances: Vec<SharedInstanceView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedInstanceView {
    pub instance: Instance,
    pub parameters: Parameters,
}

pub fn computer_view(
    txn: &redb::ReadTransaction,
    id: &ComputerId,
) -> Result<Option<ComputerView>, StateError> {
    let t = Tables::open_read(txn)?;
    let Some(computer) = t.computer(id)? else {
        return Ok(None);
    };
    let software = t
        .supplies_of(id)?
        .into_iter()
        .map(|(url, supply)| SoftwareView {
            url,
            requested: supply.requested,
            reported: supply.reported,
        })
        .collect();
    let occupants = t.occupants_of(id)?;
    let mut partitions = Vec::new();
    for partition in t.partitions_of(id)? {
        let instance = match occupants.get(&partition.reference) {
            Some(&guid) => instance_view(&t, guid)?,
            None => None,
        };
        partitions.push(PartitionView {
            partition,
            instance,
        });
    }
    partitions.sort_by_key(|p| p.partition.ordinal);
    Ok(Some(ComputerView {
        last_seen: t.last_seen(id)?.map(Timestamp),
        computer,
        software,
        partitions,
    }))
}

/// The status, as of `now`, of the computer an instance on `placement` runs on (`None` off a
/// partition).
pub fn node_status(
    txn: &redb::ReadTransaction,
    placement: &Placement,
    now: Timestamp,
) -> Result<Option<super::status::Status>, StateError> {
    let Placement::Partition(partition) = placement else {
        return Ok(None);
    };
    let t = Tables::open_read(txn)?;
    let Some(computer) = t.computer(&partition.computer)? else {
        return Ok(None);
    };
    let last_seen = t.last_seen(&computer.id)?.map(Timestamp);
    let silence = super::apply::silence(&t)?;
    Ok(Some(
        super::status::computer(&computer, last_seen, now, silence).status,
    ))
}

/// The log index of the last change to a computer's view (0 if it never changed).
pub fn computer_version(
    txn: &redb::ReadTransaction,
    computer: &ComputerId,
) -> Result<u64, StateError> {
    Tables::open_read(txn)?.computer_version(computer)
}

pub fn instance(
    txn: &redb::ReadTransaction,
    guid: InstanceGuid,
) -> Result<Option<InstanceView>, StateError> {
    instance_view(&Tables::open_read(txn)?, guid)
}

/// The instance on a partition, if any.
pub fn occupant(
    txn: &redb::ReadTransaction,
    partition: &super::model::PartitionId,
) -> Result<Option<InstanceGuid>, StateError> {
    Tables::open_read(txn)?.occupant(&partition.computer, &partition.partition)
}

/// A person's role in a project (`None` for a caller that is not a person).
pub fn role(
    txn: &redb::ReadTransaction,
    actor: &Actor,
    project: &ProjectId,
) -> Result<Option<ProjectRole>, StateError> {
    match actor {
        Actor::User(user) | Actor::Operator(user) => Tables::open_read(txn)?.role(user, project),
        _ => Ok(None),
    }
}

/// `user`'s quota in force, whether it is their own (set for them), and what they hold; for
/// no user, everyone's default, whether an operator set it, and nothing held.
pub fn quota(
    txn: &redb::ReadTransaction,
    user: Option<&UserId>,
) -> Result<(Quota, bool, Holding), StateError> {
    let t = Tables::open_read(txn)?;
    let set = t.quota_set(user)?;
    Ok(match user {
        Some(user) => (t.quota(user)?, set.is_some(), t.holding(user)?),
        None => (
            set.unwrap_or(Quota::DEFAULT),
            set.is_some(),
            Holding::default(),
        ),
    })
}

/// A project's members and their roles.
pub type Members = Vec<(UserId, ProjectRole)>;

/// A project (the default one even without a record) and its members.
pub fn project(
    txn: &redb::ReadTransaction,
    id: &ProjectId,
) -> Result<Option<(Project, Members)>, StateError> {
    let t = Tables::open_read(txn)?;
    let Some(project) = t.project(id)? else {
        return Ok(None);
    };
    let members = t.members(id)?;
    Ok(Some((project, members)))
}

/// Every project, with `user`'s role in each (`None`: every project, roles unset).
pub fn projects(
    txn: &redb::ReadTransaction,
    user: Option<&UserId>,
) -> Result<Vec<(Project, Option<ProjectRole>)>, StateError> {
    let t = Tables::open_read(txn)?;
    let mut out = Vec::new();
    for project in t.projects()? {
        let role = match user {
            Some(user) => t.role(user, &project.id)?,
            None => None,
        };
        out.push((project, role));
    }
    Ok(out)
}

/// The instance on a partition and the certificate bound to it, if any.
pub fn occupant_certificate(
    txn: &redb::ReadTransaction,
    partition: &super::model::PartitionId,
) -> Result<Option<(InstanceGuid, Option<super::model::InstanceCertificate>)>, StateError> {
    let t = Tables::open_read(txn)?;
    let Some(guid) = t.occupant(&partition.computer, &partition.partition)? else {
        return Ok(None);
    };
    let bound = t
        .instance_certificates
        .get(tables::instance_key(guid).as_bytes())?;
    Ok(Some((guid, bound)))
}

/// A partition, if its computer has it.
pub fn partition(
    txn: &redb::ReadTransaction,
    id: &super::model::PartitionId,
) -> Result<Option<Partition>, StateError> {
    Tables::open_read(txn)?.partition(&id.computer, &id.partition)
}

/// Where an instance is placed, if it exists.
pub fn placement_of(
    txn: &redb::ReadTransaction,
    guid: InstanceGuid,
) -> Result<Option<Placement>, StateError> {
    Ok(Tables::open_read(txn)?.instance(guid)?.map(|i| i.placement))
}

/// The instance a user's root title names, if any.
pub fn root_by_title(
    txn: &redb::ReadTransaction,
    owner: &UserId,
    title: &str,
) -> Result<Option<InstanceGuid>, StateError> {
    let t = Tables::open_read(txn)?;
    t.roots.guid_at(&tables::root_key(owner, title))
}

/// The roots a user requested, by title.
pub fn roots_of(
    txn: &redb::ReadTransaction,
    owner: &UserId,
) -> Result<Vec<InstanceGuid>, StateError> {
    let t = Tables::open_read(txn)?;
    t.roots.guid_values(&Key::new().str(owner.as_str()))
}

/// Every instance a user owns: their roots and the trees below them, root by root.
pub fn instances_of(
    txn: &redb::ReadTransaction,
    owner: &UserId,
) -> Result<Vec<Instance>, StateError> {
    let t = Tables::open_read(txn)?;
    let mut out = Vec::new();
    for root in t.roots.guid_values(&Key::new().str(owner.as_str()))? {
        out.extend(tree_in(&t, root)?);
    }
    Ok(out)
}

/// Every instance of the tree rooted at `root`, the root included.
pub fn tree(txn: &redb::ReadTransaction, root: InstanceGuid) -> Result<Vec<Instance>, StateError> {
    tree_in(&Tables::open_read(txn)?, root)
}

fn tree_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    root: InstanceGuid,
) -> Result<Vec<Instance>, StateError> {
    let mut out = Vec::new();
    for guid in t.titles.guid_values(&tables::instance_key(root))? {
        if let Some(instance) = t.instance(guid)? {
            out.push(instance);
        }
    }
    Ok(out)
}

/// The instances another instance requested (its children), oldest first.
pub fn children_of(
    txn: &redb::ReadTransaction,
    parent: InstanceGuid,
) -> Result<Vec<Instance>, StateError> {
    let t = Tables::open_read(txn)?;
    let mut out = Vec::new();
    let children = t
        .children
        .trailing_guids(&tables::instance_key(parent), usize::MAX)?;
    for guid in children {
        if let Some(instance) = t.instance(guid)? {
            out.push(instance);
        }
    }
    Ok(out)
}

/// The `(tap, address)` pairs of every partition of an instance's request tree, as SLAP's
/// `getHostingSubscriptionIpList` returns them.
pub fn tree_addresses(
    txn: &redb::ReadTransaction,
    guid: InstanceGuid,
) -> Result<Vec<(String, String)>, StateError> {
    let t = Tables::open_read(txn)?;
    let Some(instance) = t.instance(guid)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for member in tree_in(&t, instance.root)? {
        if let Placement::Partition(p) = member.placement
            && let Some(partition) = t.partition(&p.computer, &p.partition)?
        {
            let tap = partition.tap.clone().unwrap_or_default();
            out.extend(
                partition
                    .addresses
                    .iter()
                    .map(|a| (tap.clone(), a.addr.clone())),
            );
        }
    }
    Ok(out)
}

pub fn catalog(txn: &redb::ReadTransaction) -> Result<Vec<SoftwareRelease>, StateError> {
    Tables::open_read(txn)?.software_releases()
}

pub fn computers(txn: &redb::ReadTransaction) -> Result<Vec<Computer>, StateError> {
    let t = Tables::open_read(txn)?;
    t.computers.records(&Key::new(), usize::MAX)
}

/// A computer and when its node last polled a replica (as of the last liveness summary).
pub type ComputerLiveness = (Computer, Option<Timestamp>);

/// How many computers there are, and the first `limit` (by id) with when their node last
/// polled a replica.
pub fn computers_with_liveness(
    txn: &redb::ReadTransaction,
    limit: usize,
) -> Result<(u64, Vec<ComputerLiveness>), StateError> {
    let t = Tables::open_read(txn)?;
    let total = t
        .computers
        .len()
        .map_err(|e| StateError::storage("computers", e))?;
    let computers: Vec<Computer> = t.computers.records(&Key::new(), limit)?;
    let mut out = Vec::with_capacity(computers.len());
    for computer in computers {
        let seen = t.last_seen(&computer.id)?.map(Timestamp);
        out.push((computer, seen));
    }
    Ok((total, out))
}

/// How many instances wait for a partition or a host (a count kept by redb: cheap).
pub fn pending_count(txn: &redb::ReadTransaction) -> Result<u64, StateError> {
    let t = Tables::open_read(txn)?;
    let partitions = t
        .pending
        .len()
        .map_err(|e| StateError::storage("pending", e))?;
    let hosts = t
        .pending_shared
        .len()
        .map_err(|e| StateError::storage("pending_shared", e))?;
    Ok(partitions + hosts)
}

/// The first `limit` instances waiting for a partition, then those waiting for a host (each
/// by software release, then guid); their placement says why they wait.
pub fn pending(txn: &redb::ReadTransaction, limit: usize) -> Result<Vec<Instance>, StateError> {
    let t = Tables::open_read(txn)?;
    let mut guids = Vec::new();
    for (key, _) in t.pending.scan(&Key::new(), limit)? {
        guids.push(tables::parse_key("pending", &key, |k| {
            k.str()?;
            k.u64()
        })?);
    }
    let left = limit.saturating_sub(guids.len());
    for (key, _) in t.pending_shared.scan(&Key::new(), left)? {
        guids.push(tables::parse_key("pending_shared", &key, |k| {
            k.str()?;
            k.str()?;
            k.u64()
        })?);
    }
    let mut out = Vec::with_capacity(guids.len());
    for guid in guids {
        if let Some(instance) = t.instance(InstanceGuid(guid))? {
            out.push(instance);
        }
    }
    Ok(out)
}

/// Usage of a computer, or of one of its partitions, with periods starting in
/// `[from, until)` (microseconds; `None` for no bound).
pub fn usage(
    txn: &redb::ReadTransaction,
    computer: &ComputerId,
    partition: Option<&PartitionRef>,
    from: Option<u64>,
    until: Option<u64>,
) -> Result<Vec<UsageRecord>, StateError> {
    let t = Tables::open_read(txn)?;
    let prefix = match partition {
        Some(p) => tables::partition_key(computer, p),
        None => tables::computer_key(computer),
    };
    Ok(t.usage_records(&prefix)?
        .into_iter()
        .filter(|r| from.is_none_or(|f| r.period_start.0 >= f))
        .filter(|r| until.is_none_or(|u| r.period_start.0 < u))
        .collect())
}

/// A computer's usage reports received in `[from, until)` (microseconds; `None` for no
/// bound); for one partition, the reports that name it, with only its movements.
pub fn usage_reports(
    txn: &redb::ReadTransaction,
    computer: &ComputerId,
    partition: Option<&PartitionRef>,
    from: Option<u64>,
    until: Option<u64>,
) -> Result<Vec<UsageReport>, StateError> {
    let t = Tables::open_read(txn)?;
    let reports: Vec<UsageReport> = t
        .usage_reports
        .records(&tables::computer_key(computer), usize::MAX)?;
    Ok(reports
        .into_iter()
        .filter(|r| from.is_none_or(|f| r.received_at.0 >= f))
        .filter(|r| until.is_none_or(|u| r.received_at.0 < u))
        .filter_map(|mut report| {
            if let Some(partition) = partition {
                report
                    .movements
                    .retain(|m| m.partition.as_ref() == Some(partition));
                if report.movements.is_empty() {
                    return None;
                }
            }
            Some(report)
        })
        .collect())
}

/// The serials of every revoked certificate.
pub fn revoked_serials(
    txn: &redb::ReadTransaction,
) -> Result<std::collections::BTreeSet<String>, StateError> {
    let t = Tables::open_read(txn)?;
    t.revocations
        .scan(&Key::new(), usize::MAX)?
        .into_iter()
        .map(|(key, _)| tables::parse_key("revocations", &key, |k| k.str()))
        .collect()
}

/// Every certificate the cluster recorded, by serial, with its revocation if revoked.
/// The enrollment token of `token_hash`, used or not.
pub fn enrollment_token(
    txn: &redb::ReadTransaction,
    token_hash: &str,
) -> Result<Option<EnrollmentToken>, StateError> {
    let t = Tables::open_read(txn)?;
    t.enrollment_tokens
        .get(tables::serial_key(token_hash).as_bytes())
}

pub fn certificates(
    txn: &redb::ReadTransaction,
) -> Result<Vec<(IssuedCertificate, Option<Revocation>)>, StateError> {
    let t = Tables::open_read(txn)?;
    let issued: Vec<IssuedCertificate> = t.certificates.records(&Key::new(), usize::MAX)?;
    let mut out = Vec::with_capacity(issued.len());
    for certificate in issued {
        let key = tables::serial_key(&certificate.serial);
        let revocation = t.revocations.get::<Revocation>(key.as_bytes())?;
        out.push((certificate, revocation));
    }
    Ok(out)
}

/// The oldest `limit` audit records.
pub fn audit(txn: &redb::ReadTransaction, limit: usize) -> Result<Vec<AuditRecord>, StateError> {
    Tables::open_read(txn)?.audit_records(limit)
}

/// Why an instance is where it is, or why it is not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    Placed(Placement),
    /// Waiting; `reason` is what the marketplace found when it last tried, `now` what it finds
    /// if it tried again (it tries by itself whenever capacity appears).
    Pending {
        reason: String,
        now: String,
    },
    Unplaceable {
        reason: String,
    },
    Destroyed,
}

impl Explanation {
    /// The explanation in words, for `instance` (the one explained).
    pub fn text(&self, instance: &Instance) -> String {
        match self {
            Explanation::Placed(placement) => placed_because(instance, placement),
            Explanation::Pending { reason, now } => format!("pending: {reason}; now: {now}"),
            Explanation::Unplaceable { reason } => format!("unplaceable: {reason}"),
            Explanation::Destroyed => "destroyed".into(),
        }
    }
}

/// Why a placed instance is where it is, from the marketplace's rule (`state/placement.rs`).
fn placed_because(instance: &Instance, placement: &Placement) -> String {
    let sla = if instance.sla.is_empty() {
        String::new()
    } else {
        let filters: Vec<String> = instance
            .sla
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(", matching {}", filters.join(" "))
    };
    match placement {
        Placement::Partition(p) => format!(
            "placed on {}/{}: an open computer supplying {}{sla}; the marketplace takes the \
             matching computer with the most free partitions (by powers of two, then the lowest \
             id) and its lowest free partition",
            p.computer, p.partition, instance.software_release
        ),
        Placement::Hosted { host } => format!(
            "hosted by instance {host}: the first instance (lowest guid) running {} with \
             software type {:?}{sla}",
            instance.software_release, instance.software_type
        ),
        Placement::Pending { reason } | Placement::Unplaceable { reason } => reason.clone(),
    }
}

pub fn explain(
    txn: &redb::ReadTransaction,
    guid: InstanceGuid,
) -> Result<Option<Explanation>, StateError> {
    let t = Tables::open_read(txn)?;
    let Some(instance) = t.instance(guid)? else {
        return Ok(None);
    };
    if instance.requested_state == super::model::RequestedState::Destroyed {
        return Ok(Some(Explanation::Destroyed));
    }
    Ok(Some(match instance.placement.clone() {
        Placement::Unplaceable { reason } => Explanation::Unplaceable { reason },
        Placement::Pending { reason } => {
            let now = match placement::parse_sla(&instance.sla, instance.shared) {
                Err(reason) => reason,
                Ok(filter) if instance.shared => match placement::choose_host(
                    &t,
                    &instance.software_release,
                    &instance.software_type,
                    &filter,
                    &placement::Tree::of(&instance),
                )? {
                    Choice::Found(host) => format!("host {} could take it", host.guid),
                    Choice::NotFound(reason) => reason,
                },
                Ok(filter) => match placement::choose_partition(
                    &t,
                    &instance.software_release,
                    &filter,
                    &placement::Tree::of(&instance),
                    &if filter.unique_by_network {
                        placement::tree_networks(&t, instance.root, instance.guid)?
                    } else {
                        Default::default()
                    },
                )? {
                    Choice::Found((computer, partition)) => {
                        format!("{}/{} could take it", computer.id, partition.reference)
                    }
                    Choice::NotFound(reason) => reason,
                },
            };
            Explanation::Pending { reason, now }
        }
        placed => Explanation::Placed(placed),
    }))
}

fn instance_view(t: &ReadTables, guid: InstanceGuid) -> Result<Option<InstanceView>, StateError> {
    let Some(instance) = t.instance(guid)? else {
        return Ok(None);
    };
    let root_title = if instance.root == guid {
        instance.title.clone()
    } else {
        t.instance(instance.root)?
            .map(|root| root.title)
            .unwrap_or_default()
    };
    let mut shared_instances = Vec::new();
    for shared in t.hosted.guid_values(&tables::instance_key(guid))? {
        if let Some(instance) = t.instance(shared)? {
            shared_instances.push(SharedInstanceView {
                parameters: t.parameters(shared)?,
                instance,
            });
        }
    }
    Ok(Some(InstanceView {
        parameters: t.parameters(guid)?,
        connection: t.connection(guid)?,
        root_title,
        shared_instances,
        instance,
    }))
}

/// One row of a [`dump`]: table name, key, value.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// Every key and value of every table of the master's state, in order: equal states give
/// equal dumps. Tests and the chaos checker compare replicas with it.
pub fn dump(txn: &redb::ReadTransaction) -> Result<Vec<DumpRow>, StateError> {
    use redb::TableHandle;
    let mut out = Vec::new();
    for definition in tables::definitions() {
        let name = definition.name();
        let table = txn
            .open_table(*definition)
            .map_err(|e| StateError::storage("(dump)", e))?;
        for row in table.iter().map_err(|e| StateError::storage("(dump)", e))? {
            let (k, v) = row.map_err(|e| StateError::storage("(dump)", e))?;
            out.push((name.to_string(), k.value().to_vec(), v.value().to_vec()));
        }
    }
    Ok(out)
}

/// The node silence threshold the cluster last applied (`Op::CheckSilence`), or the default.
pub fn silence(txn: &redb::ReadTransaction) -> Result<std::time::Duration, StateError> {
    super::apply::silence(&Tables::open_read(txn)?)
}

/// The status history of an instance or a computer, oldest first.
pub fn history(
    txn: &redb::ReadTransaction,
    subject: &AlertSubject,
) -> Result<Vec<StatusChange>, StateError> {
    Tables::open_read(txn)?
        .status_history
        .records(&tables::subject_key(subject), usize::MAX)
}

/// Alerts, newest first: the open ones, or (`closed`) every one kept, those `keep` accepts,
/// at most `limit`.
pub fn alerts(
    txn: &redb::ReadTransaction,
    closed: bool,
    limit: usize,
    mut keep: impl FnMut(&Alert) -> Result<bool, StateError>,
) -> Result<Vec<Alert>, StateError> {
    let t = Tables::open_read(txn)?;
    let rows = t
        .alerts
        .range::<&[u8]>(..)
        .map_err(|e| StateError::storage("alerts", e))?;
    let mut out = Vec::new();
    for row in rows.rev() {
        if out.len() >= limit {
            break;
        }
        let (key, value) = row.map_err(|e| StateError::storage("alerts", e))?;
        let alert: Alert = tables::decode("alerts", key.value(), value.value())?;
        if (closed || alert.closed_at.is_none()) && keep(&alert)? {
            out.push(alert);
        }
    }
    Ok(out)
}

/// How many alerts are open, about instances and about computers.
pub fn open_alert_counts(txn: &redb::ReadTransaction) -> Result<(u64, u64), StateError> {
    let t = Tables::open_read(txn)?;
    let count =
        |kind: &str| -> Result<u64, StateError> { t.open_alerts.count(&Key::new().str(kind)) };
    Ok((count("i")?, count("c")?))
}

/// What the policy needs to decide about an instance for `reader`, besides the instance:
/// where its host is (a shared instance), the reader's own instance (a partition), the
/// reader's role in its project.
#[derive(Debug, Clone, Default)]
pub struct ReaderFacts {
    pub host_placement: Option<Placement>,
    pub callers_instance: Option<InstanceGuid>,
    pub role: Option<ProjectRole>,
}

impl ReaderFacts {
    /// The policy's target: `instance`, with these facts.
    pub fn target<'a>(&'a self, instance: &'a Instance) -> super::policy::Target<'a> {
        super::policy::Target::Instance(super::policy::InstanceFacts {
            instance,
            host_placement: self.host_placement.as_ref(),
            callers_instance: self.callers_instance,
            role: self.role,
        })
    }
}

pub fn reader_facts(
    txn: &redb::ReadTransaction,
    reader: &Actor,
    instance: &Instance,
) -> Result<ReaderFacts, StateError> {
    Ok(ReaderFacts {
        host_placement: match instance.placement {
            Placement::Hosted { host } => placement_of(txn, host)?,
            _ => None,
        },
        callers_instance: match reader {
            Actor::Partition(partition) => occupant(txn, partition)?,
            _ => None,
        },
        role: role(txn, reader, &instance.project)?,
    })
}
