//! The write-ahead log that holds the Raft log, the vote and the committed log id: append-only
//! segment files of checksummed frames, one `fdatasync` per group of requests.
//!
//! - `frame.rs`: the bytes (frames and records); pure.
//! - `storage.rs`: the directory and its files, behind traits (the real ones, or the power-loss
//!   test's disks).
//! - `recover.rs`: opening: reading every segment back, deciding where the log ends, telling a
//!   torn write from corruption.
//! - `writer.rs`: the thread that writes, syncs, rotates and recycles segments.
//! - here, `Wal`: the log as the rest of the store reads it, in memory: each entry's log id and
//!   where it is on disk, recent entries cached (those not yet durable always), and the metadata
//!   as callers last set it. A change is visible as soon as it is made and durable when its
//!   request is called back; requests reach the writer in the order they were made.

pub(crate) mod frame;
mod recover;
pub(crate) mod storage;
mod writer;

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};

use crate::{Entry, LogId, Vote};

pub use storage::{FsStorage, SegmentFile, Storage};
pub(crate) use writer::{Done, Sizes};

use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;
use frame::{Event, Meta, Record};
use writer::{Files, Reports, Request};

/// The smallest segment size accepted (tests use small segments to exercise rotation).
pub(crate) const MIN_SEGMENT_BYTES: u64 = 16 * frame::ALIGN;

/// Where an entry's record is: segment, byte offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:016x}.wal")
}

pub(crate) fn spare_name(seq: u64) -> String {
    format!("spare-{seq:016x}.wal")
}

fn name_seq(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn segment_seq(name: &str) -> Option<u64> {
    name_seq(name, "seg-")
}

pub(crate) fn spare_seq(name: &str) -> Option<u64> {
    name_seq(name, "spare-")
}

/// The open log. Dropping it lets the writer finish what is queued, and waits until it has
/// stopped and closed its files: the directory can be opened again at once.
pub(crate) struct Wal<C: TypeConfig> {
    index: Arc<Mutex<Index<C>>>,
    /// Taken only by drop.
    requests: Option<mpsc::Sender<Request>>,
    files: Files,
    dir: PathBuf,
    /// Held so that the directory stays locked as long as the log is open, even after the
    /// writer stopped on an error.
    storage: Arc<dyn Storage>,
    /// Taken only by drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C: TypeConfig> Drop for Wal<C> {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "the log writer panicked");
        }
    }
}

struct Index<C: TypeConfig> {
    meta: Meta,
    slots: BTreeMap<u64, Slot<C>>,
    cached_bytes: usize,
    cache_budget: usize,
    /// The encoded bytes of every entry the log holds: what purging it behind a snapshot would
    /// free. Invariant: the sum of the slots' `size`.
    log_bytes: u64,
    /// No slot below this index holds a cached entry that may be evicted.
    evict_from: u64,
    /// Why the writer stopped, once it has.
    failed: Option<String>,
}

struct Slot<C: TypeConfig> {
    log_id: LogId,
    /// Where it is durable; None until it is.
    at: Option<Location>,
    /// The entry itself, while cached. Invariant: `entry` or `at` is set.
    entry: Option<Entry<C>>,
    /// Its encoded bytes (its record's, for an entry read back at open).
    size: usize,
}

impl<C: TypeConfig> Index<C> {
    fn locate(&mut self, entries: &[(LogId, Location)]) {
        for (id, at) in entries {
            // Reports come in write order: a later one for the same log id is the live copy.
            if let Some(slot) = self.slots.get_mut(&id.index)
                && slot.log_id == *id
            {
                slot.at = Some(*at);
            }
        }
        self.evict();
    }

    /// Drops cached entries that are durable, oldest first, until the cache fits its budget.
    fn evict(&mut self) {
        let Self {
            slots,
            cached_bytes,
            cache_budget,
            evict_from,
            ..
        } = self;
        for (&index, slot) in slots.range_mut(*evict_from..) {
            if *cached_bytes <= *cache_budget || slot.at.is_none() {
                break;
            }
            if slot.entry.take().is_some() {
                *cached_bytes -= slot.size;
            }
            *evict_from = index + 1;
        }
    }

    fn forget(&mut self, removed: BTreeMap<u64, Slot<C>>) {
        for slot in removed.values() {
            self.log_bytes -= slot.size as u64;
            if slot.entry.is_some() {
                self.cached_bytes -= slot.size;
            }
        }
    }
}

struct Reporter<C: TypeConfig>(Weak<Mutex<Index<C>>>);

