//! The bytes of the write-ahead log: frames, and the records inside them. Pure: no IO.
//!
//! A segment file is a run of frames. Each frame starts at a multiple of [`ALIGN`] and is
//! written, then made durable, as one unit (group commit: one frame per `fdatasync`):
//!
//! ```text
//! frame  := header body padding
//! header := "SCW" version u8 (1) | segment u64 | offset u64 | body_len u32 | reserved u32 (0)
//!           | crc u32
//! body   := record*                                   (exactly body_len bytes)
//! record := kind u8 | len u32 | crc u32 | payload     (len bytes)
//! ```
//!
//! Integers are big-endian. The header's crc covers the 28 bytes before it, a record's crc its
//! kind, length and payload, so that an entry read back alone is verified. A header names its
//! segment's sequence number and its own offset: a frame left in a recycled file by an earlier
//! use, or found at the wrong place, is never taken for a frame of this segment. The padding is
//! zeros up to the next multiple of [`ALIGN`], so a frame never shares a disk sector with the one
//! before it: writing a frame cannot tear one that is already durable.
//!
//! Payloads reuse `codec.rs`'s versioned encodings of entries, votes and log ids.

use crate::{LogId, Vote};

use crate::codec::{self, DecodeError};

/// Frames start at multiples of this (a page, and a whole number of sectors).
pub(crate) const ALIGN: u64 = ALIGN_BYTES as u64;
pub(crate) const ALIGN_BYTES: usize = 4096;
pub(crate) const HEADER_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 9;
/// The largest record payload: its length field is a u32, and a frame's body length too.
pub(crate) const MAX_PAYLOAD: usize = (u32::MAX as usize) / 2;
const MAGIC: [u8; 3] = *b"SCW";
/// The format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE_AFTER: u8 = 4;
const KIND_PURGED: u8 = 5;
const KIND_CHECKPOINT: u8 = 6;

/// The log's metadata as of some point of the record stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    /// The last log id: of the last entry, or the purged one when no entry follows it.
    pub last: Option<LogId>,
}

impl Meta {
    /// What `event` changes. Writer, recovery and the in-memory index all use this one rule.
    pub fn apply(&mut self, event: &Event) {
        let index = |id: &Option<LogId>| id.map(|id| id.index);
        match event {
            Event::Entry(id) => {
                // Appends go at the end (openraft truncates before it overwrites); a lower
                // index written over an existing entry does not move the end.
                if index(&self.last) <= Some(id.index) {
                    self.last = Some(*id);
                }
            }
            Event::Vote(vote) => self.vote = Some(*vote),
            Event::Committed(id) => self.committed = Some(*id),
            Event::TruncateAfter(id) => self.last = *id,
            Event::Purged(id) => {
                self.purged = Some(*id);
                if index(&self.last) < Some(id.index) {
                    self.last = Some(*id);
                }
            }
            Event::Checkpoint(_) => {}
        }
    }
}

/// The first record of every segment: the metadata as of the segment's start, so that older
/// segments can be dropped; where the previous segment's frames end; and how long this file was
/// made (zero-filled) before its first frame, so that a truncated copy is caught.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub prev_end: u64,
    pub prepared_len: u64,
    pub meta: Meta,
}

/// A record to write.
#[derive(Debug)]
pub(crate) enum Record {
    /// An entry, `codec::encode_entry`'s bytes, stored under `index`.
    Entry {
        index: u64,
        bytes: Vec<u8>,
    },
    Vote(Vote),
    Committed(LogId),
    /// Entries after this log id (after the purged one, or all, for `None`) are removed.
    TruncateAfter(Option<LogId>),
    Purged(LogId),
    Checkpoint(Checkpoint),
}

/// A record as read back: an entry is only indexed here, its payload is decoded on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Entry(LogId),
    Vote(Vote),
    Committed(LogId),
    TruncateAfter(Option<LogId>),
    Purged(LogId),
    Checkpoint(Checkpoint),
}

