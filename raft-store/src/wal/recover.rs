//! Opening a WAL: every retained segment is read back and verified, and where the log ends is
//! decided.
//!
//! The rules, each a consequence of how the writer works: a new segment is filled with zeros
//! and synced before its first frame; a frame is written only after the one before it is
//! durable; a new segment is started only after the last frame of the previous one is durable,
//! and at the first write after an open that found anything but zeros after the last frame.
//! - The retained segments are the run of consecutive sequence numbers ending at the highest;
//!   the writer drops purged segments oldest first, so anything below a gap is a leftover of an
//!   interrupted drop (and the check on missing entries below refuses a gap that loses any).
//! - Every frame of a segment that has a successor must be whole, up to exactly where the
//!   successor's checkpoint says it ends: a damaged frame there was durable, so it is
//!   corruption. A file shorter than its checkpoint says it was made is a truncated copy.
//! - In the last segment, the log ends at the first frame that is not whole, and that frame is
//!   a torn write only if it could be one: a crash loses whole sectors, which then read as the
//!   zeros written before, so a torn frame has an all-zero sector where its damage starts or
//!   after it (or runs past the end of the file) and a whole header (a header is one sector). A damaged frame without a zero sector, a
//!   damaged header, or a damaged frame followed anywhere by a whole one is corruption, and
//!   opening fails, naming the segment and offset.
//! - Each segment after the first starts with a checkpoint equal to what the records before it
//!   say; the first one's checkpoint stands for the dropped segments, whose entries must all
//!   have been purged (or truncated) by the records that follow.
//!
//! Recovery only reads: a refused log is left as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::LogId;

use super::frame::{self, Event, HEADER_LEN, Header, Meta};

/// The unit a disk writes whole: what a crash loses, it loses in sectors.
const SECTOR: usize = 512;
use super::storage::{SegmentFile, Storage};
use super::{Location, segment_name, segment_seq, spare_seq};
use crate::error::StoreError;

/// A segment as recovered.
#[derive(Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub file: Arc<dyn SegmentFile>,
    /// Where the next frame goes.
    pub end: u64,
    /// The highest entry index written into it, if any.
    pub max_index: Option<u64>,
    /// How long it was made before its first frame.
    pub prepared: u64,
    /// The last segment only: nothing but zeros after `end`, so writing may resume there.
    pub clean_tail: bool,
}

#[derive(Debug)]
pub(crate) struct Recovered {
    pub meta: Meta,
    pub entries: BTreeMap<u64, (LogId, Location)>,
    /// The retained segments, oldest first; the last is where writing resumes.
    pub segments: Vec<Segment>,
    pub spares: Vec<String>,
    /// Segments left behind by an interrupted drop, already purged.
    pub stale: Vec<String>,
    /// Where a damaged last frame (a torn write) was cut off: segment and offset.
    pub torn: Option<(u64, u64)>,
}

enum Frame {
    Whole {
        events: Vec<(Event, frame::Placed)>,
        next: u64,
    },
    /// Nothing of this segment here: zeros, the end of the file, or an earlier use's frame.
    Absent,
    /// A frame a crash could have torn.
    Torn(String),
    /// Damage no crash explains.
    Corrupt(String),
    /// A frame of another format version.
    Version(u8),
    /// Bytes that are not ours at all.
    Foreign,
}

