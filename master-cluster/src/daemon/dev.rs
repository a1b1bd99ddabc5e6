//! `slapmaster dev`: a three-replica cluster on one machine, with a demo computer and a few
//! instances, to see slapcluster work and to develop against. Everything goes through the
//! public gRPC services of a follower, as a node and a user would.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;

use super::config::Silence;
use super::{DaemonError, spawn_liveness_flush, spawn_silence_check};
use crate::replica::ReplicaConfig;
use crate::server::Replica;

/// Where the dev cluster lives.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Replica `n` keeps its data in `data_dir/replica-n`.
    pub data_dir: PathBuf,
    pub host: IpAddr,
    /// Replica `n` listens on `base_port + n - 1`; 0 picks free ports.
    pub base_port: u16,
    /// danger: plaintext, callers naming themselves in a header, for tests that act as many
    /// callers at once. Off by default: the dev cluster makes its own CA and certificates.
    pub danger_plaintext: bool,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            data_dir: "./data".into(),
            host: IpAddr::V6(Ipv6Addr::LOCALHOST),
            base_port: 7001,
            danger_plaintext: false,
        }
    }
}

pub const DEMO_COMPUTER: &str = "COMP-DEMO";
pub const DEMO_SOFTWARE: &str = "https://lab.example/slapos/software/demo/software.cfg";
pub const DEMO_USER: &str = "user:demo";
const OPERATOR: &str = "operator:dev";
const DEMO_PARTITIONS: u16 = 8;
const DEMO_INSTANCES: [&str; 3] = ["demo-web", "demo-db", "demo-cache"];

/// A running dev cluster.
pub struct DevCluster {
    pub replicas: Vec<Replica>,
    /// The placement of each demo instance, by title.
    pub placements: BTreeMap<String, pb::RequestInstanceReply>,
}

impl DevOptions {
    /// danger: plaintext on free ports, data under `dir`: for tests that act as many callers.
    pub fn plaintext_for_tests(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            base_port: 0,
            danger_plaintext: true,
            ..Self::default()
        }
    }
}

impl DevCluster {
    /// The leader as the first replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.replicas
            .first()
            .and_then(|r| r.raft().metrics().borrow_watched().current_leader)
    }

    /// A replica that does not lead.
    pub fn follower(&self) -> Option<&Replica> {
        let leader = self.leader();
        self.replicas.iter().find(|r| Some(r.id()) != leader)
    }

    pub async fn shutdown(self) -> Result<(), DaemonError> {
        for replica in self.replicas {
            replica.shutdown().await?;
        }
        Ok(())
    }
}

