//! Between the wire contract (`slapcluster_api::v1`) and the master's domain types. Decoding
//! refuses what the domain cannot represent (an unspecified enum, a malformed guid) with
//! `InvalidArgument` naming the field; the domain's own rules stay in the state machine.

use std::collections::BTreeMap;
use std::time::Duration;

use slapcluster_api::v1 as pb;
use tonic::Status;

use crate::replica::status::{ClusterStatus, ReplicaStatus};
use crate::state::model::{
    ComputerDefinition, ComputerId, Instance, InstanceGuid, NetworkAddress, PartitionDefinition,
    PartitionId, PartitionRef, Placement, ReportedState, RequestedState, Requester, SoftwareState,
    SupplyState, Timestamp, UsageMovement, UsageRecord, UsageReport,
};
use crate::state::query::{ComputerView, InstanceView, SharedInstanceView};
use crate::state::status::StatusChange;
use crate::state::{InstanceReport, InstanceRequest};

/// The software type of a request that names none, as in SlapOS.
pub const DEFAULT_SOFTWARE_TYPE: &str = "default";

pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(super::bounded(format!("invalid {field}: {reason}")))
}

/// A required identifier: empty is refused.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(invalid(field, "empty"))
    } else {
        Ok(value)
    }
}

/// An optional string: empty means absent.
pub fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

pub fn guid(field: &str, value: &str) -> Result<InstanceGuid, Status> {
    InstanceGuid::parse(value).ok_or_else(|| invalid(field, format!("{value:?} is not SOFTINST-n")))
}

pub fn partition_id(field: &str, value: Option<pb::PartitionId>) -> Result<PartitionId, Status> {
    let value = value.ok_or_else(|| invalid(field, "missing"))?;
    Ok(PartitionId {
        computer: required(field, &value.computer)?.into(),
        partition: required(field, &value.partition)?.into(),
    })
}

fn pb_partition_id(id: &PartitionId) -> pb::PartitionId {
    pb::PartitionId {
        computer: id.computer.to_string(),
        partition: id.partition.to_string(),
    }
}

pub fn requested_state(value: i32) -> Result<RequestedState, Status> {
    match pb::RequestedState::try_from(value) {
        Ok(pb::RequestedState::Started | pb::RequestedState::Unspecified) => {
            Ok(RequestedState::Started)
        }
        Ok(pb::RequestedState::Stopped) => Ok(RequestedState::Stopped),
        Ok(pb::RequestedState::Destroyed) => Ok(RequestedState::Destroyed),
        Err(_) => Err(invalid("state", format!("unknown requested state {value}"))),
    }
}

pub fn pb_requested_state(state: RequestedState) -> pb::RequestedState {
    match state {
        RequestedState::Started => pb::RequestedState::Started,
        RequestedState::Stopped => pb::RequestedState::Stopped,
        RequestedState::Destroyed => pb::RequestedState::Destroyed,
    }
}

pub fn supply_state(value: i32) -> Result<SupplyState, Status> {
    match pb::SupplyState::try_from(value) {
        Ok(pb::SupplyState::Available) => Ok(SupplyState::Available),
        Ok(pb::SupplyState::Destroyed) => Ok(SupplyState::Destroyed),
        _ => Err(invalid("state", "say available or destroyed")),
    }
}

pub fn software_state(value: i32, log: String) -> Result<SoftwareState, Status> {
    match pb::SoftwareState::try_from(value) {
        Ok(pb::SoftwareState::Building) => Ok(SoftwareState::Building),
        Ok(pb::SoftwareState::Available) => Ok(SoftwareState::Available),
        Ok(pb::SoftwareState::Destroyed) => Ok(SoftwareState::Destroyed),
        Ok(pb::SoftwareState::Error) => Ok(SoftwareState::Error { log }),
        _ => Err(invalid(
            "state",
            "say building, available, error or destroyed",
        )),
    }
}

/// A node's report: a state, or (with no state) an error with its log.
pub fn instance_report(state: i32, error_log: String) -> Result<InstanceReport, Status> {
    match pb::ReportedState::try_from(state) {
        Ok(pb::ReportedState::Started) => Ok(InstanceReport::Started),
        Ok(pb::ReportedState::Stopped) => Ok(InstanceReport::Stopped),
        Ok(pb::ReportedState::Destroyed) => Ok(InstanceReport::Destroyed),
        Ok(pb::ReportedState::Unspecified) if !error_log.is_empty() => {
            Ok(InstanceReport::Error { log: error_log })
        }
        _ => Err(invalid(
            "state",
            "say started, stopped or destroyed, or send an error log",
        )),
    }
}

