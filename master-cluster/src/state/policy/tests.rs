//! The policy decided directly: every transport's calls are named, and each rule holds for
//! every kind of caller.

use super::*;
use crate::state::model::{PartitionRef, UserId};

fn in_project(project: &ProjectId, role: Option<ProjectRole>) -> Target<'_> {
    Target::Project(ProjectFacts {
        project,
        role,
        computer: None,
    })
}

/// Every gRPC method of the wire contract, read from the `.proto` files.
fn grpc_methods() -> Vec<String> {
    let protos = [
        include_str!("../../../api/proto/slapcluster/v1/admin.proto"),
        include_str!("../../../api/proto/slapcluster/v1/node.proto"),
        include_str!("../../../api/proto/slapcluster/v1/raft.proto"),
        include_str!("../../../api/proto/slapcluster/v1/user.proto"),
    ];
    let mut methods = Vec::new();
    for proto in protos {
        let mut service = None;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next();
            } else if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), service) {
                let method = rest.split('(').next().unwrap_or_default().trim();
                methods.push(format!("/slapcluster.v1.{service}/{method}"));
            }
        }
    }
    methods
}

#[test]
fn every_grpc_method_is_named_and_nothing_else() {
    let methods = grpc_methods();
    assert_eq!(methods.len(), 48, "the contract's methods: {methods:?}");
    for method in &methods {
        assert!(
            grpc_operation(method).is_some(),
            "{method} is not in the policy"
        );
    }
    for unknown in [
        "/slapcluster.v1.User/DropTables",
        "/slapcluster.v1.Raft",
        "/other.v1.User/RequestInstance",
        "",
    ] {
        assert_eq!(grpc_operation(unknown), None, "{unknown}");
    }
    assert_eq!(slap_operation("dropTables"), None);
}

use crate::state::sample::instance;

fn partition(computer: &str, partition: &str) -> PartitionId {
    PartitionId {
        computer: computer.into(),
        partition: PartitionRef::from(partition),
    }
}

fn facts<'a>(
    instance: &'a Instance,
    host_placement: Option<&'a Placement>,
    callers_instance: Option<u64>,
) -> Target<'a> {
    Target::Instance(InstanceFacts {
        instance,
        host_placement,
        callers_instance: callers_instance.map(InstanceGuid),
        role: None,
    })
}

#[test]
fn each_caller_reads_only_what_is_its_own() {
    use Operation::ReadInstance;
    let root = instance(
        1,
        "alice",
        Requester::User("alice".into()),
        Placement::Partition(partition("COMP-A", "p0")),
    );
    let child = instance(
        2,
        "alice",
        Requester::Instance(InstanceGuid(1)),
        Placement::Partition(partition("COMP-B", "p0")),
    );
    let shared = instance(
        3,
        "bob",
        Requester::User("bob".into()),
        Placement::Hosted {
            host: InstanceGuid(1),
        },
    );
    let alice = Actor::User("alice".into());
    let bob = Actor::User("bob".into());
    assert!(decide(&alice, ReadInstance, facts(&root, None, None)).is_ok());
    assert!(decide(&bob, ReadInstance, facts(&root, None, None)).is_err());
    assert!(decide(&bob, ReadInstance, facts(&shared, None, None)).is_ok());

    let comp_a = Actor::Computer("COMP-A".into());
    assert!(decide(&comp_a, ReadInstance, facts(&root, None, None)).is_ok());
    assert!(decide(&comp_a, ReadInstance, facts(&child, None, None)).is_err());
    assert!(
        decide(
            &comp_a,
            ReadInstance,
            facts(&shared, Some(&root.placement), None)
        )
        .is_ok(),
        "the computer of the host serves the shared instance"
    );

    let p0 = Actor::Partition(partition("COMP-A", "p0"));
    assert!(decide(&p0, ReadInstance, facts(&root, None, Some(1))).is_ok());
    assert!(
        decide(&p0, ReadInstance, facts(&child, None, Some(1))).is_ok(),
        "its child"
    );
    assert!(
        decide(&p0, ReadInstance, facts(&shared, None, Some(1))).is_ok(),
        "what it hosts"
    );
    assert!(decide(&p0, ReadInstance, facts(&root, None, Some(9))).is_err());
    assert!(
        decide(&p0, ReadInstance, facts(&root, None, None)).is_err(),
        "a free partition"
    );
    let operator = Actor::Operator("ops".into());
    assert!(decide(&operator, ReadInstance, facts(&child, None, None)).is_ok());

    let computer = ComputerId::from("COMP-A");
    let other = ComputerId::from("COMP-B");
    let read = |actor: &Actor, c: &ComputerId| {
        decide(actor, Operation::ReadComputer, Target::Computer(c)).is_ok()
    };
    assert!(read(&comp_a, &computer));
    assert!(!read(&comp_a, &other));
    assert!(!read(&alice, &computer));
    assert!(read(&operator, &computer));
}