/// Starts (or restarts, from `data_dir`) the three replicas, bootstraps the cluster the first
/// time, sets up the demo computer and instances (idempotently), and reports to `out`.
pub async fn start(options: &DevOptions, out: &mut dyn Write) -> Result<DevCluster, DaemonError> {
    let certificates = (!options.danger_plaintext)
        .then(|| Certificates::make(&options.data_dir, options.host))
        .transpose()?;
    let mut replicas = Vec::new();
    for id in 1..=3u64 {
        let port = match options.base_port {
            0 => 0,
            base => base + u16::try_from(id - 1).unwrap_or(0),
        };
        let mut config = ReplicaConfig::new(
            id,
            SocketAddr::new(options.host, port),
            options.data_dir.join(format!("replica-{id}")),
        );
        config.region = format!("dev-{id}");
        // Free ports when the replica's is; else fixed offsets above it.
        let above = |offset: u16| {
            SocketAddr::new(
                options.host,
                if port == 0 {
                    0
                } else {
                    port.saturating_add(offset)
                },
            )
        };
        // Metrics and the status page 1000 ports above the replica's.
        config.http_listen = Some(above(1000));
        // The SLAP protocol (existing SlapOS nodes and clients) 2000 ports above; in
        // plaintext, calls that name no partition or computer are the demo user's.
        config.slap = Some(crate::replica::SlapConfig {
            listen: above(2000),
            plaintext_user: options.danger_plaintext.then(|| "demo".into()),
        });
        config.danger_plaintext = options.danger_plaintext;
        if let Some(certificates) = &certificates {
            config.tls = Some(certificates.load(&format!("replica-{id}"))?);
        }
        replicas.push(Replica::start(config).await?);
    }
    let first = &replicas[0];
    let initialized = first
        .raft()
        .is_initialized()
        .await
        .map_err(|e| DaemonError::Refused(e.to_string()))?;
    if !initialized {
        first
            .initialize(replicas.iter().map(|r| (r.id(), r.node())).collect())
            .await?;
    }
    let leader = first
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .map_err(|e| DaemonError::Refused(format!("no leader was elected: {e}")))?
        .current_leader
        .unwrap_or(0);
    // Talk to a follower, to show that callers need not know the leader.
    let Some(via) = replicas.iter().find(|r| r.id() != leader) else {
        return Err(DaemonError::Refused("no follower".into()));
    };
    let via_url = via.url().to_string();
    let tls = |name: &str| -> Result<Option<_>, DaemonError> {
        match &certificates {
            Some(certificates) => Ok(Some(certificates.load(name)?.tls_config())),
            None => Ok(None),
        }
    };
    let callers = Callers {
        operator: client::connect_with(&via_url, tls("operator")?).await?,
        computer: client::connect_with(&via_url, tls("computer")?).await?,
        user: client::connect_with(&via_url, tls("user")?).await?,
    };
    let placements = demo(callers).await?;

    let w = |e| DaemonError::Io {
        what: "writing the report".into(),
        source: e,
    };
    writeln!(
        out,
        "slapcluster dev: 3 replicas, data under {}",
        options.data_dir.display()
    )
    .map_err(w)?;
    for replica in &replicas {
        let role = slapcluster_api::role_name(if replica.id() == leader {
            pb::Role::Leader
        } else {
            pb::Role::Follower
        });
        let page = replica
            .http_addr()
            .map(|a| format!("  status page http://{a}/"))
            .unwrap_or_default();
        let scheme = if certificates.is_some() {
            "https"
        } else {
            "http"
        };
        let slap = replica
            .slap_addr()
            .map(|a| format!("  SLAP {scheme}://{a}/"))
            .unwrap_or_default();
        writeln!(
            out,
            "  replica {}  {}  {role}{page}{slap}",
            replica.id(),
            replica.url()
        )
        .map_err(w)?;
    }
    writeln!(
        out,
        "computer {DEMO_COMPUTER}: {DEMO_PARTITIONS} partitions, supplies {DEMO_SOFTWARE}"
    )
    .map_err(w)?;
    writeln!(out, "instances requested by {DEMO_USER} through {via_url}:").map_err(w)?;
    for (title, reply) in &placements {
        writeln!(
            out,
            "  {title:<11} {:<12} {}",
            reply.guid,
            describe(reply.placement.as_ref())
        )
        .map_err(w)?;
    }
    match &certificates {
        Some(certificates) => writeln!(
            out,
            "talk to any replica: gRPC services slapcluster.v1.Node, .User and .Admin over \
             TLS, with a certificate of the dev CA ({ca}); the operator's, the demo user's and \
             the computer's are in {certs}. For example:\n  \
             slapctl --cluster {via_url} --tls-dir {operator} cluster status\n\
             Ctrl-C stops the cluster; `slapmaster dev` again restarts it from its data.",
            ca = certificates.ca.display(),
            certs = certificates.dir.display(),
            operator = certificates.dir.join("operator").display(),
        ),
        None => writeln!(
            out,
            "talk to any replica (plaintext): gRPC services slapcluster.v1.Node, .User and \
             .Admin, naming yourself in the `slapcluster-actor` header (e.g. {DEMO_USER}, \
             operator:me, computer:{DEMO_COMPUTER}); `slapctl --cluster {via_url} --actor \
             operator:me cluster status` shows the members."
        ),
    }
    .map_err(w)?;
    Ok(DevCluster {
        replicas,
        placements,
    })
}

/// `slapmaster dev`: [`start`], then serve until `shutdown`.
pub async fn dev(
    options: &DevOptions,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let cluster = start(options, out).await?;
    let flushes: Vec<_> = cluster
        .replicas
        .iter()
        .flat_map(|r| {
            [
                spawn_liveness_flush(r.core().clone(), Duration::from_secs(5)),
                spawn_silence_check(r.core().clone(), Silence::default()),
            ]
        })
        .collect();
    shutdown.await;
    for flush in flushes {
        flush.abort();
    }
    cluster.shutdown().await
}

fn describe(placement: Option<&pb::Placement>) -> String {
    use pb::placement::Placement as P;
    match placement.and_then(|p| p.placement.as_ref()) {
        Some(P::Partition(p)) => format!("on {}/{}", p.computer, p.partition),
        Some(P::Pending(reason)) => format!("pending: {reason}"),
        Some(P::Unplaceable(reason)) => format!("unplaceable: {reason}"),
        Some(P::HostedBy(host)) => format!("hosted by {host}"),
        None => "unknown".into(),
    }
}

/// The demo: a release in the catalog, a computer that supplies it, three instances.
/// The demo's three callers, each on its own connection (over TLS, its own certificate).
struct Callers {
    operator: tonic::transport::Channel,
    computer: tonic::transport::Channel,
    user: tonic::transport::Channel,
}

