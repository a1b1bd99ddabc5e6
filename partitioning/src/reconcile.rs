//! Reconciliation: compare the layout with what the machine has and decide, without doing
//! anything, the actions that make the machine match. Partitions beyond the configured count
//! are removed only when free; a busy one is kept until its instance is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{FormatConfig, Mode};
use crate::layout::{PARTITION_MODE, PartitionLayout};

/// A user account as the system reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// A partition directory as found under the instance root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only.
    pub mode: u32,
    /// An empty directory holds no instance: its partition is free.
    pub empty: bool,
}

/// What the machine has that a layout may name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Who runs the format (owner of directories in unprivileged mode).
    pub current: Option<Account>,
    /// Accounts whose name starts with the user base.
    pub users: BTreeMap<String, Account>,
    /// Directories under the instance root named like partitions, by reference.
    pub directories: BTreeMap<String, Directory>,
    /// Addresses on the interface.
    pub addresses: BTreeSet<IpAddr>,
    /// Network interfaces whose name starts with the tap base.
    pub taps: BTreeSet<String>,
}

/// Who a directory must belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The partition's user and its group of the same name.
    User(String),
    /// Whoever runs the format (unprivileged mode).
    Current,
}

/// One change to the machine. Actions are ordered so that each one's prerequisites come first
/// (a user before the directory it owns, a tap before nothing that needs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A user with a group of the same name, its home the partition directory.
    CreateUser {
        user: String,
        home: PathBuf,
    },
    CreateDirectory {
        path: PathBuf,
    },
    /// Owner and mode [`PARTITION_MODE`].
    SetOwnership {
        path: PathBuf,
        owner: Owner,
    },
    AddAddress {
        interface: String,
        address: IpAddr,
        prefix: u8,
    },
    CreateTap {
        tap: String,
        user: String,
    },
    RemoveTap {
        tap: String,
    },
    RemoveAddress {
        interface: String,
        address: IpAddr,
        prefix: u8,
    },
    /// Only ever an empty directory: a free partition's.
    RemoveDirectory {
        path: PathBuf,
    },
    RemoveUser {
        user: String,
    },
}

/// The outcome of reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The partitions the computer has once the actions are done: the configured ones, then
    /// any busy one beyond the count. This is the computer definition sent to the master.
    pub partitions: Vec<PartitionLayout>,
    /// References beyond the count that stay because an instance still uses them.
    pub kept_busy: Vec<String>,
    pub actions: Vec<Action>,
}

