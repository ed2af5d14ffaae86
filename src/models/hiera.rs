//! The Hiera trunk (`sam2/modeling/backbones/hieradet.py`, `backbones/utils.py`):
//! `PatchEmbed` → `+ _get_pos_embed` → `MultiScaleBlock`s (window attention, q-pooling
//! at stage changes) → one NCHW feature map per stage, highest resolution first.
//!
//! Tokens stay channels-last, `[B, H, W, C]` with B = 1 (as upstream); windows are
//! `[num_windows, ws, ws, C]`. The input-independent position embedding (bicubic
//! interpolation of `pos_embed` plus the tiled `pos_embed_window`) is computed here at
//! export time, with torch's `upsample_bicubic2d` arithmetic, and stored as a constant.

use std::sync::Arc;

use crate::config::HieraConfig;
use crate::error::{graph_err, Result};
use crate::onnx::graph::{ConvOpts, Graph, Value};
use crate::onnx::nn::{self, Act};
use crate::weights::{TensorF32, Vb};

/// `norm_layer = partial(getattr(nn, "LayerNorm"), eps=1e-6)` in `MultiScaleBlock`.
pub const NORM_EPS: f32 = 1e-6;
/// `PatchEmbed(kernel_size=(7, 7), stride=(4, 4), padding=(3, 3))`.
const PATCH_KERNEL: usize = 7;
const PATCH_STRIDE: usize = 4;
const PATCH_PADDING: usize = 3;
/// `q_stride: Tuple[int, int] = (2, 2)`.
const Q_STRIDE: usize = 2;
/// `MultiScaleBlock(mlp_ratio=4.0)`.
const MLP_RATIO: f64 = 4.0;

/// One `MultiScaleBlock` as `Hiera.__init__` configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    pub dim: usize,
    pub dim_out: usize,
    pub num_heads: usize,
    /// `q_stride=self.q_stride if i in self.q_pool_blocks else None`.
    pub q_pool: bool,
    /// 0 = global attention.
    pub window_size: usize,
}

/// The block list and `stage_ends` of a Hiera config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HieraLayout {
    pub blocks: Vec<BlockSpec>,
    pub stage_ends: Vec<usize>,
}

impl HieraLayout {
    /// Mirrors `Hiera.__init__`: the window size "lags by a block", so a stage's first
    /// block uses the previous stage's window.
    pub fn new(cfg: &HieraConfig) -> Result<HieraLayout> {
        let n = cfg.stages.len();
        if n == 0 || cfg.window_spec.len() != n {
            return Err(graph_err(format!(
                "hiera: {} stages but {} window sizes (`assert len(stages) == len(window_spec)`)",
                n,
                cfg.window_spec.len()
            )));
        }
        // self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        let stage_ends: Vec<usize> = (1..=n).map(|i| cfg.stages[..i].iter().sum::<usize>().wrapping_sub(1)).collect();
        if cfg.stages.contains(&0) {
            return Err(graph_err("hiera: every stage needs at least one block"));
        }
        if cfg.q_pool > n - 1 {
            return Err(graph_err(format!("hiera: q_pool {} > {} stage changes", cfg.q_pool, n - 1)));
        }
        // self.q_pool_blocks = [x + 1 for x in self.stage_ends[:-1]][:q_pool]
        let q_pool_blocks: Vec<usize> = stage_ends[..n - 1].iter().map(|e| e + 1).take(cfg.q_pool).collect();
        let (mut embed_dim, mut num_heads, mut cur_stage) = (cfg.embed_dim, cfg.num_heads, 1);
        let mut blocks = Vec::new();
        for i in 0..stage_ends[n - 1] + 1 {
            let mut dim_out = embed_dim;
            let mut window_size = cfg.window_spec[cur_stage - 1];
            if cfg.global_att_blocks.contains(&i) {
                window_size = 0;
            }
            // if i - 1 in self.stage_ends: dim_out = int(embed_dim * dim_mul) ...
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (embed_dim as f64 * cfg.dim_mul) as usize;
                num_heads = (num_heads as f64 * cfg.head_mul) as usize;
                cur_stage += 1;
            }
            if num_heads == 0 || dim_out % num_heads != 0 {
                return Err(graph_err(format!("hiera block {i}: dim {dim_out} not divisible by {num_heads} heads")));
            }
            let q_pool = q_pool_blocks.contains(&i);
            if q_pool && window_size == 0 {
                // upstream: `self.window_size // self.q_stride[0]` = 0, then `H % 0` raises
                return Err(graph_err(format!("hiera block {i}: a global-attention block cannot q-pool")));
            }
            if q_pool && embed_dim == dim_out {
                return Err(graph_err(format!("hiera block {i}: q-pooling without a dim change is not supported")));
            }
            blocks.push(BlockSpec { dim: embed_dim, dim_out, num_heads, q_pool, window_size });
            embed_dim = dim_out;
        }
        Ok(HieraLayout { blocks, stage_ends })
    }

    /// `self.channel_list`: output dims of the stage ends, lowest resolution first.
    pub fn channel_list(&self) -> Vec<usize> {
        self.stage_ends.iter().rev().map(|&e| self.blocks[e].dim_out).collect()
    }
}

