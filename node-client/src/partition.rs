//! One computer partition, converged to what the master asks of it.
//!
//! [`decide`] is the promise logic without IO: given the partition as the master shows it and
//! what this agent last did, process it or not. An instance is processed when it changed (its
//! timestamp, requested state or hosted shared instances), when the last attempt failed and
//! its backoff is over, or once per reprocess interval. [`Partition::converge`] does the work:
//! files rendered from the release's manifest, processes supervised, the promise checked,
//! connection parameters published, the state reported; on `destroyed`, processes stopped,
//! the directory wiped and the partition reported free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use partitioning::Account;
use slapcluster_api::v1 as pb;
use tokio::io::AsyncWriteExt;

use crate::manifest::{
    InstanceTemplate, ManifestError, RenderedFile, RenderedInstance, RenderedPromise,
};
use crate::master::Master;
use crate::replicas::CallError;
use crate::software::{self, Runner, SoftwareError};
use crate::supervisor::{ProcessSpec, Supervisor};
use crate::template::Variables;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often a failing promise is run again while it has time left.
const PROMISE_INTERVAL: Duration = Duration::from_millis(250);
/// How much of a promise's output goes into the error reported to the master.
const PROMISE_OUTPUT: usize = 2048;

/// What identifies the work an instance asks for: the same key, the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    guid: String,
    timestamp: u64,
    requested_state: i32,
    /// Hosted shared instances, by guid and timestamp.
    shared: Vec<(String, u64)>,
}

impl Key {
    pub fn of(instance: &pb::Instance, shared: &[pb::Instance]) -> Self {
        Self {
            guid: instance.guid.clone(),
            timestamp: instance.timestamp,
            requested_state: instance.requested_state,
            shared: shared
                .iter()
                .map(|s| (s.guid.clone(), s.timestamp))
                .collect(),
        }
    }
}

/// What this agent last did to a partition.
#[derive(Debug, Clone)]
pub struct Processed {
    pub key: Key,
    pub at: Instant,
    /// Consecutive failures for this key; 0 after a success.
    pub failures: u32,
}

impl Processed {
    /// When the partition should be looked at again without a change from the master.
    pub fn next(&self, reprocess: Duration) -> Instant {
        if self.failures == 0 {
            self.at + reprocess
        } else {
            self.at + retry_delay(self.failures)
        }
    }
}

pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until the master changes something or `until`.
    Wait(Option<Instant>),
    Converge,
    /// No instance, but the directory or processes hold something: clear them.
    Clean,
}

