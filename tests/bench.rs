//! `tamrt bench` end to end on the synthetic dataset with the tiny SAM 2.1 fixture model
//! (exported from tests/fixtures/sam2.1_tiny, checkpoint and seeded random weights):
//! results, summaries, plots, resume after an interruption, shards + merge, compare,
//! warm-up failure reports and every bad-input error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::select::BackendPref;
use tamrt::backend::{Backend, ComponentSession};
use tamrt::bench::prompts::PromptMode;
use tamrt::bench::report::{summarize, Summary};
use tamrt::bench::results::{self, Line};
use tamrt::bench::run::{LoadedModel, RunConfig};
use tamrt::bench::synth::{make_dataset, SynthOptions};
use tamrt::bench::timing::StageClock;
use tamrt::bench::warmup::warmup;
use tamrt::bench::{merge_files, run_bench, BenchOptions};
use tamrt::config::ModelConfig;
use tamrt::eval::Format;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::manifest::Manifest;
use tamrt::tracker::TrackerModels;
use tamrt::trt::engine_cache::Precision;
use tamrt::weights::TensorF32;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tamrt-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `models/` with `sam2.1_tiny` (fixture checkpoint) and `sam2.1_tiny_rw` (random
/// weights), exported once per test process.
fn models_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = tmp("models");
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1_tiny");
        let cfg = ModelConfig::from_json_file(&fx.join("config.json")).unwrap();
        export_model(
            &cfg,
            WeightsFrom::Checkpoint(fx.join("checkpoint.pt")),
            &root.join("sam2.1_tiny"),
            &Component::ALL,
        )
        .unwrap();
        export_model(&cfg, WeightsFrom::Random(7), &root.join("sam2.1_tiny_rw"), &Component::ALL).unwrap();
        root
    })
}

fn dataset(name: &str, format: Format, videos: usize, frames: usize) -> PathBuf {
    let out = tmp(name);
    make_dataset(&SynthOptions {
        out: out.clone(),
        format,
        videos,
        frames,
        width: 64,
        height: 48,
        objects: 2,
        seed: 3,
        annotate_every: None,
    })
    .unwrap();
    out
}

/// Two SA-V videos of 7 frames (annotated on 0, 3, 6), made once.
fn sav() -> &'static Path {
    static DS: OnceLock<PathBuf> = OnceLock::new();
    DS.get_or_init(|| dataset("sav", Format::Sav, 2, 7))
}

fn opts(ds: &Path, models: &[&str], results: PathBuf) -> BenchOptions {
    BenchOptions {
        dataset: ds.to_path_buf(),
        format: None,
        models: models.iter().map(|s| s.to_string()).collect(),
        models_root: models_root().to_path_buf(),
        results,
        prompt: PromptMode::Mask,
        backend: BackendPref::Auto,
        precision: Precision::Fp32,
        threads: 1,
        videos: None,
        limit_videos: None,
        shard: None,
        warmup: 1,
        max_frames_in_mem: 4,
        skip_inference: false,
        retry_failed: false,
        mem_budget_mb: Some(8192.0),
        pred_dir: None,
        progress: false,
    }
}

fn lines(p: &Path) -> Vec<Line> {
    results::read_lines(p, false).unwrap().0
}

/// The parts of a summary that do not depend on timing.
/// (model, videos ok, failed, frames, objects, J, F, J&F).
type Accuracy = (String, usize, usize, usize, usize, String, String, String);

fn accuracy(rows: &[Summary]) -> Vec<Accuracy> {
    rows.iter()
        .map(|r| {
            (
                r.model.clone(),
                r.videos_ok,
                r.videos_failed,
                r.frames,
                r.objects,
                format!("{:.9}", r.j),
                format!("{:.9}", r.f),
                format!("{:.9}", r.jf),
            )
        })
        .collect()
}

fn per_video_jf(p: &Path) -> Vec<(String, String, Option<String>)> {
    let l = lines(p);
    let mut v: Vec<_> = results::effective_videos(&l)
        .into_iter()
        .map(|r| (r.run.model.clone(), r.video.clone(), r.jf.map(|x| format!("{x:.9}"))))
        .collect();
    v.sort();
    v
}

