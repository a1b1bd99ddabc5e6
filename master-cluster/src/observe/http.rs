//! The replica's operations listener: `/metrics`, `/healthz`, `/readyz` and the status page
//! `/`, plain HTTP/1.1 (axum), read-only.
//!
//! Handlers hold the replica weakly: once it shuts down they answer 503, and the server never
//! keeps its data files open.

use openraft::async_runtime::WatchReceiver as _;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use slapcluster_metrics::CONTENT_TYPE;
use tokio::net::TcpListener;

use super::page::{self, ComputerRow, MemberRow, PendingRow, StatusPage};
use crate::replica::{Consistency, ReplicaCore};
use crate::state::model::Placement;
use crate::state::query;

type Core = Weak<ReplicaCore>;

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "replica stopped\n").into_response()
}

/// Serves the operations endpoints on `listener` until `shutdown` turns true: every connection
/// admitted by the replica's budgets and closed when its next request's headers stall
/// (`crate::listen`). Handlers read no request body.
pub async fn serve(
    listener: TcpListener,
    core: Weak<ReplicaCore>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(budgets) = core.upgrade().map(|core| core.budgets().clone()) else {
        return Ok(());
    };
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(core);
    crate::listen::serve_connections(listener, budgets, shutdown, move |tcp, _| {
        crate::listen::serve_http1(tcp, app.clone())
    })
    .await
}

async fn metrics(State(core): State<Core>) -> Response {
    let Some(core) = core.upgrade() else {
        return gone();
    };
    let state = match core
        .read(Consistency::Stale, super::StateGauges::read)
        .await
    {
        Ok(n) => n,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the state: {e}\n"),
            )
                .into_response();
        }
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        super::exposition(&core, state),
    )
        .into_response()
}

/// Alive: Raft runs (a fatal storage error stops it, and the replica must be restarted or
/// replaced).
async fn healthz(State(core): State<Core>) -> Response {
    let Some(core) = core.upgrade() else {
        return gone();
    };
    let running = core.raft().metrics().borrow_watched().running_state.clone();
    match running {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(fatal) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(core): State<Core>) -> Response {
    let Some(core) = core.upgrade() else {
        return gone();
    };
    match super::readiness(&core.readiness_input()) {
        Ok(ready) => (StatusCode::OK, format!("{ready}\n")).into_response(),
        Err(not) => (StatusCode::SERVICE_UNAVAILABLE, format!("{not}\n")).into_response(),
    }
}

async fn status_page(State(core): State<Core>) -> Response {
    let Some(core) = core.upgrade() else {
        return gone();
    };
    let now = SystemTime::now();
    Html(page::render(&gather(&core).await, now)).into_response()
}

fn microseconds(t: crate::state::model::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(t.0)
}

/// Everything the page shows, from this replica's applied state and its members' answers.
pub(crate) async fn gather(core: &Arc<ReplicaCore>) -> StatusPage {
    let status = core.cluster_status().await;
    let mut page = StatusPage {
        replica: core.id(),
        region: core.node().region,
        term: status.term,
        leader: status.leader,
        elections: core.elections().recent(),
        ..Default::default()
    };
    page.members = status
        .members
        .into_iter()
        .map(|m| MemberRow {
            role: slapcluster_api::role_name(
                m.standing()
                    .map_or(slapcluster_api::v1::Role::Unspecified, Into::into),
            )
            .into(),
            applied_index: m.reported.as_ref().map(|s| s.applied_index),
            lag: m.lag,
            leader_contact: m.reported.as_ref().and_then(|s| s.leader_contact_age),
            round_trip: m.round_trip,
            unreachable: m.unreachable(),
            id: m.member.id,
            addr: m.member.addr,
            region: m.member.region,
        })
        .collect();
    let state = core
        .read(Consistency::Stale, |txn| {
            Ok((
                query::computers_with_liveness(txn, page::ROWS)?,
                query::pending_count(txn)?,
                query::pending(txn, page::ROWS)?,
            ))
        })
        .await;
    match state {
        Err(e) => page.problems.push(format!("cannot read the state: {e}")),
        Ok(((computers_total, computers), pending_total, pending)) => {
            page.computers_total = usize::try_from(computers_total).unwrap_or(usize::MAX);
            page.computers = computers
                .into_iter()
                .map(|(c, seen)| ComputerRow {
                    region: c.attributes.get("region").cloned().unwrap_or_default(),
                    open: c.allocation_scope.is_open(),
                    partitions: c.partition_count,
                    busy: c.partition_count.saturating_sub(c.free_count),
                    last_seen: seen.map(microseconds),
                    id: c.id.to_string(),
                })
                .collect();
            page.pending_total = usize::try_from(pending_total).unwrap_or(usize::MAX);
            page.pending = pending
                .into_iter()
                .map(|i| PendingRow {
                    guid: i.guid.to_string(),
                    owner: i.owner.to_string(),
                    title: i.title,
                    software_release: i.software_release.to_string(),
                    reason: match i.placement {
                        Placement::Pending { reason } | Placement::Unplaceable { reason } => reason,
                        _ => String::new(),
                    },
                })
                .collect();
        }
    }
    page
}