impl<C: TypeConfig> Reports for Reporter<C> {
    fn located(&self, entries: &[(LogId, Location)]) {
        if let Some(index) = self.0.upgrade() {
            lock(&index).locate(entries);
        }
    }

    fn failed(&self, error: &std::io::Error) {
        if let Some(index) = self.0.upgrade() {
            lock(&index).failed = Some(error.to_string());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under this lock leaves the index whole before anything that could panic.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

enum Found<C: TypeConfig> {
    Cached(Entry<C>),
    OnDisk(LogId, Location),
}

impl<C: TypeConfig> Found<C> {
    fn cached(self) -> Option<Entry<C>> {
        match self {
            Self::Cached(entry) => Some(entry),
            Self::OnDisk(..) => None,
        }
    }
}

impl<C: TypeConfig> Wal<C> {
    /// Opens the log in `storage`, verifying every retained segment, and starts its writer.
    pub fn open(
        storage: Arc<dyn Storage>,
        sizes: Sizes,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        let dir = storage.path().to_path_buf();
        let recovered = recover::recover(storage.as_ref())?;
        if let Some((segment, offset)) = recovered.torn {
            tracing::warn!(
                dir = %dir.display(),
                segment = %segment_name(segment),
                offset,
                "the log ended in a torn write (a crash before its sync); cut back to the last \
                 whole frame"
            );
        }
        let slots: BTreeMap<u64, Slot<C>> = recovered
            .entries
            .iter()
            .map(|(&index, &(log_id, at))| {
                let slot = Slot {
                    log_id,
                    at: Some(at),
                    entry: None,
                    size: at.len as usize,
                };
                (index, slot)
            })
            .collect();
        let log_bytes = slots.values().map(|slot| slot.size as u64).sum();
        let index = Arc::new(Mutex::new(Index {
            meta: recovered.meta.clone(),
            slots,
            cached_bytes: 0,
            cache_budget: cache_bytes,
            log_bytes,
            evict_from: 0,
            failed: None,
        }));
        let files = Files::default();
        let reporter = Box::new(Reporter(Arc::downgrade(&index)));
        let writer = writer::Writer::new(
            Arc::clone(&storage),
            sizes,
            recovered,
            files.clone(),
            reporter,
        )
        .map_err(|e| StoreError::from_io(&dir, "starting a log segment", e))?;
        let (requests, received) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(received))
            .map_err(|e| StoreError::from_io(&dir, "starting the log writer", e))?;
        Ok(Self {
            index,
            requests: Some(requests),
            files,
            dir,
            storage,
            thread: Some(thread),
        })
    }

    /// Writes `records` as they are and waits until they are durable, blocking the thread;
    /// the in-memory log does not see them. For filling a log nobody reads yet (conversion).
    pub fn write_blocking(&self, records: Vec<Record>) -> Result<(), StoreError> {
        const ACTION: &str = "writing the converted log";
        let (tx, rx) = mpsc::channel();
        let done: Done = Box::new(move |result| {
            let _ = tx.send(result);
        });
        self.submit(&lock(&self.index), records, Some(done), ACTION)?;
        self.answered(ACTION, rx.recv().ok())
    }

    /// What the writer answered a request (None: it stopped without answering).
    fn answered(
        &self,
        action: &'static str,
        answer: Option<std::io::Result<()>>,
    ) -> Result<(), StoreError> {
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(StoreError::from_io(&self.dir, action, e)),
            None => Err(StoreError::TaskFailed {
                path: self.dir.clone(),
                detail: "the log writer stopped before it answered".into(),
            }),
        }
    }

    /// Refuses a change once the writer has stopped: nothing may change that cannot be written.
    fn running(&self, index: &Index<C>, action: &'static str) -> Result<(), StoreError> {
        match &index.failed {
            None => Ok(()),
            Some(why) => Err(self.stopped(action, why)),
        }
    }

    fn stopped(&self, action: &'static str, why: &str) -> StoreError {
        StoreError::Io {
            path: self.dir.clone(),
            action,
            source: std::io::Error::other(format!("the log writer stopped: {why}")),
        }
    }

    /// Whether the log is closed: the writer stopped and the directory's lock released (so it
    /// may be opened again). Holds nothing open itself.
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let storage = Arc::downgrade(&self.storage);
        move || storage.strong_count() == 0
    }

    pub fn meta(&self) -> Meta {
        lock(&self.index).meta.clone()
    }

    /// The encoded bytes of the entries the log holds (not purged, not truncated).
    pub fn bytes(&self) -> u64 {
        lock(&self.index).log_bytes
    }

