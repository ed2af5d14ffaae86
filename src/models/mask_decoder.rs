//! SAM 2's `MaskDecoder` (`sam2/modeling/sam/mask_decoder.py`): `predict_masks` (output
//! tokens, two-way transformer, output upscaling with the high-res features,
//! hypernetwork MLPs, IoU head, object-score head) and the single-mask
//! `_dynamic_multimask_via_stability` fallback. Both the multimask and single-mask
//! selections are computed; `prompt_decoder` picks one per call.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::onnx::graph::{Graph, Value};
use crate::onnx::nn::{self, Act};
use crate::weights::Vb;

use super::two_way_transformer::two_way_transformer;

/// `LayerNorm2d` default eps.
const LN2D_EPS: f32 = 1e-6;

/// Outputs of `MaskDecoder.predict_masks`.
pub struct DecoderOut {
    /// `masks`: `[B, num_mask_tokens, 4E, 4E]` (token 0 = single mask, 1.. = multimask).
    pub masks: Value,
    /// `iou_pred`: `[B, num_mask_tokens]`.
    pub iou_pred: Value,
    /// `mask_tokens_out`: `[B, num_mask_tokens, C]`.
    pub mask_tokens_out: Value,
    /// `object_score_logits`: `[B, 1]`.
    pub object_score_logits: Value,
}

