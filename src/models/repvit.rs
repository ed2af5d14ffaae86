//! EdgeTAM's image trunk: timm's `repvit_m1.dist_in1k` as `TimmBackbone` builds it
//! (`features_only=True`, `out_indices=(0, 1, 2, 3)`: the output of every stage), with
//! every BatchNorm folded into the conv before it at export time and each `RepVggDw`
//! token mixer re-parameterised into one depthwise conv, so the graph has no
//! BatchNormalization node (`timm/models/repvit.py`).
//!
//! Checkpoint keys live under `image_encoder.trunk.body.` (timm's `FeatureListNet`
//! flattens `stages.{i}` to `stages_{i}`).

use std::sync::Arc;

use crate::error::{graph_err, Result};
use crate::models::hiera::FeatureMap;
use crate::onnx::graph::{ConvOpts, Graph, Value};
use crate::weights::{TensorF32, Vb};

/// Blocks per stage of RepViT-M1 (`repvit_m1`: `depth=(2, 2, 14, 2)`).
pub const REPVIT_M1_DEPTHS: [usize; 4] = [2, 2, 14, 2];
/// `RepVit(mlp_ratio=2, kernel_size=3)`.
const MLP_RATIO: usize = 2;
const KERNEL: usize = 3;
/// `nn.BatchNorm2d` default eps.
const BN_EPS: f64 = 1e-5;

/// A conv whose BatchNorm has been folded in: weight `[cout, cin / groups, k, k]`, bias.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedConv {
    pub weight: TensorF32,
    pub bias: Vec<f32>,
}

