//! One-head scaled dot-product attention on the CPU in one fused kernel (x86-64
//! AVX-512F): `softmax(q·kᵀ)·v` per batch item, with `q` already rotated and scaled
//! (SAM 2's memory-attention self-attention, `RoPEAttention(q=k=v=norm1(tgt))`, whose
//! projections and rotation stay in the graph pieces of `models::memory_attention_split`).
//!
//! Queries go in groups of 32 (two 16-lane vectors), scored against 8 keys at a time
//! (16 accumulators, one broadcast key value per 2 products); the scores of 64 keys make
//! one chunk of the online softmax ([`super::online_softmax`]), whose weights multiply
//! the values straight away. The `n × m` score matrix is never stored: ONNX Runtime's
//! blocked `MatMul`–`Softmax`–`MatMul` writes and reads it in 256-query blocks. Exact in
//! real arithmetic; in float32 the sums are reordered (the tests bound the difference).

use crate::error::{Error, ErrorKind, Result};

/// Keys scored together (the kernel's accumulators).
const KEY_BLOCK: usize = 8;
/// Keys per online-softmax chunk.
const CHUNK: usize = 64;

/// Sizes of one call: `batch` items of `n` queries and `m` keys, `d` wide (queries and
/// keys), values `dv` wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    pub dv: usize,
}

/// Why the kernel cannot run `n` queries over `m` keys, `d` / `dv` wide, here, if it
/// cannot.
pub fn unsupported(n: usize, m: usize, d: usize, dv: usize) -> Option<String> {
    const G: usize = 32;
    if !super::rope_cross_attention::cpu_supported() {
        Some("the CPU has no AVX-512F".into())
    } else if n == 0 || !n.is_multiple_of(G) {
        Some(format!("{n} queries are not whole groups of {G}"))
    } else if m == 0 || !m.is_multiple_of(KEY_BLOCK) {
        Some(format!("{m} keys are not whole blocks of {KEY_BLOCK}"))
    } else if d == 0 {
        Some("zero-width queries".into())
    } else if dv == 0 || !dv.is_multiple_of(16) {
        Some(format!("value width {dv} is not a multiple of 16"))
    } else {
        None
    }
}