#[test]
fn who_may_act_on_computers_instances_the_catalog_and_the_cluster() {
    use Operation::*;
    let alice = Actor::User("alice".into());
    let mallory = Actor::User("mallory".into());
    let operator = Actor::Operator("ops".into());
    let replica = Actor::Replica(2);
    let comp_a = Actor::Computer("COMP-A".into());
    let comp_b = Actor::Computer("COMP-B".into());
    let own = partition("COMP-A", "p0");
    let p0 = Actor::Partition(own.clone());
    let p1 = Actor::Partition(partition("COMP-A", "p1"));
    let computer = ComputerId::from("COMP-A");
    let ok = |actor: &Actor, operation, target| decide(actor, operation, target).is_ok();

    // A computer's own writes: only it (and operators for its definition and bangs).
    for operation in [RegisterComputer, ReportSoftware, PostUsage, BangComputer] {
        let target = Target::Computer(&computer);
        assert!(ok(&comp_a, operation, target), "{operation:?}");
        for stranger in [&comp_b, &alice, &mallory, &p0] {
            assert!(!ok(stranger, operation, target), "{stranger} {operation:?}");
        }
    }
    assert!(ok(&operator, RegisterComputer, Target::Computer(&computer)));
    assert!(ok(&operator, BangComputer, Target::Computer(&computer)));
    assert!(!ok(&operator, PostUsage, Target::Computer(&computer)));
    assert!(!ok(&operator, ReportSoftware, Target::Computer(&computer)));

    // What is done for a partition's instance: it, its node, an operator.
    for operation in [
        ReadPartition,
        ReportInstance,
        PublishConnection,
        BangInstance,
        RenameInstance,
        FetchPartitionCertificate,
    ] {
        let target = Target::Partition(&own);
        for allowed in [&p0, &comp_a, &operator] {
            assert!(ok(allowed, operation, target), "{allowed} {operation:?}");
        }
        for stranger in [&p1, &comp_b, &alice, &replica] {
            assert!(!ok(stranger, operation, target), "{stranger} {operation:?}");
        }
    }

    // Destroying: the owner and operators; never a partition, a computer or a replica.
    let bobs = instance(
        6,
        "bob",
        Requester::User("bob".into()),
        Placement::Partition(partition("COMP-A", "p1")),
    );
    let target = facts(&bobs, None, None);
    assert!(ok(&Actor::User("bob".into()), DestroyInstance, target));
    assert!(ok(&operator, DestroyInstance, target));
    for stranger in [&mallory, &p0, &comp_a, &replica] {
        let refusal = decide(stranger, DestroyInstance, target).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            format!("{stranger} may not destroy instance SOFTINST-6")
        );
    }

    // The catalog: a release stays its first publisher's.
    let new = Target::Release { published_by: None };
    let alices = Target::Release {
        published_by: Some(&alice),
    };
    assert!(ok(&mallory, PublishSoftwareRelease, new));
    assert!(ok(&alice, PublishSoftwareRelease, alices));
    assert!(!ok(&mallory, PublishSoftwareRelease, alices));
    assert!(ok(&operator, PublishSoftwareRelease, alices));
    assert!(!ok(&p0, PublishSoftwareRelease, new));
    assert!(!ok(&comp_a, PublishSoftwareRelease, new));

    // The cluster: operators administer, replicas replicate, anyone may enroll.
    for operation in [
        ReadClusterStatus,
        ChangeMembership,
        TakeSnapshot,
        ListCertificates,
        IssueCertificate,
        RevokeCertificate,
        CreateEnrollmentToken,
        ManageComputerCertificate,
        CreateProject,
        MoveComputer,
        SetQuota,
    ] {
        assert!(ok(&operator, operation, Target::Cluster), "{operation:?}");
        for other in [&alice, &comp_a, &p0, &replica] {
            assert!(
                !ok(other, operation, Target::Cluster),
                "{other} {operation:?}"
            );
        }
    }
    // A quota: a person's own, or anyone's for an operator.
    let alices_quota = Target::Person(&UserId::from("alice"));
    assert!(ok(&alice, ReadQuota, alices_quota));
    assert!(ok(&operator, ReadQuota, alices_quota));
    for other in [&mallory, &comp_a, &p0, &replica] {
        assert!(!ok(other, ReadQuota, alices_quota), "{other}");
    }
    // An alert: its instance's owner, the project's managers, operators; people list them.
    let alices_alert = Target::Alert {
        owner: Some(&UserId::from("alice")),
        role: None,
    };
    let a_computers_alert = |role| Target::Alert { owner: None, role };
    assert!(ok(&alice, ReadAlerts, alices_alert));
    assert!(ok(&operator, ReadAlerts, a_computers_alert(None)));
    assert!(ok(
        &mallory,
        ReadAlerts,
        a_computers_alert(Some(ProjectRole::Manager))
    ));
    assert!(!ok(
        &mallory,
        ReadAlerts,
        a_computers_alert(Some(ProjectRole::Customer))
    ));
    for other in [&mallory, &comp_a, &p0, &replica] {
        assert!(!ok(other, ReadAlerts, alices_alert), "{other}");
    }
    assert!(ok(&mallory, ReadAlerts, Target::Cluster));
    for machine in [&comp_a, &p0, &replica] {
        assert!(!ok(machine, ReadAlerts, Target::Cluster), "{machine}");
    }
    assert!(ok(&replica, Replicate, Target::Cluster));
    assert!(ok(&replica, UseEnrollmentToken, Target::Cluster));
    for other in [&operator, &alice, &comp_a, &p0] {
        assert!(!ok(other, Replicate, Target::Cluster), "{other}");
        assert!(!ok(other, UseEnrollmentToken, Target::Cluster), "{other}");
    }
    for anyone in [&alice, &comp_a, &p0, &replica, &operator] {
        assert!(ok(anyone, Enroll, Target::Cluster));
        assert!(ok(anyone, ReadCatalog, Target::Cluster));
    }
    assert!(ok(&p0, RequestInstance, Target::Cluster));
    assert!(!ok(&comp_a, RequestInstance, Target::Cluster));
    assert!(!ok(&replica, RequestInstance, Target::Cluster));
    assert!(
        !ok(&alice, RequestInstance, Target::Cluster),
        "a person requests in a project"
    );
    // Listing computers: people (filtered to what they may inspect) and operators.
    assert!(ok(&alice, ListComputers, Target::Cluster));
    for other in [&comp_a, &p0, &replica] {
        assert!(!ok(other, ListComputers, Target::Cluster), "{other}");
    }
}

