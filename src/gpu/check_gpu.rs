//! The device half of `tamrt gpu-check` (feature `cuda`). Ran on an H200 (2026-11-28),
//! every check passing bit-exact.

use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use half::bf16;

use super::bank::{BankKey, DeviceBank, GatherObject};
use super::check::{compare_f32, compare_u8, first_diff, median, CheckItem, CheckOptions, CheckReport};
use super::device::{cuda_err, Gpu, Postprocessor, Preprocessor};
use super::plan::SplitMix;
use crate::error::{Error, ErrorKind, Result};
use crate::tracker::frames::{normalize_resized, preprocess, RgbFrame};
use crate::tracker::mem_inputs::{self, MemInputs, MemLayout, ObjectSelection};
use crate::tracker::memory_bank::MaskMem;
use crate::tracker::resize::{bilinear, pil_resize_rgb8};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Relative tolerance of the bilinear logits (see the module docs of `check`).
const BILINEAR_REL: f32 = 1e-6;

/// Median ms of `f` on the stream, between two timing events (after one warm-up run).
fn time_gpu(gpu: &Gpu, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let ctx = gpu.context();
    let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| cuda_err("event", e))?;
    let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| cuda_err("event", e))?;
    f()?;
    gpu.synchronize()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        start.record(gpu.stream()).map_err(|e| cuda_err("event record", e))?;
        f()?;
        end.record(gpu.stream()).map_err(|e| cuda_err("event record", e))?;
        end.synchronize().map_err(|e| cuda_err("event synchronize", e))?;
        t.push(start.elapsed_ms(&end).map_err(|e| cuda_err("event time", e))? as f64);
    }
    Ok(median(&mut t))
}

/// Median wall ms of `f` followed by a stream synchronisation (after one warm-up run).
fn time_wall(gpu: Option<&Gpu>, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    if let Some(g) = gpu {
        g.synchronize()?;
    }
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        if let Some(g) = gpu {
            g.synchronize()?;
        }
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut t))
}

pub fn run(opts: &CheckOptions) -> Result<CheckReport> {
    let gpu = Gpu::new(opts.device)?;
    let mut rng = SplitMix(opts.seed);
    let mut items = Vec::new();
    for (w, h) in [(1920, 1080), (640, 480)] {
        items.push(check_preprocess(&gpu, opts, &mut rng, w, h)?);
    }
    let m4 = 256;
    for (h, w) in [(1080, 1920), (480, 640)] {
        items.push(check_postprocess(&gpu, opts, &mut rng, m4, h, w, 3)?);
    }
    // SAM 2 / 2.1 (channel-major [64, 64, 64] memories, projected pointer encodings) and
    // EdgeTAM (512 perceiver tokens, token-major; no pointer encodings).
    items.push(check_bank(&gpu, opts, &mut rng, "SAM 2", MemLayout::new(64, 256, 64 * 64, false, 7), true)?);
    items.push(check_bank(&gpu, opts, &mut rng, "EdgeTAM", MemLayout::new(64, 256, 512, true, 7), false)?);
    items.push(check_resident(&gpu, opts, &mut rng)?);
    items.push(check_store(&gpu, opts, &mut rng)?);
    items.push(check_frame_ops(&gpu, opts, &mut rng)?);
    Ok(CheckReport { device: gpu.name().to_string(), size: opts.size, runs: opts.runs, seed: opts.seed, items })
}

