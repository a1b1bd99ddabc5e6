//! `slapmaster`, as a library its thin `main` and the tests call: [`run`] a replica until a
//! shutdown signal, [`init`] a new cluster, [`join`] one, [`restore`] a backup into a new
//! cluster, and [`dev::dev`] — the three-replica demonstration cluster.
//! Configuration is `config.rs`.

pub mod bootstrap;
pub mod config;
pub mod dev;
pub mod hosted;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use slapcluster_api::client::{self, ClientError};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use tonic::transport::ClientTlsConfig;

pub use config::{ConfigError, FileConfig, Overrides, ValidConfig};

use crate::replica::{ReplicaCore, ReplicaError};
use crate::server::Replica;
use crate::state::{MasterConfig, MasterState};

/// Why a `slapmaster` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Boxed: a replica's error is large, and every command returns this type.
    #[error(transparent)]
    Replica(Box<ReplicaError>),
    #[error(transparent)]
    Storage(#[from] raft_store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(#[from] ClientError),
    /// `init` on a data directory that already belongs to a cluster.
    #[error("{0} already belongs to a cluster; start it with `slapmaster run`")]
    AlreadyInitialized(PathBuf),
    #[error("{0} is not empty; restore into a new data directory")]
    NotEmpty(PathBuf),
    #[error("{0}")]
    Refused(String),
}

impl From<ReplicaError> for DaemonError {
    fn from(error: ReplicaError) -> Self {
        Self::Replica(Box::new(error))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops us.
            Err(e) => {
                tracing::warn!(%e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Summarises node liveness into the log every `every` (see
/// [`ReplicaCore::flush_liveness`]) until the replica stops.
pub fn spawn_liveness_flush(
    core: std::sync::Arc<ReplicaCore>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match core.flush_liveness().await {
                Ok(0) => {}
                Ok(count) => tracing::debug!(count, "liveness summary committed"),
                // Kept for the next summary.
                Err(e) => tracing::warn!(%e, "liveness summary not committed"),
            }
        }
    })
}

/// On the leader, looks for silent nodes every `silence.check_every` (see
/// [`ReplicaCore::check_silence`]) until the replica stops.
pub fn spawn_silence_check(
    core: std::sync::Arc<ReplicaCore>,
    silence: config::Silence,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(silence.check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match core.check_silence(silence.threshold).await {
                Ok(checked) => tracing::debug!(checked, "silence check"),
                // The next tick tries again.
                Err(e) => tracing::warn!(%e, "silence check not committed"),
            }
        }
    })
}

/// Serves `replica` until `shutdown` resolves, then stops it cleanly.
pub async fn serve(
    replica: Replica,
    config: &ValidConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let flush = spawn_liveness_flush(replica.core().clone(), config.liveness_flush);
    let silence = spawn_silence_check(replica.core().clone(), config.silence);
    shutdown.await;
    flush.abort();
    silence.abort();
    // A last summary, so that a clean restart loses no liveness; best effort.
    if let Err(e) = replica.flush_liveness().await {
        tracing::info!(%e, "last liveness summary not committed");
    }
    replica.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `slapmaster run`: serves a replica of an existing cluster (or one waiting to be added).
pub async fn run(
    config: ValidConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let replica = Replica::start(config.replica.clone()).await?;
    serve(replica, &config, shutdown).await
}

/// The replica as the membership will record it. Its address is its identity, so it must not
/// be a port chosen at random (port 0).
fn fixed_address(config: &ValidConfig) -> Result<crate::state::ReplicaNode, ConfigError> {
    let replica = &config.replica;
    if replica.listen.port() == 0 && replica.advertise.is_none() {
        return Err(ConfigError::Invalid {
            key: "listen",
            reason: "a replica that founds a cluster needs a fixed port".into(),
        });
    }
    Ok(crate::state::ReplicaNode {
        addr: replica
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{}", replica.listen)),
        region: replica.region.clone(),
    })
}

/// `slapmaster init`: bootstraps a new cluster whose only voter is this replica, then stops;
/// `slapmaster run` serves it afterwards. Refuses a data directory that already belongs to a
/// cluster, so a cluster is bootstrapped exactly once.
pub async fn init(config: ValidConfig) -> Result<(), DaemonError> {
    fixed_address(&config)?;
    let replica = Replica::start(config.replica.clone()).await?;
    let outcome = match found_unless_initialized(&replica).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(DaemonError::AlreadyInitialized(
            config.replica.data_dir.clone(),
        )),
        Err(e) => Err(e),
    };
    replica.shutdown().await?;
    outcome
}

