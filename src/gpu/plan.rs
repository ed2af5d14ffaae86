//! Host side of the GPU kernels, plain Rust (compiled and unit-tested without CUDA): the
//! tables the kernels read, computed by the CPU reference code paths themselves, launch
//! geometry, and `apply_host` emulations that do the kernels' arithmetic in the kernels'
//! order, so that the tests here pin the tables and the arithmetic to the CPU functions.
//! The memory gather's table is in [`super::gather`] (re-exported here).

pub use super::gather::{gather_host, gather_table, GatherShape};

use crate::error::{Error, ErrorKind, Result};
use crate::tracker::frames::normalize_resized;
use crate::tracker::resize::{linear_weights, pil_coeffs, PRECISION_BITS};

/// `1 << (PRECISION_BITS - 1)`: Pillow's rounding offset.
pub const PIL_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `clip8` of Resample.c: the fixed-point sum to 8 bits.
#[inline]
pub fn pil_clip8(acc: u32) -> u8 {
    ((acc as i32) >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The tables of one Pillow bicubic resize `in_w × in_h → out_w × out_h` of RGB8.
///
/// Two passes as `pil_resize_rgb8`: horizontal over the source rows `row0..row0 + rows`
/// (those the vertical pass reads), then vertical. A pass the CPU skips (same size on that
/// axis) gets identity tables (one tap of weight `1 << PRECISION_BITS`), which reproduce
/// the input exactly: `(PIL_HALF + v << 22) >> 22 == v`.
#[derive(Debug, Clone, PartialEq)]
pub struct PilResizePlan {
    pub in_w: usize,
    pub in_h: usize,
    pub out_w: usize,
    pub out_h: usize,
    /// Taps per output column (row stride of `x_weights`).
    pub kx: usize,
    /// Per output column: first source column, tap count.
    pub x_bounds: Vec<i32>,
    pub x_weights: Vec<i32>,
    pub ky: usize,
    /// Per output row: first row of the horizontal pass's output (relative to `row0`), tap count.
    pub y_bounds: Vec<i32>,
    pub y_weights: Vec<i32>,
    pub row0: usize,
    pub rows: usize,
}

fn identity_tables(n: usize) -> (usize, Vec<i32>, Vec<i32>) {
    let bounds = (0..n).flat_map(|i| [i as i32, 1]).collect();
    (1, bounds, vec![1 << PRECISION_BITS; n])
}

impl PilResizePlan {
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Result<PilResizePlan> {
        if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("resize {in_w}x{in_h} -> {out_w}x{out_h}: empty image"),
            ));
        }
        let (ky, y_bounds_abs, y_weights, row0, rows) = if out_h != in_h {
            let cv = pil_coeffs(in_h, out_h);
            let first = cv.bounds[0].0;
            let (lmin, ln) = cv.bounds[out_h - 1];
            let b: Vec<(usize, usize)> = cv.bounds;
            (cv.ksize, b, cv.weights, first, lmin + ln - first)
        } else {
            let (k, b, w) = identity_tables(out_h);
            let b = b.chunks(2).map(|p| (p[0] as usize, p[1] as usize)).collect();
            (k, b, w, 0, in_h)
        };
        let y_bounds = y_bounds_abs.iter().flat_map(|&(ymin, n)| [(ymin - row0) as i32, n as i32]).collect();
        let (kx, x_bounds, x_weights) = if out_w != in_w {
            let ch = pil_coeffs(in_w, out_w);
            (ch.ksize, ch.bounds.iter().flat_map(|&(x, n)| [x as i32, n as i32]).collect(), ch.weights)
        } else {
            identity_tables(out_w)
        };
        Ok(PilResizePlan { in_w, in_h, out_w, out_h, kx, x_bounds, x_weights, ky, y_bounds, y_weights, row0, rows })
    }

    /// The kernels' arithmetic on the host: `pil_horizontal` then `pil_vertical_normalize`
    /// (the RGB8 output it can write).
    pub fn apply_host(&self, src: &[u8]) -> Vec<u8> {
        assert_eq!(src.len(), self.in_w * self.in_h * 3);
        let mut tmp = vec![0u8; self.rows * self.out_w * 3];
        for r in 0..self.rows {
            for xx in 0..self.out_w {
                let (xmin, n) = (self.x_bounds[2 * xx] as usize, self.x_bounds[2 * xx + 1] as usize);
                let k = &self.x_weights[xx * self.kx..];
                let s = &src[((self.row0 + r) * self.in_w + xmin) * 3..];
                let mut a = [PIL_HALF as u32; 3];
                for x in 0..n {
                    let w = k[x] as u32;
                    for (c, acc) in a.iter_mut().enumerate() {
                        *acc = acc.wrapping_add((s[3 * x + c] as u32).wrapping_mul(w));
                    }
                }
                for c in 0..3 {
                    tmp[(r * self.out_w + xx) * 3 + c] = pil_clip8(a[c]);
                }
            }
        }
        let row_len = self.out_w * 3;
        let mut out = vec![0u8; self.out_h * row_len];
        for yy in 0..self.out_h {
            let (ymin, n) = (self.y_bounds[2 * yy] as usize, self.y_bounds[2 * yy + 1] as usize);
            let k = &self.y_weights[yy * self.ky..];
            for xx in 0..self.out_w {
                let mut a = [PIL_HALF as u32; 3];
                for y in 0..n {
                    let p = &tmp[(ymin + y) * row_len + xx * 3..];
                    let w = k[y] as u32;
                    for (c, acc) in a.iter_mut().enumerate() {
                        *acc = acc.wrapping_add((p[c] as u32).wrapping_mul(w));
                    }
                }
                for c in 0..3 {
                    out[yy * row_len + xx * 3 + c] = pil_clip8(a[c]);
                }
            }
        }
        out
    }
}

