//! What several test files share: a cluster CA built in code.

use std::time::SystemTime;

use ca::{Authority, Grant, Identity, Lifetimes, new_key_and_request};
use master_cluster::tls::TlsMaterial;

/// A root and the intermediate that signs every leaf, as `slapmaster ca init` and `cert
/// signer` would make them.
pub struct TestCa {
    pub root: Authority,
    pub intermediate: Authority,
}

impl TestCa {
    pub fn new(cluster: &str) -> Self {
        let root = Authority::create_root(cluster, SystemTime::now(), Lifetimes::default().root)
            .expect("root");
        let request = new_key_and_request().expect("key");
        let cert = root
            .sign_intermediate(
                &request.csr_pem,
                1,
                SystemTime::now(),
                Lifetimes::default().intermediate,
            )
            .expect("intermediate");
        let intermediate = Authority::load(&cert, &request.key_pem).expect("loads");
        Self { root, intermediate }
    }

    /// The intermediate's certificate and key: a replica's `signer.pem` and `signer.key`.
    pub fn signer_pem(&self) -> (String, String) {
        (
            self.intermediate.cert_pem().to_string(),
            self.intermediate.key_pem(),
        )
    }

    /// A certificate for `identity` issued at `issued`, with its key and this CA's root.
    pub fn material(&self, identity: Identity, issued: SystemTime) -> TlsMaterial {
        let request = new_key_and_request().expect("key");
        let grant = Grant {
            lifetime: Lifetimes::default().leaf(identity.role()),
            server_names: vec!["::1".into()],
            identity,
        };
        let leaf = self
            .intermediate
            .sign_leaf(&request.csr_pem, &grant, issued)
            .expect("leaf");
        TlsMaterial {
            roots_pem: vec![self.root.cert_pem().to_string()],
            chain_pem: format!("{leaf}{}", self.intermediate.cert_pem()),
            key_pem: request.key_pem,
        }
    }
}
