//! ops: what operators use every day (issue 8). It will own `slapctl` (users' and operators'
//! commands against any replica), deployment files and runbooks, the load tool, and the
//! benchmark harness that compares slapcluster with etcd.
//!
//! Depends on the wire contract and node-client's client library, never on server internals.