fn err_text(o: &BenchOptions) -> String {
    run_bench(o).expect_err("expected an error").to_string()
}

#[test]
fn end_to_end_two_models_results_summary_plots() {
    let dir = tmp("e2e");
    let res = dir.join("bench.jsonl");
    let out = run_bench(&opts(sav(), &["sam2.1_tiny", "sam2.1_tiny_rw"], res.clone())).unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!((out.videos_run, out.videos_skipped), (4, 0));
    let l = lines(&res);
    let vids = results::effective_videos(&l);
    assert_eq!(vids.len(), 4);
    assert_eq!(results::last_warmups(&l).len(), 2);
    for v in &vids {
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.frames, v.num_frames, v.objects, v.masks), (7, 7, 2, 14));
        assert_eq!(v.frame_ms.len(), 6);
        assert!(v.first_frame_ms > 0.0 && v.total_ms > 0.0);
        assert!(v.stages.image_encoder > 0.0 && v.stages.memory_attention > 0.0, "{:?}", v.stages);
        assert!(v.first_frame_stages.prompt_decoder > 0.0, "{:?}", v.first_frame_stages);
        assert_eq!(v.calls["image_encoder"], 7);
        assert!(v.jf.is_some() && v.object_scores.len() == 2);
        // SA-V rule: of the annotated frames 0, 3, 6 only frame 3 is scored
        assert!(v.object_scores.iter().all(|o| o.frames == 1), "{:?}", v.object_scores);
        assert!(v.mem.peak_rss_mb.unwrap() > 0.0);
        assert_eq!(v.run.backends["image_encoder"], "ort-cpu fp32");
        assert_eq!(v.run.setting, "mask,auto,fp32,mf4,t1");
    }
    // predictions in the SA-V layout, annotated frames only
    let pred = dir.join("bench.pred/sam2.1_tiny__mask_auto_fp32_mf4_t1/synth_0000");
    let mut files: Vec<String> =
        std::fs::read_dir(pred.join("000")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["00000.png", "00003.png", "00006.png"]);
    let text = &out.summary_text;
    assert!(text.contains("sam2.1_tiny_rw") && text.contains("p99 ms") && text.contains("in budget"), "{text}");
    for ext in ["summary.md", "summary.csv", "stages.svg", "jf.svg"] {
        let p = dir.join(format!("bench.{ext}"));
        let body = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(body.contains("sam2.1_tiny"), "{ext}");
        if ext.ends_with("svg") {
            assert!(body.starts_with("<svg") && body.trim_end().ends_with("</svg>"), "{ext}");
        }
    }
    let md = std::fs::read_to_string(dir.join("bench.summary.md")).unwrap();
    assert!(md.contains("| synth_0001 | ok |"), "{md}");
    // a rerun finds everything done
    let again = run_bench(&opts(sav(), &["sam2.1_tiny", "sam2.1_tiny_rw"], res.clone())).unwrap();
    assert_eq!((again.videos_run, again.videos_skipped), (0, 4));
    assert_eq!(lines(&res).len(), l.len());
}

