//! Summaries of a results file: one row per (model, setting) as a text table (stdout),
//! Markdown and CSV; and `compare`, two result files side by side with ratios.
//!
//! Definitions: latency percentiles (p50/p90/p99, numpy's linear interpolation) pool the
//! per-frame latencies of all videos, the first frame of each video excluded (it is
//! reported apart: prompts in to first masks out). FPS = frames / total time, first
//! frames included. Stage columns are mean ms per frame over the later frames. J, F and
//! J&F are means over all objects of the successful videos (as the SA-V and DAVIS
//! evaluators' global scores); a failed video is counted and not scored.

use std::fmt::Write;

use super::results::{effective_videos, last_warmups, Line, StageMs, VideoRecord, WarmupRecord};
use super::timing::{percentile, STAGES};

/// One (model, setting) aggregated.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub model: String,
    pub setting: String,
    pub backends: String,
    pub videos_ok: usize,
    pub videos_failed: usize,
    pub frames: usize,
    pub objects: usize,
    pub j: f64,
    pub f: f64,
    pub jf: f64,
    pub fps: f64,
    pub first_frame_ms: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// Mean ms per later frame.
    pub stages: StageMs,
    pub peak_rss_mb: Option<f64>,
    pub system_used_peak_mb: Option<f64>,
    pub device_used_peak_mb: Option<f64>,
    pub jetson: bool,
    pub warmup: String,
    pub warnings: usize,
}

impl Summary {
    /// The memory figure to hold against a budget: on Jetson the shared memory in use,
    /// elsewhere the larger of host RSS and device memory.
    pub fn budget_mb(&self) -> Option<f64> {
        if self.jetson {
            return self.system_used_peak_mb;
        }
        match (self.peak_rss_mb, self.device_used_peak_mb) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn max_opt(it: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    it.flatten().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
}

/// Aggregate the records of a results file.
pub fn summarize(lines: &[Line]) -> Vec<Summary> {
    let videos = effective_videos(lines);
    let warmups = last_warmups(lines);
    let mut groups: Vec<((String, String), Vec<&VideoRecord>)> = Vec::new();
    let mut push_group = |k: (String, String)| {
        if !groups.iter().any(|(g, _)| *g == k) {
            groups.push((k, Vec::new()));
        }
    };
    for w in &warmups {
        push_group((w.run.model.clone(), w.run.setting.clone()));
    }
    for v in &videos {
        push_group((v.run.model.clone(), v.run.setting.clone()));
    }
    for v in &videos {
        let k = (v.run.model.clone(), v.run.setting.clone());
        if let Some((_, g)) = groups.iter_mut().find(|(g, _)| *g == k) {
            g.push(v);
        }
    }
    groups
        .into_iter()
        .map(|((model, setting), recs)| {
            let warm: Option<&&WarmupRecord> =
                warmups.iter().find(|w| w.run.model == model && w.run.setting == setting);
            summarize_group(model, setting, &recs, warm.copied())
        })
        .collect()
}

fn summarize_group(model: String, setting: String, recs: &[&VideoRecord], warm: Option<&WarmupRecord>) -> Summary {
    let ok: Vec<&&VideoRecord> = recs.iter().filter(|r| r.ok()).collect();
    let scores: Vec<(f64, f64)> = ok.iter().flat_map(|r| r.object_scores.iter().map(|o| (o.j, o.f))).collect();
    let j = mean(&scores.iter().map(|s| s.0).collect::<Vec<_>>());
    let f = mean(&scores.iter().map(|s| s.1).collect::<Vec<_>>());
    let mut lat: Vec<f64> = ok.iter().flat_map(|r| r.frame_ms.iter().copied()).collect();
    lat.sort_by(f64::total_cmp);
    let frames: usize = ok.iter().map(|r| r.frames).sum();
    let total_ms: f64 = ok.iter().map(|r| r.total_ms).sum();
    let later: usize = ok.iter().map(|r| r.frame_ms.len()).sum();
    let mut st = [0f64; 5];
    for r in &ok {
        for (a, b) in st.iter_mut().zip(r.stages.values()) {
            *a += b;
        }
    }
    let stages = StageMs::from_values(st.map(|v| if later > 0 { v / later as f64 } else { f64::NAN }));
    let backends = recs
        .first()
        .map(|r| &r.run.backends)
        .or(warm.map(|w| &w.run.backends))
        .map(|b| {
            let mut names: Vec<&str> = b.values().map(|s| s.as_str()).collect();
            names.dedup();
            names.join("+")
        })
        .unwrap_or_default();
    let warmup = match warm {
        None => "-".to_string(),
        Some(w) if w.ok() => "ok".to_string(),
        Some(w) => format!("{}: {}", w.status, w.error.as_deref().unwrap_or("")),
    };
    let mems = ok.iter().map(|r| &r.mem);
    Summary {
        model,
        setting,
        backends,
        videos_ok: ok.len(),
        videos_failed: recs.len() - ok.len(),
        frames,
        objects: ok.iter().map(|r| r.objects).sum(),
        j,
        f,
        jf: (j + f) / 2.0,
        fps: if total_ms > 0.0 { frames as f64 / (total_ms / 1e3) } else { f64::NAN },
        first_frame_ms: mean(&ok.iter().map(|r| r.first_frame_ms).collect::<Vec<_>>()),
        p50: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        p99: percentile(&lat, 99.0),
        stages,
        peak_rss_mb: max_opt(mems.clone().map(|m| m.peak_rss_mb)),
        system_used_peak_mb: max_opt(mems.clone().map(|m| m.system_used_peak_mb)),
        device_used_peak_mb: max_opt(mems.clone().map(|m| m.device_used_peak_mb)),
        jetson: ok.iter().any(|r| r.mem.jetson),
        warmup,
        warnings: recs.iter().map(|r| r.warnings.len()).sum(),
    }
}

fn num(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        "-".into()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

/// Header and cells of the summary table; `budget` adds an "in budget" column.
fn table(rows: &[Summary], budget: Option<f64>) -> (Vec<String>, Vec<Vec<String>>) {
    let multi = rows.iter().any(|r| rows.iter().any(|s| s.model == r.model && s.setting != r.setting));
    let mut head: Vec<String> = vec!["model".into()];
    if multi {
        head.push("setting".into());
    }
    head.extend(
        [
            "backend",
            "videos",
            "failed",
            "frames",
            "J",
            "F",
            "J&F",
            "FPS",
            "first ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "enc ms",
            "mem-attn ms",
            "dec ms",
            "mem-enc ms",
            "pre/post ms",
            "RSS MB",
            "dev MB",
            "shared MB",
            "warm-up",
        ]
        .map(String::from),
    );
    if budget.is_some() {
        head.push("in budget".into());
    }
    let body = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.model.clone()];
            if multi {
                c.push(r.setting.clone());
            }
            c.extend([
                r.backends.clone(),
                r.videos_ok.to_string(),
                r.videos_failed.to_string(),
                r.frames.to_string(),
                num(r.j, 1),
                num(r.f, 1),
                num(r.jf, 1),
                num(r.fps, 2),
                num(r.first_frame_ms, 1),
                num(r.p50, 1),
                num(r.p90, 1),
                num(r.p99, 1),
            ]);
            c.extend(r.stages.values().iter().map(|&v| num(v, 1)));
            c.extend([
                opt(r.peak_rss_mb),
                opt(r.device_used_peak_mb),
                if r.jetson { opt(r.system_used_peak_mb) } else { "-".into() },
                r.warmup.clone(),
            ]);
            if let Some(b) = budget {
                c.push(match r.budget_mb() {
                    Some(m) if m <= b => "yes".into(),
                    Some(m) => format!("NO ({m:.0} MB)"),
                    None => "?".into(),
                });
            }
            c
        })
        .collect();
    (head, body)
}

