//! Coalescing writes into log entries at the leader.
//!
//! openraft appends and fsyncs every `client_write` on its own, which caps a leader at a few
//! thousand writes a second whatever the concurrency. The batcher takes the first waiting
//! write, then whatever else is already queued (up to a count and an approximate size), and
//! hands them to openraft as one [`CommandBatch`]. Several batches may be in Raft at once
//! ([`Slots`] says when), handed over in the order they were gathered (so their log order is
//! gathering order): the next batch is appended while the ones before it replicate and apply. Every caller
//! still gets its own answer, and the log index of the entry that carried its command.
//!
//! A batch waits for its commit at most the write timeout: openraft answers an appended entry
//! only once it is applied here or truncated by a new leader, and a leader that lost its place
//! (removed from the membership, it hears from no new leader) would otherwise hold its slot,
//! and every write after it, for ever.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;

use super::{Attempt, CoreError, Written};
use crate::state::{Command, CommandBatch};

/// Writes waiting for the batcher beyond this make callers wait (backpressure).
const QUEUE: usize = 4096;

/// Approximate bytes a batch may carry: far below the 64 MiB a replica accepts per message.
const MAX_BATCH_WEIGHT: usize = 8 << 20;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Attempt<Written>>,
}

/// A handle to the batcher task; cheap to clone.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batcher task for `raft`; it ends when every handle is dropped. A batch not
    /// committed within `commit_timeout` is answered [`Attempt::TimedOut`].
    pub fn start(
        raft: super::MasterRaft,
        max_commands: usize,
        slots: Slots,
        commit_timeout: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            raft,
            receiver,
            max_commands.max(1),
            slots,
            commit_timeout,
        ));
        Self { queue }
    }

    /// Commits `command` in the next batch, if this replica leads.
    pub async fn submit(&self, command: Command) -> Attempt<Written> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { command, reply }).await.is_err() {
            return Attempt::Stopped(CoreError::BatcherStopped);
        }
        answer
            .await
            .unwrap_or(Attempt::Stopped(CoreError::BatcherStopped))
    }
}

/// Batches handed to Raft and not yet answered. A new batch waits for every one before it to
/// be answered, at most `wait` (for ever when `None`), then for a free slot of `most`:
/// - on one machine or a LAN a batch commits within a few milliseconds, so the next one waits
///   for it and carries everything that queued meanwhile: fewer, larger entries (up to eight
///   batches in flight cost 19 % of placements/s at 16 clients and 7-9 % at 64 and 256 on
///   loopback, where the work is CPU-bound; a 5 ms wait was no better, within the spread);
/// - across regions a batch takes a round trip to a majority (80-150 ms); without a second
///   one a writer arriving meanwhile would wait that whole round trip before its own write
///   left, doubling its time, and throughput would be capped at one batch per round trip.
pub(super) struct Slots {
    semaphore: Arc<Semaphore>,
    most: u32,
    wait: Option<Duration>,
}

impl Slots {
    /// At most `most` batches in flight (1 to 1,024).
    pub fn new(most: usize, wait: Option<Duration>) -> Self {
        let most = most.clamp(1, 1024);
        Self {
            semaphore: Arc::new(Semaphore::new(most)),
            most: u32::try_from(most).unwrap_or(1),
            wait,
        }
    }

    /// A slot for the next batch (see [`Slots`]); `None` once closed.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        let every = Arc::clone(&self.semaphore).acquire_many_owned(self.most);
        let Some(wait) = self.wait else {
            return every.await.ok()?.split(1);
        };
        match tokio::time::timeout(wait, every).await {
            Ok(Ok(mut every)) => every.split(1),
            Ok(Err(_closed)) => None,
            Err(_waited) => Arc::clone(&self.semaphore).acquire_owned().await.ok(),
        }
    }
}

