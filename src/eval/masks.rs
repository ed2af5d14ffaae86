//! Bit-packed binary masks and the two per-frame metrics of the official evaluators:
//! region similarity J (IoU) and the boundary F-measure.
//!
//! F follows `f_measure` / `Evaluator.feed_frame` exactly: boundaries by `_seg2bmap`
//! (a pixel is on the boundary when it differs from its east, south or south-east
//! neighbour, with the last row / column / corner rules), tolerance radius
//! `r = ceil(0.008 · ‖(H, W)‖)`, and `cv2.dilate` with `skimage.morphology.disk(r)`,
//! i.e. a boundary pixel p of one mask is matched when some boundary pixel q of the other
//! has `(px-qx)² + (py-qy)² ≤ r²` (the disk is not separable, and cv2's default border
//! adds nothing for dilation). Instead of dilating whole frames, each boundary pixel
//! probes the other boundary row by row (rows `y±dy` within `±⌊√(r²-dy²)⌋` columns, a
//! 1–3-word bit test, nearest rows first, stopping at the first hit): the same set test,
//! at a cost proportional to the boundary length instead of the frame area.

use super::pack::feed;
pub use super::pack::{LabelSink, NonzeroSink, ValueStats};
use super::png::Raster;

/// A binary mask, one bit per pixel, rows padded to whole `u64` words (LSB = lowest x);
/// padding bits are always zero. Rows `y0..y1` and words `x0..x1` of them hold every set
/// bit; only rows `y0..y1` are ever read (rows outside may hold stale data).
#[derive(Clone, Debug)]
pub struct BitMask {
    pub width: usize,
    pub height: usize,
    pub(super) wpr: usize,
    pub(super) bits: Vec<u64>,
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
    /// Number of set bits.
    pub(super) ones: u64,
}

impl PartialEq for BitMask {
    fn eq(&self, o: &Self) -> bool {
        let rows_eq = |y: usize| match (self.y0 <= y && y < self.y1, o.y0 <= y && y < o.y1) {
            (true, true) => self.row(y) == o.row(y),
            (true, false) => self.row(y).iter().all(|&w| w == 0),
            (false, true) => o.row(y).iter().all(|&w| w == 0),
            (false, false) => true,
        };
        (self.width, self.height) == (o.width, o.height) && (0..self.height).all(rows_eq)
    }
}

thread_local! {
    /// Storage of dropped masks, reused by [`BitMask::empty`]: a 1080p mask is 260 KB, and
    /// fresh allocations of that size cost page faults on every frame.
    static POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for BitMask {
    fn drop(&mut self) {
        let bits = std::mem::take(&mut self.bits);
        if bits.capacity() > 0 {
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < 16 {
                    p.push(bits);
                }
            });
        }
    }
}

impl BitMask {
    pub fn empty(width: usize, height: usize) -> Self {
        let wpr = width.div_ceil(64);
        let mut bits = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        bits.clear();
        bits.resize(wpr * height, 0);
        BitMask { width, height, wpr, bits, y0: 0, y1: 0, x0: 0, x1: 0, ones: 0 }
    }

    /// A 0×0 placeholder that takes no storage from the pool.
    pub(super) fn placeholder() -> Self {
        BitMask { width: 0, height: 0, wpr: 0, bits: Vec::new(), y0: 0, y1: 0, x0: 0, x1: 0, ones: 0 }
    }

    /// Like [`BitMask::empty`] but with stale storage: the caller writes every row it
    /// marks with [`BitMask::mark`] in full, and marks them in order.
    pub(super) fn uninit(width: usize, height: usize) -> Self {
        let wpr = width.div_ceil(64);
        let mut bits = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        bits.resize(wpr * height, 0);
        bits.truncate(wpr * height);
        BitMask { width, height, wpr, bits, y0: 0, y1: 0, x0: 0, x1: 0, ones: 0 }
    }

    /// Row `y` (only meaningful for `y0 <= y < y1`; others are zero by definition).
    #[inline]
    fn row(&self, y: usize) -> &[u64] {
        &self.bits[y * self.wpr..(y + 1) * self.wpr]
    }

    pub fn is_empty(&self) -> bool {
        self.y0 == self.y1
    }

    pub fn count(&self) -> u64 {
        self.ones
    }

