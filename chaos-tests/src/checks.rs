//! The checkers, run on a finished history: linearizability of every instance (as the
//! [`crate::model::InstanceModel`] register), and the domain's invariants: one instance per
//! (user, title) however often it was requested, no partition ever held by two instances and
//! no instance ever moved, every acknowledged write still there at the end (the final reads
//! are part of the history, so the linearizability check covers it), and no call the
//! authorisation policy refuses ever succeeded.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Call, History, Op, Outcome, worker_name};
use crate::linearizability::{self, Verdict};
use crate::model::{self, InstanceModel};

/// Search steps per key before the linearizability check gives up (and says so).
const BUDGET: u64 = 20_000_000;

/// What the checks found wrong; empty when the run kept every promise.
pub fn check(history: &History) -> (Vec<String>, Vec<String>) {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in &by_key {
        let (positions, operations): (Vec<usize>, Vec<_>) =
            model::operations(ops).into_iter().unzip();
        match linearizability::check(&InstanceModel, &operations, BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Unknown => notes.push(format!(
                "{key}: linearizability undecided after {BUDGET} search steps ({} operations)",
                operations.len()
            )),
            Verdict::Violation { longest } => {
                // Where the search got stuck: the earliest-completing operation that no
                // order could place.
                let stuck = (0..operations.len())
                    .filter(|i| longest.binary_search(i).is_err())
                    .min_by_key(|&i| {
                        operations[i]
                            .completed
                            .as_ref()
                            .map_or(u64::MAX, |(t, _)| *t)
                    })
                    .map(|i| describe(ops[positions[i]]))
                    .unwrap_or_default();
                violations.push(format!(
                    "{key}: not linearizable ({} operations, at most {} in a valid order); \
                     no order explains {stuck}",
                    operations.len(),
                    longest.len()
                ));
            }
        }
        let guids: BTreeSet<&str> = ops
            .iter()
            .filter_map(|op| match &op.outcome {
                Outcome::Ok(Some(seen)) => Some(seen.guid.as_str()),
                _ => None,
            })
            .collect();
        if guids.len() > 1 {
            violations.push(format!("{key}: one title, several instances: {guids:?}"));
        }
    }

    // No call the policy refuses ever succeeded, whatever the faults.
    for op in &history.ops {
        if let (Call::Intrude { intrusion }, Outcome::Ok(_)) = (&op.call, &op.outcome) {
            violations.push(format!(
                "{}: a call the policy refuses succeeded ({intrusion:?}): {}",
                op.key,
                describe(op)
            ));
        }
    }

    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut places: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &history.ops {
        if let Outcome::Ok(Some(seen)) = &op.outcome
            && let Some(partition) = &seen.partition
        {
            holders.entry(partition).or_default().insert(&seen.guid);
            places.entry(&seen.guid).or_default().insert(partition);
        }
    }
    for (partition, guids) in holders {
        if guids.len() > 1 {
            violations.push(format!(
                "partition {partition} held by several instances: {guids:?}"
            ));
        }
    }
    for (guid, partitions) in places {
        if partitions.len() > 1 {
            violations.push(format!(
                "instance {guid} seen on several partitions: {partitions:?}"
            ));
        }
    }
    (violations, notes)
}

