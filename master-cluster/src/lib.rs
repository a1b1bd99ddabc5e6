//! master-cluster: the SlapOS master as a Raft-replicated cluster.
//!
//! - [`state`]: the master's domain as a deterministic state machine that raft-store hosts —
//!   computers and partitions, the software release catalog and supply, instances and their
//!   request trees, the marketplace that places them, connection parameters, usage and an
//!   audit trail. Start with `state/mod.rs`, then `state/apply.rs`.
//! - [`replica`]: a replica — the state machine on raft-store, driven by openraft over the
//!   internal gRPC Raft service. Any replica accepts any write (batched at the leader,
//!   forwarded there from followers), serves linearizable, stale and `min_index` reads and
//!   per-computer long-polls, and the leader changes membership. Start with `replica/mod.rs`.
//! - [`service`]: the node, user and admin gRPC services of `slapcluster-api`, on the replica's
//!   port; decoding, and the one mapping of outcomes to gRPC statuses.
//! - [`observe`]: metrics, health, readiness and the status page on the replica's HTTP
//!   operations listener (`http_listen`).
//! - [`daemon`]: `slapmaster`'s commands (run, init, join, backup, restore, status, dev) and
//!   its configuration; `main.rs` only parses the command line.
//!
//! Depends on raft-store; clients (node-client, ops) must never depend on this crate, only on
//! the wire contract (ops's load tool is a dev-dependency here, for its smoke test).

pub mod daemon;

/// Locks a std mutex whose data stays whole whatever a panicking holder did (every use here
/// guards plain values, sets and maps updated in one statement), using a poisoned one as is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub mod observe;
pub mod replica;
pub mod service;
pub mod state;
pub mod tls;