fn check_preprocess(gpu: &Gpu, opts: &CheckOptions, rng: &mut SplitMix, w: usize, h: usize) -> Result<CheckItem> {
    let s = opts.size;
    let frame = RgbFrame { width: w, height: h, data: rng.bytes(w * h * 3) };
    let want_rgb = pil_resize_rgb8(&frame.data, w, h, s, s);
    let want = normalize_resized(&want_rgb, s, MEAN, STD);
    let mut pre = Preprocessor::new(gpu, s, MEAN, STD)?;
    pre.run(gpu, &frame.data, w, h, true)?;
    let got_rgb = pre.download_rgb(gpu)?;
    let got = pre.download(gpu)?;
    let (rgb_max, rgb_bad) = compare_u8(&got_rgb, &want_rgb);
    let (f_max, f_bad, _) = compare_f32(&got, &want, 0.0);
    let gpu_kernel_ms = time_gpu(gpu, opts.runs, || pre.run_uploaded(gpu, w, h, false))?;
    let gpu_wall_ms = time_wall(Some(gpu), opts.runs, || pre.run(gpu, &frame.data, w, h, false))?;
    let cpu_ms = time_wall(None, opts.runs, || {
        std::hint::black_box(preprocess(&frame, s, MEAN, STD));
        Ok(())
    })?;
    Ok(CheckItem {
        name: format!("preprocess {w}x{h} -> {s}x{s}"),
        count: got.len(),
        max_abs_err: f_max.max(rgb_max),
        mismatches: rgb_bad + f_bad,
        tolerance: "bit-exact (u8 resize, fp32 normalised)".into(),
        passed: rgb_bad == 0 && f_bad == 0,
        gpu_kernel_ms,
        gpu_wall_ms,
        cpu_ms,
        note: format!(
            "resized u8: {rgb_bad} of {} values differ (max {rgb_max}); normalised fp32: {f_bad} differ (max {f_max:.3e}); \
             gpu wall includes the frame upload (pageable memory)",
            got_rgb.len()
        ),
    })
}

