//! Runs a test again, as a child process, inside fresh mount and network namespaces with a
//! private copy of /etc bind-mounted over the real one: users, addresses and tap devices it
//! makes are real and vanish with the namespaces. Shared by partitioning's and node-client's
//! system-mode tests (node-client includes this file by path).

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Whether the tests run as root (namespaces and mounts need it; CI does).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs this test binary's test `test` in the namespaces with `marker` set in its environment
/// (the test checks for it to know it is the child). Returns whether it passed, and its output.
pub fn rerun(test: &str, marker: &str, value: &OsStr) -> anyhow::Result<(bool, String)> {
    let scratch = tempfile::tempdir()?;
    // unshare makes mounts private by default, so the bind mount stays in the namespace; sysfs
    // is mounted again to show the new network namespace's interfaces.
    let script = r#"set -e
        cp -a /etc "$ETC_COPY"
        mount --bind "$ETC_COPY" /etc
        mount -t sysfs sysfs /sys
        ip link set lo up
        exec "$@""#;
    let output = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "sh", "-c", script, "sh"])
        .arg(std::env::current_exe()?)
        .args(["--exact", test, "--nocapture"])
        .env("ETC_COPY", scratch.path().join("etc"))
        .env(marker, value)
        .output()?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), log))
}
