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
//! - this file: the listener, who calls, and each page's reads and writes.

pub mod forms;
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
    Actor, AlertSubject, ComputerId, Instance, InstanceGuid, Placement, Requester, UserId,
};
use crate::state::policy::{self, InstanceFacts, Operation, Target};
use crate::state::{InstanceRequest, Op, Outcome, query, status};
use forms::{FieldErrors, RequestValues};
use render::Chrome;
use route::Route;

/// The most alerts the alerts page lists.
const ALERTS_LISTED: usize = 200;
/// The most pending requests the pending page lists.
const PENDING_LISTED: usize = 200;
/// The most computers the computers page lists (a page stays a page at 10,000 computers).
const COMPUTERS_LISTED: usize = 500;
/// How long a form waits for this replica to apply what it wrote, so that the page it leads
/// to shows it.
const APPLY_WAIT: Duration = Duration::from_secs(10);

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

/// The body of a form, whole, within what the caller's budgets allow.
async fn form_body(
    core: &ReplicaCore,
    actor: &Actor,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Form, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(crate::limits::MAX_CLIENT_MESSAGE_BYTES as u64)
        .min(crate::limits::MAX_CLIENT_MESSAGE_BYTES as u64);
    let charge = core.budgets().decode_charge(Some(actor));
    charge
        .grow_to(crate::slap::server::BYTES_PER_BODY_BYTE * declared)
        .map_err(|busy| Problem::new(StatusCode::TOO_MANY_REQUESTS, "Busy", busy.to_string()))?;
    let bytes = crate::slap::server::read_body(body)
        .await
        .map_err(|failure| Problem::new(failure.0, "Form refused", failure.1))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "Form refused", "not UTF-8"))?;
    Form::parse(text)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Form refused", e.to_string()))
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
        let form = if route.writes() {
            if !same_origin(&headers) {
                return Err(Problem::refused(
                    "this form did not come from the panel's own pages",
                ));
            }
            form_body(&core, &actor, &headers, body).await?
        } else {
            Form::parse(uri.query().unwrap_or_default())
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad address", e.to_string()))?
        };
        let page = Page {
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

/// What a form did, named in the address it leads to, as words for the page it shows. Only
/// these words are ever shown: nothing of the address is echoed.
fn notice(form: &Form) -> Option<String> {
    Some(
        match form.get("done")? {
            "requested" => "Requested. Its node installs it at its next run.",
            "started" => "Asked to start: its node starts it at its next run.",
            "stopped" => "Asked to stop: its node stops it at its next run.",
            "destroyed" => "Asked to destroy: its node removes it at its next run.",
            _ => return None,
        }
        .to_string(),
    )
}

/// The caller's instances in tree order (each root, then what it requested, depth first by
/// title), with their depth below their root.
fn tree_order(instances: Vec<Instance>) -> Vec<(Instance, usize)> {
    let mut children: std::collections::BTreeMap<InstanceGuid, Vec<&Instance>> =
        std::collections::BTreeMap::new();
    let mut roots = Vec::new();
    for instance in &instances {
        match &instance.requester {
            Requester::User(_) => roots.push(instance),
            Requester::Instance(parent) => children.entry(*parent).or_default().push(instance),
        }
    }
    roots.sort_by(|a, b| a.title.cmp(&b.title));
    let mut out = Vec::new();
    let mut stack: Vec<(&Instance, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((instance, depth)) = stack.pop() {
        out.push((instance.clone(), depth));
        if let Some(below) = children.get(&instance.guid) {
            let mut below = below.clone();
            below.sort_by(|a, b| b.title.cmp(&a.title));
            stack.extend(below.into_iter().map(|c| (c, depth + 1)));
        }
    }
    out
}

/// One request's page: the replica, the caller and the chrome around what it shows.
struct Page<'a> {
    core: &'a Arc<ReplicaCore>,
    actor: &'a Actor,
    chrome: &'a Chrome,
}

type Answer = Result<Response, Problem>;

impl Page<'_> {
    fn ok(&self, body: String) -> Answer {
        Ok(html(StatusCode::OK, body))
    }

    async fn home(&self, form: &Form) -> Answer {
        let user = person(self.actor)?;
        let reader = self.actor.clone();
        let at = now();
        let (rows, open) = self
            .core
            .read(Consistency::Stale, move |txn| {
                let mut rows = Vec::new();
                for (instance, depth) in tree_order(query::instances_of(txn, &user)?) {
                    let node = query::node_status(txn, &instance.placement, at)?;
                    let status = status::instance(&instance, node.as_ref());
                    rows.push(render::TreeRow {
                        instance,
                        depth,
                        status,
                    });
                }
                let open = query::alerts(txn, false, ALERTS_LISTED, |alert| {
                    may_read_alert(txn, &reader, alert)
                })?;
                Ok((rows, open.len()))
            })
            .await?;
        let notice = notice(form);
        self.ok(render::home(self.chrome, &rows, open, notice.as_deref()))
    }

    /// An instance's page, once the policy lets the caller read it; `None` if it is gone.
    async fn instance_page(
        &self,
        guid: InstanceGuid,
    ) -> Result<Option<(render::InstancePage, InstanceFactsOwned)>, Problem> {
        let reader = self.actor.clone();
        let at = now();
        let found = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(view) = query::instance(txn, guid)? else {
                    return Ok(None);
                };
                let instance = &view.instance;
                let facts = InstanceFactsOwned {
                    host_placement: match instance.placement {
                        Placement::Hosted { host } => query::placement_of(txn, host)?,
                        _ => None,
                    },
                    callers_instance: match &reader {
                        Actor::Partition(partition) => query::occupant(txn, partition)?,
                        _ => None,
                    },
                    role: query::role(txn, &reader, &instance.project)?,
                };
                let node = query::node_status(txn, &instance.placement, at)?;
                let explanation =
                    query::explain(txn, guid)?.map_or_else(String::new, |e| e.text(instance));
                let parent = match instance.requester {
                    Requester::Instance(parent) => {
                        query::instance(txn, parent)?.map(|p| (parent, p.instance.title))
                    }
                    Requester::User(_) => None,
                };
                let children = query::children_of(txn, guid)?
                    .into_iter()
                    .map(|c| (c.guid, c.title))
                    .collect();
                let history = query::history(txn, &AlertSubject::Instance(guid))?;
                let page = render::InstancePage {
                    status: status::instance(instance, node.as_ref()),
                    instance: view.instance.clone(),
                    explanation,
                    parameters: view.parameters,
                    connection: view.connection,
                    parent,
                    children,
                    history,
                    may_change_state: false,
                    may_destroy: false,
                    notice: None,
                };
                Ok(Some((page, facts)))
            })
            .await?;
        let Some((mut page, facts)) = found else {
            return Ok(None);
        };
        policy::decide(
            self.actor,
            Operation::ReadInstance,
            facts.of(&page.instance),
        )?;
        let live = page.instance.requested_state != crate::state::model::RequestedState::Destroyed;
        page.may_destroy = live
            && policy::decide(
                self.actor,
                Operation::DestroyInstance,
                facts.of(&page.instance),
            )
            .is_ok();
        page.may_change_state = live
            && !page.instance.shared
            && page.instance.requester == Requester::User(page.instance.owner.clone())
            && person(self.actor).is_ok_and(|user| user == page.instance.owner);
        Ok(Some((page, facts)))
    }

    async fn instance(&self, guid: InstanceGuid, form: &Form) -> Answer {
        let (mut page, _) = self
            .instance_page(guid)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no instance {guid}")))?;
        page.notice = notice(form);
        self.ok(render::instance(self.chrome, &page))
    }

    /// Commits `op` as the caller, and waits for this replica to apply it.
    async fn write(&self, op: Op) -> Result<Outcome, Problem> {
        let (outcome, index) = self.core.execute(self.actor.clone(), op).await?;
        self.core.wait_applied(index, APPLY_WAIT).await?;
        Ok(outcome)
    }

    async fn set_state(&self, guid: InstanceGuid, form: &Form) -> Answer {
        let state = forms::wanted_state(form)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Form refused", e))?;
        let (page, _) = self
            .instance_page(guid)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no instance {guid}")))?;
        if !page.may_change_state {
            return Err(Problem::refused(format!(
                "{} may not start or stop instance {guid}: only the owner of a tree does, by \
                 requesting it again",
                self.actor
            )));
        }
        let instance = page.instance;
        // The same request again in another state, as `slapos request --state` does.
        self.write(Op::RequestInstance(InstanceRequest {
            title: instance.title,
            software_release: instance.software_release,
            software_type: instance.software_type,
            parameters: page.parameters,
            sla: instance.sla.into_iter().collect(),
            shared: instance.shared,
            state,
        }))
        .await?;
        Ok(see_other(format!(
            "/panel/instances/{guid}?done={}",
            state.as_str()
        )))
    }

    async fn destroy(&self, guid: InstanceGuid, form: &Form) -> Answer {
        if form.get("confirm") != Some("yes") {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Form refused",
                "confirm: tick the box to destroy it",
            ));
        }
        self.write(Op::DestroyInstance { instance: guid }).await?;
        Ok(see_other("/panel/?done=destroyed".into()))
    }

    async fn catalog(&self) -> Result<Vec<crate::state::model::SoftwareRelease>, Problem> {
        Ok(self.core.read(Consistency::Stale, query::catalog).await?)
    }

    async fn request_form(&self, form: &Form) -> Answer {
        let catalog = self.catalog().await?;
        let values = RequestValues::from_form(form);
        self.ok(render::request_form(
            self.chrome,
            &catalog,
            &values,
            &FieldErrors::new(),
            None,
        ))
    }

    async fn request(&self, form: &Form) -> Answer {
        let values = RequestValues::from_form(form);
        let again = |status, errors: &FieldErrors, problem: Option<&str>, catalog| {
            html(
                status,
                render::request_form(self.chrome, catalog, &values, errors, problem),
            )
        };
        let request = match values.request() {
            Ok(request) => request,
            Err(errors) => {
                let catalog = self.catalog().await?;
                return Ok(again(StatusCode::BAD_REQUEST, &errors, None, &catalog));
            }
        };
        match self.write(Op::RequestInstance(request)).await {
            Ok(Outcome::Instance(summary)) => Ok(see_other(format!(
                "/panel/instances/{}?done=requested",
                summary.guid
            ))),
            Ok(other) => Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unexpected",
                format!("the request answered {other:?}"),
            )),
            // The cluster refused it: the form again, with why.
            Err(problem) if problem.status.is_client_error() => {
                let catalog = self.catalog().await?;
                Ok(again(
                    problem.status,
                    &FieldErrors::new(),
                    Some(&problem.message),
                    &catalog,
                ))
            }
            Err(problem) => Err(problem),
        }
    }

    async fn alerts(&self) -> Answer {
        let reader = self.actor.clone();
        let alerts = self
            .core
            .read(Consistency::Stale, move |txn| {
                query::alerts(txn, true, ALERTS_LISTED, |alert| {
                    may_read_alert(txn, &reader, alert)
                })
            })
            .await?;
        self.ok(render::alerts(self.chrome, &alerts))
    }

    async fn computers(&self) -> Answer {
        let reader = self.actor.clone();
        let at = now();
        let (rows, visible) = self
            .core
            .read(Consistency::Stale, move |txn| {
                let (_, computers) = query::computers_with_liveness(txn, usize::MAX)?;
                let silence = query::silence(txn)?;
                let (mut rows, mut visible) = (Vec::new(), 0);
                for (computer, last_seen) in computers {
                    let role = query::role(txn, &reader, &computer.project)?;
                    let target = policy::computer_target(&computer, role);
                    if policy::decide(&reader, Operation::InspectComputer, target).is_err() {
                        continue;
                    }
                    visible += 1;
                    if rows.len() < COMPUTERS_LISTED {
                        let status = status::computer(&computer, last_seen, at, silence);
                        rows.push(render::ComputerRow {
                            computer,
                            status,
                            last_seen,
                        });
                    }
                }
                Ok((rows, visible))
            })
            .await?;
        self.ok(render::computers(self.chrome, &rows, visible))
    }

    async fn computer(&self, id: ComputerId) -> Answer {
        let (wanted, reader) = (id.clone(), self.actor.clone());
        let at = now();
        let found = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(view) = query::computer_view(txn, &wanted)? else {
                    return Ok(None);
                };
                let role = query::role(txn, &reader, &view.computer.project)?;
                let silence = query::silence(txn)?;
                let history = query::history(txn, &AlertSubject::Computer(wanted))?;
                Ok(Some((view, role, silence, history)))
            })
            .await?;
        let Some((view, role, silence, history)) = found else {
            // Whether it exists is for those who could see it.
            policy::decide(
                self.actor,
                Operation::InspectComputer,
                Target::Computer(&id),
            )?;
            return Err(Problem::not_found(format!("no computer {id}")));
        };
        policy::decide(
            self.actor,
            Operation::InspectComputer,
            policy::computer_target(&view.computer, role),
        )?;
        let row = render::ComputerRow {
            status: status::computer(&view.computer, view.last_seen, at, silence),
            last_seen: view.last_seen,
            computer: view.computer,
        };
        let partitions: Vec<render::PartitionRow> = view
            .partitions
            .into_iter()
            .map(|p| render::PartitionRow {
                reference: p.partition.reference.to_string(),
                addresses: p
                    .partition
                    .addresses
                    .iter()
                    .map(|a| a.addr.clone())
                    .collect(),
                occupant: p
                    .instance
                    .map(|i| (i.instance.guid, i.instance.title, i.instance.owner)),
            })
            .collect();
        self.ok(render::computer(self.chrome, &row, &partitions, &history))
    }

    async fn pending(&self) -> Answer {
        policy::decide(self.actor, Operation::ReadClusterStatus, Target::Cluster)?;
        let (waiting, total) = self
            .core
            .read(Consistency::Stale, |txn| {
                Ok((
                    query::pending(txn, PENDING_LISTED)?,
                    query::pending_count(txn)?,
                ))
            })
            .await?;
        self.ok(render::pending(self.chrome, &waiting, total))
    }

    async fn members(&self) -> Answer {
        let reader = self.actor.clone();
        let user = person(self.actor).ok();
        let projects = self
            .core
            .read(Consistency::Stale, move |txn| {
                let mut out = Vec::new();
                for (project, role) in query::projects(txn, user.as_ref())? {
                    let target = Target::Project(policy::ProjectFacts {
                        project: &project.id,
                        role,
                        computer: None,
                    });
                    if policy::decide(&reader, Operation::ReadProject, target).is_err() {
                        continue;
                    }
                    if let Some((project, members)) = query::project(txn, &project.id)? {
                        out.push((project, members));
                    }
                }
                Ok(out)
            })
            .await?;
        self.ok(render::members(self.chrome, &projects))
    }

    async fn cluster(&self) -> Response {
        let status = crate::observe::http::gather(self.core).await;
        html(
            StatusCode::OK,
            render::cluster(self.chrome, &status, std::time::SystemTime::now()),
        )
    }
}

