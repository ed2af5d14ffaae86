//! Building blocks shared by the model files: Linear, Conv2d, LayerNorm (decomposed),
//! LayerNorm2d, and SAM's MLP. Each takes a [`Vb`] positioned at the module, so weight
//! paths read like the checkpoint keys.

use crate::error::Result;
use crate::onnx::graph::{ConvOpts, Graph, Value};
use crate::weights::Vb;

/// `nn.Linear(in_dim, out_dim, bias)` applied over the last axis.
pub fn linear(g: &mut Graph, vb: &Vb, x: &Value, in_dim: usize, out_dim: usize, bias: bool) -> Result<Value> {
    let w = vb.get_linear_t(g, "weight", out_dim, in_dim)?;
    let y = g.matmul(x, &w);
    if bias {
        let b = vb.get(g, "bias", &[out_dim])?;
        Ok(g.add(&y, &b))
    } else {
        Ok(y)
    }
}

/// `nn.Conv2d(cin, cout, k, stride, padding, groups)` with bias.
#[allow(clippy::too_many_arguments)] // mirrors nn.Conv2d's argument list
pub fn conv2d(
    g: &mut Graph,
    vb: &Vb,
    x: &Value,
    cin: usize,
    cout: usize,
    k: usize,
    opts: &ConvOpts,
    bias: bool,
) -> Result<Value> {
    let w = vb.get(g, "weight", &[cout, cin / opts.group as usize, k, k])?;
    let b = if bias { Some(vb.get(g, "bias", &[cout])?) } else { None };
    Ok(g.conv(x, &w, b.as_ref(), opts))
}

/// `nn.ConvTranspose2d(cin, cout, k, stride)` with bias (weight layout [cin, cout, k, k]).
pub fn conv_transpose2d(
    g: &mut Graph,
    vb: &Vb,
    x: &Value,
    cin: usize,
    cout: usize,
    k: usize,
    stride: i64,
) -> Result<Value> {
    let w = vb.get(g, "weight", &[cin, cout, k, k])?;
    let b = vb.get(g, "bias", &[cout])?;
    Ok(g.conv_transpose(x, &w, Some(&b), &ConvOpts::stride(stride)))
}

/// `nn.LayerNorm(dim, eps)` over the last axis.
pub fn layer_norm(g: &mut Graph, vb: &Vb, x: &Value, dim: usize, eps: f32) -> Result<Value> {
    let w = vb.get(g, "weight", &[dim])?;
    let b = vb.get(g, "bias", &[dim])?;
    Ok(g.layer_norm(x, &w, &b, eps))
}

/// SAM's `LayerNorm2d` on NCHW: normalise over channels, then
/// `self.weight[:, None, None] * x + self.bias[:, None, None]`.
pub fn layer_norm_2d(g: &mut Graph, vb: &Vb, x: &Value, channels: usize, eps: f32) -> Result<Value> {
    let w = vb.tensor("weight", &[channels])?;
    let b = vb.tensor("bias", &[channels])?;
    let w = g.initializer(&vb.path("weight"), &[channels, 1, 1], w.data.into());
    let b = g.initializer(&vb.path("bias"), &[channels, 1, 1], b.data.into());
    Ok(g.norm_over_axis(x, 1, eps, |g, y| {
        let y = g.mul(&y, &w);
        g.add(&y, &b)
    }))
}

/// Activation between MLP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Relu,
    Gelu,
}

pub fn act(g: &mut Graph, a: Act, x: &Value) -> Value {
    match a {
        Act::Relu => g.relu(x),
        Act::Gelu => g.gelu(x),
    }
}

/// SAM 2's `MLP(input_dim, hidden_dim, output_dim, num_layers, activation, sigmoid_output)`:
/// `layers.{i}` are Linear; activation after every layer but the last.
pub fn mlp(
    g: &mut Graph,
    vb: &Vb,
    x: &Value,
    dims: (usize, usize, usize),
    num_layers: usize,
    a: Act,
    sigmoid_output: bool,
) -> Result<Value> {
    let (input_dim, hidden_dim, output_dim) = dims;
    let mut x = x.clone();
    for i in 0..num_layers {
        let din = if i == 0 { input_dim } else { hidden_dim };
        let dout = if i + 1 == num_layers { output_dim } else { hidden_dim };
        x = linear(g, &vb.pp("layers").pp(i), &x, din, dout, true)?;
        if i + 1 < num_layers {
            x = act(g, a, &x);
        }
    }
    if sigmoid_output {
        x = g.sigmoid(&x);
    }
    Ok(x)
}

