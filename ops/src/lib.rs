//! ops: what operators use every day.
//!
//! - [`ctl`]: `slapctl`, the command line of users and operators (noun then verb, `--json`,
//!   completions, progress lines), through any replica.
//! - [`load`]: `slapload`, the end-to-end benchmark: a cluster of real `slapmaster` processes
//!   (`test_kit::cluster`, the process harness the tests use too), placements, node polls,
//!   long-poll wake-ups, failover, a real `slapnode` ([`load::agent`]), and the same load on
//!   etcd ([`load::etcd`]) for `bench/run`; `slapbench`'s SLAP benchmark ([`load::slap`]).
//! - Not code: `deploy/` (systemd units, a three-region example), `runbooks/`, `bench/run`.
//!
//! Everything goes through the wire contract (`slapcluster-api`): ops never links the server.
//! What works on a replica's own files (`slapmaster restore`, say) is `slapmaster`'s.

pub mod ctl;
pub mod load;
