//! How an instance or a computer is doing, as its user or an operator should read it: plain
//! code over replicated state and the time of asking, so every replica answers the same for
//! the same state and time.
//!
//! An instance is **failing** when it cannot run (it can never be placed, or its node reported
//! an error: a failed buildout or promise), in **warning** while it waits (for a partition, for
//! its node's first report, for its node to reach the requested state) or while its node is
//! silent, and **ok** otherwise. A computer is silent when its node has not polled within the
//! silence threshold (or, never having polled, that long after it registered), full without a
//! free partition, closed when its allocation scope takes no new instances.
//!
//! A status carries its [`Cause`], so that a history of statuses records a change of cause,
//! not every minute a silence grows longer ([`Status::differs`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Computer, Instance, Placement, ReportedState, RequestedState, Timestamp};

/// How long a node may go without polling before its computer, and what runs on it, are
/// called silent. Nodes poll every minute or more often (`slapos node instance` runs from
/// cron each minute; `slapnode` long-polls): ten missed minutes is no hiccup.
pub const SILENCE: Duration = Duration::from_secs(600);

/// The most of a node's error message a status repeats (its first line).
const REASON_BYTES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Health {
    Ok,
    Warning,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Failing => "failing",
        }
    }
}

/// What a status comes from: the branch of [`instance`] or [`computer`] that decided it.
// Stored in status histories: new variants go last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    Unplaceable,
    Pending,
    Hosted,
    /// Its node reported an error.
    Error,
    /// Its node (or, for an instance, the node of its computer) is silent.
    Silent,
    NotReported,
    /// Not (yet) in the requested state.
    Converging,
    Running,
    /// A computer registered whose node has not polled yet, within the silence threshold.
    NotPolledYet,
    Closed,
    Full,
    Open,
}

/// A health and why, in words for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub health: Health,
    pub cause: Cause,
    pub why: String,
}

impl Status {
    /// Whether `self` is news after `before`: another health, another cause, or other words,
    /// except that a silence growing longer is the same silence, and an open computer with
    /// one partition more or less free is the same open computer.
    pub fn differs(&self, before: &Status) -> bool {
        self.health != before.health
            || self.cause != before.cause
            || (!matches!(self.cause, Cause::Silent | Cause::Open) && self.why != before.why)
    }
}

/// One entry of a subject's history (the master's news): its status from `at` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub at: Timestamp,
    pub status: Status,
}

fn status(health: Health, cause: Cause, why: impl Into<String>) -> Status {
    Status {
        health,
        cause,
        why: why.into(),
    }
}

/// How long since `last_seen`, if longer than `silence`; `Some(None)` when never seen.
fn silent_for(
    last_seen: Option<Timestamp>,
    now: Timestamp,
    silence: Duration,
) -> Option<Option<Duration>> {
    match last_seen {
        None => Some(None),
        Some(seen) => {
            let quiet = Duration::from_micros(now.0.saturating_sub(seen.0));
            (quiet > silence).then_some(Some(quiet))
        }
    }
}

fn silence_words(quiet: Option<Duration>) -> String {
    match quiet {
        None => "has never polled".to_string(),
        Some(quiet) => format!("has not polled for {} min", quiet.as_secs() / 60),
    }
}

