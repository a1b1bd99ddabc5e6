//! Status histories and alerts, decided as commands are applied: whenever an instance or a
//! computer is saved, its status (`status.rs`, at the command's time) is compared with the
//! last entry of its history; news is appended, and its alert opens when it starts failing
//! and closes when it stops. Node silence is the absence of commands, so the leader proposes
//! [`Op::CheckSilence`](super::Op::CheckSilence) to look for it.
//!
//! Invariants (checked by the state tests' invariant checker): a subject has an open alert
//! exactly when the last entry of its history is failing; `open_alerts` indexes exactly the
//! alerts without `closed_at`; a forgotten instance has neither history nor open alert.

use std::time::Duration;

use super::*;
use crate::state::keys::Key;
use crate::state::model::{Alert, AlertSubject};
use crate::state::status::{self, Cause, Health, Status, StatusChange};

/// Entries kept per subject: the last changes are what a person reads; older ones go.
pub const HISTORY_KEPT: u64 = 32;
/// Closed alerts kept: the ones opened among the last this many; open ones always stay.
pub const ALERTS_KEPT: u64 = 10_000;
/// Where the cluster's silence threshold is kept (seconds).
const SILENCE_COUNTER: &str = "silence_seconds";
/// The next alert's id.
const ALERTS_COUNTER: &str = "alerts";

/// The silence threshold the cluster last applied, or the default before any check.
pub fn silence<T: redb::ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
) -> Result<Duration, StateError> {
    Ok(match t.counter(SILENCE_COUNTER)? {
        0 => status::SILENCE,
        seconds => Duration::from_secs(seconds),
    })
}

/// Who may read a subject's alert, and how it is named.
struct Facts {
    title: String,
    owner: Option<UserId>,
    project: ProjectId,
}

impl Applier<'_, '_> {
    pub(super) fn check_silence(&mut self, silent_after_s: u64) -> Handled {
        check_silence_threshold(silent_after_s)?;
        self.set_counter(SILENCE_COUNTER, silent_after_s)?;
        let computers: Vec<Computer> = self.t.computers.records(&Key::new(), usize::MAX)?;
        for computer in &computers {
            self.review_computer(computer)?;
        }
        Ok(Outcome::Done)
    }

    /// Reviews an instance's status (it was just saved), with its computer's status as last
    /// reviewed.
    pub(super) fn review_instance(&mut self, instance: &Instance) -> Result<(), StateError> {
        let computer = match &instance.placement {
            Placement::Partition(partition) => {
                let key = tables::subject_key(&AlertSubject::Computer(partition.computer.clone()));
                self.last_status(&key)?.map(|(_, status)| status)
            }
            _ => None,
        };
        let now = status::instance(instance, computer.as_ref());
        let facts = Facts {
            title: instance.title.clone(),
            owner: Some(instance.owner.clone()),
            project: instance.project.clone(),
        };
        self.record(&AlertSubject::Instance(instance.guid), now, facts)?;
        Ok(())
    }

    /// Reviews a computer's status at the command's time; when its node fell silent or came
    /// back, the instances on it are reviewed too (their status names the silence).
    pub(super) fn review_computer(&mut self, computer: &Computer) -> Result<(), StateError> {
        let last_seen = self.t.last_seen(&computer.id)?.map(Timestamp);
        let now = status::computer(computer, last_seen, self.at, silence(self.t)?).status;
        let facts = Facts {
            title: computer.id.to_string(),
            owner: None,
            project: computer.project.clone(),
        };
        let silent = now.cause == Cause::Silent;
        let before = self.record(&AlertSubject::Computer(computer.id.clone()), now, facts)?;
        if before.map_or(silent, |before| (before.cause == Cause::Silent) != silent) {
            for guid in self.t.occupants_of(&computer.id)?.into_values() {
                if let Some(instance) = self.t.instance(guid)? {
                    self.review_instance(&instance)?;
                }
            }
        }
        Ok(())
    }

