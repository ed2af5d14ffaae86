//! Input-independent position encodings, computed at export time and stored as
//! constants: `PositionEmbeddingSine._pe` (FPN neck, memory encoder, EdgeTAM perceiver).

use crate::weights::TensorF32;

/// `PositionEmbeddingSine(num_pos_feats, temperature=10000, normalize=True,
/// scale=2π)._pe(1, H, W)[0]`: a `[num_pos_feats, H, W]` tensor, channels
/// `cat(pos_y, pos_x)`, each interleaving sin (even) and cos (odd).
pub fn sine_position_encoding(num_pos_feats: usize, h: usize, w: usize) -> TensorF32 {
    let half = num_pos_feats / 2;
    let scale = 2.0 * std::f32::consts::PI;
    let eps = 1e-6f32;
    // dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)   (fp32)
    let dim_t: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * (i / 2)) as f32 / half as f32;
            (10000f64.powf(e as f64)) as f32
        })
        .collect();
    // y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
    let y_embed: Vec<f32> = (1..=h).map(|y| y as f32 / (h as f32 + eps) * scale).collect();
    let x_embed: Vec<f32> = (1..=w).map(|x| x as f32 / (w as f32 + eps) * scale).collect();
    let mut data = vec![0f32; num_pos_feats * h * w];
    for c in 0..half {
        for yy in 0..h {
            for xx in 0..w {
                let py = y_embed[yy] / dim_t[c];
                let px = x_embed[xx] / dim_t[c];
                let (vy, vx) = if c % 2 == 0 { (py.sin(), px.sin()) } else { (py.cos(), px.cos()) };
                data[(c * h + yy) * w + xx] = vy;
                data[((half + c) * h + yy) * w + xx] = vx;
            }
        }
    }
    TensorF32::new(vec![num_pos_feats, h, w], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_pe_first_channels() {
        // Channel 0 is sin(y·2π/(H+eps)) (dim_t[0] = 1), channel 1 is cos of the same.
        let pe = sine_position_encoding(8, 2, 3);
        let y1 = 1.0f32 / (2.0 + 1e-6) * 2.0 * std::f32::consts::PI;
        assert!((pe.data[0] - y1.sin()).abs() < 1e-6);
        assert!((pe.data[6] - y1.cos()).abs() < 1e-6);
        // x part starts at channel 4; at x = 3 = W the angle is ~2π.
        let x3 = 3.0f32 / (3.0 + 1e-6) * 2.0 * std::f32::consts::PI;
        assert!((pe.data[4 * 6 + 2] - x3.sin()).abs() < 1e-6);
    }
}
