//! Computers: definitions that change, view versions, liveness, usage.

use super::*;

#[test]
fn a_partition_removed_from_the_definition_is_dropped_only_when_free() {
    let mut f = Fixture::new();
    f.register("COMP-1", 3, &[]);
    f.supply("COMP-1", KVM);
    let vm = f.request(user("kim"), request("vm", KVM));
    assert_eq!(partition_of(&vm), pid("COMP-1", "slappart0"));

    let mut shrunk = definition("COMP-1", 3, &[]);
    shrunk.partitions.remove(0);
    let rejection = f.refused(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::RegisterComputer(shrunk),
    );
    assert_eq!(
        rejection,
        Rejection::PartitionBusy {
            partition: pid("COMP-1", "slappart0"),
            instance: vm.guid
        }
    );

    let r = f.run(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::RegisterComputer(definition("COMP-1", 2, &[])),
    );
    assert_eq!(
        r,
        Ok(Outcome::ComputerRegistered {
            partitions_added: 0,
            partitions_removed: 1,
            placed: 0
        })
    );
    assert_eq!(f.free("COMP-1"), 1);
}

#[test]
fn reordering_unnumbered_partitions_keeps_the_free_index_exact() {
    let mut f = Fixture::new();
    let named = |names: &[&str]| {
        let mut d = definition("COMP-N", 0, &[]);
        d.partitions = names
            .iter()
            .map(|n| PartitionDefinition {
                reference: PartitionRef::from(*n),
                path: None,
                addresses: vec![],
                tap: None,
                user: None,
            })
            .collect();
        Op::RegisterComputer(d)
    };
    let node = Actor::Computer(ComputerId::from("COMP-N"));
    f.run(node.clone(), named(&["alpha", "beta", "gamma"]))
        .expect("register");
    // `check_invariants` (run after every command) compares the free index with the records.
    f.run(node, named(&["gamma", "alpha", "beta"]))
        .expect("reorder");
    f.supply("COMP-N", KVM);
    let first = f.request(user("pat"), request("vm", KVM));
    assert_eq!(
        partition_of(&first),
        pid("COMP-N", "gamma"),
        "definition order decides"
    );
}

#[test]
fn a_computer_version_moves_exactly_when_its_view_changes() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.register("COMP-2", 2, &[]);
    let version = |f: &Fixture, c: &str| {
        query::computer_version(&f.state.read().expect("read"), &ComputerId::from(c))
            .expect("version")
    };
    let (one, two) = (version(&f, "COMP-1"), version(&f, "COMP-2"));
    assert!(one > 0 && two > one);

    f.supply("COMP-1", KVM);
    let after_supply = version(&f, "COMP-1");
    assert!(after_supply > one);
    assert_eq!(version(&f, "COMP-2"), two, "another computer's change");

    let vm = f.request(user("quinn"), request("vm", KVM));
    let after_request = version(&f, "COMP-1");
    assert!(after_request > after_supply, "an instance placed on it");

    let record = UsageRecord {
        partition: PartitionRef::from("slappart0"),
        period_start: Timestamp(0),
        period_end: Timestamp(1),
        movements: vec![],
    };
    let node = Actor::Computer(ComputerId::from("COMP-1"));
    f.run(
        node.clone(),
        Op::PostUsage {
            computer: ComputerId::from("COMP-1"),
            records: vec![record],
        },
    )
    .expect("usage");
    assert_eq!(
        version(&f, "COMP-1"),
        after_request,
        "usage is not part of the view"
    );
    assert_eq!(
        f.report(&partition_of(&vm), InstanceReport::Started),
        Ok(Outcome::Done)
    );
    let after_report = version(&f, "COMP-1");
    assert!(
        after_report > after_request,
        "the access status is part of the view"
    );
    assert_eq!(
        f.report(&partition_of(&vm), InstanceReport::Started),
        Ok(Outcome::Unchanged)
    );
    assert_eq!(
        version(&f, "COMP-1"),
        after_report,
        "a repeated report changes nothing"
    );
}

