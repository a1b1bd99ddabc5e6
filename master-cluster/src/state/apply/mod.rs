//! Applying one command to the state: plain, deterministic code over the state's tables.
//!
//! Every handler first checks everything it can refuse (unknown references, sizes, a busy
//! partition), then writes. So a [`Rejection`] never leaves a partial change; a
//! [`StateError`] (the storage failing) is fatal and raft-store rolls back the whole batch.
//!
//! Time comes from the command (`at`, assigned by the proposing replica), never from a clock,
//! and instance timestamps only move forward: `max(at, previous + 1)`.
//!
//! This file: [`apply`], the [`Applier`] a command runs in, its dispatch (`op`), the
//! authorisation every command passes first, and the writes the topics share (saving a
//! computer or an instance, counters, the audit trail). The handlers, one file per topic:
//! `projects` (members, quotas, holdings), `catalog` (software releases and supply),
//! `computers`, `instances` (requests, reports, connection parameters), `destroy`,
//! `certificates`, `placing` (placement's writes), `validation` (what a command may hold) and
//! `alerts` (status histories and alerts, reviewed whenever an instance or a computer is
//! saved).

use std::collections::{BTreeMap, BTreeSet};

use super::command::{
    Command, InstanceReport, InstanceRequest, InstanceSummary, Op, Outcome, Rejection, Response,
};
use super::model::{
    Actor, AllocationScope, AuditRecord, Bang, Computer, ComputerDefinition, ComputerId,
    CredentialToken, EnrollmentToken, Holding, Instance, InstanceCertificate, InstanceGuid,
    IssuedCertificate, Parameters, Partition, PartitionId, PartitionRef, Placement, Project,
    ProjectId, ProjectRole, Quota, ReportedState, RequestedState, Requester, Revocation,
    SoftwareRelease, SoftwareReleaseUrl, SoftwareState, Supply, SupplyState, Timestamp,
    UsageRecord, UsageReport, UserId,
};
use super::placement::{self, Choice, Tree};
use super::policy::{self, InstanceFacts, ProjectFacts, Target};
use super::tables::{self, StateError, Tables};

/// Instance parameters, connection parameters: keys plus values, at most this many bytes.
pub const MAX_PARAMETERS_BYTES: usize = 1 << 20;
/// An SLA: keys plus values.
pub const MAX_SLA_BYTES: usize = 64 << 10;
/// Titles, references, ids, software types, attribute values.
pub const MAX_NAME_BYTES: usize = 1024;
pub const MAX_URL_BYTES: usize = 4096;
/// Error logs and bang messages keep their last this many bytes.
pub const MAX_LOG_BYTES: usize = 64 << 10;
pub const MAX_PARTITIONS_PER_COMPUTER: usize = 10_000;
pub const MAX_USAGE_RECORDS: usize = 10_000;
/// The most children an instance may name as still requested in one report.
pub const MAX_RELATED_INSTANCES: usize = 10_000;
/// A usage quantity: what a partition consumed in one period (seconds, bytes, ...), never
/// negative; a petabyte of anything is beyond any one period.
pub const MAX_USAGE_QUANTITY: f64 = 1e15;
/// A certificate chain or key in PEM: a few kilobytes; room for a long chain.
pub const MAX_PEM_BYTES: usize = 16 << 10;

type WriteTables<'txn> = Tables<redb::Table<'txn, &'static [u8], &'static [u8]>>;

/// What applied commands changed that someone may be waiting on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Computers whose view (what their node polls) changed.
    pub computers: BTreeSet<ComputerId>,
    /// The revocation list changed.
    pub revocations: bool,
}

impl Changes {
    pub fn merge(&mut self, mut other: Changes) {
        self.computers.append(&mut other.computers);
        self.revocations |= other.revocations;
    }
}

