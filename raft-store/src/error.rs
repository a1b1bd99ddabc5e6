//! [`StoreError`]: every way the store can fail, each naming the file and the cause.
//!
//! Every variant is fatal to the replica: openraft receives it as an `io::Error` and stops the
//! Raft node, because a replica that cannot trust its own disk must not vote or acknowledge.
//! Nothing acknowledged is lost by stopping: an append is reported flushed, and an apply
//! returns, only after its redb commit returned.

use std::io;
use std::path::{Path, PathBuf};

use crate::codec::{DecodeError, EncodeError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but was not written by raft-store (another program's file, or a redb
    /// database without our format marker). It is left untouched.
    #[error("{path}: not a slapcluster {expected} file ({reason}); it was left untouched")]
    ForeignFile {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    /// The file was written by a release whose format this build does not read.
    #[error(
        "{path}: format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Checksums or our own encodings do not hold: bit rot, a truncated copy, an editor.
    #[error("{path}: corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// A stored value failed to decode.
    #[error("{path}: corrupt {what}: {source}")]
    CorruptValue {
        path: PathBuf,
        what: String,
        #[source]
        source: DecodeError,
    },
    /// The file system reported no space left. Free space and restart: every write that was
    /// acknowledged before this error is on disk.
    #[error("{path}: disk full while {action}; free space and restart the replica")]
    DiskFull { path: PathBuf, action: &'static str },
    #[error("{path}: I/O error while {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// Another process (or another store in this process) has the file open.
    #[error("{path}: already opened by another process or store")]
    Locked { path: PathBuf },
    /// Any other redb failure, kept whole for the log.
    #[error("{path}: database error while {action}: {source}")]
    Database {
        path: PathBuf,
        action: &'static str,
        /// Boxed: redb's error enum is large and this variant is rare.
        #[source]
        source: Box<redb::Error>,
    },
    /// The application could not encode a command or membership for the log.
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: EncodeError,
    },
    /// The application state machine failed (applying entries up to `at`, or initialising);
    /// its transaction was rolled back.
    #[error("{path}: the application failed at {at}: {source}")]
    Application {
        path: PathBuf,
        at: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store's own invariants were violated by a caller (a hole in the log, a response
    /// count that differs from the entry count). A bug, reported rather than written.
    #[error("{path}: invariant violated: {detail}")]
    Invariant { path: PathBuf, detail: String },
    /// A blocking storage task panicked or was cancelled; its transaction was not committed.
    #[error("{path}: storage task did not complete: {detail}")]
    TaskFailed { path: PathBuf, detail: String },
}

impl StoreError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::ForeignFile { path, .. }
            | Self::UnsupportedVersion { path, .. }
            | Self::Corrupt { path, .. }
            | Self::CorruptValue { path, .. }
            | Self::DiskFull { path, .. }
            | Self::Io { path, .. }
            | Self::Locked { path }
            | Self::Database { path, .. }
            | Self::Encode { path, .. }
            | Self::Application { path, .. }
            | Self::Invariant { path, .. }
            | Self::TaskFailed { path, .. } => path,
        }
    }

    /// Classifies a redb error by cause: corruption, a full disk, a lock, other I/O.
    pub(crate) fn from_redb(
        path: &Path,
        action: &'static str,
        error: impl Into<redb::Error>,
    ) -> Self {
        let path = path.to_path_buf();
        match error.into() {
            redb::Error::Corrupted(detail) => Self::Corrupt { path, detail },
            redb::Error::DatabaseAlreadyOpen => Self::Locked { path },
            redb::Error::Io(source) => Self::from_io(&path, action, source),
            source => Self::Database {
                path,
                action,
                source: Box::new(source),
            },
        }
    }

    pub(crate) fn from_io(path: &Path, action: &'static str, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(ENOSPC)
            || source.raw_os_error() == Some(EDQUOT)
        {
            Self::DiskFull { path, action }
        } else {
            Self::Io {
                path,
                action,
                source,
            }
        }
    }

    pub(crate) fn corrupt_value(path: &Path, what: String, source: DecodeError) -> Self {
        Self::CorruptValue {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

/// The form openraft's storage traits take: an `io::Error` whose kind says what happened
/// (openraft treats every one as fatal) and whose source is the whole [`StoreError`], so the
/// message names the file.
impl From<StoreError> for io::Error {
    fn from(error: StoreError) -> Self {
        let kind = match &error {
            StoreError::DiskFull { .. } => io::ErrorKind::StorageFull,
            StoreError::Io { source, .. } => source.kind(),
            StoreError::Corrupt { .. }
            | StoreError::CorruptValue { .. }
            | StoreError::ForeignFile { .. }
            | StoreError::UnsupportedVersion { .. } => io::ErrorKind::InvalidData,
            StoreError::Locked { .. } => io::ErrorKind::ResourceBusy,
            StoreError::Database { .. }
            | StoreError::Encode { .. }
            | StoreError::Application { .. }
            | StoreError::Invariant { .. }
            | StoreError::TaskFailed { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// Linux errno values for a full disk and an exhausted quota; `io::ErrorKind::StorageFull`
/// covers the first on current std, the raw codes keep the mapping independent of that.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_recognised_from_the_os_error() {
        let error = StoreError::from_io(
            Path::new("/data/log.redb"),
            "appending log entries",
            io::Error::from_raw_os_error(ENOSPC),
        );
        assert!(matches!(error, StoreError::DiskFull { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "/data/log.redb: disk full while appending log entries; free space and restart the replica"
        );
    }

    #[test]
    fn redb_corruption_names_the_file() {
        let error = StoreError::from_redb(
            Path::new("/data/state.redb"),
            "opening",
            redb::StorageError::Corrupted("checksum mismatch".to_string()),
        );
        assert_eq!(error.path(), Path::new("/data/state.redb"));
        assert_eq!(
            error.to_string(),
            "/data/state.redb: corrupt: checksum mismatch"
        );
    }
}
