//! Image features kept between graph calls.
//!
//! Upstream's `_get_image_feature` caches the most recent frame only, so the frames that
//! got prompts are encoded once for the prompt and again when `propagate_in_video` reaches
//! them. Here the features of prompted frames stay (within [`PINNED_BYTES`]) until the
//! propagation has visited them; the image encoder is deterministic, so the results are
//! the same and the propagation skips one encoder call per prompted frame.

use std::collections::BTreeMap;

use super::models::FrameFeatures;

/// Bytes of pinned (prompted-frame) features at most: six real-size SAM 2 frames
/// (`[256, 64, 64]` ×2, `[32, 256, 256]`, `[64, 128, 128]` fp32: 20 MB each).
pub const PINNED_BYTES: usize = 128 << 20;

/// fp32 bytes of one frame's features.
pub fn feature_bytes(f: &FrameFeatures) -> usize {
    4 * [&f.high_res_feat0, &f.high_res_feat1, &f.vision_feat, &f.vision_pos].iter().map(|t| t.numel()).sum::<usize>()
}

/// The last frame's features plus pinned frames.
pub struct FeatureCache {
    frames: BTreeMap<usize, (FrameFeatures, bool)>,
    pinned_bytes: usize,
    budget: usize,
}

impl FeatureCache {
    /// A cache pinning at most `budget` bytes (0: upstream's one-frame cache).
    pub fn with_budget(budget: usize) -> FeatureCache {
        FeatureCache { frames: BTreeMap::new(), pinned_bytes: 0, budget }
    }

    /// Take `frame`'s features out (they come back with [`FeatureCache::put`]).
    pub fn take(&mut self, frame: usize) -> Option<FrameFeatures> {
        let (f, pinned) = self.frames.remove(&frame)?;
        if pinned {
            self.pinned_bytes -= feature_bytes(&f);
        }
        Some(f)
    }

    /// Put `frame`'s features back; they stay until another frame is put, or, with `pin`
    /// and while the pinned frames fit the budget, until put again without `pin`.
    /// Returns whether they were pinned.
    pub fn put(&mut self, frame: usize, feats: FrameFeatures, pin: bool) -> bool {
        drop(self.take(frame));
        let bytes = feature_bytes(&feats);
        let pin = pin && self.pinned_bytes + bytes <= self.budget;
        if pin {
            self.pinned_bytes += bytes;
        }
        self.frames.retain(|_, (_, p)| *p);
        self.frames.insert(frame, (feats, pin));
        pin
    }

    /// `frame`'s features while the cache holds them.
    pub fn peek(&self, frame: usize) -> Option<&FrameFeatures> {
        self.frames.get(&frame).map(|(f, _)| f)
    }

    /// Frames held (pinned or last).
    pub fn frames(&self) -> Vec<usize> {
        self.frames.keys().copied().collect()
    }

    pub fn pinned_bytes(&self) -> usize {
        self.pinned_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::TensorF32;

    fn feats(v: f32) -> FrameFeatures {
        let t = |n: usize| TensorF32::new(vec![1, n], vec![v; n]).into();
        FrameFeatures { high_res_feat0: t(4), high_res_feat1: t(2), vision_feat: t(1), vision_pos: t(1) }
    }

    #[test]
    fn keeps_the_last_frame_and_pinned_frames_within_budget() {
        // 8 values = 32 bytes per frame; room for two pinned frames
        let mut c = FeatureCache::with_budget(64);
        assert!(c.put(3, feats(3.0), true));
        assert!(c.put(5, feats(5.0), true));
        assert!(!c.put(7, feats(7.0), true), "over budget: kept only as the last frame");
        assert_eq!(c.frames(), vec![3, 5, 7]);
        assert_eq!(c.peek(7).expect("last frame").vision_feat.to_host().unwrap().data, vec![7.0]);
        assert_eq!(c.pinned_bytes(), 64);
        c.put(8, feats(8.0), false);
        assert_eq!(c.frames(), vec![3, 5, 8], "unpinned 7 replaced by the last frame");
        let f5 = c.take(5).expect("pinned frame kept");
        assert_eq!(f5.vision_feat.to_host().unwrap().data, vec![5.0]);
        assert_eq!(c.pinned_bytes(), 32);
        // the propagation puts a visited frame back unpinned: it no longer stays
        c.put(5, f5, false);
        c.put(9, feats(9.0), false);
        assert_eq!(c.frames(), vec![3, 9]);
        assert!(c.take(5).is_none());
        assert_eq!(c.take(3).expect("still pinned").vision_feat.to_host().unwrap().data, vec![3.0]);
        assert_eq!(c.pinned_bytes(), 0);
    }

    #[test]
    fn putting_a_held_frame_again_replaces_it() {
        let mut c = FeatureCache::with_budget(64);
        c.put(2, feats(1.0), true);
        c.put(2, feats(2.0), true);
        assert_eq!(c.pinned_bytes(), 32, "counted once");
        c.put(2, feats(3.0), false);
        assert_eq!(c.pinned_bytes(), 0);
        assert_eq!(c.take(2).expect("held").vision_feat.to_host().unwrap().data, vec![3.0]);
    }

    #[test]
    fn zero_budget_is_upstreams_one_frame_cache() {
        let mut c = FeatureCache::with_budget(0);
        c.put(0, feats(0.0), true);
        c.put(1, feats(1.0), true);
        assert_eq!(c.frames(), vec![1]);
        assert!(c.take(0).is_none());
        assert_eq!(c.take(1).expect("last frame").vision_feat.to_host().unwrap().data, vec![1.0]);
    }
}
