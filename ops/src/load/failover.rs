//! Failover rounds, for slapcluster and etcd alike: writers request through the followers
//! every 10 ms, the leader is killed (or cut off), and the time until the first write sent
//! after it is acknowledged is the round's figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{self, Cluster};

use super::{LoadError, SOFTWARE};

/// Writes acknowledged so far: when each was sent, and when its answer came.
pub(super) type Acks = Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

pub(super) fn acked(acks: &Acks, sent: Instant) {
    acks.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((sent, Instant::now()));
}

/// Starts `write(n)` every 10 ms, without waiting for the previous ones, until `stop`: a
/// write stuck on the dead leader (until its timeout) does not delay the next, so the first
/// write acknowledged after a kill says when the cluster took writes again.
pub(super) async fn every_few_ms<F: Future<Output = ()> + Send + 'static>(
    stop: &std::sync::atomic::AtomicBool,
    mut write: impl FnMut(u64) -> F,
) {
    let mut writes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        writes.spawn(write(n));
        while writes.try_join_next().is_some() {}
    }
    writes.abort_all();
}

/// A writer of the failover rounds: an instance request every 10 ms through `channel`
/// (titled `titles-N`, each with its `deadline`), the acknowledged ones recorded, until `stop`.
pub(super) async fn keep_writing(
    channel: tonic::transport::Channel,
    titles: String,
    deadline: Duration,
    acks: Acks,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let user = UserClient::new(channel);
    every_few_ms(&stop, |n| {
        let mut user = user.clone();
        let acks = acks.clone();
        let mut request = tonic::Request::new(pb::RequestInstanceRequest {
            title: format!("{titles}-{n}"),
            software_release: SOFTWARE.into(),
            ..Default::default()
        });
        request.set_timeout(deadline);
        async move {
            let sent = Instant::now();
            if user.request_instance(request).await.is_ok() {
                acked(&acks, sent);
            }
        }
    })
    .await;
}

/// The first write *sent* after `killed` that was acknowledged: a write in flight at the kill
/// may still be answered by the dying leader, and would time nothing.
pub(super) fn first_after(acks: &Acks, killed: Instant) -> Option<Instant> {
    acks.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(sent, _)| *sent > killed)
        .map(|(_, acked)| *acked)
        .min()
}

/// Clients write through the followers; the leader is SIGKILLed; the time from the kill to
/// the first acknowledged write sent after it. The replica is restarted before returning. A
/// round whose leader changed before the kill (a restarted replica's election) starts again.
pub(super) async fn failover(cluster: &mut Cluster, round: usize) -> Result<Duration, LoadError> {
    loop {
        let leader = cluster.leader().await?;
        let index = cluster
            .replicas
            .iter()
            .position(|r| r.id == leader)
            .ok_or_else(|| LoadError::Cluster(format!("leader {leader} is not ours")))?;
        let others: Vec<String> = cluster
            .replicas
            .iter()
            .filter(|r| r.id != leader)
            .map(cluster::Replica::url)
            .collect();
        let acks: Acks = Default::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for url in others {
            let tls = cluster.credentials("user:failover")?.tls_config();
            let channel = client::connect_lazy_with(&url, Some(tls))?;
            let titles = format!("{round}-{url}");
            let deadline = Duration::from_secs(10);
            writers.spawn(keep_writing(
                channel,
                titles,
                deadline,
                acks.clone(),
                stop.clone(),
            ));
        }
        let kill = async || {
            if cluster.leader().await? != leader {
                return Ok(None);
            }
            let killed = Instant::now();
            cluster.kill(index)?;
            Ok(Some(killed))
        };
        if let Some(took) = kill_and_time(&acks, &stop, writers, kill).await? {
            cluster.restart(index).await?;
            return Ok(took);
        }
    }
}

/// The end of a failover round, for slapcluster and etcd alike: once the writers have had 20
/// writes acknowledged, `kill` the leader (it answers the kill's instant, or `None` when the
/// leader changed meanwhile: the round starts again), then time the first write sent after
/// the kill; the writers stop either way.
pub(super) async fn kill_and_time(
    acks: &Acks,
    stop: &std::sync::atomic::AtomicBool,
    mut writers: tokio::task::JoinSet<()>,
    kill: impl AsyncFnOnce() -> Result<Option<Instant>, LoadError>,
) -> Result<Option<Duration>, LoadError> {
    cluster::wait_for("writes before the kill", || async {
        (acks.lock().unwrap_or_else(|p| p.into_inner()).len() > 20).then_some(())
    })
    .await?;
    let took = match kill().await? {
        None => None,
        Some(killed) => {
            let next = cluster::wait_for("a write after the kill", || async {
                first_after(acks, killed)
            })
            .await?;
            Some(next - killed)
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while writers.join_next().await.is_some() {}
    Ok(took)
}
