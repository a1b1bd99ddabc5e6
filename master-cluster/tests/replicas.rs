//! Three replicas on real sockets (`[::1]`, port 0) in one process: writes through a follower,
//! identical state on every replica, the leader stopped and writes going on, and the stopped
//! replica restarted from its data directory catching up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use master_cluster::replica::{Replica, ReplicaConfig};
use master_cluster::state::model::{
    Actor, ComputerDefinition, ComputerId, NetworkAddress, PartitionDefinition, PartitionRef,
    Placement, RequestedState, SoftwareReleaseUrl, SupplyState, Timestamp, UserId,
};
use master_cluster::state::{Command, InstanceRequest, Op, Outcome, query};
use openraft::{BasicNode, ServerState};

const SR: &str = "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/kvm/software.cfg";
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "replicas=info,master_cluster=info,openraft=warn".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

async fn start(id: u64, dir: &Path, port: u16) -> Replica {
    let listen = format!("[::1]:{port}").parse().expect("address");
    Replica::start(ReplicaConfig::new(id, listen, dir.to_path_buf()))
        .await
        .expect("replica starts")
}

fn command(at: u64, actor: Actor, op: Op) -> Command {
    Command {
        at: Timestamp(at),
        actor,
        op,
    }
}

fn computer(id: &str, partitions: u32) -> Op {
    Op::RegisterComputer(ComputerDefinition {
        id: ComputerId::from(id),
        address: None,
        netmask: None,
        instance_root: None,
        software_root: None,
        os_type: None,
        attributes: Some([("region".to_string(), "eu".to_string())].into()),
        capabilities: None,
        partitions: (0..partitions)
            .map(|n| PartitionDefinition {
                reference: PartitionRef(format!("slappart{n}")),
                path: None,
                addresses: vec![NetworkAddress {
                    addr: format!("2001:db8::{n:x}"),
                    netmask: "ffff:ffff:ffff:ffff::".into(),
                }],
                tap: None,
                user: None,
            })
            .collect(),
    })
}

fn request(title: &str) -> Op {
    Op::RequestInstance(InstanceRequest {
        title: title.into(),
        software_release: SoftwareReleaseUrl::from(SR),
        software_type: "default".into(),
        parameters: Default::default(),
        sla: Default::default(),
        shared: false,
        state: RequestedState::Started,
    })
}

async fn leader_of(replicas: &[&Replica]) -> u64 {
    let metrics = replicas[0]
        .raft()
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader is elected");
    metrics.current_leader.expect("checked")
}

/// Waits until every replica has applied `index`, then checks they hold the same bytes.
async fn assert_identical(replicas: &[&Replica], index: u64) {
    for replica in replicas {
        replica
            .raft()
            .wait(WAIT)
            .applied_index_at_least(Some(index), "caught up")
            .await
            .expect("replica catches up");
    }
    let dumps: Vec<_> = replicas
        .iter()
        .map(|r| query::dump(&r.state().begin_read().expect("read")).expect("dump"))
        .collect();
    for (replica, dump) in replicas.iter().zip(&dumps).skip(1) {
        assert!(
            *dump == dumps[0],
            "replica {} differs from replica {}",
            replica.id(),
            replicas[0].id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_any_replica_and_survive_the_leader() {
    init_tracing();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut replicas = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        replicas.push(start(n as u64 + 1, dir.path(), 0).await);
    }

    tracing::info!("--- bootstrap: replica 1 initialises the three-voter cluster");
    let voters: BTreeMap<u64, BasicNode> = replicas
        .iter()
        .map(|r| (r.id(), BasicNode::new(r.url())))
        .collect();
    replicas[0].initialize(voters).await.expect("initialise");
    let all: Vec<&Replica> = replicas.iter().collect();
    let leader = leader_of(&all).await;
    tracing::info!(leader, "elected");

    tracing::info!("--- a follower accepts writes: it forwards them to the leader");
    let follower = replicas
        .iter()
        .find(|r| r.id() != leader)
        .expect("a follower");
    let admin = Actor::Operator(UserId::from("admin"));
    follower
        .write(command(
            1,
            Actor::Computer(ComputerId::from("COMP-1")),
            computer("COMP-1", 4),
        ))
        .await
        .expect("write")
        .expect("registered");
    follower
        .write(command(
            2,
            admin.clone(),
            Op::Supply {
                computer: ComputerId::from("COMP-1"),
                url: SoftwareReleaseUrl::from(SR),
                state: SupplyState::Available,
            },
        ))
        .await
        .expect("write")
        .expect("supplied");
    let placed = follower
        .write(command(
            3,
            Actor::User(UserId::from("alice")),
            request("vm0"),
        ))
        .await
        .expect("write");
    let Ok(Outcome::Instance(first)) = placed else {
        panic!("request answered {placed:?}");
    };
    assert!(
        matches!(first.placement, Placement::Partition(_)),
        "{first:?}"
    );
    let applied = leader_applied(&replicas, leader);
    assert_identical(&all, applied).await;

    tracing::info!("--- the leader stops; the others elect a new one and keep committing");
    let position = replicas
        .iter()
        .position(|r| r.id() == leader)
        .expect("leader");
    let stopped = replicas.remove(position);
    let stopped_id = stopped.id();
    let stopped_dir = dirs[position].path().to_path_buf();
    let stopped_port = stopped.local_addr().port();
    stopped.shutdown().await.expect("shutdown");
    let survivors: Vec<&Replica> = replicas.iter().collect();
    let second = survivors[1]
        .write(command(
            4,
            Actor::User(UserId::from("alice")),
            request("vm1"),
        ))
        .await
        .expect("a write commits after the leader is gone");
    let Ok(Outcome::Instance(second)) = second else {
        panic!("request answered {second:?}");
    };
    assert_ne!(
        second.placement, first.placement,
        "two instances, two partitions"
    );
    let new_leader = leader_of(&survivors).await;
    assert_ne!(new_leader, leader);
    // The acknowledged write before the failover is still there.
    let txn = survivors[0].state().begin_read().expect("read");
    let view = query::instance(&txn, first.guid)
        .expect("query")
        .expect("kept");
    assert_eq!(view.instance.placement, first.placement);
    drop(txn);

    tracing::info!("--- the stopped replica restarts from its data directory and catches up");
    let restarted = restart(stopped_id, &stopped_dir, stopped_port).await;
    replicas.push(restarted);
    let all: Vec<&Replica> = replicas.iter().collect();
    let applied = leader_applied(&replicas, new_leader);
    assert_identical(&all, applied).await;

    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

fn leader_applied(replicas: &[Replica], leader: u64) -> u64 {
    let leader = replicas
        .iter()
        .find(|r| r.id() == leader)
        .expect("leader present");
    leader
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |id| id.index)
}

/// Restarts a replica on its old address (its identity in the membership), once openraft's
/// tasks have released its data directory and the port is free again.
async fn restart(id: u64, dir: &Path, port: u16) -> Replica {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listen = format!("[::1]:{port}").parse().expect("address");
        match Replica::start(ReplicaConfig::new(id, listen, dir.to_path_buf())).await {
            Ok(replica) => {
                replica
                    .raft()
                    .wait(WAIT)
                    .metrics(
                        |m| m.state == ServerState::Follower || m.state == ServerState::Leader,
                        "rejoined",
                    )
                    .await
                    .expect("rejoins");
                return replica;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "not yet released; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart replica {id}: {e}"),
        }
    }
}