/// Side of the `PatchEmbed` output grid for an input side `s`.
pub fn patch_grid(s: usize) -> usize {
    (s + 2 * PATCH_PADDING - PATCH_KERNEL) / PATCH_STRIDE + 1
}

/// `(window_size - H % window_size) % window_size`, the zero padding of `window_partition`.
pub fn window_pad(size: usize, window_size: usize) -> usize {
    (window_size - size % window_size) % window_size
}

/// The four bicubic taps (clamped source indices) and weights of every output index,
/// as torch's `HelperInterpCubic::compute_indices_weights` computes them in fp32 for
/// `align_corners=False` and no explicit scale factor.
///
/// The fused multiply-adds reproduce torch's x86-64 CPU build, where the compiler
/// contracts `a * b + c` in `area_pixel_compute_source_index` and the inner steps of
/// `cubic_convolution1/2`; with them the weights (and [`bicubic_resize`]) match
/// `F.interpolate(..., mode="bicubic")` bit for bit (checked for 7→16…256, 14→64).
fn cubic_taps(input_size: usize, output_size: usize) -> Vec<([usize; 4], [f32; 4])> {
    const A: f32 = -0.75;
    // ((A + 2) * x - (A + 3)) * x * x + 1
    let conv1 = |x: f32| ((A + 2.0).mul_add(x, -(A + 3.0)) * x) * x + 1.0;
    // ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    let conv2 = |x: f32| A.mul_add(x, -5.0 * A).mul_add(x, 8.0 * A) * x - 4.0 * A;
    let scale = input_size as f32 / output_size as f32;
    let last = input_size as i64 - 1;
    (0..output_size)
        .map(|i| {
            // area_pixel_compute_source_index: scale * (dst_index + 0.5) - 0.5
            let real = scale.mul_add(i as f32 + 0.5, -0.5);
            // guard_index_and_lambda
            let index = (real.floor() as i64).min(last);
            let t = (real - index as f32).clamp(0.0, 1.0);
            // get_cubic_upsample_coefficients
            let w = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2((1.0 - t) + 1.0)];
            let idx = [0, 1, 2, 3].map(|j| (index - 1 + j).clamp(0, last) as usize);
            (idx, w)
        })
        .collect()
}

/// `Σ_j v[j]·w[j]` in the order torch's `Interpolate<…, 4>::eval` compiles to:
/// `fma(v3, w3, fma(v2, w2, fma(v0, w0, v1·w1)))`.
fn cubic_sum(v: [f32; 4], w: &[f32; 4]) -> f32 {
    let acc = v[0].mul_add(w[0], v[1] * w[1]);
    let acc = v[2].mul_add(w[2], acc);
    v[3].mul_add(w[3], acc)
}

