//! What a command may hold, checked before it is proposed (`check_input`) and again when applied:
//! sizes, names, URLs, hex.

use super::*;

pub(super) fn check_name(what: &'static str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "is empty".to_string(),
        });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Rejection::TooLarge {
            what: what.into(),
            bytes: value.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "contains control characters".to_string(),
        });
    }
    Ok(())
}

/// `min` to `max` lowercase hex digits.
pub(super) fn check_hex(what: &str, value: &str, min: usize, max: usize) -> Result<(), Rejection> {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if value.len() < min || value.len() > max || !value.chars().all(hex) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: format!("{value:?} is not {min} to {max} lowercase hex digits"),
        });
    }
    Ok(())
}

/// A SHA-256 in lowercase hex.
pub(super) fn check_token_hash(hash: &str) -> Result<(), Rejection> {
    check_hex("token hash", hash, 64, 64)
}

/// A serial as `ca::Serial` prints it.
pub(super) fn check_serial(serial: &str) -> Result<(), Rejection> {
    check_hex("certificate serial", serial, 1, 40)
}

pub(super) fn check_url(url: &SoftwareReleaseUrl) -> Result<(), Rejection> {
    let url = url.as_str();
    if url.len() > MAX_URL_BYTES {
        return Err(Rejection::TooLarge {
            what: "software release url".into(),
            bytes: url.len(),
            max: MAX_URL_BYTES,
        });
    }
    if url.is_empty() || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Rejection::Invalid {
            what: "software release url".into(),
            reason: format!("{url:?} is not a url"),
        });
    }
    Ok(())
}

/// What can be refused in a command from the command alone (sizes, counts, shapes): the same
/// checks its handler makes, run by the replica that receives it before proposing it, so that
/// a request too large for the state never costs a log entry. The state machine makes them
/// again when it applies (a replica of another release may have proposed it).
pub fn check_input(op: &Op) -> Result<(), Rejection> {
    match op {
        Op::RequestInstance(request) => check_request(request),
        Op::RegisterComputer(definition) => check_definition(definition),
        Op::PublishConnection { parameters, .. } => {
            check_parameters("connection parameters", parameters, MAX_PARAMETERS_BYTES)
        }
        Op::PostUsage { records, .. } => {
            if records.len() > MAX_USAGE_RECORDS {
                return Err(Rejection::TooMany {
                    what: "usage records".into(),
                    count: records.len(),
                    max: MAX_USAGE_RECORDS,
                });
            }
            records.iter().try_for_each(check_usage)
        }
        Op::UpdateRelatedInstances { titles, .. } => check_titles(titles),
        Op::PostUsageReports { reports, .. } => check_usage_reports(reports),
        Op::CheckSilence { silent_after_s } => check_silence_threshold(*silent_after_s),
        _ => Ok(()),
    }
}

/// The longest silence threshold a check may set: a week.
pub const MAX_SILENCE_SECONDS: u64 = 7 * 24 * 3600;

/// A node silence threshold: at least a second, at most [`MAX_SILENCE_SECONDS`].
pub(super) fn check_silence_threshold(seconds: u64) -> Result<(), Rejection> {
    if (1..=MAX_SILENCE_SECONDS).contains(&seconds) {
        return Ok(());
    }
    Err(Rejection::Invalid {
        what: "silence threshold".into(),
        reason: format!("{seconds} s is not within 1 s and a week"),
    })
}

/// The children an instance still requests: at most [`MAX_RELATED_INSTANCES`] titles.
pub(super) fn check_titles(titles: &[String]) -> Result<(), Rejection> {
    if titles.len() > MAX_RELATED_INSTANCES {
        return Err(Rejection::TooMany {
            what: "related instances".into(),
            count: titles.len(),
            max: MAX_RELATED_INSTANCES,
        });
    }
    titles
        .iter()
        .try_for_each(|title| check_name("title", title))
}

pub(super) fn check_parameters(
    what: &'static str,
    parameters: &Parameters,
    max: usize,
) -> Result<(), Rejection> {
    let bytes: usize = parameters.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > max {
        return Err(Rejection::TooLarge {
            what: what.into(),
            bytes,
            max,
        });
    }
    if parameters.keys().any(String::is_empty) {
        return Err(Rejection::Invalid {
            what: what.into(),
            reason: "a parameter name is empty".to_string(),
        });
    }
    Ok(())
}

