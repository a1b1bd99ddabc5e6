//! `cert ...`: issue, list and revoke certificates.

use super::*;

pub(super) async fn cert(conn: &Conn, command: CertCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    match command {
        CertCommand::Issue {
            identity,
            csr,
            out,
            days,
        } => {
            let (key_pem, csr_pem) = match &csr {
                Some(path) => (
                    None,
                    std::fs::read_to_string(path)
                        .map_err(CtlError::io(format!("reading {}", path.display())))?,
                ),
                None => {
                    let made = ca::new_key_and_request()
                        .map_err(|e| CtlError::Failed(format!("making a key: {e}")))?;
                    (Some(made.key_pem), made.csr_pem)
                }
            };
            let reply = conn
                .answer(
                    admin.issue_certificate(conn.request(pb::IssueCertificateRequest {
                        identity: identity.clone(),
                        csr_pem,
                        days: days.unwrap_or(0),
                    })?),
                )
                .await?;
            match key_pem {
                Some(key_pem) => slapcluster_api::client::Credentials {
                    roots_pem: vec![reply.roots_pem.clone()],
                    chain_pem: reply.chain_pem.clone(),
                    key_pem,
                }
                .write_dir(&out)
                .map_err(CtlError::io(format!("writing {}", out.display())))?,
                None => {
                    std::fs::create_dir_all(&out)
                        .map_err(CtlError::io(format!("creating {}", out.display())))?;
                    std::fs::write(out.join("chain.pem"), &reply.chain_pem)
                        .map_err(CtlError::io("writing chain.pem"))?;
                    std::fs::write(out.join("roots.pem"), &reply.roots_pem)
                        .map_err(CtlError::io("writing roots.pem"))?;
                }
            }
            Ok(Output::message(
                format!(
                    "certificate {} for {identity} in {}{}",
                    reply.serial,
                    out.display(),
                    if csr.is_some() {
                        " (the key stays with the request's owner)"
                    } else {
                        " (key.pem readable by you only)"
                    }
                ),
                serde_json::json!({"identity": identity, "serial": reply.serial, "not_after": reply.not_after, "dir": out}),
            ))
        }
        CertCommand::Token {
            user,
            valid_seconds,
        } => {
            let token = conn
                .answer(admin.create_credential_token(conn.request(
                    pb::CreateCredentialTokenRequest {
                        user: user.clone(),
                        valid_seconds,
                    },
                )?))
                .await?;
            Ok(Output::message(
                format!(
                    "{}\n(one use, for {user}'s client: slapos configure client --token TOKEN \
                     --master-url URL --master-url-web URL; expires in {} s)",
                    token.token, valid_seconds
                ),
                serde_json::json!({"user": user, "token": token.token, "expires_at": token.expires_at}),
            ))
        }
        CertCommand::Revoke { serial, reason } => {
            let reply = conn
                .answer(
                    admin.revoke_certificate(conn.request(pb::RevokeCertificateRequest {
                        serial: serial.clone(),
                        reason,
                    })?),
                )
                .await?;
            Ok(Output::message(
                format!(
                    "certificate {serial} {}: every replica refuses it within a second",
                    if reply.changed {
                        "revoked"
                    } else {
                        "was already revoked"
                    }
                ),
                serde_json::json!({"serial": serial, "changed": reply.changed, "index": reply.index}),
            ))
        }
        CertCommand::List => {
            let reply = conn
                .answer(admin.list_certificates(conn.request(pb::ListCertificatesRequest {})?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                serial: String,
                identity: String,
                expires: String,
                issued_by: String,
                revoked: bool,
                reason: String,
            }
            let rows: Vec<Row> = reply
                .certificates
                .into_iter()
                .map(|c| Row {
                    serial: c.serial,
                    identity: c.identity,
                    expires: expires(c.not_after),
                    issued_by: c.issued_by,
                    revoked: c.revoked,
                    reason: c.revocation_reason,
                })
                .collect();
            Ok(Output::table(
                &[
                    "serial",
                    "identity",
                    "expires",
                    "issued_by",
                    "revoked",
                    "reason",
                ],
                &rows,
            ))
        }
    }
}

/// `in N days` / `expired`, from microseconds since the epoch.
pub(super) fn expires(micros: u64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("in {} days", left.as_secs() / 86_400),
        Err(_) => "expired".into(),
    }
}
