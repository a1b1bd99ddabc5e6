//! The user service: the catalog, supply, instances and usage.

use std::sync::Arc;

use slapcluster_api::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert::{self, computer_id, invalid};
use super::{caller, consistency, failed, write, write_reply};
use crate::replica::ReplicaCore;
use crate::state::model::{Actor, AlertSubject, InstanceGuid, PartitionRef};
use crate::state::policy::{self, Operation, Target};
use crate::state::query;
use crate::state::{Op, Outcome, status};

pub struct UserService {
    pub(in crate::grpc) core: Arc<ReplicaCore>,
}

type Reply<T> = Result<Response<T>, Status>;

/// Alerts listed when the caller names no limit.
const DEFAULT_ALERTS: usize = 1000;

#[tonic::async_trait]
impl pb::user_server::User for UserService {
    async fn list_software_releases(
        &self,
        request: Request<pb::ListSoftwareReleasesRequest>,
    ) -> Reply<pb::ListSoftwareReleasesReply> {
        caller(&self.core, &request)?;
        let catalog = self
            .core
            .read(consistency(request.get_ref().consistency), |txn| {
                query::catalog(txn)
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ListSoftwareReleasesReply {
            software_releases: catalog
                .into_iter()
                .map(|release| pb::SoftwareRelease {
                    url: release.url.0,
                    title: release.title,
                    software_types: release.software_types.into_iter().collect(),
                    published_at: release.published_at.0,
                })
                .collect(),
        }))
    }

    async fn publish_software_release(
        &self,
        request: Request<pb::PublishSoftwareReleaseRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::PublishSoftwareRelease {
            url: convert::required("url", &request.url)?.into(),
            title: request.title,
            software_types: request.software_types,
        };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn supply(&self, request: Request<pb::SupplyRequest>) -> Reply<pb::SupplyReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let op = Op::Supply {
            computer: computer_id("computer", &request.computer)?,
            url: convert::required("url", &request.url)?.into(),
            state: convert::supply_state(request.state)?,
        };
        let (outcome, index) = write(&self.core, actor, op).await?;
        let placed = match outcome {
            Outcome::Placed { placed } => placed,
            _ => 0,
        };
        Ok(Response::new(pb::SupplyReply { index, placed }))
    }

    async fn request_instance(
        &self,
        request: Request<pb::RequestInstanceRequest>,
    ) -> Reply<pb::RequestInstanceReply> {
        let actor = caller(&self.core, &request)?;
        let op = Op::RequestInstance(convert::instance_request(request.into_inner())?);
        let (outcome, index) = write(&self.core, actor, op).await?;
        let Outcome::Instance(summary) = outcome else {
            return Err(Status::internal(format!(
                "a request answered {outcome:?} instead of an instance"
            )));
        };
        let mut reply = pb::RequestInstanceReply {
            index,
            guid: summary.guid.to_string(),
            title: summary.title,
            placement: Some(convert::pb_placement(&summary.placement)),
            timestamp: summary.timestamp.0,
            changed: summary.changed,
            ..Default::default()
        };
        reply.set_requested_state(convert::pb_requested_state(summary.requested_state));
        Ok(Response::new(reply))
    }

