//! Exact ports of the resampling the official predictor does outside the network:
//!
//! - [`pil_resize_rgb8`]: Pillow's `Image.resize((S, S))` with its default filter
//!   (bicubic, a = −0.5) for 8-bit RGB, as in `libImaging/Resample.c`: separable,
//!   horizontal pass first (only over the rows the vertical pass reads), coefficients
//!   normalised in double precision and then quantised to 22-bit fixed point, each pass
//!   rounded and clipped to 8 bits. Bit-exact with Pillow (checked against Pillow 13 by
//!   `tests/tracker.rs`).
//! - [`bilinear`]: `torch.nn.functional.interpolate(x, size, mode="bilinear",
//!   align_corners=False)` (no antialias) on one fp32 plane, as ATen's CPU kernel
//!   (`compute_indices_weights_linear`: fp32 source index, clamped at 0).
//! - [`bilinear_aa`]: the same with `antialias=True` (ATen's separable
//!   `_upsample_bilinear2d_aa`: triangle filter widened by the scale, normalised weights,
//!   width pass first, fp32).

/// Pillow's `PRECISION_BITS` for 8-bit images.
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    // Resample.c `bicubic_filter` with a = -0.5
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index, tap count and `ksize` fixed-point weights
/// (also the tables the GPU resize reads, see `crate::gpu::plan`).
pub(crate) struct Coeffs {
    pub ksize: usize,
    pub bounds: Vec<(usize, usize)>,
    pub weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box [0, in_size).
pub(crate) fn pil_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let in0 = 0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, weights }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((out_w, out_h))` (bicubic) of an RGB8 image stored row-major
/// `[h][w][3]`.
pub fn pil_resize_rgb8(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h * 3, "pil_resize_rgb8: buffer size");
    if w == out_w && h == out_h {
        return src.to_vec();
    }
    let need_h = out_w != w;
    let need_v = out_h != h;
    let cv = pil_coeffs(h, out_h);
    // rows the vertical pass reads
    let (y_first, y_last) = if need_v {
        let first = cv.bounds[0].0;
        let (lmin, ln) = cv.bounds[out_h - 1];
        (first, lmin + ln)
    } else {
        (0, h)
    };
    let half = 1i32 << (PRECISION_BITS - 1);
    let (tmp, tmp_rows, row0) = if need_h {
        let ch = pil_coeffs(w, out_w);
        let rows = y_last - y_first;
        let mut tmp = vec![0u8; rows * out_w * 3];
        for r in 0..rows {
            let srow = &src[(y_first + r) * w * 3..(y_first + r + 1) * w * 3];
            let drow = &mut tmp[r * out_w * 3..(r + 1) * out_w * 3];
            for xx in 0..out_w {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + n];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for (x, &kx) in k.iter().enumerate() {
                    let p = (xmin + x) * 3;
                    s0 = s0.wrapping_add(srow[p] as i32 * kx);
                    s1 = s1.wrapping_add(srow[p + 1] as i32 * kx);
                    s2 = s2.wrapping_add(srow[p + 2] as i32 * kx);
                }
                drow[xx * 3] = clip8(s0);
                drow[xx * 3 + 1] = clip8(s1);
                drow[xx * 3 + 2] = clip8(s2);
            }
        }
        (tmp, rows, y_first)
    } else {
        (src.to_vec(), h, 0)
    };
    if !need_v {
        debug_assert_eq!(tmp_rows, out_h);
        return tmp;
    }
    let mut out = vec![0u8; out_w * out_h * 3];
    let row_len = out_w * 3;
    for yy in 0..out_h {
        let (ymin, n) = cv.bounds[yy];
        let ymin = ymin - row0;
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
        let drow = &mut out[yy * row_len..(yy + 1) * row_len];
        for (i, d) in drow.iter_mut().enumerate() {
            let mut s = half;
            for (y, &ky) in k.iter().enumerate() {
                s = s.wrapping_add(tmp[(ymin + y) * row_len + i] as i32 * ky);
            }
            *d = clip8(s);
        }
    }
    out
}

/// Source indices and weights of ATen's linear (non-antialiased) interpolation along one
/// axis, align_corners=False, no explicit scale factor: per output index `(i0, i1, w0, w1)`.
pub(crate) fn linear_weights(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let mut src = scale * (i as f32 + 0.5) - 0.5;
            if src < 0.0 {
                src = 0.0;
            }
            let i0 = (src.floor() as usize).min(in_size - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `F.interpolate(x[None, None], (out_h, out_w), mode="bilinear", align_corners=False)`
/// of one `[h, w]` plane; writes `out` (`out_h * out_w`).
pub fn bilinear_into(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, out: &mut [f32]) {
    assert_eq!(src.len(), h * w);
    assert_eq!(out.len(), out_h * out_w);
    if h == out_h && w == out_w {
        out.copy_from_slice(src);
        return;
    }
    let wy = linear_weights(h, out_h);
    let wx = linear_weights(w, out_w);
    for (oy, &(y0, y1, ly0, ly1)) in wy.iter().enumerate() {
        let r0 = &src[y0 * w..(y0 + 1) * w];
        let r1 = &src[y1 * w..(y1 + 1) * w];
        let orow = &mut out[oy * out_w..(oy + 1) * out_w];
        for (o, &(x0, x1, lx0, lx1)) in orow.iter_mut().zip(wx.iter()) {
            // ATen: outer (height) weights applied to the inner (width) interpolations
            let t0 = r0[x0] * lx0 + r0[x1] * lx1;
            let t1 = r1[x0] * lx0 + r1[x1] * lx1;
            *o = t0 * ly0 + t1 * ly1;
        }
    }
}

/// Allocating form of [`bilinear_into`].
pub fn bilinear(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let mut out = vec![0f32; out_h * out_w];
    bilinear_into(src, h, w, out_h, out_w, &mut out);
    out
}

/// Per output index: first input index and normalised weights (ATen
/// `_compute_indices_min_size_weights_aa`, fp32, align_corners=False).
fn aa_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f32 / out_size as f32;
    let support: f32 = if scale >= 1.0 { scale } else { 1.0 };
    let max_interp = (support.ceil() as usize) * 2 + 1;
    let invscale: f32 = if scale >= 1.0 { (1.0f64 / scale as f64) as f32 } else { 1.0 };
    (0..out_size)
        .map(|i| {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            // fp32 `center ± support`, then `+ 0.5` in double, truncated
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xmax = (((center + support) as f64 + 0.5) as i64).min(in_size as i64);
            let xsize = (xmax - xmin).clamp(0, max_interp as i64) as usize;
            let mut ws = Vec::with_capacity(xsize);
            let mut total = 0f32;
            for j in 0..xsize {
                let d = ((j as i64 + xmin) as f32 - center) as f64 + 0.5;
                let x = (d * invscale as f64) as f32;
                let x = x.abs();
                let w = if x < 1.0 { 1.0 - x } else { 0.0 };
                ws.push(w);
                total += w;
            }
            if total != 0.0 {
                for w in ws.iter_mut() {
                    *w /= total;
                }
            }
            (xmin as usize, ws)
        })
        .collect()
}

/// `F.interpolate(x[None, None], (out_h, out_w), mode="bilinear", align_corners=False,
/// antialias=True)` of one `[h, w]` plane.
pub fn bilinear_aa(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    assert_eq!(src.len(), h * w);
    // width pass (skipped when the width does not change)
    let tmp = if out_w != w {
        let wx = aa_weights(w, out_w);
        let mut tmp = vec![0f32; h * out_w];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (ox, (x0, ws)) in wx.iter().enumerate() {
                let mut acc = 0f32;
                for (j, &wt) in ws.iter().enumerate() {
                    acc += row[x0 + j] * wt;
                }
                tmp[y * out_w + ox] = acc;
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    if out_h == h {
        return tmp;
    }
    let wy = aa_weights(h, out_h);
    let mut out = vec![0f32; out_h * out_w];
    for (oy, (y0, ws)) in wy.iter().enumerate() {
        let orow = &mut out[oy * out_w..(oy + 1) * out_w];
        for (j, &wt) in ws.iter().enumerate() {
            let r = &tmp[(y0 + j) * out_w..(y0 + j + 1) * out_w];
            if j == 0 {
                for (o, &v) in orow.iter_mut().zip(r) {
                    *o = v * wt;
                }
            } else {
                for (o, &v) in orow.iter_mut().zip(r) {
                    *o += v * wt;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_identity_and_constant() {
        let img: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(pil_resize_rgb8(&img, 5, 4, 5, 4), img);
        let c = vec![77u8; 9 * 6 * 3];
        assert!(pil_resize_rgb8(&c, 9, 6, 32, 32).iter().all(|&v| v == 77));
        assert!(pil_resize_rgb8(&c, 9, 6, 3, 2).iter().all(|&v| v == 77));
    }

    #[test]
    fn bilinear_constant_and_identity() {
        let x = vec![2.5f32; 6 * 4];
        assert!(bilinear(&x, 6, 4, 13, 3).iter().all(|&v| (v - 2.5).abs() < 1e-6));
        assert!(bilinear_aa(&x, 6, 4, 2, 3).iter().all(|&v| (v - 2.5).abs() < 1e-6));
        let y: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(bilinear(&y, 3, 4, 3, 4), y);
    }
}
