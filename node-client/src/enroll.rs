//! A new computer's first certificate: a key made here, a certificate signing request, a
//! one-time token from an operator, and the cluster's root certificate to trust the replica
//! with (handed over with the token). The key never leaves the computer.

use std::path::{Path, PathBuf};

use slapcluster_api::client::{self, ClientError, Credentials};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use tonic::transport::{Certificate, ClientTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("reading the cluster's root certificate {}: {source}", path.display())]
    Roots {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making a key and request: {0}")]
    Key(#[from] ca::CaError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("writing the credentials to {}: {source}", dir.display())]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Enrolls through `master` and writes the credentials into `tls_dir`.
pub async fn enroll(
    master: &str,
    roots: &Path,
    token: &str,
    tls_dir: &Path,
) -> Result<(), EnrollError> {
    let roots_pem = std::fs::read_to_string(roots).map_err(|source| EnrollError::Roots {
        path: roots.to_path_buf(),
        source,
    })?;
    let key = ca::new_key_and_request()?;
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&roots_pem));
    let channel = client::connect_with(master, Some(anonymous)).await?;
    let reply = NodeClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.to_owned(),
            csr_pem: key.csr_pem,
        })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    Credentials {
        roots_pem: vec![reply.roots_pem],
        chain_pem: reply.chain_pem,
        key_pem: key.key_pem,
    }
    .write_dir(tls_dir)
    .map_err(|source| EnrollError::Write {
        dir: tls_dir.to_path_buf(),
        source,
    })
}