    /// Queues `records`; `done` is called once they are durable. Refused, with nothing
    /// changed, once the writer has stopped.
    fn submit(
        &self,
        index: &Index<C>,
        records: Vec<Record>,
        done: Option<Done>,
        action: &'static str,
    ) -> Result<(), StoreError> {
        self.running(index, action)?;
        self.requests
            .as_ref()
            .ok_or_else(|| self.stopped(action, "the log is closing"))?
            .send(Request { records, done })
            .map_err(|_| self.stopped(action, "it is gone"))
    }

    /// Makes a change under the index lock and waits until its records are durable.
    async fn durably(
        &self,
        action: &'static str,
        change: impl FnOnce(&mut Index<C>) -> Result<Vec<Record>, StoreError>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut index = lock(&self.index);
            self.running(&index, action)?;
            let records = change(&mut index)?;
            let done: Done = Box::new(move |result| {
                let _ = tx.send(result);
            });
            self.submit(&index, records, Some(done), action)?;
        }
        self.answered(action, rx.await.ok())
    }

    /// Appends `entries`: readable when this returns, `done` called once they are durable.
    pub fn append(&self, entries: Vec<Entry<C>>, done: Done) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = codec::encode_entry::<C>(entry).map_err(|source| StoreError::Encode {
                path: self.dir.clone(),
                source,
            })?;
            if bytes.len() + 8 > frame::MAX_PAYLOAD {
                return Err(StoreError::Encode {
                    path: self.dir.clone(),
                    source: codec::EncodeError::TooLong {
                        what: "log entry",
                        len: bytes.len(),
                        max: frame::MAX_PAYLOAD - 8,
                    },
                });
            }
            encoded.push(bytes);
        }
        let mut index = lock(&self.index);
        self.running(&index, "appending log entries")?;
        let mut records = Vec::with_capacity(entries.len());
        for (entry, bytes) in entries.into_iter().zip(encoded) {
            let id = entry.log_id;
            let slot = Slot {
                log_id: id,
                at: None,
                entry: Some(entry),
                size: bytes.len(),
            };
            index.cached_bytes += slot.size;
            index.log_bytes += slot.size as u64;
            if let Some(old) = index.slots.insert(id.index, slot) {
                index.log_bytes -= old.size as u64;
                if old.entry.is_some() {
                    index.cached_bytes -= old.size;
                }
            }
            index.evict_from = index.evict_from.min(id.index);
            index.meta.apply(&Event::Entry(id));
            records.push(Record::Entry {
                index: id.index,
                bytes,
            });
        }
        self.submit(&index, records, Some(done), "appending log entries")
    }

    pub async fn append_durably(&self, entries: Vec<Entry<C>>) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.append(
            entries,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        self.answered("appending log entries", rx.await.ok())
    }

    /// Removes entries with index `>= since`, durably. Refused if that would remove a
    /// committed or purged entry: Raft never takes those back, so such a call is a bug in the
    /// caller, and obeying it would leave the committed log id past the end of the log.
    pub async fn truncate_since(&self, since: u64) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        self.durably("truncating the log", |index| {
            let at_or_above = |id: Option<LogId>, what: &str| match id {
                Some(id) if id.index >= since => Err(StoreError::Invariant {
                    path: dir.clone(),
                    detail: format!(
                        "truncating the log from index {since} would remove {what} entry {id}"
                    ),
                }),
                _ => Ok(()),
            };
            at_or_above(index.meta.committed, "committed")?;
            at_or_above(index.meta.purged, "purged")?;
            let kept = index
                .slots
                .range(..since)
                .next_back()
                .map(|(_, s)| s.log_id);
            let kept = kept.or(index.meta.purged);
            let removed = index.slots.split_off(&since);
            index.forget(removed);
            index.evict_from = index.evict_from.min(since);
            index.meta.apply(&Event::TruncateAfter(kept));
            Ok(vec![Record::TruncateAfter(kept)])
        })
        .await
    }

    /// Removes entries up to and including `upto` and records it as purged, durably.
    /// A purge already made (or queued) returns once it is durable.
    pub async fn purge_upto(&self, upto: LogId) -> Result<(), StoreError> {
        self.durably("purging the log", |index| {
            if index.meta.purged.map(|id| id.index) >= Some(upto.index) {
                return Ok(Vec::new());
            }
            let kept = recover::after(&mut index.slots, upto.index);
            let removed = std::mem::replace(&mut index.slots, kept);
            index.forget(removed);
            index.meta.apply(&Event::Purged(upto));
            Ok(vec![Record::Purged(upto)])
        })
        .await
    }

    pub async fn save_vote(&self, vote: Vote) -> Result<(), StoreError> {
        self.durably("saving the vote", |index| {
            index.meta.apply(&Event::Vote(vote));
            Ok(vec![Record::Vote(vote)])
        })
        .await
    }

    /// Records the committed log id, durable with the next durable request: losing it loses
    /// nothing (apply resumes from an earlier point).
    /// Refused past the last log id: that is a caller's bug, and recovery would refuse the log.
    pub fn save_committed(&self, committed: LogId) -> Result<(), StoreError> {
        let mut index = lock(&self.index);
        if index.meta.last.map(|id| id.index) < Some(committed.index) {
            return Err(StoreError::Invariant {
                path: self.dir.clone(),
                detail: format!(
                    "committed {committed} is past the last log id {:?}",
                    index.meta.last
                ),
            });
        }
        index.meta.apply(&Event::Committed(committed));
        self.submit(
            &index,
            vec![Record::Committed(committed)],
            None,
            "saving the committed log id",
        )
    }

    /// Entries with index in `range`, in order; missing ones are skipped, as openraft allows.
    /// Cached entries are cloned; the others are read back and verified on the blocking pool.
    pub async fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<C>>, StoreError> {
        if is_empty(&range) {
            return Ok(Vec::new());
        }
        let found: Vec<Found<C>> = lock(&self.index)
            .slots
            .range(range)
            .map(|(_, slot)| match (&slot.entry, slot.at) {
                (Some(entry), _) => Ok(Found::Cached(entry.clone())),
                (None, Some(at)) => Ok(Found::OnDisk(slot.log_id, at)),
                (None, None) => Err(StoreError::Invariant {
                    path: self.dir.clone(),
                    detail: format!("log entry {} is neither cached nor written", slot.log_id),
                }),
            })
            .collect::<Result<_, _>>()?;
        // The usual case (replication and apply read what was just appended): no disk read.
        if found.iter().all(|f| matches!(f, Found::Cached(_))) {
            return Ok(found.into_iter().filter_map(Found::cached).collect());
        }
        let files = self.files.clone();
        let dir = self.dir.clone();
        let index = Arc::clone(&self.index);
        let read = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::with_capacity(found.len());
            for f in found {
                match f {
                    Found::Cached(entry) => entries.push(entry),
                    Found::OnDisk(id, at) => match read_entry::<C>(&files, &dir, id, at) {
                        Ok(entry) => entries.push(entry),
                        // Purged (or truncated) while it was read: a missing entry, as if
                        // asked a moment later. Its segment may be gone or reused.
                        Err(_)
                            if lock(&index)
                                .slots
                                .get(&id.index)
                                .is_none_or(|s| s.log_id != id) => {}
                        Err(e) => return Err(e),
                    },
                }
            }
            Ok(entries)
        });
        read.await.map_err(|e| StoreError::TaskFailed {
            path: self.dir.clone(),
            detail: e.to_string(),
        })?
    }
}

