//! Status histories and alerts: opened and closed as commands apply, the same on every replica.

use super::*;
use crate::state::status::{Cause, Health, StatusChange};

impl Fixture {
    fn alerts(&self, closed: bool) -> Vec<Alert> {
        let txn = self.state.read().expect("read");
        query::alerts(&txn, closed, usize::MAX, |_| Ok(true)).expect("alerts")
    }

    fn history(&self, subject: AlertSubject) -> Vec<StatusChange> {
        query::history(&self.state.read().expect("read"), &subject).expect("history")
    }

    /// The causes of a subject's history, oldest first.
    fn causes(&self, subject: AlertSubject) -> Vec<Cause> {
        self.history(subject)
            .into_iter()
            .map(|c| c.status.cause)
            .collect()
    }

    fn polled(&mut self, computer: &str) {
        let at = Timestamp(self.clock);
        let r = self.run(
            Actor::Replica(1),
            Op::RecordLiveness {
                seen: vec![(ComputerId::from(computer), at)],
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }

    fn check_silence(&mut self, silent_after_s: u64) -> Response {
        self.run(Actor::Replica(1), Op::CheckSilence { silent_after_s })
    }
}

fn error(log: &str) -> InstanceReport {
    InstanceReport::Error { log: log.into() }
}

#[test]
fn a_failing_promise_opens_an_alert_that_closes_once_it_is_fixed() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.supply("COMP-1", KVM);
    f.polled("COMP-1");
    let vm = f.request(user("judy"), request("vm", KVM));
    let p = partition_of(&vm);
    let subject = || AlertSubject::Instance(vm.guid);
    assert_eq!(f.causes(subject()), [Cause::NotReported]);
    f.report(&p, InstanceReport::Started).expect("started");
    assert!(f.alerts(true).is_empty(), "nothing failed yet");

    f.report(
        &p,
        error("\npromise check-port failed: connection refused\n"),
    )
    .expect("error");
    let open = f.alerts(false);
    assert_eq!(open.len(), 1, "{open:?}");
    let alert = &open[0];
    assert_eq!(alert.subject, subject());
    assert_eq!(alert.title, "vm");
    assert_eq!(alert.owner, Some(UserId::from("judy")));
    assert_eq!(
        alert.reason,
        "its node reported an error: promise check-port failed: connection refused"
    );
    assert_eq!(alert.closed_at, None);
    // The same error again is no news: one alert, one history entry.
    f.report(
        &p,
        error("\npromise check-port failed: connection refused\n"),
    )
    .expect("error");
    assert_eq!(f.alerts(true).len(), 1);
    // Another error is news for the history, and the same alert stays open.
    f.report(&p, error("promise check-disk failed"))
        .expect("error");
    assert_eq!(f.alerts(true).len(), 1);
    assert_eq!(
        f.causes(subject()),
        [
            Cause::NotReported,
            Cause::Running,
            Cause::Error,
            Cause::Error
        ]
    );

    f.report(&p, InstanceReport::Started).expect("fixed");
    assert!(f.alerts(false).is_empty(), "closed");
    let closed = f.alerts(true);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].closed_because.as_deref(),
        Some("started on COMP-1/slappart0")
    );
    assert!(closed[0].closed_at > Some(alert.opened_at));
    let history = f.history(subject());
    assert_eq!(history.last().map(|c| c.status.health), Some(Health::Ok));
    assert!(history.windows(2).all(|w| w[0].at < w[1].at));

    // Failing again opens a new alert; destroying the instance closes it and forgets its
    // history.
    f.report(&p, error("buildout failed")).expect("error");
    assert_eq!(f.alerts(false).len(), 1);
    f.run(user("judy"), Op::DestroyInstance { instance: vm.guid })
        .expect("destroy");
    f.report(&p, InstanceReport::Destroyed).expect("destroyed");
    assert!(f.alerts(false).is_empty());
    let newest = &f.alerts(true)[0];
    assert_eq!(newest.closed_because.as_deref(), Some("destroyed"));
    assert!(f.history(subject()).is_empty());
}

