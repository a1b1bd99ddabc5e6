//! Hostile input against a real `slapmaster` process over TLS (issue 19): every attack below
//! gets the answer it must (a clear refusal, nothing changed), while a normal user and node
//! keep being served without a single failure, and the replica's peak resident memory stays
//! within [`RSS_BOUND`] of what it held before the attacks.
//!
//! The attacks: an XML reference bomb over SLAP (from a user: refused before it is decoded;
//! from the computer itself: refused once it weighs 16 MiB); 50 SLAP connections and 50 panel
//! connections without a certificate trickling 4 MB bodies; a 4 MB panel form from another
//! origin (refused before its body is read) and one of a thousand fields; 60 MB Raft messages without a certificate and with a
//! user's; garbage protobuf and a message of too many elements; requests of 4 MiB in parallel
//! (the decode budget); a flood of calls (the rate), long-polls held open (calls in flight);
//! a user filling their quota with 1 MiB parameters; and, once the normal clients stopped
//! (they share the loopback address), a flood of connections.
//!
//! `SLAPCLUSTER_HOSTILE_SECONDS=N` repeats the attack rounds for N seconds beside the normal
//! clients: the soak. By default one round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slapcluster_api::client::{Credentials, connect_with};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::raft_client::RaftClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::cluster::{self, Cluster};
use test_kit::slap::{Connection, client_tls_pem, form};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

/// The replica's limits here: the smallest decode budget a replica accepts (a caller's share,
/// half of it, holds one largest SLAP call: `slapmaster` refuses less), a low rate and few
/// calls in flight, so that a flood meets them at once.
const LIMITS: &str = "[limits]
decode_budget_mb = 192
calls_per_second = 50
burst = 100
in_flight_per_caller = 8
connections_per_address = 96
";

/// How much more than before the attacks the replica may hold at its peak. The decode budget
/// (192 MiB) is charged at each request's worst case; what the attacks really hold is less.
const RSS_BOUND: u64 = 100 << 20;

const SR: &str = "https://lab.example/software/hostile/software.cfg";

