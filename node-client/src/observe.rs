//! What an operator watches an agent by, on its optional `http_listen` (plain HTTP, an
//! operations network): Prometheus `/metrics`, `/healthz` (the agent runs) and `/readyz` (it
//! heard from the master recently).

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use slapcluster_metrics::{CONTENT_TYPE, Counter, Exposition, Family, Histogram};

/// Recorded by the calls to the master.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Calls to the master by kind (poll, register, report_instance, ...), failover included.
    pub calls: Family<Histogram>,
    /// Calls that no replica answered, or that the master refused, by kind.
    pub call_failures: Family<Counter>,
    /// How often the agent moved to another replica.
    pub replica_changes: Counter,
    last_poll: Mutex<Option<Instant>>,
}

impl NodeMetrics {
    pub fn polled(&self) {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Since the last successful poll of the master.
    pub fn last_poll_age(&self) -> Option<Duration> {
        self.last_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|at| at.elapsed())
    }
}

/// What the agent knows at scrape time, besides its [`NodeMetrics`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub replica: String,
    pub partitions: usize,
    /// Partitions that hold an instance, by requested state.
    pub instances: Vec<(String, usize)>,
    /// Software releases by reported state.
    pub software: Vec<(String, usize)>,
    pub supervised_partitions: usize,
}

/// Ready: the master answered a poll within `limit`. `Err` says why not.
pub fn readiness(last_poll_age: Option<Duration>, limit: Duration) -> Result<String, String> {
    match last_poll_age {
        None => Err("no poll of the master has succeeded yet".into()),
        Some(age) if age > limit => Err(format!(
            "the last successful poll was {} s ago (more than {} s)",
            age.as_secs(),
            limit.as_secs()
        )),
        Some(age) => Ok(format!(
            "ready: polled the master {} ms ago",
            age.as_millis()
        )),
    }
}

pub fn exposition(metrics: &NodeMetrics, snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    out.gauges(
        "slapnode_replica",
        "The replica the agent talks to (1).",
        "url",
        [(snapshot.replica.clone(), 1.0)],
    );
    if let Some(age) = metrics.last_poll_age() {
        out.gauge(
            "slapnode_last_poll_age_seconds",
            "Since the last successful poll of the master.",
            age.as_secs_f64(),
        );
    }
    out.histograms(
        "slapnode_master_call_seconds",
        "Calls to the master by kind, failover to other replicas included (long-polls wait).",
        "call",
        &metrics.calls,
    );
    out.counters(
        "slapnode_master_call_failures_total",
        "Calls to the master that no replica answered or that it refused, by kind.",
        "call",
        &metrics.call_failures,
    );
    out.counter(
        "slapnode_replica_changes_total",
        "How often the agent moved to another replica.",
        metrics.replica_changes.get(),
    );
    out.gauge(
        "slapnode_partitions",
        "Partitions of this computer, as the master last described them.",
        snapshot.partitions as f64,
    );
    out.gauges(
        "slapnode_instances",
        "Partitions holding an instance, by requested state.",
        "requested_state",
        snapshot
            .instances
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64)),
    );
    out.gauges(
        "slapnode_software_releases",
        "Software releases this computer supplies, by reported state.",
        "state",
        snapshot
            .software
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64)),
    );
    out.gauge(
        "slapnode_supervised_partitions",
        "Partitions with processes under supervision.",
        snapshot.supervised_partitions as f64,
    );
    out.finish()
}

/// What the HTTP handlers ask the agent.
pub trait Observed: Send + Sync + 'static {
    fn metrics(&self) -> &NodeMetrics;
    fn snapshot(&self) -> Snapshot;
    /// The longest a ready agent goes without a successful poll.
    fn ready_limit(&self) -> Duration;
}

type Agent = Weak<dyn Observed>;

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "agent stopped\n").into_response()
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, agent: Agent) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(agent);
    axum::serve(listener, app).await
}

async fn metrics(State(agent): State<Agent>) -> Response {
    let Some(agent) = agent.upgrade() else {
        return gone();
    };
    let text = exposition(agent.metrics(), &agent.snapshot());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn healthz(State(agent): State<Agent>) -> Response {
    match agent.upgrade() {
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
        None => gone(),
    }
}

async fn readyz(State(agent): State<Agent>) -> Response {
    let Some(agent) = agent.upgrade() else {
        return gone();
    };
    match readiness(agent.metrics().last_poll_age(), agent.ready_limit()) {
        Ok(ready) => (StatusCode::OK, format!("{ready}\n")).into_response(),
        Err(not) => (StatusCode::SERVICE_UNAVAILABLE, format!("{not}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_ready_while_its_polls_succeed() {
        let limit = Duration::from_secs(75);
        assert!(readiness(None, limit).is_err());
        assert!(readiness(Some(Duration::from_secs(3)), limit).is_ok());
        let stale = readiness(Some(Duration::from_secs(80)), limit).expect_err("stale");
        assert!(stale.contains("80 s ago"), "{stale}");
    }

    #[test]
    fn the_exposition_parses() {
        let metrics = NodeMetrics::default();
        metrics.calls.get("poll").observe(Duration::from_millis(2));
        metrics.polled();
        let snapshot = Snapshot {
            replica: "https://[::1]:7001".into(),
            partitions: 10,
            instances: vec![("started".into(), 3)],
            software: vec![("available".into(), 1)],
            supervised_partitions: 3,
        };
        let text = exposition(&metrics, &snapshot);
        let parsed = slapcluster_metrics::parse(&text).expect("parses");
        assert_eq!(parsed["slapnode_partitions"].samples[0].value, 10.0);
        assert_eq!(
            parsed["slapnode_replica"].samples[0].labels["url"],
            "https://[::1]:7001"
        );
        // Every node metric the Prometheus alert rules name is exported.
        let rules = include_str!("../../ops/deploy/prometheus/slapcluster.rules.yml");
        let named: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("slapnode_"))
            .collect();
        assert!(!named.is_empty());
        for name in named {
            assert!(
                text.contains(&format!("\n# TYPE {name} ")),
                "the rules name {name}, which slapnode does not export"
            );
        }
    }
}
