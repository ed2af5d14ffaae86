//! Exported graphs equal the official PyTorch code (sam2==1.1.0) on seeded random
//! weights: `tests/fixtures/<model>/` holds a checkpoint saved like the official
//! releases, the config, and golden inputs/outputs per case (see
//! `tests/fixtures/gen/README.md`). Each test exports the checkpoint with tamrt and runs
//! the graph on ONNX Runtime (CPU, fp32).
//!
//! Tolerance: `parity::TOLERANCE` (max|out − ref| / max|ref| ≤ 1e-4 per output tensor),
//! the bound the project sets for fp32 parity; see its doc for why it is tight enough.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::Backend;
use tamrt::config::ModelConfig;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::parity::{case_files, check_component, table, TOLERANCE};

fn fixture_dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model)
}

/// Export each fixture model once per test process.
fn exported(model: &str) -> PathBuf {
    static DIRS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let m = DIRS.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    if let Some(p) = m.get(model) {
        return p.clone();
    }
    let fx = fixture_dir(model);
    let cfg = ModelConfig::from_json_file(&fx.join("config.json")).unwrap();
    let out = std::env::temp_dir().join(format!("tamrt-parity-{model}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let comps: Vec<Component> =
        Component::ALL.iter().copied().filter(|c| !case_files(&fx, *c).unwrap().is_empty()).collect();
    export_model(&cfg, WeightsFrom::Checkpoint(fx.join("checkpoint.pt")), &out, &comps).unwrap();
    m.insert(model.to_string(), out.clone());
    out
}

/// Run `component` on all its cases of `model`; the cases named in `required` must exist.
fn check(model: &str, component: Component, required: &[&str]) {
    let fx = fixture_dir(model);
    let cases = case_files(&fx, component).unwrap();
    let names: Vec<String> = cases.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for r in required {
        assert!(names.iter().any(|n| n == r), "fixture case {r} missing in {}", fx.display());
    }
    let dir = exported(model);
    let mut s = OrtBackend { threads: 2 }.load(&dir, component).unwrap();
    let errs = check_component(s.as_mut(), &cases).unwrap();
    println!("{}", table(component.name(), &errs));
    let bad: Vec<_> = errs.iter().filter(|e| e.rel_err.is_nan() || e.rel_err > TOLERANCE).collect();
    assert!(bad.is_empty(), "outputs over tolerance {TOLERANCE}: {bad:#?}");
}

#[test]
fn sam21_image_encoder() {
    check("sam2.1_tiny", Component::ImageEncoder, &["image_encoder"]);
}

#[test]
fn sam21_prompt_decoder() {
    check(
        "sam2.1_tiny",
        Component::PromptDecoder,
        &[
            "prompt_decoder_points_1",
            "prompt_decoder_points_3",
            "prompt_decoder_box",
            "prompt_decoder_box_points",
            "prompt_decoder_mask",
            "prompt_decoder_no_prompt",
            "prompt_decoder_batch2",
        ],
    );
}

#[test]
fn sam21_memory_encoder() {
    check("sam2.1_tiny", Component::MemoryEncoder, &["memory_encoder_sigmoid", "memory_encoder_binarize"]);
}

#[test]
fn sam21_memory_attention() {
    let mut req = Vec::new();
    for f in [1, 3, 7] {
        for p in [0, 4, 16] {
            req.push(format!("memory_attention_f{f}_p{p}"));
        }
    }
    req.push("memory_attention_f3_p8_b2".into());
    let req: Vec<&str> = req.iter().map(|s| s.as_str()).collect();
    check("sam2.1_tiny", Component::MemoryAttention, &req);
}

#[test]
fn sam2_memory_encoder_and_decoder() {
    check("sam2_tiny", Component::MemoryEncoder, &["memory_encoder_sigmoid"]);
    check("sam2_tiny", Component::PromptDecoder, &["prompt_decoder_points_1"]);
}

/// The TensorRT self-check's synthetic inputs (profile `opt` shapes) are valid inputs of
/// every exported graph, and the check passes for identical sessions and fails for a
/// session whose outputs are off (as a miscompiled engine's would be).
#[test]
fn self_check_inputs_run_and_the_check_detects_wrong_outputs() {
    use tamrt::backend::ComponentSession;
    use tamrt::trt::self_check::synthetic_inputs;
    use tamrt::weights::TensorF32;

    struct Skewed(Box<dyn ComponentSession>);
    impl ComponentSession for Skewed {
        fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> tamrt::Result<Vec<(String, TensorF32)>> {
            let mut out = self.0.run(inputs)?;
            for (_, t) in &mut out {
                for v in &mut t.data {
                    *v = *v * 1.5 + 0.25;
                }
            }
            Ok(out)
        }
        fn backend_name(&self) -> &str {
            "skewed"
        }
        fn input_names(&self) -> Vec<String> {
            self.0.input_names()
        }
    }

    let dir = exported("sam2.1_tiny");
    let m = tamrt::manifest::Manifest::read(&dir).unwrap();
    let backend = OrtBackend { threads: 2 };
    for c in Component::ALL {
        let inputs = synthetic_inputs(&m.graphs[c.name()]).unwrap();
        let refs: Vec<(&str, &TensorF32)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut a = backend.load(&dir, c).unwrap();
        let mut b = backend.load(&dir, c).unwrap();
        let (err, ok) = tamrt::trt::parity_self_check(a.as_mut(), b.as_mut(), &refs, 1e-3).unwrap();
        assert!(ok && err == 0.0, "{}: {err}", c.name());
        let mut bad = Skewed(backend.load(&dir, c).unwrap());
        let (err, ok) = tamrt::trt::parity_self_check(&mut bad, b.as_mut(), &refs, 5e-2).unwrap();
        assert!(!ok && err > 0.1, "{}: {err}", c.name());
    }
}
