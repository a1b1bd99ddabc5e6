//! Recovery after a crash that rolled a lazily synced state back behind the log's committed
//! index. Found by the crash test (issue 17: "committed … is beyond the log", about one replay
//! in three of its seed): the test's child, restarted, truncated the log from just after its
//! rolled-back state, below the committed index, which Raft never does; a crash before the
//! next append then left the committed log id past the end of the log. The store now refuses
//! such a truncation, and the crash tests' workload applies up to the committed index first,
//! as openraft does.

use std::time::Duration;

use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use raft_store::testing::power_loss::{Directory, Disk, Power, Survival};
use raft_store::testing::{KvCommand, KvConfig, open_kv_on};
use raft_store::{Entry, LeaderId, LogId};
use raft_store::{Options, StoreError};

fn put(index: u64) -> Entry<KvConfig> {
    Entry::<KvConfig> {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(KvCommand::Put {
            key: index.to_be_bytes().to_vec(),
            value: vec![7; 32],
        }),
    }
}

#[tokio::test]
async fn a_truncation_of_committed_entries_after_a_crash_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_disk, state_disk) = (Directory::new(), Disk::new());
    let lazily = Options {
        state_sync_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    {
        let power = Power::on();
        let (log, sm) =
            open_kv_on(dir.path(), &log_disk, &state_disk, &power, &lazily).expect("open");
        log.append_durably((1..=10).map(put).collect())
            .await
            .expect("append");
        log.save_committed_lazily(put(10).log_id)
            .await
            .expect("commit");
        sm.apply_entries((1..=10).map(put).collect())
            .await
            .expect("apply");
        // The next append makes the committed log id durable; the applied state is not.
        log.append_durably((11..=12).map(put).collect())
            .await
            .expect("append");
        power.cut_now();
    }
    // A killed process: everything it wrote is kept, but redb's lazy commits never reached the
    // file's header.
    log_disk.power_cycle(Survival::Everything, 0);
    state_disk.power_cycle(Survival::Everything, 0);

    let (log, sm) =
        open_kv_on(dir.path(), &log_disk, &state_disk, &Power::on(), &lazily).expect("reopen");
    assert_eq!(
        sm.applied().await.expect("applied").0,
        None,
        "state rolled back"
    );
    assert_eq!(
        log.committed().await.expect("committed"),
        Some(put(10).log_id)
    );

    // What the crash test's child did: truncate from just after its rolled-back state.
    match log.truncate_since(5).await {
        Err(StoreError::Invariant { detail, .. }) => {
            assert!(detail.contains("committed"), "{detail}")
        }
        other => panic!("a truncation below the committed index must be refused: {other:?}"),
    }
    assert_eq!(
        log.entries(..).await.expect("entries").len(),
        12,
        "the refused truncation removed nothing"
    );
    // Uncommitted entries may still be truncated.
    log.truncate_since(11)
        .await
        .expect("truncating after the committed index");
    let last = log.log_state().await.expect("log state").last_log_id;
    assert_eq!(last, Some(put(10).log_id));
}
