//! Snapshots on real replicas in one process (`[::1]`, port 0): when the schedule builds one
//! (by entries, then by the log's bytes against the last snapshot's), and a new replica
//! catching up through one before it replaces an old member.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;

use master_cluster::replica::{ReplicaConfig, Role};
use master_cluster::server::Replica;
use master_cluster::state::model::{Actor, UserId};
use master_cluster::state::{Op, sample};
use test_kit::in_process::{self, SR, add_computer, command, request, tempdirs};

const WAIT: Option<Duration> = Some(in_process::WAIT);
const LOGS: &str = "snapshots=info,master_cluster=info,openraft=warn";

/// Snapshots every 20 entries, keeping 5 behind: a short run purges the log.
fn compacting(config: &mut ReplicaConfig) {
    config.snapshots = raft_store::SnapshotSchedule {
        every: 20,
        log_percent: 0,
    };
    config.raft.max_in_snapshot_log_to_keep = 5;
    config.raft.purge_batch_size = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_joins_by_snapshot_and_replaces_an_old_one() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(4);
    let replicas = in_process::cluster(&dirs[..3], compacting)
        .await
        .expect("a cluster");
    let leader_id = in_process::leader(&replicas.iter().collect::<Vec<_>>())
        .await
        .expect("a leader");

    tracing::info!("--- enough writes that every replica snapshots and purges its log");
    add_computer(&replicas[0], "COMP-1", 100, true).await;
    for n in 0..60u64 {
        let user = Actor::User(UserId::from("alice"));
        replicas[(n % 3) as usize]
            .write(command(10 + n, user, request(&format!("vm-{n}"))))
            .await
            .expect("write");
    }
    let leader = replicas
        .iter()
        .find(|r| r.id() == leader_id)
        .expect("leader");
    leader
        .raft()
        .wait(WAIT)
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > 20),
            "the leader purged its log",
        )
        .await
        .expect("purged");

    tracing::info!("--- replica 4 joins as a learner and catches up through a snapshot");
    let newcomer = in_process::start(4, dirs[3].path(), 0, compacting)
        .await
        .expect("starts");
    let refused = replicas
        .iter()
        .find(|r| r.id() != leader_id)
        .expect("a follower")
        .add_learner(4, newcomer.node(), Duration::from_secs(10))
        .await;
    assert!(refused.is_err(), "a follower cannot change membership");
    leader
        .add_learner(4, newcomer.node(), Duration::from_secs(20))
        .await
        .expect("learner added and caught up");
    let snapshot = newcomer
        .state()
        .current_snapshot()
        .await
        .expect("snapshot")
        .expect("the newcomer installed a snapshot");
    tracing::info!(snapshot = %snapshot.meta, "installed");
    let applied = leader.applied_index();
    let mut everyone: Vec<&Replica> = replicas.iter().collect();
    everyone.push(&newcomer);
    in_process::assert_identical(&everyone, applied)
        .await
        .expect("identical replicas");

    tracing::info!("--- it becomes a voter, a follower leaves, and writes go on through it");
    let leaving = replicas
        .iter()
        .find(|r| r.id() != leader_id)
        .expect("a follower")
        .id();
    leader.promote([4].into()).await.expect("promoted");
    // Every member is up and answers.
    let answering = leader.members().iter().map(|m| m.id).collect();
    leader
        .remove([leaving].into(), &answering)
        .await
        .expect("removed");
    let members = leader.members();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&leaving) && ids.contains(&4), "{members:?}");
    assert!(
        members.iter().all(|m| m.role != Role::Learner),
        "{members:?}"
    );
    assert!(
        members
            .iter()
            .filter(|m| m.id != leader_id)
            .all(|m| m.lag.is_some()),
        "the leader knows every lag"
    );
    newcomer
        .write(command(
            100,
            Actor::User(UserId::from("bob")),
            request("after-join"),
        ))
        .await
        .expect("a write through the new voter")
        .response
        .expect("accepted");

    newcomer.shutdown().await.expect("shutdown");
    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

/// A request for `title` with 2 KiB of parameters: its log entry weighs about what it adds to
/// the state.
fn weighty_request(title: &str) -> Op {
    let mut request = sample::instance_request(title, SR);
    request.parameters.insert("config".into(), "x".repeat(2048));
    Op::RequestInstance(request)
}

/// The snapshot schedule by size, on a real replica: the first snapshot after `every`
/// entries; then more than `every` entries that weigh less than that snapshot trigger none;
/// once the log outweighs it, the next one comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_waits_until_the_log_weighs_as_much_as_the_last_one() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(1);
    let replicas = in_process::cluster(&dirs, |config| {
        config.snapshots = raft_store::SnapshotSchedule {
            every: 20,
            log_percent: 100,
        };
        config.raft.max_in_snapshot_log_to_keep = 0;
        config.raft.purge_batch_size = 1;
    })
    .await
    .expect("a cluster");
    let replica = &replicas[0];
    // Its 2,000 partitions weigh about 480 KB in any snapshot: more than twice the 90 entries
    // below the test writes before it expects the log to outweigh one, wherever the first
    // snapshot falls among the first 60.
    add_computer(replica, "COMP-1", 2000, true).await;
    let mut written = 0u64;
    let mut write = async |count: u64| {
        for _ in 0..count {
            let user = Actor::User(UserId::from("alice"));
            replica
                .write(command(
                    10 + written,
                    user,
                    weighty_request(&format!("vm-{written}")),
                ))
                .await
                .expect("write");
            written += 1;
        }
    };
    let metrics = replica.metrics().clone();

    tracing::info!("--- 60 entries: the first snapshot, by count");
    write(60).await;
    let first = replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.snapshot.is_some(), "a first snapshot")
        .await
        .expect("a snapshot")
        .snapshot
        .expect("its log id")
        .index;
    replica
        .raft()
        .wait(WAIT)
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= first),
            "the log purged up to it",
        )
        .await
        .expect("purged");
    let snapshot_bytes = replica
        .state()
        .snapshot_bytes()
        .expect("its size")
        .expect("a snapshot file");
    let scheduled = metrics.snapshots_scheduled.get();

    tracing::info!(
        snapshot_bytes,
        "--- 30 entries, lighter than the snapshot: none"
    );
    let entries = 30;
    write(entries).await;
    assert!(
        (60 + entries) * 2600 < snapshot_bytes,
        "the test needs entries lighter than the snapshot of {snapshot_bytes} bytes"
    );
    // The schedule sets the gauges after it decided: once they show these entries, their
    // decision is made.
    test_kit::cluster::wait_for("the schedule to weigh the new entries", || async {
        let weighed =
            metrics.raft_log_bytes.get() >= entries * 2048 && metrics.snapshot_bytes.get() > 0;
        weighed.then_some(())
    })
    .await
    .expect("weighed");
    assert_eq!(
        metrics.snapshots_scheduled.get(),
        scheduled,
        "a snapshot was triggered with {} log bytes against a snapshot of {}",
        metrics.raft_log_bytes.get(),
        metrics.snapshot_bytes.get()
    );
    assert_eq!(
        replica
            .raft()
            .metrics()
            .borrow_watched()
            .snapshot
            .map(|s| s.index),
        Some(first)
    );

    tracing::info!("--- the log outweighs it: the next snapshot");
    write(snapshot_bytes / 2048 + 1).await;
    replica
        .raft()
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index > first),
            "a second snapshot",
        )
        .await
        .expect("a second snapshot");
    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}