/// `normalize_resized` as a table: entry `c * 256 + v` is channel `c`'s value for the
/// 8-bit level `v`, computed by `normalize_resized` itself (on a 16×16 ramp image).
pub fn normalize_lut(mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let ramp: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    normalize_resized(&ramp, 16, mean, std)
}

/// The tables of one torch bilinear upsampling (align_corners=False, no antialias)
/// `[in_h, in_w] → [out_h, out_w]`: per output row / column the two source indices and
/// weights of `resize::bilinear`.
#[derive(Debug, Clone, PartialEq)]
pub struct BilinearPlan {
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// Same size: `bilinear` copies (the kernel does a plain copy too).
    pub identity: bool,
    pub y_idx: Vec<i32>,
    pub y_w: Vec<f32>,
    pub x_idx: Vec<i32>,
    pub x_w: Vec<f32>,
}

fn split_linear(in_size: usize, out_size: usize) -> (Vec<i32>, Vec<f32>) {
    let t = linear_weights(in_size, out_size);
    (
        t.iter().flat_map(|&(a, b, _, _)| [a as i32, b as i32]).collect(),
        t.iter().flat_map(|&(_, _, u, v)| [u, v]).collect(),
    )
}

impl BilinearPlan {
    pub fn new(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Result<BilinearPlan> {
        if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("bilinear {in_h}x{in_w} -> {out_h}x{out_w}: empty plane"),
            ));
        }
        let (y_idx, y_w) = split_linear(in_h, out_h);
        let (x_idx, x_w) = split_linear(in_w, out_w);
        let identity = in_h == out_h && in_w == out_w;
        Ok(BilinearPlan { in_h, in_w, out_h, out_w, identity, y_idx, y_w, x_idx, x_w })
    }

    /// The kernel's arithmetic on the host for one plane: logits and the `> 0` mask.
    pub fn apply_host(&self, src: &[f32]) -> (Vec<f32>, Vec<u8>) {
        assert_eq!(src.len(), self.in_h * self.in_w);
        let mut out = vec![0f32; self.out_h * self.out_w];
        if self.identity {
            out.copy_from_slice(src);
        } else {
            for oy in 0..self.out_h {
                let (y0, y1) = (self.y_idx[2 * oy] as usize, self.y_idx[2 * oy + 1] as usize);
                let (ly0, ly1) = (self.y_w[2 * oy], self.y_w[2 * oy + 1]);
                let r0 = &src[y0 * self.in_w..];
                let r1 = &src[y1 * self.in_w..];
                for ox in 0..self.out_w {
                    let (x0, x1) = (self.x_idx[2 * ox] as usize, self.x_idx[2 * ox + 1] as usize);
                    let (lx0, lx1) = (self.x_w[2 * ox], self.x_w[2 * ox + 1]);
                    let t0 = r0[x0] * lx0 + r0[x1] * lx1;
                    let t1 = r1[x0] * lx0 + r1[x1] * lx1;
                    out[oy * self.out_w + ox] = t0 * ly0 + t1 * ly1;
                }
            }
        }
        let mask = out.iter().map(|&v| u8::from(v > 0.0)).collect();
        (out, mask)
    }
}

