//! Frame pre- and post-processing run by a backend where its tensors live. The TensorRT
//! backend runs them as CUDA kernels on the engines' stream (`crate::gpu::prepost`), so
//! the image encoder's input is made on the device from the RGB8 frame, the memory
//! encoder's high-res masks are upsampled and the output's holes filled on the device from
//! the decoder's resident output, and only the output masks come back. Without them the tracker does the same on
//! the host (`tracker::frames::preprocess`, `tracker::resize::bilinear`), with the same
//! results (the kernels are bit-exact ports, checked by `tamrt gpu-check`).

use super::Value;
use crate::error::Result;

/// What [`FrameOps::postprocess`] returns: `> 0` masks `[B, oh, ow]` (0/1) and, when
/// asked, the upsampled logits.
pub type Postprocessed = (Vec<u8>, Option<Vec<f32>>);

pub trait FrameOps {
    /// Where they run, for logs (e.g. "cuda").
    fn name(&self) -> &str;
    /// `frames::preprocess` of an RGB8 frame `[h][w][3]` (Pillow bicubic to S×S, ImageNet
    /// normalisation): the image encoder's input `[1, 3, S, S]`.
    fn preprocess(&mut self, rgb8: &[u8], w: usize, h: usize) -> Result<Value>;
    /// `resize::bilinear` (torch, `align_corners=False`) of `low` `[B, 1, h, w]` to
    /// `[B, 1, oh, ow]` (the memory encoder's `mask_high_res`).
    fn upsample(&mut self, low: &Value, oh: usize, ow: usize) -> Result<Value>;
    /// `tracker::ops::fill_holes` (`fill_holes_in_mask_scores`) of each plane of `low`
    /// `[B, 1, h, w]`: background components of at most `max_area` pixels become 0.1.
    fn fill_holes(&mut self, low: &Value, max_area: usize) -> Result<Value>;
    /// The frame output of the low-res planes `lows` (each `[n, 1, h, w]`, in object
    /// order) at `out_hw` (bilinear, then `> 0`), on the host; the logits only with
    /// `logits`.
    fn postprocess(&mut self, lows: &[Value], out_hw: (usize, usize), logits: bool) -> Result<Postprocessed>;
}
