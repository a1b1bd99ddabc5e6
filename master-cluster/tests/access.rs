//! Who may do what, end to end: every gRPC method, every SLAP call and every web panel route,
//! each sent over TLS by every kind of caller, against a replica holding two projects. Each
//! cell of the tables below is the answer the caller must get: allowed (the call reached its
//! handler: any answer but a refusal; for the panel, a page or a form done), refused by the
//! policy (`PermissionDenied` / 403 naming the caller), or not authenticated (a revoked
//! certificate: `Unauthenticated` / 401). Every cell is asserted; the test prints the count
//! of cells and fails on the first leak.
//!
//! The callers, in column order:
//! `O` an operator; `M` a manager of project A; `C` a customer of A (the owner of its
//! instances); `X` an outsider (only in the default project); `B` a customer of project B;
//! `a` computer COMP-A (project A); `x` another computer; `p` the partition of A's instance;
//! `d` the partition of a destroyed instance (its instance certificate, revoked when the
//! partition was freed); `q` the partition of B's instance; `r` a user whose certificate an
//! operator revoked.
//!
//! Over 800 lines on purpose: the table and every cell's check read together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod common;

use ca::{CertificateInfo, Identity};
use common::TestCa;
use master_cluster::replica::{ReplicaConfig, SlapConfig};
use master_cluster::server::Replica;
use master_cluster::state::ReplicaNode;
use master_cluster::tls::{TlsMaterial, client_config};
use slapcluster_api::client::connect_with;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::raft_client::RaftClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::slap::{Connection, form};
use tonic::transport::Channel;
use tonic::{Code, Status};

const SR: &str = "https://lab.example/software/demo/software.cfg";
const CALLERS: &str = "OMCXBaxpdqr";

/// Expected answers, one character per caller in [`CALLERS`] order: `Y` allowed, `n` refused
/// by the policy, `u` not authenticated.
const GRPC: &[(&str, &str)] = &[
    ("Admin/ClusterStatus", "Ynnnnnnnunu"),
    ("Admin/ReplicaStatus", "YYYYYYYYuYu"),
    ("Admin/AddMember", "Ynnnnnnnunu"),
    ("Admin/PromoteMember", "Ynnnnnnnunu"),
    ("Admin/RemoveMember", "Ynnnnnnnunu"),
    ("Admin/TransferLeader", "Ynnnnnnnunu"),
    ("Admin/Snapshot", "Ynnnnnnnunu"),
    ("Admin/RevokeCertificate", "Ynnnnnnnunu"),
    ("Admin/CreateEnrollmentToken", "Ynnnnnnnunu"),
    // For carl (C): operators make them for anyone, a user for themselves.
    ("Admin/CreateCredentialToken", "YnYnnnnnunu"),
    ("Admin/ListComputers", "YYYYYnnnunu"),
    ("Admin/ShowComputer", "YYnnnYnnunu"),
    ("Admin/SetAllocationScope", "YYnnnnnnunu"),
    ("Admin/ListCertificates", "Ynnnnnnnunu"),
    ("Admin/IssueCertificate", "Ynnnnnnnunu"),
    ("Admin/CreateProject", "Ynnnnnnnunu"),
    ("Admin/ListProjects", "YYYYYnnnunu"),
    ("Admin/ShowProject", "YYYnnnnnunu"),
    ("Admin/SetProjectMember", "YYnnnnnnunu"),
    ("Admin/MoveComputer", "Ynnnnnnnunu"),
    ("Admin/SetQuota", "Ynnnnnnnunu"),
    // A person's own quota.
    ("Admin/ShowQuota", "YYYYYnnnunu"),
    ("Node/RegisterComputer", "YnnnnYnnunu"),
    ("Node/PollComputer", "YnnnnYnnunu"),
    ("Node/ReportSoftware", "nnnnnYnnunu"),
    ("Node/ReportInstance", "YnnnnYnYunu"),
    ("Node/PublishConnection", "YnnnnYnYunu"),
    ("Node/PostUsage", "nnnnnYnnunu"),
    ("Node/Enroll", "YYYYYYYYYYY"),
    // A computer renews its own certificate (here: not due yet, which its handler says).
    ("Node/RenewCertificate", "nnnnnYYnunu"),
    ("Raft/AppendEntries", "nnnnnnnnunu"),
    ("Raft/StreamAppend", "nnnnnnnnunu"),
    ("Raft/Vote", "nnnnnnnnunu"),
    ("Raft/PreVote", "nnnnnnnnunu"),
    ("Raft/InstallSnapshot", "nnnnnnnnunu"),
    ("Raft/Forward", "nnnnnnnnunu"),
    ("Raft/ReadIndex", "nnnnnnnnunu"),
    ("Raft/TransferLeader", "nnnnnnnnunu"),
    ("Raft/Ping", "nnnnnnnnunu"),
    ("User/ListSoftwareReleases", "YYYYYYYYuYu"),
    ("User/PublishSoftwareRelease", "Ynnnnnnnunu"),
    ("User/Supply", "YYnnnnnnunu"),
    ("User/RequestInstance", "YYYnnnnYuYu"),
    ("User/ShowInstance", "YYYnnYnYunu"),
    ("User/ListInstances", "YYYYYnnnunu"),
    ("User/DestroyInstance", "YYYnnnnnunu"),
    ("User/Usage", "YnnnnYnnunu"),
    // People list the alerts they may read (filtered alert by alert).
    ("User/ListAlerts", "YYYYYnnnunu"),
];