/// Resident memory of `pid` now and at its peak (`VmRSS`, `VmHWM`), in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb << 10)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What the normal clients saw.
#[derive(Default)]
struct Served {
    calls: u64,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

/// A user re-requesting four instances with changing parameters and reading them back, and a
/// node polling its computer, paced like real ones, until `stop`.
fn normal_clients(
    user: Channel,
    node: Channel,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Served> {
    tokio::spawn(async move {
        let (mut user, mut node) = (UserClient::new(user), NodeClient::new(node));
        let mut served = Served::default();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let title = format!("normal-{}", n % 4);
            let started = Instant::now();
            let outcome = async {
                user.request_instance(pb::RequestInstanceRequest {
                    title: title.clone(),
                    software_release: SR.into(),
                    parameters: [("n".to_string(), n.to_string())].into(),
                    ..Default::default()
                })
                .await?;
                user.show_instance(pb::ShowInstanceRequest {
                    instance: Some(pb::show_instance_request::Instance::Title(title)),
                    ..Default::default()
                })
                .await?;
                node.poll_computer(pb::PollComputerRequest {
                    computer: "COMP-NORMAL".into(),
                    ..Default::default()
                })
                .await
            }
            .await;
            served.calls += 3;
            match outcome {
                Ok(_) => served.latencies.push(started.elapsed()),
                Err(status) => served.failures.push(format!("{status:?}")),
            }
            n += 1;
            // Pacing, as a real client's think time; nothing waits on it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    })
}

/// The replica's addresses and the credentials the attacks use.
struct Target {
    url: String,
    slap: std::net::SocketAddr,
    panel: std::net::SocketAddr,
    roots_pem: String,
}

impl Target {
    /// TLS to the replica's gRPC port as `who`, or with no client certificate.
    async fn grpc(&self, who: Option<&Credentials>) -> Channel {
        let tls = match who {
            Some(credentials) => credentials.tls_config(),
            None => ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&self.roots_pem)),
        };
        connect_with(&self.url, Some(tls)).await.expect("connects")
    }

    /// POSTs `body` to `path` as `who`, reading the answer while the body is still being sent:
    /// a replica that refuses a call from its headers answers, and closes the connection, before
    /// it reads the body (so a client that only reads once it has sent all may see a broken
    /// pipe instead). Returns the answer's status line.
    async fn post_answered_early(
        &self,
        who: &Credentials,
        (address, path): (std::net::SocketAddr, &str),
        body: &str,
    ) -> String {
        let tls = slap_tls(who);
        let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
        let name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("handshake");
        let (mut read, mut write) = tokio::io::split(stream);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: replica\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sending = tokio::spawn(async move {
            // Cut short once the replica closes: that is its answer too.
            let _ = write.write_all(request.as_bytes()).await;
            write
        });
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        sending.abort();
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn slap(&self, who: &Credentials) -> Connection {
        Connection::new(self.slap, Some(slap_tls(who)))
    }
}

/// `who`'s TLS setup for SLAP connections.
fn slap_tls(who: &Credentials) -> Arc<rustls::ClientConfig> {
    client_tls_pem(
        who.roots_pem.concat().as_bytes(),
        who.chain_pem.as_bytes(),
        who.key_pem.as_bytes(),
    )
    .expect("TLS")
}

/// A computer definition whose one list is referenced ten times, three levels deep, from a
/// 1 MB string: 1 GB once expanded (the attack of issue 19, item 1).
fn reference_bomb(computer: &str) -> String {
    let mut xml = format!(
        "<list id=\"i0\"><string>{}</string></list>",
        "a".repeat(1 << 20)
    );
    for level in 1..=3 {
        let references = format!("<reference id=\"i{}\"/>", level - 1).repeat(10);
        xml.push_str(&format!("<list id=\"i{level}\">{references}</list>"));
    }
    form(&[
        ("computer_id", computer),
        (
            "xml",
            &format!("<?xml version=\"1.0\"?><marshal><tuple>{xml}</tuple></marshal>"),
        ),
    ])
}

/// 50 connections to the HTTP listener at `address` (SLAP, the panel) without a certificate,
/// each POSTing `path` with a declared 4 MB body sent a byte at a time: each is answered 401
/// as soon as its headers are in.
async fn slow_bodies_without_certificate(
    target: &Target,
    address: std::net::SocketAddr,
    path: &str,
) {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for root in rustls_pki_types::CertificateDer::pem_slice_iter(target.roots_pem.as_bytes()) {
        roots.add(root.expect("a root")).expect("added");
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let config = config.clone();
        let headers = format!(
            "POST {path} HTTP/1.1\r\nHost: replica\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 4000000\r\n\r\n"
        );
        connections.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
            let name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .expect("handshake");
            tls.write_all(headers.as_bytes()).await.expect("headers");
            let mut answer = Vec::new();
            let mut buffer = [0u8; 512];
            // A byte at a time until the answer's status line is in (or the replica closes).
            for _ in 0..200 {
                let _ = tls.write_all(b"x").await;
                match tokio::time::timeout(Duration::from_millis(50), tls.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
                    Err(_) => {}
                }
                if answer.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            String::from_utf8_lossy(&answer).into_owned()
        });
    }
    while let Some(answer) = connections.join_next().await {
        let answer = answer.expect("a connection");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    }
}

/// Eight 60 MB Raft messages in parallel, without a certificate and with a user's: each is
/// refused from its headers.
async fn huge_raft_messages(target: &Target, user: &Credentials) {
    let vote = pb::RaftPayload {
        payload: vec![0u8; 60 << 20],
    };
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        let channel = target.grpc((n % 2 == 1).then_some(user)).await;
        let vote = vote.clone();
        calls.spawn(async move {
            let answer = RaftClient::new(channel).vote(vote).await;
            (n % 2 == 1, answer.map(drop).map_err(|s| s.code()))
        });
    }
    while let Some(answer) = calls.join_next().await {
        let (as_user, answer) = answer.expect("a call");
        let expected = if as_user {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        assert_eq!(answer, Err(expected));
    }
}

/// Bytes that are no request, and a request of one element too many: `InvalidArgument`.
async fn malformed_messages(user: Channel, computer: Channel) {
    let mut grpc = tonic::client::Grpc::new(user);
    grpc.ready().await.expect("ready");
    // Field 1 of a RequestInstanceRequest is a string; this one's is a number.
    let garbage = pb::ListComputersRequest { consistency: 1 };
    let answer = grpc
        .unary(
            tonic::Request::new(garbage),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/slapcluster.v1.User/RequestInstance",
            ),
            slapcluster_api::codec::Codec::<pb::ListComputersRequest, pb::RequestInstanceReply>::default(),
        )
        .await
        .expect_err("garbage refused");
    assert_eq!(answer.code(), Code::InvalidArgument, "{answer:?}");
    let too_many = pb::RegisterComputerRequest {
        computer: "COMP-HOSTILE".into(),
        partitions: vec![
            pb::PartitionDefinition::default();
            slapcluster_api::codec::MAX_ELEMENTS + 1
        ],
        ..Default::default()
    };
    let answer = NodeClient::new(computer)
        .register_computer(too_many)
        .await
        .expect_err("too many elements refused");
    assert_eq!(answer.code(), Code::InvalidArgument, "{answer:?}");
    assert!(answer.message().contains("at most"), "{answer:?}");
}

/// Twelve 4 MiB requests at once from one user: each is refused as over the user's share of
/// the decode budget, or decoded and refused for its size (an instance's parameters are 1 MiB
/// at most); the replica never holds more than the user's share of them, and other callers'
/// ordinary calls keep their room.
async fn requests_beyond_the_decode_budget(channel: Channel) -> usize {
    let parameters: std::collections::HashMap<String, String> = (0..4)
        .map(|n| (format!("blob{n}"), "b".repeat((1 << 20) - 64)))
        .collect();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (channel, parameters) = (channel.clone(), parameters.clone());
        calls.spawn(async move {
            UserClient::new(channel)
                .request_instance(pb::RequestInstanceRequest {
                    title: "big".into(),
                    software_release: SR.into(),
                    parameters,
                    ..Default::default()
                })
                .await
        });
    }
    let mut exhausted = 0;
    while let Some(answer) = calls.join_next().await {
        match answer.expect("a call") {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => exhausted += 1,
            // Admitted and decoded, then refused by the state machine (at most 1 MiB of
            // parameters an instance): the budget was charged all the same.
            Err(status)
                if status.code() == Code::InvalidArgument
                    && status.message().contains("at most") => {}
            Err(status) => panic!("{status:?}"),
        }
    }
    exhausted
}

