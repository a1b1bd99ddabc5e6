//! The write-ahead log on a real directory: a torn last frame is cut back, every other damage
//! is refused as corruption naming the segment (and the file is left as it was), purged
//! segments are recycled, and a data directory written by the release before the WAL (its log
//! in `log.redb`, `tests/fixtures/redb-log-v1`, made by that release) is converted once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use raft_store::testing::{KvApp, KvCommand, KvConfig, open_kv_with};
use raft_store::{DataDir, LogStore, Options, StateMachineStore, StoreError};
use raft_store::{Entry, LeaderId, LogId, Vote};

type Store = (LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>);

fn put(index: u64) -> Entry<KvConfig> {
    Entry::<KvConfig> {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(KvCommand::Put {
            key: index.to_be_bytes().to_vec(),
            // Not a single zero byte: a zero sector in a frame is then a lost one.
            value: vec![0xA5; 700],
        }),
    }
}

fn options() -> Options {
    Options {
        log_segment_bytes: 64 << 10,
        ..Default::default()
    }
}

fn open(dir: &Path) -> Result<Store, StoreError> {
    open_kv_with(dir, &options())
}

/// Drops the store and waits until its log's files are closed.
fn close(store: Store) {
    let closed = store.0.closed_probe();
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed() {
        assert!(Instant::now() < deadline, "the log writer did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// Appends entries `0..n` in batches of `batch`, one durable frame each, and closes.
fn written(dir: &Path, n: u64, batch: u64) {
    runtime().block_on(async {
        let store = open(dir).expect("open");
        for first in (0..n).step_by(usize::try_from(batch).expect("small")) {
            let entries = (first..(first + batch).min(n)).map(put).collect();
            store.0.append_durably(entries).await.expect("append");
        }
        close(store);
    });
}

/// Opens `dir`, appends the entries of `range` in one durable frame, closes.
fn appended(dir: &Path, range: std::ops::Range<u64>) {
    runtime().block_on(async {
        let store = open(dir).expect("open");
        store
            .0
            .append_durably(range.map(put).collect())
            .await
            .expect("append");
        close(store);
    });
}

/// Writes 30 entries in three frames, then changes the bytes of the last segment with
/// `damage` (given them and the offsets of their frames), as a crash or a bad disk would.
/// Returns the segment.
fn damaged(dir: &Path, damage: impl FnOnce(&mut [u8], &[usize])) -> PathBuf {
    written(dir, 30, 10);
    let segment = segments(dir).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    let frames = frames(&bytes);
    damage(&mut bytes, &frames);
    fs::write(&segment, &bytes).expect("write");
    segment
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(DataDir::new(dir).log)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("seg-"))
        .collect();
    names.sort();
    names
}

/// The offsets of the frames in a segment file (each starts at a multiple of 4096).
fn frames(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len())
        .step_by(4096)
        .filter(|&at| bytes[at..].starts_with(b"SCW"))
        .collect()
}

fn entries(dir: &Path) -> Vec<u64> {
    runtime().block_on(async {
        let store = open(dir).expect("open");
        let found = store.0.entries(..).await.expect("entries");
        close(store);
        found.iter().map(|e| e.log_id.index).collect()
    })
}

/// Opens `dir`, which must be refused as corrupt naming `file`, and leaves `file` as it was.
fn refused_as_corrupt(dir: &Path, file: &Path) -> String {
    let before = fs::read(file).expect("read");
    let error = match open(dir) {
        Ok(store) => {
            close(store);
            panic!("a damaged log opened")
        }
        Err(e) => e,
    };
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert_eq!(error.path(), file, "{error}");
    assert_eq!(
        fs::read(file).expect("read"),
        before,
        "the file was modified"
    );
    eprintln!("refused as expected: {error}");
    error.to_string()
}

#[test]
fn a_torn_last_frame_is_cut_back_to_the_last_whole_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The crash lost one sector of the last frame: it reads as the zeros written before.
    damaged(dir.path(), |bytes, frames| {
        let last = frames[frames.len() - 1];
        bytes[last + 1024..last + 1536].fill(0);
    });
    assert_eq!(entries(dir.path()), (0..20).collect::<Vec<_>>());
    // The log goes on, and the torn remains never trouble a later open.
    appended(dir.path(), 20..25);
    assert_eq!(entries(dir.path()), (0..25).collect::<Vec<_>>());
    // The torn frame's remains stay behind, in a segment the next one says ends before them.
    assert_eq!(segments(dir.path()).len(), 2);
}

