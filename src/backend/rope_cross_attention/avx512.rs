//! The AVX-512F kernel of [`super`]: groups of 32 queries, each factored once, then
//! scored, soft-maxed online and summed over every object's keys, tile by tile.
#![allow(clippy::needless_range_loop)] // loops index several layouts with one counter

use std::arch::x86_64::*;

use super::{Call, Factor, LayerTables, CB, MAX_FRAMES_PER_PASS, PTR_CHUNK, TILE};
use crate::backend::online_softmax::{over_threads, Online, G};

/// Per-thread buffers, reused for every group.
struct Scratch {
    /// The group's queries, transposed (`[d][G]`), and one part's `φ_k` (`[rank][kv][G]`,
    /// bias `[rank][G]`; see [`Factor`]).
    qt: Vec<f32>,
    phi: Vec<f32>,
    phib: Vec<f32>,
    /// `u[x][c][i]`, `bu[x][i]`; `w[y][c][i]`, `bw[y][i]`; `z[c][i]`, `bz[i]`.
    u: Vec<f32>,
    bu: Vec<f32>,
    w: Vec<f32>,
    bw: Vec<f32>,
    z: Vec<f32>,
    bz: Vec<f32>,
    /// The online softmax over the keys' chunks.
    o: Online,
}

impl Scratch {
    fn new(t: &LayerTables) -> Scratch {
        let (d, kv, e) = (t.dims.d, t.dims.kv, t.dims.e);
        let rows = (TILE * TILE * MAX_FRAMES_PER_PASS).max(PTR_CHUNK);
        Scratch {
            qt: vec![0.0; d * G],
            phi: vec![0.0; t.x.rank.max(t.y.rank) * kv * G],
            phib: vec![0.0; t.x.rank.max(t.y.rank) * G],
            u: vec![0.0; e * kv * G],
            bu: vec![0.0; e * G],
            w: vec![0.0; e * kv * G],
            bw: vec![0.0; e * G],
            z: vec![0.0; kv * G],
            bz: vec![0.0; G],
            o: Online::new(rows, kv),
        }
    }
}

/// All work items (query batch × group) over `threads` threads.
pub(super) fn run(t: &LayerTables, c: &Call, out: &mut [f32], threads: usize) {
    let groups = t.dims.e * t.dims.e / G;
    over_threads(c.bq * groups, threads, out, |range, ptr| {
        let mut sc = Scratch::new(t);
        for item in range {
            // SAFETY: `attend` checked AVX-512F and every buffer length against the dims;
            // items write disjoint output rows.
            unsafe { group(t, c, item / groups, item % groups, ptr.0, &mut sc) };
        }
    });
}

/// Queries `[gi·G, gi·G + G)` of query batch `qb`, for every object that uses it.
#[target_feature(enable = "avx512f")]
unsafe fn group(t: &LayerTables, c: &Call, qb: usize, gi: usize, out: *mut f32, sc: &mut Scratch) {
    let (d, kv, e) = (t.dims.d, t.dims.kv, t.dims.e);
    let n = e * e;
    let q = &c.q[(qb * n + gi * G) * d..(qb * n + gi * G + G) * d];
    for i in 0..G {
        for r in 0..d {
            sc.qt[r * G + i] = q[i * d + r];
        }
    }
    // the column half, the row half, and (pointers) the whole head
    factor(&t.x, &sc.qt, &mut sc.phi, &mut sc.phib, &mut sc.u, &mut sc.bu);
    factor(&t.y, &sc.qt[d / 2 * G..], &mut sc.phi, &mut sc.phib, &mut sc.w, &mut sc.bw);
    if c.pointers > 0 {
        // no rotation: u = φ_0
        project(&t.ptr, &sc.qt, &mut sc.z, &mut sc.bz);
    }
    let objects = if c.bq == 1 { 0..c.objects } else { qb..qb + 1 };
    for o in objects {
        sc.o.reset();
        let (mk, mv) = (&c.mem_k[o * c.frames * n * kv..], &c.mem_v[o * c.frames * n * kv..]);
        for tile in 0..(e / TILE) * (e / TILE) {
            let mut f0 = 0;
            while f0 < c.frames {
                let fc = (c.frames - f0).min(MAX_FRAMES_PER_PASS);
                let rows = tile_scores(t, sc, mk, tile, f0, fc);
                sc.o.chunk(rows, mv);
                f0 += fc;
            }
        }
        let (pk, pv) = (&c.ptr_k[o * c.pointers * kv..], &c.ptr_v[o * c.pointers * kv..]);
        let mut p0 = 0;
        while p0 < c.pointers {
            let np = (c.pointers - p0).min(PTR_CHUNK);
            pointer_scores(sc, pk, kv, p0, np);
            sc.o.chunk(np, pv);
            p0 += np;
        }
        for i in 0..G {
            sc.o.finish(i, std::slice::from_raw_parts_mut(out.add((o * n + gi * G + i) * kv), kv));
        }
    }
}

