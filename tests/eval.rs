//! `tamrt eval` against the official evaluators, without Python: the fixtures in
//! tests/fixtures/eval were scored by `sav_dataset/utils/sav_benchmark.py` and
//! davis2017-evaluation (see gen_eval_fixtures.py there), and expected.json holds their
//! numbers.
//!
//! Tolerance: every per-object J and F (and recall / decay) and the global scores must be
//! within 1e-6 (in percent) of the official values. Both sides count the same pixels in
//! integers and combine them with the same float64 operations in the same order (numpy's
//! pairwise summation is reproduced for the means), so the results are in practice
//! identical to the last bit; 1e-6 leaves room for a last-bit difference in a mean while
//! staying ten thousand times below the 0.1 the official tools print.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tamrt::eval::{csv_string, evaluate, json_string, png, EvalOptions, EvalReport, Format};

const TOL: f64 = 1e-6;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("missing number '{key}' in {v}"))
}

fn close(what: &str, got: f64, want: f64, worst: &mut f64) {
    let d = (got - want).abs();
    *worst = worst.max(d);
    assert!(d <= TOL, "{what}: tamrt {got} vs official {want} (|Δ| = {d:e})");
}

/// Compare a report with an expected block; `scale` turns the expected units into percent.
fn compare(r: &EvalReport, exp: &Value, scale: f64) -> f64 {
    let mut worst = 0f64;
    let objs = exp["objects"].as_array().expect("objects");
    assert_eq!(r.objects.len(), objs.len(), "object count");
    for (o, e) in r.objects.iter().zip(objs) {
        let at = format!("{}/{}", o.video, o.obj);
        assert_eq!(o.video, e["video"].as_str().unwrap_or_default(), "video order");
        assert_eq!(o.obj, e["obj"].as_str().unwrap_or_default(), "object order in {}", o.video);
        close(&format!("{at} J"), o.j, num(e, "J") * scale, &mut worst);
        close(&format!("{at} F"), o.f, num(e, "F") * scale, &mut worst);
        if let Some(d) = o.davis {
            close(&format!("{at} J-Recall"), d.j_recall, num(e, "J-Recall") * scale, &mut worst);
            close(&format!("{at} J-Decay"), d.j_decay, num(e, "J-Decay") * scale, &mut worst);
            close(&format!("{at} F-Recall"), d.f_recall, num(e, "F-Recall") * scale, &mut worst);
            close(&format!("{at} F-Decay"), d.f_decay, num(e, "F-Decay") * scale, &mut worst);
        }
    }
    close("global J&F", r.jf, num(exp, "J&F") * scale, &mut worst);
    close("global J", r.j, num(exp, "J") * scale, &mut worst);
    close("global F", r.f, num(exp, "F") * scale, &mut worst);
    if let Some(d) = r.davis {
        close("global J-Recall", d.j_recall, num(exp, "J-Recall") * scale, &mut worst);
        close("global J-Decay", d.j_decay, num(exp, "J-Decay") * scale, &mut worst);
        close("global F-Recall", d.f_recall, num(exp, "F-Recall") * scale, &mut worst);
        close("global F-Decay", d.f_decay, num(exp, "F-Decay") * scale, &mut worst);
    }
    assert_eq!(r.missing_frames, 0);
    worst
}

fn opts(kind: &str) -> EvalOptions {
    EvalOptions::new(fixtures().join(kind).join("pred"), fixtures().join(kind).join("gt"))
}

#[test]
fn sav_matches_official() {
    let r = evaluate(&opts("sav")).expect("sav evaluation");
    assert_eq!(r.format, Format::Sav, "layout detected as SA-V");
    let worst = compare(&r, &expected()["sav"]["skip"], 1.0);
    eprintln!("sav (first/last skipped): max |Δ| = {worst:e}");
}

