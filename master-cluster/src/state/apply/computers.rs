//! Computers: registration (their partitions), allocation scope, bangs, usage and liveness.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn register_computer(&mut self, definition: &ComputerDefinition) -> Handled {
        check_definition(definition)?;
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
            return Err(Stop::Refused(Rejection::PartitionBusy {
                partition: PartitionId {
                    computer: id.clone(),
                    partition: busy.reference.clone(),
                },
                instance,
            }));
        }

        let before = match &existing {
            Some(computer) => placement::index_keys(self.t, computer)?,
            None => BTreeSet::new(),
        };
        for gone in &removed {
            self.t
                .partitions
                .delete(tables::partition_key(id, &gone.reference).as_bytes())?;
            self.t
                .free_partitions
                .delete(tables::free_key(id, gone).as_bytes())?;
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
                Some(old) => self
                    .t
                    .free_partitions
                    .delete(tables::free_key(id, old).as_bytes())?,
            }
            if occupant.is_none() {
                free += 1;
                self.t
                    .free_partitions
                    .put_index(tables::free_key(id, &partition).as_bytes())?;
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
                self.t.partitions.put(
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
        Ok(Outcome::ComputerRegistered {
            partitions_added: added,
            partitions_removed: u32::try_from(removed.len()).unwrap_or(u32::MAX),
            placed,
        })
    }

    pub(super) fn set_allocation_scope(
        &mut self,
        id: &ComputerId,
        scope: AllocationScope,
    ) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        };
        if computer.allocation_scope == scope {
            return Ok(Outcome::Unchanged);
        }
        let before = placement::index_keys(self.t, &computer)?;
        computer.allocation_scope = scope;
        self.save_computer(&computer, &before)?;
        self.audit(&format!("allocation scope {scope}"), id.to_string())?;
        let placed = self.place_pending_on(id)?;
        Ok(Outcome::Placed { placed })
    }

    pub(super) fn bang_computer(&mut self, id: &ComputerId, message: &str) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
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
        Ok(Outcome::Done)
    }

    pub(super) fn post_usage(&mut self, id: &ComputerId, records: &[UsageRecord]) -> Handled {
        if self.t.computer(id)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        }
        if records.len() > MAX_USAGE_RECORDS {
            return Err(Stop::Refused(Rejection::TooMany {
                what: "usage records".into(),
                count: records.len(),
                max: MAX_USAGE_RECORDS,
            }));
        }
        for record in records {
            if self.t.partition(id, &record.partition)?.is_none() {
                return Err(Stop::Refused(Rejection::UnknownPartition(PartitionId {
                    computer: id.clone(),
                    partition: record.partition.clone(),
                })));
            }
            check_usage(record)?;
        }
        for record in records {
            let key = tables::usage_key(id, &record.partition, record.period_start.0);
            self.t.usage.put(key.as_bytes(), record)?;
        }
        self.audit("post usage", format!("{} records for {id}", records.len()))?;
        Ok(Outcome::Done)
    }

    /// Stores each report under its reference and dates, its movements' partitions resolved
    /// from what the node named. A report stored before for the same key is replaced; the same
    /// report again changes nothing.
    pub(super) fn post_usage_reports(
        &mut self,
        id: &ComputerId,
        reports: &[UsageReport],
    ) -> Handled {
        if self.t.computer(id)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        }
        check_usage_reports(reports)?;
        let partitions = self.t.partitions_of(id)?;
        let mut stored = 0;
        for report in reports {
            let mut report = UsageReport {
                received_at: self.at,
                ..report.clone()
            };
            for movement in &mut report.movements {
                movement.partition = reported_partition(&partitions, &movement.reference);
            }
            let key = tables::usage_report_key(id, &report);
            let before = self.t.usage_reports.get::<UsageReport>(key.as_bytes())?;
            if before.is_some_and(|before| before.same(&report)) {
                continue;
            }
            self.t.usage_reports.put(key.as_bytes(), &report)?;
            stored += 1;
        }
        if stored == 0 {
            return Ok(Outcome::Unchanged);
        }
        self.audit("post usage reports", format!("{stored} for {id}"))?;
        Ok(Outcome::Done)
    }

    // --- certificates -----------------------------------------------------------------------

    /// Liveness is not part of a computer's view (a summary must not wake every node's
    /// long-poll), and not audited: it records that nodes polled, not that anyone changed
    /// anything.
    pub(super) fn record_liveness(&mut self, seen: &[(ComputerId, Timestamp)]) -> Handled {
        let mut recorded = false;
        for (id, at) in seen {
            let Some(computer) = self.t.computer(id)? else {
                continue;
            };
            if self.t.last_seen(id)?.is_some_and(|known| known >= at.0) {
                continue;
            }
            self.t.liveness.put_u64(&tables::computer_key(id), at.0)?;
            // A silent node that polled again: its alert closes.
            self.review_computer(&computer)?;
            recorded = true;
        }
        Ok(if recorded {
            Outcome::Done
        } else {
            Outcome::Unchanged
        })
    }

    // --- placement ----------------------------------------------------------------------------
}

/// The partition a usage movement's reference names: one of the computer's partitions by its
/// reference, or by its user when no other partition has that user (`node collect` names
/// users); `None` for anything else (the computer itself).
fn reported_partition(partitions: &[Partition], reference: &str) -> Option<PartitionRef> {
    if let Some(partition) = partitions
        .iter()
        .find(|p| p.reference.as_str() == reference)
    {
        return Some(partition.reference.clone());
    }
    let mut by_user = partitions
        .iter()
        .filter(|p| p.user.as_deref() == Some(reference));
    match (by_user.next(), by_user.next()) {
        (Some(partition), None) => Some(partition.reference.clone()),
        _ => None,
    }
}