#[test]
fn a_restart_goes_on_in_the_same_segment_when_nothing_follows_its_last_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    written(dir.path(), 10, 10);
    for round in 1..4 {
        appended(dir.path(), round * 10..round * 10 + 10);
    }
    assert_eq!(entries(dir.path()), (0..40).collect::<Vec<_>>());
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "restarts need no new segment"
    );
}

#[test]
fn damage_before_a_whole_frame_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A lost-looking sector, but whole frames follow: not what a crash leaves.
    let segment = damaged(dir.path(), |bytes, frames| {
        bytes[frames[0] + 1024..frames[0] + 1536].fill(0)
    });
    let message = refused_as_corrupt(dir.path(), &segment);
    assert!(message.contains("not a torn write"), "{message}");
}

#[test]
fn a_damaged_last_frame_that_lost_no_sector_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = damaged(dir.path(), |bytes, frames| {
        bytes[frames[frames.len() - 1] + 3000] ^= 0x01
    });
    let message = refused_as_corrupt(dir.path(), &segment);
    assert!(
        message.contains("no sector from there on was lost"),
        "{message}"
    );
}

#[test]
fn a_damaged_frame_header_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = damaged(dir.path(), |bytes, frames| {
        bytes[frames[frames.len() - 1] + 10] ^= 0x01
    });
    let message = refused_as_corrupt(dir.path(), &segment);
    assert!(message.contains("header fails its checksum"), "{message}");
}

#[test]
fn damage_in_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 KiB segments of ~7 KiB frames: several segments.
    written(dir.path(), 200, 10);
    let sealed = segments(dir.path());
    assert!(sealed.len() >= 3, "{sealed:?}");
    let segment = &sealed[0];
    let mut bytes = fs::read(segment).expect("read");
    let last = *frames(&bytes).last().expect("frames");
    // Even a lost-looking sector: this frame was durable before the next segment began.
    bytes[last + 512..last + 1024].fill(0);
    fs::write(segment, &bytes).expect("write");
    let message = refused_as_corrupt(dir.path(), segment);
    assert!(message.contains("next segment says"), "{message}");
}

#[test]
fn purged_segments_are_recycled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = DataDir::new(dir.path()).log;
    let mut names_seen = std::collections::BTreeSet::new();
    runtime().block_on(async {
        let store = open(dir.path()).expect("open");
        let mut next = 0;
        for _ in 0..40 {
            store
                .0
                .append_durably((next..next + 20).map(put).collect())
                .await
                .expect("append");
            next += 20;
            store
                .0
                .purge_upto(put(next - 5).log_id)
                .await
                .expect("purge");
            let files = fs::read_dir(&log_dir).expect("log dir").count();
            // The active segment, the one before it, two spares, the lock.
            assert!(files <= 6, "{files} files in the log directory");
            for entry in fs::read_dir(&log_dir).expect("log dir") {
                names_seen.insert(entry.expect("entry").file_name());
            }
        }
        close(store);
    });
    assert!(
        names_seen
            .iter()
            .any(|n| n.to_string_lossy().starts_with("spare-")),
        "no segment was kept as a spare: {names_seen:?}"
    );
    assert_eq!(entries(dir.path()), (796..800).collect::<Vec<_>>());
}

/// Copies the fixture made by the release before the WAL into a fresh directory.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/redb-log-v1")
}

fn legacy_copy() -> tempfile::TempDir {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("snapshots")).expect("snapshots");
    for name in ["log.redb", "state.redb", "snapshots/current.snapshot"] {
        fs::copy(fixture.join(name), dir.path().join(name)).expect("copy fixture");
    }
    dir
}

