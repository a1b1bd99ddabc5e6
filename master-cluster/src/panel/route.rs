//! A panel request's method and path as a [`Route`], and the name the policy knows it by
//! ([`policy::panel_operation`](crate::state::policy::panel_operation)). Plain code.

use crate::state::model::{ComputerId, InstanceGuid};

/// Every page and form of the panel. Paths are under `/panel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /panel/`: the caller's instance trees and open alerts.
    Home,
    /// `GET /panel/instances/{guid}` (`SOFTINST-n`, as everywhere)
    Instance(InstanceGuid),
    /// `POST /panel/instances/{guid}/state`: start or stop a tree its owner requested.
    SetState(InstanceGuid),
    /// `POST /panel/instances/{guid}/destroy`
    Destroy(InstanceGuid),
    /// `GET /panel/request`: the form, from the catalog.
    RequestForm,
    /// `POST /panel/request`
    Request,
    /// `GET /panel/alerts`
    Alerts,
    /// `GET /panel/computers`
    Computers,
    /// `GET /panel/computers/{id}`
    Computer(ComputerId),
    /// `GET /panel/pending`: requests waiting for a partition, with why.
    Pending,
    /// `GET /panel/members`: projects and their members.
    Members,
    /// `GET /panel/cluster`: replicas and elections (the status page).
    Cluster,
}

/// The longest path segment taken (a computer's id, a guid): longer is no route.
const MAX_SEGMENT: usize = 1024;

impl Route {
    /// The route of `method` on `path` (which starts with `/panel`), if any.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/panel")?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| s.len() > MAX_SEGMENT) {
            return None;
        }
        let guid = |text: &str| InstanceGuid::parse(text);
        Some(match (method, segments.as_slice()) {
            ("GET", []) => Route::Home,
            ("GET", ["instances", guid_text]) => Route::Instance(guid(guid_text)?),
            ("POST", ["instances", guid_text, "state"]) => Route::SetState(guid(guid_text)?),
            ("POST", ["instances", guid_text, "destroy"]) => Route::Destroy(guid(guid_text)?),
            ("GET", ["request"]) => Route::RequestForm,
            ("POST", ["request"]) => Route::Request,
            ("GET", ["alerts"]) => Route::Alerts,
            ("GET", ["computers"]) => Route::Computers,
            ("GET", ["computers", id]) => Route::Computer(ComputerId::from(*id)),
            ("GET", ["pending"]) => Route::Pending,
            ("GET", ["members"]) => Route::Members,
            ("GET", ["cluster"]) => Route::Cluster,
            _ => return None,
        })
    }

    /// How the policy names the route.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Home => "home",
            Route::Instance(_) => "instance",
            Route::SetState(_) => "set state",
            Route::Destroy(_) => "destroy",
            Route::RequestForm => "request form",
            Route::Request => "request",
            Route::Alerts => "alerts",
            Route::Computers => "computers",
            Route::Computer(_) => "computer",
            Route::Pending => "pending",
            Route::Members => "members",
            Route::Cluster => "cluster",
        }
    }

    /// Every route's name, for the test that the policy names each one.
    pub const NAMES: &'static [&'static str] = &[
        "home",
        "instance",
        "set state",
        "destroy",
        "request form",
        "request",
        "alerts",
        "computers",
        "computer",
        "pending",
        "members",
        "cluster",
    ];

    /// A form that changes something: it must come from the panel's own pages.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Route::SetState(_) | Route::Destroy(_) | Route::Request
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_make_routes_and_nothing_else_does() {
        assert_eq!(Route::parse("GET", "/panel"), Some(Route::Home));
        assert_eq!(Route::parse("GET", "/panel/"), Some(Route::Home));
        assert_eq!(
            Route::parse("GET", "/panel/instances/SOFTINST-42"),
            Some(Route::Instance(InstanceGuid(42)))
        );
        assert_eq!(
            Route::parse("POST", "/panel/instances/SOFTINST-42/destroy"),
            Some(Route::Destroy(InstanceGuid(42)))
        );
        assert_eq!(
            Route::parse("GET", "/panel/computers/COMP-1"),
            Some(Route::Computer(ComputerId::from("COMP-1")))
        );
        for (method, path) in [
            ("GET", "/panel/instances/SOFTINST-42/destroy"),
            ("POST", "/panel/instances/SOFTINST-42"),
            ("GET", "/panel/instances/x"),
            ("DELETE", "/panel/"),
            ("GET", "/panel/nothing"),
            ("GET", "/other"),
            ("POST", "/panel/alerts"),
        ] {
            assert_eq!(Route::parse(method, path), None, "{method} {path}");
        }
        let long = format!("/panel/computers/{}", "c".repeat(MAX_SEGMENT + 1));
        assert_eq!(Route::parse("GET", &long), None);
        // The one policy names every route (one it did not name would be refused to all).
        for name in Route::NAMES {
            assert!(
                crate::state::policy::panel_operation(name).is_some(),
                "{name} is not in the policy"
            );
        }
        assert_eq!(crate::state::policy::panel_operation("drop tables"), None);
        for route in [
            Route::Home,
            Route::SetState(InstanceGuid(1)),
            Route::Cluster,
            Route::Computer(ComputerId::from("C")),
        ] {
            assert!(Route::NAMES.contains(&route.name()));
        }
    }
}
