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

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError, Vote};

use crate::TypeConfig;
use crate::error::{StoreError, fatal};
use crate::wal::Wal;

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

    pub async fn vote(&self) -> Result<Option<Vote<u64>>, StoreError> {
        Ok(self.wal.meta().vote)
    }

    pub async fn committed(&self) -> Result<Option<LogId<u64>>, StoreError> {
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
    pub async fn purge_upto(&self, upto: LogId<u64>) -> Result<(), StoreError> {
        self.wal.purge_upto(upto).await
    }

    pub async fn save_vote_durably(&self, vote: Vote<u64>) -> Result<(), StoreError> {
        self.wal.save_vote(vote).await
    }

    pub async fn save_committed_lazily(&self, committed: LogId<u64>) -> Result<(), StoreError> {
        self.wal.save_committed(committed)
    }
}

impl<C: TypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let owned = (range.start_bound().cloned(), range.end_bound().cloned());
        self.entries(owned)
            .await
            .map_err(fatal(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl<C: TypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        self.log_state()
            .await
            .map_err(fatal(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.save_vote_durably(*vote)
            .await
            .map_err(fatal(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.vote()
            .await
            .map_err(fatal(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // openraft never moves `committed` back to None; nothing to record in that case.
        let Some(committed) = committed else {
            return Ok(());
        };
        self.save_committed_lazily(committed)
            .await
            .map_err(fatal(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        self.committed()
            .await
            .map_err(fatal(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
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
        self.wal
            .append(
                entries,
                Box::new(move |result| {
                    if result.is_ok()
                        && let Some(observer) = observer
                    {
                        observer.log_appended(count, started.elapsed());
                    }
                    callback.log_io_completed(result);
                }),
            )
            .map_err(|e| e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.truncate_since(log_id.index)
            .await
            .map_err(fatal(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.purge_upto(log_id)
            .await
            .map_err(fatal(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
