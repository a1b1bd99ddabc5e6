//! Snapshots as a receiving replica sees them: a damaged one is never installed, not even in
//! part, and equal states give equal snapshot bodies (which lets replicas be compared).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use raft_store::testing::{KvApp, KvCommand, KvConfig, open_kv};
use raft_store::{AppliedState, SnapshotFile, StateMachineStore, StoreError};
use raft_store::{Entry, LeaderId, LogId};

type Sm = StateMachineStore<KvConfig, KvApp>;

fn puts(from: u64, to: u64, tag: &str) -> Vec<Entry<KvConfig>> {
    (from..to)
        .map(|i| Entry::<KvConfig> {
            log_id: LogId::new(LeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(KvCommand::Put {
                key: format!("instance/{}", i % 30).into_bytes(),
                value: format!("{tag}-{i}").repeat(10).into_bytes(),
            }),
        })
        .collect()
}

async fn state_machine(dir: &Path, entries: Vec<Entry<KvConfig>>) -> Sm {
    let (_log, sm) = open_kv(dir).expect("open");
    sm.apply_entries(entries).await.expect("apply");
    sm
}

fn rows(sm: &Sm) -> BTreeMap<Vec<u8>, Vec<u8>> {
    raft_store::testing::kv_rows(&sm.begin_read().expect("read")).expect("kv rows")
}

/// Everything a receiver must keep when it refuses a snapshot.
async fn observable(
    sm: &Sm,
) -> (
    AppliedState<KvConfig>,
    BTreeMap<Vec<u8>, Vec<u8>>,
    Option<Vec<u8>>,
) {
    let current = sm.current_snapshot().await.expect("current");
    (
        sm.applied().await.expect("applied"),
        rows(sm),
        current.map(bytes_of),
    )
}

fn bytes_of(mut snapshot: SnapshotFile<KvConfig>) -> Vec<u8> {
    let mut bytes = Vec::new();
    snapshot.file.seek(SeekFrom::Start(0)).expect("seek");
    snapshot.file.read_to_end(&mut bytes).expect("read");
    bytes
}

fn file_with(bytes: &[u8]) -> fs::File {
    let mut file = tempfile::tempfile().expect("tempfile");
    file.write_all(bytes).expect("write");
    file
}

async fn refuses(sm: &Sm, meta: raft_store::SnapshotMetaOf<KvConfig>, bytes: &[u8]) -> StoreError {
    let before = observable(sm).await;
    let error = sm
        .install_snapshot_file(meta, file_with(bytes))
        .await
        .expect_err("a damaged snapshot must be refused");
    assert_eq!(
        observable(sm).await,
        before,
        "a refused snapshot changed the state"
    );
    error
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_the_old_state_kept() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let leader = state_machine(dirs[0].path(), puts(0, 100, "leader")).await;
    let snapshot = leader.build_snapshot_now().await.expect("build");
    let meta = snapshot.meta.clone();
    let good = bytes_of(snapshot);

    let follower = state_machine(dirs[1].path(), puts(0, 10, "follower")).await;
    follower
        .build_snapshot_now()
        .await
        .expect("follower's own snapshot");

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let error = refuses(&follower, meta.clone(), &flipped).await;
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("checksum mismatch"), "{error}");

    let error = refuses(&follower, meta.clone(), &good[..good.len() * 2 / 3]).await;
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(
        error.to_string().contains("ends before its end record"),
        "{error}"
    );

    let mut other = meta.clone();
    other.last_log_id = Some(LogId::new(LeaderId::new(9, 9), 500));
    let error = refuses(&follower, other, &good).await;
    assert!(
        error.to_string().contains("disagrees with the announced"),
        "{error}"
    );

    let error = refuses(&follower, meta.clone(), b"not a snapshot at all").await;
    assert!(matches!(error, StoreError::ForeignFile { .. }), "{error:?}");

    // The intact snapshot installs, replacing the follower's state and its current snapshot.
    follower
        .install_snapshot_file(meta.clone(), file_with(&good))
        .await
        .expect("install");
    assert_eq!(rows(&follower), rows(&leader));
    assert_eq!(
        follower.applied().await.expect("applied").0,
        meta.last_log_id
    );
    let current = follower
        .current_snapshot()
        .await
        .expect("current")
        .expect("published");
    assert_eq!(current.meta, meta);
}

#[tokio::test]
async fn equal_states_give_equal_snapshot_bodies() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut bodies = Vec::new();
    for dir in &dirs {
        let sm = state_machine(dir.path(), puts(0, 300, "same")).await;
        let bytes = bytes_of(sm.build_snapshot_now().await.expect("build"));
        // Skip the header (its snapshot id differs per build) and the trailing checksum.
        let meta_len = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        bodies.push(bytes[16 + meta_len..bytes.len() - 4].to_vec());
    }
    assert!(bodies[0].len() > 300 * 10, "the body holds the rows");
    assert_eq!(bodies[0], bodies[1]);
}
