//! davis2017-evaluation semantics, semi-supervised task (`DAVISEvaluation.evaluate`,
//! `DAVIS.get_all_masks`, `Results.read_masks`, `metrics.db_eval_iou` /
//! `db_eval_boundary`, `utils.db_statistics`).

use super::masks::{f_measure, iou, LabelSink};
use super::png::dimensions;
use super::{
    invalid, list_dir, np_mean, run_jobs, DavisStats, EvalOptions, EvalReport, Format, Missing, ObjectScore, Worker,
};
use crate::error::Result;

/// `db_statistics`: (mean, recall = fraction > 0.5, decay), as fractions.
pub(crate) fn db_statistics(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len();
    let mean = np_mean(v);
    let recall = v.iter().filter(|&&x| x > 0.5).count() as f64 / n as f64;
    // ids = np.round(np.linspace(1, n, 5) + 1e-10) - 1, then .astype(np.uint8).
    let ids: Vec<usize> = (0..5)
        .map(|i| {
            let x = if i == 4 { n as f64 } else { 1.0 + i as f64 * ((n as f64 - 1.0) / 4.0) };
            let r = (x + 1e-10).round_ties_even() - 1.0;
            (r as i64 as u8) as usize
        })
        .collect();
    let bin = |i: usize| -> f64 {
        // `ids` are np.uint8, so `ids[i + 1] + 1` wraps at 256 too.
        let (a, b) = (ids[i].min(n), ((ids[i + 1] as u8).wrapping_add(1) as usize).min(n));
        if a >= b {
            f64::NAN
        } else {
            np_mean(&v[a..b])
        }
    };
    (mean, recall, bin(0) - bin(3))
}

struct Job {
    video: String,
    /// All annotation frames (`*.png`, sorted).
    frames: Vec<String>,
}

pub(super) fn evaluate(opts: &EvalOptions, videos: &[String], threads: usize) -> Result<EvalReport> {
    let mut jobs = Vec::new();
    for v in videos {
        let vdir = opts.gt.join(v);
        let frames: Vec<String> = list_dir(&vdir, Some(false))?.into_iter().filter(|f| f.ends_with(".png")).collect();
        if frames.is_empty() {
            let hint = if list_dir(&vdir, Some(true))?.is_empty() {
                ""
            } else {
                " (it holds folders: for per-object folders use --format sav)"
            };
            return Err(invalid(format!(
                "video '{v}' has no annotations: no PNG frames in '{}'{hint}",
                vdir.display()
            )));
        }
        jobs.push(Job { video: v.clone(), frames });
    }
    let results = run_jobs(&jobs, threads, |w, job| score_video(opts, w, job))?;
    let mut objects = Vec::new();
    let (mut missing_frames, mut missing_examples) = (0, Vec::new());
    for (scores, miss) in results {
        objects.extend(scores);
        missing_frames += miss.count;
        missing_examples.extend(miss.examples.into_iter().take(20 - missing_examples.len().min(20)));
    }
    // evaluation_method.py: means over objects of the per-object statistics (fractions);
    // reported here ×100.
    let col = |f: &dyn Fn(&ObjectScore) -> f64| np_mean(&objects.iter().map(f).collect::<Vec<_>>()) * 100.0;
    let d = |o: &ObjectScore| o.davis.unwrap_or_default();
    let j = col(&|o| o.j / 100.0);
    let f = col(&|o| o.f / 100.0);
    let stats = DavisStats {
        j_recall: col(&|o| d(o).j_recall / 100.0),
        j_decay: col(&|o| d(o).j_decay / 100.0),
        f_recall: col(&|o| d(o).f_recall / 100.0),
        f_decay: col(&|o| d(o).f_decay / 100.0),
    };
    Ok(EvalReport {
        format: Format::Davis,
        objects,
        j,
        f,
        jf: (j + f) / 2.0,
        davis: Some(stats),
        videos: videos.len(),
        missing_frames,
        missing_examples,
        extra_pred_videos: Vec::new(),
    })
}

