//! The load tool behind `slapload`: an end-to-end benchmark of a real cluster (`slapmaster`
//! processes with fsync on, clients over gRPC on real sockets), criterion-free because what it
//! measures is the whole system:
//! - **placements**: instance requests per second at several client counts, each client a
//!   user with its own connection to one of the replicas (spread over all of them, so most
//!   requests are forwarded to the leader), every request placed on a free partition;
//! - **polls**: full polls (software list and partition list) of a computer with 100 busy
//!   partitions, from a follower;
//! - **long-poll wake**: a node long-polls a follower while a user changes its computer
//!   through the leader; the time from the user's acknowledgement to the node's answer;
//! - **failover** (`failover.rs`): time from SIGKILL of the leader to the next write
//!   committed, while a client keeps writing through the other replicas; the killed replica is
//!   restarted and caught up before the next round.

pub mod agent;
pub mod etcd;
mod failover;
pub mod pollers;
pub mod regions;
pub mod scale;
pub mod slap;
pub mod upgrade;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;

use test_kit::cluster::{self, Cluster, OPERATOR};

pub const SOFTWARE: &str = "https://lab.example/slapload/software.cfg";

/// The harness's error is the load tool's: they drive the same clusters.
pub use test_kit::Error as LoadError;

#[derive(Debug, Clone)]
pub struct Options {
    pub slapmaster: PathBuf,
    /// Where the replicas keep their data (a temporary directory when `None`).
    pub data_dir: Option<PathBuf>,
    pub replicas: u64,
    /// Client counts of the placement phases.
    pub clients: Vec<usize>,
    pub placement_time: Duration,
    pub poll_clients: usize,
    pub poll_time: Duration,
    /// Changes timed in the long-poll phase.
    pub wakes: usize,
    /// The `slapnode` binary and how long to measure it (zero skips the agent phase).
    pub slapnode: Option<PathBuf>,
    pub agent_time: Duration,
    pub agent_partitions: u32,
    pub failovers: usize,
    /// An `etcd` binary: run the same placement concurrencies as puts and the same failovers
    /// on a three-member etcd cluster afterwards, and compare.
    pub etcd: Option<PathBuf>,
    /// Run etcd over mTLS (as slapcluster runs), in plaintext, or both, one after the other.
    pub etcd_tls: Vec<bool>,
    /// The replicas' configuration (TOML, as `slapmaster run --config` reads it).
    pub config: Option<String>,
}

/// Latencies of one phase, in order of completion.
#[derive(Debug, Default)]
pub struct Sample {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub failed: usize,
    /// CPU time the whole machine spent busy during the phase (every process: replicas,
    /// clients and all), when `/proc/stat` could be read.
    pub machine_busy: Option<Duration>,
}

/// The machine's busy CPU time so far (user, nice, system, irq, softirq, steal: `/proc/stat`'s
/// first line without idle and iowait), in `USER_HZ` ticks of 10 ms.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(Duration::from_millis(
        (user + nice + system + irq + softirq + steal) * 10,
    ))
}

/// Measures the machine's busy CPU time from its creation to [`CpuMeter::stop`].
pub(crate) struct CpuMeter(Option<Duration>);

impl CpuMeter {
    pub(crate) fn start() -> Self {
        Self(machine_busy())
    }

    pub(crate) fn stop(&self) -> Option<Duration> {
        machine_busy()?.checked_sub(self.0?)
    }
}

impl Sample {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        // The smallest latency with at least `q` of the sample at or below it.
        let below = |i: usize| (i + 1) as f64 >= q * sorted.len() as f64;
        let rank = (0..sorted.len()).find(|&i| below(i)).unwrap_or(0);
        sorted.get(rank).copied().unwrap_or_default()
    }

    /// How the latencies spread, as one report line that counts them as `events`.
    fn spread(&self, what: &str, events: &str) -> String {
        format!(
            "{what:<36} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   ({} {events})",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
            self.latencies.len()
        )
    }

    /// A phase's throughput and latencies, as one report line; with the machine's CPU time
    /// per completed operation where it was measured.
    fn line(&self, what: &str) -> String {
        let cpu = match self.machine_busy {
            Some(busy) if !self.latencies.is_empty() => format!(
                ", {:.0} us CPU each",
                busy.as_secs_f64() * 1e6 / self.latencies.len() as f64
            ),
            _ => String::new(),
        };
        format!(
            "{what:<36} {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} in {:.1} s, {} failed{cpu})",
            self.per_second(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.failed,
        )
    }
}

