//! On-disk encodings of everything raft-store writes: explicit, versioned, big-endian.
//!
//! Keys are fixed-width big-endian so that redb's byte order is numeric order. Every value
//! starts with a one-byte encoding version, so a later release can read what an earlier one
//! wrote (and refuse, with a precise error, what it does not understand). Application payloads
//! (`C::D`) and memberships are opaque to this module's framing and are carried as postcard,
//! whose wire format is stable across postcard 1.x.
//!
//! Decoding never trusts its input: a short or unknown value gives a [`DecodeError`] that the
//! caller turns into a corrupt-file error naming the file and the key.

use openraft::{EntryPayload, StoredMembership};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Entry, LeaderId, LogId, MembershipOf, SnapshotMetaOf, StoredMembershipOf, TypeConfig, Vote,
};

/// Version byte of every value written by this release.
const V1: u8 = 1;

/// Width of an encoded [`LogId`]: term, leader node id, index, each a big-endian u64.
const LOG_ID_LEN: usize = 24;

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

/// Why a stored value could not be decoded. The caller adds which file and which key.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("value is {have} bytes, expected at least {need}")]
    Truncated { need: usize, have: usize },
    #[error("value has {extra} unexpected trailing bytes")]
    TrailingBytes { extra: usize },
    #[error("unknown encoding version {0} (this build writes and reads version {V1})")]
    UnknownVersion(u8),
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("invalid {what}: {source}")]
    Payload {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("invalid {what}")]
    Invalid { what: &'static str },
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {what}: {source}")]
    Payload {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("{what} of {len} bytes is longer than the {max} bytes its length field holds")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// Inverse of [`log_key`].
pub fn log_index(key: [u8; 8]) -> u64 {
    u64::from_be_bytes(key)
}

/// `v1 | term | leader node | payload tag | postcard(payload)`. The index is the key.
pub fn encode_entry<C: TypeConfig>(entry: &Entry<C>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.push(V1);
    out.extend_from_slice(&entry.log_id.leader_id.term.to_be_bytes());
    out.extend_from_slice(&entry.log_id.leader_id.node_id.to_be_bytes());
    match &entry.payload {
        EntryPayload::Blank => out.push(PAYLOAD_BLANK),
        EntryPayload::Normal(data) => {
            out.push(PAYLOAD_NORMAL);
            append_postcard(&mut out, data, "application command")?;
        }
        EntryPayload::Membership(membership) => {
            out.push(PAYLOAD_MEMBERSHIP);
            append_postcard(&mut out, membership, "membership")?;
        }
    }
    Ok(out)
}

/// Inverse of [`encode_entry`], for the entry stored under `index`.
pub fn decode_entry<C: TypeConfig>(index: u64, bytes: &[u8]) -> Result<Entry<C>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let term = r.u64()?;
    let node_id = r.u64()?;
    let payload = match r.u8()? {
        PAYLOAD_BLANK => EntryPayload::Blank,
        PAYLOAD_NORMAL => EntryPayload::Normal(r.postcard_rest("application command")?),
        PAYLOAD_MEMBERSHIP => EntryPayload::Membership(r.postcard_rest("membership")?),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "log entry payload",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(Entry::<C> {
        log_id: LogId::new(LeaderId { term, node_id }, index),
        payload,
    })
}

/// The log id of the entry [`encode_entry`] encoded for `index`, without decoding its payload
/// (the WAL's recovery indexes entries it does not need to decode).
pub fn entry_log_id(index: u64, bytes: &[u8]) -> Result<LogId, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let term = r.u64()?;
    let node_id = r.u64()?;
    Ok(LogId::new(LeaderId { term, node_id }, index))
}

/// `v1 | term | node | index`.
pub fn encode_log_id(log_id: &LogId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + LOG_ID_LEN);
    out.push(V1);
    put_log_id(&mut out, log_id);
    out
}

pub fn decode_log_id(bytes: &[u8]) -> Result<LogId, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let log_id = r.log_id()?;
    r.finish()?;
    Ok(log_id)
}

/// `v1 | term | node | committed (0 or 1)`.
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    out.push(V1);
    out.extend_from_slice(&vote.leader_id.term.to_be_bytes());
    out.extend_from_slice(&vote.leader_id.node_id.to_be_bytes());
    out.push(u8::from(vote.committed));
    out
}

