//! raft-store: durable storage for openraft 0.10: the Raft log in a write-ahead
//! log, the state machine on redb, and a host for an application state machine. It knows
//! nothing of SlapOS: master-cluster plugs its state machine in through [`Application`].
//!
//! A replica's data directory holds three things, opened together by [`open`]:
//! - `log/` — the Raft log, the vote and the committed log id ([`LogStore`]), as segment files
//!   of checksummed frames (`wal/`); a `log.redb` left by an earlier release is converted into
//!   it once (`legacy.rs`);
//! - `state.redb` — the application's tables plus `last_applied` and the membership, written
//!   by one transaction per applied batch ([`StateMachineStore`]);
//! - `snapshots/current.snapshot` — the latest snapshot, a streamed dump of the application
//!   tables (`snapshot.rs` documents the format).
//!
//! [`SnapshotSchedule`] (`schedule.rs`) decides when a snapshot is worth building, by entries
//! and by the log's bytes against the last snapshot's.
//!
//! Where to start reading: `log_store.rs` and `state_machine.rs` state what openraft is
//! promised; `wal/mod.rs` how the log is written and recovered; `codec.rs` the byte layouts;
//! `db.rs` how a redb file is accepted (format marker, integrity check, two-phase commits);
//! `error.rs` how every failure names its file and cause.
//!
//! Must never depend on: master-cluster or anything SlapOS, the network, the async runtime
//! beyond tokio's blocking pool, its file handle (which openraft's snapshot API requires) and
//! its oneshot channel; the log's writer and the state machine's apply are threads of their
//! own (`worker.rs`).
//! [`testing`] holds the small key-value application that the conformance suite, the crash
//! tests and the benchmarks use, and the disks that lose power ([`testing::power_loss`]) on
//! which `tests/power_loss.rs` runs the store.

mod codec;
mod db;
mod error;
mod legacy;
mod log_store;
mod schedule;
mod snapshot;
mod state_machine;
pub mod testing;
pub mod wal;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{EntryPayload, RaftTypeConfig};

pub use codec::{DecodeError, EncodeError};
pub use error::StoreError;
pub use log_store::LogStore;
pub use schedule::SnapshotSchedule;
pub use snapshot::snapshot_id;
pub use state_machine::{Application, SnapshotBuilder, StateMachineStore};

/// Leader ids as openraft 0.9 had them, and as the log and snapshots on disk encode them: a
/// term and the node elected in it, ordered by term then node.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
/// A log entry's position: the leader that proposed it and its index.
pub type LogId = openraft::LogId<LeaderId>;
/// A replica's vote: the leader it voted for, and whether a quorum granted it.
pub type Vote = openraft::impls::Vote<LeaderId>;
/// The payload of an entry of a [`TypeConfig`].
pub type PayloadOf<C> = EntryPayload<<C as RaftTypeConfig>::D, u64, <C as RaftTypeConfig>::Node>;
/// A log entry of a [`TypeConfig`].
pub type Entry<C> = openraft::Entry<LeaderId, PayloadOf<C>>;
/// A cluster membership of a [`TypeConfig`].
pub type MembershipOf<C> = openraft::Membership<u64, <C as RaftTypeConfig>::Node>;

/// The openraft type configurations raft-store can store: node ids and terms are `u64`
/// (encoded big-endian), leader ids are [`LeaderId`], entries are openraft's `Entry` (cloned
/// out of the log's cache).
pub trait TypeConfig:
    RaftTypeConfig<
        NodeId = u64,
        Term = u64,
        LeaderId = LeaderId,
        Vote = Vote,
        Payload = PayloadOf<Self>,
        Entry = Entry<Self>,
        D: Clone,
    >
{
}

impl<C> TypeConfig for C where
    C: RaftTypeConfig<
            NodeId = u64,
            Term = u64,
            LeaderId = LeaderId,
            Vote = Vote,
            Payload = PayloadOf<C>,
            Entry = Entry<C>,
            D: Clone,
        >
{
}

