//! Video object tracking with the exported graphs: the behaviour of sam2 1.1.0's
//! `SAM2VideoPredictor` (`build_sam2_video_predictor`: dynamic multimask via stability,
//! `binarize_mask_from_pts_for_mem_enc`, `fill_hole_area=8`), on any [`Backend`].
//!
//! Use: load a [`TrackerModels`], open a [`FrameSource`] (e.g. [`FrameDir`]), create a
//! [`Tracker`], add prompts ([`Tracker::add_prompt`], like `add_new_points_or_box` /
//! `add_new_mask` before tracking starts), then [`Tracker::propagate`] (like
//! `propagate_in_video`) with a [`TrackSink`] that receives every frame's logits at video
//! resolution. Objects are tracked independently, as 1.1.0 does; objects whose memories
//! have the same layout share graph calls (the graphs have an object axis).
//!
//! Frames are decoded in processing order by a prefetch thread; the memory bank keeps
//! only what later frames can still select, so memory does not grow with video length.
//!
//! [`Backend`]: crate::backend::Backend

mod bank_io;
pub mod feature_cache;
pub mod frames;
pub mod job;
pub mod mem_inputs;
pub mod memory_bank;
pub mod models;
pub mod ops;
pub mod output;
pub mod prompts;
mod propagate;
pub mod resize;

use std::collections::HashMap;
use std::time::Instant;

use crate::backend::Value;
use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;
use feature_cache::FeatureCache;

pub use frames::{FrameDir, FrameSource, RgbFrame};
pub use job::{run_track_job, TrackJob, TrackSummary};
pub use memory_bank::{BankRules, ObjectMemory};
pub use models::{FrameFeatures, StageTimes, TrackerModels};
pub use output::{CollectSink, MaskWriter, ObjectLogits, TrackSink};
pub use prompts::{read_prompt_file, Prompt, PromptKind};
pub use propagate::TrackReport;

/// Tracker settings (defaults = the official video predictor's).
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// `fill_hole_area`: background components of the low-res mask up to this area
    /// become foreground (0 disables; the official predictor uses 8).
    pub fill_hole_area: usize,
    /// At most this many decoded frames are held at once (prefetch depth is
    /// `min(max_frames_in_mem - 1, 16)`; 1 decodes synchronously).
    pub max_frames_in_mem: usize,
    /// `clear_non_cond_mem_around_input` (off in the official config).
    pub clear_non_cond_mem_around_input: bool,
    /// `max_frame_num_to_track` of `propagate_in_video` (None = whole video).
    pub max_frame_num_to_track: Option<usize>,
    /// Bytes of prompted frames' image features kept until the propagation reaches them
    /// (so it does not encode them again); 0 keeps only the last frame, as upstream.
    pub prompt_feature_bytes: usize,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            fill_hole_area: 8,
            max_frames_in_mem: 600,
            clear_non_cond_mem_around_input: false,
            max_frame_num_to_track: None,
            prompt_feature_bytes: feature_cache::PINNED_BYTES,
        }
    }
}

/// The result of a prompt on a frame before tracking (upstream's temporary output).
#[derive(Debug, Clone)]
pub(crate) struct PromptOutput {
    pub frame: usize,
    /// `[4E, 4E]` after hole filling
    pub pred_masks: Vec<f32>,
    pub obj_ptr: Vec<f32>,
    pub object_score: f32,
}

/// One tracked object.
#[derive(Debug, Clone)]
pub(crate) struct TrackedObject {
    pub obj_id: u32,
    pub mem: ObjectMemory,
    /// Prompt outputs in insertion order (becoming conditioning frames).
    pub pending: Vec<PromptOutput>,
}

/// A tracking session over one video.
pub struct Tracker<'a> {
    pub(crate) models: &'a mut TrackerModels,
    pub(crate) source: &'a dyn FrameSource,
    pub(crate) opts: TrackerOptions,
    pub(crate) objects: Vec<TrackedObject>,
    /// `vision_feat` of prompted frames whose features `features` could not pin, for the
    /// memory encoding before tracking (pinned ones are read from `features`).
    pub(crate) prompt_vision: HashMap<usize, Value>,
    /// The last frame's image features (upstream caches one frame too) and those of
    /// prompted frames until the propagation visits them.
    pub(crate) features: FeatureCache,
    /// `maskmem_pos_enc` `[M, E, E]`, or `[N, M]` for EdgeTAM (the same for every frame).
    pub(crate) maskmem_pos: Option<Vec<f32>>,
    /// The memory attention's backend's memory bank (taken when the first memory is
    /// encoded); None: memories stay on the host in `objects`.
    pub(crate) bank_store: Option<Box<dyn crate::backend::BankStore>>,
    /// The image encoder's backend's frame pre/post-processing; None: on the host.
    pub(crate) frame_ops: Option<Box<dyn crate::backend::FrameOps>>,
    pub(crate) hole_scratch: Vec<u32>,
    pub(crate) propagated: bool,
}

