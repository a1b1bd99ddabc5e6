//! Process supervision, the role supervisord plays in SlapOS: each instance process runs in
//! its own process group, as the partition's user when the agent is root, with its output
//! appended to a log under the partition; it is restarted with exponential backoff when it
//! exits, and stopped with SIGTERM, then SIGKILL after a grace period.
//!
//! A pid file beside each log records the process group and its start time, so processes left
//! by an agent that was killed are found and stopped before new ones start: the agent keeps no
//! other state about them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use partitioning::Account;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A process restarted after running this long is considered to have worked: its backoff
/// starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A process as an instance wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The partition directory: its working directory and `HOME`.
    pub directory: PathBuf,
    /// Whom it runs as; `None` runs it as the agent's user (unprivileged mode).
    pub run_as: Option<Account>,
}

impl ProcessSpec {
    fn bookkeeping(&self) -> PathBuf {
        self.directory.join(".slapnode")
    }

    pub fn log_path(&self) -> PathBuf {
        self.bookkeeping()
            .join("log")
            .join(format!("{}.log", self.name))
    }

    fn pid_path(&self) -> PathBuf {
        self.bookkeeping()
            .join("run")
            .join(format!("{}.pid", self.name))
    }
}

struct Running {
    spec: ProcessSpec,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The process group of the current run; 0 between runs.
    group: Arc<AtomicU32>,
}

/// The processes of every partition. Each partition has one worker, so changes to one
/// partition never race; the lock is only held to look at or edit the map, never while a
/// process stops (a slow stop must not hold up the other partitions).
pub struct Supervisor {
    partitions: Mutex<HashMap<String, BTreeMap<String, Running>>>,
    grace: Duration,
}

impl Supervisor {
    pub fn new(grace: Duration) -> Self {
        Self {
            partitions: Mutex::new(HashMap::new()),
            grace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, Running>>> {
        // Every edit is one insert or remove: a panic elsewhere cannot leave the map torn.
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `partition` run exactly `specs`: starts the missing, restarts the changed, stops
    /// the others. A process already running with the same spec is left alone.
    pub async fn ensure(&self, partition: &str, specs: Vec<ProcessSpec>) {
        let wanted: BTreeMap<String, ProcessSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let outdated: Vec<Running> = {
            let mut partitions = self.lock();
            let running = partitions.entry(partition.to_owned()).or_default();
            let names: Vec<String> = running
                .iter()
                .filter(|(name, r)| wanted.get(*name) != Some(&r.spec))
                .map(|(name, _)| name.clone())
                .collect();
            names
                .iter()
                .filter_map(|name| running.remove(name))
                .collect()
        };
        for old in outdated {
            old.stop().await;
        }
        let mut partitions = self.lock();
        let running = partitions.entry(partition.to_owned()).or_default();
        for (name, spec) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let group = Arc::new(AtomicU32::new(0));
            let task = tokio::spawn(supervise(spec.clone(), stopped, group.clone(), self.grace));
            running.insert(
                name,
                Running {
                    spec,
                    stop,
                    task,
                    group,
                },
            );
        }
    }

    /// Stops every process of `partition`, and any a previous agent left there.
    pub async fn stop_partition(&self, partition: &str, directory: &Path) {
        let running = self.lock().remove(partition);
        for (_, process) in running.unwrap_or_default() {
            process.stop().await;
        }
        stop_leftovers(directory);
    }

    pub async fn stop_all(&self) {
        let all: Vec<_> = self.lock().drain().collect();
        for (_, processes) in all {
            for (_, process) in processes {
                process.stop().await;
            }
        }
    }

    /// The process groups currently running for `partition`.
    pub fn groups(&self, partition: &str) -> Vec<u32> {
        self.lock()
            .get(partition)
            .map(|processes| {
                processes
                    .values()
                    .map(|p| p.group.load(Ordering::Acquire))
                    .filter(|&g| g != 0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any process of `partition` is supervised (running or waiting to restart).
    pub fn supervises(&self, partition: &str) -> bool {
        self.lock()
            .get(partition)
            .is_some_and(|processes| !processes.is_empty())
    }
}

impl Running {
    async fn stop(self) {
        // The task ends on this signal (or already ended if its sender is the only one left).
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(process = %self.spec.name, "supervision task failed: {e}");
        }
    }
}

async fn supervise(
    spec: ProcessSpec,
    mut stop: watch::Receiver<bool>,
    group: Arc<AtomicU32>,
    grace: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        stop_leftover(&spec.pid_path());
        let started = Instant::now();
        match spawn(&spec) {
            Ok(mut child) => {
                let Some(pgid) = child.id() else {
                    return;
                };
                group.store(pgid, Ordering::Release);
                if let Err(e) = write_pid_file(&spec.pid_path(), pgid) {
                    tracing::warn!(process = %spec.name, "cannot record pid {pgid}: {e}");
                }
                tracing::info!(process = %spec.name, pid = pgid, "started");
                tokio::select! {
                    status = child.wait() => {
                        tracing::warn!(process = %spec.name, "exited: {}", describe(status));
                        // Its children go with it: a restart must not pile up orphans.
                        signal_group(pgid, Signal::SIGKILL);
                    }
                    _ = stop.changed() => {
                        terminate(&mut child, pgid, grace).await;
                        group.store(0, Ordering::Release);
                        remove_pid_file(&spec.pid_path());
                        return;
                    }
                }
                group.store(0, Ordering::Release);
                remove_pid_file(&spec.pid_path());
            }
            Err(e) => tracing::warn!(process = %spec.name, "cannot start: {e}"),
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<tokio::process::Child> {
    let log_path = spec.log_path();
    for dir in [log_path.parent(), spec.pid_path().parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&spec.directory)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &spec.directory)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: stopping it reaches every process it started.
        .process_group(0);
    if let Some(account) = spec.run_as {
        command.uid(account.uid).gid(account.gid);
    }
    command.spawn()
}

async fn terminate(child: &mut tokio::process::Child, pgid: u32, grace: Duration) {
    signal_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pid = pgid, "still running {grace:?} after SIGTERM; killing");
    }
    signal_group(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

fn signal_group(pgid: u32, signal: Signal) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    // ESRCH: the group is already gone, which is what we want.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`): with the
/// pid, it names one process even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the
    // last ')'. The first one after it is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let started = start_time(pid).unwrap_or(0);
    std::fs::write(path, format!("{pid} {started}\n"))
}

fn remove_pid_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Kills the process group a pid file names if that very process still runs.
fn stop_leftover(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    if let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next())
        && let Ok(pid) = u32::try_from(pid)
        && start_time(pid) == Some(started)
    {
        tracing::warn!(pid, "stopping a process a previous agent left running");
        signal_group(pid, Signal::SIGKILL);
    }
    remove_pid_file(pid_file);
}

/// Every leftover named by a pid file of the partition.
fn stop_leftovers(directory: &Path) {
    let run = directory.join(".slapnode").join("run");
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for entry in entries.flatten() {
        stop_leftover(&entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_start_time() {
        let me = std::process::id();
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX), None);
    }
}
