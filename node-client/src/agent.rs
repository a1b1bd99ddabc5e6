//! The agent: boot (format, register capacity), then the loops. One poll loop keeps the
//! computer's view fresh (a long-poll, or a periodic poll where long-poll is unavailable) and
//! hands each software release and each partition to its own worker through a `watch`
//! channel, so a slow install or promise never delays the others; capacity is registered
//! again daily, usage posted hourly, replicas re-ranked every few minutes.
//!
//! Everything the workers decide comes from the view and the machine: the agent can be
//! restarted with its state directory wiped and converges to the same result.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use partitioning::{Mode, PartitionLayout};
use slapcluster_api::client::{ClientError, Credentials};
use slapcluster_api::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;

use crate::config::{NodeConfig, Transport};
use crate::master::Master;
use crate::partition::{self, Decision, Key, Partition, Processed};
use crate::replicas::{CallError, Replicas, jitter};
use crate::software::{self, ManifestRunner, Runner};
use crate::supervisor::Supervisor;
use crate::usage::{self, Meter};

const RANK_INTERVAL: Duration = Duration::from_secs(300);
/// How often the agent looks whether its certificate is due for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(3600);
/// Usage records kept while the master cannot be reached (a day of hourly posts).
const MAX_UNPOSTED_PERIODS: usize = 24;
const REPLICAS_FILE: &str = "replicas.toml";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the computer's credentials in {}: {source}", dir.display())]
    Credentials {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("formatting partitions: {0}")]
    Format(#[from] partitioning::FormatError),
    #[error("the master refused this computer's definition: {0}")]
    Registration(CallError),
    #[error("cannot listen on {addr} (http_listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub struct Agent {
    config: NodeConfig,
    master: Arc<Master>,
    supervisor: Arc<Supervisor>,
    partition: Arc<Partition>,
    runner: Arc<dyn Runner>,
    /// Bumped after each install: partitions waiting for their software try again.
    installed: watch::Sender<u64>,
    /// The latest view of the computer.
    view: watch::Sender<Option<pb::PollComputerReply>>,
}

/// Runs the agent until `shutdown` resolves; then stops every instance process.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let agent = Arc::new(Agent::new(config, Arc::new(ManifestRunner))?);
    let result = tokio::select! {
        result = agent.clone().serve() => result,
        () = shutdown => Ok(()),
    };
    tracing::info!("stopping instance processes");
    agent.supervisor.stop_all().await;
    result
}

impl Agent {
    pub fn new(config: NodeConfig, runner: Arc<dyn Runner>) -> Result<Self, AgentError> {
        let (tls, actor) = match &config.transport {
            Transport::Tls { dir } => {
                let credentials =
                    Credentials::read_dir(dir).map_err(|source| AgentError::Credentials {
                        dir: dir.clone(),
                        source,
                    })?;
                (Some(credentials.tls_config()), None)
            }
            Transport::DangerPlaintext => (None, Some(format!("computer:{}", config.computer))),
        };
        let replicas = Replicas::new(&config.masters, tls, actor)?;
        let master = Arc::new(Master::new(config.computer.clone(), replicas));
        let supervisor = Arc::new(Supervisor::new(config.stop_grace));
        let partition = Arc::new(Partition {
            master: master.clone(),
            supervisor: supervisor.clone(),
            runner: runner.clone(),
            software_root: config.format.software_root.clone(),
            as_partition_user: config.format.mode == Mode::System,
        });
        Ok(Self {
            config,
            master,
            supervisor,
            partition,
            runner,
            installed: watch::channel(0).0,
            view: watch::channel(None).0,
        })
    }

