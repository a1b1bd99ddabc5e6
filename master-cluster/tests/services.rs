//! The public gRPC services of a three-replica cluster (`slapmaster dev`'s, on port 0):
//! what nodes, users and operators see through any replica, the errors bad input gets, and
//! a backup restored into a new cluster.
//!
//! Over 800 lines on purpose: the tests share the dev cluster's fixture kept beside them.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use master_cluster::daemon::dev::{self, DEMO_COMPUTER, DEMO_SOFTWARE, DEMO_USER, DevCluster};
use master_cluster::daemon::{self, DaemonError, FileConfig, Overrides};
use master_cluster::replica::Consistency;
use master_cluster::server::Replica;
use master_cluster::state::query;
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::unused_port;
use tonic::Code;
use tonic::transport::Channel;

const COMPUTER: &str = "computer:COMP-DEMO";
const OPERATOR: &str = "operator:test";

/// The dev cluster in plaintext (danger): these tests act as many callers, naming each in
/// the actor header. (`tls.rs` tests the same services over TLS, with certificates.)
async fn dev_cluster(dir: &std::path::Path) -> (DevCluster, String) {
    dev_cluster_at(dir, dev::DevOptions::default().host).await
}

async fn dev_cluster_at(dir: &std::path::Path, host: std::net::IpAddr) -> (DevCluster, String) {
    start_dev(dev::DevOptions {
        data_dir: dir.to_path_buf(),
        host,
        base_port: 0,
        danger_plaintext: true,
    })
    .await
}

async fn start_dev(options: dev::DevOptions) -> (DevCluster, String) {
    let mut report = Vec::new();
    let cluster = dev::start(&options, &mut report)
        .await
        .expect("dev cluster starts");
    (
        cluster,
        String::from_utf8(report).expect("the report is text"),
    )
}

async fn channel(replica: &Replica) -> Channel {
    client::connect(replica.url()).await.expect("connects")
}

fn code<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) -> (Code, String) {
    let status = answer.expect_err("refused");
    (status.code(), status.message().to_string())
}

