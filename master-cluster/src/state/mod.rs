//! The SlapOS master as a deterministic state machine, hosted by raft-store.
//!
//! [`MasterState`] is the [`raft_store::Application`]: it applies [`Command`]s (model in
//! `model.rs`, commands in `command.rs`) through `apply.rs`, whose marketplace is
//! `placement.rs`; the tables are described in `tables.rs`; `query.rs` answers reads;
//! `policy.rs` decides who may do what, for every transport and for every command applied;
//! [`status`] says how an instance or a computer is doing (ok, warning, failing, and why).
//! [`MemoryState`] runs the same code on an in-memory database for tests and benchmarks, and
//! [`sample`] makes the computers and requests they send.

mod apply;
pub mod command;
mod keys;
mod memory;
pub mod model;
mod notifier;
mod placement;
pub mod policy;
pub mod query;
pub mod sample;
pub mod status;
mod tables;
mod upgrade;

use std::sync::Arc;

use openraft::EntryPayload;
use raft_store::Entry;
use serde::{Deserialize, Serialize};

pub use apply::{
    ALERTS_KEPT, HISTORY_KEPT, MAX_LOG_BYTES, MAX_NAME_BYTES, MAX_PARAMETERS_BYTES, MAX_SLA_BYTES,
    check_input,
};
pub use command::{
    BatchResponse, Command, CommandBatch, InstanceReport, InstanceRequest, InstanceSummary, Op,
    Outcome, Rejection, RejectionKind, Response,
};
pub use memory::MemoryState;
pub use notifier::Notifier;
pub use placement::{CATEGORY_KEYS, PROJECT_KEY};
pub use tables::StateError;

openraft::declare_raft_types!(
    /// The master cluster's openraft types: commands in, responses out.
    pub MasterConfig:
        D = CommandBatch,
        R = BatchResponse,
        Node = ReplicaNode,
);

/// A replica as the membership records it: its address is its identity (a replica that moves
/// is a new member), its region is what operators spread voters over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// `http://[host]:port`, as other replicas and clients reach it.
    pub addr: String,
    pub region: String,
}

/// The SlapOS master's state machine. Everything it knows is in the tables; it holds only the
/// [`Notifier`] that wakes readers waiting on a computer. Clones share it.
#[derive(Debug, Default, Clone)]
pub struct MasterState {
    notifier: Arc<Notifier>,
}

impl MasterState {
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}

impl raft_store::Application<MasterConfig> for MasterState {
    type Error = StateError;

    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[Entry<MasterConfig>],
    ) -> Result<Vec<BatchResponse>, StateError> {
        let mut t = tables::Tables::open_write(txn)?;
        let mut changes = apply::Changes::default();
        let responses = entries
            .iter()
            .map(|entry| match &entry.payload {
                EntryPayload::Normal(CommandBatch(commands)) => (0u64..)
                    .zip(commands)
                    .map(|(position, command)| {
                        apply::apply(&mut t, entry.log_id.index, position, command, &mut changes)
                    })
                    .collect(),
                EntryPayload::Blank | EntryPayload::Membership(_) => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.notifier.stage(changes);
        Ok(responses)
    }

    fn committed(&self, installed: bool) {
        self.notifier.committed(installed);
    }

    fn initialize(&self, txn: &redb::WriteTransaction) -> Result<(), StateError> {
        tables::create_all(txn)?;
        apply::count_holdings_once(&mut tables::Tables::open_write(txn)?)
    }
}

#[cfg(test)]
mod tests;