    async fn serve(self: Arc<Self>) -> Result<(), AgentError> {
        let state_dir = &self.config.state_dir;
        tokio::fs::create_dir_all(state_dir)
            .await
            .map_err(|source| AgentError::Io {
                what: "creating",
                path: state_dir.clone(),
                source,
            })?;
        if let Some(addr) = self.config.http_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen { addr, source })?;
            let observed: Arc<dyn crate::observe::Observed> = self.clone();
            let weak = Arc::downgrade(&observed);
            drop(observed);
            tokio::spawn(async move {
                if let Err(e) = crate::observe::serve(listener, weak).await {
                    tracing::error!("the HTTP listener stopped: {e}");
                }
            });
        }
        self.load_replicas().await;
        self.capacity().await?;
        self.master.rank().await;
        let mut background = JoinSet::new();
        let agent = self.clone();
        background.spawn(async move {
            loop {
                tokio::time::sleep(agent.config.capacity_interval).await;
                if let Err(e) = agent.capacity().await {
                    tracing::error!("daily capacity report failed: {e}");
                }
            }
        });
        background.spawn(self.clone().usage_loop());
        if let Transport::Tls { dir } = &self.config.transport {
            background.spawn(self.clone().renewal_loop(dir.clone()));
        }
        let agent = self.clone();
        background.spawn(async move {
            loop {
                tokio::time::sleep(RANK_INTERVAL).await;
                agent.master.rank().await;
            }
        });
        self.poll_loop().await;
        Ok(())
    }

    /// Formats the partitions and registers the computer's definition: additions first, then
    /// the registration, then removals, so the master (which refuses to drop a busy partition)
    /// decides before anything is taken apart. Retries while no replica answers; a refusal is
    /// an error (the operator must act).
    async fn capacity(&self) -> Result<(), AgentError> {
        let busy = self.busy_partitions().await;
        let format = self.config.format.clone();
        let plan = self
            .blocking(move || partitioning::system::plan(&format, &busy))
            .await?;
        let (removals, additions): (Vec<_>, Vec<_>) = plan
            .actions
            .iter()
            .cloned()
            .partition(partitioning::Action::is_removal);
        self.format(additions).await?;
        if !plan.kept_busy.is_empty() {
            tracing::warn!(partitions = ?plan.kept_busy, "kept beyond the configured count: still in use");
        }
        let request = self.definition(&plan.partitions);
        let mut failures = 0;
        loop {
            match self.master.register(request.clone()).await {
                Ok(reply) => {
                    tracing::info!(
                        partitions = plan.partitions.len(),
                        added = reply.partitions_added,
                        removed = reply.partitions_removed,
                        "registered capacity"
                    );
                    return self.format(removals).await;
                }
                Err(e @ CallError::Rejected { .. }) => return Err(AgentError::Registration(e)),
                Err(e) => {
                    failures += 1;
                    tracing::warn!("registering: {e}");
                    tokio::time::sleep(jitter(
                        partition::retry_delay(failures).min(Duration::from_secs(30)),
                    ))
                    .await;
                }
            }
        }
    }

    async fn format(&self, actions: Vec<partitioning::Action>) -> Result<(), AgentError> {
        for action in &actions {
            tracing::info!("format: {action}");
        }
        self.blocking(move || partitioning::system::apply(&actions))
            .await
    }

    /// Runs format work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, partitioning::FormatError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AgentError::Io {
                what: "formatting",
                path: self.config.format.instance_root.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(result?)
    }

    /// Partitions the master says hold an instance: format must keep them.
    async fn busy_partitions(&self) -> BTreeSet<String> {
        let known = self.view.borrow().clone();
        let view = match known {
            Some(view) => Some(view),
            None => self.master.poll(None, Duration::ZERO).await.ok(),
        };
        view.map(|v| {
            v.partitions
                .into_iter()
                .filter(|p| p.instance.is_some())
                .map(|p| p.reference)
                .collect()
        })
        .unwrap_or_default()
    }

    fn definition(&self, partitions: &[PartitionLayout]) -> pb::RegisterComputerRequest {
        let format = &self.config.format;
        let network = format.ipv6_network;
        let ipv6_mask = network.netmask().to_string();
        let ipv4_mask = format.ipv4_network.netmask().to_string();
        pb::RegisterComputerRequest {
            computer: self.config.computer.clone(),
            address: network.host(1).map(|a| a.to_string()).unwrap_or_default(),
            netmask: ipv6_mask.clone(),
            instance_root: format.instance_root.display().to_string(),
            software_root: format.software_root.display().to_string(),
            os_type: std::env::consts::OS.to_owned(),
            attributes: self
                .config
                .attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            set_attributes: self.config.attributes.is_some(),
            capabilities: Vec::new(),
            set_capabilities: false,
            partitions: partitions
                .iter()
                .map(|p| pb::PartitionDefinition {
                    reference: p.reference.clone(),
                    path: p.path.display().to_string(),
                    addresses: vec![
                        pb::NetworkAddress {
                            addr: p.ipv6.to_string(),
                            netmask: ipv6_mask.clone(),
                        },
                        pb::NetworkAddress {
                            addr: p.ipv4.to_string(),
                            netmask: ipv4_mask.clone(),
                        },
                    ],
                    tap: p.tap.clone(),
                    user: p.user.clone(),
                })
                .collect(),
        }
    }

    /// Keeps the view fresh and the workers fed. Never returns.
    async fn poll_loop(self: Arc<Self>) {
        let mut long_poll = LongPoll::new(self.config.long_poll);
        let mut version: Option<u64> = None;
        let mut failures = 0u32;
        let mut workers = Workers::default();
        // The member list last written to the state directory.
        let mut saved: Vec<String> = Vec::new();
        loop {
            let long = long_poll.active(Instant::now());
            let (after, wait) = match version {
                Some(v) if long => (Some(v), self.config.poll_interval),
                _ => (None, Duration::ZERO),
            };
            let started = Instant::now();
            match self.master.poll(after, wait).await {
                Ok(reply) => {
                    failures = 0;
                    let elapsed = started.elapsed();
                    tracing::debug!(version = reply.version, ?elapsed, "polled");
                    if let Some(after) = after
                        && long_poll.answered(after, reply.version, elapsed, wait, Instant::now())
                    {
                        tracing::warn!(
                            "the replica answers long-polls at once; polling every {:?} for a while",
                            self.config.poll_interval
                        );
                    }
                    version = Some(reply.version);
                    if reply.replicas.iter().map(|m| &m.url).ne(saved.iter()) {
                        saved = reply.replicas.iter().map(|m| m.url.clone()).collect();
                        self.save_replicas(&saved).await;
                    }
                    workers.dispatch(&self, &reply);
                    self.view.send_replace(Some(reply));
                    if !long {
                        tokio::time::sleep(self.config.poll_interval).await;
                    }
                }
                Err(CallError::Rejected { status, .. })
                    if long
                        && matches!(status.code(), Code::Unimplemented | Code::InvalidArgument) =>
                {
                    tracing::warn!(
                        "long-poll unavailable ({}); polling every {:?} for a while",
                        status.message(),
                        self.config.poll_interval
                    );
                    long_poll.refused(Instant::now());
                }
                Err(CallError::Rejected { status, .. }) if status.code() == Code::NotFound => {
                    tracing::warn!("the master does not know this computer; registering again");
                    if let Err(e) = self.capacity().await {
                        tracing::error!("{e}");
                        tokio::time::sleep(jitter(Duration::from_secs(30))).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay =
                        jitter(partition::retry_delay(failures).min(Duration::from_secs(30)));
                    tracing::warn!("poll failed, again in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn partition_worker(
        self: Arc<Self>,
        mut view: watch::Receiver<Fresh<pb::ComputerPartition>>,
    ) {
        let mut installed = self.installed.subscribe();
        let mut polls = self.view.subscribe();
        let mut last: Option<Processed> = None;
        let mut settled = 0;
        loop {
            polls.borrow_and_update();
            let (applied, current) = view.borrow_and_update().parts();
            if applied < settled {
                // Polled before this worker's own last writes: wait for a view that has them
                // (the next poll, even if it shows this partition unchanged).
                tokio::select! {
                    changed = view.changed() => if changed.is_err() { return },
                    _ = polls.changed() => {}
                }
                continue;
            }
            let directory = PathBuf::from(&current.path);
            let dirty = current.instance.is_none()
                && (partition::is_dirty(&directory)
                    || self.supervisor.supervises(&current.reference));
            let now = Instant::now();
            let wake = match partition::decide(
                &current,
                last.as_ref(),
                dirty,
                now,
                self.config.reprocess_interval,
            ) {
                Decision::Converge => {
                    let Some(instance) = &current.instance else {
                        continue;
                    };
                    let key = Key::of(instance, &current.shared_instances);
                    let previous = last
                        .as_ref()
                        .filter(|l| l.key == key)
                        .map_or(0, |l| l.failures);
                    let failures = match self.partition.converge(&current).await {
                        Ok(()) => {
                            tracing::info!(partition = %current.reference, instance = %instance.guid, "converged");
                            0
                        }
                        Err(e) => {
                            tracing::warn!(partition = %current.reference, "{e}");
                            if e.is_instance_error()
                                && let Err(report) = self.partition.report_error(&current, &e).await
                            {
                                tracing::warn!(partition = %current.reference, "reporting the error: {report}");
                            }
                            previous + 1
                        }
                    };
                    last = Some(Processed {
                        key,
                        at: Instant::now(),
                        failures,
                    });
                    settled = self.master.seen();
                    continue;
                }
                Decision::Clean => {
                    tracing::info!(partition = %current.reference, "free: stopping what runs and wiping it");
                    if let Err(e) = self.partition.clean(&current).await {
                        tracing::warn!(partition = %current.reference, "{e}");
                        Some(now + partition::retry_delay(1))
                    } else {
                        last = None;
                        settled = self.master.seen();
                        continue;
                    }
                }
                Decision::Wait(until) => until,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                _ = installed.changed() => {
                    // Software that was missing may be there now: a failed attempt need not
                    // wait out its backoff.
                    if last.as_ref().is_some_and(|l| l.failures > 0) {
                        last = None;
                    }
                }
                () = sleep => {}
            }
        }
    }

    async fn software_worker(self: Arc<Self>, mut view: watch::Receiver<Fresh<pb::Software>>) {
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut settled = 0;
        let mut polls = self.view.subscribe();
        loop {
            polls.borrow_and_update();
            let (applied, software) = view.borrow_and_update().parts();
            // A view polled before this worker's own last writes would have it repeat them.
            let fresh = applied >= settled;
            if fresh && retry_at.is_none_or(|t| Instant::now() >= t) {
                let outcome = self.converge_software(&software).await;
                settled = self.master.seen();
                match outcome {
                    Ok(()) => {
                        failures = 0;
                        retry_at = None;
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = partition::retry_delay(failures);
                        tracing::warn!(url = %software.url, "software: {e}; again in {delay:?}");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            let sleep = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                () = sleep => {}
                _ = polls.changed(), if !fresh => {}
            }
        }
    }

    async fn converge_software(&self, software: &pb::Software) -> Result<(), SoftwareFailure> {
        let root = &self.config.format.software_root;
        let reported = pb::SoftwareState::try_from(software.reported).unwrap_or_default();
        let report = |state: pb::SoftwareState, log: String| async move {
            self.master.report_software(&software.url, state, log).await
        };
        if software.requested == i32::from(pb::SupplyState::Destroyed) {
            software::remove(root, &software.url).await?;
            if reported != pb::SoftwareState::Destroyed {
                report(pb::SoftwareState::Destroyed, String::new()).await?;
                tracing::info!(url = %software.url, "software removed");
            }
            return Ok(());
        }
        let dir = software::software_dir(root, &software.url);
        if !software::is_installed(&dir) {
            if reported != pb::SoftwareState::Building {
                report(pb::SoftwareState::Building, String::new()).await?;
            }
            tracing::info!(url = %software.url, dir = %dir.display(), "installing");
            if let Err(e) = software::install(self.runner.as_ref(), root, &software.url).await {
                let log = e.to_string();
                if reported != pb::SoftwareState::Error || software.error_log != log {
                    report(pb::SoftwareState::Error, log).await?;
                }
                return Err(e.into());
            }
            self.installed.send_modify(|generation| *generation += 1);
            tracing::info!(url = %software.url, "installed");
        }
        if reported != pb::SoftwareState::Available {
            report(pb::SoftwareState::Available, String::new()).await?;
        }
        Ok(())
    }

    /// Posts each partition's usage every usage interval; records the master could not take
    /// are posted with the next ones.
    /// Renews the computer's certificate once it is due (see [`crate::renew`]); checks at start
    /// and every hour, and retries a failed renewal at the next check.
    async fn renewal_loop(self: Arc<Self>, dir: PathBuf) {
        loop {
            if let Err(e) = self.renew_if_due(&dir).await {
                tracing::error!("renewing the computer's certificate: {e}");
            }
            tokio::time::sleep(RENEWAL_CHECK).await;
        }
    }

    async fn renew_if_due(&self, dir: &Path) -> Result<(), crate::renew::RenewError> {
        let Some(current) = crate::renew::due(dir, SystemTime::now())? else {
            return Ok(());
        };
        let (key_pem, csr_pem) = crate::renew::new_request()?;
        let reply = self.master.renew_certificate(csr_pem).await?;
        let renewed = Credentials {
            roots_pem: if reply.roots_pem.is_empty() {
                current.roots_pem
            } else {
                vec![reply.roots_pem]
            },
            chain_pem: reply.chain_pem,
            key_pem,
        };
        let target = dir.to_path_buf();
        let installed = renewed.clone();
        tokio::task::spawn_blocking(move || crate::renew::install(&target, &installed))
            .await??;
        self.master.replicas.set_tls(renewed.tls_config())?;
        tracing::info!(dir = %dir.display(), "renewed the computer's certificate");
        Ok(())
    }

    async fn usage_loop(self: Arc<Self>) {
        let mut meter = Meter::new();
        let mut unposted: Vec<Vec<pb::UsageRecord>> = Vec::new();
        let mut since = now_micros();
        loop {
            tokio::time::sleep(self.config.usage_interval).await;
            let until = now_micros();
            let partitions: Vec<(String, PathBuf)> = self
                .view
                .borrow()
                .as_ref()
                .map(|v| {
                    v.partitions
                        .iter()
                        .filter(|p| p.instance.is_some())
                        .map(|p| (p.reference.clone(), PathBuf::from(&p.path)))
                        .collect()
                })
                .unwrap_or_default();
            let mut groups = BTreeMap::new();
            for (reference, _) in &partitions {
                groups.insert(reference.clone(), self.supervisor.groups(reference));
            }
            let samples = meter.sample(&groups);
            let disks = tokio::task::spawn_blocking(move || {
                partitions
                    .into_iter()
                    .map(|(reference, path)| (reference, usage::disk_bytes(&path)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let records = disks
                .into_iter()
                .map(|(reference, disk)| {
                    let sample = samples.get(&reference).copied().unwrap_or_default();
                    usage_record(reference, since, until, sample, disk)
                })
                .collect::<Vec<_>>();
            since = until;
            if !records.is_empty() {
                unposted.push(records);
            }
            if unposted.len() > MAX_UNPOSTED_PERIODS {
                tracing::warn!("dropping the oldest unposted usage period");
                unposted.remove(0);
            }
            let batch: Vec<pb::UsageRecord> = unposted.iter().flatten().cloned().collect();
            if batch.is_empty() {
                continue;
            }
            match self.master.post_usage(batch).await {
                Ok(()) => unposted.clear(),
                Err(e) => tracing::warn!("posting usage (kept for the next post): {e}"),
            }
        }
    }

    async fn load_replicas(&self) {
        let path = self.config.state_dir.join(REPLICAS_FILE);
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            return;
        };
        match toml::from_str::<SavedReplicas>(&text) {
            Ok(saved) => {
                let members: Vec<pb::ReplicaEndpoint> = saved
                    .members
                    .into_iter()
                    .map(|url| pb::ReplicaEndpoint {
                        url,
                        ..Default::default()
                    })
                    .collect();
                self.master.replicas.learn(&members);
            }
            Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
        }
    }

    async fn save_replicas(&self, members: &[String]) {
        if members.is_empty() {
            return;
        }
        let saved = SavedReplicas {
            members: members.to_vec(),
        };
        let path = self.config.state_dir.join(REPLICAS_FILE);
        let Ok(text) = toml::to_string(&saved) else {
            return;
        };
        let temporary = path.with_extension("toml.tmp");
        let written = async {
            tokio::fs::write(&temporary, &text).await?;
            tokio::fs::rename(&temporary, &path).await
        };
        if let Err(e) = written.await {
            tracing::warn!("cannot save the replica list in {}: {e}", path.display());
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedReplicas {
    members: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum SoftwareFailure {
    #[error(transparent)]
    Install(#[from] software::SoftwareError),
    #[error(transparent)]
    Master(#[from] CallError),
}

/// One watch channel per software release and per partition; a worker ends when its sender
/// goes (the master stopped listing it).
#[derive(Default)]
struct Workers {
    software: HashMap<String, watch::Sender<Fresh<pb::Software>>>,
    partitions: HashMap<String, watch::Sender<Fresh<pb::ComputerPartition>>>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// A worker wakes when its item changed; the applied index is updated silently (a worker
    /// holding back a stale view waits for the agent's next poll instead).
    fn dispatch(&mut self, agent: &Arc<Agent>, reply: &pb::PollComputerReply) {
        let applied = reply.applied_index;
        let urls: BTreeSet<&str> = reply.software.iter().map(|s| s.url.as_str()).collect();
        self.software.retain(|url, _| urls.contains(url.as_str()));
        for software in &reply.software {
            match self.software.get(&software.url) {
                Some(sender) => {
                    sender.send_if_modified(|old| old.update(applied, software));
                }
                None => {
                    let (sender, receiver) = watch::channel(Fresh::new(applied, software));
                    self.tasks.spawn(agent.clone().software_worker(receiver));
                    self.software.insert(software.url.clone(), sender);
                }
            }
        }
        let references: BTreeSet<&str> = reply
            .partitions
            .iter()
            .map(|p| p.reference.as_str())
            .collect();
        self.partitions
            .retain(|r, _| references.contains(r.as_str()));
        for view in &reply.partitions {
            match self.partitions.get(&view.reference) {
                Some(sender) => {
                    sender.send_if_modified(|old| old.update(applied, view));
                }
                None => {
                    let (sender, receiver) = watch::channel(Fresh::new(applied, view));
                    self.tasks.spawn(agent.clone().partition_worker(receiver));
                    self.partitions.insert(view.reference.clone(), sender);
                }
            }
        }
        // Reap finished workers so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }
}

/// After a replica showed it cannot long-poll, periodic polls for this long, then long-poll
/// again (the cluster may have been upgraded meanwhile).
const LONG_POLL_PAUSE: Duration = Duration::from_secs(600);
/// Immediate answers with an unchanged view before the agent concludes long-poll is ignored.
const LONG_POLL_STRIKES: u32 = 3;

/// Whether the agent long-polls: as configured, except for a pause after a replica refused
/// long-polls or answered them at once with nothing new (a replica that ignores `after` would
/// otherwise have the agent poll in a tight loop).
#[derive(Debug)]
struct LongPoll {
    configured: bool,
    paused_until: Option<Instant>,
    strikes: u32,
}

impl LongPoll {
    fn new(configured: bool) -> Self {
        Self {
            configured,
            paused_until: None,
            strikes: 0,
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.configured && self.paused_until.is_none_or(|until| now >= until)
    }

    fn refused(&mut self, now: Instant) {
        self.paused_until = Some(now + LONG_POLL_PAUSE);
        self.strikes = 0;
    }

    /// Takes a long-poll's answer; true when it paused long-polling.
    fn answered(
        &mut self,
        after: u64,
        version: u64,
        elapsed: Duration,
        wait: Duration,
        now: Instant,
    ) -> bool {
        // The master answers before the wait only when the view changed.
        let ignored = version <= after && elapsed < wait / 2;
        if !ignored {
            self.strikes = 0;
            return false;
        }
        self.strikes += 1;
        if self.strikes < LONG_POLL_STRIKES {
            return false;
        }
        self.refused(now);
        true
    }
}

/// An item of a poll reply with the index the replica had applied when it answered.
struct Fresh<T> {
    applied: u64,
    item: T,
}

impl<T: Clone> Fresh<T> {
    fn new(applied: u64, item: &T) -> Self {
        Self {
            applied,
            item: item.clone(),
        }
    }

    fn parts(&self) -> (u64, T) {
        (self.applied, self.item.clone())
    }

    /// Takes a newer poll's item; whether the item itself changed.
    fn update(&mut self, applied: u64, item: &T) -> bool
    where
        T: PartialEq,
    {
        self.applied = applied;
        if self.item == *item {
            return false;
        }
        self.item = item.clone();
        true
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn usage_record(
    partition: String,
    since: u64,
    until: u64,
    sample: usage::PartitionSample,
    disk: u64,
) -> pb::UsageRecord {
    let movement = |resource: &str, category: &str, quantity: f64| pb::UsageMovement {
        resource: resource.into(),
        category: category.into(),
        quantity,
    };
    pb::UsageRecord {
        partition,
        period_start: since,
        period_end: until,
        movements: vec![
            movement("cpu", "seconds", sample.cpu_seconds),
            movement("memory", "bytes", sample.memory_bytes as f64),
            movement("disk", "bytes", disk as f64),
        ],
    }
}

impl crate::observe::Observed for Agent {
    fn metrics(&self) -> &crate::observe::NodeMetrics {
        &self.master.replicas.metrics
    }

    fn snapshot(&self) -> crate::observe::Snapshot {
        let view = self.view.borrow();
        let mut snapshot = crate::observe::Snapshot {
            replica: self.master.replicas.current(),
            supervised_partitions: 0,
            ..Default::default()
        };
        if let Some(view) = view.as_ref() {
            snapshot.partitions = view.partitions.len();
            let mut instances = BTreeMap::<String, usize>::new();
            for partition in &view.partitions {
                if let Some(instance) = &partition.instance {
                    *instances
                        .entry(slapcluster_api::short_name(
                            instance.requested_state().as_str_name(),
                        ))
                        .or_default() += 1;
                }
                if self.supervisor.supervises(&partition.reference) {
                    snapshot.supervised_partitions += 1;
                }
            }
            snapshot.instances = instances.into_iter().collect();
            let mut software = BTreeMap::<String, usize>::new();
            for release in &view.software {
                *software
                    .entry(slapcluster_api::short_name(
                        release.reported().as_str_name(),
                    ))
                    .or_default() += 1;
            }
            snapshot.software = software.into_iter().collect();
        }
        snapshot
    }

    fn ready_limit(&self) -> Duration {
        // A long-poll answers within its wait; allow two of them and the time to fail over.
        self.config.poll_interval * 2 + Duration::from_secs(15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_pauses_when_a_replica_ignores_it_and_comes_back() {
        let now = Instant::now();
        let wait = Duration::from_secs(60);
        let mut long_poll = LongPoll::new(true);
        // A change answered early, and a wait that ran out: both honour long-poll.
        assert!(!long_poll.answered(5, 6, Duration::from_millis(3), wait, now));
        assert!(!long_poll.answered(6, 6, wait, wait, now));
        // Unchanged views at once, three times in a row: long-poll is being ignored.
        for strike in 1..=LONG_POLL_STRIKES {
            let paused = long_poll.answered(6, 6, Duration::from_millis(2), wait, now);
            assert_eq!(paused, strike == LONG_POLL_STRIKES);
        }
        assert!(!long_poll.active(now));
        assert!(long_poll.active(now + LONG_POLL_PAUSE));
        assert!(
            !LongPoll::new(false).active(now),
            "configured off stays off"
        );
    }
}