fn placed_partition(placement: Option<&pb::Placement>) -> String {
    match placement.and_then(|p| p.placement.as_ref()) {
        Some(pb::placement::Placement::Partition(p)) => format!("{}/{}", p.computer, p.partition),
        other => panic!("not placed on a partition: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_places_the_demo_instances_and_restarts_from_its_data() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    // Replica addresses are their identities: a restart must reuse them. As `slapmaster dev`
    // does, over TLS with the dev cluster's own CA.
    let options = dev::DevOptions {
        data_dir: dir.path().to_path_buf(),
        base_port: free_ports(3),
        ..Default::default()
    };
    tracing::info!("--- first start: its CA, bootstrap, demo computer, three instances");
    let (cluster, report) = start_dev(options.clone()).await;
    assert!(
        cluster.replicas[0].url().starts_with("https://"),
        "{report}"
    );
    assert!(report.contains("--tls-dir"), "{report}");
    let partitions: BTreeSet<String> = cluster
        .placements
        .values()
        .map(|reply| placed_partition(reply.placement.as_ref()))
        .collect();
    assert_eq!(
        partitions.len(),
        3,
        "three distinct partitions: {partitions:?}"
    );
    assert!(cluster.placements.values().all(|r| r.changed));
    for (title, reply) in &cluster.placements {
        assert!(
            report.contains(title) && report.contains(&reply.guid),
            "{report}"
        );
    }
    assert!(report.contains("leader") && report.contains(DEMO_COMPUTER));
    let first = cluster.placements.clone();
    cluster.shutdown().await.expect("shutdown");

    tracing::info!("--- second start from the same data: same instances, nothing changed");
    let (cluster, _) = start_dev(options).await;
    for (title, reply) in &cluster.placements {
        assert_eq!(reply.guid, first[title].guid);
        assert_eq!(reply.placement, first[title].placement);
        assert!(!reply.changed, "{title} repeated exactly");
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_users_and_operators_are_served_by_any_replica() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, _) = dev_cluster(dir.path()).await;
    let leader = cluster.replicas[0]
        .raft()
        .metrics()
        .borrow_watched()
        .current_leader
        .expect("a leader");
    let followers: Vec<&Replica> = cluster
        .replicas
        .iter()
        .filter(|r| r.id() != leader)
        .collect();
    let mut node = NodeClient::new(channel(followers[0]).await);
    let mut user = UserClient::new(channel(followers[1]).await);
    let last_index = cluster
        .placements
        .values()
        .map(|r| r.index)
        .max()
        .expect("placed");

    tracing::info!("--- a node polls a follower for its computer, reading its own writes");
    let poll = node
        .poll_computer(
            as_actor(
                pb::PollComputerRequest {
                    computer: DEMO_COMPUTER.into(),
                    min_index: last_index,
                    ..Default::default()
                },
                COMPUTER,
            )
            .expect("actor"),
        )
        .await
        .expect("poll")
        .into_inner();
    assert!(poll.applied_index >= last_index);
    assert!(poll.leader_contact_age_ms.is_some_and(|age| age < 5_000));
    assert_eq!(poll.software.len(), 1);
    assert_eq!(poll.software[0].url, DEMO_SOFTWARE);
    assert_eq!(poll.partitions.len(), 8);
    let busy: Vec<&pb::ComputerPartition> = poll
        .partitions
        .iter()
        .filter(|p| p.instance.is_some())
        .collect();
    assert_eq!(busy.len(), 3);
    let web = cluster.placements["demo-web"].clone();
    let web_partition = placed_partition(web.placement.as_ref());
    let reference = web_partition
        .rsplit('/')
        .next()
        .expect("partition")
        .to_string();

    tracing::info!("--- a long-poll wakes when the instance publishes its connection parameters");
    let waiting = {
        let mut node = node.clone();
        let after = poll.version;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let request = pb::PollComputerRequest {
                computer: DEMO_COMPUTER.into(),
                after: Some(after),
                wait_ms: 20_000,
                ..Default::default()
            };
            let reply = node
                .poll_computer(as_actor(request, COMPUTER).expect("actor"))
                .await;
            (reply, started.elapsed())
        })
    };
    let publish = pb::PublishConnectionRequest {
        partition: Some(pb::PartitionId {
            computer: DEMO_COMPUTER.into(),
            partition: reference.clone(),
        }),
        parameters: HashMap::from([("url".to_string(), "https://[2001:db8::1]:443".to_string())]),
        ..Default::default()
    };
    let mut leader_node = NodeClient::new(
        channel(
            cluster
                .replicas
                .iter()
                .find(|r| r.id() == leader)
                .expect("leader"),
        )
        .await,
    );
    let published = leader_node
        .publish_connection(
            as_actor(publish, &format!("partition:{DEMO_COMPUTER}/{reference}")).expect("actor"),
        )
        .await
        .expect("published")
        .into_inner();
    assert!(published.changed);
    let (woken, waited) = waiting.await.expect("task");
    let woken = woken.expect("long-poll").into_inner();
    assert!(
        waited < Duration::from_secs(10),
        "woken by the change, not the timeout"
    );
    assert!(woken.version > poll.version);
    let instance = woken
        .partitions
        .iter()
        .find(|p| p.reference == reference)
        .and_then(|p| p.instance.as_ref())
        .expect("the web instance");
    assert_eq!(instance.connection["url"], "https://[2001:db8::1]:443");

    tracing::info!("--- the user reads it back, linearizably, through another follower");
    let shown = user
        .show_instance(
            as_actor(
                pb::ShowInstanceRequest {
                    instance: Some(pb::show_instance_request::Instance::Title(
                        "demo-web".into(),
                    )),
                    ..Default::default()
                },
                DEMO_USER,
            )
            .expect("actor"),
        )
        .await
        .expect("shown")
        .into_inner();
    let shown_instance = shown.instance.expect("instance");
    assert_eq!(shown_instance.guid, web.guid);
    assert_eq!(
        shown_instance.connection["url"],
        "https://[2001:db8::1]:443"
    );
    let listed = user
        .list_instances(as_actor(pb::ListInstancesRequest::default(), DEMO_USER).expect("actor"))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.instances.len(), 3);
    let strangers = user
        .list_instances(as_actor(pb::ListInstancesRequest::default(), "user:eve").expect("actor"))
        .await
        .expect("listed")
        .into_inner();
    assert!(strangers.instances.is_empty());

    tracing::info!("--- each reads only what is its own");
    let show = |title: &str, actor: &str| {
        let guid = cluster.placements[title].guid.clone();
        as_actor(
            pb::ShowInstanceRequest {
                instance: Some(pb::show_instance_request::Instance::Guid(guid)),
                ..Default::default()
            },
            actor,
        )
        .expect("actor")
    };
    let (c, m) = code(user.show_instance(show("demo-web", "user:eve")).await);
    assert_eq!(c, Code::PermissionDenied, "another user's instance: {m}");
    let web_partition_actor = format!("partition:{DEMO_COMPUTER}/{reference}");
    user.show_instance(show("demo-web", &web_partition_actor))
        .await
        .expect("a partition reads its own instance");
    let (c, m) = code(
        user.show_instance(show("demo-db", &web_partition_actor))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied, "a sibling's instance: {m}");
    user.show_instance(show("demo-db", COMPUTER))
        .await
        .expect("a computer reads what runs on it");
    let other_poll = pb::PollComputerRequest {
        computer: DEMO_COMPUTER.into(),
        ..Default::default()
    };
    let (c, m) = code(
        node.poll_computer(as_actor(other_poll, "computer:COMP-OTHER").expect("actor"))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied, "another computer's view: {m}");

    tracing::info!("--- usage posted by the node is read back by an operator");
    let record = pb::UsageRecord {
        partition: reference.clone(),
        period_start: 1_000,
        period_end: 2_000,
        movements: vec![pb::UsageMovement {
            resource: "CPU Consumption".into(),
            category: "cpu".into(),
            quantity: 1.5,
        }],
    };
    node.post_usage(
        as_actor(
            pb::PostUsageRequest {
                computer: DEMO_COMPUTER.into(),
                records: vec![record.clone()],
            },
            COMPUTER,
        )
        .expect("actor"),
    )
    .await
    .expect("posted");
    let usage_request = |actor: &str| {
        as_actor(
            pb::UsageRequest {
                computer: DEMO_COMPUTER.into(),
                partition: reference.clone(),
                ..Default::default()
            },
            actor,
        )
        .expect("actor")
    };
    let usage = user
        .usage(usage_request(OPERATOR))
        .await
        .expect("usage")
        .into_inner();
    let (c, m) = code(user.usage(usage_request(DEMO_USER)).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert_eq!(usage.records, vec![record]);

    tracing::info!("--- destroy, then the operator's view of the cluster from a follower");
    user.destroy_instance(
        as_actor(
            pb::DestroyInstanceRequest {
                guid: web.guid.clone(),
            },
            DEMO_USER,
        )
        .expect("actor"),
    )
    .await
    .expect("destroyed");
    let mut admin = AdminClient::new(channel(followers[1]).await);
    let status = admin
        .cluster_status(as_actor(pb::ClusterStatusRequest {}, OPERATOR).expect("actor"))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.leader, leader);
    assert_eq!(status.members.len(), 3);
    for member in &status.members {
        assert!(member.voter && member.unreachable.is_empty(), "{member:?}");
        assert!(member.applied_index.is_some_and(|i| i >= last_index));
        assert_eq!(
            member.role() == pb::Role::Leader,
            member.id == leader,
            "{member:?}"
        );
    }
    // Every replica pings every member each second: the answering follower shows its round
    // trip to the two others (loopback: well under a second), none to itself.
    let answering = status.id;
    let mut measured = test_kit::cluster::wait_for("round trips to the other members", || {
        let mut admin = admin.clone();
        async move {
            let request = as_actor(pb::ClusterStatusRequest {}, OPERATOR).ok()?;
            let status = admin.cluster_status(request).await.ok()?.into_inner();
            let measured: Vec<(u64, Option<u64>)> = status
                .members
                .iter()
                .map(|m| (m.id, m.round_trip_us))
                .collect();
            (measured.iter().filter(|(_, rtt)| rtt.is_some()).count() == 2).then_some(measured)
        }
    })
    .await
    .expect("measured");
    measured.sort();
    for (id, rtt) in measured {
        if id == answering {
            assert_eq!(rtt, None, "no round trip to itself");
        } else {
            assert!(rtt.is_some_and(|us| us < 1_000_000), "{id}: {rtt:?}");
        }
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_error_and_changes_nothing() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    // IPv4 is accepted as well as IPv6: this cluster runs on 127.0.0.1.
    let (cluster, _) = dev_cluster_at(dir.path(), std::net::Ipv4Addr::LOCALHOST.into()).await;
    assert!(cluster.replicas[1].url().starts_with("http://127.0.0.1:"));
    let replica = &cluster.replicas[1];
    let channel = channel(replica).await;
    let mut node = NodeClient::new(channel.clone());
    let mut user = UserClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);
    let index = replica
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("barrier");
    let dump = |r: &Replica| query::dump(&r.state().begin_read().expect("read")).expect("dump");
    let before = dump(replica);

    let poll = |computer: &str| pb::PollComputerRequest {
        computer: computer.into(),
        ..Default::default()
    };
    let (c, m) = code(node.poll_computer(poll(DEMO_COMPUTER)).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    let (c, m) = code(
        node.poll_computer(as_actor(poll("COMP-NONE"), "computer:COMP-NONE").expect("actor"))
            .await,
    );
    assert_eq!((c, m.contains("COMP-NONE")), (Code::NotFound, true), "{m}");
    let mut long = poll(DEMO_COMPUTER);
    long.wait_ms = 3_600_000;
    let (c, m) = code(
        node.poll_computer(as_actor(long, COMPUTER).expect("actor"))
            .await,
    );
    assert_eq!(
        (c, m.contains("wait_ms")),
        (Code::InvalidArgument, true),
        "{m}"
    );

    let show = |guid: &str| {
        as_actor(
            pb::ShowInstanceRequest {
                instance: Some(pb::show_instance_request::Instance::Guid(guid.into())),
                ..Default::default()
            },
            DEMO_USER,
        )
        .expect("actor")
    };
    let (c, m) = code(user.show_instance(show("SOFTINST-999")).await);
    assert_eq!(c, Code::NotFound, "{m}");
    let (c, m) = code(user.show_instance(show("instance 1")).await);
    assert_eq!(
        (c, m.contains("SOFTINST-n")),
        (Code::InvalidArgument, true),
        "{m}"
    );

    let request = |title: &str, value_bytes: usize| {
        as_actor(
            pb::RequestInstanceRequest {
                title: title.into(),
                software_release: DEMO_SOFTWARE.into(),
                parameters: HashMap::from([("blob".to_string(), "x".repeat(value_bytes))]),
                ..Default::default()
            },
            DEMO_USER,
        )
        .expect("actor")
    };
    let (c, m) = code(user.request_instance(request("big", 1_500_000)).await);
    assert_eq!(
        (c, m.contains("at most")),
        (Code::InvalidArgument, true),
        "{m}"
    );
    let (c, m) = code(user.request_instance(request("huge", 5 << 20)).await);
    assert!(
        matches!(c, Code::OutOfRange | Code::ResourceExhausted),
        "a message above the limit: {c:?} {m}"
    );

    tracing::info!("--- a definition that drops a busy partition is refused whole");
    let definition = pb::RegisterComputerRequest {
        computer: DEMO_COMPUTER.into(),
        partitions: vec![pb::PartitionDefinition {
            reference: "slappart7".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (c, m) = code(
        node.register_computer(as_actor(definition, COMPUTER).expect("actor"))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    let other = pb::RegisterComputerRequest {
        computer: "COMP-OTHER".into(),
        ..Default::default()
    };
    let (c, m) = code(
        node.register_computer(as_actor(other, COMPUTER).expect("actor"))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let (c, m) = code(
        admin
            .cluster_status(as_actor(pb::ClusterStatusRequest {}, DEMO_USER).expect("actor"))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let (c, m) = code(
        admin
            .remove_member(as_actor(pb::RemoveMemberRequest { id: 42 }, OPERATOR).expect("actor"))
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");

    tracing::info!("--- none of it changed the state");
    let after_index = replica
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("barrier");
    let after = dump(replica);
    assert!(
        after == before,
        "state changed between index {index} and {after_index}"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// The first of `count` consecutive ports free now on `[::1]` (replicas that restart need
/// fixed addresses).
fn free_ports(count: u16) -> u16 {
    (0..100)
        .map(|_| unused_port(&[]).expect("a free port"))
        .find(|&base| {
            (1..count).all(|n| {
                base.checked_add(n)
                    .is_some_and(|port| std::net::TcpListener::bind(("::1", port)).is_ok())
            })
        })
        .expect("consecutive free ports")
}

/// A backup as `slapctl snapshot save` takes one: the Admin service's snapshot stream, whole.
async fn save_backup(url: &str, to: &std::path::Path) -> usize {
    let channel = client::connect_with(url, None).await.expect("connect");
    let request = as_actor(pb::SnapshotRequest {}, OPERATOR).expect("actor");
    let mut chunks = AdminClient::new(channel)
        .snapshot(request)
        .await
        .expect("snapshot")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await.expect("a chunk") {
        bytes.extend_from_slice(&chunk.data);
    }
    std::fs::write(to, &bytes).expect("write the backup");
    bytes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, _) = dev_cluster(&dir.path().join("old")).await;
    let backup = dir.path().join("backup.snapshot");

    tracing::info!("--- backup through a replica, then the old cluster goes away");
    let bytes = save_backup(cluster.replicas[2].url(), &backup).await;
    assert!(bytes > 0);
    let old = query::dump(&cluster.replicas[2].state().begin_read().expect("read")).expect("dump");
    cluster.shutdown().await.expect("shutdown");

    let mut taken = Vec::new();
    let mut config = |id: u64, data: &str| {
        let port = unused_port(&taken).expect("a free port");
        taken.push(port);
        FileConfig::default()
            .validate(Overrides {
                id: Some(id),
                listen: Some(format!("[::1]:{port}")),
                data_dir: Some(dir.path().join(data)),
                insecure_plaintext: true,
                ..Default::default()
            })
            .expect("valid")
    };

    tracing::info!("--- a damaged backup is refused and leaves no data directory");
    let mut damaged = std::fs::read(&backup).expect("read");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let damaged_path = dir.path().join("damaged.snapshot");
    std::fs::write(&damaged_path, damaged).expect("write");
    let refused = daemon::restore(config(1, "damaged"), &damaged_path).await;
    assert!(
        matches!(refused, Err(DaemonError::Storage(_))),
        "{refused:?}"
    );
    assert!(!dir.path().join("damaged").exists());

    tracing::info!("--- restored: the same state, and a cluster that takes writes");
    let first = config(1, "new-1");
    daemon::restore(first.clone(), &backup)
        .await
        .expect("restore");
    let again = daemon::restore(first.clone(), &backup).await;
    assert!(matches!(again, Err(DaemonError::NotEmpty(_))), "{again:?}");
    let restored = Replica::start(first.replica.clone()).await.expect("starts");
    let new = query::dump(&restored.state().begin_read().expect("read")).expect("dump");
    assert!(new == old, "the restored state is the backup's");
    let mut user = UserClient::new(channel(&restored).await);
    let reply = user
        .request_instance(
            as_actor(
                pb::RequestInstanceRequest {
                    title: "after-restore".into(),
                    software_release: DEMO_SOFTWARE.into(),
                    ..Default::default()
                },
                DEMO_USER,
            )
            .expect("actor"),
        )
        .await
        .expect("a write on the restored cluster")
        .into_inner();
    assert_eq!(reply.guid, "SOFTINST-4", "guids go on from the backup's");

    tracing::info!("--- a second replica joins the restored cluster by snapshot");
    let second = Replica::start(config(2, "new-2").replica)
        .await
        .expect("starts");
    let mut admin = AdminClient::new(channel(&restored).await);
    let node = second.node();
    admin
        .add_member(
            as_actor(
                pb::AddMemberRequest {
                    id: 2,
                    addr: node.addr,
                    wait_ms: 20_000,
                    promote: true,
                    ..Default::default()
                },
                OPERATOR,
            )
            .expect("actor"),
        )
        .await
        .expect("joined");
    let index = restored
        .read_barrier(Consistency::Linearizable)
        .await
        .expect("barrier");
    second
        .wait_applied(index, Duration::from_secs(20))
        .await
        .expect("caught up");
    let joined = query::dump(&second.state().begin_read().expect("read")).expect("dump");
    let leader_dump = query::dump(&restored.state().begin_read().expect("read")).expect("dump");
    assert!(joined == leader_dump, "the new member holds the same state");
    second.shutdown().await.expect("shutdown");
    restored.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_bootstraps_a_data_directory_exactly_once() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |port: u16| {
        FileConfig::default()
            .validate(Overrides {
                id: Some(1),
                listen: Some(format!("[::1]:{port}")),
                data_dir: Some(dir.path().join("replica-1")),
                insecure_plaintext: true,
                ..Default::default()
            })
            .expect("valid")
    };
    let refused = daemon::init(config(0)).await;
    assert!(
        matches!(&refused, Err(DaemonError::Config(_))),
        "a founder on a random port: {refused:?}"
    );
    let port = unused_port(&[]).expect("a free port");
    daemon::init(config(port)).await.expect("the first init");
    let again = daemon::init(config(port)).await;
    assert!(
        matches!(&again, Err(DaemonError::AlreadyInitialized(_))),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_makes_its_seed_once_and_serves_the_same_one_again() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = unused_port(&[]).expect("a free port");
    let options = daemon::bootstrap::BootstrapOptions {
        dir: dir.path().to_path_buf(),
        cluster: "test".into(),
        operator: "admin".into(),
    };
    let overrides = || Overrides {
        listen: Some(format!("[::1]:{port}")),
        ..Default::default()
    };
    // Stopped as soon as it serves: what it made is what is checked.
    let mut said = Vec::new();
    daemon::bootstrap::bootstrap(
        &options,
        FileConfig::default(),
        overrides(),
        &mut said,
        async {},
    )
    .await
    .expect("the first bootstrap");
    let said = String::from_utf8(said).expect("text");
    assert!(
        said.contains("seed replica 1 serving at https://[::1]"),
        "{said}"
    );
    let root = std::fs::read(dir.path().join("ca/root.pem")).expect("a root CA");
    let seed = std::fs::read(dir.path().join("tls/chain.pem")).expect("the seed's certificate");
    let info = ca::CertificateInfo::from_pem(&String::from_utf8_lossy(&seed)).expect("reads");
    assert_eq!(info.identity, Some(ca::Identity::Replica(1)));
    let operator =
        std::fs::read_to_string(dir.path().join("operator/chain.pem")).expect("an operator");
    let info = ca::CertificateInfo::from_pem(&operator).expect("reads");
    assert_eq!(info.identity, Some(ca::Identity::Operator("admin".into())));

    let mut again = Vec::new();
    daemon::bootstrap::bootstrap(
        &options,
        FileConfig::default(),
        overrides(),
        &mut again,
        async {},
    )
    .await
    .expect("run again, it serves the same seed");
    assert_eq!(
        std::fs::read(dir.path().join("ca/root.pem")).expect("root"),
        root
    );
    assert_eq!(
        std::fs::read(dir.path().join("tls/chain.pem")).expect("seed"),
        seed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica_within_a_second() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, _) = dev_cluster(dir.path()).await;
    for replica in &cluster.replicas {
        assert!(replica.revoked().is_empty());
    }
    let mut admin = AdminClient::new(channel(&cluster.replicas[2]).await);
    let revoke = |serial: &str, actor: &str| {
        as_actor(
            pb::RevokeCertificateRequest {
                serial: serial.into(),
                reason: "key lost".into(),
            },
            actor,
        )
        .expect("actor")
    };
    let (c, m) = code(admin.revoke_certificate(revoke("4a01", DEMO_USER)).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let (c, m) = code(admin.revoke_certificate(revoke("not hex", OPERATOR)).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");

    tracing::info!("--- revoked through a replica: all three refuse it within a second");
    admin
        .revoke_certificate(revoke("4a01", OPERATOR))
        .await
        .expect("revoked");
    let acknowledged = std::time::Instant::now();
    let deadline = acknowledged + Duration::from_secs(1);
    for replica in &cluster.replicas {
        while !replica.revoked().contains("4a01") {
            assert!(
                std::time::Instant::now() < deadline,
                "replica {} still accepts the revoked certificate after a second",
                replica.id()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tracing::info!(elapsed = ?acknowledged.elapsed(), "every replica refuses the revoked certificate");
    cluster.shutdown().await.expect("shutdown");
}

#[test]
fn an_operator_signs_a_request_and_the_key_stays_with_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    daemon::ca_init(&ca_dir, "test").expect("root");
    assert!(
        daemon::ca_init(&ca_dir, "test").is_err(),
        "one root per directory"
    );
    let request = ca::new_key_and_request().expect("the owner's key");
    let csr = dir.path().join("node.csr");
    std::fs::write(&csr, &request.csr_pem).expect("written");
    let out = dir.path().join("node");
    let identity = daemon::cert_issue(
        &ca_dir,
        "computer:COMP-3",
        Vec::new(),
        None,
        Some(&csr),
        &out,
    )
    .expect("signed");
    assert_eq!(identity, ca::Identity::Computer("COMP-3".into()));
    assert!(
        !out.join("key.pem").exists(),
        "the issuer never had the key"
    );
    let chain = std::fs::read_to_string(out.join("chain.pem")).expect("chain");
    let info = ca::CertificateInfo::from_pem(&chain).expect("reads");
    assert_eq!(info.identity, Some(identity));
    let refused = daemon::cert_issue(&ca_dir, "replica:2", Vec::new(), None, None, &out);
    assert!(
        refused.is_err(),
        "a replica certificate needs its server names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_applied_the_same_log_report_the_same_state_digest() {
    test_kit::init_tracing("services=info,master_cluster=info,openraft=warn");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, _) = dev_cluster(dir.path()).await;
    let digests = || async {
        let mut digests = Vec::new();
        for replica in &cluster.replicas {
            let mut admin = AdminClient::new(channel(replica).await);
            let reply = admin
                .replica_status(
                    as_actor(pb::ReplicaStatusRequest { state_digest: true }, OPERATOR)
                        .expect("actor"),
                )
                .await
                .expect("status")
                .into_inner();
            assert_eq!(reply.state_digest.len(), 32, "a SHA-256");
            digests.push((reply.digest_index, reply.state_digest));
        }
        digests
    };
    let settled = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let digests = digests().await;
            if digests.iter().all(|d| d.0 == digests[0].0) {
                return digests;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replicas never reached one index: {digests:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let before = settled().await;
    assert!(
        before.iter().all(|d| d.1 == before[0].1),
        "same index, same digest"
    );

    tracing::info!("--- a write changes every replica's digest the same way");
    let mut user = UserClient::new(channel(&cluster.replicas[1]).await);
    user.request_instance(
        as_actor(
            pb::RequestInstanceRequest {
                title: "digest".into(),
                software_release: DEMO_SOFTWARE.into(),
                ..Default::default()
            },
            &format!("user:{DEMO_USER}"),
        )
        .expect("actor"),
    )
    .await
    .expect("requested");
    let after = settled().await;
    assert!(after[0].0 > before[0].0);
    assert!(after.iter().all(|d| d.1 == after[0].1));
    assert_ne!(after[0].1, before[0].1);
    cluster.shutdown().await.expect("shutdown");
}

/// A node reads from a follower without a round trip to the leader, and bounds how stale that
/// view may be: a replica cut off from every leader answers a bounded poll `Unavailable`
/// (the node then asks another), while an unbounded poll still gets its applied state, with
/// how long ago it last heard from a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_bounds_how_stale_a_followers_view_may_be() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, _) = dev_cluster(dir.path()).await;
    let poll = |max_staleness_ms| {
        as_actor(
            pb::PollComputerRequest {
                computer: DEMO_COMPUTER.into(),
                max_staleness_ms,
                ..Default::default()
            },
            COMPUTER,
        )
        .expect("request")
    };
    let leader = cluster.replicas[0]
        .core()
        .raft()
        .metrics()
        .borrow_watched()
        .current_leader
        .expect("a leader");
    let follower = cluster
        .replicas
        .iter()
        .position(|r| r.core().id() != leader)
        .expect("a follower");
    let mut node = NodeClient::new(channel(&cluster.replicas[follower]).await);
    let fresh = node.poll_computer(poll(5_000)).await.expect("in touch");
    assert!(
        fresh
            .get_ref()
            .leader_contact_age_ms
            .is_some_and(|age| age < 5_000),
        "{:?}",
        fresh.get_ref().leader_contact_age_ms
    );

    // Every other replica stops: the follower hears from no leader any more.
    let others: Vec<Replica> = (0..cluster.replicas.len())
        .rev()
        .filter(|&i| i != follower)
        .map(|i| cluster.replicas.remove(i))
        .collect();
    for replica in others {
        replica.shutdown().await.expect("shutdown");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        match node.poll_computer(poll(1_000)).await {
            Err(status) => break status,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(reply) => panic!("still answered after 30 s: {reply:?}"),
        }
    };
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("ask another replica"),
        "{}",
        refusal.message()
    );
    let stale = node
        .poll_computer(poll(0))
        .await
        .expect("an unbounded poll answers")
        .into_inner();
    assert!(
        stale.leader_contact_age_ms.is_some_and(|age| age > 1_000),
        "{:?}",
        stale.leader_contact_age_ms
    );
    assert!(!stale.partitions.is_empty());
}
