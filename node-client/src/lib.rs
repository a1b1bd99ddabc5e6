//! node-client: the stateless `slapnode` agent of a SlapOS computer (slapformat, slapgrid and
//! supervisord in one process), and the client side of the node service.
//!
//! Start at [`agent`]: boot formats the partitions (through the `partitioning` crate) and
//! registers the computer's capacity; a poll loop long-polls the nearest replica
//! ([`replicas`], [`master`]) and feeds one worker per software release and per partition.
//! Software releases are installed by a pluggable [`software::Runner`]; the built-in one reads
//! [`manifest`]s (TOML, `MANIFEST.md`) whose files are rendered with [`template`]. Each
//! partition converges to its requested state ([`partition`]: [`partition::decide`] is the
//! decision without IO) with its processes under [`supervisor`]; [`usage`] measures what they
//! use; [`observe`] serves its metrics and health; [`renew`] renews the computer's
//! certificate before it expires. Nothing the agent keeps locally is needed: it rebuilds everything from the master.
//!
//! Must never depend on server internals (openraft, redb, master-cluster); only the wire
//! contract (`slapcluster-api`), `partitioning` and `ca` (to make its key and request).

pub mod agent;
pub mod config;
pub mod enroll;
pub mod manifest;
pub mod master;
pub mod observe;
pub mod partition;
pub mod renew;
pub mod replicas;
pub mod software;
pub mod supervisor;
pub mod template;
pub mod usage;

pub use agent::{AgentError, run};
pub use config::{NodeConfig, NodeFile, Transport};
