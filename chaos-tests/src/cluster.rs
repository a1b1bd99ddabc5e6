//! Real `slapmaster` processes, each in its own network namespace with its own IPv6 address
//! (see [`crate::net`]), its data on its own small tmpfs (so that a full disk can be made),
//! over mTLS with a CA made for the run. Replicas are killed, restarted from their data,
//! paused and resumed by the nemesis.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slapcluster_api::v1 as pb;
use test_kit::distance::{ClientLinks, Distances, RegionMap};
use test_kit::fronts::Fronts;
use tonic::transport::ClientTlsConfig;

use crate::ChaosError;
use crate::net::{Blocked, Network};

/// Every replica listens on this port of its own address.
const PORT: u16 = 7000;
/// Each replica's data directory is a tmpfs this large.
pub const DISK_MB: u64 = 256;
/// The file that fills a replica's disk.
const BALLAST: &str = "ballast";

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

/// How replicas are wired and faults made: network namespaces and nftables as root, loopback
/// ports behind user-space proxies otherwise.
pub enum Fabric {
    Namespaces(Network),
    Loopback(Fronts),
}

impl Fabric {
    pub fn partition(&self, blocked: &Blocked) -> Result<(), ChaosError> {
        match self {
            Fabric::Namespaces(network) => network.partition(blocked),
            Fabric::Loopback(proxies) => {
                proxies.partition(blocked);
                Ok(())
            }
        }
    }

    pub fn heal(&self) -> Result<(), ChaosError> {
        match self {
            Fabric::Namespaces(network) => network.heal(),
            Fabric::Loopback(proxies) => {
                proxies.heal();
                Ok(())
            }
        }
    }

    /// Whether replicas' disks can be filled (each on its own tmpfs, which needs root).
    pub fn has_disks(&self) -> bool {
        matches!(self, Fabric::Namespaces(_))
    }

    /// Where the cluster and its clients reach replica `i`.
    fn url(&self, i: usize) -> String {
        match self {
            Fabric::Namespaces(network) => format!("https://[{}]:{PORT}", network.address(i)),
            Fabric::Loopback(proxies) => format!("https://[::1]:{}", proxies.fronts[i]),
        }
    }

    fn listen(&self, i: usize) -> String {
        match self {
            Fabric::Namespaces(network) => format!("[{}]:{PORT}", network.address(i)),
            Fabric::Loopback(proxies) => format!("[::1]:{}", proxies.backs[i]),
        }
    }

    fn server_name(&self, i: usize) -> String {
        match self {
            Fabric::Namespaces(network) => network.address(i).to_string(),
            Fabric::Loopback(_) => "::1".into(),
        }
    }

    /// The command that runs `slapmaster` as replica `i`.
    fn command(&self, i: usize, slapmaster: &Path) -> Command {
        match self {
            Fabric::Namespaces(network) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &network.namespace(i)])
                    .arg(slapmaster);
                command
            }
            Fabric::Loopback(_) => Command::new(slapmaster),
        }
    }
}

pub struct Cluster {
    slapmaster: PathBuf,
    dir: PathBuf,
    pub fabric: Fabric,
    pub replicas: Vec<Replica>,
    operator: ClientTlsConfig,
    danger: Danger,
    /// Apart: replica `i`'s region, and how a client in a region calls each replica.
    apart: Option<(Vec<String>, ClientLinks)>,
    /// The configuration every replica reads (Raft's timing for the distance), if any.
    config: Option<PathBuf>,
}

/// Replica `i`'s region in a run apart: the map's regions in turn.
pub fn region_of(map: &RegionMap, i: usize) -> String {
    let regions: Vec<&str> = map.regions().into_iter().collect();
    regions[i % regions.len()].to_owned()
}

