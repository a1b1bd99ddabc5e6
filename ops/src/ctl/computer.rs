//! `computer ...`: list, show, register, scope, and usage records.

use super::*;

#[derive(Debug, Serialize)]
pub(super) struct ComputerRow {
    id: String,
    region: String,
    allocation: String,
    project: String,
    partitions: u32,
    busy: u32,
    last_seen: Option<String>,
    health: String,
    attributes: BTreeMap<String, String>,
}

impl From<&pb::ComputerSummary> for ComputerRow {
    fn from(c: &pb::ComputerSummary) -> Self {
        Self {
            id: c.id.clone(),
            region: c.attributes.get("region").cloned().unwrap_or_default(),
            allocation: c.scope.clone(),
            project: c.project.clone(),
            partitions: c.partitions,
            busy: c.busy,
            last_seen: ago(c.last_seen),
            health: format!("{}: {}", c.health, c.health_reason),
            attributes: c.attributes.clone().into_iter().collect(),
        }
    }
}

pub(super) async fn computer(conn: &Conn, command: ComputerCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    match command {
        ComputerCommand::List => {
            let reply = conn
                .answer(admin.list_computers(conn.request(pb::ListComputersRequest::default())?))
                .await?;
            let rows: Vec<ComputerRow> = reply.computers.iter().map(ComputerRow::from).collect();
            Ok(Output::table(
                &[
                    "id",
                    "region",
                    "allocation",
                    "busy",
                    "partitions",
                    "last_seen",
                    "health",
                ],
                &rows,
            ))
        }
        ComputerCommand::Show { computer } => {
            let reply = conn
                .answer(admin.show_computer(conn.request(pb::ShowComputerRequest {
                    computer,
                    ..Default::default()
                })?))
                .await?;
            let summary = reply.computer.unwrap_or_default();
            #[derive(Serialize)]
            struct PartitionRow {
                partition: String,
                addresses: String,
                tap: String,
                instance: String,
                guid: String,
                owner: String,
                requested_state: String,
            }
            let partitions: Vec<PartitionRow> = reply
                .partitions
                .iter()
                .map(|p| PartitionRow {
                    partition: p.reference.clone(),
                    addresses: p.addresses.join(" "),
                    tap: p.tap.clone(),
                    instance: p.instance_title.clone(),
                    guid: p.instance_guid.clone(),
                    owner: p.owner.clone(),
                    requested_state: if p.instance_guid.is_empty() {
                        String::new()
                    } else {
                        short_name(p.requested_state().as_str_name())
                    },
                })
                .collect();
            #[derive(Serialize)]
            struct SoftwareRow {
                url: String,
                requested: String,
                reported: String,
            }
            let software: Vec<SoftwareRow> = reply
                .software
                .iter()
                .map(|s| SoftwareRow {
                    url: s.url.clone(),
                    requested: short_name(s.requested().as_str_name()),
                    reported: match s.reported() {
                        pb::SoftwareState::Unspecified => "not reported yet".into(),
                        state => short_name(state.as_str_name()),
                    },
                })
                .collect();
            let head = Output::record(
                &[
                    "id",
                    "region",
                    "allocation",
                    "busy",
                    "partitions",
                    "last_seen",
                ],
                &ComputerRow::from(&summary),
            );
            let partition_table = Output::table(
                &[
                    "partition",
                    "addresses",
                    "tap",
                    "instance",
                    "owner",
                    "requested_state",
                ],
                &partitions,
            );
            let software_table = Output::table(&["url", "requested", "reported"], &software);
            Ok(Output {
                json: serde_json::json!({
                    "computer": head.json,
                    "partitions": partition_table.json,
                    "software": software_table.json,
                    "history": history_json(&reply.history),
                }),
                text: format!(
                    "{}\n\n{}\n\n{}\n\n{}",
                    head.text,
                    partition_table.text,
                    software_table.text,
                    history_text(&reply.history)
                ),
            })
        }
        ComputerCommand::Close { computer } => {
            scope(conn, computer, "close/noallocation".into()).await
        }
        ComputerCommand::Open { computer } => scope(conn, computer, "open/public".into()).await,
        ComputerCommand::Scope { computer, scope: s } => scope(conn, computer, s).await,
        ComputerCommand::Move { computer, project } => {
            let reply = conn
                .answer(admin.move_computer(conn.request(pb::MoveComputerRequest {
                    computer: computer.clone(),
                    project: project.clone(),
                })?))
                .await?;
            let text = if reply.changed {
                format!("{computer} now belongs to project {project}")
            } else {
                format!("{computer} already belonged to project {project}")
            };
            Ok(Output::message(
                text,
                serde_json::json!({"computer": computer, "project": project, "changed": reply.changed, "index": reply.index}),
            ))
        }
        ComputerCommand::Token {
            computer,
            valid_seconds,
        } => {
            let token = conn
                .answer(admin.create_enrollment_token(conn.request(
                    pb::CreateEnrollmentTokenRequest {
                        computer: computer.clone(),
                        valid_seconds,
                    },
                )?))
                .await?;
            Ok(Output::message(
                format!(
                    "{}\n(one use, for {computer}'s node: slapnode enroll --token TOKEN --roots \
                     root.pem, or slapos node register {computer} --token TOKEN; expires in {} s)",
                    token.token, valid_seconds
                ),
                serde_json::json!({"computer": computer, "token": token.token, "expires_at": token.expires_at}),
            ))
        }
    }
}

