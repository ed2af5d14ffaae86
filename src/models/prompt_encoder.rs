//! SAM's `PromptEncoder` (`sam2/modeling/sam/prompt_encoder.py`) as `SAM2Base` calls it:
//! points with the appended padding point (`pad = boxes is None`), no box input (box
//! corners arrive as points labelled 2 / 3), and a per-object choice between the
//! `mask_downscaling` embedding and `no_mask_embed`. The dense position encoding
//! (`get_dense_pe`) does not depend on the input and is computed here at export time.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::onnx::graph::{ConvOpts, Graph, Value};
use crate::onnx::nn;
use crate::weights::{TensorF32, Vb};

/// `2 * np.pi` as the fp32 scalar PyTorch multiplies with.
const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;

/// `LayerNorm2d` default eps.
const LN2D_EPS: f32 = 1e-6;

/// What the prompt encoder hands to the mask decoder.
pub struct PromptEmbeddings {
    /// `sparse_embeddings`: `[B, N + 1, C]` (the prompt points plus the padding point).
    pub sparse: Value,
    /// `dense_embeddings`: `[B, C, E, E]`.
    pub dense: Value,
    /// `get_dense_pe()` already flattened and permuted as the transformer uses it:
    /// `image_pe.flatten(2).permute(0, 2, 1)`, `[1, E·E, C]`.
    pub dense_pe_tokens: Value,
}

/// `PositionEmbeddingRandom.forward((h, w))` evaluated at export time, laid out as
/// `pe.flatten(1).permute(1, 0)`: `[h·w, 2K]` for a `[2, K]` Gaussian matrix, row
/// `y·w + x`, channels `cat(sin, cos)`.
pub fn dense_pe_tokens(gaussian: &TensorF32, h: usize, w: usize) -> TensorF32 {
    let k = gaussian.shape[1];
    let (g0, g1) = gaussian.data.split_at(k);
    let mut data = vec![0f32; h * w * 2 * k];
    for y in 0..h {
        // y_embed = grid.cumsum(dim=0) - 0.5 ; y_embed = y_embed / h
        let ye = ((y + 1) as f32 - 0.5) / h as f32;
        for x in 0..w {
            let xe = ((x + 1) as f32 - 0.5) / w as f32;
            let row = &mut data[(y * w + x) * 2 * k..(y * w + x + 1) * 2 * k];
            pe_encoding_into(xe, ye, g0, g1, row);
        }
    }
    TensorF32::new(vec![h * w, 2 * k], data)
}

/// `PositionEmbeddingRandom._pe_encoding` for one point already normalised to [0, 1].
fn pe_encoding_into(x: f32, y: f32, g0: &[f32], g1: &[f32], out: &mut [f32]) {
    let k = g0.len();
    // coords = 2 * coords - 1
    let (cx, cy) = (2.0 * x - 1.0, 2.0 * y - 1.0);
    for i in 0..k {
        // coords = coords @ self.positional_encoding_gaussian_matrix ; coords = 2 * np.pi * coords
        let a = (cx * g0[i] + cy * g1[i]) * TWO_PI;
        // torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)
        out[i] = (a as f64).sin() as f32;
        out[k + i] = (a as f64).cos() as f32;
    }
}

/// `PositionEmbeddingRandom._pe_encoding` in the graph, for `[.., 2]` coords in [0, 1].
fn pe_encoding(g: &mut Graph, gaussian: &Value, coords: &Value) -> Value {
    // coords = 2 * coords - 1
    let c = g.mul_scalar(coords, 2.0);
    let one = g.scalar(1.0);
    let c = g.sub(&c, &one);
    // coords = coords @ self.positional_encoding_gaussian_matrix
    let c = g.matmul(&c, gaussian);
    // coords = 2 * np.pi * coords
    let c = g.mul_scalar(&c, TWO_PI);
    let s = g.sin(&c);
    let co = g.cos(&c);
    g.concat(&[&s, &co], -1)
}