pub fn decode_vote(bytes: &[u8]) -> Result<Vote, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let term = r.u64()?;
    let node_id = r.u64()?;
    let committed = r.bool("vote committed flag")?;
    r.finish()?;
    let mut vote = Vote::new(term, node_id);
    vote.committed = committed;
    Ok(vote)
}

/// `v1 | optional log id | postcard(membership)`.
pub fn encode_membership<C: TypeConfig>(
    membership: &StoredMembershipOf<C>,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.push(V1);
    put_optional_log_id(&mut out, membership.log_id().as_ref());
    append_postcard(&mut out, membership.membership(), "membership")?;
    Ok(out)
}

pub fn decode_membership<C: TypeConfig>(
    bytes: &[u8],
) -> Result<StoredMembershipOf<C>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let log_id = r.optional_log_id()?;
    let membership: MembershipOf<C> = r.postcard_rest("membership")?;
    r.finish()?;
    Ok(StoredMembership::new(log_id, membership))
}

/// `v1 | optional last log id | u16 length | snapshot id | membership as in [`encode_membership`]`.
/// openraft 0.10's meta has no snapshot id; the file keeps one (unique per build), because a
/// chunked transfer names the snapshot by it and releases on openraft 0.9 check that the file
/// they receive carries the id it was announced with.
pub fn encode_snapshot_meta<C: TypeConfig>(
    meta: &SnapshotMetaOf<C>,
    id: &str,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    out.push(V1);
    put_optional_log_id(&mut out, meta.last_log_id.as_ref());
    let id_len = u16::try_from(id.len()).map_err(|_| EncodeError::TooLong {
        what: "snapshot id",
        len: id.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&encode_membership::<C>(&meta.last_membership)?);
    Ok(out)
}

/// Inverse of [`encode_snapshot_meta`]: the meta and the snapshot's id.
pub fn decode_snapshot_meta<C: TypeConfig>(
    bytes: &[u8],
) -> Result<(SnapshotMetaOf<C>, String), DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let last_log_id = r.optional_log_id()?;
    let id = r.snapshot_id()?;
    let last_membership = decode_membership::<C>(r.rest())?;
    let meta = SnapshotMetaOf::<C> {
        last_log_id,
        last_membership,
    };
    Ok((meta, id))
}

/// The snapshot id of an encoded snapshot meta, without decoding its membership.
pub fn snapshot_meta_id(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    r.optional_log_id()?;
    r.snapshot_id()
}

fn put_log_id(out: &mut Vec<u8>, log_id: &LogId) {
    out.extend_from_slice(&log_id.leader_id.term.to_be_bytes());
    out.extend_from_slice(&log_id.leader_id.node_id.to_be_bytes());
    out.extend_from_slice(&log_id.index.to_be_bytes());
}

fn put_optional_log_id(out: &mut Vec<u8>, log_id: Option<&LogId>) {
    match log_id {
        None => out.push(0),
        Some(log_id) => {
            out.push(1);
            put_log_id(out, log_id);
        }
    }
}

