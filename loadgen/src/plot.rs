//! `--plot FILE.svg`: the report drawn as plain SVG text, no dependencies.
//!
//! Top panel: latency percentile curves per phase, the classic HdrHistogram
//! view (x: percentile on a log scale of 1/(1−p); y: latency, log scale).
//! Bottom panel: events per second over the run, per phase, with the stage
//! boundaries marked.

use std::fmt::Write as _;

use crate::report::{PhaseReport, Report};

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 340.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 230.0;
const MARGIN_TOP: f64 = 50.0;
const PANEL_GAP: f64 = 90.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
/// Rightmost percentile shown: 99.999 %.
const MAX_NINES: f64 = 5.0;

/// Renders `report` as an SVG document.
pub fn render(report: &Report) -> String {
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP + 50.0;
    let mut svg = String::with_capacity(64 * 1024);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "loadgen {} - {} clients, {:.1} s",
        report.scenario, report.clients.planned, report.self_check.cpu.wall_secs
    );
    text(&mut svg, WIDTH / 2.0, 24.0, "middle", 16, &title);
    let phases: Vec<(usize, &PhaseReport)> = report.phases.iter().enumerate().collect();
    latency_panel(&mut svg, &phases, MARGIN_TOP);
    throughput_panel(&mut svg, report, &phases, MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP);
    svg.push_str("</svg>\n");
    svg
}

struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Frame {
    fn new(top: f64) -> Self {
        Self { left: MARGIN_LEFT, top, width: WIDTH - MARGIN_LEFT - MARGIN_RIGHT, height: PANEL_HEIGHT }
    }

    /// Maps fractions (0..1 from the bottom left) to SVG coordinates.
    fn point(&self, x: f64, y: f64) -> (f64, f64) {
        (self.left + x.clamp(0.0, 1.0) * self.width, self.top + (1.0 - y.clamp(0.0, 1.0)) * self.height)
    }

    fn draw_box(&self, svg: &mut String) {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            self.left, self.top, self.width, self.height
        );
    }

    fn grid_x(&self, svg: &mut String, x: f64, label: &str) {
        let (px, _) = self.point(x, 0.0);
        line(svg, px, self.top, px, self.top + self.height, "#ddd");
        text(svg, px, self.top + self.height + 16.0, "middle", 11, label);
    }

    fn grid_y(&self, svg: &mut String, y: f64, label: &str) {
        let (_, py) = self.point(0.0, y);
        line(svg, self.left, py, self.left + self.width, py, "#ddd");
        text(svg, self.left - 6.0, py + 4.0, "end", 11, label);
    }

    fn legend(&self, svg: &mut String, index: usize, color: &str, label: &str) {
        let y = self.top + 14.0 + index as f64 * 18.0;
        let x = self.left + self.width + 14.0;
        line(svg, x, y - 4.0, x + 22.0, y - 4.0, color);
        text(svg, x + 28.0, y, "start", 11, label);
    }
}

fn latency_panel(svg: &mut String, phases: &[(usize, &PhaseReport)], top: f64) {
    let frame = Frame::new(top);
    text(
        svg,
        frame.left + frame.width / 2.0,
        top - 10.0,
        "middle",
        13,
        "latency by percentile (ms, log scale)",
    );
    let values = phases.iter().flat_map(|(_, p)| p.percentiles.iter().map(|point| point[1]));
    // Below 10 µs is timer noise; do not spend decades of the axis on it.
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(low, high), v| (low.min(v.max(0.01)), high.max(v)));
    let (low_decade, high_decade) = if high <= 0.0 {
        (-3.0, 0.0)
    } else {
        (low.log10().floor(), high.log10().ceil().max(low.log10().floor() + 1.0))
    };
    let y_of = |ms: f64| (ms.max(0.01).log10() - low_decade) / (high_decade - low_decade);
    let x_of = |percentile: f64| {
        let remaining = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_NINES));
        -remaining.log10() / MAX_NINES
    };
    for nines in 0..=MAX_NINES as i32 {
        let label = match nines {
            0 => "0%".to_owned(),
            n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-n)),
        };
        frame.grid_x(svg, f64::from(nines) / MAX_NINES, &label);
    }
    let mut decade = low_decade;
    while decade <= high_decade {
        frame.grid_y(svg, y_of(10f64.powf(decade)), &format_ms(10f64.powf(decade)));
        decade += 1.0;
    }
    frame.draw_box(svg);
    for (index, phase) in phases {
        let color = COLORS[index % COLORS.len()];
        let points = phase.percentiles.iter().map(|point| frame.point(x_of(point[0]), y_of(point[1])));
        polyline(svg, points, color);
        frame.legend(svg, *index, color, &format!("{} (n={})", phase.name, phase.count));
    }
}

