//! The usage journals SlapOS nodes post (`useComputer`, field `use_string`): TioXML, one or
//! more transactions of movements. `slapos node report` posts one transaction referenced by
//! the computer with a movement per resource a partition used; `slapos node collect` one
//! referenced `<date>-global`, with movements for the computer and for each partition's user.
//!
//! ```xml
//! <?xml version="1.0"?><journal><transaction type="Sale Packing List">
//! <title>Resource consumptions</title><start_date></start_date>
//! <stop_date>2026-11-25 at 04:00:00</stop_date><reference>COMP-1</reference>...
//! <movement><resource>CPU Consumption</resource><title>CPU Consumption of slappart0</title>
//! <reference>slappart0</reference><quantity>42.5</quantity><price>0.0</price>
//! <VAT>None</VAT><category>cpu</category></movement>...</transaction></journal>
//! ```
//!
//! Read with a real XML parser into [`UsageReport`]s with every field the node wrote (only
//! the arrow, which names no one here, is skipped). The dates are local times without a zone:
//! kept as written. Which partition a movement names is the state's to resolve.

use quick_xml::events::Event;

use crate::state::model::{ReportedMovement, Timestamp, UsageReport};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("the usage journal is not well-formed XML: {0}")]
    Xml(String),
    #[error("the usage journal has no transaction")]
    Empty,
    #[error("movement {index}: {reason}")]
    Movement { index: usize, reason: String },
}

/// The text content of every child element of the element just opened, by name, up to its
/// end; nested elements are flattened into their parent's text.
fn children(
    reader: &mut quick_xml::Reader<&[u8]>,
    end: &[u8],
) -> Result<Vec<(String, String)>, JournalError> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut depth = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| JournalError::Xml(e.to_string()))?
        {
            Event::Start(s) => {
                depth += 1;
                if depth == 1 {
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::Empty(s) if depth == 0 => {
                let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                out.push((name, String::new()));
            }
            Event::Text(t) => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(
                        &t.xml_content()
                            .map_err(|e| JournalError::Xml(e.to_string()))?,
                    );
                }
            }
            Event::GeneralRef(r) => {
                let c = super::marshal::resolve(&r).map_err(JournalError::Xml)?;
                if let Some((_, text)) = current.as_mut() {
                    text.push(c);
                }
            }
            Event::End(e) => {
                if depth == 0 {
                    if e.local_name().as_ref() == end {
                        return Ok(out);
                    }
                    return Err(JournalError::Xml("mismatched end tag".into()));
                }
                depth -= 1;
                if depth == 0
                    && let Some(child) = current.take()
                {
                    out.push(child);
                }
            }
            Event::Eof => return Err(JournalError::Xml("unexpected end".into())),
            Event::DocType(_) => return Err(JournalError::Xml("a DOCTYPE is not accepted".into())),
            _ => {}
        }
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
}

