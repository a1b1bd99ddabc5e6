//! The agent's replica ranking with distance in it (issue 22): voters in eu, us and asia of
//! the shipped region map, a node in au, far from all three (asia 100 ms, us 200 ms, eu
//! 280 ms), calling each replica through the delay link from au. The node is given the three
//! links as its replicas, as a real node is given the replicas' addresses.

use std::time::Duration;

use node_client::replicas::Replicas;
use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use test_kit::cluster::{Cluster, Layout, slapmaster_for_tests};
use test_kit::distance::RegionMap;

const COMPUTER: &str = "COMP-RANK";

fn poll() -> pb::PollComputerRequest {
    pb::PollComputerRequest {
        computer: COMPUTER.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_talks_to_its_nearest_replica_and_fails_over_to_the_next_nearest() {
    let world = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/regions/world.toml");
    let map = RegionMap::load(&world).expect("the shipped map");
    let voters = ["eu", "us", "asia"].map(String::from).to_vec();
    let widest = map.widest(&voters).expect("voters on the map").as_millis();
    let seed = 22;
    eprintln!("link jitter seed {seed}");
    let layout = Layout {
        map,
        regions: voters,
        learners: 0,
        seed,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("[raft]\nrtt_ms = {widest}\n");
    let mut cluster = Cluster::start_apart(
        &slapmaster_for_tests().expect("slapmaster builds"),
        dir.path(),
        layout,
        Some(&config),
    )
    .await
    .expect("a cluster apart");

    let operator = client::connect_with(&cluster.urls()[0], Some(cluster.operator()))
        .await
        .expect("the operator connects");
    NodeClient::new(operator)
        .register_computer(pb::RegisterComputerRequest {
            computer: COMPUTER.into(),
            ..Default::default()
        })
        .await
        .expect("the computer is registered");

    // The node's way to each replica: eu (index 0), us (1), asia (2), all from au.
    let links: Vec<String> = (0..3)
        .map(|i| cluster.url_from("au", i).expect("a link from au"))
        .collect();
    let tls = cluster
        .credentials(&format!("computer:{COMPUTER}"))
        .expect("the computer's certificate")
        .tls_config();
    let replicas = Replicas::new(&links, Some(tls), None).expect("replicas");
    let timeout = Duration::from_secs(5);
    let poll_through = |c: NodeClient<_>, r| async move {
        let mut c = c;
        c.poll_computer(r).await
    };
    replicas.rank(timeout, &poll(), poll_through).await;
    assert_eq!(
        replicas.urls(),
        [links[2].clone(), links[1].clone(), links[0].clone()],
        "nearest first: asia, us, eu"
    );
    replicas
        .call("poll", timeout, true, &poll(), poll_through)
        .await
        .expect("a poll");
    assert_eq!(replicas.current(), links[2], "asia answers");

    // asia's replica dies: the next poll is answered, within the same call, by us.
    cluster.kill(2).expect("asia's replica killed");
    replicas
        .call("poll", timeout, true, &poll(), poll_through)
        .await
        .expect("a poll after the kill");
    assert_eq!(replicas.current(), links[1], "the next nearest answers");
    assert_eq!(
        replicas.urls()[0],
        links[1],
        "us ranks first while asia is down"
    );
    assert_eq!(
        replicas.urls()[1],
        links[0],
        "then eu, before the failed one's retry"
    );
    cluster.stop().expect("stopped");
}