#[test]
fn a_tree_member_placed_or_freed_elsewhere_moves_the_other_members_computers_versions() {
    // A tree's addresses are in every member's view (SLAP's `full_ip_list`).
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.register("COMP-2", 2, &[]);
    f.supply("COMP-1", KVM);
    f.supply("COMP-2", KVM);
    let version = |f: &Fixture, c: &str| {
        query::computer_version(&f.state.read().expect("read"), &ComputerId::from(c))
            .expect("version")
    };
    let mut on_one = request("root", KVM);
    on_one.sla.insert("computer_guid".into(), "COMP-1".into());
    let root = f.request(user("quinn"), on_one);
    let before = version(&f, "COMP-1");
    let mut on_two = request("child", KVM);
    on_two.sla.insert("computer_guid".into(), "COMP-2".into());
    let child = f.request(Actor::Partition(partition_of(&root)), on_two);
    assert_eq!(partition_of(&child).computer, ComputerId::from("COMP-2"));
    let placed = version(&f, "COMP-1");
    assert!(
        placed > before,
        "the child's placement is in the root's view"
    );
    f.run(
        user("quinn"),
        Op::DestroyInstance {
            instance: child.guid,
        },
    )
    .expect("destroy");
    assert_eq!(
        f.report(&partition_of(&child), InstanceReport::Destroyed),
        Ok(Outcome::Done)
    );
    assert!(
        version(&f, "COMP-1") > placed,
        "the child's partition freed is in the root's view"
    );
}

#[test]
fn liveness_summaries_keep_the_latest_poll_and_come_only_from_replicas() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    let seen = |at: u64| Op::RecordLiveness {
        seen: vec![
            (ComputerId::from("COMP-1"), Timestamp(at)),
            (ComputerId::from("COMP-404"), Timestamp(at)),
        ],
    };
    assert!(matches!(
        f.refused(user("rita"), seen(10)),
        Rejection::NotAllowed { .. }
    ));
    assert_eq!(f.run(Actor::Replica(2), seen(20)), Ok(Outcome::Done));
    assert_eq!(
        f.run(Actor::Replica(3), seen(15)),
        Ok(Outcome::Unchanged),
        "an older poll"
    );
    assert_eq!(f.view("COMP-1").last_seen, Some(Timestamp(20)));
}

#[test]
fn a_usage_report_is_kept_whole_once_and_its_movements_name_partitions() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    let computer = ComputerId::from("COMP-1");
    let movement = |reference: &str, quantity: f64| ReportedMovement {
        resource: "service_module/cpu_load_percent".into(),
        title: format!("CPU Load Percent Average for {reference}"),
        reference: reference.into(),
        partition: None,
        quantity,
        price: 0.5,
        vat: "20%".into(),
        category: "cpu".into(),
    };
    let report = |day: &str, movements: Vec<ReportedMovement>| UsageReport {
        reference: format!("{day}-global"),
        title: "Eco Information for COMP-1".into(),
        start_date: format!("{day} 00:00:00"),
        stop_date: format!("{day} 23:59:59"),
        currency: "EUR".into(),
        payment_mode: String::new(),
        category: String::new(),
        received_at: Timestamp(0),
        movements,
    };
    let post = |reports: Vec<UsageReport>| Op::PostUsageReports {
        computer: computer.clone(),
        reports,
    };
    let node = Actor::Computer(computer.clone());
    let day = report(
        "2026-12-05",
        vec![
            movement("COMP-1", 12.5),
            movement("slapuser1", 30.0),
            movement("slappart0", 1.0),
            // `node collect`'s sentinel for a ratio it could not measure.
            movement("nobody", -1.0),
        ],
    );

    tracing_phase("only the computer's node reports its usage, in numbers");
    assert!(matches!(
        f.refused(user("olga"), post(vec![day.clone()])),
        Rejection::NotAllowed { .. }
    ));
    for amount in [f64::NAN, f64::INFINITY, -2e15] {
        let mut wrong = day.clone();
        wrong.movements[0].price = amount;
        assert!(
            matches!(
                f.refused(node.clone(), post(vec![wrong])),
                Rejection::Invalid { .. }
            ),
            "{amount}"
        );
    }

    tracing_phase("posted twice (the node timed out), counted once");
    assert_eq!(
        f.run(node.clone(), post(vec![day.clone()])),
        Ok(Outcome::Done)
    );
    assert_eq!(
        f.run(node.clone(), post(vec![day.clone()])),
        Ok(Outcome::Unchanged)
    );
    let mut corrected = day.clone();
    corrected.movements[0].quantity = 13.0;
    let next = report("2026-12-06", vec![movement("COMP-1", 1.0)]);
    assert_eq!(f.run(node, post(vec![corrected, next])), Ok(Outcome::Done));

    let txn = f.state.read().expect("read");
    let reports = query::usage_reports(&txn, &computer, None, None, None).expect("reports");
    assert_eq!(reports.len(), 2, "a report for the same day replaces it");
    let first = &reports[0];
    assert_eq!(
        (first.reference.as_str(), first.currency.as_str()),
        ("2026-12-05-global", "EUR")
    );
    assert_eq!(first.movements[0].quantity, 13.0);
    assert_eq!(
        (first.movements[0].price, first.movements[0].vat.as_str()),
        (0.5, "20%")
    );
    let named: Vec<Option<&str>> = first
        .movements
        .iter()
        .map(|m| m.partition.as_ref().map(PartitionRef::as_str))
        .collect();
    assert_eq!(
        named,
        [None, Some("slappart1"), Some("slappart0"), None],
        "by the partition's user or reference; the computer and the unknown on none"
    );
    let slappart1 = query::usage_reports(
        &txn,
        &computer,
        Some(&PartitionRef::from("slappart1")),
        None,
        None,
    )
    .expect("reports");
    assert_eq!(slappart1.len(), 1);
    assert_eq!(slappart1[0].movements.len(), 1);
}

