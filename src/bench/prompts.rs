//! Prompts derived from a ground-truth mask (the first annotated frame of each object).
//!
//! * `mask`: the mask itself (`add_new_mask`, as the official `vos_inference.py`).
//! * `points` (`--num-points K`, default 1): K positive clicks inside the mask. The first
//!   is the pixel farthest from the background (maximum of the exact Euclidean distance
//!   transform, pixels outside the frame counting as background); each next one maximises
//!   `min(distance to background, distance to the points already chosen)`. Ties go to
//!   the first pixel in raster order (row by row, left to right). Coordinates are the
//!   pixel's column and row (`x`, `y`), as `cv2.distanceTransform` + `argmax` give them.
//! * `bbox`: the tight box `[x_min, y_min, x_max, y_max]` of the mask's pixels
//!   (inclusive pixel indices, as `sam2.utils.misc.mask_to_box`).

use crate::error::{Error, ErrorKind, Result};
use crate::tracker::Prompt;

/// How objects are prompted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptMode {
    Mask,
    Points(usize),
    Bbox,
}

impl PromptMode {
    /// `mask`, `points` (with `num_points` clicks) or `bbox` / `box`.
    pub fn parse(s: &str, num_points: usize) -> Result<PromptMode> {
        match s {
            "mask" => Ok(PromptMode::Mask),
            "points" | "point" => {
                if num_points == 0 {
                    return Err(Error::new(ErrorKind::InvalidInput, "--num-points must be at least 1"));
                }
                Ok(PromptMode::Points(num_points))
            }
            "bbox" | "box" => Ok(PromptMode::Bbox),
            _ => Err(Error::new(ErrorKind::InvalidInput, format!("unknown prompt '{s}' (mask, points, bbox)"))),
        }
    }

    /// Short name for settings and reports: `mask`, `points1`, `bbox`.
    pub fn label(self) -> String {
        match self {
            PromptMode::Mask => "mask".into(),
            PromptMode::Points(n) => format!("points{n}"),
            PromptMode::Bbox => "bbox".into(),
        }
    }
}

/// Squared Euclidean distance of each pixel to the nearest background pixel (0 on
/// background), pixels outside the image counting as background. Felzenszwalb &
/// Huttenlocher's separable algorithm on the image padded by one background pixel.
pub fn distance_transform_sq(mask: &[bool], w: usize, h: usize) -> Vec<u64> {
    let (pw, ph) = (w + 2, h + 2);
    const INF: u64 = u64::MAX / 4;
    let mut g = vec![0u64; pw * ph];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                g[(y + 1) * pw + x + 1] = INF;
            }
        }
    }
    let mut f = Vec::new();
    let mut d = Vec::new();
    // columns, then rows
    for x in 0..pw {
        f.clear();
        f.extend((0..ph).map(|y| g[y * pw + x]));
        edt_1d(&f, &mut d);
        for y in 0..ph {
            g[y * pw + x] = d[y];
        }
    }
    let mut out = vec![0u64; w * h];
    for y in 1..=h {
        f.clear();
        f.extend_from_slice(&g[y * pw..(y + 1) * pw]);
        edt_1d(&f, &mut d);
        out[(y - 1) * w..y * w].copy_from_slice(&d[1..=w]);
    }
    out
}

/// 1-D squared distance transform of a sampled function (lower envelope of parabolas).
fn edt_1d(f: &[u64], d: &mut Vec<u64>) {
    let n = f.len();
    d.clear();
    d.resize(n, 0);
    const INF: u64 = u64::MAX / 4;
    let sites: Vec<usize> = (0..n).filter(|&q| f[q] < INF).collect();
    if sites.is_empty() {
        d.iter_mut().for_each(|v| *v = INF);
        return;
    }
    // envelope with exact rational intersections: s(q, p) = ((f[q]+q²) - (f[p]+p²)) / (2(q-p))
    let mut v: Vec<usize> = Vec::with_capacity(sites.len());
    let mut z: Vec<f64> = Vec::with_capacity(sites.len() + 1);
    let isect = |q: usize, p: usize| -> f64 {
        ((f[q] + (q * q) as u64) as f64 - (f[p] + (p * p) as u64) as f64) / (2.0 * (q as f64 - p as f64))
    };
    for &q in &sites {
        loop {
            match v.last() {
                None => {
                    v.push(q);
                    z.clear();
                    z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    let s = isect(q, p);
                    if s <= *z.last().expect("z") {
                        v.pop();
                        z.pop();
                        if v.is_empty() {
                            continue;
                        }
                    } else {
                        v.push(q);
                        z.push(s);
                        break;
                    }
                }
            }
        }
    }
    let mut k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while k + 1 < v.len() && z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dx = q.abs_diff(p) as u64;
        *dq = dx * dx + f[p];
    }
}

