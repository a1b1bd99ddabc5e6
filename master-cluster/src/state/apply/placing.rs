//! Placement's writes: the marketplace's choice (`state::placement`) made true in the tables,
//! partitions occupied and released, pending requests placed when capacity appears, the hosting
//! index of shared instances.

use super::*;

impl Applier<'_, '_> {
    /// Places an instance that holds nothing yet, or records why it waits. Updates the indexes
    /// but not the instance record itself (the caller saves it).
    pub(super) fn place(&mut self, instance: &mut Instance) -> Result<(), StateError> {
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
                    self.t.pending_shared.put_index(
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
                self.t.pending.put_index(
                    tables::pending_key(&instance.software_release, instance.guid).as_bytes(),
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn attach_to_host(
        &mut self,
        instance: &mut Instance,
        host: InstanceGuid,
    ) -> Result<(), StateError> {
        instance.placement = Placement::Hosted { host };
        if let Some(reference) = &instance.shared_reference {
            self.t
                .hosted
                .put_guid(&tables::hosted_key(host, reference), instance.guid)?;
        }
        // The host's node must add it to its slave_instance_list.
        self.bump(host)
    }

    pub(super) fn occupy(
        &mut self,
        instance: &mut Instance,
        mut computer: Computer,
        partition: Partition,
    ) -> Result<(), StateError> {
        self.t
            .free_partitions
            .delete(tables::free_key(&computer.id, &partition).as_bytes())?;
        self.t.occupants.put_guid(
            &tables::partition_key(&computer.id, &partition.reference),
            instance.guid,
        )?;
        let free = computer.free_count.saturating_sub(1);
        self.save_free_count(&mut computer, free)?;
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

    pub(super) fn release(&mut self, id: &PartitionId) -> Result<(), StateError> {
        let (Some(mut computer), Some(partition)) = (
            self.t.computer(&id.computer)?,
            self.t.partition(&id.computer, &id.partition)?,
        ) else {
            return Ok(());
        };
        self.t
            .occupants
            .delete(tables::partition_key(&id.computer, &id.partition).as_bytes())?;
        self.t
            .free_partitions
            .put_index(tables::free_key(&id.computer, &partition).as_bytes())?;
        let free = computer
            .free_count
            .saturating_add(1)
            .min(computer.partition_count);
        self.save_free_count(&mut computer, free)
    }

    /// Saves `computer` with `free` partitions. Its placement index keys depend on the count
    /// only through its tier (`placement::free_tier`, zero for none): within a tier they stay
    /// as they are, and most placements skip reading its supplies twice to rebuild them.
    fn save_free_count(&mut self, computer: &mut Computer, free: u32) -> Result<(), StateError> {
        if placement::free_tier(free) == placement::free_tier(computer.free_count) {
            computer.free_count = free;
            return self.save_computer_same_index(computer);
        }
        let before = placement::index_keys(self.t, computer)?;
        computer.free_count = free;
        self.save_computer(computer, &before)
    }

    /// Places pending requests that `computer` can now take, oldest first. Returns how many.
    pub(super) fn place_pending_on(&mut self, id: &ComputerId) -> Result<u32, StateError> {
        let mut placed = 0;
        for (url, supply) in self.t.supplies_of(id)? {
            if supply.requested != SupplyState::Available {
                continue;
            }
            let prefix = crate::state::keys::Key::new().str(url.as_str());
            for guid in self.t.pending.trailing_guids(&prefix, usize::MAX)? {
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
                    self.t
                        .pending
                        .delete(tables::pending_key(&url, guid).as_bytes())?;
                    self.occupy(&mut instance, computer, partition)?;
                    self.save_instance(&instance)?;
                    placed += 1;
                }
            }
        }
        Ok(placed)
    }

    /// Places pending shared instances of `url` and `software_type` now that a host may exist.
    pub(super) fn place_pending_shared(
        &mut self,
        url: &SoftwareReleaseUrl,
        software_type: &str,
        new_host: Option<&Instance>,
    ) -> Result<(), StateError> {
        let prefix = crate::state::keys::Key::new()
            .str(url.as_str())
            .str(software_type);
        for guid in self.t.pending_shared.trailing_guids(&prefix, usize::MAX)? {
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
                self.t
                    .pending_shared
                    .delete(tables::shared_host_key(url, software_type, guid).as_bytes())?;
                self.attach_to_host(&mut shared, host)?;
                self.save_instance(&shared)?;
            }
        }
        Ok(())
    }

    /// Adds a placed, live, normal instance to the hosts shared instances can use.
    pub(super) fn index_host(&mut self, instance: &Instance) -> Result<(), StateError> {
        if placement::can_host(
            instance,
            &instance.software_release,
            &instance.software_type,
        ) {
            self.t.shared_hosts.put_index(
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
    pub(super) fn unindex(&mut self, instance: &Instance) -> Result<(), StateError> {
        let url = &instance.software_release;
        let software_type = &instance.software_type;
        self.t
            .shared_hosts
            .delete(tables::shared_host_key(url, software_type, instance.guid).as_bytes())?;
        self.t
            .pending
            .delete(tables::pending_key(url, instance.guid).as_bytes())?;
        self.t
            .pending_shared
            .delete(tables::shared_host_key(url, software_type, instance.guid).as_bytes())
    }

    // --- helpers ------------------------------------------------------------------------------
}