/// `MaskDecoder.predict_masks(..., repeat_image=False, high_res_features=[feat_s0,
/// feat_s1])`. `image_pe_tokens` is `get_dense_pe()` flattened to `[1, E·E, C]`.
#[allow(clippy::too_many_arguments)]
pub fn predict_masks(
    g: &mut Graph,
    vb: &Vb,
    cfg: &ModelConfig,
    image_embeddings: &Value,
    image_pe_tokens: &Value,
    sparse_prompt_embeddings: &Value,
    dense_prompt_embeddings: &Value,
    feat_s0: &Value,
    feat_s1: &Value,
) -> Result<DecoderOut> {
    let sam = &cfg.sam;
    let c = cfg.hidden_dim();
    let e = cfg.embed_side() as i64;
    let n_mask = sam.num_multimask_outputs + 1;

    // output_tokens = cat([obj_score_token.weight, iou_token.weight, mask_tokens.weight])
    let tokens = g.scoped(&vb.path("output_tokens"), |g| -> Result<Value> {
        let mut parts = Vec::new();
        if sam.pred_obj_scores {
            parts.push(vb.get(g, "obj_score_token.weight", &[1, c])?);
        }
        parts.push(vb.get(g, "iou_token.weight", &[1, c])?);
        parts.push(vb.get(g, "mask_tokens.weight", &[n_mask, c])?);
        let refs: Vec<&Value> = parts.iter().collect();
        let out = g.concat(&refs, 0);
        // output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        let out = g.unsqueeze(&out, &[0]);
        let b = g.dim(sparse_prompt_embeddings, 0);
        let tail = g.const_i64(&[1, 1]);
        let shape = g.concat(&[&b, &tail], 0);
        let out = g.expand(&out, &shape);
        // tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        Ok(g.concat(&[&out, sparse_prompt_embeddings], 1))
    })?;
    let s: i64 = if sam.pred_obj_scores { 1 } else { 0 };

    // src = image_embeddings + dense_prompt_embeddings (repeat_image=False)
    let src = g.add(image_embeddings, dense_prompt_embeddings);
    // image_embedding.flatten(2).permute(0, 2, 1)
    let src = g.reshape(&src, &[0, 0, -1]);
    let src = g.transpose(&src, &[0, 2, 1]);

    // hs, src = self.transformer(src, pos_src, tokens)
    let (hs, src) = two_way_transformer(g, &vb.pp("transformer"), sam, c, &src, image_pe_tokens, &tokens)?;

    g.scoped(vb.prefix(), |g| -> Result<DecoderOut> {
        // iou_token_out = hs[:, s, :] ; mask_tokens_out = hs[:, s + 1 : s + 1 + n, :]
        let iou_token_out = g.gather_at(&hs, s, 1);
        let mask_tokens_out = g.slice(&hs, &[s + 1], &[s + 1 + n_mask as i64], &[1], None);

        // src = src.transpose(1, 2).view(b, c, h, w)
        let src = g.transpose(&src, &[0, 2, 1]);
        let src = g.reshape(&src, &[0, 0, e, e]);
        let up = vb.pp("output_upscaling");
        let upscaled = if sam.use_high_res_features_in_sam {
            // act1(ln1(dc1(src) + feat_s1)) ; act2(dc2(upscaled_embedding) + feat_s0)
            let x = nn::conv_transpose2d(g, &up.pp(0), &src, c, c / 4, 2, 2)?;
            let x = g.add(&x, feat_s1);
            let x = nn::layer_norm_2d(g, &up.pp(1), &x, c / 4, LN2D_EPS)?;
            let x = g.gelu(&x);
            let x = nn::conv_transpose2d(g, &up.pp(3), &x, c / 4, c / 8, 2, 2)?;
            let x = g.add(&x, feat_s0);
            g.gelu(&x)
        } else {
            // self.output_upscaling(src)
            let x = nn::conv_transpose2d(g, &up.pp(0), &src, c, c / 4, 2, 2)?;
            let x = nn::layer_norm_2d(g, &up.pp(1), &x, c / 4, LN2D_EPS)?;
            let x = g.gelu(&x);
            let x = nn::conv_transpose2d(g, &up.pp(3), &x, c / 4, c / 8, 2, 2)?;
            g.gelu(&x)
        };

        // hyper_in_list[i] = self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
        let mut hyper = Vec::with_capacity(n_mask);
        for i in 0..n_mask {
            let t = g.gather_at(&mask_tokens_out, i as i64, 1);
            let mvb = vb.pp("output_hypernetworks_mlps").pp(i);
            let h = nn::mlp(g, &mvb, &t, (c, c, c / 8), 3, Act::Relu, false)?;
            hyper.push(g.unsqueeze(&h, &[1]));
        }
        // hyper_in = torch.stack(hyper_in_list, dim=1)
        let refs: Vec<&Value> = hyper.iter().collect();
        let hyper_in = g.concat(&refs, 1);
        // masks = (hyper_in @ upscaled_embedding.view(b, c, h * w)).view(b, -1, h, w)
        let flat = g.reshape(&upscaled, &[0, 0, -1]);
        let masks = g.matmul(&hyper_in, &flat);
        let masks = g.reshape(&masks, &[0, -1, 4 * e, 4 * e]);

        // iou_pred = self.iou_prediction_head(iou_token_out)
        let dims = (c, sam.iou_head_hidden_dim, n_mask);
        let iou_pred = nn::mlp(
            g,
            &vb.pp("iou_prediction_head"),
            &iou_token_out,
            dims,
            sam.iou_head_depth,
            Act::Relu,
            sam.iou_prediction_use_sigmoid,
        )?;

        let object_score_logits = if sam.pred_obj_scores {
            // object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
            let t0 = g.gather_at(&hs, 0, 1);
            let hvb = vb.pp("pred_obj_score_head");
            if sam.pred_obj_scores_mlp {
                nn::mlp(g, &hvb, &t0, (c, c, 1), 3, Act::Relu, false)?
            } else {
                nn::linear(g, &hvb, &t0, c, 1, true)?
            }
        } else {
            // 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
            let b = g.dim(&iou_pred, 0);
            let one = g.const_i64(&[1]);
            let shape = g.concat(&[&b, &one], 0);
            let ten = g.const_f32(&[1, 1], vec![10.0]);
            g.expand(&ten, &shape)
        };
        Ok(DecoderOut { masks, iou_pred, mask_tokens_out, object_score_logits })
    })
}

/// Pick entry `idx[b]` along axis 1 of `x` (`[B, K, ...]`) per object, keeping the axis:
/// `x[batch_inds, idx].unsqueeze(1)` as a one-hot Where + ReduceSum (exact: the other
/// terms are zeros). `idx` is `[B, 1]` int64; `rank` is the rank of `x`.
pub fn select_per_object(g: &mut Graph, x: &Value, idx: &Value, k: usize, rank: usize) -> Value {
    let range: Vec<i64> = (0..k as i64).collect();
    let range = g.const_i64(&range);
    let range = g.unsqueeze(&range, &[0]);
    let onehot = g.equal(idx, &range);
    // [B, K] → [B, K, 1, ...] to broadcast over the trailing axes of x
    let tail: Vec<i64> = (2..rank as i64).collect();
    let onehot = if tail.is_empty() { onehot } else { g.unsqueeze(&onehot, &tail) };
    let zero = g.scalar(0.0);
    let picked = g.where_(&onehot, x, &zero);
    g.reduce_sum(&picked, &[1], true)
}

