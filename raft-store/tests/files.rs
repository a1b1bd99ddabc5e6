//! What the store does with files it must not trust: another program's file, another
//! program's redb database, a corrupt or truncated copy, a newer format, a second opener, and
//! a full disk. Each gives an error naming the file and the cause, and leaves the file as it was.
//! (The log's own torn-write and corruption cases are in `wal.rs`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use raft_store::testing::{KvCommand, KvConfig, open_kv, open_kv_with};
use raft_store::{DataDir, Options, StoreError};
use raft_store::{Entry, LeaderId, LogId};
use redb::{ReadableDatabase, TableDefinition};

/// A value no redb metadata could contain by chance, so tests can find the page holding it.
const MARKER: &[u8; 16] = b"<slapcluster-42>";

fn put(index: u64) -> Entry<KvConfig> {
    let mut value = MARKER.to_vec();
    value.extend_from_slice(&[7; 240]);
    Entry::<KvConfig> {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(KvCommand::Put {
            key: index.to_be_bytes().to_vec(),
            value,
        }),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// A data directory with `n` entries appended and applied, closed again.
fn populated(dir: &Path, n: u64) {
    runtime().block_on(async {
        let (log, sm) = open_kv(dir).expect("open");
        let entries: Vec<_> = (0..n).map(put).collect();
        log.append_durably(entries.clone()).await.expect("append");
        sm.apply_entries(entries).await.expect("apply");
    });
}

fn open_error(dir: &Path) -> StoreError {
    match open_kv(dir) {
        Ok(_) => panic!("{} opened although it must be refused", dir.display()),
        Err(e) => e,
    }
}

/// The log's first segment file: where `populated` wrote its entries.
fn first_segment(paths: &DataDir) -> PathBuf {
    paths.log.join("seg-0000000000000001.wal")
}

fn assert_names(error: &StoreError, file: &Path) {
    eprintln!("refused as expected: {error}");
    assert_eq!(error.path(), file, "{error}");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "the message must name {}: {error}",
        file.display()
    );
}

#[test]
fn another_programs_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = DataDir::new(dir.path());
    let foreign = b"SQLite format 3\0 this is somebody else's database".repeat(100);
    fs::write(&paths.log, &foreign).expect("write");

    let error = open_error(dir.path());
    assert!(matches!(error, StoreError::ForeignFile { .. }), "{error:?}");
    assert_names(&error, &paths.log);
    assert_eq!(
        fs::read(&paths.log).expect("read"),
        foreign,
        "the file was modified"
    );
    assert!(
        !paths.state.exists(),
        "nothing else may be created next to a foreign file"
    );
}

#[test]
fn another_programs_redb_database_is_refused_and_its_data_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = DataDir::new(dir.path());
    const USERS: TableDefinition<&str, u64> = TableDefinition::new("users");
    {
        let db = redb::Database::create(&paths.state).expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(USERS)
            .expect("table")
            .insert("alice", 1)
            .expect("insert");
        txn.commit().expect("commit");
    }

    let error = open_error(dir.path());
    assert!(matches!(error, StoreError::ForeignFile { .. }), "{error:?}");
    assert_names(&error, &paths.state);
    assert!(error.to_string().contains("users"), "{error}");

    let db = redb::Database::open(&paths.state).expect("still a redb database");
    let txn = db.begin_read().expect("read");
    let users = txn
        .open_table(USERS)
        .expect("the foreign table is still there");
    assert_eq!(users.get("alice").expect("get").map(|v| v.value()), Some(1));
}

#[test]
fn a_corrupt_page_is_refused_and_the_file_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = DataDir::new(dir.path());
    populated(dir.path(), 64);

    for file in [&first_segment(&paths), &paths.state] {
        let mut bytes = fs::read(file).expect("read");
        let at = find(&bytes, MARKER).expect("the entries' bytes are in the file");
        bytes[at + 3] ^= 0x55;
        fs::write(file, &bytes).expect("corrupt");

        let error = open_error(dir.path());
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert_names(&error, file);
        assert_eq!(
            fs::read(file).expect("read"),
            bytes,
            "the corrupt file was modified"
        );

        bytes[at + 3] ^= 0x55;
        fs::write(file, &bytes).expect("repair");
    }
    // Restored byte for byte, the directory opens again with its data.
    runtime().block_on(async {
        let (log, sm) = open_kv(dir.path()).expect("open after repair");
        assert_eq!(log.entries(..).await.expect("entries").len(), 64);
        assert_eq!(
            sm.applied().await.expect("applied").0.map(|id| id.index),
            Some(63)
        );
    });
}

