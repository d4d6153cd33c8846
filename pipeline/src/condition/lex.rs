//! The condition language's tokens, each with the byte offset it starts at (for errors).

use super::ConditionError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    /// A field name or a bare word (`severity`, `http.status`, `warning`, `and`, `contains`).
    Word(String),
    Str(String),
    Num(f64),
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

/// A token and where it starts (byte offset into the condition).
pub(super) type Spanned = (Token, usize);

pub(super) fn tokenize(text: &str) -> Result<Vec<Spanned>, ConditionError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let b = bytes[pos];
        if b.is_ascii_whitespace() {
            pos += 1;
            continue;
        }
        let (token, len) = match b {
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            b'[' => (Token::LBracket, 1),
            b']' => (Token::RBracket, 1),
            b',' => (Token::Comma, 1),
            b'"' | b'\'' => string(text, pos)?,
            b'=' | b'!' | b'<' | b'>' => operator(bytes, pos)?,
            b'0'..=b'9' | b'-' => number(text, pos)?,
            _ if is_word_start(b) => word(text, pos),
            _ => {
                let ch = text[pos..].chars().next().unwrap_or('?');
                return Err(ConditionError::at(pos, format!("unexpected `{ch}`")));
            }
        };
        tokens.push((token, pos));
        pos += len;
    }
    Ok(tokens)
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-')
}

fn word(text: &str, pos: usize) -> (Token, usize) {
    let len = text.as_bytes()[pos..]
        .iter()
        .take_while(|&&b| is_word_byte(b))
        .count();
    (Token::Word(text[pos..pos + len].to_string()), len)
}

fn operator(bytes: &[u8], pos: usize) -> Result<(Token, usize), ConditionError> {
    let two = bytes.get(pos..pos + 2);
    let op = match (bytes[pos], two) {
        (_, Some(b"==")) => ("==", 2),
        (_, Some(b"!=")) => ("!=", 2),
        (_, Some(b"<=")) => ("<=", 2),
        (_, Some(b">=")) => (">=", 2),
        (b'<', _) => ("<", 1),
        (b'>', _) => (">", 1),
        (b'=', _) => return Err(ConditionError::at(pos, "`=` is not an operator: use `==`")),
        _ => {
            return Err(ConditionError::at(
                pos,
                "`!` is not an operator: use `not` or `!=`",
            ))
        }
    };
    Ok((Token::Op(op.0), op.1))
}

fn number(text: &str, pos: usize) -> Result<(Token, usize), ConditionError> {
    let bytes = text.as_bytes();
    let sign = usize::from(bytes[pos] == b'-');
    let len = sign
        + bytes[pos + sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
    let literal = &text[pos..pos + len];
    literal
        .parse::<f64>()
        .map(|n| (Token::Num(n), len))
        .map_err(|_| ConditionError::at(pos, format!("`{literal}` is not a number")))
}

/// `"…"` or `'…'` with `\"`, `\'`, `\\`, `\n`, `\t` escapes (any other backslash is kept, so a
/// regex's `\d` reads as written); returns the value and the bytes used.
fn string(text: &str, pos: usize) -> Result<(Token, usize), ConditionError> {
    let quote = text.as_bytes()[pos] as char;
    let mut value = String::new();
    let mut chars = text[pos + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((Token::Str(value), i + 2)),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, e @ ('"' | '\'' | '\\'))) => value.push(e),
                Some((_, e)) => {
                    value.push('\\');
                    value.push(e);
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(ConditionError::at(pos, "a string that is never closed"))
}
