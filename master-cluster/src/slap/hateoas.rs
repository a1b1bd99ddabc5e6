//! The HATEOAS API (the master's jIO-style JSON) that `slapos service list|info` and
//! `slapos computer list|info` read, on the SLAP listener at `…/hateoas` (the URL
//! `getHateoasUrl` answers). One endpoint, answering by `mode`:
//! - none: the root document, whose two URI templates (`raw_search`, `traverse`) point back
//!   here;
//! - `search`: the client's four queries ([`Search`]): the caller's instance trees, or one by
//!   title; the computers the caller may inspect, or one by reference. Rows carry `title`,
//!   `url_string` or `reference`, and `relative_url`, whatever `select_list` asks;
//! - `traverse`: one tree (`instance_tree_module/SOFTINST-n`) or computer
//!   (`compute_node_module/ID`) as the form whose `my_*` fields the client reads.
//!
//! Who sees what is the policy's, as over gRPC: a user's own trees (`ListInstances`, and
//! `ReadInstance` for one), the computers it may inspect (`ListComputers`,
//! `InspectComputer`). Every answer is JSON; a query the client does not send is 400, a
//! document that is not the caller's, or gone, 404. The request is a URL of at most 8 KiB
//! (the listener's header limit); the answer holds at most [`MAX_ROWS`] rows.

use serde_json::{Value as Json, json};

use crate::state::model::{ComputerId, InstanceGuid, Parameters, RequestedState};
use crate::state::query::InstanceView;

/// Rows a search answers at most: the client asks for 40 and shows what it gets.
pub const MAX_ROWS: usize = 1000;

/// One of the searches the client sends (`slap/hateoas.py` in slapos.core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// `portal_type:"Instance Tree" AND validation_state:validated[ AND title:="T"]`.
    Trees { title: Option<String> },
    /// `portal_type:"Compute Node" AND validation_state:validated[ AND reference:="R"]`.
    Computers { reference: Option<String> },
}

/// What a `traverse` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Tree(InstanceGuid),
    Computer(ComputerId),
}

const TREES: &str = "instance_tree_module/";
const COMPUTERS: &str = "compute_node_module/";

impl Search {
    /// The query as the client writes it (older clients name the types "Hosting
    /// Subscription" and "Computer", which the master still accepts). The value after
    /// `:="` is taken whole, up to the last `"`: the client does not escape it.
    pub fn parse(query: &str) -> Result<Self, String> {
        let unknown = || format!("unknown query {query:?}");
        let (kind, rest) = query
            .strip_prefix("portal_type:\"")
            .and_then(|q| q.split_once('"'))
            .ok_or_else(unknown)?;
        let rest = rest
            .strip_prefix(" AND validation_state:validated")
            .ok_or_else(unknown)?;
        let named = |field: &str| -> Result<Option<String>, String> {
            if rest.is_empty() {
                return Ok(None);
            }
            rest.strip_prefix(&format!(" AND {field}:=\""))
                .and_then(|value| value.strip_suffix('"'))
                .map(|value| Some(value.to_string()))
                .ok_or_else(unknown)
        };
        match kind {
            "Instance Tree" | "Hosting Subscription" => Ok(Self::Trees {
                title: named("title")?,
            }),
            "Compute Node" | "Computer" => Ok(Self::Computers {
                reference: named("reference")?,
            }),
            _ => Err(unknown()),
        }
    }
}

impl Document {
    pub fn parse(relative_url: &str) -> Result<Self, String> {
        if let Some(guid) = relative_url.strip_prefix(TREES) {
            return InstanceGuid::parse(guid)
                .map(Self::Tree)
                .ok_or_else(|| format!("no instance tree {guid:?}"));
        }
        match relative_url.strip_prefix(COMPUTERS) {
            Some(id) if !id.is_empty() => Ok(Self::Computer(id.into())),
            _ => Err(format!("no document {relative_url:?}")),
        }
    }