async fn run(
    raft: super::MasterRaft,
    mut queue: mpsc::Receiver<Pending>,
    max_commands: usize,
    slots: Slots,
    commit_timeout: Duration,
) {
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        // A slot, then gather: a batch takes everything that queued while it waited.
        let Some(slot) = slots.take().await else {
            return;
        };
        let mut weight = first.command.op.weight();
        let mut batch = vec![first];
        while batch.len() < max_commands && weight < MAX_BATCH_WEIGHT {
            match queue.try_recv() {
                Ok(next) => {
                    weight += next.command.op.weight();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let count = commands.len();
        // Handed over here, in order; answered by a task of its own.
        let (responder, answer) = ProgressResponder::complete_only();
        let handed = tokio::time::timeout(
            commit_timeout,
            raft.client_write_ff(CommandBatch(commands), Some(responder)),
        );
        match handed.await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => {
                answer_all(replies, || Attempt::Stopped(fatal.clone().into()));
                continue;
            }
            Err(_) => {
                answer_all(replies, || Attempt::TimedOut(commit_timeout));
                continue;
            }
        }
        tokio::spawn(async move {
            let answered = tokio::time::timeout(commit_timeout, answer).await;
            drop(slot);
            let written = match answered {
                Ok(Ok(written)) => written,
                Ok(Err(_)) => {
                    return answer_all(replies, || Attempt::Stopped(CoreError::Unanswered));
                }
                Err(_) => {
                    // The entry may still commit; its callers are told the outcome is unknown.
                    tracing::warn!(count, "a batch was not committed within {commit_timeout:?}");
                    return answer_all(replies, || Attempt::TimedOut(commit_timeout));
                }
            };
            let answers: Vec<Attempt<Written>> = match written {
                Ok(written) if written.data.len() == count => {
                    let index = written.log_id.index;
                    written
                        .data
                        .into_iter()
                        .map(|response| Attempt::Done(Written { response, index }))
                        .collect()
                }
                Ok(written) => {
                    let mismatch = CoreError::Mismatch {
                        answered: written.data.len(),
                        commands: count,
                    };
                    (0..count)
                        .map(|_| Attempt::Stopped(mismatch.clone()))
                        .collect()
                }
                Err(ClientWriteError::ForwardToLeader(to)) => {
                    let leader = to.leader_id.zip(to.leader_node.map(|n| n.addr));
                    (0..count)
                        .map(|_| Attempt::Redirect(leader.clone()))
                        .collect()
                }
                Err(refused) => {
                    let refused = CoreError::from(refused);
                    (0..count)
                        .map(|_| Attempt::Stopped(refused.clone()))
                        .collect()
                }
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A caller that gave up no longer listens; its command is committed all the same.
                let _ = reply.send(answer);
            }
        });
    }
}

fn answer_all(
    replies: Vec<oneshot::Sender<Attempt<Written>>>,
    answer: impl Fn() -> Attempt<Written>,
) {
    for reply in replies {
        let _ = reply.send(answer());
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    /// A batch waits for the one before it, at most the wait; then goes beside it, up to the
    /// most in flight. (Tokio's clock is paused: the waits are exact, not slept.)
    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_the_one_before_at_most_the_wait_then_goes_beside_it() {
        let wait = Duration::from_millis(5);
        let slots = Slots::new(2, Some(wait));
        let start = tokio::time::Instant::now();
        let first = slots.take().await.expect("a slot");
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "nothing in flight: at once"
        );

        let second = slots.take().await.expect("a second slot");
        assert_eq!(
            start.elapsed(),
            wait,
            "the first still in flight: after the wait"
        );

        // Both in flight: the third waits for one to be answered, however long.
        let third = tokio::spawn(async move { slots.take().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!third.is_finished(), "two in flight is the most");
        drop(first);
        third
            .await
            .expect("joined")
            .expect("a slot once the first was answered");
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_answered_within_the_wait_lets_the_next_go_at_once() {
        let slots = Slots::new(8, Some(Duration::from_millis(5)));
        let first = slots.take().await.expect("a slot");
        let start = tokio::time::Instant::now();
        let answered = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(first);
        });
        let _second = slots.take().await.expect("a slot");
        assert_eq!(start.elapsed(), Duration::from_millis(2));
        answered.await.expect("joined");
    }
}