fn throughput_panel(svg: &mut String, report: &Report, phases: &[(usize, &PhaseReport)], top: f64) {
    let frame = Frame::new(top);
    text(svg, frame.left + frame.width / 2.0, top - 10.0, "middle", 13, "events per second over the run");
    let seconds = phases.iter().map(|(_, p)| p.per_second.len()).max().unwrap_or(0).max(1) as f64;
    let peak = phases.iter().map(|(_, p)| p.peak_per_s).max().unwrap_or(0).max(1) as f64;
    let peak = nice_ceiling(peak);
    for step in 0..=4 {
        let fraction = f64::from(step) / 4.0;
        frame.grid_y(svg, fraction, &format!("{:.0}", peak * fraction));
    }
    let tick = nice_ceiling(seconds / 6.0).max(1.0);
    let mut at = 0.0;
    while at <= seconds {
        frame.grid_x(svg, at / seconds, &format!("{at:.0} s"));
        at += tick;
    }
    for stage in &report.stages {
        let (x, _) = frame.point(stage.start_s / seconds, 0.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
            frame.top,
            frame.top + frame.height
        );
        text(svg, x + 3.0, frame.top + frame.height - 4.0, "start", 10, &stage.name);
    }
    frame.draw_box(svg);
    for (index, phase) in phases {
        let color = COLORS[index % COLORS.len()];
        let points = phase
            .per_second
            .iter()
            .enumerate()
            .map(|(second, &count)| frame.point((second as f64 + 0.5) / seconds, count as f64 / peak));
        let points: Vec<(f64, f64)> = points.collect();
        if points.len() < 3 {
            // Too short for a visible line: mark each second.
            for &(x, y) in &points {
                let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#);
            }
        }
        polyline(svg, points.into_iter(), color);
        frame.legend(svg, *index, color, &format!("{} ({:.0}/s)", phase.name, phase.rate_per_s));
    }
}

fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&v| v >= value).unwrap_or(value)
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms}") }
}

fn line(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, color: &str) {
    let _ = writeln!(svg, r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}"/>"#);
}

fn polyline(svg: &mut String, points: impl Iterator<Item = (f64, f64)>, color: &str) {
    svg.push_str(r#"<polyline fill="none" stroke-width="2" stroke=""#);
    svg.push_str(color);
    svg.push_str(r#"" points=""#);
    for (x, y) in points {
        let _ = write!(svg, "{x:.1},{y:.1} ");
    }
    svg.push_str("\"/>\n");
}

fn text(svg: &mut String, x: f64, y: f64, anchor: &str, size: u32, content: &str) {
    let escaped = content.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{escaped}</text>"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1200.0), 2000.0);
        assert_eq!(nice_ceiling(2500.0), 2500.0);
    }

    #[test]
    fn text_is_escaped() {
        let mut svg = String::new();
        text(&mut svg, 0.0, 0.0, "start", 10, "a<b & \"c\"");
        assert!(svg.contains(">a&lt;b &amp; \"c\"</text>"), "{svg}");
    }
}
