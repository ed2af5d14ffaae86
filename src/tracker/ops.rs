//! Small host-side operations of the official predictor that sit between the graphs:
//! hole filling (`fill_holes_in_mask_scores` with the CUDA connected-components kernel's
//! semantics), the `mask_downsample` convolution, the object-pointer temporal encoding
//! (`get_1d_sine_pe` + `obj_ptr_tpos_proj`) and the mask-prompt logits.

use super::resize::bilinear_aa;

/// `fill_holes_in_mask_scores(mask, max_area)` on one `[h, w]` logit plane, in place:
/// 8-connected components of `mask <= 0` with area ≤ `max_area` become 0.1. Returns
/// the number of pixels changed. (This is what sam2 computes with its compiled CUDA
/// extension; without it upstream skips the step with a warning.)
pub fn fill_holes(mask: &mut [f32], h: usize, w: usize, max_area: usize, scratch: &mut Vec<u32>) -> usize {
    if max_area == 0 {
        return 0;
    }
    assert_eq!(mask.len(), h * w);
    // label 0 = unvisited / foreground
    scratch.clear();
    scratch.resize(h * w, 0);
    let labels = scratch;
    let mut stack: Vec<usize> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    let mut next = 0u32;
    let mut changed = 0;
    for start in 0..h * w {
        if mask[start] > 0.0 || mask[start].is_nan() || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.clear();
        members.clear();
        stack.push(start);
        while let Some(p) = stack.pop() {
            members.push(p);
            let (y, x) = (p / w, p % w);
            for dy in -1i64..=1 {
                let yy = y as i64 + dy;
                if yy < 0 || yy >= h as i64 {
                    continue;
                }
                for dx in -1i64..=1 {
                    let xx = x as i64 + dx;
                    if xx < 0 || xx >= w as i64 {
                        continue;
                    }
                    let q = yy as usize * w + xx as usize;
                    if labels[q] == 0 && mask[q] <= 0.0 {
                        labels[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
        if members.len() <= max_area {
            for &p in &members {
                mask[p] = 0.1;
            }
            changed += members.len();
        }
    }
    changed
}

/// `SAM2Base.mask_downsample`: Conv2d(1, 1, kernel 4, stride 4) of an `[s, s]` plane.
pub fn mask_downsample(mask: &[f32], s: usize, weight: &[f32; 16], bias: f32) -> Vec<f32> {
    let o = s / 4;
    let mut out = vec![0f32; o * o];
    for oy in 0..o {
        for ox in 0..o {
            let mut acc = 0f32;
            for ky in 0..4 {
                let row = &mask[(oy * 4 + ky) * s + ox * 4..(oy * 4 + ky) * s + ox * 4 + 4];
                for kx in 0..4 {
                    acc += row[kx] * weight[ky * 4 + kx];
                }
            }
            out[oy * o + ox] = acc + bias;
        }
    }
    out
}

/// `get_1d_sine_pe(pos / t_diff_max, dim)` for one position (fp32 as upstream).
pub fn sine_pe(pos: i64, t_diff_max: usize, dim: usize) -> Vec<f32> {
    let pe_dim = dim / 2;
    let x = pos as f32 / t_diff_max as f32;
    let mut out = vec![0f32; 2 * pe_dim];
    for i in 0..pe_dim {
        let e = 2.0 * (i / 2) as f32 / pe_dim as f32;
        let dim_t = 10000f32.powf(e);
        let v = x / dim_t;
        out[i] = v.sin();
        out[pe_dim + i] = v.cos();
    }
    out
}

/// `y = W x + b` with `W` `[out, in]` row-major.
pub fn linear(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let n_in = x.len();
    b.iter()
        .enumerate()
        .map(|(o, &bo)| {
            let row = &w[o * n_in..(o + 1) * n_in];
            let acc: f64 = row.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
            acc as f32 + bo
        })
        .collect()
}

/// `SAM2Base._use_mask_as_output` logits of a binary `[s, s]` mask: high-res
/// `mask * 20 - 10` and its antialiased bilinear downsampling to `[s/4, s/4]`.
pub fn mask_prompt_logits(mask: &[f32], s: usize) -> (Vec<f32>, Vec<f32>) {
    let high: Vec<f32> = mask.iter().map(|&m| m * 20.0 - 10.0).collect();
    let low = bilinear_aa(&high, s, s, s / 4, s / 4);
    (high, low)
}

/// `add_new_mask`'s resizing of a video-resolution binary mask to `[s, s]`:
/// antialiased bilinear then `>= 0.5` (no resizing when it already is `s × s`).
pub fn mask_to_model_res(mask: &[bool], w: usize, h: usize, s: usize) -> Vec<f32> {
    let m: Vec<f32> = mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    if w == s && h == s {
        return m;
    }
    bilinear_aa(&m, h, w, s, s).into_iter().map(|v| if v >= 0.5 { 1.0 } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_filled_up_to_area() {
        // 6x6 foreground with a 2x2 hole (area 4) and a 3x3 hole (area 9)
        let (h, w) = (8, 12);
        let mut m = vec![1f32; h * w];
        for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            m[y * w + x] = -1.0;
        }
        for y in 4..7 {
            for x in 6..9 {
                m[y * w + x] = -2.0;
            }
        }
        let mut s = Vec::new();
        assert_eq!(fill_holes(&mut m, h, w, 8, &mut s), 4);
        assert_eq!(m[w + 1], 0.1);
        assert_eq!(m[5 * w + 7], -2.0);
        // diagonal neighbours join (8-connectivity): two single pixels touching at a corner
        let mut d = vec![1f32; 9];
        d[0] = -1.0;
        d[4] = -1.0;
        assert_eq!(fill_holes(&mut d, 3, 3, 1, &mut s), 0);
        assert_eq!(fill_holes(&mut d, 3, 3, 2, &mut s), 2);
    }

    #[test]
    fn sine_pe_layout() {
        let pe = sine_pe(0, 15, 8);
        assert_eq!(&pe[..4], &[0.0; 4]);
        assert_eq!(&pe[4..], &[1.0; 4]);
    }
}
