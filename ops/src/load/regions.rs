//! `slapload --regions MAP` (issue 22): the cluster with distance in it. One voter in each
//! region the run names (the first bootstraps, so it leads at first; the report says where the
//! leader was), a learner in each learner region named after them, every replica behind a
//! front that holds each byte between replicas for the map's one-way delay
//! ([`test_kit::fronts`]), and clients in every region of the map, each calling its nearest
//! replica, voter or learner, through a delay link ([`Cluster::url_from`]).
//!
//! Phases, each reported per client region beside the floor distance allows:
//! - **loopback**: the same placements with every replica side by side, for the ratio;
//! - **placements** at each client count, the clients spread over the regions in turn;
//!   floor: [`write_floor`];
//! - **full polls** of a computer with 100 busy partitions from each region's nearest replica;
//!   floor: the region's round trip to it;
//! - **long-poll wake** (a change acknowledged by the leader → the node's answer from its
//!   nearest replica) and **read-your-writes** (a write acknowledged → a poll with its index
//!   as `min_index` answered by the writer's nearest replica);
//! - **region cut off**: every link to and from the leader's region cut while clients in the
//!   other regions write; the time from the cut to another replica saying it leads, and to
//!   the first write sent after the cut and acknowledged; healed (and the cut replica caught
//!   up) before the next round. With `--etcd`, the same rounds on etcd's members (the next
//!   put only).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{self, Cluster, Layout, OPERATOR};
use test_kit::distance::RegionMap;
use test_kit::fronts::{self, Blocked};

use super::failover::{Acks, keep_writing, kill_and_time};
use super::{
    LoadError, POLL_COMPUTER, POLL_USER, SOFTWARE, Sample, connect_as, ms, placements_from, polls,
    record, register, setup_poll_computer, timed_rounds, wakes,
};

#[derive(Debug, Clone)]
pub struct RegionOptions {
    pub slapmaster: PathBuf,
    /// Where the replicas keep their data (a temporary directory when `None`).
    pub data_dir: Option<PathBuf>,
    pub map: RegionMap,
    /// The voters' regions, one voter each, in order: the first bootstraps.
    pub voters: Vec<String>,
    /// The learners' regions, one learner each (replicas after the voters): they serve their
    /// region's clients and nodes, and forward writes to the leader.
    pub learners: Vec<String>,
    /// Where the leader is put (`slapctl member leader`, and etcd's `move-leader`): every
    /// write pays its distance. `None` leaves it where the first election put it.
    pub leader: Option<String>,
    /// Client totals of the placement phases, spread over the map's regions in turn.
    pub clients: Vec<usize>,
    /// Clients of the loopback phase the regional figures are compared with (0 skips it).
    pub loopback_clients: usize,
    pub placement_time: Duration,
    /// Nodes polling per region, and for how long (zero skips the polls).
    pub poll_clients: usize,
    pub poll_time: Duration,
    /// Changes timed per region for the long-poll wake and read-your-writes (0 skips them).
    pub wakes: usize,
    /// Rounds of the leader's region cut off (0 skips them).
    pub cutoffs: usize,
    /// The replicas' configuration (TOML), as `slapmaster run --config` reads it.
    pub config: Option<String>,
    /// Seeds the links' jitter.
    pub seed: u64,
    /// An `etcd` binary: then the same placement phases as puts on three etcd members over
    /// mTLS behind the same links, tuned for the distance, and the ratios.
    pub etcd: Option<PathBuf>,
}

/// The least a write from a client in `client` can take: a round trip to its nearest member
/// (voter or learner), that member's round trip to the leader (none when it is the leader),
/// and the leader's round trip to the nearest majority of the voters (counting itself).
/// `members` are the voters' regions, then the learners'.
pub fn write_floor(
    map: &RegionMap,
    members: &[String],
    voters: usize,
    leader: usize,
    client: &str,
) -> Result<Duration, LoadError> {
    let nearest = nearest_member(map, members, client)?;
    let mut floor = map.rtt(client, &members[nearest])?;
    if nearest != leader {
        floor += map.rtt(&members[nearest], &members[leader])?;
    }
    let voters = &members[..voters.min(members.len())];
    let mut others = Vec::new();
    for (i, voter) in voters.iter().enumerate() {
        if i != leader {
            others.push(map.rtt(&voters[leader], voter)?);
        }
    }
    others.sort();
    // A majority counts the leader: it waits for `voters / 2` others, the slowest of them
    // the `voters / 2`-th nearest.
    let needed = voters.len() / 2;
    Ok(floor + needed.checked_sub(1).map_or(Duration::ZERO, |i| others[i]))
}

