//! What operators watch: every replica's `/metrics` (scraped and parsed as Prometheus would),
//! `/healthz`, `/readyz` and its status page, on a three-replica cluster (`slapmaster dev`'s,
//! in plaintext on port 0) and on a replica that is not a member yet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use master_cluster::daemon::dev::{self, DEMO_COMPUTER, DEMO_SOFTWARE, DEMO_USER, DevCluster};
use master_cluster::replica::ReplicaConfig;
use master_cluster::server::Replica;
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use slapcluster_metrics::{self as metrics, ParsedFamily};
use test_kit::http::{self, HttpResponse};

const COMPUTER: &str = "computer:COMP-DEMO";

async fn dev_cluster(dir: &std::path::Path) -> DevCluster {
    dev::start(&dev::DevOptions::plaintext_for_tests(dir), &mut Vec::new())
        .await
        .expect("dev cluster starts")
}

async fn get(replica: &Replica, path: &str) -> HttpResponse {
    let addr = replica.http_addr().expect("the dev replicas serve HTTP");
    http::get(addr, path).await.expect("the listener answers")
}

async fn scrape(replica: &Replica) -> BTreeMap<String, ParsedFamily> {
    let response = get(replica, "/metrics").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some(metrics::CONTENT_TYPE),
        "Prometheus needs its content type"
    );
    metrics::parse(&response.body)
        .unwrap_or_else(|e| panic!("replica {}: {e}\n{}", replica.id(), response.body))
}

/// The value of the sample `name` whose labels include `labels`.
fn value(families: &BTreeMap<String, ParsedFamily>, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

/// Retries `check` until it holds, for at most 20 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_metrics_health_readiness_and_its_status_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dev_cluster(dir.path()).await;
    let leader = cluster.leader().expect("a leader");

    for replica in &cluster.replicas {
        let health = get(replica, "/healthz").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        eventually("every replica to be ready", || async {
            get(replica, "/readyz").await.status == 200
        })
        .await;
    }

    // The dev cluster requested its three demo instances through a follower; each was
    // placed. Every replica's scrape parses, agrees on term and leader, and counted its part.
    let mut placed = 0.0;
    for replica in &cluster.replicas {
        let m = scrape(replica).await;
        assert_eq!(value(&m, "slapcluster_raft_leader", &[]), leader as f64);
        let is_leader = if replica.id() == leader { 1.0 } else { 0.0 };
        assert_eq!(value(&m, "slapcluster_raft_is_leader", &[]), is_leader);
        assert!(value(&m, "slapcluster_raft_applied_index", &[]) > 0.0);
        assert!(value(&m, "slapcluster_log_fsync_seconds_count", &[]) > 0.0);
        assert!(value(&m, "slapcluster_apply_seconds_count", &[]) > 0.0);
        assert_eq!(value(&m, "slapcluster_members", &[("role", "voter")]), 2.0);
        placed += m
            .get("slapcluster_instance_requests_total")
            .map_or(0.0, |f| {
                f.samples
                    .iter()
                    .filter(|s| s.labels["placement"] == "partition")
                    .map(|s| s.value)
                    .sum()
            });
        if replica.id() == leader {
            for follower in cluster.replicas.iter().filter(|r| r.id() != leader) {
                let lag = value(
                    &m,
                    "slapcluster_raft_follower_lag_entries",
                    &[("follower", &follower.id().to_string())],
                );
                assert!(lag >= 0.0, "a known lag for replica {}", follower.id());
            }
            assert!(value(&m, "slapcluster_raft_commit_index", &[]) > 0.0);
        }
    }
    assert_eq!(placed, 3.0, "the three demo placements, counted once");

    // A request no computer can take waits; the replica that answered it counts it, every
    // replica's gauge shows it, and the status page says why it waits.
    let follower = cluster.follower().expect("a follower");
    let mut user = UserClient::new(client::connect(follower.url()).await.expect("connects"));
    let request = pb::RequestInstanceRequest {
        title: "waits-for-a-region".into(),
        software_release: DEMO_SOFTWARE.into(),
        sla: [("region".to_string(), "mars".to_string())].into(),
        ..Default::default()
    };
    let reply = user
        .request_instance(as_actor(request, DEMO_USER).expect("actor"))
        .await
        .expect("requested")
        .into_inner();
    let m = scrape(follower).await;
    assert_eq!(
        value(
            &m,
            "slapcluster_instance_requests_total",
            &[("placement", "pending")]
        ),
        1.0
    );
    assert!(
        value(
            &m,
            "slapcluster_request_seconds_count",
            &[("call", "User/RequestInstance")]
        ) >= 1.0
    );
    for replica in &cluster.replicas {
        eventually("the pending request in every replica's gauge", || async {
            value(&scrape(replica).await, "slapcluster_pending_requests", &[]) == 1.0
        })
        .await;
    }
    let page = get(follower, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.body.contains("waits-for-a-region"), "{}", page.body);
    assert!(page.body.contains(&reply.guid));
    assert!(page.body.contains(DEMO_COMPUTER));
    assert!(
        page.body.contains("3 / 8"),
        "three of eight partitions used"
    );
    assert!(page.body.contains(&format!("leader: replica {leader}")));

    // A long-poll is counted as open while it waits, and no longer once it answered.
    let mut node = NodeClient::new(client::connect(follower.url()).await.expect("connects"));
    let first = node
        .poll_computer(
            as_actor(
                pb::PollComputerRequest {
                    computer: DEMO_COMPUTER.into(),
                    ..Default::default()
                },
                COMPUTER,
            )
            .expect("actor"),
        )
        .await
        .expect("polled")
        .into_inner();
    let long_poll = tokio::spawn(async move {
        node.poll_computer(
            as_actor(
                pb::PollComputerRequest {
                    computer: DEMO_COMPUTER.into(),
                    after: Some(first.version),
                    wait_ms: 30_000,
                    ..Default::default()
                },
                COMPUTER,
            )
            .expect("actor"),
        )
        .await
    });
    eventually("the long-poll to be open", || async {
        value(&scrape(follower).await, "slapcluster_long_polls_open", &[]) == 1.0
    })
    .await;
    let another = pb::RequestInstanceRequest {
        title: "wakes-the-node".into(),
        software_release: DEMO_SOFTWARE.into(),
        ..Default::default()
    };
    user.request_instance(as_actor(another, DEMO_USER).expect("actor"))
        .await
        .expect("requested");
    long_poll
        .await
        .expect("joined")
        .expect("the long-poll answers the change");
    let m = scrape(follower).await;
    assert_eq!(value(&m, "slapcluster_long_polls_open", &[]), 0.0);
    assert!(value(&m, "slapcluster_node_polls_total", &[]) >= 2.0);

    cluster.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_outside_the_membership_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ReplicaConfig::new(9, "[::1]:0".parse().expect("addr"), dir.path().into());
    config.danger_plaintext = true;
    config.http_listen = Some("[::1]:0".parse().expect("addr"));
    let replica = Replica::start(config).await.expect("starts");
    assert_eq!(get(&replica, "/healthz").await.status, 200);
    let ready = get(&replica, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("not a member"), "{}", ready.body);
    assert_eq!(get(&replica, "/nowhere").await.status, 404);
    let page = get(&replica, "/").await;
    assert!(page.body.contains("leader: none known"), "{}", page.body);
    replica.shutdown().await.expect("stops");
}
