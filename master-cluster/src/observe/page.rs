//! The status page: one self-contained HTML document (no script, no external resource; it
//! reloads itself every 5 s), rendered from plain data gathered by [`super::http`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::replica::metrics::Election;

#[derive(Debug, Clone, Default)]
pub struct StatusPage {
    pub replica: u64,
    pub region: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub members: Vec<MemberRow>,
    pub computers: Vec<ComputerRow>,
    /// How many computers there are in all (the page lists the first [`ROWS`]).
    pub computers_total: usize,
    pub pending: Vec<PendingRow>,
    pub pending_total: usize,
    pub elections: Vec<Election>,
    /// What could not be read (the state, the members' statuses), shown at the top.
    pub problems: Vec<String>,
}

/// At most this many computers and pending requests are listed.
pub const ROWS: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct MemberRow {
    pub id: u64,
    pub addr: String,
    pub region: String,
    /// leader, follower, learner, candidate, or unknown.
    pub role: String,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    /// Since the member last heard from the leader (for the leader: a quorum's ack).
    pub leader_contact: Option<Duration>,
    /// The serving replica's measured round trip to the member.
    pub round_trip: Option<Duration>,
    /// Why its status is missing, when it is.
    pub unreachable: String,
}

#[derive(Debug, Clone, Default)]
pub struct ComputerRow {
    pub id: String,
    pub region: String,
    pub open: bool,
    pub partitions: u32,
    pub busy: u32,
    pub last_seen: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct PendingRow {
    pub guid: String,
    pub owner: String,
    pub title: String,
    pub software_release: String,
    pub reason: String,
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{:.1} s", d.as_secs_f64()),
        120_000..7_200_000 => format!("{} min", d.as_secs() / 60),
        _ => format!("{} h", d.as_secs() / 3600),
    }
}