/// Whether `reader` may read `alert` (the policy, with the reader's role in its project).
fn may_read_alert(
    txn: &redb::ReadTransaction,
    reader: &Actor,
    alert: &crate::state::model::Alert,
) -> Result<bool, crate::state::StateError> {
    let role = query::role(txn, reader, &alert.project)?;
    let target = Target::Alert {
        owner: alert.owner.as_ref(),
        role,
    };
    Ok(policy::decide(reader, Operation::ReadAlerts, target).is_ok())
}

/// What the policy needs of an instance besides the instance itself.
struct InstanceFactsOwned {
    host_placement: Option<Placement>,
    callers_instance: Option<InstanceGuid>,
    role: Option<crate::state::model::ProjectRole>,
}

impl InstanceFactsOwned {
    fn of<'a>(&'a self, instance: &'a Instance) -> Target<'a> {
        Target::Instance(InstanceFacts {
            instance,
            host_placement: self.host_placement.as_ref(),
            callers_instance: self.callers_instance,
            role: self.role,
        })
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

    #[test]
    fn notices_are_fixed_words_never_the_address() {
        let form = |query| Form::parse(query).expect("form");
        assert!(notice(&form("done=stopped")).is_some_and(|n| n.contains("stop")));
        assert_eq!(notice(&form("done=%3Cscript%3E")), None);
        assert_eq!(notice(&form("")), None);
    }

    #[test]
    fn trees_list_each_root_then_what_it_requested() {
        let on = Placement::Pending {
            reason: String::new(),
        };
        let make = |guid, title: &str, requester| {
            let mut i = crate::state::sample::instance(guid, "alice", requester, on.clone());
            i.title = title.into();
            i
        };
        let alice = || Requester::User("alice".into());
        let instances = vec![
            make(3, "db", Requester::Instance(InstanceGuid(1))),
            make(1, "web", alice()),
            make(2, "app", alice()),
            make(4, "backup", Requester::Instance(InstanceGuid(3))),
            make(5, "cache", Requester::Instance(InstanceGuid(1))),
        ];
        let order: Vec<(String, usize)> = tree_order(instances)
            .into_iter()
            .map(|(i, depth)| (i.title, depth))
            .collect();
        let expected = [
            ("app", 0),
            ("web", 0),
            ("cache", 1),
            ("db", 1),
            ("backup", 2),
        ];
        assert_eq!(
            order,
            expected
                .iter()
                .map(|(t, d)| (t.to_string(), *d))
                .collect::<Vec<_>>()
        );
    }
}
