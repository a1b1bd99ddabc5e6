//! The master as the agent sees it: every call of the node service, through the ranked
//! [`Replicas`], reading its own writes. Each write's log index (and each poll's applied
//! index) raises `seen`, and every poll asks for at least that index: after a failover the
//! agent never reads an older state than one it already acted on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use slapcluster_api::v1 as pb;

use crate::replicas::{CallError, Replicas};

/// A write is retried on the next replica after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// A short read (a poll that does not wait).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond a long-poll's wait, how long to give the replica before trying another.
const LONG_POLL_SLACK: Duration = Duration::from_secs(5);
/// How stale a view the agent takes: a replica that has not heard from a leader for this
/// long (an election takes 1-4 s, across regions too) is cut off from the cluster, and the
/// agent asks the next replica. With no replica in touch with a leader, the agent keeps what
/// it runs as last promised until one is.
const MAX_STALENESS_MS: u32 = 15_000;

pub struct Master {
    pub computer: String,
    pub replicas: Replicas,
    seen: AtomicU64,
}

impl Master {
    pub fn new(computer: String, replicas: Replicas) -> Self {
        Self {
            computer,
            replicas,
            seen: AtomicU64::new(0),
        }
    }

    /// The highest log index this agent wrote or read: every later poll reflects it.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    fn saw(&self, index: u64) {
        self.seen.fetch_max(index, Ordering::AcqRel);
    }

    /// The computer's view. With `after`, a long-poll of up to `wait`.
    pub async fn poll(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<pb::PollComputerReply, CallError> {
        let request = pb::PollComputerRequest {
            computer: self.computer.clone(),
            min_index: self.seen.load(Ordering::Acquire),
            after,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            max_staleness_ms: MAX_STALENESS_MS,
        };
        let long = after.is_some() && !wait.is_zero();
        let timeout = if long {
            wait + LONG_POLL_SLACK
        } else {
            READ_TIMEOUT
        };
        let reply = self
            .replicas
            .call("poll", timeout, !long, &request, |mut c, r| async move {
                c.poll_computer(r).await
            })
            .await?;
        self.saw(reply.applied_index);
        self.replicas.metrics.polled();
        if self.replicas.learn(&reply.replicas) {
            tracing::info!(replicas = ?self.replicas.urls(), "learned the cluster's members");
        }
        Ok(reply)
    }

    /// Re-measures every replica (a short poll each).
    pub async fn rank(&self) {
        let request = pb::PollComputerRequest {
            computer: self.computer.clone(),
            ..Default::default()
        };
        self.replicas
            .rank(READ_TIMEOUT, &request, |mut c, r| async move {
                c.poll_computer(r).await
            })
            .await;
    }

    pub async fn register(
        &self,
        request: pb::RegisterComputerRequest,
    ) -> Result<pb::RegisterComputerReply, CallError> {
        let reply = self
            .replicas
            .call(
                "register",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.register_computer(r).await },
            )
            .await?;
        self.saw(reply.index);
        Ok(reply)
    }

    pub async fn report_software(
        &self,
        url: &str,
        state: pb::SoftwareState,
        error_log: String,
    ) -> Result<(), CallError> {
        let request = pb::ReportSoftwareRequest {
            computer: self.computer.clone(),
            url: url.to_owned(),
            state: state.into(),
            error_log,
        };
        let reply = self
            .replicas
            .call(
                "report software",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.report_software(r).await },
            )
            .await?;
        self.saw(reply.index);
        tracing::info!(
            url,
            ?state,
            changed = reply.changed,
            index = reply.index,
            "reported software"
        );
        Ok(())
    }

    pub async fn report_instance(
        &self,
        partition: &str,
        shared_reference: &str,
        state: Option<pb::ReportedState>,
        error_log: String,
    ) -> Result<(), CallError> {
        let request = pb::ReportInstanceRequest {
            partition: Some(self.partition(partition)),
            shared_reference: shared_reference.to_owned(),
            state: state.map_or(0, Into::into),
            error_log,
        };
        let reply = self
            .replicas
            .call(
                "report instance",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.report_instance(r).await },
            )
            .await?;
        self.saw(reply.index);
        tracing::info!(
            partition,
            shared_reference,
            ?state,
            error = !request.error_log.is_empty(),
            changed = reply.changed,
            index = reply.index,
            "reported instance"
        );
        Ok(())
    }

    pub async fn publish(
        &self,
        partition: &str,
        shared_reference: &str,
        parameters: std::collections::BTreeMap<String, String>,
    ) -> Result<(), CallError> {
        let request = pb::PublishConnectionRequest {
            partition: Some(self.partition(partition)),
            shared_reference: shared_reference.to_owned(),
            parameters: parameters.into_iter().collect(),
        };
        let reply = self
            .replicas
            .call(
                "publish",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.publish_connection(r).await },
            )
            .await?;
        self.saw(reply.index);
        tracing::info!(
            partition,
            shared_reference,
            changed = reply.changed,
            index = reply.index,
            "published connection parameters"
        );
        Ok(())
    }

    pub async fn post_usage(&self, records: Vec<pb::UsageRecord>) -> Result<(), CallError> {
        let request = pb::PostUsageRequest {
            computer: self.computer.clone(),
            records,
        };
        let reply = self
            .replicas
            .call(
                "post usage",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.post_usage(r).await },
            )
            .await?;
        self.saw(reply.index);
        Ok(())
    }

    /// The computer's next certificate for the key of `csr_pem` (its current one must be due).
    pub async fn renew_certificate(&self, csr_pem: String) -> Result<pb::EnrollReply, CallError> {
        let request = pb::RenewCertificateRequest { csr_pem };
        self.replicas
            .call(
                "renew the certificate",
                WRITE_TIMEOUT,
                false,
                &request,
                |mut c, r| async move { c.renew_certificate(r).await },
            )
            .await
    }

    fn partition(&self, partition: &str) -> pb::PartitionId {
        pb::PartitionId {
            computer: self.computer.clone(),
            partition: partition.to_owned(),
        }
    }
}
