//! Each panel page as HTML, from plain data: no IO, no scripts, no external resource. Every
//! text from the state or the caller is escaped; a page reads on a phone (one column, tables
//! scroll sideways).

use std::fmt::Write as _;
use std::time::SystemTime;

use super::forms::{FieldErrors, RequestValues};
use crate::observe::page::{self, StatusPage, esc};
use crate::state::model::{
    Alert, AlertSubject, Computer, Instance, InstanceGuid, Parameters, Placement, Project,
    ProjectRole, ReportedState, SoftwareRelease, Timestamp, UserId,
};
use crate::state::status::{ComputerStatus, Health, Status, StatusChange};

/// What every page shows around its content: who is logged in, which replica answers.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The caller, as the certificate names them (`user alice`).
    pub who: String,
    pub operator: bool,
    pub replica: u64,
    pub region: String,
}

const STYLE: &str = "*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}\
header{background:#24292f;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline}\
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;color:#d0d7de;font-size:13px}\
main{max-width:1000px;margin:0 auto;padding:16px}\
h1{font-size:21px;margin:4px 0 12px}h2{font-size:16px;margin:22px 0 8px}\
.scroll{overflow-x:auto}table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;width:100%}\
th,td{padding:6px 10px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}th{background:#eaeef2}\
td.n{text-align:right;font-variant-numeric:tabular-nums}td code,dd code{word-break:break-all}\
.health{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}\
.ok{background:#1a7f37}.warning{background:#bf8700}.failing{background:#cf222e}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;background:#fff;border:1px solid #d0d7de;padding:10px 14px;margin:0}\
dt{color:#57606a}dd{margin:0}\
form.inline{display:inline-block;margin:0 8px 8px 0}\
button{font:inherit;padding:6px 14px;border-radius:6px;border:1px solid #8c959f;background:#fff;cursor:pointer}\
button.danger{border-color:#cf222e;color:#cf222e}\
label{display:block;font-weight:600;margin:12px 0 4px}\
input[type=text],select,textarea{font:inherit;width:100%;padding:6px 8px;border:1px solid #8c959f;border-radius:6px;background:#fff}\
textarea{min-height:90px;font-family:ui-monospace,monospace}\
.hint{color:#57606a;font-size:13px;margin:2px 0}.error{color:#cf222e;font-weight:600;margin:4px 0}\
.notice{background:#ddf4ff;border:1px solid #0969da;padding:8px 12px;margin:8px 0}\
.problem{background:#ffebe9;border:1px solid #cf222e;padding:8px 12px;margin:8px 0}\
.empty{color:#57606a}.sub{color:#57606a;margin-bottom:12px}\
.role{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600}\
.leader{background:#1a7f37}.follower{background:#0969da}.learner{background:#8250df}\
.candidate{background:#bf8700}.outside{background:#57606a}.unknown{background:#cf222e}\
.bar{display:inline-block;width:120px;height:10px;background:#eaeef2;border-radius:5px;vertical-align:middle}\
.bar span{display:block;height:10px;border-radius:5px;background:#0969da}";

/// A whole document: the chrome around `body`.
pub fn document(chrome: &Chrome, title: &str, body: &str) -> String {
    let mut nav = String::from(
        "<a href=\"/panel/\">Instances</a><a href=\"/panel/request\">Request</a>\
         <a href=\"/panel/alerts\">Alerts</a><a href=\"/panel/computers\">Computers</a>\
         <a href=\"/panel/members\">Projects</a>",
    );
    if chrome.operator {
        nav.push_str(
            "<a href=\"/panel/pending\">Pending</a><a href=\"/panel/cluster\">Cluster</a>",
        );
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · slapcluster</title><style>{STYLE}</style></head><body>\
         <header><span>slapcluster</span>{nav}<span class=\"who\" id=\"who\">{who} · replica {replica}{region}</span></header>\
         <main>{body}</main></body></html>\n",
        title = esc(title),
        who = esc(&chrome.who),
        replica = chrome.replica,
        region = if chrome.region.is_empty() {
            String::new()
        } else {
            format!(" ({})", esc(&chrome.region))
        },
    )
}

