//! The comparison: per field, where rsyslog and syslog-ng agree, does Sluice?

use std::fmt::Write as _;

use super::corpus::Entry;
use super::fields::{Fields, FIELD_NAMES};
use super::Readings;

/// One field of one line where Sluice differs from what both peers read.
#[derive(Debug)]
pub struct FieldDiff {
    pub field: &'static str,
    pub sluice: String,
    pub peers: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub lines: usize,
    /// Lines where the peers agree on at least one field.
    pub lines_peers_agree: usize,
    /// Of those, lines where Sluice differs on a field the peers agree on.
    pub lines_sluice_differs: usize,
    /// Per field: (lines where the peers agree on it, lines where Sluice then differs).
    pub per_field: [(usize, usize); 8],
    /// Per line index: what differs.
    pub differences: Vec<(usize, Vec<FieldDiff>)>,
    /// Lines that produced no output, per system (Sluice, rsyslog, syslog-ng).
    pub no_output: [usize; 3],
}

impl Report {
    pub fn differ_percent(&self) -> f64 {
        100.0 * self.lines_sluice_differs as f64 / self.lines_peers_agree.max(1) as f64
    }
}

pub fn compare(readings: &[Readings; 3]) -> Report {
    let [sluice, rsyslog, syslog_ng] = readings;
    let mut report = Report {
        lines: sluice.len(),
        ..Report::default()
    };
    for (system, r) in readings.iter().enumerate() {
        report.no_output[system] = r.iter().filter(|f| f.is_none()).count();
    }
    for (i, ((s, r), n)) in sluice.iter().zip(rsyslog).zip(syslog_ng).enumerate() {
        let (Some(r), Some(n)) = (r, n) else {
            continue; // A peer read nothing: there is no agreement to hold Sluice to.
        };
        let diffs = compare_line(s.as_ref(), r, n, &mut report.per_field);
        if (0..FIELD_NAMES.len()).any(|f| r.field(f) == n.field(f)) {
            report.lines_peers_agree += 1;
        }
        if !diffs.is_empty() {
            report.lines_sluice_differs += 1;
            report.differences.push((i, diffs));
        }
    }
    report
}

fn compare_line(
    sluice: Option<&Fields>,
    rsyslog: &Fields,
    syslog_ng: &Fields,
    per_field: &mut [(usize, usize); 8],
) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    for (f, name) in FIELD_NAMES.iter().enumerate() {
        let peers = rsyslog.field(f);
        if peers != syslog_ng.field(f) {
            continue;
        }
        per_field[f].0 += 1;
        let ours = sluice.map_or("(no output)".to_string(), |s| s.field(f));
        if ours != peers {
            per_field[f].1 += 1;
            diffs.push(FieldDiff {
                field: name,
                sluice: ours,
                peers,
            });
        }
    }
    diffs
}

/// The summary table and every differing line with its source.
pub fn render(report: &Report, entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} corpus lines; no output: Sluice {}, rsyslog {}, syslog-ng {}",
        report.lines, report.no_output[0], report.no_output[1], report.no_output[2]
    );
    let _ = writeln!(
        out,
        "\n| field | lines where rsyslog and syslog-ng agree | Sluice agrees | Sluice differs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (f, (agree, differ)) in report.per_field.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {agree} | {} | {differ} |",
            FIELD_NAMES[f],
            agree - differ
        );
    }
    let _ = writeln!(
        out,
        "\nlines where the peers agree on a field: {}; Sluice agrees on all of them: {}; \
         differs: {} ({:.2}%)",
        report.lines_peers_agree,
        report.lines_peers_agree - report.lines_sluice_differs,
        report.lines_sluice_differs,
        report.differ_percent()
    );
    for (i, diffs) in &report.differences {
        let entry = &entries[*i];
        let _ = writeln!(
            out,
            "\nline {}: {}\n  from {}",
            i + 1,
            entry.written,
            entry.source
        );
        for d in diffs {
            let _ = writeln!(
                out,
                "  {}: Sluice {} | peers {}",
                d.field, d.sluice, d.peers
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(host: &str, app: &str) -> Option<Fields> {
        Some(Fields {
            hostname: Some(host.into()),
            appname: Some(app.into()),
            ..Fields::default()
        })
    }

    #[test]
    fn only_fields_both_peers_agree_on_count() {
        let readings = [
            vec![fields("h", "a"), fields("h", "x"), None],
            vec![fields("h", "a"), fields("h", "b"), fields("h", "a")],
            vec![fields("h", "a"), fields("g", "b"), fields("h", "a")],
        ];
        let report = compare(&readings);
        assert_eq!(report.lines_peers_agree, 3);
        // Line 2: the peers disagree on the hostname (ignored) and agree on the appname.
        assert_eq!(report.lines_sluice_differs, 2);
        assert_eq!(report.differences[0].1[0].field, "appname");
        assert_eq!(
            report.differences[1].1.len(),
            8,
            "no output differs on every field"
        );
        assert_eq!(report.no_output, [1, 0, 0]);
    }
}
