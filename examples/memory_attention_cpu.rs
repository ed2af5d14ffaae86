//! The CPU memory attention two ways, per call, on an exported SAM 2 / 2.1 model: the
//! exported `memory_attention.onnx` run whole by ONNX Runtime, and the split path
//! (`backend::split_attention`: ONNX Runtime pieces around the fused AVX-512 attention
//! kernels). A benchmark, not a test: seeded random inputs of the tracker's layout (one
//! frame for all objects, `frames` memory frames, 4 pointer tokens per frame), one
//! untimed run each, then `runs` timed; prints the medians and the largest difference
//! between the two outputs relative to the largest value. Then the kernels alone, one
//! layer, on seeded random tensors of the model's sizes: the self-attention core, and
//! the cross-attention core of one object at no memory frame (one pointer token: the
//! fixed per-query cost) and at each of `frames`.
//!
//! ```text
//! cargo run --release --example memory_attention_cpu -- MODEL_DIR [frames,...] [objects] [threads] [runs]
//! ```
//!
//! Defaults: frames 1,4,7; 1 object; 2 threads; 3 runs. The split session reuses layer 0
//! when a call repeats the last frame (as the tracker's next objects do); each timed run
//! here gives a new frame, so that reuse is not in these numbers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tamrt::backend::ort::OrtSession;
use tamrt::backend::rope_cross_attention::{attend, Call, Dims, LayerTables};
use tamrt::backend::split_attention::{unsupported, SplitAttentionSession};
use tamrt::backend::{self_attention, ComponentSession};
use tamrt::gpu::plan::SplitMix;
use tamrt::manifest::Manifest;
use tamrt::models::rope::AxialRope;
use tamrt::weights::TensorF32;

fn rand(seed: u64, shape: &[usize]) -> TensorF32 {
    let mut r = SplitMix(seed);
    TensorF32::new(shape.to_vec(), (0..shape.iter().product()).map(|_| r.uniform(-1.0, 1.0)).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        bail!("usage: memory_attention_cpu MODEL_DIR [frames,...] [objects] [threads] [runs]");
    };
    let frames: Vec<usize> = args
        .get(1)
        .map_or("1,4,7", |s| s.as_str())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("frames")?;
    let num =
        |i: usize, d: usize| -> Result<usize> { args.get(i).map_or(Ok(d), |s| s.parse().context("a whole number")) };
    let (objects, threads, runs) = (num(2, 1)?, num(3, 2)?, num(4, 3)?.max(1));
    let cfg = Manifest::read(&dir)?.config;
    if let Some(why) = unsupported(&cfg) {
        bail!("the split path does not apply here: {why}");
    }
    let graph = dir.join("memory_attention.onnx");
    let mut whole = OrtSession::load(&graph, threads)?;
    let mut split = SplitAttentionSession::load(&graph, &cfg, threads)?;
    let (c, m, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
    let mut seed = 1;
    for &f in &frames {
        let (mut t_whole, mut t_split, mut worst) = (Vec::new(), Vec::new(), 0f32);
        for run in 0..=runs {
            seed += 10;
            let ptr_tokens = 4 * f;
            let ins = [
                ("curr", rand(seed, &[1, c, e, e])),
                ("curr_pos", rand(seed + 1, &[1, c, e, e])),
                ("memory", rand(seed + 2, &[objects, f * e * e, m])),
                ("memory_pos", rand(seed + 3, &[objects, f * e * e, m])),
                ("obj_ptrs", rand(seed + 4, &[objects, ptr_tokens, m])),
                ("obj_ptrs_pos", rand(seed + 5, &[objects, ptr_tokens, m])),
            ];
            let refs: Vec<(&str, &TensorF32)> = ins.iter().map(|(n, t)| (*n, t)).collect();
            let t0 = Instant::now();
            let a = whole.run(&refs)?.remove(0).1;
            let dt_whole = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let b = split.run(&refs)?.remove(0).1;
            let dt_split = t0.elapsed().as_secs_f64() * 1e3;
            let scale = a.data.iter().fold(0f32, |s, x| s.max(x.abs()));
            worst = worst.max(a.data.iter().zip(&b.data).fold(0f32, |s, (x, y)| s.max((x - y).abs())) / scale);
            if run > 0 {
                t_whole.push(dt_whole);
                t_split.push(dt_split);
            }
        }
        println!(
            "{f} frame(s), {objects} object(s), {threads} thread(s): whole graph {:.0} ms, split {:.0} ms per call \
             (medians of {runs}); largest difference {worst:.1e} of the largest value",
            median(t_whole),
            median(t_split)
        );
    }

    // the kernels alone (scaled inputs keep the softmax from saturating)
    let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let mut v = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            f()?;
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(v))
    };
    let small = |seed: u64, shape: &[usize]| rand(seed, shape).data.into_iter().map(|x| x * 0.1).collect::<Vec<f32>>();
    let n = e * e;
    let (q, k, v) = (small(seed + 6, &[n, c]), small(seed + 7, &[n, c]), rand(seed + 8, &[n, c]).data);
    let shape = self_attention::Shape { batch: 1, n, m: n, d: c, dv: c };
    let ms = timed(&mut || self_attention::attend(&q, &k, &v, shape, threads).map(drop).map_err(Into::into))?;
    println!("self-attention kernel, {n} queries x {n} keys x {c}: {ms:.1} ms (median of {runs})");
    let rope = AxialRope::new(c, e, e, cfg.memory_attention.rope_theta);
    let tables = LayerTables::new(
        Dims { d: c, kv: m, e },
        &small(seed + 9, &[c, m]),
        &small(seed + 10, &[c]),
        &rope.cos,
        &rope.sin,
    )?;
    for f in std::iter::once(0).chain(frames.iter().copied()) {
        let p = if f == 0 { 1 } else { 4 * f };
        let (mk, mv) = (rand(seed + 11, &[f * n, m]).data, rand(seed + 12, &[f * n, m]).data);
        let (pk, pv) = (rand(seed + 13, &[p, m]).data, rand(seed + 14, &[p, m]).data);
        let call =
            Call { q: &q, bq: 1, mem_k: &mk, mem_v: &mv, ptr_k: &pk, ptr_v: &pv, objects: 1, frames: f, pointers: p };
        let ms = timed(&mut || attend(&tables, &call, threads).map(drop).map_err(Into::into))?;
        println!("cross-attention kernel, 1 object, {f} frame(s), {p} pointer token(s): {ms:.1} ms per layer (median of {runs})");
    }
    Ok(())
}