impl Cluster {
    /// Starts `count` replicas under `dir` on a fresh network (loopback behind fronts when
    /// not root, when asked, or apart): the first bootstraps, the others join. Returns once
    /// all are voters. Apart on `map`, replica `i` sits in [`region_of`]`(map, i)`, the fronts
    /// hold what replicas send each other for the map's distance, each replica's clients call
    /// it from its own region through a delay link, and Raft's timing derives from the widest
    /// round trip.
    pub async fn start(
        slapmaster: &Path,
        dir: &Path,
        count: usize,
        tag_seed: u64,
        danger: Danger,
        loopback: bool,
        map: Option<&RegionMap>,
    ) -> Result<Self, ChaosError> {
        let setup = |e: test_kit::Error| ChaosError::Setup(e.to_string());
        let regions: Vec<String> = map
            .map(|map| (0..count).map(|i| region_of(map, i)).collect())
            .unwrap_or_default();
        let distances = match map {
            Some(map) => Distances::on_map(map, &regions, tag_seed).map_err(setup)?,
            None => Distances::none(),
        };
        let fabric = if crate::is_root() && !loopback && map.is_none() {
            Fabric::Namespaces(Network::create(count, tag_seed)?)
        } else {
            let mut taken = Vec::new();
            for _ in 0..count * 2 {
                let port = test_kit::cluster::unused_port(&taken)
                    .map_err(|e| ChaosError::Setup(e.to_string()))?;
                taken.push(port);
            }
            let (fronts, backs) = taken.split_at(count);
            Fabric::Loopback(
                Fronts::start(fronts.to_vec(), backs.to_vec(), distances)
                    .await
                    .map_err(setup)?,
            )
        };
        test_kit::cluster::run_tool(slapmaster, &["ca", "init", "--dir"], &dir.join("ca"), &[])
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
        let mut replicas = Vec::new();
        for i in 0..count {
            let id = u64::try_from(i + 1).unwrap_or(u64::MAX);
            let tls_dir = dir.join(format!("replica-{id}-tls"));
            let address = fabric.server_name(i);
            test_kit::cluster::issue(
                slapmaster,
                dir,
                &format!("replica:{id}"),
                &tls_dir,
                &["--server-name", &address],
            )
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
            let data_dir = dir.join(format!("replica-{id}"));
            if fabric.has_disks() {
                mount_tmpfs(&data_dir)?;
            } else {
                std::fs::create_dir_all(&data_dir).map_err(io("creating a data directory"))?;
            }
            replicas.push(Replica {
                id,
                data_dir,
                tls_dir,
                log: dir.join(format!("replica-{id}.log")),
                child: None,
                paused: false,
            });
        }
        let operator = test_kit::cluster::credentials(slapmaster, dir, "operator:chaos")
            .map_err(|e| ChaosError::Setup(e.to_string()))?
            .tls_config();
        let mut apart = None;
        let mut config = None;
        if let (Some(map), Fabric::Loopback(fronts)) = (map, &fabric) {
            let upstreams: Vec<SocketAddr> = fronts
                .fronts
                .iter()
                .map(|&front| (Ipv6Addr::LOCALHOST, front).into())
                .collect();
            let links = ClientLinks::start(map, &regions, &upstreams, tag_seed)
                .await
                .map_err(setup)?;
            let path = dir.join("replica.toml");
            let widest = map.widest(&regions).map_err(setup)?;
            let text = format!("[raft]\nrtt_ms = {}\n", widest.as_millis());
            std::fs::write(&path, text).map_err(io("writing the replicas' configuration"))?;
            config = Some(path);
            apart = Some((regions, links));
        }
        let mut cluster = Self {
            slapmaster: slapmaster.to_path_buf(),
            dir: dir.to_path_buf(),
            fabric,
            replicas,
            operator,
            danger,
            apart,
            config,
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

    /// Where replica `i` is known to the cluster (its front, on loopback).
    pub fn url(&self, i: usize) -> String {
        self.fabric.url(i)
    }

    /// Where a client of replica `i` calls it: from the replica's own region, apart.
    pub fn client_url(&self, i: usize) -> String {
        let port = self
            .apart
            .as_ref()
            .and_then(|(regions, links)| links.port(&regions[i], i).ok());
        match port {
            Some(port) => format!("https://[::1]:{port}"),
            None => self.url(i),
        }
    }

    /// Replica `i`'s region, apart.
    pub fn region(&self, i: usize) -> Option<&str> {
        self.apart
            .as_ref()
            .and_then(|(regions, _)| regions.get(i))
            .map(String::as_str)
    }

    pub fn operator(&self) -> ClientTlsConfig {
        self.operator.clone()
    }

    /// TLS for `identity` (`user:alice`, `computer:COMP-1`), issued on first use.
    pub fn credentials(&self, identity: &str) -> Result<ClientTlsConfig, ChaosError> {
        let credentials = test_kit::cluster::credentials(&self.slapmaster, &self.dir, identity)
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
        Ok(credentials.tls_config())
    }

    fn command(&self, i: usize, verb: &str) -> Result<Command, ChaosError> {
        let replica = &self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .map_err(io("opening a replica log"))?;
        let mut command = self.fabric.command(i, &self.slapmaster);
        command
            .arg(verb)
            .args(["--id", &replica.id.to_string()])
            .args(["--listen", &self.fabric.listen(i)])
            .args(["--advertise", &self.url(i)])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .arg("--tls-dir")
            .arg(&replica.tls_dir)
            .args(
                self.config
                    .iter()
                    .flat_map(|path| [std::ffi::OsStr::new("--config"), path.as_os_str()]),
            )
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
        if let Fabric::Loopback(proxies) = &self.fabric {
            proxies.set_pid(i, Some(child.id()));
        }
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
        if let Fabric::Loopback(proxies) = &self.fabric {
            proxies.set_pid(i, None);
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

    /// Fills replica `i`'s disk (its tmpfs) with a ballast file until no byte is left.
    pub fn fill_disk(&self, i: usize) -> Result<u64, ChaosError> {
        use std::io::Write;
        let path = self.replicas[i].data_dir.join(BALLAST);
        let mut file = std::fs::File::create(&path).map_err(io("creating the ballast"))?;
        let block = vec![0xa5u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += u64::try_from(n).unwrap_or(0),
                // ENOSPC: full, which is the point.
                Err(_) => break,
            }
        }
        // A last few bytes may fit in a smaller write.
        while let Ok(n) = file.write(&block[..4096]) {
            if n == 0 {
                break;
            }
            written += u64::try_from(n).unwrap_or(0);
        }
        Ok(written)
    }

    /// Frees what [`Self::fill_disk`] took.
    pub fn free_disk(&self, i: usize) -> Result<(), ChaosError> {
        match std::fs::remove_file(self.replicas[i].data_dir.join(BALLAST)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ChaosError::Setup(format!("removing the ballast: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// Asks the cluster (through the other replicas in turn) to remove replica `i` from the
    /// membership. Err says why it could not.
    pub async fn remove_member(&self, i: usize) -> Result<(), String> {
        let id = self.replicas[i].id;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            for via in (0..self.len()).filter(|&j| j != i && self.is_running(j)) {
                let Some(mut admin) =
                    test_kit::cluster::admin(&self.url(via), &self.operator).await
                else {
                    continue;
                };
                let call = admin.remove_member(pb::RemoveMemberRequest { id });
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(_)) => return Ok(()),
                    // An earlier attempt did it, and its answer was lost (a timeout).
                    Ok(Err(status)) if status.message().contains("is not a member") => {
                        return Ok(());
                    }
                    Ok(Err(status)) => last = format!("{:?}: {}", status.code(), status.message()),
                    Err(_) => last = "timed out".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// Empties replica `i`'s data directory (it must be stopped).
    pub fn wipe(&self, i: usize) -> Result<(), ChaosError> {
        let dir = &self.replicas[i].data_dir;
        for entry in std::fs::read_dir(dir).map_err(io("listing a data directory"))? {
            let path = entry.map_err(io("listing a data directory"))?.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io("wiping a data directory"))?;
        }
        Ok(())
    }

    /// Starts replica `i` afresh and has it join through another running replica.
    pub fn rejoin(&mut self, i: usize) -> Result<(), ChaosError> {
        let via = (0..self.len())
            .find(|&j| j != i && self.is_running(j))
            .map(|j| self.url(j))
            .ok_or_else(|| ChaosError::Setup("no replica to join through".into()))?;
        self.spawn(i, "join", &["--via", &via])
    }

    /// The cluster status as replica `i` reports it, if it answers.
    pub async fn status(&self, i: usize) -> Option<pb::ClusterStatusReply> {
        test_kit::cluster::status(&self.url(i), &self.operator).await
    }

    /// Replica `i`'s own report, with its state digest when asked.
    pub async fn replica_status(&self, i: usize, digest: bool) -> Option<pb::ReplicaStatusReply> {
        test_kit::cluster::replica_status(&self.url(i), &self.operator, digest).await
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
            if self.fabric.has_disks() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.replicas[i].data_dir)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ChaosError {
    move |e| ChaosError::Setup(format!("{what}: {e}"))
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