fn random_logits(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 97 {
            0 => 0.0,
            1 => -0.0,
            2 => rng.uniform(-1e-6, 1e-6),
            _ => rng.uniform(-20.0, 20.0),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check_postprocess(
    gpu: &Gpu,
    opts: &CheckOptions,
    rng: &mut SplitMix,
    m4: usize,
    h: usize,
    w: usize,
    b: usize,
) -> Result<CheckItem> {
    let low = random_logits(rng, b * m4 * m4);
    let cpu = |low: &[f32]| -> (Vec<f32>, Vec<u8>) {
        let mut logits = Vec::with_capacity(b * h * w);
        for p in low.chunks(m4 * m4) {
            logits.extend(bilinear(p, m4, m4, h, w));
        }
        let mask = logits.iter().map(|&v| u8::from(v > 0.0)).collect();
        (logits, mask)
    };
    let (want, want_mask) = cpu(&low);
    let mut post = Postprocessor::new();
    post.run_host(gpu, &low, b, (m4, m4), (h, w), true)?;
    let (mut got, mut got_mask) = (Vec::new(), Vec::new());
    post.download_logits(gpu, &mut got)?;
    post.download_masks(gpu, &mut got_mask)?;
    let (max, bad, over) = compare_f32(&got, &want, BILINEAR_REL);
    let (_, mask_bad) = compare_u8(&got_mask, &want_mask);
    // a mask may differ only where the reference logit is within the tolerance of 0
    let mask_bad_far =
        got_mask.iter().zip(&want_mask).zip(&want).filter(|((g, wm), v)| g != wm && v.abs() > BILINEAR_REL).count();
    let gpu_kernel_ms = time_gpu(gpu, opts.runs, || post.run(gpu, b, (m4, m4), (h, w), false))?;
    let mut masks = Vec::new();
    let gpu_wall_ms = time_wall(Some(gpu), opts.runs, || {
        post.run_host(gpu, &low, b, (m4, m4), (h, w), false)?;
        post.download_masks(gpu, &mut masks)
    })?;
    let cpu_ms = time_wall(None, opts.runs, || {
        std::hint::black_box(cpu(&low));
        Ok(())
    })?;
    Ok(CheckItem {
        name: format!("postprocess {b}x{m4}x{m4} -> {b}x{h}x{w}"),
        count: got.len(),
        max_abs_err: max,
        mismatches: bad + mask_bad,
        tolerance: format!("logits <= {BILINEAR_REL:e}*max(1,|ref|), expected bit-exact; masks exact away from 0"),
        passed: over == 0 && mask_bad_far == 0,
        gpu_kernel_ms,
        gpu_wall_ms,
        cpu_ms,
        note: format!(
            "logits: {bad} of {} not bit-exact, {over} over tolerance; masks: {mask_bad} differ ({mask_bad_far} away \
             from 0); gpu wall = upload low-res logits + kernel + u8 mask download",
            got.len()
        ),
    })
}

fn random_feats(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    // bf16 rounding edge cases first: ties to even (down / up), overflow to inf,
    // subnormal, -0, inf, NaN
    let special = [
        f32::from_bits(0x3F80_8000),
        f32::from_bits(0x3F81_8000),
        f32::from_bits(0x7F7F_FFFF),
        f32::from_bits(0x0000_8001),
        -0.0,
        f32::INFINITY,
        f32::NAN,
    ];
    (0..n).map(|i| if i < special.len() { special[i] } else { rng.uniform(-4.0, 4.0) }).collect()
}

struct HostFrame {
    key: BankKey,
    mem: Option<MaskMem>,
    ptr: Vec<f32>,
}

/// Store frames, gather for frame `f` (as `select_memories` / `select_pointers` would
/// choose: the conditioning frame 0, the last 6 frames' memories, the last 15 pointers)
/// and compare with the host assembly, twice (the second time after evicting and storing
/// one more frame per object, so that released slots are reused).
fn check_bank(
    gpu: &Gpu,
    opts: &CheckOptions,
    rng: &mut SplitMix,
    label: &str,
    layout: MemLayout,
    proj: bool,
) -> Result<CheckItem> {
    let (m, c, per) = (layout.m, layout.c, layout.per_frame());
    let n_obj = 3;
    let maskmem_pos: Vec<f32> = (0..per).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let tpos_enc: Vec<f32> = (0..layout.num_maskmem * m).map(|_| rng.uniform(-0.1, 0.1)).collect();
    let projection = proj.then(|| {
        let w: Vec<f32> = (0..m * c).map(|_| rng.uniform(-0.06, 0.06)).collect();
        let b: Vec<f32> = (0..m).map(|_| rng.uniform(-0.02, 0.02)).collect();
        (w, b)
    });
    let mut bank = DeviceBank::new(gpu, layout, &maskmem_pos, &tpos_enc)?;
    let mut host: Vec<HostFrame> = Vec::new();
    let mut staging = gpu.alloc::<f32>(per + c, "staging")?;
    let mut store =
        |bank: &mut DeviceBank, host: &mut Vec<HostFrame>, rng: &mut SplitMix, key: BankKey, with_mem: bool| {
            let feats = with_mem.then(|| random_feats(rng, per));
            let ptr: Vec<f32> = (0..c).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mem = feats.as_ref().map(|f| MaskMem::from_f32(f));
            if key.cond {
                bank.store_host(gpu, key, mem.as_ref().map(|m| &m.0[..]), &ptr)?;
            } else {
                // the tracker's path: features already on the device, bf16 conversion there
                if let Some(f) = &feats {
                    gpu.copy_in(f, &mut staging, "features")?;
                }
                let mut p = gpu.alloc::<f32>(c, "pointer")?;
                gpu.copy_in(&ptr, &mut p, "pointer")?;
                let fv = staging.slice(0..per);
                bank.store_device(gpu, key, feats.as_ref().map(|_| &fv), &p.slice(0..c))?;
                gpu.synchronize()?;
            }
            host.push(HostFrame { key, mem, ptr });
            Ok::<(), Error>(())
        };
    for obj in 0..n_obj {
        store(&mut bank, &mut host, rng, BankKey { obj, frame: 0, cond: true }, true)?;
        for frame in 5..20 {
            store(&mut bank, &mut host, rng, BankKey { obj, frame, cond: false }, frame >= 14)?;
        }
    }
    let mut worst = (0f64, 0usize, 0usize);
    let mut bf16_bad = 0;
    // the device's bf16 conversion against MaskMem::from_f32, on every device-stored frame
    for hf in host.iter().filter(|h| !h.key.cond && h.mem.is_some()) {
        let got = bank.download_maskmem(gpu, &hf.key)?;
        let want = hf.mem.as_ref().expect("filtered");
        bf16_bad += got.iter().zip(&want.0).filter(|(g, w)| **g != w.to_bits()).count();
    }
    let mut timings = (0.0, 0.0, 0.0);
    for f in [20usize, 21] {
        if f == 21 {
            // move on one frame: frame 14's memory and frame 5's pointer fall out of the
            // window; frame 20 is stored
            host.retain_mut(|h| {
                if !h.key.cond && h.key.frame == 14 {
                    h.mem = None;
                }
                h.key.cond || h.key.frame > 5
            });
            let keep: Vec<(BankKey, bool)> = host.iter().map(|h| (h.key, h.mem.is_some())).collect();
            bank.retain(|k| keep.iter().find(|(hk, _)| hk == k).map_or((false, false), |&(_, mem)| (mem, true)));
            for obj in 0..n_obj {
                store(&mut bank, &mut host, rng, BankKey { obj, frame: 20, cond: false }, true)?;
            }
        }
        let (objs_dev, pos_rows, want) = select(&host, &layout, f, n_obj, projection.as_ref(), &maskmem_pos, &tpos_enc);
        bank.gather(gpu, &objs_dev, &pos_rows)?;
        let got = bank.download(gpu)?;
        for (g, w) in [
            (&got.memory, &want.memory),
            (&got.memory_pos, &want.memory_pos),
            (&got.ptrs, &want.ptrs),
            (&got.ptrs_pos, &want.ptrs_pos),
        ] {
            if g.len() != w.len() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("memory gather: {} values, expected {}", g.len(), w.len()),
                ));
            }
            let (max, bad, _) = compare_f32(g, w, 0.0);
            worst = (worst.0.max(max), worst.1 + bad, worst.2 + g.len());
        }
        if f == 21 {
            let gk = time_gpu(gpu, opts.runs, || bank.gather(gpu, &objs_dev, &pos_rows).map(|_| ()))?;
            let gw = time_wall(Some(gpu), opts.runs, || bank.gather(gpu, &objs_dev, &pos_rows).map(|_| ()))?;
            let cpu = time_wall(None, opts.runs, || {
                std::hint::black_box(select(&host, &layout, f, n_obj, projection.as_ref(), &maskmem_pos, &tpos_enc));
                Ok(())
            })?;
            timings = (gk, gw, cpu);
        }
    }
    let ((mem_used, mem_cap), (ptr_used, ptr_cap)) = bank.usage();
    Ok(CheckItem {
        name: format!("memory bank {label} ({n_obj} obj, {}x{} tok)", 7, layout.n_tok),
        count: worst.2,
        max_abs_err: worst.0,
        mismatches: worst.1 + bf16_bad,
        tolerance: "bit-exact (bf16 store, gather, pos add)".into(),
        passed: worst.1 == 0 && bf16_bad == 0,
        gpu_kernel_ms: timings.0,
        gpu_wall_ms: timings.1,
        cpu_ms: timings.2,
        note: format!(
            "{bf16_bad} bf16 values differ from MaskMem::from_f32; slots used/allocated: memories {mem_used}/{mem_cap}, \
             pointers {ptr_used}/{ptr_cap} ({:.1} MB); gpu wall = table upload + gather; cpu = selection + \
             mem_inputs::assemble",
            bank.bytes() as f64 / 1e6
        ),
    })
}

