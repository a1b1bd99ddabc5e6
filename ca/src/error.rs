//! Why issuing or reading a certificate failed.

use crate::identity::IdentityError;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A key, certificate or request that could not be read or built.
    #[error("{what}: {source}")]
    Crypto {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("not a certificate: {0}")]
    NotACertificate(String),
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0} is not a certificate authority")]
    NotACa(String),
    #[error("no random bytes for a serial number")]
    Random,
}

pub(crate) fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Crypto { what, source }
}