#[test]
fn sav_keep_first_last_matches_official() {
    let mut o = opts("sav");
    o.keep_first_last = true;
    o.format = Some(Format::Sav);
    let r = evaluate(&o).expect("sav evaluation");
    let worst = compare(&r, &expected()["sav"]["keep"], 1.0);
    eprintln!("sav (all frames): max |Δ| = {worst:e}");
}

#[test]
fn davis_matches_official() {
    let r = evaluate(&opts("davis")).expect("davis evaluation");
    assert_eq!(r.format, Format::Davis, "layout detected as DAVIS");
    // davis2017 returns fractions; tamrt reports percent.
    let worst = compare(&r, &expected()["davis"]["skip"], 100.0);
    eprintln!("davis: max |Δ| = {worst:e}");
}

#[test]
fn results_do_not_depend_on_threads() {
    for kind in ["sav", "davis"] {
        let mut o = opts(kind);
        o.threads = 1;
        let a = evaluate(&o).expect("1 thread");
        o.threads = 3;
        let b = evaluate(&o).expect("3 threads");
        assert_eq!(a.objects, b.objects);
        assert_eq!((a.j, a.f, a.jf), (b.j, b.f, b.jf));
    }
}

#[test]
fn json_and_csv_reports() {
    let r = evaluate(&opts("sav")).expect("sav evaluation");
    let j: Value = serde_json::from_str(&json_string(&r)).expect("JSON parses");
    assert_eq!(j["J&F"].as_f64(), Some(r.jf));
    assert_eq!(j["objects"].as_array().map(|a| a.len()), Some(r.objects.len()));
    assert_eq!(j["objects"][0]["obj_id"], Value::from(0));
    assert_eq!(j["objects"][0]["J"].as_f64(), Some(r.objects[0].j));
    let csv = csv_string(&r);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "video,obj_id,J&F,J,F,frames");
    assert_eq!(lines.len(), r.objects.len() + 2);
    assert!(lines.last().is_some_and(|l| l.starts_with("Global score,,")));
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[..2], [r.objects[0].video.as_str(), "000"]);
    assert_eq!(first[3].parse::<f64>().ok(), Some(r.objects[0].j));
}

