//! The SVG chart: on the left, p99 latency against deliveries per second,
//! one curve per server and broadcast ladder (log-log, the 50 ms limit
//! drawn); on the right, RSS per connection at each client count.
//!
//! Hand-written SVG, no dependencies. Colour is the server, dash the ladder;
//! a filled dot is a passing step, a hollow one a failing step.

use std::fmt::Write as _;

use super::steps::P99_LIMIT_MS;
use super::suite::ServerResults;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 460.0;
/// Curve panel: left, top, right, bottom.
const CURVES: (f64, f64, f64, f64) = (70.0, 40.0, 600.0, 380.0);
/// Bar panel: left, top, right, bottom.
const BARS: (f64, f64, f64, f64) = (690.0, 40.0, 970.0, 380.0);
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"];
const DASHES: [&str; 4] = ["", "7 4", "2 3", "9 3 2 3"];

/// Renders the chart for `results` (servers in column order).
pub fn render(results: &[ServerResults]) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    curves(&mut svg, results);
    bars(&mut svg, results);
    svg.push_str("</svg>\n");
    svg
}

/// A log10 axis over whole decades covering `values`.
#[derive(Debug, Clone, Copy)]
struct LogAxis {
    low: f64,
    high: f64,
}

impl LogAxis {
    fn covering(values: impl Iterator<Item = f64>, fallback: (f64, f64)) -> Self {
        let (low, high) = values
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold((f64::MAX, f64::MIN), |(low, high), v| (low.min(v), high.max(v)));
        let (low, high) = if low > high { fallback } else { (low, high) };
        let low = 10f64.powf(low.log10().floor());
        let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
        Self { low, high }
    }

    /// Position of `value` between `from` and `to` (pixels).
    fn place(self, value: f64, from: f64, to: f64) -> f64 {
        let share = (value.max(self.low).log10() - self.low.log10()) / (self.high.log10() - self.low.log10());
        from + share * (to - from)
    }

    fn decades(self) -> impl Iterator<Item = f64> {
        let first = self.low.log10().round() as i32;
        let last = self.high.log10().round() as i32;
        (first..=last).map(|power| 10f64.powi(power))
    }
}

fn curves(svg: &mut String, results: &[ServerResults]) {
    let (left, top, right, bottom) = CURVES;
    let points = || {
        results
            .iter()
            .flat_map(|r| r.series.iter().flat_map(|s| s.steps.iter().map(|step| &step.step.observation)))
    };
    let x = LogAxis::covering(points().map(|o| o.deliveries_per_s), (1e3, 1e6));
    let y = LogAxis::covering(points().filter_map(|o| o.p99_ms).chain([P99_LIMIT_MS]), (1.0, 100.0));
    frame(svg, CURVES, "broadcast: p99 latency (ms) vs deliveries/s");
    for tick in x.decades() {
        let px = x.place(tick, left, right);
        let _ =
            writeln!(svg, r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#eee"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 15.0,
            label(tick)
        );
    }
    for tick in y.decades() {
        let py = y.place(tick, bottom, top);
        let _ =
            writeln!(svg, r##"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#eee"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 5.0,
            py + 4.0,
            label(tick)
        );
    }
    let limit = y.place(P99_LIMIT_MS, bottom, top);
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{limit:.1}" x2="{right}" y2="{limit:.1}" stroke="#888" stroke-dasharray="4 4"/><text x="{}" y="{:.1}" fill="#888" text-anchor="end">p99 limit {P99_LIMIT_MS} ms</text>"##,
        right - 4.0,
        limit - 4.0
    );
    for (server, result) in results.iter().enumerate() {
        for (index, series) in result.series.iter().enumerate() {
            let color = COLORS[server % COLORS.len()];
            let dash = DASHES[index % DASHES.len()];
            let mut steps: Vec<_> =
                series.steps.iter().filter(|s| s.step.observation.p99_ms.is_some()).collect();
            steps.sort_by(|a, b| a.step.observation.rate.total_cmp(&b.step.observation.rate));
            let path: Vec<String> = steps
                .iter()
                .map(|s| {
                    let o = &s.step.observation;
                    let p99 = o.p99_ms.unwrap_or(P99_LIMIT_MS);
                    format!(
                        "{:.1},{:.1}",
                        x.place(o.deliveries_per_s, left, right),
                        y.place(p99, bottom, top)
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8" stroke-dasharray="{dash}"/>"#,
                path.join(" ")
            );
            for (step, point) in steps.iter().zip(&path) {
                let (cx, cy) = point.split_once(',').expect("formatted as x,y");
                let fill = if step.step.verdict.is_pass() { color } else { "white" };
                let _ =
                    writeln!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{fill}" stroke="{color}"/>"#);
            }
        }
    }
    legend(svg, results);
}

fn legend(svg: &mut String, results: &[ServerResults]) {
    let (left, _, _, bottom) = CURVES;
    let mut at = left;
    for (server, result) in results.iter().enumerate() {
        let color = COLORS[server % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{at}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            bottom + 28.0,
            at + 14.0,
            bottom + 37.0,
            result.server.name()
        );
        at += 110.0;
    }
    let Some(first) = results.iter().max_by_key(|r| r.series.len()) else { return };
    let mut at = left;
    for (index, series) in first.series.iter().enumerate() {
        let dash = DASHES[index % DASHES.len()];
        let y = bottom + 58.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{at}" y1="{y}" x2="{}" y2="{y}" stroke="#333" stroke-width="1.8" stroke-dasharray="{dash}"/><text x="{}" y="{}">{} {}</text>"##,
            at + 28.0,
            at + 32.0,
            y + 4.0,
            series.label,
            series.placement.name()
        );
        at += 135.0;
    }
}

