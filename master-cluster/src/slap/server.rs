//! The SLAP HTTP listener: one per replica when `slap_listen` is set. HTTPS with the
//! replica's certificate, callers identified by their client certificates (computers,
//! partitions, users, operators, as on gRPC); plain HTTP only when the configuration says the
//! network is trusted, callers then named by the call itself.
//!
//! Every call becomes the same command or query as its gRPC counterpart, through the same
//! [`ReplicaCore`]: writes reach the leader from any replica, and a follower reads its own
//! applied state (a node's poll, as on gRPC) or, after a write, waits to have applied it.
//! Failures keep their meaning on the wire: the domain's refusals and the caller's mistakes
//! are 4xx (404 for an unknown computer, partition or instance; 408 while a request waits for
//! a partition, which the client retries), a cluster that cannot answer now is 503 (a node
//! keeps running what it has), and 500 is left for a replica that cannot read its own state.

use std::sync::{Arc, Weak};

use crate::state::{Rejection, RejectionKind};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::form::{Form, FormError, partition_authorization};
use super::marshal::{self, Value};
use crate::limits::{MAX_CLIENT_MESSAGE_BYTES, bounded};
use crate::listen::HttpPeer;
use crate::replica::signing::SignError;
use crate::replica::{CallError, ReadError, ReplicaCore, WriteError};
use crate::state::model::{Actor, ComputerId, PartitionId, UserId};
use crate::state::policy;

/// How a SLAP listener learns who calls.
#[derive(Clone)]
pub enum Trust {
    /// HTTPS: the client certificate, verified on every call like gRPC's.
    Certificates(Arc<crate::tls::CurrentTls>),
    /// danger: plain HTTP on a trusted network. A call naming a partition (its authorization
    /// header, or `computer_id` and `computer_partition_id`) acts as that partition, one
    /// naming a computer as that computer, and any other as this user.
    Plaintext { user: UserId },
}

#[derive(Clone)]
struct Shared {
    core: Weak<ReplicaCore>,
    trust: Trust,
    document_cache: Arc<super::calls::DocumentCache>,
}

/// A call's failure: the HTTP status and a message for the caller.
#[derive(Debug)]
pub(crate) struct Failure(pub StatusCode, pub String);

impl Failure {
    /// A budget of the replica's refused the call: 429, retry later.
    pub fn busy(exhausted: crate::limits::Exhausted) -> Self {
        Self(StatusCode::TOO_MANY_REQUESTS, exhausted.to_string())
    }

    pub fn bad(reason: impl std::fmt::Display) -> Self {
        Self(StatusCode::BAD_REQUEST, reason.to_string())
    }

    pub fn forbidden(reason: impl std::fmt::Display) -> Self {
        Self(StatusCode::FORBIDDEN, reason.to_string())
    }

    pub fn not_found(reason: impl std::fmt::Display) -> Self {
        Self(StatusCode::NOT_FOUND, reason.to_string())
    }
}

/// The HTTP status of a domain refusal (SLAP's, and the web panel's).
pub(crate) fn rejection_status(kind: RejectionKind) -> StatusCode {
    match kind {
        RejectionKind::NotFound => StatusCode::NOT_FOUND,
        RejectionKind::Forbidden => StatusCode::FORBIDDEN,
        RejectionKind::OverQuota => StatusCode::TOO_MANY_REQUESTS,
        RejectionKind::Invalid => StatusCode::BAD_REQUEST,
        RejectionKind::Conflict => StatusCode::CONFLICT,
    }
}

/// The domain's refusals, as SLAP clients read HTTP statuses.
impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Self(rejection_status(rejection.kind()), rejection.to_string())
    }
}

