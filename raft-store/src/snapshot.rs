//! Snapshot files: their format, and the directory that holds the current one.
//!
//! A snapshot is the state machine's application tables, dumped from one redb read
//! transaction, in table-name then key order (so equal states give equal bytes):
//!
//! ```text
//! "SLAPSNAP" | version u32 BE | meta length u32 BE | meta (codec::encode_snapshot_meta)
//! records:   0x01 | name length u16 BE | table name            (a table starts)
//!            0x02 | key length u32 BE | key | value length u32 BE | value
//!            0x00                                              (end)
//! crc32 u32 BE of every byte before it
//! ```
//!
//! The directory holds at most one published snapshot, `current.snapshot`, replaced by rename
//! after the new file is fsynced, and never by an older snapshot: a snapshot build that
//! finishes after a newer snapshot was installed is dropped (openraft may already have purged
//! the log behind the newer one). Files in progress are `*.tmp` and are removed at open.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{MultimapTableHandle, ReadableTable, TableDefinition, TableHandle};
use tempfile::NamedTempFile;

use crate::codec;
use crate::db::{RESERVED_PREFIX, sync_dir};
use crate::error::StoreError;
use crate::{SnapshotFile, SnapshotMetaOf, TypeConfig};

const MAGIC: &[u8; 8] = b"SLAPSNAP";
const VERSION: u32 = 1;
const CURRENT: &str = "current.snapshot";
const TMP_SUFFIX: &str = ".tmp";

const TAG_END: u8 = 0;
const TAG_TABLE: u8 = 1;
const TAG_ROW: u8 = 2;

/// Upper bound on the encoded meta, far above any real membership; a larger length field is
/// corruption, and is refused before allocating.
const MAX_META_LEN: u32 = 16 << 20;

/// The directory of snapshot files.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// Serialises publishing so that the "never older" check and the rename are one step.
    publish: Mutex<()>,
}

impl SnapshotDir {
    pub fn open(dir: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::from_io(&dir, "creating the snapshot directory", e))?;
        let entries = fs::read_dir(&dir)
            .map_err(|e| StoreError::from_io(&dir, "listing the snapshot directory", e))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| StoreError::from_io(&dir, "listing the snapshot directory", e))?;
            let path = entry.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                // Left by a crash while building or installing; never published.
                fs::remove_file(&path)
                    .map_err(|e| StoreError::from_io(&path, "removing a stale snapshot file", e))?;
            }
        }
        Ok(Self {
            dir,
            publish: Mutex::new(()),
        })
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// The published snapshot's meta and a handle to its file, positioned at its start.
    pub fn current<C: TypeConfig>(&self) -> Result<Option<SnapshotFile<C>>, StoreError> {
        let path = self.current_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::from_io(
                    &path,
                    "opening the current snapshot",
                    e,
                ));
            }
        };
        let (meta, id) = read_header::<C>(&mut BufReader::new(&mut file), &path)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| StoreError::from_io(&path, "reading the current snapshot", e))?;
        Ok(Some(SnapshotFile { meta, id, file }))
    }

    /// The published snapshot's length in bytes, if there is one.
    pub fn current_bytes(&self) -> Result<Option<u64>, StoreError> {
        let path = self.current_path();
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::from_io(
                &path,
                "reading the current snapshot's size",
                e,
            )),
        }
    }

    /// A new file in the directory, deleted on drop unless published.
    pub fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix("snapshot-")
            .suffix(TMP_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| StoreError::from_io(&self.dir, "creating a snapshot file", e))
    }

    /// An anonymous file to receive a snapshot into: a crash leaves nothing behind.
    pub fn incoming_file(&self) -> Result<File, StoreError> {
        tempfile::tempfile_in(&self.dir).map_err(|e| {
            StoreError::from_io(&self.dir, "creating a file for a received snapshot", e)
        })
    }

    /// Makes `file` (complete, with the given meta) the current snapshot, unless the current
    /// one is newer. Returns whether it was published.
    pub fn publish<C: TypeConfig>(
        &self,
        file: NamedTempFile,
        meta: &SnapshotMetaOf<C>,
    ) -> Result<bool, StoreError> {
        file.as_file()
            .sync_all()
            .map_err(|e| StoreError::from_io(file.path(), "syncing a snapshot file", e))?;
        // A poisoned lock only means another publisher panicked; the directory is still
        // consistent because every step below is a single rename.
        let _guard = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = self.current::<C>()?
            && current.meta.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        let target = self.current_path();
        file.persist(&target)
            .map_err(|e| StoreError::from_io(&target, "publishing a snapshot", e.error))?;
        sync_dir(&self.dir)?;
        Ok(true)
    }
}

