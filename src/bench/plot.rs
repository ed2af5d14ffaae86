//! Hand-written SVG charts: per-stage latency per model (stacked horizontal bars) and
//! J&F per video (grouped bars, one colour per model).

use std::fmt::Write;

use super::report::Summary;
use super::results::{effective_videos, Line};
use super::timing::STAGES;

const COLORS: [&str; 8] = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A "nice" axis maximum and tick step covering `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else if step >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn row_label(r: &Summary, multi: bool) -> String {
    if multi {
        format!("{} [{}]", r.model, r.setting)
    } else {
        r.model.clone()
    }
}

/// Mean ms per frame by stage, one stacked bar per (model, setting).
pub fn stages_svg(rows: &[Summary]) -> String {
    let multi = rows.iter().any(|r| rows.iter().any(|s| s.model == r.model && s.setting != r.setting));
    let labels: Vec<String> = rows.iter().map(|r| row_label(r, multi)).collect();
    let label_w = 12.0 + 7.0 * labels.iter().map(|l| l.chars().count()).max().unwrap_or(4) as f64;
    let (plot_w, bar_h, gap) = (560.0, 26.0, 12.0);
    let top = 50.0;
    let h = top + rows.len().max(1) as f64 * (bar_h + gap) + 70.0;
    let w = label_w + plot_w + 30.0;
    let max = rows.iter().map(|r| r.stages.values().iter().filter(|v| v.is_finite()).sum::<f64>()).fold(0.0, f64::max);
    let (axis_max, step) = nice_axis(max);
    let x = |v: f64| label_w + v / axis_max * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="22" font-size="15" font-weight="bold">Latency per frame by stage (ms, frames after the first)</text>"#,
        label_w
    );
    let bottom = top + rows.len().max(1) as f64 * (bar_h + gap);
    let mut t = 0.0;
    while t <= axis_max + step * 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#ddd"/><text x="{0:.1}" y="{1:.0}" text-anchor="middle">{2}</text>"##,
            x(t),
            bottom + 15.0,
            tick_label(t, step)
        );
        t += step;
    }
    for (i, (r, label)) in rows.iter().zip(&labels).enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + bar_h * 0.65,
            esc(label)
        );
        let mut acc = 0.0;
        for (k, v) in r.stages.values().iter().enumerate() {
            if !(v.is_finite() && *v > 0.0) {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{bar_h}" fill="{}"><title>{}: {:.2} ms</title></rect>"#,
                x(acc),
                v / axis_max * plot_w,
                COLORS[k],
                STAGES[k],
                v
            );
            acc += v;
        }
        if acc > 0.0 {
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.0}">{:.1}</text>"#, x(acc) + 4.0, y + bar_h * 0.65, acc);
        }
    }
    let ly = bottom + 40.0;
    let mut lx = label_w;
    for (k, name) in STAGES.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{ly:.0}">{name}</text>"#,
            ly - 10.0,
            COLORS[k],
            lx + 16.0
        );
        lx += 22.0 + 7.0 * name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

/// J&F per video: one group per video, one bar per (model, setting).
pub fn jf_svg(lines: &[Line], rows: &[Summary]) -> String {
    let multi = rows.iter().any(|r| rows.iter().any(|s| s.model == r.model && s.setting != r.setting));
    let series: Vec<(String, String, String)> =
        rows.iter().map(|r| (r.model.clone(), r.setting.clone(), row_label(r, multi))).collect();
    let recs = effective_videos(lines);
    let mut videos: Vec<&str> = recs.iter().map(|r| r.video.as_str()).collect();
    videos.sort();
    videos.dedup();
    let nser = series.len().max(1);
    let bar_w = 14.0;
    let (left, top, plot_h) = (50.0, 50.0, 260.0);
    let group_w = (nser as f64 * bar_w + 16.0).max(360.0 / videos.len().max(1) as f64);
    let plot_w = videos.len().max(1) as f64 * group_w;
    let label_h = 8.0 + 6.5 * videos.iter().map(|v| v.chars().count()).max().unwrap_or(4).min(40) as f64;
    let legend_h = 18.0 * nser as f64 + 10.0;
    let (w, h) = (left + plot_w + 20.0, top + plot_h + label_h + legend_h + 10.0);
    let y = |v: f64| top + plot_h - v.clamp(0.0, 100.0) / 100.0 * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{left}" y="22" font-size="15" font-weight="bold">J&amp;F per video (%)</text>"#);
    for t in (0..=100).step_by(20) {
        let yy = y(t as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{t}</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0
        );
    }
    for (vi, video) in videos.iter().enumerate() {
        let gx = left + vi as f64 * group_w + (group_w - nser as f64 * bar_w) / 2.0;
        for (si, (model, setting, label)) in series.iter().enumerate() {
            let rec = recs.iter().find(|r| r.video == *video && r.run.model == *model && r.run.setting == *setting);
            let bx = gx + si as f64 * bar_w;
            match rec.and_then(|r| r.jf) {
                Some(jf) => {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {jf:.1}</title></rect>"#,
                        y(jf),
                        bar_w - 2.0,
                        (y(0.0) - y(jf)).max(0.5),
                        COLORS[si % COLORS.len()],
                        esc(label),
                        esc(video)
                    );
                }
                None if rec.is_some() => {
                    // failed or not scored
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" fill="#c00" text-anchor="middle">x<title>{} {}: no score</title></text>"##,
                        bx + bar_w / 2.0,
                        y(0.0) - 3.0,
                        esc(label),
                        esc(video)
                    );
                }
                None => {}
            }
        }
        let cx = gx + nser as f64 * bar_w / 2.0;
        let ly = top + plot_h + 12.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{ly:.1}" transform="rotate(45 {cx:.1} {ly:.1})">{}</text>"#,
            esc(video)
        );
    }
    let _ =
        writeln!(s, r#"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="black"/>"#, y(0.0), left + plot_w);
    let mut ly = top + plot_h + label_h + 14.0;
    for (si, (_, _, label)) in series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{ly:.0}">{}</text>"#,
            ly - 10.0,
            COLORS[si % COLORS.len()],
            left + 16.0,
            esc(label)
        );
        ly += 18.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_is_nice() {
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
