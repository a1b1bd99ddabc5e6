//! How a SLAP call's arguments arrive: a query string (GET) or an
//! `application/x-www-form-urlencoded` body (POST), where Python's `None` is the literal text
//! `None`; and the `Authorization: X-SlapPartition computer_id=C, computer_partition_id=P`
//! header a partition's POSTs carry.

use std::collections::BTreeMap;

/// A call's arguments by name (the last one wins when a name repeats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(BTreeMap<String, String>);

/// What is wrong with a call's arguments: the caller's mistake (400, never 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("missing argument {0}")]
    Missing(&'static str),
    #[error("argument {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("the Authorization header: {0}")]
    Authorization(String),
    #[error("more than {MAX_FIELDS} arguments")]
    TooMany,
}

/// Most arguments one call may carry (a SLAP call has at most a dozen): each costs a map entry
/// however short its text, so their number is bounded, not only the body's bytes.
pub const MAX_FIELDS: usize = 64;

/// Decodes `%XX` escapes and `+` (a space) of one urlencoded component.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

impl Form {
    /// Parses `a=1&b=x%20y` (a query string or a urlencoded body).
    pub fn parse(encoded: &str) -> Result<Self, FormError> {
        let mut fields = BTreeMap::new();
        for (n, pair) in encoded.split('&').filter(|p| !p.is_empty()).enumerate() {
            if n == MAX_FIELDS {
                return Err(FormError::TooMany);
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).map_err(|reason| FormError::Invalid {
                name: name.to_string(),
                reason,
            })?;
            let value = percent_decode(value).map_err(|reason| FormError::Invalid {
                name: name.clone(),
                reason,
            })?;
            fields.insert(name, value);
        }
        Ok(Self(fields))
    }

    /// The argument `name`; Python's `None` (sent as `None`) reads as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| *v != "None")
    }

    /// Adds `other`'s arguments (a POST body's to its query string's); `other` wins.
    pub fn extend(&mut self, other: Form) -> Result<(), FormError> {
        self.0.extend(other.0);
        if self.0.len() > MAX_FIELDS {
            return Err(FormError::TooMany);
        }
        Ok(())
    }

    pub fn required(&self, name: &'static str) -> Result<&str, FormError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(FormError::Missing(name))
    }
}

/// The partition an `X-SlapPartition` authorization names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAuthorization {
    pub computer_id: String,
    pub computer_partition_id: String,
}

/// Reads `X-SlapPartition computer_id=C, computer_partition_id=P` (spaces after commas
/// optional); `None` when the header is absent.
pub fn partition_authorization(
    header: Option<&str>,
) -> Result<Option<PartitionAuthorization>, FormError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let fields = header
        .strip_prefix("X-SlapPartition ")
        .ok_or_else(|| FormError::Authorization("not an X-SlapPartition authorization".into()))?;
    let mut computer = None;
    let mut partition = None;
    for field in fields.split(',') {
        let (key, value) = field
            .trim()
            .split_once('=')
            .ok_or_else(|| FormError::Authorization(format!("{field:?} is not key=value")))?;
        match key {
            "computer_id" => computer = Some(value.to_string()),
            "computer_partition_id" => partition = Some(value.to_string()),
            _ => {}
        }
    }
    match (computer, partition) {
        (Some(computer_id), Some(computer_partition_id))
            if !computer_id.is_empty() && !computer_partition_id.is_empty() =>
        {
            Ok(Some(PartitionAuthorization {
                computer_id,
                computer_partition_id,
            }))
        }
        _ => Err(FormError::Authorization(
            "needs computer_id and computer_partition_id".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_decode_as_python_sends_them() {
        let form = Form::parse(
            "computer_id=COMP-1&slave_reference=None&url=https%3A%2F%2Fx%2Fsr.cfg&error_log=a+b%0Ac&empty=",
        )
        .expect("parses");
        assert_eq!(form.get("computer_id"), Some("COMP-1"));
        assert_eq!(form.get("slave_reference"), None, "Python's None");
        assert_eq!(form.get("url"), Some("https://x/sr.cfg"));
        assert_eq!(form.get("error_log"), Some("a b\nc"));
        assert_eq!(form.required("empty"), Err(FormError::Missing("empty")));
        assert_eq!(form.required("nothing"), Err(FormError::Missing("nothing")));
        assert!(matches!(
            Form::parse("a=%zz"),
            Err(FormError::Invalid { .. })
        ));
        assert!(matches!(
            Form::parse("a=%ff"),
            Err(FormError::Invalid { .. })
        ));
        assert!(matches!(
            Form::parse("a=%4"),
            Err(FormError::Invalid { .. })
        ));
    }

    #[test]
    fn a_partitions_authorization_names_it() {
        assert_eq!(
            partition_authorization(Some(
                "X-SlapPartition computer_id=COMP-1, computer_partition_id=slappart3"
            )),
            Ok(Some(PartitionAuthorization {
                computer_id: "COMP-1".into(),
                computer_partition_id: "slappart3".into(),
            }))
        );
        assert_eq!(partition_authorization(None), Ok(None));
        for bad in [
            "Basic abc",
            "X-SlapPartition computer_id=COMP-1",
            "X-SlapPartition computer_id=, computer_partition_id=p",
            "X-SlapPartition junk",
        ] {
            assert!(partition_authorization(Some(bad)).is_err(), "{bad}");
        }
    }
}
