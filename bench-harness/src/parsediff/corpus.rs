//! The differential corpus: syslog lines with the source of every line.
//!
//! File format (UTF-8 text): `# from: SOURCE` starts a block whose lines come from SOURCE;
//! other lines starting with `#` and empty lines are comments. Every other line is one syslog
//! message, escaped: `\n`, `\r`, `\t`, `\\` and `\xNN` (any byte); all else is literal.

use std::path::Path;

/// One message of the corpus.
#[derive(Clone, Debug)]
pub struct Entry {
    pub bytes: Vec<u8>,
    /// The `# from:` of its block.
    pub source: String,
    /// The line as written in the corpus file (escaped).
    pub written: String,
}

/// Reads every corpus file, in order; an empty message or a bad escape is an error naming the
/// file and line.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading corpus {}: {e}", path.display()))?;
        parse(&text, &mut entries).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(entries)
}

fn parse(text: &str, entries: &mut Vec<Entry>) -> Result<(), String> {
    let mut source = String::from("(no `# from:` line)");
    for (number, line) in text.lines().enumerate() {
        if let Some(from) = line.strip_prefix("# from:") {
            source = from.trim().to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = unescape(line).map_err(|e| format!("line {}: {e}", number + 1))?;
        entries.push(Entry {
            bytes,
            source: source.clone(),
            written: line.to_string(),
        });
    }
    Ok(())
}

/// Resolves the corpus escapes of one line.
pub fn unescape(line: &str) -> Result<Vec<u8>, String> {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (byte, used) = match bytes.get(i + 1) {
            Some(b'n') => (b'\n', 2),
            Some(b'r') => (b'\r', 2),
            Some(b't') => (b'\t', 2),
            Some(b'\\') => (b'\\', 2),
            Some(b'x') => {
                let hex = line.get(i + 2..i + 4).ok_or("`\\x` needs two hex digits")?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("bad `\\x{hex}`"))?;
                (byte, 4)
            }
            _ => return Err(format!("unknown escape at column {}", i + 1)),
        };
        out.push(byte);
        i += used;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_resolve_and_blocks_keep_their_source() {
        let mut entries = Vec::new();
        parse(
            "# a comment\n# from: here\n<1>a\\tb\\\\c\\x00\n\n# from: there\nplain\n",
            &mut entries,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].bytes, b"<1>a\tb\\c\0");
        assert_eq!(entries[0].source, "here");
        assert_eq!(entries[1].bytes, b"plain");
        assert_eq!(entries[1].source, "there");
        assert!(unescape("bad \\q").is_err());
        assert!(unescape("bad \\x4").is_err());
    }
}
