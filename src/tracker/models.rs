//! The four exported graphs plus the runtime tensors of `model.json`, behind any
//! [`Backend`], with typed wrappers for the calls the tracker makes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::{take_output, Backend, BankStore, ComponentSession, FrameOps, Value};
use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::export::Component;
use crate::manifest::Manifest;
use crate::weights::TensorF32;

/// Time spent per stage.
#[derive(Debug, Clone, Default)]
pub struct StageTimes {
    pub image_encoder: Duration,
    pub memory_attention: Duration,
    pub prompt_decoder: Duration,
    pub memory_encoder: Duration,
    /// Frame decoding and resizing the tracker waited for.
    pub frame_wait: Duration,
    /// Everything else on the host (inputs, hole filling, upsampling, sink).
    pub host: Duration,
    pub image_encoder_calls: usize,
    pub memory_attention_calls: usize,
    pub prompt_decoder_calls: usize,
    pub memory_encoder_calls: usize,
}

/// Image-encoder outputs of one frame (batch 1). They only go on to other graphs, so a
/// backend may keep them resident (on the GPU for TensorRT).
#[derive(Debug, Clone)]
pub struct FrameFeatures {
    pub high_res_feat0: Value,
    pub high_res_feat1: Value,
    pub vision_feat: Value,
    pub vision_pos: Value,
}

/// The image encoder's outputs, all kept resident where the backend can.
const FEATURES: [&str; 4] = ["high_res_feat0", "high_res_feat1", "vision_feat", "vision_pos"];

/// Prompt-decoder outputs the tracker uses.
pub struct DecoderOut {
    /// `[B, 1, 4E, 4E]`, where the backend keeps it (copied to the host only when asked)
    pub low_res_masks: Value,
    /// `[B, C]`
    pub obj_ptr: TensorF32,
    /// `[B, 1]`
    pub object_score_logits: TensorF32,
}

/// Loaded graphs and runtime tensors of one model directory.
pub struct TrackerModels {
    pub manifest: Manifest,
    image_encoder: Box<dyn ComponentSession>,
    prompt_decoder: Box<dyn ComponentSession>,
    memory_encoder: Box<dyn ComponentSession>,
    memory_attention: Box<dyn ComponentSession>,
    /// `[num_maskmem, M]`
    pub maskmem_tpos_enc: Vec<f32>,
    /// `[C]`
    pub no_mem_embed: Vec<f32>,
    pub mask_downsample: Option<([f32; 16], f32)>,
    /// (`[M, C]`, `[M]`)
    pub obj_ptr_tpos_proj: Option<(Vec<f32>, Vec<f32>)>,
    /// `[C]`: needed only for empty mask prompts (not in every model.json)
    pub no_obj_ptr: Option<Vec<f32>>,
    pub times: StageTimes,
}

fn input_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

impl TrackerModels {
    /// Read `DIR/model.json` (format version checked) and load the four graphs.
    pub fn load(backend: &dyn Backend, dir: &Path) -> Result<TrackerModels> {
        if !dir.is_dir() {
            return Err(input_err(format!("model dir '{}' does not exist", dir.display())));
        }
        let manifest = Manifest::read(dir)?;
        for c in Component::ALL {
            let p = dir.join(c.file_name());
            if !p.is_file() {
                return Err(input_err(format!(
                    "model dir '{}' has no {} (export all four graphs with `tamrt export`)",
                    dir.display(),
                    c.file_name()
                )));
            }
        }
        let load =
            |c| backend.load(dir, c).map_err(|e| e.context(format!("loading {}", dir.join(c.file_name()).display())));
        let sessions = [
            load(Component::ImageEncoder)?,
            load(Component::PromptDecoder)?,
            load(Component::MemoryEncoder)?,
            load(Component::MemoryAttention)?,
        ];
        TrackerModels::from_sessions(manifest, sessions)
    }