/// A refusal or failure as a page: what happened, in words.
pub fn problem(chrome: &Chrome, title: &str, message: &str) -> String {
    document(
        chrome,
        title,
        &format!(
            "<h1>{}</h1><div class=\"problem\" id=\"problem\">{}</div>",
            esc(title),
            esc(message)
        ),
    )
}

fn badge(status: &Status) -> String {
    format!(
        "<span class=\"health {h}\">{h}</span> {why}",
        h = status.health.as_str(),
        why = esc(&status.why)
    )
}

fn health_badge(health: Health) -> String {
    format!("<span class=\"health {h}\">{h}</span>", h = health.as_str())
}

/// `2026-12-06 10:50:12 UTC` from microseconds since the epoch.
pub fn utc(at: Timestamp) -> String {
    let seconds = at.0 / 1_000_000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

fn placement_text(placement: &Placement) -> String {
    match placement {
        Placement::Partition(p) => format!("{}/{}", p.computer, p.partition),
        Placement::Hosted { host } => format!("hosted by instance {host}"),
        Placement::Pending { .. } => "waiting for a partition".into(),
        Placement::Unplaceable { .. } => "cannot be placed".into(),
    }
}

fn reported_text(reported: Option<ReportedState>) -> &'static str {
    match reported {
        None => "not reported yet",
        Some(ReportedState::Started) => "started",
        Some(ReportedState::Stopped) => "stopped",
        Some(ReportedState::Destroyed) => "destroyed",
    }
}

/// A path segment: what is not plainly safe in a URL is percent-encoded.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn instance_link(guid: InstanceGuid, title: &str) -> String {
    format!("<a href=\"/panel/instances/{guid}\">{}</a>", esc(title))
}

/// One row of the home page's trees: an instance and its status, `depth` below its root.
#[derive(Debug, Clone)]
pub struct TreeRow {
    pub instance: Instance,
    pub depth: usize,
    pub status: Status,
}

/// The caller's instance trees and how many alerts they may read are open; `notice`: what
/// the last form did.
pub fn home(chrome: &Chrome, rows: &[TreeRow], open_alerts: usize, notice: Option<&str>) -> String {
    let mut h = String::new();
    if let Some(notice) = notice {
        let _ = write!(
            h,
            "<div class=\"notice\" id=\"notice\">{}</div>",
            esc(notice)
        );
    }
    h.push_str("<h1>Your instances</h1>");
    if open_alerts > 0 {
        let _ = write!(
            h,
            "<div class=\"problem\" id=\"alert-count\"><a href=\"/panel/alerts\">{open_alerts} open alert(s)</a></div>"
        );
    }
    h.push_str(
        "<div class=\"scroll\"><table id=\"instances\"><tr><th>instance</th><th>software type</th>\
         <th>requested</th><th>status</th><th>where</th></tr>",
    );
    if rows.is_empty() {
        h.push_str(
            "<tr><td colspan=\"5\" class=\"empty\">none yet: <a href=\"/panel/request\">request one</a></td></tr>",
        );
    }
    for row in rows {
        let i = &row.instance;
        let _ = write!(
            h,
            "<tr data-guid=\"{guid}\"><td style=\"padding-left:{pad}px\">{link}{shared}</td><td>{stype}</td>\
             <td>{requested}</td><td>{status}</td><td>{placement}</td></tr>",
            guid = i.guid,
            pad = 10 + 18 * row.depth,
            link = instance_link(i.guid, &i.title),
            shared = if i.shared { " (shared)" } else { "" },
            stype = esc(&i.software_type),
            requested = i.requested_state.as_str(),
            status = badge(&row.status),
            placement = esc(&placement_text(&i.placement)),
        );
    }
    h.push_str("</table></div>");
    document(chrome, "Instances", &h)
}

