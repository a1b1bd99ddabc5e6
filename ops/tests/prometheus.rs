//! The Prometheus alert rules (`ops/deploy/prometheus`): valid, and each alert fires when it
//! should and clears, by `promtool test rules` over `slapcluster.rules.test.yml`. That every
//! metric they name is exported is checked where the metrics are made (master-cluster's
//! `tests/tls.rs`, node-client's `observe.rs`).

use std::path::Path;
use std::process::Command;

#[test]
fn the_alert_rules_are_valid_and_fire_as_their_unit_tests_say() {
    if Command::new("promtool").arg("--version").output().is_err() {
        test_kit::skip!("promtool is not installed (.ci/setup installs prometheus)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [
        ["check", "rules", "slapcluster.rules.yml"],
        ["test", "rules", "slapcluster.rules.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
