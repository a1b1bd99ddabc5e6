//! `slapctl replica add`: replicas hosted as instances of the slapmaster software release
//! (`master-cluster/releases/slapmaster.toml`), one per region asked.
//!
//! The command supplies the release to the computers of those regions, requests an instance
//! per region (SLA `region=...`, title `replica-ID`), waits for each to publish its certificate
//! requests, signs them here with the root CA (its key stays on the operator's machine),
//! hands the certificates back as instance parameters and waits until each replica is a voter.
//! Run again after an interruption or a timeout, it goes on with the replicas it had requested
//! instead of requesting more. The choice of replicas ([`plan`]) and their certification
//! ([`certify`], [`certified`]) are plain functions.

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
    /// until each is a voter. Run again after a timeout, it goes on with the replicas that did
    /// not join yet. Also replaces a lost replica: add one in its region, then `slapctl member
    /// remove` the lost one.
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

/// A replica instance already requested (title `replica-ID`), as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub id: u64,
    /// Its SLA region.
    pub region: String,
    pub destroyed: bool,
}

/// A replica this run places and certifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub id: u64,
    pub region: String,
    /// Requested by an earlier run that did not see it join; this run goes on with it.
    pub resumed: bool,
}

/// The replica of each region asked, in order. A region takes the lowest replica instance of
/// that region that is not destroyed and is not a voter yet, with an id above every voter's:
/// one an earlier run requested and did not see join. (A replica below a voter's id that is
/// not a voter was a voter once, removed since, or was left behind by later additions; it is
/// not taken again: destroy its instance.) Any other region gets a new id, above every
/// member's and every replica instance's, so that no id is ever used twice.
pub fn plan(
    regions: &[String],
    members: &[u64],
    voters: &BTreeSet<u64>,
    requested: &[Requested],
) -> Vec<Planned> {
    let newest_voter = voters.last().copied().unwrap_or(0);
    let mut resumable: Vec<&Requested> = requested
        .iter()
        .filter(|r| !r.destroyed && r.id > newest_voter && !voters.contains(&r.id))
        .collect();
    resumable.sort_by_key(|r| r.id);
    let mut highest = members
        .iter()
        .copied()
        .chain(requested.iter().map(|r| r.id))
        .max()
        .unwrap_or(0);
    regions
        .iter()
        .map(|region| {
            let resumed = resumable.iter().position(|r| &r.region == region);
            let id = match resumed {
                Some(at) => resumable.remove(at).id,
                None => {
                    highest += 1;
                    highest
                }
            };
            Planned {
                id,
                region: region.clone(),
                resumed: resumed.is_some(),
            }
        })
        .collect()
}

