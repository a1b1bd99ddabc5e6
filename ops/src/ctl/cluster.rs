//! `cluster status` and `member list | add | promote | remove`, with the one retry policy for a
//! membership that is changing.

use super::*;
use slapcluster_api::client::WhileChanging;

#[derive(Debug, Serialize)]
pub(super) struct MemberRow {
    id: u64,
    role: String,
    voter: bool,
    region: String,
    addr: String,
    applied_index: Option<u64>,
    lag: Option<u64>,
    leader_contact_ms: Option<u64>,
    /// The answering replica's measured round trip to the member.
    round_trip_ms: Option<f64>,
    unreachable: String,
}

pub(super) async fn status(conn: &Conn) -> Result<pb::ClusterStatusReply, CtlError> {
    conn.answer(
        conn.admin()
            .cluster_status(conn.request(pb::ClusterStatusRequest {})?),
    )
    .await
}

pub(super) fn member_rows(status: &pb::ClusterStatusReply) -> Vec<MemberRow> {
    status
        .members
        .iter()
        .map(|m| MemberRow {
            id: m.id,
            role: slapcluster_api::role_name(m.role()).into(),
            voter: m.voter,
            region: m.region.clone(),
            addr: m.addr.clone(),
            applied_index: m.applied_index,
            lag: m.lag,
            leader_contact_ms: m.leader_contact_age_ms,
            round_trip_ms: m.round_trip_us.map(|us| (us as f64 / 100.0).round() / 10.0),
            unreachable: m.unreachable.clone(),
        })
        .collect()
}

const MEMBER_COLUMNS: [&str; 9] = [
    "id",
    "role",
    "region",
    "addr",
    "applied_index",
    "lag",
    "leader_contact_ms",
    "round_trip_ms",
    "unreachable",
];

pub(super) async fn cluster_status(conn: &Conn) -> Result<Output, CtlError> {
    let status = status(conn).await?;
    let rows = member_rows(&status);
    let leader = match status.leader {
        0 => "no leader known".to_string(),
        id => format!("leader {id}"),
    };
    let reachable = rows.iter().filter(|r| r.unreachable.is_empty()).count();
    let table = Output::table(&MEMBER_COLUMNS, &rows);
    Ok(Output {
        json: serde_json::json!({
            "answered_by": status.id,
            "term": status.term,
            "leader": status.leader,
            "members": table.json,
        }),
        text: format!(
            "term {}, {leader}, {reachable} of {} members answered (asked {})\n\n{}",
            status.term,
            rows.len(),
            conn.url,
            table.text
        ),
    })
}

pub(super) async fn member_list(conn: &Conn) -> Result<Output, CtlError> {
    Ok(Output::table(
        &MEMBER_COLUMNS,
        &member_rows(&status(conn).await?),
    ))
}