/// Device tensors as the TensorRT sessions pass them between engines: SAM 2-sized image
/// features (`vision_feat` and the high-res maps) and three objects' memory-attention
/// outputs, uploaded to pooled buffers, the outputs concatenated on the device (the
/// decoder's batch), copied back and compared bit for bit; then the same frame again,
/// `runs` times, which must not allocate (the pool hands the dropped buffers back).
fn check_resident(gpu: &Gpu, opts: &CheckOptions, rng: &mut SplitMix) -> Result<CheckItem> {
    use crate::backend::{Resident, Value};
    use crate::weights::TensorF32;
    let pool = super::resident::DevicePool::new(gpu.stream().clone());
    let e = opts.size / 16;
    let shapes = [vec![1, 256, e, e], vec![1, 32, 4 * e, 4 * e], vec![1, 64, 2 * e, 2 * e]];
    let host: Vec<TensorF32> =
        shapes.iter().map(|s| TensorF32::new(s.clone(), random_feats(rng, s.iter().product()))).collect();
    let objs: Vec<TensorF32> =
        (0..3).map(|_| TensorF32::new(vec![1, 256, e, e], random_feats(rng, 256 * e * e))).collect();
    let frame = || -> Result<(Vec<TensorF32>, TensorF32)> {
        let feats = host.iter().map(|t| pool.upload(t, "feature")).collect::<Result<Vec<_>>>()?;
        let parts = objs
            .iter()
            .map(|t| Ok(Value::Resident(std::sync::Arc::new(pool.upload(t, "pix_feat_with_mem")?))))
            .collect::<Result<Vec<_>>>()?;
        let embed = Value::concat(parts)?;
        let back = feats.iter().map(|d| d.to_host()).collect::<Result<Vec<_>>>()?;
        Ok((back, embed.to_host()?.into_owned()))
    };
    let (back, embed) = frame()?;
    let mut want_embed = Vec::new();
    for o in &objs {
        want_embed.extend_from_slice(&o.data);
    }
    let mut worst = (0f64, 0usize, 0usize);
    for (got, want) in back
        .iter()
        .map(|t| &t.data[..])
        .chain([&embed.data[..]])
        .zip(host.iter().map(|t| &t.data[..]).chain([&want_embed[..]]))
    {
        let (m, d, _) = compare_f32(got, want, 0.0);
        worst = (worst.0.max(m), worst.1 + d, worst.2 + got.len());
    }
    let shape_ok = embed.shape == vec![3, 256, e, e];
    let allocs = pool.allocations();
    let wall = time_wall(Some(gpu), opts.runs, || frame().map(|_| ()))?;
    let steady = pool.allocations() - allocs;
    Ok(CheckItem {
        name: "resident tensors (pool, concat, round trip)".into(),
        count: worst.2,
        max_abs_err: worst.0,
        mismatches: worst.1 + usize::from(!shape_ok) + steady,
        tolerance: "bit-exact; no allocation after the first frame".into(),
        passed: worst.1 == 0 && shape_ok && steady == 0,
        gpu_kernel_ms: 0.0,
        gpu_wall_ms: wall,
        cpu_ms: 0.0,
        note: format!(
            "{allocs} buffers allocated on the first frame, {steady} in the {} frames after; gpu wall = uploads + concat + \
             downloads of one frame",
            opts.runs + 1
        ),
    })
}

