//! The periodic loops: certificate renewal when due, and usage posted hourly (kept while
//! the master cannot be reached, up to a day).

use super::*;

impl Agent {
    /// Posts each partition's usage every usage interval; records the master could not take
    /// are posted with the next ones.
    /// Renews the computer's certificate once it is due (see [`crate::renew`]); checks at start
    /// and every hour, and retries a failed renewal at the next check.
    pub(super) async fn renewal_loop(self: Arc<Self>, dir: PathBuf) {
        loop {
            if let Err(e) = self.renew_if_due(&dir).await {
                tracing::error!("renewing the computer's certificate: {e}");
            }
            tokio::time::sleep(RENEWAL_CHECK).await;
        }
    }

    async fn renew_if_due(&self, dir: &Path) -> Result<(), crate::renew::RenewError> {
        let Some(current) = crate::renew::due(dir, SystemTime::now())? else {
            return Ok(());
        };
        let (key_pem, csr_pem) = crate::renew::new_request()?;
        let reply = self.master.renew_certificate(csr_pem).await?;
        let renewed = Credentials {
            roots_pem: if reply.roots_pem.is_empty() {
                current.roots_pem
            } else {
                vec![reply.roots_pem]
            },
            chain_pem: reply.chain_pem,
            key_pem,
        };
        let target = dir.to_path_buf();
        let installed = renewed.clone();
        tokio::task::spawn_blocking(move || crate::renew::install(&target, &installed)).await??;
        self.master.replicas.set_tls(renewed.tls_config())?;
        tracing::info!(dir = %dir.display(), "renewed the computer's certificate");
        Ok(())
    }

    pub(super) async fn usage_loop(self: Arc<Self>) {
        let mut meter = Meter::new();
        let mut unposted: Vec<Vec<pb::UsageRecord>> = Vec::new();
        let mut since = now_micros();
        loop {
            tokio::time::sleep(self.config.usage_interval).await;
            let until = now_micros();
            let partitions: Vec<(String, PathBuf)> = self
                .view
                .borrow()
                .as_ref()
                .map(|v| {
                    v.partitions
                        .iter()
                        .filter(|p| p.instance.is_some())
                        .map(|p| (p.reference.clone(), PathBuf::from(&p.path)))
                        .collect()
                })
                .unwrap_or_default();
            let mut groups = BTreeMap::new();
            for (reference, _) in &partitions {
                groups.insert(reference.clone(), self.supervisor.groups(reference));
            }
            let samples = meter.sample(&groups);
            let disks = tokio::task::spawn_blocking(move || {
                partitions
                    .into_iter()
                    .map(|(reference, path)| (reference, usage::disk_bytes(&path)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let records = disks
                .into_iter()
                .map(|(reference, disk)| {
                    let sample = samples.get(&reference).copied().unwrap_or_default();
                    usage_record(reference, since, until, sample, disk)
                })
                .collect::<Vec<_>>();
            since = until;
            if !records.is_empty() {
                unposted.push(records);
            }
            if unposted.len() > MAX_UNPOSTED_PERIODS {
                tracing::warn!("dropping the oldest unposted usage period");
                unposted.remove(0);
            }
            let batch: Vec<pb::UsageRecord> = unposted.iter().flatten().cloned().collect();
            if batch.is_empty() {
                continue;
            }
            match self.master.post_usage(batch).await {
                Ok(()) => unposted.clear(),
                Err(e) => tracing::warn!("posting usage (kept for the next post): {e}"),
            }
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn usage_record(
    partition: String,
    since: u64,
    until: u64,
    sample: usage::PartitionSample,
    disk: u64,
) -> pb::UsageRecord {
    let movement = |resource: &str, category: &str, quantity: f64| pb::UsageMovement {
        resource: resource.into(),
        category: category.into(),
        quantity,
    };
    pb::UsageRecord {
        partition,
        period_start: since,
        period_end: until,
        movements: vec![
            movement("cpu", "seconds", sample.cpu_seconds),
            movement("memory", "bytes", sample.memory_bytes as f64),
            movement("disk", "bytes", disk as f64),
        ],
    }
}
