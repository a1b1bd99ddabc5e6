//! [`StateMachineStore`]: applies committed entries through an [`Application`] into
//! `state.redb`, and builds and installs snapshots.
//!
//! Invariants kept on disk:
//! - A batch of entries, the `last_applied` log id after it and the last membership in it are
//!   written by one redb transaction: a crash leaves every entry of the batch applied or none.
//!   The transaction is durable (two-phase, fsynced) at least every
//!   [`Options::state_sync_interval`](crate::Options) — every batch with the default of zero.
//!   Between two durable commits a crash rolls the state back to the last durable one, with
//!   its `last_applied`; openraft then replays the committed entries after it from the log,
//!   which is always durable. A rollback never goes behind a snapshot: building one first
//!   makes every applied batch durable, so the log purged behind it is never needed again.
//! - No entry is applied twice: a batch must start after `last_applied`.
//! - A snapshot is one read transaction's view, written and fsynced before it is returned.
//!   Installing one replaces the application tables, `last_applied` and the membership in one
//!   transaction; the file is published as the current snapshot only after that commit.

use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io;

use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::type_config::alias::SnapshotOf;
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use redb::TableDefinition;
use tokio_stream::{Stream, StreamExt};

use crate::codec;
use crate::db::StoreFile;
use crate::error::StoreError;
use crate::snapshot::{self, SnapshotDir};
use crate::worker::Worker;
use crate::{
    AppliedState, Entry, LogId, MembershipOf, SnapshotFile, SnapshotMetaOf, TypeConfig, blocking,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state_meta");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";

/// The application state machine that raft-store hosts (the SlapOS master in master-cluster).
///
/// Its state lives in byte tables (`TableDefinition<&[u8], &[u8]>`) of the transaction it is
/// given, with names not starting with `raft_`: raft-store snapshots and installs exactly
/// those tables, without knowing what they mean.
pub trait Application<C: TypeConfig>: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies a batch of committed entries, in order, writing only through `txn`, and returns
    /// one response per entry (blank and membership entries included).
    ///
    /// Must be deterministic: the same entries on the same state give the same writes and
    /// responses on every replica. A command that the domain rejects is a response, not an
    /// `Err`: an `Err` means the application cannot go on (its tables are unreadable), rolls
    /// the whole batch back and stops the replica.
    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[Entry<C>],
    ) -> Result<Vec<C::R>, Self::Error>;

    /// Creates the application's tables if they are missing. Called when the store opens and
    /// after a snapshot is installed (which may come from a release with fewer tables), in the
    /// same transaction, so that readers never meet a missing table.
    fn initialize(&self, txn: &redb::WriteTransaction) -> Result<(), Self::Error> {
        let _ = txn;
        Ok(())
    }

    /// Called after a transaction of [`Application::apply`] or of a snapshot install
    /// committed (`installed` tells which), so the application can wake readers waiting for
    /// what it just wrote: they will find it in a new read transaction. Not called when the
    /// transaction failed.
    fn committed(&self, installed: bool) {
        let _ = installed;
    }
}

/// The state machine of one replica. Cheap to clone; clones share the open file.
pub struct StateMachineStore<C, A> {
    inner: Arc<Inner<A>>,
    /// The thread that applies batches (`worker.rs` says why one of its own).
    applier: Worker,
    _config: PhantomData<fn() -> C>,
}

impl<C, A> Clone for StateMachineStore<C, A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            applier: self.applier.clone(),
            _config: PhantomData,
        }
    }
}

struct Inner<A> {
    file: StoreFile,
    snapshots: SnapshotDir,
    app: A,
    /// Apply commits durably when this much time passed since the last durable commit.
    sync_interval: Duration,
    observer: Option<Arc<dyn crate::Observer>>,
    /// Only the applying task and the snapshot builder take it, briefly; never across IO.
    last_sync: std::sync::Mutex<Instant>,
}

