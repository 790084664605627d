//! Server-side SVG charts for the analytics page: horizontal bars (funnel, top products) and
//! stacked columns (revenue by day and channel). Pure functions of their data; text is
//! escaped; sizes are in the SVG's own units and the image scales to its container.

use std::fmt::Write;

/// Colours of the series, in order (the storefront's palette).
const PALETTE: [&str; 6] = [
    "#0f766e", "#d97706", "#2563eb", "#7c3aed", "#db2777", "#65a30d",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn esc(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Horizontal bars, one per row: the label left, the bar, its value (as `show` prints it).
pub fn bars(title: &str, rows: &[(String, i64)], show: impl Fn(i64) -> String) -> String {
    let width = 640.0;
    let label_w = 170.0;
    let value_w = 110.0;
    let row_h = 28.0;
    let height = row_h * rows.len().max(1) as f64 + 8.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let w = ((*value).max(0) as f64 / max) * (width - label_w - value_w);
        let short: String = label.chars().take(26).collect();
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect class="bar" x="{label_w}" y="{}" width="{w:.1}" height="{}" rx="3" fill="{}"><title>{}: {}</title></rect><text class="value" x="{:.1}" y="{}">{}</text>"#,
            label_w - 8.0,
            y + row_h * 0.62,
            esc(&short),
            y + 3.0,
            row_h - 8.0,
            colour(0),
            esc(label),
            esc(&show(*value)),
            label_w + w + 6.0,
            y + row_h * 0.62,
            esc(&show(*value)),
        );
    }
    if rows.is_empty() {
        let _ = write!(svg, r#"<text x="8" y="20">No data in this period.</text>"#);
    }
    svg.push_str("</svg>");
    svg
}

/// Stacked columns: one column per category (e.g. a day), one stacked part per series (e.g. a
/// channel), with a few horizontal grid lines labelled by `show`.
pub fn stacked_columns(
    title: &str,
    categories: &[String],
    series: &[(String, Vec<i64>)],
    show: impl Fn(i64) -> String,
) -> String {
    let (width, height) = (720.0, 260.0);
    let (left, bottom, top) = (86.0, 34.0, 10.0);
    let plot_h = height - bottom - top;
    let totals: Vec<i64> = (0..categories.len())
        .map(|c| {
            series
                .iter()
                .map(|(_, v)| v.get(c).copied().unwrap_or(0).max(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (width - left - 8.0) / categories.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(2.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let y = top + plot_h - plot_h * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            width - 4.0,
            left - 6.0,
            y + 4.0,
            esc(&show(value.round() as i64)),
        );
    }
    // Label every nth category so the labels never overlap.
    let every = (categories.len() / 10).max(1);
    for (c, category) in categories.iter().enumerate() {
        let x = left + slot * c as f64 + (slot - bar_w) / 2.0;
        let mut y = top + plot_h;
        for (s, (name, values)) in series.iter().enumerate() {
            let v = values.get(c).copied().unwrap_or(0).max(0);
            if v == 0 {
                continue;
            }
            let h = v as f64 / max * plot_h;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{}"><title>{} · {}: {}</title></rect>"#,
                colour(s),
                esc(category),
                esc(name),
                esc(&show(v)),
            );
        }
        if c % every == 0 {
            let short: String = category.chars().skip(5).collect();
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar_w / 2.0,
                height - bottom + 16.0,
                esc(&short),
            );
        }
    }
    if categories.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{left}" y="40">No data in this period.</text>"#
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One row's point estimate and its interval (same units) for [`intervals`].
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A forest plot: per row a dot at the estimate and a line over its interval, on one
/// horizontal axis that always shows zero (the "no difference" line); `show` prints an axis
/// value. Rows without data are listed with "not enough data".
pub fn intervals(
    title: &str,
    rows: &[(String, Option<Interval>)],
    show: impl Fn(f64) -> String,
) -> String {
    let width = 640.0;
    let (label_w, right) = (150.0, 24.0);
    let row_h = 34.0;
    let axis_h = 26.0;
    let height = row_h * rows.len().max(1) as f64 + axis_h + 8.0;
    let known = rows.iter().filter_map(|(_, i)| i.as_ref());
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for i in known {
        lo = lo.min(i.low).min(i.value);
        hi = hi.max(i.high).max(i.value);
    }
    if hi - lo < 1e-12 {
        lo -= 0.01;
        hi += 0.01;
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let plot_w = width - label_w - right;
    let x_of = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    let axis_y = row_h * rows.len().max(1) as f64 + 4.0;
    let zero = x_of(0.0);
    let _ = write!(
        svg,
        r#"<line class="grid" x1="{zero:.1}" x2="{zero:.1}" y1="2" y2="{axis_y:.1}"/><line class="grid" x1="{label_w}" x2="{:.1}" y1="{axis_y:.1}" y2="{axis_y:.1}"/>"#,
        width - right
    );
    for v in [lo, 0.0, hi] {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(v),
            axis_y + 18.0,
            esc(&show(v))
        );
    }
    for (r, (label, interval)) in rows.iter().enumerate() {
        let y = 4.0 + row_h * r as f64 + row_h / 2.0;
        let short: String = label.chars().take(20).collect();
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 4.0,
            esc(&short)
        );
        match interval {
            Some(i) => {
                let _ = write!(
                    svg,
                    r#"<g class="interval"><title>{}: {} ({} to {})</title><line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"/><circle cx="{:.1}" cy="{y:.1}" r="6" fill="{}"/></g>"#,
                    esc(label),
                    esc(&show(i.value)),
                    esc(&show(i.low)),
                    esc(&show(i.high)),
                    x_of(i.low),
                    x_of(i.high),
                    colour(r),
                    x_of(i.value),
                    colour(r),
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r#"<text x="{label_w}" y="{:.1}">not enough data</text>"#,
                    y + 4.0
                );
            }
        }
    }
    if rows.is_empty() {
        let _ = write!(svg, r#"<text x="8" y="20">Nothing to compare.</text>"#);
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "Top <products>",
            &[("Tea & cake".into(), 10), ("Beans".into(), 5)],
            |v| v.to_string(),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Tea &amp; cake") && !svg.contains("Tea & cake"));
        assert!(svg.contains("Top &lt;products&gt;"));
        // The largest bar takes the whole plot width; half the value, half the width.
        assert!(svg.contains(r#"width="360.0""#) && svg.contains(r#"width="180.0""#));
    }

    #[test]
    fn columns_stack_the_series_of_each_day() {
        let days = vec!["2026-03-01".to_string(), "2026-03-02".to_string()];
        let series = vec![
            ("web".to_string(), vec![100, 0]),
            ("pos".to_string(), vec![100, 50]),
        ];
        let svg = stacked_columns("Revenue", &days, &series, |v| v.to_string());
        // Three parts drawn (a zero is not), the tallest column fills the plot (216 units).
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains(r#"height="108.0""#));
        assert!(svg.contains("03-01") && svg.contains("03-02"));
        assert!(stacked_columns("Empty", &[], &[], |v| v.to_string()).contains("No data"));
    }

    #[test]
    fn intervals_put_zero_on_the_axis_and_draw_each_interval() {
        let rows = vec![
            (
                "b".to_string(),
                Some(Interval {
                    value: 0.02,
                    low: -0.01,
                    high: 0.05,
                }),
            ),
            ("c".to_string(), None),
        ];
        let svg = intervals("Uplift <vs control>", &rows, |v| {
            format!("{:+.1}", v * 100.0)
        });
        assert!(svg.contains("Uplift &lt;vs control&gt;"));
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("not enough data"));
        assert!(svg.contains(">+0.0<") && svg.contains("b: +2.0 (-1.0 to +5.0)"));
    }
}