    /// Appends `now` to the subject's history if it is news, and opens or closes its alert.
    /// Answers the status before, if it had one.
    fn record(
        &mut self,
        subject: &AlertSubject,
        now: Status,
        facts: Facts,
    ) -> Result<Option<Status>, StateError> {
        let key = tables::subject_key(subject);
        let (sequence, before) = match self.last_status(&key)? {
            Some((sequence, status)) => (sequence + 1, Some(status)),
            None => (0, None),
        };
        if before.as_ref().is_some_and(|before| !now.differs(before)) {
            return Ok(before);
        }
        self.alert(subject, &key, &now, facts)?;
        self.t.status_history.put(
            key.clone().u64(sequence).as_bytes(),
            &StatusChange {
                at: self.at,
                status: now,
            },
        )?;
        if let Some(old) = sequence.checked_sub(HISTORY_KEPT) {
            self.t.status_history.delete(key.u64(old).as_bytes())?;
        }
        Ok(before)
    }

    /// The last entry of a subject's history: its sequence and status.
    fn last_status(&self, key: &Key) -> Result<Option<(u64, Status)>, StateError> {
        let last = self.t.status_history.scan_back(key, 1)?;
        let Some((k, v)) = last.first() else {
            return Ok(None);
        };
        let tail = k.get(key.as_bytes().len()..).unwrap_or_default();
        let sequence = tables::parse_key("status_history", tail, |r| r.u64())?;
        let change: StatusChange = tables::decode("status_history", k, v)?;
        Ok(Some((sequence, change.status)))
    }

    /// Opens the subject's alert if `now` is failing and none is open; closes the open one
    /// if `now` is not failing.
    fn alert(
        &mut self,
        subject: &AlertSubject,
        key: &Key,
        now: &Status,
        facts: Facts,
    ) -> Result<(), StateError> {
        let open = self.t.open_alerts.u64_value(key)?;
        match (now.health == Health::Failing, open) {
            (true, None) => {
                let id = self.t.counter(ALERTS_COUNTER)?;
                self.set_counter(ALERTS_COUNTER, id + 1)?;
                let alert = Alert {
                    id,
                    subject: subject.clone(),
                    title: facts.title,
                    owner: facts.owner,
                    project: facts.project,
                    opened_at: self.at,
                    reason: now.why.clone(),
                    closed_at: None,
                    closed_because: None,
                };
                self.t
                    .alerts
                    .put(tables::alert_key(id).as_bytes(), &alert)?;
                self.t.open_alerts.put_u64(key, id)?;
                // The oldest kept alert goes, if it is closed.
                if let Some(old) = id.checked_sub(ALERTS_KEPT) {
                    let old_key = tables::alert_key(old);
                    let old_alert: Option<Alert> = self.t.alerts.get(old_key.as_bytes())?;
                    if old_alert.is_some_and(|a| a.closed_at.is_some()) {
                        self.t.alerts.delete(old_key.as_bytes())?;
                    }
                }
            }
            (false, Some(id)) => self.close_alert(key, id, now.why.clone())?,
            _ => {}
        }
        Ok(())
    }

    fn close_alert(&mut self, key: &Key, id: u64, because: String) -> Result<(), StateError> {
        self.t.open_alerts.delete(key.as_bytes())?;
        let alert_key = tables::alert_key(id);
        let Some(mut alert) = self.t.alerts.get::<Alert>(alert_key.as_bytes())? else {
            return Err(StateError::Corrupt {
                table: "open_alerts",
                key: key.as_bytes().to_vec(),
                detail: format!("open alert {id} does not exist"),
            });
        };
        // Opened before the last ALERTS_KEPT: nothing keeps it once closed.
        if id + ALERTS_KEPT < self.t.counter(ALERTS_COUNTER)? {
            return self.t.alerts.delete(alert_key.as_bytes());
        }
        alert.closed_at = Some(self.at);
        alert.closed_because = Some(because);
        self.t.alerts.put(alert_key.as_bytes(), &alert)
    }

    /// An instance is forgotten: its alert closes, its history goes.
    pub(super) fn forget_status(&mut self, guid: InstanceGuid) -> Result<(), StateError> {
        let key = tables::subject_key(&AlertSubject::Instance(guid));
        if let Some(id) = self.t.open_alerts.u64_value(&key)? {
            self.close_alert(&key, id, "destroyed".to_string())?;
        }
        for (k, _) in self.t.status_history.scan(&key, usize::MAX)? {
            self.t.status_history.delete(&k)?;
        }
        Ok(())
    }
}