/// Writes the application tables visible in `txn` as a snapshot with `meta` into `out`.
pub(crate) fn export<C: TypeConfig>(
    txn: &redb::ReadTransaction,
    meta: &SnapshotMetaOf<C>,
    id: &str,
    out: &mut File,
    state_path: &Path,
    out_path: &Path,
) -> Result<(), StoreError> {
    const ACTION: &str = "building a snapshot";
    let db_err = |e: redb::Error| StoreError::from_redb(state_path, ACTION, e);
    let io_err = |e: io::Error| StoreError::from_io(out_path, "writing a snapshot", e);

    let multimap: Vec<String> = txn
        .list_multimap_tables()
        .map_err(|e| db_err(e.into()))?
        .map(|t| t.name().to_string())
        .filter(|name| !name.starts_with(RESERVED_PREFIX))
        .collect();
    if !multimap.is_empty() {
        return Err(StoreError::Invariant {
            path: state_path.to_path_buf(),
            detail: format!(
                "application multimap tables {multimap:?} cannot be snapshotted; use byte tables"
            ),
        });
    }

    let mut w = CrcWriter::new(BufWriter::new(out));
    let meta_bytes =
        codec::encode_snapshot_meta::<C>(meta, id).map_err(|source| StoreError::Encode {
            path: out_path.to_path_buf(),
            source,
        })?;
    w.write_all(MAGIC).map_err(io_err)?;
    w.write_all(&VERSION.to_be_bytes()).map_err(io_err)?;
    write_len_u32(&mut w, meta_bytes.len()).map_err(io_err)?;
    w.write_all(&meta_bytes).map_err(io_err)?;

    for handle in txn.list_tables().map_err(|e| db_err(e.into()))? {
        let name = handle.name();
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let table = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(name))
            .map_err(|e| StoreError::Invariant {
                path: state_path.to_path_buf(),
                detail: format!("application table {name:?} is not a byte table: {e}"),
            })?;
        let name_len = u16::try_from(name.len()).map_err(|_| StoreError::Invariant {
            path: state_path.to_path_buf(),
            detail: format!("table name of {} bytes is too long", name.len()),
        })?;
        w.write_all(&[TAG_TABLE]).map_err(io_err)?;
        w.write_all(&name_len.to_be_bytes()).map_err(io_err)?;
        w.write_all(name.as_bytes()).map_err(io_err)?;
        for row in table.iter().map_err(|e| db_err(e.into()))? {
            let (key, value) = row.map_err(|e| db_err(e.into()))?;
            w.write_all(&[TAG_ROW]).map_err(io_err)?;
            write_len_u32(&mut w, key.value().len()).map_err(io_err)?;
            w.write_all(key.value()).map_err(io_err)?;
            write_len_u32(&mut w, value.value().len()).map_err(io_err)?;
            w.write_all(value.value()).map_err(io_err)?;
        }
    }
    w.write_all(&[TAG_END]).map_err(io_err)?;
    let crc = w.crc();
    let mut inner = w.into_inner();
    inner.write_all(&crc.to_be_bytes()).map_err(io_err)?;
    inner.flush().map_err(io_err)?;
    Ok(())
}

