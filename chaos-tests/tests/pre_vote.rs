//! A replica cut off from the others keeps its term, however long it is away: it asks the
//! others whether they would vote for it (pre-vote) before it raises its term, hears nothing,
//! and so cannot come back with a term that deposes a healthy leader. Without pre-vote its
//! term climbs with every election timeout (300-600 ms) while it is away.
//!
//! Runs on loopback ports behind the suite's fault proxies, with or without root.

use std::collections::BTreeSet;
use std::time::Duration;

use chaos_tests::cluster::{Cluster, Danger};
use slapcluster_api::v1 as pb;
use test_kit::cluster::{slapmaster_for_tests, wait_for};

/// How long the replica stays cut off: ten election timeouts at their longest.
const AWAY: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_keeps_its_term_and_rejoins_without_an_election() -> anyhow::Result<()> {
    test_kit::init_tracing("chaos_tests=info");
    let slapmaster = slapmaster_for_tests()?;
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(&slapmaster, dir.path(), 3, 0, Danger::None, true, None).await?;

    let leader = wait_for("a leader", || cluster.leader()).await?;
    let away = (leader + 1) % 3;
    let term = status(&cluster, away).await?.term;

    let others: Vec<usize> = (0..3).filter(|&i| i != away).collect();
    let blocked: BTreeSet<(usize, usize)> = others
        .iter()
        .flat_map(|&other| [(away, other), (other, away)])
        .collect();
    cluster.fabric.partition(&blocked)?;
    // The harness's own calls are never blocked: the replica reports how long it has been
    // without its leader, and its term, while it is away.
    let away_ms = u64::try_from(AWAY.as_millis())?;
    let cut_off = wait_for("the replica to be cut off from its leader", || async {
        let report = cluster.replica_status(away, false).await?;
        (report.leader_contact_age_ms.unwrap_or(0) >= away_ms).then_some(report)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.log_tails()))?;
    assert_eq!(
        cut_off.term,
        term,
        "replica {} raised its term while it could reach nobody\n{}",
        away + 1,
        cluster.log_tails()
    );
    assert_ne!(cut_off.role(), pb::Role::Leader);

    cluster.fabric.heal()?;
    let back = wait_for("the replica to hear a leader again", || async {
        let report = cluster.replica_status(away, false).await?;
        (report.leader != 0 && report.leader_contact_age_ms.is_some_and(|ms| ms < 1000))
            .then_some(report)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.log_tails()))?;
    assert_eq!(
        (back.leader, back.term),
        (u64::try_from(leader + 1)?, term),
        "replica {} came back to another leader or term: an election happened\n{}",
        away + 1,
        cluster.log_tails()
    );
    Ok(())
}

async fn status(cluster: &Cluster, i: usize) -> anyhow::Result<pb::ReplicaStatusReply> {
    cluster
        .replica_status(i, false)
        .await
        .ok_or_else(|| anyhow::anyhow!("replica {} does not answer", i + 1))
}