/// The binary end to end: tables on stdout, JSON and CSV written (atomically: no temp
/// files left beside them).
#[test]
fn cli_eval_writes_reports() {
    let dir = scratch("cli");
    let (json, csv) = (dir.join("scores.json"), dir.join("scores.csv"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .args(["eval", "--format", "davis", "--pred"])
        .arg(fixtures().join("davis/pred"))
        .arg("--gt")
        .arg(fixtures().join("davis/gt"))
        .arg("--json")
        .arg(&json)
        .arg("--csv")
        .arg(&csv)
        .output()
        .expect("run tamrt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tamrt eval failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Global score"), "{stdout}");
    assert!(stdout.contains("seqB_void"), "{stdout}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    let exp = &expected()["davis"]["skip"];
    assert!((j["J&F"].as_f64().unwrap_or(0.0) - num(exp, "J&F") * 100.0).abs() <= TOL);
    assert_eq!(j["objects"][0]["obj_id"], Value::from(1));
    assert!(std::fs::read_to_string(&csv).expect("csv file").contains("J-Recall"));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names.len(), 2, "only the two reports: {names:?}");
    // A bad input is an error message and a failure status, not a panic.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .args(["eval", "--pred"])
        .arg(dir.join("nope"))
        .arg("--gt")
        .arg(fixtures().join("sav/gt"))
        .output()
        .expect("run tamrt");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("prediction folder") && !err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Bad input: clear errors, never panics.

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tamrt-eval-{name}-{}-{}",
        std::process::id(),
        SCRATCH.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

/// A scratch copy of one fixture video (gt + pred) of `kind`.
fn dataset(kind: &str, video: &str) -> (PathBuf, EvalOptions) {
    let d = scratch(kind);
    for side in ["gt", "pred"] {
        copy_tree(&fixtures().join(kind).join(side).join(video), &d.join(side).join(video));
    }
    let o = EvalOptions::new(d.join("pred"), d.join("gt"));
    (d, o)
}

fn err_of(o: &EvalOptions) -> String {
    match evaluate(o) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks '{p}': {msg}");
    }
}

#[test]
fn missing_folders_and_neither_layout() {
    let d = scratch("layout");
    let o = EvalOptions::new(d.join("pred"), d.join("gt"));
    assert_mentions(&err_of(&o), &["ground-truth folder", "not found"]);
    std::fs::create_dir_all(d.join("gt")).expect("mkdir");
    assert_mentions(&err_of(&o), &["prediction folder", "not found"]);
    std::fs::create_dir_all(d.join("pred")).expect("mkdir");
    assert_mentions(&err_of(&o), &["no video folders", "{video}/{obj_id}/{frame}.png", "{video}/{frame}.png"]);
    // An empty video folder: no annotations.
    std::fs::create_dir_all(d.join("gt/v1")).expect("mkdir");
    assert_mentions(&err_of(&o), &["video 'v1'", "no annotations"]);
    // Files and folders mixed in a video folder: neither layout.
    std::fs::create_dir_all(d.join("gt/v1/000")).expect("mkdir");
    std::fs::write(d.join("gt/v1/00000.png"), b"x").expect("write");
    assert_mentions(&err_of(&o), &["mixes files and folders"]);
    // SA-V forced on a DAVIS-style video, and the other way round.
    let (_d2, mut o2) = dataset("davis", "seqA");
    o2.format = Some(Format::Sav);
    assert_mentions(&err_of(&o2), &["not an object folder", "--format davis"]);
    let (_d3, mut o3) = dataset("sav", "thin");
    o3.format = Some(Format::Davis);
    assert_mentions(&err_of(&o3), &["video 'thin'", "no PNG frames", "--format sav"]);
    // A DAVIS root instead of its annotation folder.
    let root = scratch("davisroot");
    for sub in ["Annotations/480p/seq", "JPEGImages/480p/seq"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    let o4 = EvalOptions::new(root.join("Annotations"), root.clone());
    std::fs::create_dir_all(root.join("Annotations")).expect("mkdir");
    assert_mentions(&err_of(&o4), &["looks like a DAVIS root", "480p"]);
    for p in [d, _d2, _d3, root] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[test]
fn too_few_frames_to_score() {
    let (d, o) = dataset("sav", "full_odd");
    for f in ["00002.png", "00003.png", "00004.png"] {
        std::fs::remove_file(d.join("gt/full_odd/000").join(f)).expect("rm");
    }
    assert_mentions(&err_of(&o), &["video 'full_odd' object '000'", "2 annotated frame(s)", "--keep-first-last"]);
    let mut keep = o.clone();
    keep.keep_first_last = true;
    evaluate(&keep).expect("with --keep-first-last the two frames are scored");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn size_mismatch_names_video_object_frame() {
    let (d, o) = dataset("sav", "shift_ellipse");
    png::write_indexed(&d.join("pred/shift_ellipse/001/00003.png"), 10, 10, &[0; 100]).expect("write");
    assert_mentions(&err_of(&o), &["video 'shift_ellipse' object '001' frame '00003.png'", "96x64", "10x10"]);
    let _ = std::fs::remove_dir_all(d);

    let (d, o) = dataset("davis", "seqA");
    png::write_indexed(&d.join("pred/seqA/00004.png"), 10, 10, &[0; 100]).expect("write");
    assert_mentions(&err_of(&o), &["video 'seqA' frame '00004.png'", "90x60", "10x10"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn missing_predictions_score_zero_or_fail_with_strict() {
    let (d, mut o) = dataset("sav", "shift_ellipse");
    let full = evaluate(&o).expect("complete");
    std::fs::remove_file(d.join("pred/shift_ellipse/000/00002.png")).expect("rm");
    let r = evaluate(&o).expect("non-strict: scored");
    assert_eq!(r.missing_frames, 1);
    assert_mentions(&r.missing_examples[0], &["shift_ellipse", "'000'", "00002.png"]);
    assert!(r.objects[0].j < full.objects[0].j && r.objects[0].f < full.objects[0].f);
    assert_eq!(r.objects[1], full.objects[1]);
    assert!(csv_string(&r).lines().count() == 4 && json_string(&r).contains("\"missing_frames\": 1"));
    o.strict = true;
    assert_mentions(&err_of(&o), &["video 'shift_ellipse' object '000' frame '00002.png'", "missing", "--strict"]);
    // A whole prediction video missing: every scored frame counted.
    std::fs::remove_dir_all(d.join("pred/shift_ellipse")).expect("rm");
    o.strict = false;
    let r = evaluate(&o).expect("non-strict");
    assert_eq!(r.missing_frames, 2 * 6);
    assert_eq!((r.j, r.f), (0.0, 0.0));
    o.strict = true;
    assert_mentions(&err_of(&o), &["shift_ellipse", "missing"]);
    let _ = std::fs::remove_dir_all(d);

    let (d, mut o) = dataset("davis", "seqC_long");
    std::fs::remove_file(d.join("pred/seqC_long/00005.png")).expect("rm");
    let r = evaluate(&o).expect("non-strict");
    assert_eq!(r.missing_frames, 1);
    o.strict = true;
    assert_mentions(&err_of(&o), &["video 'seqC_long' frame '00005.png'", "missing"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn strict_rejects_prediction_videos_without_ground_truth() {
    let (d, mut o) = dataset("sav", "thin");
    copy_tree(&fixtures().join("sav/pred/borders"), &d.join("pred/borders"));
    let r = evaluate(&o).expect("non-strict ignores it");
    assert_eq!(r.extra_pred_videos, vec!["borders".to_string()]);
    o.strict = true;
    assert_mentions(&err_of(&o), &["without ground truth", "borders"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn unreadable_and_multi_valued_pngs() {
    let (d, o) = dataset("sav", "thin");
    std::fs::copy(fixtures().join("misc/three_values.png"), d.join("pred/thin/002/00001.png")).expect("copy");
    assert_mentions(&err_of(&o), &["object '002' frame '00001.png'", "more than 1 object"]);
    std::fs::copy(fixtures().join("misc/rgb.png"), d.join("pred/thin/002/00001.png")).expect("copy");
    assert_mentions(&err_of(&o), &["frame '00001.png'", "RGB", "single-channel"]);
    let bytes = std::fs::read(fixtures().join("sav/pred/thin/002/00001.png")).expect("read");
    std::fs::write(d.join("pred/thin/002/00001.png"), &bytes[..bytes.len() / 2]).expect("write");
    assert_mentions(&err_of(&o), &["frame '00001.png'", "00001.png"]);
    std::fs::write(d.join("pred/thin/002/00001.png"), b"not a png at all").expect("write");
    assert_mentions(&err_of(&o), &["not a PNG file"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn object_never_in_ground_truth() {
    let (d, o) = dataset("sav", "thin");
    for f in 0..6 {
        png::write_indexed(&d.join(format!("gt/thin/001/{f:05}.png")), 151, 101, &vec![0; 151 * 101]).expect("write");
    }
    assert_mentions(&err_of(&o), &["video 'thin' object '001'", "empty in all 4 scored frame(s)"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn davis_bad_labels() {
    let (d, o) = dataset("davis", "seqD_odd");
    let (w, h) = (101, 67);
    let mut px = vec![0u8; w * h];
    px[10] = 2;
    png::write_indexed(&d.join("pred/seqD_odd/00002.png"), w, h, &px).expect("write");
    assert_mentions(&err_of(&o), &["video 'seqD_odd' frame '00002.png'", "index 2", "1 object(s)"]);
    png::write_indexed(&d.join("gt/seqD_odd/00000.png"), w, h, &vec![0; w * h]).expect("write");
    assert_mentions(&err_of(&o), &["video 'seqD_odd' has no annotations", "first frame"]);
    let _ = std::fs::remove_dir_all(d);
}
