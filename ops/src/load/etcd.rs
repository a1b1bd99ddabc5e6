//! The reference point: a three-member etcd cluster (Debian's `etcd-server`, 3.4) on `[::1]`
//! with its data on the same disk, driven like the slapcluster phases — the same number of
//! clients, each with its own connection, spread over the members (followers forward to the
//! leader, as slapcluster's do), one put after another; and the same failover measure: clients
//! writing through the followers, the leader SIGKILLed, the time to the next acknowledged put.
//!
//! etcd speaks gRPC; the two calls used here are declared by hand (field numbers of etcd's
//! `rpc.proto`) rather than generated, so that nothing of etcd is vendored.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::{LoadError, Sample};
use test_kit::cluster::{Layout, unused_port, wait_for};
use test_kit::distance::{ClientLinks, Distances};
use test_kit::fronts::{self, Blocked, Fronts};

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

async fn unary<Req, Resp>(
    channel: Channel,
    path: &'static str,
    request: Req,
    timeout: Duration,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc.unary(request, path, codec).await?.into_inner())
}

pub async fn put(channel: Channel, key: String, value: Vec<u8>) -> Result<(), tonic::Status> {
    let request = PutRequest {
        key: key.into_bytes(),
        value,
    };
    unary::<_, PutResponse>(
        channel,
        "/etcdserverpb.KV/Put",
        request,
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderRequest {
    #[prost(uint64, tag = "1")]
    pub target_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

async fn status(channel: Channel) -> Result<StatusResponse, tonic::Status> {
    unary(
        channel,
        "/etcdserverpb.Maintenance/Status",
        StatusRequest {},
        Duration::from_secs(1),
    )
    .await
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Apart: where its peers reach it.
    peer_front: Option<u16>,
    /// With TLS: the member's certificate directory (roots.pem, chain.pem, key.pem), a
    /// replica certificate of slapload's CA (server and client use, for `::1`).
    tls_dir: Option<PathBuf>,
    child: Option<Child>,
}

/// TLS for the members and their clients, as slapcluster runs it: every connection mutually
/// authenticated with certificates of one CA.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// One certificate directory per member.
    pub members: Vec<PathBuf>,
    pub client: slapcluster_api::client::Credentials,
}

impl Member {
    fn scheme(&self) -> &'static str {
        if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn url(&self) -> String {
        format!("{}://[::1]:{}", self.scheme(), self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("{}://[::1]:{}", self.scheme(), self.peer_port)
    }

    /// Where its peers reach it: its front, apart.
    fn advertised_peer_url(&self) -> String {
        let port = self.peer_front.unwrap_or(self.peer_port);
        format!("{}://[::1]:{port}", self.scheme())
    }
}

/// Three (or more) `etcd` processes, killed when dropped.
pub struct EtcdCluster {
    etcd: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
    client: Option<slapcluster_api::client::Credentials>,
    apart: Option<Apart>,
}

/// Members apart, as `slapload --regions` puts slapcluster's replicas: each member's peers
/// reach it through its front, clients through a delay link from their region; etcd's
/// timing as its tuning guide advises for the distance.
struct Apart {
    fronts: Fronts,
    /// Member `i` sits in `regions[i]`.
    regions: Vec<String>,
    /// How a client in a region calls each member.
    links: ClientLinks,
    /// `--heartbeat-interval` and `--election-timeout`, in milliseconds.
    timing: (u64, u64),
}

/// etcd's timing for members at most `rtt` apart, as its tuning guide says: a heartbeat
/// about every round trip (at least its default 100 ms), an election timeout of ten round
/// trips (at least its default 1 s).
pub fn tuned_for(rtt: Duration) -> (u64, u64) {
    let rtt = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
    (rtt.max(100), rtt.saturating_mul(10).max(1000))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl EtcdCluster {
    /// Starts `count` members with their data under `dir`, and returns once a put succeeds.
    pub async fn start(
        etcd: &Path,
        dir: &Path,
        count: usize,
        tls: Option<EtcdTls>,
    ) -> Result<Self, LoadError> {
        Self::start_laid_out(etcd, dir, count, tls, None).await
    }

    /// [`EtcdCluster::start`] with one member in each region `layout` names, each behind a
    /// front, clients through delay links from every region ([`EtcdCluster::url_from`]).
    /// Every member votes: etcd's learners serve no client.
    pub async fn start_apart(
        etcd: &Path,
        dir: &Path,
        layout: &Layout,
        tls: Option<EtcdTls>,
    ) -> Result<Self, LoadError> {
        if layout.learners > 0 {
            return Err(LoadError::Cluster(
                "etcd members here are all voters".into(),
            ));
        }
        let count = layout.regions.len();
        Self::start_laid_out(etcd, dir, count, tls, Some(layout)).await
    }

    async fn start_laid_out(
        etcd: &Path,
        dir: &Path,
        count: usize,
        tls: Option<EtcdTls>,
        layout: Option<&Layout>,
    ) -> Result<Self, LoadError> {
        let mut taken = Vec::new();
        let mut pick = || -> Result<u16, LoadError> {
            let port = unused_port(&taken)?;
            taken.push(port);
            Ok(port)
        };
        let mut members = Vec::new();
        for i in 1..=count {
            members.push(Member {
                name: format!("e{i}"),
                client_port: pick()?,
                peer_port: pick()?,
                peer_front: layout.map(|_| pick()).transpose()?,
                tls_dir: tls.as_ref().and_then(|t| t.members.get(i - 1).cloned()),
                child: None,
            });
        }
        let apart = match layout {
            None => None,
            Some(layout) => Some(Apart::start(layout, &members).await?),
        };
        let mut cluster = Self {
            etcd: etcd.to_path_buf(),
            dir: dir.to_path_buf(),
            members,
            client: tls.map(|t| t.client),
            apart,
        };
        for index in 0..count {
            cluster.spawn(index)?;
        }
        cluster.wait_writable().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> Result<(), LoadError> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
            .collect();
        let member = &self.members[index];
        let log_path = self.dir.join(format!("{}.log", member.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LoadError::io(format!("opening {}", log_path.display()), e))?;
        let client = member.url();
        let peer = member.peer_url();
        let advertised_peer = member.advertised_peer_url();
        let mut command = Command::new(&self.etcd);
        if let Some(apart) = &self.apart {
            let (heartbeat, election) = apart.timing;
            command
                .args(["--heartbeat-interval", &heartbeat.to_string()])
                .args(["--election-timeout", &election.to_string()]);
        }
        if let Some(tls) = &member.tls_dir {
            let (cert, key, roots) = (
                tls.join("chain.pem"),
                tls.join("key.pem"),
                tls.join("roots.pem"),
            );
            for prefix in ["--", "--peer-"] {
                command
                    .arg(format!("{prefix}cert-file"))
                    .arg(&cert)
                    .arg(format!("{prefix}key-file"))
                    .arg(&key)
                    .arg(format!("{prefix}trusted-ca-file"))
                    .arg(&roots)
                    .arg(format!("{prefix}client-cert-auth"));
            }
        }
        // etcd's defaults otherwise (100 ms heartbeats, 1 s election timeout, fsync on).
        let child = command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &advertised_peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "slapload"])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LoadError::io(format!("starting {}", self.etcd.display()), e))?;
        if let Some(apart) = &self.apart {
            apart.fronts.set_pid(index, Some(child.id()));
        }
        self.members[index].child = Some(child);
        Ok(())
    }

    /// Where a client in `region` reaches member `index`: through a link as long as the map
    /// says, apart; directly otherwise.
    pub fn url_from(&self, region: &str, index: usize) -> Result<String, LoadError> {
        let Some(apart) = &self.apart else {
            return Ok(self.members[index].url());
        };
        let port = apart.links.port(region, index)?;
        Ok(format!("{}://[::1]:{port}", self.members[index].scheme()))
    }

    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    async fn wait_writable(&self) -> Result<(), LoadError> {
        let urls = self.urls();
        wait_for("etcd to accept a put", || async {
            for url in &urls {
                let channel = self.connect(url).await.ok()?;
                put(channel, "ready".into(), Vec::new()).await.ok()?;
            }
            Some(())
        })
        .await
    }

    /// The index of the member that leads, by its own word.
    pub async fn leader(&self) -> Result<usize, LoadError> {
        let urls = self.urls();
        wait_for("an etcd leader", || async {
            for (index, url) in urls.iter().enumerate() {
                let Ok(channel) = self.connect(url).await else {
                    continue;
                };
                if let Ok(status) = status(channel).await
                    && status.header.as_ref().map(|h| h.member_id) == Some(status.leader)
                {
                    return Some(index);
                }
            }
            None
        })
        .await
    }

    /// Hands the leadership to member `index` (etcd's `move-leader`, asked of the leader) and
    /// waits until it leads.
    pub async fn move_leader(&self, index: usize) -> Result<(), LoadError> {
        let leader = self.leader().await?;
        if leader == index {
            return Ok(());
        }
        let urls = self.urls();
        let target = status(self.connect(&urls[index]).await?)
            .await?
            .header
            .map(|h| h.member_id)
            .ok_or_else(|| LoadError::Cluster("an etcd status without a header".into()))?;
        unary::<_, MoveLeaderResponse>(
            self.connect(&urls[leader]).await?,
            "/etcdserverpb.Maintenance/MoveLeader",
            MoveLeaderRequest { target_id: target },
            Duration::from_secs(10),
        )
        .await?;
        wait_for("etcd's new leader", || async {
            (self.leader().await.ok()? == index).then_some(())
        })
        .await
    }

    /// Cuts what member `i` sends to member `j` for every `(i, j)` in `blocked`, and heals
    /// every other pair; only members apart have fronts to cut.
    fn partition(&self, blocked: &Blocked) -> Result<(), LoadError> {
        let apart = self.apart.as_ref().ok_or_else(|| {
            LoadError::Cluster("only etcd members apart can be partitioned".into())
        })?;
        apart.fronts.partition(blocked);
        Ok(())
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member from its data directory and waits until every member takes
    /// puts again.
    async fn restart(&mut self, index: usize) -> Result<(), LoadError> {
        self.spawn(index)?;
        self.wait_writable().await
    }
}

impl Apart {
    async fn start(layout: &Layout, members: &[Member]) -> Result<Self, LoadError> {
        let distances = Distances::on_map(&layout.map, &layout.regions, layout.seed)?;
        let fronts = members.iter().filter_map(|m| m.peer_front).collect();
        let backs = members.iter().map(|m| m.peer_port).collect();
        let fronts = Fronts::start(fronts, backs, distances).await?;
        let upstreams: Vec<SocketAddr> = members
            .iter()
            .map(|m| (Ipv6Addr::LOCALHOST, m.client_port).into())
            .collect();
        let links =
            ClientLinks::start(&layout.map, &layout.regions, &upstreams, layout.seed).await?;
        let widest = layout.map.widest(&layout.regions)?;
        Ok(Self {
            fronts,
            regions: layout.regions.clone(),
            links,
            timing: tuned_for(widest),
        })
    }
}

impl EtcdCluster {
    /// A connection to the member at `url`, with the client certificate under TLS.
    pub async fn connect(&self, url: &str) -> Result<Channel, LoadError> {
        let tls = self.client.as_ref().map(|c| c.tls_config());
        Ok(slapcluster_api::client::connect_with(url, tls).await?)
    }
}

/// A value about the size of an instance request.
fn value() -> Vec<u8> {
    vec![b'v'; 300]
}

/// `clients` clients, each on its own connection to a member (spread evenly), one put after
/// another for `time`.
pub async fn puts(
    cluster: &EtcdCluster,
    phase: usize,
    clients: usize,
    time: Duration,
) -> Result<Sample, LoadError> {
    let urls = cluster.urls();
    let targets = (0..clients).map(|c| (0, urls[c % urls.len()].clone()));
    let mut samples = puts_from(cluster, targets, phase, time).await?;
    Ok(samples.pop().unwrap_or_default())
}

/// One phase of `time`: a client per `(group, url)` of `targets`, each on its own connection,
/// one put after another; a sample per group, from 0 to the highest group named.
pub async fn puts_from(
    cluster: &EtcdCluster,
    targets: impl IntoIterator<Item = (usize, String)>,
    phase: usize,
    time: Duration,
) -> Result<Vec<Sample>, LoadError> {
    let mut channels = Vec::new();
    for (group, url) in targets {
        channels.push((group, cluster.connect(&url).await?));
    }
    let start = Instant::now();
    let cpu = super::CpuMeter::start();
    let deadline = start + time;
    let mut tasks = tokio::task::JoinSet::new();
    for (client, (group, channel)) in channels.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut sample = Sample::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("/instances/{phase}/{client}/{n}");
                n += 1;
                let sent = Instant::now();
                match put(channel.clone(), key, value()).await {
                    Ok(()) => sample.latencies.push(sent.elapsed()),
                    Err(_) => sample.failed += 1,
                }
            }
            (group, sample)
        });
    }
    let mut samples: Vec<Sample> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (group, sample) =
            joined.map_err(|e| LoadError::Cluster(format!("a client failed: {e}")))?;
        if samples.len() <= group {
            samples.resize_with(group + 1, Sample::default);
        }
        samples[group].latencies.extend(sample.latencies);
        samples[group].failed += sample.failed;
    }
    // The machine's CPU is the phase's, not a group's: said only of a phase of one group.
    let busy = cpu.stop().filter(|_| samples.len() == 1);
    for sample in &mut samples {
        sample.elapsed = start.elapsed();
        sample.machine_busy = busy;
    }
    Ok(samples)
}

