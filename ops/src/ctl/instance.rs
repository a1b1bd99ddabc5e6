//! `slapctl request` and `instance list | show | explain | destroy`.

use super::*;

#[derive(Debug, Serialize)]
pub(super) struct InstanceRow {
    title: String,
    guid: String,
    software_release: String,
    software_type: String,
    requested_state: String,
    reported_state: String,
    placement: String,
    shared: bool,
    parameters: BTreeMap<String, String>,
    connection: BTreeMap<String, String>,
    last_error: String,
}

impl From<&pb::Instance> for InstanceRow {
    fn from(i: &pb::Instance) -> Self {
        Self {
            title: i.title.clone(),
            guid: i.guid.clone(),
            software_release: i.software_release.clone(),
            software_type: i.software_type.clone(),
            requested_state: short_name(i.requested_state().as_str_name()),
            reported_state: match i.reported_state() {
                pb::ReportedState::Unspecified => String::new(),
                s => short_name(s.as_str_name()),
            },
            placement: placement_text(i.placement.as_ref()),
            shared: i.shared,
            parameters: i.parameters.clone().into_iter().collect(),
            connection: i.connection.clone().into_iter().collect(),
            last_error: i.last_error.clone(),
        }
    }
}

pub(super) async fn request(conn: &Conn, args: RequestArgs) -> Result<Output, CtlError> {
    let mut message = pb::RequestInstanceRequest {
        title: args.title,
        software_release: args.software,
        software_type: args.software_type.unwrap_or_default(),
        parameters: args.parameters.into_iter().collect(),
        sla: args.sla.into_iter().collect(),
        shared: args.shared,
        project: args.project.unwrap_or_default(),
        ..Default::default()
    };
    message.set_state(match args.state {
        State::Started => pb::RequestedState::Started,
        State::Stopped => pb::RequestedState::Stopped,
        State::Destroyed => pb::RequestedState::Destroyed,
    });
    let reply = conn
        .answer(conn.user().request_instance(conn.request(message)?))
        .await?;
    #[derive(Serialize)]
    struct Requested {
        title: String,
        guid: String,
        requested_state: String,
        placement: String,
        changed: bool,
        index: u64,
    }
    let out = Requested {
        title: reply.title.clone(),
        guid: reply.guid.clone(),
        requested_state: short_name(reply.requested_state().as_str_name()),
        placement: placement_text(reply.placement.as_ref()),
        changed: reply.changed,
        index: reply.index,
    };
    let verb = if reply.changed {
        "requested"
    } else {
        "unchanged"
    };
    let hint = if out.placement.starts_with("pending") {
        format!("\n`slapctl explain {}` says what it waits for", out.title)
    } else {
        String::new()
    };
    Ok(Output::message(
        format!(
            "{verb} {} ({}): {}{hint}",
            out.title, out.guid, out.placement
        ),
        out,
    ))
}

pub(super) async fn instance_list(conn: &Conn) -> Result<Output, CtlError> {
    let reply = conn
        .answer(
            conn.user()
                .list_instances(conn.request(pb::ListInstancesRequest::default())?),
        )
        .await?;
    let rows: Vec<InstanceRow> = reply.instances.iter().map(InstanceRow::from).collect();
    Ok(Output::table(
        &[
            "title",
            "guid",
            "requested_state",
            "reported_state",
            "placement",
        ],
        &rows,
    ))
}

pub(super) fn show_request(which: InstanceRef) -> pb::ShowInstanceRequest {
    pb::ShowInstanceRequest {
        instance: Some(match (which.guid, which.title) {
            (Some(guid), _) => pb::show_instance_request::Instance::Guid(guid),
            (None, title) => pb::show_instance_request::Instance::Title(title.unwrap_or_default()),
        }),
        ..Default::default()
    }
}

pub(super) async fn show(
    conn: &Conn,
    which: InstanceRef,
) -> Result<pb::ShowInstanceReply, CtlError> {
    conn.answer(
        conn.user()
            .show_instance(conn.request(show_request(which))?),
    )
    .await
}

pub(super) async fn instance_show(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let reply = show(conn, which).await?;
    let instance = reply
        .instance
        .as_ref()
        .ok_or_else(|| CtlError::Failed("the replica answered no instance".into()))?;
    #[derive(Serialize)]
    struct Shown {
        #[serde(flatten)]
        row: InstanceRow,
        health: String,
    }
    let row = Shown {
        row: InstanceRow::from(instance),
        health: format!("{}: {}", reply.health, reply.health_reason),
    };
    let shared: Vec<String> = reply
        .shared_instances
        .iter()
        .map(|s| format!("{} ({})", s.title, s.guid))
        .collect();
    let mut out = Output::record(
        &[
            "title",
            "guid",
            "software_release",
            "software_type",
            "requested_state",
            "reported_state",
            "health",
            "placement",
            "shared",
            "parameters",
            "connection",
            "last_error",
        ],
        &row,
    );
    if !shared.is_empty() {
        out = out.then(&format!("hosts: {}", shared.join(", ")));
    }
    if let serde_json::Value::Object(fields) = &mut out.json {
        fields.insert("history".into(), history_json(&reply.history));
    }
    Ok(out.then(&history_text(&reply.history)))
}

pub(super) async fn explain(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let reply = show(conn, which).await?;
    let title = reply
        .instance
        .as_ref()
        .map(|i| i.title.clone())
        .unwrap_or_default();
    #[derive(Serialize)]
    struct Explained {
        title: String,
        placement: String,
        explanation: String,
    }
    let out = Explained {
        placement: placement_text(reply.instance.as_ref().and_then(|i| i.placement.as_ref())),
        explanation: reply.explanation,
        title,
    };
    Ok(Output::message(
        format!("{}: {}", out.title, out.explanation),
        out,
    ))
}

pub(super) async fn instance_destroy(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let instance = show(conn, which)
        .await?
        .instance
        .ok_or_else(|| CtlError::Failed("the replica answered no instance".into()))?;
    let reply = conn
        .answer(
            conn.user()
                .destroy_instance(conn.request(pb::DestroyInstanceRequest {
                    guid: instance.guid.clone(),
                })?),
        )
        .await?;
    Ok(Output::message(
        format!(
            "{} ({}) {}: its node stops it, then the partition is freed",
            instance.title,
            instance.guid,
            if reply.changed {
                "destroyed"
            } else {
                "was already being destroyed"
            }
        ),
        serde_json::json!({"guid": instance.guid, "changed": reply.changed, "index": reply.index}),
    ))
}
