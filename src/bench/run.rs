//! Running one model: loading (per-component backend choice, timed sessions), the
//! warm-up, and one video from prompts to scores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::dataset::{Dataset, Video};
use super::prompts::{make_prompt, PromptMode};
use super::results::{MemRecord, ObjScore, RunInfo, StageMs, VideoRecord};
use super::sink::BenchSink;
use super::timing::{self, MemSampler, StageClock, TimedSession, STAGES};
use crate::backend::select::{load_components, BackendPref};
use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::export::Component;
use crate::manifest::{Manifest, WeightOrigin};
use crate::tracker::{FrameDir, FrameSource, Tracker, TrackerModels, TrackerOptions};
use crate::trt::engine_cache::Precision;

/// How to load and run the models (shared by every model of a run).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub backend: BackendPref,
    pub precision: Precision,
    pub threads: usize,
    pub prompt: PromptMode,
    pub max_frames_in_mem: usize,
    pub device_baseline_mb: Option<f64>,
}

/// A loaded model with its stage clock.
pub struct LoadedModel {
    pub models: TrackerModels,
    pub clock: StageClock,
    pub info: RunInfo,
    pub load_ms: f64,
    /// Some component runs on TensorRT (device memory is then sampled).
    pub on_device: bool,
    pub warnings: Vec<String>,
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn weights_text(m: &Manifest) -> String {
    match &m.weights {
        WeightOrigin::Checkpoint { file, .. } => format!("checkpoint {file}"),
        WeightOrigin::RandomWeights { seed, .. } => format!("random (seed {seed})"),
    }
}

#[cfg(feature = "ort")]
fn fallback_backend(threads: usize) -> Box<dyn Backend> {
    Box::new(crate::backend::ort::OrtBackend { threads })
}

#[cfg(not(feature = "ort"))]
fn fallback_backend(_threads: usize) -> Box<dyn Backend> {
    struct NoOrt;
    impl Backend for NoOrt {
        fn name(&self) -> &str {
            "none"
        }
        fn load(&self, _dir: &Path, _c: Component) -> Result<Box<dyn crate::backend::ComponentSession>> {
            Err(Error::new(ErrorKind::Backend, "this build has no ONNX Runtime backend (feature `ort`)"))
        }
    }
    Box::new(NoOrt)
}

/// TensorRT when compiled in and wanted: (backend, why not).
fn accel_backend(cfg: &RunConfig) -> (Option<Box<dyn Backend>>, Option<String>) {
    if cfg.backend == BackendPref::Ort {
        return (None, None);
    }
    #[cfg(feature = "cuda")]
    {
        match crate::trt::TrtBackend::new(cfg.precision) {
            Ok(b) => (Some(Box::new(b)), None),
            Err(e) => (None, Some(e.to_string())),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        (None, Some("this build has no TensorRT backend (build with --features tensorrt)".into()))
    }
}

/// Load the four graphs of `dir` (timed sessions) for `model` under `setting`.
pub fn load_model(model: &str, setting: &str, dir: &Path, cfg: &RunConfig) -> Result<LoadedModel> {
    let t0 = Instant::now();
    let manifest = Manifest::read(dir)?;
    let fallback = fallback_backend(cfg.threads);
    let (accel, why) = accel_backend(cfg);
    let (sessions, choices) = load_components(cfg.backend, dir, accel.as_deref(), why.as_deref(), fallback.as_ref())?;
    let on_trt: Vec<&str> = choices.iter().filter(|c| c.backend == "tensorrt").map(|c| c.component.name()).collect();
    let mut warnings = Vec::new();
    if cfg.backend == BackendPref::Trt && on_trt.is_empty() {
        return Err(Error::new(
            ErrorKind::Backend,
            format!("--backend trt: no component runs on TensorRT ({})", choices[0].reason),
        ));
    }
    if cfg.precision != Precision::Fp32 {
        if on_trt.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--precision {} needs TensorRT, which is unavailable ({}); ONNX Runtime runs fp32 (use --precision fp32)",
                    cfg.precision.name(),
                    choices[0].reason
                ),
            ));
        }
        for c in choices.iter().filter(|c| c.backend != "tensorrt") {
            warnings.push(format!("{} runs fp32 on {} ({})", c.component.name(), c.backend, c.reason));
        }
    }
    let clock = StageClock::default();
    let mut by: BTreeMap<&str, Box<dyn crate::backend::ComponentSession>> = BTreeMap::new();
    for (c, s) in sessions {
        by.insert(c.name(), TimedSession::wrap(s, c, &clock));
    }
    let mut take = |c: Component| {
        by.remove(c.name()).ok_or_else(|| Error::new(ErrorKind::Backend, format!("{} was not loaded", c.name())))
    };
    let sessions = [
        take(Component::ImageEncoder)?,
        take(Component::PromptDecoder)?,
        take(Component::MemoryEncoder)?,
        take(Component::MemoryAttention)?,
    ];
    let backends = choices
        .iter()
        .map(|c| {
            let p = if c.backend == "tensorrt" { cfg.precision.name() } else { "fp32" };
            (c.component.name().to_string(), format!("{} {p}", c.backend))
        })
        .collect();
    let info = RunInfo {
        model: model.to_string(),
        setting: setting.to_string(),
        model_dir: dir.display().to_string(),
        weights: weights_text(&manifest),
        backends,
        host: host_name(),
        tamrt_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let models = TrackerModels::from_sessions(manifest, sessions)?;
    Ok(LoadedModel {
        models,
        clock,
        info,
        load_ms: round_us(ms(t0.elapsed())),
        on_device: !on_trt.is_empty(),
        warnings,
    })
}