/// The web panel's routes, as [`GRPC`] (`WEB` and `VICTIM`: the world's instances). Forms
/// come from the panel's own origin; `state` asks for the state the tree is in (nothing
/// changes), `request` a tree in PROJ-A on COMP-X (which is not A's: it waits).
const PANEL: &[(&str, &str)] = &[
    ("GET /panel/", "YYYYYnnnunu"),
    ("GET /panel/instances/WEB", "YYYnnYnYunu"),
    // Only the owner of a tree requests it again.
    ("POST /panel/instances/WEB/state", "nnYnnnnnunu"),
    ("POST /panel/instances/VICTIM/destroy", "YYYnnnnnunu"),
    ("GET /panel/request", "YYYYYYYYuYu"),
    ("POST /panel/request", "YYYnnnnYuYu"),
    ("GET /panel/alerts", "YYYYYnnnunu"),
    ("GET /panel/computers", "YYYYYnnnunu"),
    ("GET /panel/computers/COMP-A", "YYnnnYnnunu"),
    ("GET /panel/pending", "Ynnnnnnnunu"),
    ("GET /panel/members", "YYYYYnnnunu"),
    ("GET /panel/cluster", "Ynnnnnnnunu"),
];

/// The SLAP calls, as [`GRPC`]. Calls name COMP-A and its partition `slappart0` (A's
/// instance) where they name a computer or a partition.
const SLAP: &[(&str, &str)] = &[
    ("getFullComputerInformation", "YnnnnYnnunu"),
    ("getComputerInformation", "YnnnnYnnunu"),
    ("registerComputerPartition", "YnnnnYnYunu"),
    ("getComputerPartitionCertificate", "YnnnnYnYunu"),
    ("buildingSoftwareRelease", "nnnnnYnnunu"),
    ("availableSoftwareRelease", "nnnnnYnnunu"),
    ("destroyedSoftwareRelease", "nnnnnYnnunu"),
    ("softwareReleaseError", "nnnnnYnnunu"),
    ("startedComputerPartition", "nnnnnYnYunu"),
    ("stoppedComputerPartition", "nnnnnYnYunu"),
    ("softwareInstanceError", "nnnnnYnYunu"),
    ("updateComputerPartitionRelatedInstanceList", "nnnnnYnYunu"),
    ("useComputer", "nnnnnYnnunu"),
    ("loadComputerConfigurationFromXML", "YnnnnYnnunu"),
    ("computerBang", "YnnnnYnnunu"),
    ("getHateoasUrl", "YYYYYYYYuYu"),
    // The root document (a search or a document decides again on each row).
    ("hateoas", "YYYYYnnnunu"),
    // As an instance: the form names the requesting partition (COMP-A/slappart0).
    ("requestComputerPartition", "nnnnnnnYunu"),
    // As a person: a new tree in project A (the SLA's project_guid), or a partition's child.
    ("requestComputerPartition+root", "YYYnnnnYuYu"),
    ("setComputerPartitionConnectionXml", "nnnnnYnYunu"),
    ("getHostingSubscriptionIpList", "nnnnnYnYunu"),
    ("softwareInstanceBang", "nnnnnYnYunu"),
    ("softwareInstanceRename", "nnnnnYnYunu"),
    ("supplySupply", "YYnnnnnnunu"),
    ("getSoftwareReleaseListFromSoftwareProduct", "YYYYYYYYuYu"),
    ("requestComputer", "YnnnnYnnunu"),
    ("getComputerStatus", "YnnnnYnnunu"),
    ("getComputerPartitionStatus", "YYYnnYnYunu"),
    // The token is the credential, not the certificate: no token here, 400 for everyone.
    ("Person_requestComputer", "YYYYYYYYYYY"),
    ("Person_getCertificate", "YYYYYYYYYYY"),
    ("generateComputerCertificate", "Ynnnnnnnunu"),
    // Last: it revokes COMP-A's recorded certificates (the test's are not recorded).
    ("revokeComputerCertificate", "Ynnnnnnnunu"),
    // A report that the instance is gone frees the partition: after every other call.
    ("destroyedComputerPartition", "nnnnnYnYunu"),
];

