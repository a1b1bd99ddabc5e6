//! The state machine's behaviour, command by command, and the invariants that must hold after
//! any sequence of commands (checked by [`check_invariants`] in every test, and by the property
//! tests at the bottom over seeded random sequences).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::MemoryState;
use super::command::{
    Command, InstanceReport, InstanceRequest, InstanceSummary, Op, Outcome, Rejection, Response,
};
use super::keys::Key;
use super::model::*;
use super::placement::{self, Choice};
use super::query::{self, Explanation};
use super::tables::{self, Tables};

// --- fixture ----------------------------------------------------------------------------------

struct Fixture {
    state: MemoryState,
    clock: u64,
}

const KVM: &str = "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/kvm/software.cfg";
const ERP5: &str = "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/erp5/software.cfg";

fn user(name: &str) -> Actor {
    Actor::User(UserId::from(name))
}

fn url(u: &str) -> SoftwareReleaseUrl {
    SoftwareReleaseUrl::from(u)
}

fn pid(computer: &str, partition: &str) -> PartitionId {
    PartitionId {
        computer: ComputerId::from(computer),
        partition: PartitionRef::from(partition),
    }
}

fn definition(id: &str, partitions: u32, attributes: &[(&str, &str)]) -> ComputerDefinition {
    ComputerDefinition {
        id: ComputerId::from(id),
        address: Some("10.0.0.1".into()),
        netmask: Some("255.255.255.0".into()),
        instance_root: Some("/srv/slapgrid".into()),
        software_root: Some("/opt/slapgrid".into()),
        os_type: None,
        attributes: Some(
            attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        capabilities: None,
        partitions: (0..partitions)
            .map(|n| PartitionDefinition {
                reference: PartitionRef(format!("slappart{n}")),
                path: Some(format!("/srv/slapgrid/slappart{n}")),
                addresses: vec![
                    NetworkAddress {
                        addr: format!("10.0.{n}.1"),
                        netmask: "255.255.255.255".into(),
                    },
                    NetworkAddress {
                        addr: format!("2001:db8::{n:x}"),
                        netmask: "ffff:ffff:ffff:ffff::".into(),
                    },
                ],
                tap: Some(format!("slaptap{n}")),
                user: Some(format!("slapuser{n}")),
            })
            .collect(),
    }
}

fn request(title: &str, sr: &str) -> InstanceRequest {
    InstanceRequest {
        title: title.into(),
        software_release: url(sr),
        software_type: "default".into(),
        parameters: BTreeMap::new(),
        sla: BTreeMap::new(),
        shared: false,
        state: RequestedState::Started,
    }
}

impl Fixture {
    fn new() -> Self {
        Self {
            state: MemoryState::new().expect("in-memory state"),
            clock: 1_700_000_000_000_000,
        }
    }

    fn run(&mut self, actor: Actor, op: Op) -> Response {
        self.clock += 1_000_000;
        let response = self
            .state
            .apply(Command {
                at: Timestamp(self.clock),
                actor,
                op,
            })
            .expect("storage works");
        check_invariants(&self.state);
        response
    }

    /// Runs a command that must be refused, and checks it changed nothing.
    fn refused(&mut self, actor: Actor, op: Op) -> Rejection {
        let before = self.dump();
        match self.run(actor, op) {
            Err(rejection) => {
                assert_eq!(self.dump(), before, "refused command changed the state");
                rejection
            }
            Ok(outcome) => panic!("expected a rejection, got {outcome:?}"),
        }
    }

    fn register(&mut self, id: &str, partitions: u32, attributes: &[(&str, &str)]) {
        let r = self.run(
            Actor::Computer(ComputerId::from(id)),
            Op::RegisterComputer(definition(id, partitions, attributes)),
        );
        assert!(r.is_ok(), "{r:?}");
    }

    fn supply(&mut self, computer: &str, sr: &str) {
        let r = self.run(
            Actor::Operator(UserId::from("admin")),
            Op::Supply {
                computer: ComputerId::from(computer),
                url: url(sr),
                state: SupplyState::Available,
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }

    fn request(&mut self, actor: Actor, request: InstanceRequest) -> InstanceSummary {
        match self.run(actor, Op::RequestInstance(request)) {
            Ok(Outcome::Instance(summary)) => summary,
            other => panic!("request answered {other:?}"),
        }
    }

    fn report(&mut self, partition: &PartitionId, report: InstanceReport) -> Response {
        self.run(
            Actor::Computer(partition.computer.clone()),
            Op::ReportInstance {
                partition: partition.clone(),
                shared_reference: None,
                report,
            },
        )
    }

    fn dump(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        query::dump(&self.state.read().expect("read")).expect("dump")
    }

    fn view(&self, computer: &str) -> query::ComputerView {
        query::computer_view(
            &self.state.read().expect("read"),
            &ComputerId::from(computer),
        )
        .expect("query")
        .expect("known computer")
    }

    fn instance(&self, guid: InstanceGuid) -> Option<query::InstanceView> {
        query::instance(&self.state.read().expect("read"), guid).expect("query")
    }

    fn free(&self, computer: &str) -> u32 {
        self.view(computer).computer.free_count
    }
}

fn partition_of(summary: &InstanceSummary) -> PartitionId {
    match &summary.placement {
        Placement::Partition(p) => p.clone(),
        other => panic!("{} is not on a partition: {other:?}", summary.guid),
    }
}

// --- invariants -------------------------------------------------------------------------------

/// Everything that must hold after any sequence of commands. Recomputes every index from the
/// records and compares.
fn check_invariants(state: &MemoryState) {
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
    for instance in &instances {
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
}

// --- computers and placement ------------------------------------------------------------------

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

fn tracing_phase(what: &str) {
    eprintln!("--- {what}");
}

#[test]
fn requesting_again_is_idempotent_and_changes_update_in_place() {
    let mut f = Fixture::new();
    f.register("COMP-1", 4, &[]);
    f.supply("COMP-1", KVM);
    let mut vm = request("vm", KVM);
    vm.parameters.insert("ram".into(), "2048".into());
    let first = f.request(user("dave"), vm.clone());
    assert!(first.changed);

    let before = f.dump();
    let again = f.request(user("dave"), vm.clone());
    assert!(!again.changed);
    assert_eq!((again.guid, again.timestamp), (first.guid, first.timestamp));
    assert_eq!(
        f.dump(),
        before,
        "a repeated request must not write anything"
    );

    vm.parameters.insert("ram".into(), "4096".into());
    vm.state = RequestedState::Stopped;
    let updated = f.request(user("dave"), vm);
    assert!(updated.changed && updated.timestamp > first.timestamp);
    assert_eq!(updated.guid, first.guid);
    assert_eq!(
        updated.placement, first.placement,
        "an instance never moves"
    );
    let view = f.instance(first.guid).expect("exists");
    assert_eq!(view.parameters.get("ram").map(String::as_str), Some("4096"));
    assert_eq!(view.instance.requested_state, RequestedState::Stopped);

    // Same title, other user: another instance.
    let other = f.request(user("erin"), request("vm", KVM));
    assert_ne!(other.guid, first.guid);
}

#[test]
fn a_request_tree_is_destroyed_children_first_and_frees_every_partition() {
    let mut f = Fixture::new();
    f.register("COMP-1", 5, &[]);
    f.supply("COMP-1", KVM);
    let root = f.request(user("frank"), request("root", KVM));
    let root_partition = partition_of(&root);

    tracing_phase("the root requests two children, one of which requests a grandchild");
    let child = f.request(
        Actor::Partition(root_partition.clone()),
        request("child", KVM),
    );
    let second = f.request(
        Actor::Partition(root_partition.clone()),
        request("second", KVM),
    );
    let grandchild = f.request(
        Actor::Partition(partition_of(&child)),
        request("grandchild", KVM),
    );
    let again = f.request(
        Actor::Partition(root_partition.clone()),
        request("child", KVM),
    );
    assert_eq!(
        again.guid, child.guid,
        "children are idempotent by title within the tree"
    );
    let view = f.instance(grandchild.guid).expect("exists");
    assert_eq!(view.root_title, "root");
    assert_eq!(view.instance.requester, Requester::Instance(child.guid));
    assert_eq!(f.free("COMP-1"), 1);

    let txn = f.state.read().expect("read");
    let children: Vec<InstanceGuid> = query::children_of(&txn, root.guid)
        .expect("query")
        .iter()
        .map(|i| i.guid)
        .collect();
    assert_eq!(children, [child.guid, second.guid]);
    let addresses = query::tree_addresses(&txn, grandchild.guid).expect("query");
    assert_eq!(
        addresses.len(),
        8,
        "two addresses on each of the tree's four partitions"
    );
    assert!(addresses.contains(&("slaptap0".to_string(), "2001:db8::0".to_string())));
    drop(txn);

    tracing_phase("destroying the root marks the whole tree destroyed");
    f.run(
        user("frank"),
        Op::DestroyInstance {
            instance: root.guid,
        },
    )
    .expect("destroy");
    for guid in [root.guid, child.guid, second.guid, grandchild.guid] {
        assert_eq!(
            f.instance(guid)
                .expect("waits for its node")
                .instance
                .requested_state,
            RequestedState::Destroyed
        );
    }
    assert_eq!(
        f.free("COMP-1"),
        1,
        "nothing is freed before the nodes report"
    );

    tracing_phase("a parent reported destroyed before its children waits for them");
    f.report(&root_partition, InstanceReport::Destroyed)
        .expect("report");
    assert!(
        f.instance(root.guid).is_some(),
        "the root waits for its children"
    );
    f.report(&partition_of(&child), InstanceReport::Destroyed)
        .expect("report");
    assert!(
        f.instance(child.guid).is_some(),
        "the child waits for the grandchild"
    );
    f.report(&partition_of(&grandchild), InstanceReport::Destroyed)
        .expect("report");
    assert!(f.instance(grandchild.guid).is_none() && f.instance(child.guid).is_none());
    f.report(&partition_of(&second), InstanceReport::Destroyed)
        .expect("report");
    assert!(
        f.instance(root.guid).is_none(),
        "the last child frees the root"
    );
    assert_eq!(f.free("COMP-1"), 5);

    tracing_phase("the title is free again");
    let fresh = f.request(user("frank"), request("root", KVM));
    assert_ne!(fresh.guid, root.guid);
}

#[test]
fn shared_instances_attach_to_a_host_and_leave_no_trace_when_destroyed() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.supply("COMP-1", KVM);
    let mut shared = request("site", KVM);
    shared.shared = true;
    shared
        .parameters
        .insert("url".into(), "https://example.org".into());
    let waiting = f.request(user("gina"), shared.clone());
    assert!(
        matches!(waiting.placement, Placement::Pending { .. }),
        "no host yet"
    );

    let host = f.request(user("hank"), request("frontend", KVM));
    let host_partition = partition_of(&host);
    let site = f.instance(waiting.guid).expect("exists");
    assert_eq!(
        site.instance.placement,
        Placement::Hosted { host: host.guid }
    );
    let reference = waiting.guid.to_string();
    assert_eq!(
        site.instance.shared_reference.as_deref(),
        Some(reference.as_str())
    );
    let host_view = f.instance(host.guid).expect("host");
    assert_eq!(host_view.shared_instances.len(), 1);

    tracing_phase("a second shared instance attaches to the running host, which reprocesses");
    let mut blog = shared.clone();
    blog.title = "blog".into();
    let blog = f.request(user("gina"), blog);
    assert_eq!(blog.placement, Placement::Hosted { host: host.guid });
    let host_view = f.instance(host.guid).expect("host");
    assert_eq!(host_view.shared_instances.len(), 2);
    assert!(
        host_view.instance.timestamp > host.timestamp,
        "the host reprocesses"
    );

    tracing_phase("the host publishes the shared instance's connection parameters");
    let published = Parameters::from([("site_url".to_string(), "https://cdn/site".to_string())]);
    f.run(
        Actor::Partition(host_partition.clone()),
        Op::PublishConnection {
            partition: host_partition.clone(),
            shared_reference: Some(reference.clone()),
            parameters: published.clone(),
        },
    )
    .expect("publish");
    assert_eq!(
        f.instance(waiting.guid).expect("exists").connection,
        published
    );

    tracing_phase("destroying it removes it from the host at once");
    let before = f.instance(host.guid).expect("host").instance.timestamp;
    f.run(
        user("gina"),
        Op::DestroyInstance {
            instance: waiting.guid,
        },
    )
    .expect("destroy");
    assert!(f.instance(waiting.guid).is_none());
    let host_view = f.instance(host.guid).expect("host");
    let left: Vec<InstanceGuid> = host_view
        .shared_instances
        .iter()
        .map(|s| s.instance.guid)
        .collect();
    assert_eq!(left, [blog.guid]);
    assert!(host_view.instance.timestamp > before);
}

#[test]
fn connection_parameters_bump_the_requester_so_it_reprocesses() {
    let mut f = Fixture::new();
    f.register("COMP-1", 3, &[]);
    f.supply("COMP-1", KVM);
    let parent = f.request(user("ivan"), request("parent", KVM));
    let child = f.request(Actor::Partition(partition_of(&parent)), request("db", KVM));
    let parent_ts = f.instance(parent.guid).expect("exists").instance.timestamp;
    let params = Parameters::from([("url".to_string(), "mysql://[2001:db8::1]:3306".to_string())]);
    let publish = Op::PublishConnection {
        partition: partition_of(&child),
        shared_reference: None,
        parameters: params.clone(),
    };
    f.run(Actor::Partition(partition_of(&child)), publish.clone())
        .expect("publish");
    assert_eq!(f.instance(child.guid).expect("exists").connection, params);
    assert!(f.instance(parent.guid).expect("exists").instance.timestamp > parent_ts);
    assert_eq!(
        f.run(Actor::Partition(partition_of(&child)), publish),
        Ok(Outcome::Unchanged)
    );
}

#[test]
fn only_the_instance_its_node_or_an_operator_act_for_a_partition() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.register("COMP-2", 1, &[]);
    f.supply("COMP-1", KVM);
    let web = f.request(user("ivan"), request("web", KVM));
    let on = partition_of(&web);
    let publish = |value: &str| Op::PublishConnection {
        partition: on.clone(),
        shared_reference: None,
        parameters: Parameters::from([("url".to_string(), value.to_string())]),
    };
    let neighbour = PartitionId {
        computer: on.computer.clone(),
        partition: if on.partition.as_str() == "slappart0" {
            "slappart1".into()
        } else {
            "slappart0".into()
        },
    };
    for stranger in [
        user("ivan"),
        user("mallory"),
        Actor::Partition(neighbour),
        Actor::Computer("COMP-2".into()),
    ] {
        let refused = f.run(stranger.clone(), publish("http://[2001:db8::66]/"));
        assert!(
            matches!(refused, Err(Rejection::NotAllowed { .. })),
            "{stranger}: {refused:?}"
        );
        let refused = f.run(
            stranger.clone(),
            Op::BangInstance {
                partition: on.clone(),
                message: "x".into(),
            },
        );
        assert!(
            matches!(refused, Err(Rejection::NotAllowed { .. })),
            "{stranger}: {refused:?}"
        );
    }
    assert_eq!(
        f.instance(web.guid).expect("exists").connection,
        Parameters::new()
    );
    for allowed in [
        Actor::Partition(on.clone()),
        Actor::Computer(on.computer.clone()),
        Actor::Operator("ops".into()),
    ] {
        let value = format!("http://{allowed}/");
        f.run(allowed, publish(&value)).expect("published");
        assert_eq!(
            f.instance(web.guid).expect("exists").connection["url"],
            value
        );
    }
}

#[test]
fn reports_set_the_access_status_that_nodes_read_back() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    f.supply("COMP-1", KVM);
    let vm = f.request(user("judy"), request("vm", KVM));
    let p = partition_of(&vm);
    f.report(&p, InstanceReport::Started).expect("started");
    let view = f.instance(vm.guid).expect("exists");
    assert_eq!(view.instance.reported_state, Some(ReportedState::Started));
    assert_eq!(
        view.instance.access_status.as_deref(),
        Some("#access Instance correctly started")
    );
    assert_eq!(
        f.report(&p, InstanceReport::Started),
        Ok(Outcome::Unchanged)
    );
    let log = format!(
        "{}\nError: buildout failed\n\n",
        "x".repeat(super::MAX_LOG_BYTES * 2)
    );
    f.report(&p, InstanceReport::Error { log }).expect("error");
    let view = f.instance(vm.guid).expect("exists");
    assert_eq!(
        view.instance.access_status.as_deref(),
        Some("#error Error: buildout failed")
    );
    assert!(
        view.instance
            .last_error
            .as_ref()
            .is_some_and(|l| l.len() == super::MAX_LOG_BYTES)
    );
    assert!(
        matches!(
            f.report(&p, InstanceReport::Destroyed),
            Err(Rejection::Invalid { .. })
        ),
        "not requested destroyed"
    );
}

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
fn certificates_are_recorded_by_replicas_and_revoked_by_operators() {
    let mut f = Fixture::new();
    let record = |serial: &str| Op::RecordCertificate {
        serial: serial.into(),
        identity: "urn:slapcluster:computer:COMP-1".into(),
        not_after: Timestamp(1),
    };
    let revoke = |serial: &str| Op::RevokeCertificate {
        serial: serial.into(),
        reason: "key lost".into(),
    };
    let operator = Actor::Operator(UserId::from("ops"));
    assert_eq!(f.run(Actor::Replica(1), record("4a01")), Ok(Outcome::Done));
    assert_eq!(
        f.run(Actor::Replica(2), record("4a01")),
        Ok(Outcome::Unchanged)
    );
    assert!(matches!(
        f.refused(Actor::Computer(ComputerId::from("COMP-1")), record("4a02")),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(user("mallory"), revoke("4a01")),
        Rejection::NotAllowed { .. }
    ));
    for bad in ["", "4A01", "xyz", &"a".repeat(41)] {
        assert!(
            matches!(
                f.refused(operator.clone(), revoke(bad)),
                Rejection::Invalid { .. }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(f.run(operator.clone(), revoke("4a01")), Ok(Outcome::Done));
    assert_eq!(
        f.run(operator.clone(), revoke("4a01")),
        Ok(Outcome::Unchanged)
    );
    assert_eq!(
        f.run(operator, revoke("77")),
        Ok(Outcome::Done),
        "a serial without a record (an intermediate's) is revoked all the same"
    );
    let txn = f.state.read().expect("read");
    assert_eq!(
        query::revoked_serials(&txn).expect("query"),
        ["4a01".to_string(), "77".to_string()].into()
    );
}

#[test]
fn an_instance_keeps_one_certificate_revoked_when_its_partition_is_freed_for_the_next() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    f.supply("COMP-1", KVM);
    let web = f.request(user("alice"), request("web", KVM));
    let on = partition_of(&web);
    let bind = |instance: InstanceGuid, serial: &str, replaces: Option<&str>| {
        Op::BindInstanceCertificate {
            instance,
            partition: on.clone(),
            serial: serial.into(),
            chain_pem: format!("chain {serial}"),
            key_pem: format!("key {serial}"),
            not_before: Timestamp(1),
            not_after: Timestamp(2),
            replaces: replaces.map(str::to_string),
        }
    };
    let bound = |response: Response| match response {
        Ok(Outcome::InstanceCertificate(bound)) => bound,
        other => panic!("expected a bound certificate, got {other:?}"),
    };

    tracing_phase("the first binding stands; a racing replica is answered with it");
    let first = bound(f.run(Actor::Replica(1), bind(web.guid, "a1", None)));
    assert_eq!(
        (first.serial.as_str(), first.key_pem.as_str()),
        ("a1", "key a1")
    );
    let raced = bound(f.run(Actor::Replica(2), bind(web.guid, "b2", None)));
    assert_eq!(raced.serial, "a1");

    tracing_phase("only replicas bind, and only to the instance on that partition");
    assert!(matches!(
        f.refused(user("alice"), bind(web.guid, "c3", None)),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(Actor::Computer("COMP-1".into()), bind(web.guid, "c3", None)),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(Actor::Replica(1), bind(InstanceGuid(999), "c3", None)),
        Rejection::UnknownInstance(_)
    ));

    tracing_phase("a renewal replaces the current one");
    let renewed = bound(f.run(Actor::Replica(2), bind(web.guid, "d4", Some("a1"))));
    assert_eq!(renewed.serials, ["a1".to_string(), "d4".to_string()]);

    tracing_phase("being destroyed, it keeps it: its node destroys it with it");
    f.run(user("alice"), Op::DestroyInstance { instance: web.guid })
        .expect("destroyed");
    let still = bound(f.run(Actor::Replica(1), bind(web.guid, "e5", None)));
    assert_eq!(still.serial, "d4");
    assert!(
        query::revoked_serials(&f.state.read().expect("read"))
            .expect("query")
            .is_empty()
    );

    tracing_phase("its partition freed, every certificate it had is revoked");
    let freed = f.report(&on, InstanceReport::Destroyed);
    assert!(freed.is_ok(), "{freed:?}");
    let revoked = query::revoked_serials(&f.state.read().expect("read")).expect("query");
    assert_eq!(revoked, ["a1".to_string(), "d4".to_string()].into());
    assert!(matches!(
        f.refused(Actor::Replica(1), bind(web.guid, "e6", None)),
        Rejection::UnknownInstance(_)
    ));

    tracing_phase("the partition's next occupant gets a certificate of its own");
    let db = f.request(user("bob"), request("db", KVM));
    assert_eq!(partition_of(&db), on);
    let bobs = bound(f.run(Actor::Replica(1), bind(db.guid, "f6", None)));
    assert_eq!(bobs.serials, ["f6".to_string()]);
    let revoked = query::revoked_serials(&f.state.read().expect("read")).expect("query");
    assert!(!revoked.contains("f6") && revoked.contains("a1"));
}

#[test]
fn bad_commands_are_refused_with_a_reason_and_change_nothing() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.supply("COMP-1", KVM);
    let vm = f.request(user("lee"), request("vm", KVM));

    let unknown = f.refused(
        user("lee"),
        Op::Supply {
            computer: ComputerId::from("COMP-404"),
            url: url(KVM),
            state: SupplyState::Available,
        },
    );
    assert_eq!(
        unknown,
        Rejection::UnknownComputer(ComputerId::from("COMP-404"))
    );

    let unknown = f.refused(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::ReportInstance {
            partition: pid("COMP-1", "slappart9"),
            shared_reference: None,
            report: InstanceReport::Started,
        },
    );
    assert_eq!(
        unknown,
        Rejection::UnknownPartition(pid("COMP-1", "slappart9"))
    );

    let free = f.refused(
        Actor::Computer(ComputerId::from("COMP-1")),
        Op::ReportInstance {
            partition: pid("COMP-1", "slappart1"),
            shared_reference: None,
            report: InstanceReport::Started,
        },
    );
    assert_eq!(free, Rejection::PartitionFree(pid("COMP-1", "slappart1")));

    let mut big = request("big", KVM);
    big.parameters
        .insert("blob".into(), "x".repeat(super::MAX_PARAMETERS_BYTES));
    assert!(
        matches!(f.refused(user("lee"), Op::RequestInstance(big)), Rejection::TooLarge { bytes, max, .. } if bytes > max)
    );

    let mut nameless = request("", KVM);
    nameless.title.clear();
    assert!(matches!(
        f.refused(user("lee"), Op::RequestInstance(nameless)),
        Rejection::Invalid { .. }
    ));
    assert!(matches!(
        f.refused(user("lee"), Op::RequestInstance(request("vm", "not a url"))),
        Rejection::Invalid { .. }
    ));

    let mut flipped = request("vm", KVM);
    flipped.shared = true;
    assert!(matches!(
        f.refused(user("lee"), Op::RequestInstance(flipped)),
        Rejection::Invalid { .. }
    ));

    assert_eq!(
        f.refused(user("mallory"), Op::DestroyInstance { instance: vm.guid }),
        Rejection::NotAllowed {
            actor: "user mallory".into(),
            action: format!("destroy instance {}", vm.guid)
        }
    );
    assert_eq!(
        f.refused(
            user("lee"),
            Op::DestroyInstance {
                instance: InstanceGuid(999)
            }
        ),
        Rejection::UnknownInstance(InstanceGuid(999))
    );

    let other = Actor::Partition(pid("COMP-1", "slappart1"));
    assert!(matches!(
        f.refused(
            other,
            Op::PublishConnection {
                partition: partition_of(&vm),
                shared_reference: None,
                parameters: Parameters::new()
            }
        ),
        Rejection::NotAllowed { .. }
    ));
    let huge = definition("COMP-HUGE", 10_001, &[]);
    assert_eq!(
        f.refused(
            Actor::Computer(ComputerId::from("COMP-HUGE")),
            Op::RegisterComputer(huge)
        )
        .to_string(),
        "10001 partitions; at most 10000 are accepted"
    );
    for quantity in [f64::NAN, f64::INFINITY, -1.0, 1e308] {
        let forged = UsageRecord {
            partition: PartitionRef::from("slappart0"),
            period_start: Timestamp(0),
            period_end: Timestamp(1),
            movements: vec![UsageMovement {
                resource: "CPU Consumption".into(),
                category: "cpu".into(),
                quantity,
            }],
        };
        let rejection = f.refused(
            Actor::Computer(ComputerId::from("COMP-1")),
            Op::PostUsage {
                computer: ComputerId::from("COMP-1"),
                records: vec![forged],
            },
        );
        assert!(
            matches!(&rejection, Rejection::Invalid { what, .. } if what == "usage quantity"),
            "{quantity}: {rejection}"
        );
    }
    let mut fresh_destroy = request("never-existed", KVM);
    fresh_destroy.state = RequestedState::Destroyed;
    assert_eq!(
        f.refused(user("lee"), Op::RequestInstance(fresh_destroy)),
        Rejection::NothingToDestroy {
            title: "never-existed".into()
        }
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

// --- properties over random command sequences -------------------------------------------------

const COMPUTERS: [&str; 3] = ["COMP-0", "COMP-1", "COMP-2"];
const TITLES: [&str; 4] = ["a", "b", "c", "d"];
const USERS: [&str; 2] = ["u0", "u1"];
const RELEASES: [&str; 2] = [KVM, ERP5];

/// A command drawn from a small universe, so that sequences collide on purpose: the same
/// titles, the same partitions, requests racing capacity.
#[derive(Debug, Clone)]
enum Step {
    Register {
        computer: usize,
        partitions: u32,
        region: usize,
    },
    Scope {
        computer: usize,
        open: bool,
    },
    Supply {
        computer: usize,
        release: usize,
        available: bool,
    },
    Request {
        user: usize,
        title: usize,
        release: usize,
        region: Option<usize>,
        shared: bool,
        state: u8,
        ram: u8,
    },
    ChildRequest {
        computer: usize,
        partition: u32,
        title: usize,
        release: usize,
    },
    Destroy {
        user: usize,
        title: usize,
    },
    ReportDestroyed {
        computer: usize,
        partition: u32,
    },
    Publish {
        computer: usize,
        partition: u32,
        value: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..5u32, 0..2usize).prop_map(|(computer, partitions, region)| Step::Register {
            computer,
            partitions,
            region
        }),
        (0..3usize, any::<bool>()).prop_map(|(computer, open)| Step::Scope { computer, open }),
        (0..3usize, 0..2usize, prop::bool::weighted(0.8)).prop_map(
            |(computer, release, available)| Step::Supply {
                computer,
                release,
                available
            }
        ),
        (
            0..2usize,
            0..4usize,
            0..2usize,
            prop::option::of(0..2usize),
            prop::bool::weighted(0.2),
            0..3u8,
            0..2u8
        )
            .prop_map(
                |(user, title, release, region, shared, state, ram)| Step::Request {
                    user,
                    title,
                    release,
                    region,
                    shared,
                    state,
                    ram
                }
            ),
        (0..3usize, 0..5u32, 0..4usize, 0..2usize).prop_map(
            |(computer, partition, title, release)| Step::ChildRequest {
                computer,
                partition,
                title,
                release
            }
        ),
        (0..2usize, 0..4usize).prop_map(|(user, title)| Step::Destroy { user, title }),
        (0..3usize, 0..5u32).prop_map(|(computer, partition)| Step::ReportDestroyed {
            computer,
            partition
        }),
        (0..3usize, 0..5u32, any::<u8>()).prop_map(|(computer, partition, value)| Step::Publish {
            computer,
            partition,
            value
        }),
    ]
}

#[test]
fn a_hostile_tenant_is_refused_by_the_policy_and_changes_nothing() {
    let mut f = Fixture::new();
    f.register("COMP-1", 3, &[]);
    f.supply("COMP-1", KVM);
    let publish = |title: &str| Op::PublishSoftwareRelease {
        url: url(KVM),
        title: title.into(),
        software_types: vec!["default".into()],
    };
    let published = f.run(user("alice"), publish("KVM"));
    assert!(published.is_ok(), "{published:?}");
    let alices = f.request(user("alice"), request("web", KVM));
    let bobs = f.request(user("bob"), request("db", KVM));
    let mallory = user("mallory");
    let computer = ComputerId::from("COMP-1");

    tracing_phase("1: a partition's certificate destroys another user's instance");
    let rejection = f.refused(
        Actor::Partition(partition_of(&alices)),
        Op::DestroyInstance {
            instance: bobs.guid,
        },
    );
    assert!(
        matches!(rejection, Rejection::NotAllowed { .. }),
        "{rejection}"
    );

    tracing_phase("3: a user registers, or overwrites, a computer");
    let rejection = f.refused(
        mallory.clone(),
        Op::RegisterComputer(definition("COMP-1", 8, &[])),
    );
    assert_eq!(
        rejection.to_string(),
        "user mallory may not register computer COMP-1"
    );
    f.refused(
        mallory.clone(),
        Op::RegisterComputer(definition("COMP-NEW", 8, &[])),
    );

    tracing_phase("4: computer-scoped writes by a user");
    for op in [
        Op::BangComputer {
            computer: computer.clone(),
            message: "x".into(),
        },
        Op::ReportSoftware {
            computer: computer.clone(),
            url: url(KVM),
            state: SoftwareState::Error {
                log: "forged".into(),
            },
        },
        Op::PostUsage {
            computer: computer.clone(),
            records: vec![UsageRecord {
                partition: PartitionRef::from("slappart0"),
                period_start: Timestamp(0),
                period_end: Timestamp(1),
                movements: vec![UsageMovement {
                    resource: "CPU Consumption".into(),
                    category: "cpu".into(),
                    quantity: 999_999.0,
                }],
            }],
        },
    ] {
        let rejection = f.refused(mallory.clone(), op);
        assert!(
            matches!(rejection, Rejection::NotAllowed { .. }),
            "{rejection}"
        );
    }

    tracing_phase("5: a user supplies or removes software on any computer");
    for state in [SupplyState::Available, SupplyState::Destroyed] {
        let rejection = f.refused(
            mallory.clone(),
            Op::Supply {
                computer: computer.clone(),
                url: url(if state == SupplyState::Available {
                    "https://evil.example/sr.cfg"
                } else {
                    KVM
                }),
                state,
            },
        );
        assert_eq!(
            rejection.to_string(),
            "user mallory may not supply software to computer COMP-1 of project default"
        );
    }

    tracing_phase("6: a user rewrites another's catalog entry");
    let rejection = f.refused(mallory.clone(), publish("Pwned"));
    assert_eq!(
        rejection.to_string(),
        "user mallory may not publish this software release"
    );
    let republished = f.run(user("alice"), publish("KVM 2"));
    assert!(republished.is_ok(), "its publisher may: {republished:?}");
}

#[test]
fn what_a_command_alone_shows_is_refused_before_the_log_as_when_applied() {
    let mut f = Fixture::new();
    f.register("COMP-A", 1, &[]);
    let mut big = request("big", KVM);
    big.parameters
        .insert("k".into(), "v".repeat(super::MAX_PARAMETERS_BYTES));
    let computer = Actor::Computer(ComputerId::from("COMP-A"));
    for (actor, op) in [
        (user("alice"), Op::RequestInstance(big)),
        (
            computer,
            Op::RegisterComputer(definition("COMP-A", 10_001, &[])),
        ),
    ] {
        let early = super::check_input(&op).expect_err("refused from the command");
        assert_eq!(early, f.refused(actor, op));
    }
    assert_eq!(
        super::check_input(&Op::RequestInstance(request("small", KVM))),
        Ok(())
    );
}

#[test]
fn quotas_bound_what_one_user_holds_and_only_operators_set_them() {
    let mut f = Fixture::new();
    let admin = Actor::Operator(UserId::from("admin"));
    let (alice, bob) = (user("alice"), user("bob"));
    let ok = |r: Response| assert!(r.is_ok(), "{r:?}");
    let set = |user: Option<&str>, quota: Option<(u64, u64, u64)>| Op::SetQuota {
        user: user.map(UserId::from),
        quota: quota.map(|(instances, pending, parameter_bytes)| Quota {
            instances,
            pending,
            parameter_bytes,
        }),
    };
    let over = |rejection: Rejection| match rejection {
        Rejection::OverQuota { what, .. } => what,
        other => panic!("expected a quota refusal, got {other}"),
    };
    f.register("COMP-A", 2, &[]);
    f.supply("COMP-A", KVM);

    tracing_phase("only operators set quotas");
    let refused = f.refused(
        alice.clone(),
        set(Some("alice"), Some((1_000, 1_000, 1 << 30))),
    );
    assert!(matches!(refused, Rejection::NotAllowed { .. }), "{refused}");
    ok(f.run(admin.clone(), set(Some("alice"), Some((3, 1, 1_000)))));

    tracing_phase("instances, then requests waiting for a partition");
    f.request(alice.clone(), request("a1", KVM));
    f.request(alice.clone(), request("a2", KVM));
    let waiting = f.request(alice.clone(), request("a3", KVM));
    assert!(matches!(waiting.placement, Placement::Pending { .. }));
    let held = |f: &Fixture, who: &str| {
        let txn = f.state.read().expect("read");
        query::quota(&txn, Some(&UserId::from(who)))
            .expect("quota")
            .2
    };
    assert_eq!(
        held(&f, "alice"),
        Holding {
            instances: 3,
            pending: 1,
            parameter_bytes: 0
        }
    );
    let a4 = Op::RequestInstance(request("a4", KVM));
    assert_eq!(over(f.refused(alice.clone(), a4.clone())), "instances");
    ok(f.run(admin.clone(), set(Some("alice"), Some((10, 1, 1_000)))));
    assert_eq!(
        over(f.refused(alice.clone(), a4.clone())),
        "requests waiting for a partition"
    );
    // A waiting request destroyed is forgotten at once: room for another.
    ok(f.run(
        alice.clone(),
        Op::DestroyInstance {
            instance: waiting.guid,
        },
    ));
    ok(f.run(alice.clone(), a4));

    tracing_phase("parameter bytes, on a new request and on a change");
    let with_parameters = |title: &str, bytes: usize| {
        let mut request = request(title, KVM);
        request
            .parameters
            .insert("k".into(), "v".repeat(bytes.saturating_sub(1)));
        Op::RequestInstance(request)
    };
    assert_eq!(
        over(f.refused(alice.clone(), with_parameters("a1", 1_001))),
        "bytes of parameters"
    );
    ok(f.run(alice.clone(), with_parameters("a1", 600)));
    assert_eq!(
        over(f.refused(alice.clone(), with_parameters("a2", 401))),
        "bytes of parameters"
    );
    // Shrinking never needs room.
    ok(f.run(alice.clone(), with_parameters("a1", 10)));
    assert_eq!(held(&f, "alice").parameter_bytes, 10);

    tracing_phase("everyone's default, then the master's own");
    ok(f.run(admin.clone(), set(None, Some((0, 0, 0)))));
    assert_eq!(
        over(f.refused(bob.clone(), Op::RequestInstance(request("b1", KVM)))),
        "instances"
    );
    // An operator's own requests count against no quota.
    ok(f.run(admin.clone(), Op::RequestInstance(request("ops1", ERP5))));
    ok(f.run(admin.clone(), set(None, None)));
    f.request(bob.clone(), request("b1", ERP5));

    tracing_phase("a lowered quota keeps what is held");
    ok(f.run(admin.clone(), set(Some("alice"), Some((1, 0, 0)))));
    let again = f.request(alice.clone(), request("a2", KVM));
    assert!(
        !again.changed,
        "a repeated request is answered, not refused"
    );
}

#[test]
fn holdings_are_counted_when_state_written_before_quotas_is_opened() {
    let mut f = Fixture::new();
    f.register("COMP-A", 1, &[]);
    f.supply("COMP-A", KVM);
    let mut big = request("big", KVM);
    big.parameters.insert("key".into(), "value".into());
    f.request(user("alice"), big);
    f.request(user("alice"), request("waiting", KVM));
    f.request(user("bob"), request("also-waiting", ERP5));
    f.state.forget_holdings().expect("forget and reopen");
    check_invariants(&f.state);
    let txn = f.state.read().expect("read");
    let (_, own, held) = query::quota(&txn, Some(&UserId::from("alice"))).expect("quota");
    assert!(!own);
    assert_eq!(
        held,
        Holding {
            instances: 2,
            pending: 1,
            parameter_bytes: 8
        }
    );
}

#[test]
fn projects_decide_who_supplies_requests_and_where_trees_are_placed() {
    let mut f = Fixture::new();
    let admin = Actor::Operator(UserId::from("admin"));
    let (manager, customer, outsider) = (user("mona"), user("carl"), user("olga"));
    let project = ProjectId::from("PROJ-A");
    let ok = |r: Response| assert!(r.is_ok(), "{r:?}");
    f.register("COMP-A", 4, &[]);
    f.register("COMP-PUB", 1, &[]);
    f.supply("COMP-A", KVM);
    f.supply("COMP-PUB", KVM);

    tracing_phase("only operators create projects and move computers");
    let create = Op::CreateProject {
        project: project.clone(),
        title: "Acme".into(),
    };
    f.refused(manager.clone(), create.clone());
    ok(f.run(admin.clone(), create));
    let rejection = f.refused(
        manager.clone(),
        Op::MoveComputer {
            computer: ComputerId::from("COMP-A"),
            project: project.clone(),
        },
    );
    assert!(
        matches!(rejection, Rejection::NotAllowed { .. }),
        "{rejection}"
    );
    ok(f.run(
        admin.clone(),
        Op::MoveComputer {
            computer: ComputerId::from("COMP-A"),
            project: project.clone(),
        },
    ));
    let member = |user: &str, role| Op::SetProjectMember {
        project: project.clone(),
        user: UserId::from(user),
        role,
    };
    ok(f.run(admin.clone(), member("mona", Some(ProjectRole::Manager))));
    tracing_phase("a manager invites; a customer may not");
    ok(f.run(manager.clone(), member("carl", Some(ProjectRole::Customer))));
    f.refused(customer.clone(), member("olga", Some(ProjectRole::Manager)));
    assert_eq!(
        f.refused(
            admin.clone(),
            Op::SetProjectMember {
                project: ProjectId::from("PROJ-NONE"),
                user: UserId::from("x"),
                role: Some(ProjectRole::Customer),
            },
        ),
        Rejection::UnknownProject(ProjectId::from("PROJ-NONE"))
    );

    tracing_phase("supply on the project's computer: its managers");
    let supply = |sr: &str, state| Op::Supply {
        computer: ComputerId::from("COMP-A"),
        url: url(sr),
        state,
    };
    f.refused(customer.clone(), supply(ERP5, SupplyState::Available));
    f.refused(outsider.clone(), supply(ERP5, SupplyState::Available));
    ok(f.run(manager.clone(), supply(ERP5, SupplyState::Available)));
    ok(f.run(manager.clone(), supply(ERP5, SupplyState::Destroyed)));

    tracing_phase("open/project: the project's trees go there, others' do not");
    let scope = |scope| Op::SetAllocationScope {
        computer: ComputerId::from("COMP-A"),
        scope,
    };
    f.refused(customer.clone(), scope(AllocationScope::OpenPublic));
    ok(f.run(manager.clone(), scope(AllocationScope::OpenProject)));
    // COMP-PUB (registered before any scope was set) is the default project's, open/project.
    let carls = f.request(customer.clone(), request("web", KVM));
    assert_eq!(partition_of(&carls).computer, ComputerId::from("COMP-A"));
    assert_eq!(
        f.instance(carls.guid).expect("placed").instance.project,
        project,
        "a member's tree goes to their project"
    );
    let olgas = f.request(outsider.clone(), request("web", KVM));
    assert_eq!(partition_of(&olgas).computer, ComputerId::from("COMP-PUB"));
    let olgas_second = f.request(outsider.clone(), request("db", KVM));
    assert!(
        matches!(olgas_second.placement, Placement::Pending { .. }),
        "COMP-A is not open to the default project: {:?}",
        olgas_second.placement
    );
    tracing_phase("requesting in a project: members only");
    let mut in_a = request("sneak", KVM);
    in_a.sla
        .insert(placement::PROJECT_KEY.into(), project.to_string());
    let rejection = f.refused(outsider.clone(), Op::RequestInstance(in_a.clone()));
    assert_eq!(
        rejection.to_string(),
        "user olga may not request instances in project PROJ-A"
    );
    let mut unknown = request("x", KVM);
    unknown
        .sla
        .insert(placement::PROJECT_KEY.into(), "PROJ-NONE".into());
    assert_eq!(
        f.refused(customer.clone(), Op::RequestInstance(unknown)),
        Rejection::UnknownProject(ProjectId::from("PROJ-NONE"))
    );

    tracing_phase("reading and destroying: the owner and the project's managers");
    let read = |f: &Fixture, actor: &Actor, guid| {
        let txn = f.state.read().expect("read");
        let view = query::instance(&txn, guid).expect("query").expect("exists");
        let role = query::role(&txn, actor, &view.instance.project).expect("role");
        super::policy::decide(
            actor,
            super::policy::Operation::ReadInstance,
            super::policy::Target::Instance(super::policy::InstanceFacts {
                instance: &view.instance,
                host_placement: None,
                callers_instance: None,
                role,
            }),
        )
        .is_ok()
    };
    assert!(read(&f, &customer, carls.guid));
    assert!(read(&f, &manager, carls.guid));
    assert!(!read(&f, &outsider, carls.guid));
    f.refused(
        outsider.clone(),
        Op::DestroyInstance {
            instance: carls.guid,
        },
    );

    tracing_phase("open/personal: the managers' own trees only");
    ok(f.run(manager.clone(), scope(AllocationScope::OpenPersonal)));
    let carls_second = f.request(customer.clone(), request("second", KVM));
    assert!(
        matches!(carls_second.placement, Placement::Pending { .. }),
        "{:?}",
        carls_second.placement
    );
    let monas = f.request(manager.clone(), request("own", KVM));
    assert_eq!(partition_of(&monas).computer, ComputerId::from("COMP-A"));

    tracing_phase("close/*: no new instances; what runs stays and its owner still acts on it");
    ok(f.run(manager.clone(), scope(AllocationScope::CloseMaintenance)));
    let mut changed = request("web", KVM);
    changed.parameters.insert("v".into(), "2".into());
    let updated = f.request(customer.clone(), changed);
    assert_eq!(updated.placement, carls.placement, "still where it ran");
    ok(f.run(manager.clone(), scope(AllocationScope::OpenProject)));
    let placed = f.instance(carls_second.guid).expect("exists");
    assert!(
        matches!(placed.instance.placement, Placement::Partition(_)),
        "reopening places what waited: {:?}",
        placed.instance.placement
    );

    tracing_phase("close/forever: only an operator opens it again");
    ok(f.run(manager.clone(), scope(AllocationScope::CloseForever)));
    let rejection = f.refused(manager.clone(), scope(AllocationScope::OpenProject));
    assert_eq!(
        rejection.to_string(),
        "user mona may not set the allocation scope of computer COMP-A of project PROJ-A"
    );
    ok(f.run(admin.clone(), scope(AllocationScope::OpenPublic)));
    tracing_phase("open/public: every project's trees");
    let olgas_placed = f.instance(olgas_second.guid).expect("exists");
    assert!(
        matches!(olgas_placed.instance.placement, Placement::Partition(ref p) if p.computer.as_str() == "COMP-A"),
        "{:?}",
        olgas_placed.instance.placement
    );

    tracing_phase("a member removed requests no new tree there");
    ok(f.run(manager.clone(), member("carl", None)));
    let mut again = request("third", KVM);
    again
        .sla
        .insert(placement::PROJECT_KEY.into(), project.to_string());
    f.refused(customer.clone(), Op::RequestInstance(again));
}

fn to_command(step: &Step, state: &MemoryState, at: u64) -> Command {
    let regions = ["eu", "us"];
    let (actor, op) = match step {
        Step::Register {
            computer,
            partitions,
            region,
        } => {
            let id = COMPUTERS[*computer];
            (
                Actor::Computer(ComputerId::from(id)),
                Op::RegisterComputer(definition(id, *partitions, &[("region", regions[*region])])),
            )
        }
        Step::Scope { computer, open } => (
            Actor::Operator(UserId::from("admin")),
            Op::SetAllocationScope {
                computer: ComputerId::from(COMPUTERS[*computer]),
                scope: if *open {
                    AllocationScope::OpenPublic
                } else {
                    AllocationScope::CloseNoAllocation
                },
            },
        ),
        Step::Supply {
            computer,
            release,
            available,
        } => (
            Actor::Operator(UserId::from("admin")),
            Op::Supply {
                computer: ComputerId::from(COMPUTERS[*computer]),
                url: url(RELEASES[*release]),
                state: if *available {
                    SupplyState::Available
                } else {
                    SupplyState::Destroyed
                },
            },
        ),
        Step::Request {
            user: u,
            title,
            release,
            region,
            shared,
            state,
            ram,
        } => {
            let mut r = request(TITLES[*title], RELEASES[*release]);
            if let Some(region) = region {
                r.sla.insert("region".into(), regions[*region].into());
            }
            r.shared = *shared;
            r.state = [
                RequestedState::Started,
                RequestedState::Stopped,
                RequestedState::Destroyed,
            ][usize::from(*state)];
            r.parameters
                .insert("ram".into(), (1024 * (u32::from(*ram) + 1)).to_string());
            (user(USERS[*u]), Op::RequestInstance(r))
        }
        Step::ChildRequest {
            computer,
            partition,
            title,
            release,
        } => (
            Actor::Partition(pid(COMPUTERS[*computer], &format!("slappart{partition}"))),
            Op::RequestInstance(request(
                &format!("child-{}", TITLES[*title]),
                RELEASES[*release],
            )),
        ),
        Step::Destroy { user: u, title } => {
            let txn = state.read().expect("read");
            let guid = query::root_by_title(&txn, &UserId::from(USERS[*u]), TITLES[*title])
                .expect("query")
                .unwrap_or(InstanceGuid(424242));
            (user(USERS[*u]), Op::DestroyInstance { instance: guid })
        }
        Step::ReportDestroyed {
            computer,
            partition,
        } => {
            let p = pid(COMPUTERS[*computer], &format!("slappart{partition}"));
            (
                Actor::Computer(p.computer.clone()),
                Op::ReportInstance {
                    partition: p,
                    shared_reference: None,
                    report: InstanceReport::Destroyed,
                },
            )
        }
        Step::Publish {
            computer,
            partition,
            value,
        } => {
            let p = pid(COMPUTERS[*computer], &format!("slappart{partition}"));
            (
                Actor::Partition(p.clone()),
                Op::PublishConnection {
                    partition: p,
                    shared_reference: None,
                    parameters: Parameters::from([("v".to_string(), value.to_string())]),
                },
            )
        }
    };
    Command {
        at: Timestamp(at),
        actor,
        op,
    }
}

/// Applies `steps`, checking after each one that a refusal changed nothing and that the
/// invariants hold; with `repeat`, also sends every request a second time right after it and
/// checks that the repeat changed nothing. Returns the commands as applied (the log).
fn run_steps(steps: &[Step], repeat: bool) -> (MemoryState, Vec<Command>) {
    let dump = |s: &MemoryState| query::dump(&s.read().expect("read")).expect("dump");
    let mut state = MemoryState::new().expect("state");
    let mut log = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let at = 1_000_000 * (2 * n as u64 + 1);
        let command = to_command(step, &state, at);
        let before = dump(&state);
        let response = state.apply(command.clone()).expect("storage works");
        if response.is_err() {
            assert_eq!(
                dump(&state),
                before,
                "{step:?} was refused but changed the state"
            );
        }
        check_invariants(&state);
        log.push(command.clone());
        if repeat && matches!(command.op, Op::RequestInstance(_)) {
            let applied = dump(&state);
            let again = Command {
                at: Timestamp(at + 1_000_000),
                ..command
            };
            match state.apply(again.clone()).expect("storage works") {
                Ok(Outcome::Instance(summary)) => {
                    assert!(!summary.changed, "{step:?} changed when repeated")
                }
                // Refused both times (same reason) or: destroyed, and gone.
                Ok(Outcome::Done) | Err(_) => {}
                Ok(other) => panic!("{step:?} repeated answered {other:?}"),
            }
            assert_eq!(
                dump(&state),
                applied,
                "repeating {step:?} changed the state"
            );
            log.push(again);
        }
    }
    (state, log)
}

// 256 cases each by default; `PROPTEST_CASES=N` runs more. Failing cases are saved in
// proptest-regressions/ and replayed first on every run.
proptest! {
    /// Random sequences never place two instances on one partition, keep every index exact,
    /// never leave placeable work pending, and replaying the log gives byte-identical state.
    #[test]
    fn random_sequences_keep_the_invariants_and_replay_identically(steps in prop::collection::vec(step(), 1..60)) {
        let (state, log) = run_steps(&steps, false);
        let mut replica = MemoryState::new().expect("state");
        // Another replica applies the same log in other batch sizes: same bytes.
        for chunk in log.chunks(7) {
            replica.apply_batch(chunk.to_vec()).expect("storage works");
        }
        let dump = |s: &MemoryState| query::dump(&s.read().expect("read")).expect("dump");
        prop_assert_eq!(dump(&replica), dump(&state));
    }

    /// Re-sending a request right after it was applied changes nothing, whatever came before.
    #[test]
    fn repeated_requests_change_nothing(steps in prop::collection::vec(step(), 1..50)) {
        run_steps(&steps, true);
    }

    /// Destroying every tree and letting every node report frees every partition.
    #[test]
    fn destroying_every_tree_frees_every_partition(steps in prop::collection::vec(step(), 1..60)) {
        let (mut state, _) = run_steps(&steps, false);
        let mut at = 1u64 << 50;
        let mut tick = || { at += 1; Timestamp(at) };
        for owner in USERS {
            let txn = state.read().expect("read");
            let roots: Vec<InstanceGuid> = query::instances_of(&txn, &UserId::from(owner)).expect("query")
                .into_iter().filter(|i| i.root == i.guid).map(|i| i.guid).collect();
            drop(txn);
            for guid in roots {
                state.apply(Command { at: tick(), actor: user(owner), op: Op::DestroyInstance { instance: guid } }).expect("storage works").expect("destroy");
            }
        }
        // Nodes report in any order; each pass frees at least the leaves.
        for _ in 0..8 {
            let txn = state.read().expect("read");
            let busy: Vec<PartitionId> = query::computers(&txn).expect("computers").iter().flat_map(|c| {
                query::computer_view(&txn, &c.id).expect("view").expect("known").partitions.into_iter()
                    .filter(|p| p.instance.as_ref().is_some_and(|i| !i.instance.destroyed_reported))
                    .map(move |p| PartitionId { computer: c.id.clone(), partition: p.partition.reference })
            }).collect();
            drop(txn);
            for p in busy {
                let _ = state.apply(Command { at: tick(), actor: Actor::Computer(p.computer.clone()), op: Op::ReportInstance { partition: p, shared_reference: None, report: InstanceReport::Destroyed } }).expect("storage works");
            }
            check_invariants(&state);
        }
        let txn = state.read().expect("read");
        for computer in query::computers(&txn).expect("computers") {
            prop_assert_eq!(computer.free_count, computer.partition_count, "{} still has busy partitions", computer.id);
        }
        for owner in USERS {
            let left: Vec<Instance> = query::instances_of(&txn, &UserId::from(owner)).expect("query");
            prop_assert!(left.is_empty(), "instances left: {:?}", left);
        }
    }
}