/// Snapshot meta of a [`TypeConfig`].
pub type SnapshotMetaOf<C> = openraft::SnapshotMeta<LeaderId, u64, <C as RaftTypeConfig>::Node>;
/// Membership with the log id that set it, of a [`TypeConfig`].
pub type StoredMembershipOf<C> =
    openraft::StoredMembership<LeaderId, u64, <C as RaftTypeConfig>::Node>;
/// The last applied log id and the membership as of it, as openraft asks for them.
pub type AppliedState<C> = (Option<LogId>, StoredMembershipOf<C>);

/// A published snapshot: its meta, its id and an open handle to its file, positioned at its
/// start.
#[derive(Debug)]
pub struct SnapshotFile<C: TypeConfig> {
    pub meta: SnapshotMetaOf<C>,
    /// Unique per build (openraft 0.10's meta has none): a chunked transfer names the snapshot
    /// by it; see [`snapshot_id`].
    pub id: String,
    pub file: std::fs::File,
}

/// Tuning for [`open`]. Nothing here affects what is on disk.
#[derive(Debug, Clone)]
pub struct Options {
    /// Recent log entries kept in memory, so that replication and apply do not read them back
    /// from disk (entries not yet durable are always kept). Default 64 MiB.
    pub log_cache_bytes: usize,
    /// Size of a log segment file. Default 16 MiB.
    pub log_segment_bytes: u64,
    /// redb page cache for `state.redb`, which serves every read of the application. Default
    /// 512 MiB.
    pub state_cache_bytes: usize,
    /// How often applied batches are made durable in `state.redb`. Zero (the default) makes
    /// every batch durable. A longer interval saves two fsyncs per batch in between: a crash
    /// then loses up to this much applied state, which openraft re-applies from the log (the
    /// log is always durable, and is never purged behind durable state).
    pub state_sync_interval: std::time::Duration,
    /// Told how long appends and applies take (for metrics). None by default.
    pub observer: Option<Arc<dyn Observer>>,
}

/// Told how long the store's durable work takes, on the task that did it; keep it cheap
/// (an atomic histogram), it is on the write path.
pub trait Observer: Send + Sync + std::fmt::Debug + 'static {
    /// `entries` appended to the log and made durable, `took` after the call.
    fn log_appended(&self, entries: usize, took: std::time::Duration);
    /// `entries` applied to the state machine in one transaction.
    fn applied(&self, entries: usize, took: std::time::Duration);
}

impl Default for Options {
    fn default() -> Self {
        Self {
            log_cache_bytes: 64 << 20,
            log_segment_bytes: 16 << 20,
            state_cache_bytes: 512 << 20,
            state_sync_interval: std::time::Duration::ZERO,
            observer: None,
        }
    }
}

/// The files of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The write-ahead log's directory.
    pub log: PathBuf,
    /// The log as releases before the write-ahead log kept it; converted on open.
    pub legacy_log: PathBuf,
    pub state: PathBuf,
    pub snapshots: PathBuf,
}

impl DataDir {
    pub fn new(dir: &Path) -> Self {
        Self {
            log: dir.join("log"),
            legacy_log: dir.join("log.redb"),
            state: dir.join("state.redb"),
            snapshots: dir.join("snapshots"),
        }
    }

    /// The files of `dir`, created if needed.
    fn create(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::from_io(dir, "creating the data directory", e))?;
        Ok(Self::new(dir))
    }
}

/// Opens (creating if needed) the log and state machine of the data directory `dir`.
///
/// Blocking: it reads back every retained log segment and verifies the checksum of every page
/// of the state machine, which reads them whole. A file that is not ours, is corrupt, or is
/// open elsewhere is refused with an error naming it, and is not modified.
pub fn open<C, A>(
    dir: &Path,
    app: A,
    options: &Options,
) -> Result<(LogStore<C>, StateMachineStore<C, A>), StoreError>
where
    C: TypeConfig,
    A: Application<C>,
{
    let paths = DataDir::create(dir)?;
    legacy::convert_if_needed::<C>(&paths, options.log_sizes())?;
    let log = wal::Wal::open(
        Arc::new(wal::FsStorage::open(&paths.log)?),
        options.log_sizes(),
        options.log_cache_bytes,
    )?;
    let state = db::StoreFile::open(&paths.state, db::STATE_FILE, options.state_cache_bytes)?;
    assemble(log, state, paths, app, options)
}

