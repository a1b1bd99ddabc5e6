//! `slapctl replica add`: replicas hosted as instances of the slapmaster software release
//! (`master-cluster/releases/slapmaster.toml`), one per region asked.
//!
//! The command supplies the release to the computers of those regions, requests an instance
//! per region (SLA `region=...`, title `replica-ID`), waits for each to publish its certificate
//! requests, signs them here with the root CA (its key stays on the operator's machine),
//! hands the certificates back as instance parameters and waits until each replica is a voter.
//! The certification ([`certify`]) and the choice of ids ([`next_ids`]) are plain functions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use clap::Subcommand;
use serde::Serialize;
use slapcluster_api::v1 as pb;

use super::{Conn, CtlError, Output, placement_text, status};

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Place a replica in each region (repeat --region), certify it with the root CA, and wait
    /// until each is a voter. Also replaces a lost replica: add one in its region, then
    /// `slapctl member remove` the lost one.
    Add {
        /// A region for a new replica (repeat it: one replica per flag).
        #[arg(long = "region", required = true)]
        regions: Vec<String>,
        /// The slapmaster release as its nodes read it (`file:///.../slapmaster.toml`).
        #[arg(long)]
        software: String,
        /// The root CA's directory (`slapmaster bootstrap` made DIR/ca).
        #[arg(long)]
        ca_dir: std::path::PathBuf,
        /// Give up after this many seconds (what is done stays done; run it again to go on).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// The title of replica `id`'s instance.
pub fn title(id: u64) -> String {
    format!("replica-{id}")
}

/// `count` ids for new replicas: above every member and every replica instance already
/// requested (a replica that never joined keeps its id).
pub fn next_ids(members: &[u64], titles: &[String], count: usize) -> Vec<u64> {
    let requested = titles
        .iter()
        .filter_map(|t| t.strip_prefix("replica-")?.parse::<u64>().ok());
    let highest = members.iter().copied().chain(requested).max().unwrap_or(0);
    (1..=count as u64).map(|n| highest + n).collect()
}

/// The host of a replica's published `url` (`https://[fd00::100]:7000`): its certificate's
/// server name.
pub fn url_host(url: &str) -> Option<&str> {
    let authority = url.strip_prefix("https://")?.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => authority.rsplit_once(':')?.0,
    };
    (!host.is_empty()).then_some(host)
}

/// The certificates of replica `id` from what its instance published (`url`, `csr`,
/// `signer-csr`): a leaf for `replica:ID` naming the url's host, and a signing CA.
pub fn certify(
    root: &ca::Authority,
    id: u64,
    connection: &BTreeMap<String, String>,
    now: SystemTime,
) -> Result<(String, String), String> {
    let published = |key: &str| {
        connection
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("replica {id} has not published {key} yet"))
    };
    let url = published("url")?;
    let host = url_host(url).ok_or_else(|| format!("replica {id}'s url {url:?} names no host"))?;
    let lifetimes = ca::Lifetimes::default();
    let grant = ca::Grant {
        identity: ca::Identity::Replica(id),
        lifetime: lifetimes.leaf(ca::Role::Replica),
        server_names: vec![host.to_owned()],
    };
    let chain = root
        .sign_leaf(published("csr")?, &grant, now)
        .map_err(|e| format!("replica {id}'s csr: {e}"))?;
    let signer = root
        .sign_intermediate(published("signer-csr")?, id, now, lifetimes.intermediate)
        .map_err(|e| format!("replica {id}'s signer-csr: {e}"))?;
    Ok((chain, signer))
}

fn load_root(ca_dir: &Path) -> Result<ca::Authority, CtlError> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(CtlError::io(format!("reading {}", path.display())))
    };
    ca::Authority::load(&read("root.pem")?, &read("root.key")?)
        .map_err(|e| CtlError::Config(format!("{}: {e}", ca_dir.display())))
}

/// One replica on its way.
struct Pending {
    id: u64,
    region: String,
    parameters: BTreeMap<String, String>,
    certified: bool,
}

