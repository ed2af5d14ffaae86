//! The results file: JSON Lines, one complete record per finished video (and one per
//! model warm-up), appended with a single write and `fsync` as each one finishes.
//!
//! A run that dies mid-write leaves at most a partial last line without a newline; the
//! next run cuts it off (with a warning) before appending. Resuming skips every video
//! whose key (model, setting, video) already has a record. `merge` joins shard files:
//! identical records collapse, a success replaces a failure of the same key, and two
//! different successes of one key are a conflict (an error).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Milliseconds per stage (see [`super::timing::STAGES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageMs {
    pub image_encoder: f64,
    pub memory_attention: f64,
    pub prompt_decoder: f64,
    pub memory_encoder: f64,
    /// Everything between graph calls: frame decode wait, pre/post-processing, host ops.
    pub pre_post: f64,
}

impl StageMs {
    pub fn values(&self) -> [f64; 5] {
        [self.image_encoder, self.memory_attention, self.prompt_decoder, self.memory_encoder, self.pre_post]
    }

    pub fn from_values(v: [f64; 5]) -> StageMs {
        StageMs {
            image_encoder: v[0],
            memory_attention: v[1],
            prompt_decoder: v[2],
            memory_encoder: v[3],
            pre_post: v[4],
        }
    }

    pub fn total(&self) -> f64 {
        self.values().iter().sum()
    }
}

/// Memory readings of one run, MiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemRecord {
    /// Peak RSS of the process (`VmHWM`).
    pub peak_rss_mb: Option<f64>,
    /// "run" when the peak was reset before the run, "process" when it could not be.
    pub rss_scope: String,
    /// Peak of `MemTotal - MemAvailable` (the shared CPU/GPU memory on Jetson).
    pub system_used_peak_mb: Option<f64>,
    pub jetson: bool,
    /// Peak device memory in use on GPU 0 (all processes) and its value before any
    /// model was loaded.
    pub device_used_peak_mb: Option<f64>,
    pub device_used_baseline_mb: Option<f64>,
}

/// J, F of one object (percent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjScore {
    pub obj: String,
    pub j: f64,
    pub f: f64,
    pub frames: usize,
}

/// What was run; part of every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub model: String,
    /// Everything that changes results or timings: prompt, backend, precision, ...
    pub setting: String,
    pub model_dir: String,
    pub weights: String,
    /// Component → backend that ran it.
    pub backends: BTreeMap<String, String>,
    pub host: String,
    pub tamrt_version: String,
}

/// One finished (or failed) video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRecord {
    #[serde(flatten)]
    pub run: RunInfo,
    pub format: String,
    pub video: String,
    /// "ok" or "failed".
    pub status: String,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub width: usize,
    pub height: usize,
    /// Frames in the video and frames output by the tracker.
    pub num_frames: usize,
    pub frames: usize,
    pub objects: usize,
    /// Object-frames output, and those with an empty mask / non-finite logits.
    pub masks: usize,
    pub empty_masks: usize,
    pub nonfinite_masks: usize,
    /// Prompts in to the first frame's masks out (frame decode included).
    pub first_frame_ms: f64,
    pub first_frame_stages: StageMs,
    /// Latency of every later frame, in output order.
    pub frame_ms: Vec<f64>,
    /// Sum over the later frames, per stage.
    pub stages: StageMs,
    /// Graph calls per stage over the whole video.
    pub calls: BTreeMap<String, usize>,
    pub total_ms: f64,
    pub mem: MemRecord,
    pub peak_bank_mb: f64,
    pub j: Option<f64>,
    pub f: Option<f64>,
    pub jf: Option<f64>,
    pub object_scores: Vec<ObjScore>,
    pub missing_frames: usize,
    pub finished_unix: u64,
}

impl VideoRecord {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// A model's warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupRecord {
    #[serde(flatten)]
    pub run: RunInfo,
    /// "ok", "load_only" (the warm-up run failed; models loaded), "no_valid_mask" (it
    /// ran but gave no usable mask) or "failed" (the model did not load).
    pub status: String,
    pub error: Option<String>,
    pub load_ms: f64,
    /// Each warm-up run, end to end.
    pub runs_ms: Vec<f64>,
    pub mask_empty: bool,
    pub mem: MemRecord,
    pub finished_unix: u64,
}

impl WarmupRecord {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// A line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Video(Box<VideoRecord>),
    Warmup(Box<WarmupRecord>),
}

/// Resume / dedupe key of a video record.
pub type Key = (String, String, String);

impl Line {
    pub fn key(&self) -> Option<Key> {
        match self {
            Line::Video(v) => Some((v.run.model.clone(), v.run.setting.clone(), v.video.clone())),
            Line::Warmup(_) => None,
        }
    }
}

