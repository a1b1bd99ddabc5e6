//! The panel's forms as commands, and what is wrong with them field by field. Plain code.

use std::collections::BTreeMap;

use crate::slap::form::Form;
use crate::state::InstanceRequest;
use crate::state::model::{Parameters, RequestedState, SoftwareReleaseUrl};

/// What the request form held, as typed: shown again with its errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestValues {
    pub title: String,
    pub software_release: String,
    pub software_type: String,
    pub parameters: String,
    pub sla: String,
    pub state: String,
}

/// What is wrong with a form: a message per field, by the field's name.
pub type FieldErrors = BTreeMap<&'static str, String>;

impl RequestValues {
    pub fn from_form(form: &Form) -> Self {
        let field = |name: &str| form.get(name).unwrap_or_default().to_string();
        Self {
            title: field("title"),
            software_release: field("software_release"),
            software_type: field("software_type"),
            parameters: field("parameters"),
            sla: field("sla"),
            state: field("state"),
        }
    }

    /// The request these values make, or what is wrong with each field. The command's own
    /// checks (sizes, names) run again when it is applied; these say which field is wrong.
    pub fn request(&self) -> Result<InstanceRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        let title = self.title.trim();
        if title.is_empty() {
            errors.insert("title", "give the instance a title".into());
        }
        let software_release = self.software_release.trim();
        if software_release.is_empty() {
            errors.insert("software_release", "choose a software release".into());
        }
        let state = match self.state.as_str() {
            "" | "started" => RequestedState::Started,
            "stopped" => RequestedState::Stopped,
            other => {
                errors.insert("state", format!("{other:?} is neither started nor stopped"));
                RequestedState::Started
            }
        };
        let parameters = lines("parameters", &self.parameters, &mut errors);
        let sla = lines("sla", &self.sla, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let software_type = match self.software_type.trim() {
            "" => "default",
            given => given,
        };
        Ok(InstanceRequest {
            title: title.to_string(),
            software_release: SoftwareReleaseUrl::from(software_release),
            software_type: software_type.to_string(),
            parameters,
            sla,
            shared: false,
            state,
        })
    }
}

/// `key = value` lines (blank lines skipped) as parameters; the first wrong line is the
/// field's error.
fn lines(field: &'static str, text: &str, errors: &mut FieldErrors) -> Parameters {
    let mut out = Parameters::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errors.insert(
                field,
                format!("line {}: write key = value, not {:?}", n + 1, line.trim()),
            );
            return out;
        };
        let key = key.trim();
        if key.is_empty() {
            errors.insert(field, format!("line {}: the key is empty", n + 1));
            return out;
        }
        if out
            .insert(key.to_string(), value.trim().to_string())
            .is_some()
        {
            errors.insert(field, format!("line {}: {key} is given twice", n + 1));
            return out;
        }
    }
    out
}

/// The state a state form asks for: `started` or `stopped`.
pub fn wanted_state(form: &Form) -> Result<RequestedState, String> {
    match form.get("state") {
        Some("started") => Ok(RequestedState::Started),
        Some("stopped") => Ok(RequestedState::Stopped),
        other => Err(format!("state: {other:?} is neither started nor stopped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(parameters: &str) -> RequestValues {
        RequestValues {
            title: " web ".into(),
            software_release: "https://lab.example/kvm.cfg".into(),
            parameters: parameters.into(),
            sla: "region = eu\n\n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_filled_form_is_a_request() {
        let request = values("port = 8080\nname=a=b\n").request().expect("valid");
        assert_eq!(request.title, "web");
        assert_eq!(request.software_type, "default");
        assert_eq!(request.state, RequestedState::Started);
        assert_eq!(request.parameters["port"], "8080");
        assert_eq!(request.parameters["name"], "a=b", "the first = splits");
        assert_eq!(request.sla["region"], "eu");
    }

    #[test]
    fn each_wrong_field_is_named() {
        let mut wrong = values("port 8080");
        wrong.title = "  ".into();
        wrong.state = "paused".into();
        wrong.sla = "region=eu\nregion=us".into();
        let errors = wrong.request().expect_err("invalid");
        assert_eq!(
            errors.get("parameters").map(String::as_str),
            Some("line 1: write key = value, not \"port 8080\"")
        );
        assert_eq!(
            errors.get("title").map(String::as_str),
            Some("give the instance a title")
        );
        assert!(errors["state"].contains("paused"));
        assert_eq!(errors["sla"], "line 2: region is given twice");
        assert!(!errors.contains_key("software_release"));
        let mut empty = values("");
        empty.software_release.clear();
        assert!(
            empty
                .request()
                .expect_err("no release")
                .contains_key("software_release")
        );
        assert_eq!(
            values("= 1").request().expect_err("empty key")["parameters"],
            "line 1: the key is empty"
        );
    }
}
