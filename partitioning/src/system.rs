//! The edge that touches the machine: observe what it has, apply a plan's actions. Blocking
//! (`std::process`, `std::fs`); async callers run it on a blocking thread.
//!
//! Every action is idempotent and the plan is recomputed from the machine on each run, so an
//! interrupted format is finished by the next one: nothing is recorded outside the machine.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{FormatConfig, Mode};
use crate::layout::PARTITION_MODE;
use crate::reconcile::{Account, Action, Directory, Observed, Owner, Plan, reconcile};

/// Why formatting stopped. What was done before stays done; running again finishes the job.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("no account named {0} (it should have been created)")]
    UnknownUser(String),
    #[error("cannot {action}: {source}")]
    Action {
        action: String,
        source: Box<FormatError>,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FormatError {
    let path = path.to_path_buf();
    move |source| FormatError::Io { what, path, source }
}

/// Observes, reconciles and applies: the machine then matches the configuration. Returns the
/// plan that was carried out.
pub fn format(config: &FormatConfig, busy: &BTreeSet<String>) -> Result<Plan, FormatError> {
    let plan = plan(config, busy)?;
    apply(&plan.actions)?;
    Ok(plan)
}

/// Observes and reconciles, and makes sure the software root exists: the plan, not applied.
pub fn plan(config: &FormatConfig, busy: &BTreeSet<String>) -> Result<Plan, FormatError> {
    let observed = observe(config)?;
    fs::create_dir_all(&config.software_root).map_err(io_error(
        "creating the software root",
        &config.software_root,
    ))?;
    Ok(reconcile(config, &observed, busy))
}

/// What the machine has that the configuration may name.
pub fn observe(config: &FormatConfig) -> Result<Observed, FormatError> {
    let mut observed = Observed {
        current: Some(current_account()?),
        ..Observed::default()
    };
    observed.directories = partition_directories(config)?;
    if config.mode == Mode::System {
        let passwd = run(Command::new("getent").arg("passwd"))?;
        observed.users = passwd
            .lines()
            .filter_map(parse_passwd)
            .filter(|(name, _)| name.starts_with(&config.user_base))
            .collect();
        observed.addresses = interface_addresses(&config.interface)?;
        let links = run(Command::new("ip").args(["-o", "link", "show"]))?;
        observed.taps = parse_ip_link(&links)
            .filter(|name| name.starts_with(&config.tap_base))
            .map(str::to_owned)
            .collect();
    }
    Ok(observed)
}

/// Carries out the actions in order; stops at the first failure, naming it.
pub fn apply(actions: &[Action]) -> Result<(), FormatError> {
    for action in actions {
        apply_one(action).map_err(|source| FormatError::Action {
            action: action.to_string(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

fn apply_one(action: &Action) -> Result<(), FormatError> {
    match action {
        Action::CreateUser { user, home } => {
            run(Command::new("useradd")
                .args([
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg("--home-dir")
                .arg(home)
                .arg(user))?;
        }
        Action::CreateDirectory { path } => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
            }
            match fs::DirBuilder::new().mode(PARTITION_MODE).create(path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other.map_err(io_error("creating", path))?,
            }
        }
        Action::SetOwnership { path, owner } => {
            let account = match owner {
                Owner::User(user) => account(user)?,
                Owner::Current => current_account()?,
            };
            std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
                .map_err(io_error("changing the owner of", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(PARTITION_MODE))
                .map_err(io_error("changing the mode of", path))?;
        }
        Action::AddAddress {
            interface,
            address,
            prefix,
        } => {
            let mut command = Command::new("ip");
            command.args([
                "addr",
                "add",
                &format!("{address}/{prefix}"),
                "dev",
                interface,
            ]);
            // Usable at once: duplicate address detection would hold it `tentative` for
            // seconds, and the partition's processes bind it as soon as they start.
            if address.is_ipv6() {
                command.arg("nodad");
            }
            run(&mut command)?;
        }
        Action::CreateTap { tap, user } => {
            run(
                Command::new("ip").args(["tuntap", "add", "dev", tap, "mode", "tap", "user", user])
            )?;
        }
        Action::RemoveTap { tap } => {
            run(Command::new("ip").args(["tuntap", "del", "dev", tap, "mode", "tap"]))?;
        }
        Action::RemoveAddress {
            interface,
            address,
            prefix,
        } => {
            run(Command::new("ip").args([
                "addr",
                "del",
                &format!("{address}/{prefix}"),
                "dev",
                interface,
            ]))?;
        }
        // `remove_dir` refuses a directory with anything in it: a free partition's is empty,
        // and if an instance wrote into it since the plan, its files are kept.
        Action::RemoveDirectory { path } => {
            fs::remove_dir(path).map_err(io_error("removing", path))?
        }
        Action::RemoveUser { user } => {
            run(Command::new("userdel").arg(user))?;
        }
    }
    Ok(())
}

/// A user's account, from the system's user database.
pub fn account(user: &str) -> Result<Account, FormatError> {
    let line = run(Command::new("getent").args(["passwd", user]))
        .map_err(|_| FormatError::UnknownUser(user.to_owned()))?;
    line.lines()
        .find_map(parse_passwd)
        .map(|(_, account)| account)
        .ok_or_else(|| FormatError::UnknownUser(user.to_owned()))
}

/// The account this process runs as: the owner of its own `/proc` entry.
fn current_account() -> Result<Account, FormatError> {
    let path = Path::new("/proc/self");
    let meta = fs::metadata(path).map_err(io_error("reading", path))?;
    Ok(Account {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn parse_passwd(line: &str) -> Option<(String, Account)> {
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((name.to_owned(), Account { uid, gid }))
}

fn partition_directories(
    config: &FormatConfig,
) -> Result<std::collections::BTreeMap<String, Directory>, FormatError> {
    let root = &config.instance_root;
    let mut found = std::collections::BTreeMap::new();
    let entries = match fs::read_dir(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        other => other.map_err(io_error("listing", root))?,
    };
    for entry in entries {
        let entry = entry.map_err(io_error("listing", root))?;
        let Some(reference) = entry
            .file_name()
            .to_str()
            .filter(|n| config.index_of(n).is_some())
            .map(str::to_owned)
        else {
            continue;
        };
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_error("reading", &path))?;
        if !meta.is_dir() {
            continue;
        }
        let empty = fs::read_dir(&path)
            .map_err(io_error("listing", &path))?
            .next()
            .is_none();
        found.insert(
            reference,
            Directory {
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.mode() & 0o7777,
                empty,
            },
        );
    }
    Ok(found)
}

/// The addresses on an interface, from `ip -o addr show`: one line per address, the address
/// after `inet` or `inet6`.
fn interface_addresses(interface: &str) -> Result<BTreeSet<IpAddr>, FormatError> {
    let out = run(Command::new("ip").args(["-o", "addr", "show", "dev", interface]))?;
    Ok(parse_ip_addr(&out))
}

fn parse_ip_addr(out: &str) -> BTreeSet<IpAddr> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            let (address, _prefix) = words.next()?.split_once('/')?;
            address.parse().ok()
        })
        .collect()
}

/// Interface names from `ip -o link show` (`3: slaptap0: <BROADCAST,...> ...`); a name may
/// carry `@peer`.
fn parse_ip_link(out: &str) -> impl Iterator<Item = &str> {
    out.lines().filter_map(|line| {
        let name = line.split(": ").nth(1)?;
        Some(name.split('@').next().unwrap_or(name))
    })
}

/// Runs a command to completion; its stdout, or its stderr in the error.
fn run(command: &mut Command) -> Result<String, FormatError> {
    let described = format!("{command:?}").replace('"', "");
    let output = command.output().map_err(|source| FormatError::Io {
        what: "running",
        path: PathBuf::from(command.get_program()),
        source,
    })?;
    if !output.status.success() {
        return Err(FormatError::Command {
            command: described,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_addresses_ip_prints() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever\n\
                   1: lo    inet6 2001:db8:1::100/64 scope global nodad \\       valid_lft forever\n";
        let found: Vec<String> = parse_ip_addr(out).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["127.0.0.1", "::1", "2001:db8:1::100"]);
    }

    #[test]
    fn reads_the_interfaces_ip_prints() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n\
                   4: slaptap0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop\n\
                   5: veth1@if6: <BROADCAST,MULTICAST> mtu 1500\n";
        let names: Vec<&str> = parse_ip_link(out).collect();
        assert_eq!(names, ["lo", "slaptap0", "veth1"]);
    }

    #[test]
    fn reads_passwd_lines() {
        assert_eq!(
            parse_passwd("slapuser0:x:1001:1002:,,,:/srv/slapgrid/slappart0:/usr/sbin/nologin"),
            Some((
                "slapuser0".into(),
                Account {
                    uid: 1001,
                    gid: 1002
                }
            ))
        );
        assert_eq!(parse_passwd("broken"), None);
    }
}