/// Parse a results file. A last line without a newline is a torn write: with `repair`
/// it is cut off the file (returned count > 0), else ignored. Any other bad line is an
/// error naming its number.
pub fn read_lines(path: &Path, repair: bool) -> Result<(Vec<Line>, usize)> {
    let text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, "cannot read results", e)),
    };
    let complete = text.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
    let torn = text.len() - complete;
    if torn > 0 && repair {
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, "cannot open", e))?;
        f.set_len(complete as u64).map_err(|e| Error::io(path, "cannot cut a partial last line", e))?;
        f.sync_all().map_err(|e| Error::io(path, "cannot sync", e))?;
    }
    let body = std::str::from_utf8(&text[..complete])
        .map_err(|_| invalid(format!("results file '{}' is not UTF-8", path.display())))?;
    let mut lines = Vec::new();
    for (i, l) in body.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l).map_err(|e| {
            invalid(format!("results file '{}' line {}: not a tamrt bench record: {e}", path.display(), i + 1))
        })?;
        lines.push(line);
    }
    Ok((lines, torn))
}

/// Append one record as one line: a single `write` of the whole line, then `fsync`.
pub fn append_line(path: &Path, line: &Line) -> Result<()> {
    let mut s = serde_json::to_string(line).map_err(|e| invalid(format!("cannot serialise a record: {e}")))?;
    s.push('\n');
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, "cannot open results", e))?;
    f.write_all(s.as_bytes()).map_err(|e| Error::io(path, "cannot append to results", e))?;
    f.sync_data().map_err(|e| Error::io(path, "cannot sync results", e))?;
    if new {
        // make the new directory entry durable too
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}

/// The video records that count, one per key: a success wins over failures, else the
/// last record. In order of first appearance.
pub fn effective_videos(lines: &[Line]) -> Vec<&VideoRecord> {
    let mut order: Vec<Key> = Vec::new();
    let mut best: BTreeMap<Key, &VideoRecord> = BTreeMap::new();
    for l in lines {
        if let (Line::Video(v), Some(k)) = (l, l.key()) {
            match best.get(&k) {
                None => {
                    order.push(k.clone());
                    best.insert(k, v);
                }
                Some(old) if !old.ok() || v.ok() => {
                    best.insert(k, v);
                }
                _ => {}
            }
        }
    }
    order.iter().map(|k| best[k]).collect()
}

/// The last warm-up record of each (model, setting), in order of first appearance.
pub fn last_warmups(lines: &[Line]) -> Vec<&WarmupRecord> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut last: BTreeMap<(String, String), &WarmupRecord> = BTreeMap::new();
    for l in lines {
        if let Line::Warmup(w) = l {
            let k = (w.run.model.clone(), w.run.setting.clone());
            if !last.contains_key(&k) {
                order.push(k.clone());
            }
            last.insert(k, w);
        }
    }
    order.iter().map(|k| last[k]).collect()
}

/// Join result files: see the module docs. Returns the merged lines (video records
/// sorted by key, then warm-ups) or a conflict error naming both files.
pub fn merge(inputs: &[(String, Vec<Line>)]) -> Result<Vec<Line>> {
    let mut videos: BTreeMap<Key, (&VideoRecord, &str)> = BTreeMap::new();
    let mut warmups: Vec<&Line> = Vec::new();
    for (file, lines) in inputs {
        for l in lines {
            match l {
                Line::Warmup(_) => {
                    if !warmups.contains(&l) {
                        warmups.push(l);
                    }
                }
                Line::Video(v) => {
                    let k = l.key().expect("video key");
                    match videos.get(&k) {
                        None => {
                            videos.insert(k, (v, file));
                        }
                        Some((old, _)) if **old == **v => {}
                        Some((old, _)) if old.ok() && !v.ok() => {}
                        Some((old, _)) if !old.ok() => {
                            videos.insert(k, (v, file));
                        }
                        Some((_, old_file)) => {
                            return Err(invalid(format!(
                                "conflict: model '{}' setting '{}' video '{}' has different results in '{old_file}' and \
                                 '{file}' (the same video ran twice; keep one of them)",
                                k.0, k.1, k.2
                            )));
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Line> = videos.into_values().map(|(v, _)| Line::Video(Box::new(v.clone()))).collect();
    out.extend(warmups.into_iter().cloned());
    Ok(out)
}

/// Write lines to `path` atomically (temporary file + rename).
pub fn write_lines(path: &Path, lines: &[Line]) -> Result<()> {
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).map_err(|e| invalid(format!("cannot serialise a record: {e}")))?);
        s.push('\n');
    }
    crate::eval::write_atomic(path, s.as_bytes())
}