/// The tracker's path through [`super::frame_ops::DeviceFrameOps`]: a 1280×720 frame
/// preprocessed into a pooled device tensor, two objects' resident low-res logits
/// upsampled to S×S (the memory encoder's input) and a frame's output (masks and logits at
/// video size), each against the CPU functions.
fn check_frame_ops(gpu: &Gpu, opts: &CheckOptions, rng: &mut SplitMix) -> Result<CheckItem> {
    use crate::backend::{FrameOps, Value};
    use crate::weights::TensorF32;
    use std::sync::Arc;
    let (s, m4, b, (w, h)) = (opts.size, opts.size / 4, 2, (1280, 720));
    let pool = super::resident::DevicePool::new(gpu.stream().clone());
    let kernels = Arc::new(Gpu::on_stream(gpu.stream().clone())?);
    let mut ops = super::frame_ops::DeviceFrameOps::new(kernels, &pool, s, MEAN, STD)?;
    let frame = RgbFrame { width: w, height: h, data: rng.bytes(w * h * 3) };
    let image = ops.preprocess(&frame.data, w, h)?;
    let (pre_max, pre_bad, _) = compare_f32(&image.to_host()?.data, &preprocess(&frame, s, MEAN, STD), 0.0);
    let low = TensorF32::new(vec![b, 1, m4, m4], random_logits(rng, b * m4 * m4));
    let resident = Value::Resident(Arc::new(pool.upload(&low, "low_res_masks")?));
    let high = ops.upsample(&resident, s, s)?;
    let want_high: Vec<f32> = low.data.chunks_exact(m4 * m4).flat_map(|p| bilinear(p, m4, m4, s, s)).collect();
    let (up_max, _, up_over) = compare_f32(&high.to_host()?.data, &want_high, BILINEAR_REL);
    // hole filling of the resident planes (area 8, the predictor's), then the output from
    // one device plane and one host plane (a prompt's output)
    let filled = ops.fill_holes(&resident, 8)?.to_host()?.into_owned();
    let mut want_filled = low.data.clone();
    let mut scratch = Vec::new();
    for plane in want_filled.chunks_mut(m4 * m4) {
        crate::tracker::ops::fill_holes(plane, m4, m4, 8, &mut scratch);
    }
    let (_, holes_bad, _) = compare_f32(&filled.data, &want_filled, 0.0);
    let parts = [resident.rows(0, 1)?, Value::Host(TensorF32::new(vec![1, 1, m4, m4], low.data[m4 * m4..].to_vec()))];
    let (masks, logits) = ops.postprocess(&parts, (h, w), true)?;
    let want_out: Vec<f32> = low.data.chunks_exact(m4 * m4).flat_map(|p| bilinear(p, m4, m4, h, w)).collect();
    let (out_max, _, out_over) = compare_f32(logits.as_deref().unwrap_or(&[]), &want_out, BILINEAR_REL);
    let mask_bad =
        masks.iter().zip(&want_out).filter(|(&m, &v)| m != u8::from(v > 0.0) && v.abs() > BILINEAR_REL).count();
    let shapes_ok = image.shape() == [1, 3, s, s] && high.shape() == [b, 1, s, s] && masks.len() == want_out.len();
    let bad = pre_bad + up_over + holes_bad + out_over + mask_bad + usize::from(!shapes_ok);
    let wall = time_wall(Some(gpu), opts.runs, || ops.preprocess(&frame.data, w, h).map(|_| ()))?;
    Ok(CheckItem {
        name: format!("frame ops ({w}x{h} frame, {b} obj)"),
        count: image.numel() + high.numel() + 2 * want_out.len(),
        max_abs_err: pre_max.max(up_max).max(out_max),
        mismatches: bad,
        tolerance: "preprocess and hole filling bit-exact; bilinear 1e-6 relative; masks equal away from 0".into(),
        passed: bad == 0,
        gpu_kernel_ms: 0.0,
        gpu_wall_ms: wall,
        cpu_ms: 0.0,
        note: format!(
            "preprocess {pre_bad} differ; upsample {up_over} over tolerance; hole filling {holes_bad} differ; output \
             logits {out_over} over, masks {mask_bad} \
             differ; pool allocations {}; gpu wall = one frame's preprocess into a pooled tensor",
            pool.allocations()
        ),
    })
}