/// Builds snapshots concurrently with apply, from its own read transaction.
pub struct SnapshotBuilder<C, A> {
    store: StateMachineStore<C, A>,
}

impl<C: TypeConfig, A: Application<C>> StateMachineStore<C, A> {
    pub(crate) fn new(
        file: StoreFile,
        snapshots: SnapshotDir,
        app: A,
        sync_interval: Duration,
        observer: Option<Arc<dyn crate::Observer>>,
    ) -> Result<Self, StoreError> {
        const ACTION: &str = "creating state machine tables";
        let txn = file.begin_write(ACTION)?;
        txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
        app.initialize(&txn)
            .map_err(|source| application_error(&file, "initialising", source))?;
        txn.commit().map_err(|e| file.error(ACTION, e))?;
        let applier = Worker::spawn("state-apply", &file.path)?;
        Ok(Self {
            applier,
            inner: Arc::new(Inner {
                file,
                snapshots,
                app,
                sync_interval,
                observer,
                last_sync: std::sync::Mutex::new(Instant::now()),
            }),
            _config: PhantomData,
        })
    }

    /// Runs `work` on the blocking pool with the shared state.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner<A>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(&self.inner, &self.inner.file.path, work).await
    }

    /// A consistent read view of the applied state, for queries. It sees whole batches only.
    pub fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.inner.file.begin_read("reading the state machine")
    }

    pub fn path(&self) -> &Path {
        &self.inner.file.path
    }

    /// Whether every handle on this store is gone, so that its file is closed (and may be
    /// opened again, in this process too). Holds no handle itself.
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static
    where
        A: Send + Sync + 'static,
    {
        let inner = Arc::downgrade(&self.inner);
        move || inner.strong_count() == 0
    }

    /// The index of the last applied entry as `txn` (from [`Self::begin_read`]) sees it: the
    /// state a query in that transaction reads is exactly the one after this entry.
    pub fn applied_index(&self, txn: &redb::ReadTransaction) -> Result<Option<u64>, StoreError> {
        let (applied, _) = read_applied::<C>(&self.inner.file, txn)?;
        Ok(applied.map(|log_id| log_id.index))
    }

    /// The last applied log id and the membership as of it.
    pub async fn applied(&self) -> Result<AppliedState<C>, StoreError> {
        self.run(|inner| {
            let txn = inner.file.begin_read("reading the applied state")?;
            read_applied::<C>(&inner.file, &txn)
        })
        .await
    }

    /// Applies `entries` in one transaction (durable as [`crate::Options::state_sync_interval`]
    /// says) and returns the application's responses.
    pub async fn apply_entries(&self, entries: Vec<Entry<C>>) -> Result<Vec<C::R>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        self.applier
            .run(move || {
                let started = Instant::now();
                let responses = inner.apply_batch::<C>(&entries)?;
                if let Some(observer) = &inner.observer {
                    observer.applied(entries.len(), started.elapsed());
                }
                Ok(responses)
            })
            .await
    }

    /// Builds a snapshot of the applied state and publishes it as the current one.
    pub async fn build_snapshot_now(&self) -> Result<SnapshotFile<C>, StoreError> {
        self.run(|inner| inner.build_snapshot::<C>()).await
    }

    pub async fn current_snapshot(&self) -> Result<Option<SnapshotFile<C>>, StoreError> {
        self.run(|inner| inner.snapshots.current::<C>()).await
    }

    /// The published snapshot's length in bytes, if there is one (see
    /// [`crate::SnapshotSchedule`]).
    pub fn snapshot_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.inner.snapshots.current_bytes()
    }

    /// Starts this (empty) state machine from a backup — a snapshot file taken from another
    /// cluster — under `membership`, and publishes a snapshot of it for learners to catch up
    /// from. Returns that snapshot's meta. See [`crate::restore`].
    pub async fn restore_backup(
        &self,
        backup: File,
        membership: MembershipOf<C>,
    ) -> Result<SnapshotMetaOf<C>, StoreError> {
        self.run(move |inner| inner.restore::<C>(backup, membership))
            .await
    }

    /// Installs the snapshot in `data` (any readable file, read from its start) with `meta`.
    pub async fn install_snapshot_file(
        &self,
        meta: SnapshotMetaOf<C>,
        data: File,
    ) -> Result<(), StoreError> {
        self.run(move |inner| inner.install_snapshot::<C>(&meta, data))
            .await
    }
}