/// Decides the actions. `busy` names partitions the master says hold an instance; a non-empty
/// directory is busy too, so a format run without the master never removes an instance's data.
pub fn reconcile(config: &FormatConfig, observed: &Observed, busy: &BTreeSet<String>) -> Plan {
    let system = config.mode == Mode::System;
    let beyond = extra_indices(config, observed);
    let mut partitions = config.layout();
    let mut kept_busy = Vec::new();
    let mut removed = Vec::new();
    for index in beyond {
        let Some(partition) = config.partition(index) else {
            continue;
        };
        let in_use = busy.contains(&partition.reference)
            || observed
                .directories
                .get(&partition.reference)
                .is_some_and(|d| !d.empty);
        if in_use {
            kept_busy.push(partition.reference.clone());
            partitions.push(partition);
        } else {
            removed.push(partition);
        }
    }

    let mut actions = Vec::new();
    for partition in &partitions {
        let user = observed.users.get(&partition.user);
        if system && user.is_none() {
            actions.push(Action::CreateUser {
                user: partition.user.clone(),
                home: partition.path.clone(),
            });
        }
        let owner = if system {
            Owner::User(partition.user.clone())
        } else {
            Owner::Current
        };
        let expected = if system {
            user
        } else {
            observed.current.as_ref()
        };
        match observed.directories.get(&partition.reference) {
            None => {
                actions.push(Action::CreateDirectory {
                    path: partition.path.clone(),
                });
                actions.push(Action::SetOwnership {
                    path: partition.path.clone(),
                    owner,
                });
            }
            Some(directory) => {
                let right = expected
                    .is_some_and(|a| a.uid == directory.uid && a.gid == directory.gid)
                    && directory.mode == PARTITION_MODE;
                if !right {
                    actions.push(Action::SetOwnership {
                        path: partition.path.clone(),
                        owner,
                    });
                }
            }
        }
        if system {
            for (address, prefix) in [
                (IpAddr::V6(partition.ipv6), partition.ipv6_prefix),
                (IpAddr::V4(partition.ipv4), partition.ipv4_prefix),
            ] {
                if !observed.addresses.contains(&address) {
                    actions.push(Action::AddAddress {
                        interface: config.interface.clone(),
                        address,
                        prefix,
                    });
                }
            }
            if !observed.taps.contains(&partition.tap) {
                actions.push(Action::CreateTap {
                    tap: partition.tap.clone(),
                    user: partition.user.clone(),
                });
            }
        }
    }
    for partition in &removed {
        if observed.taps.contains(&partition.tap) {
            actions.push(Action::RemoveTap {
                tap: partition.tap.clone(),
            });
        }
        for (address, prefix) in [
            (IpAddr::V6(partition.ipv6), partition.ipv6_prefix),
            (IpAddr::V4(partition.ipv4), partition.ipv4_prefix),
        ] {
            if observed.addresses.contains(&address) {
                actions.push(Action::RemoveAddress {
                    interface: config.interface.clone(),
                    address,
                    prefix,
                });
            }
        }
        if observed.directories.contains_key(&partition.reference) {
            actions.push(Action::RemoveDirectory {
                path: partition.path.clone(),
            });
        }
        if observed.users.contains_key(&partition.user) {
            actions.push(Action::RemoveUser {
                user: partition.user.clone(),
            });
        }
    }
    Plan {
        partitions,
        kept_busy,
        actions,
    }
}

/// Indices at or beyond the count that the machine still has something of.
fn extra_indices(config: &FormatConfig, observed: &Observed) -> BTreeSet<u32> {
    let index = |name: &str, base: &str| -> Option<u32> {
        let digits = name.strip_prefix(base)?;
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse().ok()
    };
    let from_directories = observed
        .directories
        .keys()
        .filter_map(|r| config.index_of(r));
    let from_users = observed
        .users
        .keys()
        .filter_map(|u| index(u, &config.user_base));
    let from_taps = observed
        .taps
        .iter()
        .filter_map(|t| index(t, &config.tap_base));
    from_directories
        .chain(from_users)
        .chain(from_taps)
        .filter(|&i| i >= config.partitions)
        .collect()
}

