//! The writer thread: the only code that writes, creates, renames or removes segment files.
//!
//! It takes requests in order and writes everything queued as one frame, then makes it durable
//! with one `fdatasync` (group commit), and only then reports the entries located and calls
//! the requests back. Records without a callback (the committed log id) wait for the next
//! request that has one: they are worth no sync of their own. A frame is written only after
//! the one before it is durable, which is what lets recovery tell a torn write from corruption.
//!
//! Segments: a frame that does not fit in the active segment goes to a new one, which starts
//! with a checkpoint of the metadata. A new segment reuses a spare (a purged segment, renamed;
//! its blocks are already allocated) or is created, and either way is filled with zeros and
//! synced before its first frame: then a later `fdatasync` writes data, not block allocations,
//! and a sector a crash loses reads as zeros, which is how recovery tells a torn write from
//! corruption. Once a purge is durable, segments holding only purged entries become spares (up
//! to a few) or are removed. After a restart the writer starts a new segment rather than write
//! after the recovered end when a torn frame's remains lie there (anything but zeros); a
//! recovered last segment without any frame (the machine stopped before its first one) is made
//! again in place, so that no segment without frames is ever sealed behind another.
//!
//! Filling a segment with zeros stalls the writer for as long as that takes, once per segment
//! (16 MiB by default).
//!
//! On an I/O error the writer stops for good (fail-stop: after a failed `fdatasync` the page
//! cache can no longer be trusted, so nothing is retried): every waiting and later request
//! fails.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use crate::LogId;

use super::frame::{
    Checkpoint, Event, FrameBuilder, HEADER_LEN, MAX_PAYLOAD, Meta, Record, aligned,
};
use super::recover::{Recovered, Segment};
use super::storage::{SegmentFile, Storage};
use super::{Location, segment_name, spare_name};

/// Called once the request is durable, or with why it never will be.
pub(crate) type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The open segment files, shared with the readers of entries no longer cached.
pub(crate) type Files = Arc<RwLock<BTreeMap<u64, Arc<dyn SegmentFile>>>>;

pub(crate) struct Request {
    pub records: Vec<Record>,
    /// None: write with the next request that has a callback.
    pub done: Option<Done>,
}

/// What the writer tells the in-memory log.
pub(crate) trait Reports: Send + 'static {
    /// These entries are durable, there.
    fn located(&self, entries: &[(LogId, Location)]);
    /// The writer stopped on `error`; nothing more will be written.
    fn failed(&self, error: &io::Error);
}

/// How big segments are and how many purged ones are kept for reuse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub segment_bytes: u64,
    pub spares: usize,
}

pub(crate) struct Writer {
    storage: Arc<dyn Storage>,
    sizes: Sizes,
    active: Segment,
    sealed: VecDeque<Segment>,
    spares: Vec<String>,
    stale: Vec<String>,
    /// Where the segment before the active one ends (the active one's checkpoint says so).
    prev_end: u64,
    start_new_segment: bool,
    /// A created, renamed or removed file awaits a directory sync.
    dir_dirty: bool,
    /// The metadata as of the end of what is written.
    written: Meta,
    deferred: Vec<Record>,
    files: Files,
    reports: Box<dyn Reports>,
}