/// Applies `command`, the `position`th command of the entry at log `index`, and adds what it
/// changed to `changes` (the version of each computer it touched becomes `index`: see
/// `computer_versions` in `tables.rs`).
pub fn apply(
    t: &mut WriteTables<'_>,
    index: u64,
    position: u64,
    command: &Command,
    changes: &mut Changes,
) -> Result<Response, StateError> {
    let mut applier = Applier {
        t,
        at: command.at,
        actor: &command.actor,
        index,
        position,
        audit_sequence: 0,
        touched: BTreeSet::new(),
        changes: Changes::default(),
    };
    let response = match applier.op(&command.op) {
        Ok(outcome) => Ok(outcome),
        Err(Stop::Refused(rejection)) => Err(rejection),
        Err(Stop::Storage(error)) => return Err(error),
    };
    for computer in &applier.touched {
        applier
            .t
            .computer_versions
            .put_u64(&tables::computer_key(computer), index)?;
    }
    let mut changed = std::mem::take(&mut applier.changes);
    changed.computers.append(&mut applier.touched);
    changes.merge(changed);
    Ok(response)
}

struct Applier<'a, 'txn> {
    t: &'a mut WriteTables<'txn>,
    at: Timestamp,
    actor: &'a Actor,
    index: u64,
    /// Which command of its log entry this is (the leader coalesces commands into entries).
    position: u64,
    audit_sequence: u64,
    /// Computers whose view (what their node polls) this command changed.
    touched: BTreeSet<ComputerId>,
    /// Everything else it changed that readers wait on.
    changes: Changes,
}

/// Why a handler stopped short of an outcome. `?` works on both: a handler checks everything
/// it can refuse before it writes (see the module doc), so a refusal leaves nothing behind.
#[derive(Debug)]
enum Stop {
    /// The domain refused the command: the caller's answer.
    Refused(Rejection),
    /// The storage failed: fatal, and raft-store rolls back the whole batch.
    Storage(StateError),
}

impl From<Rejection> for Stop {
    fn from(rejection: Rejection) -> Self {
        Stop::Refused(rejection)
    }
}

impl From<StateError> for Stop {
    fn from(error: StateError) -> Self {
        Stop::Storage(error)
    }
}

/// A handler's result.
type Handled = Result<Outcome, Stop>;

mod alerts;
mod catalog;
mod certificates;
mod computers;
mod destroy;
mod instances;
mod placing;
mod projects;
mod validation;

pub use alerts::{ALERTS_KEPT, HISTORY_KEPT, silence};
pub use validation::check_input;
use validation::{
    check_definition, check_name, check_parameters, check_request, check_serial,
    check_silence_threshold, check_titles, check_token_hash, check_url, check_usage,
    check_usage_reports,
};

impl Applier<'_, '_> {
    fn op(&mut self, op: &Op) -> Handled {
        self.authorise(op)?;
        match op {
            Op::PublishSoftwareRelease {
                url,
                title,
                software_types,
            } => self.publish_software_release(url, title, software_types),
            Op::RegisterComputer(definition) => self.register_computer(definition),
            Op::SetAllocationScope { computer, scope } => {
                self.set_allocation_scope(computer, *scope)
            }
            Op::Supply {
                computer,
                url,
                state,
            } => self.supply(computer, url, *state),
            Op::ReportSoftware {
                computer,
                url,
                state,
            } => self.report_software(computer, url, state),
            Op::RequestInstance(request) => self.request_instance(request),
            Op::PublishConnection {
                partition,
                shared_reference,
                parameters,
            } => self.publish_connection(partition, shared_reference.as_deref(), parameters),
            Op::ReportInstance {
                partition,
                shared_reference,
                report,
            } => self.report_instance(partition, shared_reference.as_deref(), report),
            Op::DestroyInstance { instance } => self.destroy_instance(*instance),
            Op::BangInstance { partition, message } => self.bang_instance(partition, message),
            Op::BangComputer { computer, message } => self.bang_computer(computer, message),
            Op::RenameInstance {
                partition,
                shared_reference,
                new_title,
            } => self.rename_instance(partition, shared_reference.as_deref(), new_title),
            Op::PostUsage { computer, records } => self.post_usage(computer, records),
            Op::RecordLiveness { seen } => self.record_liveness(seen),
            Op::RecordCertificate {
                serial,
                identity,
                not_after,
            } => self.record_certificate(serial, identity, *not_after),
            Op::RevokeCertificate { serial, reason } => self.revoke_certificate(serial, reason),
            Op::CreateEnrollmentToken {
                token_hash,
                computer,
                expires_at,
            } => self.create_enrollment_token(token_hash, computer, *expires_at),
            Op::UseEnrollmentToken { token_hash } => self.use_enrollment_token(token_hash),
            Op::BindInstanceCertificate {
                instance,
                partition,
                serial,
                chain_pem,
                key_pem,
                not_before,
                not_after,
                replaces,
            } => self.bind_instance_certificate(
                *instance,
                InstanceCertificate {
                    partition: partition.clone(),
                    serial: serial.clone(),
                    chain_pem: chain_pem.clone(),
                    key_pem: key_pem.clone(),
                    not_before: *not_before,
                    not_after: *not_after,
                    serials: Vec::new(),
                },
                replaces.as_deref(),
            ),
            Op::CreateProject { project, title } => self.create_project(project, title),
            Op::SetProjectMember {
                project,
                user,
                role,
            } => self.set_project_member(project, user, *role),
            Op::MoveComputer { computer, project } => self.move_computer(computer, project),
            Op::SetQuota { user, quota } => self.set_quota(user.as_ref(), *quota),
            Op::CreateCredentialToken {
                token_hash,
                user,
                expires_at,
            } => self.create_credential_token(token_hash, user, *expires_at),
            Op::UseCredentialToken { token_hash } => self.use_credential_token(token_hash),
            Op::UpdateRelatedInstances { partition, titles } => {
                self.update_related_instances(partition, titles)
            }
            Op::PostUsageReports { computer, reports } => {
                self.post_usage_reports(computer, reports)
            }
            Op::CheckSilence { silent_after_s } => self.check_silence(*silent_after_s),
        }
    }