/// The member a client in `region` calls: of `members` (regions), the one with the shortest
/// round trip (the first of equals).
pub fn nearest_member(
    map: &RegionMap,
    members: &[String],
    region: &str,
) -> Result<usize, LoadError> {
    let mut best: Option<(Duration, usize)> = None;
    for (i, member) in members.iter().enumerate() {
        let rtt = map.rtt(region, member)?;
        if best.is_none_or(|(shortest, _)| rtt < shortest) {
            best = Some((rtt, i));
        }
    }
    best.map(|(_, i)| i)
        .ok_or_else(|| LoadError::Cluster("no members".into()))
}

/// For each of `regions`, the index of its nearest of `members` (see [`nearest_member`]).
fn nearest_each(
    map: &RegionMap,
    members: &[String],
    regions: &[String],
) -> Result<Vec<usize>, LoadError> {
    regions
        .iter()
        .map(|r| nearest_member(map, members, r))
        .collect()
}

/// `clients` clients spread over `regions` in turn, each with its region's index and the way
/// from its region to the region's nearest member (`url_from(region, member)`).
fn spread(
    clients: usize,
    regions: &[String],
    nearest: &[usize],
    url_from: impl Fn(&str, usize) -> Result<String, LoadError>,
) -> Result<Vec<(usize, String)>, LoadError> {
    (0..clients)
        .map(|c| {
            let r = c % regions.len();
            Ok((r, url_from(&regions[r], nearest[r])?))
        })
        .collect()
}

/// The index of the voter in `region`.
fn voter_in(options: &RegionOptions, region: &str) -> Result<usize, LoadError> {
    options
        .voters
        .iter()
        .position(|v| v == region)
        .ok_or_else(|| LoadError::Cluster(format!("no voter in {region}")))
}

