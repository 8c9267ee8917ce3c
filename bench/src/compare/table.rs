//! The markdown table: one row per figure, one column per server, then our
//! broker's ratio to each peer.
//!
//! Pure formatting. A [`Cell`] keeps what kind of number it holds, so a
//! lower bound stays a lower bound through the ratio ("≥ 2.1×"), and a
//! figure that was not measured never turns into a number.

use std::fmt::Write as _;

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, memory).
    Lower,
    /// Informational; no ratio.
    Neither,
}

/// One server's value of one figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A measured value.
    Value(f64),
    /// At least this much; the reason it is only a bound.
    AtLeast(f64, String),
    /// Below this much (even the lowest step failed).
    Below(f64),
    /// No number, and why.
    Missing(String),
    /// Informational text (a bracket, a fraction already computed); no
    /// ratio is taken of it.
    Text(String),
}

/// One figure across servers (in column order, ours first).
#[derive(Debug, Clone)]
pub struct Row {
    /// What the figure is, with its unit.
    pub label: String,
    /// Which way is better.
    pub better: Better,
    /// One cell per server.
    pub cells: Vec<Cell>,
}

/// Renders the table. `servers` names the columns in the order of each
/// row's cells; when the first is `broker`, a ratio column follows for
/// every other server.
pub fn render(servers: &[&str], rows: &[Row]) -> String {
    let ours = servers.first().is_some_and(|&name| name == "broker");
    let peers = if ours { &servers[1..] } else { &[][..] };
    let mut out = String::new();
    let mut header = vec!["figure".to_owned()];
    header.extend(servers.iter().map(|name| (*name).to_owned()));
    header.extend(peers.iter().map(|peer| format!("broker/{peer}")));
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let mut line = vec![format!("{}{}", row.label, arrow(row.better))];
        line.extend(row.cells.iter().map(format_cell));
        if ours {
            line.extend(row.cells[1..].iter().map(|peer| ratio(row.better, &row.cells[0], peer)));
        }
        let _ = writeln!(out, "| {} |", line.join(" | "));
    }
    out
}

fn arrow(better: Better) -> &'static str {
    match better {
        Better::Higher => " ↑",
        Better::Lower => " ↓",
        Better::Neither => "",
    }
}

/// A cell as printed.
pub fn format_cell(cell: &Cell) -> String {
    match cell {
        Cell::Value(value) => format_number(*value),
        Cell::AtLeast(value, why) => format!("≥ {} ({why})", format_number(*value)),
        Cell::Below(value) => format!("< {}", format_number(*value)),
        Cell::Missing(why) | Cell::Text(why) => why.clone(),
    }
}

/// Three significant digits, with k/M for large values.
pub fn format_number(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, " M"),
        v if v >= 1e4 => (value / 1e3, " k"),
        _ => (value, ""),
    };
    let decimals = match scaled.abs() {
        v if v >= 100.0 || v == 0.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    format!("{scaled:.decimals$}{suffix}")
}

/// The broker's value over the peer's, with the direction a bound implies.
pub fn ratio(better: Better, ours: &Cell, peer: &Cell) -> String {
    if better == Better::Neither {
        return "–".to_owned();
    }
    let (relation, ours_value, peer_value) = match (ours, peer) {
        (Cell::Value(a), Cell::Value(b)) => ("", *a, *b),
        (Cell::AtLeast(a, _), Cell::Value(b)) | (Cell::Value(a), Cell::Below(b)) => ("≥ ", *a, *b),
        (Cell::Value(a), Cell::AtLeast(b, _)) | (Cell::Below(a), Cell::Value(b)) => ("≤ ", *a, *b),
        (Cell::AtLeast(a, _), Cell::Below(b)) => ("> ", *a, *b),
        (Cell::Below(a), Cell::AtLeast(b, _)) => ("< ", *a, *b),
        _ => return "–".to_owned(),
    };
    if peer_value <= 0.0 || !peer_value.is_finite() || !ours_value.is_finite() {
        return "–".to_owned();
    }
    format!("{relation}{}×", format_ratio(ours_value / peer_value))
}