/// A writer of the failover rounds: a put every 10 ms through `channel` (keyed `keys/N`), the
/// acknowledged ones recorded, until `stop` (etcd's `super::failover::keep_writing`).
async fn keep_putting(
    channel: Channel,
    keys: String,
    acks: super::failover::Acks,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    super::failover::every_few_ms(&stop, |n| {
        let (channel, acks) = (channel.clone(), acks.clone());
        let key = format!("{keys}/{n}");
        async move {
            let sent = Instant::now();
            if put(channel, key, value()).await.is_ok() {
                super::failover::acked(&acks, sent);
            }
        }
    })
    .await;
}

/// Puts through the followers; the leader SIGKILLed; the time from the kill to the first
/// acknowledged put sent after it (measured as slapcluster's failover is). The member is
/// restarted before returning; a round whose leader changed before the kill starts again.
pub async fn failover(cluster: &mut EtcdCluster, round: usize) -> Result<Duration, LoadError> {
    loop {
        let leader = cluster.leader().await?;
        let acks: super::failover::Acks = Default::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for (index, url) in cluster.urls().into_iter().enumerate() {
            if index == leader {
                continue;
            }
            let channel = cluster.connect(&url).await?;
            let keys = format!("/failover/{round}/{index}");
            writers.spawn(keep_putting(channel, keys, acks.clone(), stop.clone()));
        }
        let kill = async || {
            if cluster.leader().await? != leader {
                return Ok(None);
            }
            let killed = Instant::now();
            cluster.kill(leader);
            Ok(Some(killed))
        };
        if let Some(took) = super::failover::kill_and_time(&acks, &stop, writers, kill).await? {
            cluster.restart(leader).await?;
            return Ok(took);
        }
    }
}

