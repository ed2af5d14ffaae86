//! SAM 2's memory cross-attention core on the CPU in one fused kernel (x86-64 AVX-512F):
//! scores, softmax and the weighted sum of the raw memory for `RoPEAttention(q=tgt2,
//! k=memory + pos, v=memory, num_k_exclude_rope=P)` with `rope_k_repeat`, one head.
//!
//! Upstream projects the 64-wide memory to 256-wide keys (`k_proj`), turns them with
//! `apply_rotary_enc` (the `compute_axial_cis` table: the first half of the complex
//! pairs turns with the key's column x, the second half with its row y) and scores
//! `q·k` 256 wide. Rotation and projection are linear, so for a rotated query `q`
//! `q·R(x,y)·(Wk·m + bk) = (u_x + w_y)·m + βx_x + βy_y` with `u_x = (Rx·Wk_X)ᵀ·q_X`,
//! `w_y = (Ry·Wk_Y)ᵀ·q_Y`, `βx_x = q_X·Rx·bk_X`, `βy_y = q_Y·Ry·bk_Y`: each key is scored
//! `kv` wide (64, a quarter), after a per-query cost of `2·rank·kv·(d/2 + E)` products
//! (`u` and `w` for all E positions through a low-rank split of the rotation table, see
//! [`Factor`]; rank 28 for SAM 2, against `2·E·kv·d/2` turning the query per position). The
//! pointer keys (not rotated) are scored through `z = Wkᵀ·q`, `β = q·bk` the same way.
//! The softmax runs online over 8×8 tiles of the grid (and the pointers), and its
//! weights multiply the raw memory; `v_proj` stays folded into `out_proj` in the graph
//! (`models::memory_attention::raw_values_out`). Exact in real arithmetic; in float32
//! the sums are reordered (the tests bound the difference).
//!
//! `examples/memory_attention_cpu` times the memory attention with this kernel against
//! the exported graph run whole.

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::error::{Error, ErrorKind, Result};

/// Grid tile side of one online-softmax chunk.
const TILE: usize = 8;
/// Memory columns per step of the query factoring.
const CB: usize = 8;
/// Most frames scored per pass over a tile (the kernel's accumulators).
const MAX_FRAMES_PER_PASS: usize = 8;
/// Pointer keys per online-softmax chunk.
const PTR_CHUNK: usize = TILE * TILE;

/// Sizes of one cross-attention: `d` the (single) head's width, `kv` the memory width,
/// `e` the grid side (queries and each frame's keys are the `e × e` grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub d: usize,
    pub kv: usize,
    pub e: usize,
}

impl Dims {
    /// Why this kernel cannot run these sizes here, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if !cpu_supported() {
            return Some("the CPU has no AVX-512F".into());
        }
        let Dims { d, kv, e } = *self;
        if d == 0 || !d.is_multiple_of(4) {
            Some(format!("head width {d} is not a multiple of 4"))
        } else if kv == 0 || !kv.is_multiple_of(16) {
            Some(format!("memory width {kv} is not a multiple of 16"))
        } else if e == 0 || !e.is_multiple_of(TILE) {
            Some(format!("grid side {e} is not a multiple of {TILE}"))
        } else {
            None
        }
    }
}

/// Whether this CPU can run the kernel.
pub fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One part of `k_proj` (a half of the head, or all of it for the pointers) and the
/// rotations of one grid axis: `u_t = (R_t·Wk_part)ᵀ·q = Wk_partᵀ·(R_tᵀ·q)` for every
/// position `t` of the axis, and the bias term `β_t = bk_partᵀ·(R_tᵀ·q)`.
///
/// Per pair p of the part, `R_tᵀ` turns `(q0, q1)` into `(q0·cos + q1·sin, q1·cos − q0·sin)`
/// with `cos = cos(t·θ_p)`, so `u_t = Σ_j T[t][j]·G_j·q` where `T[t] = (cos(t·θ_p)_p,
/// sin(t·θ_p)_p)` and each `G_j` is `Wk_partᵀ` with one pair's columns kept (and swapped
/// for the sines). Most of RoPE's frequencies turn by a small fraction of a turn across
/// the grid, so `T` (positions × width) is numerically of low rank: [`low_rank`] writes
/// `T = L·R` within [`LOW_RANK_TOL`] (rank 28 of 64 at SAM 2's 64 positions and 128
/// columns), and
/// `u_t = Σ_k L[t][k]·φ_k` with `φ_k = F_k·q`, `F_k = Σ_j R[k][j]·G_j`: per query
/// `rank·kv·(width + positions)` products instead of `positions·kv·width`.
pub(crate) struct Factor {
    /// `f[k][c][r]` (`F_k`, `[rank][kv][width]`) and `fb[k][r]` (the bias's `F_k`).
    pub f: Vec<f32>,
    pub fb: Vec<f32>,
    /// `l[t][k]` (`[positions][rank]`); empty for the pointers (no rotation: rank 1, one
    /// position, `u = φ_0`).
    pub l: Vec<f32>,
    pub rank: usize,
    pub positions: usize,
    pub width: usize,
}