/// `PromptEncoder._embed_points(points, labels, pad=True)`: coords `[B, N, 2]` in input
/// pixels, float labels `[B, N]` → `[B, N + 1, C]`.
pub fn embed_points(g: &mut Graph, vb: &Vb, cfg: &ModelConfig, points: &Value, labels: &Value) -> Result<Value> {
    let c = cfg.hidden_dim();
    let s = cfg.image_size as f32;
    let gaussian = vb.get(g, "pe_layer.positional_encoding_gaussian_matrix", &[2, c / 2])?;
    // points = points + 0.5  # Shift to center of pixel
    let points = g.add_scalar(points, 0.5);
    // padding_point = torch.zeros((points.shape[0], 1, 2)) ; padding_label = -torch.ones(..)
    let b = g.dim(&points, 0);
    let tail = g.const_i64(&[1, 2]);
    let pad_shape = g.concat(&[&b, &tail], 0);
    let zero = g.const_f32(&[1, 1, 2], vec![0.0; 2]);
    let padding_point = g.expand(&zero, &pad_shape);
    let tail = g.const_i64(&[1]);
    let lab_shape = g.concat(&[&b, &tail], 0);
    let minus_one = g.const_f32(&[1, 1], vec![-1.0]);
    let padding_label = g.expand(&minus_one, &lab_shape);
    let points = g.concat(&[&points, &padding_point], 1);
    let labels = g.concat(&[labels, &padding_label], 1);
    // forward_with_coords: coords[:, :, 0] / image_size[1], coords[:, :, 1] / image_size[0]
    // (a square input, so one divisor)
    let size = g.scalar(s);
    let coords = g.div(&points, &size);
    let pe = pe_encoding(g, &gaussian, &coords);
    // labels[..., None] to broadcast over channels
    let labels = g.unsqueeze(&labels, &[-1]);
    // torch.where(labels == -1, torch.zeros_like(pe) + self.not_a_point_embed.weight, pe)
    let not_a_point = vb.get(g, "not_a_point_embed.weight", &[1, c])?;
    // (zeros_like(pe) + w is w itself; the Where broadcasts it)
    let is_pad = label_is(g, &labels, -1.0);
    let mut emb = g.where_(&is_pad, &not_a_point, &pe);
    // torch.where(labels == i, pe + self.point_embeddings[i].weight, pe) for i in 0..4
    for i in 0..4 {
        let w = vb.pp("point_embeddings").pp(i).get(g, "weight", &[1, c])?;
        let is_i = label_is(g, &labels, i as f32);
        let added = g.add(&emb, &w);
        emb = g.where_(&is_i, &added, &emb);
    }
    Ok(emb)
}

fn label_is(g: &mut Graph, labels: &Value, v: f32) -> Value {
    let c = g.scalar(v);
    g.equal(labels, &c)
}

/// `PromptEncoder._embed_masks`: `mask_downscaling(masks)`, `[B, 1, 4E, 4E]` →
/// `[B, C, E, E]`.
pub fn embed_masks(g: &mut Graph, vb: &Vb, cfg: &ModelConfig, masks: &Value) -> Result<Value> {
    let c = cfg.hidden_dim();
    let mic = cfg.sam.mask_in_chans;
    let vb = vb.pp("mask_downscaling");
    let s2 = ConvOpts::stride(2);
    // Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2), LayerNorm2d, GELU
    let x = nn::conv2d(g, &vb.pp(0), masks, 1, mic / 4, 2, &s2, true)?;
    let x = nn::layer_norm_2d(g, &vb.pp(1), &x, mic / 4, LN2D_EPS)?;
    let x = g.gelu(&x);
    // Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2), LayerNorm2d, GELU
    let x = nn::conv2d(g, &vb.pp(3), &x, mic / 4, mic, 2, &s2, true)?;
    let x = nn::layer_norm_2d(g, &vb.pp(4), &x, mic, LN2D_EPS)?;
    let x = g.gelu(&x);
    // Conv2d(mask_in_chans, embed_dim, kernel_size=1)
    nn::conv2d(g, &vb.pp(6), &x, mic, c, 1, &ConvOpts::default(), true)
}