impl<A> Inner<A> {
    fn apply_batch<C: TypeConfig>(&self, entries: &[Entry<C>]) -> Result<Vec<C::R>, StoreError>
    where
        A: Application<C>,
    {
        const ACTION: &str = "applying entries";
        let file = &self.file;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let durable = self.sync_due();
        let txn = if durable {
            file.begin_write(ACTION)?
        } else {
            file.begin_write_non_durable(ACTION)?
        };
        let responses = {
            // Open for the whole batch: an application that touched our metadata would fail
            // with "table already open" instead of overwriting `last_applied`.
            let mut meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
            // Applying an entry twice would apply its command twice. (openraft also never
            // skips an index, but its conformance suite does, so only going back is refused.)
            if let Some(applied) = file.read_log_id(&meta, LAST_APPLIED)?
                && first.log_id.index <= applied.index
            {
                return Err(StoreError::Invariant {
                    path: file.path.clone(),
                    detail: format!(
                        "batch starting at {} would apply again what {applied} already covers",
                        first.log_id
                    ),
                });
            }

            let responses = self
                .app
                .apply(&txn, entries)
                .map_err(|source| application_error(file, &last.log_id.to_string(), source))?;
            if responses.len() != entries.len() {
                return Err(StoreError::Invariant {
                    path: file.path.clone(),
                    detail: format!(
                        "the application returned {} responses for {} entries",
                        responses.len(),
                        entries.len()
                    ),
                });
            }

            meta.insert(LAST_APPLIED, codec::encode_log_id(&last.log_id).as_slice())
                .map_err(|e| file.error(ACTION, e))?;
            let membership = entries.iter().rev().find_map(|e| match &e.payload {
                EntryPayload::Membership(m) => {
                    Some(StoredMembership::new(Some(e.log_id), m.clone()))
                }
                _ => None,
            });
            if let Some(membership) = membership {
                let value = codec::encode_membership::<C>(&membership).map_err(|source| {
                    StoreError::Encode {
                        path: file.path.clone(),
                        source,
                    }
                })?;
                meta.insert(MEMBERSHIP, value.as_slice())
                    .map_err(|e| file.error(ACTION, e))?;
            }
            responses
        };
        txn.commit().map_err(|e| file.error(ACTION, e))?;
        if durable {
            *self.lock_sync() = Instant::now();
        }
        self.app.committed(false);
        Ok(responses)
    }

    fn lock_sync(&self) -> std::sync::MutexGuard<'_, Instant> {
        // The guarded value is a plain instant: a panicking holder cannot leave it torn.
        self.last_sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_due(&self) -> bool {
        self.sync_interval.is_zero() || self.lock_sync().elapsed() >= self.sync_interval
    }

    /// Makes every batch applied so far durable (an empty durable commit persists the
    /// non-durable ones before it).
    fn sync(&self) -> Result<(), StoreError> {
        const ACTION: &str = "syncing the state machine";
        let txn = self.file.begin_write(ACTION)?;
        txn.commit().map_err(|e| self.file.error(ACTION, e))?;
        *self.lock_sync() = Instant::now();
        Ok(())
    }

