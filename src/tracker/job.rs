//! `tamrt track` as a library call: validate every input before any output is written,
//! then track and write masks as frames complete.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};

use super::frames::{FrameDir, FrameSource};
use super::models::TrackerModels;
use super::output::{MaskWriter, ObjectLogits, TrackSink};
use super::prompts::read_prompt_file;
use super::propagate::TrackReport;
use super::{Tracker, TrackerOptions};

/// Everything `tamrt track` takes.
#[derive(Debug, Clone)]
pub struct TrackJob {
    pub model_dir: PathBuf,
    pub frames: PathBuf,
    pub prompts: PathBuf,
    pub out: PathBuf,
    /// Track backwards from the last prompted frame (or `start_frame`).
    pub reverse: bool,
    /// First frame to track from (default: the earliest prompted frame forward, the
    /// last prompted frame in reverse).
    pub start_frame: Option<usize>,
    pub save_logits: bool,
    pub options: TrackerOptions,
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct TrackSummary {
    pub report: TrackReport,
    pub num_frames: usize,
    pub objects: Vec<u32>,
    pub files_written: usize,
    pub setup_seconds: f64,
    pub prompt_seconds: f64,
}

impl TrackSummary {
    /// A human-readable report: per-frame time and per-stage times.
    pub fn text(&self) -> String {
        let r = &self.report;
        let t = &r.times;
        let nf = r.frames.len().max(1) as f64;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let mut s = format!(
            "tracked {} object(s) over {} of {} frames; {} files written\n",
            self.objects.len(),
            r.frames.len(),
            self.num_frames,
            self.files_written
        );
        s.push_str(&format!(
            "setup {:.2} s, prompts {:.2} s, propagation {:.2} s ({:.1} ms/frame)\n",
            self.setup_seconds,
            self.prompt_seconds,
            r.propagate_time.as_secs_f64(),
            r.propagate_time.as_secs_f64() * 1e3 / nf
        ));
        s.push_str(&format!(
            "propagation stages: image_encoder {:.1} ms x{}, memory_attention {:.1} ms x{}, prompt_decoder {:.1} ms x{}, memory_encoder {:.1} ms x{}, host {:.1} ms, frame wait {:.1} ms\n",
            ms(t.image_encoder),
            t.image_encoder_calls,
            ms(t.memory_attention),
            t.memory_attention_calls,
            ms(t.prompt_decoder),
            t.prompt_decoder_calls,
            ms(t.memory_encoder),
            t.memory_encoder_calls,
            ms(t.host),
            ms(t.frame_wait),
        ));
        s.push_str(&format!("memory bank on {}, frame pre/post-processing on {}\n", r.memory_bank, r.frame_ops));
        s.push_str(&format!("peak memory bank {:.1} MB", r.peak_bank_bytes as f64 / 1e6));
        if let Some(kb) = peak_rss_kb() {
            s.push_str(&format!(", peak RSS {:.1} MB", kb as f64 / 1024.0));
        }
        s
    }
}

/// Run a job. Inputs are all checked (frames folder and every frame header, prompts,
/// masks, model dir) before `out` is touched; a failure on frame k keeps the masks of
/// the frames before it and names frame k.
pub fn run_track_job(job: &TrackJob, backend: &dyn Backend) -> Result<TrackSummary> {
    let t0 = Instant::now();
    let video = FrameDir::open(&job.frames)?;
    let (w, h) = video.size();
    let prompts = read_prompt_file(&job.prompts, video.len(), w, h)?;
    if let Some(s) = job.start_frame {
        if s >= video.len() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("start frame {s} is beyond the video ({} frames)", video.len()),
            ));
        }
    }
    let mut models = TrackerModels::load(backend, &job.model_dir)?;
    if job.out.exists() && !job.out.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("output '{}' exists and is not a folder", job.out.display()),
        ));
    }
    let setup_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut tracker = Tracker::new(&mut models, &video, job.options.clone())?;
    for p in &prompts {
        tracker.add_prompt(p)?;
    }
    let prompt_seconds = t1.elapsed().as_secs_f64();
    let objects = tracker.object_ids();
    let start = job.start_frame.or_else(|| if job.reverse { prompts.iter().map(|p| p.frame).max() } else { None });
    std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, "cannot create output folder", e))?;
    let mut writer = MaskWriter::new(&job.out, job.save_logits);
    let mut progress = Progress::new(&mut writer);
    let res = tracker.propagate(start, job.reverse, &mut progress);
    progress.bar.finish_and_clear();
    let report = res.map_err(|e| e.context(format!("{} files written to '{}'", writer.written, job.out.display())))?;
    Ok(TrackSummary {
        report,
        num_frames: video.len(),
        objects,
        files_written: writer.written,
        setup_seconds,
        prompt_seconds,
    })
}

/// A progress bar on stderr (drawn only on a terminal) around the mask writer.
struct Progress<'a> {
    inner: &'a mut MaskWriter,
    bar: ProgressBar,
}

impl<'a> Progress<'a> {
    fn new(inner: &'a mut MaskWriter) -> Progress<'a> {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("tracking {bar:30} {pos}/{len} frames, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { inner, bar }
    }
}

impl TrackSink for Progress<'_> {
    fn begin(&mut self, frames: usize) {
        self.bar.set_length(frames as u64);
    }

    fn wants_logits(&self) -> bool {
        self.inner.wants_logits()
    }

    fn frame(&mut self, frame: usize, name: &str, objects: &[ObjectLogits]) -> Result<()> {
        self.inner.frame(frame, name, objects)?;
        self.bar.inc(1);
        Ok(())
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in KiB.
pub fn peak_rss_kb() -> Option<u64> {
    proc_status_kb("VmHWM:")
}

/// Current resident set size of this process (Linux `VmRSS`), in KiB.
pub fn rss_kb() -> Option<u64> {
    proc_status_kb("VmRSS:")
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
