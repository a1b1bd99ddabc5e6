//! Sample domain values for tests and benchmarks (the state tests, the in-process cluster
//! tests, the placement benchmark): a computer as `slapos node format` would define it, on
//! documentation addresses, and a plain instance request, an instance record. Pure values, no IO.

use std::collections::BTreeMap;

use super::command::InstanceRequest;
use super::model::{
    ComputerDefinition, ComputerId, Instance, InstanceGuid, NetworkAddress, PartitionDefinition,
    PartitionRef, Placement, ProjectId, RequestedState, Requester, SoftwareReleaseUrl, Timestamp,
    UserId,
};

/// Computer `id` with `partitions` partitions (`slappart0`...), each with a user, a
/// directory, a local IPv4 and an IPv6 address and a tap, and the given attributes (`region`,
/// `cpu`, ...).
pub fn computer_definition(
    id: &str,
    partitions: u32,
    attributes: &[(&str, &str)],
) -> ComputerDefinition {
    ComputerDefinition {
        id: ComputerId::from(id),
        address: Some("2001:db8::1".into()),
        netmask: Some("ffff:ffff:ffff:ffff::".into()),
        instance_root: Some("/srv/slapgrid".into()),
        software_root: Some("/opt/slapgrid".into()),
        os_type: None,
        attributes: Some(
            attributes
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        ),
        capabilities: None,
        partitions: (0..partitions)
            .map(|n| PartitionDefinition {
                reference: PartitionRef(format!("slappart{n}")),
                path: Some(format!("/srv/slapgrid/slappart{n}")),
                addresses: vec![
                    NetworkAddress {
                        addr: format!("10.0.{}.{}", n / 250, n % 250 + 1),
                        netmask: "255.255.255.255".into(),
                    },
                    NetworkAddress {
                        addr: format!("2001:db8::{n:x}"),
                        netmask: "ffff:ffff:ffff:ffff::".into(),
                    },
                ],
                tap: Some(format!("slaptap{n}")),
                user: Some(format!("slapuser{n}")),
            })
            .collect(),
    }
}

/// A started instance `title` of software release `sr`, default type, no parameters or SLA.
pub fn instance_request(title: &str, sr: &str) -> InstanceRequest {
    InstanceRequest {
        title: title.into(),
        software_release: SoftwareReleaseUrl::from(sr),
        software_type: "default".into(),
        parameters: BTreeMap::new(),
        sla: BTreeMap::new(),
        shared: false,
        state: RequestedState::Started,
    }
}

/// Instance `i{guid}` of `owner` in the default project, started, in the tree of guid 1,
/// requested by `requester` and placed as `placement`; nothing reported yet.
pub fn instance(guid: u64, owner: &str, requester: Requester, placement: Placement) -> Instance {
    Instance {
        guid: InstanceGuid(guid),
        owner: UserId::from(owner),
        project: ProjectId::default_project(),
        title: format!("i{guid}"),
        root: InstanceGuid(1),
        requester,
        software_release: "https://sr".into(),
        software_type: "default".into(),
        sla: Default::default(),
        shared: false,
        shared_reference: None,
        requested_state: RequestedState::Started,
        placement,
        reported_state: None,
        last_error: None,
        access_status: None,
        timestamp: Timestamp(1),
        created_at: Timestamp(1),
        destroyed_reported: false,
    }
}
