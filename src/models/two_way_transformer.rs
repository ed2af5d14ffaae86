//! SAM's `TwoWayTransformer`, `TwoWayAttentionBlock` and plain `Attention`
//! (`sam2/modeling/sam/transformer.py`; not `RoPEAttention`). Tokens are `[B, Nq, C]`,
//! image keys `[B, HW, C]`; the image position encoding is `[1, HW, C]` and broadcasts.

use crate::config::SamHeadsConfig;
use crate::error::Result;
use crate::onnx::graph::{Graph, Value};
use crate::onnx::nn::{self, Act};
use crate::weights::Vb;

/// `nn.LayerNorm` default eps.
const LN_EPS: f32 = 1e-5;

/// `TwoWayTransformer(attention_downsample_rate=2)` as `_build_sam_heads` builds it.
const ATTENTION_DOWNSAMPLE_RATE: usize = 2;

/// Sizes of one `Attention` module.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub embedding_dim: usize,
    pub num_heads: usize,
    /// `embedding_dim // downsample_rate`.
    pub internal_dim: usize,
}

impl AttnDims {
    pub fn new(embedding_dim: usize, num_heads: usize, downsample_rate: usize) -> Self {
        AttnDims { embedding_dim, num_heads, internal_dim: embedding_dim / downsample_rate }
    }
}

/// `Attention.forward(q, k, v)`: projections, `_separate_heads`,
/// `F.scaled_dot_product_attention`, `_recombine_heads`, `out_proj`.
pub fn attention(g: &mut Graph, vb: &Vb, d: AttnDims, q: &Value, k: &Value, v: &Value) -> Result<Value> {
    let (c, ci, h) = (d.embedding_dim, d.internal_dim, d.num_heads as i64);
    // q = self.q_proj(q) ; k = self.k_proj(k) ; v = self.v_proj(v)
    let q = nn::linear(g, &vb.pp("q_proj"), q, c, ci, true)?;
    let k = nn::linear(g, &vb.pp("k_proj"), k, c, ci, true)?;
    let v = nn::linear(g, &vb.pp("v_proj"), v, c, ci, true)?;
    // x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)
    let q = g.reshape(&q, &[0, 0, h, -1]);
    let q = g.transpose(&q, &[0, 2, 1, 3]);
    // k is taken straight to B x heads x C_per_head x N for q @ kᵀ
    let k = g.reshape(&k, &[0, 0, h, -1]);
    let kt = g.transpose(&k, &[0, 2, 3, 1]);
    let v = g.reshape(&v, &[0, 0, h, -1]);
    let v = g.transpose(&v, &[0, 2, 1, 3]);
    // scaled_dot_product_attention: softmax(q @ kᵀ · 1/√d) @ v
    let out = nn::sdpa(g, &q, &kt, &v, ci / d.num_heads);
    // _recombine_heads: x.transpose(1, 2).reshape(b, n_tokens, n_heads * c_per_head)
    let out = g.transpose(&out, &[0, 2, 1, 3]);
    let out = g.reshape(&out, &[0, 0, -1]);
    nn::linear(g, &vb.pp("out_proj"), &out, ci, c, true)
}

/// `TwoWayAttentionBlock.forward(queries, keys, query_pe, key_pe)`.
#[allow(clippy::too_many_arguments)]
fn two_way_block(
    g: &mut Graph,
    vb: &Vb,
    sam: &SamHeadsConfig,
    c: usize,
    skip_first_layer_pe: bool,
    queries: &Value,
    keys: &Value,
    query_pe: &Value,
    key_pe: &Value,
) -> Result<(Value, Value)> {
    let heads = sam.transformer_num_heads;
    let self_dims = AttnDims::new(c, heads, 1);
    let cross_dims = AttnDims::new(c, heads, ATTENTION_DOWNSAMPLE_RATE);
    // Self attention block
    let queries = if skip_first_layer_pe {
        // queries = self.self_attn(q=queries, k=queries, v=queries)
        attention(g, &vb.pp("self_attn"), self_dims, queries, queries, queries)?
    } else {
        // q = queries + query_pe ; queries = queries + self.self_attn(q=q, k=q, v=queries)
        let q = g.add(queries, query_pe);
        let attn_out = attention(g, &vb.pp("self_attn"), self_dims, &q, &q, queries)?;
        g.add(queries, &attn_out)
    };
    let queries = nn::layer_norm(g, &vb.pp("norm1"), &queries, c, LN_EPS)?;

    // Cross attention block, tokens attending to image embedding
    let q = g.add(&queries, query_pe);
    let k = g.add(keys, key_pe);
    let attn_out = attention(g, &vb.pp("cross_attn_token_to_image"), cross_dims, &q, &k, keys)?;
    let queries = g.add(&queries, &attn_out);
    let queries = nn::layer_norm(g, &vb.pp("norm2"), &queries, c, LN_EPS)?;

    // MLP block: MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=ReLU)
    let mlp_out = nn::mlp(g, &vb.pp("mlp"), &queries, (c, sam.transformer_mlp_dim, c), 2, Act::Relu, false)?;
    let queries = g.add(&queries, &mlp_out);
    let queries = nn::layer_norm(g, &vb.pp("norm3"), &queries, c, LN_EPS)?;

    // Cross attention block, image embedding attending to tokens
    let q = g.add(&queries, query_pe);
    let k = g.add(keys, key_pe);
    let attn_out = attention(g, &vb.pp("cross_attn_image_to_token"), cross_dims, &k, &q, &queries)?;
    let keys = g.add(keys, &attn_out);
    let keys = nn::layer_norm(g, &vb.pp("norm4"), &keys, c, LN_EPS)?;
    Ok((queries, keys))
}

/// `TwoWayTransformer.forward(image_embedding, image_pe, point_embedding)` with the
/// image already flattened: `image_tokens` `[B, HW, C]`, `image_pe_tokens` `[1, HW, C]`,
/// `point_embedding` `[B, Nq, C]`. Returns `(queries, keys)`.
pub fn two_way_transformer(
    g: &mut Graph,
    vb: &Vb,
    sam: &SamHeadsConfig,
    c: usize,
    image_tokens: &Value,
    image_pe_tokens: &Value,
    point_embedding: &Value,
) -> Result<(Value, Value)> {
    // queries = point_embedding ; keys = image_embedding
    let mut queries = point_embedding.clone();
    let mut keys = image_tokens.clone();
    for i in 0..sam.transformer_depth {
        let lvb = vb.pp("layers").pp(i);
        let (q, k) = g.scoped(lvb.prefix(), |g| {
            two_way_block(g, &lvb, sam, c, i == 0, &queries, &keys, point_embedding, image_pe_tokens)
        })?;
        queries = q;
        keys = k;
    }
    // Apply the final attention layer from the points to the image
    g.scoped(&vb.path("final_attn_token_to_image"), |g| -> Result<(Value, Value)> {
        let q = g.add(&queries, point_embedding);
        let k = g.add(&keys, image_pe_tokens);
        let dims = AttnDims::new(c, sam.transformer_num_heads, ATTENTION_DOWNSAMPLE_RATE);
        let attn_out = attention(g, &vb.pp("final_attn_token_to_image"), dims, &q, &k, &keys)?;
        let queries = g.add(&queries, &attn_out);
        let queries = nn::layer_norm(g, &vb.pp("norm_final_attn"), &queries, c, LN_EPS)?;
        Ok((queries, keys.clone()))
    })
}
