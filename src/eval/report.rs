//! Means as numpy takes them, and the report: text tables, JSON, CSV, atomic writes.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{DavisStats, EvalReport, Format, ObjectScore};
use crate::error::{Error, Result};

/// numpy's pairwise summation (`@TYPE@_pairwise_sum`, blocks of 128, 8 accumulators).
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &x| s + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for c in a[8..full].chunks_exact(8) {
            for j in 0..8 {
                r[j] += c[j];
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.mean` of a float64 array (NaN when empty).
pub fn np_mean(a: &[f64]) -> f64 {
    (0.0 + pairwise_sum(a)) / a.len() as f64
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, "cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, "cannot write", e)
    })
}

/// J&F, J, F and (DAVIS only) the recall / decay figures, of an object or of the whole
/// report.
#[derive(Serialize)]
struct JsonScores {
    #[serde(rename = "J&F")]
    jf: f64,
    #[serde(rename = "J")]
    j: f64,
    #[serde(rename = "F")]
    f: f64,
    #[serde(rename = "J-Recall", skip_serializing_if = "Option::is_none")]
    j_recall: Option<f64>,
    #[serde(rename = "J-Decay", skip_serializing_if = "Option::is_none")]
    j_decay: Option<f64>,
    #[serde(rename = "F-Recall", skip_serializing_if = "Option::is_none")]
    f_recall: Option<f64>,
    #[serde(rename = "F-Decay", skip_serializing_if = "Option::is_none")]
    f_decay: Option<f64>,
}

impl JsonScores {
    fn new(jf: f64, j: f64, f: f64, davis: Option<DavisStats>) -> JsonScores {
        JsonScores {
            jf,
            j,
            f,
            j_recall: davis.map(|d| d.j_recall),
            j_decay: davis.map(|d| d.j_decay),
            f_recall: davis.map(|d| d.f_recall),
            f_decay: davis.map(|d| d.f_decay),
        }
    }
}

#[derive(Serialize)]
struct JsonObject<'a> {
    video: &'a str,
    obj_id: serde_json::Value,
    #[serde(flatten)]
    scores: JsonScores,
    frames: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format: &'static str,
    #[serde(flatten)]
    scores: JsonScores,
    videos: usize,
    /// Scored frames without a prediction (scored 0), and up to 20 of them by name.
    missing_frames: usize,
    missing_examples: &'a [String],
    /// Prediction videos without ground truth (ignored).
    extra_pred_videos: &'a [String],
    objects: Vec<JsonObject<'a>>,
}

fn obj_id(o: &ObjectScore) -> serde_json::Value {
    match o.obj_id() {
        Some(n) => serde_json::Value::from(n),
        None => serde_json::Value::from(o.obj.clone()),
    }
}

/// The report as JSON (all values in percent, unrounded).
pub fn json_string(r: &EvalReport) -> String {
    let objects = r
        .objects
        .iter()
        .map(|o| JsonObject {
            video: &o.video,
            obj_id: obj_id(o),
            scores: JsonScores::new(o.jf(), o.j, o.f, o.davis),
            frames: o.frames,
        })
        .collect();
    let rep = JsonReport {
        format: r.format.name(),
        scores: JsonScores::new(r.jf, r.j, r.f, r.davis),
        videos: r.videos,
        missing_frames: r.missing_frames,
        missing_examples: &r.missing_examples,
        extra_pred_videos: &r.extra_pred_videos,
        objects,
    };
    let mut s = serde_json::to_string_pretty(&rep).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as CSV: one row per object and a final "Global score" row (percent).
pub fn csv_string(r: &EvalReport) -> String {
    let davis = r.format == Format::Davis;
    let mut s = String::from("video,obj_id,J&F,J,F");
    if davis {
        s.push_str(",J-Recall,J-Decay,F-Recall,F-Decay");
    }
    s.push_str(",frames\n");
    for o in &r.objects {
        let _ = write!(s, "{},{},{},{},{}", csv_field(&o.video), csv_field(&o.obj), o.jf(), o.j, o.f);
        if let Some(d) = o.davis {
            let _ = write!(s, ",{},{},{},{}", d.j_recall, d.j_decay, d.f_recall, d.f_decay);
        }
        let _ = writeln!(s, ",{}", o.frames);
    }
    let _ = write!(s, "Global score,,{},{},{}", r.jf, r.j, r.f);
    if let Some(d) = r.davis {
        let _ = write!(s, ",{},{},{},{}", d.j_recall, d.j_decay, d.f_recall, d.f_decay);
    }
    let _ = writeln!(s, ",{}", r.objects.iter().map(|o| o.frames).sum::<usize>());
    s
}

/// Per-object, per-video and global tables (percent, one decimal as the official tools).
pub fn text_tables(r: &EvalReport) -> String {
    let davis = r.davis.is_some();
    let vw = r.objects.iter().map(|o| o.video.chars().count()).max().unwrap_or(0).max("Global score".len());
    let ow = r.objects.iter().map(|o| o.obj.chars().count()).max().unwrap_or(0).max(3);
    let mut s = String::new();
    let _ = write!(s, "{:<vw$}  {:>ow$}  {:>6}  {:>6}  {:>6}", "video", "obj", "J&F", "J", "F");
    if davis {
        let _ = write!(s, "  {:>8}  {:>7}  {:>8}  {:>7}", "J-Recall", "J-Decay", "F-Recall", "F-Decay");
    }
    s.push('\n');
    for o in &r.objects {
        let _ = write!(s, "{:<vw$}  {:>ow$}  {:>6.1}  {:>6.1}  {:>6.1}", o.video, o.obj, o.jf(), o.j, o.f);
        if let Some(d) = o.davis {
            let _ = write!(s, "  {:>8.1}  {:>7.1}  {:>8.1}  {:>7.1}", d.j_recall, d.j_decay, d.f_recall, d.f_decay);
        }
        s.push('\n');
    }
    // Per video: means over its objects.
    s.push('\n');
    let _ = writeln!(s, "{:<vw$}  {:>7}  {:>6}  {:>6}  {:>6}", "video", "objects", "J&F", "J", "F");
    let mut i = 0;
    while i < r.objects.len() {
        let v = &r.objects[i].video;
        let n = r.objects[i..].iter().take_while(|o| &o.video == v).count();
        let objs = &r.objects[i..i + n];
        let j = super::np_mean(&objs.iter().map(|o| o.j).collect::<Vec<_>>());
        let f = super::np_mean(&objs.iter().map(|o| o.f).collect::<Vec<_>>());
        let _ = writeln!(s, "{v:<vw$}  {n:>7}  {:>6.1}  {j:>6.1}  {f:>6.1}", (j + f) / 2.0);
        i += n;
    }
    s.push('\n');
    let _ = write!(
        s,
        "Global score ({} videos, {} objects): J&F {:.1}  J {:.1}  F {:.1}",
        r.videos,
        r.objects.len(),
        r.jf,
        r.j,
        r.f
    );
    if let Some(d) = r.davis {
        let _ = write!(
            s,
            "  J-Recall {:.1}  J-Decay {:.1}  F-Recall {:.1}  F-Decay {:.1}",
            d.j_recall, d.j_decay, d.f_recall, d.f_decay
        );
    }
    s.push('\n');
    if r.missing_frames > 0 {
        let _ = writeln!(
            s,
            "{} scored frame(s) had no prediction and scored 0, e.g. {}",
            r.missing_frames,
            r.missing_examples.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    if !r.extra_pred_videos.is_empty() {
        let _ = writeln!(s, "{} prediction video(s) without ground truth were ignored", r.extra_pred_videos.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_matches_naive_for_small() {
        let v: Vec<f64> = (0..300).map(|i| (i as f64 * 0.37).sin()).collect();
        for n in [0, 1, 7, 8, 9, 128, 129, 300] {
            let naive: f64 = v[..n].iter().sum();
            assert!((pairwise_sum(&v[..n]) - naive).abs() < 1e-12);
        }
        assert!(np_mean(&[]).is_nan());
    }
}
