//! Disks that lose power: a redb [`StorageBackend`] that keeps what was written since the last
//! sync apart from what is durable, so a test can cut the power at a chosen moment and see
//! which of the unsynced writes a real disk might have kept.
//!
//! Model (what a disk with a volatile write cache promises, and no more):
//! - `sync_data` makes every earlier write and length change of that file durable.
//! - Anything after the last sync may be lost, whole or in part, in any combination: each
//!   512-byte sector of each unsynced write is kept or lost on its own (a torn write), and a
//!   later write of a sector may be lost while an earlier one is kept. Sectors themselves are
//!   written atomically, as redb's header (320 bytes in the first sector) assumes.
//! - A cut hits every disk sharing one [`Power`] at the same instant: after it, every call on
//!   those disks fails, as a process that lost its machine would see nothing more.
//!
//! - A [`Directory`] of disks (the log's segment files) loses the names created, renamed or
//!   removed since its last sync: a cut keeps a prefix of those changes, in order, as a
//!   journaled file system replays its metadata.
//!
//! Reads see the latest writes, as a page cache would. Everything lives in memory: the files of
//! the crash tests are a few megabytes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

use crate::wal::{SegmentFile, Storage};

use super::splitmix;

/// What a torn write is cut into: a sector is written whole or not at all.
pub const SECTOR: u64 = 512;

/// The power supply of the disks of one machine.
#[derive(Debug, Clone, Default)]
pub struct Power(Arc<PowerState>);

#[derive(Debug, Default)]
struct PowerState {
    lost: AtomicBool,
    /// Disk calls left before the cut; zero means no cut is armed.
    calls_left: AtomicU64,
}

impl Power {
    /// Power that stays on until [`Power::cut_now`] or an armed cut.
    pub fn on() -> Self {
        Self::default()
    }

    /// Power that goes out during the `calls`th disk call from now (on any disk of this
    /// machine): that call and every later one fail.
    pub fn cut_after(calls: u64) -> Self {
        let power = Self::default();
        power.0.calls_left.store(calls.max(1), Ordering::SeqCst);
        power
    }

    pub fn cut_now(&self) {
        self.0.lost.store(true, Ordering::SeqCst);
    }

    pub fn is_lost(&self) -> bool {
        self.0.lost.load(Ordering::SeqCst)
    }

    /// Counts one disk call; fails it once the power is out.
    fn call(&self) -> io::Result<()> {
        if !self.is_lost() {
            let counted =
                self.0
                    .calls_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    });
            // Unarmed (zero left), or armed and not yet at the fatal call.
            if counted != Ok(1) {
                return Ok(());
            }
            self.cut_now();
        }
        Err(io::Error::other("power lost"))
    }
}

/// What survives a power cut of the writes made since each disk's last sync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Survival {
    /// Nothing unsynced reaches the platter.
    Nothing,
    /// Everything written reaches it: what a killed process leaves behind.
    Everything,
    /// Each sector of each write (and each length change) independently, with this
    /// probability, drawn from the seed given to [`Disk::power_cycle`].
    Sectors(f64),
}

/// One file's storage: durable bytes and the writes since the last sync. Cheap to clone;
/// clones are the same disk.
#[derive(Debug, Clone, Default)]
pub struct Disk(Arc<Mutex<DiskState>>);

#[derive(Debug, Default)]
struct DiskState {
    /// What survives any power cut.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last sync, in the order they were made.
    pending: Vec<Change>,
}