    /// Recompute the row and word ranges from all rows.
    #[cfg(test)]
    fn set_row_range(&mut self) {
        (self.y0, self.y1, self.x0, self.x1) = (0, 0, 0, 0);
        self.ones = self.bits.iter().map(|w| w.count_ones() as u64).sum();
        for y in 0..self.height {
            let r = &self.bits[y * self.wpr..(y + 1) * self.wpr];
            if let (Some(a), Some(b)) = (r.iter().position(|&w| w != 0), r.iter().rposition(|&w| w != 0)) {
                self.mark(y, a, b + 1);
            }
        }
    }

    /// `value != 0` for every pixel, plus the raster's value statistics.
    pub fn nonzero(r: &Raster) -> (BitMask, ValueStats) {
        let mut sink = NonzeroSink::default();
        feed(r, &mut sink);
        sink.finish()
    }

    /// One mask per label `1..=n` (`value == k`); values above `n` (e.g. DAVIS's void
    /// 255) belong to none. Also returns the largest value, and the largest other than 255.
    pub fn labels(r: &Raster, n: usize) -> (Vec<BitMask>, u8, u8) {
        let mut sink = LabelSink::new(n);
        feed(r, &mut sink);
        sink.finish()
    }

    /// Record row `y` as nonempty with set words in `a..b` (rows in increasing order).
    #[inline]
    pub(super) fn mark(&mut self, y: usize, a: usize, b: usize) {
        if self.y0 == self.y1 {
            (self.y0, self.x0, self.x1) = (y, a, b);
        } else {
            self.x0 = self.x0.min(a);
            self.x1 = self.x1.max(b);
        }
        self.y1 = y + 1;
    }

    /// `_seg2bmap`: 1-pixel-wide boundary map of the same size.
    pub fn boundary(&self) -> BitMask {
        let (w, h, wpr) = (self.width, self.height, self.wpr);
        let mut b = BitMask::uninit(w, h);
        if self.is_empty() {
            return b;
        }
        let (last_word, last_bit) = ((w - 1) / 64, 1u64 << ((w - 1) % 64));
        // Boundary bits lie in the mask's words or the word before (the east neighbour of
        // a word's last column is the next word's first).
        let (lo, hi) = (self.x0.saturating_sub(1), self.x1);
        // Row y depends on rows y and y+1 only.
        for y in self.y0.saturating_sub(1)..self.y1 {
            let r = self.row(y);
            let out = &mut b.bits[y * wpr..(y + 1) * wpr];
            out[..lo].fill(0);
            out[hi..].fill(0);
            // Rows y0-1 and y1-1's neighbours outside y0..y1 are zero.
            let zero_row = y < self.y0;
            if y + 1 < h {
                let n = self.row(y + 1);
                let nz = y + 1 >= self.y1;
                for i in lo..hi {
                    let (ri, rn) = if zero_row { (0, 0) } else { (r[i], if i + 1 < wpr { r[i + 1] } else { 0 }) };
                    let (ni, nn) = if nz { (0, 0) } else { (n[i], if i + 1 < wpr { n[i + 1] } else { 0 }) };
                    let er = (ri >> 1) | (rn << 63);
                    let en = (ni >> 1) | (nn << 63);
                    out[i] = (ri ^ er) | (ri ^ ni) | (ri ^ en);
                }
                // Last column: seg ^ south only.
                if (lo..hi).contains(&last_word) {
                    let ri = if zero_row { 0 } else { r[last_word] };
                    let ni = if nz { 0 } else { n[last_word] };
                    out[last_word] = (out[last_word] & !last_bit) | ((ri ^ ni) & last_bit);
                }
            } else {
                for i in lo..hi {
                    let (ri, rn) = if zero_row { (0, 0) } else { (r[i], if i + 1 < wpr { r[i + 1] } else { 0 }) };
                    out[i] = ri ^ ((ri >> 1) | (rn << 63));
                }
                // Bottom-right corner is always 0.
                out[last_word] &= !last_bit;
            }
            let words = &out[lo..hi];
            // (Every row of y0-1..y1 is written in full, so the marked range reads right.)
            if let (Some(a), Some(e)) = (words.iter().position(|&x| x != 0), words.iter().rposition(|&x| x != 0)) {
                let ones: u64 = words[a..=e].iter().map(|w| w.count_ones() as u64).sum();
                b.mark(y, lo + a, lo + e + 1);
                b.ones += ones;
            }
        }
        b
    }

