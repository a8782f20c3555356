//! `Retry-After` (RFC 9110, 10.2.3): a number of seconds, or an HTTP date in any of the three
//! formats a recipient must accept (IMF-fixdate, the obsolete RFC 850 form, asctime).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the server asks to wait, measured from `now`. `None` for a value that is neither
/// form (the header is then ignored and the usual backoff applies). A date in the past is a
/// zero wait.
pub(crate) fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long waits are still waits: cap at a day rather than overflow.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX).min(86_400);
        return Some(Duration::from_secs(secs));
    }
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let at = http_date(v, now)?;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Seconds since the Unix epoch of an HTTP date; `now` (the same unit) places RFC 850's
/// two-digit years.
fn http_date(v: &str, now: i64) -> Option<i64> {
    // Tokens, whatever the separators: "Sun, 06 Nov 1994 08:49:37 GMT",
    // "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994".
    let tokens: Vec<&str> = v.split([' ', ',', '-']).filter(|t| !t.is_empty()).collect();
    let mut day = None;
    let mut month = None;
    let mut year = None;
    let mut time = None;
    for t in tokens.iter().skip(1) {
        let lower = t.to_ascii_lowercase();
        if let Some(m) = MONTHS.iter().position(|m| *m == lower) {
            month = Some(m as u32 + 1);
        } else if t.contains(':') {
            let mut parts = t.split(':').map(|p| p.parse::<u32>().ok());
            let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
            if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
                return None;
            }
            time = Some(h * 3600 + m * 60 + s);
        } else if lower == "gmt" {
        } else if t.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = t.parse().ok()?;
            if day.is_none() && t.len() <= 2 {
                day = Some(n as u32);
            } else if year.is_none() {
                year = Some(if t.len() == 2 { full_year(n, now) } else { n });
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    let (day, month, year, time) = (day?, month?, year?, time?);
    if !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + i64::from(time))
}

/// RFC 850's two-digit years (RFC 9110, 5.6.7): the year with those last two digits that is
/// at most 50 years in the future.
fn full_year(yy: i64, now: i64) -> i64 {
    let this_year = 1970 + now.div_euclid(86_400 * 365_2425 / 10_000);
    let mut y = this_year - this_year.rem_euclid(100) + yy;
    if y > this_year + 50 {
        y -= 100;
    }
    y
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of the calendar walk in
/// `forkprof_core::calendar::civil_from_days`), counting in 400-year eras that start on March 1st.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn seconds() {
        assert_eq!(parse("120", at(0)), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", at(0)), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999", at(0)),
            Some(Duration::from_secs(86_400))
        );
        for bad in ["", "-1", "1.5", "soon", "12s"] {
            assert_eq!(parse(bad, at(0)), None, "{bad}");
        }
    }

    #[test]
    fn the_three_date_formats() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        let now = at(784_111_777 - 30);
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(v, now), Some(Duration::from_secs(30)), "{v}");
        }
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        for bad in [
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(parse(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn two_digit_years_are_at_most_50_years_ahead() {
        let y2026 = days_from_civil(2026, 6, 1) * 86_400;
        assert_eq!(full_year(94, y2026), 1994);
        assert_eq!(full_year(26, y2026), 2026);
        assert_eq!(full_year(76, y2026), 2076);
        assert_eq!(full_year(77, y2026), 1977);
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2024, 12, 31), 20_088);
    }
}
