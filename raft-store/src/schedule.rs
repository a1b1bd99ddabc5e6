//! When to build the next snapshot: a decision without IO, taken by the host from figures
//! the stores give ([`crate::LogStore::bytes`], [`crate::StateMachineStore::snapshot_bytes`]).
//!
//! openraft's own policy counts entries only, so a snapshot costs the same every N entries
//! however large the state: at a million partitions, a snapshot every 20,000 placements
//! rewrote 1.3 GiB to let the log drop 50 MiB, and the replicas spent a third of their time on
//! it. Here a snapshot also waits until the log holds a share of the last snapshot's bytes:
//! building one then costs at most `100 / log_percent` times the log bytes it frees, whatever
//! the state's size, and the log on disk stays within that share of the snapshot (plus what
//! arrives while one is built).

/// The snapshot schedule (`[raft] snapshot_every`, `snapshot_log_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSchedule {
    /// Applied entries since the last snapshot before another is considered.
    pub every: u64,
    /// And the log must hold at least this percentage of the last snapshot's bytes (0: the
    /// entry count alone decides, as openraft's `LogsSinceLast`).
    pub log_percent: u64,
}

impl Default for SnapshotSchedule {
    fn default() -> Self {
        Self {
            every: 20_000,
            log_percent: 100,
        }
    }
}

impl SnapshotSchedule {
    /// Whether to build a snapshot now, given the entries applied since the last one (or
    /// since the start of the log, when there is none), the bytes the log holds, and the last
    /// snapshot's bytes (`None` when there is none yet).
    pub fn due(&self, applied_since: u64, log_bytes: u64, snapshot_bytes: Option<u64>) -> bool {
        if applied_since < self.every.max(1) {
            return false;
        }
        let Some(snapshot_bytes) = snapshot_bytes else {
            return true;
        };
        // In u128: a percentage of a file's length cannot overflow.
        u128::from(log_bytes) * 100 >= u128::from(snapshot_bytes) * u128::from(self.log_percent)
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotSchedule;

    #[test]
    fn a_snapshot_waits_for_the_entry_count_then_for_the_log_to_weigh_its_share() {
        let schedule = SnapshotSchedule {
            every: 100,
            log_percent: 50,
        };
        // Too few entries, whatever the bytes.
        assert!(!schedule.due(99, u64::MAX, Some(1)));
        // The first snapshot: the count alone.
        assert!(schedule.due(100, 0, None));
        // A 1 GiB snapshot waits for 512 MiB of log.
        assert!(!schedule.due(1_000_000, (512 << 20) - 1, Some(1 << 30)));
        assert!(schedule.due(1_000_000, 512 << 20, Some(1 << 30)));
        // Extremes do not overflow.
        assert!(schedule.due(u64::MAX, u64::MAX, Some(u64::MAX)));
        let by_count = SnapshotSchedule {
            every: 100,
            log_percent: 0,
        };
        assert!(by_count.due(100, 0, Some(u64::MAX)));
        // `every = 0` is one entry: a snapshot of nothing new is never due.
        let eager = SnapshotSchedule {
            every: 0,
            log_percent: 0,
        };
        assert!(!eager.due(0, 0, None));
        assert!(eager.due(1, 0, None));
    }
}