/// Like [`open`], with the log and the state machine on storage the caller supplies instead
/// of `log/` and `state.redb` (the power-loss test's disks, [`testing::power_loss`]); `dir`
/// holds the snapshots, and names the state machine in errors as if it were its file.
pub fn open_on<C, A>(
    dir: &Path,
    log: Arc<dyn wal::Storage>,
    state: impl redb::StorageBackend,
    app: A,
    options: &Options,
) -> Result<(LogStore<C>, StateMachineStore<C, A>), StoreError>
where
    C: TypeConfig,
    A: Application<C>,
{
    let paths = DataDir::create(dir)?;
    let log = wal::Wal::open(log, options.log_sizes(), options.log_cache_bytes)?;
    let state = db::StoreFile::open_on(
        state,
        &paths.state,
        db::STATE_FILE,
        options.state_cache_bytes,
    )?;
    assemble(log, state, paths, app, options)
}

impl Options {
    fn log_sizes(&self) -> wal::Sizes {
        wal::Sizes {
            segment_bytes: self.log_segment_bytes.max(wal::MIN_SEGMENT_BYTES),
            spares: 2,
        }
    }
}

fn assemble<C, A>(
    log: wal::Wal<C>,
    state: db::StoreFile,
    paths: DataDir,
    app: A,
    options: &Options,
) -> Result<(LogStore<C>, StateMachineStore<C, A>), StoreError>
where
    C: TypeConfig,
    A: Application<C>,
{
    let snapshots = snapshot::SnapshotDir::open(paths.snapshots)?;
    Ok((
        LogStore::new(log, options.observer.clone()),
        StateMachineStore::new(
            state,
            snapshots,
            app,
            options.state_sync_interval,
            options.observer.clone(),
        )?,
    ))
}

/// Starts a new cluster from a backup (a snapshot file of another cluster): `log` and `state`
/// must be freshly opened on an empty data directory. The state becomes the backup's, under
/// `membership` (normally the restoring replica `id` alone); the log starts after it, and the
/// vote is set to the backup's last term so that `id`'s first election follows it. Returns the
/// snapshot now published.
///
/// Not atomic across the two files: restore into a scratch directory and move it into place
/// once this returned (as `slapmaster restore` does); an interrupted restore is discarded.
pub async fn restore<C, A>(
    log: &LogStore<C>,
    state: &StateMachineStore<C, A>,
    backup: std::fs::File,
    id: u64,
    membership: MembershipOf<C>,
) -> Result<SnapshotMetaOf<C>, StoreError>
where
    C: TypeConfig,
    A: Application<C>,
{
    let log_state = log.log_state().await?;
    if log_state.last_log_id.is_some() || log.vote().await?.is_some() {
        return Err(StoreError::Invariant {
            path: state.path().to_path_buf(),
            detail: "a backup is restored only into an empty data directory; this log is not \
                     empty"
                .into(),
        });
    }
    let meta = state.restore_backup(backup, membership).await?;
    if let Some(last) = meta.last_log_id {
        log.purge_upto(last).await?;
        log.save_vote_durably(Vote::new(last.leader_id.term, id))
            .await?;
    }
    Ok(meta)
}

/// Runs blocking storage work on tokio's blocking pool. A panic there (a bug, never a
/// decision made on disk data) becomes a fatal error instead of unwinding into openraft.
async fn blocking<S, T, F>(shared: &Arc<S>, path: &Path, work: F) -> Result<T, StoreError>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
    F: FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(|e| StoreError::TaskFailed {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?
}