/// Error bound of [`low_rank`] on each row of the rotation table (rows of norm
/// `√(width/2)`, 8 at SAM 2's 128 columns): the graph's float32 table is itself the exact
/// one rounded, by up to 6e-8 per entry and ~7e-7 per row, so keeping within 1e-6 of it
/// moves the scores by as much as float32 already does. (Below that bound the rounding
/// noise is all that is left: 1e-7 needs rank 63 of 64, 1e-6 rank 28.)
const LOW_RANK_TOL: f64 = 1e-6;

/// `t` (`rows × cols`, row-major) as `L·R` with `R`'s rows orthonormal: rows are picked
/// greedily by largest residual (pivoted Gram–Schmidt, reorthogonalized) until every
/// row's residual norm is at most `tol`. Returns (`L [rows][rank]`, `R [rank][cols]`,
/// rank).
pub(crate) fn low_rank(t: &[f64], rows: usize, cols: usize, tol: f64) -> (Vec<f64>, Vec<f64>, usize) {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut res = t.to_vec();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    while basis.len() < rows.min(cols) {
        let norms: Vec<f64> =
            (0..rows).map(|i| dot(&res[i * cols..][..cols], &res[i * cols..][..cols]).sqrt()).collect();
        let (pick, &norm) = norms.iter().enumerate().fold((0, &0.0), |m, x| if x.1 > m.1 { x } else { m });
        if norm <= tol {
            break;
        }
        let mut q = res[pick * cols..][..cols].to_vec();
        for _ in 0..2 {
            for b in &basis {
                let c = dot(&q, b);
                q.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let n = dot(&q, &q).sqrt();
        q.iter_mut().for_each(|x| *x /= n);
        for i in 0..rows {
            let r = &mut res[i * cols..][..cols];
            let c = dot(r, &q);
            r.iter_mut().zip(&q).for_each(|(x, y)| *x -= c * y);
        }
        basis.push(q);
    }
    let rank = basis.len();
    let l = (0..rows)
        .flat_map(|i| basis.iter().map(move |b| (i, b)))
        .map(|(i, b)| dot(&t[i * cols..][..cols], b))
        .collect();
    (l, basis.concat(), rank)
}

impl Factor {
    /// The part `a` (`[kv][width]`, `a[c][r] = Wk[first + r][c]`) and bias `b` (`[width]`),
    /// turned by `cos`/`sin` (`[positions][width/2]`).
    fn rotated(a: &[f32], b: &[f32], cos: &[f32], sin: &[f32], positions: usize, width: usize) -> Factor {
        let (pairs, kv) = (width / 2, a.len() / width);
        let mut t = vec![0f64; positions * width];
        for i in 0..positions {
            for p in 0..pairs {
                t[i * width + p] = cos[i * pairs + p] as f64;
                t[i * width + pairs + p] = sin[i * pairs + p] as f64;
            }
        }
        let (l, r, rank) = low_rank(&t, positions, width, LOW_RANK_TOL);
        // F_k[2p] = Rc·x[2p] − Rs·x[2p+1], F_k[2p+1] = Rc·x[2p+1] + Rs·x[2p] for a row x
        // of `a` (or `b`), Rc = R[k][p], Rs = R[k][pairs + p]
        let turn = |x: &[f32], k: usize, out: &mut Vec<f32>| {
            for p in 0..pairs {
                let (rc, rs) = (r[k * width + p], r[k * width + pairs + p]);
                let (x0, x1) = (x[2 * p] as f64, x[2 * p + 1] as f64);
                out.push((rc * x0 - rs * x1) as f32);
                out.push((rc * x1 + rs * x0) as f32);
            }
        };
        let (mut f, mut fb) = (Vec::with_capacity(rank * kv * width), Vec::with_capacity(rank * width));
        for k in 0..rank {
            for c in 0..kv {
                turn(&a[c * width..(c + 1) * width], k, &mut f);
            }
            turn(b, k, &mut fb);
        }
        Factor { f, fb, l: l.into_iter().map(|x| x as f32).collect(), rank, positions, width }
    }
}

/// One layer's factors: the column (x) half, the row (y) half, the unrotated pointers.
pub struct LayerTables {
    pub(crate) dims: Dims,
    pub(crate) x: Factor,
    pub(crate) y: Factor,
    pub(crate) ptr: Factor,
}

impl LayerTables {
    /// From `k_proj` (`weight [d, kv]`, `bias [d]`, torch layout) and the rotary table
    /// `cos`/`sin` `[e·e, d/2]` of the graph (`AxialRope`: position `j = y·e + x`, pairs
    /// `[0, d/4)` turned by x, `[d/4, d/2)` by y).
    pub fn new(dims: Dims, wk: &[f32], bk: &[f32], cos: &[f32], sin: &[f32]) -> Result<LayerTables> {
        let Dims { d, kv, e } = dims;
        let bad = |what: &str, n: usize, want: usize| {
            Error::new(ErrorKind::TensorShape, format!("rope cross-attention: {what} has {n} values, expected {want}"))
        };
        for (what, n, want) in
            [("k_proj.weight", wk.len(), d * kv), ("k_proj.bias", bk.len(), d), ("rope cos", cos.len(), e * e * d / 2)]
        {
            if n != want {
                return Err(bad(what, n, want));
            }
        }
        if sin.len() != cos.len() {
            return Err(bad("rope sin", sin.len(), cos.len()));
        }
        // rows [first, first + width) of k_proj, transposed to [kv][width]
        let part = |first: usize, width: usize| -> Vec<f32> {
            let mut a = vec![0.0; kv * width];
            for c in 0..kv {
                for i in 0..width {
                    a[c * width + i] = wk[(first + i) * kv + c];
                }
            }
            a
        };
        let h = d / 2;
        let axis = |ax: usize| {
            let (mut fc, mut fs) = (vec![0.0; e * h / 2], vec![0.0; e * h / 2]);
            for t in 0..e {
                // the table row of grid position (x = t, y = 0) or (x = 0, y = t)
                let j = if ax == 0 { t } else { t * e };
                for p in 0..h / 2 {
                    fc[t * h / 2 + p] = cos[j * h + ax * h / 2 + p];
                    fs[t * h / 2 + p] = sin[j * h + ax * h / 2 + p];
                }
            }
            Factor::rotated(&part(ax * h, h), &bk[ax * h..(ax + 1) * h], &fc, &fs, e, h)
        };
        let ptr = Factor { f: part(0, d), fb: bk.to_vec(), l: Vec::new(), rank: 1, positions: 1, width: d };
        Ok(LayerTables { dims, x: axis(0), y: axis(1), ptr })
    }
}

/// One call's tensors (row-major f32): `q [bq, e·e, d]` rotated queries with the score
/// scale applied (`bq` 1: shared by every object), `mem_k`/`mem_v` `[b, frames·e·e, kv]`
/// (`memory + pos` / `memory`), `ptr_k`/`ptr_v` `[b, p, kv]`.
pub struct Call<'a> {
    pub q: &'a [f32],
    pub bq: usize,
    pub mem_k: &'a [f32],
    pub mem_v: &'a [f32],
    pub ptr_k: &'a [f32],
    pub ptr_v: &'a [f32],
    pub objects: usize,
    pub frames: usize,
    pub pointers: usize,
}

/// The attention-weighted raw memory `[objects, e·e, kv]` of one layer, on `threads`
/// threads (at least 1).
pub fn attend(t: &LayerTables, call: &Call, threads: usize) -> Result<Vec<f32>> {
    let Dims { d, kv, e } = t.dims;
    let n = e * e;
    let c = call;
    let checks = [
        ("queries", c.q.len(), c.bq * n * d),
        ("memory keys", c.mem_k.len(), c.objects * c.frames * n * kv),
        ("memory values", c.mem_v.len(), c.objects * c.frames * n * kv),
        ("pointer keys", c.ptr_k.len(), c.objects * c.pointers * kv),
        ("pointer values", c.ptr_v.len(), c.objects * c.pointers * kv),
    ];
    for (what, got, want) in checks {
        if got != want {
            return Err(Error::new(
                ErrorKind::TensorShape,
                format!("rope cross-attention: {what} have {got} values, expected {want}"),
            ));
        }
    }
    if c.bq != 1 && c.bq != c.objects {
        return Err(Error::new(
            ErrorKind::TensorShape,
            format!("rope cross-attention: {} query batches for {} objects", c.bq, c.objects),
        ));
    }
    if c.frames + c.pointers == 0 {
        return Err(Error::new(ErrorKind::InvalidInput, "rope cross-attention: no memory keys"));
    }
    if let Some(why) = t.dims.unsupported() {
        return Err(Error::new(ErrorKind::Backend, format!("rope cross-attention cannot run here: {why}")));
    }
    let mut out = vec![0f32; c.objects * n * kv];
    #[cfg(target_arch = "x86_64")]
    avx512::run(t, c, &mut out, threads.max(1));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = threads;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Upstream's formula in float64, the reference of the tests: keys `Wk·m + bk`, memory
    /// keys turned by their grid position's row of `cos`/`sin`, softmax over all keys,
    /// weighted sum of the values. Returns `[objects, e·e, kv]`.
    #[allow(clippy::too_many_arguments)]
    fn reference(dims: Dims, wk: &[f32], bk: &[f32], cos: &[f32], sin: &[f32], call: &Call) -> Vec<f64> {
        let Dims { d, kv, e } = dims;
        let n = e * e;
        let mut out = vec![0f64; call.objects * n * kv];
        for o in 0..call.objects {
            let key = |m: &[f32]| -> Vec<f64> {
                (0..d)
                    .map(|r| bk[r] as f64 + (0..kv).map(|c| wk[r * kv + c] as f64 * m[c] as f64).sum::<f64>())
                    .collect()
            };
            let mut keys = Vec::new();
            for f in 0..call.frames {
                for j in 0..n {
                    let at = ((o * call.frames + f) * n + j) * kv;
                    let k = key(&call.mem_k[at..at + kv]);
                    let mut rot = vec![0f64; d];
                    for p in 0..d / 2 {
                        let (c, s) = (cos[j * d / 2 + p] as f64, sin[j * d / 2 + p] as f64);
                        rot[2 * p] = k[2 * p] * c - k[2 * p + 1] * s;
                        rot[2 * p + 1] = k[2 * p] * s + k[2 * p + 1] * c;
                    }
                    keys.push((rot, &call.mem_v[at..at + kv]));
                }
            }
            for p in 0..call.pointers {
                let at = (o * call.pointers + p) * kv;
                keys.push((key(&call.ptr_k[at..at + kv]), &call.ptr_v[at..at + kv]));
            }
            let qo = if call.bq == 1 { 0 } else { o };
            for i in 0..n {
                let q = &call.q[(qo * n + i) * d..(qo * n + i + 1) * d];
                let s: Vec<f64> = keys.iter().map(|(k, _)| k.iter().zip(q).map(|(a, b)| a * *b as f64).sum()).collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                let dst = &mut out[(o * n + i) * kv..(o * n + i + 1) * kv];
                for ((_, v), wi) in keys.iter().zip(&w) {
                    for c in 0..kv {
                        dst[c] += wi / z * v[c] as f64;
                    }
                }
            }
        }
        out
    }

    /// Seeded uniform values in [-scale, scale) (also the self-attention tests').
    pub(crate) fn rand(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut r = crate::gpu::plan::SplitMix(seed);
        (0..n).map(|_| r.uniform(-scale, scale)).collect()
    }

    /// The graph's axial table (`compute_axial_cis`, theta 10000) for an e×e grid.
    fn table(d: usize, e: usize) -> (Vec<f32>, Vec<f32>) {
        let rope = crate::models::rope::AxialRope::new(d, e, e, 10000.0);
        (rope.cos.clone(), rope.sin.clone())
    }

    /// The fused kernel against the float64 formula on small sizes: several objects with
    /// shared and with per-object queries, more frames than one pass scores (8), pointers
    /// over one chunk, and none. Scores spread over about ±10 so the softmax is peaked.
    /// Tolerance 2e-5 absolute on outputs in [-1, 1]: float32 reordering stays near 1e-6,
    /// a key scored with the wrong position or frame errs by 1e-2 and more.
    #[test]
    fn fused_kernel_matches_the_formula() {
        if !cpu_supported() {
            eprintln!("skipped: no AVX-512F on this CPU (the kernel is not used here either)");
            return;
        }
        let dims = Dims { d: 32, kv: 16, e: 8 };
        let n = dims.e * dims.e;
        let wk = rand(1, dims.d * dims.kv, 0.5);
        let bk = rand(2, dims.d, 0.3);
        let (cos, sin) = table(dims.d, dims.e);
        let t = LayerTables::new(dims, &wk, &bk, &cos, &sin).unwrap();
        for (objects, bq, frames, pointers) in [(1, 1, 1, 0), (2, 1, 3, 4), (2, 2, 10, 70), (3, 1, 0, 5)] {
            let q = rand(3, bq * n * dims.d, 1.0);
            let mem_k = rand(4, objects * frames * n * dims.kv, 1.0);
            let mem_v = rand(5, objects * frames * n * dims.kv, 1.0);
            let ptr_k = rand(6, objects * pointers * dims.kv, 1.0);
            let ptr_v = rand(7, objects * pointers * dims.kv, 1.0);
            let call = Call {
                q: &q,
                bq,
                mem_k: &mem_k,
                mem_v: &mem_v,
                ptr_k: &ptr_k,
                ptr_v: &ptr_v,
                objects,
                frames,
                pointers,
            };
            let got = attend(&t, &call, 2).unwrap();
            let want = reference(dims, &wk, &bk, &cos, &sin, &call);
            let worst = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
            assert!(worst < 2e-5, "objects {objects}, bq {bq}, frames {frames}, pointers {pointers}: error {worst:e}");
        }
    }

    /// `T = L·R` within the tolerance on every row, checked by multiplying back: on the
    /// column half of SAM 2's table (64 positions × 128, from the float32 `AxialRope` as
    /// the kernel gets it) the rank falls to under half, and a generic matrix keeps its
    /// full rank and is reproduced to rounding.
    #[test]
    fn low_rank_reproduces_the_table() {
        let (d, e) = (256, 64);
        let (cos, sin) = table(d, e);
        let (h, pairs) = (d / 2, d / 4);
        let mut t = vec![0f64; e * h];
        for x in 0..e {
            for p in 0..pairs {
                t[x * h + p] = cos[x * h + p] as f64;
                t[x * h + pairs + p] = sin[x * h + p] as f64;
            }
        }
        let generic: Vec<f64> = rand(9, 12 * 20, 1.0).into_iter().map(f64::from).collect();
        for (m, rows, cols, tol, rank_at_most) in [(&t, e, h, LOW_RANK_TOL, 32), (&generic, 12, 20, 1e-12, 12)] {
            let (l, r, rank) = low_rank(m, rows, cols, tol);
            assert!(rank <= rank_at_most, "rank {rank}");
            for i in 0..rows {
                let err: f64 = (0..cols)
                    .map(|j| {
                        (m[i * cols + j] - (0..rank).map(|k| l[i * rank + k] * r[k * cols + j]).sum::<f64>()).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt();
                assert!(err <= tol * 1.01, "row {i}: error {err:e} over {tol:e} (rank {rank})");
            }
            if rows == 12 {
                assert_eq!(rank, 12, "a generic 12×20 matrix has full rank");
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let dims = Dims { d: 32, kv: 16, e: 8 };
        let (cos, sin) = table(dims.d, dims.e);
        let err = LayerTables::new(dims, &[0.0; 10], &[0.0; 32], &cos, &sin).err().unwrap();
        assert!(err.to_string().contains("k_proj.weight has 10 values"), "{err}");
        if !cpu_supported() {
            return;
        }
        let t = LayerTables::new(dims, &vec![0.0; 32 * 16], &[0.0; 32], &cos, &sin).unwrap();
        let q = vec![0f32; 64 * 32];
        let call = Call {
            q: &q,
            bq: 1,
            mem_k: &[0.0; 5],
            mem_v: &[],
            ptr_k: &[],
            ptr_v: &[],
            objects: 1,
            frames: 1,
            pointers: 0,
        };
        let err = attend(&t, &call, 1).err().unwrap();
        assert!(err.to_string().contains("memory keys have 5 values"), "{err}");
    }
}
