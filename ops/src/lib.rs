//! ops: what operators use every day.
//!
//! - [`ctl`]: `slapctl`, the command line of users and operators (noun then verb, `--json`,
//!   completions, progress lines), through any replica.
//! - [`load`]: `slapload`, the end-to-end benchmark: a cluster of real `slapmaster` processes
//!   ([`load::cluster`], also the process harness of other crates' tests), placements, node
//!   polls, long-poll wake-ups, failover, a real `slapnode` ([`load::agent`]), and the same
//!   load on etcd ([`load::etcd`]) for `bench/run`.
//! - [`http`]: a minimal HTTP GET, to scrape `/metrics` and friends.
//! - Not code: `deploy/` (systemd units, a three-region example), `runbooks/`, `bench/run`.
//!
//! Everything goes through the wire contract (`slapcluster-api`), except `slapctl snapshot
//! restore`, which builds a replica's data directory locally with master-cluster's own code.

pub mod ctl;
pub mod http;
pub mod load;