    /// Whether any bit of row `y` in columns `a..=b` is set (`a <= b < width`).
    #[inline(always)]
    fn any_in(&self, y: usize, a: usize, b: usize) -> bool {
        let row = &self.bits[y * self.wpr..(y + 1) * self.wpr];
        let (wa, wb) = (a / 64, b / 64);
        let lo = !0u64 << (a % 64);
        let hi = !0u64 >> (63 - b % 64);
        if wa == wb {
            return row[wa] & lo & hi != 0;
        }
        row[wa] & lo != 0 || row[wb] & hi != 0 || row[wa + 1..wb].iter().any(|&w| w != 0)
    }

    /// Whether a set bit lies within the disk around `(x, y)`.
    #[inline]
    fn near(&self, x: usize, y: usize, disk: &Disk) -> bool {
        if disk.radius <= 63 {
            return self.near_windowed(x, y, disk, &mut 0);
        }
        let xmax = self.width - 1;
        for (dy, &hw) in disk.half_widths.iter().enumerate() {
            let (a, b) = (x.saturating_sub(hw), (x + hw).min(xmax));
            if y >= dy && y - dy >= self.y0 && y - dy < self.y1 && self.any_in(y - dy, a, b) {
                return true;
            }
            if dy > 0 && y + dy < self.y1 && y + dy >= self.y0 && self.any_in(y + dy, a, b) {
                return true;
            }
            if y + dy >= self.y1 && y < self.y0 + dy {
                return false;
            }
        }
        false
    }

    /// [`BitMask::near`] for radius ≤ 63: each probed row is reduced to the 128 bits
    /// around `x` (two funnel shifts) and tested against the disk row's precomputed masks.
    /// `hint` (a signed row offset that hit for a nearby pixel) is probed first; it is
    /// updated on a hit. Probe order does not change the answer, only the work.
    #[inline(always)]
    fn near_windowed(&self, x: usize, y: usize, disk: &Disk, hint: &mut isize) -> bool {
        let (i, s, wpr) = (x / 64, (x % 64) as u32, self.wpr);
        let (has_prev, has_next) = (i > 0, i + 1 < wpr);
        let hit = |yy: usize, (mlo, mhi): (u64, u64)| -> bool {
            let base = yy * wpr + i;
            let cur = self.bits[base];
            let prev = if has_prev { self.bits[base - 1] } else { 0 };
            let next = if has_next { self.bits[base + 1] } else { 0 };
            // Bit k of `lo`: column x - 64 + k; bit k of `hi`: column x + k.
            let lo = (((cur as u128) << 64 | prev as u128) >> s) as u64;
            let hi = (((next as u128) << 64 | cur as u128) >> s) as u64;
            (lo & mlo) | (hi & mhi) != 0
        };
        let h = *hint;
        let hy = (y as isize + h) as usize;
        if h.unsigned_abs() <= disk.radius && hy >= self.y0 && hy < self.y1 && hit(hy, disk.masks[h.unsigned_abs()]) {
            return true;
        }
        for (dy, &m) in disk.masks.iter().enumerate() {
            let above = y.wrapping_sub(dy);
            if above >= self.y0 && above < self.y1 && hit(above, m) {
                *hint = -(dy as isize);
                return true;
            }
            let below = y + dy;
            if dy > 0 && below < self.y1 && below >= self.y0 && hit(below, m) {
                *hint = dy as isize;
                return true;
            }
            if below >= self.y1 && y < self.y0 + dy {
                return false;
            }
        }
        false
    }

