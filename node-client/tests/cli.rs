//! The `slapnode` command line: `format --dry-run` shows the plan and changes nothing, `format`
//! applies it, and a bad configuration is refused with the field to fix.

use std::path::Path;
use std::process::Command;

fn config(dir: &Path, partitions: u32) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("slapnode.toml");
    std::fs::write(
        &path,
        format!(
            r#"computer = "COMP-CLI"
masters = ["https://[::1]:1"]
tls_dir = "{tls}"
state_dir = "{state}"

[format]
partitions = {partitions}
interface = "lo"
ipv6_network = "fd00:c11::/64"
ipv4_network = "10.252.0.0/24"
instance_root = "{instances}"
software_root = "{software}"
mode = "unprivileged"
"#,
            tls = dir.join("tls").display(),
            state = dir.join("state").display(),
            instances = dir.join("instances").display(),
            software = dir.join("software").display(),
        ),
    )?;
    Ok(path)
}

fn slapnode(args: &[&str], config: &Path) -> anyhow::Result<(bool, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_slapnode"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()?;
    let mut text = String::from_utf8(output.stdout)?;
    text.push_str(&String::from_utf8(output.stderr)?);
    Ok((output.status.success(), text))
}

#[test]
fn format_plans_applies_and_refuses_bad_configuration() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), 2)?;

    let (ok, plan) = slapnode(&["format", "--dry-run"], &config)?;
    assert!(ok, "{plan}");
    assert!(plan.contains("slappart1 user=slapuser1"), "{plan}");
    assert!(
        plan.contains("ipv6=fd00:c11::101/64 ipv4=10.252.0.2/24 tap=slaptap1"),
        "{plan}"
    );
    assert!(plan.contains("would create directory"), "{plan}");
    assert!(
        !dir.path().join("instances").exists(),
        "a dry run changes nothing"
    );

    let (ok, done) = slapnode(&["format"], &config)?;
    assert!(ok, "{done}");
    assert!(done.contains("2 partitions ready"), "{done}");
    assert!(dir.path().join("instances/slappart1").is_dir());
    let (ok, again) = slapnode(&["format", "--dry-run"], &config)?;
    assert!(
        ok && !again.contains("would"),
        "nothing left to do:\n{again}"
    );

    let broken = std::fs::read_to_string(&config)?.replace("fd00:c11::/64", "fd00:c11::/96");
    std::fs::write(&config, broken)?;
    let (ok, error) = slapnode(&["format"], &config)?;
    assert!(!ok);
    assert!(
        error.contains("format.ipv6_network: give a /64 or a wider network"),
        "{error}"
    );
    Ok(())
}
