//! Human output (aligned tables, key/value lists, amounts) and JSON output.

use serde::Serialize;
use serde_json::Value;

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tables and sentences for people.
    Human,
    /// One JSON document per command (or one JSON object per line for streams), see README.
    Json,
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()));
}

/// Prints `v` as one compact JSON line on stdout (streams: `out`, `swap monitor`).
pub fn print_json_line<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
}

/// A column's alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Renders a table: a header line, then one line per row; columns separated by two spaces,
/// no trailing spaces.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|(h, _)| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            let align = headers.get(i).map(|(_, a)| *a).unwrap_or(Align::Left);
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&format!("{k:<width$}  {v}\n", width = width + 1, k = format!("{k}:")));
    }
    out
}

/// `1234567` -> `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234` -> `1,234 sat`.
pub fn sat(n: u64) -> String {
    format!("{} sat", group(n))
}

/// A JSON field as text ("-" when absent or null).
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A JSON field as u64 (0 when absent).
pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Unix seconds as a UTC date (`2026-11-24 16:50:01 UTC`; "-" when out of range).
pub fn date(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// A long hex string shortened for tables: first 8 and last 4 characters.
pub fn short(s: &str) -> String {
    if s.chars().count() <= 14 {
        return s.to_string();
    }
    let head: String = s.chars().take(8).collect();
    let tail: String = s.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head}..{tail}")
}

/// Seconds as `1h02m03s`, `2m05s` or `7s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn renders_tables() {
        let t = table(
            &[("ID", Align::Left), ("AMOUNT", Align::Right)],
            &[vec!["a".into(), "1".into()], vec!["bbb".into(), "1,000".into()]],
        );
        assert_eq!(t, "ID   AMOUNT\na         1\nbbb   1,000\n");
    }

    #[test]
    fn shortens() {
        assert_eq!(short("0123456789abcdef0123"), "01234567..0123");
        assert_eq!(short("abc"), "abc");
        assert_eq!(duration(3723), "1h02m03s");
        assert_eq!(duration(65), "1m05s");
    }
}
