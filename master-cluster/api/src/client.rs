//! Connecting to a replica, for every client of the contract (node agents, `slapctl`, the
//! load tool, `slapmaster` itself): one channel per replica address, TCP_NODELAY on, and the
//! caller's identity in the [`ACTOR_HEADER`] until connections carry certificates.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The request header in which a caller names itself: `user:NAME`, `operator:NAME`,
/// `computer:ID` or `partition:COMPUTER/PARTITION`.
pub const ACTOR_HEADER: &str = "slapcluster-actor";

/// Why a call did not reach a replica or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url} is not a replica address (say http://[host]:port): {source}")]
    Address {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{actor:?} cannot be sent as {ACTOR_HEADER}")]
    Actor { actor: String },
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// A channel to the replica at `url` (`http://[host]:port`), connected now so that a wrong
/// address fails here.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    connect_with(url, None).await
}

/// [`connect`] over TLS (`https://[host]:port`): the cluster's roots and this client's
/// certificate in `tls`.
pub async fn connect_with(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, ClientError> {
    let mut endpoint = endpoint(url)?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| ClientError::Address {
                url: url.to_string(),
                source,
            })?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_string(),
            source,
        })
}

/// A channel that connects on first use (and reconnects after a failure).
pub fn connect_lazy(url: &str) -> Result<Channel, ClientError> {
    Ok(endpoint(url)?.connect_lazy())
}

fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|source| ClientError::Address {
            url: url.to_string(),
            source,
        })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// `message` as a request from `actor`.
pub fn as_actor<T>(message: T, actor: &str) -> Result<tonic::Request<T>, ClientError> {
    let mut request = tonic::Request::new(message);
    let value = actor.parse().map_err(|_| ClientError::Actor {
        actor: actor.to_string(),
    })?;
    request.metadata_mut().insert(ACTOR_HEADER, value);
    Ok(request)
}