#[test]
fn interrupted_run_resumes_to_the_same_aggregate_and_shards_merge() {
    let dir = tmp("resume");
    let full = dir.join("full.jsonl");
    run_bench(&opts(sav(), &["sam2.1_tiny"], full.clone())).unwrap();
    let want = accuracy(&summarize(&lines(&full)));
    assert_eq!(want[0].1, 2);

    // interrupted after the first video, dying in the middle of writing the next line
    let part = dir.join("part.jsonl");
    let mut o = opts(sav(), &["sam2.1_tiny"], part.clone());
    o.limit_videos = Some(1);
    assert_eq!(run_bench(&o).unwrap().videos_run, 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(&part).unwrap();
    std::io::Write::write_all(&mut f, b"{\"kind\":\"video\",\"model\":\"sam2.1_t").unwrap();
    drop(f);
    let resumed = run_bench(&opts(sav(), &["sam2.1_tiny"], part.clone())).unwrap();
    assert_eq!((resumed.videos_run, resumed.videos_skipped), (1, 1));
    assert!(std::fs::read_to_string(&part).unwrap().ends_with('\n'));
    assert_eq!(accuracy(&summarize(&lines(&part))), want);
    assert_eq!(per_video_jf(&part), per_video_jf(&full));

    // the last video's line removed (a crash before it was written)
    let cut = dir.join("cut.jsonl");
    let text = std::fs::read_to_string(&full).unwrap();
    let mut kept: Vec<&str> = text.lines().collect();
    let last_video = kept.iter().rposition(|l| l.contains("\"kind\":\"video\"")).unwrap();
    kept.remove(last_video);
    std::fs::write(&cut, kept.join("\n") + "\n").unwrap();
    assert_eq!(run_bench(&opts(sav(), &["sam2.1_tiny"], cut.clone())).unwrap().videos_run, 1);
    assert_eq!(accuracy(&summarize(&lines(&cut))), want);

    // shards 1/2 + 2/2 merged = the full run
    let mut shards = Vec::new();
    for k in 1..=2 {
        let p = dir.join(format!("shard{k}.jsonl"));
        let mut o = opts(sav(), &["sam2.1_tiny"], p.clone());
        o.shard = Some((k, 2));
        assert_eq!(run_bench(&o).unwrap().videos_run, 1);
        shards.push(p);
    }
    let merged = dir.join("merged.jsonl");
    let (n, _) = merge_files(&shards, &merged).unwrap();
    assert_eq!(n, 2);
    assert_eq!(accuracy(&summarize(&lines(&merged))), want);
    assert!(dir.join("merged.summary.md").is_file());
    // the same shard twice collapses; two different runs of one video conflict
    let (n, _) = merge_files(&[shards[0].clone(), shards[0].clone()], &dir.join("dup.jsonl")).unwrap();
    assert_eq!(n, 1);
    let e = merge_files(&[full.clone(), merged.clone()], &dir.join("conflict.jsonl")).unwrap_err().to_string();
    assert!(e.contains("conflict") && e.contains("synth_000"), "{e}");

    // compare: side by side with ratios
    let cmp = tamrt::bench::compare_files(&full, &merged).unwrap();
    assert!(cmp.contains("| FPS |") && cmp.contains("B/A") && cmp.contains("| J&F |"), "{cmp}");
}

#[test]
fn davis_layout_with_point_and_box_prompts() {
    let ds = dataset("davis", Format::Davis, 2, 5);
    let dir = tmp("davis-out");
    for (mode, name) in [(PromptMode::Points(2), "points"), (PromptMode::Bbox, "bbox")] {
        let res = dir.join(format!("{name}.jsonl"));
        let mut o = opts(&ds, &["sam2.1_tiny"], res.clone());
        o.format = Some(Format::Davis);
        o.prompt = mode;
        o.videos = Some(vec![ds.join("ImageSets/2017/val.txt").display().to_string()]);
        o.limit_videos = Some(1);
        let out = run_bench(&o).unwrap();
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let l = lines(&res);
        let v = results::effective_videos(&l);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].format.as_str(), v[0].objects, v[0].frames), ("davis", 2, 5));
        assert!(v[0].jf.is_some());
        assert!(v[0].run.setting.starts_with(&mode.label()));
    }
    // palette predictions, one PNG per frame
    let pred = dir.join("points.pred/sam2.1_tiny__points2_auto_fp32_mf4_t1/synth_0000");
    assert_eq!(std::fs::read_dir(pred).unwrap().count(), 5);
}

#[test]
fn skip_inference_only_loads_and_warms_up() {
    let dir = tmp("skip");
    let res = dir.join("r.jsonl");
    let mut o = opts(sav(), &["sam2.1_tiny"], res.clone());
    o.skip_inference = true;
    o.warmup = 2;
    let out = run_bench(&o).unwrap();
    assert_eq!(out.videos_run, 0);
    let l = lines(&res);
    assert_eq!(l.len(), 1);
    match &l[0] {
        Line::Warmup(w) => {
            assert_eq!(w.status, "ok", "{w:?}");
            assert_eq!(w.runs_ms.len(), 2);
            assert!(w.load_ms > 0.0);
        }
        other => panic!("{other:?}"),
    }
}

