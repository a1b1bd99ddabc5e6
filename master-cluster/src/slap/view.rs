//! What `getFullComputerInformation` answers: a computer's view (`state::query::ComputerView`)
//! as the marshalled `Computer` object a SlapOS node expects, and the `SoftwareInstance` an
//! instance request answers (`shared/slap-protocol.md`,
//! *Shapes*). Plain data in, a [`Value`] out; the HTTP layer gathers the view and each busy
//! partition's request-tree addresses in one read transaction.

use std::collections::BTreeMap;

use super::marshal::{Object, SlapClass, Value};
use crate::state::model::{
    Partition, PartitionId, PartitionRef, RequestedState, SoftwareReleaseUrl, SupplyState,
};
use crate::state::query::{ComputerView, InstanceView, PartitionView};

/// `(tap, address)` pairs, as `ip_list` and `full_ip_list` carry them.
pub type IpList = Vec<(String, String)>;

fn object(class: SlapClass, args: Vec<Value>, attributes: Vec<(&str, Value)>) -> Value {
    Value::Object(Object {
        class,
        args,
        attributes: attributes
            .into_iter()
            .map(|(k, v)| (Value::string(k), v))
            .collect(),
    })
}

fn ip_list(pairs: &[(String, String)]) -> Value {
    Value::List(
        pairs
            .iter()
            .map(|(tap, ip)| Value::Tuple(vec![Value::string(tap), Value::string(ip)]))
            .collect(),
    )
}

fn strings(map: &BTreeMap<String, String>) -> Value {
    Value::dict(map.iter().map(|(k, v)| (k.clone(), Value::string(v))))
}

fn software_release(url: &str, computer_id: &str, state: Option<SupplyState>) -> Value {
    let mut attributes = vec![
        ("_software_release", Value::string(url)),
        ("_computer_guid", Value::string(computer_id)),
    ];
    if let Some(state) = state {
        let state = match state {
            SupplyState::Available => "available",
            SupplyState::Destroyed => "destroyed",
        };
        attributes.push(("_requested_state", Value::string(state)));
    }
    object(
        SlapClass::SoftwareRelease,
        vec![Value::string(url), Value::string(computer_id)],
        attributes,
    )
}

/// The partition's own `(tap, address)` pairs.
fn own_ips(partition: &Partition) -> IpList {
    let tap = partition.tap.clone().unwrap_or_default();
    partition
        .addresses
        .iter()
        .map(|a| (tap.clone(), a.addr.clone()))
        .collect()
}

/// The `_parameter_dict` of a busy partition: the instance's parameters and the `slap_*` keys
/// a node and its buildout read.
fn parameters(
    computer_id: &str,
    partition: &PartitionView,
    instance: &InstanceView,
    full_ip_list: &[(String, String)],
) -> Value {
    let i = &instance.instance;
    let mut pairs: Vec<(String, Value)> = instance
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), Value::string(v)))
        .collect();
    let shared: Vec<Value> = instance
        .shared_instances
        .iter()
        .map(|shared| {
            let mut fields: Vec<(String, Value)> = shared
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Value::string(v)))
                .collect();
            fields.retain(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "slave_reference" | "slave_title" | "slap_software_type"
                )
            });
            fields.push((
                "slave_reference".into(),
                Value::string(shared.instance.shared_reference.clone().unwrap_or_default()),
            ));
            fields.push(("slave_title".into(), Value::string(&shared.instance.title)));
            fields.push((
                "slap_software_type".into(),
                Value::string(&shared.instance.software_type),
            ));
            Value::dict(fields)
        })
        .collect();
    let slap = [
        ("ip_list", ip_list(&own_ips(&partition.partition))),
        ("full_ip_list", ip_list(full_ip_list)),
        ("slap_computer_id", Value::string(computer_id)),
        (
            "slap_computer_partition_id",
            Value::string(partition.partition.reference.to_string()),
        ),
        (
            "slap_software_release_url",
            Value::string(i.software_release.to_string()),
        ),
        ("slap_software_type", Value::string(&i.software_type)),
        ("instance_title", Value::string(&i.title)),
        ("root_instance_title", Value::string(&instance.root_title)),
        ("slave_instance_list", Value::List(shared)),
        // Nodes reprocess a partition when this text changes (and once a day).
        ("timestamp", Value::string(i.timestamp.0.to_string())),
    ];
    // The protocol's keys win over parameters of the same name.
    pairs.retain(|(k, _)| !slap.iter().any(|(s, _)| s == k));
    pairs.extend(slap.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::dict(pairs)
}