/// Runs every phase and returns the report.
pub async fn run(options: &RegionOptions, progress: impl Fn(&str)) -> Result<String, LoadError> {
    let scratch = tempfile::tempdir().map_err(|e| LoadError::io("creating a data dir", e))?;
    let dir = options
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let map = &options.map;
    let regions: Vec<String> = map.regions().into_iter().map(str::to_owned).collect();
    let members: Vec<String> = options
        .voters
        .iter()
        .chain(&options.learners)
        .cloned()
        .collect();
    let mut report = vec![format!(
        "regions {} (voters in {}{}), link jitter seed {}",
        regions.join(", "),
        options.voters.join(", "),
        match options.learners.is_empty() {
            true => String::new(),
            false => format!("; learners in {}", options.learners.join(", ")),
        },
        options.seed
    )];
    let expected = expected_placements(options);
    let computers = expected.div_ceil(500).max(1);

    if options.loopback_clients > 0 {
        progress(&format!(
            "loopback: {} replicas side by side, {} clients",
            options.voters.len(),
            options.loopback_clients
        ));
        let side = dir.join("loopback");
        let count = u64::try_from(options.voters.len()).unwrap_or(u64::MAX);
        let mut cluster =
            Cluster::start_configured(&options.slapmaster, &side, count, options.config.as_deref())
                .await?;
        let urls = cluster.urls();
        prepare(&cluster, &urls[0], expected, computers).await?;
        let targets = (0..options.loopback_clients).map(|c| (0, urls[c % urls.len()].clone()));
        let mut samples =
            placements_from(&cluster, targets, 0, options.placement_time, None).await?;
        let sample = samples.pop().unwrap_or_default();
        record(
            &mut report,
            &progress,
            sample.line(&format!(
                "loopback placements, {} clients",
                options.loopback_clients
            )),
        );
        cluster.stop()?;
    }

    let layout = Layout {
        map: map.clone(),
        regions: members.clone(),
        learners: options.learners.len(),
        seed: options.seed,
    };
    progress(&format!(
        "starting voters in {} and learners in [{}] under {}",
        options.voters.join(", "),
        options.learners.join(", "),
        dir.display()
    ));
    let mut cluster = Cluster::start_apart(
        &options.slapmaster,
        &dir.join("apart"),
        layout,
        options.config.as_deref(),
    )
    .await?;
    let urls = cluster.urls();
    prepare(&cluster, &urls[0], expected, computers).await?;
    if let Some(region) = &options.leader {
        let index = voter_in(options, region)?;
        let id = cluster.replicas[index].id;
        progress(&format!("moving the leader to replica {id} in {region}"));
        let channel = connect_as(&cluster, &urls[index], OPERATOR).await?;
        slapcluster_api::v1::admin_client::AdminClient::new(channel)
            .transfer_leader(pb::TransferLeaderRequest { id, wait_ms: 0 })
            .await?;
    }
    let leader = leader_index(&cluster).await?;
    record(
        &mut report,
        &progress,
        format!(
            "leader: replica {} in {}",
            cluster.replicas[leader].id, options.voters[leader]
        ),
    );

    // Each region's clients and nodes call its nearest member.
    let nearest = nearest_each(map, &members, &regions)?;
    let mut placed = Vec::new();
    for (phase, &clients) in options.clients.iter().enumerate() {
        progress(&format!(
            "placements with {clients} clients over the regions"
        ));
        let targets = spread(clients, &regions, &nearest, |r, i| cluster.url_from(r, i))?;
        let samples =
            placements_from(&cluster, targets, phase + 1, options.placement_time, None).await?;
        let total = merged(&samples);
        placed.push((clients, total.per_second()));
        report.push(total.line(&format!("placements, {clients} clients, all")));
        for (r, sample) in samples.iter().enumerate() {
            let voters = options.voters.len();
            let floor = write_floor(map, &members, voters, leader, &regions[r])?;
            report.push(format!(
                "{}   floor {:.0} ms",
                sample.line(&format!("  from {}", regions[r])),
                ms(floor)
            ));
        }
        for line in &report[report.len() - samples.len() - 1..] {
            progress(line);
        }
    }

    if !options.poll_time.is_zero() || options.wakes > 0 {
        setup_poll_computer(&cluster, &urls[0]).await?;
    }
    if !options.poll_time.is_zero() {
        for (r, region) in regions.iter().enumerate() {
            progress(&format!("full polls from {region}"));
            let url = cluster.url_from(region, nearest[r])?;
            let sample = polls(&cluster, &url, options.poll_clients, options.poll_time).await?;
            let floor = map.rtt(region, &members[nearest[r]])?;
            record(
                &mut report,
                &progress,
                format!(
                    "{}   floor {:.0} ms",
                    sample.line(&format!("full polls from {region}")),
                    ms(floor)
                ),
            );
        }
    }
    if options.wakes > 0 {
        let leader_region = &options.voters[leader];
        let leader_url = cluster.url_from(leader_region, leader)?;
        for (r, region) in regions.iter().enumerate() {
            progress(&format!("long-poll wakes in {region}"));
            let url = cluster.url_from(region, nearest[r])?;
            let sample = wakes(&cluster, &leader_url, &url, options.wakes).await?;
            let one_way = map.one_way(leader_region, &members[nearest[r]])?;
            record(
                &mut report,
                &progress,
                format!(
                    "{}   leader -> its replica {:.0} ms",
                    sample.spread(&format!("long-poll wake in {region}"), "changes"),
                    ms(one_way)
                ),
            );
            let sample = read_your_writes(&cluster, &url, options.wakes).await?;
            record(
                &mut report,
                &progress,
                sample.spread(&format!("read-your-writes wait in {region}"), "writes"),
            );
        }
    }

    let leader_region = options.voters[leader].clone();
    let mut elected = Sample::default();
    let cutoffs = timed_rounds(
        options.cutoffs,
        "region cut off",
        &progress,
        async |round| cut_off_leader(&cluster, round, &mut elected).await,
    )
    .await?;
    if options.cutoffs > 0 {
        report.push(elected.spread("leader's region cut -> new leader", "cuts"));
        report.push(format!(
            "{}   widest voter round trip {:.0} ms",
            cutoffs.spread("leader's region cut -> next write", "cuts"),
            ms(map.widest(&options.voters)?)
        ));
    }
    // The CA and its certificates stay for etcd: only the processes stop.
    cluster.stop()?;
    if let Some(etcd) = &options.etcd {
        compare_etcd(
            options,
            etcd,
            &dir,
            &leader_region,
            &placed,
            &mut report,
            &progress,
        )
        .await?;
    }
    Ok(report.join("\n"))
}

