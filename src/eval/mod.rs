//! `tamrt eval`: J, F and J&F of predicted masks against ground truth, with the numbers
//! of the official evaluators:
//!
//! * [`Format::Sav`]: `sav_dataset/sav_evaluator.py` (SA-V layout
//!   `{root}/{video}/{obj}/{frame}.png`, one binary PNG per object and frame). Per object:
//!   frames of the ground-truth folder in sorted order, the first and last skipped unless
//!   `keep_first_last`; a frame counts once the object was seen (in the ground truth or the
//!   prediction) in it or an earlier scored frame; J and F are means over the counted
//!   frames, ×100. Global J / F: means over all objects; J&F: their mean.
//! * [`Format::Davis`]: davis2017-evaluation, semi-supervised task (layout
//!   `{root}/{video}/{frame}.png`, palette indices = object ids, 255 = void). Objects are
//!   `1..=max label of the first frame`; per object J/F mean, recall and decay
//!   (`db_statistics`) over the frames without the first and last.
//!
//! Bad input is an [`Error`] that names the video, object and frame. A prediction missing
//! for a scored frame fails with `strict`; otherwise that frame scores J = F = 0 and is
//! counted in [`EvalReport::missing_frames`]. Work is spread over threads by object (SA-V)
//! or video (DAVIS); results do not depend on the thread count.

mod davis;
mod deflate;
mod inflate;
pub mod masks;
mod pack;
pub mod png;
mod report;
mod sav;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

pub use report::{np_mean, write_atomic};

use crate::error::{Error, ErrorKind, Result};

/// Dataset layout / official evaluator to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Sav,
    Davis,
}

impl Format {
    pub fn from_name(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "sav" | "sa-v" => Ok(Format::Sav),
            "davis" => Ok(Format::Davis),
            _ => Err(invalid(format!("unknown eval format '{s}' (expected sav or davis)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Sav => "sav",
            Format::Davis => "davis",
        }
    }
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub pred: PathBuf,
    pub gt: PathBuf,
    /// `None`: detect from the ground-truth layout.
    pub format: Option<Format>,
    pub keep_first_last: bool,
    pub strict: bool,
    /// Worker threads; 0 = available parallelism.
    pub threads: usize,
}

impl EvalOptions {
    pub fn new(pred: impl Into<PathBuf>, gt: impl Into<PathBuf>) -> Self {
        EvalOptions {
            pred: pred.into(),
            gt: gt.into(),
            format: None,
            keep_first_last: false,
            strict: false,
            threads: 0,
        }
    }
}

/// DAVIS's extra per-object statistics (percent).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DavisStats {
    pub j_recall: f64,
    pub j_decay: f64,
    pub f_recall: f64,
    pub f_decay: f64,
}

/// Scores of one object, in percent.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectScore {
    pub video: String,
    /// SA-V: the object folder's name ("000"); DAVIS: the label ("1").
    pub obj: String,
    pub j: f64,
    pub f: f64,
    /// Frames that entered the means.
    pub frames: usize,
    pub davis: Option<DavisStats>,
}

impl ObjectScore {
    pub fn jf(&self) -> f64 {
        (self.j + self.f) / 2.0
    }

    /// The object's number (folder name or label), when it is one.
    pub fn obj_id(&self) -> Option<u64> {
        self.obj.parse().ok()
    }
}

#[derive(Clone, Debug)]
pub struct EvalReport {
    pub format: Format,
    pub objects: Vec<ObjectScore>,
    pub j: f64,
    pub f: f64,
    pub jf: f64,
    /// DAVIS: means of the per-object recall and decay.
    pub davis: Option<DavisStats>,
    pub videos: usize,
    /// Scored frames without a prediction (scored 0); at most 20 of them in `missing_examples`.
    pub missing_frames: usize,
    pub missing_examples: Vec<String>,
    /// Prediction videos that have no ground truth (ignored).
    pub extra_pred_videos: Vec<String>,
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Sorted names of the entries of `dir`; `dirs`: only subdirectories (`Some(true)`), only
/// files (`Some(false)`) or all.
pub(crate) fn list_dir(dir: &Path, dirs: Option<bool>) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list folder", e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, "cannot list folder", e))?;
        let name = ent
            .file_name()
            .into_string()
            .map_err(|n| invalid(format!("non-UTF-8 name {n:?} in '{}'", dir.display())))?;
        if let Some(want_dir) = dirs {
            // Follow symlinks, as os.path.isdir does.
            if ent.path().is_dir() != want_dir {
                continue;
            }
        }
        out.push(name);
    }
    // Python sorts str by code point, which is UTF-8 byte order.
    out.sort();
    Ok(out)
}

/// A worker's reusable buffers.
pub(crate) struct Worker {
    pub dec: png::Decoder,
    pub file: Vec<u8>,
    pub disk: Option<masks::Disk>,
}

