//! Placement: which partitions a request may take, in what order, and pending requests placed when
//! capacity appears.

use super::*;

#[test]
fn a_registered_computer_offers_its_partitions_in_natural_order() {
    let mut f = Fixture::new();
    f.register("COMP-1", 12, &[("region", "eu")]);
    let view = f.view("COMP-1");
    assert_eq!(view.computer.free_count, 12);
    let order: Vec<&str> = view
        .partitions
        .iter()
        .map(|p| p.partition.reference.as_str())
        .collect();
    assert_eq!(order[..3], ["slappart0", "slappart1", "slappart2"]);
    assert_eq!(order[11], "slappart11");
    assert!(view.partitions.iter().all(|p| p.instance.is_none()));
}

#[test]
fn requests_go_to_the_highest_free_tier_then_the_lowest_id_then_the_lowest_partition() {
    let mut f = Fixture::new();
    f.register("COMP-A", 3, &[]);
    f.register("COMP-B", 12, &[]);
    f.supply("COMP-A", KVM);
    f.supply("COMP-B", KVM);
    let first = f.request(user("alice"), request("vm0", KVM));
    assert_eq!(partition_of(&first), pid("COMP-B", "slappart0"));
    for n in 1..9 {
        f.request(user("alice"), request(&format!("vm{n}"), KVM));
    }
    // COMP-B (12, tier 8-15) took requests until its free count fell into COMP-A's tier (2-3):
    // then the lower id wins while both are in one tier, and the higher tier after that.
    assert_eq!((f.free("COMP-A"), f.free("COMP-B")), (3, 3));
    let tie = f.request(user("alice"), request("vm9", KVM));
    assert_eq!(partition_of(&tie), pid("COMP-A", "slappart0"));
    let same_tier = f.request(user("alice"), request("vm10", KVM));
    assert_eq!(partition_of(&same_tier), pid("COMP-A", "slappart1"));
    let higher_tier = f.request(user("alice"), request("vm11", KVM));
    assert_eq!(partition_of(&higher_tier), pid("COMP-B", "slappart9"));
}

#[test]
fn only_computers_that_supply_the_software_release_and_match_the_sla_are_candidates() {
    let mut f = Fixture::new();
    f.register("COMP-EU", 2, &[("region", "eu"), ("cpu_type", "x86_64")]);
    f.register("COMP-US", 4, &[("region", "us"), ("cpu_type", "x86_64")]);
    f.supply("COMP-EU", KVM);
    f.supply("COMP-US", KVM);
    f.supply("COMP-US", ERP5);

    let mut eu = request("eu-vm", KVM);
    eu.sla.insert("region".into(), "eu".into());
    eu.sla.insert("cpu_type".into(), "x86_64".into());
    assert_eq!(
        partition_of(&f.request(user("bob"), eu)).computer,
        ComputerId::from("COMP-EU")
    );

    let erp5 = f.request(user("bob"), request("erp5", ERP5));
    assert_eq!(partition_of(&erp5).computer, ComputerId::from("COMP-US"));

    let mut pinned = request("pinned", KVM);
    pinned.sla.insert("computer_guid".into(), "COMP-EU".into());
    assert_eq!(
        partition_of(&f.request(user("bob"), pinned)),
        pid("COMP-EU", "slappart1")
    );

    let mut nowhere = request("nowhere", KVM);
    nowhere.sla.insert("region".into(), "asia".into());
    let waiting = f.request(user("bob"), nowhere);
    assert!(
        matches!(waiting.placement, Placement::Pending { .. }),
        "{:?}",
        waiting.placement
    );

    let mut odd = request("odd", KVM);
    odd.sla.insert("colour".into(), "blue".into());
    let unplaceable = f.request(user("bob"), odd);
    assert_eq!(
        unplaceable.placement,
        Placement::Unplaceable {
            reason: "unknown SLA key \"colour\"".into()
        }
    );
    let txn = f.state.read().expect("read");
    assert_eq!(
        query::explain(&txn, unplaceable.guid).expect("explain"),
        Some(Explanation::Unplaceable {
            reason: "unknown SLA key \"colour\"".into()
        })
    );
}

