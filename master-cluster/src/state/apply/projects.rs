//! Projects and members, quotas and what each user holds.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn set_quota(&mut self, user: Option<&UserId>, quota: Option<Quota>) -> Handled {
        if let Some(user) = user {
            check_name("user", user.as_str())?;
        }
        if self.t.quota_set(user)? == quota {
            return Ok(Outcome::Unchanged);
        }
        let key = tables::quota_key(user);
        match quota {
            Some(quota) => self.t.quotas.put(key.as_bytes(), &quota)?,
            None => self.t.quotas.delete(key.as_bytes())?,
        }
        let whose = user.map_or_else(|| "everyone's default".to_string(), |u| u.to_string());
        self.audit("set quota", format!("{whose}: {quota:?}"))?;
        Ok(Outcome::Done)
    }

    /// Whether `owner` may hold `instances` more instances (each of which may wait for a
    /// partition) and `bytes` more of parameters. Operators' requests are not counted against
    /// anyone: they are how a full quota is worked around.
    pub(super) fn within_quota(
        &self,
        owner: &UserId,
        instances: u64,
        bytes: u64,
    ) -> Result<(), Stop> {
        if matches!(self.actor, Actor::Operator(_)) {
            return Ok(());
        }
        let quota = self.t.quota(owner)?;
        let held = self.t.holding(owner)?;
        let over = |what: &str, held: u64, more: u64, max: u64| {
            (held.saturating_add(more) > max).then(|| Rejection::OverQuota {
                user: owner.clone(),
                what: what.to_string(),
                held,
                wanted: held.saturating_add(more),
                max,
            })
        };
        let refusal = over("instances", held.instances, instances, quota.instances)
            .or_else(|| {
                over(
                    "requests waiting for a partition",
                    held.pending,
                    instances,
                    quota.pending,
                )
            })
            .or_else(|| {
                over(
                    "bytes of parameters",
                    held.parameter_bytes,
                    bytes,
                    quota.parameter_bytes,
                )
            });
        match refusal {
            Some(rejection) => Err(rejection.into()),
            None => Ok(()),
        }
    }

    /// Changes what `owner` holds.
    pub(super) fn hold(
        &mut self,
        owner: &UserId,
        change: impl FnOnce(&mut Holding),
    ) -> Result<(), StateError> {
        let mut holding = self.t.holding(owner)?;
        change(&mut holding);
        let key = tables::user_key(owner);
        if holding == Holding::default() {
            self.t.holdings.delete(key.as_bytes())
        } else {
            self.t.holdings.put(key.as_bytes(), &holding)
        }
    }

    // --- projects -----------------------------------------------------------------------------

    pub(super) fn create_project(&mut self, id: &ProjectId, title: &str) -> Handled {
        check_name("project", id.as_str())?;
        check_name("project title", title)?;
        let existing = self.t.project(id)?;
        if existing.as_ref().is_some_and(|p| p.title == title) {
            return Ok(Outcome::Unchanged);
        }
        let project = Project {
            id: id.clone(),
            title: title.to_string(),
            everyone: existing.as_ref().and_then(|p| p.everyone),
            created_at: existing.as_ref().map_or(self.at, |p| p.created_at),
        };
        self.t
            .projects
            .put(tables::project_key(id).as_bytes(), &project)?;
        self.audit("create project", id.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn set_project_member(
        &mut self,
        project: &ProjectId,
        user: &UserId,
        role: Option<ProjectRole>,
    ) -> Handled {
        check_name("user", user.as_str())?;
        if self.t.project(project)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownProject(project.clone())));
        }
        let member_key = tables::member_key(project, user);
        let user_key = tables::user_project_key(user, project);
        let current: Option<ProjectRole> = self.t.project_members.get(member_key.as_bytes())?;
        if current == role {
            return Ok(Outcome::Unchanged);
        }
        match role {
            Some(role) => {
                self.t.project_members.put(member_key.as_bytes(), &role)?;
                self.t.user_projects.put(user_key.as_bytes(), &role)?;
            }
            None => {
                self.t.project_members.delete(member_key.as_bytes())?;
                self.t.user_projects.delete(user_key.as_bytes())?;
            }
        }
        self.audit(
            &format!("project role {}", role.map_or("none", ProjectRole::as_str)),
            format!("{user} in {project}"),
        )?;
        Ok(Outcome::Done)
    }

    pub(super) fn move_computer(&mut self, id: &ComputerId, project: &ProjectId) -> Handled {
        let Some(mut computer) = self.t.computer(id)? else {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        };
        if self.t.project(project)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownProject(project.clone())));
        }
        if computer.project == *project {
            return Ok(Outcome::Unchanged);
        }
        let before = placement::index_keys(self.t, &computer)?;
        computer.project = project.clone();
        self.save_computer(&computer, &before)?;
        self.audit("move computer", format!("{id} to {project}"))?;
        let placed = self.place_pending_on(id)?;
        Ok(Outcome::Placed { placed })
    }

    // --- catalog and computers ----------------------------------------------------------------
}
