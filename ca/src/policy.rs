//! Certificate policy, as plain decisions: how long each kind of certificate lives, and when
//! its holder should renew it.

use std::time::{Duration, SystemTime};

use crate::identity::Role;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long certificates live from their issue. Short leaves keep a stolen key's use short
/// even without revocation; CAs live longer because replacing them is an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// The cluster's root CA: 10 years.
    pub root: Duration,
    /// A replica's intermediate signing certificate: 1 year.
    pub intermediate: Duration,
    /// Replica (TLS server and peer client) certificates: 90 days.
    pub replica: Duration,
    /// Operators: 30 days (they can do anything).
    pub operator: Duration,
    /// Users, computers and partitions: 90 days (nodes and instances renew by themselves).
    pub client: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            root: 3650 * DAY,
            intermediate: 365 * DAY,
            replica: 90 * DAY,
            operator: 30 * DAY,
            client: 90 * DAY,
        }
    }
}

impl Lifetimes {
    /// The lifetime of a leaf for `role`.
    pub fn leaf(&self, role: Role) -> Duration {
        match role {
            Role::Replica => self.replica,
            Role::Operator => self.operator,
            Role::User | Role::Computer | Role::Partition => self.client,
        }
    }
}

/// Whether a certificate valid from `not_before` to `not_after` should be renewed at `now`:
/// once less than a third of its lifetime remains (30 of 90 days), leaving its holder weeks to
/// succeed. An expired certificate is due too (its holder needs another way in: enrollment).
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    match not_after.duration_since(now) {
        Ok(remaining) => remaining < lifetime / 3,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 90 * DAY;
        assert!(!renewal_due(start, end, start));
        assert!(!renewal_due(start, end, start + 59 * DAY));
        assert!(renewal_due(start, end, start + 61 * DAY));
        assert!(renewal_due(start, end, end + DAY), "expired");
    }

    #[test]
    fn leaves_live_by_role() {
        let lifetimes = Lifetimes::default();
        assert_eq!(lifetimes.leaf(Role::Operator), 30 * DAY);
        assert_eq!(lifetimes.leaf(Role::Computer), 90 * DAY);
        assert!(lifetimes.intermediate > lifetimes.replica);
        assert!(lifetimes.root > lifetimes.intermediate);
    }
}