/// `F.interpolate(x, size=(h_out, w_out), mode="bicubic")` (align_corners=False) of a
/// `[channels, h_in, w_in]` tensor. Like torch's CPU kernel, each output is
/// `Σ_j wy_j · (Σ_i wx_i · x[y_j, x_i])` in fp32, with source indices clamped to the
/// border.
pub fn bicubic_resize(src: &[f32], channels: usize, hw_in: (usize, usize), hw_out: (usize, usize)) -> Vec<f32> {
    let ((h_in, w_in), (h_out, w_out)) = (hw_in, hw_out);
    assert_eq!(src.len(), channels * h_in * w_in, "bicubic_resize input size");
    let ty = cubic_taps(h_in, h_out);
    let tx = cubic_taps(w_in, w_out);
    let mut out = Vec::with_capacity(channels * h_out * w_out);
    for c in 0..channels {
        let plane = &src[c * h_in * w_in..(c + 1) * h_in * w_in];
        for (iy, wy) in &ty {
            for (ix, wx) in &tx {
                let row = |y: usize| cubic_sum(ix.map(|x| plane[y * w_in + x]), wx);
                out.push(cubic_sum(iy.map(row), wy));
            }
        }
    }
    out
}

/// `Hiera._get_pos_embed((h, w))`: `interpolate(pos_embed, (h, w), "bicubic") +
/// pos_embed_window.tile(...)`, permuted to `[h, w, C]`.
pub fn pos_embed(cfg: &HieraConfig, vb: &Vb, h: usize, w: usize) -> Result<TensorF32> {
    let c = cfg.embed_dim;
    let [bh, bw] = cfg.window_pos_embed_bkg_spatial_size;
    let ws = cfg.window_spec[0];
    let pe = vb.tensor("pos_embed", &[1, c, bh, bw])?;
    let win = vb.tensor("pos_embed_window", &[1, c, ws, ws])?;
    if !h.is_multiple_of(ws) || !w.is_multiple_of(ws) {
        return Err(graph_err(format!(
            "hiera: patch grid {h}x{w} is not a multiple of pos_embed_window {ws}x{ws} (upstream's tile cannot broadcast)"
        )));
    }
    let interp = bicubic_resize(&pe.data, c, (bh, bw), (h, w));
    let mut data = vec![0f32; h * w * c];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                data[(y * w + x) * c + ch] = interp[(ch * h + y) * w + x] + win.data[(ch * ws + y % ws) * ws + x % ws];
            }
        }
    }
    Ok(TensorF32::new(vec![h, w, c], data))
}

/// A channels-last token map `[1, h, w, c]` in the graph.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub v: Value,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// A stage output, NCHW `[1, c, h, w]`.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    pub v: Value,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Largest per-band activation (bytes) of a windowed block before it is run in bands (see
/// [`build_hiera_banded`]): Hiera-T's first-stage blocks at 1024 px hold 100–150 MB
/// tensors otherwise (qkv of 65 536 tokens × 576, the MLP's 384-wide hidden layer).
pub const BAND_BYTES: usize = 16 << 20;

/// `Hiera.forward`: the NCHW output of every stage end, highest resolution first.
pub fn build_hiera(
    g: &mut Graph,
    cfg: &HieraConfig,
    vb: &Vb,
    image: &Value,
    image_size: usize,
) -> Result<Vec<FeatureMap>> {
    build_hiera_banded(g, cfg, vb, image, image_size, BAND_BYTES)
}

