//! What the `slapctl` tests share: a three-replica cluster with an operator's certificate,
//! a computer's node, and `slapctl` runs with what they printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use test_kit::cluster::{Cluster, slapmaster_for_tests};

pub const COMPUTER: &str = "COMP-CTL";
pub const SOFTWARE: &str = "https://lab.example/slapos/software/ctl/software.cfg";

/// What one `slapctl` run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "slapctl failed: {}{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cluster: Cluster,
    pub slapmaster: PathBuf,
    pub operator: PathBuf,
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let slapmaster = slapmaster_for_tests()?;
        let cluster = Cluster::start(&slapmaster, dir.path(), 3).await?;
        let operator = dir.path().join("certs").join("operator");
        Ok(Self {
            dir,
            cluster,
            slapmaster,
            operator,
        })
    }

    /// `slapctl --cluster (every replica) --tls-dir TLS ARGS`.
    pub fn slapctl(&self, tls: &Path, args: &[&str]) -> Run {
        let cluster = self.cluster.urls().join(",");
        let mut all = vec!["--cluster", &cluster, "--tls-dir"];
        let tls = tls.to_string_lossy();
        all.push(&tls);
        all.extend_from_slice(args);
        self.bare(&all)
    }

    pub fn as_operator(&self, args: &[&str]) -> Run {
        self.slapctl(&self.operator, args)
    }

    /// `slapctl ARGS` with no configuration file of the machine's user.
    pub fn bare(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_slapctl"))
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("SLAPCTL_CONFIG")
            .env_remove("SLAPCTL_CLUSTER")
            .env_remove("SLAPCTL_TLS_DIR")
            .output()
            .expect("slapctl runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A node of `COMPUTER` registering four partitions in region `eu`.
    pub async fn register_computer(&self) -> anyhow::Result<NodeClient<tonic::transport::Channel>> {
        let credentials = self.cluster.credentials(&format!("computer:{COMPUTER}"))?;
        let channel =
            client::connect_with(&self.cluster.urls()[0], Some(credentials.tls_config())).await?;
        let mut node = NodeClient::new(channel);
        node.register_computer(pb::RegisterComputerRequest {
            computer: COMPUTER.into(),
            attributes: [("region".to_string(), "eu".to_string())].into(),
            set_attributes: true,
            partitions: (0..4)
                .map(|i| pb::PartitionDefinition {
                    reference: format!("slappart{i}"),
                    addresses: vec![pb::NetworkAddress {
                        addr: format!("fd00:c71::{i}"),
                        netmask: "64".into(),
                    }],
                    tap: format!("slaptap{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await?;
        Ok(node)
    }
}

/// Retries `check` until it holds, for at most 30 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `slapmaster run` process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
