//! `prompt_decoder.onnx`: `SAM2Base._forward_sam_heads` (`sam2/modeling/sam2_base.py`)
//! as one graph — prompt encoder, mask decoder, object-score gating, best-IoU
//! selection and the object pointer. The multimask and single-mask paths are both
//! computed and chosen per call by the `multimask_output` input, so one graph serves
//! clicks and tracking. I/O as in `export/README.md`.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::onnx::graph::{Graph, Value};
use crate::onnx::nn::{self, Act};
use crate::onnx::proto::DataType;
use crate::weights::Vb;

use super::mask_decoder::{best_iou_index, bool_to_f32, predict_masks, select_per_object, single_mask_output};
use super::prompt_encoder::prompt_encoder;

/// `sam2_base.NO_OBJ_SCORE`: the logit written where no object appears.
pub const NO_OBJ_SCORE: f32 = -1024.0;

/// Build `prompt_decoder.onnx` (see `export/README.md`).
pub fn build_prompt_decoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let sam = &cfg.sam;
    let c = cfg.hidden_dim();
    let e = cfg.embed_side();
    let (ci, ei) = (c as i64, e as i64);
    let n_multi = sam.num_multimask_outputs;
    if n_multi == 0 || !c.is_multiple_of(8) || cfg.image_size != e * cfg.backbone_stride {
        return Err(graph_err(format!(
            "prompt_decoder: unsupported sizes (hidden dim {c}, image size {}, stride {}, {n_multi} multimask outputs)",
            cfg.image_size, cfg.backbone_stride
        )));
    }
    if sam.pred_obj_scores && !cfg.use_obj_ptrs_in_encoder {
        // SAM2Base only creates `no_obj_ptr` when both are set; `_forward_sam_heads` then
        // fails upstream.
        return Err(graph_err("prompt_decoder: pred_obj_scores without use_obj_ptrs_in_encoder has no no_obj_ptr"));
    }

    let mut g = Graph::new("prompt_decoder");
    g.set_doc("SAM2Base._forward_sam_heads: prompt encoder + mask decoder + object pointer");
    let f = DataType::Float;
    let image_embed = g.input("image_embed", f, dims!["objects", ci, ei, ei]);
    // `curr_batch`: 1 (the frame's features, broadcast over the objects by the mask
    // decoder's adds) or one per object
    let feat0 = g.input("high_res_feat0", f, dims!["curr_batch", ci / 8, 4 * ei, 4 * ei]);
    let feat1 = g.input("high_res_feat1", f, dims!["curr_batch", ci / 4, 2 * ei, 2 * ei]);
    let point_coords = g.input("point_coords", f, dims!["objects", "points", 2]);
    let point_labels = g.input("point_labels", f, dims!["objects", "points"]);
    let mask_input = g.input("mask_input", f, dims!["objects", 1, 4 * ei, 4 * ei]);
    let has_mask_input = g.input("has_mask_input", f, dims!["objects"]);
    let multimask_output = g.input("multimask_output", f, dims![1]);

    // sparse_embeddings, dense_embeddings = self.sam_prompt_encoder(points, boxes=None, masks)
    let pe = prompt_encoder(
        &mut g,
        &vb.pp("sam_prompt_encoder"),
        cfg,
        &point_coords,
        &point_labels,
        &mask_input,
        &has_mask_input,
    )?;
    // ... = self.sam_mask_decoder(..., repeat_image=False, high_res_features=high_res_features)
    let d = predict_masks(
        &mut g,
        &vb.pp("sam_mask_decoder"),
        cfg,
        &image_embed,
        &pe.dense_pe_tokens,
        &pe.sparse,
        &pe.dense,
        &feat0,
        &feat1,
    )?;

    let outs = g.scoped("forward_sam_heads", |g| tail(g, vb, cfg, &d, &multimask_output))?;
    let [low_res_multimasks, ious, low_res_masks, iou, obj_ptr, object_score_logits] = outs;
    let (nm, m4) = (n_multi as i64, 4 * ei);
    g.output(&low_res_multimasks, "low_res_multimasks", f, dims!["objects", nm, m4, m4]);
    g.output(&ious, "ious", f, dims!["objects", nm]);
    g.output(&low_res_masks, "low_res_masks", f, dims!["objects", 1, m4, m4]);
    g.output(&iou, "iou", f, dims!["objects", 1]);
    g.output(&obj_ptr, "obj_ptr", f, dims!["objects", ci]);
    g.output(&object_score_logits, "object_score_logits", f, dims!["objects", 1]);
    Ok(g)
}