pub(super) async fn scope(
    conn: &Conn,
    computer: String,
    scope: String,
) -> Result<Output, CtlError> {
    let reply =
        conn.answer(conn.admin().set_allocation_scope(conn.request(
            pb::SetAllocationScopeRequest {
                computer: computer.clone(),
                scope: scope.clone(),
                ..Default::default()
            },
        )?))
        .await?;
    let open = scope.starts_with("open/");
    let text = match (reply.changed, open) {
        (false, _) => format!("{computer} was already {scope}"),
        (true, true) => format!(
            "{computer} is {scope}; {} pending request(s) placed there",
            reply.placed
        ),
        (true, false) => {
            format!("{computer} is {scope}: no new instances go there; running ones stay")
        }
    };
    Ok(Output::message(
        text,
        serde_json::json!({"computer": computer, "scope": scope, "open": open, "changed": reply.changed, "placed": reply.placed}),
    ))
}

pub(super) async fn usage(
    conn: &Conn,
    computer: String,
    partition: Option<String>,
) -> Result<Output, CtlError> {
    let reply = conn
        .answer(conn.user().usage(conn.request(pb::UsageRequest {
            computer,
            partition: partition.unwrap_or_default(),
            ..Default::default()
        })?))
        .await?;
    /// One movement: of a record the node agent posted (its period in microseconds), or of a
    /// report a SlapOS node posted (its reference and its dates as the node wrote them).
    #[derive(Serialize)]
    struct Row {
        partition: String,
        report: String,
        start: String,
        stop: String,
        resource: String,
        title: String,
        reference: String,
        quantity: f64,
        price: f64,
        vat: String,
        category: String,
    }
    let mut rows: Vec<Row> = Vec::new();
    for record in reply.records {
        for m in record.movements {
            rows.push(Row {
                partition: record.partition.clone(),
                report: String::new(),
                start: record.period_start.to_string(),
                stop: record.period_end.to_string(),
                resource: m.resource,
                title: String::new(),
                reference: String::new(),
                quantity: m.quantity,
                price: 0.0,
                vat: String::new(),
                category: m.category,
            });
        }
    }
    for report in reply.reports {
        for m in report.movements {
            rows.push(Row {
                partition: m.partition,
                report: report.reference.clone(),
                start: report.start_date.clone(),
                stop: report.stop_date.clone(),
                resource: m.resource,
                title: m.title,
                reference: m.reference,
                quantity: m.quantity,
                price: m.price,
                vat: m.vat,
                category: m.category,
            });
        }
    }
    Ok(Output::table(
        &[
            "partition",
            "report",
            "start",
            "stop",
            "resource",
            "quantity",
            "price",
            "vat",
            "category",
        ],
        &rows,
    ))
}
