//! `quota ...`: each user's limits and what they hold.

use super::*;

pub(super) async fn quota(conn: &Conn, command: QuotaCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    let whose = |user: &Option<String>| {
        user.clone()
            .unwrap_or_else(|| "everyone (the default)".to_string())
    };
    match command {
        QuotaCommand::Show { user, default } => {
            let reply = conn
                .answer(admin.show_quota(conn.request(pb::ShowQuotaRequest {
                    user: user.unwrap_or_default(),
                    default,
                    ..Default::default()
                })?))
                .await?;
            let (quota, held) = (
                reply.quota.unwrap_or_default(),
                reply.held.unwrap_or_default(),
            );
            let (name, source) = match (reply.user.as_str(), reply.own) {
                ("", true) => ("everyone", "the default set by an operator"),
                ("", false) => ("everyone", "the master's default"),
                (user, true) => (user, "set for them"),
                (user, false) => (user, "the default"),
            };
            Ok(Output {
                text: format!(
                    "{name} ({source}):\n  instances        {} of {}\n  waiting          {} of {}\n  parameter bytes  {} of {}",
                    held.instances,
                    quota.instances,
                    held.pending,
                    quota.pending,
                    held.parameter_bytes,
                    quota.parameter_bytes,
                ),
                json: serde_json::json!({
                    "user": reply.user,
                    "own": reply.own,
                    "quota": {"instances": quota.instances, "pending": quota.pending, "parameter_bytes": quota.parameter_bytes},
                    "held": {"instances": held.instances, "pending": held.pending, "parameter_bytes": held.parameter_bytes},
                }),
            })
        }
        QuotaCommand::Set {
            user,
            instances,
            pending,
            parameter_bytes,
        } => {
            // Limits not given keep the value in force for that user (or the default's).
            let current = conn
                .answer(admin.show_quota(conn.request(pb::ShowQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    default: user.is_none(),
                    ..Default::default()
                })?))
                .await?
                .quota
                .unwrap_or_default();
            let quota = pb::Quota {
                instances: instances.unwrap_or(current.instances),
                pending: pending.unwrap_or(current.pending),
                parameter_bytes: parameter_bytes.unwrap_or(current.parameter_bytes),
            };
            let reply = conn
                .answer(admin.set_quota(conn.request(pb::SetQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    quota: Some(quota),
                })?))
                .await?;
            Ok(Output::message(
                format!(
                    "quota of {}: {} instances, {} waiting, {} parameter bytes",
                    whose(&user),
                    quota.instances,
                    quota.pending,
                    quota.parameter_bytes
                ),
                serde_json::json!({"user": user, "changed": reply.changed, "index": reply.index}),
            ))
        }
        QuotaCommand::Unset { user } => {
            let reply = conn
                .answer(admin.set_quota(conn.request(pb::SetQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    quota: None,
                })?))
                .await?;
            Ok(Output::message(
                format!("quota of {} unset", whose(&user)),
                serde_json::json!({"user": user, "changed": reply.changed, "index": reply.index}),
            ))
        }
    }
}
