//! openraft's network over gRPC: one lazily connected channel per peer, reused by replication,
//! votes, snapshots and forwarded writes alike.
//!
//! Replication streams: `StreamAppend` carries a follower's AppendEntries one after another on
//! one gRPC stream, several in flight, answered in order, so that distance between replicas
//! costs one round trip per stream rather than per batch. A peer of an earlier release answers
//! it `Unimplemented` and is sent unary `AppendEntries` for a while ([`UNARY_RETRY_AFTER`]).
//! Snapshots go in chunks over `InstallSnapshot` (openraft-legacy's messages and receiver, the
//! exchange every release so far speaks).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream as FuturesBoxStream;
use futures_util::{FutureExt, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::decompose::DecomposeResult;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use openraft_legacy::network_v1::{
    InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotMeta,
};
use serde::de::DeserializeOwned;
use slapcluster_api::v1::RaftPayload;
use slapcluster_api::v1::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

use super::wire::{self, ForwardError};
use crate::state::{Command, MasterConfig, ReplicaNode, Response};

/// How long a new connection may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a peer that answered `StreamAppend` with `Unimplemented` (a replica of an earlier
/// release, during a rolling upgrade) is sent unary appends before streaming is tried again.
pub const UNARY_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long an append that was already waiting may go unanswered on a stream before the stream
/// counts as stalled (a peer that stopped reading, a connection that went silent): at least a
/// second, ten replication timeouts on a slow link. openraft then opens a new stream.
fn stall_limit(option: &RPCOption) -> Duration {
    (option.hard_ttl() * 10).max(Duration::from_secs(1))
}

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

    /// Pings the replica at `addr` (see `links`). A replica of an earlier release, which
    /// does not know the call, answers `Unimplemented`: it answered all the same.
    pub async fn ping(&self, addr: &str, timeout: Duration) -> Result<(), tonic::Status> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(RaftPayload {
            payload: wire::encode(&()),
        });
        request.set_timeout(timeout);
        match client.ping(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Err(status) => Err(status),
        }
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
            unary_until: None,
        }
    }
}

type Error<E = openraft::errors::Infallible> = RPCError<MasterConfig, RaftError<MasterConfig, E>>;

pub struct PeerConnection {
    target: u64,
    /// An unusable address stays an error, reported on every call (openraft backs off).
    channel: Result<Channel, String>,
    /// Until when this peer gets unary appends instead of a stream (it does not know them).
    unary_until: Option<Instant>,
}

/// Which RPC of the Raft service a call uses.
enum Rpc {
    AppendEntries,
    Vote,
    PreVote,
    InstallSnapshot,
    TransferLeader,
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<MasterConfig>> {
        let channel = self
            .channel
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        Ok(RaftClient::new(channel))
    }

    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Error<E>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let sent = self.send(rpc, request, option).await.map_err(widen)?;
        self.answer(sent.map_err(|status| widen(status_error(&status)))?)
    }

    /// Sends one unary call; the peer's gRPC status as it came, for callers that look at it.
    async fn send<Req: serde::Serialize>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Result<tonic::Response<RaftPayload>, tonic::Status>, RPCError<MasterConfig>> {
        let mut client = self.client()?;
        let mut grpc = tonic::Request::new(RaftPayload {
            payload: wire::encode(request),
        });
        grpc.set_timeout(option.hard_ttl());
        Ok(match rpc {
            Rpc::AppendEntries => client.append_entries(grpc).await,
            Rpc::Vote => client.vote(grpc).await,
            Rpc::PreVote => client.pre_vote(grpc).await,
            Rpc::InstallSnapshot => client.install_snapshot(grpc).await,
            Rpc::TransferLeader => client.transfer_leader(grpc).await,
        })
    }

    /// A peer's answer to a unary call, decoded.
    fn answer<Resp, E>(&self, reply: tonic::Response<RaftPayload>) -> Result<Resp, Error<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        // A peer's error that does not decode (a release whose openraft encodes its errors
        // differently) is a network error with the decoder's reason, never a misread answer.
        let result: Result<Resp, RaftError<MasterConfig, E>> =
            wire::decode("raft reply", &reply.into_inner().payload)
                .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// The appends of `input` on one `StreamAppend` call, answered in order.
    async fn stream(
        &mut self,
        mut input: impl futures_util::Stream<Item = AppendEntriesRequest<MasterConfig>>
        + Send
        + Unpin
        + 'static,
        option: RPCOption,
    ) -> Result<StreamAnswers, RPCError<MasterConfig>> {
        let mut client = self.client()?;
        // The first append is taken before the call opens: openraft's request stream waits out
        // its backoff there, so a peer that refuses connections is retried at that pace rather
        // than as fast as connections fail. Nothing to send opens no call.
        let Some(first) = input.next().await else {
            return Ok(futures_util::stream::empty().boxed());
        };
        let input = futures_util::stream::once(std::future::ready(first)).chain(input);
        let sent = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&sent);
        let requests = input.map(move |request| {
            counted.fetch_add(1, Ordering::Relaxed);
            RaftPayload {
                payload: wire::encode(&request),
            }
        });
        let answers = match client.stream_append(requests).await {
            Ok(answers) => answers.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::Unimplemented {
                    tracing::info!(
                        target = self.target,
                        "peer has no StreamAppend (an earlier release): unary appends for {:?}",
                        UNARY_RETRY_AFTER
                    );
                    self.unary_until = Some(Instant::now() + UNARY_RETRY_AFTER);
                }
                return Err(status_error(&status));
            }
        };
        let stalled_after = stall_limit(&option);
        let state = StreamState {
            target: self.target,
            answers,
            sent,
            answered: 0,
            ended: false,
        };
        Ok(
            futures_util::stream::unfold(state, move |mut state| async move {
                if state.ended {
                    return None;
                }
                let item = state.next(stalled_after).await;
                state.ended = !matches!(item, Some(Ok(Ok(_))));
                item.map(|item| (item, state))
            })
            .boxed(),
        )
    }
}