fn ago(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(d) => format!("{} ago", age(d)),
        Err(_) => "just now".into(),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#f6f8fa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}\
.sub{color:#57606a;margin-bottom:16px}\
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;min-width:50%}\
th,td{padding:6px 10px;border-bottom:1px solid #d0d7de;text-align:left}th{background:#eaeef2}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.role{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600}\
.leader{background:#1a7f37}.follower{background:#0969da}.learner{background:#8250df}\
.candidate{background:#bf8700}.outside{background:#57606a}.unknown{background:#cf222e}\
.bar{display:inline-block;width:120px;height:10px;background:#eaeef2;border-radius:5px;vertical-align:middle}\
.bar span{display:block;height:10px;border-radius:5px;background:#0969da}\
.problem{background:#ffebe9;border:1px solid #cf222e;padding:8px 12px;margin:8px 0}\
.empty{color:#57606a}";

/// The whole page. `now` is when it was gathered (ages are relative to it).
pub fn render(page: &StatusPage, now: SystemTime) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>slapcluster replica {id}</title>\
         <style>{STYLE}</style></head><body><h1>slapcluster — replica {id}</h1>{body}\
         </body></html>\n",
        id = page.replica,
        body = sections(page, now),
    )
}

/// The page's content without its document: the summary line, then members, computers,
/// pending requests and elections (the web panel shows it to operators).
pub fn sections(page: &StatusPage, now: SystemTime) -> String {
    let mut h = String::new();
    let leader = page
        .leader
        .map_or_else(|| "none known".to_string(), |l| format!("replica {l}"));
    let _ = write!(
        h,
        "<div class=\"sub\" id=\"summary\">region {region} · term {term} · leader: {leader}</div>",
        region = esc(if page.region.is_empty() {
            "(none)"
        } else {
            &page.region
        }),
        term = page.term,
    );
    for problem in &page.problems {
        let _ = write!(h, "<div class=\"problem\">{}</div>", esc(problem));
    }

    h.push_str(
        "<h2>Members</h2><table id=\"members\"><tr><th>id</th><th>role</th><th>region</th>\
         <th>address</th><th>applied</th><th>lag</th><th>last contact</th><th>round trip</th></tr>",
    );
    for m in &page.members {
        let role = match m.role.as_str() {
            r @ ("leader" | "follower" | "learner" | "candidate" | "outside") => r,
            _ => "unknown",
        };
        let contact = match (&m.leader_contact, m.unreachable.is_empty()) {
            (_, false) => esc(&m.unreachable),
            (Some(d), true) => age(*d),
            (None, true) => "—".into(),
        };
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td><span class=\"role {role}\">{}</span></td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{contact}</td><td class=\"n\">{}</td></tr>",
            m.id,
            esc(&m.role),
            esc(&m.region),
            esc(&m.addr),
            m.applied_index.map_or("—".into(), |i| i.to_string()),
            m.lag.map_or("—".into(), |l| l.to_string()),
            m.round_trip
                .map_or("—".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Computers ({})</h2><table id=\"computers\"><tr><th>computer</th><th>region</th>\
         <th>allocation</th><th>partitions used</th><th></th><th>last poll</th></tr>",
        page.computers_total
    );
    for c in &page.computers {
        let percent = (c.busy * 100).checked_div(c.partitions).unwrap_or(0);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td>\
             <td><span class=\"bar\"><span style=\"width:{percent}%\"></span></span></td>\
             <td>{}</td></tr>",
            esc(&c.id),
            esc(&c.region),
            if c.open { "open" } else { "closed" },
            c.busy,
            c.partitions,
            c.last_seen.map_or("never".into(), |at| ago(at, now)),
        );
    }
    if page.computers_total > page.computers.len() {
        let _ = write!(
            h,
            "<tr><td colspan=\"6\" class=\"empty\">and {} more</td></tr>",
            page.computers_total - page.computers.len()
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Pending requests ({})</h2><table id=\"pending\"><tr><th>instance</th>\
         <th>owner</th><th>software release</th><th>why it waits</th></tr>",
        page.pending_total
    );
    if page.pending.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"empty\">none</td></tr>");
    }
    for p in &page.pending {
        let _ = write!(
            h,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.guid),
            esc(&p.title),
            esc(&p.owner),
            esc(&p.software_release),
            esc(&p.reason),
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Recent elections</h2><table id=\"elections\"><tr><th>when</th><th>term</th>\
         <th>leader</th></tr>",
    );
    for e in page.elections.iter().rev() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            ago(e.at, now),
            e.term,
            e.leader
                .map_or("(election under way)".into(), |l| format!("replica {l}")),
        );
    }
    h.push_str("</table>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_every_section_and_escapes_what_users_wrote() {
        let now = SystemTime::now();
        let page = StatusPage {
            replica: 2,
            region: "eu-west".into(),
            term: 7,
            leader: Some(1),
            members: vec![MemberRow {
                id: 1,
                role: "leader".into(),
                addr: "https://[::1]:7001".into(),
                leader_contact: Some(Duration::from_millis(12)),
                round_trip: Some(Duration::from_micros(80_400)),
                ..Default::default()
            }],
            computers: vec![ComputerRow {
                id: "COMP-1".into(),
                open: true,
                partitions: 8,
                busy: 2,
                last_seen: Some(now - Duration::from_secs(3)),
                ..Default::default()
            }],
            computers_total: 3,
            pending: vec![PendingRow {
                title: "<script>alert(1)</script>".into(),
                reason: "no computer supplies it".into(),
                ..Default::default()
            }],
            pending_total: 1,
            elections: vec![Election {
                at: now - Duration::from_secs(90),
                term: 7,
                leader: Some(1),
            }],
            problems: vec![],
        };
        let html = render(&page, now);
        assert!(html.contains("leader: replica 1"));
        assert!(html.contains("<span class=\"role leader\">leader</span>"));
        assert!(html.contains("12 ms"));
        assert!(html.contains("80.4 ms"));
        assert!(html.contains("2 / 8") && html.contains("width:25%"));
        assert!(html.contains("3.0 s ago"));
        assert!(html.contains("and 2 more"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("90.0 s ago"));
    }
}
