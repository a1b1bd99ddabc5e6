//! master-cluster: the SlapOS master as a Raft-replicated cluster.
//!
//! Read it bottom up; each module uses only those above it in this list (`tests/layers.rs`
//! holds the crate to that):
//!
//! - [`state`]: the master's domain as a deterministic state machine that raft-store hosts —
//!   computers and partitions, the software release catalog and supply, instances and their
//!   request trees, the marketplace that places them, connection parameters, usage and an
//!   audit trail, and the one authorisation policy. Start with `state/mod.rs`, then
//!   `state/apply.rs`.
//! - [`tls`]: a replica's certificates, and who a caller's chain says it is.
//! - [`limits`]: what one caller may take of a replica (connections, calls a second, calls in
//!   flight, decode memory, message sizes), asked by every listener before it spends.
//! - [`listen`]: how every listener accepts (per-address admission, TLS handshakes) and serves
//!   HTTP/1.1 connections.
//! - [`replica`]: the replica core — the state machine on raft-store, driven by openraft
//!   through its network to the other replicas. Any replica accepts any write (batched at the
//!   leader, forwarded there from followers), serves linearizable, stale and `min_index`
//!   reads and per-computer long-polls, signs certificates, and the leader changes
//!   membership. It serves nothing itself; its answers and refusals are transport-free.
//!   Start with `replica/mod.rs`.
//! - The transports, each mapping the core's outcomes to its own answers once:
//!   [`grpc`] (the public node, user and admin services of `slapcluster-api` in
//!   `grpc::public`, and the internal Raft service between replicas), [`slap`] (the SLAP HTTP protocol of existing SlapOS nodes
//!   and clients) and [`observe`] (metrics, health, readiness and the status page on the
//!   operations listener).
//! - [`panel`]: the web panel for users and operators, on its own HTTPS listener, above the
//!   transports because it shows the status page and reads forms as SLAP does.
//! - [`server`]: the composition root — binds the listeners, opens the core, mounts the
//!   transports around it, and owns shutdown.
//! - [`daemon`]: `slapmaster`'s commands (run, init, join, bootstrap, instance, promise,
//!   restore, ca, cert, dev: what runs on a replica's machine; `slapctl` talks to clusters) and
//!   its configuration; `main.rs` only parses the command line.
//!
//! Depends on raft-store. Clients talk to it through the wire contract only: neither node-client
//! nor ops (slapctl, the load tools) depends on this crate. The tests share `test-kit`.

pub mod daemon;

/// Locks a std mutex whose data stays whole whatever a panicking holder did (every use here
/// guards plain values, sets and maps updated in one statement), using a poisoned one as is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub mod grpc;
pub mod limits;
pub mod listen;
pub mod observe;
pub mod panel;
pub mod replica;
pub mod server;
pub mod slap;
pub mod state;
pub mod tls;