type StreamAnswers =
    FuturesBoxStream<'static, Result<StreamAppendResult<MasterConfig>, RPCError<MasterConfig>>>;

/// The receiving half of a `StreamAppend` call, and how many appends it answers for.
struct StreamState {
    target: u64,
    answers: tonic::Streaming<RaftPayload>,
    /// Appends sent so far (counted as the request stream yields them).
    sent: Arc<AtomicU64>,
    answered: u64,
    ended: bool,
}

impl StreamState {
    /// The next answer; `None` when the peer ended the stream. An error ends the stream.
    async fn next(
        &mut self,
        stalled_after: Duration,
    ) -> Option<Result<StreamAppendResult<MasterConfig>, RPCError<MasterConfig>>> {
        loop {
            // Only an append that was waiting when this window opened can stall it: one sent
            // just before the window closes has had no time to be answered.
            let waiting_at_start = self.sent.load(Ordering::Relaxed);
            match tokio::time::timeout(stalled_after, self.answers.message()).await {
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => return Some(Err(status_error(&status))),
                Ok(Ok(Some(answer))) => {
                    self.answered += 1;
                    let decoded: Result<
                        Result<StreamAppendResult<MasterConfig>, Fatal<MasterConfig>>,
                        tonic::Status,
                    > = wire::decode("stream-append reply", &answer.payload);
                    return Some(match decoded {
                        Ok(Ok(result)) => Ok(result),
                        Ok(Err(fatal)) => Err(RPCError::Network(NetworkError::new(&fatal))),
                        Err(status) => Err(RPCError::Network(NetworkError::new(&status))),
                    });
                }
                Err(_elapsed) if waiting_at_start > self.answered => {
                    let timeout = Timeout {
                        action: openraft::RPCTypes::AppendEntries,
                        id: 0,
                        target: self.target,
                        timeout: stalled_after,
                    };
                    return Some(Err(RPCError::Timeout(timeout)));
                }
                // Idle: nothing was waiting; the stream stays open for the next appends.
                Err(_elapsed) => {}
            }
        }
    }
}

/// A gRPC failure as openraft sees it: a peer that is down or unreachable makes openraft back
/// off before it retries; anything else is retried at once.
fn status_error(status: &tonic::Status) -> RPCError<MasterConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

/// An error of a call that has no remote error of its own, as one of a call that has.
fn widen<E: std::error::Error>(error: RPCError<MasterConfig>) -> Error<E> {
    match error {
        RPCError::Timeout(e) => RPCError::Timeout(e),
        RPCError::Unreachable(e) => RPCError::Unreachable(e),
        RPCError::Network(e) => RPCError::Network(e),
        RPCError::RemoteError(e) => match e.source {},
    }
}

