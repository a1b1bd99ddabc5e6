//! The gate of a replica's gRPC port: every call passes it before a byte of its body is read.
//!
//! 1. The policy names the call's operation (`policy::grpc_operation`); a method it does not
//!    name is refused (`Unimplemented`).
//! 2. The caller is authenticated from its certificate chain (validity, the cluster's root,
//!    revocation) and headers, as [`super::caller`] does: `Unauthenticated` otherwise. Only
//!    `Node.Enroll` needs no certificate (its one-time token is the credential), and in
//!    plaintext replicas call the Raft service and ask each other's status without a name.
//! 3. The policy says whether such a caller may attempt the operation at all
//!    (`policy::may_attempt`): `PermissionDenied` otherwise. The handler then decides on the
//!    call's target with `policy::decide`.
//!
//! So a stranger's 60 MB Raft message is refused from its headers, never buffered or decoded.
//! The verified actor travels to the handler in the request's extensions ([`Authenticated`]),
//! so a chain is verified once per call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::replica::ReplicaCore;
use crate::state::model::Actor;
use crate::state::policy::{self, Operation};

/// The caller, as the gate authenticated it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Actor);

#[derive(Clone)]
pub(crate) struct GateLayer {
    pub core: Arc<ReplicaCore>,
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            core: self.core.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    core: Arc<ReplicaCore>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match admit(&self.core, &request) {
            Ok(Some(actor)) => {
                request.extensions_mut().insert(Authenticated(actor));
            }
            Ok(None) => {}
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        }
        Box::pin(self.inner.call(request))
    }
}

/// The gate's decision from the call's path, headers and connection: the authenticated actor
/// (none for a call that needs none), or the refusal.
fn admit<B>(core: &ReplicaCore, request: &http::Request<B>) -> Result<Option<Actor>, Status> {
    let path = request.uri().path();
    let operation = policy::grpc_operation(path).ok_or_else(|| {
        Status::unimplemented(format!("{path} is not an operation of this master"))
    })?;
    // In plaintext (a trusted dev network) nobody is known by a certificate: replicas call
    // each other, and ask for a status, without naming themselves.
    let plaintext = core.tls().is_none();
    let anonymous = operation == Operation::Enroll
        || (plaintext
            && matches!(
                operation,
                Operation::Replicate | Operation::ReadReplicaStatus
            ));
    if anonymous {
        return Ok(None);
    }
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs);
    let metadata = MetadataMap::from_headers(request.headers().clone());
    let actor = super::authenticate(core, certificates.as_deref().map(Vec::as_slice), &metadata)?;
    if !policy::may_attempt(&actor, operation) {
        tracing::info!(%actor, %path, "call refused at the gate");
        return Err(Status::permission_denied(format!(
            "{actor} may not {operation} anything here ({path})"
        )));
    }
    Ok(Some(actor))
}
