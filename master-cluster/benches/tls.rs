//! What mTLS costs a caller, against the same replica in plaintext: `connect/*` opens a new
//! connection and makes one call (TCP, then for TLS the handshake with a client certificate,
//! HTTP/2 setup, the call); `call/*` is one small call (`ReplicaStatus`) on an open connection
//! (for TLS: encryption, and the per-call check of the caller's certificate, cached per leaf,
//! plus the revocation lookup). One single-voter replica each, on `[::1]`.

use std::time::{Duration, SystemTime};

use ca::{Authority, Grant, Identity, Lifetimes, new_key_and_request};
use criterion::{Criterion, criterion_group, criterion_main};
use master_cluster::replica::ReplicaConfig;
use master_cluster::server::Replica;
use master_cluster::tls::{TlsMaterial, client_config};
use slapcluster_api::client::connect_with;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::admin_client::AdminClient;
use tonic::transport::ClientTlsConfig;

fn material(root: &Authority, signer: &Authority, identity: Identity) -> TlsMaterial {
    let request = new_key_and_request().expect("key");
    let grant = Grant {
        lifetime: Lifetimes::default().leaf(identity.role()),
        server_names: vec!["::1".into()],
        identity,
    };
    let leaf = signer
        .sign_leaf(&request.csr_pem, &grant, SystemTime::now())
        .expect("leaf");
    TlsMaterial {
        roots_pem: vec![root.cert_pem().to_string()],
        chain_pem: format!("{leaf}{}", signer.cert_pem()),
        key_pem: request.key_pem,
    }
}

async fn start(dir: &std::path::Path, tls: Option<TlsMaterial>) -> Replica {
    let mut config = ReplicaConfig::new(1, "[::1]:0".parse().expect("addr"), dir.into());
    config.danger_plaintext = tls.is_none();
    config.tls = tls;
    let replica = Replica::start(config).await.expect("starts");
    replica
        .initialize([(1, replica.node())].into())
        .await
        .expect("initialise");
    replica
        .wait_applied(1, Duration::from_secs(10))
        .await
        .expect("ready");
    replica
}

async fn status(url: &str, tls: Option<ClientTlsConfig>) {
    let channel = connect_with(url, tls).await.expect("connects");
    AdminClient::new(channel)
        .replica_status(pb::ReplicaStatusRequest::default())
        .await
        .expect("status");
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let now = SystemTime::now();
    let root = Authority::create_root("bench", now, Lifetimes::default().root).expect("root");
    let request = new_key_and_request().expect("key");
    let intermediate = root
        .sign_intermediate(&request.csr_pem, 1, now, Lifetimes::default().intermediate)
        .expect("intermediate");
    let signer = Authority::load(&intermediate, &request.key_pem).expect("signer");
    let operator = client_config(&material(&root, &signer, Identity::Operator("ops".into())));

    let plain_dir = tempfile::tempdir().expect("dir");
    let tls_dir = tempfile::tempdir().expect("dir");
    let plain = runtime.block_on(start(plain_dir.path(), None));
    let secure = runtime.block_on(start(
        tls_dir.path(),
        Some(material(&root, &signer, Identity::Replica(1))),
    ));
    let (plain_url, tls_url) = (plain.url().to_string(), secure.url().to_string());

    let mut group = c.benchmark_group("connect");
    group.bench_function("plaintext", |b| {
        b.iter(|| runtime.block_on(status(&plain_url, None)));
    });
    group.bench_function("tls", |b| {
        b.iter(|| runtime.block_on(status(&tls_url, Some(operator.clone()))));
    });
    group.finish();

    let mut group = c.benchmark_group("call");
    let plain_client = runtime.block_on(async {
        AdminClient::new(connect_with(&plain_url, None).await.expect("connects"))
    });
    let tls_client = runtime.block_on(async {
        AdminClient::new(
            connect_with(&tls_url, Some(operator.clone()))
                .await
                .expect("connects"),
        )
    });
    for (name, client) in [("plaintext", plain_client), ("tls", tls_client)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut client = client.clone();
                runtime.block_on(async move {
                    client
                        .replica_status(pb::ReplicaStatusRequest::default())
                        .await
                        .expect("status")
                })
            });
        });
    }
    group.finish();
    runtime.block_on(async {
        plain.shutdown().await.expect("shutdown");
        secure.shutdown().await.expect("shutdown");
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