/// Query rows per attention block in [`sdpa_in_blocks`] for Hiera's global attention:
/// `heads × 256 × 4096` scores (16 MB for Hiera-T's 4 heads). The memory attention has its
/// own block (`memory_attention::MEM_ATTN_QUERY_BLOCK`).
pub const ATTN_QUERY_BLOCK: usize = 256;

/// `F.scaled_dot_product_attention(q, k, v)` (no mask, no dropout) on `q: [B, h, n, c]`,
/// keys given transposed (`kt: [B, h, c, nk]`) and `v: [B, h or 1, nk, cv]`; returns
/// `[B, h, n, cv]`. The `1/√head_dim` scale multiplies the queries (`n·c` products
/// instead of `n·nk`).
pub fn sdpa(g: &mut Graph, q: &Value, kt: &Value, v: &Value, head_dim: usize) -> Value {
    let q = g.mul_scalar(q, sdpa_scale(head_dim));
    softmax_product(g, &q, kt, v)
}

/// [`sdpa`] with the `nq` queries (a static count; `nk` may be dynamic) run in blocks of
/// at most `block` rows, each block with its own scores, softmax and product: row `i` of
/// the result only depends on row `i` of `q`, so this is the same attention, but the
/// largest intermediate is `block × nk` per head instead of `nq × nk` (the memory
/// attention's cross-attention scores are 4096 × 7·4096 per object otherwise: 470 MB).
/// Blocks are concatenated in order.
pub fn sdpa_in_blocks(
    g: &mut Graph,
    q: &Value,
    kt: &Value,
    v: &Value,
    head_dim: usize,
    nq: usize,
    block: usize,
) -> Value {
    let q = g.mul_scalar(q, sdpa_scale(head_dim));
    in_query_blocks(g, &[&q], nq, block, |g, qb| softmax_product(g, &qb[0], kt, v))
}

/// Cut each of `rows` (`[B, h, nq, ·]`, the same `nq` query rows) into blocks of at most
/// `block` rows, run `per_block` on the matching blocks (one of each tensor, in the order
/// given) and concatenate its results along the rows; one block runs on the tensors
/// themselves. Exact whenever row `i` of the result depends on row `i` of the inputs
/// only (attention per query).
pub fn in_query_blocks(
    g: &mut Graph,
    rows: &[&Value],
    nq: usize,
    block: usize,
    mut per_block: impl FnMut(&mut Graph, &[Value]) -> Value,
) -> Value {
    let block = block.max(1);
    if nq <= block {
        let whole: Vec<Value> = rows.iter().map(|t| (*t).clone()).collect();
        return per_block(g, &whole);
    }
    let sizes: Vec<i64> = (0..nq).step_by(block).map(|s| (nq - s).min(block) as i64).collect();
    let split: Vec<Vec<Value>> = rows.iter().map(|t| g.split(t, &sizes, 2)).collect();
    let outs: Vec<Value> = (0..sizes.len())
        .map(|i| {
            let blocks: Vec<Value> = split.iter().map(|parts| parts[i].clone()).collect();
            per_block(g, &blocks)
        })
        .collect();
    let refs: Vec<&Value> = outs.iter().collect();
    g.concat(&refs, 2)
}

/// `softmax(q·kt)·v` (queries already scaled).
fn softmax_product(g: &mut Graph, q: &Value, kt: &Value, v: &Value) -> Value {
    let s = g.matmul(q, kt);
    let p = g.softmax(&s, -1);
    g.matmul(&p, v)
}

/// `1 / sqrt(head_dim)` as `sdp::calculate_scale` computes it (double, then fp32).
pub fn sdpa_scale(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}