/// Two decimals, or two significant digits below 1 (`0.00041`).
fn format_ratio(ratio: f64) -> String {
    let decimals =
        if ratio >= 1.0 || ratio <= 0.0 { 2 } else { (1 - ratio.log10().floor() as i32).max(2) as usize };
    format!("{ratio:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(format_number(1_234_567.0), "1.23 M");
        assert_eq!(format_number(45_600.0), "45.6 k");
        assert_eq!(format_number(9_999.0), "9999");
        assert_eq!(format_number(12.345), "12.3");
        assert_eq!(format_number(1.5), "1.50");
        assert_eq!(format_number(0.1234), "0.123");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn ratios_carry_bounds_and_refuse_missing_values() {
        let loadgen = || "loadgen-bound".to_owned();
        assert_eq!(ratio(Better::Higher, &Cell::Value(300.0), &Cell::Value(100.0)), "3.00×");
        assert_eq!(ratio(Better::Lower, &Cell::Value(1.0), &Cell::Value(4.0)), "0.25×");
        assert_eq!(ratio(Better::Lower, &Cell::Value(1.68), &Cell::Value(4141.0)), "0.00041×");
        assert_eq!(ratio(Better::Higher, &Cell::AtLeast(200.0, loadgen()), &Cell::Value(100.0)), "≥ 2.00×");
        assert_eq!(ratio(Better::Higher, &Cell::Value(200.0), &Cell::AtLeast(100.0, loadgen())), "≤ 2.00×");
        assert_eq!(ratio(Better::Higher, &Cell::Value(200.0), &Cell::Below(100.0)), "≥ 2.00×");
        assert_eq!(
            ratio(Better::Higher, &Cell::AtLeast(1.0, loadgen()), &Cell::AtLeast(1.0, loadgen())),
            "–"
        );
        assert_eq!(ratio(Better::Higher, &Cell::Value(1.0), &Cell::Missing("n/a".to_owned())), "–");
        assert_eq!(ratio(Better::Lower, &Cell::Value(1.0), &Cell::Value(0.0)), "–");
        assert_eq!(ratio(Better::Neither, &Cell::Value(1.0), &Cell::Value(2.0)), "–");
        assert_eq!(ratio(Better::Higher, &Cell::Text("1..2".to_owned()), &Cell::Value(2.0)), "–");
        assert_eq!(format_cell(&Cell::Text("0.50×".to_owned())), "0.50×");
    }

    #[test]
    fn the_table_has_a_ratio_column_per_peer() {
        let rows = [
            Row {
                label: "deliveries/s".to_owned(),
                better: Better::Higher,
                cells: vec![
                    Cell::AtLeast(900_000.0, "loadgen-bound".to_owned()),
                    Cell::Value(300_000.0),
                    Cell::Below(20_000.0),
                ],
            },
            Row {
                label: "RSS @50k".to_owned(),
                better: Better::Lower,
                cells: vec![Cell::Missing("not measured".to_owned()); 3],
            },
        ];
        let table = render(&["broker", "socketioxide", "nestjs"], &rows);
        let expected = "\
| figure | broker | socketioxide | nestjs | broker/socketioxide | broker/nestjs |
|---|---|---|---|---|---|
| deliveries/s ↑ | ≥ 900 k (loadgen-bound) | 300 k | < 20.0 k | ≥ 3.00× | > 45.00× |
| RSS @50k ↓ | not measured | not measured | not measured | – | – |
";
        assert_eq!(table, expected);
        let peers_only = render(
            &["nestjs"],
            &rows[..1]
                .iter()
                .map(|row| Row { cells: vec![Cell::Value(1.0)], ..row.clone() })
                .collect::<Vec<_>>(),
        );
        assert!(peers_only.starts_with("| figure | nestjs |\n"), "{peers_only}");
    }
}
