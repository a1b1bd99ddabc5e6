//! SlapOS hosts SlapOS, end to end: a seed master (`slapmaster bootstrap`) and four real
//! `slapnode` agents in system mode, each in a network namespace of its own on one IPv6 bridge
//! (regions r1, r2, r3 and a second node in r1). `slapctl replica add` places a replica in
//! each region as an instance of the slapmaster release, the replicas join, the seed leaves
//! and stops; an agent restarted then finds the hosted replicas from the list it saved. Then
//! the node hosting the r1 replica is killed with everything it runs, a replacement replica
//! is placed on the other r1 node (by a `replica add` given up at once, then run again: it
//! goes on with the replica it requested), and the dead member is removed; last, a replica's
//! process is killed and its node restarts it, a voter still.
//! Throughout, a client keeps requesting instances (over whichever replica answers); at the
//! end every request that was acknowledged is there.
//!
//! The story re-runs itself in fresh mount and network namespaces with a private /etc (the
//! nodes create partition users), so it needs root; CI runs as root.
//!
//! Over 800 lines on purpose: one story, end to end, with the harness only it uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaos_tests::net::Network;
use slapcluster_api::client::{self, Credentials};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{binary_for_tests, slapmaster_for_tests};
use tokio::process::{Child, Command};
use tonic::transport::ClientTlsConfig;

use test_kit::namespaced;

const CHILD: &str = "SLAPCLUSTER_SELF_HOSTING_CHILD";
/// The seed runs in namespace 0, node `k` in namespace `k`.
const NODES: [(&str, &str); 4] = [
    ("COMP-1", "r1"),
    ("COMP-2", "r2"),
    ("COMP-3", "r3"),
    ("COMP-4", "r1"),
];
const PORT: u16 = 7000;
/// Generous: each step is a few seconds here; a loaded CI machine may be slower.
const STEP: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_hands_over_to_self_hosted_replicas_which_survive_losing_a_node()
-> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        test_kit::init_tracing("info");
        return story().await;
    }
    if !test_kit::is_root() {
        test_kit::skip!("the self-hosting story runs nodes in network namespaces: needs root");
        return Ok(());
    }
    // Built here, outside the namespaces, where cargo can reach its registry cache.
    for (package, bin) in [
        ("master-cluster", "slapmaster"),
        ("node-client", "slapnode"),
        ("ops", "slapctl"),
    ] {
        binary_for_tests(package, bin)?;
    }
    let (passed, log) = tokio::task::spawn_blocking(|| {
        namespaced::rerun(
            "a_seed_hands_over_to_self_hosted_replicas_which_survive_losing_a_node",
            CHILD,
            std::ffi::OsStr::new("1"),
        )
    })
    .await??;
    assert!(passed, "the self-hosting story failed:\n{log}");
    for line in log
        .lines()
        .filter(|l| l.starts_with("---") || l.starts_with("story:"))
    {
        println!("{line}");
    }
    assert!(log.contains("self-hosting story checked"), "{log}");
    Ok(())
}

/// Waits until `check` gives a value, at most [`STEP`].
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A replica instance, where it runs and where it answers.
#[derive(Debug, Clone, Default)]
struct HostedReplica {
    title: String,
    computer: String,
    partition: String,
    url: String,
}

struct Story {
    net: Network,
    dir: PathBuf,
    slapmaster: PathBuf,
    slapnode: PathBuf,
    slapctl: PathBuf,
    release: String,
    operator: ClientTlsConfig,
    seed: Option<Child>,
    nodes: Vec<Option<Child>>,
}

impl Story {
    fn url(address: std::net::Ipv6Addr) -> String {
        format!("https://[{address}]:{PORT}")
    }

    fn seed_url(&self) -> String {
        Self::url(self.net.address(0))
    }

    fn seed_dir(&self) -> PathBuf {
        self.dir.join("seed")
    }