impl From<SignError> for Failure {
    fn from(error: SignError) -> Self {
        let status = match error {
            SignError::NoSigner | SignError::NoTls => StatusCode::CONFLICT,
            SignError::Request(_) => StatusCode::BAD_REQUEST,
            SignError::Issued(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Rejected(rejection) => rejection.into(),
            CallError::Unavailable(error) => error.into(),
        }
    }
}

/// The policy's refusals, as SLAP answers.
impl From<policy::Refusal> for Failure {
    fn from(refusal: policy::Refusal) -> Self {
        tracing::info!(%refusal, "SLAP call refused");
        Self::forbidden(refusal.to_string())
    }
}

impl From<FormError> for Failure {
    fn from(error: FormError) -> Self {
        Self::bad(error)
    }
}

impl From<ReadError> for Failure {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Barrier(error) => error.into(),
            // The replica cannot read its own state: the caller should try another replica.
            ReadError::State(_)
            | ReadError::Storage(_)
            | ReadError::Task(_)
            | ReadError::Stopped => {
                tracing::error!(%error, "SLAP read failed");
                Self(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
        }
    }
}

/// The cluster could not answer now (no leader, a lagging or stopping replica): retry.
impl From<WriteError> for Failure {
    fn from(error: WriteError) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let Failure(status, message) = self;
        let mut message = bounded(message);
        message.push('\n');
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

pub(super) type Answer = Result<Response, Failure>;

pub(super) fn text(body: &str) -> Answer {
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response())
}

pub(super) fn xml(value: &Value) -> Answer {
    Ok(xml_bytes(Bytes::from(marshal::encode(value))))
}

/// A JSON document as the answer (the HATEOAS API's).
pub(super) fn json(value: &serde_json::Value) -> Answer {
    Ok((
        [(header::CONTENT_TYPE, "application/hal+json")],
        value.to_string(),
    )
        .into_response())
}

/// An encoded document as the answer.
fn xml_bytes(document: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        document,
    )
        .into_response()
}

/// A computer's document, tagged with its version.
pub(super) fn xml_document(document: Bytes, tag: &str) -> Response {
    let mut response = xml_bytes(document);
    if let Ok(tag) = header::HeaderValue::from_str(tag) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// 304: what the client holds, tagged `tag`, is current.
pub(super) fn not_modified(tag: &str) -> Response {
    (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response()
}

/// Serves SLAP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    core: Weak<ReplicaCore>,
    trust: Trust,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(budgets) = core.upgrade().map(|core| core.budgets().clone()) else {
        return Ok(());
    };
    let app = Router::new().fallback(call).with_state(Shared {
        core,
        trust: trust.clone(),
        document_cache: Arc::default(),
    });
    let tls = match trust {
        Trust::Plaintext { .. } => None,
        Trust::Certificates(tls) => Some(tls),
    };
    crate::listen::serve_app(listener, budgets, tls, "SLAP", shutdown, app).await
}

/// One call: its name is the last segment of the path (the client joins call names to its
/// master URL, which may have a path of its own).
async fn call(
    State(shared): State<Shared>,
    Extension(peer): Extension<HttpPeer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(core) = shared.core.upgrade() else {
        return Failure(StatusCode::SERVICE_UNAVAILABLE, "replica stopped".into()).into_response();
    };
    let name = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let started = std::time::Instant::now();
    let answer = async {
        // A call the policy does not name is refused before anything of it is read.
        let operation = policy::slap_operation(&name)
            .ok_or_else(|| Failure::not_found(format!("no SLAP call {name:?}")))?;
        // A token call's credential is its token, not a certificate; its body is not read.
        if operation == policy::Operation::Enroll {
            let _permit = core
                .budgets()
                .admit_call(None, Some(peer.address), std::time::Instant::now())
                .map_err(Failure::busy)?;
            return super::tokens::answer(&core, &name, &headers).await;
        }
        // Who calls, from the certificate, before a byte of the body is read; then, as at the
        // gRPC gate, whether such a caller may attempt the call at all.
        let identity = verify(&core, &shared.trust, &peer)?;
        if let Identity::Verified(actor) = &identity
            && !policy::may_attempt(actor, operation)
        {
            return Err(Failure::forbidden(format!(
                "{actor} may not {operation} anything here ({name})"
            )));
        }
        // Then whether its budgets admit it (held until answered), and the decode budget what
        // its body may cost, before a byte of it is read.
        let caller = match &identity {
            Identity::Verified(actor) => Some(actor),
            Identity::Plaintext(_) => None,
        };
        let budgets = core.budgets();
        let _permit = budgets
            .admit_call(caller, Some(peer.address), std::time::Instant::now())
            .map_err(Failure::busy)?;
        let charge = budgets.decode_charge(caller);
        let mut form = Form::parse(uri.query().unwrap_or_default())?;
        if method == Method::POST {
            form.extend(read_form(&headers, body, &charge).await?)?;
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .map_err(|_| Failure::bad("the Authorization header is not text"))
            })
            .transpose()?;
        let caller = Caller::identify(identity, authorization, &form)?;
        let call = super::calls::Call {
            core: &core,
            operation,
            form,
            caller,
            document_cache: shared.document_cache.clone(),
            charge: &charge,
            reached: Reached {
                https: matches!(shared.trust, Trust::Certificates(_)),
                uri: &uri,
                headers: &headers,
            },
        };
        call.run(&name).await
    }
    .await;
    let response = match answer {
        Ok(response) => response,
        Err(failure) => {
            tracing::debug!(call = %name, status = %failure.0, message = %failure.1, "SLAP call refused");
            failure.into_response()
        }
    };
    // Names no call has share one label, so that the metrics stay bounded.
    let label = super::calls::CALLS
        .iter()
        .find(|c| **c == name)
        .copied()
        .unwrap_or("unknown");
    let metrics = core.metrics();
    metrics.slap_calls.get(label).observe(started.elapsed());
    if response.status().as_u16() >= 400 {
        metrics.slap_call_errors.get(label).inc();
    }
    response
}