#[test]
fn a_role_in_the_project_decides_supply_scope_requests_members_and_trees() {
    use Operation::*;
    use ProjectRole::{Customer, Manager};
    let project = ProjectId::from("PROJ-A");
    let computer = ComputerId::from("COMP-A");
    let user = Actor::User("u".into());
    let operator = Actor::Operator("ops".into());
    let on_computer = |role, scope| {
        Target::Project(ProjectFacts {
            project: &project,
            role,
            computer: Some((&computer, scope)),
        })
    };
    let ok = |actor: &Actor, operation, target| decide(actor, operation, target).is_ok();
    let open = AllocationScope::OpenProject;

    // Supplying software and setting the scope of a project's computer: its managers.
    for operation in [Supply, SetAllocationScope] {
        assert!(ok(&user, operation, on_computer(Some(Manager), open)));
        assert!(!ok(&user, operation, on_computer(Some(Customer), open)));
        assert!(!ok(&user, operation, on_computer(None, open)));
        assert!(ok(&operator, operation, on_computer(None, open)));
    }
    let refusal = decide(&user, Supply, on_computer(Some(Customer), open)).expect_err("refused");
    assert_eq!(
        refusal.to_string(),
        "user u may not supply software to computer COMP-A of project PROJ-A"
    );
    // A computer closed forever is retired: only an operator reopens it.
    let retired = AllocationScope::CloseForever;
    assert!(!ok(
        &user,
        SetAllocationScope,
        on_computer(Some(Manager), retired)
    ));
    assert!(ok(
        &operator,
        SetAllocationScope,
        on_computer(None, retired)
    ));
    assert!(ok(&user, Supply, on_computer(Some(Manager), retired)));

    // Requesting a tree, reading the project: any role. Managing its people: managers.
    for role in [Some(Manager), Some(Customer)] {
        assert!(ok(&user, RequestInstance, in_project(&project, role)));
        assert!(ok(&user, ReadProject, in_project(&project, role)));
    }
    assert!(!ok(&user, RequestInstance, in_project(&project, None)));
    assert!(!ok(&user, ReadProject, in_project(&project, None)));
    assert!(ok(
        &user,
        ManageProjectMembers,
        in_project(&project, Some(Manager))
    ));
    assert!(!ok(
        &user,
        ManageProjectMembers,
        in_project(&project, Some(Customer))
    ));
    assert!(ok(
        &operator,
        ManageProjectMembers,
        in_project(&project, None)
    ));
    for stranger in [
        Actor::Computer(computer.clone()),
        Actor::Partition(partition("COMP-A", "p0")),
        Actor::Replica(1),
    ] {
        for operation in [
            Supply,
            SetAllocationScope,
            ManageProjectMembers,
            ReadProject,
        ] {
            assert!(
                !ok(&stranger, operation, on_computer(Some(Manager), open)),
                "{stranger} {operation:?}"
            );
        }
    }

    // Another customer's tree: a manager reads and destroys it, a customer does not.
    let bobs = instance(
        6,
        "bob",
        Requester::User("bob".into()),
        Placement::Partition(partition("COMP-A", "p1")),
    );
    let with_role = |role| {
        Target::Instance(InstanceFacts {
            instance: &bobs,
            host_placement: None,
            callers_instance: None,
            role,
        })
    };
    for operation in [ReadInstance, DestroyInstance] {
        assert!(ok(&user, operation, with_role(Some(Manager))));
        assert!(!ok(&user, operation, with_role(Some(Customer))));
        assert!(!ok(&user, operation, with_role(None)));
    }
}

