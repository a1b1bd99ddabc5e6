//! openraft's network over gRPC: one lazily connected channel per peer, reused by replication,
//! votes, snapshots and forwarded writes alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use slapcluster_api::v1::RaftPayload;
use slapcluster_api::v1::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

use super::wire::{self, ForwardError};
use crate::state::{Command, MasterConfig, ReplicaNode, Response};

/// How long a new connection may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The channels to the other replicas, by address. Cheap to clone.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// How to reach peers over TLS (with this replica's certificate); `None` for plaintext.
    tls: Arc<std::sync::RwLock<Option<tonic::transport::ClientTlsConfig>>>,
}

impl Peers {
    /// Peers reached over TLS with `tls`, or in plaintext.
    pub fn new(tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        Self {
            channels: Default::default(),
            tls: Arc::new(std::sync::RwLock::new(tls)),
        }
    }

    /// Uses `tls` for new connections (after a certificate reload); channels are reopened.
    pub fn set_tls(&self, tls: tonic::transport::ClientTlsConfig) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The channel to `addr` (`http://[host]:port`), created on first use. A channel reconnects
    /// by itself after a failure; an address that cannot even be parsed gives an error.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        // A poisoned lock only means another task panicked while inserting; the map is intact.
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(addr.to_string())?;
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends a command to the replica at `addr` to be committed there (it must lead); returns
    /// its answer and the log index it was committed at.
    pub async fn forward(
        &self,
        addr: &str,
        command: &Command,
        timeout: Duration,
    ) -> Result<Result<(Response, u64), ForwardError>, tonic::Status> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(RaftPayload {
            payload: wire::encode(command),
        });
        request.set_timeout(timeout);
        let reply = client.forward(request).await?;
        wire::decode("forward reply", &reply.into_inner().payload)
    }

    /// Asks the replica at `addr` (it must lead) for the index a linearizable read waits for.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<Option<u64>, ForwardError>, tonic::Status> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(RaftPayload {
            payload: wire::encode(&()),
        });
        request.set_timeout(timeout);
        let reply = client.read_index(request).await?;
        wire::decode("read-index reply", &reply.into_inner().payload)
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::Status> {
        self.channel(addr)
            .map(RaftClient::new)
            .map_err(|e| tonic::Status::invalid_argument(format!("peer address {addr}: {e}")))
    }
}

/// openraft's factory: one connection per target, over the shared peer channels.
#[derive(Clone, Default)]
pub struct Network {
    pub peers: Peers,
}

impl RaftNetworkFactory<MasterConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &ReplicaNode) -> PeerConnection {
        PeerConnection {
            target,
            channel: self.peers.channel(&node.addr).map_err(|e| e.to_string()),
        }
    }
}

pub struct PeerConnection {
    target: u64,
    /// An unusable address stays an error, reported on every call (openraft backs off).
    channel: Result<Channel, String>,
}

/// Which RPC of the Raft service a call uses.
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, ReplicaNode, RaftError<u64, E>>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .channel
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let mut client = RaftClient::new(channel);
        let mut grpc = tonic::Request::new(RaftPayload {
            payload: wire::encode(request),
        });
        grpc.set_timeout(option.hard_ttl());
        let sent = match rpc {
            Rpc::AppendEntries => client.append_entries(grpc).await,
            Rpc::Vote => client.vote(grpc).await,
            Rpc::InstallSnapshot => client.install_snapshot(grpc).await,
        };
        let reply = sent.map_err(|status| match status.code() {
            // The peer is down or not reachable: openraft backs off before retrying.
            tonic::Code::Unavailable | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<u64, E>> =
            wire::decode("raft reply", &reply.into_inner().payload)
                .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<MasterConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