/// The placement phases again as puts on etcd apart (the same layout, the same clients in the
/// same regions, each calling its nearest member), and the ratio at each client count.
async fn compare_etcd(
    options: &RegionOptions,
    etcd: &std::path::Path,
    dir: &std::path::Path,
    leader_region: &str,
    placed: &[(usize, f64)],
    report: &mut Vec<String>,
    progress: &impl Fn(&str),
) -> Result<(), LoadError> {
    let etcd_dir = dir.join("etcd-apart");
    std::fs::create_dir_all(&etcd_dir).map_err(|e| LoadError::io("creating the etcd dir", e))?;
    let tls = super::etcd_certificates(&options.slapmaster, &dir.join("apart"), &etcd_dir)?;
    // etcd's leader is whichever member wins its first election: the report says where it
    // was, beside slapcluster's (every write pays the leader's distance).
    // Three voters, no learner: etcd's learners do not serve clients.
    let layout = Layout {
        map: options.map.clone(),
        regions: options.voters.clone(),
        learners: 0,
        seed: options.seed,
    };
    progress(&format!(
        "starting 3 etcd members (mTLS) in {} under {}",
        options.voters.join(", "),
        etcd_dir.display()
    ));
    let cluster =
        super::etcd::EtcdCluster::start_apart(etcd, &etcd_dir, &layout, Some(tls)).await?;
    if let Some(region) = &options.leader {
        cluster.move_leader(voter_in(options, region)?).await?;
    }
    let leader = cluster.leader().await?;
    report.push(format!(
        "etcd leader: member {} in {} (slapcluster's was in {leader_region})",
        leader + 1,
        options.voters[leader]
    ));
    let map = &options.map;
    let regions: Vec<String> = map.regions().into_iter().map(str::to_owned).collect();
    let nearest = nearest_each(map, &options.voters, &regions)?;
    for (phase, &(clients, placements)) in placed.iter().enumerate() {
        progress(&format!(
            "etcd puts with {clients} clients over the regions"
        ));
        let targets = spread(clients, &regions, &nearest, |r, i| cluster.url_from(r, i))?;
        let samples =
            super::etcd::puts_from(&cluster, targets, phase, options.placement_time).await?;
        let total = merged(&samples);
        report.push(total.line(&format!("etcd puts, {clients} clients, all")));
        for (r, sample) in samples.iter().enumerate() {
            report.push(sample.line(&format!("  from {}", regions[r])));
        }
        report.push(format!(
            "ratio vs etcd apart, {clients} clients: {placements:.0} placements/s / {:.0} puts/s \
             = {:.2}",
            total.per_second(),
            placements / total.per_second().max(f64::EPSILON)
        ));
        for line in &report[report.len() - samples.len() - 2..] {
            progress(line);
        }
    }
    let cutoffs = timed_rounds(
        options.cutoffs,
        "etcd region cut off",
        progress,
        async |round| super::etcd::cut_off_leader(&cluster, round).await,
    )
    .await?;
    if options.cutoffs > 0 {
        let (heartbeat, election) = super::etcd::tuned_for(map.widest(&options.voters)?);
        record(
            report,
            progress,
            format!(
                "{}   heartbeat {heartbeat} ms, election timeout {election} ms",
                cutoffs.spread("etcd: leader's region cut -> next put", "cuts")
            ),
        );
    }
    Ok(())
}

/// The groups of a phase as one sample.
fn merged(samples: &[Sample]) -> Sample {
    Sample {
        latencies: samples.iter().flat_map(|s| s.latencies.clone()).collect(),
        elapsed: samples.first().map(|s| s.elapsed).unwrap_or_default(),
        failed: samples.iter().map(|s| s.failed).sum(),
        machine_busy: None,
    }
}

/// Room for every placement of the run: generous for the fastest rate we expect.
fn expected_placements(options: &RegionOptions) -> usize {
    let seconds = usize::try_from(options.placement_time.as_secs().max(1)).unwrap_or(usize::MAX);
    options
        .clients
        .iter()
        .chain([&options.loopback_clients])
        .map(|&c| (c * 400).min(12_000))
        .sum::<usize>()
        * seconds
}