/// `half::bf16::from_f32` bit for bit (the kernel's `f32_to_bf16`): NaN quieted, round
/// to nearest even.
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((x >> 16) | 0x40) as u16;
    }
    if x & 0x8000 != 0 && x & (3 * 0x8000 - 1) != 0 {
        ((x >> 16) + 1) as u16
    } else {
        (x >> 16) as u16
    }
}

/// `half::bf16::to_f32` bit for bit (the kernel's `bf16_to_f32`).
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    let i = if b & 0x7FFF > 0x7F80 { b as u32 | 0x40 } else { b as u32 };
    f32::from_bits(i << 16)
}

/// Threads per block of the 1-D kernels.
pub const BLOCK_1D: u32 = 256;
/// Largest grid x dimension (2^31 - 1) and y / z dimension (65535).
pub const MAX_GRID_X: u64 = (1 << 31) - 1;
pub const MAX_GRID_YZ: u64 = 65535;

/// Grid of a 1-D launch over `n` elements (`BLOCK_1D` threads a block).
pub fn grid_1d(n: usize) -> Result<(u32, u32, u32)> {
    let blocks = (n as u64).div_ceil(BLOCK_1D as u64).max(1);
    if blocks > MAX_GRID_X {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{n} elements exceed one 1-D launch")));
    }
    Ok((blocks as u32, 1, 1))
}

/// Grid of a 2-D launch over `w × h` (x fastest) with `block` threads, `z` planes.
pub fn grid_2d(w: usize, h: usize, z: usize, block: (u32, u32)) -> Result<(u32, u32, u32)> {
    let gx = (w as u64).div_ceil(block.0 as u64).max(1);
    let gy = (h as u64).div_ceil(block.1 as u64).max(1);
    let gz = (z as u64).max(1);
    if gx > MAX_GRID_X || gy > MAX_GRID_YZ || gz > MAX_GRID_YZ {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("launch of {w}x{h}x{z} exceeds the grid limits (grid {gx}x{gy}x{gz})"),
        ));
    }
    Ok((gx as u32, gy as u32, gz as u32))
}

/// Grid and block dimensions of one kernel launch.
pub type Launch = ((u32, u32, u32), (u32, u32, u32));

/// `pil_horizontal`: x over the S output columns, y over the source rows read.
pub fn launch_pil_horizontal(out_w: usize, rows: usize) -> Result<Launch> {
    Ok((grid_2d(out_w, rows, 1, (128, 1))?, (128, 1, 1)))
}

/// `pil_vertical_normalize` and `bilinear_threshold`: 32×8 threads over the output
/// plane, z over the planes (objects).
pub fn launch_plane(out_w: usize, out_h: usize, planes: usize) -> Result<Launch> {
    Ok((grid_2d(out_w, out_h, planes, (32, 8))?, (32, 8, 1)))
}

/// The 1-D kernels (`f32_to_bf16_kernel`, `gather_memory_token_major`, `gather_ptrs`).
pub fn launch_1d(n: usize) -> Result<Launch> {
    Ok((grid_1d(n)?, (BLOCK_1D, 1, 1)))
}

/// `gather_memory_channel_major`: one block per 32×32 tile of (tokens, channels), z over
/// the `b · n_mem` selected memories.
pub fn launch_gather_channel_major(n_tok: usize, m: usize, planes: usize) -> Result<Launch> {
    let t = GATHER_TILE as u32;
    Ok((grid_2d(n_tok, m, planes, (t, t))?, (t, GATHER_ROWS, 1)))
}

/// Tile side of the channel-major memory gather (a 32×32 transpose through shared memory,
/// blocks of 32×8 threads).
pub const GATHER_TILE: usize = 32;
pub const GATHER_ROWS: u32 = 8;

/// Largest `fill_hole_area` the device kernel handles (its per-thread list of pixels);
/// larger areas are filled on the host.
pub const HOLE_MAX: usize = 64;