/// Aligned text table.
pub fn text_table(rows: &[Summary], budget: Option<f64>) -> String {
    let (head, body) = table(rows, budget);
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in std::iter::once(&head).chain(body.iter()) {
        let cells: Vec<String> = r.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Markdown: the summary table, definitions, then one row per video.
pub fn markdown(lines: &[Line], rows: &[Summary], budget: Option<f64>) -> String {
    let (head, body) = table(rows, budget);
    let mut s = String::from("# tamrt bench\n\n");
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for r in &body {
        let _ = writeln!(s, "| {} |", r.iter().map(|c| md_escape(c)).collect::<Vec<_>>().join(" | "));
    }
    s.push_str(
        "\nFPS: frames / total time (first frames included). first ms: prompts in to first masks out, mean over \
         videos. p50/p90/p99: latency of the later frames, all videos pooled. Stage columns: mean ms per later \
         frame (pre/post: frame decode wait, resizing, host ops). J, F, J&F: means over all objects (percent). RSS: \
         peak resident set; dev: GPU memory in use (whole device); shared: MemTotal - MemAvailable on Jetson.\n",
    );
    let videos = effective_videos(lines);
    if !videos.is_empty() {
        s.push_str("\n## Videos\n\n| model | setting | video | status | frames | objects | J&F | FPS | first ms | p50 ms | warnings / error |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for v in videos {
            let mut lat = v.frame_ms.clone();
            lat.sort_by(f64::total_cmp);
            let note = v.error.clone().into_iter().chain(v.warnings.iter().cloned()).collect::<Vec<_>>().join("; ");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md_escape(&v.run.model),
                md_escape(&v.run.setting),
                md_escape(&v.video),
                v.status,
                v.frames,
                v.objects,
                v.jf.map(|x| num(x, 1)).unwrap_or_else(|| "-".into()),
                num(if v.total_ms > 0.0 { v.frames as f64 / (v.total_ms / 1e3) } else { f64::NAN }, 2),
                num(v.first_frame_ms, 1),
                num(percentile(&lat, 50.0), 1),
                md_escape(&note.replace('\n', " "))
            );
        }
    }
    s
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// CSV of the summary rows (full precision, every column).
pub fn csv(rows: &[Summary]) -> String {
    let mut s = String::from(
        "model,setting,backend,videos,failed,frames,objects,J,F,JF,fps,first_frame_ms,p50_ms,p90_ms,p99_ms",
    );
    for st in STAGES {
        let _ = write!(s, ",{st}_ms");
    }
    s.push_str(",peak_rss_mb,device_used_peak_mb,system_used_peak_mb,jetson,warmup,warnings\n");
    let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in rows {
        let mut cells = vec![
            r.model.clone(),
            r.setting.clone(),
            r.backends.clone(),
            r.videos_ok.to_string(),
            r.videos_failed.to_string(),
            r.frames.to_string(),
            r.objects.to_string(),
        ];
        cells.extend([r.j, r.f, r.jf, r.fps, r.first_frame_ms, r.p50, r.p90, r.p99].iter().map(|v| v.to_string()));
        cells.extend(r.stages.values().iter().map(|v| v.to_string()));
        cells.extend([
            o(r.peak_rss_mb),
            o(r.device_used_peak_mb),
            o(r.system_used_peak_mb),
            r.jetson.to_string(),
            r.warmup.clone(),
            r.warnings.to_string(),
        ]);
        let _ = writeln!(s, "{}", cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
    }
    s
}

/// Two summaries side by side: rows matched by (model, setting), else by model when
/// each file has one setting per model. Ratios are B / A; J&F shows B - A.
pub fn compare(a_name: &str, a: &[Summary], b_name: &str, b: &[Summary]) -> String {
    let mut s = format!("# tamrt bench compare\n\nA = {a_name}\nB = {b_name}\n");
    let mut pairs: Vec<(&Summary, &Summary)> = Vec::new();
    for ra in a {
        let exact = b.iter().find(|rb| rb.model == ra.model && rb.setting == ra.setting);
        let by_model = || {
            let mb: Vec<&Summary> = b.iter().filter(|rb| rb.model == ra.model).collect();
            let ma = a.iter().filter(|x| x.model == ra.model).count();
            if mb.len() == 1 && ma == 1 {
                Some(mb[0])
            } else {
                None
            }
        };
        if let Some(rb) = exact.or_else(by_model) {
            pairs.push((ra, rb));
        }
    }
    let only_a: Vec<&str> =
        a.iter().filter(|r| !pairs.iter().any(|p| std::ptr::eq(p.0, *r))).map(|r| r.model.as_str()).collect();
    let only_b: Vec<&str> =
        b.iter().filter(|r| !pairs.iter().any(|p| std::ptr::eq(p.1, *r))).map(|r| r.model.as_str()).collect();
    for (ra, rb) in &pairs {
        let _ = writeln!(s, "\n## {}\n", ra.model);
        if ra.setting != rb.setting {
            let _ = writeln!(s, "A: {} ({})  \nB: {} ({})\n", ra.setting, ra.backends, rb.setting, rb.backends);
        }
        s.push_str("| metric | A | B | B/A |\n|---|---|---|---|\n");
        let row = |s: &mut String, name: &str, x: f64, y: f64, prec: usize| {
            let ratio = if x != 0.0 && x.is_finite() && y.is_finite() { format!("{:.3}", y / x) } else { "-".into() };
            let _ = writeln!(s, "| {name} | {} | {} | {ratio} |", num(x, prec), num(y, prec));
        };
        row(&mut s, "FPS", ra.fps, rb.fps, 2);
        row(&mut s, "first frame ms", ra.first_frame_ms, rb.first_frame_ms, 1);
        row(&mut s, "p50 ms", ra.p50, rb.p50, 2);
        row(&mut s, "p90 ms", ra.p90, rb.p90, 2);
        row(&mut s, "p99 ms", ra.p99, rb.p99, 2);
        for ((name, x), y) in STAGES.iter().zip(ra.stages.values()).zip(rb.stages.values()) {
            row(&mut s, &format!("{name} ms/frame"), x, y, 2);
        }
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        row(&mut s, "peak RSS MB", nan(ra.peak_rss_mb), nan(rb.peak_rss_mb), 0);
        row(&mut s, "device MB", nan(ra.device_used_peak_mb), nan(rb.device_used_peak_mb), 0);
        let _ = writeln!(
            s,
            "| J&F | {} | {} | {} (B-A) |",
            num(ra.jf, 2),
            num(rb.jf, 2),
            if ra.jf.is_finite() && rb.jf.is_finite() { format!("{:+.2}", rb.jf - ra.jf) } else { "-".into() }
        );
        let _ = writeln!(
            s,
            "| videos ok / failed | {} / {} | {} / {} | |",
            ra.videos_ok, ra.videos_failed, rb.videos_ok, rb.videos_failed
        );
    }
    if !only_a.is_empty() {
        let _ = writeln!(s, "\nonly in A: {}", only_a.join(", "));
    }
    if !only_b.is_empty() {
        let _ = writeln!(s, "\nonly in B: {}", only_b.join(", "));
    }
    if pairs.is_empty() {
        s.push_str("\nno model in common\n");
    }
    s
}