/// `softmax(q·kᵀ)·v` for `q [batch, n, d]`, `k [batch, m, d]`, `v [batch, m, dv]`
/// (row-major f32): `[batch, n, dv]`, on `threads` threads (at least 1).
pub fn attend(q: &[f32], k: &[f32], v: &[f32], s: Shape, threads: usize) -> Result<Vec<f32>> {
    let Shape { batch, n, m, d, dv } = s;
    for (what, got, want) in
        [("queries", q.len(), batch * n * d), ("keys", k.len(), batch * m * d), ("values", v.len(), batch * m * dv)]
    {
        if got != want {
            return Err(Error::new(
                ErrorKind::TensorShape,
                format!("self-attention: {what} have {got} values, expected {want} for {s:?}"),
            ));
        }
    }
    if let Some(why) = unsupported(n, m, d, dv) {
        return Err(Error::new(ErrorKind::Backend, format!("self-attention kernel cannot run {s:?} here: {why}")));
    }
    let mut out = vec![0f32; batch * n * dv];
    #[cfg(target_arch = "x86_64")]
    avx512::run(q, k, v, s, &mut out, threads.max(1));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = threads;
    Ok(out)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Shape, CHUNK, KEY_BLOCK};
    use crate::backend::online_softmax::{over_threads, Online, G};

    /// All work items (batch item × query group) over `threads` threads.
    pub(super) fn run(q: &[f32], k: &[f32], v: &[f32], s: Shape, out: &mut [f32], threads: usize) {
        let groups = s.n / G;
        over_threads(s.batch * groups, threads, out, |range, ptr| {
            let mut qt = vec![0f32; s.d * G];
            let mut o = Online::new(CHUNK, s.dv);
            for item in range {
                let (b, gi) = (item / groups, item % groups);
                let qg = &q[(b * s.n + gi * G) * s.d..(b * s.n + gi * G + G) * s.d];
                for i in 0..G {
                    for r in 0..s.d {
                        qt[r * G + i] = qg[i * s.d + r];
                    }
                }
                let (kb, vb) = (&k[b * s.m * s.d..(b + 1) * s.m * s.d], &v[b * s.m * s.dv..(b + 1) * s.m * s.dv]);
                // SAFETY: `attend` checked AVX-512F and the buffer lengths against the
                // shape (n a multiple of G, m of KEY_BLOCK, dv of 16); items write
                // disjoint output rows.
                unsafe {
                    group(&qt, kb, vb, s, &mut o);
                    for i in 0..G {
                        let row = b * s.n + gi * G + i;
                        o.finish(i, std::slice::from_raw_parts_mut(ptr.0.add(row * s.dv), s.dv));
                    }
                }
            }
        });
    }

    /// One query group (`qt`, transposed `[d][G]`) over all keys of its batch item.
    #[target_feature(enable = "avx512f")]
    unsafe fn group(qt: &[f32], k: &[f32], v: &[f32], s: Shape, o: &mut Online) {
        o.reset();
        let mut j0 = 0;
        while j0 < s.m {
            let rows = (s.m - j0).min(CHUNK);
            for kb in (0..rows).step_by(KEY_BLOCK) {
                scores(qt, k.as_ptr().add((j0 + kb) * s.d), s.d, o.s.as_mut_ptr().add(kb * G));
            }
            for r in 0..rows {
                o.voff[r] = (j0 + r) * s.dv;
            }
            o.chunk(rows, v);
            j0 += rows;
        }
    }

    /// `dst[kk][i] = Σ_c qt[c][i]·k[kk][c]` for the `KEY_BLOCK` keys at `k` (rows `d` apart).
    #[target_feature(enable = "avx512f")]
    unsafe fn scores(qt: &[f32], k: *const f32, d: usize, dst: *mut f32) {
        let mut a0 = [_mm512_setzero_ps(); KEY_BLOCK];
        let mut a1 = [_mm512_setzero_ps(); KEY_BLOCK];
        for c in 0..d {
            let q0 = _mm512_loadu_ps(qt.as_ptr().add(c * G));
            let q1 = _mm512_loadu_ps(qt.as_ptr().add(c * G + 16));
            for kk in 0..KEY_BLOCK {
                let x = _mm512_set1_ps(*k.add(kk * d + c));
                a0[kk] = _mm512_fmadd_ps(q0, x, a0[kk]);
                a1[kk] = _mm512_fmadd_ps(q1, x, a1[kk]);
            }
        }
        for kk in 0..KEY_BLOCK {
            _mm512_storeu_ps(dst.add(kk * G), a0[kk]);
            _mm512_storeu_ps(dst.add(kk * G + 16), a1[kk]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::rope_cross_attention::tests::rand;

    /// `softmax(q·kᵀ)·v` in float64, the reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape) -> Vec<f64> {
        let Shape { batch, n, m, d, dv } = s;
        let mut out = vec![0f64; batch * n * dv];
        for b in 0..batch {
            for i in 0..n {
                let qi = &q[(b * n + i) * d..(b * n + i + 1) * d];
                let sc: Vec<f64> = (0..m)
                    .map(|j| qi.iter().zip(&k[(b * m + j) * d..]).map(|(x, y)| *x as f64 * *y as f64).sum())
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let total: f64 = w.iter().sum();
                for (j, wj) in w.iter().enumerate() {
                    for c in 0..dv {
                        out[(b * n + i) * dv + c] += wj / total * v[(b * m + j) * dv + c] as f64;
                    }
                }
            }
        }
        out
    }

    /// The kernel against float64 on small sizes: two batch items, a key count that ends
    /// in a partial chunk (72 = 64 + 8), a width that is no multiple of 16, values of 16,
    /// 48 and 80 columns (the value loop's 1-, 3- and 4+1-vector passes). Scores spread
    /// over about ±10 so the softmax is peaked and the running maximum moves between
    /// chunks. Tolerance 2e-5 absolute on outputs in [-1, 1]: float32 reordering stays
    /// near 1e-6; a key skipped, counted twice or weighted against a stale maximum errs
    /// by 1e-3 and more.
    #[test]
    fn fused_kernel_matches_the_formula() {
        if !crate::backend::rope_cross_attention::cpu_supported() {
            eprintln!("skipped: no AVX-512F on this CPU (the kernel is not used here either)");
            return;
        }
        for (n, m, d, dv) in [(64, 72, 40, 16), (32, 8, 24, 48), (96, 136, 36, 80)] {
            let s = Shape { batch: 2, n, m, d, dv };
            let q = rand(1, 2 * n * d, 0.8);
            let k = rand(2, 2 * m * d, 0.8);
            let v = rand(3, 2 * m * dv, 1.0);
            let got = attend(&q, &k, &v, s, 2).unwrap();
            let want = reference(&q, &k, &v, s);
            let worst = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
            assert!(worst < 2e-5, "{s:?}: error {worst:e}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let s = Shape { batch: 1, n: 32, m: 8, d: 4, dv: 16 };
        let err = attend(&[0.0; 100], &[0.0; 32], &[0.0; 128], s, 1).err().unwrap();
        assert!(err.to_string().contains("queries have 100 values, expected 128"), "{err}");
        if crate::backend::rope_cross_attention::cpu_supported() {
            let s = Shape { batch: 1, n: 32, m: 7, d: 4, dv: 16 };
            let err = attend(&[0.0; 128], &[0.0; 28], &[0.0; 112], s, 1).err().unwrap();
            assert!(err.to_string().contains("7 keys are not whole blocks of 8"), "{err}");
        }
    }
}
