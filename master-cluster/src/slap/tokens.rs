//! The master's two web methods that give a certificate for a one-time token, as the real
//! SlapOS client calls them:
//! - `Person_requestComputer` (`slapos node register NAME --token T`): the certificate and key
//!   of the computer an operator made the enrollment token for (`slapctl computer token`);
//! - `Person_getCertificate` (`slapos configure client --token T`): a user's, for a
//!   credential token (`slapctl user token`).
//!
//! The token, in the `X-Access-Token` header, is the credential: no client certificate is
//! asked for, and nothing of the call's body is read (the node's `title` is not needed: the
//! token names its computer). The key is made here, as the master makes it, since the client
//! sends no request to sign. A token is spent through Raft, once, cluster-wide; each kind only
//! on its own method. The client reads 403 as "Access denied … check the token".

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use super::calls::sign_new_key;
use super::server::{Answer, Failure};
use crate::replica::signing::{signer, token_hash};
use crate::replica::{Consistency, ReplicaCore, now};
use crate::state::model::Actor;
use crate::state::{Command, Op, Outcome, query};

/// Where the client puts the token.
const TOKEN_HEADER: &str = "x-access-token";

/// The prefix `slapos node register` needs of a computer's reference: it reads the reference
/// out of the certificate text, from the first `COMP-` to the next `/email`.
const REGISTERED_PREFIX: &str = "COMP-";

/// Answers token call `name` (`Person_requestComputer` or `Person_getCertificate`).
pub(super) async fn answer(core: &ReplicaCore, name: &str, headers: &HeaderMap) -> Answer {
    let token = headers
        .get(TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Failure::bad(format!(
                "{name} needs the one-time token in an X-Access-Token header"
            ))
        })?;
    // Refuse what cannot be signed before the token is spent on it.
    signer(core)?;
    let token_hash = token_hash(token);
    let op = if name == "Person_requestComputer" {
        refuse_unregistrable(core, &token_hash).await?;
        Op::UseEnrollmentToken { token_hash }
    } else {
        Op::UseCredentialToken { token_hash }
    };
    let used = core
        .write(Command {
            at: now(),
            actor: Actor::Replica(core.id()),
            op,
        })
        .await
        .map_err(Failure::from)?
        .response?;
    let (identity, reference) = match used {
        Outcome::Enrolled { computer } => {
            (ca::Identity::Computer(computer.to_string()), computer.0)
        }
        Outcome::Credentialed { user } => (ca::Identity::User(user.to_string()), user.0),
        other => {
            return Err(Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("using the token answered {other:?}"),
            ));
        }
    };
    let (signed, key_pem) = sign_new_key(core, &identity).await?;
    tracing::info!(%identity, serial = %signed.serial, call = name, "enrolled with a token");
    let body = match identity {
        // The text before the PEM is what the client reads the computer's reference from;
        // PEM readers skip it.
        ca::Identity::Computer(_) => json!({
            "certificate": format!(
                "CN={reference}/emailAddress={reference}@slapcluster\n{}",
                signed.chain_pem
            ),
            "key": key_pem,
            "reference": reference,
            "relative_url": format!("computer_module/{reference}"),
        }),
        _ => json!({
            "certificate": signed.chain_pem,
            "key": key_pem,
            "id": signed.serial,
            "common_name": identity.to_uri(),
        }),
    };
    super::server::json(&body)
}

/// Refuses, before it is spent, an enrollment token for a computer whose reference
/// `slapos node register` could not read back (it would write an empty `computer_id`). A
/// token this replica has not applied yet is let through: spending it decides.
async fn refuse_unregistrable(core: &ReplicaCore, token_hash: &str) -> Result<(), Failure> {
    let hash = token_hash.to_string();
    let token = core
        .read(Consistency::Stale, move |txn| {
            query::enrollment_token(txn, &hash)
        })
        .await?;
    match token {
        Some(token) if !token.computer.as_str().starts_with(REGISTERED_PREFIX) => {
            Err(Failure::bad(format!(
                "slapos node register can only enroll computers named {REGISTERED_PREFIX}…, \
                 not {}: use slapnode enroll for it (the token is kept)",
                token.computer
            )))
        }
        _ => Ok(()),
    }
}
