//! TLS on every connection of a replica: the server side (its certificate, and client
//! certificates requested from every caller), the client side (to peers, and for clients of
//! the contract), and how a caller's identity is read from its certificate on every call.
//!
//! Client certificates are checked per call, not in the handshake: the handshake only proves
//! that the caller holds the key of the certificate it presents (rustls checks the handshake
//! signature), and every call then verifies the chain against the cluster's roots and the
//! revoked serials ([`ca::TrustStore::verify`]) before anything else runs. A foreign, expired,
//! revoked or missing certificate is thus refused with an `Unauthenticated` status that says
//! which, instead of a handshake failure that a client sees as a broken connection; and a
//! revocation takes effect on connections that are already open.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

use crate::lock;

/// A replica's TLS material: its certificate chain and key, and the cluster's roots.
pub type TlsMaterial = slapcluster_api::client::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS material: {0}")]
    Material(String),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Everything a replica needs for TLS, built once from its material.
pub struct Tls {
    pub trust: ca::TrustStore,
    pub server: Arc<rustls::ServerConfig>,
    /// For connections to peers (and the same for any client holding a certificate).
    pub client: tonic::transport::ClientTlsConfig,
    /// The cluster's roots, as read (handed to enrolling nodes).
    pub roots_pem: Vec<String>,
    /// The replica's own certificate: its operators renew it (from the root, offline) once it
    /// is due, and the replica loads the new files without a restart.
    pub certificate: ca::CertificateInfo,
    /// Chains verified before, by the leaf's bytes: verifying a chain costs two signature
    /// checks, a lookup here a hash of the leaf. Only accepted chains are kept; revocation
    /// and expiry are checked on every call all the same.
    verified: std::sync::Mutex<HashMap<Vec<u8>, Arc<ca::Verified>>>,
}

/// The TLS setup a replica uses now: replaced whole when its files change, so that renewed
/// certificates and a rotated CA take effect without a restart (new connections use the new
/// setup; open ones keep theirs until they reconnect).
pub struct CurrentTls(std::sync::RwLock<Arc<Tls>>);

impl CurrentTls {
    pub fn new(tls: Tls) -> Self {
        Self(std::sync::RwLock::new(Arc::new(tls)))
    }

    pub fn get(&self) -> Arc<Tls> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, tls: Tls) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }
}

/// A cheap fingerprint of the material's files (sizes and modification times), to notice
/// that they changed.
pub fn fingerprint(dir: &std::path::Path) -> Option<Vec<(u64, SystemTime)>> {
    TlsMaterial::FILES
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(dir.join(name)).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        })
        .collect()
}

/// Cached verified chains beyond this are forgotten all at once (then re-verified).
const MAX_CACHED_CHAINS: usize = 10_000;

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    pub fn new(material: &TlsMaterial) -> Result<Self, TlsError> {
        let roots: Vec<&str> = material.roots_pem.iter().map(String::as_str).collect();
        let trust = ca::TrustStore::new(&roots)?;
        let chain = certificates(&material.chain_pem)?;
        let certificate = ca::CertificateInfo::from_der(&chain[0])?;
        let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())
            .map_err(|e| TlsError::Material(format!("private key: {e}")))?;
        let provider = provider();
        let verifier = Arc::new(PerCallClientVerifier {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            trust,
            server: Arc::new(server),
            client: client_config(material),
            roots_pem: material.roots_pem.clone(),
            certificate,
            verified: Default::default(),
        })
    }

    /// Reads the caller of a call from the certificate chain its connection presented, and
    /// checks it against the serials revoked now.
    pub fn verify_caller(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
        revoked: &BTreeSet<String>,
    ) -> Result<ca::Identity, ca::Refusal> {
        let chain = chain.unwrap_or_default();
        let Some(leaf) = chain.first() else {
            return Err(ca::Refusal::NoCertificate);
        };
        let now = SystemTime::now();
        let cached = lock(&self.verified).get(leaf.as_ref()).cloned();
        let verified = match cached {
            Some(verified) if now < verified.not_after => verified,
            Some(_) => return Err(ca::Refusal::Expired),
            None => {
                let verified = self.trust.verify_chain(chain, ca::Usage::Client, now)?;
                let mut cache = lock(&self.verified);
                if cache.len() >= MAX_CACHED_CHAINS {
                    cache.clear();
                }
                let verified = Arc::new(verified);
                cache.insert(leaf.to_vec(), verified.clone());
                verified
            }
        };
        match verified
            .chain_serials
            .iter()
            .find(|s| revoked.contains(&s.0))
        {
            Some(serial) => Err(ca::Refusal::Revoked(serial.clone())),
            None => Ok(verified.identity.clone()),
        }
    }
}

use rustls::pki_types::pem::PemObject;

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = ca::ders_from_pem(pem)?;
    if chain.is_empty() {
        return Err(TlsError::Material("no certificate in the chain".into()));
    }
    Ok(chain)
}

/// The client side: trust the cluster's roots, present this certificate chain.
pub fn client_config(material: &TlsMaterial) -> tonic::transport::ClientTlsConfig {
    material.tls_config()
}

/// Requests a certificate from every client and checks that the client holds its key; the
/// chain itself is verified on every call (see the module's documentation). Never used
/// without that per-call verification.
#[derive(Debug)]
struct PerCallClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PerCallClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// A client without a certificate gets through the handshake, and a clear
    /// "no client certificate" on its first call.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A new key and a certificate for `identity` signed by `signer` (the key is made here: for
/// the operator's offline tools, tests and the dev cluster).
pub fn issue(
    signer: &ca::Authority,
    roots_pem: &str,
    identity: ca::Identity,
    server_names: Vec<String>,
    lifetime: std::time::Duration,
) -> Result<TlsMaterial, ca::CaError> {
    let request = ca::new_key_and_request()?;
    let grant = ca::Grant {
        identity,
        lifetime,
        server_names,
    };
    let leaf = signer.sign_leaf(&request.csr_pem, &grant, SystemTime::now())?;
    // A root signs leaves directly (no intermediate to send along).
    let self_signed = signer.info().subject == signer.info().issuer;
    let chain_pem = if self_signed {
        leaf
    } else {
        format!("{leaf}{}", signer.cert_pem())
    };
    Ok(TlsMaterial {
        roots_pem: vec![roots_pem.to_string()],
        chain_pem,
        key_pem: request.key_pem,
    })
}
