//! The replica core: the master's state machine on raft-store, driven by openraft. It opens
//! its storage, Raft, the batcher and its channels to the other replicas, and serves nothing
//! itself: `crate::server` mounts the transports around it. Any replica accepts any write: the leader commits it, a follower forwards it to the
//! leader over its long-lived channel and returns the leader's answer, and during an election
//! the write waits (bounded) for a leader instead of failing.
//!
//! Retrying a write whose outcome is unknown (the leader died after committing, before
//! answering) is safe because every command is idempotent: a repeated request, report or
//! publication finds its effect already applied and answers `Unchanged`.
//!
//! - this file: [`ReplicaCore`] (open, write, read, poll);
//! - `error`: its transport-free errors ([`CallError`], [`WriteError`], [`ReadError`],
//!   [`CoreError`], [`ReplicaError`]);
//! - `batcher` and `leader`: the write path (batches at the leader, forwarding elsewhere);
//! - `network` and `wire`: Raft's calls to the other replicas, and their payloads;
//!   [`links`]: those connections kept open and their round trips measured;
//! - `config`: what a replica needs to start; `membership`: joining, promoting and removing
//!   replicas;
//! - [`metrics`]: what the replica counts; [`signing`]: the certificates it signs.

mod batcher;
mod config;
mod error;
mod leader;
pub mod links;
mod membership;
pub mod metrics;
mod network;
pub mod signing;
pub mod status;
pub(crate) mod wire;

use openraft::async_runtime::WatchReceiver as _;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;

pub use config::{RaftTiming, ReplicaConfig, SlapConfig};
pub use error::{CallError, CoreError, ReadError, ReplicaError, WriteError};
pub use membership::{Member, MembershipError, Role, quorum_after_removal};
pub use network::{Network, Peers};
pub use wire::ForwardError;

pub(crate) use leader::Attempt;
use leader::{ReadIndexCall, WriteCall};

use crate::lock;
use crate::state::model::{Actor, ComputerId, Timestamp};
use crate::state::query::{self, ComputerView};
use crate::state::{Command, MasterConfig, MasterState, Op, ReplicaNode, Response};
use raft_store::StateMachineStore;

/// openraft driving the master's state machine on raft-store.
pub type MasterRaft = Raft<MasterConfig, StateMachineStore<MasterConfig, MasterState>>;

/// The time a replica stamps on what it proposes: microseconds since the Unix epoch (a clock
/// before 1970 reads as 0).
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Loads the revoked serials now, then again after every committed change to them (or
/// snapshot install), until the replica is dropped.
async fn spawn_revocation_reload(core: &Arc<ReplicaCore>) -> Result<(), ReplicaError> {
    // Subscribe first: a revocation committed while loading is then not missed.
    let mut changes = core.app.notifier().revocations();
    reload_revocations(core)
        .await
        .map_err(|e| ReplicaError::Revocations(Box::new(e)))?;
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(core) = weak.upgrade() else { return };
            if let Err(e) = reload_revocations(&core).await {
                tracing::error!(%e, "cannot reload the revoked certificates");
            }
        }
    });
    Ok(())
}

