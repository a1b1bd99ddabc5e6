//! The usage journal `slapos node report` posts (`useComputer`, field `use_string`): one
//! transaction of the computer, one movement per resource a partition used.
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
//! Read with a real XML parser; elements the journal carries but we do not use (title, price,
//! VAT, arrow, ...) are skipped, whatever they hold. The dates are local times without a zone,
//! so the period of the records is the replica's, not the journal's.

use quick_xml::events::Event;

use crate::state::model::UsageMovement;

/// What a journal says: the computer, and each movement with the partition it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub computer: String,
    pub movements: Vec<(String, UsageMovement)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("the usage journal is not well-formed XML: {0}")]
    Xml(String),
    #[error("the usage journal has no <{0}>")]
    Missing(&'static str),
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

pub fn parse(xml: &str) -> Result<Journal, JournalError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut computer = None;
    let mut movements = Vec::new();
    let mut in_transaction = false;
    // <journal> and <transaction> still open: the document must close them.
    let mut open = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| JournalError::Xml(e.to_string()))?
        {
            Event::Start(s) => match s.local_name().as_ref() {
                b"journal" => open += 1,
                b"transaction" => {
                    open += 1;
                    in_transaction = true;
                }
                b"movement" if in_transaction => {
                    let index = movements.len();
                    let fields = children(&mut reader, b"movement")?;
                    let bad = |reason: String| JournalError::Movement { index, reason };
                    let partition = field(&fields, "reference")
                        .filter(|r| !r.is_empty())
                        .ok_or_else(|| bad("no <reference> (the partition)".into()))?;
                    let resource = field(&fields, "resource")
                        .filter(|r| !r.is_empty())
                        .ok_or_else(|| bad("no <resource>".into()))?;
                    let quantity = field(&fields, "quantity").unwrap_or_default();
                    let quantity: f64 = quantity
                        .parse()
                        .ok()
                        .filter(|q: &f64| q.is_finite())
                        .ok_or_else(|| bad(format!("quantity {quantity:?} is not a number")))?;
                    movements.push((
                        partition.to_string(),
                        UsageMovement {
                            resource: resource.to_string(),
                            category: field(&fields, "category").unwrap_or_default().to_string(),
                            quantity,
                        },
                    ));
                }
                b"reference" if in_transaction => {
                    let text = reader
                        .read_text(s.name())
                        .map_err(|e| JournalError::Xml(e.to_string()))?;
                    computer = Some(text.trim().to_string());
                }
                _ => {
                    // Anything else (title, dates, arrow, ...): skipped whole.
                    reader
                        .read_to_end(s.name())
                        .map_err(|e| JournalError::Xml(e.to_string()))?;
                }
            },
            Event::End(e) => {
                open = open.saturating_sub(1);
                if e.local_name().as_ref() == b"transaction" {
                    in_transaction = false;
                }
            }
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
    Ok(Journal {
        computer: computer.ok_or(JournalError::Missing("reference"))?,
        movements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `slapos node report` writes (slapos.core 1.26.1, `slapgrid.py` `asXML`).
    const JOURNAL: &str = "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\"><title>Resource consumptions</title><start_date></start_date><stop_date>2026-11-25 at 04:00:00</stop_date><reference>COMP-1</reference><currency></currency><payment_mode></payment_mode><category></category><arrow type=\"Administration\"><source></source><destination></destination></arrow><movement><resource>CPU Consumption</resource><title>CPU Consumption of slappart0</title><reference>slappart0</reference><quantity>42.5</quantity><price>0.0</price><VAT>None</VAT><category>cpu</category></movement><movement><resource>Memory &amp; swap</resource><title>t</title><reference>slappart1</reference><quantity>1024</quantity><price>0.0</price><VAT>None</VAT><category></category></movement></transaction></journal>";

    #[test]
    fn a_report_reads_as_movements_per_partition() {
        let journal = parse(JOURNAL).expect("parses");
        assert_eq!(journal.computer, "COMP-1");
        assert_eq!(
            journal.movements,
            vec![
                (
                    "slappart0".to_string(),
                    UsageMovement {
                        resource: "CPU Consumption".into(),
                        category: "cpu".into(),
                        quantity: 42.5
                    }
                ),
                (
                    "slappart1".to_string(),
                    UsageMovement {
                        resource: "Memory & swap".into(),
                        category: String::new(),
                        quantity: 1024.0
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_bad_journal_is_refused_with_its_reason() {
        assert!(matches!(parse("<journal>"), Err(JournalError::Xml(_))));
        assert_eq!(
            parse("<journal><transaction></transaction></journal>"),
            Err(JournalError::Missing("reference"))
        );
        let bad = JOURNAL.replace("<quantity>42.5</quantity>", "<quantity>lots</quantity>");
        assert!(matches!(
            parse(&bad),
            Err(JournalError::Movement { index: 0, .. })
        ));
        let nan = JOURNAL.replace("<quantity>42.5</quantity>", "<quantity>NaN</quantity>");
        assert!(matches!(parse(&nan), Err(JournalError::Movement { .. })));
        assert!(matches!(
            parse("<!DOCTYPE j [<!ENTITY x \"y\">]><journal/>"),
            Err(JournalError::Xml(_))
        ));
    }
}