fn score_video(opts: &EvalOptions, w: &mut Worker, job: &Job) -> Result<(Vec<ObjectScore>, Missing)> {
    let (v, frames) = (&job.video, &job.frames);
    let gdir = opts.gt.join(v);
    let pdir = opts.pred.join(v);
    // Object count: the largest label of the first frame (255 = void excluded).
    let mut first = LabelSink::new(0);
    let (width, height) = w
        .dec
        .read_into(&gdir.join(&frames[0]), &mut w.file, &mut first)
        .map_err(|e| e.context(format!("video '{v}'")))?;
    let n_obj = first.finish().2 as usize;
    if n_obj == 0 {
        return Err(invalid(format!(
            "video '{v}' has no annotations: its first frame '{}' holds no object",
            frames[0]
        )));
    }
    let scored: &[String] = if opts.keep_first_last { frames } else { &frames[1..frames.len().max(2) - 1] };
    if scored.is_empty() {
        return Err(invalid(format!(
            "video '{v}' has {} annotated frame(s): none left to score after skipping the first and the last \
             (see --keep-first-last)",
            frames.len()
        )));
    }
    // All annotations are stacked into one array by the official code: same size as the
    // first (the last frame is only checked, not decoded).
    if let Some(last) = frames.last().filter(|_| !opts.keep_first_last && frames.len() > 1) {
        let p = gdir.join(last);
        super::png::read_file(&p, &mut w.file)?;
        let dims = dimensions(&w.file).map_err(|e| e.context(format!("'{}'", p.display())))?;
        if dims != (width, height) {
            return Err(invalid(format!(
                "video '{v}' frame '{last}': annotation is {}x{} pixels but the first frame is {width}x{height}",
                dims.0, dims.1
            )));
        }
    }
    let mut js = vec![Vec::with_capacity(scored.len()); n_obj];
    let mut fs = vec![Vec::with_capacity(scored.len()); n_obj];
    let mut missing = Missing::default();
    for frame in scored {
        let at = format!("video '{v}' frame '{frame}'");
        let mut sink = LabelSink::new(n_obj);
        let (gw, gh) = w
            .dec
            .read_into(&gdir.join(frame), &mut w.file, &mut sink)
            .map_err(|e| e.context(format!("{at} (ground truth)")))?;
        if (gw, gh) != (width, height) {
            return Err(invalid(format!(
                "{at}: annotation is {gw}x{gh} pixels but the first frame is {width}x{height}"
            )));
        }
        let (gt, _, _) = sink.finish();
        // The frame id drops the extension and joins the other dot-separated parts
        // (''.join(name.split('.')[:-1])), as davis.py does.
        let stem = frame.rsplit_once('.').map_or(frame.as_str(), |(s, _)| s).replace('.', "");
        let ppath = pdir.join(format!("{stem}.png"));
        if !ppath.is_file() {
            missing.add(opts.strict, format!("{at} (all objects)"))?;
            js.iter_mut().chain(fs.iter_mut()).for_each(|x| x.push(0.0));
            continue;
        }
        let mut sink = LabelSink::new(n_obj);
        let (pw, ph) =
            w.dec.read_into(&ppath, &mut w.file, &mut sink).map_err(|e| e.context(format!("{at} (prediction)")))?;
        if (pw, ph) != (width, height) {
            return Err(invalid(format!(
                "{at}: the ground truth is {width}x{height} pixels but the prediction is {pw}x{ph}"
            )));
        }
        let (pred, max, _) = sink.finish();
        if max as usize > n_obj {
            return Err(invalid(format!(
                "{at}: the prediction has index {max} but the sequence has {n_obj} object(s) \
                 (the first annotation frame's largest label)"
            )));
        }
        let disk = w.disk(width, height);
        for k in 0..n_obj {
            js[k].push(iou(&pred[k], &gt[k]));
            fs[k].push(f_measure(&pred[k], &gt[k], &disk));
        }
    }
    let scores = (0..n_obj)
        .map(|k| {
            let (jm, jr, jd) = db_statistics(&js[k]);
            let (fm, fr, fd) = db_statistics(&fs[k]);
            ObjectScore {
                video: v.clone(),
                obj: (k + 1).to_string(),
                j: jm * 100.0,
                f: fm * 100.0,
                frames: js[k].len(),
                davis: Some(DavisStats {
                    j_recall: jr * 100.0,
                    j_decay: jd * 100.0,
                    f_recall: fr * 100.0,
                    f_decay: fd * 100.0,
                }),
            }
        })
        .collect();
    Ok((scores, missing))
}

#[cfg(test)]
mod tests {
    use super::db_statistics;

    /// Values of davis2017's `utils.db_statistics` (numpy 2.4) for v[i] = ((37 i) mod 101) / 100,
    /// including its uint8 bin indices wrapping past 255 frames (decay becomes NaN).
    #[test]
    fn db_statistics_matches_davis2017() {
        let want = [
            (1, 0.0, 0.0, 0.0),
            (2, 0.185, 0.0, -0.37),
            (3, 0.36999999999999994, 0.3333333333333333, -0.5549999999999999),
            (5, 0.33599999999999997, 0.2, -0.09999999999999998),
            (13, 0.43307692307692314, 0.38461538461538464, -0.04749999999999999),
            (257, 0.49914396887159523, 0.490272373540856, f64::NAN),
            (300, 0.49893333333333334, 0.49333333333333335, f64::NAN),
        ];
        for (n, m, o, d) in want {
            let v: Vec<f64> = (0..n).map(|i| ((i * 37) % 101) as f64 / 100.0).collect();
            let (gm, go, gd) = db_statistics(&v);
            assert_eq!((gm, go), (m, o), "n = {n}");
            assert!(gd == d || (gd.is_nan() && d.is_nan()), "n = {n}: decay {gd} vs {d}");
        }
    }
}
