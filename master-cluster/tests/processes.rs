//! Three `slapmaster` processes on `[::1]`: bootstrapped with `init` and `join`, the leader
//! SIGKILLed in the middle of a stream of requests, a new leader elected and the stream going
//! on with no acknowledged request lost, the killed replica restarted from its data directory
//! and catching up, and SIGTERM stopping every process cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;

const OPERATOR: &str = "operator:test";
const USER: &str = "user:alice";
const SR: &str = "https://lab.example/software/kvm/software.cfg";
const DEADLINE: Duration = Duration::from_secs(30);

struct Process {
    id: u64,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn url(&self) -> String {
        format!("http://[::1]:{}", self.port)
    }

    fn command(&self, verb: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_slapmaster"));
        command
            .arg(verb)
            .arg("--id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(format!("[::1]:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log file"),
            );
        command
    }

    fn spawn(&mut self, verb: &str, extra: &[&str]) {
        let child = self
            .command(verb)
            .args(extra)
            .spawn()
            .expect("slapmaster starts");
        self.child = Some(child);
    }

    fn signal(&mut self, signal: Signal) -> Child {
        let child = self.child.take().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, signal).expect("signal sent");
        child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Retries `attempt` until it returns `Some`, at most [`DEADLINE`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(url: &str) -> Option<pb::ClusterStatusReply> {
    let mut admin = AdminClient::new(client::connect(url).await.ok()?);
    let request = as_actor(pb::ClusterStatusRequest {}, OPERATOR).ok()?;
    Some(admin.cluster_status(request).await.ok()?.into_inner())
}

async fn replica_status(url: &str) -> Option<pb::ReplicaStatusReply> {
    let mut admin = AdminClient::new(client::connect(url).await.ok()?);
    Some(
        admin
            .replica_status(pb::ReplicaStatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

/// Sends `title`'s request to the replicas in turn until one acknowledges it; a replica that
/// does not answer (killed) or cannot commit yet (an election) is passed over.
async fn request(urls: &[String], title: &str) -> pb::RequestInstanceReply {
    let mut turn = 0;
    eventually("an acknowledged request", || {
        turn += 1;
        let url = urls[turn % urls.len()].clone();
        async move {
            let mut user = UserClient::new(client::connect(&url).await.ok()?);
            let request = pb::RequestInstanceRequest {
                title: title.to_string(),
                software_release: SR.into(),
                ..Default::default()
            };
            user.request_instance(as_actor(request, USER).ok()?)
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await
}

fn exit_cleanly(mut child: Child, what: &str) {
    let status = child.wait().expect("waits");
    assert!(status.success(), "{what} exited with {status}");
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_process_is_killed_and_no_acknowledged_request_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas: Vec<Process> = (1..=3)
        .map(|id| Process {
            id,
            port: free_port(),
            data_dir: dir.path().join(format!("replica-{id}")),
            log: dir.path().join(format!("replica-{id}.log")),
            child: None,
        })
        .collect();
    let urls: Vec<String> = replicas.iter().map(Process::url).collect();

    eprintln!("--- init bootstraps once; a second init is refused");
    let init = replicas[0].command("init").status().expect("init runs");
    assert!(init.success(), "init: {}", log_tail(&replicas[0].log));
    let again = replicas[0].command("init").status().expect("init runs");
    assert!(!again.success(), "a second init must be refused");
    assert!(log_tail(&replicas[0].log).contains("already belongs to a cluster"));

    eprintln!("--- replica 1 runs, replicas 2 and 3 join through it");
    replicas[0].spawn("run", &[]);
    let via = urls[0].clone();
    for replica in &mut replicas[1..] {
        replica.spawn("join", &["--via", &via]);
    }
    eventually("three voters", || async {
        let status = status(&urls[0]).await?;
        let voters = status
            .members
            .iter()
            .filter(|m| m.voter && m.unreachable.is_empty());
        (voters.count() == 3).then_some(())
    })
    .await;

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

    let leader = status(&urls[0]).await.expect("status").leader;
    let victim = usize::try_from(leader - 1).expect("index");
    eprintln!("--- SIGKILL the leader (replica {leader}) and keep requesting");
    let killed_at = Instant::now();
    let child = replicas[victim].signal(Signal::SIGKILL);
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
    drop(child);
    for n in 1..40 {
        let title = format!("after-kill-{n}");
        let reply = request(&urls, &title).await;
        acknowledged.insert(title, reply.guid);
    }
    let new_leader = status(&survivors[0]).await.expect("status").leader;
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
    replicas[victim].spawn("run", &[]);
    let head = replica_status(&survivors[0])
        .await
        .expect("status")
        .last_log_index;
    eventually("the restarted replica caught up", || async {
        let status = replica_status(&urls[victim]).await?;
        (status.applied_index >= head).then_some(())
    })
    .await;

    eprintln!("--- SIGTERM stops every replica cleanly");
    let children: Vec<Child> = replicas
        .iter_mut()
        .map(|r| r.signal(Signal::SIGTERM))
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        exit_cleanly(
            child,
            &format!("replica {}: {}", n + 1, log_tail(&replicas[n].log)),
        );
    }
}