/// [`build_hiera`], with each windowed block whose widest activation (qkv or MLP hidden,
/// fp32) exceeds `band_bytes` run in horizontal bands of whole windows: window attention,
/// q-pooling (2×2 inside a window), LayerNorm and the MLP all act within a window or a
/// token, so a band of window rows is computed exactly as in the whole map, and the
/// bands are concatenated back. Global-attention blocks and maps that need window
/// padding are never banded.
pub fn build_hiera_banded(
    g: &mut Graph,
    cfg: &HieraConfig,
    vb: &Vb,
    image: &Value,
    image_size: usize,
    band_bytes: usize,
) -> Result<Vec<FeatureMap>> {
    let layout = HieraLayout::new(cfg)?;
    let side = patch_grid(image_size);
    // x = self.patch_embed(x); x: (B, H, W, C)
    let x = g.scoped(vb.pp("patch_embed").prefix(), |g| {
        let opts = ConvOpts::stride(PATCH_STRIDE as i64).with_pad(PATCH_PADDING as i64);
        let y = nn::conv2d(g, &vb.pp("patch_embed.proj"), image, 3, cfg.embed_dim, PATCH_KERNEL, &opts, true)?;
        Ok::<_, crate::error::Error>(g.transpose(&y, &[0, 2, 3, 1]))
    })?;
    // x = x + self._get_pos_embed(x.shape[1:3])
    let pe = pos_embed(cfg, vb, side, side)?;
    let pe = g.initializer(&vb.path("pos_embed+pos_embed_window"), &[1, side, side, cfg.embed_dim], Arc::from(pe.data));
    let mut x = Tokens { v: g.add(&x, &pe), h: side, w: side, c: cfg.embed_dim };
    let mut outputs = Vec::new();
    for (i, spec) in layout.blocks.iter().enumerate() {
        let bvb = vb.pp("blocks").pp(i);
        x = g.scoped(bvb.prefix(), |g| banded_block(g, &bvb, spec, &x, band_bytes))?;
        if layout.stage_ends.contains(&i) {
            // feats = x.permute(0, 3, 1, 2)
            let v = g.transpose(&x.v, &[0, 3, 1, 2]);
            outputs.push(FeatureMap { v, c: x.c, h: x.h, w: x.w });
        }
    }
    Ok(outputs)
}

/// Window rows per band of `x` for `spec` (`None`: run the block whole).
fn band_rows(spec: &BlockSpec, x: &Tokens, band_bytes: usize) -> Option<usize> {
    let ws = spec.window_size;
    if ws == 0 || !x.h.is_multiple_of(ws) || !x.w.is_multiple_of(ws) {
        return None;
    }
    let widest = (3 * spec.dim_out).max((spec.dim_out as f64 * MLP_RATIO) as usize);
    let row_bytes = x.w * widest * 4;
    if x.h * row_bytes <= band_bytes {
        return None;
    }
    let rows = (band_bytes / row_bytes / ws * ws).max(ws);
    (rows < x.h).then_some(rows)
}

/// `MultiScaleBlock.forward`, in bands of window rows where [`band_rows`] says so.
fn banded_block(g: &mut Graph, vb: &Vb, spec: &BlockSpec, x: &Tokens, band_bytes: usize) -> Result<Tokens> {
    let Some(rows) = band_rows(spec, x, band_bytes) else {
        return multi_scale_block(g, vb, spec, x);
    };
    let sizes: Vec<i64> = (0..x.h).step_by(rows).map(|r| (x.h - r).min(rows) as i64).collect();
    let bands = g.split(&x.v, &sizes, 1);
    let mut outs = Vec::with_capacity(bands.len());
    for (band, &h) in bands.iter().zip(&sizes) {
        outs.push(multi_scale_block(g, vb, spec, &Tokens { v: band.clone(), h: h as usize, ..x.clone() })?);
    }
    let first = outs[0].clone();
    let refs: Vec<&Value> = outs.iter().map(|t| &t.v).collect();
    let h = outs.iter().map(|t| t.h).sum();
    Ok(Tokens { v: g.concat(&refs, 1), h, ..first })
}

/// `do_pool(x, nn.MaxPool2d(2, 2))` on channels-last `[n, h, w, c]`.
fn do_pool(g: &mut Graph, x: &Value) -> Value {
    let s = Q_STRIDE as i64;
    let y = g.transpose(x, &[0, 3, 1, 2]);
    let y = g.max_pool(&y, [s, s], [s, s]);
    g.transpose(&y, &[0, 2, 3, 1])
}

/// `window_partition(x, ws)`: `[1, H, W, C]` → `[nh·nw, ws, ws, C]`, zero-padded;
/// returns the windows and (nh, nw).
fn window_partition(g: &mut Graph, x: &Tokens, ws: usize) -> (Value, usize, usize) {
    let (ph, pw) = (window_pad(x.h, ws), window_pad(x.w, ws));
    // x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    let v = if ph > 0 || pw > 0 { g.pad(&x.v, &[0, 0, 0, 0, 0, ph as i64, pw as i64, 0]) } else { x.v.clone() };
    let (nh, nw) = ((x.h + ph) / ws, (x.w + pw) / ws);
    let (ws_, c) = (ws as i64, x.c as i64);
    // x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    let v = g.reshape(&v, &[nh as i64, ws_, nw as i64, ws_, c]);
    let v = g.transpose(&v, &[0, 2, 1, 3, 4]);
    (g.reshape(&v, &[(nh * nw) as i64, ws_, ws_, c]), nh, nw)
}

