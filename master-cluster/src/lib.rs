//! master-cluster: the SlapOS master as a Raft-replicated cluster.
//!
//! Built so far (issue 3): [`state`], the master's domain as a deterministic state machine that
//! raft-store hosts — computers and partitions, the software release catalog and supply,
//! instances and their request trees, the marketplace that places them, connection parameters,
//! usage and an audit trail. Start with `state/mod.rs`, then `state/apply.rs`.
//!
//! Coming (issue 4): the gRPC services (node, user, admin, internal Raft) with forwarding to the
//! leader, consistent and long-poll reads, membership, and the `slapmaster` binary.
//!
//! Depends on raft-store; clients (node-client, ops) must never depend on this crate, only on
//! the wire contract.

pub mod state;
