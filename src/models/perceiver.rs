//! EdgeTAM's spatial perceiver (`sam2/modeling/perceiver.py`, `PerceiverResampler`),
//! applied by `SAM2Base._encode_new_memory` to the memory encoder's output.
//!
//! * `forward_1d`: `num_latents` global latents cross-attend over all E·E memory tokens;
//!   the memory position encoding is added to keys and values (upstream adds `pos`
//!   whenever it is given, whatever `pos_enc_at_key_value` says); output position 0.
//! * `forward_2d`: `num_latents_2d` latents, one per window of a `√n × √n` partition of
//!   the E×E grid (`window_partition`, window side E/√n, row-major windows); each latent
//!   attends only to its own window's tokens, without position encoding; output position
//!   = `PositionEmbeddingSine(dim)` of the `√n × √n` latent grid.
//! * both share the layers (cross-attention, FF, self-attention, FF) and the final norm;
//!   the result is `[global, 2D]` along the token axis: `[B, N1 + N2, dim]`.
//!
//! Upstream's `forward_2d` fails for more than one object (`.view` on an expanded
//! tensor); here the latents are tiled per object, which is what a batch of B = 1 calls
//! computes.

use std::sync::Arc;

use crate::config::PerceiverConfig;
use crate::error::{graph_err, Result};
use crate::models::position_encoding::sine_position_encoding;
use crate::onnx::graph::{Graph, Value};
use crate::onnx::nn::{layer_norm, linear};
use crate::weights::Vb;

/// `nn.LayerNorm` default eps.
const LN_EPS: f32 = 1e-5;

/// Sizes of the perceiver at one memory resolution.
#[derive(Debug, Clone, Copy)]
pub struct PerceiverDims {
    pub dim: usize,
    pub heads: usize,
    pub dim_head: usize,
    pub ff: usize,
    pub n1: usize,
    pub n2: usize,
    /// Latent grid side of the 2D latents (`√n2`) and window side (`E / √n2`).
    pub grid: usize,
    pub window: usize,
    pub e: usize,
}

impl PerceiverDims {
    pub fn new(p: &PerceiverConfig, mem_dim: usize, e: usize) -> Result<PerceiverDims> {
        let inner = p.dim_head * p.heads;
        if p.dim != mem_dim {
            return Err(graph_err(format!("perceiver dim {} != memory dim {mem_dim}", p.dim)));
        }
        if p.heads == 0 || inner != p.dim {
            return Err(graph_err(format!(
                "perceiver: dim_head·heads = {inner} must equal dim {} (the position encoding is added per head)",
                p.dim
            )));
        }
        if p.concat_kv_latents {
            return Err(graph_err("perceiver: concat_kv_latents = true is not supported (upstream asserts it off)"));
        }
        if p.num_latents == 0 || p.num_latents_2d == 0 {
            return Err(graph_err("perceiver: both latent groups must be present (num_latents, num_latents_2d > 0)"));
        }
        // `num_window = int(math.sqrt(num_latents_2d))`; `window_size = H // num_window`
        let grid = (p.num_latents_2d as f64).sqrt() as usize;
        if grid * grid != p.num_latents_2d || !e.is_multiple_of(grid) {
            return Err(graph_err(format!(
                "perceiver: {} 2D latents do not tile the {e}×{e} memory grid into square windows",
                p.num_latents_2d
            )));
        }
        Ok(PerceiverDims {
            dim: p.dim,
            heads: p.heads,
            dim_head: p.dim_head,
            ff: p.dim * p.ff_mult,
            n1: p.num_latents,
            n2: p.num_latents_2d,
            grid,
            window: e / grid,
            e,
        })
    }

    /// Tokens per memory frame: `n1 + n2`.
    pub fn tokens(&self) -> usize {
        self.n1 + self.n2
    }
}

/// The output of the perceiver: `[B, N1 + N2, dim]` latents and their position encoding.
pub struct PerceiverOut {
    pub latents: Value,
    pub pos: Value,
}