/// `window_unpartition(windows, ws, (Hp, Wp), (H, W))`: `[nh·nw, ws, ws, C]` →
/// `[1, H, W, C]`, cropping the padding.
fn window_unpartition(g: &mut Graph, x: &Value, ws: usize, nhw: (usize, usize), hw: (usize, usize), c: usize) -> Value {
    let ((nh, nw), (h, w)) = (nhw, hw);
    let ws_ = ws as i64;
    let v = g.reshape(x, &[nh as i64, nw as i64, ws_, ws_, c as i64]);
    let v = g.transpose(&v, &[0, 2, 1, 3, 4]);
    let v = g.reshape(&v, &[1, (nh * ws) as i64, (nw * ws) as i64, c as i64]);
    if nh * ws > h || nw * ws > w {
        // x = x[:, :H, :W, :]
        g.slice(&v, &[0, 0], &[h as i64, w as i64], &[1, 2], None)
    } else {
        v
    }
}

/// `MultiScaleBlock.forward`.
fn multi_scale_block(g: &mut Graph, vb: &Vb, spec: &BlockSpec, x: &Tokens) -> Result<Tokens> {
    let (dim, dim_out) = (spec.dim, spec.dim_out);
    // x = self.norm1(x)
    let xn = nn::layer_norm(g, &vb.pp("norm1"), &x.v, dim, NORM_EPS)?;
    // if self.dim != self.dim_out: shortcut = do_pool(self.proj(x), self.pool)
    let mut shortcut = x.clone();
    if dim != dim_out {
        let p = nn::linear(g, &vb.pp("proj"), &xn, dim, dim_out, true)?;
        shortcut = if spec.q_pool {
            Tokens { v: do_pool(g, &p), h: x.h / Q_STRIDE, w: x.w / Q_STRIDE, c: dim_out }
        } else {
            Tokens { v: p, h: x.h, w: x.w, c: dim_out }
        };
    }
    let xn = Tokens { v: xn, ..x.clone() };
    // x, pad_hw = window_partition(x, window_size)
    let (windows, win_hw, n_win) = if spec.window_size > 0 {
        let (v, nh, nw) = window_partition(g, &xn, spec.window_size);
        (v, (spec.window_size, spec.window_size), (nh, nw))
    } else {
        (xn.v.clone(), (x.h, x.w), (1, 1))
    };
    // x = self.attn(x)
    let (attn, (wh, ww)) = multi_scale_attention(g, &vb.pp("attn"), spec, &windows, win_hw)?;
    let y = if spec.window_size > 0 {
        // window_size = self.window_size // self.q_stride[0]; H, W = shortcut.shape[1:3]
        let ws = if spec.q_pool { spec.window_size / Q_STRIDE } else { spec.window_size };
        let (hp, wp) = (shortcut.h + window_pad(shortcut.h, ws), shortcut.w + window_pad(shortcut.w, ws));
        if (wh, ww) != (ws, ws) || (hp, wp) != (n_win.0 * ws, n_win.1 * ws) {
            return Err(graph_err(format!(
                "{}: pooled windows {wh}x{ww} do not tile the padded {hp}x{wp} grid",
                vb.prefix()
            )));
        }
        window_unpartition(g, &attn, ws, n_win, (shortcut.h, shortcut.w), dim_out)
    } else {
        if (wh, ww) != (shortcut.h, shortcut.w) {
            return Err(graph_err(format!("{}: attention output {wh}x{ww} != shortcut", vb.prefix())));
        }
        attn
    };
    // x = shortcut + self.drop_path(x)
    let x1 = g.add(&shortcut.v, &y);
    // x = x + self.drop_path(self.mlp(self.norm2(x)))
    let n2 = nn::layer_norm(g, &vb.pp("norm2"), &x1, dim_out, NORM_EPS)?;
    let hidden = (dim_out as f64 * MLP_RATIO) as usize;
    let m = nn::mlp(g, &vb.pp("mlp"), &n2, (dim_out, hidden, dim_out), 2, Act::Gelu, false)?;
    Ok(Tokens { v: g.add(&x1, &m), h: shortcut.h, w: shortcut.w, c: dim_out })
}

