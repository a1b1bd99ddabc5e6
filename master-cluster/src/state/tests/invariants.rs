//! Everything that must hold after any sequence of commands, recomputed from the records.

use super::*;

/// Everything that must hold after any sequence of commands. Recomputes every index from the
/// records and compares.
pub(super) fn check_invariants(state: &MemoryState) {
    let txn = state.read().expect("read");
    let t = Tables::open_read(&txn).expect("tables");
    let computers = query::computers(&txn).expect("computers");
    let instances: Vec<Instance> = t
        .instances
        .records(&Key::new(), usize::MAX)
        .expect("instances");
    let by_guid: BTreeMap<InstanceGuid, &Instance> =
        instances.iter().map(|i| (i.guid, i)).collect();

    let mut occupants = BTreeSet::new();
    let mut expected_placement = BTreeSet::new();
    let mut expected_free = BTreeSet::new();
    for computer in &computers {
        let partitions = t.partitions_of(&computer.id).expect("partitions");
        let held = t.occupants_of(&computer.id).expect("occupants");
        assert_eq!(
            computer.partition_count as usize,
            partitions.len(),
            "{}",
            computer.id
        );
        assert!(
            held.keys()
                .all(|r| partitions.iter().any(|p| p.reference == *r)),
            "an occupant of a missing partition"
        );
        let free: Vec<&Partition> = partitions
            .iter()
            .filter(|p| !held.contains_key(&p.reference))
            .collect();
        assert_eq!(
            computer.free_count as usize,
            free.len(),
            "free count of {}",
            computer.id
        );
        for partition in &partitions {
            if let Some(&guid) = held.get(&partition.reference) {
                assert!(occupants.insert(guid), "{guid} holds two partitions");
                let instance = by_guid
                    .get(&guid)
                    .unwrap_or_else(|| panic!("occupant {guid} missing"));
                assert_eq!(
                    instance.placement,
                    Placement::Partition(PartitionId {
                        computer: computer.id.clone(),
                        partition: partition.reference.clone()
                    }),
                    "partition and instance disagree"
                );
            }
        }
        for partition in free {
            expected_free.insert(tables::free_key(&computer.id, partition).into_bytes());
        }
        expected_placement.extend(placement::index_keys(&t, computer).expect("index keys"));
    }
    let keys = |table: &tables::Table<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>| {
        table
            .scan(&Key::new(), usize::MAX)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect::<BTreeSet<Vec<u8>>>()
    };
    assert_eq!(
        keys(&t.free_partitions),
        expected_free,
        "free partition index"
    );
    assert_eq!(keys(&t.placement), expected_placement, "placement index");

    let mut expected_pending = BTreeSet::new();
    let mut expected_pending_shared = BTreeSet::new();
    let mut expected_hosted = BTreeSet::new();
    let mut expected_children = BTreeSet::new();
    for instance in &instances {
        // A child is indexed under the instance that requested it, which still exists; once
        // a parent is to be destroyed, so is everything it requested (a tree shrinks from the
        // top, or by the branches its parent no longer requests, never leaving a live orphan).
        if let Requester::Instance(parent) = instance.requester {
            let parent = by_guid.get(&parent).expect("a child's parent exists");
            assert!(
                parent.requested_state != RequestedState::Destroyed
                    || instance.requested_state == RequestedState::Destroyed,
                "{} lives under destroyed {}",
                instance.guid,
                parent.guid
            );
            expected_children.insert(tables::child_key(parent.guid, instance.guid).into_bytes());
        }
        let title = t
            .titles
            .guid_at(&tables::title_key(instance.root, &instance.title))
            .expect("titles");
        assert_eq!(
            title,
            Some(instance.guid),
            "title index of {}",
            instance.guid
        );
        match &instance.placement {
            Placement::Partition(p) => {
                assert!(
                    occupants.contains(&instance.guid),
                    "{} claims {p} but does not hold it",
                    instance.guid
                )
            }
            Placement::Pending { .. } if instance.shared => {
                expected_pending_shared.insert(
                    tables::shared_host_key(
                        &instance.software_release,
                        &instance.software_type,
                        instance.guid,
                    )
                    .into_bytes(),
                );
            }
            Placement::Pending { .. } => {
                expected_pending.insert(
                    tables::pending_key(&instance.software_release, instance.guid).into_bytes(),
                );
                // The marketplace never leaves an instance waiting that it could place now.
                let filter =
                    placement::parse_sla(&instance.sla, false).expect("pending SLAs parse");
                let networks = if filter.unique_by_network {
                    placement::tree_networks(&t, instance.root, instance.guid).expect("networks")
                } else {
                    BTreeSet::new()
                };
                if let Choice::Found((c, p)) = placement::choose_partition(
                    &t,
                    &instance.software_release,
                    &filter,
                    &placement::Tree::of(instance),
                    &networks,
                )
                .expect("choose")
                {
                    panic!(
                        "{} waits although {}/{} is free for it",
                        instance.guid, c.id, p.reference
                    );
                }
            }
            Placement::Hosted { host } => {
                let host = by_guid.get(host).expect("host exists");
                assert!(
                    !host.shared && host.requested_state != RequestedState::Destroyed,
                    "live normal host"
                );
                expected_hosted.insert(
                    tables::hosted_key(
                        host.guid,
                        instance.shared_reference.as_deref().expect("reference"),
                    )
                    .into_bytes(),
                );
            }
            Placement::Unplaceable { .. } => {}
        }
    }
    assert_eq!(keys(&t.children), expected_children, "children index");
    assert_eq!(keys(&t.pending), expected_pending, "pending index");
    assert_eq!(
        keys(&t.pending_shared),
        expected_pending_shared,
        "pending shared index"
    );
    assert_eq!(keys(&t.hosted), expected_hosted, "hosted index");

    // Every user's holding is what their instances add up to, and only users who hold
    // something have a row.
    let mut holdings: BTreeMap<UserId, Holding> = BTreeMap::new();
    for instance in &instances {
        let holding = holdings.entry(instance.owner.clone()).or_default();
        holding.instances += 1;
        holding.pending += u64::from(matches!(
            instance.placement,
            Placement::Pending { .. } | Placement::Unplaceable { .. }
        ));
        holding.parameter_bytes += t
            .parameters(instance.guid)
            .expect("parameters")
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
    }
    for (owner, holding) in &holdings {
        assert_eq!(
            t.holding(owner).expect("holding"),
            *holding,
            "{owner}'s holding"
        );
    }
    assert_eq!(
        keys(&t.holdings).len(),
        holdings.len(),
        "holdings of users who hold nothing"
    );

    check_alerts(&t, &computers, &instances);
}