/// Why the records of a frame (or one record read back) are not what was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record at byte {at} runs past the end of its frame")]
    Overrun { at: usize },
    #[error("record at byte {at} fails its checksum")]
    Checksum { at: usize },
    #[error("record at byte {at} has unknown kind {kind} (written by a newer release?)")]
    UnknownKind { at: usize, kind: u8 },
    #[error("record at byte {at} does not decode: {source}")]
    Decode {
        at: usize,
        #[source]
        source: DecodeError,
    },
    #[error("record at byte {at} is not the entry expected there")]
    NotTheEntry { at: usize },
}

impl RecordError {
    /// Where, in its frame, the record that failed starts.
    pub fn at(&self) -> usize {
        match self {
            Self::Overrun { at }
            | Self::Checksum { at }
            | Self::UnknownKind { at, .. }
            | Self::Decode { at, .. }
            | Self::NotTheEntry { at } => *at,
        }
    }
}

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Self::Entry { .. } => KIND_ENTRY,
            Self::Vote(_) => KIND_VOTE,
            Self::Committed(_) => KIND_COMMITTED,
            Self::TruncateAfter(_) => KIND_TRUNCATE_AFTER,
            Self::Purged(_) => KIND_PURGED,
            Self::Checkpoint(_) => KIND_CHECKPOINT,
        }
    }

    fn payload(&self) -> Vec<u8> {
        match self {
            Self::Entry { index, bytes } => {
                let mut out = Vec::with_capacity(8 + bytes.len());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(bytes);
                out
            }
            Self::Vote(vote) => codec::encode_vote(vote),
            Self::Committed(id) | Self::Purged(id) => codec::encode_log_id(id),
            Self::TruncateAfter(id) => optional(id.as_ref().map(codec::encode_log_id)),
            Self::Checkpoint(checkpoint) => {
                let meta = &checkpoint.meta;
                let mut out = checkpoint.prev_end.to_be_bytes().to_vec();
                out.extend_from_slice(&checkpoint.prepared_len.to_be_bytes());
                out.extend(optional(meta.vote.as_ref().map(codec::encode_vote)));
                for id in [&meta.committed, &meta.purged, &meta.last] {
                    out.extend(optional(id.as_ref().map(codec::encode_log_id)));
                }
                out
            }
        }
    }

    /// Its size in a frame.
    pub fn encoded_len(&self) -> u64 {
        let payload = match self {
            Self::Entry { bytes, .. } => 8 + bytes.len(),
            other => other.payload().len(),
        };
        (RECORD_HEADER_LEN + payload) as u64
    }

    /// The event this record is read back as.
    pub fn event(&self) -> Result<Event, DecodeError> {
        Ok(match self {
            Self::Entry { index, bytes } => Event::Entry(codec::entry_log_id(*index, bytes)?),
            Self::Vote(vote) => Event::Vote(*vote),
            Self::Committed(id) => Event::Committed(*id),
            Self::TruncateAfter(id) => Event::TruncateAfter(*id),
            Self::Purged(id) => Event::Purged(*id),
            Self::Checkpoint(checkpoint) => Event::Checkpoint(checkpoint.clone()),
        })
    }
}

/// `len u8 | bytes`, a zero length for `None`. Every encoding it carries is under 64 bytes.
fn optional(bytes: Option<Vec<u8>>) -> Vec<u8> {
    match bytes {
        None => vec![0],
        Some(bytes) => {
            let mut out = Vec::with_capacity(1 + bytes.len());
            out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
            out.extend(bytes);
            out
        }
    }
}

/// Builds one frame: records are encoded straight into the buffer that is written.
#[derive(Debug)]
pub(crate) struct FrameBuilder {
    buf: Vec<u8>,
}

/// Where a record landed, relative to the start of its frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub at: u64,
    pub len: u32,
}

