//! Issuing certificates: the cluster's root CA, a replica's intermediate signing CA, and
//! leaves for every role, each from a certificate signing request so that the private key
//! never leaves its owner. What a certificate says (role, id, lifetime, server names) is the
//! issuer's [`Grant`], never what the request asked for.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};

use crate::cert::CertificateInfo;
use crate::error::{CaError, crypto};
use crate::identity::{Identity, Role};

/// Certificates start this long before they are issued, so that a peer whose clock is a
/// little behind does not refuse them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A new private key and a request for a certificate of its public key, made by the key's
/// owner (a replica, a node, an instance, a user). Only the request is sent to the issuer.
#[derive(Debug)]
pub struct KeyAndRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Makes a P-256 key and a signed request for it.
pub fn new_key_and_request() -> Result<KeyAndRequest, CaError> {
    let key = KeyPair::generate().map_err(crypto("generating a key"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(crypto("building a certificate request"))?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr
            .pem()
            .map_err(crypto("encoding a certificate request"))?,
    })
}

/// Whether the certificate `cert_pem` (the first of a chain) is for the private key
/// `key_pem`: a certificate handed back for a request must be installed only beside the key
/// the request was made with.
pub fn certifies_key(cert_pem: &str, key_pem: &str) -> Result<bool, CaError> {
    let key = KeyPair::from_pem(key_pem).map_err(crypto("reading a private key"))?;
    Ok(certified_public_key(cert_pem)? == key.public_key_raw())
}

/// Whether the certificate `cert_pem` (the first of a chain) is for the key that the request
/// `csr_pem` was made with: the issuer's side of [`certifies_key`], for telling whether a
/// certificate handed out earlier still answers a request published now.
pub fn certifies_request(cert_pem: &str, csr_pem: &str) -> Result<bool, CaError> {
    let request = request(csr_pem)?;
    Ok(certified_public_key(cert_pem)? == request.public_key.der_bytes())
}

/// The raw public key the certificate `cert_pem` (the first of a chain) certifies.
fn certified_public_key(cert_pem: &str) -> Result<Vec<u8>, CaError> {
    let der = crate::cert::der_from_pem(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::NotACertificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// What the issuer decided a leaf certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: Identity,
    pub lifetime: Duration,
    /// For replicas: the DNS names and IP addresses clients reach it at (TLS server names).
    pub server_names: Vec<String>,
}

/// A certificate authority of the cluster: the root, or a replica's intermediate.
pub struct Authority {
    cert_pem: String,
    info: CertificateInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Authority")
            .field("subject", &self.info.subject)
            .field("serial", &self.info.serial)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates the root CA of the cluster named `cluster` (`slapmaster init`).
    pub fn create_root(
        cluster: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(crypto("generating the root key"))?;
        let mut params = base_params("", now, lifetime)?;
        // Two roots live side by side during a CA rotation: their names must differ, or a
        // verifier would try one's certificates against the other's key.
        let generation = params
            .serial_number
            .as_ref()
            .map(|s| crate::cert::Serial::from_bytes(&s.to_bytes()).0)
            .unwrap_or_default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "slapcluster");
        name.push(
            DnType::CommonName,
            format!(
                "slapcluster {cluster} root CA {}",
                &generation[..8.min(generation.len())]
            ),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(crypto("signing the root"))?;
        Self::from_parts(cert.pem(), key)
    }

    /// Loads a CA from its certificate and key, as [`Authority::cert_pem`] and
    /// [`Authority::key_pem`] wrote them.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(crypto("reading the CA key"))?;
        Self::from_parts(cert_pem.to_string(), key)
    }

    fn from_parts(cert_pem: String, key: KeyPair) -> Result<Self, CaError> {
        let info = CertificateInfo::from_pem(&cert_pem)?;
        if !info.is_ca {
            return Err(CaError::NotACa(info.subject));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(crypto("reading the CA"))?;
        Ok(Self {
            cert_pem,
            info,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, to store (mode 0600) beside the certificate.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// Signs replica `replica`'s intermediate CA from its request: it may sign leaves, not
    /// other CAs.
    pub fn sign_intermediate(
        &self,
        csr_pem: &str,
        replica: u64,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<String, CaError> {
        Identity::Replica(replica).validate()?;
        let request = request(csr_pem)?;
        let mut params = base_params(
            &format!("slapcluster replica {replica} signing CA"),
            now,
            lifetime,
        )?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(crypto("signing an intermediate"))?;
        Ok(cert.pem())
    }

    /// Signs a leaf certificate for the key in `csr_pem`, saying what `grant` says.
    pub fn sign_leaf(
        &self,
        csr_pem: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<String, CaError> {
        grant.identity.validate()?;
        let request = request(csr_pem)?;
        let mut params = base_params(&grant.identity.to_string(), now, grant.lifetime)?;
        let uri = grant
            .identity
            .to_uri()
            .try_into()
            .map_err(crypto("encoding the identity"))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if grant.identity.role() == Role::Replica {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            for name in &grant.server_names {
                params.subject_alt_names.push(match name.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        name.clone()
                            .try_into()
                            .map_err(crypto("encoding a server name"))?,
                    ),
                });
            }
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(crypto("signing a certificate"))?;
        Ok(cert.pem())
    }
}

/// Checks that `csr_pem` is a certificate signing request signed by the key it carries.
pub fn verify_request(csr_pem: &str) -> Result<(), CaError> {
    request(csr_pem).map(|_| ())
}

/// A request whose signature proves its owner holds the key.
fn request(csr_pem: &str) -> Result<CertificateSigningRequestParams, CaError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::BadRequest(e.to_string()))
}

/// Subject, validity and a random serial: what every certificate we issue has.
fn base_params(
    common_name: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "slapcluster");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + lifetime).into();
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// 16 random bytes, positive as DER integers must be: unique enough to name a certificate
/// in a revocation.
fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
