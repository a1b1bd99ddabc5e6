//! Replicas of `master-cluster` in the test's own process, on `[::1]` and real sockets: for
//! tests that reach into a replica (its Raft handle, its state) while it serves. With the
//! `in-process` feature, which only master-cluster's own tests enable (a process cluster,
//! [`crate::cluster`], is what every other crate uses).
//!
//! Replicas speak plaintext by default (callers name themselves in a header); a test of TLS
//! sets `tls` in its `tweak` and clears `danger_plaintext`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use master_cluster::replica::ReplicaConfig;
use master_cluster::server::Replica;
use master_cluster::state::model::{
    Actor, ComputerId, SoftwareReleaseUrl, SupplyState, Timestamp, UserId,
};
use master_cluster::state::{Command, Op, ReplicaNode, query, sample};
use openraft::ServerState;

use crate::Error;

/// How long a cluster may take to elect, a replica to catch up or to restart.
pub const WAIT: Duration = Duration::from_secs(20);

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster(format!("{what}: {e}"))
}

/// Starts replica `id` with its data in `dir`, listening on `[::1]:port` (0: a free port),
/// plaintext unless `tweak` says otherwise.
pub async fn start(
    id: u64,
    dir: &Path,
    port: u16,
    tweak: impl Fn(&mut ReplicaConfig),
) -> Result<Replica, Error> {
    let listen = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut config = ReplicaConfig::new(id, listen, dir.to_path_buf());
    config.danger_plaintext = true;
    tweak(&mut config);
    Replica::start(config)
        .await
        .map_err(|e| failed(&format!("starting replica {id}"), e))
}

/// One replica per directory (ids from 1, free ports), `tweak` applied to each configuration;
/// the first initialises them as one cluster of voters. Returns once a leader is elected.
pub async fn cluster(
    dirs: &[tempfile::TempDir],
    tweak: impl Fn(&mut ReplicaConfig),
) -> Result<Vec<Replica>, Error> {
    let mut replicas = Vec::new();
    for (id, dir) in (1..).zip(dirs) {
        replicas.push(start(id, dir.path(), 0, &tweak).await?);
    }
    let voters: BTreeMap<u64, ReplicaNode> = replicas.iter().map(|r| (r.id(), r.node())).collect();
    let first = replicas
        .first()
        .ok_or_else(|| Error::Cluster("a cluster needs a replica".into()))?;
    first
        .initialize(voters)
        .await
        .map_err(|e| failed("initialising", e))?;
    leader(&replicas.iter().collect::<Vec<_>>()).await?;
    Ok(replicas)
}

/// The leader the first of `replicas` knows, once it knows one.
pub async fn leader(replicas: &[&Replica]) -> Result<u64, Error> {
    let first = replicas
        .first()
        .ok_or_else(|| Error::Cluster("no replica to ask".into()))?;
    let metrics = first
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .map_err(|e| failed("electing a leader", e))?;
    metrics
        .current_leader
        .ok_or_else(|| Error::Cluster("the leader vanished".into()))
}

/// Waits until every replica has applied `index`, then checks they hold the same state, byte
/// for byte.
pub async fn assert_identical(replicas: &[&Replica], index: u64) -> Result<(), Error> {
    let mut dumps = Vec::new();
    for replica in replicas {
        replica
            .raft()
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), "caught up")
            .await
            .map_err(|e| failed(&format!("replica {} catching up", replica.id()), e))?;
        let txn = replica
            .state()
            .begin_read()
            .map_err(|e| failed("reading", e))?;
        dumps.push((
            replica.id(),
            query::dump(&txn).map_err(|e| failed("dumping", e))?,
        ));
    }
    let Some(((first, expected), rest)) = dumps.split_first() else {
        return Ok(());
    };
    match rest.iter().find(|(_, dump)| dump != expected) {
        Some((id, _)) => Err(Error::Cluster(format!(
            "replica {id} differs from replica {first}"
        ))),
        None => Ok(()),
    }
}

/// Restarts replica `id` on its old address (its identity in the membership), once the
/// previous run's tasks have released its data directory and the port is free again; returns
/// once it follows or leads.
pub async fn restart(id: u64, dir: &Path, port: u16) -> Result<Replica, Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match start(id, dir, port, |_| {}).await {
            Ok(replica) => {
                replica
                    .raft()
                    .wait(Some(WAIT))
                    .metrics(
                        |m| matches!(m.state, ServerState::Follower | ServerState::Leader),
                        "rejoined",
                    )
                    .await
                    .map_err(|e| failed(&format!("replica {id} rejoining"), e))?;
                return Ok(replica);
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "not yet released; asking again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

// What tests write through a replica.

/// The software release the helpers below supply and request.
pub const SR: &str = "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/kvm/software.cfg";

/// `op` by `actor` at time `at` (microseconds).
pub fn command(at: u64, actor: Actor, op: Op) -> Command {
    Command {
        at: Timestamp(at),
        actor,
        op,
    }
}

/// Registering computer `id` with `partitions` partitions, in region `eu`.
pub fn computer(id: &str, partitions: u32) -> Op {
    Op::RegisterComputer(sample::computer_definition(
        id,
        partitions,
        &[("region", "eu")],
    ))
}

/// A request for an instance titled `title` of [`SR`].
pub fn request(title: &str) -> Op {
    Op::RequestInstance(sample::instance_request(title, SR))
}

pub fn tempdirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect()
}

/// Registers a computer of `partitions` partitions through `replica` and, with `supply`,
/// supplies [`SR`] to it. Returns the last write's index.
pub async fn add_computer(replica: &Replica, id: &str, partitions: u32, supply: bool) -> u64 {
    let node = Actor::Computer(ComputerId::from(id));
    let written = replica
        .write(command(1, node, computer(id, partitions)))
        .await
        .expect("write");
    written.response.expect("registered");
    if !supply {
        return written.index;
    }
    let op = Op::Supply {
        computer: ComputerId::from(id),
        url: SoftwareReleaseUrl::from(SR),
        state: SupplyState::Available,
    };
    let written = replica
        .write(command(2, Actor::Operator(UserId::from("admin")), op))
        .await
        .expect("write");
    written.response.expect("supplied");
    written.index
}
