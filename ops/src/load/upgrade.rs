//! `slapload --upgrade-from OLD`: the rolling upgrade of a running cluster, one replica at a
//! time, from the `slapmaster` binary `OLD` to the one under test, with writes going on
//! throughout. It crosses every mixed-version path a real upgrade meets:
//!
//! 1. a follower stopped, then started on the new binary after the old leader compacted its
//!    log past it: the old leader catches it up with a snapshot, in chunks, and appends;
//! 2. the other follower stopped, then the old leader restarted on the new binary: an election
//!    between two new replicas; the new leader compacts past the stopped follower, which comes
//!    back on the *old* binary: the new leader sends it a snapshot and falls back to unary
//!    appends (the old release has no `StreamAppend`); votes cross versions both ways;
//! 3. that follower upgraded too.
//!
//! Step 2 stops two of three voters for a moment (writes wait for the restarted one): the only
//! way, without a leadership transfer, to have a new leader while an old follower remains.
//! At the end every acknowledged placement must be listed, and the three replicas must hold
//! the same state (digest at the same applied index).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slapcluster_api::v1 as pb;
use slapcluster_api::v1::user_client::UserClient;
use tokio::sync::watch;

use super::{LoadError, SOFTWARE, connect_as, ms, record, setup_capacity};
use test_kit::cluster::{Cluster, replica_status};

/// Small snapshots, so that a replica stopped for a few hundred writes comes back behind the
/// purged log and must be sent one.
const CONFIG: &str = "[raft]\nsnapshot_every = 300\nkeep_after_snapshot = 20\n";

/// [`CONFIG`] for the new binary: snapshots by entries alone, as the old release takes them
/// (it refuses the key; the new one would otherwise wait for the log to weigh as much as the
/// last snapshot).
const NEW_CONFIG: &str =
    "[raft]\nsnapshot_every = 300\nkeep_after_snapshot = 20\nsnapshot_log_percent = 0\n";

/// Placements between stopping a replica and starting it again: past a snapshot and its purge.
const BEHIND: usize = 800;

/// Clients placing instances throughout.
const WRITERS: usize = 4;

/// What the writers saw: placements acknowledged (owner, title), and failed attempts.
#[derive(Default)]
struct Writes {
    acknowledged: BTreeSet<(String, String)>,
    failed: usize,
    slowest: Duration,
}

pub async fn rolling_upgrade(
    old: &Path,
    new: &Path,
    dir: &Path,
    progress: impl Fn(&str),
) -> Result<String, LoadError> {
    progress(&format!(
        "three replicas of {} under {}",
        old.display(),
        dir.display()
    ));
    std::fs::create_dir_all(dir)
        .map_err(|e| LoadError::io(format!("creating {}", dir.display()), e))?;
    let mut cluster = Cluster::start_configured(old, dir, 3, Some(CONFIG)).await?;
    cluster.set_default_quota(1_000_000).await?;
    let urls = cluster.urls();
    setup_capacity(&cluster, &urls, 20).await?;
    let writes = Arc::new(Mutex::new(Writes::default()));
    let (stop, stopped) = watch::channel(false);
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..WRITERS {
        let owner = format!("user:upgrade-{n}");
        // Each writer talks to one replica, whichever version it runs.
        let channel = connect_as(&cluster, &urls[n % urls.len()], &owner).await?;
        writers.spawn(write(channel, owner, Arc::clone(&writes), stopped.clone()));
    }
    let mut report = Vec::new();
    let acknowledged = || lock(&writes).acknowledged.len();

    let leader = cluster.leader().await?;
    let index_of = |id: u64| cluster.replicas.iter().position(|r| r.id == id);
    let followers: Vec<usize> = (0..cluster.replicas.len())
        .filter(|&i| cluster.replicas[i].id != leader)
        .collect();
    let (Some(last_leader), &[first, second]) = (index_of(leader), followers.as_slice()) else {
        return Err(LoadError::Cluster(format!(
            "leader {leader} is not one of three"
        )));
    };

    progress(&format!(
        "1. replica {} stopped; the old leader compacts; it restarts on the new binary",
        first + 1
    ));
    cluster.stop_one(first)?;
    wait_for_writes(&acknowledged, BEHIND).await?;
    cluster.set_slapmaster(new);
    cluster.set_config(first, NEW_CONFIG)?;
    let took = rejoin(&mut cluster, first).await?;
    record(
        &mut report,
        &progress,
        step(&cluster, first, "new follower of an old leader", took).await,
    );

    progress(&format!(
        "2. replica {} stopped; the old leader {} restarts on the new binary; replica {} \
         comes back on the old one",
        second + 1,
        last_leader + 1,
        second + 1
    ));
    cluster.stop_one(second)?;
    wait_for_writes(&acknowledged, 100).await?;
    cluster.stop_one(last_leader)?;
    cluster.set_config(last_leader, NEW_CONFIG)?;
    let restarted = Instant::now();
    cluster.start_one(last_leader)?;
    let new_leader = cluster.leader().await?;
    record(
        &mut report,
        &progress,
        format!(
            "{:<44} {:>8.0} ms   (replica {new_leader} leads)",
            "two new replicas elect a leader",
            ms(restarted.elapsed())
        ),
    );
    wait_for_writes(&acknowledged, BEHIND).await?;
    cluster.set_slapmaster(old);
    let took = rejoin(&mut cluster, second).await?;
    record(
        &mut report,
        &progress,
        step(&cluster, second, "old follower of a new leader", took).await,
    );

    progress(&format!("3. replica {} upgraded", second + 1));
    wait_for_writes(&acknowledged, 100).await?;
    cluster.stop_one(second)?;
    cluster.set_slapmaster(new);
    cluster.set_config(second, NEW_CONFIG)?;
    let took = rejoin(&mut cluster, second).await?;
    record(
        &mut report,
        &progress,
        step(&cluster, second, "last replica upgraded", took).await,
    );
    wait_for_writes(&acknowledged, 100).await?;

    let _ = stop.send(true);
    while let Some(joined) = writers.join_next().await {
        joined.map_err(|e| LoadError::Cluster(format!("writer task: {e}")))?;
    }
    let (acknowledged, failed, slowest) = {
        let writes = lock(&writes);
        (writes.acknowledged.clone(), writes.failed, writes.slowest)
    };
    report.push(format!(
        "{:<44} {} acknowledged, {failed} failed (retryable), slowest {:.0} ms",
        "writes during the upgrade",
        acknowledged.len(),
        ms(slowest)
    ));
    check_listed(&cluster, &urls, &acknowledged).await?;
    report.push(format!(
        "{:<44} every acknowledged placement is listed",
        "after the upgrade"
    ));
    let index = same_state(&cluster, &urls).await?;
    report.push(format!(
        "{:<44} the three replicas hold the same state at index {index}",
        ""
    ));
    cluster.stop()?;
    Ok(report.join("\n"))
}