    /// Asks the policy whether the actor may issue `op`, with the facts it needs from the
    /// state. A command on something unknown is let through to its handler, which names what
    /// is unknown.
    fn authorise(&self, op: &Op) -> Result<(), Stop> {
        let operation = policy::command_operation(op);
        let release;
        let instance;
        let computer;
        let target = match op {
            Op::PublishSoftwareRelease { url, .. } => {
                release = self
                    .t
                    .catalog
                    .get::<SoftwareRelease>(tables::catalog_key(url).as_bytes())?;
                Target::Release {
                    published_by: release.as_ref().map(|r| &r.published_by),
                }
            }
            Op::RegisterComputer(definition) => Target::Computer(&definition.id),
            Op::SetAllocationScope { computer: id, .. } | Op::Supply { computer: id, .. } => {
                computer = self.t.computer(id)?;
                match &computer {
                    Some(computer) => Target::Project(ProjectFacts {
                        project: &computer.project,
                        role: self.role_in(&computer.project)?,
                        computer: Some((id, computer.allocation_scope)),
                    }),
                    None => return Ok(()),
                }
            }
            Op::SetProjectMember { project, .. } => Target::Project(ProjectFacts {
                project,
                role: self.role_in(project)?,
                computer: None,
            }),
            Op::ReportSoftware { computer, .. }
            | Op::BangComputer { computer, .. }
            | Op::PostUsage { computer, .. }
            | Op::PostUsageReports { computer, .. } => Target::Computer(computer),
            Op::PublishConnection { partition, .. }
            | Op::ReportInstance { partition, .. }
            | Op::UpdateRelatedInstances { partition, .. }
            | Op::BangInstance { partition, .. }
            | Op::RenameInstance { partition, .. } => Target::Partition(partition),
            Op::DestroyInstance { instance: guid } => {
                instance = self.t.instance(*guid)?;
                match &instance {
                    Some(instance) => Target::Instance(InstanceFacts {
                        instance,
                        host_placement: None,
                        callers_instance: None,
                        role: self.role_in(&instance.project)?,
                    }),
                    None => return Ok(()),
                }
            }
            // Decided in `request_instance`, once the tree's project is known.
            Op::RequestInstance(_) => return Ok(()),
            Op::RecordLiveness { .. }
            | Op::CheckSilence { .. }
            | Op::CreateProject { .. }
            | Op::MoveComputer { .. }
            | Op::SetQuota { .. }
            | Op::RecordCertificate { .. }
            | Op::RevokeCertificate { .. }
            | Op::CreateEnrollmentToken { .. }
            | Op::UseEnrollmentToken { .. }
            | Op::UseCredentialToken { .. }
            | Op::BindInstanceCertificate { .. } => Target::Cluster,
            Op::CreateCredentialToken { user, .. } => Target::Person(user),
        };
        Ok(policy::decide(self.actor, operation, target).map_err(not_allowed)?)
    }

