//! The CPU memory attention with the fused attention kernels (`backend::split_attention`:
//! self- and cross-attention cores fused, the feed-forward in row blocks) against the
//! exported `memory_attention.onnx` run whole by ONNX Runtime, on the reduced SAM 2.1
//! model of `tests/fixtures/sam2.1_tiny`, for shared and per-object frames, several
//! frame counts (one over the kernel's 8 frames per pass), with and without pointers,
//! and through the reuse of layer 0 across calls on the same frame. The tracker's fixture tests (`tests/tracker.rs`) run the whole
//! tracker on this path wherever the CPU has AVX-512F.
//!
//! Bound: max |split − whole| ≤ 1e-4 · max |whole| per output. Both compute the same
//! real-number function in float32 with sums in another order (the kernel scores keys
//! through the raw memory); on these sizes the difference lands near 1e-6 of the
//! largest value, while a key scored at a wrong position or a missed layer moves
//! outputs by far more than 1e-2 of it.

use std::path::{Path, PathBuf};

use tamrt::backend::ort::OrtSession;
use tamrt::backend::rope_cross_attention::cpu_supported;
use tamrt::backend::split_attention::{unsupported, SplitAttentionSession};
use tamrt::backend::ComponentSession;
use tamrt::config::ModelConfig;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::gpu::plan::SplitMix;
use tamrt::weights::TensorF32;

const REL: f32 = 1e-4;

fn tiny(test: &str) -> (ModelConfig, PathBuf) {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1_tiny");
    let cfg = ModelConfig::from_json_file(&fx.join("config.json")).unwrap();
    let out = std::env::temp_dir().join(format!("tamrt-split-attention-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    export_model(&cfg, WeightsFrom::Checkpoint(fx.join("checkpoint.pt")), &out, &[Component::MemoryAttention]).unwrap();
    (cfg, out)
}

/// Seeded values with the spread of the real inputs (unit-scale features).
fn rand(seed: u64, shape: &[usize]) -> TensorF32 {
    let mut r = SplitMix(seed);
    TensorF32::new(shape.to_vec(), (0..shape.iter().product()).map(|_| r.uniform(-1.7, 1.7)).collect())
}

struct Case {
    objects: usize,
    curr_batch: usize,
    frames: usize,
    pointers: usize,
    seed: u64,
}

fn inputs(cfg: &ModelConfig, c: &Case) -> Vec<(&'static str, TensorF32)> {
    let (d, m, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
    let t = c.frames * e * e;
    vec![
        ("curr", rand(c.seed, &[c.curr_batch, d, e, e])),
        ("curr_pos", rand(c.seed + 1, &[c.curr_batch, d, e, e])),
        ("memory", rand(c.seed + 2, &[c.objects, t, m])),
        ("memory_pos", rand(c.seed + 3, &[c.objects, t, m])),
        ("obj_ptrs", rand(c.seed + 4, &[c.objects, c.pointers, m])),
        ("obj_ptrs_pos", rand(c.seed + 5, &[c.objects, c.pointers, m])),
    ]
}

fn run(s: &mut dyn ComponentSession, ins: &[(&'static str, TensorF32)]) -> TensorF32 {
    let refs: Vec<(&str, &TensorF32)> = ins.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = s.run(&refs).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0).1
}

/// max |a − b| / max |b|
fn rel(a: &TensorF32, b: &TensorF32) -> f32 {
    assert_eq!(a.shape, b.shape);
    let scale = b.data.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.data.iter().zip(&b.data).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn split_equals_the_exported_graph() {
    if !cpu_supported() {
        eprintln!("skipped: no AVX-512F here, so the exported graph runs whole (see below)");
        return;
    }
    let (cfg, dir) = tiny("equal");
    let graph = dir.join("memory_attention.onnx");
    assert_eq!(unsupported(&cfg), None);
    let mut whole = OrtSession::load(&graph, 2).unwrap();
    let mut split = SplitAttentionSession::load(&graph, &cfg, 2).unwrap();
    let cases = [
        Case { objects: 1, curr_batch: 1, frames: 1, pointers: 0, seed: 10 },
        Case { objects: 2, curr_batch: 1, frames: 3, pointers: 4, seed: 20 },
        Case { objects: 2, curr_batch: 2, frames: 9, pointers: 16, seed: 30 },
        Case { objects: 3, curr_batch: 1, frames: 7, pointers: 64, seed: 40 },
    ];
    for c in &cases {
        let ins = inputs(&cfg, c);
        let (want, got) = (run(&mut whole, &ins), run(&mut split, &ins));
        let r = rel(&got, &want);
        assert!(
            r <= REL,
            "objects {}, curr batch {}, frames {}, pointers {}: {r:e}",
            c.objects,
            c.curr_batch,
            c.frames,
            c.pointers
        );
    }
    // the same frame again with another memory (layer 0 reused), then a new frame
    let base = Case { objects: 1, curr_batch: 1, frames: 2, pointers: 4, seed: 50 };
    let mut same_frame = inputs(&cfg, &Case { seed: 60, ..base });
    let first = inputs(&cfg, &base);
    same_frame[0].1 = first[0].1.clone();
    same_frame[1].1 = first[1].1.clone();
    let next_frame = inputs(&cfg, &Case { seed: 70, ..base });
    for ins in [&first, &same_frame, &next_frame] {
        let (want, got) = (run(&mut whole, ins), run(&mut split, ins));
        assert!(rel(&got, &want) <= REL, "{:e}", rel(&got, &want));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn edgetam_and_disabled_keep_the_exported_graph() {
    let et = ModelConfig::builtin("edgetam").unwrap();
    assert!(unsupported(&et).unwrap().contains("EdgeTAM"));
    let t = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
    match unsupported(&t) {
        None => assert!(cpu_supported()),
        Some(why) => assert!(!cpu_supported() && why.contains("AVX-512F"), "{why}"),
    }
}

#[test]
fn bad_inputs_are_errors() {
    if !cpu_supported() {
        return;
    }
    let (cfg, dir) = tiny("bad");
    let mut split = SplitAttentionSession::load(&dir.join("memory_attention.onnx"), &cfg, 2).unwrap();
    let mut ins = inputs(&cfg, &Case { objects: 1, curr_batch: 1, frames: 1, pointers: 0, seed: 1 });
    // a memory that is not whole frames
    let m = cfg.mem_dim();
    ins[2].1 = rand(2, &[1, 5, m]);
    ins[3].1 = rand(3, &[1, 5, m]);
    let refs: Vec<(&str, &TensorF32)> = ins.iter().map(|(n, t)| (*n, t)).collect();
    let err = split.run(&refs).err().unwrap().to_string();
    assert!(err.contains("memory has 5 tokens, not whole frames"), "{err}");
    let err = split.run(&refs[..5]).err().unwrap().to_string();
    assert!(err.contains("input 'obj_ptrs_pos' not given"), "{err}");
    // a frame of the wrong rank (the memory whole again)
    let good = inputs(&cfg, &Case { objects: 1, curr_batch: 1, frames: 1, pointers: 0, seed: 1 });
    let flat = TensorF32::new(vec![7], vec![0.0; 7]);
    let mut bad: Vec<(&str, &TensorF32)> = good.iter().map(|(n, t)| (*n, t)).collect();
    bad[0].1 = &flat;
    let err = split.run(&bad).err().unwrap().to_string();
    assert!(err.contains("curr [7] / curr_pos"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
