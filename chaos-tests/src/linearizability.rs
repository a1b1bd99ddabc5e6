//! A linearizability checker: the Wing & Gong search with Lowe's memoisation, as porcupine and
//! Knossos do it. Given a history of one key's operations (each with its invocation time and,
//! when known, its completion time and output) and a sequential [`Model`], it looks for an
//! order of the operations that respects real time (an operation that completed before another
//! was invoked comes first) and in which every output is what the model says.
//!
//! An operation whose outcome is unknown (a timeout: it may or may not have taken effect) has
//! no completion: it may be placed anywhere after its invocation, including after everything
//! else, which is the same as not having happened.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;

    fn init(&self) -> Self::State;
    /// The state after `input`, if `output` (`None` when unknown) is possible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    pub invoked: u64,
    /// `None`: the outcome is unknown.
    pub completed: Option<(u64, O)>,
    pub input: I,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order works. `longest` is the largest set of operations (by index) that could be
    /// ordered before the search failed: the operations around the violation.
    Violation {
        longest: Vec<usize>,
    },
    /// The search exceeded its step budget; nothing is known.
    Unknown,
}

/// An entry of the time-ordered list: an operation's call or its return.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

const HEAD: usize = 0;

/// Checks `history` against `model`, giving up after `budget` search steps.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Verdict {
    if history.is_empty() {
        return Verdict::Linearizable;
    }
    // Events by time; calls before returns at the same instant (the weaker constraint).
    // Unknown outcomes return after everything.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, op) in history.iter().enumerate() {
        events.push((op.invoked, false, i));
        let returned = op.completed.as_ref().map_or(u64::MAX, |(t, _)| *t);
        events.push((returned, true, i));
    }
    events.sort_by_key(|&(time, is_return, op)| (time, is_return, op));

    // A doubly linked list with a sentinel head at 0; entries from 1.
    let mut list: Vec<Entry> = Vec::with_capacity(events.len() + 1);
    list.push(Entry {
        op: usize::MAX,
        is_call: false,
        prev: HEAD,
        next: HEAD,
    });
    let mut return_entry = vec![0; history.len()];
    for (n, &(_, is_return, op)) in events.iter().enumerate() {
        let index = n + 1;
        list.push(Entry {
            op,
            is_call: !is_return,
            prev: index - 1,
            next: if n + 1 < events.len() {
                index + 1
            } else {
                HEAD
            },
        });
        if is_return {
            return_entry[op] = index;
        }
    }
    list[HEAD].next = 1;
    list[HEAD].prev = events.len();

    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut longest: Vec<usize> = Vec::new();
    let mut entry = list[HEAD].next;
    let mut steps = 0u64;

    while list[HEAD].next != HEAD {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let current = list[entry];
        if current.is_call {
            let op = &history[current.op];
            let output = op.completed.as_ref().map(|(_, out)| out);
            let mut stepped = None;
            if let Some(next_state) = model.step(&state, &op.input, output) {
                let mut bits = linearized.clone();
                bits[current.op / 64] |= 1 << (current.op % 64);
                if cache.insert((bits.clone(), next_state.clone())) {
                    stepped = Some((bits, next_state));
                }
            }
            if let Some((bits, next_state)) = stepped {
                stack.push((entry, state));
                state = next_state;
                linearized = bits;
                lift(&mut list, entry, return_entry[current.op]);
                entry = list[HEAD].next;
            } else {
                entry = current.next;
            }
        } else {
            // A return reached with its call not linearized: undo the last choice.
            if stack.len() > longest.len() {
                longest = stack.iter().map(|&(e, _)| list[e].op).collect();
            }
            let Some((undo, previous)) = stack.pop() else {
                longest.sort_unstable();
                return Verdict::Violation { longest };
            };
            let op = list[undo].op;
            state = previous;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut list, undo, return_entry[op]);
            entry = list[undo].next;
        }
    }
    Verdict::Linearizable
}

/// Takes an operation's call and return entries out of the list.
fn lift(list: &mut [Entry], call: usize, ret: usize) {
    for at in [call, ret] {
        let Entry { prev, next, .. } = list[at];
        list[prev].next = next;
        list[next].prev = prev;
    }
}

/// Puts them back, in the reverse order (each entry still knows its neighbours).
fn unlift(list: &mut [Entry], call: usize, ret: usize) {
    for at in [ret, call] {
        let Entry { prev, next, .. } = list[at];
        list[prev].next = at;
        list[next].prev = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of integers: `Some(v)` writes v, `None` reads.
    struct Register;

    impl Model for Register {
        type State = u64;
        type Input = Option<u64>;
        type Output = u64;

        fn init(&self) -> u64 {
            0
        }

        fn step(&self, state: &u64, input: &Option<u64>, output: Option<&u64>) -> Option<u64> {
            match input {
                Some(v) => Some(*v),
                None => match output {
                    Some(seen) if seen != state => None,
                    _ => Some(*state),
                },
            }
        }
    }

    fn write(invoked: u64, completed: Option<u64>, v: u64) -> Operation<Option<u64>, u64> {
        Operation {
            invoked,
            completed: completed.map(|t| (t, 0)),
            input: Some(v),
        }
    }

    fn read(invoked: u64, completed: u64, seen: u64) -> Operation<Option<u64>, u64> {
        Operation {
            invoked,
            completed: Some((completed, seen)),
            input: None,
        }
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // w1 and w2 overlap; a read after both may see either, but two reads after both
        // must agree with one order.
        let history = [
            write(0, Some(10), 1),
            write(5, Some(15), 2),
            read(20, 25, 1),
        ];
        assert_eq!(check(&Register, &history, 1_000_000), Verdict::Linearizable);
        let history = [
            write(0, Some(10), 1),
            write(5, Some(15), 2),
            read(20, 25, 1),
            read(30, 35, 2),
        ];
        assert!(matches!(
            check(&Register, &history, 1_000_000),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let history = [write(0, Some(10), 1), read(20, 25, 0)];
        let verdict = check(&Register, &history, 1_000_000);
        assert!(matches!(verdict, Verdict::Violation { .. }), "{verdict:?}");
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        // The write timed out: a read may see it or not, but not see it after having seen it.
        assert_eq!(
            check(&Register, &[write(0, None, 7), read(20, 25, 0)], 1_000_000),
            Verdict::Linearizable
        );
        assert_eq!(
            check(&Register, &[write(0, None, 7), read(20, 25, 7)], 1_000_000),
            Verdict::Linearizable
        );
        let flip = [write(0, None, 7), read(20, 25, 7), read(30, 35, 0)];
        assert!(matches!(
            check(&Register, &flip, 1_000_000),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn many_concurrent_writers_finish_within_the_budget() {
        // 8 overlapping writes, then a read of the last value written by any of them.
        let mut history: Vec<_> = (0..8).map(|i| write(i, Some(100 + i), i + 1)).collect();
        history.push(read(200, 210, 5));
        assert_eq!(check(&Register, &history, 1_000_000), Verdict::Linearizable);
        assert_eq!(check(&Register, &history, 3), Verdict::Unknown);
    }
}