/// Replaces the application tables in `txn` with the snapshot read from `input`, copying the
/// bytes it reads to `copy`. Returns the snapshot's meta. The caller commits `txn` only if this
/// returns `Ok`: a snapshot that fails its checksum is never installed, even in part.
pub(crate) fn import<C: TypeConfig>(
    txn: &redb::WriteTransaction,
    input: &mut File,
    copy: &mut File,
    state_path: &Path,
    input_path: &Path,
) -> Result<SnapshotMetaOf<C>, StoreError> {
    const ACTION: &str = "installing a snapshot";
    let db_err = |e: redb::Error| StoreError::from_redb(state_path, ACTION, e);
    let corrupt = |detail: String| StoreError::Corrupt {
        path: input_path.to_path_buf(),
        detail,
    };

    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| StoreError::from_io(input_path, "reading a snapshot", e))?;
    let mut r = CrcReader::new(TeeReader {
        inner: BufReader::new(input),
        copy: BufWriter::new(copy),
    });
    let (meta, _id) = read_header::<C>(&mut r, input_path)?;

    let existing: Vec<String> = txn
        .list_tables()
        .map_err(|e| db_err(e.into()))?
        .map(|t| t.name().to_string())
        .filter(|name| !name.starts_with(RESERVED_PREFIX))
        .collect();
    for name in existing {
        txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))
            .map_err(|e| db_err(e.into()))?;
    }

    let read_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("snapshot ends before its end record".to_string())
        } else {
            StoreError::from_io(input_path, "reading a snapshot", e)
        }
    };
    let mut table: Option<redb::Table<&[u8], &[u8]>> = None;
    loop {
        match read_u8(&mut r).map_err(read_err)? {
            TAG_END => break,
            TAG_TABLE => {
                let len = usize::from(u16::from_be_bytes(read_array(&mut r).map_err(read_err)?));
                let name = String::from_utf8(read_exact_vec(&mut r, len).map_err(read_err)?)
                    .map_err(|_| corrupt("table name is not UTF-8".to_string()))?;
                if name.starts_with(RESERVED_PREFIX) {
                    return Err(corrupt(format!("snapshot carries reserved table {name:?}")));
                }
                drop(table.take());
                table = Some(
                    txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                        .map_err(|e| db_err(e.into()))?,
                );
            }
            TAG_ROW => {
                let Some(table) = table.as_mut() else {
                    return Err(corrupt("row before any table".to_string()));
                };
                let key_len = u32::from_be_bytes(read_array(&mut r).map_err(read_err)?);
                let key = read_exact_vec(&mut r, key_len as usize).map_err(read_err)?;
                let value_len = u32::from_be_bytes(read_array(&mut r).map_err(read_err)?);
                let value = read_exact_vec(&mut r, value_len as usize).map_err(read_err)?;
                table
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(|e| db_err(e.into()))?;
            }
            tag => return Err(corrupt(format!("unknown record tag {tag}"))),
        }
    }
    drop(table);

    let computed = r.crc();
    let mut tee = r.into_inner();
    let stored = u32::from_be_bytes(read_array(&mut tee).map_err(read_err)?);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    let mut rest = [0u8; 1];
    if tee.read(&mut rest).map_err(read_err)? != 0 {
        return Err(corrupt("trailing bytes after the checksum".to_string()));
    }
    tee.copy
        .flush()
        .map_err(|e| StoreError::from_io(input_path, "copying a snapshot", e))?;
    Ok(meta)
}

fn read_header<C: TypeConfig>(
    r: &mut impl Read,
    path: &Path,
) -> Result<(SnapshotMetaOf<C>, String), StoreError> {
    let meta = read_meta_bytes(r, path)?;
    codec::decode_snapshot_meta::<C>(&meta)
        .map_err(|e| StoreError::corrupt_value(path, "snapshot meta".to_string(), e))
}

/// The id in the header of a snapshot file (as openraft hands it to the network), read from
/// its start; the file is left at its start; `path` names it in errors. A chunked transfer
/// announces the snapshot under this id: releases on openraft 0.9 refuse a file whose header
/// names another.
pub fn snapshot_id(file: &mut File, path: &Path) -> Result<String, StoreError> {
    let io = |e: io::Error| StoreError::from_io(path, "reading a snapshot header", e);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let meta = read_meta_bytes(&mut BufReader::new(&mut *file), path)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    codec::snapshot_meta_id(&meta)
        .map_err(|e| StoreError::corrupt_value(path, "snapshot meta".to_string(), e))
}