    pub fn relative_url(&self) -> String {
        match self {
            Self::Tree(guid) => format!("{TREES}{guid}"),
            Self::Computer(id) => format!("{COMPUTERS}{id}"),
        }
    }
}

/// The root document: where to search and traverse, as RFC 6570 templates on `base` (this
/// endpoint's absolute URL).
pub fn root(base: &str) -> Json {
    json!({
        "_links": {
            "self": {"href": base},
            "raw_search": {
                "href": format!("{base}?mode=search{{&query,select_list*,limit*}}"),
                "name": "Raw Search",
                "templated": true,
            },
            "traverse": {
                "href": format!("{base}?mode=traverse{{&relative_url,view}}"),
                "name": "Traverse",
                "templated": true,
            },
        },
        "title": "slapcluster",
        "_debug": "root",
    })
}

/// A search's answer.
pub fn rows(rows: Vec<Json>) -> Json {
    json!({"_debug": "search", "_embedded": {"contents": rows}})
}

/// A tree's row: its root instance.
pub fn tree_row(root: &InstanceView) -> Json {
    let url = Document::Tree(root.instance.guid).relative_url();
    json!({
        "_links": {"self": {"href": format!("urn:jio:get:{url}")}},
        "title": root.instance.title,
        "url_string": root.instance.software_release.as_str(),
        "relative_url": url,
    })
}

pub fn computer_row(id: &ComputerId) -> Json {
    let url = Document::Computer(id.clone()).relative_url();
    json!({
        "_links": {"self": {"href": format!("urn:jio:get:{url}")}},
        "title": id.as_str(),
        "reference": id.as_str(),
        "relative_url": url,
    })
}

/// A tree as the master's `InstanceTree_viewAsHateoas` form: its root's release, type,
/// requested state, parameters (as instance XML), connection parameters and news, and
/// `news` from what every instance of the tree last reported (`#access …`, `#error …`).
pub fn tree(root: &InstanceView, reports: &[Option<String>]) -> Json {
    let instance = &root.instance;
    let slap_state = match instance.requested_state {
        RequestedState::Started => "start_requested",
        RequestedState::Stopped => "stop_requested",
        RequestedState::Destroyed => "destroy_requested",
    };
    let connection: Vec<Json> = root
        .connection
        .iter()
        .map(|(key, value)| json!({"connection_key": key, "connection_value": value}))
        .collect();
    // As the master's `InstanceTree_getNewsDict`: no instance news for a tree that does not
    // run (stopped, destroyed, shared).
    let news: Vec<Json> = match (instance.requested_state, instance.shared) {
        (RequestedState::Started, false) => reports
            .iter()
            .flatten()
            .map(|text| json!({"text": text}))
            .collect(),
        _ => Vec::new(),
    };
    let string =
        |key: &str, value: Json| json!({"type": "StringField", "key": key, "default": value});
    form(
        "Instance Tree",
        "InstanceTree_viewAsHateoas",
        &Document::Tree(instance.guid),
        json!({
            "my_title": string("field_my_title", json!(instance.title)),
            "my_reference": string("field_my_reference", json!(instance.guid.to_string())),
            "my_url_string": string("field_my_url_string", json!(instance.software_release.as_str())),
            "my_source_reference": string("field_my_source_reference", json!(instance.software_type)),
            "my_slap_state": string("field_my_slap_state", json!(slap_state)),
            "my_text_content": {
                "type": "TextAreaField",
                "key": "field_my_text_content",
                "default": instance_xml(&root.parameters),
            },
            "my_root_slave": {
                "type": "IntegerField",
                "key": "field_my_root_slave",
                "default": u8::from(instance.shared),
            },
            "my_connection_parameter_list": string("field_my_connection_parameter_list", json!(connection)),
            "my_news": string("field_my_news", json!({"instance": news})),
        }),
    )
}

