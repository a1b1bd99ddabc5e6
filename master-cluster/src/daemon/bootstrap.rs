//! `slapmaster bootstrap`: the seed of a cluster that will host itself. One command makes the
//! root CA, the seed replica's certificate and signing CA, an operator's certificate, founds a
//! one-replica cluster and serves it; run again, it serves the same seed. Nodes register with
//! the seed; `slapctl replica add` then places replicas on them (`hosted.rs`) and the seed
//! leaves (`ops/runbooks/self-hosting.md`).

use std::io::Write;
use std::path::PathBuf;

use super::{DaemonError, FileConfig, Overrides, ValidConfig, io};
use crate::server::Replica;

/// What `bootstrap` is told beyond a replica's configuration.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Holds `ca/` (the root CA), `tls/` (the seed's certificate), `operator/` (the operator's
    /// certificate) and `data/`, unless the configuration names other data and TLS directories.
    pub dir: PathBuf,
    /// The cluster's name, in its root CA.
    pub cluster: String,
    /// The operator whose certificate is made (`operator:NAME`).
    pub operator: String,
}

/// The host clients reach the seed at: from `advertise` (`https://[fd00::1]:7000`) or the
/// listen address. A wildcard address is no name: then `advertise` must say it.
pub fn server_name(advertise: Option<&str>, listen: &str) -> Result<String, String> {
    if let Some(url) = advertise {
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host),
        };
        return if host.is_empty() {
            Err(format!("advertise {url:?} names no host"))
        } else {
            Ok(host.to_owned())
        };
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| format!("listen {listen:?} is not [ipv6]:port or ipv4:port: {e}"))?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "listen {listen} is every address: give advertise, the address nodes reach the seed at"
        ));
    }
    Ok(addr.ip().to_string())
}

/// Makes what is missing of the seed's CA and certificates, and returns its configuration.
fn prepare(
    options: &BootstrapOptions,
    file: FileConfig,
    mut overrides: Overrides,
) -> Result<ValidConfig, DaemonError> {
    let dir = &options.dir;
    let id = *overrides.id.get_or_insert(file.id.unwrap_or(1));
    let tls_dir = overrides
        .tls_dir
        .get_or_insert_with(|| file.tls_dir.clone().unwrap_or_else(|| dir.join("tls")))
        .clone();
    overrides.data_dir.get_or_insert_with(|| dir.join("data"));
    let listen = overrides.listen.clone().unwrap_or(file.listen.clone());
    let advertise = overrides.advertise.clone().or(file.advertise.clone());
    let host = server_name(advertise.as_deref(), &listen).map_err(DaemonError::Refused)?;
    if advertise.is_none() {
        overrides.advertise = Some(format!("https://{listen}"));
    }

    let ca_dir = dir.join("ca");
    if !ca_dir.join("root.key").exists() {
        super::ca_init(&ca_dir, &options.cluster)?;
    }
    if !tls_dir.join("chain.pem").exists() {
        super::cert_issue(
            &ca_dir,
            &format!("replica:{id}"),
            vec![host],
            None,
            None,
            &tls_dir,
        )?;
    }
    if !tls_dir.join("signer.pem").exists() {
        super::cert_signer(&ca_dir, id, &tls_dir)?;
    }
    let operator_dir = dir.join("operator");
    if !operator_dir.join("chain.pem").exists() {
        super::cert_issue(
            &ca_dir,
            &format!("operator:{}", options.operator),
            Vec::new(),
            None,
            None,
            &operator_dir,
        )?;
    }
    Ok(file.validate(overrides)?)
}

/// `slapmaster bootstrap`: prepares the seed (see the module's documentation), founds its
/// cluster unless it has one, says on `out` where everything is, and serves until `shutdown`.
pub async fn bootstrap(
    options: &BootstrapOptions,
    file: FileConfig,
    overrides: Overrides,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let config = prepare(options, file, overrides)?;
    let replica = Replica::start(config.replica.clone()).await?;
    match super::found_unless_initialized(&replica).await {
        Ok(true) => {}
        Ok(false) => tracing::info!("the seed's cluster exists; serving it"),
        Err(e) => {
            replica.shutdown().await?;
            return Err(e);
        }
    }
    let dir = &options.dir;
    let said = writeln!(
        out,
        "seed replica {id} serving at {url}\n\
         root CA:   {ca} (sign computers' and replicas' certificates with it; keep root.key \
         offline once the cluster hosts itself)\n\
         operator:  {operator} (slapctl --cluster {url} --tls-dir {operator})\n\
         data:      {data}",
        id = replica.id(),
        url = replica.url(),
        ca = dir.join("ca").display(),
        operator = dir.join("operator").display(),
        data = config.replica.data_dir.display(),
    )
    .and_then(|()| out.flush());
    said.map_err(io("writing to standard output"))?;
    super::serve(replica, &config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_named_by_its_advertised_host_or_its_listen_address() {
        assert_eq!(
            server_name(Some("https://[fd00::1]:7000"), "[::]:7000"),
            Ok("fd00::1".into())
        );
        assert_eq!(
            server_name(Some("https://seed.example:7000/"), "[::]:7000"),
            Ok("seed.example".into())
        );
        assert_eq!(server_name(None, "[fd00::1]:7000"), Ok("fd00::1".into()));
        assert_eq!(server_name(None, "10.0.0.1:7000"), Ok("10.0.0.1".into()));
        let wildcard = server_name(None, "[::]:7000").expect_err("every address");
        assert!(wildcard.contains("give advertise"), "{wildcard}");
        assert!(server_name(Some("https://:7000"), "[::]:7000").is_err());
    }
}
