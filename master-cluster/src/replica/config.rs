//! What a replica needs to start ([`ReplicaConfig`]), with the defaults of a LAN or one
//! machine. The daemon's TOML configuration (`crate::daemon::config`) fills it in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a replica needs to start.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's Raft node id: stable for its whole life.
    pub id: u64,
    /// Where to listen (port 0 picks a free port; see [`super::ReplicaCore::local_addr`]).
    pub listen: SocketAddr,
    /// Where to serve metrics, health, readiness and the status page over plain HTTP (see
    /// [`crate::observe`]); none by default.
    pub http_listen: Option<SocketAddr>,
    /// Where to serve the SLAP HTTP protocol, if anywhere (see [`crate::slap`]).
    pub slap: Option<SlapConfig>,
    /// Where to serve the web panel, if anywhere (HTTPS only: see [`crate::panel`]).
    pub panel: Option<SocketAddr>,
    /// The address other replicas and clients reach this one at, when it differs from
    /// `http://` + the listening address (listening on `[::]`, behind NAT).
    pub advertise: Option<String>,
    /// Where this replica runs, as operators name it (`eu-west`, ...): shown in the
    /// membership, so that voters can be spread over regions.
    pub region: String,
    /// The replica's certificate, key and the cluster's roots: every connection is TLS, and
    /// every caller is identified by its certificate. Required unless `danger_plaintext`.
    pub tls: Option<crate::tls::TlsMaterial>,
    /// danger: run without TLS, callers naming themselves in a request header. For tests and
    /// `insecure_plaintext` on a trusted development network only; off by default, and a
    /// replica without TLS material refuses to start unless it is set.
    pub danger_plaintext: bool,
    /// danger: answer linearizable reads from this replica's applied state without the
    /// leader's read index, i.e. possibly stale. Never in production: it exists so that the
    /// chaos suite can show its checker catches a replica that breaks linearizability.
    pub danger_stale_reads: bool,
    /// Where `tls` was read from: watched, and loaded again when its files change.
    pub tls_dir: Option<PathBuf>,
    /// The replica's intermediate CA (certificate, key), to sign enrolling computers'
    /// certificates; without it, this replica refuses enrollments.
    pub signer_pem: Option<(String, String)>,
    pub data_dir: PathBuf,
    /// Raft's timing and log retention. Its `snapshot_policy` is not used: snapshots follow
    /// `snapshots`.
    pub raft: openraft::Config,
    /// When a snapshot is built: by entries, and by the log's bytes against the last
    /// snapshot's.
    pub snapshots: raft_store::SnapshotSchedule,
    pub storage: raft_store::Options,
    /// How long a write may wait for a leader before it fails as retryable.
    pub write_timeout: Duration,
    /// At most this many commands per log entry (the leader coalesces concurrent writes).
    pub max_batch: usize,
    /// Batches the leader has in Raft and not yet answered, at most, and how long a new batch
    /// waits for the ones before it to be answered before it goes too (`batcher::Slots`;
    /// `None`: until they are, one batch at a time, as on one machine or a LAN).
    pub batches_in_flight: usize,
    pub batch_wait: Option<Duration>,
    /// What one caller may take of this replica (connections, calls, decode memory).
    pub limits: crate::limits::Limits,
}

/// The SLAP listener's setup.
#[derive(Debug, Clone)]
pub struct SlapConfig {
    pub listen: SocketAddr,
    /// danger: plain HTTP, and the user that calls naming no partition or computer act as.
    /// `None`: HTTPS with client certificates (a replica running TLS only).
    pub plaintext_user: Option<crate::state::model::UserId>,
}

/// Raft's timing, in milliseconds, for voters at most a given round trip apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl RaftTiming {
    /// For voters at most `rtt_ms` apart (the widest round trip between two of them):
    /// - the heartbeat every round trip and a half, at least every 100 ms: openraft gives a
    ///   heartbeat one interval to be answered, and one sent more often than the round trip
    ///   is never answered in time (measured under `slapload --regions`: with 100 ms
    ///   heartbeats and 120-150 ms between voters, every heartbeat timed out and writes
    ///   stalled under load);
    /// - the election timeout's maximum, which openraft also takes as the leader's lease (a
    ///   follower refuses to vote while it runs), outlasts two missed heartbeats and a round
    ///   trip, at least 600 ms; its minimum is half of it.
    ///
    /// A follower that stops hearing from the leader stands after the lease and then a random
    /// timeout in the range: 1.5 to 2 times the maximum. That whole wait is the election
    /// timeout the runbook (`regions.md`) and the failover bound count. (Measured under
    /// `slapload --regions` with the leader's region cut off: a minimum of two heartbeats and
    /// a round trip, and a maximum of twice that, made the wait 1.8-2.4 s at 150 ms; the
    /// lease already covers the missed heartbeats, so the range need not again.)
    ///
    /// At 0 (one machine, a LAN) these are the defaults of [`ReplicaConfig::new`].
    pub fn for_round_trip(rtt_ms: u64) -> Self {
        let heartbeat_ms = (rtt_ms.saturating_mul(3) / 2).max(100);
        let election_timeout_max_ms = heartbeat_ms
            .saturating_mul(2)
            .saturating_add(rtt_ms)
            .max(600);
        Self {
            heartbeat_ms,
            election_timeout_min_ms: election_timeout_max_ms / 2,
            election_timeout_max_ms,
        }
    }
}

impl ReplicaConfig {
    /// Defaults suited to a LAN or one machine: 100 ms heartbeats; a follower that stops
    /// hearing from the leader starts an election after 0.9-1.2 s (openraft waits one
    /// maximum election timeout, the leader's lease, then a random timeout in the range);
    /// applied state made durable every 100 ms (the log always is).
    pub fn new(id: u64, listen: SocketAddr, data_dir: PathBuf) -> Self {
        let timing = RaftTiming::for_round_trip(0);
        Self {
            id,
            listen,
            http_listen: None,
            slap: None,
            panel: None,
            advertise: None,
            region: String::new(),
            tls: None,
            danger_plaintext: false,
            danger_stale_reads: false,
            tls_dir: None,
            signer_pem: None,
            data_dir,
            raft: openraft::Config {
                cluster_name: "slapcluster".into(),
                heartbeat_interval: timing.heartbeat_ms,
                election_timeout_min: timing.election_timeout_min_ms,
                election_timeout_max: timing.election_timeout_max_ms,
                // A restarted leader stands for election like any replica, as under openraft
                // 0.9. (0.10 would let it resume leading; with applied state and the committed
                // index made durable lazily, it could then answer a read from before a write
                // it had acknowledged.)
                enable_leader_restore: Some(false),
                // A replica that cannot win (cut off, or behind) asks before it raises its
                // term, so that coming back it does not depose a healthy leader.
                enable_pre_vote: Some(true),
                ..Default::default()
            },
            snapshots: raft_store::SnapshotSchedule::default(),
            storage: raft_store::Options {
                state_sync_interval: Duration::from_millis(100),
                ..Default::default()
            },
            write_timeout: Duration::from_secs(10),
            max_batch: 256,
            batches_in_flight: 8,
            batch_wait: None,
            limits: crate::limits::Limits::default(),
        }
    }
}
