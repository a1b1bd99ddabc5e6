//! chaos-tests: a Jepsen-style suite (issue 7). It will start real `slapmaster` processes in
//! IPv6 network namespaces, inject faults (kills, pauses, partitions, a full disk, membership
//! changes) under a seeded workload, and check the recorded history for linearizability and the
//! SlapOS invariants (no partition held twice, no acknowledged request lost).
//!
//! Development only: nothing ships from here.