    fn build_snapshot<C: TypeConfig>(&self) -> Result<SnapshotFile<C>, StoreError> {
        // openraft may purge the log up to the snapshot as soon as it is built: the state must
        // never roll back behind it.
        if !self.sync_interval.is_zero() {
            self.sync()?;
        }
        let txn = self.file.begin_read("building a snapshot")?;
        let (last_log_id, last_membership) = read_applied::<C>(&self.file, &txn)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id,
            last_membership,
        };
        let mut tmp = self.snapshots.temp_file()?;
        let tmp_path = tmp.path().to_path_buf();
        let id = snapshot_id(last_log_id.as_ref());
        snapshot::export::<C>(
            &txn,
            &meta,
            &id,
            tmp.as_file_mut(),
            &self.file.path,
            &tmp_path,
        )?;
        drop(txn);
        // A second handle stays readable even if a newer snapshot wins and this file is removed.
        let file = tmp
            .reopen()
            .map_err(|e| StoreError::from_io(&tmp_path, "reopening a built snapshot", e))?;
        self.snapshots.publish::<C>(tmp, &meta)?;
        Ok(SnapshotFile { meta, id, file })
    }

    fn install_snapshot<C: TypeConfig>(
        &self,
        meta: &SnapshotMetaOf<C>,
        mut data: File,
    ) -> Result<(), StoreError>
    where
        A: Application<C>,
    {
        let (txn, copy, found) = self.import::<C>(&mut data)?;
        if &found != meta {
            return Err(StoreError::Corrupt {
                path: received_label(&self.snapshots.current_path()),
                detail: format!("snapshot header {found} disagrees with the announced {meta}"),
            });
        }
        self.record_applied::<C>(&txn, meta)?;
        txn.commit()
            .map_err(|e| self.file.error("installing a snapshot", e))?;
        self.app.committed(true);
        self.snapshots.publish::<C>(copy, meta)?;
        Ok(())
    }

    /// Replaces the application tables with a backup's, under a new membership, and publishes
    /// a snapshot of the result (the backup's own header names the old membership).
    fn restore<C: TypeConfig>(
        &self,
        mut backup: File,
        membership: MembershipOf<C>,
    ) -> Result<SnapshotMetaOf<C>, StoreError>
    where
        A: Application<C>,
    {
        const ACTION: &str = "restoring a backup";
        {
            let txn = self.file.begin_read(ACTION)?;
            if let (Some(applied), _) = read_applied::<C>(&self.file, &txn)? {
                return Err(StoreError::Invariant {
                    path: self.file.path.clone(),
                    detail: format!(
                        "a backup is restored only into an empty data directory; this one has \
                         applied up to {applied}"
                    ),
                });
            }
        }
        let (txn, _copy, found) = self.import::<C>(&mut backup)?;
        let meta = SnapshotMetaOf::<C> {
            last_membership: StoredMembership::new(found.last_log_id, membership),
            ..found
        };
        self.record_applied::<C>(&txn, &meta)?;
        txn.commit().map_err(|e| self.file.error(ACTION, e))?;
        self.app.committed(true);
        Ok(self.build_snapshot::<C>()?.meta)
    }

    /// Imports a snapshot's tables into a new write transaction (not committed), with a copy
    /// of its bytes; returns the meta its header names.
    fn import<C: TypeConfig>(
        &self,
        data: &mut File,
    ) -> Result<
        (
            redb::WriteTransaction,
            tempfile::NamedTempFile,
            SnapshotMetaOf<C>,
        ),
        StoreError,
    >
    where
        A: Application<C>,
    {
        let file = &self.file;
        let received = received_label(&self.snapshots.current_path());
        let mut copy = self.snapshots.temp_file()?;
        let txn = file.begin_write("installing a snapshot")?;
        let found = snapshot::import::<C>(&txn, data, copy.as_file_mut(), &file.path, &received)?;
        self.app
            .initialize(&txn)
            .map_err(|source| application_error(file, "initialising", source))?;
        Ok((txn, copy, found))
    }

    /// Records in `txn` that the state is the one `meta` describes.
    fn record_applied<C: TypeConfig>(
        &self,
        txn: &redb::WriteTransaction,
        meta: &SnapshotMetaOf<C>,
    ) -> Result<(), StoreError> {
        const ACTION: &str = "installing a snapshot";
        let file = &self.file;
        let mut table = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
        match &meta.last_log_id {
            Some(log_id) => {
                table
                    .insert(LAST_APPLIED, codec::encode_log_id(log_id).as_slice())
                    .map_err(|e| file.error(ACTION, e))?;
            }
            None => {
                table
                    .remove(LAST_APPLIED)
                    .map_err(|e| file.error(ACTION, e))?;
            }
        }
        let membership =
            codec::encode_membership::<C>(&meta.last_membership).map_err(|source| {
                StoreError::Encode {
                    path: file.path.clone(),
                    source,
                }
            })?;
        table
            .insert(MEMBERSHIP, membership.as_slice())
            .map_err(|e| file.error(ACTION, e))?;
        Ok(())
    }
}

