//! ops: what operators use every day. So far (issue 4) the load tool, [`load`]: it starts a
//! cluster of real `slapmaster` processes and measures placements per second, full node polls
//! per second and failover time end to end, through the public gRPC contract. Coming
//! (issue 8): `slapctl`, deployment files, runbooks, and the benchmark against etcd.
//!
//! Depends on the wire contract (`slapcluster-api`) only, never on server internals.

pub mod ctl;
pub mod http;
pub mod load;
