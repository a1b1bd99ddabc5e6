//! The store under real openraft nodes: an in-process cluster whose network calls the other
//! `Raft` handles directly. It shows what the conformance suite cannot: openraft building
//! snapshots and purging the log by its own policy, streaming a snapshot to a learner that fell
//! behind the purged log (through `begin_receiving_snapshot` and `install_snapshot`), and a
//! restarted node resuming from its durable state without replaying the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use openraft::{BasicNode, Config, OptionalSend, Raft, ServerState, SnapshotPolicy};
use openraft_legacy::network_v1::{
    Adapter, ChunkedSnapshotReceiver, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, RaftNetwork,
};
use raft_store::testing::{KvApp, KvCommand, KvConfig, KvResponse};
use raft_store::{Application, Entry, LogStore, Options, StateMachineStore, StoreError, Vote};

/// The key-value application, counting how many entries it is asked to apply.
#[derive(Clone, Default)]
struct CountingApp {
    applied_entries: Arc<AtomicU64>,
}

impl Application<KvConfig> for CountingApp {
    type Error = <KvApp as Application<KvConfig>>::Error;

    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[Entry<KvConfig>],
    ) -> Result<Vec<KvResponse>, Self::Error> {
        self.applied_entries
            .fetch_add(entries.len() as u64, Ordering::SeqCst);
        KvApp.apply(txn, entries)
    }
}

type Node<A> = Raft<KvConfig, StateMachineStore<KvConfig, A>>;
type Store = (LogStore<KvConfig>, StateMachineStore<KvConfig, CountingApp>);

/// Routes RPCs to the nodes registered in it; an absent node is unreachable.
struct Router<A: Application<KvConfig>> {
    nodes: Arc<Mutex<BTreeMap<u64, Node<A>>>>,
}

impl<A: Application<KvConfig>> Clone for Router<A> {
    fn clone(&self) -> Self {
        Self {
            nodes: Arc::clone(&self.nodes),
        }
    }
}

impl<A: Application<KvConfig>> Default for Router<A> {
    fn default() -> Self {
        Self {
            nodes: Default::default(),
        }
    }
}

impl<A: Application<KvConfig>> Router<A> {
    fn add(&self, id: u64, node: Node<A>) {
        self.lock().insert(id, node);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Node<A>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(
        clippy::result_large_err,
        reason = "openraft's RPCError is what its network traits return"
    )]
    fn get<E: std::error::Error>(&self, id: u64) -> Result<Node<A>, RPCError<KvConfig, E>> {
        self.lock().get(&id).cloned().ok_or_else(|| {
            let gone = std::io::Error::new(std::io::ErrorKind::NotConnected, "node is down");
            RPCError::Network(NetworkError::new(&gone))
        })
    }
}

struct Connection<A: Application<KvConfig>> {
    router: Router<A>,
    target: u64,
}

