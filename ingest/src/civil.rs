//! Calendar arithmetic (proleptic Gregorian, UTC) for timestamps.
//!
//! Hand-written rather than taken from a date crate because it runs once per event on the hot
//! path and per event in every JSON encoder: these are a few integer operations, no `Result`
//! types, no allocation. Checked against the `time` crate by property tests.

/// Days since 1970-01-01 for a civil date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date `(year, month, day)` for days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Appends `secs.nanos` (Unix time, UTC) as RFC 3339 with `Z`: fraction digits as needed
/// (none, 3, 6 or 9), like chrono's `SecondsFormat::AutoSi`.
pub fn write_rfc3339(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u32;
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, (sod / 3600) as u32, 2);
    out.push(b':');
    push_digits(out, (sod / 60 % 60) as u32, 2);
    out.push(b':');
    push_digits(out, (sod % 60) as u32, 2);
    write_fraction(out, nanos);
    out.push(b'Z');
}

/// Appends `received_at`-style RFC 3339 with exactly six fraction digits (µs).
pub fn write_rfc3339_micros(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000) as u32;
    let start = out.len();
    write_rfc3339(out, secs, 0);
    out.truncate(out.len() - 1); // drop 'Z'
    debug_assert!(out.len() > start);
    out.push(b'.');
    push_digits(out, us, 6);
    out.push(b'Z');
}

fn write_fraction(out: &mut Vec<u8>, nanos: u32) {
    if nanos == 0 {
        return;
    }
    out.push(b'.');
    if nanos.is_multiple_of(1_000_000) {
        push_digits(out, nanos / 1_000_000, 3);
    } else if nanos.is_multiple_of(1_000) {
        push_digits(out, nanos / 1_000, 6);
    } else {
        push_digits(out, nanos, 9);
    }
}

fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn civil_round_trip_matches_time_crate(days in -100_000i64..2_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            let date = time::Date::from_julian_day((days + 2_440_588) as i32).unwrap();
            prop_assert_eq!((date.year() as i64, date.month() as u32, date.day() as u32), (y, m, d));
        }
    }

    #[test]
    fn formats_like_autosi() {
        let mut out = Vec::new();
        write_rfc3339(&mut out, 1_003_162_455, 3_000_000);
        assert_eq!(out, b"2001-10-15T16:14:15.003Z");
        out.clear();
        write_rfc3339(&mut out, 0, 0);
        assert_eq!(out, b"1970-01-01T00:00:00Z");
        out.clear();
        write_rfc3339_micros(&mut out, 1_500_000);
        assert_eq!(out, b"1970-01-01T00:00:01.500000Z");
    }
}