impl Writer {
    /// A writer resuming after `recovered`; creates the first segment of a new log.
    pub fn new(
        storage: Arc<dyn Storage>,
        sizes: Sizes,
        recovered: Recovered,
        files: Files,
        reports: Box<dyn Reports>,
    ) -> io::Result<Self> {
        let Recovered {
            meta,
            mut segments,
            spares,
            stale,
            ..
        } = recovered;
        let (active, fresh) = match segments.pop() {
            Some(last) if last.end > 0 => (last, false),
            // Started but never written (a crash, or a full disk, before its first frame):
            // made again in place, so that no segment without frames is ever sealed.
            Some(empty) => {
                let source = Source::Reuse(empty.file);
                (
                    new_segment(storage.as_ref(), sizes, empty.seq, source)?,
                    true,
                )
            }
            None => (
                new_segment(storage.as_ref(), sizes, 1, Source::Create)?,
                true,
            ),
        };
        let prev_end = segments.last().map_or(0, |s| s.end);
        {
            let mut map = files.write().unwrap_or_else(|p| p.into_inner());
            for segment in segments.iter().chain([&active]) {
                map.insert(segment.seq, Arc::clone(&segment.file));
            }
        }
        Ok(Self {
            storage,
            sizes,
            // Never write over a torn frame's remains: a later crash could show them after a
            // whole frame, which recovery must call corruption. Zeros are safe to write over.
            start_new_segment: !fresh && !active.clean_tail,
            active,
            sealed: segments.into(),
            spares,
            stale,
            prev_end,
            dir_dirty: fresh,
            written: meta,
            deferred: Vec::new(),
            files,
            reports,
        })
    }

