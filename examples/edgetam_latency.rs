//! Per-graph ONNX Runtime CPU latency of exported EdgeTAM graphs, on the inputs of a
//! fixture directory written by `tests/fixtures/gen/gen_edgetam.py` (a benchmark, not a
//! test). The official PyTorch modules are timed on the same inputs by
//! `examples/edgetam_latency_torch.py`.
//!
//! ```text
//! python tests/fixtures/gen/gen_edgetam.py --real --out /tmp/tamrt_fixtures/edgetam
//! cargo run --release -- parity --fixtures /tmp/tamrt_fixtures/edgetam --out /tmp/edgetam_onnx
//! cargo run --release --example edgetam_latency -- /tmp/edgetam_onnx /tmp/tamrt_fixtures/edgetam [threads] [runs]
//! ```
//!
//! Each case: one warm-up run, then `runs` (default 7) timed runs; the median is printed.

use std::path::PathBuf;
use std::time::Instant;

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::Backend;
use tamrt::checkpoint::Checkpoint;
use tamrt::export::Component;
use tamrt::weights::TensorF32;

const CASES: &[(Component, &str)] = &[
    (Component::ImageEncoder, "image_encoder_image"),
    (Component::PromptDecoder, "prompt_decoder_points_1"),
    (Component::MemoryEncoder, "memory_encoder_sigmoid"),
    (Component::MemoryAttention, "memory_attention_f1_p0"),
    (Component::MemoryAttention, "memory_attention_f3_p16"),
    (Component::MemoryAttention, "memory_attention_f7_p64"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: edgetam_latency MODEL_DIR FIXTURE_DIR [threads=2] [runs=7]");
        std::process::exit(2);
    }
    let (model_dir, fixtures) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(7).max(1);
    let backend = OrtBackend { threads };
    println!("ONNX Runtime CPU, {threads} threads, median of {runs} runs");
    for (component, case) in CASES {
        let path = fixtures.join(format!("{case}.safetensors"));
        if !path.exists() {
            println!("{case:<28} (no case file)");
            continue;
        }
        let mut session = backend.load(&model_dir, *component)?;
        let inputs_wanted = session.input_names();
        let ck = Checkpoint::open(&path)?;
        let tensors: Vec<(String, TensorF32)> = ck
            .tensors()
            .iter()
            .filter(|t| inputs_wanted.contains(&t.name))
            .map(|t| Ok((t.name.clone(), ck.read_f32(&t.name)?)))
            .collect::<tamrt::Result<_>>()?;
        let inputs: Vec<(&str, &TensorF32)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        session.run(&inputs)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            session.run(&inputs)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!("{case:<28} median {median:9.2} ms   (min {:.2}, max {:.2})", times[0], times[times.len() - 1]);
    }
    Ok(())
}