/// The `fill_holes_bounded` kernel's arithmetic on one `[h, w]` plane (out of place): a
/// background pixel becomes 0.1 when a breadth-first walk of its 8-connected background
/// component, stopped at `max_area + 1` pixels, ends within `max_area`. Equal to
/// `tracker::ops::fill_holes` (tested below).
pub fn fill_holes_host(src: &[f32], h: usize, w: usize, max_area: usize) -> Vec<f32> {
    let mut out = src.to_vec();
    let mut seen: Vec<usize> = Vec::with_capacity(max_area + 1);
    for y in 0..h {
        for x in 0..w {
            let v = src[y * w + x];
            if v.is_nan() || v > 0.0 || max_area == 0 {
                continue;
            }
            seen.clear();
            seen.push(y * w + x);
            let mut head = 0;
            while head < seen.len() && seen.len() <= max_area {
                let p = seen[head];
                head += 1;
                let (py, px) = ((p / w) as i64, (p % w) as i64);
                'scan: for yy in py - 1..=py + 1 {
                    for xx in px - 1..=px + 1 {
                        if seen.len() > max_area {
                            break 'scan;
                        }
                        if yy < 0 || yy >= h as i64 || xx < 0 || xx >= w as i64 {
                            continue;
                        }
                        let q = yy as usize * w + xx as usize;
                        if src[q] <= 0.0 && !seen.contains(&q) {
                            seen.push(q);
                        }
                    }
                }
            }
            if seen.len() <= max_area {
                out[y * w + x] = 0.1;
            }
        }
    }
    out
}

/// A request for `need` elements takes the smallest free buffer that holds them and is
/// at most twice as large (so a small tensor does not pin a large buffer); None: allocate.
pub fn pick_buffer(free: &[usize], need: usize) -> Option<usize> {
    let need = need.max(1);
    free.iter()
        .enumerate()
        .filter(|(_, &len)| len >= need && len <= 2 * need)
        .min_by_key(|(_, &len)| len)
        .map(|(i, _)| i)
}

/// Fixed-size slots keyed by `K`, reused after release; capacity only grows. The host
/// bookkeeping of the device memory bank.
#[derive(Debug, Clone)]
pub struct SlotPool<K> {
    slots: Vec<Option<K>>,
    free: Vec<usize>,
}

impl<K: PartialEq + Clone> Default for SlotPool<K> {
    fn default() -> Self {
        SlotPool { slots: Vec::new(), free: Vec::new() }
    }
}

impl<K: PartialEq + Clone> SlotPool<K> {
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &K) -> Option<usize> {
        self.slots.iter().position(|s| s.as_ref() == Some(key))
    }

    /// The slot of `key` (existing, a released one, or a new one). Returns the slot and,
    /// when the pool had to grow, the new capacity (the caller grows its device buffers
    /// to it before writing the slot).
    pub fn acquire(&mut self, key: &K) -> (usize, Option<usize>) {
        if let Some(i) = self.get(key) {
            return (i, None);
        }
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(key.clone());
            return (i, None);
        }
        let old = self.slots.len();
        let new = (old * 2).max(8);
        self.slots.resize(new, None);
        self.free.extend((old + 1..new).rev());
        self.slots[old] = Some(key.clone());
        (old, Some(new))
    }

    pub fn release(&mut self, key: &K) -> bool {
        match self.get(key) {
            Some(i) => {
                self.slots[i] = None;
                self.free.push(i);
                true
            }
            None => false,
        }
    }

    /// Undo a growth the device buffers could not follow: drop the free slots at and
    /// beyond `capacity` (slots in use there are kept).
    pub fn shrink_to(&mut self, capacity: usize) {
        let keep = self.slots.iter().rposition(|s| s.is_some()).map_or(0, |i| i + 1).max(capacity);
        if keep < self.slots.len() {
            self.slots.truncate(keep);
            self.free.retain(|&i| i < keep);
        }
    }

    /// Release every key for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|k| !keep(k)) {
                self.slots[i] = None;
                self.free.push(i);
            }
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.slots.iter().flatten()
    }
}