/// `b.float()` for a bool tensor, as `Where(b, 1, 0)` (a Cast from bool is not
/// accepted by every TensorRT version).
pub fn bool_to_f32(g: &mut Graph, b: &Value) -> Value {
    let one = g.scalar(1.0);
    let zero = g.scalar(0.0);
    g.where_(b, &one, &zero)
}

/// `torch.argmax(multimask_iou_scores, dim=-1)` as `[B, 1]` int64.
pub fn best_iou_index(g: &mut Graph, multimask_ious: &Value) -> Value {
    g.argmax(multimask_ious, -1, true)
}

/// The single-mask output of `MaskDecoder.forward(multimask_output=False)`:
/// `_dynamic_multimask_via_stability` when enabled, else `masks[:, 0:1]`. `best` is
/// [`best_iou_index`] of the multimask IoUs. Returns `(mask [B,1,h,w], iou [B,1])`.
pub fn single_mask_output(g: &mut Graph, cfg: &ModelConfig, d: &DecoderOut, best: &Value) -> (Value, Value) {
    let sam = &cfg.sam;
    let n_mask = sam.num_multimask_outputs + 1;
    // singlemask_logits = all_mask_logits[:, 0:1] ; singlemask_iou_scores = all_iou_scores[:, 0:1]
    let single = g.slice(&d.masks, &[0], &[1], &[1], None);
    let single_iou = g.slice(&d.iou_pred, &[0], &[1], &[1], None);
    if !sam.dynamic_multimask_via_stability {
        return (single, single_iou);
    }
    // best_multimask_logits = multimask_logits[batch_inds, best_scores_inds].unsqueeze(1)
    let multi = g.slice(&d.masks, &[1], &[n_mask as i64], &[1], None);
    let multi_iou = g.slice(&d.iou_pred, &[1], &[n_mask as i64], &[1], None);
    let best_mask = select_per_object(g, &multi, best, n_mask - 1, 4);
    let best_iou = select_per_object(g, &multi_iou, best, n_mask - 1, 2);

    // _get_stability_scores: mask_logits.flatten(-2)
    let flat = g.reshape(&single, &[0, 0, -1]);
    let delta = sam.dynamic_multimask_stability_delta;
    // area_i = torch.sum(mask_logits > stability_delta, dim=-1).float()
    let dp = g.scalar(delta);
    let gi = g.greater(&flat, &dp);
    let gi = bool_to_f32(g, &gi);
    let area_i = g.reduce_sum(&gi, &[-1], false);
    // area_u = torch.sum(mask_logits > -stability_delta, dim=-1).float()
    let dn = g.scalar(-delta);
    let gu = g.greater(&flat, &dn);
    let gu = bool_to_f32(g, &gu);
    let area_u = g.reduce_sum(&gu, &[-1], false);
    // stability_scores = torch.where(area_u > 0, area_i / area_u, 1.0)
    // (areas are counts, so max(area_u, 1) equals area_u where it is used and keeps the
    // unused branch finite)
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let u_pos = g.greater(&area_u, &zero);
    let denom = g.max2(&area_u, &one);
    let ratio = g.div(&area_i, &denom);
    let stability = g.where_(&u_pos, &ratio, &one);
    // is_stable = stability_scores >= self.dynamic_multimask_stability_thresh
    let thresh = g.scalar(sam.dynamic_multimask_stability_thresh);
    let below = g.less(&stability, &thresh);
    let is_stable = g.op("Not", &[&below], vec![]);
    // mask_logits_out = torch.where(is_stable[..., None, None], singlemask, best_multimask)
    let st4 = g.unsqueeze(&is_stable, &[-1, -2]);
    let mask = g.where_(&st4, &single, &best_mask);
    // iou_scores_out = torch.where(is_stable, singlemask_iou_scores, best_multimask_iou)
    let iou = g.where_(&is_stable, &single_iou, &best_iou);
    (mask, iou)
}