impl<A: Application<KvConfig>> RaftNetworkFactory<KvConfig> for Router<A> {
    type Network = Connection<A>;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Connection<A> {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

fn remote<E: std::error::Error>(target: u64) -> impl FnOnce(E) -> RPCError<KvConfig, E> {
    move |e| RPCError::RemoteError(RemoteError::new(target, e))
}

/// A remote node's error on a call that has no error of its own: its text only.
fn network<E: std::error::Error + 'static>(e: E) -> RPCError<KvConfig> {
    RPCError::Network(NetworkError::new(&e))
}

impl<A: Application<KvConfig>> RaftNetworkV2<KvConfig> for Connection<A> {
    type SnapshotData = tokio::fs::File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<KvConfig>, RPCError<KvConfig>> {
        let node = self.router.get(self.target)?;
        node.append_entries(rpc).await.map_err(network)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<KvConfig>, RPCError<KvConfig>> {
        let node = self.router.get(self.target)?;
        node.vote(rpc).await.map_err(network)
    }

    /// In chunks, as slapcluster's replicas send snapshots (openraft-legacy's sender), so
    /// that the receiving store assembles them through `begin_receiving_snapshot`.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<KvConfig, tokio::fs::File>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<KvConfig>, StreamingError<KvConfig>> {
        let chunks = Chunks {
            router: self.router.clone(),
            target: self.target,
        };
        Adapter::<KvConfig, _, tokio::fs::File>::new(chunks)
            .full_snapshot(vote, snapshot, cancel, option)
            .await
    }
}

/// The chunked snapshot exchange; the other calls of the legacy trait are never used.
struct Chunks<A: Application<KvConfig>> {
    router: Router<A>,
    target: u64,
}

impl<A: Application<KvConfig>> RaftNetwork<KvConfig> for Chunks<A> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<KvConfig>, RPCError<KvConfig, RaftError<KvConfig>>> {
        let node = self.router.get(self.target)?;
        node.append_entries(rpc).await.map_err(remote(self.target))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<KvConfig>,
        RPCError<KvConfig, RaftError<KvConfig, InstallSnapshotError>>,
    > {
        let node = self.router.get(self.target)?;
        node.install_snapshot(rpc)
            .await
            .map_err(remote(self.target))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<KvConfig>, RPCError<KvConfig, RaftError<KvConfig>>> {
        let node = self.router.get(self.target)?;
        node.vote(rpc).await.map_err(remote(self.target))
    }
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "raft-store-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        // Small, so that the run below crosses several snapshots and purges.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
        // Small chunks, so that a snapshot crosses several install_snapshot RPCs.
        snapshot_max_chunk_size: 4096,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid config"))
}

fn open(dir: &Path, app: CountingApp) -> Store {
    raft_store::open(dir, app, &Options::default()).expect("open store")
}

async fn start(id: u64, store: Store, router: &Router<CountingApp>) -> Node<CountingApp> {
    let (log, sm) = store;
    let node = Raft::new(id, config(), router.clone(), log, sm)
        .await
        .expect("start raft");
    router.add(id, node.clone());
    node
}

fn put(i: u64) -> KvCommand {
    KvCommand::Put {
        key: format!("computer/COMP-{}", i % 50).into_bytes(),
        value: format!("partition slappart{i}").repeat(8).into_bytes(),
    }
}

fn kv_rows(sm: &StateMachineStore<KvConfig, CountingApp>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    raft_store::testing::kv_rows(&sm.begin_read().expect("read")).expect("kv rows")
}

/// Compares two replicas' key-value state, reporting the first difference rather than both maps.
fn assert_same_state(
    learner: &StateMachineStore<KvConfig, CountingApp>,
    leader: &StateMachineStore<KvConfig, CountingApp>,
) {
    let (a, b) = (kv_rows(learner), kv_rows(leader));
    let first_difference = a
        .iter()
        .zip(&b)
        .find(|(x, y)| x != y)
        .map(|((k, _), _)| String::from_utf8_lossy(k).into_owned());
    assert!(
        a == b,
        "learner has {} rows, leader {}; first differing key {first_difference:?}",
        a.len(),
        b.len()
    );
}

/// Reopens a data directory once the stopped node's tasks have released it: `Raft::shutdown`
/// returns before openraft's spawned tasks drop their store handles.
async fn reopen<A: Application<KvConfig> + Clone>(
    dir: &Path,
    app: A,
) -> (LogStore<KvConfig>, StateMachineStore<KvConfig, A>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match raft_store::open(dir, app.clone(), &Options::default()) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_ship_to_a_lagging_learner_and_restarts_resume_without_replay() {
    test_kit::init_tracing("raft_cluster=info,openraft=warn");
    let router = Router::default();
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();

    tracing::info!("--- a one-voter cluster writes past several snapshots and purges");
    let leader_app = CountingApp::default();
    let leader_sm = {
        let store = open(dirs[0].path(), leader_app.clone());
        let sm = store.1.clone();
        let leader = start(1, store, &router).await;
        leader
            .initialize(BTreeMap::from([(1, BasicNode::default())]))
            .await
            .expect("initialize");
        leader
            .wait(WAIT)
            .state(ServerState::Leader, "node 1 leads")
            .await
            .expect("leader");
        for i in 0..200 {
            leader.client_write(put(i)).await.expect("write");
        }
        let metrics = leader
            .wait(WAIT)
            .metrics(
                |m| m.purged.is_some_and(|p| p.index > 100),
                "the log is purged behind a snapshot",
            )
            .await
            .expect("purged");
        tracing::info!(snapshot = ?metrics.snapshot, purged = ?metrics.purged, "leader compacted");
        sm
    };

    tracing::info!("--- a learner behind the purged log catches up through a streamed snapshot");
    let learner_app = CountingApp::default();
    let learner_store = open(dirs[1].path(), learner_app.clone());
    let learner_sm = learner_store.1.clone();
    let learner = start(2, learner_store, &router).await;
    let leader = router.get::<RaftError<KvConfig>>(1).expect("leader is up");
    let added = leader
        .add_learner(2, BasicNode::default(), true)
        .await
        .expect("add learner");
    // Wait on the log id the write returned: the leader's metrics may not show it yet.
    learner
        .wait(WAIT)
        .applied_index_at_least(Some(added.log_id.index), "learner caught up")
        .await
        .expect("learner caught up");
    let snapshot = learner_sm
        .current_snapshot()
        .await
        .expect("learner snapshot")
        .expect("the learner installed a snapshot");
    let applied_one_by_one = learner_app.applied_entries.load(Ordering::SeqCst);
    assert!(
        applied_one_by_one < 100,
        "the learner applied {applied_one_by_one} entries itself: it should have installed a snapshot"
    );
    tracing::info!(installed = %snapshot.meta, applied_one_by_one, "learner installed a snapshot");
    assert_same_state(&learner_sm, &leader_sm);

    tracing::info!("--- the leader restarts: it resumes from state.redb, nothing is re-applied");
    let applied_before = leader_sm.applied().await.expect("applied").0;
    leader.shutdown().await.expect("shutdown");
    router.remove(1);
    drop((leader, leader_sm));
    let restarted_app = CountingApp::default();
    let store = reopen(dirs[0].path(), restarted_app.clone()).await;
    let leader_sm = store.1.clone();
    let leader = start(1, store, &router).await;
    leader
        .wait(WAIT)
        .state(ServerState::Leader, "node 1 leads again")
        .await
        .expect("leader again");
    let written = leader
        .client_write(put(1000))
        .await
        .expect("write after restart");
    let reapplied = restarted_app.applied_entries.load(Ordering::SeqCst);
    // The new term's blank entry and the one write; never the entries before the restart.
    assert!(
        reapplied <= 2,
        "{reapplied} entries applied after restart; state was durable at {applied_before:?}"
    );
    learner
        .wait(WAIT)
        .applied_index_at_least(
            Some(written.log_id.index),
            "learner follows the restarted leader",
        )
        .await
        .expect("learner follows");
    assert_same_state(&learner_sm, &leader_sm);

    leader.shutdown().await.expect("shutdown");
    learner.shutdown().await.expect("shutdown");
}

/// Fails every batch that contains a delete of the key `poison`.
#[derive(Clone, Default)]
struct PoisonableApp;

#[derive(Debug, thiserror::Error)]
#[error("cannot apply: {0}")]
struct Poisoned(String);

impl Application<KvConfig> for PoisonableApp {
    type Error = Poisoned;

    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[Entry<KvConfig>],
    ) -> Result<Vec<KvResponse>, Poisoned> {
        let poison = KvCommand::Delete {
            key: b"poison".to_vec(),
        };
        if entries
            .iter()
            .any(|e| matches!(&e.payload, openraft::EntryPayload::Normal(c) if *c == poison))
        {
            return Err(Poisoned("the poison command".to_string()));
        }
        KvApp
            .apply(txn, entries)
            .map_err(|e| Poisoned(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_stops_the_node_and_applies_nothing_of_the_failed_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Router::<PoisonableApp>::default();
    let (log, sm) = raft_store::open(dir.path(), PoisonableApp, &Options::default()).expect("open");
    let node = Raft::new(1, config(), router.clone(), log, sm.clone())
        .await
        .expect("start raft");
    node.initialize(BTreeMap::from([(1, BasicNode::default())]))
        .await
        .expect("initialize");
    node.wait(WAIT)
        .state(ServerState::Leader, "node 1 leads")
        .await
        .expect("leader");
    for i in 0..10 {
        node.client_write(put(i)).await.expect("write");
    }
    let applied_before = sm.applied().await.expect("applied").0;

    tracing::info!("--- a batch the application cannot apply is a fatal error for the node");
    let poison = KvCommand::Delete {
        key: b"poison".to_vec(),
    };
    let error = node
        .client_write(poison.clone())
        .await
        .expect_err("the write cannot be applied");
    assert!(
        matches!(
            error,
            RaftError::Fatal(openraft::error::Fatal::StorageError(_))
        ),
        "{error:?}"
    );
    let _ = node.shutdown().await;
    drop((node, sm));

    tracing::info!(
        "--- reopened: the failed batch left no trace in the state, its entry is in the log"
    );
    let (log, sm) = reopen(dir.path(), PoisonableApp).await;
    assert_eq!(sm.applied().await.expect("applied").0, applied_before);
    let last = log
        .entries(..)
        .await
        .expect("entries")
        .pop()
        .expect("an entry");
    assert_eq!(last.payload, openraft::EntryPayload::Normal(poison));
}
