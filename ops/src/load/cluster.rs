//! A cluster of `slapmaster` processes on `[::1]`, bootstrapped with `init` and `join`, whose
//! replicas can be killed and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;

use super::LoadError;

pub const OPERATOR: &str = "operator:slapload";

pub struct Replica {
    pub id: u64,
    pub port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://[::1]:{}", self.port)
    }

    fn command(&self, slapmaster: &Path, verb: &str) -> Result<Command, LoadError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LoadError::io(format!("opening {}", self.log.display()), e))?;
        let mut command = Command::new(slapmaster);
        command
            .arg(verb)
            .arg("--id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(format!("[::1]:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        Ok(command)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    slapmaster: PathBuf,
    pub replicas: Vec<Replica>,
}

impl Cluster {
    /// Starts `count` replicas with their data under `dir`: the first bootstraps, the others
    /// join through it. Returns once all are voters.
    pub async fn start(slapmaster: &Path, dir: &Path, count: u64) -> Result<Self, LoadError> {
        let mut replicas: Vec<Replica> = Vec::new();
        for id in 1..=count {
            let taken: Vec<u16> = replicas.iter().map(|r| r.port).collect();
            replicas.push(Replica {
                id,
                port: unused_port(&taken)?,
                data_dir: dir.join(format!("replica-{id}")),
                log: dir.join(format!("replica-{id}.log")),
                child: None,
            });
        }
        let mut cluster = Self {
            slapmaster: slapmaster.to_path_buf(),
            replicas,
        };
        let init = cluster.replicas[0]
            .command(slapmaster, "init")?
            .status()
            .map_err(|e| LoadError::io("running slapmaster init", e))?;
        if !init.success() {
            return Err(LoadError::Cluster(format!(
                "slapmaster init failed; see {}",
                cluster.replicas[0].log.display()
            )));
        }
        cluster.spawn(0, "run", &[])?;
        let via = cluster.replicas[0].url();
        for index in 1..cluster.replicas.len() {
            cluster.spawn(index, "join", &["--via", &via])?;
        }
        let urls = cluster.urls();
        let voters = wait_for("every replica to be a voter", || async {
            let status = status(&urls[0]).await?;
            let ready = status
                .members
                .iter()
                .filter(|m| m.voter && m.unreachable.is_empty())
                .count();
            (ready == urls.len()).then_some(())
        })
        .await;
        match voters {
            Ok(()) => Ok(cluster),
            Err(e) => Err(LoadError::Cluster(format!("{e}\n{}", cluster.log_tails()))),
        }
    }

    fn spawn(&mut self, index: usize, verb: &str, extra: &[&str]) -> Result<(), LoadError> {
        let replica = &mut self.replicas[index];
        let child = replica
            .command(&self.slapmaster, verb)?
            .args(extra)
            .spawn()
            .map_err(|e| LoadError::io(format!("starting {}", self.slapmaster.display()), e))?;
        replica.child = Some(child);
        Ok(())
    }

    /// The last lines each replica logged, to explain a failure.
    pub fn log_tails(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let text = std::fs::read_to_string(&r.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                format!("--- replica {} ({}):\n{tail}", r.id, r.url())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::url).collect()
    }

    /// The id of the running replica that leads.
    pub async fn leader(&self) -> Result<u64, LoadError> {
        let urls: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.is_running())
            .map(Replica::url)
            .collect();
        // Only the leader's own word counts: a restarted replica may still name the old one.
        wait_for("a leader", || async {
            for url in &urls {
                if let Some(status) = replica_status(url).await
                    && status.role() == pb::Role::Leader
                {
                    return Some(status.id);
                }
            }
            None
        })
        .await
    }

    /// SIGKILLs replica `index` and reaps it.
    pub fn kill(&mut self, index: usize) -> Result<(), LoadError> {
        self.signal(index, Signal::SIGKILL).map(|_| ())
    }

    /// Signals replica `index` (if it runs) and waits for it to exit.
    fn signal(
        &mut self,
        index: usize,
        signal: Signal,
    ) -> Result<Option<std::process::ExitStatus>, LoadError> {
        let Some(mut child) = self.replicas[index].child.take() else {
            return Ok(None);
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|e| LoadError::Cluster(format!("signalling {pid}: {e}")))?;
        child
            .wait()
            .map(Some)
            .map_err(|e| LoadError::io("waiting for slapmaster", e))
    }

    /// Restarts replica `index` from its data directory and waits until it has applied
    /// everything the leader had when it started.
    pub async fn restart(&mut self, index: usize) -> Result<(), LoadError> {
        let leader_url = {
            let leader = self.leader().await?;
            self.replicas
                .iter()
                .find(|r| r.id == leader)
                .map(Replica::url)
                .ok_or_else(|| LoadError::Cluster(format!("leader {leader} is not ours")))?
        };
        self.spawn(index, "run", &[])?;
        let url = self.replicas[index].url();
        let head = replica_status(&leader_url)
            .await
            .map(|s| s.last_log_index)
            .unwrap_or(0);
        wait_for("the restarted replica to catch up", || async {
            let status = replica_status(&url).await?;
            (status.applied_index >= head).then_some(())
        })
        .await
    }

    /// Stops every replica with SIGTERM; each must shut down cleanly (exit status 0).
    pub fn stop(&mut self) -> Result<(), LoadError> {
        for index in 0..self.replicas.len() {
            if let Some(status) = self.signal(index, Signal::SIGTERM)?
                && !status.success()
            {
                return Err(LoadError::Cluster(format!(
                    "replica {} exited with {status} after SIGTERM\n{}",
                    self.replicas[index].id,
                    self.log_tails()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A port on `[::1]` that is free now and not in `taken`, for a process that must listen on
/// a fixed address. It is chosen below Linux's ephemeral range (32768-60999): a port the
/// kernel handed out for `:0` could be given again to an outgoing connection before the
/// process binds it.
pub fn unused_port(taken: &[u16]) -> Result<u16, LoadError> {
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() << 30 ^ u64::from(d.subsec_nanos()));
    for _ in 0..1000 {
        // xorshift: any spread over the range will do.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + u16::try_from(x % 12_000).unwrap_or(0);
        if !taken.contains(&port) && std::net::TcpListener::bind(("::1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(LoadError::Cluster("no free port in 20000-31999".into()))
}

/// Retries `attempt` every 50 ms until it returns `Some`, for at most a minute.
pub async fn wait_for<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, LoadError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = attempt().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(LoadError::Cluster(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn status(url: &str) -> Option<pb::ClusterStatusReply> {
    let mut admin = AdminClient::new(client::connect(url).await.ok()?);
    let request = as_actor(pb::ClusterStatusRequest {}, OPERATOR).ok()?;
    Some(admin.cluster_status(request).await.ok()?.into_inner())
}

pub async fn replica_status(url: &str) -> Option<pb::ReplicaStatusReply> {
    let mut admin = AdminClient::new(client::connect(url).await.ok()?);
    Some(
        admin
            .replica_status(pb::ReplicaStatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}