#[test]
fn a_truncated_file_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = DataDir::new(dir.path());
    populated(dir.path(), 64);
    for file in [first_segment(&paths), paths.state.clone()] {
        let bytes = fs::read(&file).expect("read");
        let cut = bytes[..bytes.len() / 2].to_vec();
        fs::write(&file, &cut).expect("truncate");

        let error = open_error(dir.path());
        assert!(
            matches!(error, StoreError::Corrupt { .. } | StoreError::Io { .. }),
            "{error:?}"
        );
        assert_names(&error, &file);
        assert_eq!(
            fs::read(&file).expect("read"),
            cut,
            "the truncated file was modified"
        );
        fs::write(&file, &bytes).expect("restore");
    }
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = DataDir::new(dir.path());
    populated(dir.path(), 1);
    const FORMAT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_format");
    {
        let db = redb::Database::open(&paths.state).expect("open");
        let txn = db.begin_write().expect("write");
        let mut marker = b"slapcluster raft state machine".to_vec();
        marker.extend_from_slice(&99u32.to_be_bytes());
        txn.open_table(FORMAT)
            .expect("table")
            .insert("format", marker.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    // The log's frames carry their version in the header ("SCW" and one byte): a header of
    // version 99, with a checksum that holds.
    let segment = first_segment(&paths);
    let original = fs::read(&segment).expect("read");
    let mut newer = original.clone();
    newer[3] = 99;
    let crc = crc32fast::hash(&newer[..28]);
    newer[28..32].copy_from_slice(&crc.to_be_bytes());
    fs::write(&segment, &newer).expect("write");

    for file in [segment.clone(), paths.state.clone()] {
        let error = open_error(dir.path());
        assert!(
            matches!(
                error,
                StoreError::UnsupportedVersion {
                    found: 99,
                    supported: 1,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_names(&error, &file);
        fs::write(&segment, &original).expect("restore");
    }
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _open = open_kv(dir.path()).expect("first open");
    let error = open_error(dir.path());
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    assert_names(&error, &DataDir::new(dir.path()).log);
}

/// Fills a small tmpfs until an append fails: the error says "disk full" and names the log;
/// after space is freed every entry acknowledged before the failure is there, and the store
/// goes on appending.
#[test]
fn a_full_disk_is_reported_and_loses_nothing_acknowledged() {
    if !test_kit::is_root() {
        test_kit::skip!("mounting a tmpfs to fill needs root");
        return;
    }
    let mount = Tmpfs::mount(8 << 20);
    let dir = mount.path.join("replica");
    let paths = DataDir::new(&dir);
    // Segments small enough for the tmpfs: the disk fills while one is started or written.
    let options = Options {
        log_segment_bytes: 256 << 10,
        ..Default::default()
    };
    runtime().block_on(async {
        let (log, sm) = open_kv_with(&dir, &options).expect("open");
        // Leave a little room, then append until the disk is full.
        let filler = mount.path.join("filler");
        let free = free_bytes(&mount.path);
        let filler_len = usize::try_from(free.saturating_sub(1 << 20)).expect("fits in memory");
        fs::write(&filler, vec![0u8; filler_len]).expect("filler");

        let mut acknowledged = 0u64;
        let error = loop {
            let batch: Vec<_> = (acknowledged..acknowledged + 16).map(put).collect();
            match log.append_durably(batch).await {
                Ok(()) => acknowledged += 16,
                Err(e) => break e,
            }
            assert!(acknowledged < 1_000_000, "the disk never filled");
        };
        assert!(matches!(error, StoreError::DiskFull { .. }), "{error:?}");
        assert_names(&error, &paths.log);
        assert!(error.to_string().contains("disk full"), "{error}");
        assert!(
            acknowledged > 0,
            "some appends must succeed before the disk fills"
        );
        drop((log, sm));

        fs::remove_file(&filler).expect("free space");
        let (log, _sm) = open_kv_with(&dir, &options).expect("reopen after freeing space");
        let entries = log.entries(..).await.expect("entries");
        assert!(
            entries.len() as u64 >= acknowledged,
            "{} entries on disk, {acknowledged} were acknowledged",
            entries.len()
        );
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(*entry, put(index as u64));
        }
        let next = entries.len() as u64;
        log.append_durably(vec![put(next)])
            .await
            .expect("append after freeing space");
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// A tmpfs mounted on a temporary directory for the life of the value.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs as root failed: {status}"
        );
        Self {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