/// A session that fails, or returns NaN masks, to stand for a broken model.
struct Broken {
    inner: Box<dyn ComponentSession>,
    fail: bool,
}

impl ComponentSession for Broken {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> tamrt::Result<Vec<(String, TensorF32)>> {
        if self.fail {
            return Err(tamrt::Error::new(tamrt::ErrorKind::Backend, "injected failure"));
        }
        let mut out = self.inner.run(inputs)?;
        for (n, t) in &mut out {
            if n == "low_res_masks" {
                t.data.iter_mut().for_each(|v| *v = f32::NAN);
            }
        }
        Ok(out)
    }
    fn backend_name(&self) -> &str {
        "broken"
    }
    fn input_names(&self) -> Vec<String> {
        self.inner.input_names()
    }
}

fn broken_model(fail: bool) -> LoadedModel {
    let dir = models_root().join("sam2.1_tiny");
    let b = OrtBackend { threads: 1 };
    let load = |c| b.load(&dir, c).unwrap();
    let dec: Box<dyn ComponentSession> = Box::new(Broken { inner: load(Component::PromptDecoder), fail });
    let sessions =
        [load(Component::ImageEncoder), dec, load(Component::MemoryEncoder), load(Component::MemoryAttention)];
    let models = TrackerModels::from_sessions(Manifest::read(&dir).unwrap(), sessions).unwrap();
    LoadedModel {
        models,
        clock: StageClock::default(),
        info: results::RunInfo {
            model: "broken".into(),
            setting: "s".into(),
            model_dir: dir.display().to_string(),
            weights: String::new(),
            backends: Default::default(),
            host: String::new(),
            tamrt_version: String::new(),
        },
        load_ms: 1.0,
        on_device: false,
        warnings: Vec::new(),
    }
}

#[test]
fn warmup_failures_are_reported_not_hidden() {
    let cfg = RunConfig {
        backend: BackendPref::Ort,
        precision: Precision::Fp32,
        threads: 1,
        prompt: PromptMode::Bbox,
        max_frames_in_mem: 4,
        device_baseline_mb: None,
    };
    let mut failing = broken_model(true);
    let w = warmup(&mut failing, &cfg, (64, 48), 1);
    assert_eq!(w.status, "load_only");
    assert!(w.error.as_deref().unwrap().contains("injected failure"), "{w:?}");
    let mut nan = broken_model(false);
    let w = warmup(&mut nan, &cfg, (64, 48), 1);
    assert_eq!(w.status, "no_valid_mask");
    assert!(w.error.as_deref().unwrap().contains("not finite"), "{w:?}");
    // the summary shows it
    let rows = summarize(&[Line::Warmup(Box::new(w))]);
    assert!(rows[0].warmup.starts_with("no_valid_mask"), "{:?}", rows[0]);
}

#[test]
fn dataset_in_neither_layout_says_what_is_missing() {
    let ds = tmp("neither");
    std::fs::create_dir_all(ds.join("JPEGImages_24fps/v")).unwrap();
    let e = err_text(&opts(&ds, &["sam2.1_tiny"], ds.join("r.jsonl")));
    assert!(e.contains("neither layout") && e.contains("missing Annotations_6fps/"), "{e}");
    assert!(e.contains("JPEGImages/480p/ and Annotations/480p/"), "{e}");
    let mut o = opts(&ds, &["sam2.1_tiny"], ds.join("r.jsonl"));
    o.format = Some(Format::Davis);
    let e = err_text(&o);
    assert!(e.contains("not in the davis layout") && e.contains("missing JPEGImages/480p/"), "{e}");
}

#[test]
fn video_without_annotations_is_an_error() {
    let ds = dataset("noann", Format::Sav, 2, 7);
    std::fs::remove_dir_all(ds.join("Annotations_6fps/synth_0001")).unwrap();
    let e = err_text(&opts(&ds, &["sam2.1_tiny"], ds.join("r.jsonl")));
    assert!(e.contains("video 'synth_0001' has no annotations"), "{e}");
    std::fs::create_dir_all(ds.join("Annotations_6fps/synth_0001")).unwrap();
    let e = err_text(&opts(&ds, &["sam2.1_tiny"], ds.join("r.jsonl")));
    assert!(e.contains("video 'synth_0001' has no annotations: no object folders"), "{e}");
    assert!(!ds.join("r.jsonl").exists());
}

