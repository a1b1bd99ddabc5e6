//! Accepting a peer: its certificate chain must lead to the cluster's root, be valid now,
//! name one identity, and not be revoked. Each refusal says which of these failed, so that a
//! foreign CA, an expired certificate, a revoked one and none at all are told apart.

use std::collections::BTreeSet;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use crate::cert::{CertificateInfo, Serial};
use crate::error::CaError;
use crate::identity::Identity;

/// What the peer is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A client (node, user, operator, or a replica calling a peer).
    Client,
    /// A replica answering on its port.
    Server,
}

/// Why a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no client certificate")]
    NoCertificate,
    #[error("the certificate is not issued by this cluster's CA")]
    UnknownIssuer,
    #[error("the certificate expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("certificate {0} is revoked")]
    Revoked(Serial),
    #[error("the certificate names no slapcluster identity")]
    NoIdentity,
    #[error("the certificate is not acceptable: {0}")]
    Invalid(String),
}

/// A verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    pub serial: Serial,
    pub not_after: SystemTime,
    /// The leaf's serial, then its intermediates': revoking any of them refuses the chain.
    pub chain_serials: Vec<Serial>,
}

/// The cluster's root certificates (two during a CA rotation).
#[derive(Debug, Clone)]
pub struct TrustStore {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustStore {
    /// Trusts every certificate in `roots_pem` (each text may hold several: a bundle of the
    /// old and the new root during a CA rotation).
    pub fn new(roots_pem: &[&str]) -> Result<Self, CaError> {
        let mut roots = Vec::new();
        for pem in roots_pem {
            roots.extend(crate::cert::ders_from_pem(pem)?);
        }
        if roots.is_empty() {
            return Err(CaError::NotACertificate("no root certificate".into()));
        }
        // Each must be usable as an anchor.
        for root in &roots {
            webpki::anchor_from_trusted_cert(root)
                .map_err(|e| CaError::NotACertificate(format!("trust anchor: {e:?}")))?;
        }
        Ok(Self { roots })
    }

    /// Checks `chain` (the peer's certificate, then the intermediates it sent) at `now`
    /// against the roots and the revoked serials.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        usage: Usage,
        now: SystemTime,
        revoked: &BTreeSet<Serial>,
    ) -> Result<Verified, Refusal> {
        let verified = self.verify_chain(chain, usage, now)?;
        match verified.chain_serials.iter().find(|s| revoked.contains(*s)) {
            Some(serial) => Err(Refusal::Revoked(serial.clone())),
            None => Ok(verified),
        }
    }

    /// [`TrustStore::verify`] without the revocation check: the caller checks
    /// [`Verified::chain_serials`] against its revocations (so that it may cache the result
    /// of this, the costly part, per certificate).
    pub fn verify_chain(
        &self,
        chain: &[CertificateDer<'_>],
        usage: Usage,
        now: SystemTime,
    ) -> Result<Verified, Refusal> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Refusal::NoCertificate);
        };
        let anchors: Vec<TrustAnchor<'_>> = self
            .roots
            .iter()
            .filter_map(|root| webpki::anchor_from_trusted_cert(root).ok())
            .collect();
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| Refusal::Invalid(format!("{e:?}")))?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let usage = match usage {
            Usage::Client => webpki::KeyUsage::client_auth(),
            Usage::Server => webpki::KeyUsage::server_auth(),
        };
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                intermediates,
                UnixTime::since_unix_epoch(since_epoch),
                usage,
                None,
                None,
            )
            .map_err(|e| match e {
                // A chain signed by a key that is not our CA's, even under our CA's name.
                webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                    Refusal::UnknownIssuer
                }
                webpki::Error::CertExpired { .. } => Refusal::Expired,
                webpki::Error::CertNotValidYet { .. } => Refusal::NotYetValid,
                other => Refusal::Invalid(format!("{other:?}")),
            })?;
        let info = CertificateInfo::from_der(leaf).map_err(|e| Refusal::Invalid(e.to_string()))?;
        // Revoking an intermediate revokes everything it signed.
        let mut chain_serials = vec![info.serial.clone()];
        for cert in intermediates {
            let serial = CertificateInfo::from_der(cert)
                .map_err(|e| Refusal::Invalid(e.to_string()))?
                .serial;
            chain_serials.push(serial);
        }
        let identity = info.identity.ok_or(Refusal::NoIdentity)?;
        Ok(Verified {
            identity,
            serial: info.serial,
            not_after: info.not_after,
            chain_serials,
        })
    }
}