/// The first line of a node's error, cut to [`REASON_BYTES`].
fn first_line(error: &str) -> &str {
    let line = error
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut end = line.len().min(REASON_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// An instance's status; `computer` is the status of the computer it runs on (for an
/// instance on a partition): its silence is the instance's. Taking the computer's status,
/// rather than deciding silence again, keeps the two in step: what the computer's history
/// says of its node, its instances' say too.
pub fn instance(instance: &Instance, computer: Option<&Status>) -> Status {
    let partition = match &instance.placement {
        Placement::Unplaceable { reason } => {
            return status(
                Health::Failing,
                Cause::Unplaceable,
                format!("cannot be placed: {reason}"),
            );
        }
        Placement::Pending { reason } => {
            return status(
                Health::Warning,
                Cause::Pending,
                format!("waits for a partition: {reason}"),
            );
        }
        Placement::Hosted { host } => {
            return status(
                Health::Ok,
                Cause::Hosted,
                format!("hosted by instance {host}"),
            );
        }
        Placement::Partition(partition) => partition,
    };
    if let Some(error) = &instance.last_error {
        return status(
            Health::Failing,
            Cause::Error,
            format!("its node reported an error: {}", first_line(error)),
        );
    }
    if let Some(computer) = computer.filter(|c| c.cause == Cause::Silent) {
        return status(
            Health::Warning,
            Cause::Silent,
            format!(
                "computer {} is silent: {}",
                partition.computer, computer.why
            ),
        );
    }
    let wanted = match instance.requested_state {
        RequestedState::Started => ReportedState::Started,
        RequestedState::Stopped => ReportedState::Stopped,
        RequestedState::Destroyed => ReportedState::Destroyed,
    };
    match instance.reported_state {
        None => status(
            Health::Warning,
            Cause::NotReported,
            "its node has not reported it yet",
        ),
        Some(reported) if reported != wanted => status(
            Health::Warning,
            Cause::Converging,
            format!(
                "requested {}, its node last reported it {}",
                word(wanted),
                word(reported)
            ),
        ),
        Some(reported) => status(
            Health::Ok,
            Cause::Running,
            format!("{} on {partition}", word(reported)),
        ),
    }
}

fn word(state: ReportedState) -> &'static str {
    match state {
        ReportedState::Started => "started",
        ReportedState::Stopped => "stopped",
        ReportedState::Destroyed => "destroyed",
    }
}

/// What an operator should know of a computer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerStatus {
    pub silent: bool,
    pub full: bool,
    pub closed: bool,
    pub status: Status,
}

