//! The memory a request can cost its decoder: every request type with a repeated or map
//! field, filled with the elements that cost most per byte (empty sub-messages, empty strings,
//! distinct short map keys), at counts just past each doubling of its container (where growth
//! wastes most) up to the codec's element limit, decoded under a counting allocator. Each
//! must cost at most `codec::decode_charge` of its size, which is what the replica charges its
//! decode budget with; one element past the limit must be refused before decoding.

use peak_alloc::PeakAlloc;
use prost::{Message, Name};
use slapcluster_api::codec::{self, MAX_ELEMENTS, Refused};
use slapcluster_api::v1 as pb;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// One field number `number` holding `value`, length-delimited.
fn field(number: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// `count` copies of `element` as field `number`.
fn repeated(number: u32, element: &[u8], count: usize) -> Vec<u8> {
    field(number, element).repeat(count)
}

/// `count` map entries of field `number`, with distinct keys of three characters and empty
/// values.
fn map(number: u32, count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            // 64 printable characters a place: 262,144 distinct UTF-8 keys.
            let key = [i >> 12, i >> 6, i].map(|place| b'0' + (place % 64).to_le_bytes()[0]);
            field(number, &field(1, &key))
        })
        .collect()
}

/// What decoding `bytes` as an `M` costs at its peak (the decoded message held), and whether
/// the codec would decode it at all.
fn measure<M: Message + Name + Default>(bytes: &[u8]) -> Result<u64, Refused> {
    codec::count_elements(bytes, &M::full_name())?;
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let message = M::decode(bytes).expect("a valid message");
    let peak = ALLOCATOR.peak_usage() - before;
    drop(message);
    Ok(peak as u64)
}

/// Every expensive request shape, with `n` elements of its most expensive kind.
fn shapes(n: usize) -> Vec<(&'static str, Result<u64, Refused>, usize)> {
    let mut out = Vec::new();
    let mut add = |what, bytes: Vec<u8>, cost: fn(&[u8]) -> Result<u64, Refused>| {
        out.push((what, cost(&bytes), bytes.len()));
    };
    let one_empty_address = field(3, &[]);
    let one_empty_movement = field(4, &[]);
    add(
        "Node/RegisterComputer: empty partitions",
        repeated(11, &[], n),
        measure::<pb::RegisterComputerRequest>,
    );
    add(
        "Node/RegisterComputer: partitions of one empty address",
        repeated(11, &one_empty_address, n / 2),
        measure::<pb::RegisterComputerRequest>,
    );
    add(
        "Node/RegisterComputer: empty capabilities",
        repeated(9, &[], n),
        measure::<pb::RegisterComputerRequest>,
    );
    add(
        "Node/RegisterComputer: attributes",
        map(7, n),
        measure::<pb::RegisterComputerRequest>,
    );
    add(
        "Node/PostUsage: empty records",
        repeated(2, &[], n),
        measure::<pb::PostUsageRequest>,
    );
    add(
        "Node/PostUsage: records of one empty movement",
        repeated(2, &one_empty_movement, n / 2),
        measure::<pb::PostUsageRequest>,
    );
    add(
        "Node/PublishConnection: parameters",
        map(3, n),
        measure::<pb::PublishConnectionRequest>,
    );
    add(
        "User/RequestInstance: parameters",
        map(4, n),
        measure::<pb::RequestInstanceRequest>,
    );
    add(
        "User/RequestInstance: SLA",
        map(5, n),
        measure::<pb::RequestInstanceRequest>,
    );
    add(
        "User/PublishSoftwareRelease: empty software types",
        repeated(3, &[], n),
        measure::<pb::PublishSoftwareReleaseRequest>,
    );
    // Strings, not elements: a repeated occurrence of a single field replaces the last.
    add(
        "Admin/SetAllocationScope: one long string",
        field(1, &vec![b'a'; n]),
        measure::<pb::SetAllocationScopeRequest>,
    );
    out
}

#[test]
fn no_request_costs_more_than_its_charge_and_none_exceeds_the_element_limit() {
    let mut worst: f64 = 0.0;
    // Just past each doubling, where a container wastes most; then the limit itself.
    let counts = (0..16).map(|k| (1usize << k) + 1).chain([MAX_ELEMENTS]);
    for n in counts {
        for (what, cost, len) in shapes(n) {
            let cost = cost.unwrap_or_else(|e| panic!("{what} ({n}): refused: {e:?}"));
            // The received bytes are held too, beside what was decoded from them.
            let held = cost + len as u64;
            let charge = codec::decode_charge(len as u64);
            worst = worst.max(held as f64 / charge as f64);
            assert!(
                held <= charge,
                "{what} with {n} elements ({len} bytes) costs {held} bytes, charged {charge}"
            );
            if n == MAX_ELEMENTS {
                eprintln!(
                    "{what}: {len} bytes cost {held} ({:.1} a byte), charged {charge}",
                    held as f64 / len as f64
                );
            }
        }
    }
    eprintln!(
        "the costliest shape used {:.0}% of its charge",
        worst * 100.0
    );
    for (what, cost, _) in shapes(MAX_ELEMENTS + 1) {
        if what.starts_with("Admin") || what.contains("one empty") {
            continue; // no elements / half as many of the costly kind
        }
        assert_eq!(cost, Err(Refused::TooManyElements), "{what}");
    }
}
