//! `slapnode.toml`: what an operator writes, validated once into [`NodeConfig`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use partitioning::{FormatConfig, FormatFile};
use serde::Deserialize;

/// The file as written. Durations are in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This computer's id on the master (`COMP-123`).
    pub computer: String,
    /// Replicas to start from (`https://[2001:db8::1]:7001`); the rest is learned.
    pub masters: Vec<String>,
    /// The computer's certificate, key and the cluster's roots (`slapnode enroll` writes them).
    pub tls_dir: Option<PathBuf>,
    /// Talk plaintext to a cluster run with `insecure_plaintext` (a trusted network only).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// What the agent remembers between runs; all of it can be rebuilt from the master.
    pub state_dir: PathBuf,
    /// The periodic poll when long-poll is unavailable, and how long one long-poll waits.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: u64,
    #[serde(default = "default_true")]
    pub long_poll: bool,
    #[serde(default = "default_usage_interval")]
    pub usage_interval_s: u64,
    /// Format and register capacity again this often (and at boot).
    #[serde(default = "default_daily")]
    pub capacity_interval_s: u64,
    /// Reprocess a partition this often even when nothing changed.
    #[serde(default = "default_daily")]
    pub reprocess_interval_s: u64,
    /// SIGTERM to SIGKILL, for an instance's processes.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_s: u64,
    /// SLA attributes to register (`region`, `cpu_type`, ...); absent leaves the master's.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (plain HTTP); none by default.
    pub http_listen: Option<String>,
    pub format: FormatFile,
}

fn default_poll_interval() -> u64 {
    60
}
fn default_true() -> bool {
    true
}
fn default_usage_interval() -> u64 {
    3600
}
fn default_daily() -> u64 {
    86_400
}
fn default_stop_grace() -> u64 {
    10
}

/// How the agent proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tls {
        dir: PathBuf,
    },
    /// Names itself in the actor header.
    DangerPlaintext,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub computer: String,
    pub masters: Vec<String>,
    pub transport: Transport,
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    pub long_poll: bool,
    pub usage_interval: Duration,
    pub capacity_interval: Duration,
    pub reprocess_interval: Duration,
    pub stop_grace: Duration,
    pub attributes: Option<BTreeMap<String, String>>,
    pub http_listen: Option<std::net::SocketAddr>,
    pub format: FormatConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Format(#[from] partitioning::ConfigError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The longest long-poll the master accepts.
const MAX_POLL_WAIT_S: u64 = 60;

impl NodeFile {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        let good_id = !self.computer.is_empty()
            && self
                .computer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !good_id {
            return Err(invalid(
                "computer",
                format!("{:?} is not a computer id", self.computer),
            ));
        }
        if self.masters.is_empty() {
            return Err(invalid("masters", "name at least one replica"));
        }
        let transport = match (self.tls_dir, self.insecure_plaintext) {
            (Some(dir), false) => Transport::Tls { dir },
            (None, true) => Transport::DangerPlaintext,
            (Some(_), true) => {
                return Err(invalid(
                    "insecure_plaintext",
                    "give either tls_dir or insecure_plaintext",
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "tls_dir",
                    "the computer's certificate directory (slapnode enroll writes it); \
                     insecure_plaintext = true only on a trusted network",
                ));
            }
        };
        let scheme = match transport {
            Transport::Tls { .. } => "https://",
            Transport::DangerPlaintext => "http://",
        };
        if let Some(url) = self.masters.iter().find(|m| !m.starts_with(scheme)) {
            return Err(invalid(
                "masters",
                format!("{url} does not start with {scheme}"),
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        if !(1..=MAX_POLL_WAIT_S).contains(&self.poll_interval_s) {
            return Err(invalid(
                "poll_interval_s",
                format!("between 1 and {MAX_POLL_WAIT_S} (the longest long-poll)"),
            ));
        }
        for (field, value) in [
            ("usage_interval_s", self.usage_interval_s),
            ("capacity_interval_s", self.capacity_interval_s),
            ("reprocess_interval_s", self.reprocess_interval_s),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        let http_listen = match &self.http_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| {
                invalid(
                    "http_listen",
                    format!("{text:?} is not [ipv6]:port or ipv4:port: {e}"),
                )
            })?),
        };
        Ok(NodeConfig {
            computer: self.computer,
            masters: self.masters,
            transport,
            state_dir: self.state_dir,
            poll_interval: Duration::from_secs(self.poll_interval_s),
            long_poll: self.long_poll,
            usage_interval: Duration::from_secs(self.usage_interval_s),
            capacity_interval: Duration::from_secs(self.capacity_interval_s),
            reprocess_interval: Duration::from_secs(self.reprocess_interval_s),
            stop_grace: Duration::from_secs(self.stop_grace_s),
            attributes: self.attributes,
            http_listen,
            format: self.format.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
computer = "COMP-1"
masters = ["https://[::1]:7001"]
tls_dir = "/etc/slapnode/tls"
state_dir = "/var/lib/slapnode"

[attributes]
region = "eu-west"

[format]
partitions = 10
interface = "eth0"
ipv6_network = "2001:db8:1::/64"
ipv4_network = "10.0.0.0/24"
instance_root = "/srv/slapgrid"
software_root = "/opt/slapgrid"
"#;

    #[test]
    fn reads_the_documented_example_and_refuses_mixed_transports() -> anyhow::Result<()> {
        let config = toml::from_str::<NodeFile>(EXAMPLE)?.validate()?;
        assert_eq!(config.poll_interval, Duration::from_secs(60));
        assert_eq!(config.format.partitions, 10);
        assert!(matches!(config.transport, Transport::Tls { .. }));

        let plaintext = EXAMPLE.replace(
            "tls_dir = \"/etc/slapnode/tls\"",
            "insecure_plaintext = true",
        );
        let error = toml::from_str::<NodeFile>(&plaintext)?
            .validate()
            .expect_err("an https master over plaintext");
        assert!(error.to_string().starts_with("masters:"), "{error}");
        let error =
            toml::from_str::<NodeFile>(&EXAMPLE.replace("partitions = 10", "partitions = 0"))?
                .validate()
                .expect_err("no partitions");
        assert!(
            error.to_string().starts_with("format.partitions"),
            "{error}"
        );
        Ok(())
    }
}
