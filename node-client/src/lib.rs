//! node-client: the stateless `slapnode` agent and the client library (issue 6). It will format
//! partitions (through partitioning), register capacity, converge software and partitions to the
//! master's promises, post usage, and talk to the fastest reachable replica with failover.
//!
//! Must never depend on server internals (openraft, redb, master-cluster); only the wire contract.
