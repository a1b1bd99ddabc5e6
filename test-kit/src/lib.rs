//! test-kit: what the workspace's tests (and its load tools) share, so that no crate
//! dev-depends on another's tools:
//!
//! - [`cluster`]: a cluster of real `slapmaster` processes over TLS, its credentials, free
//!   ports, [`cluster::wait_for`], and the binaries under test;
//! - [`browser`]: headless Chromium over the DevTools protocol, presenting a person's client
//!   certificate (the web panel's test);
//! - `in_process` (feature `in-process`, master-cluster's tests only): replicas in the test's
//!   own process, reached into while they serve;
//! - [`init_tracing`]: a test's logs, in its captured output;
//! - [`is_root`], and [`namespaced`]: a test run again inside fresh namespaces (system mode);
//! - [`distance`]: regions apart in user space, a region map and delay links (issue 22);
//! - [`fronts`]: a user-space front door per replica that puts distance and partitions
//!   between replicas (the load tool's regions; the chaos suite without root);
//! - [`http`]: a minimal HTTP/1.1 GET for operations listeners;
//! - [`rng`]: a seeded generator, so that a random run replays from its printed seed;
//! - [`slap`]: a minimal SLAP client (HTTPS with client certificates, or plain HTTP);
//! - [`skip!`]: the one way a test says it cannot run on this machine.
//!
//! `publish = false`: a dev-dependency of the server and agent crates, and a dependency of
//! `ops` (`slapload` drives the same clusters).
//!
//! A skip is never silent. Unless the caller allowed skips (`SLAPCLUSTER_ALLOW_SKIPS=1`, for a
//! developer without root or without the system tools `./.ci/setup` installs), the test fails,
//! naming what it needs; when allowed, the skip is printed and recorded in the file named by
//! `SLAPCLUSTER_SKIP_LOG`, which `./verify` lists at the end of every run. CI never allows them.

use std::io::Write;

pub mod browser;
pub mod cluster;
pub mod distance;
pub mod fronts;
pub mod http;
#[cfg(feature = "in-process")]
pub mod in_process;
pub mod namespaced;
pub mod rng;
pub mod slap;

use slapcluster_api::client::ClientError;

/// Why the harness could not do what it was asked (start a cluster, reach a replica, ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Cluster(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Client(status.into())
    }
}

/// Logs of a test, into its captured output: `RUST_LOG` if set, else `default` (say
/// `"replicas=info,master_cluster=info,openraft=warn"`). Only the first call of a test binary
/// installs it.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Whether this process runs as root (namespaces, mounts, nftables and tmpfs need it; CI
/// does).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// Set to `1` to let tests skip what this machine cannot run (they are then listed).
pub const ALLOW_SKIPS: &str = "SLAPCLUSTER_ALLOW_SKIPS";
/// A file each allowed skip appends one line to: `crate test: reason`.
pub const SKIP_LOG: &str = "SLAPCLUSTER_SKIP_LOG";

/// Declares that the calling test cannot check what it is for on this machine, and why.
/// Fails the test unless skips are allowed; when they are, returns and the test should stop
/// (or go on with what it can still check, saying so in the reason).
///
/// ```text
/// if !is_root() {
///     test_kit::skip!("mounting a tmpfs needs root");
///     return;
/// }
/// ```
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {
        $crate::skip_test(
            env!("CARGO_PKG_NAME"),
            module_path!(),
            &format!($($reason)+),
        )
    };
}

/// What [`skip!`] expands to. `module` is the test target's module path; the test's name is
/// its thread's (libtest names each test's thread after it).
#[track_caller]
pub fn skip_test(package: &str, module: &str, reason: &str) {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => format!("{module}::{name}"),
        _ => module.to_string(),
    };
    let line = format!("{package} {test}: {reason}");
    if std::env::var(ALLOW_SKIPS).as_deref() != Ok("1") {
        panic!(
            "{line}\nthis test cannot run here and skips are not allowed: run the tests as \
             root through ./verify (it installs what they need), or set {ALLOW_SKIPS}=1 to \
             skip it, listed"
        );
    }
    eprintln!("SKIPPED {line}");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        // One write per line with O_APPEND: tests running in parallel do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("{line}\ncould not record the skip in {log:?}: {e}");
        }
    }
}