/// Records every change of term or leader that Raft's metrics show, until the replica is
/// dropped.
fn spawn_election_watch(core: &Arc<ReplicaCore>) {
    let weak = Arc::downgrade(core);
    let mut metrics = core.raft.metrics();
    tokio::spawn(async move {
        loop {
            let (term, leader) = {
                let m = metrics.borrow_and_update();
                (m.current_term, m.current_leader)
            };
            {
                let Some(core) = weak.upgrade() else { return };
                // Term 0 is a replica that never took part in an election yet.
                if term > 0 && core.elections.observe(term, leader) {
                    core.metrics.leader_changes.inc();
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// How often a replica weighs whether a snapshot is due.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Has Raft build a snapshot whenever `schedule` says one is due, until the replica is
/// dropped. A trigger while a build is under way is ignored by openraft.
fn spawn_snapshot_schedule(
    core: &Arc<ReplicaCore>,
    schedule: raft_store::SnapshotSchedule,
    log: raft_store::LogStore<MasterConfig>,
) {
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SNAPSHOT_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { return };
            let (applied, snapshot) = {
                let metrics = core.raft.metrics();
                let m = metrics.borrow_watched();
                (
                    m.last_applied.map(|id| id.index),
                    m.snapshot.map(|id| id.index),
                )
            };
            let Some(applied) = applied else { continue };
            let applied_since = match snapshot {
                Some(snapshot) => applied.saturating_sub(snapshot),
                None => applied + 1,
            };
            let snapshot_bytes = match core.state.snapshot_bytes() {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(%e, "cannot weigh the current snapshot");
                    continue;
                }
            };
            let log_bytes = log.bytes();
            if schedule.due(applied_since, log_bytes, snapshot_bytes) {
                if core.raft.trigger().snapshot().await.is_err() {
                    // Raft stopped (shutdown or a fatal storage error): nothing left to do.
                    return;
                }
                core.metrics.snapshots_scheduled.inc();
            }
            // After the decision: a reader that sees these figures sees its outcome too.
            core.metrics.raft_log_bytes.set(log_bytes);
            core.metrics.snapshot_bytes.set(snapshot_bytes.unwrap_or(0));
        }
    });
}

/// How often a replica looks at its certificate files.
const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Loads the TLS material again whenever the files in `dir` change (a renewed certificate, a
/// roots file with a second root). Material that does not load is logged and ignored: the
/// replica keeps what it has.
fn spawn_tls_reload(core: &Arc<ReplicaCore>, dir: PathBuf) {
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        let mut seen = crate::tls::fingerprint(&dir);
        loop {
            tokio::time::sleep(TLS_WATCH_INTERVAL).await;
            let Some(core) = weak.upgrade() else { return };
            let now = crate::tls::fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            let Some(current) = &core.tls else { return };
            let loaded = crate::tls::TlsMaterial::read_dir(&dir)
                .map_err(|e| e.to_string())
                .and_then(|material| crate::tls::Tls::new(&material).map_err(|e| e.to_string()));
            match loaded {
                Ok(tls) => {
                    core.peers.set_tls(tls.client.clone());
                    current.replace(tls);
                    tracing::info!(dir = %dir.display(), "TLS material reloaded");
                }
                Err(e) => tracing::warn!(dir = %dir.display(), %e, "TLS material not reloaded"),
            }
        }
    });
}

async fn reload_revocations(core: &ReplicaCore) -> Result<(), ReadError> {
    let revoked = core
        .read(Consistency::Stale, query::revoked_serials)
        .await?;
    let count = revoked.len();
    *core.revoked.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(revoked);
    tracing::debug!(count, "revoked certificates reloaded");
    Ok(())
}

/// What a node's poll answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerPoll {
    /// The computer's view version: pass it as `after` to long-poll for the next change.
    pub version: u64,
    /// The last log index this replica applied when it answered.
    pub applied_index: u64,
    /// `None` for a computer the master does not know.
    pub view: Option<ComputerView>,
}

/// A committed write: the state machine's answer and the log index it was committed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub response: Response,
    pub index: u64,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the default for users).
    Linearizable,
    /// Whatever this replica has applied; may lag the leader.
    Stale,
}

/// The actor a certificate's identity is, for every identity but a replica's (which may act
/// for the callers it passes calls on for).
pub fn identity_actor(identity: ca::Identity) -> Option<Actor> {
    Some(match identity {
        ca::Identity::Replica(_) => return None,
        ca::Identity::Operator(name) => Actor::Operator(name.as_str().into()),
        ca::Identity::User(name) => Actor::User(name.as_str().into()),
        ca::Identity::Computer(id) => Actor::Computer(id.as_str().into()),
        ca::Identity::Partition {
            computer,
            partition,
        } => Actor::Partition(crate::state::model::PartitionId {
            computer: computer.as_str().into(),
            partition: partition.as_str().into(),
        }),
    })
}

/// Where the server bound this replica's listeners: the core advertises the gRPC address
/// (unless told another) and the status page names the others.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub grpc: SocketAddr,
    pub http: Option<SocketAddr>,
    pub slap: Option<SocketAddr>,
}

/// An opened core, and how to know when its data files are closed.
pub struct Opened {
    pub core: Arc<ReplicaCore>,
    pub files: FilesClosed,
}