/// `rounds` rounds of `round(n)`, each timing one event (a failover, a cut), each reported
/// to `progress` as it ends.
async fn timed_rounds(
    rounds: usize,
    what: &str,
    progress: &impl Fn(&str),
    mut round: impl AsyncFnMut(usize) -> Result<Duration, LoadError>,
) -> Result<Sample, LoadError> {
    let mut sample = Sample::default();
    for n in 0..rounds {
        let took = round(n).await?;
        progress(&format!("{what} {n}: {:.0} ms", ms(took)));
        sample.latencies.push(took);
    }
    Ok(sample)
}

/// Adds `line` to the report and shows it as progress at once.
fn record(report: &mut Vec<String>, progress: &impl Fn(&str), line: String) {
    progress(&line);
    report.push(line);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A cluster of `replicas` under `data_dir`, or under a temporary directory (removed when the
/// answer's guard is dropped); answers the guard, the directory and the cluster.
async fn start_cluster(
    slapmaster: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    replicas: u64,
    config: Option<&str>,
    progress: &impl Fn(&str),
) -> Result<(tempfile::TempDir, PathBuf, Cluster), LoadError> {
    let scratch = tempfile::tempdir().map_err(|e| LoadError::io("creating a data dir", e))?;
    let dir = data_dir.map_or_else(
        || scratch.path().to_path_buf(),
        std::path::Path::to_path_buf,
    );
    progress(&format!(
        "starting {replicas} slapmaster replicas under {}",
        dir.display()
    ));
    let cluster = Cluster::start_configured(slapmaster, &dir, replicas, config).await?;
    Ok((scratch, dir, cluster))
}

/// Runs every phase and returns the report, one line per measurement.
pub async fn run(options: &Options, progress: impl Fn(&str)) -> Result<String, LoadError> {
    let (_scratch, dir, mut cluster) = start_cluster(
        &options.slapmaster,
        options.data_dir.as_deref(),
        options.replicas,
        options.config.as_deref(),
        &progress,
    )
    .await?;
    let urls = cluster.urls();
    let mut report = Vec::new();

    // Room for every placement: generous for the fastest rate we expect. One client alone
    // places about 1,000/s on loopback (BENCHMARKS.md, issue 20): at 400 a client, a run of
    // one client only hit its quota and counted the rest as failed.
    let expected: usize = options
        .clients
        .iter()
        .map(|&c| (c * 2_000).min(12_000))
        .sum::<usize>()
        * usize::try_from(options.placement_time.as_secs().max(1)).unwrap_or(usize::MAX);
    let computers = expected.div_ceil(500).max(1);
    cluster
        .set_default_quota(u64::try_from(expected).unwrap_or(u64::MAX))
        .await?;
    progress(&format!(
        "registering {computers} computers of 500 partitions"
    ));
    setup_capacity(&cluster, &urls, computers).await?;

    let mut placed = Vec::new();
    for (phase, &clients) in options.clients.iter().enumerate() {
        progress(&format!("placements with {clients} clients"));
        let sample = placements(&cluster, &urls, phase, clients, options.placement_time).await?;
        record(
            &mut report,
            &progress,
            sample.line(&format!("placements, {clients} clients")),
        );
        placed.push((clients, sample.per_second()));
    }

    let leader = cluster.leader().await?;
    let follower = cluster
        .replicas
        .iter()
        .find(|r| r.id != leader)
        .map(cluster::Replica::url)
        .ok_or_else(|| LoadError::Cluster("no follower".into()))?;
    if !options.poll_time.is_zero() {
        progress("polls of a computer with 100 busy partitions, from a follower");
        setup_poll_computer(&cluster, &urls[0]).await?;
        let sample = polls(&cluster, &follower, options.poll_clients, options.poll_time).await?;
        record(
            &mut report,
            &progress,
            sample.line(&format!(
                "full polls, {} clients, follower",
                options.poll_clients
            )),
        );
    }

    if options.wakes > 0 {
        progress("long-poll wakes");
        let leader_url = cluster
            .replicas
            .iter()
            .find(|r| r.id == leader)
            .map(cluster::Replica::url)
            .ok_or_else(|| LoadError::Cluster("no leader".into()))?;
        let sample = wakes(&cluster, &leader_url, &follower, options.wakes).await?;
        record(
            &mut report,
            &progress,
            sample.spread("long-poll: acknowledged -> woken", "changes"),
        );
    }

    if !options.agent_time.is_zero() {
        let slapnode = options
            .slapnode
            .as_deref()
            .ok_or_else(|| LoadError::Cluster("the agent phase needs slapnode".into()))?;
        progress(&format!(
            "a slapnode with {} running instances, polling every second",
            options.agent_partitions
        ));
        let figures = agent::measure(
            &cluster,
            slapnode,
            &dir,
            options.agent_partitions,
            options.agent_time,
        )
        .await?;
        for line in figures.lines() {
            progress(&line);
            report.push(line);
        }
    }

    let failovers = timed_rounds(options.failovers, "failover", &progress, async |round| {
        failover::failover(&mut cluster, round).await
    })
    .await?;
    if options.failovers > 0 {
        report.push(failovers.spread("failover: kill leader -> next write", "kills"));
    }
    cluster.stop()?;
    if let Some(etcd) = &options.etcd {
        compare_etcd(
            options,
            etcd,
            &dir,
            &placed,
            &failovers,
            &mut report,
            &progress,
        )
        .await?;
    }
    Ok(report.join("\n"))
}

/// The same placement concurrencies as puts, and the same failovers, on etcd; then the ratio
/// of slapcluster's placements/s to etcd's puts/s and both failover times.
async fn compare_etcd(
    options: &Options,
    etcd: &std::path::Path,
    dir: &std::path::Path,
    placed: &[(usize, f64)],
    failovers: &Sample,
    report: &mut Vec<String>,
    progress: &impl Fn(&str),
) -> Result<(), LoadError> {
    let mut summary = Vec::new();
    for &tls in &options.etcd_tls {
        let mode = if tls { "mTLS" } else { "plaintext" };
        let etcd_dir = dir.join(format!("etcd-{}", mode.to_lowercase()));
        std::fs::create_dir_all(&etcd_dir)
            .map_err(|e| LoadError::io("creating the etcd dir", e))?;
        let certificates = if tls {
            Some(etcd_certificates(&options.slapmaster, dir, &etcd_dir)?)
        } else {
            None
        };
        progress(&format!(
            "starting 3 etcd members ({mode}) under {}",
            etcd_dir.display()
        ));
        let mut cluster = etcd::EtcdCluster::start(etcd, &etcd_dir, 3, certificates).await?;
        for (phase, &(clients, placements)) in placed.iter().enumerate() {
            progress(&format!("etcd ({mode}) puts with {clients} clients"));
            let sample = etcd::puts(&cluster, phase, clients, options.placement_time).await?;
            record(
                report,
                progress,
                sample.line(&format!("etcd {mode} puts, {clients} clients")),
            );
            summary.push(format!(
                "ratio vs etcd {mode}, {clients} clients: {placements:.0} placements/s / {:.0} \
                 puts/s = {:.2}",
                sample.per_second(),
                placements / sample.per_second().max(f64::EPSILON)
            ));
        }
        let what = format!("etcd ({mode}) failover");
        let etcd_failovers = timed_rounds(options.failovers, &what, progress, async |round| {
            etcd::failover(&mut cluster, round).await
        })
        .await?;
        if options.failovers > 0 {
            report.push(
                etcd_failovers.spread(&format!("etcd {mode} failover: kill -> next put"), "kills"),
            );
            summary.push(format!(
                "failover p50 / p99: slapcluster {:.0} / {:.0} ms, etcd {mode} {:.0} / {:.0} ms",
                ms(failovers.quantile(0.5)),
                ms(failovers.quantile(0.99)),
                ms(etcd_failovers.quantile(0.5)),
                ms(etcd_failovers.quantile(0.99)),
            ));
        }
    }
    report.extend(summary);
    Ok(())
}

/// Certificates of slapload's CA for three etcd members (replica certificates: server and
/// client use, for `::1`) and for their clients.
fn etcd_certificates(
    slapmaster: &std::path::Path,
    dir: &std::path::Path,
    etcd_dir: &std::path::Path,
) -> Result<etcd::EtcdTls, LoadError> {
    let mut members = Vec::new();
    for i in 1..=3 {
        let out = etcd_dir.join(format!("e{i}-tls"));
        cluster::issue(
            slapmaster,
            dir,
            &format!("replica:{}", 100 + i),
            &out,
            &["--server-name", "::1"],
        )?;
        members.push(out);
    }
    Ok(etcd::EtcdTls {
        members,
        client: cluster::credentials(slapmaster, dir, "user:etcd-load")?,
    })
}

/// A channel to `url` with `identity`'s certificate.
async fn connect_as(
    cluster: &Cluster,
    url: &str,
    identity: &str,
) -> Result<tonic::transport::Channel, LoadError> {
    let tls = cluster.credentials(identity)?.tls_config();
    Ok(client::connect_with(url, Some(tls)).await?)
}

/// Computers are registered and supplied by the operator.
async fn setup_capacity(
    cluster: &Cluster,
    urls: &[String],
    computers: usize,
) -> Result<(), LoadError> {
    let channel = connect_as(cluster, &urls[0], OPERATOR).await?;
    for n in 0..computers {
        register(&channel, &format!("COMP-L{n}"), 500).await?;
    }
    Ok(())
}

/// Registers a computer with `partitions` partitions and has it supply [`SOFTWARE`].
async fn register(
    channel: &tonic::transport::Channel,
    computer: &str,
    partitions: usize,
) -> Result<(), LoadError> {
    let definition = pb::RegisterComputerRequest {
        computer: computer.into(),
        partitions: (0..partitions)
            .map(|p| pb::PartitionDefinition {
                reference: format!("slappart{p}"),
                addresses: vec![pb::NetworkAddress {
                    addr: format!("2001:db8:{:x}::{p:x}", computer.len()),
                    netmask: "ffff:ffff:ffff:ffff::".into(),
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    NodeClient::new(channel.clone())
        .register_computer(definition)
        .await?;
    let mut supply = pb::SupplyRequest {
        computer: computer.into(),
        url: SOFTWARE.into(),
        ..Default::default()
    };
    supply.set_state(pb::SupplyState::Available);
    UserClient::new(channel.clone()).supply(supply).await?;
    Ok(())
}

fn is_placed(reply: &pb::RequestInstanceReply) -> bool {
    matches!(
        reply.placement.as_ref().and_then(|p| p.placement.as_ref()),
        Some(pb::placement::Placement::Partition(_))
    )
}

/// Called with each placement acknowledged, and when its request was sent.
pub(crate) type Watch = std::sync::Arc<dyn Fn(&pb::RequestInstanceReply, Instant) + Send + Sync>;

async fn placements(
    cluster: &Cluster,
    urls: &[String],
    phase: usize,
    clients: usize,
    time: Duration,
) -> Result<Sample, LoadError> {
    placements_watched(cluster, urls, (phase, clients, time), None).await
}

/// [`placements`], each acknowledged placement shown to `watch`.
async fn placements_watched(
    cluster: &Cluster,
    urls: &[String],
    (phase, clients, time): (usize, usize, Duration),
    watch: Option<Watch>,
) -> Result<Sample, LoadError> {
    let targets = (0..clients).map(|c| (0, urls[c % urls.len()].clone()));
    let mut samples = placements_from(cluster, targets, phase, time, watch).await?;
    Ok(samples.pop().unwrap_or_default())
}

/// One placement phase of `time`: a client (a user of its own) per `(group, url)` of
/// `targets`, each requesting instances through `url` one after the other; a sample per
/// group, from 0 to the highest group named (each over the whole phase).
async fn placements_from(
    cluster: &Cluster,
    targets: impl IntoIterator<Item = (usize, String)>,
    phase: usize,
    time: Duration,
    watch: Option<Watch>,
) -> Result<Vec<Sample>, LoadError> {
    // Every client connected before the clock starts: a handshake across regions is not a
    // placement.
    let mut channels = Vec::new();
    for (client_id, (group, url)) in targets.into_iter().enumerate() {
        let actor = format!("user:load-{phase}-{client_id}");
        channels.push((group, connect_as(cluster, &url, &actor).await?));
    }
    let start = Instant::now();
    let cpu = CpuMeter::start();
    let deadline = start + time;
    let mut groups: Vec<tokio::task::JoinSet<Result<Sample, LoadError>>> = Vec::new();
    for (group, channel) in channels {
        if groups.len() <= group {
            groups.resize_with(group + 1, tokio::task::JoinSet::new);
        }
        let watch = watch.clone();
        groups[group].spawn(async move {
            let mut user = UserClient::new(channel);
            let mut sample = Sample::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let request = pb::RequestInstanceRequest {
                    title: format!("instance-{n}"),
                    software_release: SOFTWARE.into(),
                    ..Default::default()
                };
                n += 1;
                let sent = Instant::now();
                match user.request_instance(request).await {
                    Ok(reply) if is_placed(reply.get_ref()) => {
                        sample.latencies.push(sent.elapsed());
                        if let Some(watch) = &watch {
                            watch(reply.get_ref(), sent);
                        }
                    }
                    Ok(_) | Err(_) => sample.failed += 1,
                }
            }
            Ok::<_, LoadError>(sample)
        });
    }
    let mut samples = Vec::new();
    for tasks in groups {
        samples.push(collect(tasks, start, None).await?);
    }
    // The machine's CPU is the phase's, not a group's: said only of a phase of one group.
    let busy = cpu.stop().filter(|_| samples.len() == 1);
    let elapsed = start.elapsed();
    for sample in &mut samples {
        sample.machine_busy = busy;
        sample.elapsed = elapsed;
    }
    Ok(samples)
}

async fn collect(
    mut tasks: tokio::task::JoinSet<Result<Sample, LoadError>>,
    start: Instant,
    cpu: Option<CpuMeter>,
) -> Result<Sample, LoadError> {
    let mut total = Sample::default();
    while let Some(joined) = tasks.join_next().await {
        let sample = joined.map_err(|e| LoadError::Cluster(format!("client task: {e}")))??;
        total.latencies.extend(sample.latencies);
        total.failed += sample.failed;
    }
    total.elapsed = start.elapsed();
    total.machine_busy = cpu.and_then(|cpu| cpu.stop());
    Ok(total)
}

const POLL_COMPUTER: &str = "COMP-POLL";
const POLL_USER: &str = "user:poll";

async fn setup_poll_computer(cluster: &Cluster, url: &str) -> Result<(), LoadError> {
    let operator = connect_as(cluster, url, OPERATOR).await?;
    register(&operator, POLL_COMPUTER, 100).await?;
    let mut user = UserClient::new(connect_as(cluster, url, POLL_USER).await?);
    for n in 0..100 {
        let request = pb::RequestInstanceRequest {
            title: format!("polled-{n}"),
            software_release: SOFTWARE.into(),
            parameters: HashMap::from([("instance".to_string(), format!("polled-{n}"))]),
            sla: HashMap::from([("computer_guid".to_string(), POLL_COMPUTER.to_string())]),
            ..Default::default()
        };
        let reply = user.request_instance(request).await?;
        if !is_placed(reply.get_ref()) {
            return Err(LoadError::Cluster(format!(
                "polled-{n} not placed on {POLL_COMPUTER}: {:?}",
                reply.get_ref().placement
            )));
        }
    }
    Ok(())
}

async fn polls(
    cluster: &Cluster,
    url: &str,
    clients: usize,
    time: Duration,
) -> Result<Sample, LoadError> {
    let start = Instant::now();
    let cpu = CpuMeter::start();
    let deadline = start + time;
    let actor = format!("computer:{POLL_COMPUTER}");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let channel = connect_as(cluster, url, &actor).await?;
        tasks.spawn(async move {
            let mut node = NodeClient::new(channel);
            let mut sample = Sample::default();
            while Instant::now() < deadline {
                let request = pb::PollComputerRequest {
                    computer: POLL_COMPUTER.into(),
                    ..Default::default()
                };
                let sent = Instant::now();
                match node.poll_computer(request).await {
                    Ok(reply) if reply.get_ref().partitions.len() == 100 => {
                        sample.latencies.push(sent.elapsed());
                    }
                    Ok(_) | Err(_) => sample.failed += 1,
                }
            }
            Ok::<_, LoadError>(sample)
        });
    }
    collect(tasks, start, Some(cpu)).await
}

/// `count` times: a node long-polls `follower` for its computer, a user changes the computer
/// (re-requests an instance on it with a new parameter) through `leader`, and the
/// time from the user's acknowledgement to the node's answer is recorded.
async fn wakes(
    cluster: &Cluster,
    leader: &str,
    follower: &str,
    count: usize,
) -> Result<Sample, LoadError> {
    let actor = format!("computer:{POLL_COMPUTER}");
    let mut node = NodeClient::new(connect_as(cluster, follower, &actor).await?);
    let mut user = UserClient::new(connect_as(cluster, leader, POLL_USER).await?);
    let poll = |after: Option<u64>| pb::PollComputerRequest {
        computer: POLL_COMPUTER.into(),
        after,
        wait_ms: 10_000,
        ..Default::default()
    };
    // The follower may not have applied every earlier change yet (another region's, still on
    // its way): start from a view that holds a change made now, or the first rounds would time
    // those instead.
    // ("start" differs from every round's parameter: always a change.)
    let warm = pb::RequestInstanceRequest {
        title: "polled-0".into(),
        software_release: SOFTWARE.into(),
        parameters: HashMap::from([("wake".to_string(), "start".to_string())]),
        sla: HashMap::from([("computer_guid".to_string(), POLL_COMPUTER.to_string())]),
        ..Default::default()
    };
    let index = user.request_instance(warm).await?.into_inner().index;
    let current = pb::PollComputerRequest {
        min_index: index,
        ..poll(None)
    };
    let mut version = node.poll_computer(current).await?.into_inner().version;
    let start = Instant::now();
    let mut sample = Sample::default();
    for n in 0..count {
        let waiting = {
            let mut node = node.clone();
            let request = poll(Some(version));
            tokio::spawn(async move {
                let reply = node.poll_computer(request).await;
                (reply, Instant::now())
            })
        };
        // The poll must be waiting before the change: give its request a head start.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let request = pb::RequestInstanceRequest {
            title: "polled-0".into(),
            software_release: SOFTWARE.into(),
            parameters: HashMap::from([("wake".to_string(), n.to_string())]),
            sla: HashMap::from([("computer_guid".to_string(), POLL_COMPUTER.to_string())]),
            ..Default::default()
        };
        user.request_instance(request).await?;
        let acknowledged = Instant::now();
        let (reply, answered) = waiting
            .await
            .map_err(|e| LoadError::Cluster(format!("poll task: {e}")))?;
        let reply = reply?.into_inner();
        if reply.version <= version {
            sample.failed += 1;
        } else {
            sample
                .latencies
                .push(answered.saturating_duration_since(acknowledged));
        }
        version = reply.version;
    }
    sample.elapsed = start.elapsed();
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_latencies_of_the_sample() {
        let sample = Sample {
            latencies: (1..=100).rev().map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
            failed: 0,
            machine_busy: None,
        };
        assert_eq!(sample.quantile(0.5), Duration::from_millis(50));
        assert_eq!(sample.quantile(0.99), Duration::from_millis(99));
        assert_eq!(sample.quantile(1.0), Duration::from_millis(100));
        assert_eq!(sample.quantile(0.0), Duration::from_millis(1));
        assert!((sample.per_second() - 50.0).abs() < 1e-9);
        assert_eq!(Sample::default().quantile(0.99), Duration::ZERO);
    }

    #[test]
    fn cpu_per_operation_is_the_busy_time_over_completed_operations() {
        let mut sample = Sample {
            latencies: vec![Duration::from_millis(1); 4],
            elapsed: Duration::from_secs(1),
            failed: 3,
            machine_busy: Some(Duration::from_millis(2)),
        };
        assert!(sample.line("x").ends_with("3 failed, 500 us CPU each)"));
        sample.machine_busy = None;
        assert!(sample.line("x").ends_with("3 failed)"));
        assert!(machine_busy().is_some(), "/proc/stat is readable on Linux");
    }
}
