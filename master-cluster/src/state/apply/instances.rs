//! Instances: requests (a new tree, a child, an update), what their nodes report and publish, bangs
//! and renames.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn request_instance(&mut self, request: &InstanceRequest) -> Handled {
        check_request(request)?;
        // Who asks decides the tree: a user asks for a root, an instance for a child.
        let (owner, parent) = match self.actor {
            Actor::User(user) | Actor::Operator(user) => (user.clone(), None),
            Actor::Partition(partition) => {
                let parent = self.occupant(partition)?;
                // A child of an instance on its way out would outlive its tree.
                if parent.requested_state == RequestedState::Destroyed {
                    return Err(Stop::Refused(Rejection::BeingDestroyed(parent.guid)));
                }
                (parent.owner.clone(), Some(parent))
            }
            Actor::Computer(_) | Actor::Replica(_) => {
                return Err(Stop::Refused(self.refuse("request instances")));
            }
        };
        let existing = match &parent {
            None => self
                .t
                .roots
                .guid_at(&tables::root_key(&owner, &request.title))?,
            Some(parent) => self
                .t
                .titles
                .guid_at(&tables::title_key(parent.root, &request.title))?,
        };
        match existing {
            // The requester's own tree (found by owner and title, or under its parent).
            Some(guid) => match self.t.instance(guid)? {
                Some(instance) => self.update_instance(instance, request),
                None => Err(StateError::Corrupt {
                    table: "titles",
                    key: tables::instance_key(guid).into_bytes(),
                    detail: "title points to a missing instance".to_string(),
                }
                .into()),
            },
            None => {
                let project = match &parent {
                    Some(parent) => parent.project.clone(),
                    None => self.project_of_new_tree(&owner, request)?,
                };
                self.create_instance(owner, project, parent.as_ref(), request)
            }
        }
    }

    /// The project a new tree is requested in: the one its SLA names (`project_guid`, as the
    /// master's), else the requester's first project by name, else the default project. The
    /// requester must have a role in it.
    pub(super) fn project_of_new_tree(
        &self,
        owner: &UserId,
        request: &InstanceRequest,
    ) -> Result<ProjectId, Stop> {
        let project = match request.sla.get(placement::PROJECT_KEY) {
            Some(named) => ProjectId(named.clone()),
            None => match self.t.projects_of(owner)?.into_iter().next() {
                Some((project, _)) => project,
                None => ProjectId::default_project(),
            },
        };
        if self.t.project(&project)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownProject(project)));
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
        .map_err(not_allowed)?)
    }

    pub(super) fn create_instance(
        &mut self,
        owner: UserId,
        project: ProjectId,
        parent: Option<&Instance>,
        request: &InstanceRequest,
    ) -> Handled {
        if request.state == RequestedState::Destroyed {
            return Err(Stop::Refused(Rejection::NothingToDestroy {
                title: request.title.clone(),
            }));
        }
        self.within_quota(&owner, 1, parameter_bytes(&request.parameters))?;
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
        self.t
            .titles
            .put_guid(&tables::title_key(root, &request.title), guid)?;
        match parent {
            None => self
                .t
                .roots
                .put_guid(&tables::root_key(&owner, &request.title), guid)?,
            Some(parent) => self
                .t
                .children
                .put_index(tables::child_key(parent.guid, guid).as_bytes())?,
        }
        if !request.parameters.is_empty() {
            self.t
                .instance_parameters
                .put(tables::instance_key(guid).as_bytes(), &request.parameters)?;
            self.hold(&owner, |h| {
                h.parameter_bytes += parameter_bytes(&request.parameters);
            })?;
        }
        self.place(&mut instance)?;
        self.save_instance(&instance)?;
        self.audit("request instance", format!("{guid} {:?}", request.title))?;
        Ok(Outcome::Instance(summary(&instance, true)))
    }

    pub(super) fn update_instance(
        &mut self,
        mut instance: Instance,
        request: &InstanceRequest,
    ) -> Handled {
        if instance.requested_state == RequestedState::Destroyed {
            return if request.state == RequestedState::Destroyed {
                Ok(Outcome::Instance(summary(&instance, false)))
            } else {
                Err(Stop::Refused(Rejection::BeingDestroyed(instance.guid)))
            };
        }
        if instance.shared != request.shared {
            return Err(Stop::Refused(Rejection::Invalid {
                what: "request".into(),
                reason: format!(
                    "instance {} is {}shared; the shared flag cannot change",
                    instance.guid,
                    if instance.shared { "" } else { "not " }
                ),
            }));
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
            return Ok(Outcome::Instance(summary(&instance, false)));
        }
        let (old_bytes, new_bytes) = (
            parameter_bytes(&parameters),
            parameter_bytes(&request.parameters),
        );
        if new_bytes > old_bytes {
            self.within_quota(&instance.owner, 0, new_bytes - old_bytes)?;
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
                self.t.instance_parameters.delete(key.as_bytes())?;
            } else {
                self.t
                    .instance_parameters
                    .put(key.as_bytes(), &request.parameters)?;
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
        Ok(Outcome::Instance(summary(&instance, true)))
    }

    pub(super) fn publish_connection(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        parameters: &Parameters,
    ) -> Handled {
        check_parameters("connection parameters", parameters, MAX_PARAMETERS_BYTES)?;
        let target = self.resolve(partition, shared_reference)?;
        if self.t.connection(target.guid)? == *parameters {
            return Ok(Outcome::Unchanged);
        }
        self.t
            .instance_connections
            .put(tables::instance_key(target.guid).as_bytes(), parameters)?;
        // They are in the target's partition view (`_connection_dict`).
        if let Placement::Partition(p) = &target.placement {
            self.touched.insert(p.computer.clone());
        }
        // The requester reads these parameters: it must reprocess.
        if let Requester::Instance(requester) = target.requester {
            self.bump(requester)?;
        }
        self.audit("publish connection parameters", target.guid.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn report_instance(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        report: &InstanceReport,
    ) -> Handled {
        let mut instance = self.resolve(partition, shared_reference)?;
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
                    return Ok(Outcome::Unchanged);
                }
                if instance.requested_state != RequestedState::Destroyed {
                    return Err(Stop::Refused(Rejection::Invalid {
                        what: "report".into(),
                        reason: format!("instance {} is not requested destroyed", instance.guid),
                    }));
                }
                return self.destroyed_reported(instance);
            }
        };
        if instance.reported_state == reported
            && instance.access_status.as_deref() == Some(access_status.as_str())
            && instance.last_error == last_error
        {
            return Ok(Outcome::Unchanged);
        }
        instance.reported_state = reported;
        instance.access_status = Some(access_status);
        instance.last_error = last_error;
        self.save_instance(&instance)?;
        self.audit("report instance", instance.guid.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn bang_instance(&mut self, partition: &PartitionId, message: &str) -> Handled {
        let instance = self.occupant(partition)?;
        let tree = self
            .t
            .titles
            .guid_values(&tables::instance_key(instance.root))?;
        for guid in tree {
            self.bump(guid)?;
        }
        self.audit(
            "bang instance",
            format!("{}: {}", instance.guid, tail(message, 256)),
        )?;
        Ok(Outcome::Done)
    }

    pub(super) fn rename_instance(
        &mut self,
        partition: &PartitionId,
        shared_reference: Option<&str>,
        new_title: &str,
    ) -> Handled {
        check_name("title", new_title)?;
        let mut instance = self.resolve(partition, shared_reference)?;
        if instance.title == new_title {
            return Ok(Outcome::Unchanged);
        }
        let taken = self
            .t
            .titles
            .guid_at(&tables::title_key(instance.root, new_title))?
            .is_some()
            || (instance.guid == instance.root
                && self
                    .t
                    .roots
                    .guid_at(&tables::root_key(&instance.owner, new_title))?
                    .is_some());
        if taken {
            return Err(Stop::Refused(Rejection::Invalid {
                what: "new title".into(),
                reason: format!("{new_title:?} is already taken"),
            }));
        }
        self.t
            .titles
            .delete(tables::title_key(instance.root, &instance.title).as_bytes())?;
        self.t
            .titles
            .put_guid(&tables::title_key(instance.root, new_title), instance.guid)?;
        if let Requester::User(owner) = &instance.requester {
            self.t
                .roots
                .delete(tables::root_key(owner, &instance.title).as_bytes())?;
            self.t
                .roots
                .put_guid(&tables::root_key(owner, new_title), instance.guid)?;
        }
        instance.title = new_title.to_string();
        bump(&mut instance, self.at);
        self.save_instance(&instance)?;
        self.audit(
            "rename instance",
            format!("{} to {new_title:?}", instance.guid),
        )?;
        Ok(Outcome::Done)
    }
}
