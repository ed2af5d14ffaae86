//! Packing decoded rows into [`BitMask`]s: `value != 0` for SA-V's per-object PNGs (with
//! the value statistics its "one object per file" rule needs) and `value == k` for DAVIS's
//! indexed PNGs. SSE2 does the byte compares on x86-64 (always available there); other
//! targets use portable loops.

use super::masks::BitMask;
use super::png::{Raster, RowSink};

/// Value statistics gathered while packing: enough to decide whether a frame has at most
/// two distinct values (the SA-V per-object PNG rule) in the common cases.
#[derive(Clone, Copy, Debug)]
pub struct ValueStats {
    pub min: u8,
    pub max: u8,
    /// Smallest nonzero value (255 when none).
    pub min_nonzero: u8,
}

/// Bits of `c[i] != 0` (`c.len() <= 64`; the portable path).
#[inline(always)]
fn pack64(c: &[u8]) -> u64 {
    let mut m = 0u64;
    for (i, &b) in c.iter().enumerate() {
        m |= ((b != 0) as u64) << i;
    }
    m
}

#[inline(always)]
fn pack64_eq(c: &[u8], k: u8) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if c.len() == 64 {
        return simd::pack64_eq(c, k);
    }
    let mut m = 0u64;
    for (i, &b) in c.iter().enumerate() {
        m |= ((b == k) as u64) << i;
    }
    m
}

/// SSE2 (part of the x86-64 baseline, so always present there).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[inline(always)]
    fn load(c: &[u8], i: usize) -> __m128i {
        let s: &[u8; 16] = c[i * 16..i * 16 + 16].try_into().expect("16 bytes");
        // SAFETY: `s` is 16 readable bytes; loadu has no alignment requirement.
        unsafe { _mm_loadu_si128(s.as_ptr() as *const __m128i) }
    }

    #[inline(always)]
    fn movemask_eq(v: __m128i, k: __m128i) -> u64 {
        // SAFETY: SSE2 is enabled on every x86-64 target.
        unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(v, k)) as u16 as u64 }
    }

    #[inline(always)]
    fn splat(k: u8) -> __m128i {
        // SAFETY: as above.
        unsafe { _mm_set1_epi8(k as i8) }
    }

    /// Running min / max / min-of-(v-1) over the nonzero chunks.
    pub(super) struct Acc(__m128i, __m128i, __m128i);

    impl Acc {
        pub(super) fn new() -> Acc {
            Acc(splat(255), splat(0), splat(255))
        }

        /// (min, max, min nonzero).
        pub(super) fn reduce(&self) -> (u8, u8, u8) {
            let mut b = [[0u8; 16]; 3];
            for (dst, v) in b.iter_mut().zip([self.0, self.1, self.2]) {
                // SAFETY: `dst` is 16 writable bytes; storeu has no alignment requirement.
                unsafe { _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, v) };
            }
            let min = b[0].iter().copied().fold(255, u8::min);
            let max = b[1].iter().copied().fold(0, u8::max);
            (min, max, b[2].iter().copied().fold(255, u8::min).wrapping_add(1))
        }
    }

    /// `c.len() == 64`: the bits of `c != 0` (0 for an all-zero chunk, whose statistics
    /// the caller records as "has a zero").
    #[inline(always)]
    pub(super) fn pack64_nonzero_stats(c: &[u8], acc: &mut Acc) -> u64 {
        let v = [load(c, 0), load(c, 1), load(c, 2), load(c, 3)];
        let z = splat(0);
        // SAFETY (all intrinsics below): SSE2 is enabled on every x86-64 target.
        let any = unsafe { _mm_or_si128(_mm_or_si128(v[0], v[1]), _mm_or_si128(v[2], v[3])) };
        if movemask_eq(any, z) == 0xffff {
            return 0;
        }
        let one = splat(1);
        let mut m = 0u64;
        for (i, &x) in v.iter().enumerate() {
            m |= movemask_eq(x, z) << (16 * i);
            unsafe {
                acc.0 = _mm_min_epu8(acc.0, x);
                acc.1 = _mm_max_epu8(acc.1, x);
                acc.2 = _mm_min_epu8(acc.2, _mm_sub_epi8(x, one));
            }
        }
        !m
    }

    /// `c.len() == 64`.
    #[inline(always)]
    pub(super) fn pack64_eq(c: &[u8], k: u8) -> u64 {
        let kk = splat(k);
        let mut m = 0u64;
        for i in 0..4 {
            m |= movemask_eq(load(c, i), kk) << (16 * i);
        }
        m
    }
}

#[inline(always)]
fn any_nonzero(c: &[u8]) -> bool {
    c.iter().fold(0u8, |a, &b| a | b) != 0
}

pub(super) fn feed(r: &Raster, sink: &mut impl RowSink) {
    sink.begin(r.width, r.height);
    for y in 0..r.height {
        sink.row(y, r.row(y));
    }
}

/// Packs decoded rows into a `value != 0` mask, gathering [`ValueStats`].
pub struct NonzeroSink {
    mask: BitMask,
    min: u8,
    max: u8,
    min_nz: u8,
    #[cfg(target_arch = "x86_64")]
    acc: simd::Acc,
}