/// The replica id of an instance title (`replica-7`).
pub fn replica_id(title: &str) -> Option<u64> {
    title.strip_prefix("replica-")?.parse().ok()
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

/// Whether the certificates among `parameters` (`chain`, `signer`) are for the requests the
/// instance publishes now (`csr`, `signer-csr`): then a resumed replica keeps them.
pub fn certified(
    parameters: &BTreeMap<String, String>,
    connection: &BTreeMap<String, String>,
) -> bool {
    let answers = |cert: &str, csr: &str| match (parameters.get(cert), connection.get(csr)) {
        (Some(cert), Some(csr)) => ca::certifies_request(cert, csr).unwrap_or(false),
        _ => false,
    };
    answers("chain", "csr") && answers("signer", "signer-csr")
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
    planned: Planned,
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
    let mut earlier: BTreeMap<u64, pb::Instance> = instances
        .instances
        .into_iter()
        .filter_map(|i| Some((replica_id(&i.title)?, i)))
        .collect();
    let requested: Vec<Requested> = earlier
        .iter()
        .map(|(&id, i)| Requested {
            id,
            region: i.sla.get("region").cloned().unwrap_or_default(),
            destroyed: i.requested_state() == pb::RequestedState::Destroyed,
        })
        .collect();
    let roots = root.cert_pem().to_owned();
    let mut pending: Vec<Pending> = plan(&regions, &members, &voters(&cluster), &requested)
        .into_iter()
        .map(|planned| {
            // A resumed replica keeps its certificates; what the cluster is now is refreshed.
            // (A new id is above every earlier one: it finds nothing here.)
            let mut parameters: BTreeMap<String, String> = earlier
                .remove(&planned.id)
                .map(|i| i.parameters.into_iter().collect())
                .unwrap_or_default();
            parameters.extend([
                ("replica-id".to_owned(), planned.id.to_string()),
                ("cluster".to_owned(), via.clone()),
                ("roots".to_owned(), roots.clone()),
                ("region".to_owned(), planned.region.clone()),
            ]);
            Pending {
                planned,
                parameters,
                certified: false,
            }
        })
        .collect();
    // Asking again with the same parameters changes nothing: the request is idempotent.
    for replica in &pending {
        request(conn, &software, replica).await?;
    }

    // Certify each as soon as it published its requests; then wait for voters.
    loop {
        let mut waiting = Vec::new();
        for replica in pending.iter_mut().filter(|r| !r.certified) {
            let id = replica.planned.id;
            let shown = super::show(conn, instance_ref(id)).await?;
            let instance = shown.instance.unwrap_or_default();
            let connection: BTreeMap<String, String> = instance.connection.into_iter().collect();
            if certified(&replica.parameters, &connection) {
                replica.certified = true;
                continue;
            }
            match certify(&root, id, &connection, SystemTime::now()) {
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
        let voters = voters(&status(conn).await?);
        waiting.extend(
            pending
                .iter()
                .filter(|r| r.certified && !voters.contains(&r.planned.id))
                .map(|r| format!("replica {} is certified, not a voter yet", r.planned.id)),
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
        #[serde(flatten)]
        planned: Planned,
        title: String,
    }
    let rows: Vec<Row> = pending
        .into_iter()
        .map(|r| Row {
            title: title(r.planned.id),
            planned: r.planned,
        })
        .collect();
    Ok(Output::table(&["id", "region", "title", "resumed"], &rows)
        .then("each is a voter; see `slapctl member list`"))
}

fn voters(cluster: &pb::ClusterStatusReply) -> BTreeSet<u64> {
    cluster
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect()
}

fn instance_ref(id: u64) -> super::InstanceRef {
    super::InstanceRef {
        title: Some(title(id)),
        guid: None,
    }
}

async fn request(conn: &Conn, software: &str, replica: &Pending) -> Result<(), CtlError> {
    let mut message = pb::RequestInstanceRequest {
        title: title(replica.planned.id),
        software_release: software.to_owned(),
        parameters: replica.parameters.clone().into_iter().collect(),
        sla: [("region".to_owned(), replica.planned.region.clone())]
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

    fn requested(id: u64, region: &str, destroyed: bool) -> Requested {
        Requested {
            id,
            region: region.into(),
            destroyed,
        }
    }

    fn planned(id: u64, region: &str, resumed: bool) -> Planned {
        Planned {
            id,
            region: region.into(),
            resumed,
        }
    }

    #[test]
    fn new_replicas_take_ids_above_members_and_earlier_requests() {
        let regions = ["eu".to_string(), "us".into()];
        let voters = BTreeSet::from([1, 2, 3]);
        // replica-7 was destroyed: its id is not used again.
        let earlier = [requested(7, "eu", true)];
        assert_eq!(
            plan(&regions, &[1, 2, 3], &voters, &earlier),
            [planned(8, "eu", false), planned(9, "us", false)]
        );
        // A learner's id is taken too.
        let three = ["a".to_string(), "b".into(), "c".into()];
        assert_eq!(
            plan(&three, &[1, 2], &BTreeSet::from([1]), &[]),
            [
                planned(3, "a", false),
                planned(4, "b", false),
                planned(5, "c", false)
            ]
        );
        assert_eq!(replica_id("replica-12"), Some(12));
        assert_eq!(replica_id("replica-x"), None);
        assert_eq!(replica_id("web"), None);
    }

    #[test]
    fn a_run_again_goes_on_with_the_replicas_that_did_not_join() {
        let regions = ["eu".to_string(), "us".into(), "ap".into()];
        // replica-2 joined; 3 (us) and 4 (ap) were requested and never joined (4 a learner).
        let earlier = [
            requested(2, "eu", false),
            requested(3, "us", false),
            requested(4, "ap", false),
        ];
        let voters = BTreeSet::from([1, 2]);
        assert_eq!(
            plan(&regions, &[1, 2, 4], &voters, &earlier),
            [
                planned(5, "eu", false),
                planned(3, "us", true),
                planned(4, "ap", true),
            ]
        );
        // Two regions alike take the region's waiting replica once, then a new one.
        let twice = ["us".to_string(), "us".into()];
        assert_eq!(
            plan(&twice, &[1, 2], &voters, &earlier),
            [planned(3, "us", true), planned(5, "us", false)]
        );
    }

    #[test]
    fn a_removed_replica_is_not_taken_again() {
        // Replica 2 (eu) was lost, replaced by 5 and removed; its instance is still there.
        let earlier = [
            requested(2, "eu", false),
            requested(3, "us", false),
            requested(4, "ap", false),
            requested(5, "eu", false),
        ];
        let voters = BTreeSet::from([3, 4, 5]);
        assert_eq!(
            plan(&["eu".to_string()], &[3, 4, 5], &voters, &earlier),
            [planned(6, "eu", false)]
        );
        // Nor a destroyed one above every voter.
        let earlier = [requested(6, "eu", true)];
        assert_eq!(
            plan(&["eu".to_string()], &[3, 4, 5], &voters, &earlier),
            [planned(7, "eu", false)]
        );
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

        // Handed back, they answer these requests; after new requests, no longer.
        let parameters = BTreeMap::from([
            ("chain".to_string(), chain.clone()),
            ("signer".into(), signer_cert.clone()),
        ]);
        assert!(certified(&parameters, &connection));
        assert!(!certified(&BTreeMap::new(), &connection));
        let mut renewed = connection.clone();
        renewed.insert("csr".into(), ca::new_key_and_request()?.csr_pem);
        assert!(!certified(&parameters, &renewed));

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
