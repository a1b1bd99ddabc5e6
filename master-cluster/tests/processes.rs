//! Three `slapmaster` processes on `[::1]` over TLS (bootstrapped with `init` and `join` by the
//! load tool's cluster harness, every certificate from `slapmaster ca`/`cert`): the leader SIGKILLed in the middle of a stream of requests, a new
//! leader elected and the stream going on with no acknowledged request lost, the killed
//! replica restarted from its data directory and catching up, and SIGTERM stopping every
//! process cleanly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{self, Cluster};
use tonic::transport::ClientTlsConfig;

const USER: &str = "user:alice";
const SR: &str = "https://lab.example/software/kvm/software.cfg";

/// Sends `title`'s request to the replicas in turn until one acknowledges it; a replica that
/// does not answer (killed) or cannot commit yet (an election) is passed over.
async fn request(urls: &[String], user: &ClientTlsConfig, title: &str) -> pb::RequestInstanceReply {
    let mut turn = 0;
    cluster::wait_for("an acknowledged request", || {
        turn += 1;
        let url = urls[turn % urls.len()].clone();
        let tls = user.clone();
        async move {
            let mut user = UserClient::new(client::connect_with(&url, Some(tls)).await.ok()?);
            let request = pb::RequestInstanceRequest {
                title: title.to_string(),
                software_release: SR.into(),
                ..Default::default()
            };
            let mut request = tonic::Request::new(request);
            request.set_timeout(Duration::from_secs(5));
            user.request_instance(request)
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await
    .expect("acknowledged")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_process_is_killed_and_no_acknowledged_request_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("--- replica 1 bootstraps, replicas 2 and 3 join through it");
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_slapmaster").as_ref(), dir.path(), 3)
        .await
        .expect("three voters");
    let urls = cluster.urls();
    let alice = cluster
        .credentials(USER)
        .expect("alice's certificate")
        .tls_config();
    let connect = |url: &str, tls: ClientTlsConfig| {
        let url = url.to_string();
        async move {
            client::connect_with(&url, Some(tls))
                .await
                .expect("connects")
        }
    };

    eprintln!("--- a computer with room for every request");
    let computer = cluster
        .credentials("computer:COMP-1")
        .expect("the computer's certificate")
        .tls_config();
    let mut node = NodeClient::new(connect(&urls[1], computer).await);
    let definition = pb::RegisterComputerRequest {
        computer: "COMP-1".into(),
        partitions: (0..200)
            .map(|n| pb::PartitionDefinition {
                reference: format!("slappart{n}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    node.register_computer(definition)
        .await
        .expect("registered");
    let mut supply = pb::SupplyRequest {
        computer: "COMP-1".into(),
        url: SR.into(),
        ..Default::default()
    };
    supply.set_state(pb::SupplyState::Available);
    UserClient::new(connect(&urls[2], cluster.operator()).await)
        .supply(supply)
        .await
        .expect("supplied");

    let mut acknowledged = BTreeMap::new();
    for n in 0..40 {
        let title = format!("vm-{n}");
        let reply = request(&urls, &alice, &title).await;
        acknowledged.insert(title, reply.guid);
    }

    let leader = cluster.leader().await.expect("a leader");
    let victim = cluster
        .replicas
        .iter()
        .position(|r| r.id == leader)
        .expect("ours");
    eprintln!("--- SIGKILL the leader (replica {leader}) and keep requesting");
    let killed_at = Instant::now();
    cluster.kill(victim).expect("killed");
    let survivors: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, url)| url.clone())
        .collect();
    let first = request(&survivors, &alice, "after-kill-0").await;
    eprintln!(
        "first write committed {:?} after the kill",
        killed_at.elapsed()
    );
    acknowledged.insert("after-kill-0".into(), first.guid);
    for n in 1..40 {
        let title = format!("after-kill-{n}");
        let reply = request(&urls, &alice, &title).await;
        acknowledged.insert(title, reply.guid);
    }
    let new_leader = cluster.leader().await.expect("a leader");
    assert_ne!(new_leader, leader, "a new leader was elected");

    eprintln!("--- every acknowledged request is there, read linearizably from a survivor");
    let mut user = UserClient::new(connect(&survivors[1], alice.clone()).await);
    let listed = user
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .expect("listed")
        .into_inner();
    let found: BTreeMap<String, String> = listed
        .instances
        .into_iter()
        .map(|i| (i.title, i.guid))
        .collect();
    assert_eq!(found, acknowledged, "acknowledged requests and their guids");

    eprintln!("--- the killed replica restarts from its data directory and catches up");
    cluster.restart(victim).await.expect("caught up");

    eprintln!("--- SIGTERM stops every replica cleanly");
    cluster.stop().expect("clean exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_changes_the_membership_through_a_follower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_slapmaster").as_ref(), dir.path(), 3)
        .await
        .expect("three voters");
    let leader = cluster.leader().await.expect("a leader");
    let follower = cluster
        .replicas
        .iter()
        .find(|r| r.id != leader)
        .map(cluster::Replica::url)
        .expect("a follower");
    let removed = cluster
        .replicas
        .iter()
        .find(|r| r.id != leader && r.url() != follower)
        .map(|r| r.id)
        .expect("another follower");
    eprintln!("--- the follower passes the call on to the leader as the operator's, over TLS");
    let channel = client::connect_with(&follower, Some(cluster.operator()))
        .await
        .expect("connects");
    let admin = slapcluster_api::v1::admin_client::AdminClient::new(channel);
    // Unavailable while the joins' own membership changes finish: asked again, as any client
    // would. Any other refusal fails the test at once.
    cluster::wait_for("the removal", || {
        let mut admin = admin.clone();
        async move {
            match admin
                .remove_member(pb::RemoveMemberRequest { id: removed })
                .await
            {
                Ok(_) => Some(()),
                Err(status) if status.code() == tonic::Code::Unavailable => None,
                Err(status) => {
                    panic!("an operator may remove a member through any replica: {status}")
                }
            }
        }
    })
    .await
    .expect("removed");
    let status = cluster::status(&follower, &cluster.operator())
        .await
        .expect("status");
    assert!(status.members.iter().all(|m| m.id != removed), "{status:?}");
    let index = cluster
        .replicas
        .iter()
        .position(|r| r.id == removed)
        .expect("the removed replica");
    cluster.kill(index).expect("the removed replica goes");
    cluster.stop().expect("the others stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_live_voter_while_another_is_down_is_refused_and_the_dead_one_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_slapmaster").as_ref(), dir.path(), 3)
        .await
        .expect("three voters");
    let leader = cluster.leader().await.expect("a leader");
    let followers: Vec<usize> = (0..cluster.replicas.len())
        .filter(|&i| cluster.replicas[i].id != leader)
        .collect();
    let (dead, live) = (followers[0], followers[1]);
    let (dead_id, live_id) = (cluster.replicas[dead].id, cluster.replicas[live].id);
    let via = cluster.replicas[live].url();
    cluster.kill(dead).expect("a follower killed");
    eprintln!("--- replica {dead_id} is down: removing live replica {live_id} is refused");
    let channel = client::connect_with(&via, Some(cluster.operator()))
        .await
        .expect("connects");
    let admin = slapcluster_api::v1::admin_client::AdminClient::new(channel);
    let refused = cluster::wait_for("the refusal", || {
        let mut admin = admin.clone();
        async move {
            match admin
                .remove_member(pb::RemoveMemberRequest { id: live_id })
                .await
            {
                // The last joins' change may still be committing: asked again.
                Err(status) if status.code() == tonic::Code::Unavailable => None,
                other => Some(other),
            }
        }
    })
    .await
    .expect("an answer");
    let status = refused.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(
        status.message().contains("would lose the quorum")
            && status.message().contains(&dead_id.to_string()),
        "{status}"
    );

    eprintln!("--- removing the dead replica {dead_id} is allowed, and writes go on");
    cluster::wait_for("the removal", || {
        let mut admin = admin.clone();
        async move {
            match admin
                .remove_member(pb::RemoveMemberRequest { id: dead_id })
                .await
            {
                Ok(_) => Some(()),
                Err(status) if status.code() == tonic::Code::Unavailable => None,
                Err(status) => panic!("removing the dead replica: {status}"),
            }
        }
    })
    .await
    .expect("removed");
    let status = cluster::status(&via, &cluster.operator())
        .await
        .expect("status");
    let ids: Vec<u64> = status.members.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&dead_id), "{ids:?}");
    let user = cluster.credentials(USER).expect("user").tls_config();
    let urls: Vec<String> = [leader_url(&cluster, leader), via].into();
    request(&urls, &user, "after-removal").await;
    cluster.stop().expect("the others stop cleanly");
}

fn leader_url(cluster: &Cluster, leader: u64) -> String {
    cluster
        .replicas
        .iter()
        .find(|r| r.id == leader)
        .map(cluster::Replica::url)
        .expect("the leader")
}
