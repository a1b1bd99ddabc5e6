//! master-cluster: the SlapOS master as a Raft-replicated cluster.
//!
//! Built so far (issue 3): [`state`], the master's domain as a deterministic state machine that
//! raft-store hosts — computers and partitions, the software release catalog and supply,
//! instances and their request trees, the marketplace that places them, connection parameters,
//! usage and an audit trail. Start with `state/mod.rs`, then `state/apply.rs`.
//!
//! [`replica`] (issue 4, in progress): a replica — the state machine on raft-store, driven by
//! openraft over the internal gRPC Raft service of `slapcluster-api`. Any replica accepts any
//! write (batched at the leader, forwarded there from followers), serves linearizable, stale and
//! `min_index` reads and per-computer long-polls, and the leader changes membership. Start with
//! `replica/mod.rs`. Coming: the node, user and admin services and the `slapmaster` binary.
//!
//! Depends on raft-store; clients (node-client, ops) must never depend on this crate, only on
//! the wire contract.

pub mod daemon;
pub mod replica;
pub mod service;
pub mod state;