fn is_empty(range: &(Bound<u64>, Bound<u64>)) -> bool {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match range.end_bound() {
        Bound::Included(&e) => start > e,
        Bound::Excluded(&e) => start >= e,
        Bound::Unbounded => false,
    }
}

/// Reads the entry `id` back from `at`, verifying its checksum and that it is that entry.
fn read_entry<C: TypeConfig>(
    files: &Files,
    dir: &Path,
    id: LogId,
    at: Location,
) -> Result<Entry<C>, StoreError> {
    let path = dir.join(segment_name(at.segment));
    let file = files
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&at.segment)
        .cloned()
        .ok_or_else(|| StoreError::Invariant {
            path: path.clone(),
            detail: format!("log entry {id} was read after its segment was dropped"),
        })?;
    let mut record = vec![0u8; usize::try_from(at.len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut record, at.offset)
        .map_err(|e| StoreError::from_io(&path, "reading a log entry", e))?;
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.clone(),
        detail: format!("log entry {id} at offset {}: {detail}", at.offset),
    };
    let (index, bytes) = frame::entry_record(&record).map_err(|e| corrupt(e.to_string()))?;
    let entry = codec::decode_entry::<C>(index, bytes).map_err(|e| corrupt(e.to_string()))?;
    if entry.log_id != id {
        return Err(corrupt(format!("holds {} instead", entry.log_id)));
    }
    Ok(entry)
}
