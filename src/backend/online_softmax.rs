//! The online softmax shared by the fused CPU attention kernels
//! ([`super::rope_cross_attention`], [`super::self_attention`]), AVX-512F: for a group of
//! [`G`] queries, chunks of key scores are turned into weights against running maxima
//! (rescaling what was summed under older maxima) and their weighted values are
//! accumulated, so no score matrix is ever held whole. Flash-attention's recurrence:
//! after all chunks, `out_i = acc_i / sum_i = Σ_j e^(s_ij − max_i)·v_j / Σ_j e^(s_ij − max_i)`.
#![allow(clippy::needless_range_loop)] // loops index several layouts with one counter

use std::arch::x86_64::*;

/// Queries per group (two 16-lane vectors).
pub(crate) const G: usize = 32;

/// The output pointer of a kernel, shared by threads that write disjoint rows.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: the kernels hand each work item only the rows of its own query group.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Work items `0..items` in `threads` contiguous ranges, one scoped thread each; `work`
/// gets its range and the output pointer.
pub(crate) fn over_threads(
    items: usize,
    threads: usize,
    out: &mut [f32],
    work: impl Fn(std::ops::Range<usize>, OutPtr) + Sync,
) {
    let per = items.div_ceil(threads.max(1));
    let ptr = OutPtr(out.as_mut_ptr());
    let work = &work;
    std::thread::scope(|s| {
        for th in 0..threads.max(1) {
            let range = (th * per).min(items)..((th + 1) * per).min(items);
            if !range.is_empty() {
                s.spawn(move || work(range, ptr));
            }
        }
    });
}

/// One query group's running state.
pub(crate) struct Online {
    /// One chunk's scores, then weights: `[rows][G]`, and each row's value offset.
    pub s: Vec<f32>,
    pub voff: Vec<usize>,
    /// Running weighted sums `[G][width]`, maxima and weight sums.
    acc: Vec<f32>,
    max: [f32; G],
    sum: [f32; G],
    width: usize,
}

impl Online {
    /// Room for chunks of up to `rows` keys and values `width` wide (a multiple of 16).
    pub fn new(rows: usize, width: usize) -> Online {
        Online {
            s: vec![0.0; rows * G],
            voff: vec![0; rows],
            acc: vec![0.0; G * width],
            max: [f32::NEG_INFINITY; G],
            sum: [0.0; G],
            width,
        }
    }

    /// Start a new group of queries.
    pub fn reset(&mut self) {
        self.acc.fill(0.0);
        self.max = [f32::NEG_INFINITY; G];
        self.sum = [0.0; G];
    }

    /// Take in one chunk: `s[..rows]` holds its scores and `voff[..rows]` where each key's
    /// value starts in `v`.
    ///
    /// # Safety
    /// AVX-512F must be available; every `voff[r] + width` must lie within `v`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chunk(&mut self, rows: usize, v: &[f32]) {
        self.weights(rows);
        let mut c0 = 0;
        while c0 < self.width {
            match (self.width - c0) / 16 {
                1 => self.values::<1>(rows, v, c0),
                2 => self.values::<2>(rows, v, c0),
                3 => self.values::<3>(rows, v, c0),
                _ => self.values::<4>(rows, v, c0),
            }
            c0 += 64.min(self.width - c0);
        }
    }

    /// Query `i`'s result, `acc_i / sum_i`, written to `dst[..width]`.
    pub fn finish(&self, i: usize, dst: &mut [f32]) {
        let inv = 1.0 / self.sum[i];
        for (o, a) in dst.iter_mut().zip(&self.acc[i * self.width..(i + 1) * self.width]) {
            *o = a * inv;
        }
    }

    /// Raise the running maxima, rescale what was summed under the old ones, turn the
    /// scores into weights `e^(s − max)`.
    #[target_feature(enable = "avx512f")]
    unsafe fn weights(&mut self, rows: usize) {
        let width = self.width;
        let mut cm = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
        for r in 0..rows {
            for h in 0..2 {
                cm[h] = _mm512_max_ps(cm[h], _mm512_loadu_ps(self.s.as_ptr().add(r * G + h * 16)));
            }
        }
        let mut chunk_max = [0f32; G];
        _mm512_storeu_ps(chunk_max.as_mut_ptr(), cm[0]);
        _mm512_storeu_ps(chunk_max.as_mut_ptr().add(16), cm[1]);
        for i in 0..G {
            let m = self.max[i].max(chunk_max[i]);
            if m > self.max[i] && self.max[i] > f32::NEG_INFINITY {
                let scale = (self.max[i] - m).exp();
                self.sum[i] *= scale;
                self.acc[i * width..(i + 1) * width].iter_mut().for_each(|a| *a *= scale);
            }
            self.max[i] = m;
        }
        let m = [_mm512_loadu_ps(self.max.as_ptr()), _mm512_loadu_ps(self.max.as_ptr().add(16))];
        let mut l = [_mm512_setzero_ps(); 2];
        for r in 0..rows {
            for h in 0..2 {
                let sp = self.s.as_mut_ptr().add(r * G + h * 16);
                let p = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(sp), m[h]));
                _mm512_storeu_ps(sp, p);
                l[h] = _mm512_add_ps(l[h], p);
            }
        }
        let mut ls = [0f32; G];
        _mm512_storeu_ps(ls.as_mut_ptr(), l[0]);
        _mm512_storeu_ps(ls.as_mut_ptr().add(16), l[1]);
        for i in 0..G {
            self.sum[i] += ls[i];
        }
    }

    /// `acc[i][c] += Σ_r s[r][i]·v[voff[r] + c]` for columns `[c0, c0 + 16·V)`, 4 queries
    /// at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn values<const V: usize>(&mut self, rows: usize, v: &[f32], c0: usize) {
        let width = self.width;
        for i0 in (0..G).step_by(4) {
            let mut a = [[_mm512_setzero_ps(); V]; 4];
            for q in 0..4 {
                for k in 0..V {
                    a[q][k] = _mm512_loadu_ps(self.acc.as_ptr().add((i0 + q) * width + c0 + k * 16));
                }
            }
            for r in 0..rows {
                let vp = v.as_ptr().add(self.voff[r] + c0);
                let mut vv = [_mm512_setzero_ps(); V];
                for k in 0..V {
                    vv[k] = _mm512_loadu_ps(vp.add(k * 16));
                }
                let pr = self.s.as_ptr().add(r * G + i0);
                for q in 0..4 {
                    let p = _mm512_set1_ps(*pr.add(q));
                    for k in 0..V {
                        a[q][k] = _mm512_fmadd_ps(p, vv[k], a[q][k]);
                    }
                }
            }
            for q in 0..4 {
                for k in 0..V {
                    _mm512_storeu_ps(self.acc.as_mut_ptr().add((i0 + q) * width + c0 + k * 16), a[q][k]);
                }
            }
        }
    }
}

/// `e^x` for x ≤ 0: range reduction by ln 2, degree-6 Taylor on |r| ≤ ln2/2 (relative
/// error ~1e-7), `scalef` for the power of two; below −87 it returns ~0.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_neg(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let n = _mm512_roundscale_ps::<0>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(k));
    }
    _mm512_scalef_ps(p, n)
}
