//! `alert list`: what failed, and (with `--closed`) what recovered; and the status histories
//! `instance show` and `computer show` print.

use super::*;

#[derive(Serialize)]
struct AlertRow {
    id: u64,
    kind: String,
    subject: String,
    title: String,
    project: String,
    opened: Option<String>,
    reason: String,
    closed: Option<String>,
    closed_because: String,
}

pub(super) async fn alert(conn: &Conn, command: AlertCommand) -> Result<Output, CtlError> {
    let AlertCommand::List { closed } = command;
    let reply = conn
        .answer(conn.user().list_alerts(conn.request(pb::ListAlertsRequest {
            closed,
            ..Default::default()
        })?))
        .await?;
    let rows: Vec<AlertRow> = reply
        .alerts
        .into_iter()
        .map(|a| AlertRow {
            id: a.id,
            kind: a.kind,
            subject: a.subject,
            title: a.title,
            project: a.project,
            opened: ago(a.opened_at),
            reason: a.reason,
            closed: ago(a.closed_at),
            closed_because: a.closed_because,
        })
        .collect();
    let mut columns = vec!["id", "kind", "title", "opened", "reason"];
    if closed {
        columns.extend(["closed", "closed_because"]);
    }
    Ok(Output::table(&columns, &rows))
}

/// A status history as lines for people (`when  health: reason`), oldest first.
pub(super) fn history_text(history: &[pb::StatusChange]) -> String {
    let mut lines = vec!["history:".to_string()];
    lines.extend(history.iter().map(|change| {
        format!(
            "  {:<12}  {}: {}",
            ago(change.at).unwrap_or_default(),
            change.health,
            change.reason
        )
    }));
    lines.join("\n")
}

/// A status history for scripts.
pub(super) fn history_json(history: &[pb::StatusChange]) -> serde_json::Value {
    serde_json::Value::Array(
        history
            .iter()
            .map(|c| serde_json::json!({"at": c.at, "health": c.health, "reason": c.reason}))
            .collect(),
    )
}