/// Everything the instance page shows.
#[derive(Debug, Clone)]
pub struct InstancePage {
    pub instance: Instance,
    pub status: Status,
    pub explanation: String,
    pub parameters: Parameters,
    pub connection: Parameters,
    pub parent: Option<(InstanceGuid, String)>,
    pub children: Vec<(InstanceGuid, String)>,
    pub history: Vec<StatusChange>,
    /// Whether the caller may start or stop it (its owner, on a root).
    pub may_change_state: bool,
    pub may_destroy: bool,
    /// What the last form did, shown on top.
    pub notice: Option<String>,
}

fn parameter_table(id: &str, parameters: &Parameters, none: &str) -> String {
    if parameters.is_empty() {
        return format!("<p class=\"empty\" id=\"{id}\">{}</p>", esc(none));
    }
    let mut h =
        format!("<div class=\"scroll\"><table id=\"{id}\"><tr><th>name</th><th>value</th></tr>");
    for (name, value) in parameters {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td></tr>",
            esc(name),
            esc(value)
        );
    }
    h.push_str("</table></div>");
    h
}

fn history_table(history: &[StatusChange]) -> String {
    let mut h = String::from(
        "<div class=\"scroll\"><table id=\"history\"><tr><th>since</th><th>status</th><th>why</th></tr>",
    );
    for change in history.iter().rev() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            utc(change.at),
            health_badge(change.status.health),
            esc(&change.status.why)
        );
    }
    h.push_str("</table></div>");
    h
}

