//! The protobuf codec of every service and client: prost's encoder, and a decoder that counts
//! a message's elements before it decodes it.
//!
//! Decoding costs memory per *element* as much as per byte: an empty sub-message is two bytes
//! on the wire and a 120-byte struct once decoded (the `decode_cost` test measured 90 bytes per
//! byte for a computer definition of empty partitions, before this bound). So
//! [`StrictDecoder`] first walks the message's wire format against the schema (no allocation)
//! and refuses one with more than [`MAX_ELEMENTS`] elements: sub-messages, map entries and
//! items of repeated strings. A request of `n` bytes then costs at most
//! [`decode_charge`]`(n)`: its buffer, its strings, and [`ELEMENT_BYTES`] per element; the
//! replica's gate charges that much against its decode budget before the bytes are read.
//!
//! Bytes that are not the expected message are `InvalidArgument` (prost's own codec answers
//! `Internal`, which reads as the replica's fault and invites a retry).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::LazyLock;

use prost::encoding::{WireType, decode_key, decode_varint};
use prost::{Message, Name};
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Most elements (sub-messages, map entries, items of repeated strings) one message may hold:
/// a computer of 10,000 partitions with two addresses each is 30,000.
pub const MAX_ELEMENTS: usize = 1 << 16;

/// Most memory one decoded element costs, its container's growth included (the `decode_cost`
/// test checks every request shape against it).
pub const ELEMENT_BYTES: u64 = 384;

/// The most memory decoding a request of `message_bytes` can take while it is handled: the
/// received bytes, the strings copied out of them, and its elements (each at least two bytes on
/// the wire, and at most [`MAX_ELEMENTS`]).
pub fn decode_charge(message_bytes: u64) -> u64 {
    2 * message_bytes + ELEMENT_BYTES * (message_bytes / 2).min(MAX_ELEMENTS as u64)
}

/// prost's codec with [`StrictDecoder`] (named by `build.rs` as every service's codec).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            _message: PhantomData,
        }
    }
}

/// Decodes one `U` after counting its elements; refuses a message with too many
/// (`InvalidArgument`), as it refuses bytes that are not a `U`.
#[derive(Debug)]
pub struct StrictDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        // A message arrives in one contiguous buffer; were it ever split, its elements are
        // counted from a copy rather than not at all.
        let copied;
        let bytes = if buf.chunk().len() == buf.remaining() {
            buf.chunk()
        } else {
            copied = buf.chunk().to_vec();
            &copied
        };
        if let Err(Refused::TooManyElements) = count_elements(bytes, &U::full_name()) {
            return Err(Status::invalid_argument(format!(
                "a {} may hold at most {MAX_ELEMENTS} sub-messages, map entries and list items",
                U::NAME
            )));
        }
        // A malformed message is left for prost to refuse, with its precise reason.
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a valid {}: {e}", U::NAME)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Why [`count_elements`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyElements,
    /// Not a valid encoding (prost's decoder names the fault).
    Malformed,
}

/// Counts the elements of `bytes` as the message `full_name` (`slapcluster.v1.Instance`), up to
/// [`MAX_ELEMENTS`]. Reads without allocating; never recurses deeper than prost would decode.
pub fn count_elements(bytes: &[u8], full_name: &str) -> Result<usize, Refused> {
    let mut elements = 0;
    walk(bytes, full_name, 0, &mut elements)?;
    Ok(elements)
}

/// prost's own recursion limit.
const MAX_DEPTH: u32 = 100;

fn walk(mut buf: &[u8], message: &str, depth: u32, elements: &mut usize) -> Result<(), Refused> {
    if depth > MAX_DEPTH {
        return Err(Refused::Malformed);
    }
    let fields = SCHEMA.get(message);
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).map_err(|_| Refused::Malformed)?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|_| Refused::Malformed)?;
            }
            WireType::SixtyFourBit => buf = skip(buf, 8)?,
            WireType::ThirtyTwoBit => buf = skip(buf, 4)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|_| Refused::Malformed)?;
                let len = usize::try_from(len).map_err(|_| Refused::Malformed)?;
                let payload = buf.get(..len).ok_or(Refused::Malformed)?;
                buf = &buf[len..];
                let added = match fields.and_then(|fields| fields.get(&number)) {
                    Some(Kind::Message(name)) => {
                        walk(payload, name, depth + 1, elements)?;
                        1
                    }
                    Some(Kind::RepeatedBytes) => 1,
                    // Packed numbers: at most one element a byte, each at most 8 bytes wide.
                    Some(Kind::Packed) => len.div_ceil(2),
                    Some(Kind::Bytes) | None => 0,
                };
                *elements += added;
                if *elements > MAX_ELEMENTS {
                    return Err(Refused::TooManyElements);
                }
            }
            // Groups are not proto3.
            WireType::StartGroup | WireType::EndGroup => return Err(Refused::Malformed),
        }
    }
    Ok(())
}

