//! Applying one command to the state: plain, deterministic code over the state's tables.
//!
//! Every handler first checks everything it can refuse (unknown references, sizes, a busy
//! partition), then writes. So a [`Rejection`] never leaves a partial change; a
//! [`StateError`] (the storage failing) is fatal and raft-store rolls back the whole batch.
//!
//! Time comes from the command (`at`, assigned by the proposing replica), never from a clock,
//! and instance timestamps only move forward: `max(at, previous + 1)`.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{
    Command, InstanceReport, InstanceRequest, InstanceSummary, Op, Outcome, Rejection, Response,
};
use super::model::{
    Actor, AllocationScope, AuditRecord, Bang, Computer, ComputerDefinition, ComputerId,
    EnrollmentToken, Holding, Instance, InstanceCertificate, InstanceGuid, IssuedCertificate,
    Parameters, Partition, PartitionId, PartitionRef, Placement, Project, ProjectId, ProjectRole,
    Quota, ReportedState, RequestedState, Requester, Revocation, SoftwareRelease,
    SoftwareReleaseUrl, SoftwareState, Supply, SupplyState, Timestamp, UsageRecord, UserId,
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
    let response = applier.op(&command.op)?;
    for computer in &applier.touched {
        tables::put_u64(
            &mut applier.t.computer_versions,
            "computer_versions",
            &tables::computer_key(computer),
            index,
        )?;
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

/// Shorthand for a handler's result: the outer `Result` is fatal, the inner one the answer.
type Handled = Result<Response, StateError>;

fn reject(rejection: Rejection) -> Handled {
    Ok(Err(rejection))
}

macro_rules! check {
    ($e:expr) => {
        if let Err(rejection) = $e {
            return Ok(Err(rejection));
        }
    };
}

impl Applier<'_, '_> {
    fn op(&mut self, op: &Op) -> Handled {
        check!(self.authorise(op)?);
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
        }
    }

    /// Asks the policy whether the actor may issue `op`, with the facts it needs from the
    /// state. A command on something unknown is let through to its handler, which names what
    /// is unknown.
    fn authorise(&self, op: &Op) -> Result<Result<(), Rejection>, StateError> {
        let operation = policy::command_operation(op);
        let release;
        let instance;
        let computer;
        let target = match op {
            Op::PublishSoftwareRelease { url, .. } => {
                release = tables::get::<SoftwareRelease>(
                    &self.t.catalog,
                    "catalog",
                    tables::catalog_key(url).as_bytes(),
                )?;
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
                    None => return Ok(Ok(())),
                }
            }
            Op::SetProjectMember { project, .. } => Target::Project(ProjectFacts {
                project,
                role: self.role_in(project)?,
                computer: None,
            }),
            Op::ReportSoftware { computer, .. }
            | Op::BangComputer { computer, .. }
            | Op::PostUsage { computer, .. } => Target::Computer(computer),
            Op::PublishConnection { partition, .. }
            | Op::ReportInstance { partition, .. }
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
                    None => return Ok(Ok(())),
                }
            }
            // Decided in `request_instance`, once the tree's project is known.
            Op::RequestInstance(_) => return Ok(Ok(())),
            Op::RecordLiveness { .. }
            | Op::CreateProject { .. }
            | Op::MoveComputer { .. }
            | Op::SetQuota { .. }
            | Op::RecordCertificate { .. }
            | Op::RevokeCertificate { .. }
            | Op::CreateEnrollmentToken { .. }
            | Op::UseEnrollmentToken { .. }
            | Op::BindInstanceCertificate { .. } => Target::Cluster,
        };
        Ok(policy::decide(self.actor, operation, target).map_err(not_allowed))
    }

    /// The actor's role in `project`, if the actor is a person.
    fn role_in(&self, project: &ProjectId) -> Result<Option<ProjectRole>, StateError> {
        match self.actor {
            Actor::User(user) | Actor::Operator(user) => self.t.role(user, project),
            _ => Ok(None),
        }
    }

    // --- quotas -------------------------------------------------------------------------------

    fn set_quota(&mut self, user: Option<&UserId>, quota: Option<Quota>) -> Handled {
        if let Some(user) = user {
            check!(check_name("user", user.as_str()));
        }
        if self.t.quota_set(user)? == quota {
            return Ok(Ok(Outcome::Unchanged));
        }
        let key = tables::quota_key(user);
        match quota {
            Some(quota) => tables::put(&mut self.t.quotas, "quotas", key.as_bytes(), &quota)?,
            None => tables::delete(&mut self.t.quotas, "quotas", key.as_bytes())?,
        }
        let whose = user.map_or_else(|| "everyone's default".to_string(), |u| u.to_string());
        self.audit("set quota", format!("{whose}: {quota:?}"))?;
        Ok(Ok(Outcome::Done))
    }

    /// Whether `owner` may hold `instances` more instances (each of which may wait for a
    /// partition) and `bytes` more of parameters. Operators' requests are not counted against
    /// anyone: they are how a full quota is worked around.
    fn within_quota(
        &self,
        owner: &UserId,
        instances: u64,
        bytes: u64,
    ) -> Result<Result<(), Rejection>, StateError> {
        if matches!(self.actor, Actor::Operator(_)) {
            return Ok(Ok(()));
        }
        let quota = self.t.quota(owner)?;
        let held = self.t.holding(owner)?;
        let over = |what: &str, held: u64, more: u64, max: u64| {
            (held.saturating_add(more) > max).then(|| Rejection::OverQuota {
                user: owner.clone(),
                what: what.to_string(),
                held,
                wanted: held.saturating_add(more),
                max,
            })
        };
        let refusal = over("instances", held.instances, instances, quota.instances)
            .or_else(|| {
                over(
                    "requests waiting for a partition",
                    held.pending,
                    instances,
                    quota.pending,
                )
            })
            .or_else(|| {
                over(
                    "bytes of parameters",
                    held.parameter_bytes,
                    bytes,
                    quota.parameter_bytes,
                )
            });
        Ok(refusal.map_or(Ok(()), Err))
    }

    /// Changes what `owner` holds.
    fn hold(
        &mut self,
        owner: &UserId,
        change: impl FnOnce(&mut Holding),
    ) -> Result<(), StateError> {
        let mut holding = self.t.holding(owner)?;
        change(&mut holding);
        let key = tables::user_key(owner);
        if holding == Holding::default() {
            tables::delete(&mut self.t.holdings, "holdings", key.as_bytes())
        } else {
            tables::put(&mut self.t.holdings, "holdings", key.as_bytes(), &holding)
        }
    }

    // --- projects -----------------------------------------------------------------------------

    fn create_project(&mut self, id: &ProjectId, title: &str) -> Handled {
        check!(check_name("project", id.as_str()));
        check!(check_name("project title", title));
        let existing = self.t.project(id)?;
        if existing.as_ref().is_some_and(|p| p.title == title) {
            return Ok(Ok(Outcome::Unchanged));
        }
        let project = Project {
            id: id.clone(),
            title: title.to_string(),
            everyone: existing.as_ref().and_then(|p| p.everyone),
            created_at: existing.as_ref().map_or(self.at, |p| p.created_at),
        };
        tables::put(
            &mut self.t.projects,
            "projects",
            tables::project_key(id).as_bytes(),
            &project,
        )?;
        self.audit("create project", id.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn set_project_member(
        &mut self,
        project: &ProjectId,
        user: &UserId,
        role: Option<ProjectRole>,
    ) -> Handled {
        check!(check_name("user", user.as_str()));
        if self.t.project(project)?.is_none() {
            return reject(Rejection::UnknownProject(project.clone()));
        }
        let member_key = tables::member_key(project, user);
        let user_key = tables::user_project_key(user, project);
        let current: Option<ProjectRole> = tables::get(
            &self.t.project_members,
            "project_members",
            member_key.as_bytes(),
        )?;
        if current == role {
            return Ok(Ok(Outcome::Unchanged));
        }
        match role {
            Some(role) => {
                tables::put(
                    &mut self.t.project_members,
                    "project_members",
                    member_key.as_bytes(),
                    &role,
                )?;
                tables::put(
                    &mut self.t.user_projects,
                    "user_projects",
                    user_key.as_bytes(),
                    &role,
                )?;
            }
            None => {
                tables::delete(
                    &mut self.t.project_members,
                    "project_members",
                    member_key.as_bytes(),
                )?;
                tables::delete(
                    &mut self.t.user_projects,
                    "user_projects",
                    user_key.as_bytes(),
                )?;
            }
        }
        self.audit(
            &format!("project role {}", role.map_or("none", ProjectRole::as_str)),
            format!("{user} in {project}"),
        )?;
        Ok(Ok(Outcome::Done))
    }

    fn move_computer(&mut self, id: &ComputerId, project: &ProjectId) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return reject(Rejection::UnknownComputer(id.clone()));
        };
        if self.t.project(project)?.is_none() {
            return reject(Rejection::UnknownProject(project.clone()));
        }
        if computer.project == *project {
            return Ok(Ok(Outcome::Unchanged));
        }
        let before = placement::index_keys(self.t, &computer)?;
        computer.project = project.clone();
        self.save_computer(&computer, &before)?;
        self.audit("move computer", format!("{id} to {project}"))?;
        let placed = self.place_pending_on(id)?;
        Ok(Ok(Outcome::Placed { placed }))
    }

    // --- catalog and computers ----------------------------------------------------------------

    fn publish_software_release(
        &mut self,
        url: &SoftwareReleaseUrl,
        title: &str,
        software_types: &[String],
    ) -> Handled {
        check!(check_url(url));
        check!(check_name("title", title));
        for software_type in software_types {
            check!(check_name("software type", software_type));
        }
        let release = SoftwareRelease {
            url: url.clone(),
            title: title.to_string(),
            software_types: software_types.iter().cloned().collect(),
            published_by: self.actor.clone(),
            published_at: self.at,
        };
        let key = tables::catalog_key(url);
        let existing: Option<SoftwareRelease> =
            tables::get(&self.t.catalog, "catalog", key.as_bytes())?;
        if existing
            .is_some_and(|e| e.title == release.title && e.software_types == release.software_types)
        {
            return Ok(Ok(Outcome::Unchanged));
        }
        tables::put(&mut self.t.catalog, "catalog", key.as_bytes(), &release)?;
        self.audit("publish software release", url.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn register_computer(&mut self, definition: &ComputerDefinition) -> Handled {
        check!(check_definition(definition));
        let id = &definition.id;
        let existing = self.t.computer(id)?;
        let old_partitions = self.t.partitions_of(id)?;
        let occupants = self.t.occupants_of(id)?;
        let wanted: BTreeSet<&PartitionRef> =
            definition.partitions.iter().map(|p| &p.reference).collect();
        let removed: Vec<&Partition> = old_partitions
            .iter()
            .filter(|p| !wanted.contains(&p.reference))
            .collect();
        if let Some((busy, &instance)) = removed
            .iter()
            .find_map(|p| Some((p, occupants.get(&p.reference)?)))
        {
            return reject(Rejection::PartitionBusy {
                partition: PartitionId {
                    computer: id.clone(),
                    partition: busy.reference.clone(),
                },
                instance,
            });
        }

        let before = match &existing {
            Some(computer) => placement::index_keys(self.t, computer)?,
            None => BTreeSet::new(),
        };
        for gone in &removed {
            tables::delete(
                &mut self.t.partitions,
                "partitions",
                tables::partition_key(id, &gone.reference).as_bytes(),
            )?;
            tables::delete(
                &mut self.t.free_partitions,
                "free_partitions",
                tables::free_key(id, gone).as_bytes(),
            )?;
        }
        let mut added = 0u32;
        let mut free = 0u32;
        for (position, wanted) in definition.partitions.iter().enumerate() {
            let old = old_partitions
                .iter()
                .find(|p| p.reference == wanted.reference);
            let partition = Partition {
                reference: wanted.reference.clone(),
                ordinal: ordinal(&wanted.reference, position),
                path: wanted.path.clone(),
                addresses: wanted.addresses.clone(),
                tap: wanted.tap.clone(),
                user: wanted.user.clone(),
            };
            let occupant = occupants.get(&partition.reference).copied();
            match old {
                None => added += 1,
                // Its ordinal (part of the free key) follows the definition's order for names
                // without a number: drop the old key before writing the new one.
                Some(old) => tables::delete(
                    &mut self.t.free_partitions,
                    "free_partitions",
                    tables::free_key(id, old).as_bytes(),
                )?,
            }
            if occupant.is_none() {
                free += 1;
                tables::put_index(
                    &mut self.t.free_partitions,
                    "free_partitions",
                    tables::free_key(id, &partition).as_bytes(),
                )?;
            }
            if old != Some(&partition) {
                // A running instance must reconfigure when its partition's addresses change.
                if let Some(guid) = occupant
                    && old.is_some_and(|o| {
                        o.addresses != partition.addresses || o.tap != partition.tap
                    })
                {
                    self.bump(guid)?;
                    self.touch_tree_of(guid)?;
                }
                tables::put(
                    &mut self.t.partitions,
                    "partitions",
                    tables::partition_key(id, &partition.reference).as_bytes(),
                    &partition,
                )?;
            }
        }

        let computer = Computer {
            id: id.clone(),
            address: definition.address.clone(),
            netmask: definition.netmask.clone(),
            instance_root: definition.instance_root.clone(),
            software_root: definition.software_root.clone(),
            os_type: definition.os_type.clone(),
            attributes: definition
                .attributes
                .clone()
                .or_else(|| existing.as_ref().map(|c| c.attributes.clone()))
                .unwrap_or_default(),
            capabilities: definition
                .capabilities
                .clone()
                .or_else(|| existing.as_ref().map(|c| c.capabilities.clone()))
                .unwrap_or_default(),
            // A new computer takes its project's instance trees, as the master's "open" does.
            allocation_scope: existing
                .as_ref()
                .map_or(AllocationScope::OpenProject, |c| c.allocation_scope),
            project: existing
                .as_ref()
                .map_or_else(ProjectId::default_project, |c| c.project.clone()),
            partition_count: u32::try_from(definition.partitions.len()).unwrap_or(u32::MAX),
            free_count: free,
            registered_at: existing.as_ref().map_or(self.at, |c| c.registered_at),
            capacity_reported_at: self.at,
            last_bang: existing.as_ref().and_then(|c| c.last_bang.clone()),
        };
        self.save_computer(&computer, &before)?;
        self.audit("register computer", id.to_string())?;
        let placed = self.place_pending_on(id)?;
        Ok(Ok(Outcome::ComputerRegistered {
            partitions_added: added,
            partitions_removed: u32::try_from(removed.len()).unwrap_or(u32::MAX),
            placed,
        }))
    }

    fn set_allocation_scope(&mut self, id: &ComputerId, scope: AllocationScope) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return reject(Rejection::UnknownComputer(id.clone()));
        };
        if computer.allocation_scope == scope {
            return Ok(Ok(Outcome::Unchanged));
        }
        let before = placement::index_keys(self.t, &computer)?;
        computer.allocation_scope = scope;
        self.save_computer(&computer, &before)?;
        self.audit(&format!("allocation scope {scope}"), id.to_string())?;
        let placed = self.place_pending_on(id)?;
        Ok(Ok(Outcome::Placed { placed }))
    }

    fn supply(&mut self, id: &ComputerId, url: &SoftwareReleaseUrl, state: SupplyState) -> Handled {
        check!(check_url(url));
        let Some(computer) = self.t.computer(id)? else {
            return reject(Rejection::UnknownComputer(id.clone()));
        };
        let existing = self.t.supply(id, url)?;
        let supply = match (&existing, state) {
            (Some(s), _) if s.requested == state => return Ok(Ok(Outcome::Unchanged)),
            (None, SupplyState::Destroyed) => return Ok(Ok(Outcome::Unchanged)),
            (Some(s), _) => Supply {
                requested: state,
                reported: s.reported.clone(),
                updated_at: self.at,
            },
            (None, SupplyState::Available) => Supply {
                requested: state,
                reported: None,
                updated_at: self.at,
            },
        };
        let before = placement::index_keys(self.t, &computer)?;
        tables::put(
            &mut self.t.supply,
            "supply",
            tables::supply_key(id, url).as_bytes(),
            &supply,
        )?;
        self.save_computer(&computer, &before)?;
        self.audit(
            match state {
                SupplyState::Available => "supply software release",
                SupplyState::Destroyed => "remove software release",
            },
            format!("{url} on {id}"),
        )?;
        let placed = self.place_pending_on(id)?;
        Ok(Ok(Outcome::Placed { placed }))
    }

    fn report_software(
        &mut self,
        id: &ComputerId,
        url: &SoftwareReleaseUrl,
        state: &SoftwareState,
    ) -> Handled {
        if self.t.computer(id)?.is_none() {
            return reject(Rejection::UnknownComputer(id.clone()));
        }
        let Some(mut supply) = self.t.supply(id, url)? else {
            return reject(Rejection::Invalid {
                what: "software report".into(),
                reason: format!("{url} is not supplied to {id}"),
            });
        };
        let state = match state {
            SoftwareState::Error { log } => SoftwareState::Error {
                log: tail(log, MAX_LOG_BYTES),
            },
            other => other.clone(),
        };
        if supply.reported.as_ref() == Some(&state) {
            return Ok(Ok(Outcome::Unchanged));
        }
        let key = tables::supply_key(id, url);
        self.touched.insert(id.clone());
        if state == SoftwareState::Destroyed && supply.requested == SupplyState::Destroyed {
            // Removed as asked: the promise is fulfilled and forgotten.
            tables::delete(&mut self.t.supply, "supply", key.as_bytes())?;
        } else {
            supply.reported = Some(state);
            supply.updated_at = self.at;
            tables::put(&mut self.t.supply, "supply", key.as_bytes(), &supply)?;
        }
        self.audit("report software", format!("{url} on {id}"))?;
        Ok(Ok(Outcome::Done))
    }

    // --- instances ----------------------------------------------------------------------------

    fn request_instance(&mut self, request: &InstanceRequest) -> Handled {
        check!(check_request(request));
        // Who asks decides the tree: a user asks for a root, an instance for a child.
        let (owner, parent) = match self.actor {
            Actor::User(user) | Actor::Operator(user) => (user.clone(), None),
            Actor::Partition(partition) => {
                let parent = match self.occupant(partition)? {
                    Ok(parent) => parent,
                    Err(rejection) => return reject(rejection),
                };
                // A child of an instance on its way out would outlive its tree.
                if parent.requested_state == RequestedState::Destroyed {
                    return reject(Rejection::BeingDestroyed(parent.guid));
                }
                (parent.owner.clone(), Some(parent))
            }
            Actor::Computer(_) | Actor::Replica(_) => {
                return reject(self.refuse("request instances"));
            }
        };
        let existing = match &parent {
            None => tables::guid_at(
                &self.t.roots,
                "roots",
                &tables::root_key(&owner, &request.title),
            )?,
            Some(parent) => tables::guid_at(
                &self.t.titles,
                "titles",
                &tables::title_key(parent.root, &request.title),
            )?,
        };
        match existing {
            // The requester's own tree (found by owner and title, or under its parent).
            Some(guid) => match self.t.instance(guid)? {
                Some(instance) => self.update_instance(instance, request),
                None => Err(StateError::Corrupt {
                    table: "titles",
                    key: tables::instance_key(guid).into_bytes(),
                    detail: "title points to a missing instance".to_string(),
                }),
            },
            None => {
                let project = match &parent {
                    Some(parent) => parent.project.clone(),
                    None => match self.project_of_new_tree(&owner, request)? {
                        Ok(project) => project,
                        Err(rejection) => return reject(rejection),
                    },
                };
                self.create_instance(owner, project, parent.as_ref(), request)
            }
        }
    }

    /// The project a new tree is requested in: the one its SLA names (`project_guid`, as the
    /// master's), else the requester's first project by name, else the default project. The
    /// requester must have a role in it.
    fn project_of_new_tree(
        &self,
        owner: &UserId,
        request: &InstanceRequest,
    ) -> Result<Result<ProjectId, Rejection>, StateError> {
        let project = match request.sla.get(placement::PROJECT_KEY) {
            Some(named) => ProjectId(named.clone()),
            None => match self.t.projects_of(owner)?.into_iter().next() {
                Some((project, _)) => project,
                None => ProjectId::default_project(),
            },
        };
        if self.t.project(&project)?.is_none() {
            return Ok(Err(Rejection::UnknownProject(project)));
        }
        let facts = ProjectFacts {
            project: &project,
            role: self.role_in(&project)?,
            computer: None,
        };
        Ok(policy::decide(
            self.actor,
            policy::Operation::RequestInstance,
            Target::Project(facts),
        )
        .map(|()| project.clone())
        .map_err(not_allowed))
    }

    fn create_instance(
        &mut self,
        owner: UserId,
        project: ProjectId,
        parent: Option<&Instance>,
        request: &InstanceRequest,
    ) -> Handled {
        if request.state == RequestedState::Destroyed {
            return reject(Rejection::NothingToDestroy {
                title: request.title.clone(),
            });
        }
        check!(self.within_quota(&owner, 1, parameter_bytes(&request.parameters))?);
        let guid = InstanceGuid(self.t.counter("next_guid")? + 1);
        self.set_counter("next_guid", guid.0)?;
        let root = parent.map_or(guid, |p| p.root);
        // slapproxy names a shared instance `<requester>_<title>`, which collides as soon as
        // two users pick the same title; nodes treat the reference as opaque, so use the guid
        // (as the ERP5 master does): unique, and unchanged by renames.
        let shared_reference = request.shared.then(|| guid.to_string());
        let mut instance = Instance {
            guid,
            owner: owner.clone(),
            project,
            title: request.title.clone(),
            root,
            requester: match parent {
                Some(parent) => Requester::Instance(parent.guid),
                None => Requester::User(owner.clone()),
            },
            software_release: request.software_release.clone(),
            software_type: request.software_type.clone(),
            sla: request.sla.clone(),
            shared: request.shared,
            shared_reference,
            requested_state: request.state,
            placement: Placement::Pending {
                reason: "not placed yet".to_string(),
            },
            reported_state: None,
            last_error: None,
            access_status: None,
            timestamp: self.at,
            created_at: self.at,
            destroyed_reported: false,
        };
        tables::put_guid(
            &mut self.t.titles,
            "titles",
            &tables::title_key(root, &request.title),
            guid,
        )?;
        match parent {
            None => tables::put_guid(
                &mut self.t.roots,
                "roots",
                &tables::root_key(&owner, &request.title),
                guid,
            )?,
            Some(parent) => tables::put_index(
                &mut self.t.children,
                "children",
                tables::child_key(parent.guid, guid).as_bytes(),
            )?,
        }
        if !request.parameters.is_empty() {
            tables::put(
                &mut self.t.instance_parameters,
                "instance_parameters",
                tables::instance_key(guid).as_bytes(),
                &request.parameters,
            )?;
            self.hold(&owner, |h| {
                h.parameter_bytes += parameter_bytes(&request.parameters);
            })?;
        }
        self.place(&mut instance)?;
        self.save_instance(&instance)?;
        self.audit("request instance", format!("{guid} {:?}", request.title))?;
        Ok(Ok(Outcome::Instance(summary(&instance, true))))
    }

    fn update_instance(&mut self, mut instance: Instance, request: &InstanceRequest) -> Handled {
        if instance.requested_state == RequestedState::Destroyed {
            return if request.state == RequestedState::Destroyed {
                Ok(Ok(Outcome::Instance(summary(&instance, false))))
            } else {
                reject(Rejection::BeingDestroyed(instance.guid))
            };
        }
        if instance.shared != request.shared {
            return reject(Rejection::Invalid {
                what: "request".into(),
                reason: format!(
                    "instance {} is {}shared; the shared flag cannot change",
                    instance.guid,
                    if instance.shared { "" } else { "not " }
                ),
            });
        }
        if request.state == RequestedState::Destroyed {
            return self.destroy_instance(instance.guid);
        }
        let parameters = self.t.parameters(instance.guid)?;
        let software_changed = instance.software_release != request.software_release
            || instance.software_type != request.software_type;
        let sla_changed = instance.sla != request.sla;
        let parameters_changed = parameters != request.parameters;
        let state_changed = instance.requested_state != request.state;
        if !(software_changed || sla_changed || parameters_changed || state_changed) {
            return Ok(Ok(Outcome::Instance(summary(&instance, false))));
        }
        let (old_bytes, new_bytes) = (
            parameter_bytes(&parameters),
            parameter_bytes(&request.parameters),
        );
        if new_bytes > old_bytes {
            check!(self.within_quota(&instance.owner, 0, new_bytes - old_bytes)?);
        }

        let placed_on_partition = matches!(instance.placement, Placement::Partition(_));
        let unplaced = matches!(
            instance.placement,
            Placement::Pending { .. } | Placement::Unplaceable { .. }
        );
        if software_changed || unplaced {
            self.unindex(&instance)?;
        }
        instance.software_release = request.software_release.clone();
        instance.software_type = request.software_type.clone();
        instance.sla = request.sla.clone();
        instance.requested_state = request.state;
        if parameters_changed {
            let key = tables::instance_key(instance.guid);
            if request.parameters.is_empty() {
                tables::delete(
                    &mut self.t.instance_parameters,
                    "instance_parameters",
                    key.as_bytes(),
                )?;
            } else {
                tables::put(
                    &mut self.t.instance_parameters,
                    "instance_parameters",
                    key.as_bytes(),
                    &request.parameters,
                )?;
            }
            self.hold(&instance.owner, |h| {
                h.parameter_bytes = (h.parameter_bytes + new_bytes).saturating_sub(old_bytes);
            })?;
        }
        bump(&mut instance, self.at);
        if unplaced {
            // A new SLA or software release may make it placeable; an instance never moves once
            // placed.
            self.place(&mut instance)?;
        } else if software_changed && placed_on_partition {
            self.index_host(&instance)?;
        }
        if let Placement::Hosted { host } = instance.placement {
            self.bump(host)?;
        }
        self.save_instance(&instance)?;
        self.audit("update instance", instance.guid.to_string())?;
        Ok(Ok(Outcome::Instance(summary(&instance, true))))
    }

    fn destroy_instance(&mut self, guid: InstanceGuid) -> Handled {
        let Some(instance) = self.t.instance(guid)? else {
            return reject(Rejection::UnknownInstance(guid));
        };
        if instance.requested_state == RequestedState::Destroyed {
            return Ok(Ok(Outcome::Instance(summary(&instance, false))));
        }
        self.mark_destroyed(guid)?;
        self.audit("destroy instance", guid.to_string())?;
        let after = self.t.instance(guid)?;
        Ok(Ok(Outcome::Instance(match after {
            Some(instance) => summary(&instance, true),
            // Never placed: nothing for a node to clean, so it is already gone.
            None => InstanceSummary {
                requested_state: RequestedState::Destroyed,
                placement: Placement::Unplaceable {
                    reason: "destroyed".to_string(),
                },
                changed: true,
                timestamp: self.at,
                ..summary(&instance, true)
            },
        })))
    }

    /// Marks `guid` and everything below it destroyed. What runs nowhere (shared instances,
    /// pending requests) is removed at once; what runs on a partition waits for its node.
    fn mark_destroyed(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let children = tables::trailing_guids(
            &self.t.children,
            "children",
            &tables::instance_key(guid),
            usize::MAX,
        )?;
        for child in children {
            self.mark_destroyed(child)?;
        }
        let Some(mut instance) = self.t.instance(guid)? else {
            return Ok(());
        };
        if instance.requested_state == RequestedState::Destroyed {
            return Ok(());
        }
        self.unindex(&instance)?;
        instance.requested_state = RequestedState::Destroyed;
        bump(&mut instance, self.at);
        match instance.placement.clone() {
            Placement::Partition(_) => {
                self.save_instance(&instance)?;
                // Its shared instances look for another host.
                let hosted =
                    tables::guid_values(&self.t.hosted, "hosted", &tables::instance_key(guid))?;
                for shared in hosted {
                    if let Some(mut shared) = self.t.instance(shared)? {
                        self.detach_from_host(&shared, guid)?;
                        self.place(&mut shared)?;
                        self.save_instance(&shared)?;
                    }
                }
            }
            Placement::Hosted { host } => {
                self.detach_from_host(&instance, host)?;
                self.bump(host)?;
                self.forget(&instance)?;
            }
            Placement::Pending { .. } | Placement::Unplaceable { .. } => self.forget(&instance)?,
        }
        Ok(())
    }

    fn detach_from_host(
        &mut self,
        shared: &Instance,
        host: InstanceGuid,
    ) -> Result<(), StateError> {
        if let Some(reference) = &shared.shared_reference {
            tables::delete(
                &mut self.t.hosted,
                "hosted",
                tables::hosted_key(host, reference).as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Removes every record of an instance that holds no partition, and its link to its
    /// parent; then finishes the parent's destruction if it was only waiting for this child.
    fn forget(&mut self, instance: &Instance) -> Result<(), StateError> {
        let key = tables::instance_key(instance.guid);
        // What the owner held of it, as stored.
        let stored = self.t.instance(instance.guid)?;
        let bytes = parameter_bytes(&self.t.parameters(instance.guid)?);
        self.hold(&instance.owner, |h| {
            h.instances = h.instances.saturating_sub(u64::from(stored.is_some()));
            h.pending = h
                .pending
                .saturating_sub(u64::from(stored.as_ref().is_some_and(waiting)));
            h.parameter_bytes = h.parameter_bytes.saturating_sub(bytes);
        })?;
        tables::delete(&mut self.t.instances, "instances", key.as_bytes())?;
        tables::delete(
            &mut self.t.instance_parameters,
            "instance_parameters",
            key.as_bytes(),
        )?;
        tables::delete(
            &mut self.t.instance_connections,
            "instance_connections",
            key.as_bytes(),
        )?;
        tables::delete(
            &mut self.t.titles,
            "titles",
            tables::title_key(instance.root, &instance.title).as_bytes(),
        )?;
        match &instance.requester {
            Requester::User(owner) => {
                tables::delete(
                    &mut self.t.roots,
                    "roots",
                    tables::root_key(owner, &instance.title).as_bytes(),
                )?;
            }
            Requester::Instance(parent) => {
                tables::delete(
                    &mut self.t.children,
                    "children",
                    tables::child_key(*parent, instance.guid).as_bytes(),
                )?;
                self.finish_if_waiting(*parent)?;
            }
        }
        Ok(())
    }

    /// A parent reported destroyed while it still had children is freed with its last child.
    fn finish_if_waiting(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let Some(parent) = self.t.instance(guid)? else {
            return Ok(());
        };
        let has_children =
            !tables::scan(&self.t.children, "children", &tables::instance_key(guid), 1)?.is_empty();
        if parent.destroyed_reported && !has_children {
            self.release_and_forget(&parent)?;
        }
        Ok(())
    }

    fn release_and_forget(&mut self, instance: &Instance) -> Result<(), StateError> {
        if let Placement::Partition(partition) = &instance.placement {
            self.touch_tree(instance.root)?;
            // Its node destroyed it with its certificate still in place; from here the
            // partition may take another instance, which must never be able to use it.
            self.revoke_instance_certificates(instance.guid)?;
            self.release(partition)?;
        }
        self.forget(instance)?;
        if let Placement::Partition(partition) = &instance.placement {
            self.place_pending_on(&partition.computer)?;
        }
        Ok(())
    }

    fn publish_connection(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        parameters: &Parameters,
    ) -> Handled {
        check!(check_parameters(
            "connection parameters",
            parameters,
            MAX_PARAMETERS_BYTES
        ));
        let target = match self.resolve(partition, shared_reference)? {
            Ok(target) => target,
            Err(rejection) => return reject(rejection),
        };
        if self.t.connection(target.guid)? == *parameters {
            return Ok(Ok(Outcome::Unchanged));
        }
        tables::put(
            &mut self.t.instance_connections,
            "instance_connections",
            tables::instance_key(target.guid).as_bytes(),
            parameters,
        )?;
        // They are in the target's partition view (`_connection_dict`).
        if let Placement::Partition(p) = &target.placement {
            self.touched.insert(p.computer.clone());
        }
        // The requester reads these parameters: it must reprocess.
        if let Requester::Instance(requester) = target.requester {
            self.bump(requester)?;
        }
        self.audit("publish connection parameters", target.guid.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn report_instance(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        report: &InstanceReport,
    ) -> Handled {
        let mut instance = match self.resolve(partition, shared_reference)? {
            Ok(target) => target,
            Err(rejection) => return reject(rejection),
        };
        let (reported, access_status, last_error) = match report {
            InstanceReport::Started => (
                Some(ReportedState::Started),
                "#access Instance correctly started".to_string(),
                None,
            ),
            InstanceReport::Stopped => (
                Some(ReportedState::Stopped),
                "#access Instance correctly stopped".to_string(),
                None,
            ),
            InstanceReport::Error { log } => {
                let log = tail(log, MAX_LOG_BYTES);
                (
                    instance.reported_state,
                    format!("#error {}", last_line(&log)),
                    Some(log),
                )
            }
            InstanceReport::Destroyed => {
                if instance.shared {
                    // Shared instances are removed when destroyed; a late report changes nothing.
                    return Ok(Ok(Outcome::Unchanged));
                }
                if instance.requested_state != RequestedState::Destroyed {
                    return reject(Rejection::Invalid {
                        what: "report".into(),
                        reason: format!("instance {} is not requested destroyed", instance.guid),
                    });
                }
                return self.destroyed_reported(instance);
            }
        };
        if instance.reported_state == reported
            && instance.access_status.as_deref() == Some(access_status.as_str())
            && instance.last_error == last_error
        {
            return Ok(Ok(Outcome::Unchanged));
        }
        instance.reported_state = reported;
        instance.access_status = Some(access_status);
        instance.last_error = last_error;
        self.save_instance(&instance)?;
        self.audit("report instance", instance.guid.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn destroyed_reported(&mut self, mut instance: Instance) -> Handled {
        let has_children = !tables::scan(
            &self.t.children,
            "children",
            &tables::instance_key(instance.guid),
            1,
        )?
        .is_empty();
        self.audit("report instance destroyed", instance.guid.to_string())?;
        if has_children {
            instance.destroyed_reported = true;
            instance.reported_state = Some(ReportedState::Destroyed);
            self.save_instance(&instance)?;
            return Ok(Ok(Outcome::Done));
        }
        self.release_and_forget(&instance)?;
        Ok(Ok(Outcome::Done))
    }

    fn bang_instance(&mut self, partition: &PartitionId, message: &str) -> Handled {
        let instance = match self.occupant(partition)? {
            Ok(instance) => instance,
            Err(rejection) => return reject(rejection),
        };
        let tree = tables::guid_values(
            &self.t.titles,
            "titles",
            &tables::instance_key(instance.root),
        )?;
        for guid in tree {
            self.bump(guid)?;
        }
        self.audit(
            "bang instance",
            format!("{}: {}", instance.guid, tail(message, 256)),
        )?;
        Ok(Ok(Outcome::Done))
    }

    fn bang_computer(&mut self, id: &ComputerId, message: &str) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return reject(Rejection::UnknownComputer(id.clone()));
        };
        let before = placement::index_keys(self.t, &computer)?;
        computer.last_bang = Some(Bang {
            at: self.at,
            message: tail(message, MAX_LOG_BYTES),
        });
        for guid in self.t.occupants_of(id)?.into_values() {
            self.bump(guid)?;
        }
        self.save_computer(&computer, &before)?;
        self.audit("bang computer", id.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn rename_instance(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        new_title: &str,
    ) -> Handled {
        check!(check_name("title", new_title));
        let mut instance = match self.resolve(partition, shared_reference)? {
            Ok(target) => target,
            Err(rejection) => return reject(rejection),
        };
        if instance.title == new_title {
            return Ok(Ok(Outcome::Unchanged));
        }
        let taken = tables::guid_at(
            &self.t.titles,
            "titles",
            &tables::title_key(instance.root, new_title),
        )?
        .is_some()
            || (instance.guid == instance.root
                && tables::guid_at(
                    &self.t.roots,
                    "roots",
                    &tables::root_key(&instance.owner, new_title),
                )?
                .is_some());
        if taken {
            return reject(Rejection::Invalid {
                what: "new title".into(),
                reason: format!("{new_title:?} is already taken"),
            });
        }
        tables::delete(
            &mut self.t.titles,
            "titles",
            tables::title_key(instance.root, &instance.title).as_bytes(),
        )?;
        tables::put_guid(
            &mut self.t.titles,
            "titles",
            &tables::title_key(instance.root, new_title),
            instance.guid,
        )?;
        if let Requester::User(owner) = &instance.requester {
            tables::delete(
                &mut self.t.roots,
                "roots",
                tables::root_key(owner, &instance.title).as_bytes(),
            )?;
            tables::put_guid(
                &mut self.t.roots,
                "roots",
                &tables::root_key(owner, new_title),
                instance.guid,
            )?;
        }
        instance.title = new_title.to_string();
        bump(&mut instance, self.at);
        self.save_instance(&instance)?;
        self.audit(
            "rename instance",
            format!("{} to {new_title:?}", instance.guid),
        )?;
        Ok(Ok(Outcome::Done))
    }

    fn post_usage(&mut self, id: &ComputerId, records: &[UsageRecord]) -> Handled {
        if self.t.computer(id)?.is_none() {
            return reject(Rejection::UnknownComputer(id.clone()));
        }
        if records.len() > MAX_USAGE_RECORDS {
            return reject(Rejection::TooMany {
                what: "usage records".into(),
                count: records.len(),
                max: MAX_USAGE_RECORDS,
            });
        }
        for record in records {
            if self.t.partition(id, &record.partition)?.is_none() {
                return reject(Rejection::UnknownPartition(PartitionId {
                    computer: id.clone(),
                    partition: record.partition.clone(),
                }));
            }
            check!(check_usage(record));
        }
        for record in records {
            let key = tables::usage_key(id, &record.partition, record.period_start.0);
            tables::put(&mut self.t.usage, "usage", key.as_bytes(), record)?;
        }
        self.audit("post usage", format!("{} records for {id}", records.len()))?;
        Ok(Ok(Outcome::Done))
    }

    // --- certificates -----------------------------------------------------------------------

    fn record_certificate(
        &mut self,
        serial: &str,
        identity: &str,
        not_after: Timestamp,
    ) -> Handled {
        check!(check_serial(serial));
        check!(check_name("certificate identity", identity));
        let key = tables::serial_key(serial);
        if tables::get::<IssuedCertificate>(&self.t.certificates, "certificates", key.as_bytes())?
            .is_some()
        {
            return Ok(Ok(Outcome::Unchanged));
        }
        let record = IssuedCertificate {
            serial: serial.to_string(),
            identity: identity.to_string(),
            not_after,
            issued_at: self.at,
            issued_by: self.actor.clone(),
        };
        tables::put(
            &mut self.t.certificates,
            "certificates",
            key.as_bytes(),
            &record,
        )?;
        self.audit("record certificate", format!("{serial} for {identity}"))?;
        Ok(Ok(Outcome::Done))
    }

    fn create_enrollment_token(
        &mut self,
        token_hash: &str,
        computer: &ComputerId,
        expires_at: Timestamp,
    ) -> Handled {
        check!(check_token_hash(token_hash));
        check!(check_name("computer id", computer.as_str()));
        let key = tables::serial_key(token_hash);
        if tables::get::<EnrollmentToken>(
            &self.t.enrollment_tokens,
            "enrollment_tokens",
            key.as_bytes(),
        )?
        .is_some()
        {
            return Ok(Ok(Outcome::Unchanged));
        }
        let token = EnrollmentToken {
            computer: computer.clone(),
            expires_at,
            issued_by: self.actor.clone(),
            used_at: None,
        };
        tables::put(
            &mut self.t.enrollment_tokens,
            "enrollment_tokens",
            key.as_bytes(),
            &token,
        )?;
        self.audit("create enrollment token", computer.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    fn use_enrollment_token(&mut self, token_hash: &str) -> Handled {
        check!(check_token_hash(token_hash));
        let key = tables::serial_key(token_hash);
        let Some(mut token) = tables::get::<EnrollmentToken>(
            &self.t.enrollment_tokens,
            "enrollment_tokens",
            key.as_bytes(),
        )?
        else {
            return reject(Rejection::BadEnrollmentToken);
        };
        if token.used_at.is_some() || self.at >= token.expires_at {
            return reject(Rejection::BadEnrollmentToken);
        }
        token.used_at = Some(self.at);
        tables::put(
            &mut self.t.enrollment_tokens,
            "enrollment_tokens",
            key.as_bytes(),
            &token,
        )?;
        self.audit("use enrollment token", token.computer.to_string())?;
        Ok(Ok(Outcome::Enrolled {
            computer: token.computer,
        }))
    }

    fn bind_instance_certificate(
        &mut self,
        guid: InstanceGuid,
        mut certificate: InstanceCertificate,
        replaces: Option<&str>,
    ) -> Handled {
        check!(check_serial(&certificate.serial));
        for (what, pem) in [
            ("certificate chain", &certificate.chain_pem),
            ("certificate key", &certificate.key_pem),
        ] {
            if pem.len() > MAX_PEM_BYTES {
                return reject(Rejection::TooLarge {
                    what: what.into(),
                    bytes: pem.len(),
                    max: MAX_PEM_BYTES,
                });
            }
        }
        let Some(instance) = self.t.instance(guid)? else {
            return reject(Rejection::UnknownInstance(guid));
        };
        if instance.placement != Placement::Partition(certificate.partition.clone()) {
            return reject(Rejection::Invalid {
                what: "certificate binding".into(),
                reason: format!(
                    "instance {guid} does not run on partition {}",
                    certificate.partition
                ),
            });
        }
        // An instance being destroyed still gets one: its node destroys it with it.
        let key = tables::instance_key(guid);
        let current: Option<InstanceCertificate> = tables::get(
            &self.t.instance_certificates,
            "instance_certificates",
            key.as_bytes(),
        )?;
        if let Some(current) = current {
            // Another replica bound one first, or renewed it first: the first stands, and the
            // certificate offered here is dropped with its key, unused.
            if replaces != Some(current.serial.as_str()) {
                return Ok(Ok(Outcome::InstanceCertificate(Box::new(current))));
            }
            certificate.serials = current.serials;
        }
        certificate.serials.push(certificate.serial.clone());
        tables::put(
            &mut self.t.instance_certificates,
            "instance_certificates",
            key.as_bytes(),
            &certificate,
        )?;
        self.audit(
            "bind instance certificate",
            format!("{} to {guid}", certificate.serial),
        )?;
        Ok(Ok(Outcome::InstanceCertificate(Box::new(certificate))))
    }

    /// Revokes every certificate ever bound to an instance whose partition is being freed, so
    /// that none outlives it or serves the partition's next occupant.
    fn revoke_instance_certificates(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let key = tables::instance_key(guid);
        let Some(bound) = tables::get::<InstanceCertificate>(
            &self.t.instance_certificates,
            "instance_certificates",
            key.as_bytes(),
        )?
        else {
            return Ok(());
        };
        for serial in &bound.serials {
            self.revoke(serial, &format!("instance {guid} destroyed"))?;
        }
        tables::delete(
            &mut self.t.instance_certificates,
            "instance_certificates",
            key.as_bytes(),
        )?;
        self.audit("revoke instance certificates", guid.to_string())
    }

    fn revoke_certificate(&mut self, serial: &str, reason: &str) -> Handled {
        check!(check_serial(serial));
        if reason.len() > MAX_NAME_BYTES {
            return reject(Rejection::TooLarge {
                what: "revocation reason".into(),
                bytes: reason.len(),
                max: MAX_NAME_BYTES,
            });
        }
        if !self.revoke(serial, reason)? {
            return Ok(Ok(Outcome::Unchanged));
        }
        self.audit("revoke certificate", serial.to_string())?;
        Ok(Ok(Outcome::Done))
    }

    /// Records `serial` as revoked, unless it already is; answers whether it was new.
    fn revoke(&mut self, serial: &str, reason: &str) -> Result<bool, StateError> {
        let key = tables::serial_key(serial);
        if tables::get::<Revocation>(&self.t.revocations, "revocations", key.as_bytes())?.is_some()
        {
            return Ok(false);
        }
        let revocation = Revocation {
            at: self.at,
            by: self.actor.clone(),
            reason: reason.to_string(),
        };
        tables::put(
            &mut self.t.revocations,
            "revocations",
            key.as_bytes(),
            &revocation,
        )?;
        self.changes.revocations = true;
        Ok(true)
    }

    /// Liveness is not part of a computer's view (a summary must not wake every node's
    /// long-poll), and not audited: it records that nodes polled, not that anyone changed
    /// anything.
    fn record_liveness(&mut self, seen: &[(ComputerId, Timestamp)]) -> Handled {
        let mut recorded = false;
        for (computer, at) in seen {
            if self.t.computer(computer)?.is_none() {
                continue;
            }
            if self
                .t
                .last_seen(computer)?
                .is_some_and(|known| known >= at.0)
            {
                continue;
            }
            tables::put_u64(
                &mut self.t.liveness,
                "liveness",
                &tables::computer_key(computer),
                at.0,
            )?;
            recorded = true;
        }
        Ok(Ok(if recorded {
            Outcome::Done
        } else {
            Outcome::Unchanged
        }))
    }

    // --- placement ----------------------------------------------------------------------------

    /// Places an instance that holds nothing yet, or records why it waits. Updates the indexes
    /// but not the instance record itself (the caller saves it).
    fn place(&mut self, instance: &mut Instance) -> Result<(), StateError> {
        if instance.requested_state == RequestedState::Destroyed {
            return Ok(());
        }
        let filter = match placement::parse_sla(&instance.sla, instance.shared) {
            Ok(filter) => filter,
            Err(reason) => {
                instance.placement = Placement::Unplaceable { reason };
                return Ok(());
            }
        };
        if instance.shared {
            match placement::choose_host(
                self.t,
                &instance.software_release,
                &instance.software_type,
                &filter,
                &Tree::of(instance),
            )? {
                Choice::Found(host) => self.attach_to_host(instance, host.guid)?,
                Choice::NotFound(reason) => {
                    instance.placement = Placement::Pending { reason };
                    tables::put_index(
                        &mut self.t.pending_shared,
                        "pending_shared",
                        tables::shared_host_key(
                            &instance.software_release,
                            &instance.software_type,
                            instance.guid,
                        )
                        .as_bytes(),
                    )?;
                }
            }
            return Ok(());
        }
        let networks = if filter.unique_by_network {
            placement::tree_networks(self.t, instance.root, instance.guid)?
        } else {
            BTreeSet::new()
        };
        match placement::choose_partition(
            self.t,
            &instance.software_release,
            &filter,
            &Tree::of(instance),
            &networks,
        )? {
            Choice::Found((computer, partition)) => self.occupy(instance, computer, partition)?,
            Choice::NotFound(reason) => {
                instance.placement = Placement::Pending { reason };
                tables::put_index(
                    &mut self.t.pending,
                    "pending",
                    tables::pending_key(&instance.software_release, instance.guid).as_bytes(),
                )?;
            }
        }
        Ok(())
    }

    fn attach_to_host(
        &mut self,
        instance: &mut Instance,
        host: InstanceGuid,
    ) -> Result<(), StateError> {
        instance.placement = Placement::Hosted { host };
        if let Some(reference) = &instance.shared_reference {
            tables::put_guid(
                &mut self.t.hosted,
                "hosted",
                &tables::hosted_key(host, reference),
                instance.guid,
            )?;
        }
        // The host's node must add it to its slave_instance_list.
        self.bump(host)
    }

    fn occupy(
        &mut self,
        instance: &mut Instance,
        mut computer: Computer,
        partition: Partition,
    ) -> Result<(), StateError> {
        let before = placement::index_keys(self.t, &computer)?;
        tables::delete(
            &mut self.t.free_partitions,
            "free_partitions",
            tables::free_key(&computer.id, &partition).as_bytes(),
        )?;
        tables::put_guid(
            &mut self.t.occupants,
            "occupants",
            &tables::partition_key(&computer.id, &partition.reference),
            instance.guid,
        )?;
        computer.free_count = computer.free_count.saturating_sub(1);
        self.save_computer(&computer, &before)?;
        instance.placement = Placement::Partition(PartitionId {
            computer: computer.id.clone(),
            partition: partition.reference.clone(),
        });
        bump(instance, self.at);
        self.touch_tree(instance.root)?;
        self.index_host(instance)?;
        // A new host may be what pending shared instances wait for.
        self.place_pending_shared(
            &instance.software_release,
            &instance.software_type,
            Some(instance),
        )?;
        Ok(())
    }

    fn release(&mut self, id: &PartitionId) -> Result<(), StateError> {
        let (Some(mut computer), Some(partition)) = (
            self.t.computer(&id.computer)?,
            self.t.partition(&id.computer, &id.partition)?,
        ) else {
            return Ok(());
        };
        let before = placement::index_keys(self.t, &computer)?;
        tables::delete(
            &mut self.t.occupants,
            "occupants",
            tables::partition_key(&id.computer, &id.partition).as_bytes(),
        )?;
        tables::put_index(
            &mut self.t.free_partitions,
            "free_partitions",
            tables::free_key(&id.computer, &partition).as_bytes(),
        )?;
        computer.free_count = computer
            .free_count
            .saturating_add(1)
            .min(computer.partition_count);
        self.save_computer(&computer, &before)
    }

    /// Places pending requests that `computer` can now take, oldest first. Returns how many.
    fn place_pending_on(&mut self, id: &ComputerId) -> Result<u32, StateError> {
        let mut placed = 0;
        for (url, supply) in self.t.supplies_of(id)? {
            if supply.requested != SupplyState::Available {
                continue;
            }
            let prefix = super::keys::Key::new().str(url.as_str());
            for guid in tables::trailing_guids(&self.t.pending, "pending", &prefix, usize::MAX)? {
                let Some(computer) = self.t.computer(id)? else {
                    return Ok(placed);
                };
                if computer.free_count == 0 || !computer.allocation_scope.is_open() {
                    return Ok(placed);
                }
                let Some(mut instance) = self.t.instance(guid)? else {
                    continue;
                };
                let Ok(mut filter) = placement::parse_sla(&instance.sla, false) else {
                    continue;
                };
                // Only this computer is on offer.
                if filter.computer.as_ref().is_some_and(|c| c != id) {
                    continue;
                }
                filter.computer = Some(id.clone());
                let networks = if filter.unique_by_network {
                    placement::tree_networks(self.t, instance.root, instance.guid)?
                } else {
                    BTreeSet::new()
                };
                if let Choice::Found((computer, partition)) = placement::choose_partition(
                    self.t,
                    &url,
                    &filter,
                    &Tree::of(&instance),
                    &networks,
                )? {
                    tables::delete(
                        &mut self.t.pending,
                        "pending",
                        tables::pending_key(&url, guid).as_bytes(),
                    )?;
                    self.occupy(&mut instance, computer, partition)?;
                    self.save_instance(&instance)?;
                    placed += 1;
                }
            }
        }
        Ok(placed)
    }

    /// Places pending shared instances of `url` and `software_type` now that a host may exist.
    fn place_pending_shared(
        &mut self,
        url: &SoftwareReleaseUrl,
        software_type: &str,
        new_host: Option<&Instance>,
    ) -> Result<(), StateError> {
        let prefix = super::keys::Key::new().str(url.as_str()).str(software_type);
        for guid in tables::trailing_guids(
            &self.t.pending_shared,
            "pending_shared",
            &prefix,
            usize::MAX,
        )? {
            let Some(mut shared) = self.t.instance(guid)? else {
                continue;
            };
            let Ok(filter) = placement::parse_sla(&shared.sla, true) else {
                continue;
            };
            let host = match new_host {
                // The new host is not saved yet: check it directly.
                Some(host)
                    if filter.host.is_none_or(|g| g == host.guid)
                        && placement::can_host(host, url, software_type) =>
                {
                    Some(host.guid)
                }
                _ => match placement::choose_host(
                    self.t,
                    url,
                    software_type,
                    &filter,
                    &Tree::of(&shared),
                )? {
                    Choice::Found(host) => Some(host.guid),
                    Choice::NotFound(_) => None,
                },
            };
            if let Some(host) = host {
                tables::delete(
                    &mut self.t.pending_shared,
                    "pending_shared",
                    tables::shared_host_key(url, software_type, guid).as_bytes(),
                )?;
                self.attach_to_host(&mut shared, host)?;
                self.save_instance(&shared)?;
            }
        }
        Ok(())
    }

    /// Adds a placed, live, normal instance to the hosts shared instances can use.
    fn index_host(&mut self, instance: &Instance) -> Result<(), StateError> {
        if placement::can_host(
            instance,
            &instance.software_release,
            &instance.software_type,
        ) {
            tables::put_index(
                &mut self.t.shared_hosts,
                "shared_hosts",
                tables::shared_host_key(
                    &instance.software_release,
                    &instance.software_type,
                    instance.guid,
                )
                .as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Removes an instance from the indexes that its software release or state put it in.
    fn unindex(&mut self, instance: &Instance) -> Result<(), StateError> {
        let url = &instance.software_release;
        let software_type = &instance.software_type;
        tables::delete(
            &mut self.t.shared_hosts,
            "shared_hosts",
            tables::shared_host_key(url, software_type, instance.guid).as_bytes(),
        )?;
        tables::delete(
            &mut self.t.pending,
            "pending",
            tables::pending_key(url, instance.guid).as_bytes(),
        )?;
        tables::delete(
            &mut self.t.pending_shared,
            "pending_shared",
            tables::shared_host_key(url, software_type, instance.guid).as_bytes(),
        )
    }

    // --- helpers ------------------------------------------------------------------------------

    fn save_computer(
        &mut self,
        computer: &Computer,
        index_before: &BTreeSet<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.touched.insert(computer.id.clone());
        tables::put(
            &mut self.t.computers,
            "computers",
            tables::computer_key(&computer.id).as_bytes(),
            computer,
        )?;
        let after = placement::index_keys(self.t, computer)?;
        placement::reindex(self.t, index_before, &after)
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
        tables::put(
            &mut self.t.instances,
            "instances",
            tables::instance_key(instance.guid).as_bytes(),
            instance,
        )
    }

    /// Marks the computers of every placed member of the tree of `root` as changed: a tree's
    /// addresses (`full_ip_list` in SLAP) are part of each member's view, so placing, freeing
    /// or readdressing one member changes the others' (their computers' versions say so).
    fn touch_tree(&mut self, root: InstanceGuid) -> Result<(), StateError> {
        for member in tables::guid_values(&self.t.titles, "titles", &tables::instance_key(root))? {
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
        tables::put_u64(
            &mut self.t.counters,
            "counters",
            &super::keys::Key::new().str(name),
            value,
        )
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
        tables::put(&mut self.t.audit, "audit", key.as_bytes(), &record)
    }

    /// The instance on a partition.
    fn occupant(&self, id: &PartitionId) -> Result<Result<Instance, Rejection>, StateError> {
        if self.t.partition(&id.computer, &id.partition)?.is_none() {
            return Ok(Err(Rejection::UnknownPartition(id.clone())));
        }
        let Some(guid) = self.t.occupant(&id.computer, &id.partition)? else {
            return Ok(Err(Rejection::PartitionFree(id.clone())));
        };
        match self.t.instance(guid)? {
            Some(instance) => Ok(Ok(instance)),
            None => Err(StateError::Corrupt {
                table: "occupants",
                key: tables::partition_key(&id.computer, &id.partition).into_bytes(),
                detail: format!("occupant {guid} does not exist"),
            }),
        }
    }

    /// The instance on a partition, or the shared instance it hosts under `shared_reference`.
    fn resolve(
        &self,
        id: &PartitionId,
        shared_reference: Option<&str>,
    ) -> Result<Result<Instance, Rejection>, StateError> {
        let host = match self.occupant(id)? {
            Ok(host) => host,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let Some(reference) = shared_reference else {
            return Ok(Ok(host));
        };
        let shared = tables::guid_at(
            &self.t.hosted,
            "hosted",
            &tables::hosted_key(host.guid, reference),
        )?;
        match shared {
            Some(guid) => Ok(self
                .t
                .instance(guid)?
                .ok_or(Rejection::UnknownInstance(guid))),
            None => Ok(Err(Rejection::UnknownSharedInstance {
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
    let rows = tables::scan(
        &t.instances,
        "instances",
        &super::keys::Key::new(),
        usize::MAX,
    )?;
    let mut holdings: BTreeMap<UserId, Holding> = BTreeMap::new();
    for instance in tables::decode_all::<Instance>("instances", rows)? {
        let bytes = parameter_bytes(&t.parameters(instance.guid)?);
        let holding = holdings.entry(instance.owner.clone()).or_default();
        holding.instances += 1;
        holding.pending += u64::from(waiting(&instance));
        holding.parameter_bytes += bytes;
    }
    for (owner, holding) in holdings {
        let key = tables::user_key(&owner);
        tables::put(&mut t.holdings, "holdings", key.as_bytes(), &holding)?;
    }
    tables::put_u64(
        &mut t.counters,
        "counters",
        &super::keys::Key::new().str(COUNTED),
        1,
    )
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

fn check_name(what: &'static str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "is empty".to_string(),
        });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Rejection::TooLarge {
            what: what.into(),
            bytes: value.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "contains control characters".to_string(),
        });
    }
    Ok(())
}

/// `min` to `max` lowercase hex digits.
fn check_hex(what: &str, value: &str, min: usize, max: usize) -> Result<(), Rejection> {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if value.len() < min || value.len() > max || !value.chars().all(hex) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: format!("{value:?} is not {min} to {max} lowercase hex digits"),
        });
    }
    Ok(())
}

/// A SHA-256 in lowercase hex.
fn check_token_hash(hash: &str) -> Result<(), Rejection> {
    check_hex("enrollment token hash", hash, 64, 64)
}

/// A serial as `ca::Serial` prints it.
fn check_serial(serial: &str) -> Result<(), Rejection> {
    check_hex("certificate serial", serial, 1, 40)
}

fn check_url(url: &SoftwareReleaseUrl) -> Result<(), Rejection> {
    let url = url.as_str();
    if url.len() > MAX_URL_BYTES {
        return Err(Rejection::TooLarge {
            what: "software release url".into(),
            bytes: url.len(),
            max: MAX_URL_BYTES,
        });
    }
    if url.is_empty() || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Rejection::Invalid {
            what: "software release url".into(),
            reason: format!("{url:?} is not a url"),
        });
    }
    Ok(())
}

/// What can be refused in a command from the command alone (sizes, counts, shapes): the same
/// checks its handler makes, run by the replica that receives it before proposing it, so that
/// a request too large for the state never costs a log entry. The state machine makes them
/// again when it applies (a replica of another release may have proposed it).
pub fn check_input(op: &Op) -> Result<(), Rejection> {
    match op {
        Op::RequestInstance(request) => check_request(request),
        Op::RegisterComputer(definition) => check_definition(definition),
        Op::PublishConnection { parameters, .. } => {
            check_parameters("connection parameters", parameters, MAX_PARAMETERS_BYTES)
        }
        Op::PostUsage { records, .. } => {
            if records.len() > MAX_USAGE_RECORDS {
                return Err(Rejection::TooMany {
                    what: "usage records".into(),
                    count: records.len(),
                    max: MAX_USAGE_RECORDS,
                });
            }
            records.iter().try_for_each(check_usage)
        }
        _ => Ok(()),
    }
}

fn check_parameters(
    what: &'static str,
    parameters: &Parameters,
    max: usize,
) -> Result<(), Rejection> {
    let bytes: usize = parameters.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > max {
        return Err(Rejection::TooLarge {
            what: what.into(),
            bytes,
            max,
        });
    }
    if parameters.keys().any(String::is_empty) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "a parameter name is empty".to_string(),
        });
    }
    Ok(())
}

fn check_request(request: &InstanceRequest) -> Result<(), Rejection> {
    check_name("title", &request.title)?;
    check_url(&request.software_release)?;
    check_name("software type", &request.software_type)?;
    check_parameters(
        "instance parameters",
        &request.parameters,
        MAX_PARAMETERS_BYTES,
    )?;
    check_parameters("SLA", &request.sla, MAX_SLA_BYTES)
}

fn check_definition(definition: &ComputerDefinition) -> Result<(), Rejection> {
    check_name("computer id", definition.id.as_str())?;
    if definition.partitions.len() > MAX_PARTITIONS_PER_COMPUTER {
        return Err(Rejection::TooMany {
            what: "partitions".into(),
            count: definition.partitions.len(),
            max: MAX_PARTITIONS_PER_COMPUTER,
        });
    }
    let mut seen = BTreeSet::new();
    for partition in &definition.partitions {
        check_name("partition reference", partition.reference.as_str())?;
        if !seen.insert(&partition.reference) {
            return Err(Rejection::Invalid {
                what: "computer definition".into(),
                reason: format!("partition {} appears twice", partition.reference),
            });
        }
        for text in [&partition.path, &partition.tap, &partition.user]
            .into_iter()
            .flatten()
        {
            check_name("partition field", text)?;
        }
        for address in &partition.addresses {
            check_name("address", &address.addr)?;
            check_name("netmask", &address.netmask)?;
        }
    }
    if let Some(attributes) = &definition.attributes {
        for (key, value) in attributes {
            check_name("attribute name", key)?;
            check_name("attribute value", value)?;
        }
    }
    Ok(())
}

fn check_usage(record: &UsageRecord) -> Result<(), Rejection> {
    if record.period_end < record.period_start {
        return Err(Rejection::Invalid {
            what: "usage record".into(),
            reason: "period ends before it starts".to_string(),
        });
    }
    for movement in &record.movements {
        check_name("usage resource", &movement.resource)?;
        if !movement.category.is_empty() {
            check_name("usage category", &movement.category)?;
        }
        if !movement.quantity.is_finite() {
            return Err(Rejection::Invalid {
                what: "usage quantity".into(),
                reason: format!("{} is not a number", movement.quantity),
            });
        }
        if !(0.0..=MAX_USAGE_QUANTITY).contains(&movement.quantity) {
            return Err(Rejection::Invalid {
                what: "usage quantity".into(),
                reason: format!(
                    "{} is not between 0 and {MAX_USAGE_QUANTITY:e}",
                    movement.quantity
                ),
            });
        }
    }
    Ok(())
}
