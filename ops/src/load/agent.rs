//! The agent phase of `slapload`: a real `slapnode` with started instances, polling every
//! second (long-poll off, so each second is one full poll), measured from `/proc`: its resident
//! memory and the CPU time it spends per poll.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::user_client::UserClient;

use super::LoadError;
use test_kit::cluster::{Cluster, wait_for};

const COMPUTER: &str = "COMP-AGENT";
/// The release the agent installs: node-client's demo (a server that records its pid).
const RELEASE: &str = include_str!("../../../node-client/releases/demo.toml");

/// What the phase measured.
#[derive(Debug)]
pub struct AgentFigures {
    pub partitions: u32,
    pub rss_bytes: u64,
    pub polls: usize,
    pub cpu: Duration,
    pub elapsed: Duration,
}

impl AgentFigures {
    pub fn lines(&self) -> Vec<String> {
        let per_poll = self.cpu.as_secs_f64() * 1000.0 / self.polls.max(1) as f64;
        vec![
            format!(
                "{:<36} {:>9.1} MiB   ({} partitions with running instances)",
                "agent: idle RSS",
                self.rss_bytes as f64 / (1024.0 * 1024.0),
                self.partitions
            ),
            format!(
                "{:<36} {:>9.3} ms   ({} polls in {:.1} s, {:.1} ms CPU)",
                "agent: CPU per poll",
                per_poll,
                self.polls,
                self.elapsed.as_secs_f64(),
                self.cpu.as_secs_f64() * 1000.0
            ),
        ]
    }
}

pub async fn measure(
    cluster: &Cluster,
    slapnode: &Path,
    dir: &Path,
    partitions: u32,
    time: Duration,
) -> Result<AgentFigures, LoadError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e| LoadError::io(what, e)
    };
    let dir = dir.join("agent");
    std::fs::create_dir_all(&dir).map_err(io("creating the agent's directory"))?;
    let release = dir.join("release.toml");
    std::fs::write(&release, RELEASE).map_err(io("writing the release"))?;
    let release = format!("file://{}", release.display());
    let tls = dir.join("tls");
    cluster
        .credentials(&format!("computer:{COMPUTER}"))?
        .write_dir(&tls)
        .map_err(io("writing the computer's certificate"))?;
    let masters: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let config = dir.join("slapnode.toml");
    let text = format!(
        "computer = \"{COMPUTER}\"\nmasters = [{}]\ntls_dir = \"{}\"\nstate_dir = \"{}\"\n\
         poll_interval_s = 1\nlong_poll = false\nusage_interval_s = 3600\n\n[format]\n\
         partitions = {partitions}\ninterface = \"lo\"\nipv6_network = \"fd00:a6e::/64\"\n\
         ipv4_network = \"10.251.0.0/16\"\ninstance_root = \"{}\"\nsoftware_root = \"{}\"\n\
         mode = \"unprivileged\"\n",
        masters.join(", "),
        tls.display(),
        dir.join("state").display(),
        dir.join("instances").display(),
        dir.join("software").display(),
    );
    std::fs::write(&config, text).map_err(io("writing slapnode.toml"))?;
    let log_path = dir.join("slapnode.log");
    let log = std::fs::File::create(&log_path).map_err(io("creating the agent's log"))?;
    let mut child = Command::new(slapnode)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,node_client::agent=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io("starting slapnode"))?;
    let measured = drive(cluster, &release, child.id(), &log_path, partitions, time).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    measured
}

async fn drive(
    cluster: &Cluster,
    release: &str,
    pid: u32,
    log: &Path,
    partitions: u32,
    time: Duration,
) -> Result<AgentFigures, LoadError> {
    let url = &cluster.urls()[0];
    let operator = client::connect_with(url, Some(cluster.operator())).await?;
    let user = client::connect_with(
        url,
        Some(cluster.credentials("user:agent-bench")?.tls_config()),
    )
    .await?;
    let supply = pb::SupplyRequest {
        computer: COMPUTER.into(),
        url: release.into(),
        state: pb::SupplyState::Available.into(),
    };
    wait_for("the agent to register its computer", || {
        let mut operator = UserClient::new(operator.clone());
        let supply = supply.clone();
        async move { operator.supply(supply).await.ok() }
    })
    .await?;
    let mut requests = UserClient::new(user.clone());
    for n in 0..partitions {
        requests
            .request_instance(pb::RequestInstanceRequest {
                title: format!("bench-{n}"),
                software_release: release.into(),
                ..Default::default()
            })
            .await?;
    }
    wait_for("every instance started", || {
        let mut user = UserClient::new(user.clone());
        async move {
            let instances = user
                .list_instances(pb::ListInstancesRequest::default())
                .await
                .ok()?
                .into_inner()
                .instances;
            let started = instances
                .iter()
                .filter(|i| i.reported_state == i32::from(pb::ReportedState::Started))
                .count();
            (started == partitions as usize).then_some(())
        }
    })
    .await?;

    let polls_before = polls(log);
    let cpu_before = cpu_time(pid);
    let started = std::time::Instant::now();
    tokio::time::sleep(time).await;
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    Ok(AgentFigures {
        partitions,
        rss_bytes: resident(pid),
        polls: polls(log).saturating_sub(polls_before),
        cpu,
        elapsed,
    })
}

/// Polls the agent logged (at debug level, one line each).
fn polls(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.matches(" polled ").count())
        .unwrap_or(0)
}

/// On-CPU time of every thread of `pid`, from `/proc/PID/task/*/schedstat` (nanoseconds).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Resident set size, from `/proc/PID/status` (`VmRSS: 1234 kB`).
fn resident(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