/// One round of the leader's region cut off, as `regions::cut_off_leader` does it to
/// slapcluster: clients in the other members' regions put through their own member every
/// 10 ms; every link to and from the leader is cut; the time from the cut to the first put
/// sent after it and acknowledged. Healed, with every member taking puts, before returning;
/// a round whose leader changed before the cut starts again.
pub async fn cut_off_leader(cluster: &EtcdCluster, round: usize) -> Result<Duration, LoadError> {
    let regions = cluster
        .apart
        .as_ref()
        .map(|apart| apart.regions.clone())
        .ok_or_else(|| LoadError::Cluster("only etcd members apart can be cut off".into()))?;
    loop {
        let leader = cluster.leader().await?;
        let acks: super::failover::Acks = Default::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for (index, region) in regions.iter().enumerate() {
            if index == leader {
                continue;
            }
            let channel = cluster.connect(&cluster.url_from(region, index)?).await?;
            let keys = format!("/cut/{round}/{index}");
            writers.spawn(keep_putting(channel, keys, acks.clone(), stop.clone()));
        }
        let cut = async || {
            if cluster.leader().await? != leader {
                return Ok(None);
            }
            let at = Instant::now();
            cluster.partition(&fronts::cut_off(leader, regions.len()))?;
            Ok(Some(at))
        };
        let took = super::failover::kill_and_time(&acks, &stop, writers, cut).await;
        cluster.partition(&Blocked::new())?;
        let took = took?;
        cluster.wait_writable().await?;
        if let Some(took) = took {
            return Ok(took);
        }
    }
}