    /// The actor's role in `project`, if the actor is a person.
    fn role_in(&self, project: &ProjectId) -> Result<Option<ProjectRole>, StateError> {
        match self.actor {
            Actor::User(user) | Actor::Operator(user) => self.t.role(user, project),
            _ => Ok(None),
        }
    }

    // --- quotas -------------------------------------------------------------------------------

    /// Saves `computer`, whose placement index keys were `index_before`, and replaces them by
    /// the ones it has now.
    fn save_computer(
        &mut self,
        computer: &Computer,
        index_before: &BTreeSet<Vec<u8>>,
    ) -> Result<(), StateError> {
        let after = placement::index_keys(self.t, computer)?;
        placement::reindex(self.t, index_before, &after)?;
        self.save_computer_same_index(computer)
    }

    /// Saves `computer` after a change its placement index keys do not depend on.
    fn save_computer_same_index(&mut self, computer: &Computer) -> Result<(), StateError> {
        self.touched.insert(computer.id.clone());
        self.t
            .computers
            .put(tables::computer_key(&computer.id).as_bytes(), computer)?;
        self.review_computer(computer)
    }

    fn save_instance(&mut self, instance: &Instance) -> Result<(), StateError> {
        if let Placement::Partition(p) = &instance.placement {
            self.touched.insert(p.computer.clone());
        }
        // The owner's holding follows the instance: one more when it is first saved, and
        // whether it waits for a partition or a host.
        let before = self.t.instance(instance.guid)?;
        let was_waiting = before.as_ref().is_some_and(waiting);
        if before.is_none() || was_waiting != waiting(instance) {
            self.hold(&instance.owner, |h| {
                h.instances += u64::from(before.is_none());
                if waiting(instance) {
                    h.pending += u64::from(!was_waiting);
                } else {
                    h.pending = h.pending.saturating_sub(u64::from(was_waiting));
                }
            })?;
        }
        self.t
            .instances
            .put(tables::instance_key(instance.guid).as_bytes(), instance)?;
        self.review_instance(instance)
    }

    /// Marks the computers of every placed member of the tree of `root` as changed: a tree's
    /// addresses (`full_ip_list` in SLAP) are part of each member's view, so placing, freeing
    /// or readdressing one member changes the others' (their computers' versions say so).
    fn touch_tree(&mut self, root: InstanceGuid) -> Result<(), StateError> {
        for member in self.t.titles.guid_values(&tables::instance_key(root))? {
            if let Some(Instance {
                placement: Placement::Partition(p),
                ..
            }) = self.t.instance(member)?
            {
                self.touched.insert(p.computer);
            }
        }
        Ok(())
    }

    fn touch_tree_of(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        match self.t.instance(guid)? {
            Some(instance) => self.touch_tree(instance.root),
            None => Ok(()),
        }
    }

    /// Moves an instance's timestamp forward so its node reprocesses it.
    fn bump(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        if let Some(mut instance) = self.t.instance(guid)? {
            bump(&mut instance, self.at);
            self.save_instance(&instance)?;
        }
        Ok(())
    }

    fn set_counter(&mut self, name: &'static str, value: u64) -> Result<(), StateError> {
        self.t
            .counters
            .put_u64(&super::keys::Key::new().str(name), value)
    }

    fn audit(&mut self, action: &str, target: String) -> Result<(), StateError> {
        let record = AuditRecord {
            at: self.at,
            actor: self.actor.clone(),
            action: action.to_string(),
            target,
        };
        let key = tables::audit_key(self.index, self.position, self.audit_sequence);
        self.audit_sequence += 1;
        self.t.audit.put(key.as_bytes(), &record)
    }