/// The issue's six attacks, each a cell of the tables: (what, call, caller).
const ATTACKS: &[(&str, &str, char)] = &[
    (
        "1: a partition destroys another's instance",
        "User/DestroyInstance",
        'q',
    ),
    (
        "1: a partition destroys its own tree's root",
        "User/DestroyInstance",
        'p',
    ),
    (
        "2: an old certificate reads the next occupant",
        "registerComputerPartition",
        'd',
    ),
    (
        "2: an old certificate publishes for it",
        "setComputerPartitionConnectionXml",
        'd',
    ),
    (
        "2: an old certificate renames it",
        "softwareInstanceRename",
        'd',
    ),
    (
        "2: an old certificate requests a child",
        "requestComputerPartition+root",
        'd',
    ),
    (
        "3: a user registers a computer",
        "Node/RegisterComputer",
        'X',
    ),
    (
        "3: a user registers a computer over SLAP",
        "loadComputerConfigurationFromXML",
        'C',
    ),
    ("4: a user bangs a computer", "computerBang", 'X'),
    (
        "4: a user reports a software error",
        "softwareReleaseError",
        'X',
    ),
    ("4: a user forges usage", "useComputer", 'X'),
    ("5: a customer supplies software", "supplySupply", 'C'),
    ("5: an outsider supplies software", "User/Supply", 'X'),
    ("5: another project's customer supplies", "User/Supply", 'B'),
    (
        "6: a user rewrites the catalog",
        "User/PublishSoftwareRelease",
        'X',
    ),
    (
        "1: another project's customer destroys a tree in the panel",
        "POST /panel/instances/VICTIM/destroy",
        'B',
    ),
    (
        "3: a computer reads the cluster's page in the panel",
        "GET /panel/cluster",
        'a',
    ),
];

/// A caller: its gRPC channel, its SLAP and panel connections, all with its certificate.
struct Caller {
    name: char,
    grpc: Channel,
    slap: Connection,
    panel: Connection,
}

async fn caller(
    name: char,
    url: &str,
    (slap, panel): (SocketAddr, SocketAddr),
    material: &TlsMaterial,
) -> Caller {
    Caller {
        name,
        grpc: connect_with(url, Some(client_config(material)))
            .await
            .expect("connects"),
        slap: Connection::new(slap, Some(rustls_config(material))),
        panel: Connection::new(panel, Some(rustls_config(material))),
    }
}

/// Sends the panel route `route` (`METHOD path`) as `caller`: its status and (the start of)
/// its body.
async fn panel(
    route: &str,
    connection: &mut Connection,
    addr: SocketAddr,
    world: &World,
) -> (u16, String) {
    let (method, path) = route.split_once(' ').expect("METHOD path");
    let path = path
        .replace("WEB", &world.a_web)
        .replace("VICTIM", &world.victim);
    let body = match path.rsplit('/').next() {
        _ if method == "GET" => None,
        Some("state") => Some(form(&[("state", "started")])),
        Some("destroy") => Some(form(&[("confirm", "yes")])),
        _ => Some(form(&[
            ("title", "panel-probe"),
            ("software_release", SR),
            ("sla", "project_guid = PROJ-A\ncomputer_guid = COMP-X"),
        ])),
    };
    let origin = format!("https://{addr}");
    let answer = connection
        .call_with(&path, body.as_deref(), &[("Origin", &origin)])
        .await
        .expect("the panel answers");
    let body = String::from_utf8_lossy(&answer.body);
    // The message, past the page's head and header.
    let message = body
        .split("id=\"problem\">")
        .nth(1)
        .unwrap_or(&body)
        .chars()
        .take(300)
        .collect();
    (answer.status, message)
}

fn rustls_config(material: &TlsMaterial) -> Arc<rustls::ClientConfig> {
    test_kit::slap::client_tls_pem(
        material.roots_pem.concat().as_bytes(),
        material.chain_pem.as_bytes(),
        material.key_pem.as_bytes(),
    )
    .expect("the client's TLS setup")
}

fn partition(computer: &str, partition: &str) -> Option<pb::PartitionId> {
    Some(pb::PartitionId {
        computer: computer.into(),
        partition: partition.into(),
    })
}

