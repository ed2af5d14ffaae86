//! EdgeTAM graphs equal the official EdgeTAM code on seeded random weights:
//! `tests/fixtures/edgetam_tiny/` holds a checkpoint saved like the official release,
//! the reduced config and golden inputs / outputs per case, written by
//! `tests/fixtures/gen/gen_edgetam.py` (see `tests/fixtures/gen/README.md`, EdgeTAM
//! section). Each test exports the checkpoint with tamrt and runs the graph on ONNX
//! Runtime (CPU, fp32); tolerance `parity::TOLERANCE` per output tensor.
//!
//! Also: a SAM 2.1 checkpoint exported as EdgeTAM (and the reverse) fails with a message
//! naming the model the checkpoint looks like.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::Backend;
use tamrt::config::ModelConfig;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::parity::{case_files, check_component, table, TOLERANCE};

const MODEL: &str = "edgetam_tiny";

fn fixture_dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model)
}

/// Export the fixture model once per test process.
fn exported() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let fx = fixture_dir(MODEL);
        let cfg = ModelConfig::from_json_file(&fx.join("config.json")).unwrap();
        let out = std::env::temp_dir().join(format!("tamrt-parity-{MODEL}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        // all four graphs, so the unused-tensor check covers the whole checkpoint
        export_model(&cfg, WeightsFrom::Checkpoint(fx.join("checkpoint.pt")), &out, &Component::ALL).unwrap();
        out
    })
    .clone()
}

/// Run `component` on all its cases; the cases named in `required` must exist.
fn check(component: Component, required: &[&str]) {
    let fx = fixture_dir(MODEL);
    let cases = case_files(&fx, component).unwrap();
    let names: Vec<String> = cases.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for r in required {
        assert!(names.iter().any(|n| n == r), "fixture case {r} missing in {}", fx.display());
    }
    let mut s = OrtBackend { threads: 2 }.load(&exported(), component).unwrap();
    let errs = check_component(s.as_mut(), &cases).unwrap();
    println!("{}", table(component.name(), &errs));
    let bad: Vec<_> = errs.iter().filter(|e| e.rel_err.is_nan() || e.rel_err > TOLERANCE).collect();
    assert!(bad.is_empty(), "outputs over tolerance {TOLERANCE}: {bad:#?}");
}

#[test]
fn edgetam_image_encoder() {
    check(Component::ImageEncoder, &["image_encoder_image"]);
}

#[test]
fn edgetam_prompt_decoder() {
    check(Component::PromptDecoder, &["prompt_decoder_points_1"]);
}

/// `memory_encoder_batch3`: the spatial perceiver on 3 objects, whose references are
/// upstream's batch-1 results (upstream's own `forward_2d` fails for B > 1).
#[test]
fn edgetam_memory_encoder() {
    check(Component::MemoryEncoder, &["memory_encoder_sigmoid", "memory_encoder_batch3"]);
}

#[test]
fn edgetam_memory_attention() {
    let mut req = Vec::new();
    for f in [1, 3, 7] {
        for p in [0, 4, 16] {
            req.push(format!("memory_attention_f{f}_p{p}"));
        }
    }
    req.push("memory_attention_f3_p8_b2".into());
    let req: Vec<&str> = req.iter().map(|s| s.as_str()).collect();
    check(Component::MemoryAttention, &req);
}

#[test]
fn edgetam_image_encoder_has_no_batch_norm() {
    let m = tamrt::manifest::Manifest::read(&exported()).unwrap();
    let ops = &m.graphs["image_encoder"].op_types;
    assert!(!ops.iter().any(|o| o == "BatchNormalization"), "{ops:?}");
}

/// Export `checkpoint` with config `cfg`; the error message.
fn export_error(cfg: &ModelConfig, checkpoint: &Path) -> String {
    let out = std::env::temp_dir().join(format!("tamrt-wrong-model-{}-{}", cfg.name, std::process::id()));
    let err = export_model(cfg, WeightsFrom::Checkpoint(checkpoint.to_path_buf()), &out, &Component::ALL)
        .expect_err("exporting another model's checkpoint must fail");
    let _ = std::fs::remove_dir_all(&out);
    err.to_string()
}

#[test]
fn sam2_checkpoint_as_edgetam_is_refused() {
    let ck = fixture_dir("sam2.1_tiny").join("checkpoint.pt");
    // `tamrt export --model edgetam --checkpoint <SAM 2.1 checkpoint>`
    let msg = export_error(&ModelConfig::builtin("edgetam").unwrap(), &ck);
    assert!(msg.contains("holds an unknown Hiera model"), "{msg}");
    assert!(msg.contains("not 'edgetam'"), "{msg}");
    // the reduced EdgeTAM config too
    let cfg = ModelConfig::from_json_file(&fixture_dir(MODEL).join("config.json")).unwrap();
    let msg = export_error(&cfg, &ck);
    assert!(msg.contains("holds an unknown Hiera model"), "{msg}");
}

#[test]
fn edgetam_checkpoint_as_sam2_is_refused() {
    let ck = fixture_dir(MODEL).join("checkpoint.pt");
    for cfg in [
        ModelConfig::builtin("sam2.1_hiera_t").unwrap(),
        ModelConfig::from_json_file(&fixture_dir("sam2.1_tiny").join("config.json")).unwrap(),
    ] {
        let msg = export_error(&cfg, &ck);
        assert!(msg.contains("looks like a 'edgetam' checkpoint"), "{msg}");
        assert!(msg.contains(&format!("not '{}'", cfg.name)), "{msg}");
    }
}