impl Default for NonzeroSink {
    fn default() -> Self {
        NonzeroSink {
            mask: BitMask::placeholder(),
            min: 255,
            max: 0,
            min_nz: 255,
            #[cfg(target_arch = "x86_64")]
            acc: simd::Acc::new(),
        }
    }
}

impl NonzeroSink {
    pub fn finish(mut self) -> (BitMask, ValueStats) {
        #[cfg(target_arch = "x86_64")]
        {
            let (a, b, c) = self.acc.reduce();
            (self.min, self.max, self.min_nz) = (self.min.min(a), self.max.max(b), self.min_nz.min(c));
        }
        (self.mask, ValueStats { min: self.min, max: self.max, min_nonzero: self.min_nz })
    }
}

impl RowSink for NonzeroSink {
    fn begin(&mut self, width: usize, height: usize) {
        *self = NonzeroSink::default();
        // Every row gets written (`row` or `zero_row`), so stale storage is fine.
        self.mask = BitMask::uninit(width, height);
    }

    fn zero_row(&mut self, y: usize, _zeros: &[u8]) {
        let wpr = self.mask.wpr;
        self.mask.bits[y * wpr..(y + 1) * wpr].fill(0);
        self.min = 0;
    }

    fn row(&mut self, y: usize, px: &[u8]) {
        self.row_span(y, px, 0, px.len());
    }

    fn row_span(&mut self, y: usize, px: &[u8], lo: usize, hi: usize) {
        let wpr = self.mask.wpr;
        let out = &mut self.mask.bits[y * wpr..(y + 1) * wpr];
        // Only the 64-pixel chunks that overlap lo..hi can hold nonzero pixels.
        let (c0, c1) = (lo / 64, hi.div_ceil(64));
        if c0 >= c1 || !any_nonzero(&px[c0 * 64..(c1 * 64).min(px.len())]) {
            out.fill(0);
            self.min = 0;
            return;
        }
        out[..c0].fill(0);
        out[c1..].fill(0);
        if c0 > 0 || c1 < wpr {
            self.min = 0;
        }
        let (mut first, mut last, mut ones) = (usize::MAX, 0, 0u64);
        for (i, (o, c)) in out.iter_mut().zip(px.chunks(64)).enumerate().take(c1).skip(c0) {
            #[cfg(target_arch = "x86_64")]
            if c.len() == 64 {
                *o = simd::pack64_nonzero_stats(c, &mut self.acc);
                if *o != !0 {
                    self.min = 0;
                }
                if *o != 0 {
                    first = first.min(i);
                    last = i;
                    ones += o.count_ones() as u64;
                }
                continue;
            }
            if !any_nonzero(c) {
                *o = 0;
                self.min = 0;
                continue;
            }
            *o = pack64(c);
            first = first.min(i);
            last = i;
            ones += o.count_ones() as u64;
            self.min = self.min.min(c.iter().copied().fold(255, u8::min));
            self.max = self.max.max(c.iter().copied().fold(0, u8::max));
            self.min_nz = self.min_nz.min(c.iter().fold(255u8, |a, &b| a.min(b.wrapping_sub(1))).wrapping_add(1));
        }
        if first != usize::MAX {
            self.mask.mark(y, first, last + 1);
            self.mask.ones += ones;
        }
    }
}

/// Packs decoded rows into one mask per label `1..=n`, tracking the largest values.
pub struct LabelSink {
    n: usize,
    masks: Vec<BitMask>,
    max: u8,
    max_non_void: u8,
}

impl LabelSink {
    pub fn new(n: usize) -> Self {
        LabelSink { n, masks: Vec::new(), max: 0, max_non_void: 0 }
    }

    /// (masks of labels 1..=n, largest value, largest value other than 255).
    pub fn finish(self) -> (Vec<BitMask>, u8, u8) {
        (self.masks, self.max, self.max_non_void)
    }
}

impl RowSink for LabelSink {
    fn begin(&mut self, width: usize, height: usize) {
        self.masks = (0..self.n).map(|_| BitMask::empty(width, height)).collect();
        self.max = 0;
        self.max_non_void = 0;
    }

    fn zero_row(&mut self, _y: usize, _zeros: &[u8]) {}

    fn row(&mut self, y: usize, px: &[u8]) {
        let wpr = px.len().div_ceil(64);
        if !any_nonzero(px) {
            return;
        }
        for (i, c) in px.chunks(64).enumerate() {
            if !any_nonzero(c) {
                continue;
            }
            self.max = self.max.max(c.iter().copied().fold(0, u8::max));
            self.max_non_void = self.max_non_void.max(c.iter().fold(0u8, |a, &b| a.max(if b == 255 { 0 } else { b })));
            for (k, m) in self.masks.iter_mut().enumerate() {
                let w = pack64_eq(c, k as u8 + 1);
                if w != 0 {
                    m.bits[y * wpr + i] = w;
                    m.mark(y, i, i + 1);
                    m.ones += w.count_ones() as u64;
                }
            }
        }
    }
}
