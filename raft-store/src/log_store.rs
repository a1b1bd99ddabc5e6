//! [`LogStore`]: openraft's log, vote and committed index in `log.redb`.
//!
//! Invariants kept on disk:
//! - Entries are stored under their index; openraft keeps them consecutive (it truncates
//!   before overwriting). The store does not re-check that on every append: openraft's own
//!   conformance suite writes holes on purpose.
//! - `last_purged` and the deletion of the entries it covers are one transaction.
//! - An append is reported flushed to openraft only after its durable (two-phase, fsynced)
//!   commit returned; the vote is saved the same way before `save_vote` returns.
//! - `committed` is written without fsync: it is an optimisation (apply can resume further on
//!   restart) and becomes durable with the next append; losing it loses nothing. It never
//!   passes the log: it names an entry already durable when it is written, and a truncation
//!   at or below it is refused (Raft never truncates committed entries).
//!
//! All redb work runs on tokio's blocking pool: commits wait on fsync, which must not stall a
//! runtime worker that drives network IO.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError, Vote};
use redb::{ReadableTable, TableDefinition};

use crate::codec;
use crate::db::StoreFile;
use crate::error::{StoreError, fatal};
use crate::{TypeConfig, blocking};

const LOG: TableDefinition<[u8; 8], &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The Raft log of one replica. Cheap to clone: clones share the open file, which is how the
/// log reader handed to replication tasks is made.
pub struct LogStore<C> {
    file: Arc<StoreFile>,
    observer: Option<Arc<dyn crate::Observer>>,
    _config: PhantomData<fn() -> C>,
}

