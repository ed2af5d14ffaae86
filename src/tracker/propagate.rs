//! Prompted frames, the memory encoding before tracking (`propagate_in_video_preflight`)
//! and the tracking loop (`propagate_in_video` → `_run_single_frame_inference` →
//! `track_step`), batched over objects.

use std::time::{Duration, Instant};

use crate::backend::{BankKey, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::models::memory_attention::MEM_ATTN_QUERY_BLOCK;
use crate::weights::TensorF32;

use super::frames::{Prefetcher, RgbFrame};
use super::memory_bank::{BankRules, CondFrame, FrameMemory, MemData};
use super::models::{FrameFeatures, StageTimes};
use super::ops;
use super::output::{ObjectLogits, TrackSink};
use super::prompts::{Prompt, PromptKind};
use super::resize::{bilinear, bilinear_into};
use super::{PromptOutput, Tracker};

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct TrackReport {
    /// Frames in processing order that were output.
    pub frames: Vec<usize>,
    /// Graph calls and time per stage during `propagate` (the memory encoding of
    /// prompted frames included, as upstream's `propagate_in_video` does it).
    pub times: StageTimes,
    /// The same for the prompts before.
    pub prompt_times: StageTimes,
    /// Time of the propagation loop only.
    pub propagate_time: Duration,
    /// Largest memory bank (bytes, all objects) seen during the run.
    pub peak_bank_bytes: usize,
    /// Where the memory bank was kept ("host", or the backend's store, e.g. "device").
    pub memory_bank: String,
    /// Where frames were pre/post-processed ("host", or the backend's, e.g. "cuda").
    pub frame_ops: String,
}

/// Memory-attention working set (bytes, all objects of one call) above which objects
/// with the same memory layout are not batched into one call: per object the graph
/// holds the N projected and rotated keys (a few `N × d` fp32 copies), one query block's
/// scores and weights (`2 × MEM_ATTN_QUERY_BLOCK × N`) and the feed-forward hidden layer
/// (`E² × dim_feedforward`). A batch shares the current frame, so the first layer's
/// self-attention runs once per call; the other products are per object either way.
/// On the real-size EdgeTAM clip this batches its three same-layout objects (630 MB peak
/// RSS, ~2% faster than one object per call at 390 MB); SAM 2's 4096-token frames give
/// one object per call from the second memory frame on.
const ATTN_CALL_BYTES: usize = 192 << 20;

fn no_points(b: usize) -> (TensorF32, TensorF32) {
    (TensorF32::new(vec![b, 1, 2], vec![0.0; b * 2]), TensorF32::new(vec![b, 1], vec![-1.0; b]))
}

impl Tracker<'_> {
    pub(crate) fn rules(&self) -> BankRules {
        let cfg = self.models.config();
        BankRules {
            num_maskmem: cfg.num_maskmem,
            stride: cfg.memory_temporal_stride_for_eval.max(1),
            max_obj_ptrs: self.source.len().min(cfg.max_obj_ptrs_in_encoder),
            use_obj_ptrs: cfg.use_obj_ptrs_in_encoder,
            only_past_ptrs: cfg.only_obj_ptrs_in_the_past_for_eval,
            signed_tpos: cfg.use_signed_tpos_enc_to_obj_ptrs,
            num_frames: self.source.len(),
        }
    }

    /// `_run_single_frame_inference` on an initial conditioning frame (no memory).
    pub(crate) fn run_prompt(&mut self, prompt: &Prompt) -> Result<PromptOutput> {
        let frame = prompt.frame;
        let feats = self.take_features(frame, None)?;
        let res = self.prompt_with(prompt, &feats);
        if !self.put_features(frame, feats, true) {
            // over the cache's budget: keep what the memory encoding before tracking needs
            let vision = &self.features.peek(frame).expect("the frame just put").vision_feat;
            self.prompt_vision.entry(frame).or_insert_with(|| vision.clone());
        }
        res
    }

    fn prompt_with(&mut self, prompt: &Prompt, feats: &FrameFeatures) -> Result<PromptOutput> {
        let cfg = self.models.config().clone();
        let (s, e, c) = (cfg.image_size, cfg.embed_side(), cfg.hidden_dim());
        let m4 = 4 * e;
        let (vw, vh) = self.source.size();
        let frame = prompt.frame;
        let idx = self.objects.iter().position(|o| o.obj_id == prompt.obj_id).expect("object added");
        let (low, obj_ptr, score) = match &prompt.kind {
            PromptKind::Points { coords, labels } => {
                // add_new_points_or_box: points / [W, H] * image_size (fp32)
                let n = coords.len();
                let mut pc = Vec::with_capacity(n * 2);
                for p in coords {
                    pc.push(p[0] / vw as f32 * s as f32);
                    pc.push(p[1] / vh as f32 * s as f32);
                }
                let pc = TensorF32::new(vec![1, n, 2], pc);
                let pl = TensorF32::new(vec![1, n], labels.iter().map(|&l| l as f32).collect());
                // prev_sam_mask_logits: the earlier output on this frame, clamped
                let prev = self.objects[idx].pending.iter().find(|p| p.frame == frame);
                let (mask_input, has) = match prev {
                    Some(p) => (p.pred_masks.iter().map(|v| v.clamp(-32.0, 32.0)).collect(), 1.0),
                    None => (vec![0f32; m4 * m4], 0.0),
                };
                let mask_input = TensorF32::new(vec![1, 1, m4, m4], mask_input);
                let has = TensorF32::new(vec![1], vec![has]);
                // _use_multimask on an initial conditioning frame
                let multimask =
                    cfg.multimask_output_in_sam && cfg.multimask_min_pt_num <= n && n <= cfg.multimask_max_pt_num;
                // directly_add_no_mem_embed (on the host: prompted frames only)
                let mut embed = feats.vision_feat.to_host()?.into_owned();
                let hw = e * e;
                for (ch, &v) in self.models.no_mem_embed.iter().enumerate() {
                    for x in &mut embed.data[ch * hw..(ch + 1) * hw] {
                        *x += v;
                    }
                }
                let d = self.models.decode(&Value::Host(embed), feats, pc, pl, mask_input, has, multimask)?;
                (d.low_res_masks.to_host()?.into_owned().data, d.obj_ptr.data, d.object_score_logits.data[0])
            }
            PromptKind::Mask { width, height, mask } => {
                // add_new_mask + _use_mask_as_output
                let m = ops::mask_to_model_res(mask, *width, *height, s);
                let (_, low) = ops::mask_prompt_logits(&m, s);
                let appearing = m.iter().any(|&v| v > 0.0);
                let lambda = if appearing { 1.0 } else { 0.0 };
                let mut ptr = vec![0f32; c];
                if let Some((w, b)) = self.models.mask_downsample {
                    let mi = TensorF32::new(vec![1, 1, m4, m4], ops::mask_downsample(&m, s, &w, b));
                    let has = TensorF32::new(vec![1], vec![1.0]);
                    let (pc, pl) = no_points(1);
                    let d = self.models.decode(&feats.vision_feat, feats, pc, pl, mi, has, false)?;
                    ptr = d.obj_ptr.data;
                }
                if cfg.sam.pred_obj_scores && cfg.use_obj_ptrs_in_encoder {
                    if cfg.sam.fixed_no_obj_ptr {
                        ptr.iter_mut().for_each(|v| *v *= lambda);
                    }
                    if !appearing {
                        let no = self.models.no_obj_ptr.as_ref().ok_or_else(|| {
                            Error::new(
                                ErrorKind::InvalidInput,
                                "the mask is empty: the object pointer is then `no_obj_ptr`, which this model.json \
                                 does not carry (re-export with a newer tamrt)",
                            )
                        })?;
                        for (p, n) in ptr.iter_mut().zip(no) {
                            *p += n;
                        }
                    }
                }
                (low, ptr, 20.0 * lambda - 10.0)
            }
        };
        let t0 = Instant::now();
        let mut pred = low;
        ops::fill_holes(&mut pred, m4, m4, self.opts.fill_hole_area, &mut self.hole_scratch);
        self.models.times.host += t0.elapsed();
        Ok(PromptOutput { frame, pred_masks: pred, obj_ptr, object_score: score })
    }

    /// `propagate_in_video_preflight`: memory of every prompted frame (from its
    /// hole-filled low-res mask, upsampled, binarized), batched per frame.
    fn preflight(&mut self) -> Result<()> {
        let cfg = self.models.config().clone();
        let (s, e) = (cfg.image_size, cfg.embed_side());
        let m4 = 4 * e;
        let mut frames: Vec<usize> = self.objects.iter().flat_map(|o| o.pending.iter().map(|p| p.frame)).collect();
        frames.sort_unstable();
        frames.dedup();
        let mut results: Vec<Vec<(usize, MemData)>> = vec![Vec::new(); self.objects.len()];
        for f in frames {
            let members: Vec<(usize, usize)> = self
                .objects
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.pending.iter().position(|p| p.frame == f).map(|j| (i, j)))
                .collect();
            let b = members.len();
            let vision = match self.features.peek(f) {
                Some(feats) => &feats.vision_feat,
                None => self.prompt_vision.get(&f).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidInput, format!("frame {f}: image features of the prompt are gone"))
                })?,
            };
            let mut low = Vec::with_capacity(b * m4 * m4);
            let mut scores = Vec::with_capacity(b);
            for &(i, j) in &members {
                let p = &self.objects[i].pending[j];
                low.extend_from_slice(&p.pred_masks);
                scores.push(p.object_score);
            }
            let low = TensorF32::new(vec![b, 1, m4, m4], low);
            let high = match self.frame_ops.as_mut() {
                Some(ops) => ops.upsample(&Value::Host(low), s, s)?,
                None => upsample_host(&low, s),
            };
            let scores = TensorF32::new(vec![b, 1], scores);
            let binarize = cfg.binarize_mask_from_pts_for_mem_enc;
            let (feats, pos) = self
                .models
                .encode_memory(vision, &high, &scores, binarize)
                .map_err(|e| e.context(format!("frame {f}")))?;
            let ptrs: Vec<Vec<f32>> =
                members.iter().map(|&(i, j)| self.objects[i].pending[j].obj_ptr.clone()).collect();
            let objs: Vec<(BankKey, &[f32])> = members
                .iter()
                .zip(&ptrs)
                .map(|(&(i, _), p)| (BankKey { obj: i, frame: f, cond: true }, &p[..]))
                .collect();
            let mems = self.keep_memories(&feats, &pos, &objs)?;
            for (&(i, _), mem) in members.iter().zip(mems) {
                results[i].push((f, mem));
            }
        }
        for (o, res) in self.objects.iter_mut().zip(results) {
            for p in std::mem::take(&mut o.pending) {
                let mm = res.iter().find(|(f, _)| *f == p.frame).map(|(_, m)| m.clone()).expect("encoded");
                o.mem.non_cond.remove(&p.frame);
                o.mem.cond.push(CondFrame {
                    frame: p.frame,
                    mem: FrameMemory { maskmem: Some(mm), obj_ptr: p.obj_ptr },
                    pred_masks: p.pred_masks,
                    object_score: p.object_score,
                });
            }
        }
        self.prompt_vision.clear();
        self.sync_store();
        Ok(())
    }

    /// Track every object from `start` (default: the earliest prompted frame, as
    /// upstream) forward, or backward with `reverse`, calling `sink` once per frame in
    /// processing order with every object's logits at video resolution. Can run once.
    pub fn propagate(&mut self, start: Option<usize>, reverse: bool, sink: &mut dyn TrackSink) -> Result<TrackReport> {
        if self.propagated {
            return Err(Error::new(ErrorKind::InvalidInput, "propagate() can run once per Tracker"));
        }
        if self.objects.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "no prompts: add a prompt for at least one object"));
        }
        self.propagated = true;
        let prompt_times = std::mem::take(&mut self.models.times);
        tracing::debug!("propagation: start");
        let t_loop = Instant::now();
        self.preflight()?;
        let n = self.source.len();
        let start = start.unwrap_or_else(|| {
            self.objects.iter().flat_map(|o| o.mem.cond.iter().map(|c| c.frame)).min().expect("prompted")
        });
        if start >= n {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("start frame {start} is beyond the video ({n} frames)"),
            ));
        }
        let max_track = self.opts.max_frame_num_to_track.unwrap_or(n);
        let order: Vec<usize> = if reverse {
            let end = start.saturating_sub(max_track);
            if start > 0 {
                (end..=start).rev().collect()
            } else {
                Vec::new()
            }
        } else {
            let end = (start + max_track).min(n - 1);
            (start..=end).collect()
        };
        // frames where some object runs the model (others output stored prompt results)
        let needs: Vec<bool> =
            order.iter().map(|&f| self.objects.iter().any(|o| o.mem.cond_frame(f).is_none())).collect();
        let needs_image: Vec<usize> = order.iter().zip(&needs).filter(|(_, n)| **n).map(|(f, _)| *f).collect();
        sink.begin(order.len());
        let depth = self.opts.max_frames_in_mem.saturating_sub(1).min(16);
        let source = self.source;
        let mut report = TrackReport { prompt_times, ..Default::default() };
        std::thread::scope(|scope| -> Result<()> {
            let mut pre = Prefetcher::start(scope, source, needs_image, self.resize_frames_to(), depth);
            for (k, &f) in order.iter().enumerate() {
                let result = (|| {
                    let image = if needs[k] {
                        let t0 = Instant::now();
                        let img = pre.next(f)?;
                        self.models.times.frame_wait += t0.elapsed();
                        Some(img)
                    } else {
                        None
                    };
                    self.step(f, reverse, image, sink)
                })();
                result.map_err(|e| {
                    let done = if k == 0 {
                        "no frame was output".to_string()
                    } else {
                        format!("frames {}..{} were output", order[0], order[k - 1])
                    };
                    e.context(format!("tracking stopped at frame {f} ('{}'; {done})", source.name(f)))
                })?;
                report.frames.push(f);
                if let Some(&next) = order.get(k + 1) {
                    let rules = self.rules();
                    for o in &mut self.objects {
                        o.mem.evict_before(next, reverse, &rules);
                    }
                }
                self.sync_store();
                let bank: usize = self.objects.iter().map(|o| o.mem.bytes()).sum::<usize>() + self.store_bytes();
                report.peak_bank_bytes = report.peak_bank_bytes.max(bank);
            }
            Ok(())
        })?;
        report.propagate_time = t_loop.elapsed();
        report.memory_bank = self.bank_store.as_ref().map_or("host", |s| s.name()).to_string();
        report.frame_ops = self.frame_ops.as_ref().map_or("host", |o| o.name()).to_string();
        report.times = self.models.times.clone();
        Ok(report)
    }

    /// One frame of `propagate_in_video` for every object.
    fn step(&mut self, f: usize, reverse: bool, image: Option<RgbFrame>, sink: &mut dyn TrackSink) -> Result<()> {
        let rules = self.rules();
        let nobj = self.objects.len();
        // low-res output per object (hole-filled)
        let m4 = 4 * self.models.config().embed_side();
        let mut low_out: Vec<Option<Value>> = vec![None; nobj];
        let mut run: Vec<usize> = Vec::new();
        for (i, o) in self.objects.iter_mut().enumerate() {
            if let Some(cf) = o.mem.cond_frame(f) {
                low_out[i] = Some(Value::Host(TensorF32::new(vec![1, 1, m4, m4], cf.pred_masks.clone())));
                if self.opts.clear_non_cond_mem_around_input {
                    o.mem.clear_non_cond_around(f, &rules);
                }
            } else {
                run.push(i);
            }
        }
        if !run.is_empty() {
            let feats = self.take_features(f, image)?;
            let res = self.track_objects(f, reverse, &run, &feats, &mut low_out);
            self.put_features(f, feats, false);
            res?;
        } else {
            // every object has its prompt output here: features pinned for it can go
            drop(self.features.take(f));
        }
        self.output_frame(f, low_out, sink)
    }

    /// Memory attention, prompt decoder and memory encoder for the objects `run` on
    /// frame `f`; fills their entries of `low_out`.
    fn track_objects(
        &mut self,
        f: usize,
        reverse: bool,
        run: &[usize],
        feats: &FrameFeatures,
        low_out: &mut [Option<Value>],
    ) -> Result<()> {
        let cfg = self.models.config().clone();
        let (s, e, c) = (cfg.image_size, cfg.embed_side(), cfg.hidden_dim());
        let (m4, hw) = (4 * e, e * e);
        let rules = self.rules();
        {
            let t_host = Instant::now();
            // memory layout per object; objects with equal layouts share a call
            let sel: Vec<_> = run
                .iter()
                .map(|&i| {
                    let o = &self.objects[i].mem;
                    (o.select_memories(f, reverse, &rules), o.select_pointers(f, reverse, &rules))
                })
                .collect();
            let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
            for (k, (ms, ps)) in sel.iter().enumerate() {
                let key = (ms.len(), ps.len());
                match groups.iter_mut().find(|g| g.0 == key) {
                    Some(g) => g.1.push(k),
                    None => groups.push((key, vec![k])),
                }
            }
            let layout = self.mem_layout()?;
            let (n_tok, split) = (layout.n_tok, layout.split);
            let mut pix_with_mem: Vec<Value> = Vec::new();
            let mut dec_order: Vec<usize> = Vec::with_capacity(run.len());
            self.models.times.host += t_host.elapsed();
            // split groups so one call's working set stays under ATTN_CALL_BYTES
            // (large batches cost memory)
            let chunks: Vec<((usize, usize), Vec<usize>)> = groups
                .into_iter()
                .flat_map(|(key, members)| {
                    let keys = key.0 * n_tok + key.1 * split;
                    let per_obj =
                        4 * (keys * (4 * c + 2 * MEM_ATTN_QUERY_BLOCK) + hw * cfg.memory_attention.dim_feedforward);
                    let b_max = (ATTN_CALL_BYTES / per_obj.max(1)).max(1);
                    members.chunks(b_max).map(|c| (key, c.to_vec())).collect::<Vec<_>>()
                })
                .collect();
            for (_, members) in chunks {
                let t_host = Instant::now();
                let [memory, memory_pos, ptrs, ptrs_pos] = self.memory_inputs(&layout, run, &sel, &members)?;
                // one frame for all `b` objects (the graph broadcasts it)
                let (curr, curr_pos) = (&feats.vision_feat, &feats.vision_pos);
                self.models.times.host += t_host.elapsed();
                pix_with_mem.push(self.models.attend(curr, curr_pos, [memory, memory_pos, ptrs, ptrs_pos])?);
                dec_order.extend(members.iter().map(|&k| run[k]));
            }
            // prompt decoder on all tracked objects (no prompt, multimask for tracking), in
            // the order of the memory-attention calls (their outputs are concatenated
            // where the backend keeps them); position `bi` is object `dec_order[bi]`
            let b = run.len();
            let embed = Value::concat(pix_with_mem)?;
            let (pc, pl) = no_points(b);
            let mi = TensorF32::new(vec![b, 1, m4, m4], vec![0.0; b * m4 * m4]);
            let has = TensorF32::new(vec![b], vec![0.0; b]);
            let multimask =
                cfg.multimask_output_in_sam && cfg.multimask_output_for_tracking && cfg.multimask_min_pt_num == 0;
            let d = self.models.decode(&embed, feats, pc, pl, mi, has, multimask)?;
            // memory encoder on the (unfilled) high-res masks, sigmoid (not binarized)
            let t_host = Instant::now();
            // the memory encoder's input (upsampled, unfilled) and the output (hole-filled
            // low-res masks, per object in `dec_order`): where the frame ops run, else here
            // from one host copy
            let area = self.opts.fill_hole_area;
            let (high, filled): (Value, Vec<Value>) = match self.frame_ops.as_mut() {
                Some(fo) => {
                    let high = fo.upsample(&d.low_res_masks, s, s)?;
                    let filled = fo.fill_holes(&d.low_res_masks, area)?;
                    (high, (0..b).map(|bi| filled.rows(bi, 1)).collect::<Result<_>>()?)
                }
                None => {
                    let lows = d.low_res_masks.to_host()?;
                    let filled = lows
                        .data
                        .chunks_exact(m4 * m4)
                        .map(|plane| {
                            let mut low = plane.to_vec();
                            ops::fill_holes(&mut low, m4, m4, area, &mut self.hole_scratch);
                            Value::Host(TensorF32::new(vec![1, 1, m4, m4], low))
                        })
                        .collect();
                    (upsample_host(&lows, s), filled)
                }
            };
            self.models.times.host += t_host.elapsed();
            let (mem_feats, mem_pos) =
                self.models.encode_memory(&feats.vision_feat, &high, &d.object_score_logits, false)?;
            let t_host = Instant::now();
            let ptrs = d.obj_ptr.data.chunks_exact(c);
            let objs: Vec<(BankKey, &[f32])> =
                dec_order.iter().zip(ptrs).map(|(&i, p)| (BankKey { obj: i, frame: f, cond: false }, p)).collect();
            let mems = self.keep_memories(&mem_feats, &mem_pos, &objs)?;
            for ((key, ptr), mem) in objs.iter().zip(mems) {
                let fm = FrameMemory { maskmem: Some(mem), obj_ptr: ptr.to_vec() };
                self.objects[key.obj].mem.non_cond.insert(f, fm);
            }
            for (&i, low) in dec_order.iter().zip(filled) {
                low_out[i] = Some(low);
            }
            self.models.times.host += t_host.elapsed();
        }
        Ok(())
    }

    /// `_get_orig_video_res_output`: bilinear to the video size and `> 0` (where the
    /// frame ops run, else on the host), then the sink.
    fn output_frame(&mut self, f: usize, low_out: Vec<Option<Value>>, sink: &mut dyn TrackSink) -> Result<()> {
        let m4 = 4 * self.models.config().embed_side();
        let t_host = Instant::now();
        let (vw, vh) = self.source.size();
        let want = sink.wants_logits();
        let lows: Vec<Value> = low_out.into_iter().map(|l| l.expect("every object has an output")).collect();
        let n = vw * vh;
        let results: Vec<(Vec<u8>, Vec<f32>)> = match self.frame_ops.as_mut() {
            Some(ops) => {
                let (masks, logits) = ops.postprocess(&lows, (vh, vw), want)?;
                (0..lows.len())
                    .map(|k| {
                        let l = logits.as_ref().map_or_else(Vec::new, |l| l[k * n..(k + 1) * n].to_vec());
                        (masks[k * n..(k + 1) * n].to_vec(), l)
                    })
                    .collect()
            }
            None => lows
                .iter()
                .map(|low| {
                    let logits = bilinear(&low.to_host()?.data, m4, m4, vh, vw);
                    let mask = logits.iter().map(|&v| u8::from(v > 0.0)).collect();
                    Ok((mask, if want { logits } else { Vec::new() }))
                })
                .collect::<Result<_>>()?,
        };
        let objs: Vec<ObjectLogits> = self
            .objects
            .iter()
            .zip(results)
            .map(|(o, (mask, logits))| ObjectLogits { obj_id: o.obj_id, width: vw, height: vh, mask, logits })
            .collect();
        sink.frame(f, self.source.name(f), &objs)?;
        self.models.times.host += t_host.elapsed();
        Ok(())
    }
}

/// `resize::bilinear` of `low` `[B, 1, h, w]` to `[B, 1, s, s]` on the host.
fn upsample_host(low: &TensorF32, s: usize) -> Value {
    let (b, h, w) = (low.shape[0], low.shape[2], low.shape[3]);
    let mut high = vec![0f32; b * s * s];
    for (src, dst) in low.data.chunks_exact(h * w).zip(high.chunks_exact_mut(s * s)) {
        bilinear_into(src, h, w, s, s, dst);
    }
    Value::Host(TensorF32::new(vec![b, 1, s, s], high))
}