pub(crate) fn recover(storage: &dyn Storage) -> Result<Recovered, StoreError> {
    let dir = storage.path().to_path_buf();
    let io = |action: &'static str| {
        let dir = dir.clone();
        move |e| StoreError::from_io(&dir, action, e)
    };
    let names = storage.list().map_err(io("listing the log directory"))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| segment_seq(n)).collect();
    seqs.sort_unstable();
    let spares = names
        .iter()
        .filter(|n| spare_seq(n).is_some())
        .cloned()
        .collect();
    let mut start = seqs.len().saturating_sub(1);
    while start > 0 && seqs[start - 1].checked_add(1) == Some(seqs[start]) {
        start -= 1;
    }
    let stale = seqs.get(..start).unwrap_or(&[]).iter();
    let stale = stale.map(|&s| segment_name(s)).collect();

    let mut opened = Vec::new();
    for &seq in seqs.get(start..).unwrap_or(&[]) {
        let file = storage
            .open(&segment_name(seq))
            .map_err(io("opening a log segment"))?;
        let len = file.size().map_err(io("reading a log segment"))?;
        let first = read_frame(file.as_ref(), seq, 0, len).map_err(io("reading a log segment"))?;
        opened.push((seq, file, len, Some(first)));
    }
    // Where each segment ends, as its successor's checkpoint says.
    let limits: Vec<Option<u64>> = (0..opened.len())
        .map(|i| match opened.get(i + 1).and_then(|o| o.3.as_ref()) {
            Some(Frame::Whole { events, .. }) => match events.first() {
                Some((Event::Checkpoint(cp), _)) => Some(cp.prev_end),
                _ => None,
            },
            _ => None,
        })
        .collect();

    let mut replay = Replay::default();
    let mut segments = Vec::new();
    let mut torn = None;
    let count = opened.len();
    for (i, (seq, file, len, first)) in opened.into_iter().enumerate() {
        let path = dir.join(segment_name(seq));
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let limit = limits[i];
        let mut first = first;
        let mut offset = 0;
        let mut max_index = None;
        let mut clean_tail = false;
        while Some(offset) != limit {
            let frame = match first.take() {
                Some(frame) => frame,
                None => read_frame(file.as_ref(), seq, offset, len)
                    .map_err(io("reading a log segment"))?,
            };
            let why = match frame {
                Frame::Whole { events, next } => {
                    for (k, (event, placed)) in events.into_iter().enumerate() {
                        if let (0, Event::Checkpoint(cp)) = (offset, &event)
                            && cp.prepared_len > len
                        {
                            return Err(corrupt(format!(
                                "the file is {len} bytes, but it was made {} bytes long: a \
                                 truncated copy",
                                cp.prepared_len
                            )));
                        }
                        let location = Location {
                            segment: seq,
                            offset: offset + placed.at,
                            len: placed.len,
                        };
                        if let Event::Entry(id) = &event {
                            max_index = max_index.max(Some(id.index));
                        }
                        replay
                            .event(event, offset == 0 && k == 0, i == 0, location)
                            .map_err(|detail| corrupt(format!("at offset {offset}: {detail}")))?;
                    }
                    offset = next;
                    continue;
                }
                Frame::Version(found) => {
                    return Err(StoreError::UnsupportedVersion {
                        path,
                        found: u32::from(found),
                        supported: u32::from(frame::VERSION),
                    });
                }
                Frame::Foreign if offset == 0 => {
                    return Err(StoreError::ForeignFile {
                        path,
                        expected: "raft log segment",
                        reason: "it does not start with a frame of this segment".into(),
                    });
                }
                Frame::Foreign => "bytes that are not a frame".to_string(),
                Frame::Corrupt(why) => why,
                Frame::Absent if limit.is_none() => {
                    // Nothing written here; nothing whole may follow (a zeroed header of a
                    // durable frame would otherwise end the log silently).
                    let after = scan_after(file.as_ref(), seq, offset, len)
                        .map_err(io("reading a log segment"))?;
                    if let Some(at) = after.frame {
                        return Err(corrupt(format!(
                            "no frame starts at offset {offset}, yet a whole frame follows at \
                             {at}"
                        )));
                    }
                    clean_tail = after.zeros;
                    break;
                }
                Frame::Absent => "no frame".to_string(),
                Frame::Torn(why) if limit.is_none() => {
                    if let Some(at) = scan_after(file.as_ref(), seq, offset, len)
                        .map_err(io("reading a log segment"))?
                        .frame
                    {
                        return Err(corrupt(format!(
                            "the frame at offset {offset} is damaged ({why}), and a whole frame \
                             follows at {at}: this is not a torn write"
                        )));
                    }
                    torn = Some((seq, offset));
                    break;
                }
                Frame::Torn(why) => why,
            };
            return Err(corrupt(match limit {
                Some(end) => format!(
                    "at offset {offset}: {why}, but the next segment says this one ends at {end}"
                ),
                None => format!("at offset {offset}: {why}"),
            }));
        }
        if offset == 0 && i + 1 < count && limit.is_none() {
            return Err(corrupt(
                "a segment without frames is followed by another segment".into(),
            ));
        }
        segments.push(Segment {
            seq,
            file,
            end: offset,
            max_index,
            prepared: len,
            clean_tail,
        });
    }
    replay.finish().map_err(|detail| StoreError::Corrupt {
        path: dir.clone(),
        detail,
    })?;
    Ok(Recovered {
        meta: replay.meta,
        entries: replay.entries,
        segments,
        spares,
        stale,
        torn,
    })
}

/// The record stream replayed into the log's state.
#[derive(Default)]
struct Replay {
    meta: Meta,
    entries: BTreeMap<u64, (LogId, Location)>,
    /// Entries up to here were in dropped segments: the records must purge them.
    missing_upto: Option<u64>,
}