/// The tracker's path into the device bank ([`super::device_store::DeviceBankStore`], SAM 2
/// layout): two objects' memories stored from rows of resident memory-encoder outputs
/// (one from a host value, as when the memory encoder fell back to ONNX Runtime), pointers
/// from the host, gathered into pooled device tensors and compared bit for bit with
/// `mem_inputs::assemble` on the bf16 host memories.
fn check_store(gpu: &Gpu, opts: &CheckOptions, rng: &mut SplitMix) -> Result<CheckItem> {
    use crate::backend::{BankStore, Value};
    use crate::weights::TensorF32;
    use std::sync::Arc;
    let layout = MemLayout::new(64, 256, 64 * 64, false, 7);
    let (per, c, m) = (layout.per_frame(), layout.c, layout.m);
    let maskmem_pos = random_feats(rng, per);
    let tpos_enc: Vec<f32> = (0..7 * m).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let pool = super::resident::DevicePool::new(gpu.stream().clone());
    let kernels = Arc::new(Gpu::on_stream(gpu.stream().clone())?);
    let mut store = super::device_store::DeviceBankStore::new(kernels, &pool, layout, &maskmem_pos, &tpos_enc)?;
    let (n_obj, n_frames) = (2, 3);
    let mut host: Vec<Vec<(MaskMem, Vec<f32>)>> = vec![Vec::new(); n_obj];
    for f in 0..n_frames {
        let batch = TensorF32::new(vec![n_obj, m, 64, 64], random_feats(rng, n_obj * per));
        let resident = Value::Resident(Arc::new(pool.upload(&batch, "maskmem_features")?));
        let on_host = Value::Host(batch.clone());
        for (o, h) in host.iter_mut().enumerate() {
            let ptr: Vec<f32> = (0..c).map(|_| rng.uniform(-2.0, 2.0)).collect();
            let v = if o == 1 && f == 2 { &on_host } else { &resident };
            store.store(BankKey { obj: o, frame: f, cond: f == 0 }, Some((v, o)), &ptr)?;
            h.push((MaskMem::from_f32(&batch.data[o * per..(o + 1) * per]), ptr));
        }
    }
    let key = |obj, frame: usize| BankKey { obj, frame, cond: frame == 0 };
    // frame 3 attends to: conditioning frame 0 (slot 0), frame 2 (t_pos 6), frame 1 (t_pos 5);
    // pointers of frames 0 and 2 with their own encodings
    let mems = [(0usize, 0usize), (2, 6), (1, 5)];
    let pos_rows: Vec<f32> = (0..n_obj * 2 * m).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let objs: Vec<GatherObject> = (0..n_obj)
        .map(|o| GatherObject {
            mems: mems.iter().map(|&(f, t)| (key(o, f), t)).collect(),
            ptrs: vec![(key(o, 0), 2 * o), (key(o, 2), 2 * o + 1)],
        })
        .collect();
    let sels: Vec<ObjectSelection> = (0..n_obj)
        .map(|o| ObjectSelection {
            mems: mems.iter().map(|&(f, t)| (&host[o][f].0 .0[..], t)).collect(),
            ptrs: [(0, 2 * o), (2, 2 * o + 1)]
                .iter()
                .map(|&(f, r)| (&host[o][f].1[..], &pos_rows[r * m..(r + 1) * m]))
                .collect(),
        })
        .collect();
    let want = mem_inputs::assemble(&layout, &maskmem_pos, &tpos_enc, &sels);
    let got = store.gather(&objs, &pos_rows)?;
    let mut worst = (0f64, 0usize, 0usize);
    let mut shapes_ok = true;
    let mut first = None;
    for (name, v, w, tokens) in [
        ("memory", &got[0], &want.memory, 3 * per / m),
        ("memory_pos", &got[1], &want.memory_pos, 3 * per / m),
        ("obj_ptrs", &got[2], &want.ptrs, 2 * layout.split),
        ("obj_ptrs_pos", &got[3], &want.ptrs_pos, 2 * layout.split),
    ] {
        shapes_ok &= v.shape() == [n_obj, tokens, m];
        let host = v.to_host()?;
        let g = &host.data;
        let (mx, d, _) = compare_f32(g, w, 0.0);
        worst = (worst.0.max(mx), worst.1 + d, worst.2 + w.len());
        if first.is_none() {
            first = first_diff(g, w)
                .map(|(i, gb, wb)| format!("; first difference: {name}[{i}] = {gb:#010x}, expected {wb:#010x}"));
        }
    }
    let wall = time_wall(Some(gpu), opts.runs, || store.gather(&objs, &pos_rows).map(|_| ()))?;
    Ok(CheckItem {
        name: format!("device bank store (SAM 2, {n_obj} obj, 3 memories, 2 pointers)"),
        count: worst.2,
        max_abs_err: worst.0,
        mismatches: worst.1 + usize::from(!shapes_ok),
        tolerance: "bit-exact (bf16 store from device rows and host values, gather, pos add)".into(),
        passed: worst.1 == 0 && shapes_ok,
        gpu_kernel_ms: 0.0,
        gpu_wall_ms: wall,
        cpu_ms: 0.0,
        note: format!(
            "{} device bytes in the bank; gpu wall = table upload + gather into pooled tensors{}",
            store.bytes(),
            first.unwrap_or_default()
        ),
    })
}

