//! Three replicas over TLS with certificates from a CA built in code: replicas reach each
//! other with their replica certificates, every caller is identified by its certificate, and
//! a missing, foreign, expired or revoked certificate is refused with a status that says
//! which — a revocation even on a connection that was accepted before.

use std::time::{Duration, SystemTime};

mod common;

use ca::{CertificateInfo, Identity, new_key_and_request};
use common::TestCa;
use master_cluster::replica::ReplicaConfig;
use master_cluster::server::Replica;
use master_cluster::tls::{TlsMaterial, client_config};
use slapcluster_api::client::connect_with;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::raft_client::RaftClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::in_process;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn channel(url: &str, material: &TlsMaterial) -> Channel {
    connect_with(url, Some(client_config(material)))
        .await
        .expect("connects")
}

fn refused<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) -> (Code, String) {
    let status = answer.expect_err("refused");
    (status.code(), status.message().to_string())
}

const SR: &str = "https://lab.example/software/demo/software.cfg";

fn instance_request(title: &str) -> pb::RequestInstanceRequest {
    pb::RequestInstanceRequest {
        title: title.into(),
        software_release: SR.into(),
        ..Default::default()
    }
}

fn poll() -> pb::PollComputerRequest {
    pb::PollComputerRequest {
        computer: "COMP-1".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_known_by_their_certificates_and_refused_with_a_reason() {
    test_kit::init_tracing("tls=info,master_cluster=info,openraft=warn");
    let ca = TestCa::new("test");
    let now = SystemTime::now();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let replicas = in_process::cluster(&dirs, |config| {
        config.danger_plaintext = false;
        config.tls = Some(ca.material(Identity::Replica(config.id), now));
    })
    .await
    .expect("a cluster over TLS");
    assert!(replicas[0].url().starts_with("https://"));
    let leader = in_process::leader(&replicas.iter().collect::<Vec<_>>())
        .await
        .expect("a leader over TLS");
    let follower = replicas
        .iter()
        .find(|r| r.id() != leader)
        .expect("a follower");
    let url = follower.url().to_string();

    tracing::info!(
        "--- a computer registers and polls through a follower, named by its certificate"
    );
    let computer = ca.material(Identity::Computer("COMP-1".into()), now);
    let mut node = NodeClient::new(channel(&url, &computer).await);
    let definition = pb::RegisterComputerRequest {
        computer: "COMP-1".into(),
        partitions: vec![pb::PartitionDefinition {
            reference: "slappart0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let registered = node
        .register_computer(definition.clone())
        .await
        .expect("registered over TLS, forwarded to the leader")
        .into_inner();
    // The follower answers once it has applied the registration (read your own write).
    let polled = node
        .poll_computer(pb::PollComputerRequest {
            min_index: registered.index,
            ..poll()
        })
        .await
        .expect("polled")
        .into_inner();
    assert_eq!(polled.partitions.len(), 1);
    let other = pb::RegisterComputerRequest {
        computer: "COMP-2".into(),
        ..definition
    };
    let (code, message) = refused(node.register_computer(other).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");

    tracing::info!("--- an instance's partition requests a child: as itself, never another");
    let operator = ca.material(Identity::Operator("ops".into()), now);
    let mut supply = pb::SupplyRequest {
        computer: "COMP-1".into(),
        url: SR.into(),
        ..Default::default()
    };
    supply.set_state(pb::SupplyState::Available);
    UserClient::new(channel(&url, &operator).await)
        .supply(supply)
        .await
        .expect("supplied");
    let alice = ca.material(Identity::User("alice".into()), now);
    let mut alice_client = UserClient::new(channel(&url, &alice).await);
    let parent = alice_client
        .request_instance(instance_request("parent"))
        .await
        .expect("requested")
        .into_inner();
    let partition = |reference: &str| Identity::Partition {
        computer: "COMP-1".into(),
        partition: reference.into(),
    };
    let slappart0 = ca.material(partition("slappart0"), now);
    let child = UserClient::new(channel(&url, &slappart0).await)
        .request_instance(instance_request("child"))
        .await
        .expect("a child requested by the parent's partition")
        .into_inner();
    let shown = alice_client
        .show_instance(pb::ShowInstanceRequest {
            instance: Some(pb::show_instance_request::Instance::Guid(
                child.guid.clone(),
            )),
            consistency: pb::Consistency::Linearizable.into(),
        })
        .await
        .expect("alice sees her tree")
        .into_inner()
        .instance
        .expect("instance");
    assert_eq!(
        shown.requested_by, parent.guid,
        "the child belongs to slappart0's instance"
    );
    let elsewhere = ca.material(partition("slappart9"), now);
    let (code, message) = refused(
        UserClient::new(channel(&url, &elsewhere).await)
            .request_instance(instance_request("orphan"))
            .await,
    );
    assert_eq!(
        code,
        Code::NotFound,
        "a partition that does not exist: {message}"
    );

    tracing::info!("--- missing, foreign, expired: each refused with its reason");
    let anonymous = connect_with(
        &url,
        Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.root.cert_pem()))),
    )
    .await
    .expect("connects without a certificate");
    let (code, message) = refused(NodeClient::new(anonymous).poll_computer(poll()).await);
    assert_eq!(
        (code, message.as_str()),
        (Code::Unauthenticated, "no client certificate")
    );

    let foreign = TestCa::new("other");
    let mut stranger = foreign.material(Identity::Computer("COMP-1".into()), now);
    // It trusts our root (to reach us), but its own certificate is from another CA.
    stranger.roots_pem = vec![ca.root.cert_pem().to_string()];
    let (code, message) = refused(
        NodeClient::new(channel(&url, &stranger).await)
            .poll_computer(poll())
            .await,
    );
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("not issued by this cluster"), "{message}");

    let expired = ca.material(Identity::Computer("COMP-1".into()), now - 100 * DAY);
    let (code, message) = refused(
        NodeClient::new(channel(&url, &expired).await)
            .poll_computer(poll())
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (Code::Unauthenticated, "the certificate expired")
    );

    tracing::info!("--- only replicas speak Raft: a stranger's 8 MiB vote is refused at the gate");
    let (code, message) = refused(
        RaftClient::new(channel(&url, &computer).await)
            .vote(pb::RaftPayload {
                payload: vec![7; 8 << 20],
            })
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (
            Code::PermissionDenied,
            "computer COMP-1 may not replicate to anything here (/slapcluster.v1.Raft/Vote)"
        )
    );

    tracing::info!("--- a method the policy does not name is refused");
    let mut grpc = tonic::client::Grpc::new(channel(&url, &operator).await);
    grpc.ready().await.expect("ready");
    let (code, message) = refused(
        grpc.unary::<pb::RaftPayload, pb::RaftPayload, _>(
            tonic::Request::new(pb::RaftPayload::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/slapcluster.v1.Admin/DropTables",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (
            Code::Unimplemented,
            "/slapcluster.v1.Admin/DropTables is not an operation of this master"
        )
    );

    tracing::info!("--- revoked by an operator: refused on the connection it already has");
    let serial = CertificateInfo::from_pem(&computer.chain_pem)
        .expect("reads")
        .serial;
    AdminClient::new(channel(&url, &operator).await)
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: serial.to_string(),
            reason: "test".into(),
        })
        .await
        .expect("revoked");
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let message = loop {
        match node.poll_computer(poll()).await {
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still accepted after a second"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                break status.message().to_string();
            }
        }
    };
    assert_eq!(message, format!("certificate {serial} is revoked"));

    tracing::info!("--- each replica tells when its own certificate is due for renewal");
    let scraped = master_cluster::observe::exposition(&replicas[0], Default::default());
    assert!(
        scraped.contains("\nslapcluster_certificate_renewal_due 0\n"),
        "{scraped}"
    );
    let expiry = scraped
        .lines()
        .find_map(|l| l.strip_prefix("slapcluster_certificate_not_after_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the expiry");
    let left = expiry
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
    assert!(
        left > 80.0 * 24.0 * 3600.0,
        "a fresh replica certificate: {left} s left"
    );

    tracing::info!("--- every replica metric the alert rules name is exported");
    let scrapes: Vec<String> = replicas
        .iter()
        .map(|r| master_cluster::observe::exposition(r, Default::default()))
        .collect();
    for name in rule_metrics("slapcluster_") {
        assert!(
            scrapes
                .iter()
                .any(|s| s.contains(&format!("\n# TYPE {name} "))),
            "ops/deploy/prometheus names {name}, which no replica exports"
        );
    }

    for replica in replicas {
        replica.shutdown().await.expect("shutdown");
    }
}

/// The metric families with `prefix` that the Prometheus alert rules use (a histogram's
/// `_bucket`, `_count` and `_sum` series name its family).
fn rule_metrics(prefix: &str) -> std::collections::BTreeSet<String> {
    let rules = include_str!("../../ops/deploy/prometheus/slapcluster.rules.yml");
    let names: std::collections::BTreeSet<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with(prefix))
                .map(|word| {
                    ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|suffix| word.strip_suffix(suffix))
                        .unwrap_or(word)
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() >= 5, "the rules name {names:?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_root_written_to_the_roots_file_is_trusted_without_a_restart() {
    let now = SystemTime::now();
    let (old, new) = (TestCa::new("test"), TestCa::new("test"));
    let dir = tempfile::tempdir().expect("dir");
    let tls_dir = dir.path().join("tls");
    let material = old.material(Identity::Replica(1), now);
    material.write_dir(&tls_dir).expect("written");
    let mut config =
        ReplicaConfig::new(1, "[::1]:0".parse().expect("addr"), dir.path().join("data"));
    config.tls = Some(material);
    config.tls_dir = Some(tls_dir.clone());
    let replica = Replica::start(config).await.expect("starts");
    replica
        .initialize([(1, replica.node())].into())
        .await
        .expect("initialise");
    let url = replica.url().to_string();

    // A computer whose certificate comes from the new root (it trusts the old one, which
    // signed the replica's).
    let mut client = new.material(Identity::Computer("COMP-1".into()), now);
    client.roots_pem = vec![old.root.cert_pem().to_string()];
    let (code, message) = refused(
        NodeClient::new(channel(&url, &client).await)
            .poll_computer(poll())
            .await,
    );
    assert_eq!(code, Code::Unauthenticated, "{message}");

    tracing::info!("--- both roots in roots.pem: the new root's certificates are accepted");
    let bundle = format!("{}{}", old.root.cert_pem(), new.root.cert_pem());
    std::fs::write(tls_dir.join("roots.pem"), bundle).expect("written");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = NodeClient::new(channel(&url, &client).await)
            .poll_computer(poll())
            .await;
        match answer {
            // Known by its certificate now; the computer is simply not registered.
            Err(status) if status.code() == Code::NotFound => break,
            Err(status) if status.code() == Code::Unauthenticated => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the new root is not trusted 10 s after the roots file changed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    replica.shutdown().await.expect("shutdown");
}

/// A one-replica cluster over TLS that signs certificates (and serves SLAP, if asked).
async fn signing_replica(ca: &TestCa, dir: &std::path::Path, slap: bool) -> Replica {
    let mut config = ReplicaConfig::new(1, "[::1]:0".parse().expect("addr"), dir.into());
    config.tls = Some(ca.material(Identity::Replica(1), SystemTime::now()));
    config.signer_pem = Some(ca.signer_pem());
    config.slap = slap.then(|| master_cluster::replica::SlapConfig {
        listen: "[::1]:0".parse().expect("addr"),
        plaintext_user: None,
    });
    let replica = Replica::start(config).await.expect("starts");
    replica
        .initialize([(1, replica.node())].into())
        .await
        .expect("initialise");
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_computer_enrolls_with_a_one_time_token() {
    let now = SystemTime::now();
    let ca = TestCa::new("test");
    let dir = tempfile::tempdir().expect("dir");
    let replica = signing_replica(&ca, dir.path(), false).await;
    let url = replica.url().to_string();
    let operator = ca.material(Identity::Operator("ops".into()), now);
    let mut admin = AdminClient::new(channel(&url, &operator).await);
    let token = |computer: &str| pb::CreateEnrollmentTokenRequest {
        computer: computer.into(),
        valid_seconds: 600,
    };
    let issued = admin
        .create_enrollment_token(token("COMP-9"))
        .await
        .expect("a token")
        .into_inner();

    // The node has no certificate yet: it trusts the cluster's root and nothing more.
    let anonymous =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.root.cert_pem()));
    let mut node = NodeClient::new(connect_with(&url, Some(anonymous)).await.expect("connects"));
    let enroll = |token: &str, csr: &str| pb::EnrollRequest {
        token: token.into(),
        csr_pem: csr.into(),
    };
    let request = new_key_and_request().expect("key");

    tracing::info!("--- a bad request does not spend the token; a wrong token is refused");
    let (code, message) = refused(node.enroll(enroll(&issued.token, "not a csr")).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    let (code, message) = refused(node.enroll(enroll(&"0".repeat(64), &request.csr_pem)).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");

    tracing::info!("--- the token and a CSR give the computer its certificate, once");
    let enrolled = node
        .enroll(enroll(&issued.token, &request.csr_pem))
        .await
        .expect("enrolled")
        .into_inner();
    let (code, message) = refused(node.enroll(enroll(&issued.token, &request.csr_pem)).await);
    assert_eq!(
        code,
        Code::PermissionDenied,
        "a token is good once: {message}"
    );
    let info = CertificateInfo::from_pem(&enrolled.chain_pem).expect("reads");
    assert_eq!(info.identity, Some(Identity::Computer("COMP-9".into())));

    let credentials = TlsMaterial {
        roots_pem: vec![enrolled.roots_pem],
        chain_pem: enrolled.chain_pem,
        key_pem: request.key_pem,
    };
    let mut computer = NodeClient::new(channel(&url, &credentials).await);
    computer
        .register_computer(pb::RegisterComputerRequest {
            computer: "COMP-9".into(),
            ..Default::default()
        })
        .await
        .expect("the enrolled computer registers itself");
    let (code, message) = refused(
        AdminClient::new(channel(&url, &credentials).await)
            .create_enrollment_token(token("COMP-10"))
            .await,
    );
    assert_eq!(
        code,
        Code::PermissionDenied,
        "only operators make tokens: {message}"
    );
    replica.shutdown().await.expect("shutdown");
}

/// `slapos node register --token` and `slapos configure client --token`, as the SLAP listener
/// answers them (the real client runs both in `slap_client.rs`): no certificate needed, the
/// token spent once and only on its own call, a computer the client could not name refused
/// before its token is spent, and what is answered a working identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slapos_clients_token_calls_enroll_once_and_say_why_not() {
    use test_kit::slap::{Connection, anonymous_tls};
    let now = SystemTime::now();
    let ca = TestCa::new("test");
    let dir = tempfile::tempdir().expect("dir");
    let replica = signing_replica(&ca, dir.path(), true).await;
    let url = replica.url().to_string();
    let operator = ca.material(Identity::Operator("ops".into()), now);
    let mut admin = AdminClient::new(channel(&url, &operator).await);
    let computer_token = |computer: &str| pb::CreateEnrollmentTokenRequest {
        computer: computer.into(),
        valid_seconds: 600,
    };
    let unnamable = admin
        .create_enrollment_token(computer_token("node-7"))
        .await
        .expect("a token")
        .into_inner()
        .token;
    let comp_7 = admin
        .create_enrollment_token(computer_token("COMP-7"))
        .await
        .expect("a token")
        .into_inner()
        .token;
    let dana = admin
        .create_credential_token(pb::CreateCredentialTokenRequest {
            user: "dana".into(),
            valid_seconds: 600,
        })
        .await
        .expect("a token")
        .into_inner()
        .token;
    let roots = ca.root.cert_pem().to_string();
    let mut slap = Connection::new(
        replica.slap_addr().expect("a SLAP listener"),
        Some(anonymous_tls(roots.as_bytes()).expect("TLS")),
    );
    let mut call = async |name: &str, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| ("X-Access-Token", t)).into_iter().collect();
        let answer = slap
            .call_with(&format!("/{name}"), Some("title=a+node"), &headers)
            .await
            .expect("answers");
        (
            answer.status,
            String::from_utf8_lossy(&answer.body).to_string(),
        )
    };

    tracing::info!("--- no token, a token of the other kind, a computer the client cannot name");
    let (status, body) = call("Person_requestComputer", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("X-Access-Token"), "{body}");
    let (status, body) = call("Person_requestComputer", Some(&dana)).await;
    assert_eq!(
        status, 403,
        "a credential token enrolls no computer: {body}"
    );
    let (status, body) = call("Person_getCertificate", Some(&comp_7)).await;
    assert_eq!(status, 403, "an enrollment token gives no user: {body}");
    let (status, body) = call("Person_requestComputer", Some(&unnamable)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("COMP-") && body.contains("node-7"), "{body}");
    let request = new_key_and_request().expect("key");
    NodeClient::new(
        connect_with(
            &url,
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&roots))),
        )
        .await
        .expect("connects"),
    )
    .enroll(pb::EnrollRequest {
        token: unnamable,
        csr_pem: request.csr_pem,
    })
    .await
    .expect("the refused call kept the token: slapnode enroll still uses it");

    tracing::info!("--- each token gives its identity once, as the client reads it");
    for (name, token, identity) in [
        (
            "Person_requestComputer",
            &comp_7,
            Identity::Computer("COMP-7".into()),
        ),
        (
            "Person_getCertificate",
            &dana,
            Identity::User("dana".into()),
        ),
    ] {
        let (status, body) = call(name, Some(token)).await;
        assert_eq!(status, 200, "{name}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let text = |field: &str| answer[field].as_str().expect(field).to_string();
        let (certificate, key_pem) = (text("certificate"), text("key"));
        if name == "Person_requestComputer" {
            // What `slapos node register` reads the computer's reference from.
            let from = certificate.find("COMP-").expect("a reference");
            let to = certificate[from..].find("/email").expect("its end") + from;
            assert_eq!(&certificate[from..to], "COMP-7", "{certificate}");
        }
        let chain_pem = certificate[certificate.find("-----BEGIN").expect("PEM")..].to_string();
        let info = CertificateInfo::from_pem(&chain_pem).expect("reads");
        assert_eq!(info.identity, Some(identity.clone()));
        let credentials = TlsMaterial {
            roots_pem: vec![roots.clone()],
            chain_pem,
            key_pem,
        };
        UserClient::new(channel(&url, &credentials).await)
            .list_software_releases(pb::ListSoftwareReleasesRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{identity} is served with what {name} gave: {e}"));
        let (status, body) = call(name, Some(token)).await;
        assert_eq!(status, 403, "{name}: a token is good once: {body}");
    }
    replica.shutdown().await.expect("shutdown");
}