impl Replay {
    fn event(
        &mut self,
        event: Event,
        opens_segment: bool,
        first_segment: bool,
        location: Location,
    ) -> Result<(), String> {
        match (&event, opens_segment) {
            (Event::Checkpoint(cp), true) if first_segment => {
                self.meta = cp.meta.clone();
                let index = |id: Option<LogId>| id.map(|id| id.index);
                if index(cp.meta.last) > index(cp.meta.purged) {
                    self.missing_upto = index(cp.meta.last);
                }
                return Ok(());
            }
            (Event::Checkpoint(cp), true) => {
                if cp.meta != self.meta {
                    return Err(format!(
                        "the segment's checkpoint {:?} differs from the records before it {:?}",
                        cp.meta, self.meta
                    ));
                }
                return Ok(());
            }
            (_, true) => return Err("the segment does not start with a checkpoint".into()),
            (Event::Checkpoint(_), false) => {
                return Err("a checkpoint in the middle of a segment".into());
            }
            (Event::Entry(id), _) => {
                self.entries.insert(id.index, (*id, location));
            }
            (Event::TruncateAfter(kept), _) => {
                match kept {
                    None => self.entries.clear(),
                    Some(kept) => drop(after(&mut self.entries, kept.index)),
                }
                self.missing_upto = match kept {
                    None => None,
                    Some(kept) => self.missing_upto.map(|m| m.min(kept.index)),
                };
            }
            (Event::Purged(upto), _) => {
                self.entries = after(&mut self.entries, upto.index);
            }
            (Event::Vote(_) | Event::Committed(_), _) => {}
        }
        self.meta.apply(&event);
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        let purged = self.meta.purged.map(|id| id.index);
        if let Some(missing) = self.missing_upto
            && purged < Some(missing)
        {
            return Err(format!(
                "entries up to index {missing} were in log segments that are missing (purged \
                 only up to {purged:?})"
            ));
        }
        let index = |id: Option<LogId>| id.map(|id| id.index);
        if index(self.meta.committed) > index(self.meta.last) {
            return Err(format!(
                "committed {:?} is beyond the last log id {:?}",
                self.meta.committed, self.meta.last
            ));
        }
        Ok(())
    }
}

fn read_frame(file: &dyn SegmentFile, seq: u64, offset: u64, len: u64) -> std::io::Result<Frame> {
    let header_end = offset + HEADER_LEN as u64;
    if header_end > len {
        return Ok(Frame::Absent);
    }
    let mut bytes = vec![0u8; HEADER_LEN];
    file.read_exact_at(&mut bytes, offset)?;
    let body_len = match frame::read_header(&bytes, seq, offset) {
        Header::Frame(body_len) => body_len,
        Header::Zeros | Header::Elsewhere => return Ok(Frame::Absent),
        Header::Damaged => return Ok(Frame::Corrupt("its header fails its checksum".into())),
        Header::Version(found) => return Ok(Frame::Version(found)),
        Header::Foreign => return Ok(Frame::Foreign),
    };
    let body_end = header_end + u64::from(body_len);
    if body_end > len {
        return Ok(Frame::Torn(format!(
            "its body of {body_len} bytes runs past the end of the file"
        )));
    }
    bytes.resize(
        HEADER_LEN + usize::try_from(body_len).unwrap_or(usize::MAX),
        0,
    );
    file.read_exact_at(&mut bytes[HEADER_LEN..], header_end)?;
    Ok(match frame::events(&bytes[HEADER_LEN..]) {
        Ok(events) => Frame::Whole {
            events,
            next: offset + frame::aligned(HEADER_LEN as u64 + u64::from(body_len)),
        },
        // Frames start at sector boundaries, so these chunks are the frame's sectors; a torn
        // write shows a lost one where the damage starts or after it.
        Err(e) if lost_sector(&bytes, e.at()) => Frame::Torn(e.to_string()),
        Err(e) => Frame::Corrupt(format!("{e}, and no sector from there on was lost")),
    })
}

/// Whether a sector of `frame` (its last one may be partial) from the one holding byte `from`
/// on reads as zeros: what a crash that lost it leaves.
fn lost_sector(frame: &[u8], from: usize) -> bool {
    let start = from / SECTOR * SECTOR;
    frame
        .get(start..)
        .is_some_and(|rest| rest.chunks(SECTOR).any(|s| s.iter().all(|&b| b == 0)))
}

/// The entries of `map` after `index` (all of them are split off `map`).
pub(crate) fn after<V>(map: &mut BTreeMap<u64, V>, index: u64) -> BTreeMap<u64, V> {
    match index.checked_add(1) {
        Some(next) => map.split_off(&next),
        None => BTreeMap::new(),
    }
}

/// What follows `offset` in a segment.
struct After {
    /// The offset of a whole frame header of this segment, if any.
    frame: Option<u64>,
    /// Whether every byte from `offset` on is zero.
    zeros: bool,
}

fn scan_after(file: &dyn SegmentFile, seq: u64, offset: u64, len: u64) -> std::io::Result<After> {
    const CHUNK: u64 = 1 << 20;
    let mut zeros = true;
    let mut at = offset;
    let mut chunk = Vec::new();
    while at < len {
        let take = CHUNK.min(len - at);
        chunk.resize(usize::try_from(take).unwrap_or(usize::MAX), 0);
        file.read_exact_at(&mut chunk, at)?;
        zeros &= chunk.iter().all(|&b| b == 0);
        // Frame headers start at multiples of ALIGN; `at` is one (`offset` is, and CHUNK).
        let mut pos = if at == offset { frame::ALIGN_BYTES } else { 0 };
        while pos + HEADER_LEN <= chunk.len() {
            if frame::header_body_len(&chunk[pos..pos + HEADER_LEN], seq, at + pos as u64).is_some()
            {
                return Ok(After {
                    frame: Some(at + pos as u64),
                    zeros: false,
                });
            }
            pos += frame::ALIGN_BYTES;
        }
        at += take;
    }
    Ok(After { frame: None, zeros })
}
