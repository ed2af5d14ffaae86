//! SA-V semantics (`sav_dataset/utils/sav_benchmark.py`: `VideoEvaluator` + `Evaluator`
//! for per-object PNG folders).

use super::masks::{f_measure, iou, BitMask, NonzeroSink, ValueStats};
use super::{invalid, list_dir, np_mean, run_jobs, EvalOptions, EvalReport, Format, Missing, ObjectScore, Worker};
use crate::error::Result;

struct Job {
    video: String,
    obj: String,
    /// Scored frame file names, in order.
    frames: Vec<String>,
}

pub(super) fn evaluate(opts: &EvalOptions, videos: &[String], threads: usize) -> Result<EvalReport> {
    let mut jobs = Vec::new();
    for v in videos {
        let vdir = opts.gt.join(v);
        let objs = list_dir(&vdir, None)?;
        if objs.is_empty() {
            return Err(invalid(format!("video '{v}' has no annotations (empty folder '{}')", vdir.display())));
        }
        if let Some(f) = objs.iter().find(|o| !vdir.join(o).is_dir()) {
            return Err(invalid(format!(
                "video '{v}': '{f}' is not an object folder (SA-V layout is {{root}}/{{video}}/{{obj_id}}/{{frame}}.png; \
                 for {{root}}/{{video}}/{{frame}}.png use --format davis)"
            )));
        }
        for o in objs {
            // Like os.listdir: every entry is a frame.
            let frames = list_dir(&vdir.join(&o), None)?;
            if frames.is_empty() {
                return Err(invalid(format!("video '{v}' object '{o}' has no annotation frames")));
            }
            let n = frames.len();
            let frames = if opts.keep_first_last { frames } else { frames[1..n.max(2) - 1].to_vec() };
            if frames.is_empty() {
                return Err(invalid(format!(
                    "video '{v}' object '{o}' has {n} annotated frame(s): none left to score after skipping \
                     the first and the last (see --keep-first-last)"
                )));
            }
            jobs.push(Job { video: v.clone(), obj: o, frames });
        }
    }
    let results = run_jobs(&jobs, threads, |w, job| score_object(opts, w, job))?;
    let mut objects = Vec::with_capacity(results.len());
    let (mut missing_frames, mut missing_examples) = (0, Vec::new());
    for (score, miss) in results {
        objects.push(score);
        missing_frames += miss.count;
        missing_examples.extend(miss.examples.into_iter().take(20 - missing_examples.len().min(20)));
    }
    let js: Vec<f64> = objects.iter().map(|o| o.j).collect();
    let fs: Vec<f64> = objects.iter().map(|o| o.f).collect();
    let (j, f) = (np_mean(&js), np_mean(&fs));
    Ok(EvalReport {
        format: Format::Sav,
        objects,
        j,
        f,
        jf: (j + f) / 2.0,
        davis: None,
        videos: videos.len(),
        missing_frames,
        missing_examples,
        extra_pred_videos: Vec::new(),
    })
}

/// `len(np.unique(a)) <= 2`, decided from the statistics when possible; `None` when the
/// values must be counted.
fn at_most_two_values(st: ValueStats) -> Option<bool> {
    if st.min == st.max || st.max - st.min == 1 {
        Some(true)
    } else if st.min == 0 {
        Some(st.min_nonzero == st.max)
    } else {
        None
    }
}

fn load(w: &mut Worker, path: &std::path::Path, what: &str) -> Result<(BitMask, usize, usize)> {
    let mut sink = NonzeroSink::default();
    let (width, height) = w.dec.read_into(path, &mut w.file, &mut sink).map_err(|e| e.context(what))?;
    let (m, st) = sink.finish();
    let ok = match at_most_two_values(st) {
        Some(ok) => ok,
        None => {
            // No zeros and a gap between min and max (rare): count the values.
            let r = w.dec.decode(&w.file)?;
            let mut seen = [false; 256];
            r.data.iter().for_each(|&v| seen[v as usize] = true);
            seen.iter().filter(|&&s| s).count() <= 2
        }
    };
    if !ok {
        return Err(invalid(format!(
            "{what}: found more than 1 object in '{}'; the SA-V format assumes one object mask per PNG file \
             (for indexed multi-object PNGs use --format davis)",
            path.display()
        )));
    }
    Ok((m, width, height))
}

fn score_object(opts: &EvalOptions, w: &mut Worker, job: &Job) -> Result<(ObjectScore, Missing)> {
    let gt_dir = opts.gt.join(&job.video).join(&job.obj);
    let pred_dir = opts.pred.join(&job.video).join(&job.obj);
    let (mut js, mut fs) = (Vec::with_capacity(job.frames.len()), Vec::with_capacity(job.frames.len()));
    // Evaluator.objects_in_gt / objects_in_masks, accumulated over the frames fed so far.
    let (mut seen_gt, mut seen) = (false, false);
    let mut missing = Missing::default();
    for frame in &job.frames {
        let at = format!("video '{}' object '{}' frame '{frame}'", job.video, job.obj);
        let (gt, gw, gh) = load(w, &gt_dir.join(frame), &format!("{at} (ground truth)"))?;
        seen_gt |= !gt.is_empty();
        let pred_path = pred_dir.join(frame);
        if !pred_path.is_file() {
            missing.add(opts.strict, at)?;
            seen = true;
            js.push(0.0);
            fs.push(0.0);
            continue;
        }
        let (pred, pw, ph) = load(w, &pred_path, &format!("{at} (prediction)"))?;
        if (pw, ph) != (gw, gh) {
            return Err(invalid(format!("{at}: the ground truth is {gw}x{gh} pixels but the prediction is {pw}x{ph}")));
        }
        seen |= seen_gt || !pred.is_empty();
        if seen {
            let disk = w.disk(gw, gh);
            js.push(iou(&pred, &gt));
            fs.push(f_measure(&pred, &gt, &disk));
        }
    }
    if !seen_gt {
        return Err(invalid(format!(
            "video '{}' object '{}': the ground truth is empty in all {} scored frame(s); the official SA-V \
             evaluator cannot score such an object",
            job.video,
            job.obj,
            job.frames.len()
        )));
    }
    let score = ObjectScore {
        video: job.video.clone(),
        obj: job.obj.clone(),
        j: np_mean(&js) * 100.0,
        f: np_mean(&fs) * 100.0,
        frames: js.len(),
        davis: None,
    };
    Ok((score, missing))
}