/// 500 calls as fast as they go: past the burst (100) and the rate (50 a second), refused.
async fn a_flood_of_calls(channel: Channel) {
    let mut user = UserClient::new(channel);
    let mut refused = 0;
    for _ in 0..500 {
        let answer = user
            .show_instance(pb::ShowInstanceRequest {
                instance: Some(pb::show_instance_request::Instance::Title("none".into())),
                ..Default::default()
            })
            .await;
        match answer {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.message().contains("calls a second"), "{status:?}");
                refused += 1;
            }
            Err(status) if status.code() == Code::NotFound => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0, "500 calls within the rate");
}

/// The replica's gauge of long-polls open, from its `/metrics`.
async fn long_polls_open(metrics: std::net::SocketAddr) -> Option<f64> {
    let mut tcp = tokio::net::TcpStream::connect(metrics).await.ok()?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("slapcluster_long_polls_open "))
        .and_then(|value| value.trim().parse().ok())
}

/// Long-polls held open by one computer: with eight in flight (its limit), a ninth call is
/// refused.
async fn long_polls_held_open(channel: Channel, metrics: std::net::SocketAddr) {
    let poll = |channel: Channel, wait_ms: u32| async move {
        NodeClient::new(channel)
            .poll_computer(pb::PollComputerRequest {
                computer: "COMP-HOSTILE".into(),
                after: Some(u64::MAX >> 1),
                wait_ms,
                ..Default::default()
            })
            .await
    };
    let held: Vec<_> = (0..8)
        .map(|_| tokio::spawn(poll(channel.clone(), 20_000)))
        .collect();
    cluster::wait_for("eight long-polls open", || async {
        (long_polls_open(metrics).await? >= 8.0).then_some(())
    })
    .await
    .expect("the long-polls are held");
    let refused = poll(channel, 0).await.expect_err("a ninth call refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("in flight"), "{refused:?}");
    for poll in held {
        poll.abort();
    }
}

/// A user whose quota is 2.5 MiB of parameters requests 1 MiB ones: the third is refused,
/// naming the quota.
async fn filling_a_quota(operator: Channel, user: Channel, name: &str) {
    AdminClient::new(operator)
        .set_quota(pb::SetQuotaRequest {
            user: name.into(),
            quota: Some(pb::Quota {
                instances: 100,
                pending: 100,
                parameter_bytes: 5 << 19,
            }),
        })
        .await
        .expect("quota set");
    let mut user = UserClient::new(user);
    let mut answers = Vec::new();
    for n in 0..3 {
        answers.push(
            user.request_instance(pb::RequestInstanceRequest {
                title: format!("fill-{n}"),
                software_release: SR.into(),
                parameters: [("blob".to_string(), "q".repeat((1 << 20) - 64))].into(),
                ..Default::default()
            })
            .await
            .map(drop),
        );
    }
    assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
    let refused = answers[2].as_ref().expect_err("over the quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("the quota is"), "{refused:?}");
}

/// 150 TCP connections held from one address: those past its limit (96, the normal clients'
/// included) are closed at once; once they go, a new call is served.
async fn a_flood_of_connections(target: &Target, user: &Credentials) {
    let address = target
        .url
        .trim_start_matches("https://")
        .parse::<std::net::SocketAddr>();
    let address = address.expect("the replica's address");
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(tokio::net::TcpStream::connect(address).await.expect("tcp"));
    }
    // A refused connection is closed by the replica before it says anything; an admitted one
    // waits for its TLS handshake (10 s). All are asked at once, well within that.
    let mut asked = tokio::task::JoinSet::new();
    for mut tcp in flood {
        asked.spawn(async move {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte)).await;
            (matches!(read, Ok(Ok(0) | Err(_))), tcp)
        });
    }
    let mut closed = 0;
    let mut held = Vec::new();
    while let Some(answer) = asked.join_next().await {
        let (was_closed, tcp) = answer.expect("a connection");
        closed += usize::from(was_closed);
        held.push(tcp);
    }
    assert!(closed >= 150 - 96, "{closed} of 150 closed");
    drop(held);
    // Until the replica has seen the flood's connections close, it still counts them against
    // the address and refuses a new one at once: that is a retry, not a failure.
    let served = cluster::wait_for("a call once the flood is gone", || async {
        let channel = connect_with(&target.url, Some(user.tls_config()))
            .await
            .ok()?;
        UserClient::new(channel)
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .ok()
    })
    .await;
    assert!(served.is_ok(), "{:?}", served.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_refused_within_a_bounded_memory_while_normal_clients_are_served() {
    let soak = std::env::var("SLAPCLUSTER_HOSTILE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let dir = tempfile::tempdir().expect("tempdir");
    let slapmaster = std::path::Path::new(env!("CARGO_BIN_EXE_slapmaster"));
    let cluster = Cluster::start_configured(slapmaster, dir.path(), 1, Some(LIMITS))
        .await
        .expect("a replica");
    let replica = &cluster.replicas[0];
    let pid = replica.pid().expect("running");
    let credentials = |identity: &str| cluster.credentials(identity).expect("credentials");
    let (alice, mallory, filler) = (
        credentials("user:alice"),
        credentials("user:mallory"),
        credentials("user:filler"),
    );
    let (normal_node, hostile_node) = (
        credentials("computer:COMP-NORMAL"),
        credentials("computer:COMP-HOSTILE"),
    );
    let target = Target {
        url: replica.url(),
        slap: std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, replica.slap_port)),
        panel: std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, replica.panel_port)),
        roots_pem: alice.roots_pem.concat(),
    };
    for (node, computer) in [
        (&normal_node, "COMP-NORMAL"),
        (&hostile_node, "COMP-HOSTILE"),
    ] {
        NodeClient::new(target.grpc(Some(node)).await)
            .register_computer(pb::RegisterComputerRequest {
                computer: computer.into(),
                partitions: (0..4)
                    .map(|p| pb::PartitionDefinition {
                        reference: format!("slappart{p}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("registered");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let normal = normal_clients(
        target.grpc(Some(&alice)).await,
        target.grpc(Some(&normal_node)).await,
        stop.clone(),
    );
    // Warm: the normal clients' first calls, before the baseline is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = memory(pid);
    eprintln!("resident before the attacks: {} MiB", before >> 20);

    let started = Instant::now();
    let mut rounds = 0;
    let mut exhausted = 0;
    loop {
        rounds += 1;
        // 1. An XML reference bomb: a user is refused before it is decoded; the computer
        //    itself once it weighs 16 MiB.
        let status = target
            .post_answered_early(
                &mallory,
                (target.slap, "/loadComputerConfigurationFromXML"),
                &reference_bomb("COMP-HOSTILE"),
            )
            .await;
        assert!(status.starts_with("HTTP/1.1 403"), "{status}");
        let answer = target
            .slap(&hostile_node)
            .call(
                "/loadComputerConfigurationFromXML",
                Some(&reference_bomb("COMP-HOSTILE")),
            )
            .await
            .expect("answered");
        let body = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, 400, "{body}");
        assert!(body.contains("once references are expanded"), "{body}");
        // 2. Slow bodies without a certificate, to SLAP and to the panel.
        slow_bodies_without_certificate(&target, target.slap, "/loadComputerConfigurationFromXML")
            .await;
        slow_bodies_without_certificate(&target, target.panel, "/panel/request").await;
        // 2b. The panel: a 4 MB form from no origin of its own, refused before its body is
        //     read; a user's form of too many fields, refused once read (and charged).
        let status = target
            .post_answered_early(
                &mallory,
                (target.panel, "/panel/request"),
                &"x=1&".repeat(1 << 20),
            )
            .await;
        assert!(status.starts_with("HTTP/1.1 403"), "{status}");
        let fields = (0..1000)
            .map(|n| format!("f{n}=1"))
            .collect::<Vec<_>>()
            .join("&");
        let origin = format!("https://{}", target.panel);
        let answer = Connection::new(target.panel, Some(slap_tls(&mallory)))
            .call_with("/panel/request", Some(&fields), &[("Origin", &origin)])
            .await
            .expect("answered");
        let body = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, 400, "{body}");
        assert!(body.contains("more than 64 arguments"), "{body}");
        // 3. Huge Raft messages from strangers and users.
        huge_raft_messages(&target, &mallory).await;
        // 4. Garbage and too many elements.
        malformed_messages(
            target.grpc(Some(&mallory)).await,
            target.grpc(Some(&hostile_node)).await,
        )
        .await;
        // 5. More than the decode budget at once.
        exhausted += requests_beyond_the_decode_budget(target.grpc(Some(&mallory)).await).await;
        // 6. The rate, and calls in flight.
        a_flood_of_calls(target.grpc(Some(&mallory)).await).await;
        long_polls_held_open(target.grpc(Some(&hostile_node)).await, replica.http_addr()).await;
        // 7. A quota filled with megabyte parameters (once: what it holds stays).
        if rounds == 1 {
            let operator = connect_with(&target.url, Some(cluster.operator()))
                .await
                .expect("connects");
            filling_a_quota(operator, target.grpc(Some(&filler)).await, "filler").await;
        }
        if rounds % 10 == 0 {
            let (now, peak) = memory(pid);
            eprintln!(
                "round {rounds}: resident {} MiB, peak {} MiB",
                now >> 20,
                peak >> 20
            );
        }
        if soak.is_none_or(|soak| started.elapsed() >= soak) {
            break;
        }
    }

    stop.store(true, Ordering::Relaxed);
    let served = normal.await.expect("the normal clients");
    let (after, peak) = memory(pid);
    // 8. Connections, once the normal clients (on the same address) are done.
    a_flood_of_connections(&target, &alice).await;
    let mut latencies = served.latencies.clone();
    latencies.sort();
    // The q-th quantile, q in percent.
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    eprintln!(
        "{rounds} round(s) in {:.1} s; requests over the decode budget refused: {exhausted}; \
         normal calls: {}, failed: {}, round trip (3 calls) p50 {:?} p99 {:?}; resident: before \
         {} MiB, peak {} MiB, after {} MiB",
        started.elapsed().as_secs_f64(),
        served.calls,
        served.failures.len(),
        at(50),
        at(99),
        before >> 20,
        peak >> 20,
        after >> 20,
    );
    assert!(
        served.failures.is_empty(),
        "normal calls failed: {:?}",
        served.failures
    );
    assert!(
        peak.saturating_sub(before) <= RSS_BOUND,
        "peak {} MiB, {} MiB above the {} MiB before the attacks",
        peak >> 20,
        peak.saturating_sub(before) >> 20,
        before >> 20
    );
}