async fn demo(callers: Callers) -> Result<BTreeMap<String, pb::RequestInstanceReply>, DaemonError> {
    let mut operator = UserClient::new(callers.operator);
    let mut user = UserClient::new(callers.user);
    let mut node = NodeClient::new(callers.computer);
    let status = |e: tonic::Status| DaemonError::Client(e.into());
    operator
        .publish_software_release(as_actor(
            pb::PublishSoftwareReleaseRequest {
                url: DEMO_SOFTWARE.into(),
                title: "Demo".into(),
                software_types: vec!["default".into()],
            },
            OPERATOR,
        )?)
        .await
        .map_err(status)?;
    node.register_computer(as_actor(
        demo_computer(),
        &format!("computer:{DEMO_COMPUTER}"),
    )?)
    .await
    .map_err(status)?;
    let mut supply = pb::SupplyRequest {
        computer: DEMO_COMPUTER.into(),
        url: DEMO_SOFTWARE.into(),
        ..Default::default()
    };
    supply.set_state(pb::SupplyState::Available);
    operator
        .supply(as_actor(supply, OPERATOR)?)
        .await
        .map_err(status)?;
    let mut placements = BTreeMap::new();
    for title in DEMO_INSTANCES {
        let request = pb::RequestInstanceRequest {
            title: title.into(),
            software_release: DEMO_SOFTWARE.into(),
            software_type: "default".into(),
            parameters: HashMap::from([("demo".to_string(), "yes".to_string())]),
            ..Default::default()
        };
        let reply = user
            .request_instance(as_actor(request, DEMO_USER)?)
            .await
            .map_err(status)?;
        placements.insert(title.to_string(), reply.into_inner());
    }
    Ok(placements)
}

/// A computer with `slappartN` partitions, each with a user, a directory, a tap and an IPv6
/// and a local IPv4 address, as `slapos node format` would report it.
fn demo_computer() -> pb::RegisterComputerRequest {
    pb::RegisterComputerRequest {
        computer: DEMO_COMPUTER.into(),
        address: "2001:db8::1".into(),
        netmask: "ffff:ffff:ffff:ffff::".into(),
        instance_root: "/srv/slapgrid".into(),
        software_root: "/opt/slapgrid".into(),
        os_type: "linux".into(),
        attributes: HashMap::from([("region".to_string(), "dev".to_string())]),
        set_attributes: true,
        partitions: (0..DEMO_PARTITIONS)
            .map(|n| pb::PartitionDefinition {
                reference: format!("slappart{n}"),
                path: format!("/srv/slapgrid/slappart{n}"),
                addresses: vec![
                    pb::NetworkAddress {
                        addr: format!("2001:db8::1:{n:x}"),
                        netmask: "ffff:ffff:ffff:ffff::".into(),
                    },
                    pb::NetworkAddress {
                        addr: format!("10.0.0.{}", n + 2),
                        netmask: "255.255.255.0".into(),
                    },
                ],
                tap: format!("slaptap{n}"),
                user: format!("slapuser{n}"),
            })
            .collect(),
        ..Default::default()
    }
}

/// The dev cluster's own CA and certificates, under `data_dir`: made once, reused by every
/// restart.
struct Certificates {
    ca: PathBuf,
    dir: PathBuf,
}

impl Certificates {
    fn make(data_dir: &Path, host: IpAddr) -> Result<Self, DaemonError> {
        let certificates = Self {
            ca: data_dir.join("ca"),
            dir: data_dir.join("certs"),
        };
        if !certificates.ca.join("root.key").exists() {
            super::ca_init(&certificates.ca, "dev")?;
        }
        let server_names = vec![host.to_string()];
        let mut wanted = vec![
            ("operator".to_string(), OPERATOR.to_string(), Vec::new()),
            ("user".to_string(), DEMO_USER.to_string(), Vec::new()),
            (
                "computer".to_string(),
                format!("computer:{DEMO_COMPUTER}"),
                Vec::new(),
            ),
        ];
        for id in 1..=3 {
            wanted.push((
                format!("replica-{id}"),
                format!("replica:{id}"),
                server_names.clone(),
            ));
        }
        for (name, identity, names) in wanted {
            let out = certificates.dir.join(&name);
            if !out.join("key.pem").exists() {
                super::cert_issue(&certificates.ca, &identity, names, None, None, &out)?;
            }
        }
        Ok(certificates)
    }

    fn load(&self, name: &str) -> Result<crate::tls::TlsMaterial, DaemonError> {
        let dir = self.dir.join(name);
        crate::tls::TlsMaterial::read_dir(&dir).map_err(|source| DaemonError::Io {
            what: format!("reading {}", dir.display()),
            source,
        })
    }
}