    async fn show_instance(
        &self,
        request: Request<pb::ShowInstanceRequest>,
    ) -> Reply<pb::ShowInstanceReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        enum By {
            Guid(InstanceGuid),
            Title(crate::state::model::UserId, String),
        }
        let by = match request.instance {
            Some(pb::show_instance_request::Instance::Guid(guid)) => {
                By::Guid(convert::guid("guid", &guid)?)
            }
            Some(pb::show_instance_request::Instance::Title(title)) => match &actor {
                Actor::User(user) | Actor::Operator(user) => By::Title(user.clone(), title),
                _ => return Err(invalid("title", "only users name instances by title")),
            },
            None => return Err(invalid("instance", "give a guid or a title")),
        };
        let reader = actor.clone();
        let now = crate::replica::now();
        let found = self
            .core
            .read(consistency(request.consistency), move |txn| {
                let guid = match by {
                    By::Guid(guid) => Some(guid),
                    By::Title(user, title) => query::root_by_title(txn, &user, &title)?,
                };
                let Some(guid) = guid else { return Ok(None) };
                let Some(view) = query::instance(txn, guid)? else {
                    return Ok(None);
                };
                let facts = query::reader_facts(txn, &reader, &view.instance)?;
                let explanation = query::explain(txn, guid)?;
                let node = query::node_status(txn, &view.instance.placement, now)?;
                let history = query::history(txn, &AlertSubject::Instance(guid))?;
                Ok(Some((view, explanation, facts, node, history)))
            })
            .await
            .map_err(|e| failed(&e))?;
        let (view, explanation, facts, node, history) =
            found.ok_or_else(|| Status::not_found("no such instance"))?;
        policy::decide(
            &actor,
            Operation::ReadInstance,
            facts.target(&view.instance),
        )?;
        let health = status::instance(&view.instance, node.as_ref());
        Ok(Response::new(pb::ShowInstanceReply {
            health: health.health.as_str().to_string(),
            health_reason: health.why,
            history: convert::pb_history(history),
            instance: Some(convert::pb_instance_view(&view)),
            shared_instances: convert::pb_shared_instances(&view),
            explanation: explanation.map_or_else(String::new, |e| e.text(&view.instance)),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesReply> {
        let (Actor::User(user) | Actor::Operator(user)) = caller(&self.core, &request)? else {
            return Err(Status::permission_denied("only users own instances"));
        };
        let instances = self
            .core
            .read(consistency(request.get_ref().consistency), move |txn| {
                let mut views = Vec::new();
                for instance in query::instances_of(txn, &user)? {
                    if let Some(view) = query::instance(txn, instance.guid)? {
                        views.push(view);
                    }
                }
                Ok(views)
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ListInstancesReply {
            instances: instances.iter().map(convert::pb_instance_view).collect(),
        }))
    }

    async fn destroy_instance(
        &self,
        request: Request<pb::DestroyInstanceRequest>,
    ) -> Reply<pb::WriteReply> {
        let actor = caller(&self.core, &request)?;
        let instance = convert::guid("guid", &request.get_ref().guid)?;
        let op = Op::DestroyInstance { instance };
        Ok(Response::new(write_reply(
            write(&self.core, actor, op).await?,
        )))
    }

    async fn usage(&self, request: Request<pb::UsageRequest>) -> Reply<pb::UsageReply> {
        let actor = caller(&self.core, &request)?;
        let request = request.into_inner();
        let computer = computer_id("computer", &request.computer)?;
        policy::decide(&actor, Operation::ReadUsage, Target::Computer(&computer))?;
        let partition = convert::optional(request.partition).map(PartitionRef);
        let bound = |v: u64| (v > 0).then_some(v);
        let (from, until) = (bound(request.from), bound(request.until));
        let (records, reports) = self
            .core
            .read(consistency(request.consistency), move |txn| {
                Ok((
                    query::usage(txn, &computer, partition.as_ref(), from, until)?,
                    query::usage_reports(txn, &computer, partition.as_ref(), from, until)?,
                ))
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::UsageReply {
            records: records.into_iter().map(convert::pb_usage_record).collect(),
            reports: reports.into_iter().map(convert::pb_usage_report).collect(),
        }))
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Reply<pb::ListAlertsReply> {
        let actor = caller(&self.core, &request)?;
        policy::decide(&actor, Operation::ReadAlerts, Target::Cluster)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_ALERTS,
            // A page, never the whole table.
            n => usize::try_from(u64::from(n).min(crate::state::ALERTS_KEPT))
                .unwrap_or(DEFAULT_ALERTS),
        };
        let alerts = self
            .core
            .read(consistency(request.consistency), move |txn| {
                query::alerts(txn, request.closed, limit, |alert| {
                    let role = query::role(txn, &actor, &alert.project)?;
                    let target = Target::Alert {
                        owner: alert.owner.as_ref(),
                        role,
                    };
                    Ok(policy::decide(&actor, Operation::ReadAlerts, target).is_ok())
                })
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(Response::new(pb::ListAlertsReply {
            alerts: alerts.into_iter().map(convert::pb_alert).collect(),
        }))
    }
}