#[test]
fn usage_is_stored_per_partition_and_period_and_rename_keeps_the_identity() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.supply("COMP-1", KVM);
    let vm = f.request(user("olga"), request("vm", KVM));
    let record = |start: u64, quantity: f64| UsageRecord {
        partition: PartitionRef::from("slappart0"),
        period_start: Timestamp(start),
        period_end: Timestamp(start + 3_600_000_000),
        movements: vec![UsageMovement {
            resource: "CPU Consumption".into(),
            category: "cpu".into(),
            quantity,
        }],
    };
    let node = Actor::Computer(ComputerId::from("COMP-1"));
    f.run(
        node.clone(),
        Op::PostUsage {
            computer: ComputerId::from("COMP-1"),
            records: vec![record(0, 1.5), record(3_600_000_000, 2.0)],
        },
    )
    .expect("usage");
    f.run(
        node,
        Op::PostUsage {
            computer: ComputerId::from("COMP-1"),
            records: vec![record(0, 9.0)],
        },
    )
    .expect("repost");
    let txn = f.state.read().expect("read");
    let all = query::usage(&txn, &ComputerId::from("COMP-1"), None, None, None).expect("usage");
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0].movements[0].quantity, 9.0,
        "a repost replaces the period"
    );
    let first_hour = query::usage(
        &txn,
        &ComputerId::from("COMP-1"),
        Some(&PartitionRef::from("slappart0")),
        None,
        Some(1),
    )
    .expect("usage");
    assert_eq!(first_hour.len(), 1);
    drop(txn);

    let p = partition_of(&vm);
    f.run(
        Actor::Partition(p.clone()),
        Op::RenameInstance {
            partition: p,
            shared_reference: None,
            new_title: "vm-renamed".into(),
        },
    )
    .expect("rename");
    let txn = f.state.read().expect("read");
    assert_eq!(
        query::root_by_title(&txn, &UserId::from("olga"), "vm-renamed").expect("query"),
        Some(vm.guid)
    );
    assert_eq!(
        query::root_by_title(&txn, &UserId::from("olga"), "vm").expect("query"),
        None
    );
    let audit = query::audit(&txn, 100).expect("audit");
    assert_eq!(
        audit.last().map(|a| a.action.as_str()),
        Some("rename instance")
    );
}