pub fn instance_request(request: pb::RequestInstanceRequest) -> Result<InstanceRequest, Status> {
    let mut sla: BTreeMap<String, String> = request.sla.into_iter().collect();
    if !request.project.is_empty() {
        match sla.get(crate::state::PROJECT_KEY) {
            Some(named) if *named != request.project => {
                return Err(invalid(
                    "project",
                    format!("the SLA names project {named:?}; name one project"),
                ));
            }
            _ => {
                sla.insert(crate::state::PROJECT_KEY.to_string(), request.project);
            }
        }
    }
    Ok(InstanceRequest {
        state: requested_state(request.state)?,
        title: request.title,
        software_release: request.software_release.as_str().into(),
        software_type: if request.software_type.is_empty() {
            DEFAULT_SOFTWARE_TYPE.to_string()
        } else {
            request.software_type
        },
        parameters: request.parameters.into_iter().collect(),
        sla,
        shared: request.shared,
    })
}

pub fn computer_definition(
    request: pb::RegisterComputerRequest,
) -> Result<ComputerDefinition, Status> {
    let addresses = |addresses: Vec<pb::NetworkAddress>| {
        addresses
            .into_iter()
            .map(|a| NetworkAddress {
                addr: a.addr,
                netmask: a.netmask,
            })
            .collect()
    };
    Ok(ComputerDefinition {
        id: required("computer", &request.computer)?.into(),
        address: optional(request.address),
        netmask: optional(request.netmask),
        instance_root: optional(request.instance_root),
        software_root: optional(request.software_root),
        os_type: optional(request.os_type),
        attributes: request
            .set_attributes
            .then(|| request.attributes.into_iter().collect()),
        capabilities: request
            .set_capabilities
            .then(|| request.capabilities.into_iter().collect()),
        partitions: request
            .partitions
            .into_iter()
            .map(|p| PartitionDefinition {
                reference: PartitionRef(p.reference),
                path: optional(p.path),
                addresses: addresses(p.addresses),
                tap: optional(p.tap),
                user: optional(p.user),
            })
            .collect(),
    })
}

pub fn usage_records(records: Vec<pb::UsageRecord>) -> Vec<UsageRecord> {
    records
        .into_iter()
        .map(|r| UsageRecord {
            partition: PartitionRef(r.partition),
            period_start: Timestamp(r.period_start),
            period_end: Timestamp(r.period_end),
            movements: r
                .movements
                .into_iter()
                .map(|m| UsageMovement {
                    resource: m.resource,
                    category: m.category,
                    quantity: m.quantity,
                })
                .collect(),
        })
        .collect()
}

pub fn pb_usage_record(record: UsageRecord) -> pb::UsageRecord {
    pb::UsageRecord {
        partition: record.partition.0,
        period_start: record.period_start.0,
        period_end: record.period_end.0,
        movements: record
            .movements
            .into_iter()
            .map(|m| pb::UsageMovement {
                resource: m.resource,
                category: m.category,
                quantity: m.quantity,
            })
            .collect(),
    }
}

pub fn pb_usage_report(report: UsageReport) -> pb::UsageReport {
    pb::UsageReport {
        reference: report.reference,
        title: report.title,
        start_date: report.start_date,
        stop_date: report.stop_date,
        currency: report.currency,
        payment_mode: report.payment_mode,
        category: report.category,
        received_at: report.received_at.0,
        movements: report
            .movements
            .into_iter()
            .map(|m| pb::ReportedMovement {
                resource: m.resource,
                title: m.title,
                reference: m.reference,
                partition: m.partition.map(|p| p.0).unwrap_or_default(),
                quantity: m.quantity,
                price: m.price,
                vat: m.vat,
                category: m.category,
            })
            .collect(),
    }
}

pub fn pb_placement(placement: &Placement) -> pb::Placement {
    use pb::placement::Placement as P;
    pb::Placement {
        placement: Some(match placement {
            Placement::Pending { reason } => P::Pending(reason.clone()),
            Placement::Unplaceable { reason } => P::Unplaceable(reason.clone()),
            Placement::Partition(id) => P::Partition(pb_partition_id(id)),
            Placement::Hosted { host } => P::HostedBy(host.to_string()),
        }),
    }
}