pub(super) fn check_request(request: &InstanceRequest) -> Result<(), Rejection> {
    check_name("title", &request.title)?;
    check_url(&request.software_release)?;
    check_name("software type", &request.software_type)?;
    check_parameters(
        "instance parameters",
        &request.parameters,
        MAX_PARAMETERS_BYTES,
    )?;
    check_parameters("SLA", &request.sla, MAX_SLA_BYTES)
}

pub(super) fn check_definition(definition: &ComputerDefinition) -> Result<(), Rejection> {
    check_name("computer id", definition.id.as_str())?;
    if definition.partitions.len() > MAX_PARTITIONS_PER_COMPUTER {
        return Err(Rejection::TooMany {
            what: "partitions".into(),
            count: definition.partitions.len(),
            max: MAX_PARTITIONS_PER_COMPUTER,
        });
    }
    let mut seen = BTreeSet::new();
    for partition in &definition.partitions {
        check_name("partition reference", partition.reference.as_str())?;
        if !seen.insert(&partition.reference) {
            return Err(Rejection::Invalid {
                what: "computer definition".into(),
                reason: format!("partition {} appears twice", partition.reference),
            });
        }
        for text in [&partition.path, &partition.tap, &partition.user]
            .into_iter()
            .flatten()
        {
            check_name("partition field", text)?;
        }
        for address in &partition.addresses {
            check_name("address", &address.addr)?;
            check_name("netmask", &address.netmask)?;
        }
    }
    if let Some(attributes) = &definition.attributes {
        for (key, value) in attributes {
            check_name("attribute name", key)?;
            check_name("attribute value", value)?;
        }
    }
    Ok(())
}

/// At most [`MAX_USAGE_RECORDS`] movements in all; every name within [`MAX_NAME_BYTES`] (the
/// node's free texts may be empty), every amount a number within ±[`MAX_USAGE_QUANTITY`].
pub(super) fn check_usage_reports(reports: &[UsageReport]) -> Result<(), Rejection> {
    let movements: usize = reports.iter().map(|r| r.movements.len()).sum();
    if movements > MAX_USAGE_RECORDS {
        return Err(Rejection::TooMany {
            what: "usage movements".into(),
            count: movements,
            max: MAX_USAGE_RECORDS,
        });
    }
    for report in reports {
        for (what, value) in [
            ("usage report reference", &report.reference),
            ("usage report title", &report.title),
            ("usage report start date", &report.start_date),
            ("usage report stop date", &report.stop_date),
            ("usage report currency", &report.currency),
            ("usage report payment mode", &report.payment_mode),
            ("usage report category", &report.category),
        ] {
            check_optional_name(what, value)?;
        }
        for movement in &report.movements {
            check_name("usage resource", &movement.resource)?;
            for (what, value) in [
                ("usage title", &movement.title),
                ("usage reference", &movement.reference),
                ("usage VAT", &movement.vat),
                ("usage category", &movement.category),
            ] {
                check_optional_name(what, value)?;
            }
            // A node's report may hold sentinels: `node collect` writes -1 for a ratio it
            // could not measure.
            let signed = -MAX_USAGE_QUANTITY..=MAX_USAGE_QUANTITY;
            check_amount("usage quantity", movement.quantity, signed.clone())?;
            check_amount("usage price", movement.price, signed)?;
        }
    }
    Ok(())
}

/// A finite amount within `range`.
fn check_amount(
    what: &'static str,
    amount: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<(), Rejection> {
    let reason = if !amount.is_finite() {
        format!("{amount} is not a number")
    } else if !range.contains(&amount) {
        format!(
            "{amount} is not between {:e} and {:e}",
            range.start(),
            range.end()
        )
    } else {
        return Ok(());
    };
    Err(Rejection::Invalid {
        what: what.into(),
        reason,
    })
}

/// A name that may be empty (a node's free text).
fn check_optional_name(what: &'static str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name(what, value)
    }
}

pub(super) fn check_usage(record: &UsageRecord) -> Result<(), Rejection> {
    if record.period_end < record.period_start {
        return Err(Rejection::Invalid {
            what: "usage record".into(),
            reason: "period ends before it starts".to_string(),
        });
    }
    for movement in &record.movements {
        check_name("usage resource", &movement.resource)?;
        check_optional_name("usage category", &movement.category)?;
        check_amount(
            "usage quantity",
            movement.quantity,
            0.0..=MAX_USAGE_QUANTITY,
        )?;
    }
    Ok(())
}
