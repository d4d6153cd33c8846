//! RFC 5424 STRUCTURED-DATA (§6.3): validation while parsing, and iteration for the encoders.
//!
//! Names (SD-ID, PARAM-NAME) are 1 or more PRINTUSASCII bytes except `=`, ` `, `]`, `"`. The
//! RFC caps them at 32 bytes; senders exceed it and both rsyslog and syslog-ng keep such names,
//! so Sluice keeps them too and flags the event ([`super::ParseFlags::BAD_SD`]).

/// What validating one STRUCTURED-DATA field found.
pub(crate) struct SdScan {
    /// Bytes of the field (all its elements).
    pub len: usize,
    /// A name was longer than RFC 5424's 32 bytes (kept).
    pub long_name: bool,
}

const MAX_NAME_LEN: usize = 32;

/// Validates the elements starting at `buf[0] == b'['`; `None` when they break the grammar.
pub(crate) fn scan(buf: &[u8]) -> Option<SdScan> {
    let mut pos = 0;
    let mut long_name = false;
    while buf.get(pos) == Some(&b'[') {
        pos = element_end(buf, pos, &mut long_name)?;
    }
    (pos > 0).then_some(SdScan {
        len: pos,
        long_name,
    })
}

/// Validates one SD-ELEMENT starting at `pos` (at `[`); returns the position after its `]`.
fn element_end(buf: &[u8], mut pos: usize, long_name: &mut bool) -> Option<usize> {
    pos += 1;
    pos += checked_name_len(&buf[pos..], long_name)?;
    loop {
        match buf.get(pos)? {
            b']' => return Some(pos + 1),
            b' ' => {
                pos += 1;
                pos += checked_name_len(&buf[pos..], long_name)?;
                if buf.get(pos..pos + 2)? != b"=\"" {
                    return None;
                }
                pos = value_end(buf, pos + 2)? + 1;
            }
            _ => return None,
        }
    }
}

fn checked_name_len(buf: &[u8], long_name: &mut bool) -> Option<usize> {
    let len = name_len(buf)?;
    *long_name |= len > MAX_NAME_LEN;
    Some(len)
}

fn name_len(buf: &[u8]) -> Option<usize> {
    let len = buf
        .iter()
        .position(|&b| !(33..=126).contains(&b) || matches!(b, b'=' | b']' | b'"'))
        .unwrap_or(buf.len());
    (len > 0).then_some(len)
}

/// Finds the closing quote of a PARAM-VALUE starting at `pos`, honouring backslash escapes.
fn value_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        match buf.get(pos)? {
            b'\\' => pos += 2,
            b'"' => return Some(pos),
            _ => pos += 1,
        }
    }
}

/// Iterates the elements of a validated STRUCTURED-DATA span: `(sd_id, params)` where params
/// yields `(name, raw_value)`; values still carry their escapes (see [`unescape_sd_value`]).
pub fn sd_elements(sd: &[u8]) -> SdElements<'_> {
    SdElements { buf: sd, pos: 0 }
}

#[derive(Clone)]
pub struct SdElements<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SdElements<'a> {
    type Item = (&'a [u8], SdParams<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.get(self.pos) != Some(&b'[') {
            return None;
        }
        let start = self.pos + 1;
        let end = element_end(self.buf, self.pos, &mut false)?;
        self.pos = end;
        let name_len = name_len(&self.buf[start..])?;
        Some((
            &self.buf[start..start + name_len],
            SdParams {
                buf: &self.buf[..end - 1],
                pos: start + name_len,
            },
        ))
    }
}

#[derive(Clone)]
pub struct SdParams<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SdParams<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.get(self.pos) != Some(&b' ') {
            return None;
        }
        let name_start = self.pos + 1;
        let name_len = name_len(&self.buf[name_start..])?;
        let value_start = name_start + name_len + 2;
        let value_end = value_end(self.buf, value_start)?;
        self.pos = value_end + 1;
        Some((
            &self.buf[name_start..name_start + name_len],
            &self.buf[value_start..value_end],
        ))
    }
}

/// Appends a PARAM-VALUE with RFC 5424's escapes (`\"`, `\\`, `\]`) resolved; any other
/// backslash is kept as written, as the RFC requires.
pub fn unescape_sd_value(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b'"' | b'\\' | b']')) {
            out.push(raw[i + 1]);
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}
