//! The composition root: the one place that puts a replica on the network.
//!
//! [`Replica::start`] binds every listener first (the core advertises the address it got),
//! opens the [`ReplicaCore`] (storage, Raft, the batcher, the peers: it serves nothing itself),
//! then mounts around it the gRPC services (public and Raft, on one port, see
//! [`crate::grpc`]), the SLAP listener ([`crate::slap`]), the web panel ([`crate::panel`])
//! and the operations HTTP listener ([`crate::observe`]). [`Replica::shutdown`] stops them,
//! then Raft, then waits for the data files to close. Arrows point one way: state ← replica
//! ← {service, slap, observe} ← panel ← server ← daemon (`tests/layers.rs` holds the crate
//! to it).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::replica::{FilesClosed, Listening, Opened, ReplicaConfig, ReplicaCore, ReplicaError};

/// A running replica: its [`ReplicaCore`] (reached through `Deref`) and the servers around it.
pub struct Replica {
    core: Arc<ReplicaCore>,
    stop_grpc: oneshot::Sender<()>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Vec<JoinHandle<std::io::Result<()>>>,
    files: FilesClosed,
    panel_addr: Option<SocketAddr>,
}

impl std::ops::Deref for Replica {
    type Target = ReplicaCore;

    fn deref(&self) -> &ReplicaCore {
        &self.core
    }
}

impl Replica {
    /// Listens, opens the data directory and starts Raft and the servers. A new data
    /// directory starts as an uninitialised node: [`ReplicaCore::initialize`] it, or add it
    /// to an existing cluster.
    pub async fn start(config: ReplicaConfig) -> Result<Self, ReplicaError> {
        // Boxed: with openraft's start-up and the servers' types in it, this future is deep
        // enough that embedding it in its callers' futures overflows the compiler's layout
        // depth limit (128).
        Box::pin(Self::bind_open_and_serve(config)).await
    }

    async fn bind_open_and_serve(config: ReplicaConfig) -> Result<Self, ReplicaError> {
        let (grpc_listener, grpc_addr) = bind(config.listen).await?;
        let http_listener = match config.http_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let slap_listener = match &config.slap {
            Some(slap) => Some(bind(slap.listen).await?),
            None => None,
        };
        let panel_listener = match config.panel {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let panel_addr = panel_listener.as_ref().map(|(_, addr)| *addr);
        let listening = Listening {
            grpc: grpc_addr,
            http: http_listener.as_ref().map(|(_, addr)| *addr),
            slap: slap_listener.as_ref().map(|(_, addr)| *addr),
        };
        let Opened { core, files } = ReplicaCore::open(&config, listening).await?;

        // The HTTP listeners (operations, SLAP) stop when the replica does.
        let mut http = Vec::new();
        if let Some((listener, _)) = http_listener {
            http.push(tokio::spawn(crate::observe::http::serve(
                listener,
                Arc::downgrade(&core),
                core.stopping_signal(),
            )));
        }
        if let (Some((listener, _)), Some(slap)) = (slap_listener, &config.slap) {
            let trust = match (&slap.plaintext_user, core.current_tls()) {
                (Some(user), _) => crate::slap::server::Trust::Plaintext { user: user.clone() },
                (None, Some(tls)) => crate::slap::server::Trust::Certificates(tls.clone()),
                (None, None) => {
                    return Err(crate::tls::TlsError::Material(
                        "SLAP over HTTPS needs a replica running TLS (or a plaintext user)".into(),
                    )
                    .into());
                }
            };
            http.push(tokio::spawn(crate::slap::server::serve(
                listener,
                Arc::downgrade(&core),
                trust,
                core.stopping_signal(),
            )));
        }

        if let Some((listener, _)) = panel_listener {
            let Some(tls) = core.current_tls() else {
                return Err(crate::tls::TlsError::Material(
                    "the web panel needs a replica running TLS: browsers log in with their \
                     certificates"
                        .into(),
                )
                .into());
            };
            http.push(tokio::spawn(crate::panel::serve(
                listener,
                Arc::downgrade(&core),
                tls.clone(),
                core.stopping_signal(),
            )));
        }

        let (stop_grpc, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let router = crate::grpc::router(&core);
        let budgets = core.budgets().clone();
        let grpc = match core.current_tls() {
            Some(tls) => tokio::spawn(router.serve_with_incoming_shutdown(
                crate::listen::incoming(grpc_listener, tls.clone(), budgets),
                stopped,
            )),
            None => tokio::spawn(router.serve_with_incoming_shutdown(
                crate::listen::incoming_plaintext(grpc_listener, budgets),
                stopped,
            )),
        };
        tracing::info!(id = config.id, %grpc_addr, "replica started");
        Ok(Self {
            core,
            stop_grpc,
            grpc,
            http,
            files,
            panel_addr,
        })
    }

    /// Where the web panel listens, if it does.
    pub fn panel_addr(&self) -> Option<SocketAddr> {
        self.panel_addr
    }

    /// The shared core, for services and tasks that outlive a borrow of the replica.
    pub fn core(&self) -> &Arc<ReplicaCore> {
        &self.core
    }

    /// Stops serving and stops Raft. The data directory is released once openraft's tasks
    /// have ended.
    pub async fn shutdown(self) -> Result<(), ReplicaError> {
        let Self {
            core,
            stop_grpc,
            grpc,
            http,
            files,
            ..
        } = self;
        core.stop_serving();
        let _ = stop_grpc.send(());
        for http in http {
            match http.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%e, "the HTTP listener failed"),
                Err(e) => tracing::warn!(%e, "the HTTP listener's task failed"),
            }
        }
        let raft = core.raft().shutdown().await;
        let grpc = grpc.await;
        drop(core);
        files.wait().await;
        raft.map_err(|source| ReplicaError::Task {
            what: "Raft's core",
            source,
        })?;
        grpc.map_err(|source| ReplicaError::Task {
            what: "the gRPC server",
            source,
        })??;
        Ok(())
    }
}

/// Listens on `addr`; answers the listener and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ReplicaError> {
    let listen = |source| ReplicaError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
}
