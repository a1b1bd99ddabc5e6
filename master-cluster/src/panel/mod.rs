//! The web panel: what users and operators see in a browser, served by every replica on its
//! own HTTPS listener (`[panel] listen`). The browser's client certificate is the login, as
//! on the SlapOS master; pages are rendered on the replica and work without scripts.
//!
//! Every request passes what every SLAP and gRPC call passes, in the same order: who calls
//! (the certificate, verified and not revoked) before a byte of it is read; the route the
//! one policy names ([`policy::panel_operation`]: a route it does not name is refused) and
//! whether such a caller may attempt it; the caller's budgets; for a form, that it comes
//! from the panel's own pages (its `Origin`, since the browser sends the certificate on its
//! own) and what its body may cost. Then a page reads the replica's applied state, and a form
//! is the same command as through gRPC and SLAP, decided again where it is applied.
//!
//! - `route`: a request's method and path as a [`route::Route`] (plain code).
//! - `forms`: the request and state forms as commands, errors by field (plain code).
//! - `render`: each page as HTML from plain data (plain code).
//! - `pages`: each page's reads and each form's write.
//! - this file: the listener, who calls, and the checks every request passes.

pub mod forms;
mod pages;
pub mod render;
pub mod route;

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::listen::HttpPeer;
use crate::replica::{CallError, Consistency, ReadError, ReplicaCore, WriteError, now};
use crate::slap::form::Form;
use crate::state::model::{
    Actor, AlertSubject, ComputerId, Instance, InstanceGuid, Requester, UserId,
};
use crate::state::policy::{self, Operation, Target};
use crate::state::{InstanceRequest, Op, Outcome, query, status};
use forms::{FieldErrors, RequestValues};
use render::Chrome;
use route::Route;

/// Serves the panel on `listener` until `shutdown` turns true: HTTPS with the replica's
/// certificate, callers identified by theirs.
pub async fn serve(
    listener: TcpListener,
    core: Weak<ReplicaCore>,
    tls: Arc<crate::tls::CurrentTls>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(budgets) = core.upgrade().map(|core| core.budgets().clone()) else {
        return Ok(());
    };
    let app = Router::new().fallback(handle).with_state(core);
    crate::listen::serve_app(listener, budgets, Some(tls), "panel", shutdown, app).await
}

/// Why a page is not shown: the status, a title and what to say.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    fn refused(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }
}

impl From<policy::Refusal> for Problem {
    fn from(refusal: policy::Refusal) -> Self {
        Self::refused(refusal.to_string())
    }
}

impl From<ReadError> for Problem {
    fn from(error: ReadError) -> Self {
        tracing::warn!(%error, "panel read failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            format!("this replica cannot answer now: {error}"),
        )
    }
}

impl From<WriteError> for Problem {
    fn from(error: WriteError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            format!("the cluster could not take it now: {error}"),
        )
    }
}

impl From<CallError> for Problem {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Unavailable(error) => error.into(),
            CallError::Rejected(rejection) => Self::new(
                crate::slap::server::rejection_status(rejection.kind()),
                "Refused",
                rejection.to_string(),
            ),
        }
    }
}

/// An HTML answer, with headers that keep it from being framed, sniffed, cached or made to
/// load anything.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// After a form: to the page that shows what it did (303: the browser GETs it).
fn see_other(location: String) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Whether a form comes from the panel's own pages: its `Origin` names the host it was sent
/// to, over HTTPS. A browser sends the client certificate to the panel whichever site a form
/// comes from; another site's form carries that site's origin (or none, which is refused).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://") == Some(host),
        _ => false,
    }
}

