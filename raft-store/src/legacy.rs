//! The log as releases before the WAL kept it (`log.redb`, a redb database), and its one-time
//! conversion into the WAL.
//!
//! Crash-safe by renames: the WAL is written into `log.converting/` and synced, renamed to
//! `log/`, and only then is `log.redb` replaced by a [`TOMBSTONE`]: a text file that says what
//! happened, and that the releases before the WAL refuse to open (it is not a redb database),
//! so that a binary rolled back by mistake stops instead of starting with an empty log next to
//! the applied state. An open that finds `log.converting/` throws it away and converts again;
//! one that finds `log/` beside a `log.redb` that is still a database finishes the job.

use std::path::Path;
use std::sync::Arc;

use crate::LogId;
use redb::{ReadableTable, TableDefinition};

use crate::codec;
use crate::db::{self, StoreFile};
use crate::error::StoreError;
use crate::wal::frame::Record;
use crate::wal::{FsStorage, Sizes, Wal};
use crate::{DataDir, TypeConfig};

const LOG: TableDefinition<[u8; 8], &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// Entries per request while converting: bounds the memory a conversion holds.
const CHUNK: usize = 1024;

/// What replaces `log.redb` once converted. Longer than a redb header, so that redb reads it
/// as a file that is not a database (and refuses it) rather than as an empty one.
pub(crate) const TOMBSTONE: &str = "slapcluster: this Raft log was converted to the write-ahead \
log in the directory `log` beside this file. A release that still reads this file as its log is \
too old for this data directory: it refuses to start rather than start with an empty log. \
Reinstall the newer release, or see ops/runbooks/upgrade.md.\n";

fn is_tombstone(path: &Path) -> Result<bool, StoreError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(TOMBSTONE.len());
    std::fs::File::open(path)
        .and_then(|f| f.take(TOMBSTONE.len() as u64).read_to_end(&mut head))
        .map_err(|e| StoreError::from_io(path, "reading", e))?;
    Ok(head == TOMBSTONE.as_bytes())
}

/// Converts `log.redb` into the WAL if this data directory still has one.
pub(crate) fn convert_if_needed<C: TypeConfig>(
    paths: &DataDir,
    sizes: Sizes,
) -> Result<(), StoreError> {
    if !paths.legacy_log.exists() || is_tombstone(&paths.legacy_log)? {
        return Ok(());
    }
    if paths.log.exists() {
        // Converted; replacing the old file did not complete.
        return bury(&paths.legacy_log);
    }
    let converting = paths.log.with_extension("converting");
    if converting.exists() {
        std::fs::remove_dir_all(&converting).map_err(|e| {
            StoreError::from_io(&converting, "removing an interrupted conversion", e)
        })?;
    }
    let old = StoreFile::open(&paths.legacy_log, db::LOG_FILE, 16 << 20)?;
    let wal = Wal::<C>::open(Arc::new(FsStorage::open(&converting)?), sizes, 0)?;
    copy(&old, &wal)?;
    drop(old);
    // Waits until the writer has stopped: every frame is durable, every file closed.
    drop(wal);
    std::fs::rename(&converting, &paths.log)
        .map_err(|e| StoreError::from_io(&paths.log, "moving the converted log into place", e))?;
    db::sync_parent_dir(&paths.log)?;
    tracing::info!(from = %paths.legacy_log.display(), to = %paths.log.display(), "converted the Raft log to the write-ahead log");
    bury(&paths.legacy_log)
}

/// Replaces the converted `log.redb` by the tombstone, atomically.
fn bury(path: &Path) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.tombstone");
    let mut text = TOMBSTONE.as_bytes().to_vec();
    // Padded past redb's header so that no release reads it as an empty database.
    text.resize(8192, b'\n');
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| StoreError::from_io(path, "replacing the converted log", e))?;
    db::sync_parent_dir(path)
}

/// Writes everything `old` holds into the empty `wal`: the vote, the purged log id, every
/// entry (decoded, so that a corrupt one stops the conversion), the committed log id.
fn copy<C: TypeConfig>(old: &StoreFile, wal: &Wal<C>) -> Result<(), StoreError> {
    const ACTION: &str = "reading the old log";
    let txn = old.begin_read(ACTION)?;
    let meta = txn.open_table(META).map_err(|e| old.error(ACTION, e))?;
    let vote = match meta.get("vote").map_err(|e| old.error(ACTION, e))? {
        None => None,
        Some(value) => Some(
            codec::decode_vote(value.value())
                .map_err(|e| StoreError::corrupt_value(&old.path, "vote".into(), e))?,
        ),
    };
    let purged: Option<LogId> = old.read_log_id(&meta, "last_purged")?;
    let committed: Option<LogId> = old.read_log_id(&meta, "committed")?;

    let mut records: Vec<Record> = vote.map(Record::Vote).into_iter().collect();
    records.extend(purged.map(Record::Purged));
    let log = txn.open_table(LOG).map_err(|e| old.error(ACTION, e))?;
    for row in log.iter().map_err(|e| old.error(ACTION, e))? {
        let (key, value) = row.map_err(|e| old.error(ACTION, e))?;
        let index = codec::log_index(key.value());
        let bytes = value.value();
        codec::decode_entry::<C>(index, bytes)
            .map_err(|e| StoreError::corrupt_value(&old.path, format!("log entry {index}"), e))?;
        records.push(Record::Entry {
            index,
            bytes: bytes.to_vec(),
        });
        if records.len() >= CHUNK {
            wal.write_blocking(std::mem::take(&mut records))?;
        }
    }
    records.extend(committed.map(Record::Committed));
    wal.write_blocking(records)
}