    /// Build from already loaded sessions (image encoder, prompt decoder, memory encoder,
    /// memory attention).
    pub fn from_sessions(manifest: Manifest, sessions: [Box<dyn ComponentSession>; 4]) -> Result<TrackerModels> {
        let cfg = &manifest.config;
        let (c, m) = (cfg.hidden_dim(), cfg.mem_dim());
        if cfg.hiera().is_none() && cfg.perceiver.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "model '{}' ({}): the tracker supports SAM 2 / SAM 2.1 (Hiera) and EdgeTAM (spatial perceiver) models",
                    manifest.model, cfg.family
                ),
            ));
        }
        if !cfg.directly_add_no_mem_embed {
            return Err(Error::new(
                ErrorKind::Config,
                format!("model '{}': only directly_add_no_mem_embed=true models are supported", manifest.model),
            ));
        }
        let get = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = manifest.tensor(name)?;
            if t.numel() != n {
                return Err(input_err(format!("model.json tensor '{name}' has {} values, expected {n}", t.numel())));
            }
            Ok(t.data)
        };
        let maskmem_tpos_enc = get("maskmem_tpos_enc", cfg.num_maskmem * m)?;
        let no_mem_embed = get("no_mem_embed", c)?;
        let mask_downsample = if cfg.use_obj_ptrs_in_encoder {
            let w = get("mask_downsample.weight", 16)?;
            let b = get("mask_downsample.bias", 1)?;
            let mut wa = [0f32; 16];
            wa.copy_from_slice(&w);
            Some((wa, b[0]))
        } else {
            None
        };
        let obj_ptr_tpos_proj = if cfg.proj_tpos_enc_in_obj_ptrs {
            Some((get("obj_ptr_tpos_proj.weight", m * c)?, get("obj_ptr_tpos_proj.bias", m)?))
        } else {
            None
        };
        let no_obj_ptr = manifest.tensors.get("no_obj_ptr").map(|t| t.data.clone()).filter(|d| d.len() == c);
        let [image_encoder, prompt_decoder, memory_encoder, memory_attention] = sessions;
        Ok(TrackerModels {
            image_encoder,
            prompt_decoder,
            memory_encoder,
            memory_attention,
            maskmem_tpos_enc,
            no_mem_embed,
            mask_downsample,
            obj_ptr_tpos_proj,
            no_obj_ptr,
            times: StageTimes::default(),
            manifest,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.manifest.config
    }

    /// The image encoder's backend's frame pre/post-processing, if it has its own.
    pub fn frame_ops(&self) -> Option<Result<Box<dyn FrameOps>>> {
        let cfg = self.config();
        self.image_encoder.frame_ops(cfg.image_size, cfg.pixel_mean, cfg.pixel_std)
    }

    /// Image encoder on one preprocessed frame `[1, 3, S, S]`.
    pub fn encode_image(&mut self, t: Value) -> Result<FrameFeatures> {
        let s = self.config().image_size;
        if t.shape() != [1, 3, s, s] {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("image encoder input of shape {:?}, expected [1, 3, {s}, {s}]", t.shape()),
            ));
        }
        let times = &mut self.times;
        let mut out = run_timed(
            self.image_encoder.as_mut(),
            (&mut times.image_encoder, &mut times.image_encoder_calls),
            "image_encoder",
            &[("image", &t)],
            &FEATURES,
        )?;
        Ok(FrameFeatures {
            high_res_feat0: take_output(&mut out, "high_res_feat0")?,
            high_res_feat1: take_output(&mut out, "high_res_feat1")?,
            vision_feat: take_output(&mut out, "vision_feat")?,
            vision_pos: take_output(&mut out, "vision_pos")?,
        })
    }

    /// Prompt decoder on a batch; its outputs come to the host.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &mut self,
        image_embed: &Value,
        feats: &FrameFeatures,
        point_coords: TensorF32,
        point_labels: TensorF32,
        mask_input: TensorF32,
        has_mask_input: TensorF32,
        multimask: bool,
    ) -> Result<DecoderOut> {
        let mm = Value::Host(TensorF32::new(vec![1], vec![if multimask { 1.0 } else { 0.0 }]));
        let [point_coords, point_labels, mask_input, has_mask_input] =
            [point_coords, point_labels, mask_input, has_mask_input].map(Value::Host);
        let times = &mut self.times;
        let mut out = run_timed(
            self.prompt_decoder.as_mut(),
            (&mut times.prompt_decoder, &mut times.prompt_decoder_calls),
            "prompt_decoder",
            &[
                ("image_embed", image_embed),
                ("high_res_feat0", &feats.high_res_feat0),
                ("high_res_feat1", &feats.high_res_feat1),
                ("point_coords", &point_coords),
                ("point_labels", &point_labels),
                ("mask_input", &mask_input),
                ("has_mask_input", &has_mask_input),
                ("multimask_output", &mm),
            ],
            &["low_res_masks"],
        )?;
        let low_res_masks = take_output(&mut out, "low_res_masks")?;
        let mut host = |name| take_output(&mut out, name)?.to_host().map(|t| t.into_owned());
        Ok(DecoderOut { low_res_masks, obj_ptr: host("obj_ptr")?, object_score_logits: host("object_score_logits")? })
    }

    /// Memory encoder on a batch of objects of one frame (`vision_feat`: the frame's
    /// features, batch 1, broadcast over the objects by the graph; `mask_high_res` and
    /// `object_score_logits` per object): returns `maskmem_features` (all objects) and the
    /// first call's `maskmem_pos_enc` (the same for every object, so only its first row
    /// is of use), both kept resident where the backend can. Runs in chunks of at most
    /// [`memory_encoder_batch`] objects (features concatenated).
    pub fn encode_memory(
        &mut self,
        vision_feat: &Value,
        mask_high_res: &Value,
        object_score_logits: &TensorF32,
        binarize: bool,
    ) -> Result<(Value, Value)> {
        let b = mask_high_res.shape()[0];
        let chunk = memory_encoder_batch(self.config());
        let (mut feats, mut pos) = (Vec::new(), None);
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let (f, p) = self.encode_memory_call(
                vision_feat,
                mask_high_res.rows(start, n)?,
                batch_slice(object_score_logits, start, n),
                binarize,
            )?;
            feats.push(f);
            pos.get_or_insert(p);
        }
        let pos = pos.ok_or_else(|| Error::new(ErrorKind::InvalidInput, "memory encoder: no objects given"))?;
        Ok((Value::concat(feats)?, pos))
    }

    fn encode_memory_call(
        &mut self,
        pix_feat: &Value,
        mask_high_res: Value,
        object_score_logits: TensorF32,
        binarize: bool,
    ) -> Result<(Value, Value)> {
        let bin = Value::Host(TensorF32::new(vec![1], vec![if binarize { 1.0 } else { 0.0 }]));
        let object_score_logits = Value::Host(object_score_logits);
        let times = &mut self.times;
        let mut out = run_timed(
            self.memory_encoder.as_mut(),
            (&mut times.memory_encoder, &mut times.memory_encoder_calls),
            "memory_encoder",
            &[
                ("pix_feat", pix_feat),
                ("mask_high_res", &mask_high_res),
                ("object_score_logits", &object_score_logits),
                ("binarize", &bin),
            ],
            &["maskmem_features", "maskmem_pos_enc"],
        )?;
        Ok((take_output(&mut out, "maskmem_features")?, take_output(&mut out, "maskmem_pos_enc")?))
    }

    /// The memory attention's backend's own memory bank, if it keeps one (see
    /// [`ComponentSession::bank_store`]).
    pub fn bank_store(
        &self,
        layout: &crate::tracker::mem_inputs::MemLayout,
        maskmem_pos: &[f32],
    ) -> Option<Result<Box<dyn BankStore>>> {
        self.memory_attention.bank_store(layout, maskmem_pos, &self.maskmem_tpos_enc)
    }

    /// Memory attention on a batch of objects with the same memory layout (inputs:
    /// `memory`, `memory_pos`, `obj_ptrs`, `obj_ptrs_pos`); the output
    /// (the decoder's image embedding) may stay resident.
    pub fn attend(
        &mut self,
        curr: &Value,
        curr_pos: &Value,
        [memory, memory_pos, obj_ptrs, obj_ptrs_pos]: [Value; 4],
    ) -> Result<Value> {
        let times = &mut self.times;
        let mut out = run_timed(
            self.memory_attention.as_mut(),
            (&mut times.memory_attention, &mut times.memory_attention_calls),
            "memory_attention",
            &[
                ("curr", curr),
                ("curr_pos", curr_pos),
                ("memory", &memory),
                ("memory_pos", &memory_pos),
                ("obj_ptrs", &obj_ptrs),
                ("obj_ptrs_pos", &obj_ptrs_pos),
            ],
            &["pix_feat_with_mem"],
        )?;
        take_output(&mut out, "pix_feat_with_mem")
    }
}