/// Who calls: the person (or machine) the certificate names, verified and not revoked.
fn who(core: &ReplicaCore, peer: &HttpPeer) -> Result<Actor, Problem> {
    let tls = core.current_tls().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "No TLS",
            "this replica runs without TLS, so it cannot tell who you are",
        )
    })?;
    let identity = tls
        .get()
        .verify_caller(peer.chain.as_deref().map(Vec::as_slice), &core.revoked())
        .map_err(|refusal| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "Log in with your certificate",
                format!(
                    "your browser's client certificate: {refusal}. Import the certificate \
                     your operator issued you (slapctl cert issue user:NAME, then openssl \
                     pkcs12 -export -in chain.pem -inkey key.pem -out NAME.p12) and reload."
                ),
            )
        })?;
    crate::replica::identity_actor(identity)
        .ok_or_else(|| Problem::refused("replicas do not use the panel"))
}

/// The person calling, for what only people have (their instances).
fn person(actor: &Actor) -> Result<UserId, Problem> {
    match actor {
        Actor::User(user) | Actor::Operator(user) => Ok(user.clone()),
        other => Err(Problem::refused(format!(
            "{other} has no instances of its own"
        ))),
    }
}

async fn handle(
    State(core): State<Weak<ReplicaCore>>,
    Extension(peer): Extension<HttpPeer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(core) = core.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "replica stopped\n").into_response();
    };
    let mut chrome = Chrome {
        who: "not logged in".into(),
        operator: false,
        replica: core.id(),
        region: core.node().region,
    };
    let answer = async {
        // Who calls, before anything of the request is read.
        let actor = who(&core, &peer)?;
        chrome.who = actor.to_string();
        chrome.operator = matches!(actor, Actor::Operator(_));
        let route = Route::parse(method.as_str(), uri.path())
            .ok_or_else(|| Problem::not_found(format!("no page {}", uri.path())))?;
        let operation = policy::panel_operation(route.name())
            .ok_or_else(|| Problem::not_found(format!("no page {}", uri.path())))?;
        if !policy::may_attempt(&actor, operation) {
            return Err(Problem::refused(format!(
                "{actor} may not {operation} anything here"
            )));
        }
        let _permit = core
            .budgets()
            .admit_call(Some(&actor), Some(peer.address), std::time::Instant::now())
            .map_err(|busy| {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "Busy", busy.to_string())
            })?;
        // What the form may cost is held while the page is made.
        let charge = core.budgets().decode_charge(Some(&actor));
        let form = if route.writes() {
            if !same_origin(&headers) {
                return Err(Problem::refused(
                    "this form did not come from the panel's own pages",
                ));
            }
            crate::slap::server::read_form(&headers, body, &charge)
                .await
                .map_err(|failure| Problem::new(failure.0, "Form refused", failure.1))?
        } else {
            Form::parse(uri.query().unwrap_or_default())
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad address", e.to_string()))?
        };
        let page = pages::Page {
            core: &core,
            actor: &actor,
            chrome: &chrome,
        };
        match route {
            Route::Home => page.home(&form).await,
            Route::Instance(guid) => page.instance(guid, &form).await,
            Route::SetState(guid) => page.set_state(guid, &form).await,
            Route::Destroy(guid) => page.destroy(guid, &form).await,
            Route::RequestForm => page.request_form(&form).await,
            Route::Request => page.request(&form).await,
            Route::Alerts => page.alerts().await,
            Route::Computers => page.computers().await,
            Route::Computer(id) => page.computer(id).await,
            Route::Pending => page.pending().await,
            Route::Members => page.members().await,
            Route::Cluster => Ok(page.cluster().await),
        }
    }
    .await;
    match answer {
        Ok(response) => response,
        Err(problem) => {
            tracing::debug!(status = %problem.status, message = %problem.message, "panel refused");
            html(
                problem.status,
                render::problem(&chrome, problem.title, &problem.message),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_taken_only_from_the_panels_own_pages() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), HeaderValue::from_str(value).expect("value"));
            }
            map
        };
        let host = (header::HOST, "[::1]:8444");
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "https://[::1]:8444")
        ])));
        for origin in ["https://evil.example", "http://[::1]:8444", "null"] {
            assert!(
                !same_origin(&headers(&[host.clone(), (header::ORIGIN, origin)])),
                "{origin}"
            );
        }
        assert!(!same_origin(&headers(&[host])), "no Origin");
    }
}