/// One partition as `ComputerPartition`; a free one is `destroyed` with no software release,
/// so that its node cleans it.
pub fn computer_partition(
    computer_id: &str,
    partition: &PartitionView,
    full_ip_list: &[(String, String)],
) -> Value {
    let reference = partition.partition.reference.to_string();
    let args = vec![
        Value::string(computer_id),
        Value::string(&reference),
        Value::None,
    ];
    let base = vec![
        ("_computer_id", Value::string(computer_id)),
        ("_partition_id", Value::string(&reference)),
        ("_request_dict", Value::None),
    ];
    let Some(instance) = &partition.instance else {
        let mut attributes = base;
        attributes.extend([
            ("_requested_state", Value::string("destroyed")),
            ("_need_modification", Value::Bool(true)),
            ("_instance_guid", Value::None),
            ("_software_release_document", Value::None),
            ("_connection_dict", Value::dict::<String>([])),
            ("_access_status", Value::None),
            ("_filter_dict", Value::dict::<String>([])),
            (
                "_parameter_dict",
                Value::dict([
                    ("ip_list", ip_list(&own_ips(&partition.partition))),
                    ("full_ip_list", Value::List(vec![])),
                    ("slap_computer_id", Value::string(computer_id)),
                    ("slap_computer_partition_id", Value::string(&reference)),
                ]),
            ),
        ]);
        return object(SlapClass::ComputerPartition, args, attributes);
    };
    let i = &instance.instance;
    let mut attributes = base;
    attributes.extend([
        (
            "_requested_state",
            Value::string(i.requested_state.as_str()),
        ),
        ("_need_modification", Value::Bool(true)),
        ("_instance_guid", Value::string(i.guid.to_string())),
        (
            "_software_release_document",
            software_release(&i.software_release.to_string(), computer_id, None),
        ),
        ("_connection_dict", strings(&instance.connection)),
        (
            "_access_status",
            i.access_status.clone().map_or(Value::None, Value::String),
        ),
        ("_filter_dict", strings(&i.sla)),
        (
            "_parameter_dict",
            parameters(computer_id, partition, instance, full_ip_list),
        ),
    ]);
    object(SlapClass::ComputerPartition, args, attributes)
}

/// The whole computer: the software it must supply and every partition. `full_ip_lists` has
/// the request-tree addresses of each busy partition (absent: none).
pub fn computer(view: &ComputerView, full_ip_lists: &BTreeMap<PartitionRef, IpList>) -> Value {
    let id = view.computer.id.to_string();
    let software = view
        .software
        .iter()
        .map(|s| software_release(&s.url.to_string(), &id, Some(s.requested)))
        .collect();
    let partitions = view
        .partitions
        .iter()
        .map(|p| {
            let full = full_ip_lists
                .get(&p.partition.reference)
                .map_or(&[][..], Vec::as_slice);
            computer_partition(&id, p, full)
        })
        .collect();
    object(
        SlapClass::Computer,
        vec![Value::string(&id)],
        vec![
            ("_computer_id", Value::string(&id)),
            ("_software_release_list", Value::List(software)),
            ("_computer_partition_list", Value::List(partitions)),
        ],
    )
}

/// What a request to destroy an instance that runs nowhere (never placed, a shared instance
/// never hosted, or already gone) answers: the instance, destroyed, on no partition.
pub fn destroyed_instance(software_release: &SoftwareReleaseUrl, software_type: &str) -> Value {
    object(
        SlapClass::SoftwareInstance,
        Vec::new(),
        vec![
            (
                "_connection_dict",
                Value::dict(Vec::<(String, Value)>::new()),
            ),
            (
                "_parameter_dict",
                Value::dict(Vec::<(String, Value)>::new()),
            ),
            (
                "_requested_state",
                Value::string(RequestedState::Destroyed.as_str()),
            ),
            ("slap_computer_id", Value::string("")),
            ("slap_computer_partition_id", Value::string("")),
            (
                "slap_software_release_url",
                Value::string(software_release.to_string()),
            ),
            ("slap_software_type", Value::string(software_type)),
            ("ip_list", Value::List(Vec::new())),
        ],
    )
}

/// The `SoftwareInstance` a request answers: where the instance runs (`on`, `partition`), its
/// parameters with its timestamp, and its connection parameters. A shared instance runs where
/// its `host` does, with the host's release and type, and answers what the host published
/// for it.
pub fn software_instance(
    instance: &InstanceView,
    host: Option<&InstanceView>,
    on: &PartitionId,
    partition: &Partition,
) -> Value {
    let i = &instance.instance;
    let runs = host.map_or(i, |h| &h.instance);
    let mut parameters: Vec<(String, Value)> = instance
        .parameters
        .iter()
        .filter(|(k, _)| *k != "timestamp")
        .map(|(k, v)| (k.clone(), Value::string(v)))
        .collect();
    parameters.push(("timestamp".into(), Value::string(i.timestamp.0.to_string())));
    object(
        SlapClass::SoftwareInstance,
        Vec::new(),
        vec![
            ("_connection_dict", strings(&instance.connection)),
            ("_parameter_dict", Value::dict(parameters)),
            (
                "_requested_state",
                Value::string(i.requested_state.as_str()),
            ),
            ("_instance_guid", Value::string(i.guid.to_string())),
            ("slap_computer_id", Value::string(on.computer.as_str())),
            (
                "slap_computer_partition_id",
                Value::string(on.partition.as_str()),
            ),
            (
                "slap_software_release_url",
                Value::string(runs.software_release.to_string()),
            ),
            ("slap_software_type", Value::string(&runs.software_type)),
            ("ip_list", ip_list(&own_ips(partition))),
        ],
    )
}
