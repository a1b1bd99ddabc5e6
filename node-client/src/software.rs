//! Installing software releases. A release URL is installed once into
//! `software_root/<hash of the URL>` and marked complete only when every step succeeded; a
//! directory without the mark is an interrupted or failed install, wiped and started over.
//!
//! The [`Runner`] trait keeps the install and instance steps pluggable: [`ManifestRunner`]
//! reads a manifest (TOML, `MANIFEST.md`); a buildout runner would implement the same trait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use crate::manifest::{Manifest, ManifestError};

/// Marks a complete install; holds the URL it came from.
const COMPLETED: &str = ".slapnode-completed";
/// The manifest as installed: instances follow it, not whatever the URL serves later.
const INSTALLED_MANIFEST: &str = ".slapnode-manifest.toml";
const INSTALL_LOG: &str = ".slapnode-install.log";
/// How much of a failed step's output goes into the error reported to the master.
const ERROR_LOG_TAIL: usize = 4096;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum SoftwareError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("install step {step} ({command}) failed: {status}\n{log}")]
    Step {
        step: usize,
        command: String,
        status: String,
        log: String,
    },
    #[error("software release {url} is not installed here yet")]
    NotInstalled { url: String },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SoftwareError {
    let path = path.to_path_buf();
    move |source| SoftwareError::Io { what, path, source }
}

/// How software releases are installed, and what their instances are.
pub trait Runner: Send + Sync {
    /// Installs `url` into the empty directory `dir`.
    fn install<'a>(
        &'a self,
        url: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<(), SoftwareError>>;
    /// The manifest an installed release's instances follow.
    fn manifest(&self, dir: &Path) -> Result<Manifest, SoftwareError>;
}

/// The directory a release URL installs into: the first 32 hex digits of the URL's SHA-256.
pub fn software_dir(root: &Path, url: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join(hex)
}

pub fn is_installed(dir: &Path) -> bool {
    dir.join(COMPLETED).is_file()
}

/// Installs `url` unless it already is: wipes a partial install, runs the runner, marks it
/// complete. Returns the directory.
pub async fn install(
    runner: &dyn Runner,
    root: &Path,
    url: &str,
) -> Result<PathBuf, SoftwareError> {
    let dir = software_dir(root, url);
    if is_installed(&dir) {
        return Ok(dir);
    }
    if dir.exists() {
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(io("removing the partial install", &dir))?;
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("creating", &dir))?;
    runner.install(url, &dir).await?;
    let mark = dir.join(COMPLETED);
    tokio::fs::write(&mark, format!("{url}\n"))
        .await
        .map_err(io("marking complete", &mark))?;
    Ok(dir)
}

/// Removes an installed release (the master said `destroyed`).
pub async fn remove(root: &Path, url: &str) -> Result<(), SoftwareError> {
    let dir = software_dir(root, url);
    match tokio::fs::remove_dir_all(&dir).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io("removing", &dir)),
    }
}

/// The built-in runner: the URL names a manifest (`file:///path/release.toml` or an absolute
/// path); its install steps run in the software directory with `SOFTWARE_DIR`,
/// `SOFTWARE_URL` and `MANIFEST_DIR` (the manifest's own directory, for files shipped beside
/// it) in their environment.
#[derive(Debug, Default)]
pub struct ManifestRunner;

impl ManifestRunner {
    fn source(url: &str) -> Result<PathBuf, SoftwareError> {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(SoftwareError::Fetch {
                url: url.to_owned(),
                reason: "this runner reads file:// URLs and absolute paths".into(),
            });
        }
        Ok(path)
    }

    async fn run_steps(&self, url: &str, dir: &Path) -> Result<(), SoftwareError> {
        let source = Self::source(url)?;
        let text = tokio::fs::read_to_string(&source)
            .await
            .map_err(|e| SoftwareError::Fetch {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let manifest = Manifest::parse(&text)?;
        let installed = dir.join(INSTALLED_MANIFEST);
        tokio::fs::write(&installed, &text)
            .await
            .map_err(io("writing", &installed))?;
        let log_path = dir.join(INSTALL_LOG);
        let manifest_dir = source.parent().unwrap_or(Path::new("/"));
        for (step, install) in manifest.install.iter().enumerate() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io("opening", &log_path))?;
            let (program, args) = install
                .run
                .split_first()
                .ok_or_else(|| SoftwareError::Step {
                    step,
                    command: String::new(),
                    status: "empty command".into(),
                    log: String::new(),
                })?;
            let child = tokio::process::Command::new(program)
                .args(args)
                .current_dir(dir)
                .env("SOFTWARE_DIR", dir)
                .env("SOFTWARE_URL", url)
                .env("MANIFEST_DIR", manifest_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("opening", &log_path))?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn();
            let command = install.run.join(" ");
            let failed = |status: String| SoftwareError::Step {
                step,
                command: command.clone(),
                status,
                log: tail(&log_path),
            };
            let mut child = child.map_err(|e| failed(format!("cannot start: {e}")))?;
            let timeout = Duration::from_secs(install.timeout_s);
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => return Err(failed(status.to_string())),
                Ok(Err(e)) => return Err(failed(format!("cannot wait: {e}"))),
                Err(_) => return Err(failed(format!("still running after {timeout:?}"))),
            }
        }
        Ok(())
    }
}

impl Runner for ManifestRunner {
    fn install<'a>(
        &'a self,
        url: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<(), SoftwareError>> {
        Box::pin(self.run_steps(url, dir))
    }

    fn manifest(&self, dir: &Path) -> Result<Manifest, SoftwareError> {
        let path = dir.join(INSTALLED_MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
        Ok(Manifest::parse(&text)?)
    }
}

/// The end of a log, for an error report.
pub fn tail(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(ERROR_LOG_TAIL);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, name: &str, steps: &str) -> std::io::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, format!("format = 1\n{steps}"))?;
        Ok(format!("file://{}", path.display()))
    }

    #[tokio::test]
    async fn installs_once_and_only_marks_success() -> anyhow::Result<()> {
        let scratch = tempfile::tempdir()?;
        let root = scratch.path().join("software");
        let url = manifest(
            scratch.path(),
            "release.toml",
            "[[install]]\nrun = [\"sh\", \"-c\", \"echo built >> $MANIFEST_DIR/count; touch done\"]\n",
        )?;
        let dir = install(&ManifestRunner, &root, &url).await?;
        assert!(dir.join("done").exists() && is_installed(&dir));
        install(&ManifestRunner, &root, &url).await?;
        let count = std::fs::read_to_string(scratch.path().join("count"))?;
        assert_eq!(count.lines().count(), 1, "the steps ran once");
        assert!(ManifestRunner.manifest(&dir).is_ok());

        let broken = manifest(
            scratch.path(),
            "broken.toml",
            "[[install]]\nrun = [\"sh\", \"-c\", \"echo compiling; echo no compiler >&2; exit 3\"]\n",
        )?;
        let error = install(&ManifestRunner, &root, &broken)
            .await
            .map(|_| ())
            .expect_err("a failing step fails the install");
        let message = error.to_string();
        assert!(
            message.contains("exit status: 3") && message.contains("no compiler"),
            "{message}"
        );
        assert!(!is_installed(&software_dir(&root, &broken)));
        Ok(())
    }
}