impl Action {
    /// Whether the action takes something away (a partition beyond the count). An agent
    /// applies these only after the master accepted the smaller computer, so that a partition
    /// the master has just given an instance is never taken apart.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Self::RemoveTap { .. }
                | Self::RemoveAddress { .. }
                | Self::RemoveDirectory { .. }
                | Self::RemoveUser { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateUser { user, home } => {
                write!(f, "create user and group {user} (home {})", home.display())
            }
            Self::CreateDirectory { path } => write!(f, "create directory {}", path.display()),
            Self::SetOwnership { path, owner } => {
                let owner = match owner {
                    Owner::User(user) => user.as_str(),
                    Owner::Current => "the current user",
                };
                write!(
                    f,
                    "set {} to {owner}, mode {PARTITION_MODE:o}",
                    path.display()
                )
            }
            Self::AddAddress {
                interface,
                address,
                prefix,
            } => write!(f, "add {address}/{prefix} to {interface}"),
            Self::CreateTap { tap, user } => write!(f, "create tap {tap} for {user}"),
            Self::RemoveTap { tap } => write!(f, "remove tap {tap}"),
            Self::RemoveAddress {
                interface,
                address,
                prefix,
            } => write!(f, "remove {address}/{prefix} from {interface}"),
            Self::RemoveDirectory { path } => write!(f, "remove directory {}", path.display()),
            Self::RemoveUser { user } => write!(f, "remove user and group {user}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::file;

    fn config(partitions: u32, mode: Mode) -> FormatConfig {
        let mut f = file();
        f.partitions = partitions;
        f.mode = mode;
        f.validate().expect("valid")
    }

    /// The machine after a complete format of `config`.
    fn formatted(config: &FormatConfig) -> Observed {
        let mut observed = Observed {
            current: Some(Account {
                uid: 1000,
                gid: 1000,
            }),
            ..Observed::default()
        };
        for p in config.layout() {
            let account = Account {
                uid: 2000 + p.index,
                gid: 2000 + p.index,
            };
            observed.users.insert(p.user.clone(), account);
            observed.directories.insert(
                p.reference.clone(),
                Directory {
                    uid: account.uid,
                    gid: account.gid,
                    mode: PARTITION_MODE,
                    empty: true,
                },
            );
            observed.addresses.insert(IpAddr::V6(p.ipv6));
            observed.addresses.insert(IpAddr::V4(p.ipv4));
            observed.taps.insert(p.tap.clone());
        }
        observed
    }

    #[test]
    fn a_bare_machine_gets_everything_in_dependency_order() {
        let config = config(2, Mode::System);
        let plan = reconcile(&config, &Observed::default(), &BTreeSet::new());
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            described,
            [
                "create user and group slapuser0 (home /srv/slapgrid/slappart0)",
                "create directory /srv/slapgrid/slappart0",
                "set /srv/slapgrid/slappart0 to slapuser0, mode 750",
                "add 2001:db8:1::100/64 to eth0",
                "add 10.0.0.1/24 to eth0",
                "create tap slaptap0 for slapuser0",
                "create user and group slapuser1 (home /srv/slapgrid/slappart1)",
                "create directory /srv/slapgrid/slappart1",
                "set /srv/slapgrid/slappart1 to slapuser1, mode 750",
                "add 2001:db8:1::101/64 to eth0",
                "add 10.0.0.2/24 to eth0",
                "create tap slaptap1 for slapuser1",
            ]
        );
        assert_eq!(plan.partitions.len(), 2);
    }

    #[test]
    fn a_formatted_machine_needs_nothing_and_a_changed_mode_is_fixed() {
        let config = config(3, Mode::System);
        let mut observed = formatted(&config);
        assert!(
            reconcile(&config, &observed, &BTreeSet::new())
                .actions
                .is_empty()
        );

        if let Some(d) = observed.directories.get_mut("slappart1") {
            d.mode = 0o777;
        }
        observed.taps.remove("slaptap2");
        let plan = reconcile(&config, &observed, &BTreeSet::new());
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            described,
            [
                "set /srv/slapgrid/slappart1 to slapuser1, mode 750",
                "create tap slaptap2 for slapuser2"
            ]
        );
    }

    #[test]
    fn shrinking_removes_free_partitions_and_keeps_busy_ones() {
        let big = config(4, Mode::System);
        let mut observed = formatted(&big);
        // slappart2 is busy by the master's word, slappart3 by the files in it.
        if let Some(d) = observed.directories.get_mut("slappart3") {
            d.empty = false;
        }
        let small = config(1, Mode::System);
        let busy = BTreeSet::from(["slappart2".to_owned()]);
        let plan = reconcile(&small, &observed, &busy);
        assert_eq!(plan.kept_busy, ["slappart2", "slappart3"]);
        let references: Vec<&str> = plan
            .partitions
            .iter()
            .map(|p| p.reference.as_str())
            .collect();
        assert_eq!(references, ["slappart0", "slappart2", "slappart3"]);
        let described: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            described,
            [
                "remove tap slaptap1",
                "remove 2001:db8:1::101/64 from eth0",
                "remove 10.0.0.2/24 from eth0",
                "remove directory /srv/slapgrid/slappart1",
                "remove user and group slapuser1",
            ]
        );
    }

    #[test]
    fn unprivileged_mode_only_makes_directories_of_the_current_user() {
        let config = config(2, Mode::Unprivileged);
        let observed = Observed {
            current: Some(Account {
                uid: 1000,
                gid: 1000,
            }),
            ..Observed::default()
        };
        let plan = reconcile(&config, &observed, &BTreeSet::new());
        assert!(plan.actions.iter().all(|a| matches!(
            a,
            Action::CreateDirectory { .. }
                | Action::SetOwnership {
                    owner: Owner::Current,
                    ..
                }
        )));
        assert_eq!(plan.actions.len(), 4);
    }
}
