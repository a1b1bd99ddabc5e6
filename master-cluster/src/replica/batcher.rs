//! Coalescing writes into log entries at the leader.
//!
//! openraft appends and fsyncs every `client_write` on its own, which caps a leader at a few
//! thousand writes a second whatever the concurrency. The batcher takes the first waiting
//! write, then whatever else is already queued (up to a count and an approximate size), and
//! hands them to openraft as one [`CommandBatch`]. Up to [`IN_FLIGHT`] batches are in Raft at
//! once, handed over in the order they were gathered (so their log order is gathering order):
//! the next batch is appended while the one before it replicates and applies. Every caller
//! still gets its own answer, and the log index of the entry that carried its command.
//!
//! A batch waits for its commit at most the write timeout: openraft answers an appended entry
//! only once it is applied here or truncated by a new leader, and a leader that lost its place
//! (removed from the membership, it hears from no new leader) would otherwise hold its slot,
//! and every write after it, for ever.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;

use super::{Attempt, CoreError, Written};
use crate::state::{Command, CommandBatch};

/// Writes waiting for the batcher beyond this make callers wait (backpressure).
const QUEUE: usize = 4096;

/// Approximate bytes a batch may carry: far below the 64 MiB a replica accepts per message.
const MAX_BATCH_WEIGHT: usize = 8 << 20;

/// Batches handed to Raft and not yet answered, at most. Two measured no better than one,
/// under openraft 0.9 and again under 0.10 (three interleaved `slapload` runs each, 1-256
/// clients: within the run-to-run spread at 1, 64 and 256 clients, 10 % fewer at 16): one
/// batch gathers while the other commits, and on two cores the placements are CPU-bound.
pub(super) const IN_FLIGHT: usize = 1;

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
    pub fn start(raft: super::MasterRaft, max_commands: usize, commit_timeout: Duration) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, receiver, max_commands.max(1), commit_timeout));
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

async fn run(
    raft: super::MasterRaft,
    mut queue: mpsc::Receiver<Pending>,
    max_commands: usize,
    commit_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // A slot first, then gather: a batch takes everything that queued while it waited.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
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
