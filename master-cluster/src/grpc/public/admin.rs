//! The admin service: cluster status, membership and backups, for operators. Membership
//! changes are the leader's to make: a follower passes them to the leader (once: a call that
//! reaches a replica which lost the leadership meanwhile answers Unavailable, to retry).

use openraft::async_runtime::WatchReceiver as _;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{ACTOR_HEADER, caller, convert::invalid, failed, unavailable, write, write_reply};
use crate::replica::{Consistency, MembershipError, ReadError, ReplicaCore};
use crate::state::model::{
    Actor, AlertSubject, AllocationScope, ProjectId, ProjectRole, Quota, UserId,
};
use crate::state::policy::{self, Operation, ProjectFacts, Target};
use crate::state::{Op, ReplicaNode};

/// Marks a membership change a follower passed on, so that it is passed on at most once.
const FORWARDED_HEADER: &str = "slapcluster-forwarded";

/// Backups stream in chunks of this size.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The longest `AddMember` waits for a learner to catch up.
const MAX_CATCH_UP_WAIT: Duration = Duration::from_secs(600);
/// How long a leader transfer waits for the new leader, unless the caller says.
const DEFAULT_TRANSFER_WAIT: Duration = Duration::from_secs(10);
const MAX_TRANSFER_WAIT: Duration = Duration::from_secs(60);

pub struct AdminService {
    pub(in crate::grpc) core: Arc<ReplicaCore>,
}

type Reply<T> = Result<Response<T>, Status>;

/// The operator making the call, if the policy lets the caller perform `operation` on the
/// cluster (only operators may); anyone else is refused.
fn operator<T>(
    core: &ReplicaCore,
    request: &Request<T>,
    operation: Operation,
) -> Result<UserId, Status> {
    let actor = caller(core, request)?;
    policy::decide(&actor, operation, Target::Cluster)?;
    match actor {
        Actor::Operator(name) => Ok(name),
        other => Err(Status::permission_denied(format!(
            "{other} is not an operator"
        ))),
    }
}

fn membership_status(error: MembershipError) -> Status {
    match error {
        MembershipError::NotLeader { .. } | MembershipError::InProgress(_) => {
            Status::unavailable(error.to_string())
        }
        MembershipError::Refused(_) => Status::failed_precondition(error.to_string()),
        MembershipError::Stopped(_) => Status::unavailable(error.to_string()),
        MembershipError::CatchingUp { .. } => {
            Status::deadline_exceeded(format!("{error}; promote it once it has caught up"))
        }
        MembershipError::NotYet(_) => Status::deadline_exceeded(error.to_string()),
    }
}

