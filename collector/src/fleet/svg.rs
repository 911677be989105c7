//! Inline SVG charts for the HTML report and dashboard: no script, no
//! external resource, so the report renders and prints offline.

use maud::{Markup, html};

/// A horizontal bar chart of (label, value); `css` picks the bar colour class.
pub fn bars(title: &str, items: &[(String, u64, &str)]) -> Markup {
    let max = items.iter().map(|(_, v, _)| *v).max().unwrap_or(0).max(1);
    let row_h = 22u64;
    let height = row_h * items.len().max(1) as u64 + 10;
    html! {
        svg class="chart" role="img" aria-label=(title) viewBox={"0 0 520 " (height)} width="520" height=(height) {
            title { (title) }
            @for (i, (label, value, css)) in items.iter().enumerate() {
                @let y = 5 + row_h * i as u64;
                @let w = 300 * value / max;
                text x="150" y=(y + 15) text-anchor="end" class="lbl" { (label) }
                rect x="158" y=(y + 3) width=(w.max(1)) height="16" class=(css) {}
                text x=(162 + w) y=(y + 15) class="val" { (value) }
            }
        }
    }
}

/// One day of the trend: (day, compliant %, score %).
pub type TrendPoint = (String, f64, Option<f64>);

/// A line chart of percentages per day.
pub fn trend(points: &[TrendPoint]) -> Markup {
    let (w, h, left, top, bottom) = (640.0_f64, 220.0_f64, 40.0_f64, 10.0_f64, 30.0_f64);
    let plot_w = w - left - 10.0;
    let plot_h = h - top - bottom;
    let n = points.len();
    let x = |i: usize| if n <= 1 { left + plot_w / 2.0 } else { left + plot_w * i as f64 / (n - 1) as f64 };
    let y = |pct: f64| top + plot_h * (1.0 - pct.clamp(0.0, 100.0) / 100.0);
    let line = |f: &dyn Fn(&TrendPoint) -> Option<f64>| -> String {
        points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| f(p).map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let compliant = line(&|p| Some(p.1));
    let score = line(&|p| p.2);
    html! {
        svg class="chart" role="img" aria-label="Compliance per day" viewBox={"0 0 " (w) " " (h)} width=(w) height=(h) {
            title { "Compliant nodes and score per day (%)" }
            @for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
                line x1=(left) x2=(w - 10.0) y1=(y(pct)) y2=(y(pct)) class="grid" {}
                text x=(left - 4.0) y=(y(pct) + 4.0) text-anchor="end" class="lbl" { (pct) }
            }
            polyline points=(compliant) class="l-compliant" {}
            polyline points=(score) class="l-score" {}
            @for (i, p) in points.iter().enumerate() {
                circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(p.1))) r="2.5" class="d-compliant" {
                    title { (p.0) ": " (p.1) "% compliant" }
                }
            }
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                text x=(left) y=(h - 8.0) class="lbl" { (first.0) }
                text x=(w - 10.0) y=(h - 8.0) text-anchor="end" class="lbl" { (last.0) }
            }
        }
    }
}
