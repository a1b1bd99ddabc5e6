//! Three `slapmaster` processes on `[::1]` (bootstrapped with `init` and `join` by the load
//! tool's cluster harness): the leader SIGKILLed in the middle of a stream of requests, a new
//! leader elected and the stream going on with no acknowledged request lost, the killed
//! replica restarted from its data directory and catching up, and SIGTERM stopping every
//! process cleanly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ops::load::cluster::{self, Cluster, OPERATOR};
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;

const USER: &str = "user:alice";
const SR: &str = "https://lab.example/software/kvm/software.cfg";

/// Sends `title`'s request to the replicas in turn until one acknowledges it; a replica that
/// does not answer (killed) or cannot commit yet (an election) is passed over.
async fn request(urls: &[String], title: &str) -> pb::RequestInstanceReply {
    let mut turn = 0;
    cluster::wait_for("an acknowledged request", || {
        turn += 1;
        let url = urls[turn % urls.len()].clone();
        async move {
            let mut user = UserClient::new(client::connect(&url).await.ok()?);
            let request = pb::RequestInstanceRequest {
                title: title.to_string(),
                software_release: SR.into(),
                ..Default::default()
            };
            let mut request = as_actor(request, USER).ok()?;
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

    eprintln!("--- a computer with room for every request");
    let mut node = NodeClient::new(client::connect(&urls[1]).await.expect("connects"));
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
    node.register_computer(as_actor(definition, "computer:COMP-1").expect("actor"))
        .await
        .expect("registered");
    let mut supply = pb::SupplyRequest {
        computer: "COMP-1".into(),
        url: SR.into(),
        ..Default::default()
    };
    supply.set_state(pb::SupplyState::Available);
    UserClient::new(client::connect(&urls[2]).await.expect("connects"))
        .supply(as_actor(supply, OPERATOR).expect("actor"))
        .await
        .expect("supplied");

    let mut acknowledged = BTreeMap::new();
    for n in 0..40 {
        let title = format!("vm-{n}");
        let reply = request(&urls, &title).await;
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
    let first = request(&survivors, "after-kill-0").await;
    eprintln!(
        "first write committed {:?} after the kill",
        killed_at.elapsed()
    );
    acknowledged.insert("after-kill-0".into(), first.guid);
    for n in 1..40 {
        let title = format!("after-kill-{n}");
        let reply = request(&urls, &title).await;
        acknowledged.insert(title, reply.guid);
    }
    let new_leader = cluster.leader().await.expect("a leader");
    assert_ne!(new_leader, leader, "a new leader was elected");

    eprintln!("--- every acknowledged request is there, read linearizably from a survivor");
    let mut user = UserClient::new(client::connect(&survivors[1]).await.expect("connects"));
    let listed = user
        .list_instances(as_actor(pb::ListInstancesRequest::default(), USER).expect("actor"))
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