fn application_error(
    file: &StoreFile,
    at: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Application {
        path: file.path.clone(),
        at: at.to_string(),
        source: Box::new(source),
    }
}

/// Unique per build: the log id it covers and the build time.
fn snapshot_id(last_log_id: Option<&LogId>) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last_log_id {
        Some(id) => format!(
            "{}-{}-{}-{nanos}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("empty-{nanos}"),
    }
}

/// How errors name a snapshot that arrived over the network and has no file of its own yet.
fn received_label(current: &Path) -> PathBuf {
    current.with_file_name("(received snapshot)")
}

fn read_applied<C: TypeConfig>(
    file: &StoreFile,
    txn: &redb::ReadTransaction,
) -> Result<AppliedState<C>, StoreError> {
    const ACTION: &str = "reading the applied state";
    let meta = txn.open_table(META).map_err(|e| file.error(ACTION, e))?;
    let last_applied = file.read_log_id(&meta, LAST_APPLIED)?;
    let membership = match meta.get(MEMBERSHIP).map_err(|e| file.error(ACTION, e))? {
        None => StoredMembership::default(),
        Some(value) => codec::decode_membership::<C>(value.value())
            .map_err(|e| StoreError::corrupt_value(&file.path, "membership".to_string(), e))?,
    };
    Ok((last_applied, membership))
}

impl<C: TypeConfig, A: Application<C>> RaftStateMachine<C> for StateMachineStore<C, A> {
    type SnapshotData = tokio::fs::File;
    type SnapshotBuilder = SnapshotBuilder<C, A>;

    async fn applied_state(&mut self) -> Result<AppliedState<C>, io::Error> {
        Ok(self.applied().await?)
    }

    /// Applies what openraft hands over in one transaction, then answers each entry's client:
    /// an answer is sent only once the transaction committed.
    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        let responses = self.apply_entries(batch).await?;
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: tokio::fs::File,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_std().await;
        Ok(self.install_snapshot_file(meta.clone(), data).await?)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, tokio::fs::File>>, io::Error> {
        let current = self.current_snapshot().await?;
        Ok(current.map(|current| Snapshot {
            meta: current.meta,
            snapshot: tokio::fs::File::from_std(current.file),
        }))
    }
}

/// Where a snapshot sent by a leader in chunks is assembled (openraft-legacy's receiver, which
/// serves leaders that send in chunks: every release so far).
impl<C: TypeConfig, A: Application<C>> openraft_legacy::network_v1::SnapshotReceiverFactory<C>
    for StateMachineStore<C, A>
{
    type SnapshotReceiver = tokio::fs::File;

    async fn begin_receiving_snapshot(&mut self) -> Result<tokio::fs::File, io::Error> {
        let file = self.run(|inner| inner.snapshots.incoming_file()).await?;
        Ok(tokio::fs::File::from_std(file))
    }
}

impl<C: TypeConfig, A: Application<C>> RaftSnapshotBuilder<C> for SnapshotBuilder<C, A> {
    type SnapshotData = tokio::fs::File;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, tokio::fs::File>, io::Error> {
        let built = self.store.build_snapshot_now().await?;
        Ok(Snapshot {
            meta: built.meta,
            snapshot: tokio::fs::File::from_std(built.file),
        })
    }
}
