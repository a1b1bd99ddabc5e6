//! The node service: what a computer's agent calls.

use std::sync::Arc;
use std::time::Duration;

use slapcluster_api::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert::{self, computer_id, invalid};
use super::{caller, failed, unavailable, write, write_reply};
use crate::replica::ReplicaCore;
use crate::state::policy::{self, Operation, Target};
use crate::state::{Op, Outcome};

/// The longest a long-poll may hold a call open; the agent polls again after it.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(60);

pub struct NodeService {
    pub(in crate::grpc) core: Arc<ReplicaCore>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn register_computer(
        &self,
        request: Request<pb::RegisterComputerRequest>,
    ) -> Reply<pb::RegisterComputerReply> {
        let actor = caller(&self.core, &request)?;
        let definition = convert::computer_definition(request.into_inner())?;
        let (outcome, index) = write(&self.core, actor, Op::RegisterComputer(definition)).await?;
        let mut reply = pb::RegisterComputerReply {
            index,
            ..Default::default()
        };
        if let Outcome::ComputerRegistered {
            partitions_added,
            partitions_removed,
            placed,
        } = outcome
        {
            reply.partitions_added = partitions_added;
            reply.partitions_removed = partitions_removed;
            reply.placed = placed;
        }
        Ok(Response::new(reply))
    }

    async fn poll_computer(
        &self,
        request: Request<pb::PollComputerRequest>,
    ) -> Reply<pb::PollComputerReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let computer = computer_id("computer", &request.computer)?;
        policy::decide(&actor, Operation::ReadComputer, Target::Computer(&computer))?;
        let wait = Duration::from_millis(request.wait_ms.into());
        if wait > MAX_POLL_WAIT {
            return Err(invalid(
                "wait_ms",
                format!("at most {} ms", MAX_POLL_WAIT.as_millis()),
            ));
        }
        if request.max_staleness_ms > 0 {
            let bound = Duration::from_millis(request.max_staleness_ms.into());
            match self.core.leader_contact_age() {
                Some(age) if age <= bound => {}
                Some(age) => {
                    return Err(Status::unavailable(format!(
                        "this replica last heard from a leader {} ms ago, beyond the {} ms \
                         asked: ask another replica",
                        age.as_millis(),
                        bound.as_millis()
                    )));
                }
                None => {
                    return Err(Status::unavailable(
                        "this replica has not heard from a leader: ask another replica",
                    ));
                }
            }
        }
        if request.min_index > 0 {
            self.core
                .wait_applied(request.min_index, self.core.write_timeout())
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let poll = self
            .core
            .poll_computer(&computer, request.after, wait)
            .await
            .map_err(|e| failed(&e))?;
        let view = poll
            .view
            .ok_or_else(|| Status::not_found(format!("unknown computer {computer}")))?;
        let mut reply = convert::pb_computer_poll(view);
        reply.version = poll.version;
        reply.applied_index = poll.applied_index;
        // As of the answer: a long poll may have waited.
        reply.leader_contact_age_ms = self
            .core
            .leader_contact_age()
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        reply.replicas = self
            .core
            .members()
            .into_iter()
            .map(|member| pb::ReplicaEndpoint {
                id: member.id,
                voter: member.role != crate::replica::Role::Learner,
                url: member.addr,
                region: member.region,
            })
            .collect();
        Ok(Response::new(reply))
    }

    async fn report_software(
        &self,
        request: Request<pb::ReportSoftwareRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::ReportSoftware {
            computer: computer_id("computer", &request.computer)?,
            url: convert::required("url", &request.url)?.into(),
            state: convert::software_state(request.state, request.error_log)?,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn report_instance(
        &self,
        request: Request<pb::ReportInstanceRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::ReportInstance {
            partition: convert::partition_id("partition", request.partition)?,
            shared_reference: convert::optional(request.shared_reference),
            report: convert::instance_report(request.state, request.error_log)?,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn publish_connection(
        &self,
        request: Request<pb::PublishConnectionRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::PublishConnection {
            partition: convert::partition_id("partition", request.partition)?,
            shared_reference: convert::optional(request.shared_reference),
            parameters: request.parameters.into_iter().collect(),
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Reply<pb::EnrollReply> {
        // No caller to authenticate: the token is the credential.
        let request = request.into_inner();
        super::enroll::enroll(&self.core, &request.token, &request.csr_pem)
            .await
            .map(Response::new)
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Reply<pb::EnrollReply> {
        let actor = caller(&self.core, &request)?;
        let crate::state::model::Actor::Computer(computer) = &actor else {
            return Err(Status::permission_denied(format!(
                "{actor} may not renew a computer's certificate"
            )));
        };
        let presented = request
            .peer_certs()
            .and_then(|chain| chain.first().cloned())
            .ok_or_else(|| Status::failed_precondition("renewal needs a TLS client certificate"))?;
        super::enroll::renew(
            &self.core,
            computer,
            &presented,
            &request.into_inner().csr_pem,
        )
        .await
        .map(Response::new)
    }

    async fn post_usage(&self, request: Request<pb::PostUsageRequest>) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::PostUsage {
            computer: computer_id("computer", &request.computer)?,
            records: convert::usage_records(request.records),
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }
}
