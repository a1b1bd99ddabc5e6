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
//! - [`limits`]: what one caller may take of a replica (connections, calls a second, calls in
//!   flight, decode memory), asked by every listener before it spends.
//! - [`listen`]: how every listener accepts (per-address admission, TLS handshakes) and serves
//!   HTTP/1.1 connections.
//! - [`slap`]: the SLAP HTTP protocol of existing SlapOS nodes and clients (in progress).
//! - [`daemon`]: `slapmaster`'s commands (run, init, join, backup, restore, status, dev) and
//!   its configuration; `main.rs` only parses the command line.
//!
//! Depends on raft-store. Clients talk to it through the wire contract only: node-client never
//! depends on this crate; ops does for one local operation (`slapctl snapshot restore`, which
//! builds a data directory with [`daemon::restore_reporting`]), and is a dev-dependency here
//! for the load tool's smoke test.

pub mod daemon;

/// Locks a std mutex whose data stays whole whatever a panicking holder did (every use here
/// guards plain values, sets and maps updated in one statement), using a poisoned one as is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub mod limits;
pub mod listen;
pub mod observe;
pub mod replica;
pub mod service;
pub mod slap;
pub mod state;
pub mod tls;
