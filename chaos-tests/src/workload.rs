//! The clients: workers that, for the length of a run, send instance requests (several
//! workers on purpose on the same titles), requested-state changes, connection-parameter
//! publishes (as the computer), reads at both consistency levels, and calls the
//! authorisation policy must refuse (intrusions), each to a replica picked at random, and
//! record every operation in the history. The two users are customers of two projects; the
//! computer is the first project's, open to every project.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use tokio::sync::Mutex;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

use crate::ChaosError;
use crate::cluster::Cluster;
use crate::history::{Call, Freshness, Intrusion, Op, Outcome, Requested, Seen};
use crate::rng::Rng;

pub const COMPUTER: &str = "COMP-CHAOS";
pub const RELEASE: &str = "https://example.invalid/chaos.cfg";
pub const USERS: [&str; 2] = ["alice", "bob"];
/// Each user's project, by position: the users request their trees there.
pub const PROJECTS: [&str; 2] = ["PROJ-ALICE", "PROJ-BOB"];
/// Titles per user: few, so that workers meet on the same instances.
pub const TITLES: usize = 4;
/// Partitions of the one computer: more than the instances the workload can request.
const PARTITIONS: usize = 32;
/// A client gives up on a call after this long: its outcome is then unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything a worker needs: one lazily connected channel per replica and identity.
#[derive(Clone)]
pub struct Clients {
    users: Vec<Vec<Channel>>,
    computer: Vec<Channel>,
    operator: Vec<Channel>,
    started: Instant,
}

impl Clients {
    pub fn new(cluster: &Cluster, started: Instant) -> Result<Self, ChaosError> {
        let channels = |tls: ClientTlsConfig| -> Result<Vec<Channel>, ChaosError> {
            (0..cluster.len())
                .map(|i| {
                    client::connect_lazy_with(&cluster.client_url(i), Some(tls.clone()))
                        .map_err(|e| ChaosError::Setup(e.to_string()))
                })
                .collect()
        };
        let mut users = Vec::new();
        for user in USERS {
            users.push(channels(cluster.credentials(&format!("user:{user}"))?)?);
        }
        Ok(Self {
            users,
            computer: channels(cluster.credentials(&format!("computer:{COMPUTER}"))?)?,
            operator: channels(cluster.operator())?,
            started,
        })
    }