/// How long [`FilesClosed::wait`] waits for the data files to be closed.
const FILES_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Whether the log and state files are closed: a replica's shutdown waits for it, so that the
/// data directory can be opened again as soon as it returns.
pub struct FilesClosed(Vec<Box<dyn Fn() -> bool + Send + Sync>>);

impl FilesClosed {
    /// Returns once both files are closed. Tasks that held the stores (openraft's workers, a
    /// read on the blocking pool) end on their own shortly after Raft stops; bounded, in case
    /// one does not.
    pub async fn wait(self) {
        let deadline = Instant::now() + FILES_CLOSE_WAIT;
        while !self.0.iter().all(|closed| closed()) {
            if Instant::now() > deadline {
                tracing::warn!("the data files are still open {FILES_CLOSE_WAIT:?} after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Everything a replica's services share: Raft, the applied state, the write path.
pub struct ReplicaCore {
    id: u64,
    node: ReplicaNode,
    raft: MasterRaft,
    /// Shares its notifier with the state machine that raft-store runs.
    app: MasterState,
    batcher: batcher::Batcher,
    /// TLS, unless this replica runs in plaintext.
    tls: Option<Arc<crate::tls::CurrentTls>>,
    signer: Option<ca::Authority>,
    /// Computers whose nodes polled this replica since its last liveness summary, with the
    /// time of their last poll. Memory only: a std mutex held for an insert, never across an
    /// await.
    seen: std::sync::Mutex<std::collections::HashMap<ComputerId, Timestamp>>,
    /// When a leader's append-entries (a heartbeat or entries) last reached this replica.
    leader_contact: std::sync::Mutex<Option<Instant>>,
    /// The serials of revoked certificates as of this replica's applied state, reloaded after
    /// every committed revocation: what connections are refused by. Readers clone the `Arc`.
    revoked: std::sync::RwLock<Arc<BTreeSet<String>>>,
    state: StateMachineStore<MasterConfig, MasterState>,
    peers: Peers,
    /// Measured by pinging every member (`links`): what `Admin.ClusterStatus` shows.
    round_trips: links::RoundTrips,
    local_addr: SocketAddr,
    write_timeout: Duration,
    danger_stale_reads: bool,
    metrics: Arc<metrics::ReplicaMetrics>,
    elections: metrics::Elections,
    http_addr: Option<SocketAddr>,
    slap_addr: Option<SocketAddr>,
    budgets: Arc<crate::limits::Budgets>,
    /// Set when the replica stops: the HTTP listeners stop, and long-lived calls (a leader's
    /// `StreamAppend`) end on it, so that the server's graceful shutdown does not wait for a
    /// peer to hang up.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ReplicaCore {
    /// Opens the data directory and starts Raft, the batcher and the core's own tasks
    /// (election watch, pings, revocation and TLS reloads); serves nothing (see [`crate::server`]).
    pub async fn open(
        config: &ReplicaConfig,
        listening: Listening,
    ) -> Result<Opened, ReplicaError> {
        // Snapshots follow `config.snapshots` (the task below), never openraft's own count.
        let raft_config = Arc::new(
            openraft::Config {
                snapshot_policy: openraft::SnapshotPolicy::Never,
                ..config.raft.clone()
            }
            .validate()?,
        );
        let data_dir = config.data_dir.clone();
        let metrics = Arc::new(metrics::ReplicaMetrics::default());
        let mut storage = config.storage.clone();
        storage.observer = Some(metrics.clone());
        let app = MasterState::default();
        let opened_app = app.clone();
        // Opening verifies every page: blocking work, off the runtime's workers.
        let (log, state) = tokio::task::spawn_blocking(move || {
            raft_store::open::<MasterConfig, _>(&data_dir, opened_app, &storage)
        })
        .await
        .map_err(|source| ReplicaError::Task {
            what: "opening the store",
            source,
        })??;

        let local_addr = listening.grpc;

        let tls = match (&config.tls, config.danger_plaintext) {
            (Some(material), false) => Some(Arc::new(crate::tls::CurrentTls::new(
                crate::tls::Tls::new(material)?,
            ))),
            (None, true) => {
                tracing::warn!(id = config.id, "plaintext: callers are not authenticated");
                None
            }
            (Some(_), true) => {
                return Err(crate::tls::TlsError::Material(
                    "TLS material and danger_plaintext: choose one".into(),
                )
                .into());
            }
            (None, false) => {
                return Err(crate::tls::TlsError::Material(
                    "no TLS material (a replica runs in plaintext only when told so)".into(),
                )
                .into());
            }
        };
        let peers = Peers::new(tls.as_ref().map(|tls| tls.get().client.clone()));
        let network = Network {
            peers: peers.clone(),
        };
        let files = FilesClosed(vec![
            Box::new(log.closed_probe()),
            Box::new(state.closed_probe()),
        ]);
        let log_for_schedule = log.clone();
        let raft = Raft::new(config.id, raft_config, network, log, state.clone()).await?;

        let batcher = batcher::Batcher::start(
            raft.clone(),
            config.max_batch,
            batcher::Slots::new(config.batches_in_flight, config.batch_wait),
            config.write_timeout,
        );
        let core = Arc::new(ReplicaCore {
            id: config.id,
            node: ReplicaNode {
                addr: config.advertise.clone().unwrap_or_else(|| {
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    format!("{scheme}://{local_addr}")
                }),
                region: config.region.clone(),
            },
            raft,
            app,
            batcher,
            seen: Default::default(),
            leader_contact: Default::default(),
            revoked: Default::default(),
            tls: tls.clone(),
            signer: match &config.signer_pem {
                Some((cert, key)) => {
                    Some(ca::Authority::load(cert, key).map_err(crate::tls::TlsError::from)?)
                }
                None => None,
            },
            state,
            peers,
            round_trips: Default::default(),
            local_addr,
            write_timeout: config.write_timeout,
            budgets: crate::limits::Budgets::new(config.limits.clone()),
            danger_stale_reads: config.danger_stale_reads,
            metrics,
            elections: Default::default(),
            http_addr: listening.http,
            slap_addr: listening.slap,
            stopping: tokio::sync::watch::Sender::new(false),
        });
        spawn_election_watch(&core);
        spawn_snapshot_schedule(&core, config.snapshots, log_for_schedule);
        links::spawn(&core);
        spawn_revocation_reload(&core).await?;
        if let Some(dir) = config.tls_dir.clone() {
            spawn_tls_reload(&core, dir);
        }
        Ok(Opened { core, files })
    }

    /// Tells everything serving this replica to stop: the HTTP listeners, and long-lived
    /// calls (a leader's `StreamAppend`).
    pub(crate) fn stop_serving(&self) {
        self.stopping.send_replace(true);
    }

    /// Turns true when the replica stops serving (see [`Self::stop_serving`]).
    pub(crate) fn stopping_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The TLS material connections are accepted with, reloaded as its files change; `None`
    /// in plaintext.
    pub(crate) fn current_tls(&self) -> Option<&Arc<crate::tls::CurrentTls>> {
        self.tls.as_ref()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves once the replica is stopping.
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move { crate::listen::stopped(&mut stopping).await }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the operations listener (metrics, health, status page) listens, if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where the SLAP listener listens, if it does.
    pub fn slap_addr(&self) -> Option<SocketAddr> {
        self.slap_addr
    }

    pub fn metrics(&self) -> &Arc<metrics::ReplicaMetrics> {
        &self.metrics
    }

    /// The leader changes this replica saw recently.
    pub fn elections(&self) -> &metrics::Elections {
        &self.elections
    }

    /// The address other replicas and clients use to reach this one.
    pub fn url(&self) -> &str {
        &self.node.addr
    }

    /// This replica as the membership records it.
    pub fn node(&self) -> ReplicaNode {
        self.node.clone()
    }

    /// Milliseconds since this replica last heard from a leader: 0 on a leader that a quorum
    /// acknowledged within the last heartbeat or so, `None` if it never heard from one.
    pub fn leader_contact_age(&self) -> Option<Duration> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.current_leader == Some(self.id) {
            return metrics
                .last_quorum_acked
                .as_ref()
                .map(|at| openraft::Instant::elapsed(&**at));
        }
        lock(&self.leader_contact).map(|at| at.elapsed())
    }

    /// TLS, unless this replica runs in plaintext (callers then name themselves).
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.tls.as_ref().map(|tls| tls.get())
    }

    /// The intermediate CA this replica signs enrolling computers' certificates with.
    pub fn signer(&self) -> Option<&ca::Authority> {
        self.signer.as_ref()
    }

    /// The serials of the certificates revoked as of this replica's applied state.
    pub fn revoked(&self) -> Arc<BTreeSet<String>> {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A write another replica forwarded here (it believes this one leads): joins this
    /// replica's batches like a local one, without being forwarded again.
    pub(crate) async fn submit_forwarded(&self, command: Command) -> Attempt<Written> {
        self.batcher.submit(command).await
    }

    /// Called by the Raft service when a leader's append-entries was accepted.
    pub(crate) fn heard_from_leader(&self) {
        *lock(&self.leader_contact) = Some(Instant::now());
    }

    pub fn raft(&self) -> &MasterRaft {
        &self.raft
    }

    /// The applied state, for reads (see [`crate::state::query`]).
    pub fn state(&self) -> &StateMachineStore<MasterConfig, MasterState> {
        &self.state
    }

    /// Bootstraps a new cluster with these voters. Done once, on one replica, ever.
    pub async fn initialize(&self, voters: BTreeMap<u64, ReplicaNode>) -> Result<(), ReplicaError> {
        Ok(self.raft.initialize(voters).await?)
    }

    /// Commits `command` through whichever replica leads, and returns its answer with the log
    /// index it was committed at (a node passes it as `min_index` to read its own write).
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        self.at_leader(WriteCall(&command)).await
    }

    /// Commits `op` on behalf of `actor`, stamped now, and returns what it did with the log
    /// index it was committed at. Checked first: a malformed or oversized command never
    /// reaches the log.
    pub async fn execute(
        &self,
        actor: Actor,
        op: Op,
    ) -> Result<(crate::state::Outcome, u64), CallError> {
        crate::state::check_input(&op)?;
        let Written { response, index } = self
            .write(Command {
                at: now(),
                actor,
                op,
            })
            .await?;
        let outcome = response?;
        self.count_placements(&outcome);
        Ok((outcome, index))
    }

    fn count_placements(&self, outcome: &crate::state::Outcome) {
        use crate::state::Outcome;
        use crate::state::model::Placement;
        match outcome {
            Outcome::Instance(summary) if summary.changed => {
                let placement = match summary.placement {
                    Placement::Partition(_) => "partition",
                    Placement::Hosted { .. } => "hosted",
                    Placement::Pending { .. } => "pending",
                    Placement::Unplaceable { .. } => "unplaceable",
                };
                self.metrics.instance_requests.get(placement).inc();
            }
            Outcome::Placed { placed } | Outcome::ComputerRegistered { placed, .. } => {
                self.metrics.placed_later.add(u64::from(*placed));
            }
            _ => {}
        }
    }

    /// Returns once this replica's applied state holds everything committed before the call:
    /// for [`Consistency::Linearizable`] it obtains the read index (from the leader, which
    /// confirms its leadership with a quorum) and waits to apply it. Returns the index that
    /// reads from [`ReplicaCore::state`] now reflect at least.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<u64, WriteError> {
        if consistency == Consistency::Stale || self.danger_stale_reads {
            return Ok(self.applied_index());
        }
        let index = self.at_leader(ReadIndexCall).await?;
        self.wait_applied(index, self.write_timeout).await?;
        Ok(index)
    }

    /// Waits until this replica has applied `index` (a node's `min_index`), at most `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), WriteError> {
        if self.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "min_index")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => WriteError::Behind {
                    index,
                    waited: timeout,
                },
                openraft::metrics::WaitError::ShuttingDown => CoreError::ShuttingDown.into(),
            })
    }

    /// SHA-256 of every row of the state machine's tables and the applied index it reflects,
    /// from one read transaction: replicas that applied the same log have the same digest.
    pub async fn state_digest(&self) -> Result<(u64, Vec<u8>), ReadError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let txn = state.begin_read()?;
            let index = state.applied_index(&txn)?.unwrap_or(0);
            let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
            for (table, key, value) in query::dump(&txn)? {
                // Lengths first: no two row sequences hash the same bytes.
                for part in [table.as_bytes(), &key, &value] {
                    hash.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
                    hash.update(part);
                }
            }
            Ok((index, hash.finish().as_ref().to_vec()))
        })
        .await?
    }

    /// Reads the applied state after the barrier `consistency` asks for (see
    /// [`ReplicaCore::read_barrier`]), in one read transaction, off the runtime's workers.
    pub async fn read<T, F>(&self, consistency: Consistency, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, crate::state::StateError> + Send + 'static,
    {
        self.read_barrier(consistency).await?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || Ok(read(&state.begin_read()?)?)).await?
    }

    /// What callers may take of this replica, and what they hold now.
    pub fn budgets(&self) -> &Arc<crate::limits::Budgets> {
        &self.budgets
    }

    /// How long a write may wait for a leader, and a read for its barrier.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The channels to the other replicas.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The measured round trip to member `id`, when it answered a ping lately (`links`).
    pub fn round_trip(&self, id: u64) -> Option<Duration> {
        self.round_trips.get(id)
    }

    /// A node's poll: its computer's view as this replica has applied it. With `after`, a
    /// long-poll: answers as soon as the computer's view changes past that version, or after
    /// `wait` with the current view (the node then polls again). The version to pass next time
    /// is in the answer.
    pub async fn poll_computer(
        &self,
        computer: &ComputerId,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<ComputerPoll, ReadError> {
        self.saw(computer);
        let _open = after.map(|_| self.metrics.long_polls_open.track());
        // Subscribe before reading, so that a change committed in between wakes us.
        let mut changes = self.app.notifier().subscribe(computer);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let id = computer.clone();
            let expired = tokio::time::Instant::now() >= deadline;
            // The view is read only to be answered: a waiting long-poll holds its subscription
            // and nothing else (holding the view it did not send cost a replica hundreds of
            // KiB per open long-poll on computers of 50 instances).
            let answer = self
                .read(Consistency::Stale, move |txn| {
                    let version = query::computer_version(txn, &id)?;
                    let changed = after.is_none_or(|after| version > after);
                    if !changed && !expired {
                        return Ok(None);
                    }
                    Ok(Some((version, query::computer_view(txn, &id)?)))
                })
                .await?;
            if let Some((version, view)) = answer {
                return Ok(ComputerPoll {
                    version,
                    applied_index: self.applied_index(),
                    view,
                });
            }
            tokio::select! {
                woken = changes.changed() => {
                    if woken.is_err() {
                        return Err(ReadError::Stopped);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Counts a poll by `computer`'s node, and remembers it for the next liveness summary.
    pub fn saw(&self, computer: &ComputerId) {
        lock(&self.seen).insert(computer.clone(), now());
        self.metrics.node_polls.inc();
    }

    /// Writes one summary of the nodes that polled this replica since the last summary (node
    /// liveness reaches the log this way, never one write per poll). The replica daemon calls
    /// it periodically. Returns how many computers it covered.
    pub async fn flush_liveness(&self) -> Result<usize, WriteError> {
        let seen: Vec<(ComputerId, Timestamp)> =
            std::mem::take(&mut *lock(&self.seen)).into_iter().collect();
        if seen.is_empty() {
            return Ok(0);
        }
        let count = seen.len();
        let command = Command {
            at: now(),
            actor: Actor::Replica(self.id),
            op: Op::RecordLiveness { seen: seen.clone() },
        };
        if let Err(e) = self.write(command).await {
            // Keep what was seen for the next summary, unless a newer poll replaced it.
            let mut pending = lock(&self.seen);
            for (computer, at) in seen {
                pending.entry(computer).or_insert(at);
            }
            return Err(e);
        }
        Ok(count)
    }

    /// On the leader, proposes a look for silent nodes with `threshold` (see
    /// [`Op::CheckSilence`]); elsewhere does nothing and answers false. A replica that
    /// believes it leads when it no longer does proposes one more: checks are idempotent.
    pub async fn check_silence(&self, threshold: Duration) -> Result<bool, WriteError> {
        let leader = self.raft.metrics().borrow_watched().current_leader;
        if leader != Some(self.id) {
            return Ok(false);
        }
        let command = Command {
            at: now(),
            actor: Actor::Replica(self.id),
            op: Op::CheckSilence {
                silent_after_s: threshold.as_secs().max(1),
            },
        };
        self.write(command).await?;
        Ok(true)
    }

    /// The last log index this replica applied.
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |id| id.index)
    }
}