/// Run `f`, turning a panic into an error (a bug in one run must not lose the others).
pub(super) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(ErrorKind::Backend, format!("panicked: {msg}")))
        }
    }
}

/// Everything one video run needs besides the model.
pub struct VideoJob<'a> {
    pub dataset: &'a Dataset,
    pub video: &'a Video,
    /// `PRED` root of this (model, setting): predictions go to `PRED/{video}`.
    pub pred_root: &'a Path,
    pub progress: Option<ProgressBar>,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds rounded to the microsecond (records stay short).
pub(super) fn round_us(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Track one video from its first annotations and score it; never fails: a problem
/// makes a record with status "failed" and the error.
pub fn run_video(lm: &mut LoadedModel, cfg: &RunConfig, job: &VideoJob) -> VideoRecord {
    let v = job.video;
    let mut rec = VideoRecord {
        run: lm.info.clone(),
        format: job.dataset.format.name().to_string(),
        video: v.name.clone(),
        status: "failed".into(),
        error: None,
        warnings: lm.warnings.clone(),
        width: v.width,
        height: v.height,
        num_frames: v.frame_stems.len(),
        frames: 0,
        objects: 0,
        masks: 0,
        empty_masks: 0,
        nonfinite_masks: 0,
        first_frame_ms: 0.0,
        first_frame_stages: StageMs::default(),
        frame_ms: Vec::new(),
        stages: StageMs::default(),
        calls: BTreeMap::new(),
        total_ms: 0.0,
        mem: MemRecord::default(),
        peak_bank_mb: 0.0,
        j: None,
        f: None,
        jf: None,
        object_scores: Vec::new(),
        missing_frames: 0,
        finished_unix: 0,
    };
    if let Err(e) = guarded(|| track_and_score(lm, cfg, job, &mut rec)) {
        rec.status = "failed".into();
        rec.error = Some(e.to_string());
    }
    rec.finished_unix = unix_now();
    rec
}

fn track_and_score(lm: &mut LoadedModel, cfg: &RunConfig, job: &VideoJob, rec: &mut VideoRecord) -> Result<()> {
    let v = job.video;
    let frames = FrameDir::open(&v.frames_dir)?;
    if frames.size() != (v.width, v.height) || frames.len() != v.frame_stems.len() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("video '{}' changed on disk while running", v.name)));
    }
    let mut prompts = Vec::new();
    for o in &v.objects {
        match v.first_mask(o)? {
            Some((frame, mask)) => prompts.push(make_prompt(cfg.prompt, frame, o.id, v.width, v.height, &mask)?),
            None => rec.warnings.push(format!("object {} is empty in every annotation: not prompted", o.name)),
        }
    }
    if prompts.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("video '{}' has no object visible in its annotations", v.name),
        ));
    }
    rec.objects = prompts.len();
    let pred_dir = job.pred_root.join(&v.name);
    if pred_dir.exists() {
        std::fs::remove_dir_all(&pred_dir).map_err(|e| Error::io(&pred_dir, "cannot clear old predictions", e))?;
    }
    std::fs::create_dir_all(&pred_dir).map_err(|e| Error::io(&pred_dir, "cannot create folder", e))?;
    if let Some(pb) = &job.progress {
        pb.set_length(frames.len() as u64);
        pb.set_position(0);
    }
    let rss_reset = timing::reset_peak_rss();
    let sampler = MemSampler::start(Duration::from_millis(20), lm.on_device);
    lm.clock.reset();
    lm.models.times = Default::default();
    let opts = TrackerOptions { max_frames_in_mem: cfg.max_frames_in_mem, ..Default::default() };
    let t0 = Instant::now();
    let mut sink = BenchSink::new(job.dataset.format, v, pred_dir.clone(), lm.clock.clone(), t0, job.progress.clone());
    let res = (|| {
        let mut tr = Tracker::new(&mut lm.models, &frames, opts)?;
        for p in &prompts {
            tr.add_prompt(p)?;
        }
        tr.propagate(None, false, &mut sink)
    })();
    let elapsed = t0.elapsed();
    let peaks = sampler.finish();
    rec.total_ms = round_us(ms(elapsed.saturating_sub(sink.own)));
    rec.mem = MemRecord {
        peak_rss_mb: timing::peak_rss_mb(),
        rss_scope: if rss_reset { "run" } else { "process" }.into(),
        system_used_peak_mb: peaks.system_used_mb,
        jetson: timing::is_jetson(),
        device_used_peak_mb: peaks.device_used_mb,
        device_used_baseline_mb: cfg.device_baseline_mb,
    };
    let acc = lm.clock.snapshot();
    rec.calls = STAGES.iter().take(4).zip(acc.calls).map(|(s, c)| (s.to_string(), c)).collect();
    rec.frames = sink.frames;
    rec.masks = sink.masks;
    rec.empty_masks = sink.empty;
    rec.nonfinite_masks = sink.nonfinite;
    rec.first_frame_ms = round_us(sink.first_ms.unwrap_or(0.0));
    rec.first_frame_stages = StageMs::from_values(sink.first_stages.values().map(round_us));
    rec.frame_ms = sink.frame_ms.iter().map(|&x| round_us(x)).collect();
    rec.stages = StageMs::from_values(sink.stage_sum.map(round_us));
    let report = res?;
    rec.peak_bank_mb = timing::mib(report.peak_bank_bytes);
    // the failure modes of benchmark scripts that "succeed" with nothing to show
    if sink.masks == 0 {
        return Err(Error::new(ErrorKind::Backend, "the run produced 0 masks"));
    }
    if sink.bad_size > 0 {
        return Err(Error::new(
            ErrorKind::Backend,
            format!("{} mask(s) are not {}x{} (the frame size)", sink.bad_size, v.width, v.height),
        ));
    }
    if sink.objects_seen.len() != prompts.len() {
        rec.warnings.push(format!("{} of {} prompted objects had output", sink.objects_seen.len(), prompts.len()));
    }
    if sink.nonfinite > 0 {
        rec.warnings.push(format!("{} mask(s) have non-finite logits", sink.nonfinite));
    }
    if sink.empty == sink.masks {
        rec.warnings.push("every predicted mask is empty".into());
    }
    if acc.calls[0] == 0 {
        rec.warnings.push("no image encoder call was timed".into());
    }
    score(job, &pred_dir, rec).map_err(|e| e.context("evaluation failed"))?;
    rec.status = "ok".into();
    Ok(())
}

