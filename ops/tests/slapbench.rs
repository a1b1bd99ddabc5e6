//! `slapbench` measures: a short run against both masters (the reference `slapos proxy` of the
//! SlapOS client's environment from `.ci/slapos-client`, and a three-replica slapcluster)
//! completes, and every phase is reported with a ratio. The figures themselves are in
//! BENCHMARKS.md, from `ops/bench/slap`.

use std::path::PathBuf;
use std::process::Command;

use test_kit::cluster::slapmaster_for_tests;

#[test]
fn slapbench_measures_both_masters_with_the_same_calls() -> anyhow::Result<()> {
    let venv = std::env::var_os("SLAPOS_VENV").map_or_else(
        || PathBuf::from("/opt/slapcluster/slapos-venv"),
        PathBuf::from,
    );
    if !venv.join("bin/slapos").exists() {
        test_kit::skip!(
            "no SlapOS client in {} (./.ci/setup installs it, as root)",
            venv.display()
        );
        return Ok(());
    }
    let output = Command::new(env!("CARGO_BIN_EXE_slapbench"))
        .arg("--venv")
        .arg(&venv)
        .arg("--slapmaster")
        .arg(slapmaster_for_tests()?)
        .args(["--partitions", "12", "--requests", "12"])
        .args(["--clients", "2", "--seconds", "0.5"])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for master in ["slapproxy", "slapcluster"] {
        assert!(
            text.contains(&format!("{master:<12} 12 sequential instance requests in")),
            "{text}"
        );
        let polls = text
            .lines()
            .filter(|l| l.starts_with(master) && l.contains("getFullComputerInformation"))
            .count();
        assert_eq!(polls, 2, "kept-alive and a connection per call: {text}");
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ratio")).count(),
        2,
        "{text}"
    );
    Ok(())
}
