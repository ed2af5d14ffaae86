//! `tamrt bench`: speed, memory and accuracy of exported models on a video dataset
//! (SA-V val/test or DAVIS layout), with the [`crate::tracker`] doing the tracking.
//!
//! Per model: load (each component on TensorRT or ONNX Runtime, see
//! [`crate::backend::select`]), warm up on a dummy clip ([`warmup::warmup`]), then per
//! video: prompts from the first annotated frame where each object is visible
//! ([`prompts`]), tracking forward from the earliest of them with per-stage timing
//! ([`timing::TimedSession`] wraps the sessions), peak memory, and J&F with
//! [`crate::eval`]. Each finished video is appended to the results file ([`results`]); a
//! rerun skips what is there. A failure (error or panic) in one video is recorded and
//! the run goes on. Summaries: [`report`], [`plot`].
//!
//! Files next to `RESULTS` (e.g. `out/bench.jsonl`): `out/bench.summary.md`,
//! `out/bench.summary.csv`, `out/bench.stages.svg`, `out/bench.jf.svg`, and the
//! predictions `out/bench.pred/<model>__<setting>/<video>/...`.
//!
//! A *setting* names what changes results or timings besides the model:
//! `<prompt>,<backend>,<precision>,mf<max frames in memory>[,t<threads>]`, e.g.
//! `mask,auto,fp32,mf600`. Resume and merge keys are (model, setting, video).

pub mod cli;
pub mod dataset;
pub mod plot;
pub mod prompts;
pub mod report;
pub mod results;
pub mod run;
mod sink;
pub mod synth;
pub mod timing;
pub mod warmup;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backend::select::BackendPref;
use crate::error::{Error, ErrorKind, Result};
use crate::eval::Format;
use crate::trt::engine_cache::Precision;
use dataset::Dataset;
use prompts::PromptMode;
use results::{Line, WarmupRecord};
use run::{LoadedModel, RunConfig, VideoJob};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Everything `tamrt bench` takes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dataset: PathBuf,
    /// `None`: detect the layout.
    pub format: Option<Format>,
    /// Model names (folders of `models_root`) or paths to exported model folders.
    pub models: Vec<String>,
    pub models_root: PathBuf,
    /// The results file (JSON Lines).
    pub results: PathBuf,
    pub prompt: PromptMode,
    pub backend: BackendPref,
    pub precision: Precision,
    pub threads: usize,
    pub videos: Option<Vec<String>>,
    pub limit_videos: Option<usize>,
    pub shard: Option<(usize, usize)>,
    /// Warm-up runs per model (0: load only).
    pub warmup: usize,
    pub max_frames_in_mem: usize,
    pub skip_inference: bool,
    /// Run again videos whose record is a failure.
    pub retry_failed: bool,
    /// Memory budget (MiB) the summary checks each model against.
    pub mem_budget_mb: Option<f64>,
    /// Predictions root (default: RESULTS with extension `.pred`).
    pub pred_dir: Option<PathBuf>,
    /// Progress bars on stderr (when it is a terminal).
    pub progress: bool,
}