fn skip(buf: &[u8], n: usize) -> Result<&[u8], Refused> {
    buf.get(n..).ok_or(Refused::Malformed)
}

/// What a length-delimited field of a message holds, for counting.
enum Kind {
    /// A (possibly repeated) sub-message or map entry, by full name.
    Message(String),
    /// An item of a repeated string or bytes field.
    RepeatedBytes,
    /// A packed run of repeated numbers.
    Packed,
    /// A single string or bytes field: a repeated occurrence replaces the last.
    Bytes,
}

/// Every message's length-delimited fields, from the descriptors `build.rs` wrote.
static SCHEMA: LazyLock<HashMap<String, HashMap<u32, Kind>>> = LazyLock::new(|| {
    let set = prost_types::FileDescriptorSet::decode(
        &include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..],
    )
    // The build wrote these bytes with prost's own encoder moments before compiling them in.
    .unwrap_or_default();
    let mut schema = HashMap::new();
    for file in &set.file {
        let package = file.package();
        for message in &file.message_type {
            describe(package, message, &mut schema);
        }
    }
    schema
});

fn describe(
    scope: &str,
    message: &prost_types::DescriptorProto,
    schema: &mut HashMap<String, HashMap<u32, Kind>>,
) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        describe(&name, nested, schema);
    }
    let fields = message
        .field
        .iter()
        .filter_map(|field| {
            let number = u32::try_from(field.number()).ok()?;
            let repeated = field.label() == Label::Repeated;
            let kind = match field.r#type() {
                Type::Message | Type::Group => {
                    Kind::Message(field.type_name().trim_start_matches('.').to_string())
                }
                Type::String | Type::Bytes if repeated => Kind::RepeatedBytes,
                Type::String | Type::Bytes => Kind::Bytes,
                _ if repeated => Kind::Packed,
                _ => return None,
            };
            Some((number, kind))
        })
        .collect();
    schema.insert(name, fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;

    #[test]
    fn the_schema_knows_every_request_and_its_message_fields() {
        let fields = SCHEMA
            .get("slapcluster.v1.RegisterComputerRequest")
            .expect("described");
        assert!(matches!(
            fields.get(&11),
            Some(Kind::Message(name)) if name == "slapcluster.v1.PartitionDefinition"
        ));
        assert!(matches!(fields.get(&9), Some(Kind::RepeatedBytes)));
        assert!(matches!(fields.get(&1), Some(Kind::Bytes)));
        assert!(matches!(
            fields.get(&7),
            Some(Kind::Message(name)) if name == "slapcluster.v1.RegisterComputerRequest.AttributesEntry"
        ));
    }

    #[test]
    fn elements_are_counted_at_every_depth() {
        let request = pb::RegisterComputerRequest {
            computer: "COMP-1".into(),
            capabilities: vec!["kvm".into(), "gpu".into()],
            attributes: [("region".to_string(), "eu".to_string())].into(),
            partitions: (0..3)
                .map(|i| pb::PartitionDefinition {
                    reference: format!("slappart{i}"),
                    addresses: vec![pb::NetworkAddress::default(); 2],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        // 2 capabilities, 1 attribute, 3 partitions of 2 addresses each.
        assert_eq!(
            count_elements(
                &request.encode_to_vec(),
                &pb::RegisterComputerRequest::full_name()
            ),
            Ok(2 + 1 + 3 + 6)
        );
    }

    #[test]
    fn a_message_of_too_many_elements_is_refused_unread() {
        let partitions = MAX_ELEMENTS + 1;
        let request = pb::RegisterComputerRequest {
            partitions: vec![pb::PartitionDefinition::default(); partitions],
            ..Default::default()
        };
        assert_eq!(
            count_elements(
                &request.encode_to_vec(),
                &pb::RegisterComputerRequest::full_name()
            ),
            Err(Refused::TooManyElements)
        );
        assert_eq!(
            count_elements(
                &[0x5a, 0x05, 0x00],
                &pb::RegisterComputerRequest::full_name()
            ),
            Err(Refused::Malformed),
            "a length past the end"
        );
    }
}