fn lock(writes: &Mutex<Writes>) -> std::sync::MutexGuard<'_, Writes> {
    writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Places instances until told to stop. A failure (an election, a replica restarting under
/// this writer) counts and is retried with the next title: the upgrade must lose nothing
/// acknowledged, not answer every attempt.
async fn write(
    channel: tonic::transport::Channel,
    owner: String,
    writes: Arc<Mutex<Writes>>,
    stopped: watch::Receiver<bool>,
) {
    let mut user = UserClient::new(channel);
    let owner_name = owner.trim_start_matches("user:").to_string();
    for n in 0u64.. {
        if *stopped.borrow() {
            return;
        }
        let title = format!("upgrade-{n}");
        let request = pb::RequestInstanceRequest {
            title: title.clone(),
            software_release: SOFTWARE.into(),
            ..Default::default()
        };
        let sent = Instant::now();
        let placed = match user.request_instance(request).await {
            Ok(reply) => super::is_placed(reply.get_ref()),
            Err(_) => false,
        };
        {
            let mut writes = lock(&writes);
            if placed {
                writes.acknowledged.insert((owner_name.clone(), title));
                writes.slowest = writes.slowest.max(sent.elapsed());
            } else {
                writes.failed += 1;
            }
        }
        if !placed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `more` placements were acknowledged after now (two minutes at most).
async fn wait_for_writes(acknowledged: &impl Fn() -> usize, more: usize) -> Result<(), LoadError> {
    let target = acknowledged() + more;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged() < target {
        if Instant::now() > deadline {
            return Err(LoadError::Cluster(format!(
                "writes stalled at {} acknowledged (waiting for {target})",
                acknowledged()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Starts replica `index` (stopped) and waits until it caught up; returns how long it took.
async fn rejoin(cluster: &mut Cluster, index: usize) -> Result<Duration, LoadError> {
    let started = Instant::now();
    cluster.restart(index).await?;
    Ok(started.elapsed())
}

/// A report line for a replica that rejoined: how long, and whether a snapshot carried it.
async fn step(cluster: &Cluster, index: usize, what: &str, took: Duration) -> String {
    let url = cluster.replicas[index].url();
    let status = replica_status(&url, &cluster.operator(), false).await;
    let snapshot = status.map_or(0, |s| s.snapshot_index);
    format!(
        "{what:<44} {:>8.0} ms   (replica {} caught up; its snapshot at index {snapshot})",
        ms(took),
        index + 1
    )
}

/// Every acknowledged placement, as a linearizable read on each replica lists it.
async fn check_listed(
    cluster: &Cluster,
    urls: &[String],
    acknowledged: &BTreeSet<(String, String)>,
) -> Result<(), LoadError> {
    let owners: BTreeSet<&String> = acknowledged.iter().map(|(owner, _)| owner).collect();
    for url in urls {
        for owner in &owners {
            let channel = connect_as(cluster, url, &format!("user:{owner}")).await?;
            let listed = UserClient::new(channel)
                .list_instances(pb::ListInstancesRequest {
                    consistency: pb::Consistency::Linearizable.into(),
                })
                .await?
                .into_inner();
            let titles: BTreeSet<String> = listed.instances.into_iter().map(|i| i.title).collect();
            let missing: Vec<&String> = acknowledged
                .iter()
                .filter(|(o, title)| o == *owner && !titles.contains(title))
                .map(|(_, title)| title)
                .collect();
            if !missing.is_empty() {
                return Err(LoadError::Cluster(format!(
                    "{url}: {} acknowledged placements of {owner} are missing, first {}",
                    missing.len(),
                    missing[0]
                )));
            }
        }
    }
    Ok(())
}

/// Waits until every replica reports the same state digest at the same applied index.
async fn same_state(cluster: &Cluster, urls: &[String]) -> Result<u64, LoadError> {
    let operator = cluster.operator();
    test_kit::cluster::wait_for("the replicas to hold the same state", || async {
        let mut seen = BTreeSet::new();
        for url in urls {
            let status = replica_status(url, &operator, true).await?;
            seen.insert((status.digest_index, status.state_digest));
        }
        match seen.into_iter().collect::<Vec<_>>().as_slice() {
            [(index, _)] => Some(*index),
            _ => None,
        }
    })
    .await
}
