//! Real `slapmaster` processes, each in its own network namespace with its own IPv6 address
//! (see [`crate::net`]), its data on its own small tmpfs (so that a full disk can be made),
//! over mTLS with a CA made for the run. Replicas are killed, restarted from their data,
//! paused and resumed by the nemesis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slapcluster_api::client::{self, Credentials};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use tonic::transport::ClientTlsConfig;

use crate::ChaosError;
use crate::net::Network;

/// Every replica listens on this port of its own address.
const PORT: u16 = 7000;
/// Each replica's data directory is a tmpfs this large.
pub const DISK_MB: u64 = 256;

pub struct Replica {
    pub id: u64,
    data_dir: PathBuf,
    tls_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// How a replica misbehaves on purpose, to show the checkers catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Danger {
    #[default]
    None,
    /// Linearizable reads skip the leader's read index (`--danger-stale-reads`).
    StaleReads,
}

pub struct Cluster {
    slapmaster: PathBuf,
    dir: PathBuf,
    pub network: Network,
    pub replicas: Vec<Replica>,
    operator: ClientTlsConfig,
    danger: Danger,
}

impl Cluster {
    /// Starts `count` replicas under `dir` on a fresh network: the first bootstraps, the
    /// others join. Returns once all are voters.
    pub async fn start(
        slapmaster: &Path,
        dir: &Path,
        count: usize,
        tag_seed: u64,
        danger: Danger,
    ) -> Result<Self, ChaosError> {
        let network = Network::create(count, tag_seed)?;
        tool(slapmaster, &["ca", "init", "--dir"], &dir.join("ca"), &[])?;
        let mut replicas = Vec::new();
        for i in 0..count {
            let id = u64::try_from(i + 1).unwrap_or(u64::MAX);
            let tls_dir = dir.join(format!("replica-{id}-tls"));
            let address = network.address(i).to_string();
            issue(
                slapmaster,
                dir,
                &format!("replica:{id}"),
                &tls_dir,
                &["--server-name", &address],
            )?;
            let data_dir = dir.join(format!("replica-{id}"));
            mount_tmpfs(&data_dir)?;
            replicas.push(Replica {
                id,
                data_dir,
                tls_dir,
                log: dir.join(format!("replica-{id}.log")),
                child: None,
                paused: false,
            });
        }
        let operator_dir = dir.join("certs").join("operator");
        issue(slapmaster, dir, "operator:chaos", &operator_dir, &[])?;
        let operator = read_credentials(&operator_dir)?.tls_config();
        let mut cluster = Self {
            slapmaster: slapmaster.to_path_buf(),
            dir: dir.to_path_buf(),
            network,
            replicas,
            operator,
            danger,
        };
        let init = cluster
            .command(0, "init")?
            .status()
            .map_err(io("running slapmaster init"))?;
        if !init.success() {
            return Err(ChaosError::Setup(format!(
                "slapmaster init failed\n{}",
                cluster.log_tail(0)
            )));
        }
        cluster.spawn(0, "run", &[])?;
        let via = cluster.url(0);
        for i in 1..count {
            cluster.spawn(i, "join", &["--via", &via])?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = cluster.status(0).await {
                let voters = status
                    .members
                    .iter()
                    .filter(|m| m.voter && m.unreachable.is_empty())
                    .count();
                if voters == count {
                    return Ok(cluster);
                }
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Setup(format!(
                    "the cluster did not form\n{}",
                    cluster.log_tails()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    pub fn url(&self, i: usize) -> String {
        format!("https://[{}]:{PORT}", self.network.address(i))
    }

    pub fn operator(&self) -> ClientTlsConfig {
        self.operator.clone()
    }

    /// TLS for `identity` (`user:alice`, `computer:COMP-1`), issued on first use.
    pub fn credentials(&self, identity: &str) -> Result<ClientTlsConfig, ChaosError> {
        let name: String = identity
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let out = self.dir.join("certs").join(name);
        if !out.exists() {
            issue(&self.slapmaster, &self.dir, identity, &out, &[])?;
        }
        Ok(read_credentials(&out)?.tls_config())
    }

    fn command(&self, i: usize, verb: &str) -> Result<Command, ChaosError> {
        let replica = &self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .map_err(io("opening a replica log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.network.namespace(i)])
            .arg(&self.slapmaster)
            .arg(verb)
            .args(["--id", &replica.id.to_string()])
            .args(["--listen", &format!("[{}]:{PORT}", self.network.address(i))])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .arg("--tls-dir")
            .arg(&replica.tls_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        if self.danger == Danger::StaleReads && verb != "init" {
            command.arg("--danger-stale-reads");
        }
        Ok(command)
    }

    fn spawn(&mut self, i: usize, verb: &str, extra: &[&str]) -> Result<(), ChaosError> {
        let child = self
            .command(i, verb)?
            .args(extra)
            .spawn()
            .map_err(io("starting slapmaster"))?;
        self.replicas[i].child = Some(child);
        self.replicas[i].paused = false;
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) -> Result<(), ChaosError> {
        if let Some(mut child) = self.replicas[i].child.take() {
            child.kill().map_err(io("killing a replica"))?;
            child.wait().map_err(io("reaping a replica"))?;
        }
        self.replicas[i].paused = false;
        Ok(())
    }

    /// Starts a killed replica again from its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), ChaosError> {
        if self.replicas[i].child.is_none() {
            self.spawn(i, "run", &[])?;
        }
        Ok(())
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.replicas[i].child.is_some()
    }

    /// SIGSTOP (`pause = true`) or SIGCONT.
    pub fn pause(&mut self, i: usize, pause: bool) -> Result<(), ChaosError> {
        let replica = &mut self.replicas[i];
        if let Some(child) = &replica.child {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            kill(
                pid,
                if pause {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                },
            )
            .map_err(|e| ChaosError::Setup(format!("signalling replica {}: {e}", replica.id)))?;
            replica.paused = pause;
        }
        Ok(())
    }

    /// Whether a replica's process exited by itself (a fatal error): reaps it.
    pub fn exited(&mut self, i: usize) -> bool {
        let Some(child) = &mut self.replicas[i].child else {
            return false;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            self.replicas[i].child = None;
            return true;
        }
        false
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.replicas[i].data_dir
    }

    /// The cluster status as replica `i` reports it, if it answers.
    pub async fn status(&self, i: usize) -> Option<pb::ClusterStatusReply> {
        let mut admin = self.admin(i).await?;
        let call = admin.cluster_status(pb::ClusterStatusRequest::default());
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .ok()?
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Replica `i`'s own report, with its state digest when asked.
    pub async fn replica_status(&self, i: usize, digest: bool) -> Option<pb::ReplicaStatusReply> {
        let mut admin = self.admin(i).await?;
        let call = admin.replica_status(pb::ReplicaStatusRequest {
            state_digest: digest,
        });
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .ok()?
            .ok()
            .map(tonic::Response::into_inner)
    }

    async fn admin(&self, i: usize) -> Option<AdminClient<tonic::transport::Channel>> {
        let url = self.url(i);
        let connect = client::connect_with(&url, Some(self.operator.clone()));
        let channel = tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .ok()?
            .ok()?;
        Some(AdminClient::new(channel))
    }

    /// The replica that says it leads, among those that answer.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.len() {
            if self.replicas[i].child.is_none() || self.replicas[i].paused {
                continue;
            }
            if let Some(status) = self.replica_status(i, false).await
                && status.role() == pb::Role::Leader
            {
                return Some(i);
            }
        }
        None
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.replicas[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn log_tails(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- replica {}:\n{}", i + 1, self.log_tail(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            let _ = self.pause(i, false);
            let _ = self.kill(i);
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.replicas[i].data_dir)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ChaosError {
    move |e| ChaosError::Setup(format!("{what}: {e}"))
}

fn read_credentials(dir: &Path) -> Result<Credentials, ChaosError> {
    Credentials::read_dir(dir)
        .map_err(|e| ChaosError::Setup(format!("reading {}: {e}", dir.display())))
}

fn mount_tmpfs(dir: &Path) -> Result<(), ChaosError> {
    std::fs::create_dir_all(dir).map_err(io("creating a data directory"))?;
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={DISK_MB}m,mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .map_err(io("mounting a tmpfs"))?;
    if !status.success() {
        return Err(ChaosError::Setup(format!(
            "mounting a tmpfs on {} failed",
            dir.display()
        )));
    }
    Ok(())
}

/// `slapmaster cert issue` of `identity` into `out`, from the run's CA.
fn issue(
    slapmaster: &Path,
    dir: &Path,
    identity: &str,
    out: &Path,
    extra: &[&str],
) -> Result<(), ChaosError> {
    let ca = dir.join("ca");
    let mut args = vec!["cert", "issue", "--ca-dir"];
    let ca = ca.to_string_lossy().into_owned();
    args.push(&ca);
    args.extend_from_slice(&["--identity", identity]);
    args.extend_from_slice(extra);
    args.push("--out");
    tool(slapmaster, &args, out, &[])
}

fn tool(
    slapmaster: &Path,
    args: &[&str],
    last: &Path,
    env: &[(&str, &str)],
) -> Result<(), ChaosError> {
    let output = Command::new(slapmaster)
        .args(args)
        .arg(last)
        .envs(env.iter().copied())
        .output()
        .map_err(io("running slapmaster"))?;
    if !output.status.success() {
        return Err(ChaosError::Setup(format!(
            "slapmaster {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