/// Run one component (outputs in `keep` may stay resident): its time and call are added
/// to `stage` (time, calls), and resident memory after the call is traced.
fn run_timed(
    session: &mut dyn ComponentSession,
    stage: (&mut Duration, &mut usize),
    component: &str,
    inputs: &[(&str, &Value)],
    keep: &[&str],
) -> Result<Vec<(String, Value)>> {
    if tracing::enabled!(tracing::Level::DEBUG) {
        // one line per call with every input shape (`scripts/graph_flops.py` reads these)
        let shapes: Vec<String> = inputs.iter().map(|(n, t)| format!("{n}={:?}", t.shape())).collect();
        tracing::debug!("call {component}: {}", shapes.join(" "));
    }
    let t0 = Instant::now();
    let out = session.run_values(inputs, keep)?;
    *stage.0 += t0.elapsed();
    *stage.1 += 1;
    trace_memory(component);
    Ok(out)
}

/// Resident and peak memory after a component call (`RUST_LOG=tamrt=debug`).
fn trace_memory(component: &str) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mb = |kb: Option<u64>| kb.map_or(-1.0, |k| k as f64 / 1024.0);
        let (rss, peak) = (mb(super::job::rss_kb()), mb(super::job::peak_rss_kb()));
        tracing::debug!("after {component}: RSS {rss:.0} MB, peak {peak:.0} MB");
    }
}

