//! Records written by releases before projects (record version 1), and how they read today:
//! computers and instance trees belonged to no project, so they belong to the default one. A
//! computer's scope keeps its meaning: version 1's `Open` (anyone could request on it) is
//! `open/public`, its `Closed` is `close/noallocation` (the enum keeps their positions).
//! Records are rewritten in version 2 the next time a command changes them; until then they
//! are read through here, on every replica alike.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::model::{
    AllocationScope, Bang, Computer, ComputerId, Instance, InstanceGuid, Placement, Project,
    ProjectId, ProjectRole, ReportedState, RequestedState, Requester, SoftwareReleaseUrl,
    Timestamp, UserId,
};
use super::tables::Record;

/// [`Computer`] before projects.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct ComputerV1 {
    id: ComputerId,
    address: Option<String>,
    netmask: Option<String>,
    instance_root: Option<String>,
    software_root: Option<String>,
    os_type: Option<String>,
    attributes: BTreeMap<String, String>,
    capabilities: BTreeSet<String>,
    allocation_scope: AllocationScope,
    partition_count: u32,
    free_count: u32,
    registered_at: Timestamp,
    capacity_reported_at: Timestamp,
    last_bang: Option<Bang>,
}

impl Record for Computer {
    fn from_v1(bytes: &[u8]) -> postcard::Result<Self> {
        let v1: ComputerV1 = postcard::from_bytes(bytes)?;
        Ok(Computer {
            id: v1.id,
            address: v1.address,
            netmask: v1.netmask,
            instance_root: v1.instance_root,
            software_root: v1.software_root,
            os_type: v1.os_type,
            attributes: v1.attributes,
            capabilities: v1.capabilities,
            allocation_scope: v1.allocation_scope,
            project: ProjectId::default_project(),
            partition_count: v1.partition_count,
            free_count: v1.free_count,
            registered_at: v1.registered_at,
            capacity_reported_at: v1.capacity_reported_at,
            last_bang: v1.last_bang,
        })
    }
}

/// [`Instance`] before projects.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct InstanceV1 {
    guid: InstanceGuid,
    owner: UserId,
    title: String,
    root: InstanceGuid,
    requester: Requester,
    software_release: SoftwareReleaseUrl,
    software_type: String,
    sla: BTreeMap<String, String>,
    shared: bool,
    shared_reference: Option<String>,
    requested_state: RequestedState,
    placement: Placement,
    reported_state: Option<ReportedState>,
    last_error: Option<String>,
    access_status: Option<String>,
    timestamp: Timestamp,
    created_at: Timestamp,
    destroyed_reported: bool,
}

impl Record for Instance {
    fn from_v1(bytes: &[u8]) -> postcard::Result<Self> {
        let v1: InstanceV1 = postcard::from_bytes(bytes)?;
        Ok(Instance {
            guid: v1.guid,
            owner: v1.owner,
            project: ProjectId::default_project(),
            title: v1.title,
            root: v1.root,
            requester: v1.requester,
            software_release: v1.software_release,
            software_type: v1.software_type,
            sla: v1.sla,
            shared: v1.shared,
            shared_reference: v1.shared_reference,
            requested_state: v1.requested_state,
            placement: v1.placement,
            reported_state: v1.reported_state,
            last_error: v1.last_error,
            access_status: v1.access_status,
            timestamp: v1.timestamp,
            created_at: v1.created_at,
            destroyed_reported: v1.destroyed_reported,
        })
    }
}

/// New in version 2: no version-1 record exists.
impl Record for Project {}
impl Record for ProjectRole {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tables;

    /// A record as version 1 wrote it: its version byte, then postcard.
    fn v1<T: serde::Serialize>(record: &T) -> Vec<u8> {
        postcard::to_extend(record, vec![1]).expect("postcard")
    }

    fn computer(scope: AllocationScope) -> ComputerV1 {
        ComputerV1 {
            id: ComputerId::from("COMP-OLD"),
            address: Some("10.0.0.1".into()),
            netmask: None,
            instance_root: None,
            software_root: None,
            os_type: None,
            attributes: [("region".to_string(), "eu".to_string())].into(),
            capabilities: BTreeSet::new(),
            allocation_scope: scope,
            partition_count: 8,
            free_count: 3,
            registered_at: Timestamp(5),
            capacity_reported_at: Timestamp(6),
            last_bang: None,
        }
    }

    #[test]
    fn records_written_before_projects_belong_to_the_default_project_and_keep_their_scope() {
        // Version 1's `Open` was position 0, `Closed` position 1.
        let open: Computer = tables::decode(
            "computers",
            b"k",
            &v1(&computer(AllocationScope::OpenPublic)),
        )
        .expect("decodes");
        assert_eq!(open.project, ProjectId::default_project());
        assert_eq!(open.allocation_scope, AllocationScope::OpenPublic);
        assert_eq!((open.partition_count, open.free_count), (8, 3));
        assert_eq!(
            open.attributes.get("region").map(String::as_str),
            Some("eu")
        );
        let closed: Computer = tables::decode(
            "computers",
            b"k",
            &v1(&computer(AllocationScope::CloseNoAllocation)),
        )
        .expect("decodes");
        assert_eq!(closed.allocation_scope, AllocationScope::CloseNoAllocation);

        let old = InstanceV1 {
            guid: InstanceGuid(7),
            owner: UserId::from("alice"),
            title: "web".into(),
            root: InstanceGuid(7),
            requester: Requester::User(UserId::from("alice")),
            software_release: SoftwareReleaseUrl::from("https://sr"),
            software_type: "default".into(),
            sla: BTreeMap::new(),
            shared: false,
            shared_reference: None,
            requested_state: RequestedState::Started,
            placement: Placement::Pending {
                reason: "waits".into(),
            },
            reported_state: Some(ReportedState::Started),
            last_error: None,
            access_status: Some("ok".into()),
            timestamp: Timestamp(9),
            created_at: Timestamp(8),
            destroyed_reported: false,
        };
        let instance: Instance = tables::decode("instances", b"k", &v1(&old)).expect("decodes");
        assert_eq!(instance.project, ProjectId::default_project());
        assert_eq!(instance.owner, UserId::from("alice"));
        assert_eq!(instance.access_status.as_deref(), Some("ok"));
        assert_eq!(instance.timestamp, Timestamp(9));

        // Written again, a record is version 2 and reads back the same.
        let rewritten = tables::encode(&instance);
        assert_eq!(rewritten.first(), Some(&2));
        let again: Instance = tables::decode("instances", b"k", &rewritten).expect("decodes");
        assert_eq!(again, instance);
        // A version this release does not know is corruption, not a guess.
        let mut future = rewritten;
        future[0] = 3;
        assert!(tables::decode::<Instance>("instances", b"k", &future).is_err());
    }
}
