//! Opening one of our redb files: refuse what is not ours, verify what is.
//!
//! Every file carries a format marker (`raft_format` table: a magic string naming the file's
//! role and a big-endian format version). A file is accepted only if it is new (then the marker
//! is written) or carries our marker for the expected role and a version this build reads.
//!
//! Opening verifies the checksum of every page (redb's integrity check), because a plain redb
//! open may panic on a file altered outside redb. Every commit we make is two-phase, so after
//! any crash, power loss included, the latest commit is intact: a checksum failure therefore
//! always means corruption, and redb reports it instead of silently falling back to the
//! previous commit (which could drop an acknowledged vote or log entry).

use std::fs;
use std::path::{Path, PathBuf};

use crate::LogId;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::codec;
use crate::error::StoreError;

/// The format marker table, present in every file raft-store writes.
const FORMAT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_format");
const FORMAT_KEY: &str = "format";

/// Table names starting with this prefix belong to raft-store; all others to the application.
pub(crate) const RESERVED_PREFIX: &str = "raft_";

/// Which of our files this is, with the magic that identifies it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileKind {
    /// Human name used in errors.
    pub name: &'static str,
    pub magic: &'static [u8],
    pub version: u32,
}

pub(crate) const LOG_FILE: FileKind = FileKind {
    name: "raft log",
    magic: b"slapcluster raft log",
    version: 1,
};

pub(crate) const STATE_FILE: FileKind = FileKind {
    name: "raft state machine",
    magic: b"slapcluster raft state machine",
    version: 1,
};

/// An open redb database and the path it came from (for error messages).
pub(crate) struct StoreFile {
    pub db: Database,
    pub path: PathBuf,
}

impl StoreFile {
    pub fn open(path: &Path, kind: FileKind, cache_bytes: usize) -> Result<Self, StoreError> {
        let existed = path.exists();
        let db = builder(cache_bytes)
            .create(path)
            .map_err(|error| classify_open_error(path, kind, error))?;
        let file = Self::accept(db, path, kind)?;
        if !existed {
            // The new file's directory entry must be durable before anything in it is
            // acknowledged.
            sync_parent_dir(path)?;
        }
        Ok(file)
    }

    /// Like [`Self::open`], on storage the caller supplies; `path` only names it in errors.
    pub fn open_on(
        backend: impl redb::StorageBackend,
        path: &Path,
        kind: FileKind,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        let db = builder(cache_bytes)
            .create_with_backend(backend)
            .map_err(|error| classify_open_error(path, kind, error))?;
        Self::accept(db, path, kind)
    }

    fn accept(db: Database, path: &Path, kind: FileKind) -> Result<Self, StoreError> {
        let file = Self {
            db,
            path: path.to_path_buf(),
        };
        file.check_or_write_marker(kind)?;
        Ok(file)
    }

    /// Begins a write transaction that commits durably, in two phases (see module doc).
    pub fn begin_write(&self, action: &'static str) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.error(action, e))?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }

    /// Begins a write transaction whose commit becomes durable only with the next durable one.
    pub fn begin_write_non_durable(
        &self,
        action: &'static str,
    ) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.begin_write(action)?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.error(action, e))?;
        Ok(txn)
    }

    pub fn begin_read(&self, action: &'static str) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(|e| self.error(action, e))
    }

    pub fn error(&self, action: &'static str, error: impl Into<redb::Error>) -> StoreError {
        StoreError::from_redb(&self.path, action, error)
    }

    /// Reads an optional log id stored under `key` of a metadata table.
    pub fn read_log_id(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &'static str,
    ) -> Result<Option<LogId>, StoreError> {
        let Some(value) = meta
            .get(key)
            .map_err(|e| self.error("reading metadata", e))?
        else {
            return Ok(None);
        };
        codec::decode_log_id(value.value())
            .map(Some)
            .map_err(|e| StoreError::corrupt_value(&self.path, key.to_string(), e))
    }

    fn check_or_write_marker(&self, kind: FileKind) -> Result<(), StoreError> {
        const ACTION: &str = "checking the format marker";
        // Every early return below drops `txn` uncommitted: redb aborts it and nothing is
        // written, not even the marker table that opening it created in memory.
        let txn = self.begin_write(ACTION)?;
        {
            let mut table = txn.open_table(FORMAT).map_err(|e| self.error(ACTION, e))?;
            let found = table
                .get(FORMAT_KEY)
                .map_err(|e| self.error(ACTION, e))?
                .map(|v| v.value().to_vec());
            match found {
                Some(marker) => return self.check_marker(kind, &marker),
                None => {
                    // No marker: only an empty database may become ours.
                    let others: Vec<String> = txn
                        .list_tables()
                        .map_err(|e| self.error(ACTION, e))?
                        .map(|t| t.name().to_string())
                        .filter(|name| name != FORMAT.name())
                        .collect();
                    if !others.is_empty() {
                        return Err(StoreError::ForeignFile {
                            path: self.path.clone(),
                            expected: kind.name,
                            reason: format!(
                                "a redb database without a slapcluster format marker, holding tables {others:?}"
                            ),
                        });
                    }
                    let mut marker = kind.magic.to_vec();
                    marker.extend_from_slice(&kind.version.to_be_bytes());
                    table
                        .insert(FORMAT_KEY, marker.as_slice())
                        .map_err(|e| self.error(ACTION, e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.error(ACTION, e))
    }

    fn check_marker(&self, kind: FileKind, marker: &[u8]) -> Result<(), StoreError> {
        let Some(version) = marker.strip_prefix(kind.magic) else {
            return Err(StoreError::ForeignFile {
                path: self.path.clone(),
                expected: kind.name,
                reason: format!("its format marker is {:?}", String::from_utf8_lossy(marker)),
            });
        };
        let version: [u8; 4] = version.try_into().map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!(
                "format marker has {} version bytes, expected 4",
                version.len()
            ),
        })?;
        let found = u32::from_be_bytes(version);
        if found != kind.version {
            return Err(StoreError::UnsupportedVersion {
                path: self.path.clone(),
                found,
                supported: kind.version,
            });
        }
        Ok(())
    }
}

fn builder(cache_bytes: usize) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cache_bytes)
        .set_check_integrity_on_open(true);
    builder
}

fn classify_open_error(path: &Path, kind: FileKind, error: redb::DatabaseError) -> StoreError {
    match error {
        // redb reports a file without its magic number as InvalidData, before writing anything.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::ForeignFile {
                path: path.to_path_buf(),
                expected: kind.name,
                reason: io.to_string(),
            }
        }
        redb::DatabaseError::UpgradeRequired(version) => StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: u32::from(version),
            supported: kind.version,
        },
        other => StoreError::from_redb(path, "opening", other),
    }
}

/// Makes a directory entry (a created or renamed file) durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::from_io(dir, "syncing the directory", e))
}