/// Objects per memory-encoder call: each object's fuser holds `E² × 4C` fp32 hidden
/// activations (16.8 MB at SAM 2's E = 64, C = 256) a few times over (GELU's
/// temporaries), so real-size models encode one object per call; reduced models batch.
pub fn memory_encoder_batch(cfg: &ModelConfig) -> usize {
    const BUDGET: usize = 96 << 20;
    let e = cfg.embed_side();
    let per_object = 4 * e * e * 4 * cfg.hidden_dim() * 4;
    (BUDGET / per_object.max(1)).max(1)
}

/// Objects `start..start + n` of a batch tensor.
fn batch_slice(t: &TensorF32, start: usize, n: usize) -> TensorF32 {
    let per = t.numel() / t.shape[0].max(1);
    let mut shape = t.shape.clone();
    shape[0] = n;
    TensorF32::new(shape, t.data[start * per..(start + n) * per].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_size_models_encode_one_object_per_call_reduced_ones_batch() {
        for name in ["sam2.1_hiera_t", "sam2_hiera_l", "edgetam"] {
            assert_eq!(memory_encoder_batch(&ModelConfig::builtin(name).unwrap()), 1, "{name}");
        }
        let mut tiny = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
        tiny.image_size = 256; // E = 16
        assert!(memory_encoder_batch(&tiny) >= 4);
    }

    #[test]
    fn batch_slice_takes_whole_objects() {
        let t = TensorF32::new(vec![3, 2], vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
        let s = batch_slice(&t, 1, 2);
        assert_eq!(s.shape, vec![2, 2]);
        assert_eq!(s.data, vec![10.0, 11.0, 20.0, 21.0]);
    }
}