/// A computer's status: silent is failing (what runs there is out of reach), full or closed
/// is a warning (nothing new can be placed there), ok otherwise. A node that never polled is
/// given the silence threshold from its computer's registration before it is called silent.
pub fn computer(
    computer: &Computer,
    last_seen: Option<Timestamp>,
    now: Timestamp,
    silence: Duration,
) -> ComputerStatus {
    let quiet = match last_seen {
        None if silent_for(Some(computer.registered_at), now, silence).is_none() => None,
        seen => silent_for(seen, now, silence),
    };
    let full = computer.partition_count > 0 && computer.free_count == 0;
    let closed = !computer.allocation_scope.is_open();
    let status = if let Some(quiet) = quiet {
        status(
            Health::Failing,
            Cause::Silent,
            format!("its node {}", silence_words(quiet)),
        )
    } else if closed {
        status(
            Health::Warning,
            Cause::Closed,
            format!("closed ({})", computer.allocation_scope),
        )
    } else if full {
        status(
            Health::Warning,
            Cause::Full,
            format!("full: all {} partitions are busy", computer.partition_count),
        )
    } else if last_seen.is_none() {
        status(
            Health::Ok,
            Cause::NotPolledYet,
            "registered; its node has not polled yet",
        )
    } else {
        status(
            Health::Ok,
            Cause::Open,
            format!(
                "{} of {} partitions free",
                computer.free_count, computer.partition_count
            ),
        )
    };
    ComputerStatus {
        silent: quiet.is_some(),
        full,
        closed,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{AllocationScope, InstanceGuid, PartitionId, ProjectId, Requester};

    const MINUTE: u64 = 60_000_000;

    fn placed(reported: Option<ReportedState>, error: Option<&str>) -> Instance {
        let on = Placement::Partition(PartitionId {
            computer: "COMP-1".into(),
            partition: "slappart0".into(),
        });
        let mut instance =
            crate::state::sample::instance(1, "alice", Requester::User("alice".into()), on);
        instance.reported_state = reported;
        instance.last_error = error.map(str::to_string);
        instance
    }

    fn two_partitions() -> Computer {
        Computer {
            id: "COMP-1".into(),
            address: None,
            netmask: None,
            instance_root: None,
            software_root: None,
            os_type: None,
            attributes: Default::default(),
            capabilities: Default::default(),
            allocation_scope: AllocationScope::OpenProject,
            project: ProjectId::default_project(),
            partition_count: 2,
            free_count: 2,
            registered_at: Timestamp(1),
            capacity_reported_at: Timestamp(1),
            last_bang: None,
        }
    }

    #[test]
    fn an_instance_is_failing_waiting_or_ok_and_says_why() {
        let now = Timestamp(100 * MINUTE);
        let seen = Some(Timestamp(99 * MINUTE));
        // On a computer whose node last polled at `seen`.
        let of = |instance: &Instance, seen| {
            let node = computer(&two_partitions(), seen, now, SILENCE).status;
            super::instance(instance, Some(&node))
        };

        let running = placed(Some(ReportedState::Started), None);
        assert_eq!(
            of(&running, seen),
            status(Health::Ok, Cause::Running, "started on COMP-1/slappart0")
        );

        let failed = placed(
            Some(ReportedState::Started),
            Some("\n  promise check-port failed: connection refused\nTraceback ..."),
        );
        let got = of(&failed, seen);
        assert_eq!(got.health, Health::Failing);
        assert_eq!(
            got.why,
            "its node reported an error: promise check-port failed: connection refused"
        );
        let long = placed(None, Some(&"é".repeat(300)));
        assert!(of(&long, seen).why.len() <= "its node reported an error: ".len() + REASON_BYTES);

        let silent = of(&running, Some(Timestamp(85 * MINUTE)));
        assert_eq!(
            silent,
            status(
                Health::Warning,
                Cause::Silent,
                "computer COMP-1 is silent: its node has not polled for 15 min"
            )
        );
        let longer = of(&running, Some(Timestamp(80 * MINUTE)));
        assert_ne!(longer.why, silent.why);
        assert!(!longer.differs(&silent), "the same silence, longer");
        assert!(of(&running, seen).differs(&silent), "back");
        assert_eq!(
            of(&running, None).why,
            "computer COMP-1 is silent: its node has never polled"
        );
        assert_eq!(
            instance(&running, None).health,
            Health::Ok,
            "no computer status known: nothing said of its node"
        );

        assert_eq!(of(&placed(None, None), seen).health, Health::Warning);
        let mut stopping = running.clone();
        stopping.requested_state = RequestedState::Stopped;
        assert_eq!(
            of(&stopping, seen).why,
            "requested stopped, its node last reported it started"
        );

        let mut waiting = running.clone();
        waiting.placement = Placement::Pending {
            reason: "no computer supplies it".into(),
        };
        assert_eq!(of(&waiting, seen).health, Health::Warning);
        waiting.placement = Placement::Unplaceable {
            reason: "no computer matches region=mars".into(),
        };
        assert_eq!(of(&waiting, seen).health, Health::Failing);
        waiting.placement = Placement::Hosted {
            host: InstanceGuid(7),
        };
        assert_eq!(
            of(&waiting, None).health,
            Health::Ok,
            "shared: no node of its own"
        );
    }

    #[test]
    fn a_computer_is_silent_closed_or_full() {
        let now = Timestamp(100 * MINUTE);
        let seen = Some(Timestamp(99 * MINUTE));
        let mut computer = two_partitions();
        let of = |c: &Computer, seen| super::computer(c, seen, now, SILENCE);
        let ok = of(&computer, seen);
        assert_eq!(
            ok.status,
            status(Health::Ok, Cause::Open, "2 of 2 partitions free")
        );
        assert!(!ok.silent && !ok.full && !ok.closed);

        computer.free_count = 1;
        assert!(
            !of(&computer, seen).status.differs(&ok.status),
            "one less free"
        );

        computer.free_count = 0;
        let full = of(&computer, seen);
        assert!(full.full);
        assert_eq!(full.status.health, Health::Warning);

        computer.allocation_scope = AllocationScope::CloseMaintenance;
        let closed = of(&computer, seen);
        assert!(closed.closed);
        assert_eq!(closed.status.why, "closed (close/maintenance)");

        let silent = of(&computer, Some(Timestamp(50 * MINUTE)));
        assert!(silent.silent);
        assert_eq!(
            silent.status,
            status(
                Health::Failing,
                Cause::Silent,
                "its node has not polled for 50 min"
            )
        );

        // Registered at minute 0, never polled: given the threshold from then.
        computer.allocation_scope = AllocationScope::OpenProject;
        computer.free_count = 2;
        let at =
            |minute: u64| super::computer(&computer, None, Timestamp(minute * MINUTE), SILENCE);
        assert_eq!(at(9).status.cause, Cause::NotPolledYet);
        assert_eq!(at(9).status.health, Health::Ok);
        assert_eq!(
            at(11).status,
            status(Health::Failing, Cause::Silent, "its node has never polled")
        );
    }
}