/// `PerceiverResampler.forward(x, pos)` on `x: [B, dim, E, E]`; `pos` is the memory
/// position encoding as a `[1, E·E, dim]` token-major constant (the same for all objects).
pub fn build_perceiver(
    g: &mut Graph,
    p: &PerceiverConfig,
    d: &PerceiverDims,
    vb: &Vb,
    x: &Value,
    pos_tokens: &Value,
) -> Result<PerceiverOut> {
    let dim = d.dim as i64;
    // forward_1d: `latents.unsqueeze(0).expand(B, -1, -1)` (broadcast), `x.permute(0, 2, 3, 1).flatten(1, 2)`
    let lat = vb.get(g, "latents", &[d.n1, d.dim])?;
    let lat = g.unsqueeze(&lat, &[0]);
    let x_tok = g.reshape(x, &[0, dim, -1]);
    let x_tok = g.transpose(&x_tok, &[0, 2, 1]);
    let mut l1 = lat;
    for i in 0..p.depth {
        let lvb = vb.pp("layers").pp(i);
        l1 = g.scoped(&format!("spatial_perceiver.layers.{i}.1d"), |g| {
            encoder_layer(g, p, d, &lvb, &l1, &x_tok, Some(pos_tokens))
        })?;
    }
    let l1 = layer_norm(g, &vb.pp("norm"), &l1, d.dim, LN_EPS)?;

    // forward_2d: windows [B·n2, w·w, dim] (`window_partition(x.permute(0, 2, 3, 1), w).flatten(1, 2)`)
    let (gr, w) = (d.grid as i64, d.window as i64);
    let xw = g.reshape(x, &[0, dim, gr, w, gr, w]);
    let xw = g.transpose(&xw, &[0, 2, 4, 3, 5, 1]);
    let xw = g.reshape(&xw, &[-1, w * w, dim]);
    // `latents_2d.unsqueeze(0).expand(B, -1, -1).view(-1, 1, C)`: object-major copies
    let lat2 = vb.tensor("latents_2d", &[d.n2, d.dim])?;
    let lat2 = g.initializer(&vb.path("latents_2d"), &[d.n2, 1, d.dim], Arc::from(lat2.data));
    let b = g.dim(x, 0);
    let ones = g.const_i64(&[1, 1]);
    let reps = g.concat(&[&b, &ones], 0);
    let mut l2 = g.tile(&lat2, &reps);
    for i in 0..p.depth {
        let lvb = vb.pp("layers").pp(i);
        l2 = g.scoped(&format!("spatial_perceiver.layers.{i}.2d"), |g| encoder_layer(g, p, d, &lvb, &l2, &xw, None))?;
    }
    // `.view(B, g, g, C).permute(0, 3, 1, 2)` then `.permute(0, 2, 3, 1).flatten(1, 2)`:
    // object-major, latent order unchanged
    let l2 = g.reshape(&l2, &[-1, d.n2 as i64, dim]);
    let l2 = layer_norm(g, &vb.pp("norm"), &l2, d.dim, LN_EPS)?;
    let latents = g.concat(&[&l1, &l2], 1);

    // pos: `zeros_like(latents_1d)` then `position_encoding(latents_2d)` token-major
    let pe = sine_position_encoding(d.dim, d.grid, d.grid);
    let mut pos = vec![0f32; d.tokens() * d.dim];
    for t in 0..d.n2 {
        for c in 0..d.dim {
            pos[(d.n1 + t) * d.dim + c] = pe.data[c * d.n2 + t];
        }
    }
    let pos = g.initializer("spatial_perceiver.pos_out", &[1, d.tokens(), d.dim], Arc::from(pos));
    let shape = g.shape(&latents);
    let pos = g.expand(&pos, &shape);
    Ok(PerceiverOut { latents, pos })
}

/// `PerceiverEncoderLayer.forward(latents, x, pos)` on `[N, n, dim]` latents / tokens.
fn encoder_layer(
    g: &mut Graph,
    p: &PerceiverConfig,
    d: &PerceiverDims,
    vb: &Vb,
    latents: &Value,
    x: &Value,
    pos: Option<&Value>,
) -> Result<Value> {
    // `latents = self.attn(latents, x, pos) + latents`
    let a = perceiver_attention(g, d, &vb.pp("attn"), latents, x, pos)?;
    let latents = g.add(&a, latents);
    // `latents = self.ff(latents) + latents`
    let f = feed_forward(g, d, &vb.pp("ff"), &latents)?;
    let mut latents = g.add(&f, &latents);
    if p.use_self_attn {
        let svb = vb.pp("self_attn");
        let xn = layer_norm(g, &svb.pp("norm"), &latents, d.dim, LN_EPS)?;
        let a = attention(g, d, &svb, &xn, &xn, None)?;
        latents = g.add(&a, &latents);
        let f = feed_forward(g, d, &vb.pp("self_ff"), &latents)?;
        latents = g.add(&f, &latents);
    }
    Ok(latents)
}