/// `u[t][c][i]`, `bu[t][i]` of the rotated [`Factor`] `f` for the first `f.width` rows of
/// `qt` (the group's queries transposed, from the part's first row): `φ_k = F_k·q` into
/// `phi`/`phib`, then `u_t = Σ_k L[t][k]·φ_k`, 8 positions at a time (positions are
/// whole tiles).
#[target_feature(enable = "avx512f")]
unsafe fn factor(f: &Factor, qt: &[f32], phi: &mut [f32], phib: &mut [f32], u: &mut [f32], bu: &mut [f32]) {
    project(f, qt, phi, phib);
    let kv = f.f.len() / (f.rank * f.width);
    for t0 in (0..f.positions).step_by(TILE) {
        for c in 0..kv {
            mix(f, t0, phi.as_ptr().add(c * G), kv * G, u.as_mut_ptr().add((t0 * kv + c) * G), kv * G);
        }
        mix(f, t0, phib.as_ptr(), G, bu.as_mut_ptr().add(t0 * G), G);
    }
}

/// `out[k][c][i] = Σ_r f.f[k][c][r]·q_i[r]`, `outb[k][i] = Σ_r f.fb[k][r]·q_i[r]` for
/// every `k < f.rank` (`φ_k`; for the pointers, `u` itself).
#[target_feature(enable = "avx512f")]
unsafe fn project(f: &Factor, qt: &[f32], out: &mut [f32], outb: &mut [f32]) {
    let width = f.width;
    let kv = f.f.len() / (f.rank * width);
    for k in 0..f.rank {
        let a = f.f.as_ptr().add(k * kv * width);
        for c0 in (0..kv).step_by(CB) {
            let mut acc = [_mm512_setzero_ps(); 2 * CB];
            for r in 0..width {
                let q0 = _mm512_loadu_ps(qt.as_ptr().add(r * G));
                let q1 = _mm512_loadu_ps(qt.as_ptr().add(r * G + 16));
                for j in 0..CB {
                    let w = _mm512_set1_ps(*a.add((c0 + j) * width + r));
                    acc[2 * j] = _mm512_fmadd_ps(w, q0, acc[2 * j]);
                    acc[2 * j + 1] = _mm512_fmadd_ps(w, q1, acc[2 * j + 1]);
                }
            }
            for j in 0..CB {
                let o = out.as_mut_ptr().add((k * kv + c0 + j) * G);
                _mm512_storeu_ps(o, acc[2 * j]);
                _mm512_storeu_ps(o.add(16), acc[2 * j + 1]);
            }
        }
        let (mut b0, mut b1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for r in 0..width {
            let w = _mm512_set1_ps(f.fb[k * width + r]);
            b0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(qt.as_ptr().add(r * G)), b0);
            b1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(qt.as_ptr().add(r * G + 16)), b1);
        }
        _mm512_storeu_ps(outb.as_mut_ptr().add(k * G), b0);
        _mm512_storeu_ps(outb.as_mut_ptr().add(k * G + 16), b1);
    }
}

/// `dst[t·step] = Σ_k L[t][k]·src[k·stride]` (G lanes each) for positions `[t0, t0 + TILE)`.
#[target_feature(enable = "avx512f")]
unsafe fn mix(f: &Factor, t0: usize, src: *const f32, stride: usize, dst: *mut f32, step: usize) {
    let mut acc = [_mm512_setzero_ps(); 2 * TILE];
    let l = f.l.as_ptr().add(t0 * f.rank);
    for k in 0..f.rank {
        let p0 = _mm512_loadu_ps(src.add(k * stride));
        let p1 = _mm512_loadu_ps(src.add(k * stride + 16));
        for t in 0..TILE {
            let w = _mm512_set1_ps(*l.add(t * f.rank + k));
            acc[2 * t] = _mm512_fmadd_ps(w, p0, acc[2 * t]);
            acc[2 * t + 1] = _mm512_fmadd_ps(w, p1, acc[2 * t + 1]);
        }
    }
    for t in 0..TILE {
        _mm512_storeu_ps(dst.add(t * step), acc[2 * t]);
        _mm512_storeu_ps(dst.add(t * step + 16), acc[2 * t + 1]);
    }
}