/// `MultiScaleAttention.forward` on windows `[n, wh, ww, dim]`; returns
/// `[n, wh', ww', dim_out]` (wh' = wh / 2 with q-pooling) and (wh', ww').
fn multi_scale_attention(
    g: &mut Graph,
    vb: &Vb,
    spec: &BlockSpec,
    x: &Value,
    (wh, ww): (usize, usize),
) -> Result<(Value, (usize, usize))> {
    let (dim_out, heads) = (spec.dim_out, spec.num_heads);
    let hd = dim_out / heads;
    // qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1); q, k, v = unbind(qkv, 2)
    let qkv = nn::linear(g, &vb.pp("qkv"), x, spec.dim, 3 * dim_out, true)?;
    let d = dim_out as i64;
    let parts = g.split(&qkv, &[d, d, d], -1);
    let (mut q, k, v) = (parts[0].clone(), &parts[1], &parts[2]);
    let (mut qh, mut qw) = (wh, ww);
    if spec.q_pool {
        // q = do_pool(q.reshape(B, H, W, -1), self.q_pool)
        q = do_pool(g, &q);
        (qh, qw) = (wh / Q_STRIDE, ww / Q_STRIDE);
    }
    let (h_, hd_) = (heads as i64, hd as i64);
    let (nq, nk) = ((qh * qw) as i64, (wh * ww) as i64);
    // F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    let q = g.reshape(&q, &[0, nq, h_, hd_]);
    let q = g.transpose(&q, &[0, 2, 1, 3]);
    let k = g.reshape(k, &[0, nk, h_, hd_]);
    let kt = g.transpose(&k, &[0, 2, 3, 1]);
    let v = g.reshape(v, &[0, nk, h_, hd_]);
    let v = g.transpose(&v, &[0, 2, 1, 3]);
    // (the global-attention blocks have 4096 queries: run in row blocks)
    let o = nn::sdpa_in_blocks(g, &q, &kt, &v, hd, qh * qw, nn::ATTN_QUERY_BLOCK);
    // x.transpose(1, 2).reshape(B, H, W, -1); x = self.proj(x)
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.reshape(&o, &[0, qh as i64, qw as i64, d]);
    Ok((nn::linear(g, &vb.pp("proj"), &o, dim_out, dim_out, true)?, (qh, qw)))
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // exact dyadic weights and torch's printed outputs
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn bicubic_identity_and_constant() {
        let src: Vec<f32> = (0..12).map(|i| (i * i) as f32 * 0.37 - 3.0).collect();
        // Same size: t = 0 → weights (0, 1, 0, 0), exact copy.
        assert_eq!(bicubic_resize(&src, 1, (3, 4), (3, 4)), src);
        // Cubic weights sum to 1, so a constant stays constant (up to rounding).
        let out = bicubic_resize(&[2.5; 9], 1, (3, 3), (7, 5));
        assert!(out.iter().all(|v| (v - 2.5).abs() < 5e-6), "{out:?}");
    }

    #[test]
    fn bicubic_upsample_by_two_hand_computed() {
        // 2 → 4, scale 0.5: real = 0.5·(i + 0.5) - 0.5 = -0.25, 0.25, 0.75, 1.25.
        // i = 1: index 0, t = 0.25, weights (-0.10546875, 0.87890625, 0.26171875,
        // -0.03515625) on taps (-1, 0, 1, 2), clamped to (0, 0, 1, 1):
        // 0.7734375·a + 0.2265625·b.
        let out = bicubic_resize(&[1.0, 5.0], 1, (1, 2), (1, 4));
        assert!((out[1] - (0.7734375 + 0.2265625 * 5.0)).abs() < 1e-6, "{out:?}");
        // i = 0: index -1, t = 0.75; taps (-2, -1, 0, 1) clamp to (0, 0, 0, 1):
        // weights (-0.03515625, 0.26171875, 0.87890625, -0.10546875).
        assert!((out[0] - (1.10546875 - 0.10546875 * 5.0)).abs() < 1e-6, "{out:?}");
        // Symmetry of the clamped border.
        assert!((out[3] - (5.0 * 1.10546875 - 0.10546875)).abs() < 1e-5, "{out:?}");
        assert!((out[2] - (0.7734375 * 5.0 + 0.2265625)).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn bicubic_matches_torch_bit_for_bit() {
        // F.interpolate(tensor([[[[0.3, -1.7, 2.9], [1.1, 0.05, -0.6]]]]), size=(5, 7),
        // mode="bicubic") with torch 2.x on x86-64 CPU.
        #[rustfmt::skip]
        let want: [f32; 35] = [
            0.44190970063209534, -0.11079644411802292, -1.5528643131256104, -1.8929375410079956, 0.060351621359586716, 2.6316699981689453, 3.85207200050354,
            0.5757420063018799, 0.07834237813949585, -1.187169075012207, -1.55649995803833, -0.007776434998959303, 2.0833091735839844, 3.0688493251800537,
            0.8667271733283997, 0.4895778000354767, -0.3920555114746094, -0.8249999284744263, -0.15590398013591766, 0.8910350799560547, 1.3659257888793945,
            1.157712697982788, 0.900813639163971, 0.40305888652801514, -0.0934993103146553, -0.3040316700935364, -0.30124038457870483, -0.3369993567466736,
            1.2915453910827637, 1.0899524688720703, 0.7687535881996155, 0.24293752014636993, -0.37215977907180786, -0.849600076675415, -1.12022066116333,
        ];
        let out = bicubic_resize(&[0.3, -1.7, 2.9, 1.1, 0.05, -0.6], 1, (2, 3), (5, 7));
        assert_eq!(out, want);
    }

    #[test]
    fn bicubic_is_separable_in_h_and_w() {
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect(); // 2x3, x[y][x] = 3y + x
        let out = bicubic_resize(&src, 1, (2, 3), (4, 6));
        let rows = bicubic_resize(&[0.0, 3.0], 1, (2, 1), (4, 1));
        let cols = bicubic_resize(&[0.0, 1.0, 2.0], 1, (1, 3), (1, 6));
        for y in 0..4 {
            for x in 0..6 {
                assert!((out[y * 6 + x] - (rows[y] + cols[x])).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn window_padding() {
        assert_eq!(window_pad(64, 14), 6); // 1024 input, stage 3: 70 = 5 windows
        assert_eq!(window_pad(32, 7), 3); // ... and after q-pooling: 35 = 5 windows
        assert_eq!(window_pad(256, 8), 0);
        assert_eq!(window_pad(16, 6), 2);
        assert_eq!(patch_grid(1024), 256);
        assert_eq!(patch_grid(256), 64);
    }

    #[test]
    fn layout_of_hiera_t() {
        let cfg = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
        let l = HieraLayout::new(cfg.hiera().unwrap()).unwrap();
        assert_eq!(l.stage_ends, vec![0, 2, 9, 11]);
        assert_eq!(l.channel_list(), vec![768, 384, 192, 96]);
        let q: Vec<usize> = l.blocks.iter().enumerate().filter(|(_, b)| b.q_pool).map(|(i, _)| i).collect();
        assert_eq!(q, vec![1, 3, 10]);
        // The first block of a stage keeps the previous stage's window.
        let ws: Vec<usize> = l.blocks.iter().map(|b| b.window_size).collect();
        assert_eq!(ws, vec![8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]);
        let heads: Vec<usize> = l.blocks.iter().map(|b| b.num_heads).collect();
        assert_eq!(heads, vec![1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 8, 8]);
        assert_eq!((l.blocks[1].dim, l.blocks[1].dim_out), (96, 192));
    }
}