    /// Number of set bits of `self` that lie within the disk of a set bit of `other`
    /// (`sum(self_boundary * dilate(other_boundary, disk))`).
    pub fn count_near(&self, other: &BitMask, disk: &Disk) -> u64 {
        if other.is_empty() {
            return 0;
        }
        let mut n = 0;
        let windowed = disk.radius <= 63;
        // One hint per 64-column band: boundary pixels of a band in successive rows are
        // usually matched at a similar row offset.
        let mut hints = vec![0isize; self.wpr];
        for y in self.y0..self.y1 {
            for (i, &word) in self.row(y).iter().enumerate().take(self.x1).skip(self.x0) {
                let mut w = word;
                while w != 0 {
                    let x = i * 64 + w.trailing_zeros() as usize;
                    w &= w - 1;
                    let hit =
                        if windowed { other.near_windowed(x, y, disk, &mut hints[i]) } else { other.near(x, y, disk) };
                    n += hit as u64;
                }
            }
        }
        n
    }
}

/// The structuring element `disk(r)` as row half-widths: `half_widths[dy] = ⌊√(r² - dy²)⌋`.
#[derive(Clone, Debug)]
pub struct Disk {
    pub radius: usize,
    half_widths: Vec<usize>,
    /// Per row, for radius ≤ 63: bits of the columns `x-hw..x` (in a word whose bit 63 is
    /// column x-1) and `x..=x+hw` (bit 0 is column x).
    masks: Vec<(u64, u64)>,
}

impl Disk {
    /// `np.ceil(0.008 * np.linalg.norm((h, w)))`, in the same float64 operations.
    pub fn for_size(width: usize, height: usize) -> Disk {
        Disk::new(Disk::radius_for(width, height))
    }

    pub fn radius_for(width: usize, height: usize) -> usize {
        let norm = ((height * height + width * width) as f64).sqrt();
        (0.008 * norm).ceil() as usize
    }

    pub fn new(radius: usize) -> Disk {
        let r2 = radius * radius;
        let half_widths = (0..=radius)
            .map(|dy| {
                let mut hw = 0;
                while (hw + 1) * (hw + 1) + dy * dy <= r2 {
                    hw += 1;
                }
                hw
            })
            .collect::<Vec<usize>>();
        let masks = half_widths
            .iter()
            .map(|&hw| {
                let hw = hw.min(63) as u32;
                let lo = if hw == 0 { 0 } else { !0u64 << (64 - hw) };
                let hi = if hw == 63 { !0 } else { (1u64 << (hw + 1)) - 1 };
                (lo, hi)
            })
            .collect();
        Disk { radius, half_widths, masks }
    }
}