/// Up to `n` interior points (x, y) of `mask` by the rule in the module docs.
pub fn interior_points(mask: &[bool], w: usize, h: usize, n: usize) -> Vec<[usize; 2]> {
    let dt = distance_transform_sq(mask, w, h);
    let mut score = dt.clone();
    let mut pts = Vec::new();
    while pts.len() < n {
        let mut best = (0u64, usize::MAX);
        for (i, &s) in score.iter().enumerate() {
            if s > best.0 {
                best = (s, i);
            }
        }
        if best.1 == usize::MAX {
            break;
        }
        let (px, py) = (best.1 % w, best.1 / w);
        pts.push([px, py]);
        for (i, s) in score.iter_mut().enumerate() {
            let (x, y) = ((i % w) as u64, (i / w) as u64);
            let d = (x.abs_diff(px as u64)).pow(2) + (y.abs_diff(py as u64)).pow(2);
            *s = (*s).min(d);
        }
    }
    pts
}

/// Tight box `[x_min, y_min, x_max, y_max]` (inclusive) of the mask, `None` if empty.
pub fn mask_box(mask: &[bool], w: usize, h: usize) -> Option<[usize; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                let bb = b.get_or_insert([x, y, x, y]);
                bb[0] = bb[0].min(x);
                bb[1] = bb[1].min(y);
                bb[2] = bb[2].max(x);
                bb[3] = bb[3].max(y);
            }
        }
    }
    b
}

/// The tracker prompt for one object from its mask on `frame`.
pub fn make_prompt(mode: PromptMode, frame: usize, obj_id: u32, w: usize, h: usize, mask: &[bool]) -> Result<Prompt> {
    let empty = || Error::new(ErrorKind::InvalidInput, format!("object {obj_id}: the mask on frame {frame} is empty"));
    match mode {
        PromptMode::Mask => Prompt::mask(frame, obj_id, w, h, mask.to_vec()),
        PromptMode::Points(n) => {
            let pts = interior_points(mask, w, h, n);
            if pts.is_empty() {
                return Err(empty());
            }
            let coords: Vec<[f32; 2]> = pts.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
            Prompt::points_or_box(frame, obj_id, &coords, &vec![1; coords.len()], None)
        }
        PromptMode::Bbox => {
            let b = mask_box(mask, w, h).ok_or_else(empty)?;
            Prompt::points_or_box(frame, obj_id, &[], &[], Some(b.map(|v| v as f32)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(mask: &[bool], w: usize, h: usize) -> Vec<u64> {
        let mut out = vec![0; w * h];
        for y in 0..h {
            for x in 0..w {
                if !mask[y * w + x] {
                    continue;
                }
                let mut best = u64::MAX;
                // background: zero pixels and the ring outside the image
                for by in -1..=h as i64 {
                    for bx in -1..=w as i64 {
                        let inside = bx >= 0 && by >= 0 && (bx as usize) < w && (by as usize) < h;
                        if inside && mask[by as usize * w + bx as usize] {
                            continue;
                        }
                        let d = ((bx - x as i64).pow(2) + (by - y as i64).pow(2)) as u64;
                        best = best.min(d);
                    }
                }
                out[y * w + x] = best;
            }
        }
        out
    }

    #[test]
    fn edt_matches_brute_force() {
        let (w, h) = (13, 9);
        let mut s = 12345u64;
        for _ in 0..20 {
            let mask: Vec<bool> = (0..w * h)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    !(s >> 33).is_multiple_of(4)
                })
                .collect();
            assert_eq!(distance_transform_sq(&mask, w, h), brute(&mask, w, h));
        }
    }

    #[test]
    fn points_and_box() {
        let (w, h) = (10, 8);
        let mut mask = vec![false; w * h];
        for y in 2..7 {
            for x in 1..6 {
                mask[y * w + x] = true;
            }
        }
        // 5x5 square at x 1..=5, y 2..=6: centre (3, 4)
        assert_eq!(interior_points(&mask, w, h, 1), vec![[3, 4]]);
        let pts = interior_points(&mask, w, h, 3);
        assert_eq!(pts.len(), 3);
        assert!(pts.iter().all(|p| mask[p[1] * w + p[0]]));
        assert_eq!(mask_box(&mask, w, h), Some([1, 2, 5, 6]));
        assert_eq!(mask_box(&[false; 4], 2, 2), None);
        assert!(interior_points(&[false; 4], 2, 2, 2).is_empty());
        // ties: a 2x2 square picks its top-left pixel
        let sq = [true, true, true, true];
        assert_eq!(interior_points(&sq, 2, 2, 1), vec![[0, 0]]);
    }
}