fn to_map(parameters: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An instance on the wire; `root_title` and parameters come from the records stored apart.
pub fn pb_instance(
    instance: &Instance,
    root_title: &str,
    parameters: &BTreeMap<String, String>,
    connection: &BTreeMap<String, String>,
) -> pb::Instance {
    let mut out = pb::Instance {
        guid: instance.guid.to_string(),
        owner: instance.owner.to_string(),
        project: instance.project.to_string(),
        title: instance.title.clone(),
        root_guid: instance.root.to_string(),
        root_title: root_title.to_string(),
        requested_by: match &instance.requester {
            Requester::User(_) => String::new(),
            Requester::Instance(guid) => guid.to_string(),
        },
        software_release: instance.software_release.to_string(),
        software_type: instance.software_type.clone(),
        sla: to_map(&instance.sla),
        shared: instance.shared,
        shared_reference: instance.shared_reference.clone().unwrap_or_default(),
        placement: Some(pb_placement(&instance.placement)),
        last_error: instance.last_error.clone().unwrap_or_default(),
        access_status: instance.access_status.clone().unwrap_or_default(),
        timestamp: instance.timestamp.0,
        created_at: instance.created_at.0,
        parameters: to_map(parameters),
        connection: to_map(connection),
        ..Default::default()
    };
    out.set_requested_state(pb_requested_state(instance.requested_state));
    if let Some(reported) = instance.reported_state {
        out.set_reported_state(match reported {
            ReportedState::Started => pb::ReportedState::Started,
            ReportedState::Stopped => pb::ReportedState::Stopped,
            ReportedState::Destroyed => pb::ReportedState::Destroyed,
        });
    }
    out
}

pub fn pb_instance_view(view: &InstanceView) -> pb::Instance {
    pb_instance(
        &view.instance,
        &view.root_title,
        &view.parameters,
        &view.connection,
    )
}

/// The shared instances a host serves; their connection parameters are the host's to publish.
pub fn pb_shared_instances(view: &InstanceView) -> Vec<pb::Instance> {
    view.shared_instances
        .iter()
        .map(
            |SharedInstanceView {
                 instance,
                 parameters,
             }| {
                pb_instance(instance, &view.root_title, parameters, &BTreeMap::new())
            },
        )
        .collect()
}

pub fn pb_computer_poll(view: ComputerView) -> pb::PollComputerReply {
    let software = view
        .software
        .into_iter()
        .map(|s| {
            let (reported, error_log) = match s.reported {
                None => (pb::SoftwareState::Unspecified, String::new()),
                Some(SoftwareState::Building) => (pb::SoftwareState::Building, String::new()),
                Some(SoftwareState::Available) => (pb::SoftwareState::Available, String::new()),
                Some(SoftwareState::Destroyed) => (pb::SoftwareState::Destroyed, String::new()),
                Some(SoftwareState::Error { log }) => (pb::SoftwareState::Error, log),
            };
            let mut software = pb::Software {
                url: s.url.0,
                error_log,
                ..Default::default()
            };
            software.set_requested(match s.requested {
                SupplyState::Available => pb::SupplyState::Available,
                SupplyState::Destroyed => pb::SupplyState::Destroyed,
            });
            software.set_reported(reported);
            software
        })
        .collect();
    let partitions = view
        .partitions
        .into_iter()
        .map(|p| pb::ComputerPartition {
            reference: p.partition.reference.0,
            path: p.partition.path.unwrap_or_default(),
            addresses: p
                .partition
                .addresses
                .into_iter()
                .map(|a| pb::NetworkAddress {
                    addr: a.addr,
                    netmask: a.netmask,
                })
                .collect(),
            tap: p.partition.tap.unwrap_or_default(),
            user: p.partition.user.unwrap_or_default(),
            shared_instances: p
                .instance
                .as_ref()
                .map(pb_shared_instances)
                .unwrap_or_default(),
            instance: p.instance.as_ref().map(pb_instance_view),
        })
        .collect();
    pb::PollComputerReply {
        computer: view.computer.id.0,
        open: view.computer.allocation_scope.is_open(),
        attributes: to_map(&view.computer.attributes),
        software,
        partitions,
        ..Default::default()
    }
}

pub fn computer_id(field: &str, value: &str) -> Result<ComputerId, Status> {
    Ok(required(field, value)?.into())
}

/// A computer as listed; `silence` is the cluster's node silence threshold
/// ([`query::silence`](crate::state::query::silence)).
pub fn pb_computer_summary(
    computer: &crate::state::model::Computer,
    last_seen: Option<Timestamp>,
    silence: Duration,
) -> pb::ComputerSummary {
    let health =
        crate::state::status::computer(computer, last_seen, crate::replica::now(), silence).status;
    pb::ComputerSummary {
        health: health.health.as_str().to_string(),
        health_reason: health.why,
        id: computer.id.0.clone(),
        attributes: to_map(&computer.attributes),
        open: computer.allocation_scope.is_open(),
        scope: computer.allocation_scope.to_string(),
        project: computer.project.to_string(),
        partitions: computer.partition_count,
        busy: computer.partition_count.saturating_sub(computer.free_count),
        last_seen: last_seen.map_or(0, |t| t.0),
        capacity_reported_at: computer.capacity_reported_at.0,
    }
}

/// A computer as an operator looks at it: its partitions with their occupants, its software,
/// its status's history.
pub fn pb_computer_details(
    view: ComputerView,
    silence: Duration,
    history: Vec<StatusChange>,
) -> pb::ShowComputerReply {
    let computer = pb_computer_summary(&view.computer, view.last_seen, silence);
    let poll = pb_computer_poll(view);
    let partitions = poll
        .partitions
        .into_iter()
        .map(|p| {
            let mut out = pb::PartitionSummary {
                reference: p.reference,
                addresses: p.addresses.into_iter().map(|a| a.addr).collect(),
                tap: p.tap,
                ..Default::default()
            };
            if let Some(instance) = p.instance {
                out.requested_state = instance.requested_state;
                out.reported_state = instance.reported_state;
                out.instance_guid = instance.guid;
                out.instance_title = instance.title;
                out.owner = instance.owner;
            }
            out
        })
        .collect();
    pb::ShowComputerReply {
        computer: Some(computer),
        partitions,
        software: poll.software,
        history: pb_history(history),
    }
}

pub fn pb_history(history: Vec<StatusChange>) -> Vec<pb::StatusChange> {
    history
        .into_iter()
        .map(|change| pb::StatusChange {
            at: change.at.0,
            health: change.status.health.as_str().to_string(),
            reason: change.status.why,
        })
        .collect()
}

pub fn pb_alert(alert: crate::state::model::Alert) -> pb::Alert {
    use crate::state::model::AlertSubject;
    let (kind, subject) = match alert.subject {
        AlertSubject::Instance(guid) => ("instance", guid.to_string()),
        AlertSubject::Computer(computer) => ("computer", computer.0),
    };
    pb::Alert {
        id: alert.id,
        kind: kind.to_string(),
        subject,
        title: alert.title,
        project: alert.project.0,
        opened_at: alert.opened_at.0,
        reason: alert.reason,
        closed_at: alert.closed_at.map_or(0, |t| t.0),
        closed_because: alert.closed_because.unwrap_or_default(),
    }
}

fn millis(age: Duration) -> u64 {
    u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
}

/// A replica's status, as `Admin.ReplicaStatus` answers it.
pub fn replica_status_reply(status: ReplicaStatus) -> pb::ReplicaStatusReply {
    let mut reply = pb::ReplicaStatusReply {
        id: status.id,
        addr: status.addr,
        region: status.region,
        term: status.term,
        leader: status.leader.unwrap_or(0),
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        leader_contact_age_ms: status.leader_contact_age.map(millis),
        ..Default::default()
    };
    reply.set_role(status.standing.into());
    reply
}

/// The cluster as this replica sees it, as `Admin.ClusterStatus` answers it.
pub fn cluster_status_reply(status: ClusterStatus) -> pb::ClusterStatusReply {
    let members = status
        .members
        .into_iter()
        .map(|m| {
            let standing = m.standing();
            let mut out = pb::Member {
                voter: m.member.role != crate::replica::Role::Learner,
                unreachable: m.unreachable(),
                id: m.member.id,
                addr: m.member.addr,
                region: m.member.region,
                applied_index: m.reported.as_ref().map(|s| s.applied_index),
                lag: m.lag,
                leader_contact_age_ms: m
                    .reported
                    .as_ref()
                    .and_then(|s| s.leader_contact_age)
                    .map(millis),
                round_trip_us: m
                    .round_trip
                    .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                ..Default::default()
            };
            out.set_role(standing.map_or(pb::Role::Unspecified, pb::Role::from));
            out
        })
        .collect();
    pb::ClusterStatusReply {
        id: status.id,
        leader: status.leader.unwrap_or(0),
        term: status.term,
        members,
    }
}
