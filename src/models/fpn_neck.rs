//! `FpnNeck` (`sam2/modeling/backbones/image_encoder.py`): 1x1 lateral convs, nearest
//! ×2 top-down fusion on `fpn_top_down_levels`, and the sine position encoding of each
//! level (input-independent, precomputed at export time).

use std::sync::Arc;

use crate::config::NeckConfig;
use crate::error::{graph_err, Result};
use crate::models::hiera::FeatureMap;
use crate::models::position_encoding::sine_position_encoding;
use crate::onnx::graph::{ConvOpts, Graph, Value};
use crate::onnx::nn;
use crate::weights::Vb;

/// The levels that must be built so that `wanted` can be: a level on
/// `fpn_top_down_levels` (other than the last) needs the level below it in resolution.
pub fn needed_levels(cfg: &NeckConfig, n_levels: usize, wanted: &[usize]) -> Vec<bool> {
    let mut need = vec![false; n_levels];
    for &w in wanted {
        need[w] = true;
    }
    for i in 0..n_levels.saturating_sub(1) {
        if need[i] && cfg.fpn_top_down_levels.contains(&i) {
            need[i + 1] = true;
        }
    }
    need
}

/// `FpnNeck.forward(xs)` → `out`, building only the levels `wanted` needs (the others
/// are `None`). `xs` are the trunk's feature maps, highest resolution first.
pub fn build_fpn_neck(
    g: &mut Graph,
    cfg: &NeckConfig,
    vb: &Vb,
    xs: &[FeatureMap],
    wanted: &[usize],
) -> Result<Vec<Option<FeatureMap>>> {
    let levels = xs.len();
    if levels == 0 || cfg.backbone_channel_list.len() != levels {
        return Err(graph_err(format!(
            "fpn neck: {} backbone levels but backbone_channel_list has {}",
            levels,
            cfg.backbone_channel_list.len()
        )));
    }
    let n = levels - 1;
    let need = needed_levels(cfg, levels, wanted);
    let mut out: Vec<Option<FeatureMap>> = vec![None; levels];
    let mut prev: Option<FeatureMap> = None;
    // for i in range(n, -1, -1): lateral_features = self.convs[n - i](x)
    for i in (0..=n).rev() {
        if !need[i] {
            prev = None;
            continue;
        }
        let x = &xs[i];
        let cin = cfg.backbone_channel_list[n - i];
        if cin != x.c {
            return Err(graph_err(format!("fpn neck: level {i} has {} channels, convs.{} expects {cin}", x.c, n - i)));
        }
        let cvb = vb.pp("convs").pp(n - i).pp("conv");
        let lateral =
            g.scoped(cvb.prefix(), |g| nn::conv2d(g, &cvb, &x.v, cin, cfg.d_model, 1, &ConvOpts::default(), true))?;
        let fused = match prev.as_ref() {
            Some(p) if cfg.fpn_top_down_levels.contains(&i) => {
                // F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
                if (2 * p.h, 2 * p.w) != (x.h, x.w) {
                    return Err(graph_err(format!(
                        "fpn neck: level {} ({}x{}) upsampled ×2 does not match level {i} ({}x{})",
                        i + 1,
                        p.h,
                        p.w,
                        x.h,
                        x.w
                    )));
                }
                g.scoped(&vb.path(&format!("top_down.{i}")), |g| {
                    let up = g.resize_scales(&p.v, [1.0, 1.0, 2.0, 2.0], "nearest");
                    // prev_features = lateral_features + top_down_features
                    g.add(&lateral, &up)
                })
            }
            _ => lateral,
        };
        let fm = FeatureMap { v: fused, c: cfg.d_model, h: x.h, w: x.w };
        prev = Some(fm.clone());
        out[i] = Some(fm);
    }
    Ok(out)
}

/// `pos[i] = self.position_encoding(x_out)` for a `[1, d_model, h, w]` level, as a
/// constant (`PositionEmbeddingSine(num_pos_feats=d_model)`, batch 1).
pub fn level_position_encoding(g: &mut Graph, cfg: &NeckConfig, vb: &Vb, level: usize, fm: &FeatureMap) -> Value {
    let pe = sine_position_encoding(cfg.d_model, fm.h, fm.w);
    g.initializer(&vb.path(&format!("position_encoding.{level}")), &[1, cfg.d_model, fm.h, fm.w], Arc::from(pe.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neck(top_down: Vec<usize>) -> NeckConfig {
        NeckConfig { d_model: 8, backbone_channel_list: vec![8, 4, 2, 1], fpn_top_down_levels: top_down, scalp: 1 }
    }

    #[test]
    fn needed_levels_follow_the_top_down_chain() {
        // Official: levels 0, 1 are lateral only; level 2 needs level 3.
        assert_eq!(needed_levels(&neck(vec![2, 3]), 4, &[0, 1, 2]), vec![true, true, true, true]);
        // Level 2 without top-down: level 3 is not built.
        assert_eq!(needed_levels(&neck(vec![3]), 4, &[0, 1, 2]), vec![true, true, true, false]);
        // Full top-down chain from level 0.
        assert_eq!(needed_levels(&neck(vec![0, 1, 2, 3]), 4, &[0]), vec![true; 4]);
    }
}
