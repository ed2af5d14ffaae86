//! Helpers shared by the tracker tests: fixture tensors, weight overrides, and the
//! per-object per-frame comparison with the official predictor's logits.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use tamrt::checkpoint::Checkpoint;
use tamrt::tracker::{
    read_prompt_file, CollectSink, FrameDir, FrameSource, TrackReport, Tracker, TrackerModels, TrackerOptions,
};

/// Mask IoU bound per object per frame (the acceptance bound).
pub const IOU_MIN: f64 = 0.99;
/// max |logit − ref| ≤ LOGIT_REL · max|ref| wherever |ref| > 1 (the bound).
pub const LOGIT_REL: f32 = 1e-3;

pub fn f32_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data: Vec<f32> = match v.dtype() {
                Dtype::F32 => v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::U8 => v.data().iter().map(|&b| b as f32).collect(),
                d => panic!("{k}: dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `base` with the tensors of `overrides` replaced, as safetensors.
pub fn merge_overrides(base: &Path, overrides: &Path, out: &Path) {
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

/// What [`track_and_compare`] found: the worst IoU and relative logit error over every
/// (object, frame), and the tracker's report (where the bank and frame ops ran).
pub struct Compared {
    pub worst_iou: f64,
    pub worst_rel: f32,
    pub report: TrackReport,
}

/// Track `name`'s prompts over `video` and compare every (object, frame) output with the
/// reference logits in `refs_file`.
#[allow(clippy::too_many_arguments)]
pub fn track_and_compare(
    name: &str,
    mut models: TrackerModels,
    video: &FrameDir,
    prompts_file: &Path,
    reverse: bool,
    order: &[usize],
    refs_file: &Path,
    opts: TrackerOptions,
) -> Compared {
    let (w, h) = video.size();
    let prompts = read_prompt_file(prompts_file, video.len(), w, h).unwrap();
    let pinned_budget = opts.prompt_feature_bytes;
    let mut tracker = Tracker::new(&mut models, video, opts).unwrap();
    for p in &prompts {
        tracker.add_prompt(p).unwrap();
    }
    let start = if reverse { prompts.iter().map(|p| p.frame).max() } else { None };
    let mut sink = CollectSink::default();
    let report = tracker.propagate(start, reverse, &mut sink).unwrap();
    assert_eq!(report.frames, order, "processing order");
    // with the default budget, prompted frames keep their image features (all fixtures fit
    // it), so the propagation encodes exactly the frames without a prompt, each once
    if pinned_budget == tamrt::tracker::feature_cache::PINNED_BYTES {
        let prompted: std::collections::BTreeSet<usize> = prompts.iter().map(|p| p.frame).collect();
        let unprompted = order.iter().filter(|f| !prompted.contains(f)).count();
        assert_eq!(report.times.image_encoder_calls, unprompted, "{name}: image encoder calls in the propagation");
    }
    let refs = f32_tensors(refs_file);
    let mut seen = 0;
    let (mut worst_iou, mut worst_rel) = (1f64, 0f32);
    for (f, objs) in &sink.frames {
        for o in objs {
            let key = format!("{:03}/{:05}", o.obj_id, f);
            let (shape, r) = refs.get(&key).unwrap_or_else(|| panic!("{name}: no reference for {key}"));
            assert_eq!(shape, &vec![h, w], "{key}");
            let thresholded: Vec<u8> = o.logits.iter().map(|&v| u8::from(v > 0.0)).collect();
            assert!(o.mask == thresholded, "{name} {key}: the mask is not logits > 0");
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
    Compared { worst_iou, worst_rel, report }
}

/// Track scenario `name` of a tracker fixture (`fx` holds `prompts_<name>.json` and
/// `ref_<name>.safetensors`; `meta.json`'s `scenarios.<name>` gives `reverse` and the
/// processing `order`) and compare with the references.
pub fn check_fixture_scenario(
    fx: &Path,
    meta: &serde_json::Value,
    video: &FrameDir,
    name: &str,
    models: TrackerModels,
    opts: TrackerOptions,
) -> Compared {
    let sc = &meta["scenarios"][name];
    let order: Vec<usize> = sc["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    track_and_compare(
        name,
        models,
        video,
        &fx.join(format!("prompts_{name}.json")),
        sc["reverse"].as_bool().unwrap(),
        &order,
        &fx.join(format!("ref_{name}.safetensors")),
        opts,
    )
}

/// Export a tracker fixture's model into `out` and return the config: the fixture's own
/// checkpoint (`meta.json` → `checkpoint`, real size) or its base checkpoint with
/// `weight_overrides.safetensors` applied (reduced models; the base must still have the
/// SHA-256 recorded in `meta.json`, else `regen` says how to remake the fixture).
pub fn export_fixture_model(
    fx: &Path,
    meta: &serde_json::Value,
    out: &Path,
    regen: &str,
) -> tamrt::config::ModelConfig {
    use tamrt::config::ModelConfig;
    use tamrt::export::{export_model, Component, WeightsFrom};
    let _ = std::fs::remove_dir_all(out);
    let (cfg, ck) = if let Some(ck) = meta["checkpoint"].as_str() {
        (ModelConfig::from_json_file(&fx.join("config.json")).unwrap(), fx.join(ck))
    } else {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(meta["base_checkpoint"].as_str().unwrap());
        let have = sha256_hex(&std::fs::read(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display())));
        assert_eq!(
            have,
            meta["base_checkpoint_sha256"].as_str().unwrap(),
            "{} changed since the fixture was made: rerun {regen}",
            base.display()
        );
        let cfg = ModelConfig::from_json_file(&base.with_file_name("config.json")).unwrap();
        let merged = out.with_extension("merged.safetensors");
        merge_overrides(&base, &fx.join("weight_overrides.safetensors"), &merged);
        (cfg, merged)
    };
    export_model(&cfg, WeightsFrom::Checkpoint(ck), out, &Component::ALL).unwrap();
    cfg
}