/// How the caller reached this listener: for the URLs an answer gives back to it.
pub(super) struct Reached<'a> {
    pub https: bool,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl Reached<'_> {
    /// The entity tags the client says it holds (`If-None-Match`), at most a few.
    pub fn if_none_match(&self) -> Vec<String> {
        self.headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/").to_string())
            .filter(|tag| !tag.is_empty())
            .take(16)
            .collect()
    }

    /// The HATEOAS endpoint beside the call: its scheme, the host the caller asked for and
    /// the master URL's own path (`…/getHateoasUrl` → `…/hateoas`). The host is the
    /// caller's to choose and only ever sent back to it, but only a host name or address
    /// with a port is taken (`None` otherwise).
    pub fn hateoas_url(&self) -> Option<String> {
        let scheme = if self.https { "https" } else { "http" };
        let host = match self.uri.authority() {
            Some(authority) => authority.as_str(),
            None => self
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default(),
        };
        let hostlike = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if host.is_empty() || !host.chars().all(hostlike) {
            return None;
        }
        let prefix = self
            .uri
            .path()
            .rsplit_once('/')
            .map_or("", |(prefix, _)| prefix);
        Some(format!("{scheme}://{host}{prefix}/hateoas"))
    }
}

/// Who calls, as far as the transport says: the certificate's identity over HTTPS (the
/// configured user in plaintext), and the partition the call names, by its authorization
/// header or its `computer_id` and `computer_partition_id` arguments.
pub(super) struct Caller {
    identity: Identity,
    named_partition: Option<PartitionId>,
}

enum Identity {
    Verified(Actor),
    Plaintext(UserId),
}

/// What a call's body may cost while it is handled, per byte: the body, the form's decoded
/// fields, and a usage journal's movements (measured by the `decode_cost` test). Marshalled
/// arguments charge what they weigh as they are decoded ([`marshal::decode_within`]).
pub const BYTES_PER_BODY_BYTE: u64 = 8;

/// How long a client may take to send a call's body once its headers are in: a body that
/// trickles in is not held, and buffered, for ever.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A POST's urlencoded form (SLAP's calls, the web panel's forms), read whole once `charge`
/// (held while the call is handled) has grown to what its declared length may cost.
pub(crate) async fn read_form(
    headers: &HeaderMap,
    body: axum::body::Body,
    charge: &crate::limits::DecodeCharge,
) -> Result<Form, Failure> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(MAX_CLIENT_MESSAGE_BYTES as u64)
        .min(MAX_CLIENT_MESSAGE_BYTES as u64);
    charge
        .grow_to(BYTES_PER_BODY_BYTE * declared)
        .map_err(Failure::busy)?;
    let body = read_body(body).await?;
    let body = std::str::from_utf8(&body).map_err(|_| Failure::bad("the form is not UTF-8"))?;
    Ok(Form::parse(body)?)
}

