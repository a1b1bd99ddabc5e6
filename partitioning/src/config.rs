//! The computer's format configuration as an operator writes it (the `[format]` section of
//! `slapnode.toml`), and its validation into [`FormatConfig`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::net::{Ipv4Net, Ipv6Net};

/// Longest Linux network interface name (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;
/// Longest user or group name `useradd` accepts.
const MAX_USER_NAME: usize = 32;
/// Enough for any fleet; a bound keeps a typo from formatting millions of partitions.
pub const MAX_PARTITIONS: u32 = 4096;

/// What `slapnode format` may change on the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Users and groups, directories owned by them, addresses on the interface, tap devices.
    /// Needs root.
    System,
    /// Directories only, owned by whoever runs the agent: development and tests.
    Unprivileged,
}

/// The format section as written; [`FormatFile::validate`] checks it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatFile {
    pub partitions: u32,
    #[serde(default = "default_partition_base")]
    pub partition_base: String,
    #[serde(default = "default_user_base")]
    pub user_base: String,
    #[serde(default = "default_tap_base")]
    pub tap_base: String,
    /// The interface the partitions' addresses go on (`lo`, `eth0`, a bridge).
    pub interface: String,
    /// The /64 (or wider) the partitions' global IPv6 addresses are carved from.
    pub ipv6_network: String,
    /// The host part of partition 0's IPv6 address; partition N gets this + N.
    #[serde(default = "default_ipv6_first_host")]
    pub ipv6_first_host: u64,
    /// The local IPv4 pool: partition N gets its (N+1)th host address.
    pub ipv4_network: String,
    pub instance_root: PathBuf,
    pub software_root: PathBuf,
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_partition_base() -> String {
    "slappart".into()
}
fn default_user_base() -> String {
    "slapuser".into()
}
fn default_tap_base() -> String {
    "slaptap".into()
}
fn default_ipv6_first_host() -> u64 {
    0x100
}
fn default_mode() -> Mode {
    Mode::System
}

/// A checked format configuration: every partition it describes has a valid name, user, tap
/// name and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatConfig {
    pub partitions: u32,
    pub partition_base: String,
    pub user_base: String,
    pub tap_base: String,
    pub interface: String,
    pub ipv6_network: Ipv6Net,
    pub ipv6_first_host: u64,
    pub ipv4_network: Ipv4Net,
    pub instance_root: PathBuf,
    pub software_root: PathBuf,
    pub mode: Mode,
}

/// A configuration field that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("format.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// Lowercase letters, digits, `_` and `-`, starting with a letter: safe as a user name, a
/// group name, a directory name and an interface name.
fn check_base(
    field: &'static str,
    base: &str,
    max_len: usize,
    count: u32,
) -> Result<(), ConfigError> {
    let mut chars = base.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_well
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(refuse(
            field,
            format!(
                "{base:?} must be lowercase letters, digits, '_' or '-', starting with a letter"
            ),
        ));
    }
    let longest = base.len() + count.saturating_sub(1).to_string().len();
    if longest > max_len {
        return Err(refuse(
            field,
            format!(
                "{base:?} plus the partition number is {longest} characters; at most {max_len}"
            ),
        ));
    }
    Ok(())
}

