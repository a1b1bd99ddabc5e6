//! The workers: one per software release and one per partition, each converging what it
//! was handed to the newest view, retrying failures with backoff, never waiting on another.

use super::poll::Fresh;
use super::*;

impl Agent {
    pub(super) async fn partition_worker(
        self: Arc<Self>,
        mut view: watch::Receiver<Fresh<pb::ComputerPartition>>,
    ) {
        let mut installed = self.installed.subscribe();
        let mut polls = self.view.subscribe();
        let mut last: Option<Processed> = None;
        let mut settled = 0;
        loop {
            polls.borrow_and_update();
            let (applied, current) = view.borrow_and_update().parts();
            if applied < settled {
                // Polled before this worker's own last writes: wait for a view that has them
                // (the next poll, even if it shows this partition unchanged).
                tokio::select! {
                    changed = view.changed() => if changed.is_err() { return },
                    _ = polls.changed() => {}
                }
                continue;
            }
            let directory = PathBuf::from(&current.path);
            let dirty = current.instance.is_none()
                && (partition::is_dirty(&directory)
                    || self.supervisor.supervises(&current.reference));
            let now = Instant::now();
            let wake = match partition::decide(
                &current,
                last.as_ref(),
                dirty,
                now,
                self.config.reprocess_interval,
            ) {
                Decision::Converge => {
                    let Some(instance) = &current.instance else {
                        continue;
                    };
                    let key = Key::of(instance, &current.shared_instances);
                    let previous = last
                        .as_ref()
                        .filter(|l| l.key == key)
                        .map_or(0, |l| l.failures);
                    let failures = match self.partition.converge(&current).await {
                        Ok(()) => {
                            tracing::info!(partition = %current.reference, instance = %instance.guid, "converged");
                            0
                        }
                        Err(e) => {
                            tracing::warn!(partition = %current.reference, "{e}");
                            if e.is_instance_error()
                                && let Err(report) = self.partition.report_error(&current, &e).await
                            {
                                tracing::warn!(partition = %current.reference, "reporting the error: {report}");
                            }
                            previous + 1
                        }
                    };
                    last = Some(Processed {
                        key,
                        at: Instant::now(),
                        failures,
                    });
                    settled = self.master.seen();
                    continue;
                }
                Decision::Clean => {
                    tracing::info!(partition = %current.reference, "free: stopping what runs and wiping it");
                    if let Err(e) = self.partition.clean(&current).await {
                        tracing::warn!(partition = %current.reference, "{e}");
                        Some(now + partition::retry_delay(1))
                    } else {
                        last = None;
                        settled = self.master.seen();
                        continue;
                    }
                }
                Decision::Wait(until) => until,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                _ = installed.changed() => {
                    // Software that was missing may be there now: a failed attempt need not
                    // wait out its backoff.
                    if last.as_ref().is_some_and(|l| l.failures > 0) {
                        last = None;
                    }
                }
                () = sleep => {}
            }
        }
    }

    pub(super) async fn software_worker(
        self: Arc<Self>,
        mut view: watch::Receiver<Fresh<pb::Software>>,
    ) {
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut settled = 0;
        let mut polls = self.view.subscribe();
        loop {
            polls.borrow_and_update();
            let (applied, software) = view.borrow_and_update().parts();
            // A view polled before this worker's own last writes would have it repeat them.
            let fresh = applied >= settled;
            if fresh && retry_at.is_none_or(|t| Instant::now() >= t) {
                let outcome = self.converge_software(&software).await;
                settled = self.master.seen();
                match outcome {
                    Ok(()) => {
                        failures = 0;
                        retry_at = None;
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = partition::retry_delay(failures);
                        tracing::warn!(url = %software.url, "software: {e}; again in {delay:?}");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            let sleep = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                () = sleep => {}
                _ = polls.changed(), if !fresh => {}
            }
        }
    }

    async fn converge_software(&self, software: &pb::Software) -> Result<(), SoftwareFailure> {
        let root = &self.config.format.software_root;
        let reported = pb::SoftwareState::try_from(software.reported).unwrap_or_default();
        let report = |state: pb::SoftwareState, log: String| async move {
            self.master.report_software(&software.url, state, log).await
        };
        if software.requested == i32::from(pb::SupplyState::Destroyed) {
            software::remove(root, &software.url).await?;
            if reported != pb::SoftwareState::Destroyed {
                report(pb::SoftwareState::Destroyed, String::new()).await?;
                tracing::info!(url = %software.url, "software removed");
            }
            return Ok(());
        }
        let dir = software::software_dir(root, &software.url);
        if !software::is_installed(&dir) {
            if reported != pb::SoftwareState::Building {
                report(pb::SoftwareState::Building, String::new()).await?;
            }
            tracing::info!(url = %software.url, dir = %dir.display(), "installing");
            if let Err(e) = software::install(self.runner.as_ref(), root, &software.url).await {
                let log = e.to_string();
                if reported != pb::SoftwareState::Error || software.error_log != log {
                    report(pb::SoftwareState::Error, log).await?;
                }
                return Err(e.into());
            }
            self.installed.send_modify(|generation| *generation += 1);
            tracing::info!(url = %software.url, "installed");
        }
        if reported != pb::SoftwareState::Available {
            report(pb::SoftwareState::Available, String::new()).await?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SoftwareFailure {
    #[error(transparent)]
    Install(#[from] software::SoftwareError),
    #[error(transparent)]
    Master(#[from] CallError),
}