#[test]
fn a_silent_node_opens_its_computers_alert_and_warns_of_its_instances() {
    let mut f = Fixture::new();
    f.register("COMP-1", 2, &[]);
    f.supply("COMP-1", KVM);
    f.polled("COMP-1");
    let vm = f.request(user("judy"), request("vm", KVM));
    f.report(&partition_of(&vm), InstanceReport::Started)
        .expect("started");
    let computer = || AlertSubject::Computer(ComputerId::from("COMP-1"));
    let instance = || AlertSubject::Instance(vm.guid);

    // Commands are a second apart: within 60 s of the last poll, nothing is silent.
    f.check_silence(60).expect("check");
    assert!(f.alerts(true).is_empty());

    f.clock += 120_000_000;
    f.check_silence(60).expect("check");
    let open = f.alerts(false);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].subject, computer());
    assert_eq!(
        open[0].owner, None,
        "for operators and the project's managers"
    );
    assert_eq!(open[0].reason, "its node has not polled for 2 min");
    assert_eq!(
        f.causes(instance()).last(),
        Some(&Cause::Silent),
        "its instance is in warning"
    );
    let warned = f.history(instance());
    assert_eq!(
        warned.last().map(|c| c.status.health),
        Some(Health::Warning)
    );
    assert_eq!(
        warned.last().map(|c| c.status.why.as_str()),
        Some("computer COMP-1 is silent: its node has not polled for 2 min")
    );

    // Checks while it stays silent change nothing.
    f.clock += 600_000_000;
    let before = f.dump();
    f.check_silence(60).expect("check");
    assert_eq!(f.dump(), before);

    // It polls again: the alert closes, the instance is back.
    f.polled("COMP-1");
    assert!(f.alerts(false).is_empty());
    assert_eq!(
        f.alerts(true)[0].closed_because.as_deref(),
        Some("1 of 2 partitions free")
    );
    assert_eq!(
        f.causes(instance()),
        [
            Cause::NotReported,
            Cause::Running,
            Cause::Silent,
            Cause::Running
        ]
    );
    assert_eq!(
        f.causes(computer()),
        [Cause::NotPolledYet, Cause::Open, Cause::Silent, Cause::Open]
    );
}

#[test]
fn a_computer_that_never_polls_is_silent_once_the_threshold_passed_since_it_registered() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    f.check_silence(60).expect("check");
    assert!(f.alerts(true).is_empty(), "registered a second ago");
    f.clock += 60_000_000;
    f.check_silence(60).expect("check");
    assert_eq!(f.alerts(false)[0].reason, "its node has never polled");
}

#[test]
fn silence_checks_are_for_replicas_and_operators_within_a_week() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    for threshold in [0, 7 * 24 * 3600 + 1] {
        let refused = f.refused(
            Actor::Replica(1),
            Op::CheckSilence {
                silent_after_s: threshold,
            },
        );
        assert!(matches!(refused, Rejection::Invalid { .. }), "{refused:?}");
    }
    for who in [user("judy"), Actor::Computer(ComputerId::from("COMP-1"))] {
        let refused = f.refused(who, Op::CheckSilence { silent_after_s: 60 });
        assert!(
            matches!(refused, Rejection::NotAllowed { .. }),
            "{refused:?}"
        );
    }
    assert!(
        f.run(
            Actor::Operator(UserId::from("admin")),
            Op::CheckSilence { silent_after_s: 60 }
        )
        .is_ok()
    );
}

#[test]
fn a_history_keeps_its_last_entries() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    f.supply("COMP-1", KVM);
    f.polled("COMP-1");
    let vm = f.request(user("judy"), request("vm", KVM));
    let p = partition_of(&vm);
    let flips = 40;
    for n in 0..flips {
        f.report(&p, error(&format!("failure {n}"))).expect("error");
        f.report(&p, InstanceReport::Started).expect("started");
    }
    let history = f.history(AlertSubject::Instance(vm.guid));
    assert_eq!(history.len() as u64, crate::state::HISTORY_KEPT);
    assert_eq!(
        history.last().map(|c| c.status.why.as_str()),
        Some("started on COMP-1/slappart0")
    );
    assert_eq!(f.alerts(true).len(), flips);
    assert_eq!(
        f.alerts(true)[0].reason,
        "its node reported an error: failure 39"
    );
}