#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Disk {
    /// An empty disk (a file that does not exist yet: redb creates its database on it).
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend on this disk for one open of a database, powered by `power`.
    pub fn backend(&self, power: &Power) -> DiskBackend {
        DiskBackend {
            disk: self.clone(),
            power: power.clone(),
            lies_about_sync: false,
        }
    }

    /// A backend whose `sync_data` returns without making anything durable: a disk that lies
    /// about its cache. The power-loss test must catch a store on such a disk.
    pub fn lying_backend(&self, power: &Power) -> DiskBackend {
        DiskBackend {
            lies_about_sync: true,
            ..self.backend(power)
        }
    }

    /// The power came back: keeps what `survival` (and `seed`, for [`Survival::Sectors`])
    /// says of the unsynced changes, in order, and makes the result the whole disk. Returns
    /// how many unsynced bytes were lost.
    pub fn power_cycle(&self, survival: Survival, seed: u64) -> u64 {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.pending);
        let mut rng = seed;
        let keep = |rng: &mut u64| match survival {
            Survival::Nothing => false,
            Survival::Everything => true,
            Survival::Sectors(p) => unit(splitmix(rng)) < p,
        };
        let mut image = std::mem::take(&mut state.durable);
        let mut lost = 0;
        for change in pending {
            match change {
                Change::SetLen(len) => {
                    if keep(&mut rng) {
                        image.resize(to_usize(len), 0);
                    }
                }
                Change::Write { offset, data } => {
                    for (at, sector) in sectors(offset, &data) {
                        if keep(&mut rng) {
                            write_at(&mut image, at, sector);
                        } else {
                            lost += sector.len() as u64;
                        }
                    }
                }
            }
        }
        state.current = image.clone();
        state.durable = image;
        lost
    }

    /// Bytes written since the last sync that a cut could lose.
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock()
            .pending
            .iter()
            .map(|c| match c {
                Change::Write { data, .. } => data.len() as u64,
                Change::SetLen(_) => 0,
            })
            .sum()
    }

    /// The disk's current length.
    pub fn len(&self) -> u64 {
        self.lock().current.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // Every change to the state is a whole-value update under the lock; a panicking
        // holder leaves it consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A redb backend on a [`Disk`]; see the module documentation for what it promises.
#[derive(Debug)]
pub struct DiskBackend {
    disk: Disk,
    power: Power,
    lies_about_sync: bool,
}

impl StorageBackend for DiskBackend {
    fn len(&self) -> io::Result<u64> {
        self.power.call()?;
        Ok(self.disk.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.power.call()?;
        let state = self.disk.lock();
        let start = to_usize(offset);
        let bytes = start
            .checked_add(out.len())
            .and_then(|end| state.current.get(start..end))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end ({})",
                        out.len(),
                        state.current.len()
                    ),
                )
            })?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.power.call()?;
        let mut state = self.disk.lock();
        state.current.resize(to_usize(len), 0);
        state.pending.push(Change::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.power.call()?;
        let mut state = self.disk.lock();
        if self.lies_about_sync {
            return Ok(());
        }
        let pending = std::mem::take(&mut state.pending);
        for change in pending {
            match change {
                Change::SetLen(len) => state.durable.resize(to_usize(len), 0),
                Change::Write { offset, data } => write_at(&mut state.durable, offset, &data),
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.power.call()?;
        let mut state = self.disk.lock();
        write_at(&mut state.current, offset, data);
        state.pending.push(Change::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

impl SegmentFile for DiskBackend {
    fn size(&self) -> io::Result<u64> {
        StorageBackend::len(self)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read(offset, buf)
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write(offset, data)
    }

    fn sync_data(&self) -> io::Result<()> {
        StorageBackend::sync_data(self)
    }
}

/// A directory of [`Disk`]s; see the module documentation for what it promises. Cheap to
/// clone; clones are the same directory.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<Mutex<DirectoryState>>);

#[derive(Debug, Default)]
struct DirectoryState {
    durable: BTreeMap<String, Disk>,
    current: BTreeMap<String, Disk>,
    /// Changes of names since the last directory sync, in order.
    pending: Vec<NameChange>,
}

#[derive(Debug, Clone)]
enum NameChange {
    Create(String, Disk),
    Rename(String, String),
    Remove(String),
}

impl NameChange {
    fn apply(&self, names: &mut BTreeMap<String, Disk>) {
        match self {
            Self::Create(name, disk) => {
                names.insert(name.clone(), disk.clone());
            }
            Self::Rename(from, to) => {
                if let Some(disk) = names.remove(from) {
                    names.insert(to.clone(), disk);
                }
            }
            Self::Remove(name) => {
                names.remove(name);
            }
        }
    }
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The directory as the store sees it, powered by `power`.
    pub fn storage(&self, power: &Power) -> Arc<dyn Storage> {
        Arc::new(DirectoryStorage {
            dir: self.clone(),
            power: power.clone(),
            lies_about_sync: false,
            path: PathBuf::from("log (power-loss disks)"),
        })
    }

    /// A directory whose files and name changes are never made durable by a sync.
    pub fn lying_storage(&self, power: &Power) -> Arc<dyn Storage> {
        Arc::new(DirectoryStorage {
            dir: self.clone(),
            power: power.clone(),
            lies_about_sync: true,
            path: PathBuf::from("log (lying disks)"),
        })
    }

    /// The power came back: keeps what `survival` says of the unsynced name changes (a prefix)
    /// and of each remaining file's unsynced writes. Returns how many unsynced bytes were lost.
    pub fn power_cycle(&self, survival: Survival, seed: u64) -> u64 {
        let mut state = self.lock();
        let mut rng = seed;
        let pending = std::mem::take(&mut state.pending);
        let mut names = std::mem::take(&mut state.durable);
        for change in pending {
            let kept = match survival {
                Survival::Nothing => false,
                Survival::Everything => true,
                Survival::Sectors(p) => unit(splitmix(&mut rng)) < p,
            };
            if !kept {
                break;
            }
            change.apply(&mut names);
        }
        let lost = names
            .values()
            .map(|disk| disk.power_cycle(survival, splitmix(&mut rng)))
            .sum();
        state.current = names.clone();
        state.durable = names;
        lost
    }

    fn lock(&self) -> MutexGuard<'_, DirectoryState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct DirectoryStorage {
    dir: Directory,
    power: Power,
    lies_about_sync: bool,
    path: PathBuf,
}

impl DirectoryStorage {
    fn file(&self, disk: &Disk) -> Arc<dyn SegmentFile> {
        Arc::new(DiskBackend {
            disk: disk.clone(),
            power: self.power.clone(),
            lies_about_sync: self.lies_about_sync,
        })
    }

    fn change(&self, change: NameChange) {
        let mut state = self.dir.lock();
        change.apply(&mut state.current);
        state.pending.push(change);
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Storage for DirectoryStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.power.call()?;
        Ok(self.dir.lock().current.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>> {
        self.power.call()?;
        let disk = self.dir.lock().current.get(name).cloned();
        Ok(self.file(&disk.ok_or_else(|| not_found(name))?))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>> {
        self.power.call()?;
        if self.dir.lock().current.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        let disk = Disk::new();
        self.change(NameChange::Create(name.to_string(), disk.clone()));
        Ok(self.file(&disk))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.power.call()?;
        if !self.dir.lock().current.contains_key(from) {
            return Err(not_found(from));
        }
        self.change(NameChange::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.power.call()?;
        if !self.dir.lock().current.contains_key(name) {
            return Err(not_found(name));
        }
        self.change(NameChange::Remove(name.to_string()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.power.call()?;
        if self.lies_about_sync {
            return Ok(());
        }
        let mut state = self.dir.lock();
        for change in std::mem::take(&mut state.pending) {
            change.apply(&mut state.durable);
        }
        Ok(())
    }
}

/// Writes `data` at `offset`, growing the image as a file write past its end does.
fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = to_usize(offset);
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// `data` written at `offset`, cut at sector boundaries.
fn sectors(offset: u64, data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = offset;
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let room = SECTOR - at % SECTOR;
        let take = rest.len().min(to_usize(room));
        let (sector, tail) = rest.split_at(take);
        let item = (at, sector);
        at += take as u64;
        rest = tail;
        Some(item)
    })
}

/// In-memory images are far below `usize::MAX` on the 64-bit machines this runs on.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A draw in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(disk: &Disk, power: &Power, at: u64, bytes: &[u8]) {
        disk.backend(power).write(at, bytes).expect("write");
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_are_lost() {
        let (disk, power) = (Disk::new(), Power::on());
        written(&disk, &power, 0, &[1; 1000]);
        StorageBackend::sync_data(&disk.backend(&power)).expect("sync");
        written(&disk, &power, 1000, &[2; 24]);
        assert_eq!(disk.unsynced_bytes(), 24);
        assert_eq!(disk.power_cycle(Survival::Nothing, 0), 24);
        assert_eq!(disk.lock().current, vec![1; 1000]);
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors_only() {
        let (disk, power) = (Disk::new(), Power::on());
        written(&disk, &power, 0, &[0; 2048]);
        StorageBackend::sync_data(&disk.backend(&power)).expect("sync");
        written(&disk, &power, 100, &[9; 1500]);
        let lost = disk.power_cycle(Survival::Sectors(0.5), 7);
        let image = disk.lock().current.clone();
        // The write covers sectors [100, 512), [512, 1024), [1024, 1536), [1536, 1600).
        let spans = [(100, 512), (512, 1024), (1024, 1536), (1536, 1600)];
        let mut kept = 0;
        for (start, end) in spans {
            let span = &image[start..end];
            assert!(
                span.iter().all(|&b| b == 9) || span.iter().all(|&b| b == 0),
                "sector {start}..{end} is torn inside"
            );
            kept += if span[0] == 9 { end - start } else { 0 };
        }
        assert_eq!(kept as u64 + lost, 1500);
    }

    #[test]
    fn a_lying_disk_keeps_nothing_it_claimed_to_sync() {
        let (disk, power) = (Disk::new(), Power::on());
        disk.lying_backend(&power)
            .write(0, &[5; 10])
            .expect("write");
        StorageBackend::sync_data(&disk.lying_backend(&power)).expect("sync");
        disk.power_cycle(Survival::Nothing, 0);
        assert!(disk.is_empty());
    }

    #[test]
    fn an_armed_cut_fails_that_call_and_every_later_one() {
        let (a, b) = (Disk::new(), Disk::new());
        let power = Power::cut_after(3);
        let (a, b) = (a.backend(&power), b.backend(&power));
        a.write(0, &[1]).expect("first call");
        b.write(0, &[1]).expect("second call");
        assert!(
            StorageBackend::sync_data(&a).is_err(),
            "the third call loses the power"
        );
        assert!(
            StorageBackend::len(&b).is_err(),
            "the other disk of the machine is out too"
        );
        assert!(power.is_lost());
    }
}