impl Worker {
    fn new() -> Self {
        Worker { dec: png::Decoder::default(), file: Vec::new(), disk: None }
    }

    /// The tolerance disk for this frame size (cached across frames).
    pub fn disk(&mut self, w: usize, h: usize) -> masks::Disk {
        let want = masks::Disk::radius_for(w, h);
        match &self.disk {
            Some(d) if d.radius == want => d.clone(),
            _ => self.disk.insert(masks::Disk::new(want)).clone(),
        }
    }
}

/// Missing-prediction bookkeeping of one job.
#[derive(Default)]
pub(crate) struct Missing {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Missing {
    pub fn add(&mut self, strict: bool, what: String) -> Result<()> {
        if strict {
            return Err(invalid(format!("{what}: prediction missing (--strict)")));
        }
        self.count += 1;
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
        Ok(())
    }
}

/// Run `f` over `jobs` on `threads` threads, results in job order; the first error (in
/// job order among those that failed) wins and stops the others early.
pub(crate) fn run_jobs<J: Sync, T: Send>(
    jobs: &[J],
    threads: usize,
    f: impl Fn(&mut Worker, &J) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let threads = threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut w = Worker::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = f(&mut w, &jobs[i]);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut g) = slots.lock() {
                        g[i] = Some(r);
                    }
                }
            });
        }
    });
    let slots = slots.into_inner().map_err(|_| invalid("an evaluation thread panicked"))?;
    let mut out = Vec::with_capacity(jobs.len());
    let mut first_err = None;
    for r in slots {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.len() == jobs.len() => Ok(out),
        None => Err(invalid("an evaluation thread stopped early")),
    }
}

fn layout_help() -> &'static str {
    "expected SA-V layout {root}/{video}/{obj_id}/{frame}.png or DAVIS layout {root}/{video}/{frame}.png"
}

/// Decide the layout from the ground truth: DAVIS when every video folder holds only
/// `.png` files, SA-V when every one holds only folders.
fn detect_format(gt: &Path, videos: &[String]) -> Result<Format> {
    let (mut davis, mut sav) = (None, None);
    for v in videos {
        let entries = list_dir(&gt.join(v), None)?;
        if entries.is_empty() {
            return Err(invalid(format!("video '{v}' in '{}' has no annotations (empty folder)", gt.display())));
        }
        if entries.iter().all(|e| e.ends_with(".png") && !gt.join(v).join(e).is_dir()) {
            davis.get_or_insert(v);
        } else if entries.iter().all(|e| gt.join(v).join(e).is_dir()) {
            sav.get_or_insert(v);
        } else {
            return Err(invalid(format!(
                "video folder '{}' mixes files and folders; {}",
                gt.join(v).display(),
                layout_help()
            )));
        }
    }
    match (sav, davis) {
        (Some(s), Some(d)) => Err(invalid(format!(
            "ground truth mixes layouts: '{s}' has object folders (SA-V) but '{d}' has PNG frames (DAVIS); {}",
            layout_help()
        ))),
        (Some(_), None) => Ok(Format::Sav),
        _ => Ok(Format::Davis),
    }
}

/// Evaluate a prediction folder against a ground-truth folder.
pub fn evaluate(opts: &EvalOptions) -> Result<EvalReport> {
    for (what, p) in [("ground-truth", &opts.gt), ("prediction", &opts.pred)] {
        if !p.is_dir() {
            return Err(invalid(format!("{what} folder '{}' not found (or not a folder)", p.display())));
        }
    }
    let videos = list_dir(&opts.gt, Some(true))?;
    if videos.is_empty() {
        return Err(invalid(format!(
            "no video folders in ground-truth folder '{}'; {}",
            opts.gt.display(),
            layout_help()
        )));
    }
    if videos.iter().any(|v| v == "Annotations") && videos.iter().any(|v| v == "JPEGImages" || v == "ImageSets") {
        return Err(invalid(format!(
            "'{}' looks like a DAVIS root: pass its annotation folder, e.g. --gt {}",
            opts.gt.display(),
            opts.gt.join("Annotations").join("480p").display()
        )));
    }
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(&opts.gt, &videos)?,
    };
    let pred_videos = list_dir(&opts.pred, Some(true))?;
    let extra: Vec<String> = pred_videos.iter().filter(|v| videos.binary_search(v).is_err()).cloned().collect();
    if opts.strict && !extra.is_empty() {
        return Err(invalid(format!(
            "--strict: prediction videos without ground truth in '{}': {}",
            opts.gt.display(),
            extra.join(", ")
        )));
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        opts.threads
    };
    let mut report = match format {
        Format::Sav => sav::evaluate(opts, &videos, threads)?,
        Format::Davis => davis::evaluate(opts, &videos, threads)?,
    };
    report.extra_pred_videos = extra;
    Ok(report)
}

pub use report::{csv_string, json_string, text_tables};