/// `FeedForward`: LayerNorm, Linear (no bias), GELU, Linear (no bias); modules 0, 1, 3.
fn feed_forward(g: &mut Graph, d: &PerceiverDims, vb: &Vb, x: &Value) -> Result<Value> {
    let h = layer_norm(g, &vb.pp("0"), x, d.dim, LN_EPS)?;
    let h = linear(g, &vb.pp("1"), &h, d.dim, d.ff, false)?;
    let h = g.gelu(&h);
    linear(g, &vb.pp("3"), &h, d.ff, d.dim, false)
}

/// `PerceiverAttention.forward(latents, x, pos)`: `norm_latents`, `norm_x`, then
/// [`attention`] with queries from the latents and keys / values from `x`.
fn perceiver_attention(
    g: &mut Graph,
    d: &PerceiverDims,
    vb: &Vb,
    latents: &Value,
    x: &Value,
    pos: Option<&Value>,
) -> Result<Value> {
    let ln = layer_norm(g, &vb.pp("norm_latents"), latents, d.dim, LN_EPS)?;
    let xn = layer_norm(g, &vb.pp("norm_x"), x, d.dim, LN_EPS)?;
    attention(g, d, vb, &ln, &xn, pos)
}

/// `to_q(q_in)`, `to_kv(kv_in).chunk(2)`, `k, v = k + pos, v + pos`, scaled dot-product
/// attention per head, `to_out` (all Linear without bias).
fn attention(
    g: &mut Graph,
    d: &PerceiverDims,
    vb: &Vb,
    q_in: &Value,
    kv_in: &Value,
    pos: Option<&Value>,
) -> Result<Value> {
    let inner = d.dim_head * d.heads;
    let q = linear(g, &vb.pp("to_q"), q_in, d.dim, inner, false)?;
    // `to_kv` split at export: rows [0, inner) give k, [inner, 2·inner) give v
    let kv = vb.tensor("to_kv.weight", &[2 * inner, d.dim])?;
    let half = |rows: std::ops::Range<usize>| {
        let t =
            crate::weights::TensorF32::new(vec![inner, d.dim], kv.data[rows.start * d.dim..rows.end * d.dim].to_vec());
        t.t()
    };
    let (wk, wv) = (half(0..inner), half(inner..2 * inner));
    let wk = g.initializer(&format!("{}[k]^T", vb.path("to_kv.weight")), &wk.shape, Arc::from(wk.data));
    let wv = g.initializer(&format!("{}[v]^T", vb.path("to_kv.weight")), &wv.shape, Arc::from(wv.data));
    let mut k = g.matmul(kv_in, &wk);
    let mut v = g.matmul(kv_in, &wv);
    // `pos = self._separate_heads(pos, heads)`; `k, v = k + pos, v + pos` (adding before
    // the head split is the same element-wise sum)
    if let Some(p) = pos {
        k = g.add(&k, p);
        v = g.add(&v, p);
    }
    let (h, dh) = (d.heads as i64, d.dim_head as i64);
    let split = |g: &mut Graph, t: &Value| {
        let t = g.reshape(t, &[0, 0, h, dh]);
        g.transpose(&t, &[0, 2, 1, 3])
    };
    let (q, k, v) = (split(g, &q), split(g, &k), split(g, &v));
    // `F.scaled_dot_product_attention(q, k, v)`: softmax(q·kᵀ / √dim_head)·v
    let kt = g.transpose(&k, &[0, 1, 3, 2]);
    let o = crate::onnx::nn::sdpa(g, &q, &kt, &v, d.dim_head);
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.reshape(&o, &[0, 0, inner as i64]);
    linear(g, &vb.pp("to_out"), &o, inner, d.dim, false)
}
