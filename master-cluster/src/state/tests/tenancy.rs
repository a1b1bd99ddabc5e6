//! Tenancy: quotas and holdings, projects and their members.

use super::*;

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
        crate::state::policy::decide(
            actor,
            crate::state::policy::Operation::ReadInstance,
            crate::state::policy::Target::Instance(crate::state::policy::InstanceFacts {
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
