//! How an instance or a computer is doing, as its user or an operator should read it: plain
//! code over replicated state and the time of asking, so every replica answers the same for
//! the same state and time.
//!
//! An instance is **failing** when it cannot run (it can never be placed, or its node reported
//! an error: a failed buildout or promise), in **warning** while it waits (for a partition, for
//! its node's first report, for its node to reach the requested state) or while its node is
//! silent, and **ok** otherwise. A computer is silent when its node has not polled within the
//! silence threshold, full without a free partition, closed when its allocation scope takes no
//! new instances.

use std::time::Duration;

use super::model::{Computer, Instance, Placement, ReportedState, RequestedState, Timestamp};

/// How long a node may go without polling before its computer, and what runs on it, are
/// called silent. Nodes poll every minute or more often (`slapos node instance` runs from
/// cron each minute; `slapnode` long-polls): ten missed minutes is no hiccup.
pub const SILENCE: Duration = Duration::from_secs(600);

/// The most of a node's error message a status repeats (its first line).
const REASON_BYTES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// A health and why, in words for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub health: Health,
    pub why: String,
}

fn status(health: Health, why: impl Into<String>) -> Status {
    Status {
        health,
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

/// An instance's status; `node_last_seen` is when the node of the computer it runs on last
/// polled (for an instance on a partition).
pub fn instance(
    instance: &Instance,
    node_last_seen: Option<Timestamp>,
    now: Timestamp,
    silence: Duration,
) -> Status {
    let partition = match &instance.placement {
        Placement::Unplaceable { reason } => {
            return status(Health::Failing, format!("cannot be placed: {reason}"));
        }
        Placement::Pending { reason } => {
            return status(Health::Warning, format!("waits for a partition: {reason}"));
        }
        Placement::Hosted { host } => {
            return status(Health::Ok, format!("hosted by instance {host}"));
        }
        Placement::Partition(partition) => partition,
    };
    if let Some(error) = &instance.last_error {
        return status(
            Health::Failing,
            format!("its node reported an error: {}", first_line(error)),
        );
    }
    if let Some(quiet) = silent_for(node_last_seen, now, silence) {
        return status(
            Health::Warning,
            format!(
                "the node of {} {}",
                partition.computer,
                silence_words(quiet)
            ),
        );
    }
    let wanted = match instance.requested_state {
        RequestedState::Started => ReportedState::Started,
        RequestedState::Stopped => ReportedState::Stopped,
        RequestedState::Destroyed => ReportedState::Destroyed,
    };
    match instance.reported_state {
        None => status(Health::Warning, "its node has not reported it yet"),
        Some(reported) if reported != wanted => status(
            Health::Warning,
            format!(
                "requested {}, its node last reported it {}",
                word(wanted),
                word(reported)
            ),
        ),
        Some(reported) => status(Health::Ok, format!("{} on {partition}", word(reported))),
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
/// is a warning (nothing new can be placed there), ok otherwise.
pub fn computer(
    computer: &Computer,
    last_seen: Option<Timestamp>,
    now: Timestamp,
    silence: Duration,
) -> ComputerStatus {
    let quiet = silent_for(last_seen, now, silence);
    let full = computer.partition_count > 0 && computer.free_count == 0;
    let closed = !computer.allocation_scope.is_open();
    let status = if let Some(quiet) = quiet {
        status(
            Health::Failing,
            format!("its node {}", silence_words(quiet)),
        )
    } else if closed {
        status(
            Health::Warning,
            format!("closed ({})", computer.allocation_scope),
        )
    } else if full {
        status(
            Health::Warning,
            format!("full: all {} partitions are busy", computer.partition_count),
        )
    } else {
        status(
            Health::Ok,
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
        let of = |instance: &Instance, seen| super::instance(instance, seen, now, SILENCE);

        let running = placed(Some(ReportedState::Started), None);
        assert_eq!(
            of(&running, seen),
            status(Health::Ok, "started on COMP-1/slappart0")
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
                "the node of COMP-1 has not polled for 15 min"
            )
        );
        assert_eq!(
            of(&running, None).why,
            "the node of COMP-1 has never polled"
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
        assert_eq!(ok.status, status(Health::Ok, "2 of 2 partitions free"));
        assert!(!ok.silent && !ok.full && !ok.closed);

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
            status(Health::Failing, "its node has not polled for 50 min")
        );
    }
}
