//! Three replicas on real sockets (`[::1]`, port 0) in one process: writes through a follower,
//! identical state on every replica, the leader stopped and writes going on, and the stopped
//! replica restarted from its data directory catching up.

use std::time::Duration;

use master_cluster::replica::{Consistency, WriteError};
use master_cluster::server::Replica;
use master_cluster::state::model::{
    Actor, ComputerId, Placement, SoftwareReleaseUrl, SupplyState, UserId,
};
use master_cluster::state::{InstanceSummary, Op, Outcome, Response, query};
use test_kit::in_process::{self, SR, add_computer, command, computer, request, tempdirs};

const LOGS: &str = "replicas=info,master_cluster=info,openraft=warn";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_any_replica_and_survive_the_leader() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    tracing::info!("--- bootstrap: replica 1 initialises the three-voter cluster");
    let mut replicas = in_process::cluster(&dirs, |_| {}).await.expect("a cluster");
    let leader = in_process::leader(&replicas.iter().collect::<Vec<_>>())
        .await
        .expect("a leader");
    tracing::info!(leader, "elected");

    tracing::info!("--- a follower accepts writes: it forwards them to the leader");
    let follower = replicas
        .iter()
        .find(|r| r.id() != leader)
        .expect("a follower");
    let admin = Actor::Operator(UserId::from("admin"));
    follower
        .write(command(
            1,
            Actor::Computer(ComputerId::from("COMP-1")),
            computer("COMP-1", 4),
        ))
        .await
        .expect("write")
        .response
        .expect("registered");
    follower
        .write(command(
            2,
            admin.clone(),
            Op::Supply {
                computer: ComputerId::from("COMP-1"),
                url: SoftwareReleaseUrl::from(SR),
                state: SupplyState::Available,
            },
        ))
        .await
        .expect("write")
        .response
        .expect("supplied");
    let placed = follower
        .write(command(
            3,
            Actor::User(UserId::from("alice")),
            request("vm0"),
        ))
        .await
        .expect("write")
        .response;
    let first = instance_of(placed);
    assert!(
        matches!(first.placement, Placement::Partition(_)),
        "{first:?}"
    );
    let applied = leader_applied(&replicas, leader);
    in_process::assert_identical(&replicas.iter().collect::<Vec<_>>(), applied)
        .await
        .expect("identical replicas");

    tracing::info!("--- the leader stops; the others elect a new one and keep committing");
    let position = replicas
        .iter()
        .position(|r| r.id() == leader)
        .expect("leader");
    let stopped = replicas.remove(position);
    let stopped_id = stopped.id();
    let stopped_dir = dirs[position].path().to_path_buf();
    let stopped_port = stopped.local_addr().port();
    stopped.shutdown().await.expect("shutdown");
    let survivors: Vec<&Replica> = replicas.iter().collect();
    let second = survivors[1]
        .write(command(
            4,
            Actor::User(UserId::from("alice")),
            request("vm1"),
        ))
        .await
        .expect("a write commits after the leader is gone")
        .response;
    let second = instance_of(second);
    assert_ne!(
        second.placement, first.placement,
        "two instances, two partitions"
    );
    let new_leader = in_process::leader(&survivors).await.expect("a leader");
    assert_ne!(new_leader, leader);
    // The acknowledged write before the failover is still there.
    let txn = survivors[0].state().begin_read().expect("read");
    let view = query::instance(&txn, first.guid)
        .expect("query")
        .expect("kept");
    assert_eq!(view.instance.placement, first.placement);
    drop(txn);

    tracing::info!("--- the stopped replica restarts from its data directory and catches up");
    let restarted = in_process::restart(stopped_id, &stopped_dir, stopped_port)
        .await
        .expect("restarts");
    replicas.push(restarted);
    let all: Vec<&Replica> = replicas.iter().collect();
    let applied = leader_applied(&replicas, new_leader);
    in_process::assert_identical(&all, applied)
        .await
        .expect("identical replicas");

    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

/// The summary a request answered; anything else fails the test.
fn instance_of(response: Response) -> InstanceSummary {
    match response {
        Ok(Outcome::Instance(summary)) => summary,
        other => panic!("request answered {other:?}"),
    }
}

