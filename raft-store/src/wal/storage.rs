//! Where the WAL's segments live: a directory of files, behind two small traits so that the
//! power-loss test can put the WAL on disks that lose unsynced writes
//! ([`crate::testing::power_loss::Directory`]). [`FsStorage`] is the real directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;

/// A directory of segment files. Creations, renames and removals become durable only with
/// [`Storage::sync_dir`].
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// The directory, to name it in errors.
    fn path(&self) -> &Path;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>>;
    /// Creates a new empty file; fails if one exists under that name.
    fn create(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn sync_dir(&self) -> io::Result<()>;
}

/// One segment file. Writes become durable only with [`SegmentFile::sync_data`].
pub trait SegmentFile: Send + Sync + std::fmt::Debug {
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an error if the file ends before.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

/// A WAL directory on the file system, locked for this process while it is open.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    /// Held for the lock: a second store on the same directory is refused.
    _lock: File,
}

const LOCK: &str = "LOCK";

impl FsStorage {
    /// Opens (creating if needed) the directory `dir` and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let existed = dir.exists();
        if existed && !dir.is_dir() {
            return Err(StoreError::ForeignFile {
                path: dir.to_path_buf(),
                expected: "raft log directory",
                reason: "it is a file, not a directory".into(),
            });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::from_io(dir, "creating the log directory", e))?;
        // Always: a start that died between creating the directory and syncing its parent
        // must not leave acknowledged segments under a name that is not durable.
        crate::db::sync_parent_dir(dir)?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::from_io(&lock_path, "opening the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::from_io(&lock_path, "locking the log", e));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Storage for FsStorage {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str()
                && name != LOCK
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(file))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(file))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl SegmentFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}