#[test]
fn annotation_size_differs_from_frames() {
    let ds = dataset("size", Format::Sav, 1, 7);
    let p = ds.join("Annotations_6fps/synth_0000/001/00003.png");
    std::fs::write(&p, tamrt::tracker::output::encode_mask_png(&[0u8; 32 * 24], 32, 24).unwrap()).unwrap();
    let e = err_text(&opts(&ds, &["sam2.1_tiny"], ds.join("r.jsonl")));
    assert!(e.contains("00003.png' is 32x24 but the frames are 64x48"), "{e}");
}

#[test]
fn unknown_model_lists_the_models_there() {
    let e = err_text(&opts(sav(), &["sam2.1_tiny", "sam2.1_hiera_x"], tmp("unknown").join("r.jsonl")));
    assert!(e.contains("unknown model 'sam2.1_hiera_x'"), "{e}");
    assert!(e.contains("sam2.1_tiny, sam2.1_tiny_rw"), "{e}");
    assert!(e.contains("tamrt export --model sam2.1_hiera_x"), "{e}");
}

#[test]
fn cli_bench_errors_and_make_dataset() {
    let bin = env!("CARGO_BIN_EXE_tamrt");
    let dir = tmp("cli");
    let out = std::process::Command::new(bin)
        .args(["bench", "make-dataset", "--out"])
        .arg(dir.join("ds"))
        .args(["--videos", "1", "--frames", "3", "--size", "32x24", "--format", "davis"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("ds/Annotations/480p/synth_0000/00002.png").is_file());
    let out = std::process::Command::new(bin)
        .args(["bench", "--dataset"])
        .arg(dir.join("ds"))
        .args(["--models", "nope", "--models-root"])
        .arg(models_root())
        .arg("--out")
        .arg(dir.join("r.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model 'nope'") && err.contains("sam2.1_tiny"), "{err}");
    let out = std::process::Command::new(bin)
        .args(["bench", "make-dataset", "--out"])
        .arg(dir.join("x"))
        .args(["--frames", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than 3 annotated frames"));
}

#[test]
fn synthetic_dataset_is_deterministic() {
    let a = dataset("det-a", Format::Sav, 1, 9);
    let b = dataset("det-b", Format::Sav, 1, 9);
    for rel in ["JPEGImages_24fps/synth_0000/00005.jpg", "Annotations_6fps/synth_0000/001/00008.png", "sav_val.txt"] {
        assert_eq!(std::fs::read(a.join(rel)).unwrap(), std::fs::read(b.join(rel)).unwrap(), "{rel}");
    }
    // 9 frames annotated every 4th: 0, 4, 8
    let n = std::fs::read_dir(a.join("Annotations_6fps/synth_0000/000")).unwrap().count();
    assert_eq!(n, 3);
}

#[test]
fn random_weight_edgetam_real_size_end_to_end() {
    // The real-size EdgeTAM graphs (1024×1024 input) with seeded random weights, on one
    // short synthetic video: the whole harness path users run first.
    let root = tmp("edgetam-models");
    let cfg = ModelConfig::builtin("edgetam").unwrap();
    export_model(&cfg, WeightsFrom::Random(0), &root.join("edgetam"), &Component::ALL).unwrap();
    let ds = dataset("edgetam-ds", Format::Sav, 1, 3);
    let dir = tmp("edgetam-run");
    let mut o = opts(&ds, &["edgetam"], dir.join("bench.jsonl"));
    o.models_root = root;
    o.threads = 2;
    let out = run_bench(&o).unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let l = lines(&dir.join("bench.jsonl"));
    let vids = results::effective_videos(&l);
    assert_eq!(vids.len(), 1);
    let v = &vids[0];
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.frames, v.objects, v.masks), (3, 2, 6));
    assert!(v.stages.image_encoder > 0.0 && v.stages.memory_encoder > 0.0, "{:?}", v.stages);
    assert!(out.summary_text.contains("edgetam"), "{}", out.summary_text);
}