    /// The instance on a partition.
    fn occupant(&self, id: &PartitionId) -> Result<Instance, Stop> {
        if self.t.partition(&id.computer, &id.partition)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownPartition(id.clone())));
        }
        let Some(guid) = self.t.occupant(&id.computer, &id.partition)? else {
            return Err(Stop::Refused(Rejection::PartitionFree(id.clone())));
        };
        match self.t.instance(guid)? {
            Some(instance) => Ok(instance),
            None => Err(StateError::Corrupt {
                table: "occupants",
                key: tables::partition_key(&id.computer, &id.partition).into_bytes(),
                detail: format!("occupant {guid} does not exist"),
            }
            .into()),
        }
    }

    /// The instance on a partition, or the shared instance it hosts under `shared_reference`.
    fn resolve(&self, id: &PartitionId, shared_reference: Option<&str>) -> Result<Instance, Stop> {
        let host = self.occupant(id)?;
        let Some(reference) = shared_reference else {
            return Ok(host);
        };
        let shared = self
            .t
            .hosted
            .guid_at(&tables::hosted_key(host.guid, reference))?;
        match shared {
            Some(guid) => Ok(self
                .t
                .instance(guid)?
                .ok_or(Rejection::UnknownInstance(guid))?),
            None => Err(Stop::Refused(Rejection::UnknownSharedInstance {
                partition: id.clone(),
                reference: reference.to_string(),
            })),
        }
    }

    fn refuse(&self, action: &'static str) -> Rejection {
        Rejection::NotAllowed {
            actor: self.actor.to_string(),
            action: action.into(),
        }
    }
}

/// The policy's refusal, as a command's answer.
fn not_allowed(refusal: policy::Refusal) -> Rejection {
    Rejection::NotAllowed {
        actor: refusal.actor,
        action: format!("{} {}", refusal.operation, refusal.target),
    }
}

/// Counts every user's holding from their instances, once: state written by releases before
/// quotas has instances but no holdings. Run where tables are created (at open, and after a
/// snapshot from such a release is installed): holdings are a function of the instances, kept
/// so by every command since, so each replica gets the same whenever it counts.
pub fn count_holdings_once(t: &mut WriteTables<'_>) -> Result<(), StateError> {
    const COUNTED: &str = "holdings_counted";
    if t.counter(COUNTED)? != 0 {
        return Ok(());
    }
    let instances: Vec<Instance> = t.instances.records(&super::keys::Key::new(), usize::MAX)?;
    let mut holdings: BTreeMap<UserId, Holding> = BTreeMap::new();
    for instance in instances {
        let bytes = parameter_bytes(&t.parameters(instance.guid)?);
        let holding = holdings.entry(instance.owner.clone()).or_default();
        holding.instances += 1;
        holding.pending += u64::from(waiting(&instance));
        holding.parameter_bytes += bytes;
    }
    for (owner, holding) in holdings {
        let key = tables::user_key(&owner);
        t.holdings.put(key.as_bytes(), &holding)?;
    }
    t.counters.put_u64(&super::keys::Key::new().str(COUNTED), 1)
}

/// Whether an instance waits for a partition (or a host): a pending request, as quotas count.
fn waiting(instance: &Instance) -> bool {
    matches!(
        instance.placement,
        Placement::Pending { .. } | Placement::Unplaceable { .. }
    )
}

/// What parameters weigh against a quota: their keys' and values' bytes.
fn parameter_bytes(parameters: &Parameters) -> u64 {
    parameters
        .iter()
        .map(|(key, value)| (key.len() + value.len()) as u64)
        .sum()
}

fn bump(instance: &mut Instance, at: Timestamp) {
    instance.timestamp = Timestamp(at.0.max(instance.timestamp.0.saturating_add(1)));
}

fn summary(instance: &Instance, changed: bool) -> InstanceSummary {
    InstanceSummary {
        guid: instance.guid,
        title: instance.title.clone(),
        requested_state: instance.requested_state,
        placement: instance.placement.clone(),
        timestamp: instance.timestamp,
        changed,
    }
}

/// `slappart12` sorts as 12; other names after every numbered one, in definition order.
fn ordinal(reference: &PartitionRef, position: usize) -> u64 {
    let digits = reference.as_str().len()
        - reference
            .as_str()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .len();
    let number = reference.as_str()[reference.as_str().len() - digits..]
        .parse::<u32>()
        .ok();
    match number {
        Some(n) => u64::from(n),
        None => (1 << 32) + position as u64,
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// The last non-empty line of `text` (where a build log says what failed), at most 256 bytes
/// of it, cut at a character boundary.
fn last_line(text: &str) -> &str {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let mut end = line.len().min(256);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}