impl AdminService {
    /// Runs a membership change here, or passes it to the leader when this replica does not
    /// lead.
    async fn on_leader<T, R, Fut>(
        &self,
        request: Request<T>,
        here: impl AsyncFnOnce(&ReplicaCore, &T) -> Result<R, MembershipError>,
        there: impl FnOnce(AdminClient<Channel>, Request<T>) -> Fut,
    ) -> Reply<R>
    where
        Fut: Future<Output = Reply<R>>,
    {
        let operator = operator(&self.core, &request, Operation::ChangeMembership)?;
        let leader = match here(&self.core, request.get_ref()).await {
            Ok(reply) => return Ok(Response::new(reply)),
            Err(MembershipError::NotLeader {
                leader: Some((_, addr)),
                ..
            }) if request.metadata().get(FORWARDED_HEADER).is_none() => addr,
            Err(e) => return Err(membership_status(e)),
        };
        let channel = self
            .core
            .peers()
            .channel(&leader)
            .map_err(|e| Status::unavailable(format!("leader address {leader}: {e}")))?;
        let (_, extensions, message) = request.into_parts();
        let mut forwarded = Request::from_parts(MetadataMap::new(), extensions, message);
        // This replica vouches for the operator it authenticated (by certificate over TLS):
        // the leader sees the call as theirs, not as this replica's.
        let actor = format!("operator:{}", operator.as_str())
            .parse()
            .map_err(|_| Status::invalid_argument("the operator's name cannot be passed on"))?;
        forwarded.metadata_mut().insert(ACTOR_HEADER, actor);
        forwarded.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        there(AdminClient::new(channel), forwarded).await
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::CreateProject {
            project: project_id(&request.project)?,
            title: if request.title.is_empty() {
                request.project
            } else {
                request.title
            },
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Reply<pb::ListProjectsReply> {
        let actor = caller(&self.core, &request)?;
        policy::decide(&actor, Operation::ReadProject, Target::Cluster)?;
        let consistency = super::consistency(request.into_inner().consistency);
        let user = match &actor {
            Actor::User(user) => Some(user.clone()),
            _ => None,
        };
        let projects = self
            .core
            .read(consistency, move |txn| {
                crate::state::query::projects(txn, user.as_ref())
            })
            .await
            .map_err(|e| failed(&e))?;
        let operator = matches!(actor, Actor::Operator(_));
        Ok(Response::new(pb::ListProjectsReply {
            projects: projects
                .into_iter()
                .filter(|(_, role)| operator || role.is_some())
                .map(|(project, role)| pb::ProjectSummary {
                    project: project.id.0,
                    title: project.title,
                    role: role.map_or("", ProjectRole::as_str).to_string(),
                })
                .collect(),
        }))
    }

    async fn show_project(
        &self,
        request: Request<pb::ShowProjectRequest>,
    ) -> Reply<pb::ShowProjectReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let id = project_id(&request.project)?;
        let (wanted, reader) = (id.clone(), actor.clone());
        let found = self
            .core
            .read(super::consistency(request.consistency), move |txn| {
                let role = crate::state::query::role(txn, &reader, &wanted)?;
                Ok(crate::state::query::project(txn, &wanted)?.map(|p| (p, role)))
            })
            .await
            .map_err(|e| failed(&e))?;
        let not_found = || Status::not_found(format!("no project {id}"));
        let Some(((project, members), role)) = found else {
            // Whether a project exists is its people's and the operators' to know.
            policy::decide(&actor, Operation::ReadProject, project_target(&id, None))?;
            return Err(not_found());
        };
        policy::decide(&actor, Operation::ReadProject, project_target(&id, role))?;
        Ok(Response::new(pb::ShowProjectReply {
            project: project.id.0,
            title: project.title,
            everyone: project.everyone.map_or("", ProjectRole::as_str).to_string(),
            members: members
                .into_iter()
                .map(|(user, role)| pb::ProjectMember {
                    user: user.0,
                    role: role.as_str().to_string(),
                })
                .collect(),
            created_at: project.created_at.0,
        }))
    }

    async fn set_project_member(
        &self,
        request: Request<pb::SetProjectMemberRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let role = match request.role.as_str() {
            "" => None,
            name => Some(ProjectRole::parse(name).ok_or_else(|| {
                invalid(
                    "role",
                    format!("{name:?}: give manager, customer, or nothing"),
                )
            })?),
        };
        let op = Op::SetProjectMember {
            project: project_id(&request.project)?,
            user: super::convert::required("user", &request.user)?.into(),
            role,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn move_computer(
        &self,
        request: Request<pb::MoveComputerRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::MoveComputer {
            computer: super::convert::computer_id("computer", &request.computer)?,
            project: project_id(&request.project)?,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::SetQuota {
            user: (!request.user.is_empty()).then(|| request.user.as_str().into()),
            quota: request.quota.map(|q| Quota {
                instances: q.instances,
                pending: q.pending,
                parameter_bytes: q.parameter_bytes,
            }),
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn show_quota(
        &self,
        request: Request<pb::ShowQuotaRequest>,
    ) -> Reply<pb::ShowQuotaReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let user: Option<UserId> = match (request.default, request.user.as_str(), &actor) {
            (true, ..) => None,
            (false, "", Actor::User(own) | Actor::Operator(own)) => Some(own.clone()),
            (false, "", other) => {
                return Err(Status::invalid_argument(format!(
                    "{other} has no quota: name a user"
                )));
            }
            (false, named, _) => Some(named.into()),
        };
        let target = user.as_ref().map_or(Target::Cluster, Target::Person);
        policy::decide(&actor, Operation::ReadQuota, target)?;
        let wanted = user.clone();
        let (quota, own, held) = self
            .core
            .read(super::consistency(request.consistency), move |txn| {
                crate::state::query::quota(txn, wanted.as_ref())
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ShowQuotaReply {
            user: user.map(|u| u.0).unwrap_or_default(),
            quota: Some(pb::Quota {
                instances: quota.instances,
                pending: quota.pending,
                parameter_bytes: quota.parameter_bytes,
            }),
            held: Some(pb::Quota {
                instances: held.instances,
                pending: held.pending,
                parameter_bytes: held.parameter_bytes,
            }),
            own,
        }))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Reply<pb::ClusterStatusReply> {
        operator(&self.core, &request, Operation::ReadClusterStatus)?;
        Ok(Response::new(super::convert::cluster_status_reply(
            self.core.cluster_status().await,
        )))
    }

    async fn replica_status(
        &self,
        request: Request<pb::ReplicaStatusRequest>,
    ) -> Reply<pb::ReplicaStatusReply> {
        // Replicas ask each other for a cluster status: any authenticated caller may ask (in
        // plaintext, without naming itself).
        if self.core.tls().is_some() {
            caller(&self.core, &request)?;
        }
        let mut reply = super::convert::replica_status_reply(self.core.local_status());
        if request.get_ref().state_digest {
            let (index, digest) = self.core.state_digest().await.map_err(|e| failed(&e))?;
            reply.digest_index = index;
            reply.state_digest = digest;
        }
        Ok(Response::new(reply))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Reply<pb::MembershipReply> {
        let add = request.get_ref();
        if add.id == 0 {
            return Err(invalid("id", "replica ids start at 1"));
        }
        if !(add.addr.starts_with("http://") || add.addr.starts_with("https://")) {
            return Err(invalid("addr", "say http://[host]:port"));
        }
        let wait = Duration::from_millis(add.wait_ms.into());
        if wait > MAX_CATCH_UP_WAIT {
            return Err(invalid("wait_ms", "at most ten minutes"));
        }
        self.on_leader(
            request,
            async |core, add| {
                let node = ReplicaNode {
                    addr: add.addr.clone(),
                    region: add.region.clone(),
                };
                let index = core.add_learner(add.id, node, wait).await?;
                if add.promote {
                    return core
                        .promote(BTreeSet::from([add.id]))
                        .await
                        .map(|index| pb::MembershipReply { index });
                }
                Ok(pb::MembershipReply { index })
            },
            async |mut client, request| client.add_member(request).await,
        )
        .await
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Reply<pb::MembershipReply> {
        self.on_leader(
            request,
            async |core, promote| {
                let index = core.promote(BTreeSet::from([promote.id])).await?;
                Ok(pb::MembershipReply { index })
            },
            async |mut client, request| client.promote_member(request).await,
        )
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::MembershipReply> {
        self.on_leader(
            request,
            async |core, remove| {
                // Who answers decides whether the removal keeps a quorum; only the leader
                // removes (elsewhere the call is passed on), so only the leader asks.
                let answering: BTreeSet<u64> =
                    if core.raft().metrics().borrow_watched().current_leader == Some(core.id()) {
                        core.member_statuses(&core.members())
                            .await
                            .into_keys()
                            .collect()
                    } else {
                        BTreeSet::new()
                    };
                let index = core.remove(BTreeSet::from([remove.id]), &answering).await?;
                Ok(pb::MembershipReply { index })
            },
            async |mut client, request| client.remove_member(request).await,
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Reply<pb::TransferLeaderReply> {
        let wait = match request.get_ref().wait_ms {
            0 => DEFAULT_TRANSFER_WAIT,
            ms => Duration::from_millis(ms.into()),
        };
        if wait > MAX_TRANSFER_WAIT {
            return Err(invalid("wait_ms", "at most a minute"));
        }
        self.on_leader(
            request,
            async |core, transfer| {
                let (leader, term) = core.transfer_leader(transfer.id, wait).await?;
                Ok(pb::TransferLeaderReply { leader, term })
            },
            async |mut client, request| client.transfer_leader(request).await,
        )
        .await
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::RevokeCertificate {
            serial: canonical_serial(&request.serial),
            reason: request.reason,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Reply<pb::EnrollmentToken> {
        let actor = caller(&self.core, &request)?;
        policy::decide(&actor, Operation::CreateEnrollmentToken, Target::Cluster)?;
        let request = request.into_inner();
        let computer = super::convert::computer_id("computer", &request.computer)?;
        let token = super::enroll::new_token(request.valid_seconds)?;
        let op = Op::CreateEnrollmentToken {
            token_hash: crate::replica::signing::token_hash(&token.token),
            computer,
            expires_at: crate::state::model::Timestamp(token.expires_at),
        };
        write(&self.core, actor, op).await?;
        Ok(Response::new(token))
    }

    async fn create_credential_token(
        &self,
        request: Request<pb::CreateCredentialTokenRequest>,
    ) -> Reply<pb::EnrollmentToken> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let user = UserId::from(super::convert::required("user", &request.user)?);
        policy::decide(
            &actor,
            Operation::CreateCredentialToken,
            Target::Person(&user),
        )?;
        let token = super::enroll::new_token(request.valid_seconds)?;
        let op = Op::CreateCredentialToken {
            token_hash: crate::replica::signing::token_hash(&token.token),
            user,
            expires_at: crate::state::model::Timestamp(token.expires_at),
        };
        write(&self.core, actor, op).await?;
        Ok(Response::new(token))
    }

    async fn list_computers(
        &self,
        request: Request<pb::ListComputersRequest>,
    ) -> Reply<pb::ListComputersReply> {
        let actor = caller(&self.core, &request)?;
        policy::decide(&actor, Operation::ListComputers, Target::Cluster)?;
        let consistency = super::consistency(request.get_ref().consistency);
        let reader = actor.clone();
        let computers = self
            .core
            .read(consistency, move |txn| {
                let (_, computers) = crate::state::query::computers_with_liveness(txn, usize::MAX)?;
                let silence = crate::state::query::silence(txn)?;
                // Those the caller may inspect: every one for an operator, a manager's
                // projects' for a person.
                let mut visible = Vec::new();
                for (computer, seen) in computers {
                    let role = crate::state::query::role(txn, &reader, &computer.project)?;
                    let target = policy::computer_target(&computer, role);
                    if policy::decide(&reader, Operation::InspectComputer, target).is_ok() {
                        visible.push(super::convert::pb_computer_summary(
                            &computer, seen, silence,
                        ));
                    }
                }
                Ok(visible)
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ListComputersReply { computers }))
    }

    async fn show_computer(
        &self,
        request: Request<pb::ShowComputerRequest>,
    ) -> Reply<pb::ShowComputerReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let id = super::convert::computer_id("computer", &request.computer)?;
        let (wanted, reader) = (id.clone(), actor.clone());
        let found = self
            .core
            .read(super::consistency(request.consistency), move |txn| {
                let Some(view) = crate::state::query::computer_view(txn, &wanted)? else {
                    return Ok(None);
                };
                let role = crate::state::query::role(txn, &reader, &view.computer.project)?;
                let silence = crate::state::query::silence(txn)?;
                let subject = AlertSubject::Computer(wanted);
                let history = crate::state::query::history(txn, &subject)?;
                Ok(Some((view, role, silence, history)))
            })
            .await
            .map_err(|e| failed(&e))?;
        let Some((view, role, silence, history)) = found else {
            // Whether it exists is for those who could see it.
            policy::decide(&actor, Operation::InspectComputer, Target::Computer(&id))?;
            return Err(Status::not_found(format!(
                "no computer {id}; `slapctl computer list` shows the known ones"
            )));
        };
        policy::decide(
            &actor,
            Operation::InspectComputer,
            policy::computer_target(&view.computer, role),
        )?;
        Ok(Response::new(super::convert::pb_computer_details(
            view, silence, history,
        )))
    }

    async fn set_allocation_scope(
        &self,
        request: Request<pb::SetAllocationScopeRequest>,
    ) -> Reply<pb::AllocationScopeReply> {
        // Operators and the computer's project's managers: apply decides, from the state.
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let scope = match request.scope.as_str() {
            "" if request.open => AllocationScope::OpenPublic,
            "" => AllocationScope::CloseNoAllocation,
            name => AllocationScope::parse(name).ok_or_else(|| {
                invalid(
                    "scope",
                    format!(
                        "{name:?} is not an allocation scope; one of {}",
                        AllocationScope::ALL.map(AllocationScope::as_str).join(", ")
                    ),
                )
            })?,
        };
        let op = Op::SetAllocationScope {
            computer: super::convert::computer_id("computer", &request.computer)?,
            scope,
        };
        let (outcome, index) = write(&self.core, actor, op).await?;
        Ok(Response::new(pb::AllocationScopeReply {
            index,
            changed: outcome != crate::state::Outcome::Unchanged,
            placed: match outcome {
                crate::state::Outcome::Placed { placed } => placed,
                _ => 0,
            },
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Reply<pb::ListCertificatesReply> {
        operator(&self.core, &request, Operation::ListCertificates)?;
        let certificates = self
            .core
            .read(Consistency::Linearizable, crate::state::query::certificates)
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ListCertificatesReply {
            certificates: certificates
                .into_iter()
                .map(|(c, revocation)| pb::CertificateRecord {
                    serial: c.serial,
                    identity: c.identity,
                    not_after: c.not_after.0,
                    issued_at: c.issued_at.0,
                    issued_by: c.issued_by.to_string(),
                    revoked: revocation.is_some(),
                    revocation_reason: revocation.map(|r| r.reason).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Reply<pb::IssueCertificateReply> {
        let name = operator(&self.core, &request, Operation::IssueCertificate)?;
        let request = request.into_inner();
        let identity = ca::Identity::parse_uri(&format!(
            "urn:slapcluster:{}",
            request.identity.replacen('/', ":", 1)
        ))
        .map_err(|e| invalid("identity", e))?;
        if matches!(identity.role(), ca::Role::Replica | ca::Role::Operator) {
            return Err(Status::permission_denied(format!(
                "{} certificates come from the root CA, offline: `slapmaster cert issue \
                 --ca-dir ...`",
                identity.role().as_str()
            )));
        }
        let lifetime = match request.days {
            0 => ca::Lifetimes::default().leaf(identity.role()),
            days if days > 397 => return Err(invalid("days", "at most 397")),
            days => Duration::from_secs(u64::from(days) * 24 * 3600),
        };
        let signed = crate::replica::signing::sign(
            &self.core,
            &request.csr_pem,
            &identity,
            lifetime,
            Actor::Operator(name),
        )
        .await
        .map_err(|e| super::enroll::sign_failed(&e))?;
        tracing::info!(%identity, serial = %signed.serial, "issued a certificate");
        Ok(Response::new(pb::IssueCertificateReply {
            chain_pem: signed.chain_pem,
            roots_pem: signed.roots_pem,
            serial: signed.serial,
            not_after: signed.not_after,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Reply<SnapshotStream> {
        operator(&self.core, &request, Operation::TakeSnapshot)?;
        // Every write acknowledged before the call is in the backup.
        self.core
            .read_barrier(Consistency::Linearizable)
            .await
            .map_err(|e| unavailable(&e))?;
        let snapshot = self
            .core
            .state()
            .build_snapshot_now()
            .await
            .map_err(|e| failed(&ReadError::Storage(e)))?;
        tracing::info!(meta = %snapshot.meta, "streaming a backup");
        let (chunks, stream) = tokio::sync::mpsc::channel(4);
        let mut file = snapshot.file;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            loop {
                let mut data = vec![0; SNAPSHOT_CHUNK_BYTES];
                let chunk = match file.read(&mut data) {
                    Ok(0) => return,
                    Ok(n) => {
                        data.truncate(n);
                        Ok(pb::SnapshotChunk { data })
                    }
                    Err(e) => Err(Status::internal(format!("reading the snapshot: {e}"))),
                };
                let failed = chunk.is_err();
                if chunks.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }
}

fn project_id(value: &str) -> Result<ProjectId, Status> {
    Ok(super::convert::required("project", value)?.into())
}

fn project_target(project: &ProjectId, role: Option<ProjectRole>) -> Target<'_> {
    Target::Project(ProjectFacts {
        project,
        role,
        computer: None,
    })
}

/// A serial as the cluster names certificates (`ca::Serial`: lowercase hex, no leading zero
/// bytes), from the forms people paste: openssl's upper case, colon-separated bytes.
fn canonical_serial(serial: &str) -> String {
    let hex: String = serial
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut rest = hex.as_str();
    while rest.len() > 2 && rest.len().is_multiple_of(2) && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::canonical_serial;

    #[test]
    fn serials_pasted_from_openssl_name_the_same_certificate() {
        assert_eq!(canonical_serial("1A2B3C"), "1a2b3c");
        assert_eq!(canonical_serial(" 1a:2B:3c "), "1a2b3c");
        assert_eq!(canonical_serial("00E1F2"), "e1f2");
        assert_eq!(canonical_serial("00"), "00");
        assert_eq!(
            canonical_serial("not hex"),
            "not hex",
            "left for apply to refuse"
        );
    }
}
