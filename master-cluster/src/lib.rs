//! master-cluster: the SlapOS master as a Raft-replicated cluster (issues 3 and 4). It will own
//! the deterministic SlapOS state machine (software releases, computers and partitions, supply,
//! instances and their placement by the marketplace, connection parameters, usage) plugged into
//! raft-store, the gRPC services (node, user, admin, internal Raft) with forwarding to the
//! leader, consistent and long-poll reads, membership, and the `slapmaster` binary.
//!
//! Depends on raft-store; clients (node-client, ops) must never depend on this crate, only on
//! the wire contract.
