//! [`MemoryState`]: the master's state machine on an in-memory redb database, applying
//! commands through exactly the code raft-store runs. For tests and benchmarks of the domain,
//! without Raft or a disk.

use openraft::EntryPayload;
use raft_store::Application;
use raft_store::{Entry, LeaderId, LogId};
use redb::ReadableDatabase;
use redb::backends::InMemoryBackend;

use super::command::{Command, CommandBatch, Response};
use super::tables::StateError;
use super::{MasterConfig, MasterState};

pub struct MemoryState {
    db: redb::Database,
    next_index: u64,
}

impl MemoryState {
    pub fn new() -> Result<Self, StateError> {
        let db = redb::Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| StateError::storage("(open)", e))?;
        let txn = db
            .begin_write()
            .map_err(|e| StateError::storage("(open)", e))?;
        MasterState::default().initialize(&txn)?;
        txn.commit().map_err(|e| StateError::storage("(open)", e))?;
        Ok(Self { db, next_index: 1 })
    }

    /// Applies one command as the next log entry.
    pub fn apply(&mut self, command: Command) -> Result<Response, StateError> {
        let mut responses = self.apply_batch(vec![command])?;
        Ok(responses.pop().unwrap_or(Ok(super::Outcome::Done)))
    }

    /// Applies `commands` as one log entry, as the leader's batcher coalesces concurrent writes.
    pub fn apply_entry(&mut self, commands: Vec<Command>) -> Result<Vec<Response>, StateError> {
        let entry = self.next_entry(commands);
        self.apply_entries(&[entry])
    }

    /// Applies commands as consecutive log entries of one command each, in one transaction,
    /// as raft-store does with a run of committed entries.
    pub fn apply_batch(&mut self, commands: Vec<Command>) -> Result<Vec<Response>, StateError> {
        let entries: Vec<Entry<MasterConfig>> = commands
            .into_iter()
            .map(|command| self.next_entry(vec![command]))
            .collect();
        self.apply_entries(&entries)
    }

    /// The next log entry, holding `commands`.
    fn next_entry(&mut self, commands: Vec<Command>) -> Entry<MasterConfig> {
        let index = self.next_index;
        self.next_index += 1;
        Entry::<MasterConfig> {
            log_id: LogId::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Normal(CommandBatch(commands)),
        }
    }

    /// Applies `entries` in one transaction; one answer per command, in order.
    fn apply_entries(
        &mut self,
        entries: &[Entry<MasterConfig>],
    ) -> Result<Vec<Response>, StateError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| StateError::storage("(apply)", e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StateError::storage("(apply)", e))?;
        let responses = MasterState::default().apply(&txn, entries)?;
        txn.commit()
            .map_err(|e| StateError::storage("(apply)", e))?;
        Ok(responses.into_iter().flatten().collect())
    }

    /// Makes the state look as releases before quotas wrote it (no holdings, never counted),
    /// then opens it again as raft-store does.
    #[cfg(test)]
    pub(super) fn forget_holdings(&mut self) -> Result<(), StateError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StateError::storage("(test)", e))?;
        {
            let mut t = super::tables::Tables::open_write(&txn)?;
            t.holdings
                .retain(|_, _| false)
                .map_err(|e| StateError::storage("holdings", e))?;
            t.counters
                .remove(super::keys::Key::new().str("holdings_counted").as_bytes())
                .map_err(|e| StateError::storage("counters", e))?;
        }
        MasterState::default().initialize(&txn)?;
        txn.commit().map_err(|e| StateError::storage("(test)", e))
    }

    /// A read view for the queries in [`super::query`].
    pub fn read(&self) -> Result<redb::ReadTransaction, StateError> {
        self.db
            .begin_read()
            .map_err(|e| StateError::storage("(read)", e))
    }
}