/// The selection for frame `f` from what `host` holds, as device gather objects and as
/// the host assembly (the reference).
fn select(
    host: &[HostFrame],
    layout: &MemLayout,
    f: usize,
    n_obj: usize,
    proj: Option<&(Vec<f32>, Vec<f32>)>,
    maskmem_pos: &[f32],
    tpos_enc: &[f32],
) -> (Vec<GatherObject>, Vec<f32>, MemInputs) {
    let (m, c) = (layout.m, layout.c);
    let t_diff_max = 15;
    let mut pos_rows: Vec<f32> = Vec::new();
    let mut objs_dev = Vec::new();
    // per object: (features, t_pos) and (index into host, pos row)
    type Picked<'a> = (Vec<(&'a [bf16], usize)>, Vec<(usize, usize)>);
    let mut per_obj: Vec<Picked> = Vec::new();
    for obj in 0..n_obj {
        let mine: Vec<&HostFrame> = host.iter().filter(|h| h.key.obj == obj).collect();
        let mut g = GatherObject::default();
        let mut mems = Vec::new();
        let mut ptrs = Vec::new();
        // conditioning frame (t_pos 0), then t_pos 1..6 = frames f-6 .. f-1
        for h in mine.iter().filter(|h| h.key.cond) {
            g.mems.push((h.key, 0));
            mems.push((&h.mem.as_ref().expect("cond memory").0[..], 0));
        }
        for t_pos in 1..layout.num_maskmem {
            let frame = f - (layout.num_maskmem - t_pos);
            if let Some(h) = mine.iter().find(|h| !h.key.cond && h.key.frame == frame && h.mem.is_some()) {
                g.mems.push((h.key, t_pos));
                mems.push((&h.mem.as_ref().expect("found").0[..], t_pos));
            }
        }
        let mut ptr_sel: Vec<(&HostFrame, i64)> =
            mine.iter().filter(|h| h.key.cond).map(|h| (*h, (f - h.key.frame) as i64)).collect();
        for t_diff in 1..=t_diff_max {
            if let Some(h) = mine.iter().find(|h| !h.key.cond && h.key.frame + t_diff == f) {
                ptr_sel.push((h, t_diff as i64));
            }
        }
        for (h, t_diff) in ptr_sel {
            let tpos_dim = if proj.is_some() { c } else { m };
            let pos = mem_inputs::obj_ptr_pos(t_diff, proj.is_some(), t_diff_max, tpos_dim, proj, m);
            let row = pos_rows.len() / m;
            pos_rows.extend(&pos);
            g.ptrs.push((h.key, row));
            ptrs.push((host.iter().position(|x| std::ptr::eq(x, h)).expect("in host"), row));
        }
        objs_dev.push(g);
        per_obj.push((mems, ptrs));
    }
    let sel: Vec<ObjectSelection> = per_obj
        .iter()
        .map(|(mems, ptrs)| ObjectSelection {
            mems: mems.clone(),
            ptrs: ptrs.iter().map(|&(hi, row)| (&host[hi].ptr[..], &pos_rows[row * m..(row + 1) * m])).collect(),
        })
        .collect();
    let want = mem_inputs::assemble(layout, maskmem_pos, tpos_enc, &sel);
    (objs_dev, pos_rows, want)
}
