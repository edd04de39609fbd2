//! Docker's output conventions: `--format` handling (`table`, `json`,
//! templates), tab-aligned tables, human sizes and durations.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::template::{Template, TemplateError};

/// Docker's `units.HumanSizeWithPrecision`: decimal units (`kB`, `MB`, …)
/// and Go's `%.*g`.
pub fn human_size_prec(size: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_g(value, precision), UNITS[unit])
}

/// Sizes in `images` and `history` (3 significant digits).
pub fn human_size(size: u64) -> String {
    human_size_prec(size, 3)
}

/// Sizes in `system df` and `prune` (`units.HumanSize`, 4 digits).
pub fn human_size4(size: u64) -> String {
    human_size_prec(size, 4)
}

/// Go's `%.{p}g` for a non-negative finite value.
fn go_g(x: f64, p: usize) -> String {
    let p = p.max(1);
    if x == 0.0 {
        return "0".to_owned();
    }
    let sci = format!("{:.*e}", p - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_owned()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".to_owned();
    }
    if seconds == 1 {
        return "1 second".to_owned();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go's d.Round(time.Hour): halves round away from zero.
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if hours == 1 {
        return "About an hour".to_owned();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// `2 days ago` for a point in time (`Less than a second ago` for the future).
pub fn since(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    format!("{} ago", human_duration(d))
}

/// Go's `time.Time.String()` in UTC: `2006-01-02 15:04:05 +0000 UTC`.
pub fn go_time_string(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

/// RFC 3339 with seconds, as Go's `time.RFC3339` in UTC.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Aligns tab-separated lines the way Docker's `tabwriter` (min width 10,
/// padding 3, spaces) does; the text after a line's last tab is not padded.
pub fn tabwrite(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![10usize; columns];
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for row in &rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// How rows are printed: the `--format` value interpreted as Docker does.
#[derive(Debug)]
pub enum Output {
    /// Tab-aligned table with a header line.
    Table(Template),
    /// One rendered template per row, unaligned.
    Lines(Template),
}

impl Output {
    /// `format`: the user's `--format` (or `None`); `default_table`: the
    /// command's table template (without the `table` prefix).
    pub fn new(format: Option<&str>, default_table: &str) -> Result<Output, TemplateError> {
        let format = format.unwrap_or("table");
        let unescape = |s: &str| s.replace("\\t", "\t").replace("\\n", "\n");
        if format == "table" {
            return Ok(Output::Table(Template::parse(&unescape(default_table))?));
        }
        if let Some(rest) = format.strip_prefix("table ") {
            return Ok(Output::Table(Template::parse(&unescape(rest.trim()))?));
        }
        if format == "json" {
            return Ok(Output::Lines(Template::parse("{{json .}}")?));
        }
        Ok(Output::Lines(Template::parse(&unescape(format))?))
    }

    /// Renders `rows`; `headers` maps field names to column titles.
    pub fn render(
        &self,
        headers: &[(&str, &str)],
        rows: &[Value],
    ) -> Result<String, TemplateError> {
        match self {
            Output::Table(t) => {
                let header: Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                    .collect();
                let mut lines = vec![t.render(&Value::Object(header))?];
                for row in rows {
                    lines.push(t.render(row)?);
                }
                Ok(tabwrite(&lines))
            }
            Output::Lines(t) => {
                let mut out = String::new();
                for row in rows {
                    out.push_str(&t.render(row)?);
                    out.push('\n');
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(4_261_550), "4.26MB");
        assert_eq!(human_size(63_100_000), "63.1MB");
        assert_eq!(human_size(100_000_000), "100MB");
        assert_eq!(human_size(999_999), "1e+03kB");
        assert_eq!(human_size4(4_261_550), "4.262MB");
        assert_eq!(human_size4(1_200_000), "1.2MB");
    }

    #[test]
    fn durations_match_go_units() {
        let h = |s: u64| human_duration(Duration::from_secs(s));
        assert_eq!(h(0), "Less than a second");
        assert_eq!(h(1), "1 second");
        assert_eq!(h(59), "59 seconds");
        assert_eq!(h(60), "About a minute");
        assert_eq!(h(61 * 60), "About an hour");
        assert_eq!(h(5 * 3600), "5 hours");
        assert_eq!(h(2 * 86400), "2 days");
        assert_eq!(h(15 * 86400), "2 weeks");
        assert_eq!(h(70 * 86400), "2 months");
        assert_eq!(h(800 * 86400), "2 years");
    }

    #[test]
    fn tables_align_like_tabwriter() {
        let lines = vec![
            "REPOSITORY\tTAG\tSIZE".to_owned(),
            "busybox\tlatest\t1MB".to_owned(),
        ];
        assert_eq!(
            tabwrite(&lines),
            "REPOSITORY   TAG       SIZE\nbusybox      latest    1MB\n"
        );
    }
}