/// The reports a journal holds, one per transaction, in order; each has its received time
/// and its movements' partitions left for the state to set.
pub fn parse(xml: &str) -> Result<Vec<UsageReport>, JournalError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut reports = Vec::new();
    let mut movements = 0usize;
    // <journal> still open: the document must close it.
    let mut open = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| JournalError::Xml(e.to_string()))?
        {
            Event::Start(s) => match s.local_name().as_ref() {
                b"journal" => open += 1,
                b"transaction" => reports.push(transaction(&mut reader, &mut movements)?),
                _ => {
                    reader
                        .read_to_end(s.name())
                        .map_err(|e| JournalError::Xml(e.to_string()))?;
                }
            },
            Event::End(_) => open = open.saturating_sub(1),
            Event::DocType(_) => return Err(JournalError::Xml("a DOCTYPE is not accepted".into())),
            Event::Eof if open > 0 => {
                return Err(JournalError::Xml(
                    "the document ends inside an element".into(),
                ));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if reports.is_empty() {
        return Err(JournalError::Empty);
    }
    Ok(reports)
}

/// One transaction, just opened, up to its end; `movements` counts the journal's movements
/// so far, for errors.
fn transaction(
    reader: &mut quick_xml::Reader<&[u8]>,
    movements: &mut usize,
) -> Result<UsageReport, JournalError> {
    let mut report = UsageReport {
        reference: String::new(),
        title: String::new(),
        start_date: String::new(),
        stop_date: String::new(),
        currency: String::new(),
        payment_mode: String::new(),
        category: String::new(),
        received_at: Timestamp(0),
        movements: Vec::new(),
    };
    let mut categories = Vec::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| JournalError::Xml(e.to_string()))?
        {
            Event::Start(s) => {
                let name = s.local_name().as_ref().to_vec();
                match name.as_slice() {
                    b"movement" => {
                        report.movements.push(movement(reader, *movements)?);
                        *movements += 1;
                    }
                    b"arrow" => {
                        reader
                            .read_to_end(s.name())
                            .map_err(|e| JournalError::Xml(e.to_string()))?;
                    }
                    _ => {
                        let raw = reader
                            .read_text(s.name())
                            .map_err(|e| JournalError::Xml(e.to_string()))?;
                        let text = quick_xml::escape::unescape(&raw)
                            .map_err(|e| JournalError::Xml(e.to_string()))?
                            .trim()
                            .to_string();
                        match name.as_slice() {
                            b"reference" => report.reference = text,
                            b"title" => report.title = text,
                            b"start_date" => report.start_date = text,
                            b"stop_date" => report.stop_date = text,
                            b"currency" => report.currency = text,
                            b"payment_mode" => report.payment_mode = text,
                            b"category" if !text.is_empty() => categories.push(text),
                            _ => {}
                        }
                    }
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"transaction" => break,
            Event::Eof => return Err(JournalError::Xml("unexpected end".into())),
            Event::DocType(_) => return Err(JournalError::Xml("a DOCTYPE is not accepted".into())),
            _ => {}
        }
    }
    report.category = categories.join(", ");
    Ok(report)
}

/// One movement, just opened, up to its end.
fn movement(
    reader: &mut quick_xml::Reader<&[u8]>,
    index: usize,
) -> Result<ReportedMovement, JournalError> {
    let fields = children(reader, b"movement")?;
    let bad = |reason: String| JournalError::Movement { index, reason };
    let resource = field(&fields, "resource")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("no <resource>".into()))?;
    let amount = |name: &str, absent: Option<f64>| {
        let text = field(&fields, name).unwrap_or_default();
        if text.is_empty()
            && let Some(absent) = absent
        {
            return Ok(absent);
        }
        text.parse()
            .ok()
            .filter(|q: &f64| q.is_finite())
            .ok_or_else(|| bad(format!("{name} {text:?} is not a number")))
    };
    let categories: Vec<&str> = fields
        .iter()
        .filter(|(k, v)| k == "category" && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
        .collect();
    Ok(ReportedMovement {
        resource: resource.to_string(),
        title: field(&fields, "title").unwrap_or_default().to_string(),
        reference: field(&fields, "reference").unwrap_or_default().to_string(),
        partition: None,
        quantity: amount("quantity", None)?,
        price: amount("price", Some(0.0))?,
        vat: field(&fields, "VAT").unwrap_or_default().to_string(),
        category: categories.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `slapos node report` writes (slapos.core 1.26.1, `slapgrid.py` `asXML`).
    const JOURNAL: &str = "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\"><title>Resource consumptions</title><start_date></start_date><stop_date>2026-11-25 at 04:00:00</stop_date><reference>COMP-1</reference><currency></currency><payment_mode></payment_mode><category></category><arrow type=\"Administration\"><source></source><destination></destination></arrow><movement><resource>CPU Consumption</resource><title>CPU Consumption of slappart0</title><reference>slappart0</reference><quantity>42.5</quantity><price>0.0</price><VAT>None</VAT><category>cpu</category></movement><movement><resource>Memory &amp; swap</resource><title>t</title><reference>slappart1</reference><quantity>1024</quantity><price>0.0</price><VAT>None</VAT><category></category></movement></transaction></journal>";

    /// The shape `slapos node collect` writes (`collect/reporter.py`, `ConsumptionReport`).
    const COLLECTED: &str = "<?xml version='1.0' encoding='utf-8'?><journal><transaction type=\"Sale Packing List\"><title>Eco Information for COMP-1 </title><start_date>2026-12-05 00:00:00</start_date><stop_date>2026-12-05 23:59:59</stop_date><reference>2026-12-05-global</reference><currency /><payment_mode /><category /><arrow type=\"Destination\" /><movement><resource>service_module/cpu_load_percent</resource><title>CPU Load Percent Average</title><reference>COMP-1</reference><quantity>12.5</quantity><price>0.0</price><VAT /><category /></movement><movement><resource>service_module/memory_used</resource><title>Memory Used Average for slapuser0</title><reference>slapuser0</reference><quantity>64.0</quantity><price>0.0</price><VAT /><category /></movement></transaction></journal>";

    fn movement(
        resource: &str,
        title: &str,
        reference: &str,
        quantity: f64,
        vat: &str,
        category: &str,
    ) -> ReportedMovement {
        ReportedMovement {
            resource: resource.into(),
            title: title.into(),
            reference: reference.into(),
            partition: None,
            quantity,
            price: 0.0,
            vat: vat.into(),
            category: category.into(),
        }
    }

    #[test]
    fn a_report_keeps_every_field_the_node_wrote() {
        let reports = parse(JOURNAL).expect("parses");
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.reference, "COMP-1");
        assert_eq!(report.title, "Resource consumptions");
        assert_eq!(report.start_date, "");
        assert_eq!(report.stop_date, "2026-11-25 at 04:00:00");
        assert_eq!(
            report.movements,
            vec![
                movement(
                    "CPU Consumption",
                    "CPU Consumption of slappart0",
                    "slappart0",
                    42.5,
                    "None",
                    "cpu"
                ),
                movement("Memory & swap", "t", "slappart1", 1024.0, "None", ""),
            ]
        );
        let priced = JOURNAL.replace(
            "<price>0.0</price><VAT>None</VAT><category>cpu",
            "<price>0.25</price><VAT>20%</VAT><category>cpu",
        );
        let reports = parse(&priced).expect("parses");
        assert_eq!(reports[0].movements[0].price, 0.25);
        assert_eq!(reports[0].movements[0].vat, "20%");
    }

    #[test]
    fn a_collected_report_names_its_day_the_computer_and_partition_users() {
        let reports = parse(COLLECTED).expect("parses");
        let report = &reports[0];
        assert_eq!(report.reference, "2026-12-05-global");
        assert_eq!(
            (report.start_date.as_str(), report.stop_date.as_str()),
            ("2026-12-05 00:00:00", "2026-12-05 23:59:59")
        );
        assert_eq!(
            report.movements,
            vec![
                movement(
                    "service_module/cpu_load_percent",
                    "CPU Load Percent Average",
                    "COMP-1",
                    12.5,
                    "",
                    ""
                ),
                movement(
                    "service_module/memory_used",
                    "Memory Used Average for slapuser0",
                    "slapuser0",
                    64.0,
                    "",
                    ""
                ),
            ]
        );
        let two = COLLECTED.replace(
            "</transaction>",
            "</transaction><transaction type=\"x\"><reference>second</reference></transaction>",
        );
        let reports = parse(&two).expect("parses");
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[1].reference, "second");
    }

    #[test]
    fn a_bad_journal_is_refused_with_its_reason() {
        assert!(matches!(parse("<journal>"), Err(JournalError::Xml(_))));
        assert_eq!(parse("<journal></journal>"), Err(JournalError::Empty));
        let bad = JOURNAL.replace("<quantity>42.5</quantity>", "<quantity>lots</quantity>");
        assert!(matches!(
            parse(&bad),
            Err(JournalError::Movement { index: 0, .. })
        ));
        let nan = JOURNAL.replace("<quantity>42.5</quantity>", "<quantity>NaN</quantity>");
        assert!(matches!(parse(&nan), Err(JournalError::Movement { .. })));
        let price = JOURNAL.replace("<price>0.0</price>", "<price>free</price>");
        assert!(matches!(parse(&price), Err(JournalError::Movement { .. })));
        assert!(matches!(
            parse("<!DOCTYPE j [<!ENTITY x \"y\">]><journal/>"),
            Err(JournalError::Xml(_))
        ));
    }
}