/// Founds a one-replica cluster on `replica` unless its data directory already belongs to a
/// cluster; whether it founded one.
async fn found_unless_initialized(replica: &Replica) -> Result<bool, DaemonError> {
    let initialized = replica
        .raft()
        .is_initialized()
        .await
        .map_err(ReplicaError::from)?;
    if initialized {
        return Ok(false);
    }
    bootstrap(replica).await?;
    Ok(true)
}

async fn bootstrap(replica: &Replica) -> Result<(), DaemonError> {
    replica
        .initialize(BTreeMap::from([(replica.id(), replica.node())]))
        .await?;
    // The cluster exists once its first membership is applied here.
    replica
        .wait_applied(1, Duration::from_secs(30))
        .await
        .map_err(|e| DaemonError::Refused(format!("the new cluster did not start: {e}")))?;
    tracing::info!(
        id = replica.id(),
        addr = replica.url(),
        "cluster initialised"
    );
    Ok(())
}

/// How a replica joins: promoted to voter once it caught up, or kept a learner (a far region's
/// replica that serves its nodes and never slows a commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAs {
    Voter,
    Learner,
}

impl JoinAs {
    fn noun(self) -> &'static str {
        match self {
            Self::Voter => "voter",
            Self::Learner => "learner",
        }
    }
}

/// `slapmaster join`: serves this replica and asks the cluster at `via` to add it as a learner,
/// then, as a [`JoinAs::Voter`], to promote it to voter once it caught up (receiving a
/// snapshot if it is far behind). A replica that already is what it asks to be (restarted
/// after it joined) just serves.
pub async fn join(
    config: ValidConfig,
    via: &[String],
    actor: &str,
    join_as: JoinAs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let replica = Replica::start(config.replica.clone()).await?;
    join_started(replica, &config, via, actor, join_as, shutdown).await
}

/// [`join`] for a replica already started; `via` are asked in turn.
async fn join_started(
    replica: Replica,
    config: &ValidConfig,
    via: &[String],
    actor: &str,
    join_as: JoinAs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if via.is_empty() {
        replica.shutdown().await?;
        return Err(DaemonError::Refused(
            "name a replica of the cluster to join".into(),
        ));
    }
    let voter = match replica.core().is_voter().await {
        Ok(voter) => voter,
        Err(e) => {
            replica.shutdown().await?;
            return Err(e.into());
        }
    };
    let member = replica
        .core()
        .members()
        .iter()
        .any(|m| m.id == replica.id());
    if voter || (join_as == JoinAs::Learner && member) {
        // Operators and the self-hosting test read these words in the log.
        let standing = if voter { "voter" } else { "learner" };
        tracing::info!(id = replica.id(), "already a {standing} of the cluster");
        return serve(replica, config, shutdown).await;
    }
    // Over TLS the replica asks with its own certificate, as a member of the cluster.
    let tls = config.replica.tls.as_ref().map(crate::tls::client_config);
    let node = replica.node();
    let request = pb::AddMemberRequest {
        id: replica.id(),
        addr: node.addr,
        region: node.region,
        wait_ms: 600_000,
        promote: join_as == JoinAs::Voter,
    };
    tracing::info!(?via, "asking the cluster to add this replica");
    // Listening for SIGTERM from the start: a stop while joining is a clean stop too.
    let mut shutdown = std::pin::pin!(shutdown);
    let added = tokio::select! {
        added = add_member(via, tls, actor, request) => added,
        () = &mut shutdown => {
            tracing::info!("stopped while joining");
            return Ok(replica.shutdown().await?);
        }
    };
    match added {
        Ok(reply) => tracing::info!(index = reply.index, "joined as a {}", join_as.noun()),
        Err(e) => {
            replica.shutdown().await?;
            return Err(e.into());
        }
    }
    serve(replica, config, shutdown).await
}

/// How long `join` keeps asking while the cluster cannot change its membership yet (an
/// election, another replica joining).
const JOIN_RETRY_FOR: Duration = Duration::from_secs(120);

