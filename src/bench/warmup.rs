//! The warm-up before timing: a short tracker run on a dummy clip whose output is
//! checked, so that a model that cannot produce a mask is reported before any video.

use std::time::Instant;

use super::prompts::make_prompt;
use super::results::{MemRecord, RunInfo, WarmupRecord};
use super::run::{guarded, ms, round_us, unix_now, LoadedModel, RunConfig};
use super::timing;
use crate::error::{Error, Result};
use crate::tracker::{CollectSink, FrameSource, RgbFrame, Tracker, TrackerOptions};

/// Frames held in memory (the warm-up clip).
pub struct MemFrames {
    pub frames: Vec<RgbFrame>,
    pub names: Vec<String>,
}

impl FrameSource for MemFrames {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn size(&self) -> (usize, usize) {
        (self.frames[0].width, self.frames[0].height)
    }
    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }
    fn load(&self, index: usize) -> Result<RgbFrame> {
        Ok(self.frames[index].clone())
    }
}

/// The warm-up clip: a bright rectangle on grey that moves a little between two frames,
/// and the rectangle's mask on frame 0.
pub fn dummy_clip(w: usize, h: usize) -> (MemFrames, Vec<bool>) {
    let shift = (w / 32).max(1);
    let (x0, y0, x1, y1) = (w / 3, h / 3, (2 * w / 3).max(w / 3 + 1), (2 * h / 3).max(h / 3 + 1));
    let mut frames = Vec::new();
    let mut mask0 = vec![false; w * h];
    for f in 0..2 {
        let mut data = vec![118u8; w * h * 3];
        for y in y0..y1 {
            for x in (x0 + f * shift)..(x1 + f * shift).min(w) {
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[235, 220, 60]);
                if f == 0 {
                    mask0[y * w + x] = true;
                }
            }
        }
        frames.push(RgbFrame { width: w, height: h, data });
    }
    (MemFrames { frames, names: vec!["00000".into(), "00001".into()] }, mask0)
}

/// Warm up: `runs` runs of the tracker on the dummy clip (both frames, so all four graphs
/// run), each checked for a valid mask. A run that errors leaves a load-only warm-up;
/// a run without a valid mask (no output, wrong size, non-finite logits) is a failure.
pub fn warmup(lm: &mut LoadedModel, cfg: &RunConfig, size: (usize, usize), runs: usize) -> WarmupRecord {
    let _ = timing::reset_peak_rss();
    let (w, h) = size;
    let (clip, mask) = dummy_clip(w, h);
    let mut rec = WarmupRecord {
        run: lm.info.clone(),
        status: "ok".into(),
        error: None,
        load_ms: lm.load_ms,
        runs_ms: Vec::new(),
        mask_empty: false,
        mem: MemRecord::default(),
        finished_unix: 0,
    };
    let opts = TrackerOptions { max_frames_in_mem: cfg.max_frames_in_mem, ..Default::default() };
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut sink = CollectSink::default();
        let res = guarded(|| -> Result<()> {
            let prompt = make_prompt(cfg.prompt, 0, 1, w, h, &mask)?;
            let mut tr = Tracker::new(&mut lm.models, &clip, opts.clone())?;
            tr.add_prompt(&prompt)?;
            tr.propagate(None, false, &mut sink)?;
            Ok(())
        });
        rec.runs_ms.push(round_us(ms(t0.elapsed())));
        if let Err(e) = res {
            rec.status = "load_only".into();
            rec.error = Some(format!("warm-up run failed, load-only warm-up: {e}"));
            break;
        }
        let outs: Vec<_> = sink.frames.iter().flat_map(|(_, objs)| objs.iter()).collect();
        let problem = if sink.frames.len() != 2 || outs.len() != 2 {
            Some(format!(
                "produced {} mask(s) on {} frame(s), expected 1 object on 2 frames",
                outs.len(),
                sink.frames.len()
            ))
        } else if outs.iter().any(|o| (o.width, o.height) != (w, h) || o.logits.len() != w * h) {
            Some(format!("mask size is not {w}x{h}"))
        } else if outs.iter().any(|o| o.logits.iter().any(|v| !v.is_finite())) {
            Some("mask logits are not finite (NaN or infinity)".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            rec.status = "no_valid_mask".into();
            rec.error = Some(format!("warm-up gave no valid mask: {p}"));
            break;
        }
        rec.mask_empty = outs.iter().all(|o| !o.logits.iter().any(|&v| v > 0.0));
    }
    lm.clock.reset();
    lm.models.times = Default::default();
    rec.mem = MemRecord {
        peak_rss_mb: timing::peak_rss_mb(),
        rss_scope: "process".into(),
        jetson: timing::is_jetson(),
        system_used_peak_mb: timing::system_used_mb(),
        device_used_peak_mb: None,
        device_used_baseline_mb: cfg.device_baseline_mb,
    };
    rec.finished_unix = unix_now();
    rec
}

/// A failed warm-up record for a model that did not load.
pub fn load_failure(info: RunInfo, err: &Error) -> WarmupRecord {
    WarmupRecord {
        run: info,
        status: "failed".into(),
        error: Some(format!("model did not load: {err}")),
        load_ms: 0.0,
        runs_ms: Vec::new(),
        mask_empty: false,
        mem: MemRecord::default(),
        finished_unix: unix_now(),
    }
}