fn bars(svg: &mut String, results: &[ServerResults]) {
    let (left, top, right, bottom) = BARS;
    frame(svg, BARS, "RSS per connection (KiB)");
    let mut groups: Vec<u64> = results
        .iter()
        .flat_map(|r| r.memory.iter().filter(|p| p.per_connection_kib.is_some()).map(|p| p.clients))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let values = || results.iter().flat_map(|r| r.memory.iter().filter_map(|p| p.per_connection_kib));
    let max = values().fold(1.0_f64, f64::max) * 1.15;
    let group_width = (right - left) / groups.len().max(1) as f64;
    let bar_width = group_width * 0.8 / results.len().max(1) as f64;
    for (group, clients) in groups.iter().enumerate() {
        let x0 = left + group as f64 * group_width + group_width * 0.1;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{clients} clients</text>"#,
            x0 + group_width * 0.4,
            bottom + 15.0
        );
        for (server, result) in results.iter().enumerate() {
            let Some(kib) =
                result.memory.iter().find(|p| p.clients == *clients).and_then(|p| p.per_connection_kib)
            else {
                continue;
            };
            let height = (kib.max(0.0) / max) * (bottom - top);
            let x = x0 + server as f64 * bar_width;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{kib:.1}</text>"#,
                bottom - height,
                bar_width - 2.0,
                COLORS[server % COLORS.len()],
                x + bar_width / 2.0 - 1.0,
                bottom - height - 3.0
            );
        }
    }
}

fn frame(svg: &mut String, (left, top, right, bottom): (f64, f64, f64, f64), title: &str) {
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/><text x="{left}" y="{}" font-size="13" font-weight="bold">{title}</text>"##,
        right - left,
        bottom - top,
        top - 12.0
    );
}

/// A decade's tick label: `1`, `100`, `10k`, `1M`.
fn label(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_cover_whole_decades() {
        let axis = LogAxis::covering([3.0, 420.0].into_iter(), (1.0, 10.0));
        assert_eq!((axis.low, axis.high), (1.0, 1000.0));
        assert_eq!(axis.place(10.0, 0.0, 300.0).round(), 100.0);
        assert_eq!(axis.decades().map(label).collect::<Vec<_>>(), ["1", "10", "100", "1k"]);
        let empty = LogAxis::covering(std::iter::empty(), (1.0, 100.0));
        assert_eq!((empty.low, empty.high), (1.0, 100.0));
    }

    #[test]
    fn an_empty_comparison_still_renders() {
        let svg = render(&[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
