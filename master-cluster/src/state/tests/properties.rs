//! Properties over seeded random command sequences.

use super::*;

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
    /// The instance on a partition still requests the children whose title's bit is set.
    Related {
        computer: usize,
        partition: u32,
        titles: u8,
    },
    /// Its node reports the instance on a partition started (0), stopped (1) or failing with
    /// one of two errors (2, 3).
    Report {
        computer: usize,
        partition: u32,
        report: u8,
    },
    /// A computer's node polled `ago` seconds before the command.
    Polled {
        computer: usize,
        ago: u8,
    },
    CheckSilence {
        seconds: u8,
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
        (0..3usize, 0..5u32, any::<u8>()).prop_map(|(computer, partition, titles)| Step::Related {
            computer,
            partition,
            titles
        }),
        (0..3usize, 0..5u32, 0..4u8).prop_map(|(computer, partition, report)| Step::Report {
            computer,
            partition,
            report
        }),
        (0..3usize, 0..6u8).prop_map(|(computer, ago)| Step::Polled { computer, ago }),
        (1..8u8).prop_map(|seconds| Step::CheckSilence { seconds }),
    ]
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
        Step::Related {
            computer,
            partition,
            titles,
        } => {
            let p = pid(COMPUTERS[*computer], &format!("slappart{partition}"));
            let titles = TITLES
                .iter()
                .enumerate()
                .filter(|(bit, _)| titles & (1 << bit) != 0)
                .map(|(_, title)| format!("child-{title}"))
                .collect();
            (
                Actor::Partition(p.clone()),
                Op::UpdateRelatedInstances {
                    partition: p,
                    titles,
                },
            )
        }
        Step::Report {
            computer,
            partition,
            report,
        } => {
            let p = pid(COMPUTERS[*computer], &format!("slappart{partition}"));
            let report = match report {
                0 => InstanceReport::Started,
                1 => InstanceReport::Stopped,
                n => InstanceReport::Error {
                    log: format!("promise {n} failed"),
                },
            };
            (
                Actor::Computer(p.computer.clone()),
                Op::ReportInstance {
                    partition: p,
                    shared_reference: None,
                    report,
                },
            )
        }
        Step::Polled { computer, ago } => (
            Actor::Replica(1),
            Op::RecordLiveness {
                seen: vec![(
                    ComputerId::from(COMPUTERS[*computer]),
                    Timestamp(at.saturating_sub(u64::from(*ago) * 1_000_000)),
                )],
            },
        ),
        Step::CheckSilence { seconds } => (
            Actor::Replica(1),
            Op::CheckSilence {
                silent_after_s: u64::from(*seconds),
            },
        ),
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