/// Raises the default quota and registers `computers` computers of 500 partitions.
async fn prepare(
    cluster: &Cluster,
    url: &str,
    expected: usize,
    computers: usize,
) -> Result<(), LoadError> {
    cluster
        .set_default_quota(u64::try_from(expected).unwrap_or(u64::MAX))
        .await?;
    let channel = connect_as(cluster, url, OPERATOR).await?;
    for n in 0..computers {
        register(&channel, &format!("COMP-L{n}"), 500).await?;
    }
    Ok(())
}

async fn leader_index(cluster: &Cluster) -> Result<usize, LoadError> {
    let leader = cluster.leader().await?;
    cluster
        .replicas
        .iter()
        .position(|r| r.id == leader)
        .ok_or_else(|| LoadError::Cluster(format!("leader {leader} is not ours")))
}

/// `count` times: a user writes through `url`, then its computer's node asks the same
/// replica for the computer with the write's index as `min_index`; the time from the write's
/// acknowledgement to the poll's answer.
async fn read_your_writes(cluster: &Cluster, url: &str, count: usize) -> Result<Sample, LoadError> {
    let mut user = UserClient::new(connect_as(cluster, url, POLL_USER).await?);
    let actor = format!("computer:{POLL_COMPUTER}");
    let mut node = NodeClient::new(connect_as(cluster, url, &actor).await?);
    let start = Instant::now();
    let mut sample = Sample::default();
    for n in 0..count {
        let request = pb::RequestInstanceRequest {
            title: "polled-1".into(),
            software_release: SOFTWARE.into(),
            parameters: std::collections::HashMap::from([("ryw".to_string(), n.to_string())]),
            sla: std::collections::HashMap::from([(
                "computer_guid".to_string(),
                POLL_COMPUTER.to_string(),
            )]),
            ..Default::default()
        };
        let index = user.request_instance(request).await?.into_inner().index;
        let acknowledged = Instant::now();
        let reply = node
            .poll_computer(pb::PollComputerRequest {
                computer: POLL_COMPUTER.into(),
                min_index: index,
                ..Default::default()
            })
            .await?
            .into_inner();
        if reply.applied_index < index {
            sample.failed += 1;
        } else {
            sample.latencies.push(acknowledged.elapsed());
        }
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

/// One round: clients in the other voters' regions write through their own voter every
/// 10 ms; every link to and from the leader is cut; the time from the cut to the first
/// write sent after it and acknowledged, and (pushed to `elected`) to another replica
/// saying it leads. The cut is healed and the cut replica caught up before returning. A
/// round whose leader changed before the cut starts again.
async fn cut_off_leader(
    cluster: &Cluster,
    round: usize,
    elected: &mut Sample,
) -> Result<Duration, LoadError> {
    loop {
        let leader = leader_index(cluster).await?;
        let others = (0..cluster.replicas.len()).filter(|&i| i != leader);
        let watch = tokio::spawn(new_leader_among(
            others.map(|i| cluster.replicas[i].url()).collect(),
            cluster.operator(),
        ));
        let acks: Acks = Acks::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for (i, replica) in cluster.replicas.iter().enumerate() {
            if i == leader {
                continue;
            }
            let region = cluster.region_of(i).unwrap_or_default().to_owned();
            let url = cluster.url_from(&region, i)?;
            // A user per writer: the calls one identity may have in flight are bounded, and
            // writes stuck at the cut-off leader until their deadline must not fill them.
            let tls = cluster
                .credentials(&format!("user:cutoff-{i}"))?
                .tls_config();
            let channel = slapcluster_api::client::connect_lazy_with(&url, Some(tls))?;
            let titles = format!("cut-{round}-{}", replica.id);
            // A client's deadline: stuck behind the cut, a write gives up, and the writes
            // sent after it show when the cluster took writes again.
            let deadline = Duration::from_secs(2);
            writers.spawn(keep_writing(
                channel,
                titles,
                deadline,
                acks.clone(),
                stop.clone(),
            ));
        }
        let mut cut_at = None;
        let cut = async || {
            if leader_index(cluster).await? != leader {
                return Ok(None);
            }
            let at = Instant::now();
            cluster.partition(&fronts::cut_off(leader, cluster.replicas.len()))?;
            cut_at = Some(at);
            Ok(Some(at))
        };
        let took = kill_and_time(&acks, &stop, writers, cut).await;
        // Cut and timed: the watcher has seen, or will see, the new leader.
        let new_leader = match (&took, cut_at) {
            (Ok(Some(_)), Some(at)) => Some((watch.await, at)),
            _ => {
                watch.abort();
                None
            }
        };
        cluster.partition(&Blocked::new())?;
        let took = took?;
        let head = cluster.leader_head().await?;
        cluster
            .caught_up(leader, head, Duration::from_secs(60))
            .await?;
        if let (Some(took), Some((seen, at))) = (took, new_leader) {
            let seen =
                seen.map_err(|e| LoadError::Cluster(format!("watching for a new leader: {e}")))??;
            elected.latencies.push(seen.saturating_duration_since(at));
            return Ok(took);
        }
    }
}

/// When one of the replicas at `urls` first said it leads, asked every 5 ms (one connection
/// each, kept): the timing of an election, to set beside the next write's.
async fn new_leader_among(
    urls: Vec<String>,
    operator: tonic::transport::ClientTlsConfig,
) -> Result<Instant, LoadError> {
    let mut admins = Vec::new();
    for url in &urls {
        admins.extend(cluster::admin(url, &operator).await);
    }
    cluster::wait_for_every("a new leader", Duration::from_millis(5), || {
        let mut admins = admins.clone();
        async move {
            for admin in &mut admins {
                let status = admin.replica_status(pb::ReplicaStatusRequest::default());
                if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), status).await
                    && status.into_inner().role() == pb::Role::Leader
                {
                    return Some(Instant::now());
                }
            }
            None
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RegionMap {
        RegionMap::parse(
            "within_ms = 1\n\
             [[link]]\nbetween = [\"eu\", \"us\"]\nrtt_ms = 80\n\
             [[link]]\nbetween = [\"eu\", \"asia\"]\nrtt_ms = 150\n\
             [[link]]\nbetween = [\"us\", \"asia\"]\nrtt_ms = 120\n\
             [[link]]\nbetween = [\"au\", \"asia\"]\nrtt_ms = 100\n\
             [[link]]\nbetween = [\"au\", \"eu\"]\nrtt_ms = 280\n\
             [[link]]\nbetween = [\"au\", \"us\"]\nrtt_ms = 200\n",
        )
        .expect("map")
    }

    #[test]
    fn a_write_floor_is_the_way_to_the_leader_and_on_to_its_nearest_majority() {
        let voters = ["eu", "us", "asia"].map(String::from);
        let ms = Duration::from_millis;
        let floor = |leader, client| write_floor(&map(), &voters, 3, leader, client).ok();
        // Leader in eu: its nearest other voter is us (80 ms).
        assert_eq!(floor(0, "eu"), Some(ms(1 + 80)));
        // From us: 1 ms to the us voter, 80 to the leader, 80 to the majority.
        assert_eq!(floor(0, "us"), Some(ms(1 + 80 + 80)));
        assert_eq!(floor(0, "asia"), Some(ms(1 + 150 + 80)));
        // Leader in asia: its majority is us, 120 ms away.
        assert_eq!(floor(2, "asia"), Some(ms(1 + 120)));
        assert_eq!(nearest_member(&map(), &voters, "us").ok(), Some(1));
        assert_eq!(map().widest(&voters).ok(), Some(ms(150)));
        // Without a learner there, au writes through asia, its nearest voter (100 ms).
        assert_eq!(floor(0, "au"), Some(ms(100 + 150 + 80)));
        // With a learner in au, its clients call the learner, which forwards to the leader;
        // the learner counts in no majority.
        let members = ["eu", "us", "asia", "au"].map(String::from);
        assert_eq!(nearest_member(&map(), &members, "au").ok(), Some(3));
        assert_eq!(
            write_floor(&map(), &members, 3, 0, "au").ok(),
            Some(ms(1 + 280 + 80))
        );
        assert_eq!(
            write_floor(&map(), &members, 3, 2, "eu").ok(),
            Some(ms(1 + 150 + 120))
        );
    }
}
