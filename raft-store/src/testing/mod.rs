//! A minimal key-value [`Application`] and openraft type configuration, shared by the
//! conformance suite, the crash test and the benchmarks. Not for production use: it exists so
//! that raft-store is exercised through the same trait the SlapOS state machine implements.

use std::collections::BTreeMap;

use openraft::{BasicNode, EntryPayload, StorageError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Application, Entry, LogStore, Options, StateMachineStore};

pub mod power_loss;

openraft::declare_raft_types!(
    /// Type configuration of the key-value test application.
    pub KvConfig:
        D = KvCommand,
        R = KvResponse,
        Node = BasicNode,
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// How openraft's logs show a command: what it does and to which key, not the value.
impl std::fmt::Display for KvCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put { key, value } => {
                write!(
                    f,
                    "put {} ({} bytes)",
                    String::from_utf8_lossy(key),
                    value.len()
                )
            }
            Self::Delete { key } => write!(f, "delete {}", String::from_utf8_lossy(key)),
        }
    }
}

/// The value a key held before the command; `None` for blank and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    pub previous: Option<Vec<u8>>,
}

/// Keys and values, plus a count of applied commands (in table `kv_stats`) that tests compare
/// with `last_applied`.
#[derive(Debug, Default)]
pub struct KvApp;

pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
pub const KV_STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_stats");
pub const APPLIED_COMMANDS: &[u8] = b"applied_commands";

#[derive(Debug, thiserror::Error)]
#[error("key-value table: {0}")]
pub struct KvError(#[from] redb::Error);

impl Application<KvConfig> for KvApp {
    type Error = KvError;

    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[Entry<KvConfig>],
    ) -> Result<Vec<KvResponse>, KvError> {
        let mut kv = txn.open_table(KV).map_err(redb::Error::from)?;
        let mut stats = txn.open_table(KV_STATS).map_err(redb::Error::from)?;
        let mut applied = stats
            .get(APPLIED_COMMANDS)
            .map_err(redb::Error::from)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            let previous = match &entry.payload {
                EntryPayload::Normal(KvCommand::Put { key, value }) => {
                    applied += 1;
                    kv.insert(key.as_slice(), value.as_slice())
                        .map_err(redb::Error::from)?
                        .map(|v| v.value().to_vec())
                }
                EntryPayload::Normal(KvCommand::Delete { key }) => {
                    applied += 1;
                    kv.remove(key.as_slice())
                        .map_err(redb::Error::from)?
                        .map(|v| v.value().to_vec())
                }
                EntryPayload::Blank | EntryPayload::Membership(_) => None,
            };
            responses.push(KvResponse { previous });
        }
        stats
            .insert(APPLIED_COMMANDS, applied.to_be_bytes().as_slice())
            .map_err(redb::Error::from)?;
        Ok(responses)
    }

    fn initialize(&self, txn: &redb::WriteTransaction) -> Result<(), KvError> {
        txn.open_table(KV).map_err(redb::Error::from)?;
        txn.open_table(KV_STATS).map_err(redb::Error::from)?;
        Ok(())
    }
}

/// Every key and value in the state seen by `txn`.
pub fn kv_rows(txn: &redb::ReadTransaction) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, redb::Error> {
    txn.open_table(KV)?
        .iter()?
        .map(|row| {
            let (key, value) = row?;
            Ok((key.value().to_vec(), value.value().to_vec()))
        })
        .collect()
}

/// Opens a store for [`KvApp`] in `dir`.
pub fn open_kv(
    dir: &std::path::Path,
) -> Result<(LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>), crate::StoreError> {
    open_kv_with(dir, &Options::default())
}

pub fn open_kv_with(
    dir: &std::path::Path,
    options: &Options,
) -> Result<(LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>), crate::StoreError> {
    crate::open(dir, KvApp, options)
}

/// Opens a store for [`KvApp`] whose log lives in the power-loss directory `log` and whose
/// state machine on the disk `state`, of a machine powered by `power`; `dir` holds the
/// snapshots.
pub fn open_kv_on(
    dir: &std::path::Path,
    log: &power_loss::Directory,
    state: &power_loss::Disk,
    power: &power_loss::Power,
    options: &Options,
) -> Result<(LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>), crate::StoreError> {
    crate::open_on(
        dir,
        log.storage(power),
        state.backend(power),
        KvApp,
        options,
    )
}

/// Builds a fresh store in a temporary directory for each test of openraft's suite; the
/// directory is the guard the suite holds.
pub struct TempStoreBuilder;

impl
    openraft::testing::log::StoreBuilder<
        KvConfig,
        LogStore<KvConfig>,
        StateMachineStore<KvConfig, KvApp>,
        tempfile::TempDir,
    > for TempStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<KvConfig>,
            StateMachineStore<KvConfig, KvApp>,
        ),
        StorageError<KvConfig>,
    > {
        let io = |e: std::io::Error| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let (log, sm) = open_kv(dir.path()).map_err(|e| io(e.into()))?;
        // The directory lives as long as the suite holds the guard.
        Ok((dir, log, sm))
    }
}

/// SplitMix64: the seeded generator of the crash tests, small enough to need no crate.
pub fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