/// A computer as the master's `ComputeNode_viewAsHateoas` form: its reference and title
/// (computers here have no title of their own: the reference).
pub fn computer(id: &ComputerId) -> Json {
    let string = |key: &str| json!({"type": "StringField", "key": key, "default": id.as_str()});
    form(
        "Compute Node",
        "ComputeNode_viewAsHateoas",
        &Document::Computer(id.clone()),
        json!({
            "my_reference": string("field_my_reference"),
            "my_title": string("field_my_title"),
        }),
    )
}

fn form(portal_type: &str, form_id: &str, document: &Document, mut fields: Json) -> Json {
    if let Some(fields) = fields.as_object_mut() {
        fields.insert(
            "form_id".into(),
            json!({"type": "StringField", "key": "form_id", "default": form_id}),
        );
    }
    json!({
        "_debug": "traverse",
        "_links": {
            "type": {"name": portal_type},
            "self": {"href": format!("urn:jio:get:{}", document.relative_url())},
        },
        "_embedded": {"_view": fields},
    })
}

/// Parameters as the client's `dict2xml` writes instance XML (and its `xml2dict` reads):
/// one `<parameter id="…">` per key, in key order, text escaped.
pub fn instance_xml(parameters: &Parameters) -> String {
    let mut xml = String::from("<?xml version='1.0' encoding='utf-8'?>\n<instance>\n");
    for (key, value) in parameters {
        xml.push_str(&format!(
            "  <parameter id=\"{}\">{}</parameter>\n",
            quick_xml::escape::escape(key.as_str()),
            quick_xml::escape::escape(value.as_str())
        ));
    }
    xml.push_str("</instance>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_four_queries_are_understood() {
        let trees = "portal_type:\"Instance Tree\" AND validation_state:validated";
        assert_eq!(Search::parse(trees), Ok(Search::Trees { title: None }));
        assert_eq!(
            Search::parse(&format!("{trees} AND title:=\"my \"quoted\" tree\"")),
            Ok(Search::Trees {
                title: Some("my \"quoted\" tree".into())
            })
        );
        let nodes = "portal_type:\"Compute Node\" AND validation_state:validated";
        assert_eq!(
            Search::parse(nodes),
            Ok(Search::Computers { reference: None })
        );
        assert_eq!(
            Search::parse(&format!("{nodes} AND reference:=\"COMP-1\"")),
            Ok(Search::Computers {
                reference: Some("COMP-1".into())
            })
        );
        // Older clients' names for the same.
        assert_eq!(
            Search::parse("portal_type:\"Hosting Subscription\" AND validation_state:validated"),
            Ok(Search::Trees { title: None })
        );
    }

    #[test]
    fn any_other_query_is_refused() {
        for query in [
            "",
            "portal_type:\"Person\" AND validation_state:validated",
            "portal_type:\"Instance Tree\"",
            "portal_type:\"Instance Tree\" AND validation_state:validated AND title:=\"x",
            "portal_type:\"Instance Tree\" AND validation_state:validated AND reference:=\"x\"",
            "portal_type:\"Compute Node\" AND validation_state:validated OR 1",
        ] {
            assert!(Search::parse(query).is_err(), "{query:?}");
        }
    }

    #[test]
    fn documents_round_trip_through_their_relative_url() {
        for document in [
            Document::Tree(InstanceGuid(42)),
            Document::Computer("COMP-1".into()),
        ] {
            assert_eq!(Document::parse(&document.relative_url()), Ok(document));
        }
        for bad in [
            "instance_tree_module/42",
            "compute_node_module/",
            "person_module/1",
            "",
        ] {
            assert!(Document::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_xml_is_what_the_client_writes() {
        let parameters = Parameters::from([
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1 & <x> \"y\"".to_string()),
        ]);
        assert_eq!(
            instance_xml(&parameters),
            "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  \
             <parameter id=\"a\">1 &amp; &lt;x&gt; &quot;y&quot;</parameter>\n  \
             <parameter id=\"b\">2</parameter>\n</instance>\n"
        );
    }
}
