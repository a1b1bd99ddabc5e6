//! A replica run as an instance of the `slapmaster` software release
//! (`master-cluster/releases/slapmaster.toml`): SlapOS hosts SlapOS.
//!
//! An instance cannot hold a replica certificate before it exists, and the root CA's key never
//! reaches the cluster. So: the node renders the instance's configuration and the cluster's
//! roots from its parameters; [`instance`] makes the replica's key and its signing CA's key,
//! with a request for each ([`REPLICA_CSR`], [`SIGNER_CSR`]), which the node publishes as
//! connection parameters; the operator signs them with the root CA (`slapctl replica add`,
//! on the operator's machine) and hands the certificates back as instance parameters, which
//! the node writes beside the keys (`chain.pem`, `signer.pem`). Once both certify those keys,
//! the replica starts and asks the cluster to add it (learner, then voter), unless it already
//! is a voter, as after a restart. [`promise`] is the release's promise: it holds while the
//! requests await the operator, and after that only while the replica is ready (`/readyz`).

use std::path::Path;
use std::time::Duration;

use slapcluster_api::client;

use super::{DaemonError, FileConfig, Overrides, io};
use crate::server::Replica;

/// The replica's certificate request, published as the connection parameter `csr`.
pub const REPLICA_CSR: &str = "replica.csr";
/// Its signing CA's request, published as `signer-csr`.
pub const SIGNER_CSR: &str = "signer.csr";

/// The keys, each with the request that names it.
const KEYS: [(&str, &str); 2] = [("key.pem", REPLICA_CSR), ("signer.key", SIGNER_CSR)];

/// Where a hosted replica is, as the files in its `tls_dir` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The requests are out; the operator's certificates are not there yet.
    AwaitingCertificates,
    /// Its certificate and its signing CA are in place, each for its key.
    Certified,
}

/// Makes each key and its request, once. A key whose request is missing (a stop between the
/// two writes) is made again: a request is only ever published beside its key.
pub fn prepare(tls_dir: &Path) -> Result<(), DaemonError> {
    std::fs::create_dir_all(tls_dir).map_err(io(format!("creating {}", tls_dir.display())))?;
    for (key, request) in KEYS {
        let (key, request) = (tls_dir.join(key), tls_dir.join(request));
        if key.exists() && request.exists() {
            continue;
        }
        let made = ca::new_key_and_request().map_err(|e| DaemonError::Refused(e.to_string()))?;
        client::write_key_file(&key, &made.key_pem)
            .map_err(io(format!("writing {}", key.display())))?;
        let partial = request.with_extension("partial");
        std::fs::write(&partial, &made.csr_pem)
            .and_then(|()| std::fs::rename(&partial, &request))
            .map_err(io(format!("writing {}", request.display())))?;
    }
    Ok(())
}

/// Reads the stage of replica `id`. Certificates that are not for these keys, or a replica
/// certificate for another identity, are refused with what is wrong: installing them would
/// make a replica that cannot speak TLS, or one that speaks as another.
pub fn stage(tls_dir: &Path, id: u64) -> Result<Stage, DaemonError> {
    let read = |name: &str| {
        let path = tls_dir.join(name);
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            other => other.map_err(io(format!("reading {}", path.display()))),
        }
    };
    let (chain, signer) = (read("chain.pem")?, read("signer.pem")?);
    if chain.trim().is_empty() || signer.trim().is_empty() {
        return Ok(Stage::AwaitingCertificates);
    }
    let refused = |what: &str, e: ca::CaError| DaemonError::Refused(format!("{what}: {e}"));
    let certifies = |cert: &str, key: &str| -> Result<bool, DaemonError> {
        ca::certifies_key(cert, &read(key)?).map_err(|e| refused(key, e))
    };
    if !certifies(&chain, "key.pem")? {
        return Err(DaemonError::Refused(format!(
            "chain.pem is not for this replica's key (signed from another {REPLICA_CSR}?)"
        )));
    }
    let identity = ca::CertificateInfo::from_pem(&chain)
        .map_err(|e| refused("chain.pem", e))?
        .identity;
    if identity != Some(ca::Identity::Replica(id)) {
        return Err(DaemonError::Refused(format!(
            "chain.pem speaks for {}, not for replica {id}",
            identity.map_or("nobody".into(), |i| i.to_string())
        )));
    }
    if !certifies(&signer, "signer.key")? {
        return Err(DaemonError::Refused(format!(
            "signer.pem is not for this replica's signing key (signed from another {SIGNER_CSR}?)"
        )));
    }
    Ok(Stage::Certified)
}

/// What a hosted replica's configuration must say beyond a replica's.
struct Hosted {
    id: u64,
    tls_dir: std::path::PathBuf,
    file: FileConfig,
}

fn read_config(path: &Path) -> Result<Hosted, DaemonError> {
    let file = FileConfig::load(Some(path))?;
    match (file.id, file.tls_dir.clone()) {
        (Some(id), Some(tls_dir)) => Ok(Hosted { id, tls_dir, file }),
        _ => Err(DaemonError::Refused(format!(
            "{}: a hosted replica's configuration names its id and tls_dir",
            path.display()
        ))),
    }
}

/// How often a replica awaiting its certificates looks for them.
const AWAIT_EVERY: Duration = Duration::from_secs(1);