    pub fn run(mut self, requests: Receiver<Request>) {
        if let Err(error) = self.remove_stale() {
            return self.fail(&error, Vec::new(), &requests);
        }
        // Group commit: everything queued, up to a quarter segment, goes in one frame.
        let group_bytes = (self.sizes.segment_bytes / 4).max(1);
        while let Ok(first) = requests.recv() {
            let mut bytes = 0;
            let mut batch = vec![first];
            while bytes < group_bytes {
                match requests.try_recv() {
                    Ok(request) => {
                        bytes += request.records.iter().map(Record::encoded_len).sum::<u64>();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            let mut dones = Vec::new();
            for request in batch {
                self.deferred.extend(request.records);
                dones.extend(request.done);
            }
            if dones.is_empty() {
                continue;
            }
            let records = std::mem::take(&mut self.deferred);
            match self.write(records) {
                Ok(located) => {
                    self.reports.located(&located);
                    for done in dones {
                        done(Ok(()));
                    }
                }
                Err(error) => return self.fail(&error, dones, &requests),
            }
        }
    }

    fn fail(&self, error: &io::Error, dones: Vec<Done>, requests: &Receiver<Request>) {
        tracing::error!(dir = %self.storage.path().display(), %error, "the log writer stopped");
        // First refuse new requests, then fail those already queued: none is left waiting.
        self.reports.failed(error);
        let queued = requests.try_iter().filter_map(|r| r.done);
        for done in dones.into_iter().chain(queued) {
            done(Err(io::Error::new(error.kind(), error.to_string())));
        }
    }

    /// Writes `records` durably, as one frame unless its body would pass what a frame's
    /// length field holds; returns the entries written, located.
    fn write(&mut self, records: Vec<Record>) -> io::Result<Vec<(LogId, Location)>> {
        let mut located = Vec::new();
        let mut chunk = Vec::new();
        let mut chunk_len = 0;
        for record in records {
            let len = record.encoded_len();
            if !chunk.is_empty() && chunk_len + len > MAX_PAYLOAD as u64 {
                located.extend(self.write_frame(std::mem::take(&mut chunk))?);
                chunk_len = 0;
            }
            chunk_len += len;
            chunk.push(record);
        }
        if !chunk.is_empty() {
            located.extend(self.write_frame(chunk)?);
        }
        Ok(located)
    }

    /// Writes `records` as one durable frame; returns the entries it holds, located.
    fn write_frame(&mut self, records: Vec<Record>) -> io::Result<Vec<(LogId, Location)>> {
        let records_len = records.iter().map(Record::encoded_len).sum::<u64>();
        let len = aligned(HEADER_LEN as u64 + records_len);
        let full = self.active.end > 0 && self.active.end + len > self.sizes.segment_bytes;
        if self.start_new_segment || full {
            self.rotate()?;
        }
        let mut frame = FrameBuilder::with_capacity(usize::try_from(records_len).unwrap_or(0));
        if self.active.end == 0 {
            frame.push(&Record::Checkpoint(Checkpoint {
                prev_end: self.prev_end,
                prepared_len: self.active.prepared,
                meta: self.written.clone(),
            }));
        }
        let placed: Vec<_> = records.iter().map(|r| frame.push(r)).collect();
        let (seq, offset) = (self.active.seq, self.active.end);
        let bytes = frame.finish(seq, offset);
        self.active.file.write_all_at(&bytes, offset)?;
        self.active.file.sync_data()?;
        if self.dir_dirty {
            self.storage.sync_dir()?;
            self.dir_dirty = false;
        }
        self.active.end += bytes.len() as u64;

        let mut located = Vec::new();
        let mut purged = false;
        for (record, placed) in records.iter().zip(placed) {
            let event = record
                .event()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Event::Entry(id) = event {
                let at = Location {
                    segment: seq,
                    offset: offset + placed.at,
                    len: placed.len,
                };
                located.push((id, at));
                self.active.max_index = self.active.max_index.max(Some(id.index));
            }
            purged |= matches!(event, Event::Purged(_));
            self.written.apply(&event);
        }
        if purged {
            self.recycle()?;
        }
        Ok(located)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.active.seq.checked_add(1).ok_or_else(|| {
            io::Error::other("segment sequence numbers are exhausted; restore from a backup")
        })?;
        let source = self.spares.pop().map_or(Source::Create, Source::Spare);
        let next = new_segment(self.storage.as_ref(), self.sizes, seq, source)?;
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, Arc::clone(&next.file));
        let previous = std::mem::replace(&mut self.active, next);
        self.prev_end = previous.end;
        self.sealed.push_back(previous);
        self.start_new_segment = false;
        self.dir_dirty = true;
        Ok(())
    }

    /// Turns the sealed segments whose entries are all purged (durably) into spares.
    fn recycle(&mut self) -> io::Result<()> {
        let purged = self.written.purged.map(|id| id.index);
        let mut changed = false;
        while let Some(oldest) = self.sealed.front() {
            if oldest.max_index > purged {
                break;
            }
            let seq = oldest.seq;
            self.sealed.pop_front();
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seq);
            if self.spares.len() < self.sizes.spares {
                let spare = spare_name(seq);
                self.storage.rename(&segment_name(seq), &spare)?;
                self.spares.push(spare);
            } else {
                self.storage.remove(&segment_name(seq))?;
            }
            changed = true;
        }
        if changed {
            self.storage.sync_dir()?;
        }
        Ok(())
    }

    fn remove_stale(&mut self) -> io::Result<()> {
        if self.stale.is_empty() {
            return Ok(());
        }
        for name in std::mem::take(&mut self.stale) {
            self.storage.remove(&name)?;
        }
        self.storage.sync_dir()
    }
}

/// Where a new segment's file comes from.
enum Source {
    Create,
    Spare(String),
    /// The recovered last segment, which has no frame yet.
    Reuse(Arc<dyn SegmentFile>),
}

/// Segment `seq`, filled with zeros and synced. Its name is durable only after the next
/// directory sync.
fn new_segment(
    storage: &dyn Storage,
    sizes: Sizes,
    seq: u64,
    source: Source,
) -> io::Result<Segment> {
    const CHUNK: u64 = 1 << 20;
    let name = segment_name(seq);
    let file = match source {
        Source::Create => storage.create(&name)?,
        Source::Spare(spare) => {
            storage.rename(&spare, &name)?;
            storage.open(&name)?
        }
        Source::Reuse(file) => file,
    };
    // A spare that once held an oversized frame is longer: all of it is cleared.
    let prepared = file.size()?.max(sizes.segment_bytes);
    let zeros = vec![0u8; usize::try_from(CHUNK).unwrap_or(usize::MAX)];
    let mut at = 0;
    while at < prepared {
        let take = CHUNK.min(prepared - at);
        file.write_all_at(&zeros[..usize::try_from(take).unwrap_or(0)], at)?;
        at += take;
    }
    file.sync_data()?;
    Ok(Segment {
        seq,
        file,
        end: 0,
        max_index: None,
        prepared,
        clean_tail: true,
    })
}