impl BenchOptions {
    /// The setting string of this run (see the module docs).
    pub fn setting(&self) -> String {
        let backend = match self.backend {
            BackendPref::Auto => "auto",
            BackendPref::Ort => "ort",
            BackendPref::Trt => "trt",
        };
        let mut s = format!("{},{backend},{},mf{}", self.prompt.label(), self.precision.name(), self.max_frames_in_mem);
        if self.threads > 0 {
            s.push_str(&format!(",t{}", self.threads));
        }
        s
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct BenchOutcome {
    pub videos_run: usize,
    pub videos_skipped: usize,
    pub failures: Vec<String>,
    pub summary_text: String,
    pub files: Vec<PathBuf>,
}

/// A path next to `results` with its extension replaced by `ext` (`bench.jsonl` →
/// `bench.summary.md`).
pub fn sibling(results: &Path, ext: &str) -> PathBuf {
    let stem = results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "bench".into());
    results.with_file_name(format!("{stem}.{ext}"))
}

/// Model folders of `root` (those holding a `model.json`), sorted.
pub fn available_models(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("model.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Resolve `--models` entries to (name, folder); every entry is checked first.
pub fn resolve_models(list: &[String], root: &Path) -> Result<Vec<(String, PathBuf)>> {
    if list.is_empty() {
        return Err(invalid("--models is empty"));
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for entry in list {
        let as_path = Path::new(entry);
        let dir = if as_path.join("model.json").is_file() {
            as_path.to_path_buf()
        } else if root.join(entry).join("model.json").is_file() {
            root.join(entry)
        } else {
            let have = available_models(root);
            let have = if have.is_empty() { "none".to_string() } else { have.join(", ") };
            let what = if as_path.is_dir() {
                format!("folder '{entry}' has no model.json")
            } else {
                format!("no folder '{}' (or '{entry}') with a model.json", root.join(entry).display())
            };
            return Err(invalid(format!(
                "unknown model '{entry}': {what}. Models in '{}': {have}. Export one with `tamrt export --model \
                 {entry} --random-weights 0 --out {}` (or --checkpoint FILE), or give the path of an exported model",
                root.display(),
                root.join(entry).display()
            )));
        };
        let name = if root.join(entry) == dir {
            entry.clone()
        } else {
            dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| entry.clone())
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!("--models names '{name}' twice")));
        }
        out.push((name, dir));
    }
    Ok(out)
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn say(mp: &MultiProgress, msg: String) {
    if mp.is_hidden() {
        eprintln!("{msg}");
    } else {
        let _ = mp.println(msg);
    }
}

/// Run the benchmark; then write the summary files for the whole results file.
pub fn run_bench(o: &BenchOptions) -> Result<BenchOutcome> {
    if o.max_frames_in_mem == 0 {
        return Err(invalid("--max-frames-in-mem must be at least 1"));
    }
    let models = resolve_models(&o.models, &o.models_root)?;
    let ds = Dataset::open(&o.dataset, o.format)?;
    let names = dataset::select_videos(&ds.videos, o.videos.as_deref(), o.shard, o.limit_videos)?;
    if names.is_empty() {
        return Err(invalid("no video selected (check --videos, --shard and --limit-videos)"));
    }
    let mut videos = Vec::with_capacity(names.len());
    for n in &names {
        videos.push(ds.video(n)?);
    }
    if let Some(dir) = o.results.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create folder", e))?;
    }
    let (existing, torn) = results::read_lines(&o.results, true)?;
    let mp = MultiProgress::with_draw_target(if o.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    if torn > 0 {
        say(&mp, format!("bench: cut a partial last line ({torn} bytes) off '{}'", o.results.display()));
    }
    let setting = o.setting();
    let done: BTreeSet<results::Key> = results::effective_videos(&existing)
        .into_iter()
        .filter(|r| r.ok() || !o.retry_failed)
        .map(|r| (r.run.model.clone(), r.run.setting.clone(), r.video.clone()))
        .collect();
    let cfg = RunConfig {
        backend: o.backend,
        precision: o.precision,
        threads: o.threads,
        prompt: o.prompt,
        max_frames_in_mem: o.max_frames_in_mem,
        // opening the device costs a context: only when TensorRT may run
        device_baseline_mb: if o.backend == BackendPref::Ort { None } else { timing::DeviceProbe::open().used_mb() },
    };
    let pred_base = o.pred_dir.clone().unwrap_or_else(|| sibling(&o.results, "pred"));
    let warm_size = (videos[0].width, videos[0].height);
    let mut out = BenchOutcome::default();
    for (mi, (name, dir)) in models.iter().enumerate() {
        let todo: Vec<&dataset::Video> =
            videos.iter().filter(|v| !done.contains(&(name.clone(), setting.clone(), v.name.clone()))).collect();
        out.videos_skipped += videos.len() - todo.len();
        if todo.is_empty() && !o.skip_inference {
            say(&mp, format!("bench: {name}: all {} video(s) already in '{}'", videos.len(), o.results.display()));
            continue;
        }
        say(&mp, format!("bench: [{}/{}] loading {name} from '{}'", mi + 1, models.len(), dir.display()));
        let mut lm: LoadedModel = match run::load_model(name, &setting, dir, &cfg) {
            Ok(m) => m,
            Err(e) => {
                let info = results::RunInfo {
                    model: name.clone(),
                    setting: setting.clone(),
                    model_dir: dir.display().to_string(),
                    weights: String::new(),
                    backends: Default::default(),
                    host: run::host_name(),
                    tamrt_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                let rec = warmup::load_failure(info, &e);
                out.failures.push(format!("{name}: {}", rec.error.clone().unwrap_or_default()));
                results::append_line(&o.results, &Line::Warmup(Box::new(rec)))?;
                continue;
            }
        };
        for w in &lm.warnings {
            say(&mp, format!("bench: {name}: warning: {w}"));
        }
        let wrec: WarmupRecord = warmup::warmup(&mut lm, &cfg, warm_size, o.warmup);
        if !wrec.ok() {
            out.failures.push(format!("{name}: warm-up {}: {}", wrec.status, wrec.error.clone().unwrap_or_default()));
            say(&mp, format!("bench: {name}: WARM-UP FAILURE: {}", wrec.error.clone().unwrap_or_default()));
        } else if wrec.mask_empty {
            say(&mp, format!("bench: {name}: note: the warm-up mask is empty ({})", lm.info.weights));
        }
        results::append_line(&o.results, &Line::Warmup(Box::new(wrec)))?;
        if o.skip_inference {
            continue;
        }
        let vbar = mp.add(ProgressBar::new(todo.len() as u64));
        vbar.set_style(bar_style("{prefix:.bold} [{bar:30}] {pos}/{len} videos {elapsed_precise} eta {eta}"));
        vbar.set_prefix(name.clone());
        let fbar = mp.add(ProgressBar::new(0));
        fbar.set_style(bar_style("  {msg} [{bar:30}] {pos}/{len} frames {per_sec}"));
        let proot = run::pred_root(&pred_base, name, &setting);
        for v in todo {
            fbar.set_message(v.name.clone());
            let job = VideoJob { dataset: &ds, video: v, pred_root: &proot, progress: Some(fbar.clone()) };
            let rec = run::run_video(&mut lm, &cfg, &job);
            let fps = if rec.total_ms > 0.0 { rec.frames as f64 / (rec.total_ms / 1e3) } else { 0.0 };
            let line = match (&rec.error, rec.jf) {
                (Some(e), _) => format!("bench: {name} {}: FAILED: {e}", v.name),
                (None, jf) => format!(
                    "bench: {name} {}: {} frames, {} object(s), {fps:.2} FPS, J&F {}",
                    v.name,
                    rec.frames,
                    rec.objects,
                    jf.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
                ),
            };
            say(&mp, line);
            if !rec.ok() {
                out.failures.push(format!("{name} {}: {}", v.name, rec.error.clone().unwrap_or_default()));
            }
            results::append_line(&o.results, &Line::Video(Box::new(rec)))?;
            out.videos_run += 1;
            vbar.inc(1);
        }
        fbar.finish_and_clear();
        vbar.finish_and_clear();
    }
    let (text, files) = write_reports(&o.results, o.mem_budget_mb)?;
    out.summary_text = text;
    out.files = files;
    Ok(out)
}

/// Summaries of a results file: returns the text table and writes Markdown, CSV and the
/// two SVG plots next to it.
pub fn write_reports(results_path: &Path, budget: Option<f64>) -> Result<(String, Vec<PathBuf>)> {
    let (lines, _) = results::read_lines(results_path, false)?;
    let rows = report::summarize(&lines);
    let text = report::text_table(&rows, budget);
    let files = vec![
        (sibling(results_path, "summary.md"), report::markdown(&lines, &rows, budget)),
        (sibling(results_path, "summary.csv"), report::csv(&rows)),
        (sibling(results_path, "stages.svg"), plot::stages_svg(&rows)),
        (sibling(results_path, "jf.svg"), plot::jf_svg(&lines, &rows)),
    ];
    let mut paths = Vec::new();
    for (p, body) in files {
        crate::eval::write_atomic(&p, body.as_bytes())?;
        paths.push(p);
    }
    Ok((text, paths))
}

/// `tamrt bench merge`: join shard files into `out` (and write its summaries).
pub fn merge_files(inputs: &[PathBuf], out: &Path) -> Result<(usize, String)> {
    if inputs.is_empty() {
        return Err(invalid("merge: give at least one results file"));
    }
    let mut all = Vec::new();
    for p in inputs {
        if !p.is_file() {
            return Err(invalid(format!("merge: results file '{}' not found", p.display())));
        }
        let (lines, torn) = results::read_lines(p, false)?;
        if torn > 0 {
            tracing::warn!("'{}' ends with a partial line ({torn} bytes), ignored", p.display());
        }
        all.push((p.display().to_string(), lines));
    }
    let merged = results::merge(&all)?;
    results::write_lines(out, &merged)?;
    let n = merged.iter().filter(|l| matches!(l, Line::Video(_))).count();
    let (text, _) = write_reports(out, None)?;
    Ok((n, text))
}

/// `tamrt bench compare`: Markdown of two results files side by side.
pub fn compare_files(a: &Path, b: &Path) -> Result<String> {
    let read = |p: &Path| -> Result<Vec<report::Summary>> {
        if !p.is_file() {
            return Err(invalid(format!("compare: results file '{}' not found", p.display())));
        }
        Ok(report::summarize(&results::read_lines(p, false)?.0))
    };
    Ok(report::compare(&a.display().to_string(), &read(a)?, &b.display().to_string(), &read(b)?))
}