/// Per-frame IoU with the evaluators' edge case: both masks empty → 1.
pub fn iou(pred: &BitMask, gt: &BitMask) -> f64 {
    let (a, b) = (pred.count(), gt.count());
    let (y0, y1) = (pred.y0.max(gt.y0), pred.y1.min(gt.y1));
    let (x0, x1) = (pred.x0.max(gt.x0), pred.x1.min(gt.x1));
    let inter: u64 = if y0 < y1 && x0 < x1 {
        (y0..y1)
            .map(|y| {
                let (p, g) = (&pred.row(y)[x0..x1], &gt.row(y)[x0..x1]);
                p.iter().zip(g).map(|(p, g)| (p & g).count_ones() as u64).sum::<u64>()
            })
            .sum()
    } else {
        0
    };
    let union = a + b - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Boundary F-measure of `pred` against `gt` (same size), as `f_measure`.
pub fn f_measure(pred: &BitMask, gt: &BitMask, disk: &Disk) -> f64 {
    let (pb, gb) = (pred.boundary(), gt.boundary());
    f_from_boundaries(&pb, &gb, disk)
}

pub fn f_from_boundaries(pb: &BitMask, gb: &BitMask, disk: &Disk) -> f64 {
    let (n_fg, n_gt) = (pb.count(), gb.count());
    let (precision, recall) = match (n_fg, n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => (pb.count_near(gb, disk) as f64 / n_fg as f64, gb.count_near(pb, disk) as f64 / n_gt as f64),
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_fn(w: usize, h: usize, f: impl Fn(usize, usize) -> bool) -> BitMask {
        let mut m = BitMask::empty(w, h);
        for y in 0..h {
            for x in 0..w {
                if f(x, y) {
                    m.bits[y * m.wpr + x / 64] |= 1 << (x % 64);
                }
            }
        }
        m.set_row_range();
        m
    }

    fn get(m: &BitMask, x: usize, y: usize) -> bool {
        (m.y0..m.y1).contains(&y) && m.bits[y * m.wpr + x / 64] >> (x % 64) & 1 == 1
    }

    fn count_ref(m: &BitMask) -> u64 {
        (0..m.height).map(|y| (0..m.width).filter(|&x| get(m, x, y)).count() as u64).sum()
    }

    /// Direct transcription of the numpy definition, pixel by pixel.
    fn seg2bmap_ref(m: &BitMask) -> BitMask {
        let (w, h) = (m.width, m.height);
        let s = |x: usize, y: usize| x < w && y < h && get(m, x, y);
        from_fn(w, h, |x, y| {
            let v = s(x, y);
            if x == w - 1 && y == h - 1 {
                false
            } else if x == w - 1 {
                v ^ s(x, y + 1)
            } else if y == h - 1 {
                v ^ s(x + 1, y)
            } else {
                (v ^ s(x + 1, y)) | (v ^ s(x, y + 1)) | (v ^ s(x + 1, y + 1))
            }
        })
    }

    fn near_ref(m: &BitMask, x: usize, y: usize, r: usize) -> bool {
        let r = r as i64;
        (-r..=r).any(|dy| {
            (-r..=r).any(|dx| {
                let (qx, qy) = (x as i64 + dx, y as i64 + dy);
                dx * dx + dy * dy <= r * r
                    && qx >= 0
                    && qy >= 0
                    && (qx as usize) < m.width
                    && (qy as usize) < m.height
                    && get(m, qx as usize, qy as usize)
            })
        })
    }

    #[test]
    fn boundary_and_near_match_reference() {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &(w, h) in &[(1, 1), (1, 7), (9, 1), (63, 5), (64, 9), (65, 12), (130, 40), (200, 3)] {
            for t in 0..6 {
                let (cx, cy, rr) = (rnd() % w as u64, rnd() % h as u64, 1 + rnd() % 30);
                let noise = t % 2 == 0;
                let m = from_fn(w, h, |x, y| {
                    let d = (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2);
                    (d as u64) < rr * rr || (noise && (x * 7 + y * 13 + t) % 11 == 0)
                });
                let b = m.boundary();
                assert_eq!(b, seg2bmap_ref(&m), "{w}x{h} t{t}");
                assert_eq!(b.count(), count_ref(&b));
                let inter = (0..h).map(|y| (0..w).filter(|&x| get(&m, x, y) && get(&b, x, y)).count()).sum::<usize>();
                let union = count_ref(&m) + count_ref(&b) - inter as u64;
                let want = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
                assert_eq!(iou(&m, &b), want);
                let o = from_fn(w, h, |x, y| (x + 2 * y + t) % 17 == 0);
                for r in [1, 2, 5, 18, 63, 64, 70] {
                    let d = Disk::new(r);
                    for y in 0..h {
                        for x in 0..w {
                            assert_eq!(b.near(x, y, &d), near_ref(&b, x, y, r), "near {w}x{h} ({x},{y}) r{r}");
                            assert_eq!(o.near(x, y, &d), near_ref(&o, x, y, r));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stale_pool_storage_is_harmless() {
        let (w, h) = (130, 40);
        for _ in 0..3 {
            drop(from_fn(w, h, |_, _| true));
        }
        let px: Vec<u8> = (0..w * h).map(|i| if (i % w) % 9 == 0 && (i / w) % 4 == 1 { 3 } else { 0 }).collect();
        let r = Raster { width: w, height: h, data: px.clone() };
        let (m, st) = BitMask::nonzero(&r);
        assert_eq!(m, from_fn(w, h, |x, y| px[y * w + x] != 0));
        assert_eq!((st.min, st.max, st.min_nonzero), (0, 3, 3));
        let (labels, max, max_nv) = BitMask::labels(&r, 3);
        assert_eq!((max, max_nv), (3, 3));
        assert!(labels[0].is_empty() && labels[1].is_empty());
        assert_eq!(labels[2], m);
        assert_eq!(m.boundary(), seg2bmap_ref(&m));
    }

    #[test]
    fn disk_radius() {
        assert_eq!(Disk::for_size(1920, 1080).radius, 18);
        assert_eq!(Disk::for_size(854, 480).radius, 8);
        assert_eq!(Disk::for_size(10, 10).radius, 1);
        assert_eq!(Disk::new(2).half_widths, vec![2, 1, 0]);
    }
}