/// Scores of frames `[f0, f0 + fc)` at the keys of one grid tile: `s[r·fc + f][i]`.
/// Returns the row count.
#[target_feature(enable = "avx512f")]
unsafe fn tile_scores(t: &LayerTables, sc: &mut Scratch, mk: &[f32], tile: usize, f0: usize, fc: usize) -> usize {
    match fc {
        1 => tile_scores_n::<1>(t, sc, mk, tile, f0),
        2 => tile_scores_n::<2>(t, sc, mk, tile, f0),
        3 => tile_scores_n::<3>(t, sc, mk, tile, f0),
        4 => tile_scores_n::<4>(t, sc, mk, tile, f0),
        5 => tile_scores_n::<5>(t, sc, mk, tile, f0),
        6 => tile_scores_n::<6>(t, sc, mk, tile, f0),
        7 => tile_scores_n::<7>(t, sc, mk, tile, f0),
        _ => tile_scores_n::<8>(t, sc, mk, tile, f0),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn tile_scores_n<const F: usize>(
    t: &LayerTables,
    sc: &mut Scratch,
    mk: &[f32],
    tile: usize,
    f0: usize,
) -> usize {
    let (kv, e) = (t.dims.kv, t.dims.e);
    let n = e * e;
    let tiles_x = e / TILE;
    let (ty, tx) = (tile / tiles_x, tile % tiles_x);
    for r in 0..TILE * TILE {
        let (x, y) = (tx * TILE + r % TILE, ty * TILE + r / TILE);
        let j = y * e + x;
        let (up, wp) = (sc.u.as_ptr().add(x * kv * G), sc.w.as_ptr().add(y * kv * G));
        let mut a0 = [_mm512_setzero_ps(); F];
        let mut a1 = [_mm512_setzero_ps(); F];
        let kp = mk.as_ptr().add((f0 * n + j) * kv);
        for c in 0..kv {
            let g0 = _mm512_add_ps(_mm512_loadu_ps(up.add(c * G)), _mm512_loadu_ps(wp.add(c * G)));
            let g1 = _mm512_add_ps(_mm512_loadu_ps(up.add(c * G + 16)), _mm512_loadu_ps(wp.add(c * G + 16)));
            for f in 0..F {
                let m = _mm512_set1_ps(*kp.add(f * n * kv + c));
                a0[f] = _mm512_fmadd_ps(g0, m, a0[f]);
                a1[f] = _mm512_fmadd_ps(g1, m, a1[f]);
            }
        }
        let b0 = _mm512_add_ps(_mm512_loadu_ps(sc.bu.as_ptr().add(x * G)), _mm512_loadu_ps(sc.bw.as_ptr().add(y * G)));
        let b1 = _mm512_add_ps(
            _mm512_loadu_ps(sc.bu.as_ptr().add(x * G + 16)),
            _mm512_loadu_ps(sc.bw.as_ptr().add(y * G + 16)),
        );
        for f in 0..F {
            let row = r * F + f;
            let o = sc.o.s.as_mut_ptr().add(row * G);
            _mm512_storeu_ps(o, _mm512_add_ps(a0[f], b0));
            _mm512_storeu_ps(o.add(16), _mm512_add_ps(a1[f], b1));
            sc.o.voff[row] = ((f0 + f) * n + j) * kv;
        }
    }
    TILE * TILE * F
}

/// Scores of pointer keys `[p0, p0 + np)` (not rotated): `s[p][i] = z·k_p + bz`.
#[target_feature(enable = "avx512f")]
unsafe fn pointer_scores(sc: &mut Scratch, pk: &[f32], kv: usize, p0: usize, np: usize) {
    let zp = sc.z.as_ptr();
    for p in 0..np {
        let kp = pk.as_ptr().add((p0 + p) * kv);
        let mut a0 = _mm512_loadu_ps(sc.bz.as_ptr());
        let mut a1 = _mm512_loadu_ps(sc.bz.as_ptr().add(16));
        for c in 0..kv {
            let m = _mm512_set1_ps(*kp.add(c));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(zp.add(c * G)), m, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(zp.add(c * G + 16)), m, a1);
        }
        _mm512_storeu_ps(sc.o.s.as_mut_ptr().add(p * G), a0);
        _mm512_storeu_ps(sc.o.s.as_mut_ptr().add(p * G + 16), a1);
        sc.o.voff[p] = (p0 + p) * kv;
    }
}