impl<'a> Tracker<'a> {
    pub fn new(
        models: &'a mut TrackerModels,
        source: &'a dyn FrameSource,
        opts: TrackerOptions,
    ) -> Result<Tracker<'a>> {
        if source.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "the video has no frames"));
        }
        let budget = opts.prompt_feature_bytes;
        let frame_ops = match models.frame_ops() {
            None => None,
            Some(Ok(ops)) => {
                tracing::info!("frame pre/post-processing on the image encoder's backend ({})", ops.name());
                Some(ops)
            }
            Some(Err(e)) => {
                tracing::warn!("frame pre/post-processing stays on the host: {e}");
                None
            }
        };
        Ok(Tracker {
            models,
            source,
            opts,
            objects: Vec::new(),
            prompt_vision: HashMap::new(),
            features: FeatureCache::with_budget(budget),
            maskmem_pos: None,
            bank_store: None,
            frame_ops,
            hole_scratch: Vec::new(),
            propagated: false,
        })
    }

    /// Object ids in the order they were first prompted (output order).
    pub fn object_ids(&self) -> Vec<u32> {
        self.objects.iter().map(|o| o.obj_id).collect()
    }

    /// Frames come to the tracker resized to S×S unless the backend preprocesses them.
    pub(crate) fn resize_frames_to(&self) -> Option<usize> {
        self.frame_ops.is_none().then(|| self.models.config().image_size)
    }

    /// Image features of `frame`, taken out of the cache (computed when the cache does
    /// not hold them, from `image` as [`Tracker::resize_frames_to`] says, or loaded);
    /// give them back with [`Tracker::put_features`].
    pub(crate) fn take_features(&mut self, frame: usize, image: Option<RgbFrame>) -> Result<FrameFeatures> {
        if let Some(feats) = self.features.take(frame) {
            return Ok(feats);
        }
        let cfg = self.models.config();
        let (s, mean, std) = (cfg.image_size, cfg.pixel_mean, cfg.pixel_std);
        let t0 = Instant::now();
        let image = match image {
            Some(r) => r,
            None => self.source.load(frame)?,
        };
        let x = match self.frame_ops.as_mut() {
            Some(ops) => ops.preprocess(&image.data, image.width, image.height),
            None if (image.width, image.height) == (s, s) => {
                Ok(Value::Host(TensorF32::new(vec![1, 3, s, s], frames::normalize_resized(&image.data, s, mean, std))))
            }
            None => {
                let data = frames::preprocess(&image, s, mean, std);
                Ok(Value::Host(TensorF32::new(vec![1, 3, s, s], data)))
            }
        }
        .map_err(|e| e.context(format!("frame {frame}: preprocessing")))?;
        self.models.times.host += t0.elapsed();
        self.models.encode_image(x).map_err(|e| e.context(format!("frame {frame}")))
    }

    /// Give features back: `pin` (prompted frames) keeps them, within the cache's
    /// budget, until they are put back without `pin` (the propagation's visit). Returns
    /// whether they were pinned.
    pub(crate) fn put_features(&mut self, frame: usize, feats: FrameFeatures, pin: bool) -> bool {
        self.features.put(frame, feats, pin)
    }

    /// Apply a prompt on a frame not tracked yet (an initial conditioning frame), as
    /// `add_new_points_or_box` (`clear_old_points=True`) / `add_new_mask` do. A second
    /// points/box prompt for the same object and frame refines the first (its low-res
    /// logits, clamped to ±32, go in as the mask prompt).
    pub fn add_prompt(&mut self, prompt: &Prompt) -> Result<()> {
        if self.propagated {
            return Err(Error::new(ErrorKind::InvalidInput, "prompts must be added before propagate()"));
        }
        let n = self.source.len();
        if prompt.frame >= n {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("prompt for object {} on frame {}: the video has {n} frames", prompt.obj_id, prompt.frame),
            ));
        }
        let idx = match self.objects.iter().position(|o| o.obj_id == prompt.obj_id) {
            Some(i) => i,
            None => {
                self.objects.push(TrackedObject {
                    obj_id: prompt.obj_id,
                    mem: ObjectMemory::default(),
                    pending: Vec::new(),
                });
                self.objects.len() - 1
            }
        };
        let out = self
            .run_prompt(prompt)
            .map_err(|e| e.context(format!("prompt for object {} on frame {}", prompt.obj_id, prompt.frame)))?;
        let pending = &mut self.objects[idx].pending;
        match pending.iter_mut().find(|p| p.frame == prompt.frame) {
            Some(p) => *p = out,
            None => pending.push(out),
        }
        Ok(())
    }
}
