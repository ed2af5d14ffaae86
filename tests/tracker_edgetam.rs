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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use tamrt::backend::ort::OrtBackend;
use tamrt::checkpoint::Checkpoint;
use tamrt::config::ModelConfig;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::tracker::{read_prompt_file, CollectSink, FrameDir, FrameSource, Tracker, TrackerModels, TrackerOptions};

const IOU_MIN: f64 = 0.99;
const LOGIT_REL: f32 = 1e-3;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/tracker_edgetam")
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("meta.json")).unwrap()).unwrap()
}

fn f32_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{k}");
            let data = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `base` with the tensors of `overrides` replaced, as safetensors.
fn merge_overrides(base: &Path, overrides: &Path, out: &Path) {
    let ck = Checkpoint::open(base).unwrap();
    let ov = f32_tensors(overrides);
    for k in ov.keys() {
        assert!(ck.info(k).is_some(), "override {k} is not in {}", base.display());
    }
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in ck.tensors() {
        let data = match ov.get(&info.name) {
            Some((shape, data)) => {
                assert_eq!(shape, &info.shape, "{}", info.name);
                data.clone()
            }
            None => ck.read_f32(&info.name).unwrap().data,
        };
        tensors.push((info.name.clone(), info.shape.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(out, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// The fixture's model (base checkpoint + overrides), exported once per test process.
fn exported() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let m = meta();
        let base = root().join(m["base_checkpoint"].as_str().unwrap());
        let have = sha256_hex(&std::fs::read(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display())));
        assert_eq!(
            have,
            m["base_checkpoint_sha256"].as_str().unwrap(),
            "{} changed since the fixture was made: rerun tests/fixtures/gen/gen_tracker_edgetam.py \
             --out tests/fixtures/tracker_edgetam",
            base.display()
        );
        let cfg = ModelConfig::from_json_file(&base.with_file_name("config.json")).unwrap();
        assert!(cfg.perceiver.is_some(), "the fixture model must be an EdgeTAM one");
        let out = std::env::temp_dir().join(format!("tamrt-tracker-edgetam-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let merged = out.with_extension("merged.safetensors");
        merge_overrides(&base, &fixture().join("weight_overrides.safetensors"), &merged);
        export_model(&cfg, WeightsFrom::Checkpoint(merged), &out, &Component::ALL).unwrap();
        out
    })
    .clone()
}

/// Track a scenario and compare with the reference logits; returns (worst IoU, worst
/// relative logit error).
fn check_scenario(name: &str, opts: TrackerOptions) -> (f64, f32) {
    let fx = fixture();
    let m = meta();
    let sc = &m["scenarios"][name];
    let reverse = sc["reverse"].as_bool().unwrap();
    let video = FrameDir::open(&root().join(m["clip"]["frames_dir"].as_str().unwrap())).unwrap();
    let (w, h) = video.size();
    let prompts = read_prompt_file(&fx.join(format!("prompts_{name}.json")), video.len(), w, h).unwrap();
    let mut models = TrackerModels::load(&OrtBackend { threads: 2 }, &exported()).unwrap();
    let mut tracker = Tracker::new(&mut models, &video, opts).unwrap();
    for p in &prompts {
        tracker.add_prompt(p).unwrap();
    }
    let start = if reverse { prompts.iter().map(|p| p.frame).max() } else { None };
    let mut sink = CollectSink::default();
    let report = tracker.propagate(start, reverse, &mut sink).unwrap();
    let order: Vec<usize> = sc["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(report.frames, order, "processing order");
    let refs = f32_tensors(&fx.join(format!("ref_{name}.safetensors")));
    let mut seen = 0;
    let (mut worst_iou, mut worst_rel) = (1f64, 0f32);
    for (f, objs) in &sink.frames {
        for o in objs {
            let key = format!("{:03}/{:05}", o.obj_id, f);
            let (shape, r) = refs.get(&key).unwrap_or_else(|| panic!("{name}: no reference for {key}"));
            assert_eq!(shape, &vec![h, w], "{key}");
            seen += 1;
            let (mut inter, mut uni) = (0usize, 0usize);
            let max_ref = r.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mut max_err = 0f32;
            for (a, b) in o.logits.iter().zip(r) {
                let (pa, pb) = (*a > 0.0, *b > 0.0);
                inter += usize::from(pa && pb);
                uni += usize::from(pa || pb);
                if b.abs() > 1.0 {
                    max_err = max_err.max((a - b).abs());
                }
            }
            let iou = if uni == 0 { 1.0 } else { inter as f64 / uni as f64 };
            let rel = max_err / max_ref.max(f32::MIN_POSITIVE);
            println!("{name} {key}: IoU {iou:.5}, max|err| {max_err:.2e} = {rel:.2e} of max|ref| {max_ref:.1}");
            assert!(iou >= IOU_MIN, "{name} {key}: IoU {iou} < {IOU_MIN}");
            assert!(rel <= LOGIT_REL, "{name} {key}: logit error {max_err} > {LOGIT_REL} * {max_ref}");
            worst_iou = worst_iou.min(iou);
            worst_rel = worst_rel.max(rel);
        }
    }
    assert_eq!(seen, refs.len(), "{name}: every reference (object, frame) must be produced");
    println!("{name}: worst IoU {worst_iou:.5}, worst logit error {worst_rel:.2e} of max|ref|");
    (worst_iou, worst_rel)
}

#[test]
fn edgetam_tracks_like_official_forward() {
    check_scenario("forward", TrackerOptions::default());
}

#[test]
fn edgetam_tracks_like_official_reverse() {
    check_scenario("reverse", TrackerOptions::default());
}

/// The fixture really has EdgeTAM's token-major memories, several objects per official
/// state and an object prompted after the start frame.
#[test]
fn edgetam_fixture_covers_batched_and_late_objects() {
    let m = meta();
    let models = TrackerModels::load(&OrtBackend { threads: 1 }, &exported()).unwrap();
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
