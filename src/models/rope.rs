//! Axial rotary position encoding (`sam2/modeling/position_encoding.py`) in real
//! arithmetic: the complex table of `compute_axial_cis` is computed at export time as a
//! cos and a sin table, and `apply_rotary_enc` becomes a rotation of consecutive
//! (real, imag) pairs, so the graph needs no complex type.

use crate::onnx::graph::{Graph, Value};

/// `compute_axial_cis(dim, end_x, end_y, theta)` as two `[end_x·end_y, dim/2]` tables
/// (row-major, token `t` at x = t % end_x, y = t // end_x).
#[derive(Debug, Clone, PartialEq)]
pub struct AxialRope {
    /// Tokens (`end_x · end_y`).
    pub len: usize,
    /// Complex entries per token (`dim / 2`): `dim/4` x frequencies, then `dim/4` y.
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl AxialRope {
    /// Mirrors `compute_axial_cis` in fp32: `freqs = 1 / theta ** (arange(0, dim, 4) / dim)`,
    /// `torch.outer(t_x, freqs_x)`, `torch.polar(1, ·)`, `cat([cis_x, cis_y], -1)`.
    pub fn new(dim: usize, end_x: usize, end_y: usize, theta: f64) -> AxialRope {
        assert!(dim.is_multiple_of(4), "RoPE head dim {dim} must be a multiple of 4");
        let quarter = dim / 4;
        // `1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))` (fp32)
        let freqs: Vec<f32> = (0..quarter)
            .map(|i| {
                let e = (4 * i) as f32 / dim as f32;
                1.0f32 / (theta.powf(e as f64) as f32)
            })
            .collect();
        let len = end_x * end_y;
        let half = dim / 2;
        let (mut cos, mut sin) = (vec![0f32; len * half], vec![0f32; len * half]);
        for t in 0..len {
            // `init_t_xy`: t_x = t % end_x, t_y = t // end_x
            let (tx, ty) = ((t % end_x) as f32, (t / end_x) as f32);
            for (i, f) in freqs.iter().enumerate() {
                for (j, pos) in [(i, tx), (quarter + i, ty)] {
                    let angle = (pos * f) as f64; // fp32 outer product
                    cos[t * half + j] = angle.cos() as f32;
                    sin[t * half + j] = angle.sin() as f32;
                }
            }
        }
        AxialRope { len, half, cos, sin }
    }

    /// The tables as graph constants, shaped `[len, half, 1]` to broadcast against
    /// `[..., len, half, 1]` pair components. Named `<prefix>.rope_cos` / `.rope_sin`.
    pub fn constants(&self, g: &mut Graph, prefix: &str) -> RopeConsts {
        let dims = [self.len, self.half, 1];
        let cos = g.initializer(&format!("{prefix}.rope_cos"), &dims, self.cos.clone().into());
        let sin = g.initializer(&format!("{prefix}.rope_sin"), &dims, self.sin.clone().into());
        RopeConsts { len: self.len, half: self.half, cos, sin }
    }
}

/// The cos / sin tables in a graph.
#[derive(Debug, Clone)]
pub struct RopeConsts {
    pub len: usize,
    pub half: usize,
    pub cos: Value,
    pub sin: Value,
}

/// `apply_rotary_enc` on one tensor `x: [B, heads, n, dim]` where `n` is a multiple of
/// the table length (`repeat_freqs_k`: the table is repeated per memory frame; `n` may be
/// dynamic). Each consecutive pair `(x[2i], x[2i+1])` is read as a complex number
/// (`view_as_complex`) and multiplied by `cos + i·sin`:
/// `(re·cos − im·sin, re·sin + im·cos)`.
pub fn apply_rotary(g: &mut Graph, x: &Value, rope: &RopeConsts) -> Value {
    let (len, half) = (rope.len as i64, rope.half as i64);
    // [B, h, n, dim] -> [B, h, n / len, len, dim/2, 2]
    let xr = g.reshape(x, &[0, 0, -1, len, half, 2]);
    let parts = g.split(&xr, &[1, 1], -1);
    let (re, im) = (&parts[0], &parts[1]);
    let re_cos = g.mul(re, &rope.cos);
    let im_sin = g.mul(im, &rope.sin);
    let out_re = g.sub(&re_cos, &im_sin);
    let re_sin = g.mul(re, &rope.sin);
    let im_cos = g.mul(im, &rope.cos);
    let out_im = g.add(&re_sin, &im_cos);
    // `torch.view_as_real(...).flatten(3)`
    let out = g.concat(&[&out_re, &out_im], -1);
    g.reshape(&out, &[0, 0, -1, 2 * half])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    #[test]
    fn axial_table_hand_computed() {
        // dim 8: freqs = [1/theta^0, 1/theta^(4/8)] = [1, 0.01] for theta 1e4.
        let r = AxialRope::new(8, 3, 2, 10000.0);
        assert_eq!((r.len, r.half), (6, 4));
        // token 0: all angles 0
        assert!(r.cos[0..4].iter().all(|&c| c == 1.0));
        assert!(r.sin[0..4].iter().all(|&s| s == 0.0));
        // token 5: x = 5 % 3 = 2, y = 5 / 3 = 1; entries [x·1, x·0.01, y·1, y·0.01]
        let want = [2.0, 0.02, 1.0, 0.01];
        for (j, a) in want.iter().enumerate() {
            assert!(close(r.cos[5 * 4 + j], f64::cos(*a)), "cos {j}");
            assert!(close(r.sin[5 * 4 + j], f64::sin(*a)), "sin {j}");
        }
        // token 1: x = 1, y = 0
        assert!(close(r.sin[4], 1f64.sin()));
        assert!(close(r.sin[4 + 2], 0.0));
    }

    #[test]
    fn axial_table_official_size() {
        // SAM 2: dim 256, 64×64 grid; last token is x = y = 63, first frequency 1.
        let r = AxialRope::new(256, 64, 64, 10000.0);
        assert_eq!((r.len, r.half), (4096, 128));
        let last = 4095 * 128;
        assert!(close(r.cos[last], 63f64.cos()));
        assert!(close(r.sin[last + 64], 63f64.sin()));
        // second x frequency: 1 / 10000^(4/256)
        let f1 = 1.0 / 10000f64.powf(4.0 / 256.0);
        assert!((r.sin[last + 1] as f64 - (63.0 * f1).sin()).abs() < 1e-5);
        // row 1 starts at token 64: x = 0, y = 1
        assert!(close(r.sin[64 * 128], 0.0));
        assert!(close(r.sin[64 * 128 + 64], 1f64.sin()));
    }
}
