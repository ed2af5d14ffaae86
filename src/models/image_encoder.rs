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
use crate::onnx::{Graph, Value};
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
    let n = xs.len() - 1;
    // Levels 0 and 1 off `fpn_top_down_levels` are the lateral 1×1 conv alone, followed
    // by the SAM head's 1×1 `conv_s0` / `conv_s1`: one folded 1×1 conv (see `fold_1x1`).
    let lateral_only = |i: usize| !cfg.neck.fpn_top_down_levels.contains(&i);
    let wanted: Vec<usize> = [0, 1].into_iter().filter(|&i| !lateral_only(i)).chain([last]).collect();
    let fpn = fpn_neck::build_fpn_neck(g, &cfg.neck, &neck_vb, &xs, &wanted)?;
    let top = fpn[last].clone().ok_or_else(|| graph_err(format!("image_encoder: fpn level {last} not built")))?;

    // The contract's sizes: E = image_size / backbone_stride.
    let e = cfg.embed_side();
    let (x0, x1) = (&xs[0], &xs[1]);
    if (x0.h, x1.h, top.h) != (4 * e, 2 * e, e) || (x0.w, x1.w, top.w) != (4 * e, 2 * e, e) {
        return Err(graph_err(format!(
            "image_encoder: level sides {}, {}, {} do not match 4E, 2E, E with E = {e}",
            x0.h, x1.h, top.h
        )));
    }
    // backbone_fpn[0] = self.sam_mask_decoder.conv_s0(backbone_fpn[0]); same for [1]
    let dec = vb.pp("sam_mask_decoder");
    let mut head = |i: usize, name: &str, cout: usize| -> Result<Value> {
        let cvb = dec.pp(name);
        if lateral_only(i) {
            let lvb = neck_vb.pp("convs").pp(n - i).pp("conv");
            let cin = cfg.neck.backbone_channel_list[n - i];
            if cin != xs[i].c {
                return Err(graph_err(format!(
                    "fpn neck: level {i} has {} channels, convs.{} expects {cin}",
                    xs[i].c,
                    n - i
                )));
            }
            let (w, b) = fold_1x1(&lvb, &cvb, cin, d, cout)?;
            let name = format!("{}@{}", cvb.prefix(), lvb.prefix());
            let w = g.initializer(&format!("{name}.weight"), &[cout, cin, 1, 1], w.into());
            let b = g.initializer(&format!("{name}.bias"), &[cout], b.into());
            Ok(g.scoped(cvb.prefix(), |g| g.conv(&xs[i].v, &w, Some(&b), &ConvOpts::default())))
        } else {
            let fm = fpn[i].as_ref().ok_or_else(|| graph_err(format!("image_encoder: fpn level {i} not built")))?;
            g.scoped(cvb.prefix(), |g| nn::conv2d(g, &cvb, &fm.v, d, cout, 1, &ConvOpts::default(), true))
        }
    };
    let f0 = head(0, "conv_s0", d / 8)?;
    let f1 = head(1, "conv_s1", d / 4)?;
    // output["vision_pos_enc"][-1]
    let pos = fpn_neck::level_position_encoding(g, &cfg.neck, &neck_vb, last, &top);

    let (e, d) = (e as i64, d as i64);
    g.output(&f0, "high_res_feat0", DataType::Float, dims![1i64, d / 8, 4 * e, 4 * e]);
    g.output(&f1, "high_res_feat1", DataType::Float, dims![1i64, d / 4, 2 * e, 2 * e]);
    g.output(&top.v, "vision_feat", DataType::Float, dims![1i64, d, e, e]);
    g.output(&pos, "vision_pos", DataType::Float, dims![1i64, d, e, e]);
    Ok(())
}

/// Two 1×1 convolutions in a row, `second(first(x))` with `first: cin → mid` and
/// `second: mid → cout`, as one: `W = W2·W1`, `b = W2·b1 + b2` (summed in double). Used
/// for `conv_s0(convs[n].conv(x))`: the 256-wide lateral map at 4E×4E (67 MB for a
/// 1024 px frame) is never formed, and the products shrink from cin·256 + 256·cout to
/// cin·cout per pixel.
fn fold_1x1(first: &Vb, second: &Vb, cin: usize, mid: usize, cout: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let w1 = first.tensor("weight", &[mid, cin, 1, 1])?;
    let b1 = first.tensor("bias", &[mid])?;
    let w2 = second.tensor("weight", &[cout, mid, 1, 1])?;
    let b2 = second.tensor("bias", &[cout])?;
    let mut w = vec![0f32; cout * cin];
    let mut b = vec![0f32; cout];
    for o in 0..cout {
        for i in 0..cin {
            w[o * cin + i] =
                (0..mid).map(|m| w2.data[o * mid + m] as f64 * w1.data[m * cin + i] as f64).sum::<f64>() as f32;
        }
        b[o] =
            ((0..mid).map(|m| w2.data[o * mid + m] as f64 * b1.data[m] as f64).sum::<f64>() + b2.data[o] as f64) as f32;
    }
    Ok((w, b))
}