#[test]
fn the_gate_never_refuses_what_the_policy_allows_on_some_target() {
    let alice = Actor::User("alice".into());
    let actors = [
        alice.clone(),
        Actor::Operator("ops".into()),
        Actor::Replica(2),
        Actor::Computer("COMP-A".into()),
        Actor::Partition(partition("COMP-A", "p0")),
    ];
    let computer = ComputerId::from("COMP-A");
    let own = partition("COMP-A", "p0");
    let alices = instance(
        1,
        "alice",
        Requester::User("alice".into()),
        Placement::Partition(own.clone()),
    );
    let project = ProjectId::from("PROJ-A");
    let targets = [
        Target::Cluster,
        in_project(&project, Some(ProjectRole::Manager)),
        Target::Project(ProjectFacts {
            project: &project,
            role: Some(ProjectRole::Manager),
            computer: Some((&computer, AllocationScope::OpenProject)),
        }),
        Target::Computer(&computer),
        Target::Partition(&own),
        facts(&alices, None, Some(1)),
        Target::Release { published_by: None },
        Target::Release {
            published_by: Some(&alice),
        },
    ];
    let mut allowed = 0;
    for &operation in Operation::ALL {
        for actor in &actors {
            let somewhere = targets
                .iter()
                .any(|&target| decide(actor, operation, target).is_ok());
            allowed += usize::from(somewhere);
            assert!(
                !somewhere || may_attempt(actor, operation),
                "the gate refuses {actor} {operation:?}, which the policy allows"
            );
        }
    }
    assert!(
        allowed > Operation::ALL.len(),
        "the enumeration decided something"
    );
}
