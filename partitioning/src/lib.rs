//! partitioning: the layout of a SlapOS computer's partitions (issue 6). From a computer
//! configuration (partition count, base names `slappart`/`slapuser`/`slaptap`, the IPv6 /64 to
//! carve addresses from, the local IPv4 pool, software and instance roots) it will compute, as
//! plain data, per partition a user and group, a directory, one IPv6 and one local IPv4
//! address and a tap name; `slapnode format` applies that plan.
//!
//! Must never depend on: sockets, the async runtime, or any other slapcluster crate.