/// `MaskDecoder.forward`'s output selection and the rest of `_forward_sam_heads`.
/// Returns the six outputs in contract order.
fn tail(
    g: &mut Graph,
    vb: &Vb,
    cfg: &ModelConfig,
    d: &super::mask_decoder::DecoderOut,
    multimask_output: &Value,
) -> Result<[Value; 6]> {
    let sam = &cfg.sam;
    let c = cfg.hidden_dim();
    let n_mask = sam.num_multimask_outputs + 1;
    let multimask = {
        let half = g.scalar(0.5);
        g.greater(multimask_output, &half)
    };

    // multimask path: masks[:, 1:, :, :] ; iou_pred[:, 1:]
    let multi = g.slice(&d.masks, &[1], &[n_mask as i64], &[1], None);
    let multi_iou = g.slice(&d.iou_pred, &[1], &[n_mask as i64], &[1], None);
    // best_iou_inds = torch.argmax(ious, dim=-1) (the same index serves the stability
    // fallback, which takes the argmax of the same multimask IoUs)
    let best = best_iou_index(g, &multi_iou);
    // single-mask path (dynamic multimask via stability)
    let (single, single_iou) = single_mask_output(g, cfg, d, &best);

    // is_obj_appearing = object_score_logits > 0
    // low_res_multimasks = torch.where(is_obj_appearing[:, None, None], masks, NO_OBJ_SCORE)
    let zero = g.scalar(0.0);
    let is_obj = g.greater(&d.object_score_logits, &zero);
    let gate = |g: &mut Graph, m: &Value| -> Value {
        if !sam.pred_obj_scores {
            return m.clone();
        }
        let is_obj4 = g.unsqueeze(&is_obj, &[-1, -2]);
        let no_obj = g.scalar(NO_OBJ_SCORE);
        g.where_(&is_obj4, m, &no_obj)
    };
    let multi_gated = gate(g, &multi);
    let single_gated = gate(g, &single);

    // low_res_masks = low_res_multimasks[batch_inds, best_iou_inds].unsqueeze(1)
    let best_mask = select_per_object(g, &multi_gated, &best, n_mask - 1, 4);
    let best_iou = select_per_object(g, &multi_iou, &best, n_mask - 1, 2);
    let low_res_masks = g.where_(&multimask, &best_mask, &single_gated);
    let iou = g.where_(&multimask, &best_iou, &single_iou);

    // sam_output_token: mask_tokens_out[:, 0] unless multimask_output and
    // use_multimask_token_for_obj_ptr, where it is sam_output_tokens[batch_inds, best_iou_inds]
    let token0 = g.gather_at(&d.mask_tokens_out, 0, 1);
    let token = if sam.use_multimask_token_for_obj_ptr {
        let toks = g.slice(&d.mask_tokens_out, &[1], &[n_mask as i64], &[1], None);
        let best_tok = select_per_object(g, &toks, &best, n_mask - 1, 3);
        let best_tok = g.squeeze(&best_tok, &[1]);
        g.where_(&multimask, &best_tok, &token0)
    } else {
        token0
    };

    // obj_ptr = self.obj_ptr_proj(sam_output_token)
    let mut obj_ptr = if !cfg.use_obj_ptrs_in_encoder {
        token // torch.nn.Identity()
    } else if sam.use_mlp_for_obj_ptr_proj {
        nn::mlp(g, &vb.pp("obj_ptr_proj"), &token, (c, c, c), 3, Act::Relu, false)?
    } else {
        nn::linear(g, &vb.pp("obj_ptr_proj"), &token, c, c, true)?
    };
    if sam.pred_obj_scores {
        // lambda_is_obj_appearing = object_score_logits.sigmoid() | is_obj_appearing.float()
        let lambda = if sam.soft_no_obj_ptr { g.sigmoid(&d.object_score_logits) } else { bool_to_f32(g, &is_obj) };
        if sam.fixed_no_obj_ptr {
            // obj_ptr = lambda_is_obj_appearing * obj_ptr
            obj_ptr = g.mul(&lambda, &obj_ptr);
        }
        // obj_ptr = obj_ptr + (1 - lambda_is_obj_appearing) * self.no_obj_ptr
        let no_obj_ptr = vb.get(g, "no_obj_ptr", &[1, c])?;
        let one = g.scalar(1.0);
        let inv = g.sub(&one, &lambda);
        let add = g.mul(&inv, &no_obj_ptr);
        obj_ptr = g.add(&obj_ptr, &add);
    }
    Ok([multi_gated, multi_iou, low_res_masks, iou, obj_ptr, d.object_score_logits.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{read_summary, Dim};
    use crate::weights::{RandomWeights, Weights};

    fn reduced() -> ModelConfig {
        let mut cfg = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
        cfg.image_size = 256;
        cfg.neck.d_model = 64;
        cfg
    }

    fn build(cfg: &ModelConfig) -> crate::onnx::proto::ModelProto {
        let w = Weights::new(Box::new(RandomWeights { seed: 3 }));
        build_prompt_decoder(cfg, &w.root()).unwrap().into_model("test", vec![])
    }

    fn dims(v: &[Dim]) -> Vec<String> {
        v.iter()
            .map(|d| match d {
                Dim::Fixed(n) => n.to_string(),
                Dim::Sym(s) => s.clone(),
            })
            .collect()
    }

    #[test]
    fn io_follows_the_contract() {
        // export/README.md, prompt_decoder.onnx: C = 64, E = 16 for the reduced config.
        let m = build(&reduced());
        let io: Vec<(String, Vec<String>)> =
            m.graph.inputs.iter().chain(&m.graph.outputs).map(|v| (v.name.clone(), dims(&v.dims))).collect();
        let expect: &[(&str, &[&str])] = &[
            ("image_embed", &["objects", "64", "16", "16"]),
            ("high_res_feat0", &["curr_batch", "8", "64", "64"]),
            ("high_res_feat1", &["curr_batch", "16", "32", "32"]),
            ("point_coords", &["objects", "points", "2"]),
            ("point_labels", &["objects", "points"]),
            ("mask_input", &["objects", "1", "64", "64"]),
            ("has_mask_input", &["objects"]),
            ("multimask_output", &["1"]),
            ("low_res_multimasks", &["objects", "3", "64", "64"]),
            ("ious", &["objects", "3"]),
            ("low_res_masks", &["objects", "1", "64", "64"]),
            ("iou", &["objects", "1"]),
            ("obj_ptr", &["objects", "64"]),
            ("object_score_logits", &["objects", "1"]),
        ];
        let expect: Vec<(String, Vec<String>)> =
            expect.iter().map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect())).collect();
        assert_eq!(io, expect);
    }

    #[test]
    fn passes_the_tensorrt_operator_rule() {
        for cfg in [reduced(), ModelConfig::builtin("sam2_hiera_l").unwrap()] {
            let mut bytes = Vec::new();
            build(&cfg).write_to(&mut bytes).unwrap();
            let s = read_summary(&bytes).unwrap();
            let errs = crate::onnx::trt_ops::check_model("prompt_decoder", &s);
            assert!(errs.is_empty(), "{errs:#?}");
            // Cast is avoided altogether (bool → float goes through Where).
            assert!(s.nodes.iter().all(|n| n.op_type != "Cast"));
        }
    }

    #[test]
    fn uses_every_prompt_and_decoder_weight() {
        // Initializers are named by checkpoint key; one key of each module is present,
        // and conv_s0 / conv_s1 (the image encoder's) are not.
        let m = build(&reduced());
        let names: Vec<&str> = m.graph.initializers.iter().map(|t| t.name.as_str()).collect();
        for key in [
            "sam_prompt_encoder.not_a_point_embed.weight",
            "sam_prompt_encoder.point_embeddings.3.weight",
            "sam_prompt_encoder.mask_downscaling.6.weight",
            "sam_prompt_encoder.no_mask_embed.weight",
            "sam_mask_decoder.obj_score_token.weight",
            "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
            "sam_mask_decoder.transformer.norm_final_attn.weight",
            "sam_mask_decoder.output_upscaling.3.weight",
            "sam_mask_decoder.output_hypernetworks_mlps.3.layers.2.bias",
            "sam_mask_decoder.iou_prediction_head.layers.2.bias",
            "sam_mask_decoder.pred_obj_score_head.layers.2.bias",
            "obj_ptr_proj.layers.2.bias",
            "no_obj_ptr",
        ] {
            assert!(names.contains(&key), "{key} not in the graph");
        }
        assert!(!names.iter().any(|n| n.contains("conv_s0") || n.contains("conv_s1")));
    }
}