pub fn instance(chrome: &Chrome, page: &InstancePage) -> String {
    let i = &page.instance;
    let mut h = String::new();
    if let Some(notice) = &page.notice {
        let _ = write!(
            h,
            "<div class=\"notice\" id=\"notice\">{}</div>",
            esc(notice)
        );
    }
    let _ = write!(
        h,
        "<h1 id=\"title\">{}</h1><p id=\"status\">{}</p><dl>\
         <dt>guid</dt><dd>{}</dd><dt>owner</dt><dd>{}</dd><dt>project</dt><dd>{}</dd>\
         <dt>software release</dt><dd><code>{}</code></dd><dt>software type</dt><dd>{}</dd>\
         <dt>requested</dt><dd id=\"requested\">{}</dd><dt>reported</dt><dd id=\"reported\">{}</dd>\
         <dt>where</dt><dd id=\"placement\">{}</dd><dt>why there</dt><dd id=\"explanation\">{}</dd>",
        esc(&i.title),
        badge(&page.status),
        i.guid,
        esc(i.owner.as_str()),
        esc(i.project.as_str()),
        esc(i.software_release.as_str()),
        esc(&i.software_type),
        i.requested_state.as_str(),
        reported_text(i.reported_state),
        esc(&placement_text(&i.placement)),
        esc(&page.explanation),
    );
    if let Some((guid, title)) = &page.parent {
        let _ = write!(
            h,
            "<dt>requested by</dt><dd>{}</dd>",
            instance_link(*guid, title)
        );
    }
    if !i.sla.is_empty() {
        let sla: Vec<String> = i.sla.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(h, "<dt>SLA</dt><dd>{}</dd>", esc(&sla.join(" ")));
    }
    if let Some(error) = &i.last_error {
        let _ = write!(
            h,
            "<dt>last error</dt><dd><code id=\"last-error\">{}</code></dd>",
            esc(error
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(""))
        );
    }
    h.push_str("</dl>");
    if page.may_change_state || page.may_destroy {
        h.push_str("<h2>Actions</h2>");
    }
    if page.may_change_state {
        let (wanted, label) = match i.requested_state {
            crate::state::model::RequestedState::Started => ("stopped", "Stop"),
            _ => ("started", "Start"),
        };
        let _ = write!(
            h,
            "<form class=\"inline\" method=\"post\" action=\"/panel/instances/{}/state\">\
             <input type=\"hidden\" name=\"state\" value=\"{wanted}\">\
             <button type=\"submit\" id=\"change-state\">{label}</button></form>",
            i.guid
        );
    }
    if page.may_destroy {
        let _ = write!(
            h,
            "<form class=\"inline\" method=\"post\" action=\"/panel/instances/{}/destroy\">\
             <label style=\"display:inline;font-weight:400\"><input type=\"checkbox\" name=\"confirm\" \
             value=\"yes\" required id=\"confirm-destroy\"> destroy it and everything it requested</label> \
             <button type=\"submit\" class=\"danger\" id=\"destroy\">Destroy</button></form>",
            i.guid
        );
    }
    h.push_str("<h2>Connection parameters</h2>");
    h.push_str(&parameter_table(
        "connection",
        &page.connection,
        "none published yet",
    ));
    h.push_str("<h2>Parameters</h2>");
    h.push_str(&parameter_table("parameters", &page.parameters, "none"));
    if !page.children.is_empty() {
        h.push_str("<h2>Requested by it</h2><ul id=\"children\">");
        for (guid, title) in &page.children {
            let _ = write!(h, "<li>{}</li>", instance_link(*guid, title));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>History</h2>");
    h.push_str(&history_table(&page.history));
    document(chrome, &i.title, &h)
}

fn field_error(errors: &FieldErrors, field: &str) -> String {
    errors.get(field).map_or_else(String::new, |message| {
        format!(
            "<p class=\"error\" id=\"error-{field}\">{}</p>",
            esc(message)
        )
    })
}

/// The request form, with what was typed and what is wrong with it (`problem`: the
/// command's refusal, when the fields were fine but the cluster said no).
pub fn request_form(
    chrome: &Chrome,
    catalog: &[SoftwareRelease],
    values: &RequestValues,
    errors: &FieldErrors,
    problem: Option<&str>,
) -> String {
    let mut h = String::from("<h1>Request an instance</h1>");
    if let Some(problem) = problem {
        let _ = write!(
            h,
            "<div class=\"problem\" id=\"problem\">{}</div>",
            esc(problem)
        );
    }
    h.push_str("<form method=\"post\" action=\"/panel/request\" id=\"request\">");
    let _ = write!(
        h,
        "<label for=\"title\">Title</label><input type=\"text\" id=\"title\" name=\"title\" \
         maxlength=\"1024\" value=\"{}\"><p class=\"hint\">unique among your instances: \
         requesting the same title again changes that instance</p>{}",
        esc(&values.title),
        field_error(errors, "title")
    );
    h.push_str(
        "<label for=\"software_release\">Software release</label>\
         <select id=\"software_release\" name=\"software_release\"><option value=\"\">choose one</option>",
    );
    let mut types = Vec::new();
    for release in catalog {
        let selected = if release.url.as_str() == values.software_release {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<option value=\"{url}\"{selected}>{title} ({url})</option>",
            url = esc(release.url.as_str()),
            title = esc(&release.title),
        );
        types.extend(release.software_types.iter().cloned());
    }
    types.sort();
    types.dedup();
    h.push_str("</select>");
    h.push_str(&field_error(errors, "software_release"));
    let _ = write!(
        h,
        "<label for=\"software_type\">Software type</label><input type=\"text\" \
         id=\"software_type\" name=\"software_type\" list=\"types\" placeholder=\"default\" value=\"{}\"><datalist id=\"types\">",
        esc(&values.software_type)
    );
    for software_type in &types {
        let _ = write!(h, "<option value=\"{}\">", esc(software_type));
    }
    h.push_str("</datalist>");
    h.push_str(&field_error(errors, "software_type"));
    let _ = write!(
        h,
        "<label for=\"parameters\">Parameters</label><textarea id=\"parameters\" name=\"parameters\" \
         placeholder=\"port = 8080\">{}</textarea><p class=\"hint\">one key = value per line</p>{}",
        esc(&values.parameters),
        field_error(errors, "parameters")
    );
    let _ = write!(
        h,
        "<label for=\"sla\">Where (SLA)</label><textarea id=\"sla\" name=\"sla\" \
         placeholder=\"region = eu\">{}</textarea><p class=\"hint\">key = value lines the \
         computer must match (region, cpu_type, computer_guid, project_guid, ...)</p>{}",
        esc(&values.sla),
        field_error(errors, "sla")
    );
    let stopped = values.state == "stopped";
    let _ = write!(
        h,
        "<label for=\"state\">State</label><select id=\"state\" name=\"state\">\
         <option value=\"started\"{}>started</option><option value=\"stopped\"{}>stopped</option></select>{}\
         <p><button type=\"submit\" id=\"submit\">Request</button></p></form>",
        if stopped { "" } else { " selected" },
        if stopped { " selected" } else { "" },
        field_error(errors, "state")
    );
    document(chrome, "Request", &h)
}

/// Alerts the caller may read, newest first, open ones first.
pub fn alerts(chrome: &Chrome, alerts: &[Alert]) -> String {
    let mut h = String::from("<h1>Alerts</h1>");
    for (heading, id, open) in [("Open", "open", true), ("Closed", "closed", false)] {
        let _ = write!(
            h,
            "<h2>{heading}</h2><div class=\"scroll\"><table id=\"{id}\"><tr><th>about</th>\
             <th>opened</th><th>why</th>{}</tr>",
            if open {
                ""
            } else {
                "<th>closed</th><th>because</th>"
            }
        );
        let listed: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.closed_at.is_none() == open)
            .collect();
        if listed.is_empty() {
            let _ = write!(h, "<tr><td colspan=\"5\" class=\"empty\">none</td></tr>");
        }
        for alert in listed {
            let about = match &alert.subject {
                AlertSubject::Instance(guid) if open => instance_link(*guid, &alert.title),
                AlertSubject::Instance(_) => esc(&alert.title),
                AlertSubject::Computer(id) => format!(
                    "computer <a href=\"/panel/computers/{}\">{}</a>",
                    segment(id.as_str()),
                    esc(id.as_str())
                ),
            };
            let _ = write!(
                h,
                "<tr><td>{about}</td><td>{}</td><td>{}</td>",
                utc(alert.opened_at),
                esc(&alert.reason)
            );
            if let Some(closed) = alert.closed_at {
                let _ = write!(
                    h,
                    "<td>{}</td><td>{}</td>",
                    utc(closed),
                    esc(alert.closed_because.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</tr>");
        }
        h.push_str("</table></div>");
    }
    document(chrome, "Alerts", &h)
}

/// A computer as listed: its record, status and when its node last polled.
#[derive(Debug, Clone)]
pub struct ComputerRow {
    pub computer: Computer,
    pub status: ComputerStatus,
    pub last_seen: Option<Timestamp>,
}

/// The first computers the caller may inspect, of `total`.
pub fn computers(chrome: &Chrome, rows: &[ComputerRow], total: usize) -> String {
    let mut h = format!(
        "<h1>Computers ({total})</h1><div class=\"scroll\"><table id=\"computers\"><tr><th>computer</th>\
         <th>project</th><th>allocation</th><th>partitions used</th><th>status</th><th>last poll</th></tr>",
    );
    if rows.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"empty\">none you may inspect</td></tr>");
    }
    for row in rows {
        let c = &row.computer;
        let _ = write!(
            h,
            "<tr><td><a href=\"/panel/computers/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{} / {}</td><td>{}</td><td>{}</td></tr>",
            segment(c.id.as_str()),
            esc(c.id.as_str()),
            esc(c.project.as_str()),
            c.allocation_scope,
            c.partition_count.saturating_sub(c.free_count),
            c.partition_count,
            badge(&row.status.status),
            row.last_seen.map_or_else(|| "never".to_string(), utc),
        );
    }
    if total > rows.len() {
        let _ = write!(
            h,
            "<tr><td colspan=\"6\" class=\"empty\">and {} more (slapctl computer list lists \
             them all)</td></tr>",
            total - rows.len()
        );
    }
    h.push_str("</table></div>");
    document(chrome, "Computers", &h)
}

/// A computer's partitions and who holds them.
#[derive(Debug, Clone)]
pub struct PartitionRow {
    pub reference: String,
    pub addresses: Vec<String>,
    pub occupant: Option<(InstanceGuid, String, UserId)>,
}

pub fn computer(
    chrome: &Chrome,
    row: &ComputerRow,
    partitions: &[PartitionRow],
    history: &[StatusChange],
) -> String {
    let c = &row.computer;
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>{}</h1><p id=\"status\">{}</p><dl><dt>project</dt><dd>{}</dd><dt>allocation</dt><dd>{}</dd>\
         <dt>last poll</dt><dd>{}</dd></dl><h2>Partitions</h2><div class=\"scroll\"><table id=\"partitions\">\
         <tr><th>partition</th><th>addresses</th><th>instance</th><th>owner</th></tr>",
        esc(c.id.as_str()),
        badge(&row.status.status),
        esc(c.project.as_str()),
        c.allocation_scope,
        row.last_seen.map_or_else(|| "never".to_string(), utc),
    );
    for p in partitions {
        let (instance, owner) = match &p.occupant {
            Some((guid, title, owner)) => (instance_link(*guid, title), esc(owner.as_str())),
            None => (
                "<span class=\"empty\">free</span>".to_string(),
                String::new(),
            ),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{instance}</td><td>{owner}</td></tr>",
            esc(&p.reference),
            esc(&p.addresses.join(" ")),
        );
    }
    h.push_str("</table></div><h2>History</h2>");
    h.push_str(&history_table(history));
    document(chrome, c.id.as_str(), &h)
}

/// Requests waiting for a partition, and why.
pub fn pending(chrome: &Chrome, waiting: &[Instance], total: u64) -> String {
    let mut h = format!(
        "<h1>Pending requests ({total})</h1><div class=\"scroll\"><table id=\"pending\"><tr>\
         <th>instance</th><th>owner</th><th>software release</th><th>why it waits</th></tr>"
    );
    if waiting.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"empty\">none</td></tr>");
    }
    for i in waiting {
        let reason = match &i.placement {
            Placement::Pending { reason } | Placement::Unplaceable { reason } => reason.as_str(),
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            instance_link(i.guid, &i.title),
            esc(i.owner.as_str()),
            esc(i.software_release.as_str()),
            esc(reason)
        );
    }
    h.push_str("</table></div>");
    document(chrome, "Pending requests", &h)
}

