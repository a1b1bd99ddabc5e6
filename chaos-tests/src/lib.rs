//! chaos-tests: a Jepsen-style suite for slapcluster with real processes.
//!
//! A run ([`run::run`]) builds an IPv6 network of namespaces ([`net`]), starts `slapmaster`
//! replicas in them ([`cluster`]), drives a workload of instance requests, state changes,
//! publishes and reads at both consistency levels ([`workload`]) while the [`nemesis`] kills,
//! pauses and partitions replicas, records everything ([`history`]), and checks it
//! ([`checks`]: linearizability of every instance against [`model`] with the search in
//! [`linearizability`], and the domain's invariants), then writes a report ([`report`]).
//! Everything random comes from one seed ([`rng`]): `slapchaos --seed N` replays a run.
//!
//! Dev only: depends on the wire contract and drives the `slapmaster` binary. As root, replicas
//! live in network namespaces with nftables partitions and tmpfs disks; otherwise on loopback
//! ports behind user-space fronts (`test_kit::fronts`), without the full-disk fault.

pub mod checks;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod model;
pub mod nemesis;
pub mod net;
pub mod report;
pub use test_kit::rng;
pub mod run;
pub mod workload;

/// Why a run could not be carried out (as opposed to what it found: violations).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{0}")]
    Setup(String),
}

pub use test_kit::is_root;
