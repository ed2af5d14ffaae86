//! `image_encoder.onnx`: `SAM2Base.forward_image` — `ImageEncoder` (Hiera trunk → FPN
//! neck → scalp) followed by the SAM head's `conv_s0` / `conv_s1` on the two
//! highest-resolution levels. See `export/README.md` for the I/O contract.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::{fpn_neck, hiera};
use crate::onnx::graph::ConvOpts;
use crate::onnx::nn;
use crate::onnx::proto::DataType;
use crate::onnx::Graph;
use crate::weights::Vb;

/// Build `image_encoder.onnx` (see `export/README.md`).
pub fn build_image_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let hc =
        cfg.hiera().ok_or_else(|| graph_err(format!("image_encoder: model '{}' has no Hiera backbone", cfg.name)))?;
    if !cfg.sam.use_high_res_features_in_sam {
        return Err(graph_err("image_encoder: use_high_res_features_in_sam = false is not supported"));
    }
    let layout = hiera::HieraLayout::new(hc)?;
    // assert self.trunk.channel_list == self.neck.backbone_channel_list
    if layout.channel_list() != cfg.neck.backbone_channel_list {
        return Err(graph_err(format!(
            "image_encoder: trunk channels {:?} do not match neck backbone_channel_list {:?}",
            layout.channel_list(),
            cfg.neck.backbone_channel_list
        )));
    }
    let s = cfg.image_size;
    let mut g = Graph::new("image_encoder");
    g.set_doc("SAM2Base.forward_image: Hiera trunk, FPN neck, scalp, sam_mask_decoder.conv_s0/conv_s1");
    let image = g.input("image", DataType::Float, dims![1i64, 3, s as i64, s as i64]);

    // features, pos = self.neck(self.trunk(sample))
    let xs = hiera::build_hiera(&mut g, hc, &vb.pp("image_encoder").pp("trunk"), &image, s)?;
    neck_and_heads(&mut g, cfg, vb, xs)?;
    Ok(g)
}

/// Everything after the trunk, shared by the Hiera and RepViT encoders: FPN neck, scalp,
/// `sam_mask_decoder.conv_s0` / `conv_s1`, and the four contract outputs.
pub(crate) fn neck_and_heads(g: &mut Graph, cfg: &ModelConfig, vb: &Vb, xs: Vec<hiera::FeatureMap>) -> Result<()> {
    let d = cfg.hidden_dim();
    let enc = vb.pp("image_encoder");
    // features, pos = features[: -self.scalp], pos[: -self.scalp]
    let kept = xs.len().checked_sub(cfg.neck.scalp).filter(|k| *k >= 2).ok_or_else(|| {
        graph_err(format!("image_encoder: scalp {} leaves fewer than 2 of {} levels", cfg.neck.scalp, xs.len()))
    })?;
    let last = kept - 1;
    let neck_vb = enc.pp("neck");
    let fpn = fpn_neck::build_fpn_neck(g, &cfg.neck, &neck_vb, &xs, &[0, 1, last])?;
    let level = |i: usize| fpn[i].clone().ok_or_else(|| graph_err(format!("image_encoder: fpn level {i} not built")));
    let (l0, l1, top) = (level(0)?, level(1)?, level(last)?);

    // The contract's sizes: E = image_size / backbone_stride.
    let e = cfg.embed_side();
    if (l0.h, l1.h, top.h) != (4 * e, 2 * e, e) || (l0.w, l1.w, top.w) != (4 * e, 2 * e, e) {
        return Err(graph_err(format!(
            "image_encoder: level sides {}, {}, {} do not match 4E, 2E, E with E = {e}",
            l0.h, l1.h, top.h
        )));
    }
    // backbone_fpn[0] = self.sam_mask_decoder.conv_s0(backbone_fpn[0]); same for [1]
    let dec = vb.pp("sam_mask_decoder");
    let mut conv = |name: &str, x: &hiera::FeatureMap, cout: usize| {
        let cvb = dec.pp(name);
        g.scoped(cvb.prefix(), |g| nn::conv2d(g, &cvb, &x.v, d, cout, 1, &ConvOpts::default(), true))
    };
    let f0 = conv("conv_s0", &l0, d / 8)?;
    let f1 = conv("conv_s1", &l1, d / 4)?;
    // output["vision_pos_enc"][-1]
    let pos = fpn_neck::level_position_encoding(g, &cfg.neck, &neck_vb, last, &top);

    let (e, d) = (e as i64, d as i64);
    g.output(&f0, "high_res_feat0", DataType::Float, dims![1i64, d / 8, 4 * e, 4 * e]);
    g.output(&f1, "high_res_feat1", DataType::Float, dims![1i64, d / 4, 2 * e, 2 * e]);
    g.output(&top.v, "vision_feat", DataType::Float, dims![1i64, d, e, e]);
    g.output(&pos, "vision_pos", DataType::Float, dims![1i64, d, e, e]);
    Ok(())
}
