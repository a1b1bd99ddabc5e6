//! Runs a test again, as a child process, inside fresh mount and network namespaces with a
//! private copy of /etc bind-mounted over the real one: users, addresses and tap devices it
//! makes are real and vanish with the namespaces. For the system-mode tests of partitioning,
//! node-client, master-cluster (the real SlapOS client) and chaos-tests (self-hosting); needs
//! root ([`crate::is_root`]).

use std::ffi::OsStr;
use std::process::Command;

use crate::Error;

/// Runs this test binary's test `test` in the namespaces with `marker` set in its environment
/// (the test checks for it to know it is the child). Returns whether it passed, and its output.
pub fn rerun(test: &str, marker: &str, value: &OsStr) -> Result<(bool, String), Error> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("making a scratch directory", e))?;
    // unshare makes mounts private by default, so the bind mount stays in the namespace; sysfs
    // is mounted again to show the new network namespace's interfaces.
    let script = r#"set -e
        cp -a /etc "$ETC_COPY"
        mount --bind "$ETC_COPY" /etc
        mount -t sysfs sysfs /sys
        ip link set lo up
        exec "$@""#;
    let test_binary =
        std::env::current_exe().map_err(|e| Error::io("finding the test binary", e))?;
    let output = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "sh", "-c", script, "sh"])
        .arg(test_binary)
        .args(["--exact", test, "--nocapture"])
        .env("ETC_COPY", scratch.path().join("etc"))
        .env(marker, value)
        .output()
        .map_err(|e| Error::io("running unshare", e))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), log))
}
