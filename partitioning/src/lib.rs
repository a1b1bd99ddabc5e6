//! partitioning: the layout of a SlapOS computer's partitions, and `slapnode format`.
//!
//! From a computer's format configuration ([`FormatFile`] → [`FormatConfig`]: partition count,
//! base names `slappart`/`slapuser`/`slaptap`, the IPv6 network to carve addresses from, the
//! local IPv4 pool, software and instance roots) it computes, as plain data, each partition's
//! user and group, directory, global IPv6 and local IPv4 address and tap name
//! ([`FormatConfig::layout`]). [`reconcile`] compares that layout with what the machine has
//! ([`Observed`]) and decides the [`Action`]s, removing only free partitions; it does no IO and
//! is where to start reading. [`system`] is the edge: it observes the machine and applies the
//! actions (`useradd`, `ip addr`, `ip tuntap`, directories), in [`Mode::System`] as root or in
//! [`Mode::Unprivileged`] (directories only) for development and tests.
//!
//! Must never depend on: sockets, the async runtime, or any other slapcluster crate.

mod config;
mod layout;
mod net;
mod reconcile;
pub mod system;

pub use config::{ConfigError, FormatConfig, FormatFile, MAX_PARTITIONS, Mode};
pub use layout::{PARTITION_MODE, PartitionLayout};
pub use net::{Ipv4Net, Ipv6Net, NetError};
pub use reconcile::{Account, Action, Directory, Observed, Owner, Plan, reconcile};
pub use system::FormatError;