impl FrameBuilder {
    /// A frame for about `len` bytes of records.
    pub fn with_capacity(len: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + len + ALIGN_BYTES);
        buf.resize(HEADER_LEN, 0);
        Self { buf }
    }

    /// Appends `record`; returns where it is in the frame.
    /// Appends `record`; returns where it is in the frame. Its payload must be under
    /// [`MAX_PAYLOAD`] bytes (the writer's callers check entries; the other records are small).
    pub fn push(&mut self, record: &Record) -> Placed {
        let start = self.buf.len();
        self.buf.push(record.kind());
        self.buf.extend_from_slice(&[0; 8]);
        match record {
            // Entries are copied once, straight into the frame.
            Record::Entry { index, bytes } => {
                self.buf.extend_from_slice(&index.to_be_bytes());
                self.buf.extend_from_slice(bytes);
            }
            other => self.buf.extend(other.payload()),
        }
        let payload = &self.buf[start + RECORD_HEADER_LEN..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = record_crc(record.kind(), len, payload);
        self.buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        self.buf[start + 5..start + 9].copy_from_slice(&crc.to_be_bytes());
        Placed {
            at: start as u64,
            len: u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX),
        }
    }

    /// The whole frame, header and padding included, for offset `offset` of segment `segment`.
    pub fn finish(mut self, segment: u64, offset: u64) -> Vec<u8> {
        let body_len = u32::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u32::MAX);
        let mut header = [0u8; HEADER_LEN];
        header[0..3].copy_from_slice(&MAGIC);
        header[3] = VERSION;
        header[4..12].copy_from_slice(&segment.to_be_bytes());
        header[12..20].copy_from_slice(&offset.to_be_bytes());
        header[20..24].copy_from_slice(&body_len.to_be_bytes());
        let crc = crc32fast::hash(&header[..28]);
        header[28..32].copy_from_slice(&crc.to_be_bytes());
        self.buf[..HEADER_LEN].copy_from_slice(&header);
        let padded = aligned(self.buf.len() as u64);
        self.buf
            .resize(usize::try_from(padded).unwrap_or(usize::MAX), 0);
        self.buf
    }
}

/// `len` rounded up to a multiple of [`ALIGN`].
pub(crate) fn aligned(len: u64) -> u64 {
    len.div_ceil(ALIGN) * ALIGN
}

fn record_crc(kind: u8, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&len.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// What 32 bytes where a frame header could start hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A whole header of a frame of this segment at this offset, with its body length.
    Frame(u32),
    /// Nothing written: zeros.
    Zeros,
    /// A whole header of another segment or offset: what an earlier use of the file left.
    Elsewhere,
    /// Our magic, but the checksum fails.
    Damaged,
    /// A whole header of another format version.
    Version(u8),
    /// Bytes that are not ours.
    Foreign,
}

pub(crate) fn read_header(header: &[u8], segment: u64, offset: u64) -> Header {
    let Ok(header) = <&[u8; HEADER_LEN]>::try_from(header) else {
        return Header::Foreign;
    };
    if header.iter().all(|&b| b == 0) {
        return Header::Zeros;
    }
    if header[0..3] != MAGIC {
        return Header::Foreign;
    }
    let word = |at: usize| {
        let mut out = [0; 8];
        out.copy_from_slice(&header[at..at + 8]);
        u64::from_be_bytes(out)
    };
    let crc = u32::from_be_bytes([header[28], header[29], header[30], header[31]]);
    if crc32fast::hash(&header[..28]) != crc {
        return Header::Damaged;
    }
    if header[3] != VERSION {
        return Header::Version(header[3]);
    }
    if word(4) != segment || word(12) != offset {
        return Header::Elsewhere;
    }
    Header::Frame(u32::from_be_bytes([
        header[20], header[21], header[22], header[23],
    ]))
}

/// The body length of the frame whose header is `header`, if it is a whole header of a frame
/// of `segment` at `offset`.
pub(crate) fn header_body_len(header: &[u8], segment: u64, offset: u64) -> Option<u32> {
    match read_header(header, segment, offset) {
        Header::Frame(len) => Some(len),
        _ => None,
    }
}

/// Decodes every record of a frame body, each with where it is in the frame.
pub(crate) fn events(body: &[u8]) -> Result<Vec<(Event, Placed)>, RecordError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let at = HEADER_LEN + pos;
        let (kind, payload) = split_record(&body[pos..], at)?;
        let len = RECORD_HEADER_LEN + payload.len();
        let event = decode_event(kind, payload, at)?;
        out.push((
            event,
            Placed {
                at: at as u64,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            },
        ));
        pos += len;
    }
    Ok(out)
}