    pub fn replicas(&self) -> usize {
        self.computer.len()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The projects, the computer, its partitions and the release, before the workload
    /// starts.
    pub async fn setup(&self) -> Result<(), ChaosError> {
        let status = |e: Status| ChaosError::Setup(format!("setting up the workload: {e}"));
        let mut admin = AdminClient::new(self.operator[0].clone());
        for (user, project) in USERS.iter().zip(PROJECTS) {
            admin
                .create_project(pb::CreateProjectRequest {
                    project: project.into(),
                    title: format!("{user}'s"),
                })
                .await
                .map_err(status)?;
            admin
                .set_project_member(pb::SetProjectMemberRequest {
                    project: project.into(),
                    user: (*user).into(),
                    role: "customer".into(),
                })
                .await
                .map_err(status)?;
        }
        let mut operator = UserClient::new(self.operator[0].clone());
        operator
            .publish_software_release(pb::PublishSoftwareReleaseRequest {
                url: RELEASE.into(),
                title: "chaos".into(),
                software_types: vec!["default".into()],
            })
            .await
            .map_err(status)?;
        NodeClient::new(self.computer[0].clone())
            .register_computer(pb::RegisterComputerRequest {
                computer: COMPUTER.into(),
                partitions: (0..PARTITIONS)
                    .map(|p| pb::PartitionDefinition {
                        reference: format!("slappart{p}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        admin
            .move_computer(pb::MoveComputerRequest {
                computer: COMPUTER.into(),
                project: PROJECTS[0].into(),
            })
            .await
            .map_err(status)?;
        admin
            .set_allocation_scope(pb::SetAllocationScopeRequest {
                computer: COMPUTER.into(),
                scope: "open/public".into(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        operator
            .supply(pb::SupplyRequest {
                computer: COMPUTER.into(),
                url: RELEASE.into(),
                state: pb::SupplyState::Available.into(),
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Runs one operation against replica `replica` and records it.
    pub async fn perform(&self, worker: usize, replica: usize, key: &Key, call: Call) -> Op {
        let invoked_us = self.now_us();
        let answer = tokio::time::timeout(CALL_TIMEOUT, self.call(replica, key, &call)).await;
        let outcome = match answer {
            Ok(Ok(seen)) => Outcome::Ok(seen),
            Ok(Err(status)) => classify(&call, &status),
            Err(_) => match call {
                Call::Read { .. } => Outcome::Failed("timed out".into()),
                _ => Outcome::Unknown("timed out".into()),
            },
        };
        Op {
            worker,
            replica,
            key: key.to_string(),
            call,
            invoked_us,
            completed_us: self.now_us(),
            outcome,
        }
    }

    /// Requests `key` (started, with the next `v`) through `replicas` in turn, 50 ms apart,
    /// until one acknowledges or `deadline` passes. Returns the operations, and the replica
    /// that acknowledged.
    pub async fn write_until_acknowledged(
        &self,
        worker: usize,
        replicas: &[usize],
        key: &Key,
        v: &mut u64,
        deadline: Instant,
    ) -> (Vec<Op>, Option<usize>) {
        let mut ops = Vec::new();
        for &replica in replicas.iter().cycle() {
            if Instant::now() >= deadline {
                break;
            }
            *v += 1;
            let write = Call::Request {
                v: *v,
                state: Requested::Started,
            };
            let op = self.perform(worker, replica, key, write).await;
            let acknowledged = matches!(op.outcome, Outcome::Ok(_));
            ops.push(op);
            if acknowledged {
                return (ops, Some(replica));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ops, None)
    }

    async fn call(&self, replica: usize, key: &Key, call: &Call) -> Result<Option<Seen>, Status> {
        let channel = self.users[key.user][replica].clone();
        match call {
            Call::Request { v, state } => {
                let reply = UserClient::new(channel)
                    .request_instance(pb::RequestInstanceRequest {
                        title: key.title(),
                        software_release: RELEASE.into(),
                        parameters: [("v".to_owned(), v.to_string())].into(),
                        state: match state {
                            Requested::Started => pb::RequestedState::Started,
                            Requested::Stopped => pb::RequestedState::Stopped,
                        }
                        .into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(Some(Seen {
                    guid: reply.guid,
                    v: None,
                    state: None,
                    c: None,
                    partition: partition_of(reply.placement.as_ref()),
                }))
            }
            Call::Publish { c, partition } => {
                let (computer, reference) = partition.split_once('/').unwrap_or_default();
                NodeClient::new(self.computer[replica].clone())
                    .publish_connection(pb::PublishConnectionRequest {
                        partition: Some(pb::PartitionId {
                            computer: computer.into(),
                            partition: reference.into(),
                        }),
                        shared_reference: String::new(),
                        parameters: [("c".to_owned(), c.to_string())].into(),
                    })
                    .await?;
                Ok(None)
            }
            Call::Read { freshness } => {
                let consistency = match freshness {
                    Freshness::Linearizable => pb::Consistency::Linearizable,
                    Freshness::Stale => pb::Consistency::Stale,
                };
                let reply = UserClient::new(channel)
                    .show_instance(pb::ShowInstanceRequest {
                        instance: Some(pb::show_instance_request::Instance::Title(key.title())),
                        consistency: consistency.into(),
                    })
                    .await;
                let instance = match reply {
                    Ok(reply) => reply.into_inner().instance,
                    Err(status) if status.code() == Code::NotFound => return Ok(None),
                    Err(status) => return Err(status),
                };
                Ok(instance.map(|i| seen(&i)))
            }
            Call::Intrude { intrusion } => {
                let mut user = UserClient::new(channel.clone());
                match intrusion {
                    Intrusion::Supply => {
                        user.supply(pb::SupplyRequest {
                            computer: COMPUTER.into(),
                            url: "https://example.invalid/intruder.cfg".into(),
                            state: pb::SupplyState::Available.into(),
                        })
                        .await?;
                    }
                    Intrusion::PublishAsUser => {
                        NodeClient::new(channel)
                            .publish_connection(pb::PublishConnectionRequest {
                                partition: Some(pb::PartitionId {
                                    computer: COMPUTER.into(),
                                    partition: "slappart0".into(),
                                }),
                                shared_reference: String::new(),
                                parameters: [("c".to_owned(), "0".to_owned())].into(),
                            })
                            .await?;
                    }
                    Intrusion::RequestInOtherProject => {
                        user.request_instance(pb::RequestInstanceRequest {
                            title: "intruder".into(),
                            software_release: RELEASE.into(),
                            project: PROJECTS[1 - key.user].into(),
                            ..Default::default()
                        })
                        .await?;
                    }
                }
                Ok(None)
            }
        }
    }
}

/// What a refused call means for the history.
fn classify(call: &Call, status: &Status) -> Outcome {
    let reason = format!("{:?}: {}", status.code(), status.message());
    let definite = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::Unimplemented
    );
    // A read changes nothing, whatever happened to it; an intrusion is judged by whether it
    // succeeded.
    if definite || matches!(call, Call::Read { .. } | Call::Intrude { .. }) {
        Outcome::Failed(reason)
    } else {
        // Unavailable, a deadline, a lost connection: the write may have been committed.
        Outcome::Unknown(reason)
    }
}

fn partition_of(placement: Option<&pb::Placement>) -> Option<String> {
    match placement?.placement.as_ref()? {
        pb::placement::Placement::Partition(p) => Some(format!("{}/{}", p.computer, p.partition)),
        _ => None,
    }
}

fn seen(instance: &pb::Instance) -> Seen {
    Seen {
        guid: instance.guid.clone(),
        v: instance.parameters.get("v").and_then(|v| v.parse().ok()),
        state: match pb::RequestedState::try_from(instance.requested_state) {
            Ok(pb::RequestedState::Stopped) => Some(Requested::Stopped),
            Ok(pb::RequestedState::Started) => Some(Requested::Started),
            _ => None,
        },
        c: instance.connection.get("c").and_then(|c| c.parse().ok()),
        partition: partition_of(instance.placement.as_ref()),
    }
}

/// An instance of the workload: one of the users' titles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub user: usize,
    pub title: usize,
}

impl Key {
    /// The instance the write after healing goes to (apart from the workers' keys; not in
    /// the history).
    pub const LIVENESS: Key = Key {
        user: 0,
        title: TITLES,
    };

    /// The instance only the nemesis's probes write ([`crate::nemesis`]): apart from the
    /// workers' keys, so that its few operations are checked quickly and exactly.
    pub const PROBE: Key = Key {
        user: 1,
        title: TITLES,
    };

    /// The workers' instances.
    pub fn all() -> Vec<Key> {
        (0..USERS.len())
            .flat_map(|user| (0..TITLES).map(move |title| Key { user, title }))
            .collect()
    }

    fn title(&self) -> String {
        format!("instance-{}", self.title)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/instance-{}", USERS[self.user], self.title)
    }
}

/// Where each instance was last seen placed, shared by the workers: publishes need it.
pub type Placements = Arc<Mutex<HashMap<Key, String>>>;

/// One worker until `until`: its operations, in order.
pub async fn worker(
    clients: Clients,
    worker: usize,
    mut rng: Rng,
    until: Instant,
    placements: Placements,
) -> Vec<Op> {
    let keys = Key::all();
    let mut ops = Vec::new();
    let mut counter = 0u64;
    while Instant::now() < until {
        let replica = rng.index(clients.replicas());
        let Some(&key) = rng.pick(&keys) else {
            break;
        };
        counter += 1;
        // Unique across workers: the checker can tell every write apart.
        let unique = (u64::try_from(worker).unwrap_or(0) << 32) | counter;
        let roll = rng.below(100);
        let call = if roll < 40 {
            Call::Request {
                v: unique,
                state: if rng.chance(20) {
                    Requested::Stopped
                } else {
                    Requested::Started
                },
            }
        } else if roll < 55 {
            match placements.lock().await.get(&key) {
                Some(partition) => Call::Publish {
                    c: unique,
                    partition: partition.clone(),
                },
                None => continue,
            }
        } else if roll >= 95 {
            Call::Intrude {
                intrusion: match rng.below(3) {
                    0 => Intrusion::Supply,
                    1 => Intrusion::PublishAsUser,
                    _ => Intrusion::RequestInOtherProject,
                },
            }
        } else {
            Call::Read {
                freshness: if rng.chance(70) {
                    Freshness::Linearizable
                } else {
                    Freshness::Stale
                },
            }
        };
        let op = clients.perform(worker, replica, &key, call).await;
        if let Outcome::Ok(Some(Seen {
            partition: Some(partition),
            ..
        })) = &op.outcome
        {
            placements.lock().await.insert(key, partition.clone());
        }
        ops.push(op);
        tokio::time::sleep(rng.millis(5, 25)).await;
    }
    ops
}