fn leader_applied(replicas: &[Replica], leader: u64) -> u64 {
    replicas
        .iter()
        .find(|r| r.id() == leader)
        .expect("leader present")
        .applied_index()
}

/// Shuts down replicas shared with tasks that have finished.
async fn shutdown_shared(replicas: Vec<std::sync::Arc<Replica>>) {
    for replica in replicas {
        std::sync::Arc::into_inner(replica)
            .expect("no other handle")
            .shutdown()
            .await
            .expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_all_replicas_take_distinct_partitions() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    let replicas: Vec<std::sync::Arc<Replica>> = in_process::cluster(&dirs, |_| {})
        .await
        .expect("a cluster")
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    for n in 0..4 {
        add_computer(&replicas[0], &format!("COMP-{n}"), 60, true).await;
    }

    tracing::info!("--- 200 requests at once, spread over the three replicas");
    let before = replicas[0]
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let replica = std::sync::Arc::clone(&replicas[(n % 3) as usize]);
        tasks.spawn(async move {
            let user = Actor::User(UserId(format!("user-{}", n % 7)));
            replica
                .write(command(100 + n, user, request(&format!("vm-{n}"))))
                .await
        });
    }
    let mut partitions = std::collections::BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let answer = joined.expect("task").expect("write").response;
        let summary = instance_of(answer);
        let Placement::Partition(partition) = summary.placement else {
            panic!("not placed: {summary:?}");
        };
        assert!(
            partitions.insert(partition.clone()),
            "{partition} given twice"
        );
    }
    assert_eq!(partitions.len(), 200);
    let after = replicas[0]
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    tracing::info!(
        entries = after - before,
        "log entries that carried the 200 requests"
    );
    assert!(
        after - before < 200,
        "the leader coalesced concurrent writes into fewer entries"
    );

    // `after` is a linearizable read index: it covers every write above.
    in_process::assert_identical(
        &replicas.iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
        after,
    )
    .await
    .expect("identical replicas");
    shutdown_shared(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_write_see_it_on_every_replica() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    let replicas = in_process::cluster(&dirs, |_| {}).await.expect("a cluster");
    add_computer(&replicas[1], "COMP-1", 2, false).await;

    tracing::info!("--- a write acknowledged through one replica...");
    let supply = Op::Supply {
        computer: ComputerId::from("COMP-1"),
        url: SoftwareReleaseUrl::from(SR),
        state: SupplyState::Available,
    };
    let written = replicas[2]
        .write(command(2, Actor::Operator(UserId::from("admin")), supply))
        .await
        .expect("write");
    written.response.expect("supplied");

    tracing::info!("--- ...is seen by a linearizable read on every replica");
    for replica in &replicas {
        let index = replica
            .read_barrier(Consistency::Linearizable)
            .await
            .expect("read index");
        assert!(
            index >= written.index,
            "replica {} read at {index} < {}",
            replica.id(),
            written.index
        );
        let txn = replica.state().begin_read().expect("read");
        let view = query::computer_view(&txn, &ComputerId::from("COMP-1"))
            .expect("query")
            .expect("registered");
        assert_eq!(
            view.software.len(),
            1,
            "replica {} misses the supply",
            replica.id()
        );
    }

    tracing::info!("--- and by a node read with min_index set to the write's index");
    for replica in &replicas {
        replica
            .wait_applied(written.index, Duration::from_secs(10))
            .await
            .expect("applied");
        assert!(replica.applied_index() >= written.index);
    }
    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_its_computer_changes() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    let replicas: Vec<std::sync::Arc<Replica>> = in_process::cluster(&dirs, |_| {})
        .await
        .expect("a cluster")
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let mut last = 0;
    for id in ["COMP-1", "COMP-2"] {
        last = add_computer(&replicas[0], id, 2, false).await;
    }
    let leader = in_process::leader(&replicas.iter().map(|r| r.as_ref()).collect::<Vec<_>>())
        .await
        .expect("a leader");
    let follower = std::sync::Arc::clone(
        replicas
            .iter()
            .find(|r| r.id() != leader)
            .expect("a follower"),
    );
    follower
        .wait_applied(last, Duration::from_secs(10))
        .await
        .expect("applied");
    let comp1 = ComputerId::from("COMP-1");
    let first = follower
        .poll_computer(&comp1, None, Duration::ZERO)
        .await
        .expect("poll");
    assert!(first.view.is_some() && first.version > 0);

    tracing::info!("--- with nothing new, a long-poll answers after its wait, unchanged");
    let quiet = follower
        .poll_computer(&comp1, Some(first.version), Duration::from_millis(200))
        .await
        .expect("poll");
    assert_eq!(quiet.version, first.version);

    tracing::info!("--- a change to another computer does not answer it");
    let poller = {
        let follower = std::sync::Arc::clone(&follower);
        let comp1 = comp1.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let poll = follower
                .poll_computer(&comp1, Some(first.version), Duration::from_secs(10))
                .await
                .expect("poll");
            (poll, started, tokio::time::Instant::now())
        })
    };
    let supply = |computer: &str| Op::Supply {
        computer: ComputerId::from(computer),
        url: SoftwareReleaseUrl::from(SR),
        state: SupplyState::Available,
    };
    let admin = Actor::Operator(UserId::from("admin"));
    let other = replicas[0]
        .write(command(2, admin.clone(), supply("COMP-2")))
        .await
        .expect("write");
    follower
        .wait_applied(other.index, Duration::from_secs(10))
        .await
        .expect("applied");
    assert!(
        !poller.is_finished(),
        "a change to COMP-2 answered a poll on COMP-1"
    );

    tracing::info!("--- a change to its computer answers it");
    replicas[0]
        .write(command(3, admin, supply("COMP-1")))
        .await
        .expect("write");
    let acknowledged = tokio::time::Instant::now();
    let (poll, started, answered) = poller.await.expect("poll task");
    assert!(poll.version > first.version);
    let view = poll.view.expect("known computer");
    assert_eq!(view.software.len(), 1, "the answer holds the change");
    assert!(
        answered - started < Duration::from_secs(5),
        "the change, not the 10 s wait, answered the poll"
    );
    tracing::info!(
        after_acknowledgement = ?answered.saturating_duration_since(acknowledged),
        "the follower's long-poll answered"
    );
    drop(follower);
    shutdown_shared(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_liveness_reaches_the_log_only_as_summaries_and_silence_as_alerts() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    let replicas = in_process::cluster(&dirs, |_| {}).await.expect("a cluster");
    for id in ["COMP-1", "COMP-2"] {
        add_computer(&replicas[0], id, 2, false).await;
    }
    let before = replicas[0]
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    let (comp1, comp2) = (ComputerId::from("COMP-1"), ComputerId::from("COMP-2"));
    let version = |replica: &Replica, id: &ComputerId| {
        query::computer_version(&replica.state().begin_read().expect("read"), id).expect("version")
    };
    let versions_before = (version(&replicas[0], &comp1), version(&replicas[0], &comp2));

    tracing::info!("--- 150 polls over three replicas write nothing");
    for n in 0..150 {
        let (replica, id) = match n % 5 {
            4 => (&replicas[0], ComputerId::from("COMP-unregistered")),
            3 => (&replicas[n % 3], comp2.clone()),
            _ => (&replicas[n % 3], comp1.clone()),
        };
        replica
            .poll_computer(&id, None, Duration::ZERO)
            .await
            .expect("poll");
    }
    let after_polls = replicas[0]
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    assert_eq!(after_polls, before, "a poll must never be a write");

    tracing::info!("--- one summary per replica records them");
    let mut covered = 0;
    for replica in &replicas {
        covered += replica.flush_liveness().await.expect("summary");
        assert_eq!(
            replica.flush_liveness().await.expect("summary"),
            0,
            "nothing new to say"
        );
    }
    assert_eq!(
        covered,
        2 + 2 + 3,
        "COMP-1 and COMP-2 everywhere, plus the unknown one on replica 1"
    );
    let after = replicas[0]
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    assert!(
        after - before <= 3,
        "{} entries for three summaries",
        after - before
    );
    for replica in &replicas {
        replica
            .wait_applied(after, Duration::from_secs(10))
            .await
            .expect("applied");
        let txn = replica.state().begin_read().expect("read");
        for id in [&comp1, &comp2] {
            let view = query::computer_view(&txn, id)
                .expect("query")
                .expect("known");
            assert!(
                view.last_seen.is_some(),
                "replica {} has no liveness for {id}",
                replica.id()
            );
        }
    }
    assert_eq!(
        (version(&replicas[0], &comp1), version(&replicas[0], &comp2)),
        versions_before,
        "a summary wakes no long-poll"
    );

    tracing::info!("--- the leader looks for silent nodes; the others leave it to it");
    let leader = in_process::leader(&replicas.iter().collect::<Vec<_>>())
        .await
        .expect("a leader");
    let open_alerts = |replica: &Replica| {
        let txn = replica.state().begin_read().expect("read");
        query::alerts(&txn, false, usize::MAX, |_| Ok(true))
            .expect("alerts")
            .into_iter()
            .map(|alert| alert.title)
            .collect::<Vec<_>>()
    };
    for replica in &replicas {
        let checked = replica
            .check_silence(Duration::from_secs(60))
            .await
            .expect("a check");
        assert_eq!(checked, replica.id() == leader, "replica {}", replica.id());
    }
    assert!(open_alerts(&replicas[0]).is_empty(), "polled just now");
    // Nothing polls any more: within a few seconds, a check at 1 s finds both silent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let leading = replicas
        .iter()
        .find(|r| r.id() == leader)
        .expect("the leader");
    while open_alerts(leading).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no silence found");
        tokio::time::sleep(Duration::from_millis(100)).await;
        leading
            .check_silence(Duration::from_secs(1))
            .await
            .expect("a check");
    }
    tracing::info!("--- COMP-1 polls again: its alert closes with the next summary");
    replicas[1]
        .poll_computer(&comp1, None, Duration::ZERO)
        .await
        .expect("poll");
    replicas[1].flush_liveness().await.expect("summary");
    let barrier = leading
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("read index");
    leading
        .wait_applied(barrier, Duration::from_secs(10))
        .await
        .expect("applied");
    assert_eq!(open_alerts(leading), ["COMP-2"]);
    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_leader_cannot_commit_is_answered_and_later_writes_go_on() {
    test_kit::init_tracing(LOGS);
    let dirs = tempdirs(3);
    let mut replicas = in_process::cluster(&dirs, |config| {
        config.write_timeout = Duration::from_secs(2);
    })
    .await
    .expect("a cluster");
    let leader = in_process::leader(&replicas.iter().collect::<Vec<_>>())
        .await
        .expect("a leader");
    add_computer(&replicas[0], "COMP-1", 4, true).await;

    tracing::info!("--- both followers stop: the leader appends but cannot commit");
    let position = replicas
        .iter()
        .position(|r| r.id() == leader)
        .expect("leader");
    let the_leader = replicas.remove(position);
    let mut stopped = Vec::new();
    for follower in replicas {
        stopped.push((follower.id(), follower.local_addr().port()));
        follower.shutdown().await.expect("shutdown");
    }
    let unanswerable = command(10, Actor::User(UserId::from("alice")), request("vm0"));
    let answer = tokio::time::timeout(Duration::from_secs(60), the_leader.write(unanswerable))
        .await
        .expect("answered: a write that cannot commit must not wait for ever");
    assert!(
        matches!(
            answer,
            Err(WriteError::TimedOut(_) | WriteError::NoLeader(_))
        ),
        "{answer:?}"
    );

    tracing::info!("--- the followers come back: the next write through the leader commits");
    let mut all = vec![the_leader];
    for (id, port) in stopped {
        let dir = dirs[usize::try_from(id - 1).expect("small")].path();
        all.push(in_process::restart(id, dir, port).await.expect("restarts"));
    }
    let written = tokio::time::timeout(
        Duration::from_secs(60),
        all[0].write(command(
            11,
            Actor::User(UserId::from("alice")),
            request("vm1"),
        )),
    )
    .await
    .expect("the writer is not stuck behind the unanswered batch")
    .expect("committed");
    instance_of(written.response);
    for replica in all {
        replica.shutdown().await.expect("shutdown");
    }
}