/// SplitMix64, for the seeded inputs of `tamrt gpu-check` and the tests.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::resize::{bilinear, pil_resize_rgb8};
    use half::bf16;

    #[test]
    fn pil_tables_and_kernel_arithmetic_equal_pil_resize() {
        let mut rng = SplitMix(1);
        // the gpu-check sizes, both directions, one-axis and no-op resizes, tiny images
        let cases = [
            (1920, 1080, 1024, 1024),
            (640, 480, 1024, 1024),
            (37, 23, 64, 64),
            (64, 50, 64, 32),
            (50, 64, 32, 64),
            (64, 64, 64, 64),
            (3, 2, 5, 7),
            (1, 1, 4, 4),
            (300, 7, 16, 16),
        ];
        for (w, h, ow, oh) in cases {
            let img = rng.bytes(w * h * 3);
            let p = PilResizePlan::new(w, h, ow, oh).unwrap();
            assert_eq!(p.x_bounds.len(), 2 * ow);
            assert_eq!(p.x_weights.len(), ow * p.kx);
            assert_eq!(p.y_bounds.len(), 2 * oh);
            assert!(p.row0 + p.rows <= h);
            assert_eq!(p.apply_host(&img), pil_resize_rgb8(&img, w, h, ow, oh), "{w}x{h} -> {ow}x{oh}");
        }
        assert!(PilResizePlan::new(0, 4, 8, 8).is_err());
    }

    #[test]
    fn identity_tables_copy_every_level() {
        let p = PilResizePlan::new(256, 1, 256, 1).unwrap();
        assert_eq!((p.kx, p.ky, p.row0, p.rows), (1, 1, 0, 1));
        let img: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
        assert_eq!(p.apply_host(&img), img);
    }

    #[test]
    fn normalize_table_equals_normalize_resized() {
        let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let lut = normalize_lut(mean, std);
        assert_eq!(lut.len(), 3 * 256);
        let s = 24;
        let img = SplitMix(2).bytes(s * s * 3);
        let want = normalize_resized(&img, s, mean, std);
        let n = s * s;
        for c in 0..3 {
            for i in 0..n {
                let got = lut[c * 256 + img[i * 3 + c] as usize];
                assert_eq!(got.to_bits(), want[c * n + i].to_bits());
            }
        }
    }

    #[test]
    fn bilinear_tables_and_kernel_arithmetic_equal_bilinear() {
        let mut rng = SplitMix(3);
        for (ih, iw, oh, ow) in
            [(256, 256, 1080, 1920), (256, 256, 480, 640), (7, 5, 3, 2), (16, 16, 16, 16), (1, 3, 4, 9)]
        {
            let src: Vec<f32> =
                (0..ih * iw).map(|i| if i % 11 == 0 { 0.0 } else { rng.uniform(-20.0, 20.0) }).collect();
            let p = BilinearPlan::new(ih, iw, oh, ow).unwrap();
            assert_eq!(p.identity, (ih, iw) == (oh, ow));
            let (logits, mask) = p.apply_host(&src);
            let want = bilinear(&src, ih, iw, oh, ow);
            assert!(logits.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{ih}x{iw} -> {oh}x{ow}");
            assert!(mask.iter().zip(&want).all(|(&m, &v)| m == u8::from(v > 0.0)));
            // every index the kernel reads is inside the plane
            assert!(p.y_idx.iter().all(|&i| (i as usize) < ih) && p.x_idx.iter().all(|&i| (i as usize) < iw));
        }
        assert!(BilinearPlan::new(4, 4, 0, 3).is_err());
    }

    #[test]
    fn bf16_conversions_equal_half() {
        for hi in 0..=0xFFFFu32 {
            let b = hi as u16;
            assert_eq!(bf16_bits_to_f32(b).to_bits(), bf16::from_bits(b).to_f32().to_bits(), "{b:#06x}");
            for lo in [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, hi.wrapping_mul(2654435761) & 0xFFFF] {
                let v = f32::from_bits(hi << 16 | lo);
                assert_eq!(f32_to_bf16_bits(v), bf16::from_f32(v).to_bits(), "{:#010x}", v.to_bits());
            }
        }
    }

    #[test]
    fn launch_geometry() {
        assert_eq!(grid_1d(0).unwrap(), (1, 1, 1));
        assert_eq!(grid_1d(256).unwrap(), (1, 1, 1));
        assert_eq!(grid_1d(257).unwrap(), (2, 1, 1));
        // preprocessing 1024², postprocessing 3 objects at 1080p, SAM 2 gather 3 × 7 memories
        assert_eq!(grid_2d(1024, 1024, 1, (32, 8)).unwrap(), (32, 128, 1));
        assert_eq!(grid_2d(1920, 1080, 3, (32, 8)).unwrap(), (60, 135, 3));
        assert_eq!(grid_2d(4096, 64, 21, (32, 32)).unwrap(), (128, 2, 21));
        assert!(grid_2d(16, 16, 70_000, (32, 8)).is_err());
        assert!(grid_2d(16, 600_000, 1, (32, 8)).is_err());
        // the launches the device code makes
        assert_eq!(launch_pil_horizontal(1024, 1080).unwrap(), ((8, 1080, 1), (128, 1, 1)));
        assert_eq!(launch_plane(1920, 1080, 3).unwrap(), ((60, 135, 3), (32, 8, 1)));
        assert_eq!(launch_1d(3 * 7 * 512 * 64).unwrap(), ((2688, 1, 1), (BLOCK_1D, 1, 1)));
        assert_eq!(launch_gather_channel_major(4096, 64, 21).unwrap(), ((128, 2, 21), (32, 8, 1)));
        // a block's threads cover a tile in GATHER_TILE / GATHER_ROWS steps
        assert_eq!(GATHER_TILE % GATHER_ROWS as usize, 0);
    }

    #[test]
    fn takes_the_smallest_free_buffer_that_fits_within_twice_the_need() {
        assert_eq!(pick_buffer(&[], 10), None);
        assert_eq!(pick_buffer(&[8, 30, 12, 15], 10), Some(2));
        assert_eq!(pick_buffer(&[8, 21], 10), None, "21 > 2 × 10: allocate instead");
        assert_eq!(pick_buffer(&[20], 10), Some(0));
        assert_eq!(pick_buffer(&[1], 0), Some(0), "empty tensors get a 1-element buffer");
    }

    #[test]
    fn bounded_hole_filling_equals_the_connected_components_one() {
        let mut rng = SplitMix(11);
        let mut scratch = Vec::new();
        for (h, w) in [(1, 1), (1, 7), (9, 5), (32, 32), (64, 48)] {
            for density in [0.1f32, 0.5, 0.9] {
                for max_area in [0usize, 1, 2, 8, 20, HOLE_MAX] {
                    let src: Vec<f32> = (0..h * w)
                        .map(|i| match i % 53 {
                            7 => f32::NAN,
                            11 => -0.0,
                            13 => 0.0,
                            _ if rng.uniform(0.0, 1.0) < density => -rng.uniform(0.0, 5.0),
                            _ => rng.uniform(1e-3, 5.0),
                        })
                        .collect();
                    let mut want = src.clone();
                    let changed = crate::tracker::ops::fill_holes(&mut want, h, w, max_area, &mut scratch);
                    let got = fill_holes_host(&src, h, w, max_area);
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{h}x{w} density {density} max_area {max_area} ({changed} filled on the host)");
                }
            }
        }
    }

    #[test]
    fn slot_pool_reuses_and_grows() {
        let mut p: SlotPool<u32> = SlotPool::default();
        let mut grew = Vec::new();
        for k in 0..9 {
            let (slot, g) = p.acquire(&k);
            assert_eq!(slot, k as usize);
            grew.extend(g);
        }
        assert_eq!(grew, vec![8, 16]);
        assert_eq!((p.len(), p.capacity()), (9, 16));
        assert_eq!(p.acquire(&3), (3, None));
        assert!(p.release(&3) && !p.release(&3));
        assert_eq!(p.acquire(&100), (3, None));
        p.retain(|k| k % 2 == 0);
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), vec![0, 2, 100, 4, 6, 8]);
        assert_eq!(p.capacity(), 16);
        // a growth the device could not follow is undone
        let mut q: SlotPool<u32> = SlotPool::default();
        for k in 0..8 {
            q.acquire(&k);
        }
        assert_eq!(q.acquire(&8), (8, Some(16)));
        q.release(&8);
        q.shrink_to(8);
        assert_eq!((q.len(), q.capacity()), (8, 8));
        assert_eq!(q.acquire(&9), (8, Some(16)), "grows again next time");
    }
}
