//! Reading a certificate: its identity, serial number and validity.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::error::CaError;
use crate::identity::Identity;

/// A certificate's serial number, as lowercase hex without leading zero bytes: how
/// revocations name certificates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(pub String);

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serial {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Self(bytes[start..].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What the cluster reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `None` for a CA certificate (or a certificate not issued by this crate).
    pub identity: Option<Identity>,
    pub serial: Serial,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    pub subject: String,
    pub issuer: String,
}

impl CertificateInfo {
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Self, CaError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CaError::NotACertificate(e.to_string()))?;
        let mut identities = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && uri.starts_with("urn:slapcluster:")
                {
                    identities.push(Identity::parse_uri(uri)?);
                }
            }
        }
        // A certificate that names two identities speaks for neither.
        if identities.len() > 1 {
            return Err(CaError::NotACertificate(format!(
                "{} identities in one certificate",
                identities.len()
            )));
        }
        let time = |t: x509_parser::time::ASN1Time| {
            let seconds = t.timestamp();
            match u64::try_from(seconds) {
                Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
                Err(_) => SystemTime::UNIX_EPOCH,
            }
        };
        Ok(Self {
            identity: identities.pop(),
            serial: Serial::from_bytes(cert.raw_serial()),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            is_ca: cert.is_ca(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        Self::from_der(&der_from_pem(pem)?)
    }
}

/// Every certificate of a PEM text.
pub fn ders_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::NotACertificate(format!("PEM: {e}")))
}

/// The first certificate of a PEM text.
pub fn der_from_pem(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CaError::NotACertificate(format!("PEM: {e}")))
}
