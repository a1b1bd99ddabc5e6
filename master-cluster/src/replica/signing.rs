//! Certificates a replica signs with its intermediate CA (an enrolling or renewing computer's,
//! a partition's, an operator's request), each recorded through Raft so that the cluster
//! knows every certificate it issued, and the one-time tokens that stand for a certificate
//! once. Transport-free: each transport maps a [`SignError`].

use super::{ReplicaCore, now};
use crate::state::model::{Actor, Timestamp};
use crate::state::{Command, Op};

/// A certificate this replica signed and recorded.
pub struct Signed {
    /// The certificate, then the signing CA's.
    pub chain_pem: String,
    pub roots_pem: String,
    pub serial: String,
    /// Microseconds since the epoch.
    pub not_after: u64,
}

/// Why a replica did not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "this replica has no signing CA (signer.pem in its tls_dir): ask another, or give it \
         one with `slapmaster cert signer`"
    )]
    NoSigner,
    #[error("signing certificates needs a replica running TLS")]
    NoTls,
    /// The caller's certificate signing request.
    #[error("the certificate request: {0}")]
    Request(#[source] ca::CaError),
    /// The certificate just signed does not read back (a bug, not the caller's doing).
    #[error("the signed certificate: {0}")]
    Issued(#[source] ca::CaError),
}

/// The replica's signing CA and its TLS roots, or why it cannot sign.
pub fn signer(core: &ReplicaCore) -> Result<(&ca::Authority, String), SignError> {
    let signer = core.signer().ok_or(SignError::NoSigner)?;
    let tls = core.tls().ok_or(SignError::NoTls)?;
    Ok((signer, tls.roots_pem.concat()))
}

/// Signs `csr_pem` for `identity` with this replica's signing CA and records the certificate
/// through Raft (best effort: a certificate whose record failed is valid all the same).
pub async fn sign(
    core: &ReplicaCore,
    csr_pem: &str,
    identity: &ca::Identity,
    lifetime: std::time::Duration,
    recorded_by: Actor,
) -> Result<Signed, SignError> {
    let (signer, roots_pem) = signer(core)?;
    let grant = ca::Grant {
        lifetime,
        identity: identity.clone(),
        server_names: Vec::new(),
    };
    let leaf = signer
        .sign_leaf(csr_pem, &grant, std::time::SystemTime::now())
        .map_err(SignError::Request)?;
    let info = ca::CertificateInfo::from_pem(&leaf).map_err(SignError::Issued)?;
    let not_after = info
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let recorded = core
        .write(Command {
            at: now(),
            actor: recorded_by,
            op: Op::RecordCertificate {
                serial: info.serial.to_string(),
                identity: identity.to_uri(),
                not_after: Timestamp(not_after),
            },
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(%e, serial = %info.serial, "issued certificate not recorded");
    }
    Ok(Signed {
        chain_pem: format!("{leaf}{}", signer.cert_pem()),
        roots_pem,
        serial: info.serial.to_string(),
        not_after,
    })
}

/// A new one-time token: 32 random bytes, in hex.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// What the cluster keeps of a token: its SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