/// Fold eval-mode BatchNorm into a bias-free conv:
/// `w' = w·γ/√(var+eps)`, `b' = (0 − mean)·γ/√(var+eps) + β` (f64 arithmetic, one rounding).
pub fn fold_batch_norm(w: &TensorF32, gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> FoldedConv {
    let cout = w.shape[0];
    let per = w.numel() / cout;
    let mut weight = vec![0f32; w.numel()];
    let mut bias = vec![0f32; cout];
    for o in 0..cout {
        let s = gamma[o] as f64 / (var[o] as f64 + eps).sqrt();
        for i in 0..per {
            weight[o * per + i] = (w.data[o * per + i] as f64 * s) as f32;
        }
        bias[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
    }
    FoldedConv { weight: TensorF32::new(w.shape.clone(), weight), bias }
}

/// Load timm's `ConvNorm` (`c`: Conv2d without bias, `bn`: BatchNorm2d) and fold it.
/// `num_batches_tracked` is read only to mark it used (eval mode ignores it).
pub fn load_conv_norm(vb: &Vb, cin: usize, cout: usize, k: usize, groups: usize) -> Result<FoldedConv> {
    let w = vb.pp("c").tensor("weight", &[cout, cin / groups, k, k])?;
    let bn = vb.pp("bn");
    let gamma = bn.tensor("weight", &[cout])?;
    let beta = bn.tensor("bias", &[cout])?;
    let mean = bn.tensor("running_mean", &[cout])?;
    let var = bn.tensor("running_var", &[cout])?;
    if bn.contains("num_batches_tracked") {
        bn.tensor("num_batches_tracked", &[])?;
    }
    if let Some(i) = var.data.iter().position(|v| v.is_nan() || *v as f64 + BN_EPS <= 0.0) {
        return Err(graph_err(format!(
            "{}: running_var[{i}] = {} is not positive",
            bn.path("running_var"),
            var.data[i]
        )));
    }
    Ok(fold_batch_norm(&w, &gamma.data, &beta.data, &mean.data, &var.data, BN_EPS))
}

/// `RepVggDw.fuse()` (legacy form, as in RepViT-M1): `conv(x) + conv1(x) + x` with
/// `conv` a k×k depthwise ConvNorm and `conv1` a 1×1 depthwise ConvNorm becomes one
/// k×k depthwise conv: the 1×1 kernel and the identity (1) are added at the centre tap.
pub fn fuse_repvgg_dw(conv: &FoldedConv, conv1: &FoldedConv) -> FoldedConv {
    let c = conv.bias.len();
    let k = conv.weight.shape[2];
    let centre = (k / 2) * k + k / 2;
    let mut w = conv.weight.data.clone();
    for ch in 0..c {
        let v = w[ch * k * k + centre] as f64 + conv1.weight.data[ch] as f64 + 1.0;
        w[ch * k * k + centre] = v as f32;
    }
    let bias = conv.bias.iter().zip(&conv1.bias).map(|(a, b)| (*a as f64 + *b as f64) as f32).collect();
    FoldedConv { weight: TensorF32::new(conv.weight.shape.clone(), w), bias }
}

/// timm `make_divisible(v, divisor=8, round_limit=0.)`, as `SqueezeExcite(rd_ratio=0.25)`
/// sizes its bottleneck.
pub fn se_channels(channels: usize) -> usize {
    let v = channels as f64 * 0.25;
    let r = ((v + 4.0) as usize) / 8 * 8;
    r.max(8)
}

/// A feature map being built: value, channels, side lengths.
struct Fm {
    v: Value,
    c: usize,
    h: usize,
    w: usize,
}

/// Add a folded conv to the graph (initializers `<prefix>.fused.weight` / `.bias`).
fn apply(g: &mut Graph, vb: &Vb, x: &Fm, f: &FoldedConv, stride: usize, pad: usize, groups: usize) -> Fm {
    let (cout, k) = (f.weight.shape[0], f.weight.shape[2]);
    let w = g.initializer(&vb.path("fused.weight"), &f.weight.shape, Arc::from(f.weight.data.clone()));
    let b = g.initializer(&vb.path("fused.bias"), &[cout], Arc::from(f.bias.clone()));
    let opts = ConvOpts::stride(stride as i64).with_pad(pad as i64).with_group(groups as i64);
    let v = g.conv(&x.v, &w, Some(&b), &opts);
    let out = |n: usize| (n + 2 * pad - k) / stride + 1;
    Fm { v, c: cout, h: out(x.h), w: out(x.w) }
}

fn conv_norm(g: &mut Graph, vb: &Vb, x: &Fm, cout: usize, k: usize, stride: usize, groups: usize) -> Result<Fm> {
    let f = load_conv_norm(vb, x.c, cout, k, groups)?;
    Ok(g.scoped(vb.prefix(), |g| apply(g, vb, x, &f, stride, (k - 1) / 2, groups)))
}

/// `RepVitMlp`: ConvNorm 1×1 (c → ratio·c), GELU, ConvNorm 1×1 (→ c).
fn mlp(g: &mut Graph, vb: &Vb, x: &Fm) -> Result<Fm> {
    let h = conv_norm(g, &vb.pp("conv1"), x, x.c * MLP_RATIO, 1, 1, 1)?;
    let h = Fm { v: g.gelu(&h.v), ..h };
    conv_norm(g, &vb.pp("conv2"), &h, x.c, 1, 1, 1)
}

/// timm `SEModule`: `x * sigmoid(fc2(relu(fc1(mean_hw(x)))))` (1×1 convs with bias).
fn squeeze_excite(g: &mut Graph, vb: &Vb, x: &Fm) -> Result<Value> {
    let rd = se_channels(x.c);
    g.scoped(vb.prefix(), |g| {
        let s = g.reduce_mean(&x.v, &[2, 3], true);
        let w1 = vb.get(g, "fc1.weight", &[rd, x.c, 1, 1])?;
        let b1 = vb.get(g, "fc1.bias", &[rd])?;
        let s = g.conv(&s, &w1, Some(&b1), &ConvOpts::default());
        let s = g.relu(&s);
        let w2 = vb.get(g, "fc2.weight", &[x.c, rd, 1, 1])?;
        let b2 = vb.get(g, "fc2.bias", &[x.c])?;
        let s = g.conv(&s, &w2, Some(&b2), &ConvOpts::default());
        let s = g.sigmoid(&s);
        Ok(g.mul(&x.v, &s))
    })
}

/// `RepViTBlock`: token mixer (re-parameterised `RepVggDw`), optional SE, then
/// `x + channel_mixer(x)`.
fn block(g: &mut Graph, vb: &Vb, x: &Fm, use_se: bool) -> Result<Fm> {
    let c = x.c;
    let tm = vb.pp("token_mixer");
    let conv = load_conv_norm(&tm.pp("conv"), c, c, KERNEL, c)?;
    let conv1 = load_conv_norm(&tm.pp("conv1"), c, c, 1, c)?;
    let fused = fuse_repvgg_dw(&conv, &conv1);
    let y = g.scoped(tm.prefix(), |g| apply(g, &tm, x, &fused, 1, (KERNEL - 1) / 2, c));
    let y = if use_se { Fm { v: squeeze_excite(g, &vb.pp("se"), &y)?, ..y } } else { y };
    let m = mlp(g, &vb.pp("channel_mixer"), &y)?;
    Ok(Fm { v: g.add(&y.v, &m.v), ..y })
}

/// `RepVitDownsample`: pre-block (no SE), depthwise stride-2 ConvNorm, 1×1 ConvNorm to
/// `cout`, then `x + ffn(x)`.
fn downsample(g: &mut Graph, vb: &Vb, x: &Fm, cout: usize) -> Result<Fm> {
    let x = block(g, &vb.pp("pre_block"), x, false)?;
    let x = conv_norm(g, &vb.pp("spatial_downsample"), &x, x.c, KERNEL, 2, x.c)?;
    let x = conv_norm(g, &vb.pp("channel_downsample"), &x, cout, 1, 1, 1)?;
    let f = mlp(g, &vb.pp("ffn"), &x)?;
    Ok(Fm { v: g.add(&x.v, &f.v), ..x })
}

/// `TimmBackbone.forward`: the four stage outputs (strides 4, 8, 16, 32), highest
/// resolution first. `vb` is at `image_encoder.trunk`; `channels` are the stage widths.
pub fn build_repvit(g: &mut Graph, vb: &Vb, channels: &[usize], image: &Value, s: usize) -> Result<Vec<FeatureMap>> {
    if channels.len() != REPVIT_M1_DEPTHS.len() || !channels[0].is_multiple_of(2) {
        return Err(graph_err(format!("repvit: expected 4 stage widths (the first even), got {channels:?}")));
    }
    let body = vb.pp("body");
    let x = Fm { v: image.clone(), c: 3, h: s, w: s };
    // RepVitStem: ConvNorm 3×3 s2 (→ c0/2), GELU, ConvNorm 3×3 s2 (→ c0)
    let stem = body.pp("stem");
    let x = conv_norm(g, &stem.pp("conv1"), &x, channels[0] / 2, KERNEL, 2, 1)?;
    let x = Fm { v: g.gelu(&x.v), ..x };
    let mut x = conv_norm(g, &stem.pp("conv2"), &x, channels[0], KERNEL, 2, 1)?;
    let mut out = Vec::new();
    for (i, (&c, &depth)) in channels.iter().zip(REPVIT_M1_DEPTHS.iter()).enumerate() {
        let st = body.pp(format!("stages_{i}"));
        if i > 0 {
            x = downsample(g, &st.pp("downsample"), &x, c)?;
        }
        // `use_se` alternates from True in every stage
        for j in 0..depth {
            x = block(g, &st.pp("blocks").pp(j), &x, j % 2 == 0)?;
        }
        out.push(FeatureMap { v: x.v.clone(), c: x.c, h: x.h, w: x.w });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn se_channels_match_timm() {
        // make_divisible(c / 4, 8, round_limit=0)
        assert_eq!([48, 96, 192, 384].map(se_channels), [16, 24, 48, 96]);
        assert_eq!([16, 24, 32, 8].map(se_channels), [8, 8, 8, 8]);
    }

    #[test]
    fn batch_norm_fold_and_dw_fusion() {
        let w = TensorF32::new(vec![2, 1, 3, 3], (0..18).map(|i| i as f32 * 0.1).collect());
        let f = fold_batch_norm(&w, &[2.0, 0.5], &[0.1, -0.2], &[1.0, 3.0], &[3.0, 0.25], 1.0);
        // channel 0: s = 2 / √4 = 1; channel 1: s = 0.5 / √1.25
        let s1 = 0.5 / 1.25f64.sqrt();
        assert_eq!(f.weight.data[4], 0.4);
        assert!((f.weight.data[9 + 4] as f64 - 1.3 * s1).abs() < 1e-6);
        assert!((f.bias[0] - (0.1 - 1.0)).abs() < 1e-6);
        assert!((f.bias[1] as f64 - (-0.2 - 3.0 * s1)).abs() < 1e-6);
        let one = FoldedConv { weight: TensorF32::new(vec![2, 1, 1, 1], vec![0.5, -1.0]), bias: vec![1.0, 2.0] };
        let d = fuse_repvgg_dw(&f, &one);
        assert!((d.weight.data[4] - (0.4 + 0.5 + 1.0)).abs() < 1e-6);
        assert_eq!(d.weight.data[0], f.weight.data[0]);
        assert!((d.bias[1] - (f.bias[1] + 2.0)).abs() < 1e-6);
    }
}