/// The kind and payload of the record at the start of `bytes`, checksum verified.
fn split_record(bytes: &[u8], at: usize) -> Result<(u8, &[u8]), RecordError> {
    let header = bytes
        .get(..RECORD_HEADER_LEN)
        .ok_or(RecordError::Overrun { at })?;
    let kind = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let crc = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let payload = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN.checked_add(len)?))
        .ok_or(RecordError::Overrun { at })?;
    if record_crc(kind, len, payload) != crc {
        return Err(RecordError::Checksum { at });
    }
    Ok((kind, payload))
}

fn decode_event(kind: u8, payload: &[u8], at: usize) -> Result<Event, RecordError> {
    let decode = |source| RecordError::Decode { at, source };
    Ok(match kind {
        KIND_ENTRY => {
            let (index, bytes) = entry_payload(payload).map_err(decode)?;
            Event::Entry(codec::entry_log_id(index, bytes).map_err(decode)?)
        }
        KIND_VOTE => Event::Vote(codec::decode_vote(payload).map_err(decode)?),
        KIND_COMMITTED => Event::Committed(codec::decode_log_id(payload).map_err(decode)?),
        KIND_PURGED => Event::Purged(codec::decode_log_id(payload).map_err(decode)?),
        KIND_TRUNCATE_AFTER => {
            let mut r = Fields(payload);
            let id = r.log_id().map_err(decode)?;
            r.finish().map_err(decode)?;
            Event::TruncateAfter(id)
        }
        KIND_CHECKPOINT => {
            let mut r = Fields(payload);
            let prev_end = r.u64().map_err(decode)?;
            let prepared_len = r.u64().map_err(decode)?;
            let vote = r
                .optional()
                .map_err(decode)?
                .map(codec::decode_vote)
                .transpose()
                .map_err(decode)?;
            let committed = r.log_id().map_err(decode)?;
            let purged = r.log_id().map_err(decode)?;
            let last = r.log_id().map_err(decode)?;
            r.finish().map_err(decode)?;
            Event::Checkpoint(Checkpoint {
                prev_end,
                prepared_len,
                meta: Meta {
                    vote,
                    committed,
                    purged,
                    last,
                },
            })
        }
        kind => return Err(RecordError::UnknownKind { at, kind }),
    })
}

fn entry_payload(payload: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut r = Fields(payload);
    let index = r.u64()?;
    Ok((index, r.0))
}

/// The entry record read back alone from `bytes` (exactly the record), verified: its index and
/// the entry's bytes.
pub(crate) fn entry_record(bytes: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    let (kind, payload) = split_record(bytes, 0)?;
    if kind != KIND_ENTRY || RECORD_HEADER_LEN + payload.len() != bytes.len() {
        return Err(RecordError::NotTheEntry { at: 0 });
    }
    entry_payload(payload).map_err(|source| RecordError::Decode { at: 0, source })
}