impl<C> LogStore<C> {
    /// Whether every handle on this store is gone, so that its file is closed (and may be
    /// opened again, in this process too). Holds no handle itself.
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let file = Arc::downgrade(&self.file);
        move || file.strong_count() == 0
    }
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            file: Arc::clone(&self.file),
            observer: self.observer.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: TypeConfig> LogStore<C> {
    pub(crate) fn new(
        file: StoreFile,
        observer: Option<Arc<dyn crate::Observer>>,
    ) -> Result<Self, StoreError> {
        let store = Self {
            file: Arc::new(file),
            observer,
            _config: PhantomData,
        };
        // Create the tables once, so that readers never meet a missing table.
        let txn = store.file.begin_write("creating log tables")?;
        txn.open_table(LOG)
            .map_err(|e| store.file.error("creating log tables", e))?;
        txn.open_table(META)
            .map_err(|e| store.file.error("creating log tables", e))?;
        txn.commit()
            .map_err(|e| store.file.error("creating log tables", e))?;
        Ok(store)
    }

    /// Runs `work` on the blocking pool with the open file.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&StoreFile) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(&self.file, &self.file.path, work).await
    }

    /// Entries with index in `range`, in order. Missing entries are skipped, as openraft allows.
    pub async fn entries(
        &self,
        range: impl RangeBounds<u64> + Send + 'static,
    ) -> Result<Vec<Entry<C>>, StoreError> {
        self.run(move |file| {
            const ACTION: &str = "reading log entries";
            let txn = file.begin_read(ACTION)?;
            let table = txn.open_table(LOG).map_err(|e| file.error(ACTION, e))?;
            let keys = (
                range.start_bound().map(|&i| codec::log_key(i)),
                range.end_bound().map(|&i| codec::log_key(i)),
            );
            let mut entries = Vec::new();
            for row in table.range(keys).map_err(|e| file.error(ACTION, e))? {
                let (key, value) = row.map_err(|e| file.error(ACTION, e))?;
                entries.push(decode_row::<C>(file, key.value(), value.value())?);
            }
            Ok(entries)
        })
        .await
    }

    /// The last purged log id and the last log id (which is the last purged one when the log
    /// holds no entry).
    pub async fn log_state(&self) -> Result<LogState<C>, StoreError> {
        self.run(|file| {
            const ACTION: &str = "reading the log state";
            let txn = file.begin_read(ACTION)?;
            let meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
            let last_purged_log_id = file.read_log_id(&meta, LAST_PURGED)?;
            let log = txn.open_table(LOG).map_err(|e| file.error(ACTION, e))?;
            let last_entry = match log.last().map_err(|e| file.error(ACTION, e))? {
                None => None,
                Some((key, value)) => {
                    Some(decode_row::<C>(file, key.value(), value.value())?.log_id)
                }
            };
            Ok(LogState {
                last_log_id: last_entry.or(last_purged_log_id),
                last_purged_log_id,
            })
        })
        .await
    }

    pub async fn vote(&self) -> Result<Option<Vote<u64>>, StoreError> {
        self.run(|file| {
            const ACTION: &str = "reading the vote";
            let txn = file.begin_read(ACTION)?;
            let meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
            let Some(value) = meta.get(VOTE).map_err(|e| file.error(ACTION, e))? else {
                return Ok(None);
            };
            codec::decode_vote(value.value())
                .map(Some)
                .map_err(|e| StoreError::corrupt_value(&file.path, "vote".to_string(), e))
        })
        .await
    }

    pub async fn committed(&self) -> Result<Option<LogId<u64>>, StoreError> {
        self.run(|file| {
            const ACTION: &str = "reading the committed log id";
            let txn = file.begin_read(ACTION)?;
            let meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
            file.read_log_id(&meta, COMMITTED)
        })
        .await
    }

    /// Appends `entries` and returns once they are durable.
    pub async fn append_durably(&self, entries: Vec<Entry<C>>) -> Result<(), StoreError> {
        let encoded = entries
            .iter()
            .map(|e| Ok((codec::log_key(e.log_id.index), codec::encode_entry(e)?)))
            .collect::<Result<Vec<_>, codec::EncodeError>>()
            .map_err(|source| StoreError::Encode {
                path: self.file.path.clone(),
                source,
            })?;
        self.run(move |file| {
            const ACTION: &str = "appending log entries";
            let txn = file.begin_write(ACTION)?;
            {
                let mut log = txn.open_table(LOG).map_err(|e| file.error(ACTION, e))?;
                for (key, value) in &encoded {
                    log.insert(key, value.as_slice())
                        .map_err(|e| file.error(ACTION, e))?;
                }
            }
            txn.commit().map_err(|e| file.error(ACTION, e))
        })
        .await
    }

    /// Deletes entries with index `>= since`. Refused if that would remove a committed entry:
    /// Raft never takes back what it committed, so such a call is a bug in the caller, and
    /// obeying it would leave the committed log id past the end of the log.
    pub async fn truncate_since(&self, since: u64) -> Result<(), StoreError> {
        self.run(move |file| {
            const ACTION: &str = "truncating the log";
            let txn = file.begin_write(ACTION)?;
            {
                let meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
                if let Some(committed) = file.read_log_id(&meta, COMMITTED)?
                    && since <= committed.index
                {
                    return Err(StoreError::Invariant {
                        path: file.path.clone(),
                        detail: format!(
                            "truncating the log from index {since} would remove committed \
                             entry {committed}"
                        ),
                    });
                }
                let mut log = txn.open_table(LOG).map_err(|e| file.error(ACTION, e))?;
                log.retain_in(codec::log_key(since).., |_, _| false)
                    .map_err(|e| file.error(ACTION, e))?;
            }
            txn.commit().map_err(|e| file.error(ACTION, e))
        })
        .await
    }

    /// Deletes entries up to and including `upto`, and records it as the last purged log id.
    pub async fn purge_upto(&self, upto: LogId<u64>) -> Result<(), StoreError> {
        self.run(move |file| {
            const ACTION: &str = "purging the log";
            let txn = file.begin_write(ACTION)?;
            {
                let mut meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
                if let Some(purged) = file.read_log_id(&meta, LAST_PURGED)?
                    && purged >= upto
                {
                    return Ok(());
                }
                meta.insert(LAST_PURGED, codec::encode_log_id(&upto).as_slice())
                    .map_err(|e| file.error(ACTION, e))?;
                let mut log = txn.open_table(LOG).map_err(|e| file.error(ACTION, e))?;
                log.retain_in(..=codec::log_key(upto.index), |_, _| false)
                    .map_err(|e| file.error(ACTION, e))?;
            }
            txn.commit().map_err(|e| file.error(ACTION, e))
        })
        .await
    }

    pub async fn save_vote_durably(&self, vote: Vote<u64>) -> Result<(), StoreError> {
        self.put_meta(VOTE, codec::encode_vote(&vote), true, "saving the vote")
            .await
    }

    pub async fn save_committed_lazily(&self, committed: LogId<u64>) -> Result<(), StoreError> {
        let value = codec::encode_log_id(&committed);
        self.put_meta(COMMITTED, value, false, "saving the committed log id")
            .await
    }

    async fn put_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
        durable: bool,
        action: &'static str,
    ) -> Result<(), StoreError> {
        self.run(move |file| {
            let txn = if durable {
                file.begin_write(action)?
            } else {
                file.begin_write_non_durable(action)?
            };
            txn.open_table(META)
                .map_err(|e| file.error(action, e))?
                .insert(key, value.as_slice())
                .map_err(|e| file.error(action, e))?;
            txn.commit().map_err(|e| file.error(action, e))
        })
        .await
    }
}

/// Decodes the entry stored under `key`, naming it if it is corrupt.
fn decode_row<C: TypeConfig>(
    file: &StoreFile,
    key: [u8; 8],
    value: &[u8],
) -> Result<Entry<C>, StoreError> {
    let index = codec::log_index(key);
    codec::decode_entry::<C>(index, value)
        .map_err(|e| StoreError::corrupt_value(&file.path, format!("log entry {index}"), e))
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
        match self.append_durably(entries).await {
            Ok(()) => {
                if let Some(observer) = &self.observer {
                    observer.log_appended(count, started.elapsed());
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // Tell the waiter too, so nothing waits on a flush that will never come.
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
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