/// A subject has an open alert exactly when the last entry of its history is failing;
/// `open_alerts` indexes exactly the alerts without a close; every live instance and computer
/// has a history of at most `HISTORY_KEPT` entries, and nothing else has one.
fn check_alerts(
    t: &Tables<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    computers: &[Computer],
    instances: &[Instance],
) {
    use crate::state::status::{Health, StatusChange};
    let alerts: Vec<Alert> = t.alerts.records(&Key::new(), usize::MAX).expect("alerts");
    let expected_open: BTreeMap<Vec<u8>, u64> = alerts
        .iter()
        .filter(|a| a.closed_at.is_none())
        .map(|a| (tables::subject_key(&a.subject).into_bytes(), a.id))
        .collect();
    let open: BTreeMap<Vec<u8>, u64> = t
        .open_alerts
        .scan(&Key::new(), usize::MAX)
        .expect("open alerts")
        .into_iter()
        .map(|(k, v)| (k, u64::from_be_bytes(v.try_into().expect("8 bytes"))))
        .collect();
    assert_eq!(open, expected_open, "open alerts index");

    let subjects = computers
        .iter()
        .map(|c| AlertSubject::Computer(c.id.clone()))
        .chain(instances.iter().map(|i| AlertSubject::Instance(i.guid)));
    let mut entries = 0;
    for subject in subjects {
        let key = tables::subject_key(&subject);
        let history: Vec<StatusChange> =
            t.status_history.records(&key, usize::MAX).expect("history");
        assert!(!history.is_empty(), "{subject} has no history");
        assert!(history.len() as u64 <= crate::state::apply::HISTORY_KEPT);
        assert!(
            history
                .windows(2)
                .all(|w| w[1].status.differs(&w[0].status)),
            "{subject}: an entry repeats the one before"
        );
        let last = history.last().expect("not empty");
        assert_eq!(
            last.status.health == Health::Failing,
            open.contains_key(key.as_bytes()),
            "{subject}: last status {:?}, open alert {:?}",
            last.status,
            open.get(key.as_bytes())
        );
        entries += history.len();
    }
    assert_eq!(
        t.status_history
            .scan(&Key::new(), usize::MAX)
            .expect("history")
            .len(),
        entries,
        "history of something gone"
    );
}
