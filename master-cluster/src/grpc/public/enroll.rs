//! Enrollment: a new computer's node exchanges a one-time token (made by an operator) and a
//! certificate signing request for its first certificate. The token is used through Raft
//! (once, cluster-wide, before it expires); the replica then signs with its intermediate CA
//! and records the certificate. Only the token's SHA-256 is ever stored.

use std::time::Duration;

use slapcluster_api::v1 as pb;
use tonic::Status;

use super::{rejected, unavailable};
use crate::replica::signing::{self, SignError, sign, signer, token_hash};
use crate::replica::{ReplicaCore, now};
use crate::state::model::Actor;
use crate::state::{Command, Op, Outcome};

/// The longest a one-time token may live.
const MAX_TOKEN_SECONDS: u64 = 7 * 24 * 3600;

/// A new one-time token, valid for `valid_seconds` (0: an hour; at most [`MAX_TOKEN_SECONDS`]).
pub(super) fn new_token(valid_seconds: u32) -> Result<pb::EnrollmentToken, Status> {
    let valid = match valid_seconds {
        0 => Duration::from_secs(3600),
        s if u64::from(s) > MAX_TOKEN_SECONDS => {
            return Err(super::convert::invalid("valid_seconds", "at most 7 days"));
        }
        s => Duration::from_secs(s.into()),
    };
    let token = signing::new_token().map_err(|e| Status::unavailable(e.to_string()))?;
    let expires_at = now().0 + u64::try_from(valid.as_micros()).unwrap_or(u64::MAX);
    Ok(pb::EnrollmentToken { token, expires_at })
}

/// Why signing failed, as a gRPC status.
pub(super) fn sign_failed(error: &SignError) -> Status {
    match error {
        SignError::NoSigner | SignError::NoTls => Status::failed_precondition(error.to_string()),
        SignError::Request(_) => Status::invalid_argument(error.to_string()),
        SignError::Issued(_) => Status::internal(error.to_string()),
    }
}

/// A computer's next certificate, signed once the one it called with (`presented`) is due for
/// renewal (`ca::renewal_due`): earlier, a computer could mint certificates at will. The
/// current certificate stays valid until it expires.
pub async fn renew(
    core: &ReplicaCore,
    computer: &crate::state::model::ComputerId,
    presented: &tonic::transport::CertificateDer<'static>,
    csr_pem: &str,
) -> Result<pb::EnrollReply, Status> {
    let current = ca::CertificateInfo::from_der(presented)
        .map_err(|e| Status::invalid_argument(format!("the presented certificate: {e}")))?;
    if !ca::renewal_due(
        current.not_before,
        current.not_after,
        std::time::SystemTime::now(),
    ) {
        return Err(Status::failed_precondition(format!(
            "certificate {} is not due for renewal yet (renew in the last third of its life)",
            current.serial
        )));
    }
    ca::verify_request(csr_pem)
        .map_err(|e| Status::invalid_argument(format!("the certificate request: {e}")))?;
    let reply = sign_computer(core, csr_pem, computer).await?;
    tracing::info!(%computer, replaces = %current.serial, "renewed a computer's certificate");
    Ok(reply)
}

/// Signs `csr_pem` as `computer`'s certificate for a computer's lifetime, and records it.
async fn sign_computer(
    core: &ReplicaCore,
    csr_pem: &str,
    computer: &crate::state::model::ComputerId,
) -> Result<pb::EnrollReply, Status> {
    let identity = ca::Identity::Computer(computer.to_string());
    let lifetime = ca::Lifetimes::default().leaf(identity.role());
    let signed = sign(
        core,
        csr_pem,
        &identity,
        lifetime,
        Actor::Replica(core.id()),
    )
    .await
    .map_err(|e| sign_failed(&e))?;
    tracing::info!(%identity, serial = %signed.serial, "signed a computer's certificate");
    Ok(pb::EnrollReply {
        chain_pem: signed.chain_pem,
        roots_pem: signed.roots_pem,
    })
}

pub async fn enroll(
    core: &ReplicaCore,
    token: &str,
    csr_pem: &str,
) -> Result<pb::EnrollReply, Status> {
    // Refuse what cannot be signed before the token is spent on it.
    signer(core).map_err(|e| sign_failed(&e))?;
    ca::verify_request(csr_pem)
        .map_err(|e| Status::invalid_argument(format!("the certificate request: {e}")))?;
    let used = core
        .write(Command {
            at: now(),
            actor: Actor::Replica(core.id()),
            op: Op::UseEnrollmentToken {
                token_hash: token_hash(token),
            },
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let computer = match used.response {
        Ok(Outcome::Enrolled { computer }) => computer,
        Ok(other) => return Err(Status::internal(format!("enrollment answered {other:?}"))),
        Err(rejection) => return Err(rejected(&rejection)),
    };
    let reply = sign_computer(core, csr_pem, &computer).await?;
    tracing::info!(%computer, "enrolled");
    Ok(reply)
}