/// `slapmaster instance`: the process of a hosted replica (see the module's documentation).
/// `via` are replicas of the cluster to ask, tried in turn.
pub async fn instance(
    config: &Path,
    via: &[String],
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let hosted = read_config(config)?;
    prepare(&hosted.tls_dir)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut said = String::new();
    loop {
        let (stage, news) = match stage(&hosted.tls_dir, hosted.id) {
            Ok(stage) => (stage, format!("{stage:?}")),
            // Waiting on: the operator may hand the right certificates yet (the promise
            // reports this one on the instance meanwhile).
            Err(e) => (Stage::AwaitingCertificates, e.to_string()),
        };
        if stage == Stage::Certified {
            break;
        }
        if news != said {
            tracing::info!(tls_dir = %hosted.tls_dir.display(), "awaiting the operator's certificates: {news}");
            said = news;
        }
        tokio::select! {
            () = tokio::time::sleep(AWAIT_EVERY) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
    let config = hosted.file.validate(Overrides::default())?;
    let replica = Replica::start(config.replica.clone()).await?;
    // Joins, or (already a voter, as after a restart) serves. Over TLS the replica's
    // certificate says who asks; the header only has to be well formed.
    let join_as = super::JoinAs::Voter;
    super::join_started(
        replica,
        &config,
        via,
        "operator:slapmaster",
        join_as,
        shutdown,
    )
    .await
}

/// `slapmaster promise`: holds (returns what it saw) while the requests await the operator's
/// certificates, then only while the replica answers `/readyz` on its `http_listen`.
pub async fn promise(config: &Path) -> Result<String, DaemonError> {
    let hosted = read_config(config)?;
    if stage(&hosted.tls_dir, hosted.id)? == Stage::AwaitingCertificates {
        let published = KEYS
            .iter()
            .all(|(_, request)| hosted.tls_dir.join(request).exists());
        return if published {
            Ok("awaiting the operator's certificates".into())
        } else {
            Err(DaemonError::Refused(
                "the certificate requests are not made yet".into(),
            ))
        };
    }
    let Some(http) = &hosted.file.http_listen else {
        return Err(DaemonError::Refused(
            "a hosted replica's configuration names its http_listen (for /readyz)".into(),
        ));
    };
    let (status, body) = http_get(http, "/readyz").await?;
    if status == 200 {
        Ok(body.trim().to_owned())
    } else {
        Err(DaemonError::Refused(format!(
            "/readyz answered {status}: {}",
            body.trim()
        )))
    }
}

/// The most a promise reads of an answer.
const MAX_ANSWER: u64 = 64 * 1024;

/// One HTTP/1.0 GET (the server closes the connection after its answer): status and body.
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), DaemonError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: std::io::Error| DaemonError::Io {
        what: format!("GET http://{addr}{path}"),
        source: e,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            failed(std::io::Error::other(format!(
                "not an HTTP answer: {head:?}"
            )))
        })?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(root: &ca::Authority, csr: &str, identity: ca::Identity) -> anyhow::Result<String> {
        let grant = ca::Grant {
            identity,
            lifetime: Duration::from_secs(3600),
            server_names: vec!["fd00::100".into()],
        };
        Ok(root.sign_leaf(csr, &grant, std::time::SystemTime::now())?)
    }

    #[test]
    fn a_hosted_replica_is_certified_only_by_certificates_for_its_own_keys() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let tls = dir.path().join("tls");
        let root = ca::Authority::create_root(
            "test",
            std::time::SystemTime::now(),
            Duration::from_secs(86_400),
        )?;
        prepare(&tls)?;
        let request = std::fs::read_to_string(tls.join(REPLICA_CSR))?;
        let key = std::fs::read_to_string(tls.join("key.pem"))?;
        prepare(&tls)?;
        assert_eq!(
            std::fs::read_to_string(tls.join("key.pem"))?,
            key,
            "made once"
        );
        assert_eq!(stage(&tls, 4)?, Stage::AwaitingCertificates);

        // Another replica's identity, then another key: refused, saying which.
        std::fs::write(
            tls.join("chain.pem"),
            sign(&root, &request, ca::Identity::Replica(5))?,
        )?;
        let signer_request = std::fs::read_to_string(tls.join(SIGNER_CSR))?;
        let signer = root.sign_intermediate(
            &signer_request,
            4,
            std::time::SystemTime::now(),
            Duration::from_secs(3600),
        )?;
        std::fs::write(tls.join("signer.pem"), &signer)?;
        let error = stage(&tls, 4).expect_err("replica 5's certificate");
        assert!(error.to_string().contains("not for replica 4"), "{error}");
        let stranger = ca::new_key_and_request()?;
        std::fs::write(
            tls.join("chain.pem"),
            sign(&root, &stranger.csr_pem, ca::Identity::Replica(4))?,
        )?;
        let error = stage(&tls, 4).expect_err("another key");
        assert!(
            error.to_string().contains("not for this replica's key"),
            "{error}"
        );

        std::fs::write(
            tls.join("chain.pem"),
            sign(&root, &request, ca::Identity::Replica(4))?,
        )?;
        assert_eq!(stage(&tls, 4)?, Stage::Certified);
        // A signing CA for another key is refused too.
        std::fs::write(
            tls.join("signer.pem"),
            sign(&root, &request, ca::Identity::Replica(4))?,
        )?;
        let error = stage(&tls, 4).expect_err("signer for the replica key");
        assert!(error.to_string().contains("signing key"), "{error}");
        Ok(())
    }
}
