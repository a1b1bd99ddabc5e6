//! The sequential specification of one instance, as the workload sees it: a register of its
//! parameter `v`, its requested state and its published connection parameter `c`, which does
//! not exist until it is first requested.

use crate::history::{Call, Freshness, Op, Outcome, Requested, Seen};
use crate::linearizability::{Model, Operation};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Instance {
    pub exists: bool,
    pub v: Option<u64>,
    pub state: Option<Requested>,
    pub c: Option<u64>,
}

pub struct InstanceModel;

impl Model for InstanceModel {
    type State = Instance;
    type Input = Call;
    /// For reads, what was seen (`None`: not found); writes have no output to check.
    type Output = Option<Seen>;

    fn init(&self) -> Instance {
        Instance::default()
    }

    fn step(
        &self,
        state: &Instance,
        input: &Call,
        output: Option<&Option<Seen>>,
    ) -> Option<Instance> {
        match input {
            Call::Request {
                v,
                state: requested,
            } => Some(Instance {
                exists: true,
                v: Some(*v),
                state: Some(*requested),
                c: state.c,
            }),
            // The workload publishes only on an instance it saw placed.
            Call::Publish { c, .. } => state.exists.then(|| Instance {
                c: Some(*c),
                ..state.clone()
            }),
            // Refused: changes nothing (the checker reports one that succeeded).
            Call::Intrude { .. } => Some(state.clone()),
            Call::Read { .. } => {
                let matches = match output {
                    None => true,
                    Some(None) => !state.exists,
                    Some(Some(seen)) => {
                        state.exists
                            && seen.v == state.v
                            && seen.state == state.state
                            && seen.c == state.c
                    }
                };
                matches.then(|| state.clone())
            }
        }
    }
}

/// The operations of one key the linearizability check considers: acknowledged operations,
/// and writes whose outcome is unknown. Stale reads are not linearizable by contract,
/// definite failures did nothing, and intrusions are checked apart (`checks.rs`).
/// Each comes with its position in `ops`.
pub fn operations(ops: &[&Op]) -> Vec<(usize, Operation<Call, Option<Seen>>)> {
    ops.iter()
        .enumerate()
        .filter_map(|(position, op)| {
            let stale = matches!(
                op.call,
                Call::Read {
                    freshness: Freshness::Stale
                }
            );
            if matches!(op.call, Call::Intrude { .. }) {
                return None;
            }
            let completed = match &op.outcome {
                Outcome::Ok(seen) if !stale => Some((op.completed_us, seen.clone())),
                Outcome::Unknown(_) if !matches!(op.call, Call::Read { .. }) => None,
                _ => return None,
            };
            Some((
                position,
                Operation {
                    invoked: op.invoked_us,
                    completed,
                    input: op.call.clone(),
                },
            ))
        })
        .collect()
}
