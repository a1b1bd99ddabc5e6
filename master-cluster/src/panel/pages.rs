//! Each panel page's reads and each form's write, for one caller: what [`super::handle`] runs
//! once a request has passed every check.

use super::*;

/// The most alerts the alerts page lists.
const ALERTS_LISTED: usize = 200;
/// The most pending requests the pending page lists.
const PENDING_LISTED: usize = 200;
/// The most computers the computers page lists (a page stays a page at 10,000 computers).
const COMPUTERS_LISTED: usize = 500;
/// How long a form waits for this replica to apply what it wrote, so that the page it leads
/// to shows it.
const APPLY_WAIT: Duration = Duration::from_secs(10);

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
pub(super) struct Page<'a> {
    pub(super) core: &'a Arc<ReplicaCore>,
    pub(super) actor: &'a Actor,
    pub(super) chrome: &'a Chrome,
}

type Answer = Result<Response, Problem>;

impl Page<'_> {
    fn ok(&self, body: String) -> Answer {
        Ok(html(StatusCode::OK, body))
    }

    pub(super) async fn home(&self, form: &Form) -> Answer {
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
    ) -> Result<Option<(render::InstancePage, query::ReaderFacts)>, Problem> {
        let reader = self.actor.clone();
        let at = now();
        let found = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(view) = query::instance(txn, guid)? else {
                    return Ok(None);
                };
                let instance = &view.instance;
                let facts = query::reader_facts(txn, &reader, instance)?;
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
            facts.target(&page.instance),
        )?;
        let live = page.instance.requested_state != crate::state::model::RequestedState::Destroyed;
        page.may_destroy = live
            && policy::decide(
                self.actor,
                Operation::DestroyInstance,
                facts.target(&page.instance),
            )
            .is_ok();
        page.may_change_state = live
            && !page.instance.shared
            && page.instance.requester == Requester::User(page.instance.owner.clone())
            && person(self.actor).is_ok_and(|user| user == page.instance.owner);
        Ok(Some((page, facts)))
    }

    pub(super) async fn instance(&self, guid: InstanceGuid, form: &Form) -> Answer {
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

    pub(super) async fn set_state(&self, guid: InstanceGuid, form: &Form) -> Answer {
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

    pub(super) async fn destroy(&self, guid: InstanceGuid, form: &Form) -> Answer {
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

    pub(super) async fn request_form(&self, form: &Form) -> Answer {
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

    pub(super) async fn request(&self, form: &Form) -> Answer {
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

    pub(super) async fn alerts(&self) -> Answer {
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

    pub(super) async fn computers(&self) -> Answer {
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

    pub(super) async fn computer(&self, id: ComputerId) -> Answer {
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

    pub(super) async fn pending(&self) -> Answer {
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

    pub(super) async fn members(&self) -> Answer {
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

    pub(super) async fn cluster(&self) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::Placement;

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
