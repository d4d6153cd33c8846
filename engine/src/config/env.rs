//! Environment interpolation, so secrets stay out of config files: `${VAR}` (an error when
//! unset), `${VAR:-default}` (the default when unset or empty), `${VAR:?message}` (an error
//! with the message when unset or empty), `$$` for a literal `$`. Comment lines are left as
//! they are. The text is interpolated before it is parsed; `GET /config` serves it
//! uninterpolated.

/// Why interpolation failed: the line (1-based) and what.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct InterpolationError {
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with a `${…}`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("an unterminated `${{`")]
    Unterminated,
    #[error("`${{{0}}}`: not an environment variable name")]
    BadName(String),
    #[error("environment variable {0} is not set (write ${{{0}:-}} for an empty default)")]
    Unset(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
}

/// `text` with every `${…}` replaced from `lookup`.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        interpolate_line(line, &lookup, &mut out).map_err(|problem| InterpolationError {
            line: i + 1,
            problem,
        })?;
    }
    Ok(out)
}

fn interpolate_line(
    line: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), Problem> {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(Problem::Unterminated)?;
            out.push_str(&expand(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

/// One `${…}` body: `NAME`, `NAME:-default` or `NAME:?message`.
fn expand(body: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let (name, op, arg) = match body.find(":-").or_else(|| body.find(":?")) {
        Some(i) => (&body[..i], &body[i..i + 2], &body[i + 2..]),
        None => (body, "", ""),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Problem::BadName(body.to_string()));
    }
    let value = lookup(name).filter(|v| !v.is_empty() || op.is_empty());
    match (value, op) {
        (Some(v), _) => Ok(v),
        (None, ":-") => Ok(arg.to_string()),
        (None, ":?") => Err(Problem::Required {
            name: name.to_string(),
            message: arg.to_string(),
        }),
        (None, _) => Err(Problem::Unset(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret-token-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_required_ones() {
        let text = "a = \"${TOKEN}\"\nb = \"${MISSING:-dflt}\"\nc = \"${EMPTY:-x}\"\nd = \"$$HOME $x\"\n# ${MISSING}\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a = \"s3cret-token-value\"\nb = \"dflt\"\nc = \"x\"\nd = \"$HOME $x\"\n# ${MISSING}\n"
        );
        let e = interpolate("x = 1\ntoken = \"${MISSING}\"\n", env).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.problem, Problem::Unset("MISSING".into()));
        assert!(e.to_string().contains("MISSING is not set"), "{e}");
        let e = interpolate("t = \"${MISSING:?set the API token}\"\n", env).unwrap_err();
        assert_eq!(e.problem.to_string(), "MISSING: set the API token");
        let e = interpolate("t = \"${EMPTY:?must not be empty}\"\n", env).unwrap_err();
        assert_eq!(e.problem.to_string(), "EMPTY: must not be empty");
        assert!(interpolate("t = \"${1BAD}\"\n", env).is_err());
        assert!(interpolate("t = \"${OPEN\"\n", env).is_err());
        assert_eq!(
            interpolate("e = \"${EMPTY}\"\n", env).unwrap(),
            "e = \"\"\n"
        );
    }
}