/// `PromptEncoder.forward(points=(coords, labels), boxes=None, masks=...)` with the mask
/// branch chosen per object: `has_mask_input[b] > 0.5` → `_embed_masks`, otherwise
/// `no_mask_embed.weight.reshape(1, -1, 1, 1)` (broadcast over the grid).
pub fn prompt_encoder(
    g: &mut Graph,
    vb: &Vb,
    cfg: &ModelConfig,
    points: &Value,
    labels: &Value,
    mask_input: &Value,
    has_mask_input: &Value,
) -> Result<PromptEmbeddings> {
    let c = cfg.hidden_dim();
    let e = cfg.embed_side();
    let sparse = g.scoped("sam_prompt_encoder.points", |g| embed_points(g, vb, cfg, points, labels))?;
    let dense = g.scoped("sam_prompt_encoder.masks", |g| -> Result<Value> {
        let mask_emb = embed_masks(g, vb, cfg, mask_input)?;
        let no_mask = vb.tensor("no_mask_embed.weight", &[1, c])?;
        let no_mask = g.initializer(&vb.path("no_mask_embed.weight"), &[1, c, 1, 1], no_mask.data.into());
        // has_mask_input[:, None, None, None] > 0.5
        let has = g.reshape(has_mask_input, &[-1, 1, 1, 1]);
        let half = g.scalar(0.5);
        let has = g.greater(&has, &half);
        let dense = g.where_(&has, &mask_emb, &no_mask);
        // The Where broadcasts [B, 1, 1, 1] against [B, C, E, E] and [1, C, 1, 1].
        Ok(dense)
    })?;
    // get_dense_pe(): pe_layer(image_embedding_size), constant at export time
    let gaussian = vb.tensor("pe_layer.positional_encoding_gaussian_matrix", &[2, c / 2])?;
    let pe = dense_pe_tokens(&gaussian, e, e);
    let dense_pe_tokens = g.initializer(&vb.path("dense_pe"), &[1, e * e, c], pe.data.into());
    Ok(PromptEmbeddings { sparse, dense, dense_pe_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauss(k: usize) -> TensorF32 {
        let data = (0..2 * k).map(|i| ((i * 7919 % 13) as f32 - 6.0) / 3.0).collect();
        TensorF32::new(vec![2, k], data)
    }

    #[test]
    fn dense_pe_layout_and_values() {
        // Row y·w + x holds sin / cos of 2π((2x' - 1)·G0 + (2y' - 1)·G1), x' = (x + ½)/w.
        let (h, w, k) = (3, 5, 4);
        let gm = gauss(k);
        let pe = dense_pe_tokens(&gm, h, w);
        assert_eq!(pe.shape, vec![h * w, 2 * k]);
        for y in 0..h {
            for x in 0..w {
                let (xn, yn) = ((x as f64 + 0.5) / w as f64, (y as f64 + 0.5) / h as f64);
                for i in 0..k {
                    let a = 2.0
                        * std::f64::consts::PI
                        * ((2.0 * xn - 1.0) * gm.data[i] as f64 + (2.0 * yn - 1.0) * gm.data[k + i] as f64);
                    let row = (y * w + x) * 2 * k;
                    assert!((pe.data[row + i] as f64 - a.sin()).abs() < 1e-5, "sin at {y},{x},{i}");
                    assert!((pe.data[row + k + i] as f64 - a.cos()).abs() < 1e-5, "cos at {y},{x},{i}");
                }
            }
        }
    }

    #[test]
    fn dense_pe_is_point_symmetric() {
        // Cell (y, x) and (h-1-y, w-1-x) have opposite normalised coordinates, so
        // their sin parts are negated and cos parts equal.
        let (h, w, k) = (4, 4, 3);
        let pe = dense_pe_tokens(&gauss(k), h, w);
        for y in 0..h {
            for x in 0..w {
                let a = (y * w + x) * 2 * k;
                let b = ((h - 1 - y) * w + (w - 1 - x)) * 2 * k;
                for i in 0..k {
                    assert!((pe.data[a + i] + pe.data[b + i]).abs() < 1e-5);
                    assert!((pe.data[a + k + i] - pe.data[b + k + i]).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn dense_pe_centre_is_constant() {
        // An odd grid's centre normalises to (0.5, 0.5) → 2c - 1 = 0: sin 0, cos 1.
        let k = 2;
        let pe = dense_pe_tokens(&gauss(k), 3, 3);
        let row = &pe.data[4 * 2 * k..5 * 2 * k];
        assert_eq!(row, &[0.0, 0.0, 1.0, 1.0]);
    }
}
