//! The poll loop: keeps the computer's view fresh (a long-poll, or periodic polls while a
//! replica shows it cannot long-poll) and hands each software release and partition to its
//! worker through a `watch` channel holding the newest state.

use super::*;

impl Agent {
    /// Keeps the view fresh and the workers fed. Never returns.
    pub(super) async fn poll_loop(self: Arc<Self>) {
        let mut long_poll = LongPoll::new(self.config.long_poll);
        let mut version: Option<u64> = None;
        let mut failures = 0u32;
        let mut workers = Workers::default();
        // The member list last written to the state directory.
        let mut saved: Vec<String> = Vec::new();
        loop {
            let long = long_poll.active(Instant::now());
            let (after, wait) = match version {
                Some(v) if long => (Some(v), self.config.poll_interval),
                _ => (None, Duration::ZERO),
            };
            let started = Instant::now();
            match self.master.poll(after, wait).await {
                Ok(reply) => {
                    failures = 0;
                    let elapsed = started.elapsed();
                    tracing::debug!(version = reply.version, ?elapsed, "polled");
                    if let Some(after) = after
                        && long_poll.answered(after, reply.version, elapsed, wait, Instant::now())
                    {
                        tracing::warn!(
                            "the replica answers long-polls at once; polling every {:?} for a while",
                            self.config.poll_interval
                        );
                    }
                    version = Some(reply.version);
                    if reply.replicas.iter().map(|m| &m.url).ne(saved.iter()) {
                        saved = reply.replicas.iter().map(|m| m.url.clone()).collect();
                        self.save_replicas(&saved).await;
                    }
                    workers.dispatch(&self, &reply);
                    self.view.send_replace(Some(reply));
                    if !long {
                        tokio::time::sleep(self.config.poll_interval).await;
                    }
                }
                Err(CallError::Rejected { status, .. })
                    if long
                        && matches!(status.code(), Code::Unimplemented | Code::InvalidArgument) =>
                {
                    tracing::warn!(
                        "long-poll unavailable ({}); polling every {:?} for a while",
                        status.message(),
                        self.config.poll_interval
                    );
                    long_poll.refused(Instant::now());
                }
                Err(CallError::Rejected { status, .. }) if status.code() == Code::NotFound => {
                    tracing::warn!("the master does not know this computer; registering again");
                    if let Err(e) = self.capacity().await {
                        tracing::error!("{e}");
                        tokio::time::sleep(jitter(Duration::from_secs(30))).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay =
                        jitter(partition::retry_delay(failures).min(Duration::from_secs(30)));
                    tracing::warn!("poll failed, again in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// One watch channel per software release and per partition; a worker ends when its sender
/// goes (the master stopped listing it).
#[derive(Default)]
struct Workers {
    software: HashMap<String, watch::Sender<Fresh<pb::Software>>>,
    partitions: HashMap<String, watch::Sender<Fresh<pb::ComputerPartition>>>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// A worker wakes when its item changed; the applied index is updated silently (a worker
    /// holding back a stale view waits for the agent's next poll instead).
    fn dispatch(&mut self, agent: &Arc<Agent>, reply: &pb::PollComputerReply) {
        let applied = reply.applied_index;
        let urls: BTreeSet<&str> = reply.software.iter().map(|s| s.url.as_str()).collect();
        self.software.retain(|url, _| urls.contains(url.as_str()));
        for software in &reply.software {
            match self.software.get(&software.url) {
                Some(sender) => {
                    sender.send_if_modified(|old| old.update(applied, software));
                }
                None => {
                    let (sender, receiver) = watch::channel(Fresh::new(applied, software));
                    self.tasks.spawn(agent.clone().software_worker(receiver));
                    self.software.insert(software.url.clone(), sender);
                }
            }
        }
        let references: BTreeSet<&str> = reply
            .partitions
            .iter()
            .map(|p| p.reference.as_str())
            .collect();
        self.partitions
            .retain(|r, _| references.contains(r.as_str()));
        for view in &reply.partitions {
            match self.partitions.get(&view.reference) {
                Some(sender) => {
                    sender.send_if_modified(|old| old.update(applied, view));
                }
                None => {
                    let (sender, receiver) = watch::channel(Fresh::new(applied, view));
                    self.tasks.spawn(agent.clone().partition_worker(receiver));
                    self.partitions.insert(view.reference.clone(), sender);
                }
            }
        }
        // Reap finished workers so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }
}

/// After a replica showed it cannot long-poll, periodic polls for this long, then long-poll
/// again (the cluster may have been upgraded meanwhile).
const LONG_POLL_PAUSE: Duration = Duration::from_secs(600);

/// Immediate answers with an unchanged view before the agent concludes long-poll is ignored.
const LONG_POLL_STRIKES: u32 = 3;

/// Whether the agent long-polls: as configured, except for a pause after a replica refused
/// long-polls or answered them at once with nothing new (a replica that ignores `after` would
/// otherwise have the agent poll in a tight loop).
#[derive(Debug)]
struct LongPoll {
    configured: bool,
    paused_until: Option<Instant>,
    strikes: u32,
}

impl LongPoll {
    fn new(configured: bool) -> Self {
        Self {
            configured,
            paused_until: None,
            strikes: 0,
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.configured && self.paused_until.is_none_or(|until| now >= until)
    }

    fn refused(&mut self, now: Instant) {
        self.paused_until = Some(now + LONG_POLL_PAUSE);
        self.strikes = 0;
    }

    /// Takes a long-poll's answer; true when it paused long-polling.
    fn answered(
        &mut self,
        after: u64,
        version: u64,
        elapsed: Duration,
        wait: Duration,
        now: Instant,
    ) -> bool {
        // The master answers before the wait only when the view changed.
        let ignored = version <= after && elapsed < wait / 2;
        if !ignored {
            self.strikes = 0;
            return false;
        }
        self.strikes += 1;
        if self.strikes < LONG_POLL_STRIKES {
            return false;
        }
        self.refused(now);
        true
    }
}

/// An item of a poll reply with the index the replica had applied when it answered.
pub(super) struct Fresh<T> {
    applied: u64,
    item: T,
}

impl<T: Clone> Fresh<T> {
    pub(super) fn new(applied: u64, item: &T) -> Self {
        Self {
            applied,
            item: item.clone(),
        }
    }

    pub(super) fn parts(&self) -> (u64, T) {
        (self.applied, self.item.clone())
    }

    /// Takes a newer poll's item; whether the item itself changed.
    fn update(&mut self, applied: u64, item: &T) -> bool
    where
        T: PartialEq,
    {
        self.applied = applied;
        if self.item == *item {
            return false;
        }
        self.item = item.clone();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn long_poll_pauses_when_a_replica_ignores_it_and_comes_back() {
        let now = Instant::now();
        let wait = Duration::from_secs(60);
        let mut long_poll = LongPoll::new(true);
        // A change answered early, and a wait that ran out: both honour long-poll.
        assert!(!long_poll.answered(5, 6, Duration::from_millis(3), wait, now));
        assert!(!long_poll.answered(6, 6, wait, wait, now));
        // Unchanged views at once, three times in a row: long-poll is being ignored.
        for strike in 1..=LONG_POLL_STRIKES {
            let paused = long_poll.answered(6, 6, Duration::from_millis(2), wait, now);
            assert_eq!(paused, strike == LONG_POLL_STRIKES);
        }
        assert!(!long_poll.active(now));
        assert!(long_poll.active(now + LONG_POLL_PAUSE));
        assert!(
            !LongPoll::new(false).active(now),
            "configured off stays off"
        );
    }
}