fn append_postcard<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    what: &'static str,
) -> Result<(), EncodeError> {
    let bytes =
        postcard::to_stdvec(value).map_err(|source| EncodeError::Payload { what, source })?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// A cursor over a stored value that turns every short read into [`DecodeError::Truncated`].
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated {
                need: self.pos.saturating_add(n),
                have: self.bytes.len(),
            });
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            V1 => Ok(()),
            other => Err(DecodeError::UnknownVersion(other)),
        }
    }

    fn log_id(&mut self) -> Result<LogId, DecodeError> {
        let term = self.u64()?;
        let node_id = self.u64()?;
        let index = self.u64()?;
        Ok(LogId::new(LeaderId { term, node_id }, index))
    }

    fn optional_log_id(&mut self) -> Result<Option<LogId>, DecodeError> {
        if self.bool("optional log id flag")? {
            Ok(Some(self.log_id()?))
        } else {
            Ok(None)
        }
    }

    /// A u16-length-prefixed UTF-8 snapshot id.
    fn snapshot_id(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::Invalid {
            what: "snapshot id",
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    /// Decodes the remaining bytes as one postcard value, which must use all of them.
    fn postcard_rest<T: DeserializeOwned>(&mut self, what: &'static str) -> Result<T, DecodeError> {
        let (value, unused) = postcard::take_from_bytes(self.rest())
            .map_err(|source| DecodeError::Payload { what, source })?;
        if !unused.is_empty() {
            return Err(DecodeError::TrailingBytes {
                extra: unused.len(),
            });
        }
        Ok(value)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{BasicNode, Membership};

    use super::*;
    use crate::testing::{KvCommand, KvConfig};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            LeaderId {
                term,
                node_id: node,
            },
            index,
        )
    }

    #[test]
    fn entries_round_trip_for_every_payload_kind() {
        let membership =
            Membership::<u64, BasicNode>::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
        let entries: Vec<Entry<KvConfig>> = vec![
            Entry::<KvConfig> {
                log_id: log_id(1, 1, 0),
                payload: EntryPayload::Blank,
            },
            Entry::<KvConfig> {
                log_id: log_id(2, 3, 7),
                payload: EntryPayload::Normal(KvCommand::Put {
                    key: b"computer/COMP-1".to_vec(),
                    value: vec![0; 300],
                }),
            },
            Entry::<KvConfig> {
                log_id: log_id(u64::MAX, u64::MAX, u64::MAX),
                payload: EntryPayload::Membership(membership),
            },
        ];
        for entry in entries {
            let bytes = encode_entry::<KvConfig>(&entry).expect("encodable");
            let back = decode_entry::<KvConfig>(entry.log_id.index, &bytes).expect("decodable");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn header_fields_are_big_endian_at_fixed_offsets() {
        let entry = Entry::<KvConfig> {
            log_id: log_id(0x0102, 0x0304, 5),
            payload: EntryPayload::Blank,
        };
        let bytes = encode_entry::<KvConfig>(&entry).expect("encodable");
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4, 0]
        );
    }

    #[test]
    fn every_truncation_of_an_entry_is_refused() {
        let entry = Entry::<KvConfig> {
            log_id: log_id(3, 1, 9),
            payload: EntryPayload::Normal(KvCommand::Delete { key: b"k".to_vec() }),
        };
        let bytes = encode_entry::<KvConfig>(&entry).expect("encodable");
        for len in 0..bytes.len() {
            assert!(
                decode_entry::<KvConfig>(9, &bytes[..len]).is_err(),
                "a {len}-byte prefix must not decode"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_entry::<KvConfig>(9, &longer),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn unknown_versions_and_tags_are_named() {
        assert!(matches!(
            decode_vote(&[2; 18]),
            Err(DecodeError::UnknownVersion(2))
        ));
        let mut vote = encode_vote(&Vote::new_committed(4, 2));
        vote[17] = 9;
        assert!(matches!(
            decode_vote(&vote),
            Err(DecodeError::UnknownTag { tag: 9, .. })
        ));
    }

    #[test]
    fn votes_log_ids_memberships_and_snapshot_meta_round_trip() {
        let vote = Vote::new_committed(7, 3);
        assert_eq!(decode_vote(&encode_vote(&vote)).expect("vote"), vote);
        let id = log_id(7, 3, 100);
        assert_eq!(decode_log_id(&encode_log_id(&id)).expect("log id"), id);

        let membership = StoredMembership::new(
            Some(id),
            Membership::<u64, BasicNode>::new_with_defaults(vec![BTreeSet::from([1, 2])], [9]),
        );
        let bytes = encode_membership::<KvConfig>(&membership).expect("membership");
        assert_eq!(
            decode_membership::<KvConfig>(&bytes).expect("membership"),
            membership
        );

        let meta = SnapshotMetaOf::<KvConfig> {
            last_log_id: Some(id),
            last_membership: membership,
        };
        let bytes = encode_snapshot_meta::<KvConfig>(&meta, "7-3-100-1").expect("meta");
        assert_eq!(
            decode_snapshot_meta::<KvConfig>(&bytes).expect("meta"),
            (meta, "7-3-100-1".to_string())
        );
        assert_eq!(snapshot_meta_id(&bytes).expect("id"), "7-3-100-1");
    }
}
