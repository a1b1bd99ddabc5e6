//! Renewing the computer's certificate before it expires. The agent looks at the certificate
//! in `tls_dir` at start and every hour; once it is in the last third of its life
//! (`ca::renewal_due`) it makes a new key here, has a replica sign it (`Node.RenewCertificate`,
//! authenticated by the current certificate, which stays valid until it expires), swaps the
//! whole directory in one step and uses the new certificate for every later connection.
//!
//! The swap: the new set is written and synced to `<tls_dir>.new`, then exchanged with
//! `tls_dir` by one `renameat2(RENAME_EXCHANGE)`, so a crash leaves either the old set or the
//! new one whole, never a key beside another key's certificate; the old set, left in
//! `<tls_dir>.new`, is removed afterwards.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use slapcluster_api::client::Credentials;

/// Why a renewal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("reading the computer's certificate in {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the computer's certificate in {}: {source}", dir.display())]
    Certificate { dir: PathBuf, source: ca::CaError },
    #[error("making a key: {0}")]
    Key(ca::CaError),
    #[error("writing the renewed certificate to {}: {source}", dir.display())]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// No replica signed it (retried at the next check).
    #[error(transparent)]
    Master(#[from] crate::replicas::CallError),
    #[error(transparent)]
    Client(#[from] slapcluster_api::client::ClientError),
    /// The blocking task that installs the certificate panicked or was cancelled.
    #[error("the task installing the certificate stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// The credentials in `dir`, if their certificate is due for renewal at `now`.
pub fn due(dir: &Path, now: SystemTime) -> Result<Option<Credentials>, RenewError> {
    let credentials = Credentials::read_dir(dir).map_err(|source| RenewError::Read {
        dir: dir.to_path_buf(),
        source,
    })?;
    let info = ca::CertificateInfo::from_pem(&credentials.chain_pem).map_err(|source| {
        RenewError::Certificate {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    Ok(ca::renewal_due(info.not_before, info.not_after, now).then_some(credentials))
}

/// A new key and its certificate signing request: (key, CSR), both PEM.
pub fn new_request() -> Result<(String, String), RenewError> {
    let request = ca::new_key_and_request().map_err(RenewError::Key)?;
    Ok((request.key_pem, request.csr_pem))
}

/// Replaces the credentials in `dir` by `renewed` in one step (see the module's doc).
pub fn install(dir: &Path, renewed: &Credentials) -> Result<(), RenewError> {
    let write = |source| RenewError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    let staged = staging(dir);
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(write)?;
    }
    renewed.write_dir(&staged).map_err(write)?;
    for name in Credentials::FILES {
        std::fs::File::open(staged.join(name))
            .and_then(|f| f.sync_all())
            .map_err(write)?;
    }
    std::fs::set_permissions(
        &staged,
        std::fs::metadata(dir).map_err(write)?.permissions(),
    )
    .map_err(write)?;
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &staged,
        nix::fcntl::AT_FDCWD,
        dir,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|e| write(std::io::Error::from(e)))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(write)?;
    }
    // The old set, now under the staging name.
    std::fs::remove_dir_all(&staged).map_err(write)
}

fn staging(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(tag: &str) -> Credentials {
        Credentials {
            roots_pem: vec![format!("roots {tag}\n")],
            chain_pem: format!("chain {tag}\n"),
            key_pem: format!("key {tag}\n"),
        }
    }

    #[test]
    fn the_directory_is_swapped_whole_and_the_old_set_removed() -> anyhow::Result<()> {
        let parent = tempfile::tempdir()?;
        let dir = parent.path().join("tls");
        credentials("old").write_dir(&dir)?;
        // A staging directory left by an earlier crash is replaced, not trusted.
        credentials("stale").write_dir(&staging(&dir))?;
        install(&dir, &credentials("new"))?;
        let read = Credentials::read_dir(&dir)?;
        assert_eq!(read.chain_pem, "chain new\n");
        assert_eq!(read.key_pem, "key new\n");
        assert!(!staging(&dir).exists(), "the old set is gone");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("key.pem"))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the key stays private");
        Ok(())
    }
}
