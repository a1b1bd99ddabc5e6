//! Refusals: bad commands and hostile tenants are refused with a reason and change nothing, before
//! the log as when applied.

use super::*;

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
    big.parameters.insert(
        "blob".into(),
        "x".repeat(crate::state::MAX_PARAMETERS_BYTES),
    );
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
        .insert("k".into(), "v".repeat(crate::state::MAX_PARAMETERS_BYTES));
    let computer = Actor::Computer(ComputerId::from("COMP-A"));
    for (actor, op) in [
        (user("alice"), Op::RequestInstance(big)),
        (
            computer,
            Op::RegisterComputer(definition("COMP-A", 10_001, &[])),
        ),
    ] {
        let early = crate::state::check_input(&op).expect_err("refused from the command");
        assert_eq!(early, f.refused(actor, op));
    }
    assert_eq!(
        crate::state::check_input(&Op::RequestInstance(request("small", KVM))),
        Ok(())
    );
}
