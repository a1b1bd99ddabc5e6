//! The agent: boot (format, register capacity), then the loops. One poll loop keeps the
//! computer's view fresh (a long-poll, or a periodic poll where long-poll is unavailable) and
//! hands each software release and each partition to its own worker through a `watch`
//! channel, so a slow install or promise never delays the others; capacity is registered
//! again daily, usage posted hourly, replicas re-ranked every few minutes.
//!
//! Everything the workers decide comes from the view and the machine: the agent can be
//! restarted with its state directory wiped and converges to the same result.
//!
//! Here: the agent, its boot and the replicas it saved; `poll` (the poll loop and its
//! dispatch), `workers` (software and partition workers), `periodic` (renewal and usage).

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

mod periodic;
mod poll;
mod workers;

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