/// An operation as a person reads it in a report.
fn describe(op: &Op) -> String {
    let outcome = match &op.outcome {
        Outcome::Ok(Some(seen)) => {
            format!("saw v={:?} state={:?} c={:?}", seen.v, seen.state, seen.c)
        }
        Outcome::Ok(None) => "saw no instance".into(),
        Outcome::Failed(why) => format!("failed: {why}"),
        Outcome::Unknown(why) => format!("unknown: {why}"),
    };
    format!(
        "{:?} by {} on replica {} at {:.3}-{:.3} s that {outcome}",
        op.call,
        worker_name(op.worker),
        op.replica + 1,
        op.invoked_us as f64 / 1e6,
        op.completed_us as f64 / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Freshness, Requested, Seen};

    fn op(key: &str, call: Call, at: u64, outcome: Outcome) -> Op {
        Op {
            worker: 0,
            replica: 0,
            key: key.into(),
            call,
            invoked_us: at,
            completed_us: at + 10,
            outcome,
        }
    }

    fn seen(guid: &str, v: Option<u64>, partition: &str) -> Seen {
        Seen {
            guid: guid.into(),
            v,
            state: v.map(|_| Requested::Started),
            c: None,
            partition: Some(partition.into()),
        }
    }

    fn read() -> Call {
        Call::Read {
            freshness: Freshness::Linearizable,
        }
    }

    fn write(v: u64) -> Call {
        Call::Request {
            v,
            state: Requested::Started,
        }
    }

    #[test]
    fn a_lost_acknowledged_write_and_a_shared_partition_are_caught() {
        let history = History {
            ops: vec![
                op(
                    "alice/a",
                    write(1),
                    0,
                    Outcome::Ok(Some(seen("G1", None, "C/p0"))),
                ),
                op(
                    "alice/a",
                    read(),
                    100,
                    Outcome::Ok(Some(seen("G1", Some(1), "C/p0"))),
                ),
                op(
                    "alice/b",
                    write(2),
                    200,
                    Outcome::Ok(Some(seen("G2", None, "C/p0"))),
                ),
                // Acknowledged, then gone:
                op(
                    "alice/c",
                    write(3),
                    300,
                    Outcome::Ok(Some(seen("G3", None, "C/p1"))),
                ),
                op("alice/c", read(), 400, Outcome::Ok(None)),
            ],
            ..History::default()
        };
        let (violations, _) = check(&history);
        assert!(
            violations
                .iter()
                .any(|v| v.starts_with("alice/c: not linearizable")),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.contains("C/p0 held by several")),
            "{violations:?}"
        );
        assert!(
            !violations.iter().any(|v| v.starts_with("alice/a")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_refused_call_that_succeeded_is_caught_and_refused_ones_change_nothing() {
        let intrude = |intrusion| Call::Intrude { intrusion };
        let history = History {
            ops: vec![
                op(
                    "bob/a",
                    write(1),
                    0,
                    Outcome::Ok(Some(seen("G1", None, "C/p0"))),
                ),
                op(
                    "bob/a",
                    intrude(crate::history::Intrusion::Supply),
                    50,
                    Outcome::Failed("PermissionDenied: user bob may not ...".into()),
                ),
                op(
                    "bob/a",
                    intrude(crate::history::Intrusion::PublishAsUser),
                    60,
                    Outcome::Unknown("timed out".into()),
                ),
                op(
                    "bob/a",
                    read(),
                    100,
                    Outcome::Ok(Some(seen("G1", Some(1), "C/p0"))),
                ),
            ],
            ..History::default()
        };
        assert_eq!(check(&history).0, Vec::<String>::new());
        let mut leaked = history;
        leaked.ops.push(op(
            "bob/a",
            intrude(crate::history::Intrusion::RequestInOtherProject),
            200,
            Outcome::Ok(None),
        ));
        let (violations, _) = check(&leaked);
        assert!(
            violations.iter().any(|v| v
                .starts_with("bob/a: a call the policy refuses succeeded (RequestInOtherProject)")),
            "{violations:?}"
        );
    }

    #[test]
    fn duplicated_instances_and_moves_are_caught_and_a_clean_history_passes() {
        let clean = History {
            ops: vec![
                op(
                    "bob/a",
                    write(1),
                    0,
                    Outcome::Ok(Some(seen("G1", None, "C/p0"))),
                ),
                op("bob/a", write(2), 5, Outcome::Unknown("timed out".into())),
                op(
                    "bob/a",
                    read(),
                    100,
                    Outcome::Ok(Some(seen("G1", Some(2), "C/p0"))),
                ),
            ],
            ..History::default()
        };
        assert_eq!(check(&clean).0, Vec::<String>::new());
        let mut twice = clean.clone();
        twice.ops.push(op(
            "bob/a",
            write(3),
            200,
            Outcome::Ok(Some(seen("G9", None, "C/p3"))),
        ));
        let (violations, _) = check(&twice);
        assert!(
            violations.iter().any(|v| v.contains("several instances")),
            "{violations:?}"
        );
        let mut moved = clean;
        moved.ops.push(op(
            "bob/a",
            read(),
            300,
            Outcome::Ok(Some(seen("G1", Some(2), "C/p5"))),
        ));
        let (violations, _) = check(&moved);
        assert!(
            violations
                .iter()
                .any(|v| v.contains("G1 seen on several partitions")),
            "{violations:?}"
        );
    }
}