impl FormatFile {
    pub fn validate(self) -> Result<FormatConfig, ConfigError> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(refuse(
                "partitions",
                format!("{} is not between 1 and {MAX_PARTITIONS}", self.partitions),
            ));
        }
        check_base("partition_base", &self.partition_base, 255, self.partitions)?;
        check_base("user_base", &self.user_base, MAX_USER_NAME, self.partitions)?;
        check_base(
            "tap_base",
            &self.tap_base,
            MAX_INTERFACE_NAME,
            self.partitions,
        )?;
        if self.interface.is_empty()
            || self.interface.len() > MAX_INTERFACE_NAME
            || self.interface.contains(['/', ' ', '\0'])
        {
            return Err(refuse(
                "interface",
                format!("{:?} is not an interface name", self.interface),
            ));
        }
        let ipv6_network: Ipv6Net = self
            .ipv6_network
            .parse()
            .map_err(|e| refuse("ipv6_network", format!("{e}")))?;
        if ipv6_network.prefix() > 64 {
            return Err(refuse("ipv6_network", "give a /64 or a wider network"));
        }
        let last = u128::from(self.ipv6_first_host) + u128::from(self.partitions - 1);
        if self.ipv6_first_host == 0 || ipv6_network.host(last).is_none() {
            return Err(refuse(
                "ipv6_first_host",
                "partition addresses fall outside the network",
            ));
        }
        let ipv4_network: Ipv4Net = self
            .ipv4_network
            .parse()
            .map_err(|e| refuse("ipv4_network", format!("{e}")))?;
        if ipv4_network.host(self.partitions - 1).is_none() {
            return Err(refuse(
                "ipv4_network",
                format!(
                    "{ipv4_network} has fewer than {} host addresses",
                    self.partitions
                ),
            ));
        }
        for (field, path) in [
            ("instance_root", &self.instance_root),
            ("software_root", &self.software_root),
        ] {
            if !path.is_absolute() {
                return Err(refuse(
                    field,
                    format!("{} is not an absolute path", path.display()),
                ));
            }
        }
        Ok(FormatConfig {
            partitions: self.partitions,
            partition_base: self.partition_base,
            user_base: self.user_base,
            tap_base: self.tap_base,
            interface: self.interface,
            ipv6_network,
            ipv6_first_host: self.ipv6_first_host,
            ipv4_network,
            instance_root: self.instance_root,
            software_root: self.software_root,
            mode: self.mode,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn file() -> FormatFile {
        FormatFile {
            partitions: 10,
            partition_base: default_partition_base(),
            user_base: default_user_base(),
            tap_base: default_tap_base(),
            interface: "eth0".into(),
            ipv6_network: "2001:db8:1::/64".into(),
            ipv6_first_host: default_ipv6_first_host(),
            ipv4_network: "10.0.0.0/24".into(),
            instance_root: "/srv/slapgrid".into(),
            software_root: "/opt/slapgrid".into(),
            mode: Mode::System,
        }
    }

    #[test]
    fn names_each_field_it_refuses() {
        type Change = fn(&mut FormatFile);
        let cases: Vec<(&str, Change)> = vec![
            ("partitions", |f| f.partitions = 0),
            ("partitions", |f| f.partitions = MAX_PARTITIONS + 1),
            ("user_base", |f| f.user_base = "Slap User".into()),
            ("tap_base", |f| f.tap_base = "averylongtapname".into()),
            ("interface", |f| f.interface = "eth0/1".into()),
            ("ipv6_network", |f| f.ipv6_network = "2001:db8::/96".into()),
            ("ipv6_first_host", |f| f.ipv6_first_host = 0),
            ("ipv4_network", |f| f.ipv4_network = "10.0.0.0/29".into()),
            ("instance_root", |f| f.instance_root = "srv".into()),
        ];
        for (field, change) in cases {
            let mut bad = file();
            change(&mut bad);
            let error = bad.validate().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
        assert!(file().validate().is_ok());
    }

    #[test]
    fn reads_the_toml_an_operator_writes() -> Result<(), toml::de::Error> {
        let file: FormatFile = toml::from_str(
            r#"
            partitions = 3
            interface = "lo"
            ipv6_network = "fd00::/64"
            ipv4_network = "10.1.0.0/24"
            instance_root = "/srv/slapgrid"
            software_root = "/opt/slapgrid"
            mode = "unprivileged"
            "#,
        )?;
        let config = file.validate().expect("a valid configuration");
        assert_eq!(config.mode, Mode::Unprivileged);
        assert_eq!(config.tap_base, "slaptap");
        assert!(toml::from_str::<FormatFile>("partitions = 1\ntypo = 2").is_err());
        Ok(())
    }
}
