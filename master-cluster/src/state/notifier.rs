//! [`Notifier`]: wakes the readers waiting on a computer (long-polls) once a change to that
//! computer's view is committed.
//!
//! Apply stages the computers each batch touched; raft-store calls
//! [`raft_store::Application::committed`] after the batch's transaction committed, and only then
//! are their waiters woken — a woken reader opens a new read transaction and sees the change.
//! A snapshot install may change any computer: it wakes every waiter. Only computers someone
//! waits on cost anything: a change to another computer is one set insertion.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;

use super::model::ComputerId;

#[derive(Debug, Default)]
pub struct Notifier {
    /// Touched by the batch being applied; woken when it commits.
    staged: Mutex<BTreeSet<ComputerId>>,
    waiters: Mutex<HashMap<ComputerId, watch::Sender<()>>>,
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

    pub(super) fn stage(&self, touched: BTreeSet<ComputerId>) {
        lock(&self.staged).extend(touched);
    }

    pub(super) fn committed(&self, installed: bool) {
        let touched = std::mem::take(&mut *lock(&self.staged));
        let mut waiters = lock(&self.waiters);
        if installed {
            waiters.retain(|_, sender| wake(sender));
            return;
        }
        for computer in touched {
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

/// The data behind these locks stays consistent whatever a panicking holder did (a set and a
/// map of senders), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

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

        notifier.stage([one.clone()].into());
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
        notifier.stage([two.clone()].into());
        notifier.committed(false);
        assert!(
            !lock(&notifier.waiters).contains_key(&two),
            "unwatched computers are forgotten"
        );
    }
}
