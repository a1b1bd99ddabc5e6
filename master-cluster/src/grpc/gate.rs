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
//! 4. The replica's budgets (`crate::limits`) admit the call: calls a second and in flight for
//!    its identity and address (`ResourceExhausted` otherwise). Its body is then charged to
//!    the decode budget as it arrives, at what it can cost once decoded
//!    (`slapcluster_api::codec::decode_charge`), and the charge is held until the answer: a
//!    call that does not fit is refused before its message is decoded. Raft's own calls are
//!    neither limited nor charged.
//!
//! So a stranger's 60 MB Raft message is refused from its headers, never buffered or decoded.
//! The verified actor travels to the handler in the request's extensions ([`Authenticated`]),
//! so a chain is verified once per call.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::limits::DecodeCharge;
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

impl<S, RB> tower::Service<http::Request<Body>> for Gate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<RB>>,
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

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let refused = |status: Status| -> Self::Future {
            Box::pin(std::future::ready(Ok(status.into_http())))
        };
        let (actor, operation) = match admit(&self.core, &request) {
            Ok(admitted) => admitted,
            Err(status) => return refused(status),
        };
        if operation == Operation::Replicate {
            return Box::pin(self.inner.call(request));
        }
        let budgets = self.core.budgets();
        let address = remote_address(&request);
        let permit = match budgets.admit_call(actor.as_ref(), address, Instant::now()) {
            Ok(permit) => permit,
            Err(exhausted) => {
                tracing::info!(%exhausted, "call refused by the replica's budgets");
                return refused(Status::resource_exhausted(exhausted.to_string()));
            }
        };
        let charge = Arc::new(budgets.decode_charge(actor.as_ref()));
        let (mut parts, body) = request.into_parts();
        if let Some(actor) = actor {
            parts.extensions.insert(Authenticated(actor));
        }
        let body = Body::new(Charged {
            inner: body,
            charge: charge.clone(),
            received: 0,
        });
        let answer = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let answer = answer.await;
            // Answered: the call leaves its caller's calls in flight, and gives back its
            // charge once its body is gone too.
            drop((permit, charge));
            answer
        })
    }
}

/// Where a call comes from, as its connection says.
fn remote_address(request: &http::Request<Body>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|tls| tls.get_ref().remote_addr())
        .or_else(|| extensions.get::<TcpConnectInfo>()?.remote_addr())
        .map(|address| address.ip())
}

/// A request body charged to the decode budget as its bytes arrive: a frame that takes the
/// charge past the budget ends the body with `ResourceExhausted`, before tonic decodes it.
struct Charged {
    inner: Body,
    charge: Arc<DecodeCharge>,
    received: u64,
}

impl http_body::Body for Charged {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            self.received += data.len() as u64;
            let cost = slapcluster_api::codec::decode_charge(self.received);
            if let Err(exhausted) = self.charge.grow_to(cost) {
                tracing::info!(%exhausted, "request refused by the decode budget");
                return Poll::Ready(Some(Err(Status::resource_exhausted(exhausted.to_string()))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The gate's decision from the call's path, headers and connection: the authenticated actor
/// (none for a call that needs none) and the operation, or the refusal.
fn admit<B>(
    core: &ReplicaCore,
    request: &http::Request<B>,
) -> Result<(Option<Actor>, Operation), Status> {
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
        return Ok((None, operation));
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
    Ok((Some(actor), operation))
}
