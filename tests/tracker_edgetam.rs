//! The tracker on EdgeTAM equals the official EdgeTAM video predictor: prompts and
//! reference logits in `tests/fixtures/tracker_edgetam/` come from
//! `tests/fixtures/gen/gen_tracker_edgetam.py` (the clip is the SAM 2 tracker fixture's,
//! `tests/fixtures/tracker/frames`). The model is `tests/fixtures/edgetam_tiny/checkpoint.pt`
//! (spatial perceiver: 48 memory tokens per frame) with the tensors of
//! `weight_overrides.safetensors` replaced, exported by tamrt and run on ONNX Runtime.
//!
//! EdgeTAM's predictor batches objects (one output per prompted frame for all of them);
//! tamrt tracks every object on its own, as sam2 1.1.0 does. The references are made per
//! group of objects sharing the same prompted frames, where both agree (see the
//! generator), so objects prompted on different frames and an object added on a later
//! frame are covered too.
//!
//! Bounds, per object per frame: mask IoU ≥ 0.99 and max |logit − ref| ≤ 1e-3 · max|ref|
//! wherever |ref| > 1.
//!
//! `TAMRT_TRACKER_EDGETAM_FIXTURE=DIR cargo test --release --test tracker_edgetam --
//! --ignored` runs the same comparison on a real-size fixture written by
//! `gen_tracker_edgetam.py --real --base BASE --out DIR` (its own checkpoint, config and
//! frames).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tamrt::backend::ort::OrtBackend;
use tamrt::tracker::{FrameDir, TrackerModels, TrackerOptions};

mod common;
use common::{check_fixture_scenario, export_fixture_model};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/tracker_edgetam")
}

fn meta(fx: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap()).unwrap()
}

/// The clip: the SAM 2 tracker fixture's frames (reduced model; `frames_dir` relative to
/// the repository) or the fixture's own copy (real size, `frames_dir_relative_to` "fixture").
fn frames_dir(fx: &Path, m: &serde_json::Value) -> PathBuf {
    let clip = &m["clip"];
    let base = if clip["frames_dir_relative_to"] == "fixture" { fx } else { root() };
    base.join(clip["frames_dir"].as_str().unwrap())
}

/// The fixture's model, exported once per test process: base checkpoint + overrides
/// (reduced model) or the fixture's own checkpoint (real size).
fn exported(fx: &Path) -> PathBuf {
    static DIRS: OnceLock<Mutex<BTreeMap<PathBuf, PathBuf>>> = OnceLock::new();
    let mut dirs = DIRS.get_or_init(Default::default).lock().unwrap();
    if let Some(d) = dirs.get(fx) {
        return d.clone();
    }
    let out = std::env::temp_dir().join(format!("tamrt-tracker-edgetam-{}-{}", std::process::id(), dirs.len()));
    let cfg = export_fixture_model(
        fx,
        &meta(fx),
        &out,
        "tests/fixtures/gen/gen_tracker_edgetam.py --out tests/fixtures/tracker_edgetam",
    );
    assert!(cfg.perceiver.is_some(), "the fixture model must be an EdgeTAM one");
    dirs.insert(fx.to_path_buf(), out.clone());
    out
}

/// Track a scenario and compare with the reference logits; returns (worst IoU, worst
/// relative logit error).
fn check_scenario(fx: &Path, name: &str, opts: TrackerOptions) -> (f64, f32) {
    let m = meta(fx);
    let video = FrameDir::open(&frames_dir(fx, &m)).unwrap();
    let models = TrackerModels::load(&OrtBackend { threads: 2 }, &exported(fx)).unwrap();
    let c = check_fixture_scenario(fx, &m, &video, name, models, opts);
    (c.worst_iou, c.worst_rel)
}

#[test]
fn edgetam_tracks_like_official_forward() {
    check_scenario(&fixture(), "forward", TrackerOptions::default());
}

#[test]
fn edgetam_tracks_like_official_reverse() {
    check_scenario(&fixture(), "reverse", TrackerOptions::default());
}

/// Real-size check (not in CI): `gen_tracker_edgetam.py --real --base BASE --out DIR`.
#[test]
#[ignore]
fn edgetam_tracks_like_official_real_size() {
    let dir =
        PathBuf::from(std::env::var("TAMRT_TRACKER_EDGETAM_FIXTURE").expect("set TAMRT_TRACKER_EDGETAM_FIXTURE=DIR"));
    assert_eq!(meta(&dir)["model"], "edgetam", "{}: not a real-size EdgeTAM tracker fixture", dir.display());
    let (i1, e1) = check_scenario(&dir, "forward", TrackerOptions::default());
    let (i2, e2) = check_scenario(&dir, "reverse", TrackerOptions::default());
    println!("real size: forward worst IoU {i1:.5}, worst logit error {e1:.2e}; reverse {i2:.5}, {e2:.2e}");
    println!("real size: worst IoU {:.5}, worst logit error {:.2e}", i1.min(i2), e1.max(e2));
}

/// The fixture really has EdgeTAM's token-major memories, several objects per official
/// state and an object prompted after the start frame.
#[test]
fn edgetam_fixture_covers_batched_and_late_objects() {
    let m = meta(&fixture());
    let models = TrackerModels::load(&OrtBackend { threads: 1 }, &exported(&fixture())).unwrap();
    let p = models.config().perceiver.clone().unwrap();
    assert_ne!(p.num_latents + p.num_latents_2d, models.config().embed_side().pow(2));
    let fwd = &m["scenarios"]["forward"]["official_states"];
    let rev = &m["scenarios"]["reverse"]["official_states"];
    let max_batch = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|g| g.as_array().unwrap().len()).max();
    assert!(max_batch(fwd) >= Some(2) && max_batch(rev) >= Some(3), "{fwd} {rev}");
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("prompts_forward.json")).unwrap()).unwrap();
    assert!(prompts["prompts"].as_array().unwrap().iter().any(|p| p["obj_id"] == 4 && p["frame"] == 3));
}
