//! [`LogStore`]: openraft's log, vote and committed log id, kept in the write-ahead log
//! (`wal/`).
//!
//! What openraft is promised:
//! - An append is readable as soon as `append` returns and reported flushed only once its frame
//!   is durable (one `fdatasync`, shared with whatever else was queued).
//! - The vote, a truncation and a purge are durable before their call returns.
//! - The committed log id is durable with the next durable write: it is an optimisation (apply
//!   can resume further on restart) and losing it loses nothing. It never passes the log: it is
//!   written after the entry it names, and a truncation at or below it is refused.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use std::io;

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::error::StoreError;
use crate::wal::Wal;
use crate::{Entry, LogId, TypeConfig, Vote};

/// The Raft log of one replica. Cheap to clone: clones share the open log, which is how the
/// log reader handed to replication tasks is made.
pub struct LogStore<C: TypeConfig> {
    wal: Arc<Wal<C>>,
    observer: Option<Arc<dyn crate::Observer>>,
}

impl<C: TypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            wal: Arc::clone(&self.wal),
            observer: self.observer.clone(),
        }
    }
}

impl<C: TypeConfig> LogStore<C> {
    pub(crate) fn new(wal: Wal<C>, observer: Option<Arc<dyn crate::Observer>>) -> Self {
        Self {
            wal: Arc::new(wal),
            observer,
        }
    }

    /// Whether every handle on this store is gone and its files are closed (so that the log
    /// may be opened again, in this process too). Holds no handle itself.
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        self.wal.closed_probe()
    }

    /// Entries with index in `range`, in order. Missing entries are skipped, as openraft allows.
    pub async fn entries(
        &self,
        range: impl RangeBounds<u64> + Send + 'static,
    ) -> Result<Vec<Entry<C>>, StoreError> {
        let owned = (range.start_bound().cloned(), range.end_bound().cloned());
        self.wal.entries(owned).await
    }

    /// The last purged log id and the last log id (which is the last purged one when the log
    /// holds no entry).
    pub async fn log_state(&self) -> Result<LogState<C>, StoreError> {
        let meta = self.wal.meta();
        Ok(LogState {
            last_purged_log_id: meta.purged,
            last_log_id: meta.last,
        })
    }

    /// The encoded bytes of the entries the log holds: what a snapshot lets it purge. Against
    /// a snapshot's size, it tells when another is worth building.
    pub fn bytes(&self) -> u64 {
        self.wal.bytes()
    }

    pub async fn vote(&self) -> Result<Option<Vote>, StoreError> {
        Ok(self.wal.meta().vote)
    }

    pub async fn committed(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.wal.meta().committed)
    }

    /// Appends `entries` and returns once they are durable.
    pub async fn append_durably(&self, entries: Vec<Entry<C>>) -> Result<(), StoreError> {
        self.wal.append_durably(entries).await
    }

    /// Deletes entries with index `>= since`, durably. Refused if that would remove a
    /// committed entry: Raft never takes back what it committed.
    pub async fn truncate_since(&self, since: u64) -> Result<(), StoreError> {
        self.wal.truncate_since(since).await
    }

    /// Deletes entries up to and including `upto`, and records it as the last purged log id.
    pub async fn purge_upto(&self, upto: LogId) -> Result<(), StoreError> {
        self.wal.purge_upto(upto).await
    }

    pub async fn save_vote_durably(&self, vote: Vote) -> Result<(), StoreError> {
        self.wal.save_vote(vote).await
    }

    pub async fn save_committed_lazily(&self, committed: LogId) -> Result<(), StoreError> {
        self.wal.save_committed(committed)
    }
}

impl<C: TypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, io::Error> {
        let owned = (range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self.entries(owned).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.vote().await?)
    }
}

impl<C: TypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        Ok(self.log_state().await?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        Ok(self.save_vote_durably(*vote).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // openraft never moves `committed` back to None; nothing to record in that case.
        let Some(committed) = committed else {
            return Ok(());
        };
        Ok(self.save_committed_lazily(committed).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.committed().await?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        let count = entries.len();
        let started = std::time::Instant::now();
        let observer = self.observer.clone();
        // Returns once the entries are readable; the callback fires once they are durable
        // (or with the writer's error, so that nothing waits for a flush that never comes).
        // openraft 0.10 replicates what was submitted before this flush completes: the
        // leader's fsync overlaps the followers' appends.
        Ok(self.wal.append(
            entries,
            Box::new(move |result| {
                if result.is_ok()
                    && let Some(observer) = observer
                {
                    observer.log_appended(count, started.elapsed());
                }
                callback.io_completed(result);
            }),
        )?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let since = last_log_id.map_or(0, |kept| kept.index + 1);
        Ok(self.truncate_since(since).await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        Ok(self.purge_upto(log_id).await?)
    }
}