/// J&F of the video with the eval module, on a ground-truth root holding only this
/// video (a link to its annotation folder).
fn score(job: &VideoJob, pred_dir: &Path, rec: &mut VideoRecord) -> Result<()> {
    let v = job.video;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gt_root = std::env::temp_dir().join(format!("tamrt-bench-gt-{}-{seq}", std::process::id()));
    let _ = std::fs::remove_dir_all(&gt_root);
    std::fs::create_dir_all(&gt_root).map_err(|e| Error::io(&gt_root, "cannot create folder", e))?;
    let link = gt_root.join(&v.name);
    let made = link_dir(&v.ann_dir, &link);
    let res = made.and_then(|_| {
        let mut o = crate::eval::EvalOptions::new(pred_dir.parent().unwrap_or(pred_dir), &gt_root);
        o.format = Some(job.dataset.format);
        o.threads = 1;
        crate::eval::evaluate(&o)
    });
    let _ = std::fs::remove_dir_all(&gt_root);
    let r = res?;
    rec.j = Some(r.j);
    rec.f = Some(r.f);
    rec.jf = Some(r.jf);
    rec.missing_frames = r.missing_frames;
    rec.object_scores =
        r.objects.iter().map(|o| ObjScore { obj: o.obj.clone(), j: o.j, f: o.f, frames: o.frames }).collect();
    if r.missing_frames > 0 {
        rec.warnings.push(format!("{} scored frame(s) had no prediction (scored 0)", r.missing_frames));
    }
    Ok(())
}

#[cfg(unix)]
fn link_dir(target: &Path, link: &Path) -> Result<()> {
    let abs = std::fs::canonicalize(target).map_err(|e| Error::io(target, "cannot resolve", e))?;
    std::os::unix::fs::symlink(abs, link).map_err(|e| Error::io(link, "cannot link", e))
}

#[cfg(not(unix))]
fn link_dir(target: &Path, link: &Path) -> Result<()> {
    fn copy(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, "cannot create folder", e))?;
        for ent in std::fs::read_dir(from).map_err(|e| Error::io(from, "cannot list", e))? {
            let p = ent.map_err(|e| Error::io(from, "cannot list", e))?.path();
            let dst = to.join(p.file_name().unwrap_or_default());
            if p.is_dir() {
                copy(&p, &dst)?;
            } else {
                std::fs::copy(&p, &dst).map_err(|e| Error::io(&p, "cannot copy", e))?;
            }
        }
        Ok(())
    }
    copy(target, link)
}

/// `PRED` root of a (model, setting): `ROOT/<model>__<setting>` with unsafe characters
/// replaced.
pub fn pred_root(root: &Path, model: &str, setting: &str) -> PathBuf {
    let clean = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect::<String>()
    };
    root.join(format!("{}__{}", clean(model), clean(setting)))
}
