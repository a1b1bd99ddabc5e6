//! `slapnode` end to end: three real `slapmaster` replicas over mTLS and a real `slapnode`
//! process with 10 partitions in unprivileged mode, a software release from a manifest, and
//! instances whose processes really run. Each test tells one story:
//! - a user's instances placed, started, stopped, started again and destroyed;
//! - the replica the node talks to killed: the node goes on with another within one poll;
//! - the node's local state wiped: it rebuilds from the master and converges to the same
//!   result.
//!
//! Over 800 lines on purpose: the stories share one fixture (a cluster and a node) kept beside
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{Cluster, slapmaster_for_tests, wait_for};
use tonic::transport::{Channel, ClientTlsConfig};

use test_kit::namespaced;

const COMPUTER: &str = "COMP-E2E";
const PARTITIONS: u32 = 10;
/// The long-poll wait, and the periodic poll the agent would fall back to.
const POLL_INTERVAL_S: u64 = 20;

/// The release every test supplies: an install step that writes a tiny server script, and an
/// instance that runs it, checks it with a promise and publishes where it listens.
const MANIFEST: &str = include_str!("../releases/demo.toml");

/// A `slapnode` process and its directories.
struct Node {
    config: PathBuf,
    log: PathBuf,
    state_dir: PathBuf,
    software_root: PathBuf,
    instance_root: PathBuf,
    /// Where it serves /metrics, /healthz, /readyz.
    http_addr: std::net::SocketAddr,
    child: Option<Child>,
    /// Log length when the current process started, to read only its lines.
    log_start: usize,
}

impl Node {
    fn new(dir: &Path, cluster: &Cluster, mode: &str) -> anyhow::Result<Self> {
        let tls_dir = dir.join("node-tls");
        cluster
            .credentials(&format!("computer:{COMPUTER}"))?
            .write_dir(&tls_dir)?;
        let node = Self {
            config: dir.join("slapnode.toml"),
            log: dir.join("slapnode.log"),
            state_dir: dir.join("node-state"),
            software_root: dir.join("software"),
            instance_root: dir.join("instances"),
            http_addr: std::net::SocketAddr::from((
                std::net::Ipv6Addr::LOCALHOST,
                test_kit::cluster::unused_port(
                    &cluster
                        .replicas
                        .iter()
                        .flat_map(|r| [r.port, r.http_port])
                        .collect::<Vec<_>>(),
                )?,
            )),
            child: None,
            log_start: 0,
        };
        let masters: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
        let config = format!(
            r#"computer = "{COMPUTER}"
masters = [{masters}]
tls_dir = "{tls}"
state_dir = "{state}"
poll_interval_s = {POLL_INTERVAL_S}
usage_interval_s = 1
stop_grace_s = 2
http_listen = "{http}"

[attributes]
region = "test-region"

[format]
partitions = {PARTITIONS}
interface = "lo"
ipv6_network = "fd00:e2e::/64"
ipv4_network = "10.250.0.0/24"
instance_root = "{instances}"
software_root = "{software}"
mode = "{mode}"
"#,
            masters = masters.join(", "),
            tls = tls_dir.display(),
            state = node.state_dir.display(),
            instances = node.instance_root.display(),
            software = node.software_root.display(),
            http = node.http_addr,
        );
        std::fs::write(&node.config, config)?;
        Ok(node)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.log_start = usize::try_from(log.metadata()?.len())?;
        let child = Command::new(env!("CARGO_BIN_EXE_slapnode"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, and wait: the agent stops its instances' processes before it exits.
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            let status = child.wait()?;
            anyhow::ensure!(status.success(), "slapnode exited with {status}");
        }
        Ok(())
    }

    /// Rewrites the partition count of the configuration (for the next start).
    fn set_partitions(&self, count: u32) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        let changed = text.replace(
            &format!("partitions = {PARTITIONS}\n"),
            &format!("partitions = {count}\n"),
        );
        anyhow::ensure!(
            changed != text,
            "no partition count in {}",
            self.config.display()
        );
        std::fs::write(&self.config, changed)?;
        Ok(())
    }

