//! The template language of software release manifests: text with `{{ expression }}` holes.
//! An expression is a variable (`partition.ipv6`, `parameter.port`), a quoted literal
//! (`"{{"`), or a variable with a fallback (`parameter.port or "8080"`). A variable that is not
//! defined and has no fallback is an error: an instance is never configured with a silently
//! empty value.

use std::collections::BTreeMap;

/// The values a template may name.
pub type Variables = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{{{{ at byte {at} is never closed")]
    Unclosed { at: usize },
    #[error("undefined variable {name:?} (give a fallback: {{{{ {name} or \"...\" }}}})")]
    Undefined { name: String },
    #[error("cannot read expression {expression:?}")]
    Syntax { expression: String },
}

/// Renders `template` with `variables`.
pub fn render(template: &str, variables: &Variables) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(TemplateError::Unclosed { at: offset + open })?;
        out.push_str(&evaluate(after[..close].trim(), variables)?);
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

fn evaluate(expression: &str, variables: &Variables) -> Result<String, TemplateError> {
    let syntax = || TemplateError::Syntax {
        expression: expression.to_owned(),
    };
    if let Some(literal) = quoted(expression) {
        return Ok(literal.to_owned());
    }
    let (name, fallback) = match expression.split_once(" or ") {
        Some((name, fallback)) => (
            name.trim(),
            Some(quoted(fallback.trim()).ok_or_else(syntax)?),
        ),
        None => (expression, None),
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(syntax());
    }
    match (variables.get(name), fallback) {
        (Some(value), _) => Ok(value.clone()),
        (None, Some(fallback)) => Ok(fallback.to_owned()),
        (None, None) => Err(TemplateError::Undefined {
            name: name.to_owned(),
        }),
    }
}

fn quoted(text: &str) -> Option<&str> {
    text.strip_prefix('"')?.strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::from([
            ("partition.ipv6".into(), "fd00::100".into()),
            ("parameter.port".into(), "8443".into()),
        ])
    }

    #[test]
    fn fills_variables_literals_and_fallbacks() {
        let out = render(
            "url=https://[{{ partition.ipv6 }}]:{{parameter.port}}/ name={{ parameter.name or \"demo\" }} {{ \"{{\" }}",
            &vars(),
        );
        assert_eq!(
            out.as_deref(),
            Ok("url=https://[fd00::100]:8443/ name=demo {{")
        );
        assert_eq!(render("no holes", &vars()).as_deref(), Ok("no holes"));
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(
            render("{{ parameter.missing }}", &vars()),
            Err(TemplateError::Undefined {
                name: "parameter.missing".into()
            })
        );
        assert_eq!(
            render("a {{ partition.ipv6", &vars()),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert!(matches!(
            render("{{ a b }}", &vars()),
            Err(TemplateError::Syntax { .. })
        ));
        assert!(matches!(
            render("{{ a or b }}", &vars()),
            Err(TemplateError::Syntax { .. })
        ));
    }
}
