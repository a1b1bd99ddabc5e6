//! One seeded run: a fresh network and cluster, the workload and the nemesis together for the
//! run's duration, then every fault healed, the time until the cluster serves again, final
//! reads of every instance, the replicas' state digests, and the checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ChaosError;
use crate::checks;
use crate::cluster::{Cluster, Danger};
use crate::history::{Call, FINAL_WORKER, Freshness, History, LIVENESS_WORKER, Op, Outcome};
use crate::nemesis::{self, Nemesis};
use crate::report;
use crate::rng::Rng;
use crate::workload::{self, Clients, Key};

/// After every fault is healed, the cluster must take a write within this long.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(15);
/// And its replicas must reach the same applied index within this long.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub replicas: usize,
    pub duration: Duration,
    pub nemeses: Vec<Nemesis>,
    pub workers: usize,
    pub danger: Danger,
    /// Loopback ports behind user-space fronts even as root (the fallback without root).
    pub loopback: bool,
    /// Replicas apart, in the regions of this map (on loopback, behind fronts that hold
    /// what they send each other for the map's distance).
    pub regions: Option<test_kit::distance::RegionMap>,
    pub slapmaster: PathBuf,
    /// The run's files go to `out/seed-N-rR/`.
    pub out: PathBuf,
}

#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub history: History,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    pub recovered_in: Option<Duration>,
    pub summary: String,
}

impl RunConfig {
    /// The first line of a run's report: what ran, with what faults.
    pub fn heading(&self) -> String {
        let nemeses: Vec<&str> = self.nemeses.iter().map(|n| n.name()).collect();
        format!(
            "seed {} | {} replicas | {} workers | {:?} | nemeses: {}{}",
            self.seed,
            self.replicas,
            self.workers,
            self.duration,
            nemeses.join(","),
            match self.danger {
                Danger::None => "",
                Danger::StaleReads => " | DANGER: stale linearizable reads",
            }
        )
    }
}

pub async fn run(config: &RunConfig) -> Result<RunOutcome, ChaosError> {
    let dir = config
        .out
        .join(format!("seed-{}-r{}", config.seed, config.replicas));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ChaosError::Setup(format!("{}: {e}", dir.display())))?;
    let mut rng = Rng::new(config.seed);
    let cluster_dir = tempfile::tempdir_in(&dir).map_err(|e| ChaosError::Setup(e.to_string()))?;
    let mut cluster = Cluster::start(
        &config.slapmaster,
        cluster_dir.path(),
        config.replicas,
        rng.next_u64(),
        config.danger,
        config.loopback,
        config.regions.as_ref(),
    )
    .await?;
    let started = Instant::now();
    let clients = Clients::new(&cluster, started)?;
    clients.setup().await?;

    tracing::info!(
        seed = config.seed,
        replicas = config.replicas,
        "workload and nemesis start"
    );
    let until = Instant::now() + config.duration;
    let placements = workload::Placements::default();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..config.workers {
        workers.spawn(workload::worker(
            clients.clone(),
            w,
            rng.fork(u64::try_from(w).unwrap_or(0)),
            until,
            Arc::clone(&placements),
        ));
    }
    let faults = nemesis::run(
        &mut cluster,
        &clients,
        &config.nemeses,
        rng.fork(1 << 20),
        started,
        until,
    )
    .await;
    let mut ops: Vec<Op> = Vec::new();
    while let Some(done) = workers.join_next().await {
        ops.extend(done.map_err(|e| ChaosError::Setup(format!("a worker failed: {e}")))?);
    }
    let (faults, probes) = faults?;
    ops.extend(probes);

    // Anything the nemesis left (a replica that died of its own) is brought back.
    cluster.fabric.heal()?;
    for i in 0..cluster.len() {
        cluster.pause(i, false)?;
        if cluster.exited(i) || !cluster.is_running(i) {
            cluster.restart(i)?;
        }
    }
    let healed = Instant::now();
    let recovered_in = liveness(&clients, healed).await;
    let mut notes = Vec::new();
    let mut violations = Vec::new();
    match recovered_in {
        Some(took) => tracing::info!("serving again {took:?} after healing"),
        None => violations.push(format!(
            "liveness: no write succeeded within {LIVENESS_BOUND:?} of healing"
        )),
    }
    ops.extend(final_reads(&clients).await);
    match converged(&cluster).await {
        Ok(index) => tracing::info!("every replica has the same state at index {index}"),
        Err(problem) => violations.push(problem),
    }
    let history = History {
        seed: config.seed,
        replicas: config.replicas,
        ops,
        faults,
    };
    let (found, undecided) = checks::check(&history);
    violations.extend(found);
    notes.extend(undecided);
    let summary = report::summary(
        &config.heading(),
        &history,
        &violations,
        &notes,
        recovered_in,
    );
    report::save(&dir, &history, &summary)?;
    if violations.is_empty() {
        // The replicas' data is only worth keeping when something went wrong.
        drop(cluster);
        drop(cluster_dir);
    } else {
        tracing::warn!("keeping the replicas' logs and data in {}", dir.display());
        drop(cluster);
        let _ = cluster_dir.keep();
    }
    Ok(RunOutcome {
        dir,
        history,
        violations,
        notes,
        recovered_in,
        summary,
    })
}

/// How long after healing the first write succeeds (tried on every replica in turn).
async fn liveness(clients: &Clients, healed: Instant) -> Option<Duration> {
    let every: Vec<usize> = (0..clients.replicas()).collect();
    let (_, acknowledged) = clients
        .write_until_acknowledged(
            LIVENESS_WORKER,
            &every,
            &Key::LIVENESS,
            &mut 0,
            healed + LIVENESS_BOUND,
        )
        .await;
    acknowledged.map(|_| healed.elapsed())
}

/// A linearizable read of every instance (the probes' too), retried on any replica until one
/// answers: part of the history, so that a lost acknowledged write is a linearizability
/// violation.
async fn final_reads(clients: &Clients) -> Vec<Op> {
    let mut ops = Vec::new();
    for key in Key::all().into_iter().chain([Key::PROBE]) {
        for attempt in 0..20 {
            let op = clients
                .perform(
                    FINAL_WORKER,
                    attempt % clients.replicas(),
                    &key,
                    Call::Read {
                        freshness: Freshness::Linearizable,
                    },
                )
                .await;
            let done = matches!(op.outcome, Outcome::Ok(_));
            if done {
                ops.push(op);
                break;
            }
        }
    }
    ops
}

/// Waits until every replica reports the same applied index, then compares their digests.
async fn converged(cluster: &Cluster) -> Result<u64, String> {
    let deadline = Instant::now() + CONVERGENCE_BOUND;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut digests = Vec::new();
        for i in 0..cluster.len() {
            digests.push(
                cluster
                    .replica_status(i, true)
                    .await
                    .map(|s| (s.digest_index, s.state_digest)),
            );
        }
        if let Some(Some((index, digest))) = digests.first().cloned()
            && digests
                .iter()
                .all(|d| d.as_ref().is_some_and(|(i, _)| *i == index))
        {
            if digests
                .iter()
                .all(|d| d.as_ref().is_some_and(|(_, g)| *g == digest))
            {
                return Ok(index);
            }
            return Err(format!(
                "convergence: replicas at index {index} hold different states"
            ));
        }
        last = digests
            .iter()
            .map(|d| d.as_ref().map(|(i, _)| *i))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "convergence: replicas did not reach one applied index within {CONVERGENCE_BOUND:?} \
         (last seen: {last:?})"
    ))
}