/// What the fixture's program wrote (see the note in `tests/fixtures/README.md`).
fn assert_fixture_state(dir: &Path) {
    runtime().block_on(async {
        let (log, sm) = open(dir).expect("open the converted directory");
        let term = |index: u64| if index < 20 { 2 } else { 3 };
        let id = |index: u64| LogId::new(LeaderId::new(term(index), 1), index);
        assert_eq!(
            log.vote().await.expect("vote"),
            Some(Vote::new_committed(3, 1))
        );
        assert_eq!(log.committed().await.expect("committed"), Some(id(29)));
        let state = log.log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(id(24)));
        assert_eq!(state.last_log_id, Some(id(40)));
        let found = log.entries(..).await.expect("entries");
        assert_eq!(
            found.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            (25..=40).map(id).collect::<Vec<_>>()
        );
        assert_eq!(sm.applied().await.expect("applied").0, Some(id(29)));
        close((log, sm));
    });
}

#[test]
fn a_log_written_before_the_wal_is_converted_once() {
    let dir = legacy_copy();
    let paths = DataDir::new(dir.path());
    assert_fixture_state(dir.path());
    let tombstone = fs::read_to_string(&paths.legacy_log).expect("log.redb is a tombstone");
    assert!(
        tombstone.contains("converted to the write-ahead log"),
        "{tombstone}"
    );
    assert!(paths.log.is_dir());
    // Opened again, nothing is converted twice.
    assert_fixture_state(dir.path());
}

#[test]
fn an_interrupted_conversion_is_redone_or_finished() {
    // Interrupted while writing the new log: it is thrown away and the conversion redone.
    let dir = legacy_copy();
    let converting = dir.path().join("log.converting");
    fs::create_dir(&converting).expect("mkdir");
    fs::write(converting.join("seg-0000000000000001.wal"), b"half written").expect("write");
    assert_fixture_state(dir.path());
    assert!(!converting.exists());

    // Interrupted after the new log was moved into place: the old file is removed.
    let dir = legacy_copy();
    let paths = DataDir::new(dir.path());
    assert_fixture_state(dir.path());
    fs::copy(fixture().join("log.redb"), &paths.legacy_log).expect("copy");
    assert_fixture_state(dir.path());
    let tombstone = fs::read_to_string(&paths.legacy_log).expect("log.redb is a tombstone");
    assert!(
        tombstone.contains("converted to the write-ahead log"),
        "{tombstone}"
    );
}

#[test]
fn a_segment_started_but_never_written_is_made_again_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    written(dir.path(), 30, 10);
    let last = segments(dir.path()).pop().expect("a segment");
    let name = last
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let seq = u64::from_str_radix(&name["seg-".len()..name.len() - ".wal".len()], 16)
        .expect("hex sequence number");
    // The next segment was created, and the machine stopped while filling it with zeros.
    let started = last.with_file_name(format!("seg-{:016x}.wal", seq + 1));
    fs::write(&started, vec![0u8; 1000]).expect("write");
    // A crash loop before any frame: each start makes it again, none adds a segment.
    for _ in 0..3 {
        close(open(dir.path()).expect("open"));
    }
    appended(dir.path(), 30..35);
    assert_eq!(entries(dir.path()), (0..35).collect::<Vec<_>>());
    assert_eq!(segments(dir.path()).pop(), Some(started));
}

/// The log's byte count, which the snapshot schedule weighs against a snapshot's size, follows
/// appends, purges and truncations, and is the same (to a record's framing) after a restart.
#[test]
fn the_log_counts_the_bytes_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (before_restart, one) = runtime().block_on(async {
        let store = open(dir.path()).expect("open");
        assert_eq!(store.0.bytes(), 0);
        store
            .0
            .append_durably((0..100).map(put).collect())
            .await
            .expect("append");
        let all = store.0.bytes();
        let one = all / 100;
        assert!((700..800).contains(&one), "{all} bytes for 100 entries");
        store.0.purge_upto(put(49).log_id).await.expect("purge");
        assert_eq!(store.0.bytes(), 50 * one);
        store.0.truncate_since(90).await.expect("truncate");
        assert_eq!(store.0.bytes(), 40 * one);
        // An entry written again in place of another counts once.
        store
            .0
            .append_durably((85..90).map(put).collect())
            .await
            .expect("append");
        assert_eq!(store.0.bytes(), 40 * one);
        let before = store.0.bytes();
        close(store);
        (before, one)
    });
    let store = open(dir.path()).expect("reopen");
    let after = store.0.bytes();
    assert!(
        after >= before_restart && after <= before_restart + 40 * (one / 20),
        "{before_restart} bytes before the restart, {after} after"
    );
    close(store);
}