    /// What the current process logged.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.get(self.log_start..).unwrap_or_default().to_owned()
    }

    fn partition(&self, reference: &str) -> PathBuf {
        self.instance_root.join(reference)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Fixture {
    // Dropped last: the processes go before their directories.
    _dir: tempfile::TempDir,
    cluster: Cluster,
    node: Node,
    operator: ClientTlsConfig,
    user: ClientTlsConfig,
    release: String,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        Self::start_in("unprivileged").await
    }

    async fn start_in(mode: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // Partition users (system mode) must reach their directories and the software.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        tracing::info!("--- three replicas, a slapnode with {PARTITIONS} partitions");
        let cluster = Cluster::start(&slapmaster_for_tests()?, dir.path(), 3).await?;
        let mut node = Node::new(dir.path(), &cluster, mode)?;
        node.start()?;
        Self::around(dir, cluster, node).await
    }

    /// The fixture around a started node: the release written, published and supplied.
    async fn around(dir: tempfile::TempDir, cluster: Cluster, node: Node) -> anyhow::Result<Self> {
        let release_path = dir.path().join("release.toml");
        std::fs::write(&release_path, MANIFEST)?;
        let operator = cluster.operator();
        let user = cluster.credentials("user:alice")?.tls_config();
        let fixture = Self {
            release: format!("file://{}", release_path.display()),
            _dir: dir,
            cluster,
            node,
            operator,
            user,
        };
        fixture.supply().await?;
        Ok(fixture)
    }

    /// A client of replica `index` (not always the leader: writes are forwarded).
    async fn client(
        &self,
        index: usize,
        tls: &ClientTlsConfig,
    ) -> anyhow::Result<UserClient<Channel>> {
        let url = &self.cluster.urls()[index];
        Ok(UserClient::new(
            client::connect_with(url, Some(tls.clone())).await?,
        ))
    }

    /// Publishes the release and supplies it to the computer once the node registered it.
    async fn supply(&self) -> anyhow::Result<()> {
        let mut operator = self.client(1, &self.operator).await?;
        operator
            .publish_software_release(pb::PublishSoftwareReleaseRequest {
                url: self.release.clone(),
                title: "e2e".into(),
                software_types: vec!["default".into()],
            })
            .await?;
        let request = pb::SupplyRequest {
            computer: COMPUTER.into(),
            url: self.release.clone(),
            state: pb::SupplyState::Available.into(),
        };
        wait_for("the node to register its computer", || {
            let mut operator = operator.clone();
            let request = request.clone();
            async move { operator.supply(request).await.ok() }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.node.log()))?;
        Ok(())
    }

    async fn request(
        &self,
        title: &str,
        state: pb::RequestedState,
    ) -> anyhow::Result<pb::RequestInstanceReply> {
        let mut user = self.client(2, &self.user).await?;
        let reply = user
            .request_instance(pb::RequestInstanceRequest {
                title: title.into(),
                software_release: self.release.clone(),
                parameters: [("port".to_owned(), format!("8{:03}", title.len()))].into(),
                state: state.into(),
                ..Default::default()
            })
            .await?;
        Ok(reply.into_inner())
    }

    /// Destroys the instances named and waits until none of them holds a partition.
    async fn destroy(
        &self,
        titles: &[String],
        instances: &BTreeMap<String, pb::Instance>,
    ) -> anyhow::Result<()> {
        let mut user = self.client(1, &self.user).await?;
        for title in titles {
            let instance = instances
                .get(title)
                .ok_or_else(|| anyhow::anyhow!("no instance {title}"))?;
            user.destroy_instance(pb::DestroyInstanceRequest {
                guid: instance.guid.clone(),
            })
            .await?;
        }
        wait_for("the destroyed instances' partitions freed", || async {
            let instances = self.instances().await?;
            titles
                .iter()
                .all(|t| instances.get(t).and_then(partition_of).is_none())
                .then_some(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&self.node.log(), 40)))
    }

    /// Requests the instances started and waits until they run and published.
    async fn start_instances(
        &self,
        titles: &[String],
    ) -> anyhow::Result<BTreeMap<String, pb::Instance>> {
        for title in titles {
            self.request(title, pb::RequestedState::Started).await?;
        }
        self.converged(titles, pb::ReportedState::Started).await
    }

    async fn instances(&self) -> Option<BTreeMap<String, pb::Instance>> {
        let mut user = self.client(0, &self.user).await.ok()?;
        let reply = user
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .ok()?;
        Some(
            reply
                .into_inner()
                .instances
                .into_iter()
                .map(|i| (i.title.clone(), i))
                .collect(),
        )
    }

    /// Waits until every instance in `titles` reports `state` (and, when started, published
    /// its connection parameters).
    async fn converged(
        &self,
        titles: &[String],
        state: pb::ReportedState,
    ) -> anyhow::Result<BTreeMap<String, pb::Instance>> {
        wait_for(&format!("{} instances {state:?}", titles.len()), || async {
            let instances = self.instances().await?;
            let done = titles.iter().all(|t| {
                instances.get(t).is_some_and(|i| {
                    i.reported_state == i32::from(state)
                        && i.last_error.is_empty()
                        && (state != pb::ReportedState::Started || i.connection.contains_key("url"))
                })
            });
            done.then_some(instances)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n--- slapnode:\n{}", tail(&self.node.log(), 40)))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn partition_of(instance: &pb::Instance) -> Option<String> {
    match instance.placement.as_ref()?.placement.as_ref()? {
        pb::placement::Placement::Partition(p) => Some(p.partition.clone()),
        _ => None,
    }
}

/// The pid the instance's server wrote, if that process is alive.
fn running_pid(partition: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(partition.join("run/ready")).ok()?;
    let pid = pid.trim().to_owned();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    (!stat.contains(") Z ")).then_some(pid)
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn titles(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("instance-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_publish_stop_start_and_are_destroyed() -> anyhow::Result<()> {
    test_kit::init_tracing("info");
    let fixture = Fixture::start().await?;
    let titles = titles(PARTITIONS as usize);

    tracing::info!(
        "--- a user requests {} instances; each runs and publishes its address",
        titles.len()
    );
    let instances = fixture.start_instances(&titles).await?;
    let mut partitions = Vec::new();
    for title in &titles {
        let instance = &instances[title];
        let partition =
            partition_of(instance).ok_or_else(|| anyhow::anyhow!("{title} not placed"))?;
        assert_eq!(instance.connection["partition"], partition, "{title}");
        let index: u32 = partition.trim_start_matches("slappart").parse()?;
        assert_eq!(
            instance.connection["url"],
            format!(
                "http://[fd00:e2e::{:x}]:8{:03}/",
                0x100 + index,
                title.len()
            ),
            "the url names the partition's own IPv6 address"
        );
        let directory = fixture.node.partition(&partition);
        let conf = std::fs::read_to_string(directory.join("etc/instance.conf"))?;
        assert!(conf.contains(&format!("title={title}")), "{conf}");
        assert!(running_pid(&directory).is_some(), "{title}'s process runs");
        partitions.push(partition);
    }
    partitions.sort();
    partitions.dedup();
    assert_eq!(partitions.len(), titles.len(), "one partition each");

    tracing::info!("--- the agent's metrics and readiness say the same");
    let ready = test_kit::http::get(fixture.node.http_addr, "/readyz").await?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let metrics = test_kit::http::get(fixture.node.http_addr, "/metrics").await?;
    let metrics = slapcluster_metrics::parse(&metrics.body)?;
    let sample = |name: &str, label: Option<(&str, &str)>| {
        metrics[name]
            .samples
            .iter()
            .find(|s| label.is_none_or(|(k, v)| s.labels[k] == v))
            .map(|s| s.value)
    };
    assert_eq!(
        sample("slapnode_partitions", None),
        Some(f64::from(PARTITIONS))
    );
    assert_eq!(
        sample("slapnode_instances", Some(("requested_state", "started"))),
        Some(titles.len() as f64)
    );
    assert_eq!(
        sample("slapnode_software_releases", Some(("state", "available"))),
        Some(1.0)
    );
    assert_eq!(
        sample("slapnode_supervised_partitions", None),
        Some(titles.len() as f64)
    );
    let polls = metrics["slapnode_master_call_seconds"]
        .samples
        .iter()
        .find(|s| s.name.ends_with("_count") && s.labels["call"] == "poll")
        .map(|s| s.value);
    assert!(polls.is_some_and(|n| n >= 1.0), "polls counted: {polls:?}");
    let replica = &metrics["slapnode_replica"].samples[0].labels["url"];
    assert!(fixture.cluster.urls().contains(replica), "{replica}");

    tracing::info!("--- a shared instance: its host publishes for it and reports it started");
    let mut user = fixture.client(1, &fixture.user).await?;
    user.request_instance(pb::RequestInstanceRequest {
        title: "blog".into(),
        software_release: fixture.release.clone(),
        shared: true,
        ..Default::default()
    })
    .await?;
    let blog = wait_for("the shared instance published", || async {
        let instances = fixture.instances().await?;
        let blog = instances.get("blog")?;
        (blog.reported_state == i32::from(pb::ReportedState::Started)
            && blog.connection.contains_key("site"))
        .then(|| blog.clone())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&fixture.node.log(), 40)))?;
    let Some(pb::placement::Placement::HostedBy(host)) =
        blog.placement.as_ref().and_then(|p| p.placement.clone())
    else {
        anyhow::bail!("blog is not hosted: {:?}", blog.placement);
    };
    let host = instances
        .values()
        .find(|i| i.guid == host)
        .ok_or_else(|| anyhow::anyhow!("blog's host {host} is not one of the instances"))?;
    let host_url = host.connection["url"].clone();
    assert_eq!(blog.connection["site"], format!("{host_url}blog/"));
    user.destroy_instance(pb::DestroyInstanceRequest { guid: blog.guid })
        .await?;

    tracing::info!("--- usage records reach the master");
    let operator = fixture.client(0, &fixture.operator).await?;
    let count = titles.len();
    let usage = wait_for("usage records for every partition", || {
        let mut operator = operator.clone();
        async move {
            let records = operator
                .usage(pb::UsageRequest {
                    computer: COMPUTER.into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .records;
            let covered: std::collections::BTreeSet<&str> =
                records.iter().map(|r| r.partition.as_str()).collect();
            (covered.len() == count).then_some(records)
        }
    })
    .await?;
    let memory: f64 = usage
        .iter()
        .flat_map(|r| &r.movements)
        .filter(|m| m.resource == "memory")
        .map(|m| m.quantity)
        .sum();
    assert!(memory > 0.0, "the instances' processes use memory");

    tracing::info!("--- stop one instance: its process goes; start it again: a new one runs");
    let stopped = &titles[3];
    let directory = fixture
        .node
        .partition(&partition_of(&instances[stopped]).unwrap_or_default());
    let before = running_pid(&directory).unwrap_or_default();
    fixture
        .request(stopped, pb::RequestedState::Stopped)
        .await?;
    fixture
        .converged(std::slice::from_ref(stopped), pb::ReportedState::Stopped)
        .await?;
    wait_for("the stopped instance's process to end", || async {
        (!alive(&before)).then_some(())
    })
    .await?;
    fixture
        .request(stopped, pb::RequestedState::Started)
        .await?;
    fixture
        .converged(std::slice::from_ref(stopped), pb::ReportedState::Started)
        .await?;
    let after = wait_for("a new process", || async {
        running_pid(&directory).filter(|pid| *pid != before)
    })
    .await?;
    assert!(alive(&after));

    tracing::info!(
        "--- destroy every instance: processes stop, directories are wiped, partitions free"
    );
    let pids: Vec<String> = partitions
        .iter()
        .filter_map(|p| running_pid(&fixture.node.partition(p)))
        .collect();
    fixture.destroy(&titles, &instances).await?;
    for partition in &partitions {
        let directory = fixture.node.partition(partition);
        assert_eq!(
            std::fs::read_dir(&directory)?.count(),
            0,
            "{partition} is wiped"
        );
    }
    assert!(
        pids.iter().all(|pid| !alive(pid)),
        "no instance process is left"
    );
    tracing::info!("--- an instance that fails: the master gets the error with the process's log");
    user.request_instance(pb::RequestInstanceRequest {
        title: "failing".into(),
        software_release: fixture.release.clone(),
        software_type: "failing".into(),
        ..Default::default()
    })
    .await?;
    let (error, instances) = wait_for("the failing instance's error", || async {
        let instances = fixture.instances().await?;
        let error = instances.get("failing")?.last_error.clone();
        error
            .contains("broken on purpose")
            .then_some((error, instances))
    })
    .await?;
    assert!(error.contains("did not hold"), "{error}");
    fixture.destroy(&["failing".to_owned()], &instances).await?;
    assert!(!fixture.node.log().contains("panicked"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_fails_over_within_one_poll_and_reports_nothing_twice() -> anyhow::Result<()> {
    test_kit::init_tracing("info");
    let mut fixture = Fixture::start().await?;
    let titles = titles(4);
    fixture.start_instances(&titles).await?;

    tracing::info!("--- kill the replica the node is long-polling");
    let log = fixture.node.log();
    let current = log
        .lines()
        .filter_map(|line| line.split("talking to ").nth(1)?.split_whitespace().next())
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("the node never said whom it talks to:\n{log}"))?
        .to_owned();
    let index = fixture
        .cluster
        .urls()
        .iter()
        .position(|u| *u == current)
        .ok_or_else(|| anyhow::anyhow!("{current} is not a replica"))?;
    fixture.cluster.kill(index)?;
    let survivor = (index + 1) % 3;

    tracing::info!(
        "--- stop two instances through another replica: the node converges within one poll"
    );
    let killed_at = Instant::now();
    for title in &titles[..2] {
        let mut user = fixture.client(survivor, &fixture.user).await?;
        user.request_instance(pb::RequestInstanceRequest {
            title: title.clone(),
            software_release: fixture.release.clone(),
            parameters: [("port".to_owned(), format!("8{:03}", title.len()))].into(),
            state: pb::RequestedState::Stopped.into(),
            ..Default::default()
        })
        .await?;
    }
    let converged = wait_for("the stops reported through another replica", || async {
        let mut user = fixture.client(survivor, &fixture.user).await.ok()?;
        let instances = user
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .ok()?
            .into_inner()
            .instances;
        let stopped = instances
            .iter()
            .filter(|i| i.reported_state == i32::from(pb::ReportedState::Stopped))
            .count();
        (stopped == 2).then_some(instances)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&fixture.node.log(), 40)))?;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(POLL_INTERVAL_S),
        "the node took {took:?}, more than one poll interval, to carry on"
    );
    let started = converged
        .iter()
        .filter(|i| i.reported_state == i32::from(pb::ReportedState::Started))
        .count();
    assert_eq!(started, 2, "the other instances are untouched");

    // The master shows a report once it has committed it; the node logs it once the answer
    // is back: wait for both lines before counting them.
    let log = wait_for("the node to log both stops", || async {
        let log = fixture.node.log();
        (log.matches("state=Some(Stopped)").count() >= 2).then_some(log)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&fixture.node.log(), 40)))?;
    let after_kill = log
        .split(&format!("talking to {current}"))
        .last()
        .unwrap_or_default();
    assert!(
        after_kill.contains("talking to https://"),
        "the node moved to another replica:\n{log}"
    );
    assert!(
        !log.contains("changed=false"),
        "a report repeated what the master had:\n{log}"
    );
    let stops = log.matches("state=Some(Stopped)").count();
    assert_eq!(stops, 2, "each stop reported exactly once:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_its_local_state_wiped_rebuilds_the_same_result() -> anyhow::Result<()> {
    test_kit::init_tracing("info");
    let mut fixture = Fixture::start().await?;
    let titles = titles(3);
    let before = fixture.start_instances(&titles).await?;

    tracing::info!("--- stop the node, wipe its state and installed software (not the partitions)");
    fixture.node.stop()?;
    for title in &titles {
        let directory = fixture
            .node
            .partition(&partition_of(&before[title]).unwrap_or_default());
        assert!(
            running_pid(&directory).is_none(),
            "the agent stopped {title}'s process"
        );
    }
    std::fs::remove_dir_all(&fixture.node.state_dir)?;
    std::fs::remove_dir_all(&fixture.node.software_root)?;

    tracing::info!(
        "--- start it again: software reinstalled, processes back, same placements and parameters"
    );
    fixture.node.start()?;
    wait_for("every instance's process running again", || async {
        titles
            .iter()
            .all(|t| {
                running_pid(
                    &fixture
                        .node
                        .partition(&partition_of(&before[t]).unwrap_or_default()),
                )
                .is_some()
            })
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&fixture.node.log(), 40)))?;
    let after = fixture
        .converged(&titles, pb::ReportedState::Started)
        .await?;
    for title in &titles {
        assert_eq!(
            partition_of(&after[title]),
            partition_of(&before[title]),
            "{title}"
        );
        assert_eq!(after[title].connection, before[title].connection, "{title}");
    }
    let log = fixture.node.log();
    assert!(
        log.contains("installed"),
        "the release was installed again:\n{log}"
    );
    assert!(
        !log.contains("published connection parameters") && !log.contains("reported instance"),
        "nothing about the instances changed on the master:\n{log}"
    );
    Ok(())
}

/// Set in the namespaced child of the system-mode test.
const SYSTEM_CHILD: &str = "SLAPNODE_SYSTEM_CHILD";

/// As root in system mode, inside fresh mount and network namespaces with a private copy of
/// /etc (users, addresses and taps are real and vanish with the namespaces): partitions get
/// their users, addresses on the interface and taps; instances' processes run as their
/// partition's user and their files belong to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_instances_run_as_their_partition_users() -> anyhow::Result<()> {
    test_kit::init_tracing("info");
    if std::env::var_os(SYSTEM_CHILD).is_some() {
        return system_story().await;
    }
    if !test_kit::is_root() {
        test_kit::skip!("the system mode makes users and addresses in namespaces: needs root");
        return Ok(());
    }
    let (passed, log) = tokio::task::spawn_blocking(|| {
        namespaced::rerun(
            "as_root_instances_run_as_their_partition_users",
            SYSTEM_CHILD,
            std::ffi::OsStr::new("1"),
        )
    })
    .await??;
    assert!(passed, "the namespaced story failed:\n{log}");
    assert!(log.contains("system story checked"), "{log}");
    Ok(())
}

async fn system_story() -> anyhow::Result<()> {
    let fixture = Fixture::start_in("system").await?;
    let titles = titles(2);
    let instances = fixture.start_instances(&titles).await?;
    let addresses = String::from_utf8(
        Command::new("ip")
            .args(["-o", "addr", "show", "dev", "lo"])
            .output()?
            .stdout,
    )?;
    for title in &titles {
        let partition = partition_of(&instances[title]).unwrap_or_default();
        let index: u32 = partition.trim_start_matches("slappart").parse()?;
        let user = format!("slapuser{index}");
        let account = String::from_utf8(Command::new("id").args(["-u", &user]).output()?.stdout)?;
        let uid: u32 = account.trim().parse()?;
        let directory = fixture.node.partition(&partition);
        let pid = running_pid(&directory).ok_or_else(|| anyhow::anyhow!("{title} does not run"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let runs_as = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .unwrap_or_default();
        assert_eq!(runs_as, uid.to_string(), "{title} runs as {user}");
        let conf = std::fs::metadata(directory.join("etc/instance.conf"))?;
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&conf),
            uid,
            "{title}'s files are {user}'s"
        );
        assert!(
            addresses.contains(&format!("fd00:e2e::{:x}/64", 0x100 + index)),
            "{addresses}"
        );
        assert!(
            Path::new("/sys/class/net")
                .join(format!("slaptap{index}"))
                .exists()
        );
    }
    tracing::info!("--- destroyed as root too: the partition is wiped and freed");
    fixture.destroy(&titles, &instances).await?;
    println!("system story checked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_a_node_removes_only_free_partitions() -> anyhow::Result<()> {
    test_kit::init_tracing("info");
    let mut fixture = Fixture::start().await?;
    let titles = titles(2);
    let instances = fixture.start_instances(&titles).await?;
    let busy: Vec<String> = titles
        .iter()
        .filter_map(|t| partition_of(&instances[t]))
        .collect();
    let highest = busy
        .iter()
        .filter_map(|p| p.trim_start_matches("slappart").parse::<u32>().ok())
        .max()
        .unwrap_or_default();

    tracing::info!("--- restart the node with one partition: the busy ones stay, the free ones go");
    fixture.node.stop()?;
    fixture.node.set_partitions(1)?;
    fixture.node.start()?;
    fixture
        .converged(&titles, pb::ReportedState::Started)
        .await?;
    let registered = wait_for("the smaller computer registered", || async {
        let log = fixture.node.log();
        log.lines()
            .find(|l| l.contains("registered capacity"))
            .map(str::to_owned)
    })
    .await?;
    assert!(registered.contains("partitions=2"), "{registered}");
    wait_for(
        "free partitions removed, busy ones kept and running",
        || async {
            let directories_right = (0..PARTITIONS).all(|index| {
                let reference = format!("slappart{index}");
                let kept = index == 0 || busy.contains(&reference);
                fixture.node.partition(&reference).exists() == kept
            });
            let running = busy
                .iter()
                .all(|p| running_pid(&fixture.node.partition(p)).is_some());
            (directories_right && running).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&fixture.node.log(), 40)))?;

    tracing::info!(
        "--- once the instance beyond the count is destroyed, the next format removes it"
    );
    let beyond = titles
        .iter()
        .find(|t| partition_of(&instances[*t]) == Some(format!("slappart{highest}")))
        .ok_or_else(|| anyhow::anyhow!("no instance on slappart{highest}"))?;
    fixture
        .destroy(std::slice::from_ref(beyond), &instances)
        .await?;
    fixture.node.stop()?;
    fixture.node.start()?;
    let registered = wait_for("the computer registered again", || async {
        let log = fixture.node.log();
        log.lines()
            .find(|l| l.contains("registered capacity"))
            .map(str::to_owned)
    })
    .await?;
    assert!(registered.contains("partitions=1"), "{registered}");
    wait_for("the freed partition's directory gone", || async {
        (!fixture
            .node
            .partition(&format!("slappart{highest}"))
            .exists())
        .then_some(())
    })
    .await?;
    Ok(())
}

/// The computer's certificate issued 70 of its 90 days ago (due for renewal), signed by
/// `replica_tls`'s signing CA; and its serial.
fn due_certificate(replica_tls: &Path) -> anyhow::Result<(client::Credentials, ca::Serial)> {
    let read = |name: &str| std::fs::read_to_string(replica_tls.join(name));
    let signer_pem = read("signer.pem")?;
    let signer = ca::Authority::load(&signer_pem, &read("signer.key")?)?;
    let identity = ca::Identity::Computer(COMPUTER.into());
    let lifetime = ca::Lifetimes::default().leaf(identity.role());
    let grant = ca::Grant {
        lifetime,
        identity,
        server_names: Vec::new(),
    };
    let request = ca::new_key_and_request()?;
    let issued = std::time::SystemTime::now() - lifetime * 7 / 9;
    let leaf = signer.sign_leaf(&request.csr_pem, &grant, issued)?;
    let serial = ca::CertificateInfo::from_pem(&leaf)?.serial;
    let credentials = client::Credentials {
        roots_pem: vec![read("roots.pem")?],
        chain_pem: format!("{leaf}{signer_pem}"),
        key_pem: request.key_pem,
    };
    Ok((credentials, serial))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_due_for_renewal_is_renewed_and_the_next_calls_use_it() -> anyhow::Result<()>
{
    test_kit::init_tracing("agent=info");
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(&slapmaster_for_tests()?, dir.path(), 3).await?;
    let mut node = Node::new(dir.path(), &cluster, "unprivileged")?;
    let tls_dir = dir.path().join("node-tls");
    let (due, old_serial) = due_certificate(cluster.replicas[0].tls_dir())?;
    due.write_dir(&tls_dir)?;
    node.start()?;
    tracing::info!("--- the node renews its certificate at start");
    // Renewed once the new set is in place and the agent says it uses it.
    let renewed = wait_for("the node to renew its certificate", || {
        let chain = tls_dir.join("chain.pem");
        let old_serial = old_serial.clone();
        let switched = node.log().contains("renewed the computer's certificate");
        async move {
            let info = ca::CertificateInfo::from_pem(&std::fs::read_to_string(chain).ok()?).ok()?;
            (switched && info.serial != old_serial).then_some(info)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", node.log()))?;
    assert_eq!(
        renewed.identity,
        Some(ca::Identity::Computer(COMPUTER.into()))
    );
    let left = renewed
        .not_after
        .duration_since(std::time::SystemTime::now())?;
    assert!(left > Duration::from_secs(80 * 24 * 3600), "{left:?}");

    tracing::info!("--- the old certificate revoked: the node goes on with the new one");
    pb::admin_client::AdminClient::new(
        client::connect_with(&cluster.urls()[0], Some(cluster.operator())).await?,
    )
    .revoke_certificate(pb::RevokeCertificateRequest {
        serial: old_serial.to_string(),
        reason: "renewed".into(),
    })
    .await?;
    let fixture = Fixture::around(dir, cluster, node).await?;
    let admin = pb::admin_client::AdminClient::new(
        client::connect_with(&fixture.cluster.urls()[1], Some(fixture.operator.clone())).await?,
    );
    let release = fixture.release.clone();
    wait_for("the node to report the release installed", || {
        let mut admin = admin.clone();
        let release = release.clone();
        async move {
            let shown = admin
                .show_computer(pb::ShowComputerRequest {
                    computer: COMPUTER.into(),
                    consistency: pb::Consistency::Linearizable.into(),
                })
                .await
                .ok()?
                .into_inner();
            shown
                .software
                .iter()
                .any(|s| s.url == release && s.reported() == pb::SoftwareState::Available)
                .then_some(())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", fixture.node.log()))?;
    Ok(())
}