pub(super) async fn member_add(
    conn: &Conn,
    id: u64,
    url: String,
    region: String,
    promote: bool,
    timeout: Duration,
    progress: bool,
) -> Result<Output, CtlError> {
    let added = while_changing(|| async {
        conn.admin()
            .add_member(conn.request(pb::AddMemberRequest {
                id,
                addr: url.clone(),
                region: region.clone(),
                wait_ms: 0,
                promote: false,
            })?)
            .await
            .map_err(Changing::Status)
    })
    .await;
    match added {
        Ok(_) => {}
        // Added, and catching up: the wait below shows how far it is.
        Err(Changing::Status(e)) if e.code() == tonic::Code::DeadlineExceeded => {}
        Err(e) => return Err(e.into_ctl(conn)),
    }
    let mut bar = Progress::new(format!("replica {id} catching up"), progress);
    let deadline = Instant::now() + timeout;
    let caught_up = loop {
        let status = status(conn).await?;
        let member = status.members.iter().find(|m| m.id == id);
        match member.and_then(|m| m.lag) {
            Some(0) => break true,
            Some(lag) => bar.update(lag, None, "entries behind"),
            None => bar.update(0, None, "entries (not answering yet)"),
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish();
    if !caught_up {
        return Err(CtlError::Unavailable(format!(
            "replica {id} was added as a learner but has not caught up after {}s; it keeps \
             going: watch `slapctl member list`, then `slapctl member promote {id}`",
            timeout.as_secs()
        )));
    }
    if promote {
        promote_with_retry(conn, id).await?;
    }
    Ok(Output::message(
        format!(
            "replica {id} ({url}) added{}",
            if promote {
                " and promoted to voter"
            } else {
                " as a learner, caught up"
            }
        ),
        serde_json::json!({"id": id, "addr": url, "voter": promote}),
    ))
}

/// What a membership change failed with: the replica's status, or the request not built.
pub(super) enum Changing {
    Status(tonic::Status),
    Request(CtlError),
}

impl From<CtlError> for Changing {
    fn from(e: CtlError) -> Self {
        Self::Request(e)
    }
}

impl Changing {
    fn into_ctl(self, conn: &Conn) -> CtlError {
        match self {
            Self::Status(e) => conn.failed(e),
            Self::Request(e) => e,
        }
    }
}

/// Runs a membership change under the contract's one retry policy, for up to 30 s: another
/// change (a join's, the previous step of this one) may still be committing, or a leader
/// being elected. Returns the last answer.
pub(super) async fn while_changing<T, F, Fut>(mut attempt: F) -> Result<T, Changing>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Changing>>,
{
    let mut retry = WhileChanging::for_at_most(Duration::from_secs(30));
    loop {
        match attempt().await {
            Err(Changing::Status(e)) if retry.again(&e).await => {}
            other => return other,
        }
    }
}

pub(super) async fn promote_with_retry(conn: &Conn, id: u64) -> Result<u64, CtlError> {
    while_changing(|| async {
        conn.admin()
            .promote_member(conn.request(pb::PromoteMemberRequest { id })?)
            .await
            .map(|reply| reply.into_inner().index)
            .map_err(Changing::Status)
    })
    .await
    .map_err(|e| e.into_ctl(conn))
}

pub(super) async fn member_promote(conn: &Conn, id: u64) -> Result<Output, CtlError> {
    let index = promote_with_retry(conn, id).await?;
    Ok(Output::message(
        format!("replica {id} is a voter (membership change at index {index})"),
        serde_json::json!({"id": id, "index": index}),
    ))
}

pub(super) async fn member_leader(conn: &Conn, id: u64, timeout: u64) -> Result<Output, CtlError> {
    let wait_ms = u32::try_from(timeout.saturating_mul(1000)).unwrap_or(u32::MAX);
    let reply = while_changing(|| async {
        conn.admin()
            .transfer_leader(conn.request(pb::TransferLeaderRequest { id, wait_ms })?)
            .await
            .map(tonic::Response::into_inner)
            .map_err(Changing::Status)
    })
    .await
    .map_err(|e| e.into_ctl(conn))?;
    Ok(Output::message(
        format!("replica {} leads (term {})", reply.leader, reply.term),
        serde_json::json!({"leader": reply.leader, "term": reply.term}),
    ))
}

pub(super) async fn member_remove(conn: &Conn, id: u64) -> Result<Output, CtlError> {
    // An attempt the cluster did not answer may have removed the replica all the same: then
    // the next one finds it gone, which is what was asked.
    let mut unanswered = false;
    let removed = while_changing(|| {
        let first = !unanswered;
        unanswered = true;
        async move {
            match conn
                .admin()
                .remove_member(conn.request(pb::RemoveMemberRequest { id })?)
                .await
            {
                Ok(reply) => Ok(Some(reply.into_inner().index)),
                Err(e)
                    if !first
                        && e.code() == tonic::Code::FailedPrecondition
                        && e.message().contains("is not a member") =>
                {
                    Ok(None)
                }
                Err(e) => Err(Changing::Status(e)),
            }
        }
    })
    .await
    .map_err(|e| e.into_ctl(conn))?;
    let at = removed.map_or_else(String::new, |index| {
        format!(" (membership change at index {index})")
    });
    Ok(Output::message(
        format!("replica {id} removed{at}; stop its process now"),
        serde_json::json!({"id": id, "index": removed}),
    ))
}
