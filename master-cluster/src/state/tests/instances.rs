//! Instances: requests and their trees, shared instances, connection parameters, who may act for a
//! partition, reports.

use super::*;

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
fn children_an_instance_no_longer_requests_are_destroyed_with_their_trees() {
    let mut f = Fixture::new();
    f.register("COMP-1", 5, &[]);
    f.supply("COMP-1", KVM);
    let root = f.request(user("ivy"), request("root", KVM));
    let on = partition_of(&root);
    let as_root = Actor::Partition(on.clone());
    let keep = f.request(as_root.clone(), request("keep", KVM));
    let drop = f.request(as_root.clone(), request("drop", KVM));
    let below = f.request(Actor::Partition(partition_of(&drop)), request("below", KVM));
    let mut site = request("site", KVM);
    site.shared = true;
    let site = f.request(as_root.clone(), site);
    assert_eq!(site.placement, Placement::Hosted { host: root.guid });
    let related = |titles: &[&str]| Op::UpdateRelatedInstances {
        partition: on.clone(),
        titles: titles.iter().map(|t| t.to_string()).collect(),
    };

    tracing_phase("every child still requested: nothing changes");
    assert_eq!(
        f.run(
            as_root.clone(),
            related(&["keep", "drop", "site", "unknown"])
        ),
        Ok(Outcome::Unchanged)
    );

    tracing_phase("only its instance, its node or an operator may say so");
    for actor in [
        user("ivy"),
        Actor::Partition(partition_of(&keep)),
        Actor::Computer(ComputerId::from("COMP-2")),
    ] {
        assert!(
            matches!(
                f.refused(actor.clone(), related(&[])),
                Rejection::NotAllowed { .. }
            ),
            "{actor}"
        );
    }
    assert!(matches!(
        f.refused(
            as_root.clone(),
            related(&[&"x".repeat(crate::state::MAX_NAME_BYTES + 1)])
        ),
        Rejection::TooLarge { .. }
    ));

    tracing_phase("the tree shrinks: what it dropped goes, with what that requested");
    assert_eq!(
        f.run(as_root.clone(), related(&["keep"])),
        Ok(Outcome::Done)
    );
    for guid in [drop.guid, below.guid] {
        assert_eq!(
            f.instance(guid)
                .expect("waits for its node")
                .instance
                .requested_state,
            RequestedState::Destroyed
        );
    }
    assert!(
        f.instance(site.guid).is_none(),
        "a shared instance goes at once"
    );
    assert!(
        f.instance(root.guid)
            .expect("root")
            .shared_instances
            .is_empty()
    );
    assert_eq!(
        f.instance(keep.guid)
            .expect("kept")
            .instance
            .requested_state,
        RequestedState::Started
    );
    assert_eq!(
        f.run(as_root.clone(), related(&["keep"])),
        Ok(Outcome::Unchanged)
    );

    tracing_phase("requested again, a dropped child comes back once it is gone");
    f.report(&partition_of(&below), InstanceReport::Destroyed)
        .expect("report");
    f.report(&partition_of(&drop), InstanceReport::Destroyed)
        .expect("report");
    let again = f.request(as_root, request("drop", KVM));
    assert_ne!(again.guid, drop.guid);
    assert_eq!(f.free("COMP-1"), 2);
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
        "x".repeat(crate::state::MAX_LOG_BYTES * 2)
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
            .is_some_and(|l| l.len() == crate::state::MAX_LOG_BYTES)
    );
    assert!(
        matches!(
            f.report(&p, InstanceReport::Destroyed),
            Err(Rejection::Invalid { .. })
        ),
        "not requested destroyed"
    );
}
