//! A cluster of `slapmaster` processes on `[::1]` over TLS, bootstrapped with `init` and
//! `join`, whose replicas can be killed and restarted. Its root CA and every certificate are
//! made with `slapmaster ca init` and `slapmaster cert issue`, as an operator would.
//!
//! Started [`Cluster::start_apart`], its replicas sit in regions of a [`RegionMap`]: each is
//! known by its front ([`crate::fronts`]), which puts the map's distance between replicas,
//! and a client in a region reaches each replica through a [`crate::distance::DelayLink`]
//! ([`Cluster::url_from`]). The harness's own calls take no detour.
//!
//! Over 800 lines on purpose: one harness (start, kill, restart, partition, ask) whose
//! methods share the cluster's processes and credentials; split, each part would need them all.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slapcluster_api::client::{self, Credentials};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::Error as LoadError;
use crate::distance::{ClientLinks, Distances, RegionMap};
use crate::fronts::{Blocked, Fronts};

pub const OPERATOR: &str = "operator:slapload";

/// Runs `slapmaster ARGS PATH EXTRA` to completion.
pub fn run_tool(
    slapmaster: &Path,
    args: &[&str],
    path: &Path,
    extra: &[&str],
) -> Result<(), LoadError> {
    let output = Command::new(slapmaster)
        .args(args)
        .arg(path)
        .args(extra)
        .output()
        .map_err(|e| LoadError::io(format!("running {}", slapmaster.display()), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LoadError::Cluster(format!(
            "slapmaster {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Credentials for `identity` (`user:alice`, `computer:COMP-1`, ...) from the CA under
/// `dir/ca`, issued into `dir/certs/` on first use.
pub fn credentials(
    slapmaster: &Path,
    dir: &Path,
    identity: &str,
) -> Result<Credentials, LoadError> {
    let out = credentials_dir(slapmaster, dir, identity)?;
    Credentials::read_dir(&out)
        .map_err(|e| LoadError::io(format!("reading {identity}'s certificate"), e))
}

/// The directory with `identity`'s `chain.pem`, `key.pem` and `roots.pem`, issued on first
/// use.
pub fn credentials_dir(
    slapmaster: &Path,
    dir: &Path,
    identity: &str,
) -> Result<PathBuf, LoadError> {
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
    let out = dir.join("certs").join(name);
    if !out.exists() {
        issue(slapmaster, dir, identity, &out, &[])?;
    }
    Ok(out)
}

/// Replica `id`'s certificate and its signing CA (it signs enrolling computers' and
/// operator-issued certificates), issued into `dir/replica-{id}-tls`.
fn replica_tls(slapmaster: &Path, dir: &Path, id: u64) -> Result<PathBuf, LoadError> {
    let tls_dir = dir.join(format!("replica-{id}-tls"));
    issue(
        slapmaster,
        dir,
        &format!("replica:{id}"),
        &tls_dir,
        &["--server-name", "::1"],
    )?;
    let (ca_dir, replica) = (dir.join("ca"), id.to_string());
    let ca_dir = ca_dir.to_string_lossy();
    let signer = [
        "cert",
        "signer",
        "--ca-dir",
        &ca_dir,
        "--replica",
        &replica,
        "--tls-dir",
    ];
    run_tool(slapmaster, &signer, &tls_dir, &[])?;
    Ok(tls_dir)
}

/// `slapmaster cert issue` for `identity` into `out`, from the CA under `dir/ca`.
pub fn issue(
    slapmaster: &Path,
    dir: &Path,
    identity: &str,
    out: &Path,
    extra: &[&str],
) -> Result<(), LoadError> {
    let ca = dir.join("ca");
    let ca = ca.to_string_lossy();
    let mut args = vec![
        "cert",
        "issue",
        "--ca-dir",
        ca.as_ref(),
        "--identity",
        identity,
    ];
    args.extend_from_slice(extra);
    args.push("--out");
    run_tool(slapmaster, &args, out, &[])
}

pub struct Replica {
    pub id: u64,
    /// Where it listens for gRPC.
    pub port: u16,
    /// Where the cluster knows it, when it sits behind a front (a cluster apart).
    front: Option<u16>,
    /// Where it serves metrics, health and its status page.
    pub http_port: u16,
    /// Where it serves the SLAP HTTP protocol (HTTPS with client certificates).
    pub slap_port: u16,
    /// Where it serves the web panel (HTTPS with client certificates).
    pub panel_port: u16,
    data_dir: PathBuf,
    tls_dir: PathBuf,
    log: PathBuf,
    /// The configuration file every replica of the cluster reads, if any.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Replica {
    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its certificate, key, the roots and its signing CA (`signer.pem`, `signer.key`).
    pub fn tls_dir(&self) -> &Path {
        &self.tls_dir
    }

    /// Where the cluster and its clients reach it: its front, if it has one.
    pub fn url(&self) -> String {
        format!("https://[::1]:{}", self.front.unwrap_or(self.port))
    }

    /// The SLAP master URL (`master_url` in a SlapOS node's or client's configuration).
    /// The web panel's home page.
    pub fn panel_url(&self) -> String {
        format!("https://[::1]:{}/panel/", self.panel_port)
    }

    pub fn slap_url(&self) -> String {
        format!("https://[::1]:{}/", self.slap_port)
    }

    /// The operations listener: `/metrics`, `/healthz`, `/readyz`, `/`.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.http_port))
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
            .arg("--http-listen")
            .arg(format!("[::1]:{}", self.http_port))
            .arg("--slap-listen")
            .arg(format!("[::1]:{}", self.slap_port))
            .arg("--panel-listen")
            .arg(format!("[::1]:{}", self.panel_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--tls-dir")
            .arg(&self.tls_dir)
            .args(
                self.config
                    .iter()
                    .flat_map(|path| [OsStr::new("--config"), path.as_os_str()]),
            )
            .args(
                self.front
                    .iter()
                    .flat_map(|_| ["--advertise".into(), self.url()]),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        Ok(command)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    slapmaster: PathBuf,
    dir: PathBuf,
    pub replicas: Vec<Replica>,
    /// The operator's credentials, for the harness's own calls.
    operator: Credentials,
    /// Where replicas sit, when they are apart.
    apart: Option<Apart>,
}

/// Where the replicas of a cluster sit, and how far apart: each in a region of a map.
#[derive(Debug, Clone)]
pub struct Layout {
    pub map: RegionMap,
    /// Replica `i` (id `i + 1`) sits in `regions[i]`.
    pub regions: Vec<String>,
    /// How many of the last replicas join as learners (never promoted); the others are voters.
    pub learners: usize,
    /// Seeds every link's jitter (print it).
    pub seed: u64,
}

/// A cluster's replicas apart: their fronts, and a link from each region to each replica.
struct Apart {
    layout: Layout,
    fronts: Fronts,
    /// How a client in a region calls each replica (through its front).
    links: ClientLinks,
}

/// How often [`Cluster::start`] tries again with other ports when one it chose was taken.
const PORT_ATTEMPTS: u32 = 4;

/// Why one attempt to start a cluster failed.
enum Boot {
    /// A replica could not listen on a port chosen for it: another process took it between
    /// the choice and the bind (ports for child processes cannot be reserved).
    PortTaken(String),
    Failed(LoadError),
}

impl From<LoadError> for Boot {
    fn from(e: LoadError) -> Self {
        Self::Failed(e)
    }
}

impl Cluster {
    /// Starts `count` replicas with their data under `dir`: the first bootstraps, the others
    /// join through it. Returns once all are voters. A replica that finds a chosen port
    /// taken makes the whole start again, with new ports and empty data, a few times.
    pub async fn start(slapmaster: &Path, dir: &Path, count: u64) -> Result<Self, LoadError> {
        Self::start_configured(slapmaster, dir, count, None).await
    }

    /// [`Cluster::start_configured`] with one replica in each region `layout` names, each
    /// behind its front; see [`Cluster::url_from`] for a client's way in.
    pub async fn start_apart(
        slapmaster: &Path,
        dir: &Path,
        layout: Layout,
        config: Option<&str>,
    ) -> Result<Self, LoadError> {
        let count = u64::try_from(layout.regions.len()).unwrap_or(u64::MAX);
        if layout.learners >= layout.regions.len() {
            return Err(LoadError::Cluster("a cluster needs a voter".into()));
        }
        Self::start_laid_out(slapmaster, dir, count, config, Some(layout)).await
    }

    /// [`Cluster::start`], every replica reading `config` (TOML, as `slapmaster run --config`
    /// reads; the command line still sets ids, addresses and directories).
    pub async fn start_configured(
        slapmaster: &Path,
        dir: &Path,
        count: u64,
        config: Option<&str>,
    ) -> Result<Self, LoadError> {
        Self::start_laid_out(slapmaster, dir, count, config, None).await
    }

    async fn start_laid_out(
        slapmaster: &Path,
        dir: &Path,
        count: u64,
        config: Option<&str>,
        layout: Option<Layout>,
    ) -> Result<Self, LoadError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LoadError::io(format!("creating {}", dir.display()), e))?;
        let config = match config {
            None => None,
            Some(text) => {
                let path = dir.join("replica.toml");
                std::fs::write(&path, text)
                    .map_err(|e| LoadError::io(format!("writing {}", path.display()), e))?;
                Some(path)
            }
        };
        let ca = dir.join("ca");
        run_tool(slapmaster, &["ca", "init", "--dir"], &ca, &[])?;
        for id in 1..=count {
            replica_tls(slapmaster, dir, id)?;
        }
        let operator_dir = dir.join("certs").join("operator");
        issue(slapmaster, dir, OPERATOR, &operator_dir, &[])?;
        let operator = Credentials::read_dir(&operator_dir)
            .map_err(|e| LoadError::io("reading the operator's certificate", e))?;
        let mut attempt = 1;
        loop {
            let (operator, config, layout) = (operator.clone(), config.clone(), layout.clone());
            match Self::boot(slapmaster, dir, count, operator, config, layout).await {
                Ok(cluster) => return Ok(cluster),
                Err(Boot::PortTaken(line)) if attempt < PORT_ATTEMPTS => {
                    eprintln!("cluster start {attempt}: a chosen port was taken ({line}); again");
                    attempt += 1;
                }
                Err(Boot::PortTaken(line)) => {
                    return Err(LoadError::Cluster(format!(
                        "ports taken {PORT_ATTEMPTS} times in a row: {line}"
                    )));
                }
                Err(Boot::Failed(e)) => return Err(e),
            }
        }
    }

    /// One attempt of [`Cluster::start`], with fresh ports, data and logs.
    async fn boot(
        slapmaster: &Path,
        dir: &Path,
        count: u64,
        operator: Credentials,
        config: Option<PathBuf>,
        layout: Option<Layout>,
    ) -> Result<Self, Boot> {
        let mut replicas: Vec<Replica> = Vec::new();
        for id in 1..=count {
            let mut taken: Vec<u16> = replicas
                .iter()
                .flat_map(|r: &Replica| [r.port, r.http_port, r.slap_port, r.panel_port])
                .chain(replicas.iter().filter_map(|r| r.front))
                .collect();
            let (data_dir, log) = (
                dir.join(format!("replica-{id}")),
                dir.join(format!("replica-{id}.log")),
            );
            for stale in [&data_dir, &log] {
                let removed = if stale.is_dir() {
                    std::fs::remove_dir_all(stale)
                } else {
                    std::fs::remove_file(stale)
                };
                if let Err(e) = removed
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(LoadError::io(format!("removing {}", stale.display()), e).into());
                }
            }
            let mut pick = || -> Result<u16, LoadError> {
                let port = unused_port(&taken)?;
                taken.push(port);
                Ok(port)
            };
            let (port, http_port, slap_port, panel_port) = (pick()?, pick()?, pick()?, pick()?);
            let front = layout.as_ref().map(|_| pick()).transpose()?;
            replicas.push(Replica {
                id,
                port,
                front,
                http_port,
                slap_port,
                panel_port,
                data_dir,
                tls_dir: dir.join(format!("replica-{id}-tls")),
                log,
                config: config.clone(),
                child: None,
            });
        }
        let apart = match layout {
            None => None,
            Some(layout) => Some(Apart::start(layout, &replicas).await?),
        };
        let mut cluster = Self {
            slapmaster: slapmaster.to_path_buf(),
            dir: dir.to_path_buf(),
            replicas,
            operator,
            apart,
        };
        let init = cluster.replicas[0]
            .command(slapmaster, "init")?
            .status()
            .map_err(|e| LoadError::io("running slapmaster init", e))?;
        if !init.success() {
            return Err(LoadError::Cluster(format!(
                "slapmaster init failed; see {}",
                cluster.replicas[0].log.display()
            ))
            .into());
        }
        cluster.spawn(0, "run", &[])?;
        let via = cluster.replicas[0].url();
        let count = cluster.replicas.len();
        let voters = count - cluster.apart.as_ref().map_or(0, |a| a.layout.learners);
        for index in 1..count {
            let learner: &[&str] = if index < voters { &[] } else { &["--learner"] };
            cluster.spawn(index, "join", &[&["--via", via.as_str()], learner].concat())?;
        }
        let urls = cluster.urls();
        let operator = cluster.operator.tls_config();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = status(&urls[0], &operator).await {
                let answering = status.members.iter().filter(|m| m.unreachable.is_empty());
                let ready = answering.clone().filter(|m| m.voter).count();
                if ready == voters && answering.count() == count {
                    return Ok(cluster);
                }
            }
            if let Some(line) = cluster.port_taken() {
                return Err(Boot::PortTaken(line));
            }
            if Instant::now() > deadline {
                return Err(LoadError::Cluster(format!(
                    "timed out waiting for every replica to be a voter or learner\n{}",
                    cluster.log_tails()
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log line of a replica that exited because a port chosen for it was taken.
    fn port_taken(&mut self) -> Option<String> {
        for replica in &mut self.replicas {
            let exited = replica
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited {
                let log = std::fs::read_to_string(&replica.log).unwrap_or_default();
                if let Some(line) = log.lines().find(|l| l.contains("Address already in use")) {
                    return Some(line.to_owned());
                }
            }
        }
        None
    }

    fn spawn(&mut self, index: usize, verb: &str, extra: &[&str]) -> Result<(), LoadError> {
        let replica = &mut self.replicas[index];
        let child = replica
            .command(&self.slapmaster, verb)?
            .args(extra)
            .spawn()
            .map_err(|e| LoadError::io(format!("starting {}", self.slapmaster.display()), e))?;
        if let Some(apart) = &self.apart {
            apart.fronts.set_pid(index, Some(child.id()));
        }
        replica.child = Some(child);
        Ok(())
    }

    /// Where a client in `region` reaches replica `index`: through a link as long as the
    /// map says, when the cluster is apart; directly otherwise.
    pub fn url_from(&self, region: &str, index: usize) -> Result<String, LoadError> {
        let Some(apart) = &self.apart else {
            return Ok(self.replicas[index].url());
        };
        Ok(format!(
            "https://[::1]:{}",
            apart.links.port(region, index)?
        ))
    }

    /// The region replica `index` sits in, when the cluster is apart.
    pub fn region_of(&self, index: usize) -> Option<&str> {
        let apart = self.apart.as_ref()?;
        apart.layout.regions.get(index).map(String::as_str)
    }

    /// Where the replicas sit, when the cluster is apart.
    pub fn layout(&self) -> Option<&Layout> {
        self.apart.as_ref().map(|apart| &apart.layout)
    }

    /// Cuts what replica `i` sends to replica `j` for every `(i, j)` in `blocked` (and heals
    /// every other pair); only a cluster apart has fronts to cut.
    pub fn partition(&self, blocked: &Blocked) -> Result<(), LoadError> {
        let apart = self.apart.as_ref().ok_or_else(|| {
            LoadError::Cluster("only a cluster started apart can be partitioned".into())
        })?;
        apart.fronts.partition(blocked);
        Ok(())
    }

    /// Credentials for `identity` (`user:alice`, `computer:COMP-1`, ...), issued on first use.
    pub fn credentials(&self, identity: &str) -> Result<Credentials, LoadError> {
        credentials(&self.slapmaster, &self.dir, identity)
    }

    /// Where [`Cluster::credentials`] keeps `identity`'s files.
    pub fn credentials_dir(&self, identity: &str) -> Result<PathBuf, LoadError> {
        credentials_dir(&self.slapmaster, &self.dir, identity)
    }

    /// The operator's TLS configuration.
    pub fn operator(&self) -> ClientTlsConfig {
        self.operator.tls_config()
    }

    /// Gives `user` a role (`manager`, `customer`) in `project`, as an operator does with
    /// `slapctl project add`: a project's managers supply software to its computers.
    pub async fn set_role(&self, user: &str, project: &str, role: &str) -> Result<(), LoadError> {
        let url = self.replicas.first().map(Replica::url).unwrap_or_default();
        let channel = client::connect_with(&url, Some(self.operator.tls_config())).await?;
        AdminClient::new(channel)
            .set_project_member(pb::SetProjectMemberRequest {
                project: project.into(),
                user: user.into(),
                role: role.into(),
            })
            .await?;
        Ok(())
    }

    /// Sets everyone's default quota (operators' call): a benchmark that places more than one
    /// user may hold by default raises it, so that it measures the write path, not the quota.
    pub async fn set_default_quota(&self, instances: u64) -> Result<(), LoadError> {
        let url = self.replicas.first().map(Replica::url).unwrap_or_default();
        let channel = client::connect_with(&url, Some(self.operator.tls_config())).await?;
        AdminClient::new(channel)
            .set_quota(pb::SetQuotaRequest {
                user: String::new(),
                quota: Some(pb::Quota {
                    instances,
                    pending: instances,
                    parameter_bytes: u64::MAX,
                }),
            })
            .await?;
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
        let operator = self.operator.tls_config();
        wait_for("a leader", || async {
            for url in &urls {
                if let Some(status) = replica_status(url, &operator, false).await
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
    /// A replica that does not lead, as the leader sees it now.
    pub async fn follower(&self) -> Result<&Replica, LoadError> {
        let leader = self.leader().await?;
        self.replicas
            .iter()
            .find(|r| r.id != leader)
            .ok_or_else(|| LoadError::Cluster("no follower".into()))
    }

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
        if let Some(apart) = &self.apart {
            apart.fronts.set_pid(index, None);
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|e| LoadError::Cluster(format!("signalling {pid}: {e}")))?;
        child
            .wait()
            .map(Some)
            .map_err(|e| LoadError::io("waiting for slapmaster", e))
    }

    /// Replica `index` reads `config` (TOML) from its next start on, the others keeping theirs:
    /// in a rolling upgrade, the new release may take keys the old one refuses.
    pub fn set_config(&mut self, index: usize, config: &str) -> Result<(), LoadError> {
        let replica = &mut self.replicas[index];
        let path = self.dir.join(format!("replica-{}.toml", replica.id));
        std::fs::write(&path, config)
            .map_err(|e| LoadError::io(format!("writing {}", path.display()), e))?;
        replica.config = Some(path);
        Ok(())
    }

    /// The binary replicas run from their next start on (a rolling upgrade).
    pub fn set_slapmaster(&mut self, slapmaster: &Path) {
        self.slapmaster = slapmaster.to_path_buf();
    }

    /// Stops replica `index` with SIGTERM; it must shut down cleanly.
    pub fn stop_one(&mut self, index: usize) -> Result<(), LoadError> {
        match self.signal(index, Signal::SIGTERM)? {
            Some(status) if !status.success() => Err(LoadError::Cluster(format!(
                "replica {} exited with {status} after SIGTERM\n{}",
                self.replicas[index].id,
                self.log_tails()
            ))),
            _ => Ok(()),
        }
    }

    /// Starts replica `index` (stopped) from its data directory, without waiting for it.
    pub fn start_one(&mut self, index: usize) -> Result<(), LoadError> {
        self.spawn(index, "run", &[])
    }

    /// Where the leader serves gRPC.
    pub async fn leader_url(&self) -> Result<String, LoadError> {
        let leader = self.leader().await?;
        self.replicas
            .iter()
            .find(|r| r.id == leader)
            .map(Replica::url)
            .ok_or_else(|| LoadError::Cluster(format!("leader {leader} is not ours")))
    }

    /// The leader's last log index now (0 if it does not answer): a replica that applied it
    /// has caught up with what the cluster had.
    pub async fn leader_head(&self) -> Result<u64, LoadError> {
        let url = self.leader_url().await?;
        Ok(replica_status(&url, &self.operator.tls_config(), false)
            .await
            .map_or(0, |s| s.last_log_index))
    }

    /// Waits, at most `within`, until replica `index` has applied log index `head`; answers its
    /// status then.
    pub async fn caught_up(
        &self,
        index: usize,
        head: u64,
        within: Duration,
    ) -> Result<pb::ReplicaStatusReply, LoadError> {
        let replica = &self.replicas[index];
        let (url, operator) = (replica.url(), self.operator.tls_config());
        let what = format!("replica {} to apply index {head}", replica.id);
        wait_within(&what, within, Duration::from_millis(50), || async {
            let status = replica_status(&url, &operator, false).await?;
            (status.applied_index >= head).then_some(status)
        })
        .await
    }

    /// Restarts replica `index` from its data directory and waits until it has applied
    /// everything the leader had when it started.
    pub async fn restart(&mut self, index: usize) -> Result<(), LoadError> {
        self.start_one(index)?;
        let head = self.leader_head().await?;
        self.caught_up(index, head, Duration::from_secs(60)).await?;
        Ok(())
    }

    /// Starts a new replica (the next id) on an empty data directory, joining through the
    /// leader as a learner, and answers its index without waiting for it to catch up. Not for
    /// a cluster apart (its fronts are fixed at start).
    pub async fn add_learner(&mut self) -> Result<usize, LoadError> {
        if self.apart.is_some() {
            return Err(LoadError::Cluster(
                "a replica cannot be added to a cluster apart".into(),
            ));
        }
        let via = self.leader_url().await?;
        let id = self.replicas.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let tls_dir = replica_tls(&self.slapmaster, &self.dir, id)?;
        let mut taken: Vec<u16> = self
            .replicas
            .iter()
            .flat_map(|r| [r.port, r.http_port, r.slap_port, r.panel_port])
            .collect();
        let mut pick = || -> Result<u16, LoadError> {
            let port = unused_port(&taken)?;
            taken.push(port);
            Ok(port)
        };
        let (port, http_port, slap_port, panel_port) = (pick()?, pick()?, pick()?, pick()?);
        self.replicas.push(Replica {
            id,
            port,
            front: None,
            http_port,
            slap_port,
            panel_port,
            data_dir: self.dir.join(format!("replica-{id}")),
            tls_dir,
            log: self.dir.join(format!("replica-{id}.log")),
            config: self.replicas.first().and_then(|r| r.config.clone()),
            child: None,
        });
        let index = self.replicas.len() - 1;
        self.spawn(index, "join", &["--via", via.as_str(), "--learner"])?;
        Ok(index)
    }

    /// Stops every replica with SIGTERM; each must shut down cleanly (exit status 0).
    pub fn stop(&mut self) -> Result<(), LoadError> {
        (0..self.replicas.len()).try_for_each(|index| self.stop_one(index))
    }
}

impl Apart {
    /// Fronts for `replicas` (each with its front port chosen) and every region's links.
    async fn start(layout: Layout, replicas: &[Replica]) -> Result<Self, Boot> {
        let distances = Distances::on_map(&layout.map, &layout.regions, layout.seed)?;
        let fronts = replicas.iter().filter_map(|r| r.front).collect();
        let backs = replicas.iter().map(|r| r.port).collect();
        let fronts = Fronts::start(fronts, backs, distances)
            .await
            .map_err(|e| match e {
                LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                    Boot::PortTaken(source.to_string())
                }
                e => Boot::Failed(e),
            })?;
        let upstreams: Vec<std::net::SocketAddr> = replicas
            .iter()
            .map(|r| (std::net::Ipv6Addr::LOCALHOST, r.front.unwrap_or(r.port)).into())
            .collect();
        let links =
            ClientLinks::start(&layout.map, &layout.regions, &upstreams, layout.seed).await?;
        Ok(Self {
            layout,
            fronts,
            links,
        })
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
    attempt: impl FnMut() -> F,
) -> Result<T, LoadError> {
    wait_for_every(what, Duration::from_millis(50), attempt).await
}

/// [`wait_for`], trying every `interval`: for timings that a 50 ms step would blur.
pub async fn wait_for_every<T, F: Future<Output = Option<T>>>(
    what: &str,
    interval: Duration,
    attempt: impl FnMut() -> F,
) -> Result<T, LoadError> {
    wait_within(what, Duration::from_secs(60), interval, attempt).await
}

/// Retries `attempt` every `interval` until it returns `Some`, for at most `within`: for what
/// may take longer than a minute (a replica catching up on gigabytes) and should still be timed.
pub async fn wait_within<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, LoadError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(LoadError::Cluster(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(interval).await;
    }
}

/// How long a status call may take: a replica that is stopped (SIGSTOP) or cut off accepts
/// the connection, or not, and never answers.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// An admin client of the replica at `url`, if it answers in time.
pub async fn admin(url: &str, operator: &ClientTlsConfig) -> Option<AdminClient<Channel>> {
    let connect = client::connect_with(url, Some(operator.clone()));
    let channel = tokio::time::timeout(STATUS_TIMEOUT, connect)
        .await
        .ok()?
        .ok()?;
    Some(AdminClient::new(channel))
}

/// The cluster status as the replica at `url` reports it, if it answers in time.
pub async fn status(url: &str, operator: &ClientTlsConfig) -> Option<pb::ClusterStatusReply> {
    let mut admin = admin(url, operator).await?;
    let call = admin.cluster_status(pb::ClusterStatusRequest {});
    let reply = tokio::time::timeout(STATUS_TIMEOUT, call).await.ok()?;
    Some(reply.ok()?.into_inner())
}

/// The replica at `url`'s own report, if it answers in time; with `digest`, the digest of its
/// whole state too (a full scan, given longer).
pub async fn replica_status(
    url: &str,
    operator: &ClientTlsConfig,
    digest: bool,
) -> Option<pb::ReplicaStatusReply> {
    let mut admin = admin(url, operator).await?;
    let call = admin.replica_status(pb::ReplicaStatusRequest {
        state_digest: digest,
    });
    let limit = if digest {
        STATUS_TIMEOUT * 3
    } else {
        STATUS_TIMEOUT
    };
    let reply = tokio::time::timeout(limit, call).await.ok()?;
    Some(reply.ok()?.into_inner())
}

/// For tests of other crates: the `slapmaster` binary in the target directory the running
/// test executable belongs to, built first when only that crate's tests were asked for.
pub fn slapmaster_for_tests() -> Result<PathBuf, LoadError> {
    binary_for_tests("master-cluster", "slapmaster")
}

/// For tests: binary `bin` of workspace package `package`, in the target directory the running
/// test executable belongs to, built (or found up to date) once per test process: a test of
/// another crate must not run a binary older than the sources.
pub fn binary_for_tests(package: &str, bin: &str) -> Result<PathBuf, LoadError> {
    let exe = std::env::current_exe().map_err(|e| LoadError::io("locating the test binary", e))?;
    let target = exe.parent().and_then(Path::parent).ok_or_else(|| {
        LoadError::Cluster(format!("no target directory above {}", exe.display()))
    })?;
    static BUILT: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.contains(bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(LoadError::Cluster(format!("building {bin} failed")));
        }
        built.insert(bin.to_owned());
    }
    Ok(target.join(bin))
}
