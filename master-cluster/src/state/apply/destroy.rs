//! Destroying instances: requested, reported by the node, then forgotten with their tree's indexes.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn destroy_instance(&mut self, guid: InstanceGuid) -> Handled {
        let Some(instance) = self.t.instance(guid)? else {
            return Err(Stop::Refused(Rejection::UnknownInstance(guid)));
        };
        if instance.requested_state == RequestedState::Destroyed {
            return Ok(Outcome::Instance(summary(&instance, false)));
        }
        self.mark_destroyed(guid)?;
        self.audit("destroy instance", guid.to_string())?;
        let after = self.t.instance(guid)?;
        Ok(Outcome::Instance(match after {
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
        }))
    }

    /// Destroys the children of the instance on `partition` that it no longer requests.
    pub(super) fn update_related_instances(
        &mut self,
        partition: &PartitionId,
        titles: &[String],
    ) -> Handled {
        check_titles(titles)?;
        let parent = self.occupant(partition)?;
        if parent.requested_state == RequestedState::Destroyed {
            // Its whole tree is going already.
            return Ok(Outcome::Unchanged);
        }
        let requested: BTreeSet<&str> = titles.iter().map(String::as_str).collect();
        let children = self
            .t
            .children
            .trailing_guids(&tables::instance_key(parent.guid), usize::MAX)?;
        let mut dropped = Vec::new();
        for child in children {
            if let Some(child) = self.t.instance(child)?
                && child.requested_state != RequestedState::Destroyed
                && !requested.contains(child.title.as_str())
            {
                self.mark_destroyed(child.guid)?;
                dropped.push(child.title);
            }
        }
        if dropped.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        // The first few by name: a list may hold thousands.
        let named: Vec<&str> = dropped.iter().take(8).map(String::as_str).collect();
        self.audit(
            "destroy children no longer requested",
            format!("{} of {}: {}", dropped.len(), parent.guid, named.join(", ")),
        )?;
        Ok(Outcome::Done)
    }

    /// Marks `guid` and everything below it destroyed. What runs nowhere (shared instances,
    /// pending requests) is removed at once; what runs on a partition waits for its node.
    pub(super) fn mark_destroyed(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let children = self
            .t
            .children
            .trailing_guids(&tables::instance_key(guid), usize::MAX)?;
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
                let hosted = self.t.hosted.guid_values(&tables::instance_key(guid))?;
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

    pub(super) fn detach_from_host(
        &mut self,
        shared: &Instance,
        host: InstanceGuid,
    ) -> Result<(), StateError> {
        if let Some(reference) = &shared.shared_reference {
            self.t
                .hosted
                .delete(tables::hosted_key(host, reference).as_bytes())?;
        }
        Ok(())
    }

    /// Removes every record of an instance that holds no partition, and its link to its
    /// parent; then finishes the parent's destruction if it was only waiting for this child.
    pub(super) fn forget(&mut self, instance: &Instance) -> Result<(), StateError> {
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
        self.t.instances.delete(key.as_bytes())?;
        self.forget_status(instance.guid)?;
        self.t.instance_parameters.delete(key.as_bytes())?;
        self.t.instance_connections.delete(key.as_bytes())?;
        self.t
            .titles
            .delete(tables::title_key(instance.root, &instance.title).as_bytes())?;
        match &instance.requester {
            Requester::User(owner) => {
                self.t
                    .roots
                    .delete(tables::root_key(owner, &instance.title).as_bytes())?;
            }
            Requester::Instance(parent) => {
                self.t
                    .children
                    .delete(tables::child_key(*parent, instance.guid).as_bytes())?;
                self.finish_if_waiting(*parent)?;
            }
        }
        Ok(())
    }

    /// A parent reported destroyed while it still had children is freed with its last child.
    pub(super) fn finish_if_waiting(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let Some(parent) = self.t.instance(guid)? else {
            return Ok(());
        };
        let has_children = !self
            .t
            .children
            .scan(&tables::instance_key(guid), 1)?
            .is_empty();
        if parent.destroyed_reported && !has_children {
            self.release_and_forget(&parent)?;
        }
        Ok(())
    }

    pub(super) fn release_and_forget(&mut self, instance: &Instance) -> Result<(), StateError> {
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

    pub(super) fn destroyed_reported(&mut self, mut instance: Instance) -> Handled {
        let has_children = !self
            .t
            .children
            .scan(&tables::instance_key(instance.guid), 1)?
            .is_empty();
        self.audit("report instance destroyed", instance.guid.to_string())?;
        if has_children {
            instance.destroyed_reported = true;
            instance.reported_state = Some(ReportedState::Destroyed);
            self.save_instance(&instance)?;
            return Ok(Outcome::Done);
        }
        self.release_and_forget(&instance)?;
        Ok(Outcome::Done)
    }
}