#[test]
fn pending_requests_are_placed_when_capacity_appears() {
    let mut f = Fixture::new();
    let early = f.request(user("carol"), request("early", KVM));
    assert!(matches!(early.placement, Placement::Pending { .. }));
    let later = f.request(user("carol"), request("later", KVM));

    tracing_phase("a computer without the software release changes nothing");
    f.register("COMP-1", 1, &[]);
    assert!(matches!(
        f.instance(early.guid).expect("exists").instance.placement,
        Placement::Pending { .. }
    ));

    tracing_phase("supplying it places the oldest request on the one free partition");
    f.supply("COMP-1", KVM);
    assert_eq!(
        f.instance(early.guid).expect("exists").instance.placement,
        Placement::Partition(pid("COMP-1", "slappart0"))
    );
    assert!(matches!(
        f.instance(later.guid).expect("exists").instance.placement,
        Placement::Pending { .. }
    ));

    tracing_phase("a second partition in a new definition places the next");
    let r = f.run(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::RegisterComputer(definition("COMP-1", 2, &[])),
    );
    assert_eq!(
        r,
        Ok(Outcome::ComputerRegistered {
            partitions_added: 1,
            partitions_removed: 0,
            placed: 1
        })
    );
    assert_eq!(
        f.instance(later.guid).expect("exists").instance.placement,
        Placement::Partition(pid("COMP-1", "slappart1"))
    );

    tracing_phase("a closed computer takes nothing until it opens");
    f.run(
        Actor::Operator(UserId::from("admin")),
        Op::SetAllocationScope {
            computer: ComputerId::from("COMP-1"),
            scope: AllocationScope::CloseNoAllocation,
        },
    )
    .expect("close");
    f.run(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::RegisterComputer(definition("COMP-1", 3, &[])),
    )
    .expect("grow");
    let third = f.request(user("carol"), request("third", KVM));
    assert!(matches!(third.placement, Placement::Pending { .. }));
    assert_eq!(
        f.run(
            Actor::Operator(UserId::from("admin")),
            Op::SetAllocationScope {
                computer: ComputerId::from("COMP-1"),
                scope: AllocationScope::OpenPublic
            }
        ),
        Ok(Outcome::Placed { placed: 1 })
    );
}

#[test]
fn unique_by_network_spreads_a_tree_over_networks() {
    let mut f = Fixture::new();
    f.register("COMP-A1", 4, &[("network_guid", "NET-A")]);
    f.register("COMP-A2", 4, &[("network_guid", "NET-A")]);
    f.register("COMP-B1", 1, &[("network_guid", "NET-B")]);
    for c in ["COMP-A1", "COMP-A2", "COMP-B1"] {
        f.supply(c, KVM);
    }
    let mut spread = request("master", KVM);
    spread.sla.insert("mode".into(), "unique_by_network".into());
    let first = f.request(user("nia"), spread.clone());
    let first_net = partition_of(&first).computer;
    let mut second = spread.clone();
    second.title = "replica".into();
    let second = f.request(Actor::Partition(partition_of(&first)), second);
    let second_net = partition_of(&second).computer;
    let net = |c: &ComputerId| {
        if c.as_str().starts_with("COMP-A") {
            "A"
        } else {
            "B"
        }
    };
    assert_ne!(net(&first_net), net(&second_net));
    let mut third = spread;
    third.title = "third".into();
    let third = f.request(Actor::Partition(partition_of(&first)), third);
    assert!(
        matches!(third.placement, Placement::Pending { .. }),
        "no third network: {:?}",
        third.placement
    );
    let txn = f.state.read().expect("read");
    match query::explain(&txn, third.guid).expect("explain") {
        Some(Explanation::Pending { now, .. }) => {
            assert!(now.starts_with("no free partition"), "{now}")
        }
        other => panic!("{other:?}"),
    }
}