async fn add_member(
    via: &[String],
    tls: Option<ClientTlsConfig>,
    actor: &str,
    request: pb::AddMemberRequest,
) -> Result<pb::MembershipReply, ClientError> {
    let mut retry = client::WhileChanging::for_at_most(JOIN_RETRY_FOR);
    // Each connects on first use and again after a failure: the replica asked may be starting.
    let mut admins = via
        .iter()
        .map(|url| {
            Ok(AdminClient::new(client::connect_lazy_with(
                url,
                tls.clone(),
            )?))
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    let mut turn = 0;
    loop {
        // `join_started` checked that there is one.
        let Some(admin) = admins.get_mut(turn % via.len().max(1)) else {
            return Err(tonic::Status::invalid_argument("no replica to ask").into());
        };
        let answer = admin
            .add_member(client::as_actor(request.clone(), actor)?)
            .await;
        match answer {
            Ok(reply) => return Ok(reply.into_inner()),
            // Unreachable, or no leader / another change in progress: worth another try, on
            // the next replica named.
            Err(status) if retry.again(&status).await => {
                tracing::info!(%status, "the cluster could not add this replica yet; asked again");
                turn += 1;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// `slapmaster restore`: makes `data_dir` the first replica of a new cluster holding the state
/// of `backup` (a file `slapctl snapshot save` wrote). The directory must not exist yet (or be
/// empty); the restore is built in a scratch directory beside it and moved into place only
/// when whole. Logs its progress at every tenth of the backup read (it is read once to check
/// it, then again to load it).
pub async fn restore(config: ValidConfig, backup: &Path) -> Result<(), DaemonError> {
    let data_dir = config.replica.data_dir.clone();
    let nonempty = std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some());
    if nonempty {
        return Err(DaemonError::NotEmpty(data_dir));
    }
    let node = fixed_address(&config)?;
    let scratch = data_dir.with_extension("restoring");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(format!("removing {}", scratch.display())))?;
    }
    let file = std::fs::File::open(backup).map_err(io(format!("opening {}", backup.display())))?;
    let total = file
        .metadata()
        .map_err(io(format!("reading {}", backup.display())))?
        .len();
    // A clone of the handle shares its offset: how far the restore has read.
    let mut position = file
        .try_clone()
        .map_err(io(format!("reading {}", backup.display())))?;
    let id = config.replica.id;
    let storage = config.replica.storage.clone();
    let opened = scratch.clone();
    let (log, state) = tokio::task::spawn_blocking(move || {
        raft_store::open::<MasterConfig, _>(&opened, MasterState::default(), &storage)
    })
    .await
    .map_err(|e| DaemonError::Refused(format!("opening the scratch directory: {e}")))??;
    let ticker = tokio::spawn(async move {
        use std::io::Seek;
        let mut logged = None;
        loop {
            if let Ok(at) = position.stream_position() {
                let tenth = at.min(total).saturating_mul(10) / total.max(1);
                if logged.is_none_or(|t| t != tenth) {
                    logged = Some(tenth);
                    tracing::info!(read = at, of = total, "restoring: {} %", tenth * 10);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let meta = raft_store::restore(
        &log,
        &state,
        file,
        id,
        openraft::Membership::from(BTreeMap::from([(id, node)])),
    )
    .await;
    ticker.abort();
    let meta = meta?;
    drop((log, state));
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    if data_dir.exists() {
        std::fs::remove_dir(&data_dir).map_err(io(format!("replacing {}", data_dir.display())))?;
    }
    std::fs::rename(&scratch, &data_dir).map_err(io(format!(
        "moving {} to {}",
        scratch.display(),
        data_dir.display()
    )))?;
    tracing::info!(%meta, data_dir = %data_dir.display(), "backup restored; start it with `slapmaster run`");
    Ok(())
}

/// `slapmaster ca init`: creates the cluster's root CA in `dir` (`root.pem`, and `root.key`
/// readable by its owner only). Refuses a directory that already holds one.
pub fn ca_init(dir: &Path, cluster: &str) -> Result<(), DaemonError> {
    let key_path = dir.join("root.key");
    if key_path.exists() {
        return Err(DaemonError::Refused(format!(
            "{} already holds a root CA",
            dir.display()
        )));
    }
    let root = ca::Authority::create_root(
        cluster,
        std::time::SystemTime::now(),
        ca::Lifetimes::default().root,
    )
    .map_err(|e| DaemonError::Refused(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::write(dir.join("root.pem"), root.cert_pem())
        .map_err(io(format!("writing {}", dir.display())))?;
    client::write_key_file(&key_path, &root.key_pem())
        .map_err(io(format!("writing {}", key_path.display())))
}

/// `slapmaster cert signer`: an intermediate CA for replica `replica`, signed by the root in
/// `ca_dir`, written into the replica's `tls_dir` as `signer.pem` and `signer.key`: with it
/// the replica signs the certificates of enrolling computers.
pub fn cert_signer(ca_dir: &Path, replica: u64, tls_dir: &Path) -> Result<(), DaemonError> {
    let root = load_root(ca_dir)?;
    let refused = |e: ca::CaError| DaemonError::Refused(e.to_string());
    let request = ca::new_key_and_request().map_err(refused)?;
    let cert = root
        .sign_intermediate(
            &request.csr_pem,
            replica,
            std::time::SystemTime::now(),
            ca::Lifetimes::default().intermediate,
        )
        .map_err(refused)?;
    std::fs::create_dir_all(tls_dir).map_err(io(format!("creating {}", tls_dir.display())))?;
    std::fs::write(tls_dir.join("signer.pem"), cert)
        .map_err(io(format!("writing {}", tls_dir.display())))?;
    let key_path = tls_dir.join("signer.key");
    client::write_key_file(&key_path, &request.key_pem)
        .map_err(io(format!("writing {}", key_path.display())))
}

/// The root CA `slapmaster ca init` wrote into `ca_dir`.
fn load_root(ca_dir: &Path) -> Result<ca::Authority, DaemonError> {
    let read = |name: &str| {
        std::fs::read_to_string(ca_dir.join(name))
            .map_err(io(format!("reading {}", ca_dir.join(name).display())))
    };
    ca::Authority::load(&read("root.pem")?, &read("root.key")?)
        .map_err(|e| DaemonError::Refused(e.to_string()))
}

/// `slapmaster cert issue`: a key and a certificate for `identity` (`replica:2`,
/// `operator:NAME`, `user:NAME`, `computer:ID`, `partition:COMPUTER/PARTITION`) signed by the
/// root CA in `ca_dir`, written to `out` as `roots.pem`, `chain.pem` and `key.pem`.
/// With `csr`, the certificate is for the key of that request (its owner keeps the key), and
/// `out` receives `roots.pem` and `chain.pem` only.
pub fn cert_issue(
    ca_dir: &Path,
    identity: &str,
    server_names: Vec<String>,
    lifetime: Option<Duration>,
    csr: Option<&Path>,
    out: &Path,
) -> Result<ca::Identity, DaemonError> {
    let root = load_root(ca_dir)?;
    let root_pem = root.cert_pem().to_string();
    let identity = ca::Identity::parse_uri(&format!(
        "urn:slapcluster:{}",
        identity.replacen('/', ":", 1)
    ))
    .map_err(|e| DaemonError::Refused(e.to_string()))?;
    if identity.role() == ca::Role::Replica && server_names.is_empty() {
        return Err(DaemonError::Refused(
            "a replica certificate needs --server-name (each address clients reach it at)".into(),
        ));
    }
    let lifetime = lifetime.unwrap_or_else(|| ca::Lifetimes::default().leaf(identity.role()));
    let refused = |e: ca::CaError| DaemonError::Refused(e.to_string());
    if let Some(csr) = csr {
        let csr_pem =
            std::fs::read_to_string(csr).map_err(io(format!("reading {}", csr.display())))?;
        let grant = ca::Grant {
            identity: identity.clone(),
            lifetime,
            server_names,
        };
        let chain = root
            .sign_leaf(&csr_pem, &grant, std::time::SystemTime::now())
            .map_err(refused)?;
        let write = |name: &str, text: &str| {
            std::fs::write(out.join(name), text)
                .map_err(io(format!("writing {}", out.join(name).display())))
        };
        std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
        write("roots.pem", &root_pem)?;
        write("chain.pem", &chain)?;
        return Ok(identity);
    }
    let material = crate::tls::issue(&root, &root_pem, identity.clone(), server_names, lifetime)
        .map_err(refused)?;
    material
        .write_dir(out)
        .map_err(io(format!("writing {}", out.display())))?;
    Ok(identity)
}
