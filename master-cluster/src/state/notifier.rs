//! [`Notifier`]: wakes the readers waiting on a computer (long-polls) once a change to that
//! computer's view is committed.
//!
//! Apply stages the computers each batch touched; raft-store calls
//! [`raft_store::Application::committed`] after the batch's transaction committed, and only then
//! are their waiters woken — a woken reader opens a new read transaction and sees the change.
//! A snapshot install may change any computer: it wakes every waiter. Only computers someone
//! waits on cost anything: a change to another computer is one set insertion. Changes to the
//! revocation list bump [`Notifier::revocations`], which each replica watches to reload the
//! revoked serials it refuses.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::apply::Changes;
use super::model::ComputerId;

#[derive(Debug)]
pub struct Notifier {
    /// Changed by the batches being applied; woken when they commit.
    staged: Mutex<Changes>,
    waiters: Mutex<HashMap<ComputerId, watch::Sender<()>>>,
    /// Counts committed changes to the revocation list (and snapshot installs).
    revocations: watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            staged: Default::default(),
            waiters: Default::default(),
            revocations: watch::channel(0).0,
        }
    }
}

impl Notifier {
    /// A receiver that changes after each committed change to `computer`'s view. Subscribe
    /// before reading the state, so that a change committed in between is not missed.
    pub fn subscribe(&self, computer: &ComputerId) -> watch::Receiver<()> {
        let mut waiters = lock(&self.waiters);
        match waiters.get(computer) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(());
                waiters.insert(computer.clone(), sender);
                receiver
            }
        }
    }

    /// A receiver that changes after each committed change to the revocation list. Subscribe
    /// before reading the list, so that a revocation committed in between is not missed.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    pub(super) fn stage(&self, changes: Changes) {
        lock(&self.staged).merge(changes);
    }

    pub(super) fn committed(&self, installed: bool) {
        let changes = std::mem::take(&mut *lock(&self.staged));
        if installed || changes.revocations {
            self.revocations.send_modify(|count| *count += 1);
        }
        let mut waiters = lock(&self.waiters);
        if installed {
            waiters.retain(|_, sender| wake(sender));
            return;
        }
        for computer in changes.computers {
            if let Some(sender) = waiters.get(&computer)
                && !wake(sender)
            {
                waiters.remove(&computer);
            }
        }
    }
}

/// Wakes the receivers of `sender`; returns whether any is left to wake.
fn wake(sender: &watch::Sender<()>) -> bool {
    sender.send_replace(());
    sender.receiver_count() > 0
}

use crate::lock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waiters_of_a_committed_change_wake() {
        let notifier = Notifier::default();
        let one = ComputerId::from("COMP-1");
        let two = ComputerId::from("COMP-2");
        let mut waiting_one = notifier.subscribe(&one);
        let waiting_two = notifier.subscribe(&two);

        notifier.stage(Changes {
            computers: [one.clone()].into(),
            revocations: false,
        });
        assert!(
            !waiting_one.has_changed().expect("open"),
            "nothing before the commit"
        );
        notifier.committed(false);
        assert!(waiting_one.has_changed().expect("open"));
        assert!(!waiting_two.has_changed().expect("open"));
        waiting_one.mark_unchanged();

        notifier.committed(true);
        assert!(
            waiting_one.has_changed().expect("open") && waiting_two.has_changed().expect("open")
        );

        drop(waiting_two);
        notifier.stage(Changes {
            computers: [two.clone()].into(),
            revocations: false,
        });
        notifier.committed(false);
        assert!(
            !lock(&notifier.waiters).contains_key(&two),
            "unwatched computers are forgotten"
        );
    }
}
