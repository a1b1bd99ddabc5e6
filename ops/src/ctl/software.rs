//! `software supply | list | publish`.

use super::*;

pub(super) async fn supply(
    conn: &Conn,
    url: String,
    computer: String,
    remove: bool,
) -> Result<Output, CtlError> {
    let mut message = pb::SupplyRequest {
        computer: computer.clone(),
        url: url.clone(),
        ..Default::default()
    };
    message.set_state(if remove {
        pb::SupplyState::Destroyed
    } else {
        pb::SupplyState::Available
    });
    let reply = conn
        .answer(conn.user().supply(conn.request(message)?))
        .await?;
    let verb = if remove { "to remove" } else { "to install" };
    Ok(Output::message(
        format!(
            "{computer} asked {verb} {url}; {} pending request(s) placed",
            reply.placed
        ),
        serde_json::json!({"computer": computer, "url": url, "remove": remove, "placed": reply.placed, "index": reply.index}),
    ))
}

pub(super) async fn software_list(conn: &Conn) -> Result<Output, CtlError> {
    let reply = conn
        .answer(
            conn.user()
                .list_software_releases(conn.request(pb::ListSoftwareReleasesRequest::default())?),
        )
        .await?;
    #[derive(Serialize)]
    struct Row {
        url: String,
        title: String,
        software_types: String,
    }
    let rows: Vec<Row> = reply
        .software_releases
        .into_iter()
        .map(|s| Row {
            url: s.url,
            title: s.title,
            software_types: s.software_types.join(","),
        })
        .collect();
    Ok(Output::table(&["url", "title", "software_types"], &rows))
}

pub(super) async fn software_publish(
    conn: &Conn,
    url: String,
    title: String,
    software_types: Vec<String>,
) -> Result<Output, CtlError> {
    let reply = conn
        .answer(conn.user().publish_software_release(conn.request(
            pb::PublishSoftwareReleaseRequest {
                url: url.clone(),
                title,
                software_types,
            },
        )?))
        .await?;
    Ok(Output::message(
        format!("{url} is in the catalog"),
        serde_json::json!({"url": url, "changed": reply.changed, "index": reply.index}),
    ))
}