/// How often the command looks again.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(conn: &Conn, command: ReplicaCommand) -> Result<Output, CtlError> {
    let ReplicaCommand::Add {
        regions,
        software,
        ca_dir,
        timeout,
    } = command;
    let root = load_root(&ca_dir)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let cluster = status(conn).await?;
    let members: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    let via = cluster
        .members
        .iter()
        .map(|m| m.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");

    let wanted: BTreeSet<&String> = regions.iter().collect();
    let computers = conn
        .answer(
            conn.admin()
                .list_computers(conn.request(pb::ListComputersRequest::default())?),
        )
        .await?;
    for computer in &computers.computers {
        if computer
            .attributes
            .get("region")
            .is_some_and(|r| wanted.contains(r))
        {
            let mut supply = pb::SupplyRequest {
                computer: computer.id.clone(),
                url: software.clone(),
                ..Default::default()
            };
            supply.set_state(pb::SupplyState::Available);
            conn.answer(conn.user().supply(conn.request(supply)?))
                .await?;
        }
    }

    let instances = conn
        .answer(
            conn.user()
                .list_instances(conn.request(pb::ListInstancesRequest::default())?),
        )
        .await?;
    let titles: Vec<String> = instances.instances.into_iter().map(|i| i.title).collect();
    let roots = root.cert_pem().to_owned();
    let mut pending: Vec<Pending> = next_ids(&members, &titles, regions.len())
        .into_iter()
        .zip(regions)
        .map(|(id, region)| Pending {
            id,
            parameters: BTreeMap::from([
                ("replica-id".to_owned(), id.to_string()),
                ("cluster".to_owned(), via.clone()),
                ("roots".to_owned(), roots.clone()),
                ("region".to_owned(), region.clone()),
            ]),
            region,
            certified: false,
        })
        .collect();
    for replica in &pending {
        request(conn, &software, replica).await?;
    }

    // Certify each as soon as it published its requests; then wait for voters.
    loop {
        let mut waiting = Vec::new();
        for replica in pending.iter_mut().filter(|r| !r.certified) {
            let shown = super::show(conn, instance_ref(replica.id)).await?;
            let instance = shown.instance.unwrap_or_default();
            let connection: BTreeMap<String, String> = instance.connection.into_iter().collect();
            match certify(&root, replica.id, &connection, SystemTime::now()) {
                Ok((chain, signer)) => {
                    replica.parameters.insert("chain".into(), chain);
                    replica.parameters.insert("signer".into(), signer);
                    request(conn, &software, replica).await?;
                    replica.certified = true;
                }
                Err(why) => waiting.push(format!(
                    "{why} ({}{})",
                    placement_text(instance.placement.as_ref()),
                    if instance.last_error.is_empty() {
                        String::new()
                    } else {
                        format!("; its last error: {}", instance.last_error)
                    }
                )),
            }
        }
        let cluster = status(conn).await?;
        let voters: BTreeSet<u64> = cluster
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        waiting.extend(
            pending
                .iter()
                .filter(|r| r.certified && !voters.contains(&r.id))
                .map(|r| format!("replica {} is certified, not a voter yet", r.id)),
        );
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(CtlError::Unavailable(format!(
                "after {timeout}s: {}; run the same command to go on",
                waiting.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }

    #[derive(Serialize)]
    struct Row {
        id: u64,
        region: String,
        title: String,
    }
    let rows: Vec<Row> = pending
        .iter()
        .map(|r| Row {
            id: r.id,
            region: r.region.clone(),
            title: title(r.id),
        })
        .collect();
    Ok(Output::table(&["id", "region", "title"], &rows)
        .then("each is a voter; see `slapctl member list`"))
}

fn instance_ref(id: u64) -> super::InstanceRef {
    super::InstanceRef {
        title: Some(title(id)),
        guid: None,
    }
}

async fn request(conn: &Conn, software: &str, replica: &Pending) -> Result<(), CtlError> {
    let mut message = pb::RequestInstanceRequest {
        title: title(replica.id),
        software_release: software.to_owned(),
        parameters: replica.parameters.clone().into_iter().collect(),
        sla: [("region".to_owned(), replica.region.clone())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    message.set_state(pb::RequestedState::Started);
    conn.answer(conn.user().request_instance(conn.request(message)?))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replicas_take_ids_above_members_and_earlier_requests() {
        let titles = vec!["replica-7".to_string(), "web".into(), "replica-x".into()];
        assert_eq!(next_ids(&[1, 2, 3], &titles, 2), [8, 9]);
        assert_eq!(next_ids(&[1], &[], 3), [2, 3, 4]);
    }

    #[test]
    fn a_replica_is_certified_from_what_its_instance_published() -> anyhow::Result<()> {
        let now = SystemTime::now();
        let root = ca::Authority::create_root("test", now, Duration::from_secs(86_400))?;
        let replica = ca::new_key_and_request()?;
        let signer = ca::new_key_and_request()?;
        let mut connection = BTreeMap::from([
            ("url".to_string(), "https://[fd00:1::100]:7000".to_string()),
            ("csr".into(), replica.csr_pem.clone()),
        ]);
        let missing = certify(&root, 4, &connection, now).expect_err("no signer-csr");
        assert!(missing.contains("signer-csr"), "{missing}");
        connection.insert("signer-csr".into(), signer.csr_pem.clone());
        let (chain, signer_cert) =
            certify(&root, 4, &connection, now).map_err(anyhow::Error::msg)?;
        assert!(ca::certifies_key(&chain, &replica.key_pem)?);
        assert!(ca::certifies_key(&signer_cert, &signer.key_pem)?);
        let info = ca::CertificateInfo::from_pem(&chain)?;
        assert_eq!(info.identity, Some(ca::Identity::Replica(4)));
        // It verifies as a replica at its address.
        let trust = ca::TrustStore::new(&[root.cert_pem()])?;
        let ders = ca::ders_from_pem(&chain)?;
        trust
            .verify_chain(&ders, ca::Usage::Server, now)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert!(ca::CertificateInfo::from_pem(&signer_cert)?.is_ca);

        connection.insert("url".into(), "http://[fd00:1::100]:7000".into());
        assert!(certify(&root, 4, &connection, now).is_err(), "https only");
        Ok(())
    }

    #[test]
    fn the_host_of_a_replica_url() {
        assert_eq!(url_host("https://[fd00::1]:7000"), Some("fd00::1"));
        assert_eq!(url_host("https://node.example:7000/"), Some("node.example"));
        assert_eq!(url_host("https://[]:7000"), None);
        assert_eq!(url_host("fd00::1"), None);
    }
}