/// Checks the magic and version and returns the encoded meta.
fn read_meta_bytes(r: &mut impl Read, path: &Path) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let io = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("snapshot header is truncated".to_string())
        } else {
            StoreError::from_io(path, "reading a snapshot header", e)
        }
    };
    let magic: [u8; 8] = read_array(r).map_err(io)?;
    if &magic != MAGIC {
        return Err(StoreError::ForeignFile {
            path: path.to_path_buf(),
            expected: "snapshot",
            reason: "it does not start with the snapshot magic".to_string(),
        });
    }
    let version = u32::from_be_bytes(read_array(r).map_err(io)?);
    if version != VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    let meta_len = u32::from_be_bytes(read_array(r).map_err(io)?);
    if meta_len > MAX_META_LEN {
        return Err(corrupt(format!(
            "snapshot meta length {meta_len} is implausible"
        )));
    }
    read_exact_vec(r, meta_len as usize).map_err(io)
}

fn write_len_u32(w: &mut impl Write, len: usize) -> io::Result<()> {
    // redb caps keys and values at 3 GiB, so every length fits in u32.
    let len = u32::try_from(len).map_err(|_| io::Error::other("value longer than 4 GiB"))?;
    w.write_all(&len.to_be_bytes())
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    Ok(read_array::<1>(r)?[0])
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut out = [0; N];
    r.read_exact(&mut out)?;
    Ok(out)
}

/// Reads exactly `len` bytes without trusting `len` for the allocation: a corrupt length
/// fails at the end of the input instead of allocating gigabytes up front.
fn read_exact_vec(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(len as u64).read_to_end(&mut out)?;
    if out.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(out)
}

struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Copies everything read to `copy`, so a received snapshot is verified, installed and kept
/// in one pass over its bytes.
struct TeeReader<R, W: Write> {
    inner: R,
    copy: BufWriter<W>,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;

    use crate::{Entry, LeaderId, LogId};

    use super::*;
    use crate::testing::{KvCommand, KvConfig, open_kv};

    /// A build that finishes after a newer snapshot was published (installed from the leader,
    /// say) must not replace it: the log behind the newer one may already be purged.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (_log, sm) = open_kv(dir.path()).expect("open");
        let entries: Vec<Entry<KvConfig>> = (0..100)
            .map(|i| Entry::<KvConfig> {
                log_id: LogId::new(LeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(KvCommand::Delete {
                    key: i.to_be_bytes().to_vec(),
                }),
            })
            .collect();
        runtime.block_on(sm.apply_entries(entries)).expect("apply");
        let newer = runtime
            .block_on(sm.build_snapshot_now())
            .expect("build")
            .meta;

        let snapshots = SnapshotDir::open(dir.path().join("snapshots")).expect("dir");
        let mut older = newer.clone();
        older.last_log_id = Some(LogId::new(LeaderId::new(1, 1), 10));
        let mut tmp = snapshots.temp_file().expect("temp");
        let tmp_path = tmp.path().to_path_buf();
        let txn = sm.begin_read().expect("read");
        export::<KvConfig>(
            &txn,
            &older,
            "older",
            tmp.as_file_mut(),
            sm.path(),
            &tmp_path,
        )
        .expect("export");

        assert!(!snapshots.publish::<KvConfig>(tmp, &older).expect("publish"));
        let current = snapshots
            .current::<KvConfig>()
            .expect("current")
            .expect("present");
        assert_eq!(current.meta, newer);
        assert!(!tmp_path.exists(), "the unpublished file is removed");
    }

    /// Every build has an id of its own, in its file's header, where a sender reads it.
    #[test]
    fn each_build_is_named_in_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (_log, sm) = open_kv(dir.path()).expect("open");
        let mut first = runtime.block_on(sm.build_snapshot_now()).expect("build");
        let second = runtime.block_on(sm.build_snapshot_now()).expect("build");
        assert_ne!(first.id, second.id);
        let read = snapshot_id(&mut first.file, Path::new("first")).expect("id");
        assert_eq!(read, first.id);
        let mut rest = Vec::new();
        first.file.read_to_end(&mut rest).expect("read");
        assert!(rest.starts_with(MAGIC), "the file is left at its start");
    }
}
