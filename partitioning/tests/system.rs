//! `system::format` against a real machine. The system mode runs in a child of this test inside
//! fresh mount and network namespaces, with a private copy of /etc bind-mounted over the real
//! one: users, addresses and tap devices are real, and vanish with the namespaces.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use partitioning::{FormatConfig, FormatFile, Mode, PARTITION_MODE, system};

use test_kit::namespaced;

const CHILD: &str = "PARTITIONING_SYSTEM_CHILD";

fn format_config(root: &Path, partitions: u32, mode: Mode) -> anyhow::Result<FormatConfig> {
    let file = FormatFile {
        partitions,
        partition_base: "slappart".into(),
        user_base: "sctestuser".into(),
        tap_base: "sctesttap".into(),
        interface: "lo".into(),
        ipv6_network: "fd00:5ca1::/64".into(),
        ipv6_first_host: 0x100,
        ipv4_network: "10.77.0.0/24".into(),
        instance_root: root.join("srv"),
        software_root: root.join("opt"),
        mode,
    };
    Ok(file.validate()?)
}

#[test]
fn unprivileged_format_makes_private_directories_and_is_idempotent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = format_config(dir.path(), 3, Mode::Unprivileged)?;
    let plan = system::format(&config, &BTreeSet::new())?;
    assert_eq!(plan.partitions.len(), 3);
    for partition in &plan.partitions {
        let meta = std::fs::metadata(&partition.path)?;
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, PARTITION_MODE);
    }
    assert!(config.software_root.is_dir());
    let again = system::format(&config, &BTreeSet::new())?;
    assert!(again.actions.is_empty(), "{:?}", again.actions);

    // An instance's file keeps slappart2 when the count drops to 1; slappart1 goes.
    std::fs::write(plan.partitions[2].path.join("data"), "kept")?;
    let smaller = format_config(dir.path(), 1, Mode::Unprivileged)?;
    let shrunk = system::format(&smaller, &BTreeSet::new())?;
    assert_eq!(shrunk.kept_busy, ["slappart2"]);
    assert!(!plan.partitions[1].path.exists());
    assert!(plan.partitions[2].path.join("data").exists());
    Ok(())
}

#[test]
fn system_format_creates_users_addresses_and_taps() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return system_child();
    }
    if !test_kit::is_root() {
        test_kit::skip!("the system mode makes users and addresses in namespaces: needs root");
        return Ok(());
    }
    let scratch = tempfile::tempdir()?;
    let (passed, log) = namespaced::rerun(
        "system_format_creates_users_addresses_and_taps",
        CHILD,
        scratch.path().as_os_str(),
    )?;
    assert!(passed, "the namespaced format failed:\n{log}");
    assert!(log.contains("system format checked"), "{log}");
    Ok(())
}

/// Inside the namespaces: format four partitions, check each piece on the machine, format
/// again (nothing to do), then shrink to two while one partition is busy.
fn system_child() -> anyhow::Result<()> {
    let root = std::env::var_os(CHILD)
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let config = format_config(&root, 4, Mode::System)?;
    let plan = system::format(&config, &BTreeSet::new())?;
    assert_eq!(plan.partitions.len(), 4);

    let addresses = String::from_utf8(
        Command::new("ip")
            .args(["-o", "addr", "show", "dev", "lo"])
            .output()?
            .stdout,
    )?;
    for partition in &plan.partitions {
        let account = system::account(&partition.user)?;
        let meta = std::fs::metadata(&partition.path)?;
        assert_eq!((meta.uid(), meta.gid()), (account.uid, account.gid));
        assert_eq!(meta.mode() & 0o7777, PARTITION_MODE);
        assert!(
            addresses.contains(&format!("{}/64", partition.ipv6)),
            "{addresses}"
        );
        assert!(
            addresses.contains(&format!("{}/24", partition.ipv4)),
            "{addresses}"
        );
        let tap = Path::new("/sys/class/net").join(&partition.tap);
        assert!(tap.exists(), "{} missing", tap.display());
        let owner = std::fs::read_to_string(tap.join("owner"))?;
        assert_eq!(owner.trim(), account.uid.to_string());
    }
    let again = system::format(&config, &BTreeSet::new())?;
    assert!(again.actions.is_empty(), "{:?}", again.actions);

    let smaller = format_config(&root, 2, Mode::System)?;
    let busy = BTreeSet::from(["slappart3".to_owned()]);
    let shrunk = system::format(&smaller, &busy)?;
    assert_eq!(shrunk.kept_busy, ["slappart3"]);
    assert!(
        system::account("sctestuser2").is_err(),
        "the free partition's user is gone"
    );
    assert!(!Path::new("/sys/class/net/sctesttap2").exists());
    assert!(!plan.partitions[2].path.exists());
    assert!(
        system::account("sctestuser3").is_ok(),
        "the busy partition is kept"
    );
    println!("system format checked");
    Ok(())
}
