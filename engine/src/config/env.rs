//! Environment interpolation, so secrets stay out of config files: `${VAR}` (an error when
//! unset), `${VAR:-default}` (the default when unset or empty), `${VAR:?message}` (an error
//! with the message when unset or empty), `$$` for a literal `$`. Comment lines are left as
//! they are. The text is interpolated before it is parsed; `GET /config` serves it
//! uninterpolated.

/// Why interpolation failed: the line (1-based) and what.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpolationError {
    pub line: usize,
    pub message: String,
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
        interpolate_line(line, &lookup, &mut out).map_err(|message| InterpolationError {
            line: i + 1,
            message,
        })?;
    }
    Ok(out)
}

fn interpolate_line(
    line: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), String> {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "an unterminated `${`".to_string())?;
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
fn expand(body: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, op, arg) = match body.find(":-").or_else(|| body.find(":?")) {
        Some(i) => (&body[..i], &body[i..i + 2], &body[i + 2..]),
        None => (body, "", ""),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`${{{body}}}`: not an environment variable name"));
    }
    let value = lookup(name).filter(|v| !v.is_empty() || op.is_empty());
    match (value, op) {
        (Some(v), _) => Ok(v),
        (None, ":-") => Ok(arg.to_string()),
        (None, ":?") => Err(format!("{name}: {arg}")),
        (None, _) => Err(format!(
            "environment variable {name} is not set (write ${{{name}:-}} for an empty default)"
        )),
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
        assert!(e.message.contains("MISSING is not set"), "{e:?}");
        let e = interpolate("t = \"${MISSING:?set the API token}\"\n", env).unwrap_err();
        assert_eq!(e.message, "MISSING: set the API token");
        let e = interpolate("t = \"${EMPTY:?must not be empty}\"\n", env).unwrap_err();
        assert_eq!(e.message, "EMPTY: must not be empty");
        assert!(interpolate("t = \"${1BAD}\"\n", env).is_err());
        assert!(interpolate("t = \"${OPEN\"\n", env).is_err());
        assert_eq!(
            interpolate("e = \"${EMPTY}\"\n", env).unwrap(),
            "e = \"\"\n"
        );
    }
}
