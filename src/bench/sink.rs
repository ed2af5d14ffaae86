//! The benchmark's [`TrackSink`]: times every frame (its own work excluded), splits the
//! time by stage from the [`StageClock`], checks the masks (present, right size, finite,
//! empty or not) and writes the predictions the evaluator reads: SA-V
//! `PRED/{video}/{obj:03}/{frame}.png` on annotated frames only, DAVIS
//! `PRED/{video}/{frame}.png` (palette indices = object ids; where objects overlap the
//! lower id wins, as `put_per_obj_mask` of sam2's `vos_inference.py`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::dataset::Video;
use super::results::StageMs;
use super::timing::{StageAcc, StageClock};
use crate::error::{Error, Result};
use crate::eval::Format;
use crate::tracker::{ObjectLogits, TrackSink};

pub struct BenchSink<'v> {
    format: Format,
    video: &'v Video,
    /// `PRED/{video}`
    pred_dir: PathBuf,
    obj_names: BTreeMap<u32, String>,
    clock: StageClock,
    last_acc: StageAcc,
    t_start: Instant,
    last_exit: Option<Instant>,
    /// Time spent in this sink (excluded from the latencies).
    pub own: Duration,
    pub first_ms: Option<f64>,
    pub first_stages: StageMs,
    pub frame_ms: Vec<f64>,
    pub stage_sum: [f64; 5],
    pub frames: usize,
    pub masks: usize,
    pub empty: usize,
    pub nonfinite: usize,
    pub bad_size: usize,
    pub objects_seen: BTreeSet<u32>,
    pub files: usize,
    progress: Option<ProgressBar>,
}

impl<'v> BenchSink<'v> {
    /// `t_start`: when the prompts started (the first frame's latency counts from it);
    /// the clock must have been reset then.
    pub fn new(
        format: Format,
        video: &'v Video,
        pred_dir: PathBuf,
        clock: StageClock,
        t_start: Instant,
        progress: Option<ProgressBar>,
    ) -> BenchSink<'v> {
        let obj_names = video.objects.iter().map(|o| (o.id, o.name.clone())).collect();
        BenchSink {
            format,
            video,
            pred_dir,
            obj_names,
            last_acc: clock.snapshot(),
            clock,
            t_start,
            last_exit: None,
            own: Duration::ZERO,
            first_ms: None,
            first_stages: StageMs::default(),
            frame_ms: Vec::new(),
            stage_sum: [0.0; 5],
            frames: 0,
            masks: 0,
            empty: 0,
            nonfinite: 0,
            bad_size: 0,
            objects_seen: BTreeSet::new(),
            files: 0,
            progress,
        }
    }

    fn write(&mut self, name: &str, objects: &[ObjectLogits]) -> Result<()> {
        let (w, h) = (self.video.width, self.video.height);
        match self.format {
            Format::Sav => {
                if !self.video.annotated.contains(name) {
                    return Ok(());
                }
                for o in objects.iter().filter(|o| o.logits.len() == w * h) {
                    let Some(obj) = self.obj_names.get(&o.obj_id) else { continue };
                    let dir = self.pred_dir.join(obj);
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "cannot create folder", e))?;
                    let png = crate::tracker::output::encode_mask_png(&o.mask, w, h)?;
                    let p = dir.join(format!("{name}.png"));
                    std::fs::write(&p, png).map_err(|e| Error::io(&p, "cannot write prediction", e))?;
                    self.files += 1;
                }
            }
            Format::Davis => {
                let mut label = vec![0u8; w * h];
                let mut objs: Vec<&ObjectLogits> = objects.iter().filter(|o| o.logits.len() == w * h).collect();
                objs.sort_by_key(|o| std::cmp::Reverse(o.obj_id));
                for o in objs {
                    let id = o.obj_id.min(254) as u8;
                    for (l, &v) in label.iter_mut().zip(&o.mask) {
                        if v > 0 {
                            *l = id;
                        }
                    }
                }
                std::fs::create_dir_all(&self.pred_dir)
                    .map_err(|e| Error::io(&self.pred_dir, "cannot create folder", e))?;
                crate::eval::png::write_indexed(&self.pred_dir.join(format!("{name}.png")), w, h, &label)?;
                self.files += 1;
            }
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl TrackSink for BenchSink<'_> {
    fn frame(&mut self, _frame: usize, name: &str, objects: &[ObjectLogits]) -> Result<()> {
        let enter = Instant::now();
        let lat = ms(enter - self.last_exit.unwrap_or(self.t_start));
        let acc = self.clock.snapshot();
        let d = acc.since(&self.last_acc);
        self.last_acc = acc;
        let mut st = [ms(d.time[0]), ms(d.time[1]), ms(d.time[2]), ms(d.time[3]), 0.0];
        st[4] = (lat - st[..4].iter().sum::<f64>()).max(0.0);
        if self.first_ms.is_none() {
            self.first_ms = Some(lat);
            self.first_stages = StageMs::from_values(st);
        } else {
            self.frame_ms.push(lat);
            for (a, b) in self.stage_sum.iter_mut().zip(st) {
                *a += b;
            }
        }
        self.frames += 1;
        let (w, h) = (self.video.width, self.video.height);
        for o in objects {
            self.masks += 1;
            self.objects_seen.insert(o.obj_id);
            if o.logits.len() != w * h || (o.width, o.height) != (w, h) {
                self.bad_size += 1;
                continue;
            }
            if o.logits.iter().any(|v| !v.is_finite()) {
                self.nonfinite += 1;
            }
            if !o.logits.iter().any(|&v| v > 0.0) {
                self.empty += 1;
            }
        }
        let r = self.write(name, objects);
        if let Some(pb) = &self.progress {
            pb.inc(1);
        }
        let exit = Instant::now();
        self.own += exit - enter;
        self.last_exit = Some(exit);
        r
    }
}