    /// A process inside namespace `i`, its output appended to `log`.
    fn spawn_in(
        &self,
        i: usize,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.net.namespace(i)])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .env("SLAPMASTER_BIN", &self.slapmaster)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?)
    }

    /// `slapctl` as the operator, through `cluster`; its output, or why it failed.
    async fn slapctl(&self, cluster: &[String], args: &[&str]) -> anyhow::Result<String> {
        let (succeeded, text) = self.slapctl_ran(cluster, args).await?;
        anyhow::ensure!(succeeded, "slapctl {}: {text}", args.join(" "));
        Ok(text)
    }

    /// `slapctl` as the operator, through `cluster`: whether it succeeded, and its output.
    async fn slapctl_ran(
        &self,
        cluster: &[String],
        args: &[&str],
    ) -> anyhow::Result<(bool, String)> {
        let output = Command::new(&self.slapctl)
            .arg("--cluster")
            .arg(cluster.join(","))
            .arg("--tls-dir")
            .arg(self.seed_dir().join("operator"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), text))
    }

    async fn status(&self, url: &str) -> Option<pb::ClusterStatusReply> {
        let channel = client::connect_with(url, Some(self.operator.clone()))
            .await
            .ok()?;
        AdminClient::new(channel)
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    async fn computers(&self, url: &str) -> Option<Vec<pb::ComputerSummary>> {
        let channel = client::connect_with(url, Some(self.operator.clone()))
            .await
            .ok()?;
        AdminClient::new(channel)
            .list_computers(pb::ListComputersRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner().computers)
    }

    /// The operator's replica instances.
    async fn replicas(&self, url: &str) -> Option<Vec<HostedReplica>> {
        let channel = client::connect_with(url, Some(self.operator.clone()))
            .await
            .ok()?;
        let instances = UserClient::new(channel)
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .ok()?
            .into_inner()
            .instances;
        Some(
            instances
                .into_iter()
                .filter(|i| i.title.starts_with("replica-"))
                .map(|i| {
                    let (computer, partition) = match i.placement.and_then(|p| p.placement) {
                        Some(pb::placement::Placement::Partition(p)) => (p.computer, p.partition),
                        _ => Default::default(),
                    };
                    HostedReplica {
                        url: i.connection.get("url").cloned().unwrap_or_default(),
                        title: i.title,
                        computer,
                        partition,
                    }
                })
                .collect(),
        )
    }

    fn start_node(&mut self, k: usize) -> anyhow::Result<()> {
        let (computer, region) = NODES[k - 1];
        let dir = self.dir.join(format!("node-{k}"));
        std::fs::create_dir_all(&dir)?;
        let tls = test_kit::cluster::credentials_dir(
            &self.slapmaster,
            &self.seed_dir(),
            &format!("computer:{computer}"),
        )?;
        let config = format!(
            r#"computer = "{computer}"
masters = ["{seed}"]
tls_dir = "{tls}"
state_dir = "{dir}/state"
poll_interval_s = 5
usage_interval_s = 3600
stop_grace_s = 2

[attributes]
region = "{region}"

[format]
partitions = 3
interface = "eth0"
ipv6_network = "{network}"
ipv6_first_host = {first}
ipv4_network = "10.0.{k}.0/24"
user_base = "n{k}user"
instance_root = "{dir}/instances"
software_root = "{dir}/software"
mode = "system"
"#,
            seed = self.seed_url(),
            tls = tls.display(),
            dir = dir.display(),
            network = self.net.network(),
            first = 0x1000 * k,
        );
        let path = dir.join("slapnode.toml");
        std::fs::write(&path, config)?;
        let child = self.spawn_in(
            k,
            &self.slapnode.clone(),
            &["run", "--config", &path.to_string_lossy()],
            &dir.join("slapnode.log"),
        )?;
        self.nodes[k - 1] = Some(child);
        Ok(())
    }

    /// Stops node `k`'s agent as its service manager would (SIGTERM), and waits for it.
    async fn stop_node(&mut self, k: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[k - 1].take() {
            if let Some(pid) = child.id() {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid)?),
                    nix::sys::signal::Signal::SIGTERM,
                )?;
            }
            let stopped = tokio::time::timeout(STEP, child.wait()).await??;
            anyhow::ensure!(stopped.success(), "node {k} stopped cleanly: {stopped}");
        }
        Ok(())
    }

    /// Kills node `k` and everything it runs (its instances, the replica among them).
    async fn kill_node(&mut self, k: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[k - 1].take() {
            child.kill().await?;
        }
        kill_namespace(&self.net.namespace(k));
        Ok(())
    }

    /// SIGKILLs the hosted replica process running on node `k`; its pid.
    fn kill_replica_process(&self, k: usize) -> anyhow::Result<i32> {
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &self.net.namespace(k)])
            .output()?;
        let replica = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\0instance\0"))
            })
            .ok_or_else(|| anyhow::anyhow!("no replica process on node {k}"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(replica),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        Ok(replica)
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Story {
    /// Whatever happened, nothing the story started outlives it: the replicas are the nodes'
    /// grandchildren, so they are found by namespace.
    fn drop(&mut self) {
        for i in 0..=NODES.len() {
            kill_namespace(&self.net.namespace(i));
        }
    }
}

/// SIGKILL to every process in network namespace `namespace`.
fn kill_namespace(namespace: &str) {
    let Ok(pids) = std::process::Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A client that keeps requesting instances (`load-N`, a release nobody supplies, so they stay
/// pending) through whichever of `urls` answers, asking again with the same title until one
/// acknowledges. Returns the acknowledged titles.
fn client(
    user: ClientTlsConfig,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut turn = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let title = format!("load-{n}");
            let url = {
                let urls = urls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                urls[turn % urls.len()].clone()
            };
            let request = pb::RequestInstanceRequest {
                title: title.clone(),
                software_release: "https://nowhere.example/sr".into(),
                ..Default::default()
            };
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                let channel = client::connect_with(&url, Some(user.clone())).await.ok()?;
                UserClient::new(channel)
                    .request_instance(request)
                    .await
                    .ok()
            })
            .await;
            if let Ok(Some(_)) = answer {
                acknowledged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(title);
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                turn += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
}

fn acked(list: &Mutex<Vec<String>>) -> usize {
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

/// Waits until the client has a request acknowledged after `phase` ended (the cluster serves
/// again), and records how many it had by then.
async fn served_after(
    phase: &'static str,
    acknowledged: &Mutex<Vec<String>>,
    progress: &mut Vec<(&'static str, usize)>,
) -> anyhow::Result<()> {
    let before = acked(acknowledged);
    let after = until(&format!("a request acknowledged after {phase}"), || async {
        let now = acked(acknowledged);
        (now > before).then_some(now)
    })
    .await?;
    progress.push((phase, after));
    Ok(())
}

async fn story() -> anyhow::Result<()> {
    let began = Instant::now();
    let seed_value = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    println!("story: network seed {seed_value}");
    let net = Network::create(1 + NODES.len(), seed_value)?;
    let dir = tempfile::tempdir()?;
    // Partition users must reach their directories and the installed software.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let release = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../master-cluster/releases/slapmaster.toml")
        .canonicalize()?;
    let mut story = Story {
        net,
        dir: dir.path().to_path_buf(),
        slapmaster: slapmaster_for_tests()?,
        slapnode: binary_for_tests("node-client", "slapnode")?,
        slapctl: binary_for_tests("ops", "slapctl")?,
        release: format!("file://{}", release.display()),
        operator: ClientTlsConfig::new(),
        seed: None,
        nodes: (0..NODES.len()).map(|_| None).collect(),
    };

    println!(
        "--- {:5.1} s: the seed: slapmaster bootstrap",
        began.elapsed().as_secs_f64()
    );
    let seed_listen = format!("[{}]:{PORT}", story.net.address(0));
    let seed_dir = story.seed_dir();
    let seed = story.spawn_in(
        0,
        &story.slapmaster.clone(),
        &[
            "bootstrap",
            "--dir",
            &seed_dir.to_string_lossy(),
            "--listen",
            &seed_listen,
            "--region",
            "seed",
        ],
        &story.dir.join("seed.log"),
    )?;
    story.seed = Some(seed);
    let operator_dir = seed_dir.join("operator");
    until("the seed's operator certificate", || async {
        Credentials::read_dir(&operator_dir).ok()
    })
    .await?;
    story.operator = Credentials::read_dir(&operator_dir)?.tls_config();
    let seed_url = story.seed_url();
    until("the seed to lead", || async {
        story.status(&seed_url).await.filter(|s| s.leader == 1)
    })
    .await?;

    println!(
        "--- {:5.1} s: four nodes in three regions register with the seed",
        began.elapsed().as_secs_f64()
    );
    for k in 1..=NODES.len() {
        story.start_node(k)?;
        let (computer, _) = NODES[k - 1];
        // One at a time: formats create users in the one /etc.
        until(&format!("{computer} registered"), || async {
            story
                .computers(&seed_url)
                .await?
                .into_iter()
                .find(|c| c.id == computer && c.partitions == 3)
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}\n{}", story.log_tail(&format!("node-{k}/slapnode.log")))
        })?;
    }

    println!(
        "--- {:5.1} s: a client keeps requesting instances from here on",
        began.elapsed().as_secs_f64()
    );
    // Its requests stay pending: far more than a user's default quota allows.
    story
        .slapctl(
            std::slice::from_ref(&seed_url),
            &[
                "quota",
                "set",
                "--user",
                "load",
                "--instances",
                "1000000",
                "--pending",
                "1000000",
            ],
        )
        .await?;
    let user =
        test_kit::cluster::credentials(&story.slapmaster, &seed_dir, "user:load")?.tls_config();
    let urls = Arc::new(Mutex::new(vec![seed_url.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let load = client(
        user.clone(),
        urls.clone(),
        stop.clone(),
        acknowledged.clone(),
    );
    // After each phase the client must be served again (`served_after`).
    let mut progress = vec![("start", acked(&acknowledged))];

    println!(
        "--- {:5.1} s: slapctl replica add: one replica per region",
        began.elapsed().as_secs_f64()
    );
    let ca_dir = seed_dir.join("ca").to_string_lossy().into_owned();
    let added = story
        .slapctl(
            std::slice::from_ref(&seed_url),
            &[
                "replica",
                "add",
                "--region",
                "r1",
                "--region",
                "r2",
                "--region",
                "r3",
                "--software",
                &story.release,
                "--ca-dir",
                &ca_dir,
                "--timeout",
                "300",
            ],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nnode 1:\n{}\nseed:\n{}",
                story.log_tail("node-1/slapnode.log"),
                story.log_tail("seed.log")
            )
        })?;
    println!("{added}");
    let replicas = story.replicas(&seed_url).await.unwrap_or_default();
    let placed: BTreeSet<(String, String)> = replicas
        .iter()
        .map(|r| (r.title.clone(), r.computer.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("replica-2", "COMP-1"),
        ("replica-3", "COMP-2"),
        ("replica-4", "COMP-3"),
    ]
    .into_iter()
    .map(|(t, c)| (t.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(placed, expected, "one replica per region: {replicas:?}");
    let hosted: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let status = story.status(&seed_url).await.unwrap_or_default();
    let voters: BTreeSet<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4]), "{status:?}");
    let regions: BTreeSet<String> = status.members.iter().map(|m| m.region.clone()).collect();
    assert_eq!(
        regions,
        ["r1", "r2", "r3", "seed"].map(String::from).into(),
        "{status:?}"
    );
    served_after("replicas added", &acknowledged, &mut progress).await?;

    println!(
        "--- {:5.1} s: the seed leaves the membership and stops",
        began.elapsed().as_secs_f64()
    );
    *urls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = hosted.clone();
    story.slapctl(&hosted, &["member", "remove", "1"]).await?;
    if let Some(mut seed) = story.seed.take() {
        let pid = seed.id().unwrap_or_default();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let exited = tokio::time::timeout(STEP, seed.wait())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the seed did not stop on SIGTERM\n{}",
                    story.log_tail("seed.log")
                )
            })??;
        assert!(exited.success(), "the seed stopped cleanly: {exited}");
    }
    let seed_gone = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let first = hosted[0].clone();
    let status = until("a leader among the hosted replicas", || async {
        story
            .status(&first)
            .await
            .filter(|s| [2, 3, 4].contains(&s.leader))
    })
    .await?;
    let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
    assert_eq!(members, BTreeSet::from([2, 3, 4]), "{status:?}");
    // The nodes learned the replicas from their polls: each is seen again after the seed left.
    until("every node polling the hosted replicas", || async {
        let computers = story.computers(&first).await?;
        computers
            .iter()
            .all(|c| u128::from(c.last_seen) > seed_gone)
            .then_some(())
    })
    .await?;
    served_after("seed gone", &acknowledged, &mut progress).await?;

    println!(
        "--- {:5.1} s: node 4's agent restarts; its configuration names only the gone seed",
        began.elapsed().as_secs_f64()
    );
    story.stop_node(4).await?;
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    story.start_node(4)?;
    // The replica list it saved is all it has to find the cluster with.
    until("node 4 polling the hosted replicas again", || async {
        story
            .computers(&first)
            .await?
            .iter()
            .any(|c| c.id == "COMP-4" && u128::from(c.last_seen) > restarted)
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", story.log_tail("node-4/slapnode.log")))?;

    println!(
        "--- {:5.1} s: node 1 (hosting replica 2) dies with everything it runs",
        began.elapsed().as_secs_f64()
    );
    story.kill_node(1).await?;
    let survivors: Vec<String> = hosted[1..].to_vec();
    *urls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = survivors.clone();
    story
        .slapctl(&survivors, &["computer", "close", "COMP-1"])
        .await?;
    let replace = |timeout: &'static str| {
        [
            "replica",
            "add",
            "--region",
            "r1",
            "--software",
            &story.release,
            "--ca-dir",
            &ca_dir,
            "--timeout",
            timeout,
        ]
    };
    // The operator gives up at once (an interruption); run again, the command goes on with
    // the replica it requested instead of requesting another.
    let (succeeded, given_up) = story.slapctl_ran(&survivors, &replace("0")).await?;
    assert!(
        !succeeded && given_up.contains("run the same command to go on"),
        "{given_up}"
    );
    let replaced = story
        .slapctl(&survivors, &replace("300"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nnode 4:\n{}", story.log_tail("node-4/slapnode.log")))?;
    println!("{replaced}");
    assert!(
        replaced
            .lines()
            .any(|l| l.contains("replica-5") && l.ends_with("true")),
        "replica 5 resumed: {replaced}"
    );
    let replicas = story.replicas(&survivors[0]).await.unwrap_or_default();
    let titles: BTreeSet<&str> = replicas.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(
        titles,
        BTreeSet::from(["replica-2", "replica-3", "replica-4", "replica-5"]),
        "the second run went on with replica 5: {replicas:?}"
    );
    let replacement = replicas
        .iter()
        .find(|r| r.title == "replica-5")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        replacement.computer, "COMP-4",
        "the other node of r1: {replicas:?}"
    );
    story
        .slapctl(&survivors, &["member", "remove", "2"])
        .await?;
    let mut now_hosted = survivors.clone();
    now_hosted.push(replacement.url.clone());
    *urls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = now_hosted.clone();
    let status = until("replicas 3, 4, 5 with a leader", || async {
        let status = story.status(&now_hosted[0]).await?;
        let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
        (members == BTreeSet::from([3, 4, 5]) && status.leader != 0).then_some(status)
    })
    .await?;
    assert!(status.members.iter().all(|m| m.voter), "{status:?}");
    served_after("replaced", &acknowledged, &mut progress).await?;

    println!(
        "--- {:5.1} s: replica 3's process dies: its node restarts it, a voter still",
        began.elapsed().as_secs_f64()
    );
    let third = replicas
        .iter()
        .find(|r| r.title == "replica-3")
        .cloned()
        .unwrap_or_default();
    let killed = story.kill_replica_process(2)?;
    let log = story
        .dir
        .join("node-2/instances")
        .join(&third.partition)
        .join(".slapnode/log/slapmaster.log");
    let again = until("replica 3 serving again", || async {
        let again = std::fs::read_to_string(&log).ok()?;
        let status = story.status(&third.url).await?;
        let me = status.members.iter().find(|m| m.id == 3)?;
        (again.contains("already a voter") && me.voter && status.leader != 0).then_some(again)
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e} (killed pid {killed})\n{}",
            story.log_tail("node-2/slapnode.log")
        )
    })?;
    // It asked to join once, when it was new: restarted, it knew itself a voter at once.
    assert_eq!(
        again
            .matches("asking the cluster to add this replica")
            .count(),
        1,
        "{again}"
    );
    served_after("restarted", &acknowledged, &mut progress).await?;

    println!(
        "--- {:5.1} s: the client stops; every acknowledged request is there",
        began.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let acknowledged: Vec<String> = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let channel = client::connect_with(&now_hosted[0], Some(user)).await?;
    let stored: BTreeSet<String> = UserClient::new(channel)
        .list_instances(pb::ListInstancesRequest::default())
        .await?
        .into_inner()
        .instances
        .into_iter()
        .map(|i| i.title)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !stored.contains(*t))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    println!(
        "story: {} requests acknowledged, none lost; acknowledged by the end of each phase {progress:?}",
        acknowledged.len()
    );
    for k in 1..=NODES.len() {
        story.kill_node(k).await?;
    }
    println!("self-hosting story checked");
    Ok(())
}
