//! The computer definition `slapos node format` posts (`loadComputerConfigurationFromXML`):
//! a marshalled dictionary read into the [`ComputerDefinition`] that registers a computer.
//!
//! Only the shape is checked here (each field we use has the type the format gives it; keys
//! we do not use are ignored, as the format carries many); names and addresses are validated
//! where every registration is, when the command is applied. SLA attributes and capabilities
//! are not part of the format: the operator's stay.

use super::marshal::Value;
use crate::state::model::{ComputerDefinition, NetworkAddress, PartitionDefinition};

/// What is wrong with a definition, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("computer definition: {field}: {reason}")]
pub struct DefinitionError {
    pub field: String,
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A string field; absent and `None` read as absent, an empty string too.
fn optional_string(dict: &Value, key: &str, at: &str) -> Result<Option<String>, DefinitionError> {
    match dict.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Int(i)) => Ok(Some(i.to_string())),
        Some(_) => Err(error(format!("{at}{key}"), "not a string")),
    }
}

fn required_string(dict: &Value, key: &str, at: &str) -> Result<String, DefinitionError> {
    optional_string(dict, key, at)?.ok_or_else(|| error(format!("{at}{key}"), "missing"))
}

fn list<'a>(dict: &'a Value, key: &str, at: &str) -> Result<&'a [Value], DefinitionError> {
    match dict.get(key) {
        None | Some(Value::None) => Ok(&[]),
        Some(Value::List(items) | Value::Tuple(items)) => Ok(items),
        Some(_) => Err(error(format!("{at}{key}"), "not a list")),
    }
}

/// `tap` and `user` are dictionaries with a `name` (older formats sent the name alone).
fn named(dict: &Value, key: &str, at: &str) -> Result<Option<String>, DefinitionError> {
    match dict.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(Value::String(name)) if name.is_empty() => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(inner @ (Value::Dict(_) | Value::Object(_))) => {
            optional_string(inner, "name", &format!("{at}{key}."))
        }
        Some(_) => Err(error(format!("{at}{key}"), "not a dictionary with a name")),
    }
}

/// Reads the definition of the computer `computer_id` (the caller's); its `reference` must name
/// that computer.
pub fn computer_definition(
    value: &Value,
    computer_id: &str,
) -> Result<ComputerDefinition, DefinitionError> {
    if !matches!(value, Value::Dict(_)) {
        return Err(error("(root)", "not a dictionary"));
    }
    let reference = required_string(value, "reference", "")?;
    if reference != computer_id {
        return Err(error(
            "reference",
            format!("{reference:?} is not the computer posting it ({computer_id:?})"),
        ));
    }
    let mut partitions = Vec::new();
    for (i, partition) in list(value, "partition_list", "")?.iter().enumerate() {
        let at = format!("partition_list[{i}].");
        if !matches!(partition, Value::Dict(_)) {
            return Err(error(format!("partition_list[{i}]"), "not a dictionary"));
        }
        let mut addresses = Vec::new();
        for (j, address) in list(partition, "address_list", &at)?.iter().enumerate() {
            let at = format!("{at}address_list[{j}].");
            if !matches!(address, Value::Dict(_)) {
                return Err(error(at.trim_end_matches('.'), "not a dictionary"));
            }
            addresses.push(NetworkAddress {
                addr: required_string(address, "addr", &at)?,
                netmask: optional_string(address, "netmask", &at)?.unwrap_or_default(),
            });
        }
        partitions.push(PartitionDefinition {
            reference: required_string(partition, "reference", &at)?
                .as_str()
                .into(),
            path: optional_string(partition, "path", &at)?,
            addresses,
            tap: named(partition, "tap", &at)?,
            user: named(partition, "user", &at)?,
        });
    }
    Ok(ComputerDefinition {
        id: reference.as_str().into(),
        address: optional_string(value, "address", "")?,
        netmask: optional_string(value, "netmask", "")?,
        instance_root: optional_string(value, "instance_root", "")?,
        software_root: optional_string(value, "software_root", "")?,
        os_type: optional_string(value, "os_type", "")?,
        attributes: None,
        capabilities: None,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(i: u32) -> Value {
        Value::dict([
            ("reference", Value::string(format!("slappart{i}"))),
            ("path", Value::string(format!("/srv/slapgrid/slappart{i}"))),
            (
                "address_list",
                Value::List(vec![
                    Value::dict([
                        ("addr", Value::string(format!("10.0.0.{}", i + 2))),
                        ("netmask", Value::string("255.255.255.0")),
                    ]),
                    Value::dict([
                        ("addr", Value::string(format!("2001:db8::{i:x}"))),
                        ("netmask", Value::string("ffff:ffff:ffff:ffff::")),
                    ]),
                ]),
            ),
            (
                "tap",
                Value::dict([
                    ("name", Value::string(format!("slaptap{i}"))),
                    ("ipv4_addr", Value::string("")),
                ]),
            ),
            (
                "user",
                Value::dict([("name", Value::string(format!("slapuser{i}")))]),
            ),
            ("external_storage_list", Value::List(vec![])),
        ])
    }

    fn definition() -> Value {
        Value::dict([
            ("reference", Value::string("COMP-1")),
            ("address", Value::string("10.0.0.1")),
            ("netmask", Value::string("255.255.255.0")),
            ("instance_root", Value::string("/srv/slapgrid")),
            ("software_root", Value::string("/opt/slapgrid")),
            ("os_type", Value::None),
            ("interface", Value::dict([("name", Value::string("lo"))])),
            (
                "partition_list",
                Value::List((0..2).map(partition).collect()),
            ),
        ])
    }

    #[test]
    fn a_formatted_computer_reads_as_its_definition() {
        let read = computer_definition(&definition(), "COMP-1").expect("reads");
        assert_eq!(read.id.to_string(), "COMP-1");
        assert_eq!(read.instance_root.as_deref(), Some("/srv/slapgrid"));
        assert_eq!(read.os_type, None);
        assert_eq!(read.attributes, None, "the operator's attributes stay");
        assert_eq!(read.partitions.len(), 2);
        let p1 = &read.partitions[1];
        assert_eq!(p1.reference.to_string(), "slappart1");
        assert_eq!(p1.tap.as_deref(), Some("slaptap1"));
        assert_eq!(p1.user.as_deref(), Some("slapuser1"));
        assert_eq!(p1.addresses[1].addr, "2001:db8::1");
        assert_eq!(p1.addresses[1].netmask, "ffff:ffff:ffff:ffff::");
    }

    #[test]
    fn a_wrong_shape_is_named() {
        let wrong = |value: Value| computer_definition(&value, "COMP-1").expect_err("refused");
        assert_eq!(wrong(Value::List(vec![])).field, "(root)");
        assert_eq!(
            wrong(Value::dict([("address", Value::string("x"))])).field,
            "reference"
        );
        let other = wrong(Value::dict([("reference", Value::string("COMP-2"))]));
        assert!(other.reason.contains("COMP-2"), "{other}");
        let bad = Value::dict([
            ("reference", Value::string("COMP-1")),
            (
                "partition_list",
                Value::List(vec![Value::dict([
                    ("reference", Value::string("slappart0")),
                    (
                        "address_list",
                        Value::List(vec![Value::dict([("netmask", Value::string("8"))])]),
                    ),
                ])]),
            ),
        ]);
        assert_eq!(wrong(bad).field, "partition_list[0].address_list[0].addr");
    }
}