/// The body of a call, whole, within [`BODY_TIMEOUT`] and [`MAX_CLIENT_MESSAGE_BYTES`].
async fn read_body(body: axum::body::Body) -> Result<Bytes, Failure> {
    match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, MAX_CLIENT_MESSAGE_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_CLIENT_MESSAGE_BYTES} bytes, or was cut"),
        )),
        Err(_) => Err(Failure(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Who calls: the caller the certificate names (verified, not revoked), or in plaintext the
/// configured user. Needs nothing of the call's body.
fn verify(core: &ReplicaCore, trust: &Trust, peer: &HttpPeer) -> Result<Identity, Failure> {
    Ok(match trust {
        Trust::Plaintext { user } => Identity::Plaintext(user.clone()),
        Trust::Certificates(tls) => {
            let identity = tls
                .get()
                .verify_caller(peer.chain.as_deref().map(Vec::as_slice), &core.revoked())
                .map_err(|refusal| {
                    tracing::info!(%refusal, "SLAP caller refused");
                    Failure(
                        StatusCode::UNAUTHORIZED,
                        format!("client certificate: {refusal}"),
                    )
                })?;
            Identity::Verified(crate::replica::identity_actor(identity).ok_or_else(|| {
                Failure::forbidden("replicas do not call SLAP; they pass calls on over gRPC")
            })?)
        }
    })
}

impl Caller {
    fn identify(
        identity: Identity,
        authorization: Option<&str>,
        form: &Form,
    ) -> Result<Self, Failure> {
        let header = partition_authorization(authorization)?.map(|a| PartitionId {
            computer: a.computer_id.as_str().into(),
            partition: a.computer_partition_id.as_str().into(),
        });
        let named_partition = header.or_else(|| {
            Some(PartitionId {
                computer: form.get("computer_id")?.into(),
                partition: form.get("computer_partition_id")?.into(),
            })
        });
        Ok(Self {
            identity,
            named_partition,
        })
    }

    /// The caller acting as a partition: an instance, or its computer's node for it.
    pub fn partition(&self) -> Result<Actor, Failure> {
        let named = self.named_partition.clone();
        match (&self.identity, named) {
            (Identity::Plaintext(_), Some(partition)) => Ok(Actor::Partition(partition)),
            (Identity::Verified(Actor::Partition(own)), Some(named)) if named != *own => Err(
                Failure::forbidden(format!("partition {own} may not act as {named}")),
            ),
            (Identity::Verified(own @ Actor::Partition(_)), _) => Ok(own.clone()),
            (Identity::Verified(Actor::Computer(computer)), Some(named))
                if named.computer == *computer =>
            {
                Ok(Actor::Partition(named))
            }
            (Identity::Verified(other), Some(named)) => Err(Failure::forbidden(format!(
                "{other} may not act as partition {named}"
            ))),
            (_, None) => Err(Failure::bad(
                "name the partition: computer_id and computer_partition_id",
            )),
        }
    }

    /// The caller acting as the node of `computer`; whether it may is the command's to say.
    pub fn computer(&self, computer: &ComputerId) -> Actor {
        match &self.identity {
            Identity::Verified(actor) => actor.clone(),
            Identity::Plaintext(_) => Actor::Computer(computer.clone()),
        }
    }

    /// The caller acting as itself: a user or an operator, or a partition requesting a child.
    pub fn requester(&self) -> Result<Actor, Failure> {
        match (&self.identity, &self.named_partition) {
            (Identity::Verified(user @ (Actor::User(_) | Actor::Operator(_))), None) => {
                Ok(user.clone())
            }
            (Identity::Verified(user @ (Actor::User(_) | Actor::Operator(_))), Some(named)) => Err(
                Failure::forbidden(format!("{user} may not act as partition {named}")),
            ),
            (Identity::Verified(Actor::Partition(_)), _) | (_, Some(_)) => self.partition(),
            (Identity::Verified(other), None) => Err(Failure::forbidden(format!(
                "{other} is neither a user nor a partition"
            ))),
            (Identity::Plaintext(user), None) => Ok(Actor::User(user.clone())),
        }
    }

    /// The caller as itself (a user in plaintext).
    pub fn itself(&self) -> Actor {
        match &self.identity {
            Identity::Verified(actor) => actor.clone(),
            Identity::Plaintext(user) => Actor::User(user.clone()),
        }
    }

    /// Who the certificate says the caller is; `None` in plaintext.
    pub fn verified(&self) -> Option<&Actor> {
        match &self.identity {
            Identity::Verified(actor) => Some(actor),
            Identity::Plaintext(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(computer: &str, partition: &str) -> PartitionId {
        PartitionId {
            computer: computer.into(),
            partition: partition.into(),
        }
    }

    fn caller(identity: Identity, named: Option<PartitionId>) -> Caller {
        Caller {
            identity,
            named_partition: named,
        }
    }

    fn verified(actor: Actor) -> Identity {
        Identity::Verified(actor)
    }

    #[test]
    fn a_computer_acts_for_its_own_partitions_only() {
        let node = verified(Actor::Computer("COMP-1".into()));
        let own = caller(node, Some(partition("COMP-1", "slappart0")));
        assert_eq!(
            own.partition().ok(),
            Some(Actor::Partition(partition("COMP-1", "slappart0")))
        );
        let node = verified(Actor::Computer("COMP-1".into()));
        let other = caller(node, Some(partition("COMP-2", "slappart0")));
        assert_eq!(
            other.partition().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
        // Without a partition named, it is the computer.
        let node = verified(Actor::Computer("COMP-1".into()));
        assert_eq!(
            caller(node, None).computer(&"COMP-1".into()),
            Actor::Computer("COMP-1".into())
        );
    }

    #[test]
    fn a_partition_certificate_is_that_partition_whatever_the_call_names() {
        let own = partition("COMP-1", "slappart3");
        let named_other = caller(
            verified(Actor::Partition(own.clone())),
            Some(partition("COMP-1", "slappart4")),
        );
        assert_eq!(
            named_other.partition().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            named_other.requester().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
        let unnamed = caller(verified(Actor::Partition(own.clone())), None);
        assert_eq!(unnamed.requester().ok(), Some(Actor::Partition(own)));
    }

    #[test]
    fn users_request_as_themselves_and_never_as_a_partition() {
        let alice = Actor::User("alice".into());
        assert_eq!(
            caller(verified(alice.clone()), None).requester().ok(),
            Some(alice.clone())
        );
        let posing = caller(verified(alice), Some(partition("COMP-1", "slappart0")));
        assert_eq!(
            posing.requester().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            posing.partition().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
        // A computer requests nothing.
        let node = caller(verified(Actor::Computer("COMP-1".into())), None);
        assert_eq!(
            node.requester().map_err(|f| f.0),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn in_plaintext_the_call_names_the_caller() {
        let user = || Identity::Plaintext("slapos".into());
        assert_eq!(
            caller(user(), None).requester().ok(),
            Some(Actor::User("slapos".into()))
        );
        let named = caller(user(), Some(partition("COMP-1", "slappart0")));
        assert_eq!(
            named.requester().ok(),
            Some(Actor::Partition(partition("COMP-1", "slappart0")))
        );
        assert_eq!(
            caller(user(), None).computer(&"COMP-9".into()),
            Actor::Computer("COMP-9".into())
        );
        assert_eq!(
            caller(user(), None).partition().map_err(|f| f.0),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn refusals_keep_their_meaning_and_a_callers_mistake_is_never_500() {
        let invalid = Rejection::Invalid {
            what: "title".into(),
            reason: "empty".into(),
        };
        for (failure, http) in [
            (
                Failure::from(Rejection::UnknownComputer("COMP-1".into())),
                StatusCode::NOT_FOUND,
            ),
            (Failure::from(invalid), StatusCode::BAD_REQUEST),
            (
                Failure::from(Rejection::BadEnrollmentToken),
                StatusCode::FORBIDDEN,
            ),
            (
                Failure::from(WriteError::NoLeader(std::time::Duration::from_secs(1))),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Failure::from(ReadError::Stopped),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (Failure::from(SignError::NoSigner), StatusCode::CONFLICT),
            (
                Failure::from(FormError::Missing("computer_id")),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            assert_eq!(failure.0, http, "{}", failure.1);
        }
    }
}