impl RaftNetworkV2<MasterConfig> for PeerConnection {
    type SnapshotData = tokio::fs::File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MasterConfig>, RPCError<MasterConfig>> {
        self.call::<_, _, openraft::errors::Infallible>(Rpc::AppendEntries, &rpc, &option)
            .await
            .decompose_infallible()
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<MasterConfig>, RPCError<MasterConfig>>>,
            RPCError<MasterConfig>,
        >,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<MasterConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        if self.unary_until.is_some_and(|until| Instant::now() < until) {
            return stream_append_sequential(self, input, option);
        }
        self.unary_until = None;
        Box::pin(async move {
            let answers: BoxStream<'s, _> = self.stream(input, option).await?;
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<MasterConfig>, RPCError<MasterConfig>> {
        self.call::<_, _, openraft::errors::Infallible>(Rpc::Vote, &rpc, &option)
            .await
            .decompose_infallible()
    }

    /// The leader hands over to this peer (`slapctl member leader`): it stands at once. A peer
    /// of an earlier release answers `Unimplemented`, a network error: the leader then waits
    /// for its lease to run out and the election takes its course.
    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<MasterConfig>, RPCError<MasterConfig>> {
        let sent = self.send(Rpc::TransferLeader, &rpc, &option).await?;
        let reply = sent.map_err(|status| status_error(&status))?;
        let answer: Result<TransferLeaderResponse<MasterConfig>, Fatal<MasterConfig>> =
            wire::decode("transfer-leader reply", &reply.into_inner().payload)
                .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        answer.map_err(|fatal| RPCError::Network(NetworkError::new(&fatal)))
    }

    /// A peer of the previous release has no `PreVote` and answers `Unimplemented`: counted as
    /// granting, as openraft counts a network without pre-vote, so that elections go on during
    /// a rolling upgrade. A peer that cannot be reached grants nothing: a replica cut off from
    /// the others never raises its term.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<MasterConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<MasterConfig>, RPCError<MasterConfig>> {
        let sent = match self.send(Rpc::PreVote, &rpc, &option).await? {
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                return Ok(VoteResponse::new(rpc.vote, None, true));
            }
            Err(status) => return Err(status_error(&status)),
            Ok(reply) => reply,
        };
        self.answer::<_, openraft::errors::Infallible>(sent)
            .decompose_infallible()
    }

    /// In chunks over `InstallSnapshot` (openraft-legacy's messages, which every release so
    /// far speaks), announced under the id in the file's header: a replica of the previous
    /// release refuses a file whose header names another id than the one announced.
    async fn full_snapshot(
        &mut self,
        vote: raft_store::Vote,
        snapshot: SnapshotOf<MasterConfig, tokio::fs::File>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<MasterConfig>, StreamingError<MasterConfig>> {
        let signature = snapshot.meta.signature();
        let unreadable = move |e: std::io::Error| {
            StreamingError::StorageError(StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(signature.clone())),
                ErrorVerb::Read,
                e,
            ))
        };
        let mut file = snapshot.snapshot.into_std().await;
        let (file, id) = blocking(move || {
            let id = raft_store::snapshot_id(&mut file, Path::new("(snapshot to send)"))?;
            Ok((file, id))
        })
        .await
        .map_err(&unreadable)?;
        let end = file.metadata().map_err(&unreadable)?.len();
        let file = Arc::new(file);
        let meta = SnapshotMeta::<MasterConfig>::new(snapshot.meta, id);
        let chunk = option
            .snapshot_chunk_size()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(DEFAULT_SNAPSHOT_CHUNK)
            .max(1);
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0;
        loop {
            if let Some(closed) = (&mut cancel).now_or_never() {
                return Err(closed.into());
            }
            let len = chunk.min(end - offset);
            let data = {
                let file = Arc::clone(&file);
                blocking(move || read_chunk(&file, offset, len))
                    .await
                    .map_err(&unreadable)?
            };
            let done = offset + len == end;
            let request = InstallSnapshotRequest {
                vote,
                meta: meta.clone(),
                offset,
                data,
                done,
            };
            let answer = self
                .call::<_, InstallSnapshotResponse<MasterConfig>, InstallSnapshotError>(
                    Rpc::InstallSnapshot,
                    &request,
                    &option,
                )
                .await;
            match answer {
                Ok(reply) if reply.vote != vote || done => {
                    return Ok(SnapshotResponse::new(reply.vote));
                }
                Ok(_) => offset += len,
                // The receiver lost the transfer (it restarted, or began another): again.
                Err(RPCError::RemoteError(RemoteError {
                    source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_)),
                    ..
                })) => offset = 0,
                Err(RPCError::Timeout(e)) => return Err(e.into()),
                Err(RPCError::Unreachable(e)) => return Err(e.into()),
                Err(RPCError::Network(e)) => return Err(e.into()),
                Err(RPCError::RemoteError(e)) => return Err(NetworkError::new(&e).into()),
            }
        }
    }
}

/// Chunk size when openraft names none (it always does: `snapshot_max_chunk_size`).
const DEFAULT_SNAPSHOT_CHUNK: u64 = 3 << 20;

/// `work` on the blocking pool; a panic there is an I/O error like any other.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

fn read_chunk(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut data = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}