fn definition(computer: &str, partitions: usize) -> pb::RegisterComputerRequest {
    pb::RegisterComputerRequest {
        computer: computer.into(),
        partitions: (0..partitions)
            .map(|p| pb::PartitionDefinition {
                reference: format!("slappart{p}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn request(title: &str, project: &str) -> pb::RequestInstanceRequest {
    pb::RequestInstanceRequest {
        title: title.into(),
        software_release: SR.into(),
        software_type: "default".into(),
        project: project.into(),
        ..Default::default()
    }
}

/// What the replica holds while the tables run.
struct World {
    /// Carl's instance on COMP-A/slappart0 (A's instance).
    a_web: String,
    /// Carl's other instance, on COMP-A/slappart2: destroyed by the callers who may.
    victim: String,
}

/// Sends the gRPC call `method` as `caller`; `Ok` when its handler answered (whatever it said
/// about the request itself), the status otherwise.
async fn grpc(method: &str, channel: Channel, world: &World) -> Result<(), Status> {
    let mut admin = AdminClient::new(channel.clone());
    let mut node = NodeClient::new(channel.clone());
    let mut user = UserClient::new(channel.clone());
    let mut raft = RaftClient::new(channel);
    let payload = || pb::RaftPayload { payload: vec![1] };
    let answer: Result<(), Status> = match method {
        "Admin/ClusterStatus" => admin
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map(drop),
        "Admin/ReplicaStatus" => admin
            .replica_status(pb::ReplicaStatusRequest::default())
            .await
            .map(drop),
        "Admin/AddMember" => admin
            .add_member(pb::AddMemberRequest {
                id: 9,
                addr: "not an address".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Admin/PromoteMember" => admin
            .promote_member(pb::PromoteMemberRequest { id: 9 })
            .await
            .map(drop),
        "Admin/RemoveMember" => admin
            .remove_member(pb::RemoveMemberRequest { id: 9 })
            .await
            .map(drop),
        "Admin/TransferLeader" => admin
            .transfer_leader(pb::TransferLeaderRequest { id: 9, wait_ms: 1 })
            .await
            .map(drop),
        "Admin/Snapshot" => admin.snapshot(pb::SnapshotRequest {}).await.map(drop),
        "Admin/RevokeCertificate" => admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                serial: "0badc0de".into(),
                reason: "probe".into(),
            })
            .await
            .map(drop),
        "Admin/CreateEnrollmentToken" => admin
            .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                computer: "COMP-NEW".into(),
                valid_seconds: 60,
            })
            .await
            .map(drop),
        "Admin/CreateCredentialToken" => admin
            .create_credential_token(pb::CreateCredentialTokenRequest {
                user: "carl".into(),
                valid_seconds: 60,
            })
            .await
            .map(drop),
        "Admin/ListComputers" => admin
            .list_computers(pb::ListComputersRequest::default())
            .await
            .map(drop),
        "Admin/ShowComputer" => admin
            .show_computer(pb::ShowComputerRequest {
                computer: "COMP-A".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Admin/SetAllocationScope" => admin
            .set_allocation_scope(pb::SetAllocationScopeRequest {
                computer: "COMP-A".into(),
                scope: "open/project".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Admin/ListCertificates" => admin
            .list_certificates(pb::ListCertificatesRequest {})
            .await
            .map(drop),
        "Admin/IssueCertificate" => admin
            .issue_certificate(pb::IssueCertificateRequest {
                identity: "user:probe".into(),
                csr_pem: "not a request".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Admin/CreateProject" => admin
            .create_project(pb::CreateProjectRequest {
                project: "PROJ-A".into(),
                title: "A".into(),
            })
            .await
            .map(drop),
        "Admin/ListProjects" => admin
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .map(drop),
        "Admin/ShowProject" => admin
            .show_project(pb::ShowProjectRequest {
                project: "PROJ-A".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Admin/SetProjectMember" => admin
            .set_project_member(pb::SetProjectMemberRequest {
                project: "PROJ-A".into(),
                user: "carl".into(),
                role: "customer".into(),
            })
            .await
            .map(drop),
        "Admin/MoveComputer" => admin
            .move_computer(pb::MoveComputerRequest {
                computer: "COMP-A".into(),
                project: "PROJ-A".into(),
            })
            .await
            .map(drop),
        "Admin/SetQuota" => admin
            .set_quota(pb::SetQuotaRequest {
                user: "quota-probe".into(),
                quota: Some(pb::Quota {
                    instances: 10,
                    pending: 10,
                    parameter_bytes: 10_000,
                }),
            })
            .await
            .map(drop),
        "Admin/ShowQuota" => admin
            .show_quota(pb::ShowQuotaRequest::default())
            .await
            .map(drop),
        "Node/RegisterComputer" => node
            .register_computer(definition("COMP-A", 3))
            .await
            .map(drop),
        "Node/PollComputer" => node
            .poll_computer(pb::PollComputerRequest {
                computer: "COMP-A".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Node/ReportSoftware" => {
            let mut report = pb::ReportSoftwareRequest {
                computer: "COMP-A".into(),
                url: SR.into(),
                ..Default::default()
            };
            report.set_state(pb::SoftwareState::Available);
            node.report_software(report).await.map(drop)
        }
        "Node/ReportInstance" => {
            let mut report = pb::ReportInstanceRequest {
                partition: partition("COMP-A", "slappart0"),
                ..Default::default()
            };
            report.set_state(pb::ReportedState::Started);
            node.report_instance(report).await.map(drop)
        }
        "Node/PublishConnection" => node
            .publish_connection(pb::PublishConnectionRequest {
                partition: partition("COMP-A", "slappart0"),
                parameters: [("url".to_string(), "https://a".to_string())].into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Node/PostUsage" => node
            .post_usage(pb::PostUsageRequest {
                computer: "COMP-A".into(),
                records: Vec::new(),
            })
            .await
            .map(drop),
        "Node/Enroll" => node
            .enroll(pb::EnrollRequest {
                token: "00".repeat(32),
                csr_pem: "not a request".into(),
            })
            .await
            .map(drop),
        "Node/RenewCertificate" => node
            .renew_certificate(pb::RenewCertificateRequest {
                csr_pem: "not a request".into(),
            })
            .await
            .map(drop),
        "Raft/AppendEntries" => raft.append_entries(payload()).await.map(drop),
        "Raft/StreamAppend" => raft
            .stream_append(tokio_stream::iter([payload()]))
            .await
            .map(drop),
        "Raft/Vote" => raft.vote(payload()).await.map(drop),
        "Raft/PreVote" => raft.pre_vote(payload()).await.map(drop),
        "Raft/InstallSnapshot" => raft.install_snapshot(payload()).await.map(drop),
        "Raft/Forward" => raft.forward(payload()).await.map(drop),
        "Raft/ReadIndex" => raft.read_index(payload()).await.map(drop),
        "Raft/TransferLeader" => raft.transfer_leader(payload()).await.map(drop),
        "Raft/Ping" => raft.ping(payload()).await.map(drop),
        "User/ListSoftwareReleases" => user
            .list_software_releases(pb::ListSoftwareReleasesRequest::default())
            .await
            .map(drop),
        "User/PublishSoftwareRelease" => user
            .publish_software_release(pb::PublishSoftwareReleaseRequest {
                url: SR.into(),
                title: "Pwned".into(),
                software_types: vec!["default".into()],
            })
            .await
            .map(drop),
        "User/Supply" => {
            let mut supply = pb::SupplyRequest {
                computer: "COMP-A".into(),
                url: SR.into(),
                ..Default::default()
            };
            supply.set_state(pb::SupplyState::Available);
            user.supply(supply).await.map(drop)
        }
        "User/RequestInstance" => {
            // Waits for COMP-X, which does not supply the release: takes no partition.
            let mut probe = request("probe", "PROJ-A");
            probe.sla = [("computer_guid".to_string(), "COMP-X".to_string())].into();
            user.request_instance(probe).await.map(drop)
        }
        "User/ShowInstance" => user
            .show_instance(pb::ShowInstanceRequest {
                instance: Some(pb::show_instance_request::Instance::Guid(
                    world.a_web.clone(),
                )),
                ..Default::default()
            })
            .await
            .map(drop),
        "User/ListInstances" => user
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .map(drop),
        "User/DestroyInstance" => user
            .destroy_instance(pb::DestroyInstanceRequest {
                guid: world.victim.clone(),
            })
            .await
            .map(drop),
        "User/Usage" => user
            .usage(pb::UsageRequest {
                computer: "COMP-A".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "User/ListAlerts" => user
            .list_alerts(pb::ListAlertsRequest::default())
            .await
            .map(drop),
        other => panic!("no request for {other}"),
    };
    match answer {
        Err(status)
            if matches!(
                status.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ) =>
        {
            Err(status)
        }
        _ => Ok(()),
    }
}

/// The form of SLAP call `call`, naming COMP-A and its slappart0.
fn slap_form(call: &str) -> String {
    let instance = [
        ("computer_id", "COMP-A"),
        ("computer_partition_id", "slappart0"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = instance.to_vec();
        pairs.extend_from_slice(extra);
        form(&pairs)
    };
    match call {
        "getFullComputerInformation"
        | "getComputerInformation"
        | "computerBang"
        | "generateComputerCertificate"
        | "revokeComputerCertificate"
        | "getComputerStatus" => form(&[("computer_id", "COMP-A"), ("message", "probe")]),
        "registerComputerPartition" => form(&[
            ("computer_reference", "COMP-A"),
            ("computer_partition_reference", "slappart0"),
        ]),
        "buildingSoftwareRelease"
        | "availableSoftwareRelease"
        | "destroyedSoftwareRelease"
        | "softwareReleaseError" => form(&[
            ("url", SR),
            ("computer_id", "COMP-A"),
            ("error_log", "forged"),
        ]),
        "softwareInstanceError" => with(&[("error_log", "forged")]),
        "updateComputerPartitionRelatedInstanceList" => with(&[("instance_reference_xml", "")]),
        "useComputer" => form(&[("computer_id", "COMP-A"), ("use_string", "<journal/>")]),
        "loadComputerConfigurationFromXML" => form(&[
            ("computer_id", "COMP-A"),
            ("xml", &test_kit::slap::computer_definition("COMP-A", 3)),
        ]),
        "requestComputerPartition+root" => form(&[
            ("software_release", SR),
            ("software_type", "default"),
            ("partition_reference", "slap-root-probe"),
            ("shared_xml", "<marshal><bool>0</bool></marshal>"),
            (
                "filter_xml",
                "<marshal><dictionary id='i2'><string>project_guid</string><string>PROJ-A\
                 </string><string>computer_guid</string><string>COMP-X</string></dictionary>\
                 </marshal>",
            ),
            ("state", "<marshal><string>started</string></marshal>"),
        ]),
        "requestComputerPartition" => with(&[
            ("software_release", SR),
            ("software_type", "default"),
            ("partition_reference", "slap-probe"),
            ("shared_xml", "<marshal><bool>0</bool></marshal>"),
            (
                "filter_xml",
                "<marshal><dictionary id='i2'><string>project_guid</string><string>PROJ-A\
                 </string><string>computer_guid</string><string>COMP-X</string></dictionary>\
                 </marshal>",
            ),
            ("state", "<marshal><string>started</string></marshal>"),
        ]),
        "setComputerPartitionConnectionXml" => with(&[(
            "connection_xml",
            "<marshal><dictionary id='i2'><string>url</string><string>https://a</string>\
             </dictionary></marshal>",
        )]),
        "softwareInstanceBang" => with(&[("message", "probe")]),
        "softwareInstanceRename" => with(&[("new_name", "a-web")]),
        "supplySupply" => form(&[
            ("url", SR),
            ("computer_id", "COMP-A"),
            ("state", "available"),
        ]),
        "getSoftwareReleaseListFromSoftwareProduct" => {
            form(&[("software_product_reference", "demo")])
        }
        "requestComputer" => form(&[("computer_title", "COMP-A")]),
        "hateoas" => form(&[]),
        _ => with(&[]),
    }
}

/// Sends SLAP call `call` as `caller`: its status and (the start of) its body.
async fn slap(call: &str, connection: &mut Connection) -> (u16, String) {
    let name = call.split('+').next().unwrap_or(call);
    let answer = connection
        .call(&format!("/{name}"), Some(&slap_form(call)))
        .await
        .expect("the SLAP listener answers");
    let body = String::from_utf8_lossy(&answer.body);
    (answer.status, body.chars().take(200).collect())
}

/// Announces a 4 MB `useComputer` body over TLS without a client certificate, sends none of
/// it, and returns the start of the answer.
async fn without_certificate(slap: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    #[derive(Debug)]
    struct AnyServer;
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    // As the SlapOS client does, the server is not verified; the point is the client side.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(slap)
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::IpAddress(slap.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake without a client certificate");
    tls.write_all(
        b"POST /useComputer HTTP/1.1\r\nHost: [::1]\r\nContent-Type: \
          application/x-www-form-urlencoded\r\nContent-Length: 4000000\r\n\r\n",
    )
    .await
    .expect("headers sent");
    let mut answer = vec![0; 256];
    let read = tls.read(&mut answer).await.expect("an answer");
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// The cell of an HTTP answer (SLAP, panel): `u` for 401, `n` for 403 (whose message must
/// name the caller, else a failure is added), `Y` for a status `allowed` accepts, `?` else.
fn http_cell(
    status: u16,
    body: &str,
    caller: char,
    allowed: impl Fn(u16) -> bool,
    what: &str,
    failures: &mut Vec<String>,
) -> char {
    match status {
        401 => 'u',
        403 => {
            let named = shown(caller);
            if !body.contains(named) {
                failures.push(format!(
                    "{what}: the refusal does not name {named:?}: {body}"
                ));
            }
            'n'
        }
        status if allowed(status) => 'Y',
        _ => '?',
    }
}

/// Records the answer `got` to `call` by `caller`, and a failure naming `what` unless it is
/// the `expected` one.
fn record(
    answers: &mut BTreeMap<(String, char), char>,
    failures: &mut Vec<String>,
    (call, caller): (&str, char),
    (got, expected): (char, char),
    what: &str,
) {
    answers.insert((call.to_string(), caller), got);
    if got != expected {
        failures.push(format!("{what}: expected {expected}, got {got}"));
    }
}

/// The caller as the refusal names it.
fn shown(caller: char) -> &'static str {
    match caller {
        'O' => "operator ops",
        'M' => "user mona",
        'C' => "user carl",
        'X' => "user olga",
        'B' => "user bea",
        'a' => "computer COMP-A",
        'x' => "computer COMP-X",
        'p' => "partition COMP-A/slappart0",
        'q' => "partition COMP-B/slappart0",
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_by_every_caller_is_allowed_or_refused_as_the_policy_says() {
    test_kit::init_tracing("access=info,master_cluster=warn,openraft=warn");
    // Every method of the wire contract and every SLAP call the listener answers (the policy
    // test counts them from the .proto files and the SLAP dispatcher).
    assert_eq!(GRPC.len(), 48);
    let slap_calls: std::collections::BTreeSet<&str> = SLAP
        .iter()
        .map(|(call, _)| call.split('+').next().unwrap_or(call))
        .collect();
    assert_eq!(slap_calls.len(), 32);
    assert_eq!(
        PANEL.len(),
        master_cluster::panel::route::Route::NAMES.len()
    );
    for (table, rows) in [("gRPC", GRPC), ("SLAP", SLAP), ("panel", PANEL)] {
        for (call, row) in rows {
            assert_eq!(
                row.len(),
                CALLERS.len(),
                "{table} {call}: one cell per caller"
            );
        }
    }
    let ca = TestCa::new("access");
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ReplicaConfig::new(1, "[::1]:0".parse().expect("addr"), dir.path().into());
    config.tls = Some(ca.material(Identity::Replica(1), SystemTime::now()));
    config.signer_pem = Some(ca.signer_pem());
    config.slap = Some(SlapConfig {
        listen: "[::1]:0".parse().expect("addr"),
        plaintext_user: None,
    });
    config.panel = Some("[::1]:0".parse().expect("addr"));
    let replica = Replica::start(config).await.expect("starts");
    let voters: BTreeMap<u64, ReplicaNode> = [(replica.id(), replica.node())].into();
    replica.initialize(voters).await.expect("initialise");
    replica
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("elected");
    let url = replica.url().to_string();
    let slap_addr = replica.slap_addr().expect("a SLAP listener");
    let panel_addr = replica.panel_addr().expect("a panel listener");
    let identity = |role: &str, name: &str| match role {
        "operator" => Identity::Operator(name.into()),
        "user" => Identity::User(name.into()),
        "computer" => Identity::Computer(name.into()),
        _ => unreachable!(),
    };
    let operator = ca.material(identity("operator", "ops"), SystemTime::now());
    let channel = |m: &TlsMaterial| {
        let url = url.clone();
        let tls = client_config(m);
        async move { connect_with(&url, Some(tls)).await.expect("connects") }
    };
    let mut admin = AdminClient::new(channel(&operator).await);
    let mut as_operator = UserClient::new(channel(&operator).await);

    tracing::info!("--- two projects, their people and computers");
    for (project, title) in [("PROJ-A", "A"), ("PROJ-B", "B")] {
        admin
            .create_project(pb::CreateProjectRequest {
                project: project.into(),
                title: title.into(),
            })
            .await
            .expect("project");
    }
    for (project, user, role) in [
        ("PROJ-A", "mona", "manager"),
        ("PROJ-A", "carl", "customer"),
        ("PROJ-B", "bea", "customer"),
    ] {
        admin
            .set_project_member(pb::SetProjectMemberRequest {
                project: project.into(),
                user: user.into(),
                role: role.into(),
            })
            .await
            .expect("member");
    }
    let materials: BTreeMap<char, TlsMaterial> = [
        ('M', identity("user", "mona")),
        ('C', identity("user", "carl")),
        ('X', identity("user", "olga")),
        ('B', identity("user", "bea")),
        ('a', identity("computer", "COMP-A")),
        ('x', identity("computer", "COMP-X")),
        ('b', identity("computer", "COMP-B")),
        ('r', identity("user", "rita")),
    ]
    .into_iter()
    .map(|(name, identity)| (name, ca.material(identity, SystemTime::now())))
    .chain([('O', operator.clone())])
    .collect();
    for (name, computer, partitions) in [('a', "COMP-A", 3), ('x', "COMP-X", 1), ('b', "COMP-B", 1)]
    {
        NodeClient::new(channel(&materials[&name]).await)
            .register_computer(definition(computer, partitions))
            .await
            .expect("registered");
    }
    for (computer, project) in [("COMP-A", "PROJ-A"), ("COMP-B", "PROJ-B")] {
        admin
            .move_computer(pb::MoveComputerRequest {
                computer: computer.into(),
                project: project.into(),
            })
            .await
            .expect("moved");
    }
    as_operator
        .publish_software_release(pb::PublishSoftwareReleaseRequest {
            url: SR.into(),
            title: "demo".into(),
            software_types: vec!["default".into()],
        })
        .await
        .expect("published");
    for (who, computer) in [('M', "COMP-A"), ('O', "COMP-B")] {
        let mut supply = pb::SupplyRequest {
            computer: computer.into(),
            url: SR.into(),
            ..Default::default()
        };
        supply.set_state(pb::SupplyState::Available);
        UserClient::new(channel(&materials[&who]).await)
            .supply(supply)
            .await
            .expect("supplied");
    }

    tracing::info!("--- instances: A's, a destroyed one, a victim, B's");
    let mut carl = UserClient::new(channel(&materials[&'C']).await);
    let mut placed = BTreeMap::new();
    for title in ["a-web", "a-gone", "a-victim"] {
        let reply = carl
            .request_instance(request(title, ""))
            .await
            .expect("requested")
            .into_inner();
        placed.insert(title, reply);
    }
    let on = |title: &str| match placed[title]
        .placement
        .as_ref()
        .and_then(|p| p.placement.as_ref())
    {
        Some(pb::placement::Placement::Partition(p)) => p.partition.clone(),
        other => panic!("{title} is not placed: {other:?}"),
    };
    assert_eq!(
        (on("a-web"), on("a-gone"), on("a-victim")),
        ("slappart0".into(), "slappart1".into(), "slappart2".into()),
        "carl's trees are in PROJ-A, on its computer"
    );
    let bea = UserClient::new(channel(&materials[&'B']).await)
        .request_instance(request("b-web", ""))
        .await
        .expect("requested")
        .into_inner();
    assert!(
        matches!(
            bea.placement.and_then(|p| p.placement),
            Some(pb::placement::Placement::Partition(p)) if p.computer == "COMP-B"
        ),
        "bea's tree is in PROJ-B, on its computer"
    );

    // The destroyed instance's partition: its node fetched its certificate, then the
    // instance was destroyed and the node reported it gone.
    let mut comp_a_slap = Connection::new(slap_addr, Some(rustls_config(&materials[&'a'])));
    let fetched = comp_a_slap
        .call(
            "/getComputerPartitionCertificate",
            Some(&form(&[
                ("computer_id", "COMP-A"),
                ("computer_partition_id", "slappart1"),
            ])),
        )
        .await
        .expect("answers");
    assert_eq!(fetched.status, 200);
    let value = master_cluster::slap::marshal::decode(&String::from_utf8_lossy(&fetched.body))
        .expect("xml");
    let destroyed_partition = TlsMaterial {
        roots_pem: vec![ca.root.cert_pem().to_string()],
        chain_pem: value
            .get("certificate")
            .and_then(|v| v.as_str())
            .expect("certificate")
            .to_string(),
        key_pem: value
            .get("key")
            .and_then(|v| v.as_str())
            .expect("key")
            .to_string(),
    };
    carl.destroy_instance(pb::DestroyInstanceRequest {
        guid: placed["a-gone"].guid.clone(),
    })
    .await
    .expect("destroyed");
    let mut gone = pb::ReportInstanceRequest {
        partition: partition("COMP-A", "slappart1"),
        ..Default::default()
    };
    gone.set_state(pb::ReportedState::Destroyed);
    NodeClient::new(channel(&materials[&'a']).await)
        .report_instance(gone)
        .await
        .expect("reported gone");
    let revoked_user = CertificateInfo::from_pem(&materials[&'r'].chain_pem)
        .expect("reads")
        .serial;
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: revoked_user.to_string(),
            reason: "left".into(),
        })
        .await
        .expect("revoked");

    let world = World {
        a_web: placed["a-web"].guid.clone(),
        victim: placed["a-victim"].guid.clone(),
    };
    let mut callers = Vec::new();
    for name in CALLERS.chars() {
        let material = match name {
            'p' => ca.material(
                Identity::Partition {
                    computer: "COMP-A".into(),
                    partition: "slappart0".into(),
                },
                SystemTime::now(),
            ),
            'q' => ca.material(
                Identity::Partition {
                    computer: "COMP-B".into(),
                    partition: "slappart0".into(),
                },
                SystemTime::now(),
            ),
            'd' => destroyed_partition.clone(),
            other => materials[&other].clone(),
        };
        callers.push(caller(name, &url, (slap_addr, panel_addr), &material).await);
    }

    let mut failures = Vec::new();
    let mut answers: BTreeMap<(String, char), char> = BTreeMap::new();
    for (method, row) in GRPC {
        for (caller, expected) in callers.iter().zip(row.chars()) {
            let got = match grpc(method, caller.grpc.clone(), &world).await {
                Ok(()) => 'Y',
                Err(status) if status.code() == Code::Unauthenticated => 'u',
                Err(status) => {
                    let named = shown(caller.name);
                    if !status.message().contains(named) {
                        failures.push(format!(
                            "gRPC {method} by {}: the refusal does not name {named:?}: {}",
                            caller.name,
                            status.message()
                        ));
                    }
                    'n'
                }
            };
            let what = format!("gRPC {method} by {}", caller.name);
            record(
                &mut answers,
                &mut failures,
                (method, caller.name),
                (got, expected),
                &what,
            );
        }
    }
    for (call, row) in SLAP {
        for (caller, expected) in callers.iter_mut().zip(row.chars()) {
            let (status, body) = slap(call, &mut caller.slap).await;
            let what = format!("SLAP {call} by {}", caller.name);
            let got = http_cell(status, &body, caller.name, |_| true, &what, &mut failures);
            let what = format!("{what} ({status} {body})");
            record(
                &mut answers,
                &mut failures,
                (call, caller.name),
                (got, expected),
                &what,
            );
        }
    }
    for (route, row) in PANEL {
        for (caller, expected) in callers.iter_mut().zip(row.chars()) {
            let (status, message) = panel(route, &mut caller.panel, panel_addr, &world).await;
            let what = format!("panel {route} by {}", caller.name);
            // Allowed: a page, or a form done and leading to one.
            let page = |status| matches!(status, 200 | 303);
            let got = http_cell(status, &message, caller.name, page, &what, &mut failures);
            let what = format!("{what} ({status} {message})");
            record(
                &mut answers,
                &mut failures,
                (route, caller.name),
                (got, expected),
                &what,
            );
        }
    }
    // Listing computers shows each person what they may inspect: a manager their project's.
    let listed = |name: char| {
        let channel = callers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.grpc.clone())
            .expect("a caller");
        async move {
            let reply = AdminClient::new(channel)
                .list_computers(pb::ListComputersRequest::default())
                .await
                .expect("listed")
                .into_inner();
            reply
                .computers
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed('O').await, ["COMP-A", "COMP-B", "COMP-X"]);
    assert_eq!(listed('M').await, ["COMP-A"]);
    assert!(listed('C').await.is_empty());
    assert!(listed('B').await.is_empty());

    for (attack, call, caller) in ATTACKS {
        let got = answers.get(&(call.to_string(), *caller)).copied();
        if !matches!(got, Some('n' | 'u')) {
            failures.push(format!("attack {attack} ({call} by {caller}): {got:?}"));
        }
    }
    // Without a certificate, a call that announces a 4 MB body and sends none is refused at
    // once: nothing of the body is waited for or buffered.
    let refused = tokio::time::timeout(Duration::from_secs(5), without_certificate(slap_addr))
        .await
        .expect("answered without waiting for the body");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    eprintln!(
        "access: ({} gRPC methods + {} SLAP calls in {} rows + {} panel routes) x {} callers = \
         {} cells, {} wrong",
        GRPC.len(),
        slap_calls.len(),
        SLAP.len(),
        PANEL.len(),
        CALLERS.len(),
        answers.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    replica.shutdown().await.expect("shutdown");
}