/// A cursor over a record payload's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated {
                need: n,
                have: self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut out = [0; 8];
        out.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(out))
    }

    fn optional(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = usize::from(self.take(1)?[0]);
        (len > 0).then(|| self.take(len)).transpose()
    }

    fn log_id(&mut self) -> Result<Option<LogId>, DecodeError> {
        self.optional()?.map(codec::decode_log_id).transpose()
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                extra: self.0.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use crate::LeaderId;

    use super::*;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(LeaderId::new(term, 1), index)
    }

    fn entry_bytes(term: u64) -> Vec<u8> {
        // `codec::encode_entry`'s layout for a blank entry: v1 | term | node | tag 0.
        let mut bytes = vec![1];
        bytes.extend_from_slice(&term.to_be_bytes());
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.push(0);
        bytes
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Checkpoint(Checkpoint {
                prev_end: 8192,
                prepared_len: 1 << 20,
                meta: Meta {
                    vote: Some(Vote::new_committed(3, 1)),
                    committed: Some(id(3, 7)),
                    purged: None,
                    last: Some(id(3, 9)),
                },
            }),
            Record::Entry {
                index: 10,
                bytes: entry_bytes(3),
            },
            Record::Vote(Vote::new(4, 2)),
            Record::Committed(id(3, 10)),
            Record::TruncateAfter(Some(id(3, 9))),
            Record::TruncateAfter(None),
            Record::Purged(id(3, 5)),
        ]
    }

    fn frame_of(records: &[Record]) -> (Vec<u8>, Vec<Placed>) {
        let mut builder = FrameBuilder::with_capacity(0);
        let placed = records.iter().map(|r| builder.push(r)).collect();
        (builder.finish(7, 4096), placed)
    }

    #[test]
    fn a_frame_reads_back_as_the_records_written() {
        let records = sample();
        let (frame, placed) = frame_of(&records);
        assert_eq!(frame.len() as u64 % ALIGN, 0);
        let body_len = header_body_len(&frame[..HEADER_LEN], 7, 4096).expect("valid header");
        let body = &frame[HEADER_LEN..HEADER_LEN + body_len as usize];
        let read = events(body).expect("records");
        let expected: Vec<Event> = records.iter().map(|r| r.event().expect("event")).collect();
        assert_eq!(
            read.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
            expected
        );
        for ((_, found), written) in read.iter().zip(&placed) {
            assert_eq!((found.at, found.len), (written.at, written.len));
        }
        // One entry read back alone, from where it was placed.
        let at = placed[1];
        let start = usize::try_from(at.at).expect("small");
        let record = &frame[start..start + usize::try_from(at.len).expect("small")];
        assert_eq!(
            entry_record(record).expect("entry"),
            (10, &entry_bytes(3)[..])
        );
    }

    #[test]
    fn a_header_is_valid_only_for_its_segment_and_offset() {
        let (frame, _) = frame_of(&sample());
        let header = &frame[..HEADER_LEN];
        assert!(header_body_len(header, 7, 4096).is_some());
        assert!(
            header_body_len(header, 8, 4096).is_none(),
            "a recycled file's old frame"
        );
        assert!(
            header_body_len(header, 7, 0).is_none(),
            "a frame found at another offset"
        );
        assert!(header_body_len(&[0; HEADER_LEN], 0, 0).is_none(), "zeros");
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let (frame, _) = frame_of(&sample());
        let body_len = header_body_len(&frame[..HEADER_LEN], 7, 4096).expect("header") as usize;
        for byte in 0..HEADER_LEN + body_len {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[byte] ^= 1 << bit;
                let caught = match header_body_len(&damaged[..HEADER_LEN], 7, 4096) {
                    None => true,
                    Some(len) => damaged
                        .get(HEADER_LEN..HEADER_LEN + len as usize)
                        .is_none_or(|body| events(body).is_err()),
                };
                assert!(caught, "bit {bit} of byte {byte} flipped unnoticed");
            }
        }
    }

    #[test]
    fn a_cut_body_is_an_overrun_not_a_panic() {
        let (frame, _) = frame_of(&sample());
        let body_len = header_body_len(&frame[..HEADER_LEN], 7, 4096).expect("header") as usize;
        let all = sample().len();
        for cut in 1..body_len {
            let body = &frame[HEADER_LEN..HEADER_LEN + cut];
            // Cut at a record boundary it decodes, to fewer records; anywhere else it fails.
            if let Ok(read) = events(body) {
                assert!(read.len() < all, "a body cut at {cut} decoded whole");
            }
        }
    }

    #[test]
    fn meta_follows_the_records() {
        let mut meta = Meta::default();
        for record in sample() {
            meta.apply(&record.event().expect("event"));
        }
        assert_eq!(
            meta,
            Meta {
                vote: Some(Vote::new(4, 2)),
                committed: Some(id(3, 10)),
                purged: Some(id(3, 5)),
                // Truncated to nothing, then the purge sets the end at the purged id.
                last: Some(id(3, 5)),
            }
        );
    }
}