/// Projects the caller may read, each with its members.
pub fn members(chrome: &Chrome, projects: &[(Project, Vec<(UserId, ProjectRole)>)]) -> String {
    let mut h = String::from("<h1>Projects</h1>");
    if projects.is_empty() {
        h.push_str("<p class=\"empty\">You are a member of no project.</p>");
    }
    for (project, members) in projects {
        let _ = write!(
            h,
            "<h2>{} <span class=\"empty\">{}</span></h2><div class=\"scroll\"><table>\
             <tr><th>member</th><th>role</th></tr>",
            esc(project.id.as_str()),
            esc(&project.title)
        );
        if members.is_empty() {
            h.push_str("<tr><td colspan=\"2\" class=\"empty\">no members</td></tr>");
        }
        for (user, role) in members {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(user.as_str()),
                role.as_str()
            );
        }
        h.push_str("</table></div>");
    }
    document(chrome, "Projects", &h)
}

/// The replicas and elections: the operators' status page, inside the panel.
pub fn cluster(chrome: &Chrome, status: &StatusPage, now: SystemTime) -> String {
    let body = format!("<h1>Cluster</h1>{}", page::sections(status, now));
    document(chrome, "Cluster", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{PartitionId, Requester};
    use crate::state::status::Cause;

    fn chrome() -> Chrome {
        Chrome {
            who: "user <alice>".into(),
            operator: false,
            replica: 2,
            region: "eu".into(),
        }
    }

    fn status(health: Health, why: &str) -> Status {
        Status {
            health,
            cause: Cause::Running,
            why: why.into(),
        }
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(Timestamp(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(Timestamp(1_796_554_212_000_000)),
            "2026-12-06 10:50:12 UTC"
        );
        assert_eq!(
            utc(Timestamp(951_782_400_000_000)),
            "2000-02-29 00:00:00 UTC"
        );
    }

    #[test]
    fn pages_escape_what_users_wrote_and_show_operators_their_links() {
        let on = Placement::Partition(PartitionId {
            computer: "COMP-1".into(),
            partition: "slappart0".into(),
        });
        let mut web =
            crate::state::sample::instance(7, "alice", Requester::User("alice".into()), on);
        web.title = "<script>x</script>".into();
        let page = InstancePage {
            instance: web.clone(),
            status: status(Health::Failing, "its node reported an error: <b>"),
            explanation: "placed".into(),
            parameters: Parameters::from([("port".into(), "\"8080\"".into())]),
            connection: Parameters::new(),
            parent: None,
            children: vec![],
            history: vec![StatusChange {
                at: Timestamp(0),
                status: status(Health::Ok, "started"),
            }],
            may_change_state: true,
            may_destroy: false,
            notice: Some("stopped".into()),
        };
        let html = instance(&chrome(), &page);
        assert!(!html.contains("<script>") && !html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("user &lt;alice&gt;"));
        assert!(html.contains("&quot;8080&quot;"));
        assert!(html.contains("<span class=\"health failing\">failing</span>"));
        assert!(html.contains("action=\"/panel/instances/SOFTINST-7/state\""));
        assert!(
            html.contains("value=\"stopped\""),
            "a started instance offers Stop"
        );
        assert!(
            !html.contains("/destroy\""),
            "no destroy form without the right"
        );
        assert!(html.contains("none published yet"));
        assert!(!html.contains("/panel/cluster"), "not an operator");
        let operator = Chrome {
            operator: true,
            ..chrome()
        };
        assert!(home(&operator, &[], 0, None).contains("/panel/cluster"));
        assert!(home(&chrome(), &[], 2, None).contains("2 open alert(s)"));
        assert!(home(&chrome(), &[], 0, Some("<done>")).contains("&lt;done&gt;"));
    }

    #[test]
    fn the_request_form_keeps_what_was_typed_and_names_the_wrong_field() {
        let values = RequestValues {
            title: "a\"b".into(),
            software_release: "https://x/kvm.cfg".into(),
            parameters: "port 80".into(),
            ..Default::default()
        };
        let errors = values.request().expect_err("invalid parameters");
        let catalog = vec![SoftwareRelease {
            url: "https://x/kvm.cfg".into(),
            title: "KVM".into(),
            software_types: ["default".to_string(), "nbd".to_string()].into(),
            published_by: crate::state::model::Actor::User("op".into()),
            published_at: Timestamp(1),
        }];
        let html = request_form(&chrome(), &catalog, &values, &errors, None);
        assert!(html.contains("value=\"a&quot;b\""));
        assert!(html.contains("<option value=\"https://x/kvm.cfg\" selected>KVM"));
        assert!(html.contains("id=\"error-parameters\""));
        assert!(!html.contains("id=\"error-title\""));
        assert!(html.contains("<option value=\"nbd\">"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("COMP-1"), "COMP-1");
        assert_eq!(segment("a/b c\"<"), "a%2Fb%20c%22%3C");
    }
}