/// Whether to process the partition now.
pub fn decide(
    partition: &pb::ComputerPartition,
    last: Option<&Processed>,
    dirty: bool,
    now: Instant,
    reprocess: Duration,
) -> Decision {
    let Some(instance) = &partition.instance else {
        return if dirty {
            Decision::Clean
        } else {
            Decision::Wait(None)
        };
    };
    let key = Key::of(instance, &partition.shared_instances);
    match last {
        Some(last) if last.key == key => {
            let next = last.next(reprocess);
            if now >= next {
                Decision::Converge
            } else {
                Decision::Wait(Some(next))
            }
        }
        _ => Decision::Converge,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Software(#[from] SoftwareError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no account for partition user {user}: {reason}")]
    User { user: String, reason: String },
    #[error("promise {command} did not hold within {timeout:?}: {output}{logs}")]
    Promise {
        command: String,
        timeout: Duration,
        output: String,
        /// The end of each process's log, for whoever reads the error.
        logs: String,
    },
    #[error("the master did not take the report: {0}")]
    Master(#[from] CallError),
}

impl PartitionError {
    /// Failures of the agent's own link to the master are not the instance's errors: they
    /// are retried, not reported (the report could not reach the master anyway). Nor is
    /// software still being installed: the partition waits for it.
    pub fn is_instance_error(&self) -> bool {
        !matches!(
            self,
            Self::Master(_) | Self::Software(SoftwareError::NotInstalled { .. })
        )
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PartitionError {
    let path = path.to_path_buf();
    move |source| PartitionError::Io { what, path, source }
}

/// What converging a partition needs from the agent.
pub struct Partition {
    pub master: Arc<Master>,
    pub supervisor: Arc<Supervisor>,
    pub runner: Arc<dyn Runner>,
    pub software_root: PathBuf,
    /// Whether instances run as their partition's user (system mode, as root).
    pub as_partition_user: bool,
}

impl Partition {
    /// Converges one partition with an instance. Reports are sent only where the master's view
    /// differs, so processing again is harmless.
    pub async fn converge(&self, view: &pb::ComputerPartition) -> Result<(), PartitionError> {
        let Some(instance) = &view.instance else {
            return Ok(());
        };
        let directory = PathBuf::from(&view.path);
        match pb::RequestedState::try_from(instance.requested_state) {
            Ok(pb::RequestedState::Destroyed) => {
                self.supervisor
                    .stop_partition(&view.reference, &directory)
                    .await;
                wipe(&directory).await?;
                if instance.reported_state != i32::from(pb::ReportedState::Destroyed) {
                    self.master
                        .report_instance(
                            &view.reference,
                            "",
                            Some(pb::ReportedState::Destroyed),
                            String::new(),
                        )
                        .await?;
                }
                Ok(())
            }
            Ok(pb::RequestedState::Stopped) => {
                // Stopped first: a stop must hold even when the files cannot be rendered.
                self.supervisor
                    .stop_partition(&view.reference, &directory)
                    .await;
                self.render(view, instance).await?;
                self.report(view, instance, pb::ReportedState::Stopped)
                    .await
            }
            _ => self.start(view, instance).await,
        }
    }

    /// Clears a partition the master shows free.
    pub async fn clean(&self, view: &pb::ComputerPartition) -> Result<(), PartitionError> {
        let directory = PathBuf::from(&view.path);
        self.supervisor
            .stop_partition(&view.reference, &directory)
            .await;
        wipe(&directory).await
    }

    async fn start(
        &self,
        view: &pb::ComputerPartition,
        instance: &pb::Instance,
    ) -> Result<(), PartitionError> {
        let Rendered {
            template,
            variables,
            instance: rendered,
            run_as,
        } = self.render(view, instance).await?;
        let directory = PathBuf::from(&view.path);
        let specs: Vec<ProcessSpec> = rendered
            .processes
            .into_iter()
            .map(|p| ProcessSpec {
                name: p.name,
                command: p.command,
                env: p.env,
                directory: directory.clone(),
                run_as,
            })
            .collect();
        let logs: Vec<PathBuf> = specs.iter().map(ProcessSpec::log_path).collect();
        self.supervisor.ensure(&view.reference, specs).await;
        if let Some(promise) = &rendered.promise {
            check_promise(promise, &directory, run_as)
                .await
                .map_err(|e| with_logs(e, &logs))?;
        }
        let mut connection = rendered.connection;
        for (name, path) in &rendered.connection_files {
            let value = read_connection_file(&directory, path, run_as).await?;
            connection.insert(name.clone(), value);
        }
        if connection != connection_of(instance) {
            self.master.publish(&view.reference, "", connection).await?;
        }
        for shared in &view.shared_instances {
            let mut shared_variables = variables.clone();
            shared_variables.insert("shared.reference".into(), shared.shared_reference.clone());
            shared_variables.insert("shared.title".into(), shared.title.clone());
            shared_variables.insert("shared.guid".into(), shared.guid.clone());
            for (k, v) in &shared.parameters {
                shared_variables.insert(format!("shared.parameter.{k}"), v.clone());
            }
            let connection = template.render_shared(&shared_variables)?;
            if connection != connection_of(shared) {
                self.master
                    .publish(&view.reference, &shared.shared_reference, connection)
                    .await?;
            }
            if shared.reported_state != i32::from(pb::ReportedState::Started) {
                self.master
                    .report_instance(
                        &view.reference,
                        &shared.shared_reference,
                        Some(pb::ReportedState::Started),
                        String::new(),
                    )
                    .await?;
            }
        }
        self.report(view, instance, pb::ReportedState::Started)
            .await
    }

    async fn report(
        &self,
        view: &pb::ComputerPartition,
        instance: &pb::Instance,
        state: pb::ReportedState,
    ) -> Result<(), PartitionError> {
        if instance.reported_state != i32::from(state) || !instance.last_error.is_empty() {
            self.master
                .report_instance(&view.reference, "", Some(state), String::new())
                .await?;
        }
        Ok(())
    }

    /// Reports an instance's error unless the master already shows exactly it.
    pub async fn report_error(
        &self,
        view: &pb::ComputerPartition,
        error: &PartitionError,
    ) -> Result<(), CallError> {
        let message = error.to_string();
        let already = view
            .instance
            .as_ref()
            .is_some_and(|i| i.last_error == message);
        if already {
            return Ok(());
        }
        self.master
            .report_instance(&view.reference, "", None, message)
            .await
    }

    /// Writes the instance's files.
    async fn render(
        &self,
        view: &pb::ComputerPartition,
        instance: &pb::Instance,
    ) -> Result<Rendered, PartitionError> {
        let software_dir = software::software_dir(&self.software_root, &instance.software_release);
        if !software::is_installed(&software_dir) {
            return Err(SoftwareError::NotInstalled {
                url: instance.software_release.clone(),
            }
            .into());
        }
        let manifest = self.runner.manifest(&software_dir)?;
        let template = manifest.instance(&instance.software_type)?.clone();
        let variables = variables(&self.master.computer, view, instance, &software_dir);
        let rendered = template.render(&variables)?;
        let run_as = if self.as_partition_user {
            Some(account(&view.user).await?)
        } else {
            None
        };
        let directory = PathBuf::from(&view.path);
        for file in &rendered.files {
            write_file(&directory, file, run_as).await?;
        }
        Ok(Rendered {
            template,
            variables,
            instance: rendered,
            run_as,
        })
    }
}

/// An instance's files written, and what starting it needs.
struct Rendered {
    template: InstanceTemplate,
    variables: Variables,
    instance: RenderedInstance,
    run_as: Option<Account>,
}

/// The variables a manifest's templates may use (`MANIFEST.md` lists them).
pub fn variables(
    computer: &str,
    view: &pb::ComputerPartition,
    instance: &pb::Instance,
    software_dir: &Path,
) -> Variables {
    let ipv6 = view.addresses.iter().find(|a| a.addr.contains(':'));
    let ipv4 = view.addresses.iter().find(|a| a.addr.contains('.'));
    let requested = pb::RequestedState::try_from(instance.requested_state)
        .map(|s| match s {
            pb::RequestedState::Stopped => "stopped",
            pb::RequestedState::Destroyed => "destroyed",
            _ => "started",
        })
        .unwrap_or("started");
    let mut vars: Variables = [
        ("computer.id", computer),
        ("partition.reference", &view.reference),
        ("partition.path", &view.path),
        ("partition.tap", &view.tap),
        ("partition.user", &view.user),
        ("partition.ipv6", ipv6.map_or("", |a| a.addr.as_str())),
        ("partition.ipv4", ipv4.map_or("", |a| a.addr.as_str())),
        ("instance.guid", &instance.guid),
        ("instance.title", &instance.title),
        ("instance.root_title", &instance.root_title),
        ("instance.software_type", &instance.software_type),
        ("instance.requested_state", requested),
        ("software.url", &instance.software_release),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert("software.path".into(), software_dir.display().to_string());
    for (k, v) in &instance.parameters {
        vars.insert(format!("parameter.{k}"), v.clone());
    }
    vars
}

async fn account(user: &str) -> Result<Account, PartitionError> {
    let name = user.to_owned();
    let found = tokio::task::spawn_blocking(move || partitioning::system::account(&name)).await;
    match found {
        Ok(Ok(account)) => Ok(account),
        Ok(Err(e)) => Err(PartitionError::User {
            user: user.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) => Err(PartitionError::User {
            user: user.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Writes a rendered file. As root it is written by a shell running as the partition's user,
/// so a symbolic link the instance planted cannot make the agent write outside the partition.
async fn write_file(
    directory: &Path,
    file: &RenderedFile,
    run_as: Option<Account>,
) -> Result<(), PartitionError> {
    let path = directory.join(&file.path);
    let mode = format!("{:o}", file.mode);
    let Some(account) = run_as else {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io("creating", parent))?;
        }
        tokio::fs::write(&path, &file.contents)
            .await
            .map_err(io("writing", &path))?;
        use std::os::unix::fs::PermissionsExt;
        return tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .await
            .map_err(io("setting the mode of", &path));
    };
    let mut child = tokio::process::Command::new("sh")
        .args([
            "-c",
            r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1""#,
            "sh",
        ])
        .arg(&path)
        .arg(&mode)
        .current_dir(directory)
        .uid(account.uid)
        .gid(account.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("writing", &path))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(file.contents.as_bytes())
            .await
            .map_err(io("writing", &path))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(io("writing", &path))?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(PartitionError::Io {
            what: "writing",
            path,
            source: std::io::Error::other(reason),
        });
    }
    Ok(())
}

/// The most a connection file may hold: connection parameters are for addresses, keys and
/// certificate requests, not data.
const MAX_CONNECTION_FILE: u64 = 64 * 1024;

/// Reads a file the instance wrote, for a connection parameter. As root it is read by a
/// process running as the partition's user, so a symbolic link the instance planted cannot
/// make the agent publish a file the instance may not read itself.
async fn read_connection_file(
    directory: &Path,
    file: &Path,
    run_as: Option<Account>,
) -> Result<String, PartitionError> {
    let path = directory.join(file);
    let bytes = match run_as {
        None => {
            use tokio::io::AsyncReadExt;
            let opened = tokio::fs::File::open(&path)
                .await
                .map_err(io("reading", &path))?;
            let mut bytes = Vec::new();
            opened
                .take(MAX_CONNECTION_FILE + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(io("reading", &path))?;
            bytes
        }
        Some(account) => {
            let output = tokio::process::Command::new("head")
                .arg("-c")
                .arg((MAX_CONNECTION_FILE + 1).to_string())
                .arg("--")
                .arg(&path)
                .current_dir(directory)
                .uid(account.uid)
                .gid(account.gid)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(io("reading", &path))?;
            if !output.status.success() {
                let reason = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                return Err(io("reading", &path)(std::io::Error::other(reason)));
            }
            output.stdout
        }
    };
    if bytes.len() as u64 > MAX_CONNECTION_FILE {
        return Err(io("reading", &path)(std::io::Error::other(format!(
            "larger than {MAX_CONNECTION_FILE} bytes, the most a connection parameter holds"
        ))));
    }
    String::from_utf8(bytes).map_err(|_| {
        io("reading", &path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// Runs the promise until it holds or its time is up.
async fn check_promise(
    promise: &RenderedPromise,
    directory: &Path,
    run_as: Option<Account>,
) -> Result<(), PartitionError> {
    let deadline = Instant::now() + promise.timeout;
    let (program, args) = promise
        .command
        .split_first()
        .ok_or_else(|| PartitionError::Promise {
            command: String::new(),
            timeout: promise.timeout,
            output: "empty command".into(),
            logs: String::new(),
        })?;
    loop {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(directory)
            .env("HOME", directory)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(account) = run_as {
            command.uid(account.uid).gid(account.gid);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let output = match tokio::time::timeout(remaining, command.output()).await {
            Ok(Ok(output)) if output.status.success() => return Ok(()),
            Ok(Ok(output)) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                format!("{}: {}", output.status, tail_of(&text))
            }
            Ok(Err(e)) => format!("cannot run: {e}"),
            Err(_) => "still running".to_owned(),
        };
        if Instant::now() + PROMISE_INTERVAL >= deadline {
            return Err(PartitionError::Promise {
                command: promise.command.join(" "),
                timeout: promise.timeout,
                output,
                logs: String::new(),
            });
        }
        tokio::time::sleep(PROMISE_INTERVAL).await;
    }
}

/// Adds the end of each process log to a promise failure.
fn with_logs(error: PartitionError, logs: &[PathBuf]) -> PartitionError {
    let PartitionError::Promise {
        command,
        timeout,
        output,
        ..
    } = error
    else {
        return error;
    };
    let logs = logs
        .iter()
        .map(|path| {
            let log = software::tail(path);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            format!("\n--- {name}:\n{}", tail_of(&log))
        })
        .collect();
    PartitionError::Promise {
        command,
        timeout,
        output,
        logs,
    }
}

fn tail_of(text: &str) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(PROMISE_OUTPUT);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Empties a partition directory, keeping the directory itself (format owns it).
pub async fn wipe(directory: &Path) -> Result<(), PartitionError> {
    let directory = directory.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> Result<(), PartitionError> {
        let entries = match std::fs::read_dir(&directory) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other.map_err(io("listing", &directory))?,
        };
        for entry in entries {
            let entry = entry.map_err(io("listing", &directory))?;
            let path = entry.path();
            // `remove_dir_all` does not follow symbolic links out of the partition.
            let kind = entry.file_type().map_err(io("reading", &path))?;
            if kind.is_dir() {
                std::fs::remove_dir_all(&path).map_err(io("removing", &path))?;
            } else {
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
            }
        }
        Ok(())
    })
    .await;
    result.unwrap_or_else(|e| {
        Err(PartitionError::Io {
            what: "wiping",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Whether a free partition still holds anything.
pub fn is_dirty(directory: &Path) -> bool {
    std::fs::read_dir(directory).is_ok_and(|mut entries| entries.next().is_some())
}

/// The master's connection map, as published (a `BTreeMap` for comparison).
pub fn connection_of(instance: &pb::Instance) -> BTreeMap<String, String> {
    instance.connection.clone().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_files_are_read_whole_as_text_and_bounded() -> anyhow::Result<()> {
        let partition = tempfile::tempdir()?;
        std::fs::create_dir(partition.path().join("etc"))?;
        std::fs::write(partition.path().join("etc/req.pem"), "-----BEGIN\nabc\n")?;
        let read = read_connection_file(partition.path(), Path::new("etc/req.pem"), None).await?;
        assert_eq!(read, "-----BEGIN\nabc\n");

        let missing = read_connection_file(partition.path(), Path::new("etc/none"), None).await;
        assert!(
            matches!(missing, Err(PartitionError::Io { .. })),
            "{missing:?}"
        );
        std::fs::write(partition.path().join("big"), vec![b'a'; 64 * 1024 + 1])?;
        let big = read_connection_file(partition.path(), Path::new("big"), None).await;
        assert!(
            format!("{big:?}").contains("larger than 65536 bytes"),
            "{big:?}"
        );
        std::fs::write(partition.path().join("bin"), [0xff, 0xfe])?;
        let binary = read_connection_file(partition.path(), Path::new("bin"), None).await;
        assert!(format!("{binary:?}").contains("not UTF-8"), "{binary:?}");
        Ok(())
    }

    fn partition(timestamp: u64, requested: pb::RequestedState) -> pb::ComputerPartition {
        pb::ComputerPartition {
            reference: "slappart0".into(),
            instance: Some(pb::Instance {
                guid: "SOFTINST-1".into(),
                timestamp,
                requested_state: requested.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn processes_only_what_changed_failed_or_aged() {
        let day = Duration::from_secs(86_400);
        let now = Instant::now();
        let view = partition(10, pb::RequestedState::Started);
        assert_eq!(decide(&view, None, false, now, day), Decision::Converge);

        let Some(instance) = &view.instance else {
            return;
        };
        let done = Processed {
            key: Key::of(instance, &[]),
            at: now,
            failures: 0,
        };
        assert_eq!(
            decide(&view, Some(&done), false, now, day),
            Decision::Wait(Some(now + day))
        );
        assert_eq!(
            decide(&view, Some(&done), false, now + day, day),
            Decision::Converge
        );

        let newer = partition(11, pb::RequestedState::Started);
        assert_eq!(
            decide(&newer, Some(&done), false, now, day),
            Decision::Converge
        );
        let stopped = partition(10, pb::RequestedState::Stopped);
        assert_eq!(
            decide(&stopped, Some(&done), false, now, day),
            Decision::Converge
        );

        let failed = Processed {
            failures: 3,
            ..done
        };
        assert_eq!(
            decide(&view, Some(&failed), false, now, day),
            Decision::Wait(Some(now + Duration::from_secs(4)))
        );
    }

    #[test]
    fn a_free_partition_is_cleaned_only_when_it_holds_something() {
        let free = pb::ComputerPartition::default();
        let now = Instant::now();
        let day = Duration::from_secs(86_400);
        assert_eq!(decide(&free, None, false, now, day), Decision::Wait(None));
        assert_eq!(decide(&free, None, true, now, day), Decision::Clean);
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(40), MAX_RETRY);
    }
}
