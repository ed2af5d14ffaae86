//! Per-object memory: conditioning frames (prompted) and non-conditioning frames
//! (tracked), which of them a frame attends to, and dropping what can no longer be
//! selected. Rules of `SAM2Base._prepare_memory_conditioned_features` (sam2 1.1.0) with
//! `max_cond_frames_in_attn = -1` (every conditioning frame is selected).

use std::collections::BTreeMap;

use half::bf16;

/// Memory features as the official predictor stores them: bfloat16
/// (`maskmem_features.to(torch.bfloat16)`, also in EdgeTAM's predictor): `[M, E, E]`
/// (SAM 2) or the spatial perceiver's tokens `[N, M]` (EdgeTAM).
#[derive(Debug, Clone)]
pub struct MaskMem(pub Vec<bf16>);

impl MaskMem {
    pub fn from_f32(v: &[f32]) -> MaskMem {
        MaskMem(v.iter().map(|&x| bf16::from_f32(x)).collect())
    }
}

/// Where a frame's spatial memory is.
#[derive(Debug, Clone)]
pub enum MemData {
    /// Here, on the host.
    Host(MaskMem),
    /// In the backend's [`crate::backend::BankStore`] (e.g. device memory), under the
    /// object's index, the frame and whether it is a conditioning frame.
    Stored,
}

/// What is kept of one frame's result for one object.
#[derive(Debug, Clone)]
pub struct FrameMemory {
    /// `None` once the frame is too old for spatial memory (only the pointer remains).
    pub maskmem: Option<MemData>,
    /// Object pointer `[C]`.
    pub obj_ptr: Vec<f32>,
}

/// A prompted (conditioning) frame's result.
#[derive(Debug, Clone)]
pub struct CondFrame {
    pub frame: usize,
    pub mem: FrameMemory,
    /// Low-res mask logits `[4E, 4E]` after hole filling: the frame's output.
    pub pred_masks: Vec<f32>,
    pub object_score: f32,
}

/// Memory selection parameters from the model config.
#[derive(Debug, Clone, Copy)]
pub struct BankRules {
    pub num_maskmem: usize,
    pub stride: usize,
    /// `min(num_frames, max_obj_ptrs_in_encoder)`
    pub max_obj_ptrs: usize,
    pub use_obj_ptrs: bool,
    pub only_past_ptrs: bool,
    pub signed_tpos: bool,
    pub num_frames: usize,
}

/// One spatial memory selected for the current frame: the frame, its temporal slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectedMem {
    pub frame: usize,
    pub cond: bool,
    /// 0 for conditioning frames, 1..num_maskmem-1 otherwise (index into
    /// `maskmem_tpos_enc` is `num_maskmem - t_pos - 1`).
    pub t_pos: usize,
}

/// One selected object pointer with its temporal offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectedPtr {
    pub frame: usize,
    pub cond: bool,
    pub t_diff: i64,
}

/// The memory of one object.
#[derive(Debug, Clone, Default)]
pub struct ObjectMemory {
    /// Conditioning frames in insertion order (the order upstream's dict keeps).
    pub cond: Vec<CondFrame>,
    pub non_cond: BTreeMap<usize, FrameMemory>,
}

/// `prev_frame_idx` of temporal slot `t_pos` for frame `f` (may be out of the video).
pub fn prev_frame_for_slot(f: i64, t_pos: usize, num_maskmem: usize, stride: usize, reverse: bool) -> i64 {
    let r = stride as i64;
    let t_rel = (num_maskmem - t_pos) as i64;
    if t_rel == 1 {
        if reverse {
            f + 1
        } else {
            f - 1
        }
    } else if !reverse {
        (f - 2).div_euclid(r) * r - (t_rel - 2) * r
    } else {
        // -(-(f + 2) // r) * r
        -((-(f + 2)).div_euclid(r)) * r + (t_rel - 2) * r
    }
}

impl ObjectMemory {
    pub fn cond_frame(&self, frame: usize) -> Option<&CondFrame> {
        self.cond.iter().find(|c| c.frame == frame)
    }

    /// Spatial memories frame `f` attends to, in upstream's order (conditioning frames,
    /// then temporal slots 1..num_maskmem-1), skipping missing frames.
    pub fn select_memories(&self, f: usize, reverse: bool, rules: &BankRules) -> Vec<SelectedMem> {
        let mut v: Vec<SelectedMem> =
            self.cond.iter().map(|c| SelectedMem { frame: c.frame, cond: true, t_pos: 0 }).collect();
        for t_pos in 1..rules.num_maskmem {
            let prev = prev_frame_for_slot(f as i64, t_pos, rules.num_maskmem, rules.stride, reverse);
            if prev < 0 {
                continue;
            }
            let prev = prev as usize;
            if self.non_cond.get(&prev).is_some_and(|m| m.maskmem.is_some()) {
                v.push(SelectedMem { frame: prev, cond: false, t_pos });
            }
        }
        v
    }

    /// Object pointers frame `f` attends to, in upstream's order.
    pub fn select_pointers(&self, f: usize, reverse: bool, rules: &BankRules) -> Vec<SelectedPtr> {
        let mut v = Vec::new();
        if !rules.use_obj_ptrs {
            return v;
        }
        let sign = if reverse { -1 } else { 1 };
        for c in &self.cond {
            if rules.only_past_ptrs && !(if reverse { c.frame >= f } else { c.frame <= f }) {
                continue;
            }
            let d = f as i64 - c.frame as i64;
            let t_diff = if rules.signed_tpos { d * sign } else { d.abs() };
            v.push(SelectedPtr { frame: c.frame, cond: true, t_diff });
        }
        for t_diff in 1..rules.max_obj_ptrs {
            let t = if reverse { f as i64 + t_diff as i64 } else { f as i64 - t_diff as i64 };
            if t < 0 || t >= rules.num_frames as i64 {
                break;
            }
            if self.non_cond.contains_key(&(t as usize)) {
                v.push(SelectedPtr { frame: t as usize, cond: false, t_diff: t_diff as i64 });
            }
        }
        v
    }

    /// The memory of a selected frame.
    pub fn get(&self, frame: usize, cond: bool) -> Option<&FrameMemory> {
        if cond {
            self.cond_frame(frame).map(|c| &c.mem)
        } else {
            self.non_cond.get(&frame)
        }
    }

    /// Drop what frames after `next` (in processing order) can no longer select:
    /// spatial memories outside the temporal slots of `next`, pointers beyond
    /// `max_obj_ptrs - 1` frames. Selection windows only move forward, so this is exact.
    pub fn evict_before(&mut self, next: usize, reverse: bool, rules: &BankRules) {
        let f = next as i64;
        let slots: Vec<i64> = (1..rules.num_maskmem)
            .map(|t| prev_frame_for_slot(f, t, rules.num_maskmem, rules.stride, reverse))
            .collect();
        let ptr_span = if rules.use_obj_ptrs { rules.max_obj_ptrs.saturating_sub(1) as i64 } else { 0 };
        let (mem_bound, ptr_bound) = if reverse {
            (slots.iter().copied().max().unwrap_or(f), f + ptr_span)
        } else {
            (slots.iter().copied().min().unwrap_or(f), f - ptr_span)
        };
        let keep_mem = |t: i64| if reverse { t <= mem_bound } else { t >= mem_bound };
        let keep_ptr = |t: i64| if reverse { t <= ptr_bound } else { t >= ptr_bound };
        self.non_cond.retain(|&t, m| {
            let t = t as i64;
            if !keep_mem(t) {
                m.maskmem = None;
            }
            keep_mem(t) || keep_ptr(t)
        });
    }

    /// `_clear_non_cond_mem_around_input` for this object: forget tracked frames within
    /// `stride * num_maskmem` of a prompted frame.
    pub fn clear_non_cond_around(&mut self, frame: usize, rules: &BankRules) {
        let r = (rules.stride * rules.num_maskmem) as i64;
        let f = frame as i64;
        self.non_cond.retain(|&t, _| (t as i64) < f - r || (t as i64) > f + r);
    }

    /// Bytes held on the host (memory features and pointers).
    pub fn bytes(&self) -> usize {
        let fm = |m: &FrameMemory| {
            let mem = match &m.maskmem {
                Some(MemData::Host(v)) => v.0.len() * 2,
                _ => 0,
            };
            mem + m.obj_ptr.len() * 4
        };
        self.cond.iter().map(|c| fm(&c.mem) + c.pred_masks.len() * 4).sum::<usize>()
            + self.non_cond.values().map(fm).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> BankRules {
        BankRules {
            num_maskmem: 7,
            stride: 1,
            max_obj_ptrs: 16,
            use_obj_ptrs: true,
            only_past_ptrs: true,
            signed_tpos: true,
            num_frames: 100,
        }
    }

    #[test]
    fn slots_follow_upstream() {
        // stride 1, forward: t_pos 1..6 -> f-6 .. f-1
        let v: Vec<i64> = (1..7).map(|t| prev_frame_for_slot(10, t, 7, 1, false)).collect();
        assert_eq!(v, vec![4, 5, 6, 7, 8, 9]);
        let v: Vec<i64> = (1..7).map(|t| prev_frame_for_slot(10, t, 7, 1, true)).collect();
        assert_eq!(v, vec![16, 15, 14, 13, 12, 11]);
        // stride 3: ((f-2)//r)*r - (t_rel-2)*r, and the last frame always
        let v: Vec<i64> = (1..7).map(|t| prev_frame_for_slot(10, t, 7, 3, false)).collect();
        assert_eq!(v, vec![-6, -3, 0, 3, 6, 9]);
        let v: Vec<i64> = (1..7).map(|t| prev_frame_for_slot(10, t, 7, 3, true)).collect();
        assert_eq!(v, vec![24, 21, 18, 15, 12, 11]);
    }

    #[test]
    fn eviction_keeps_what_is_selectable() {
        let r = rules();
        let mut m = ObjectMemory::default();
        for t in 0..40 {
            m.non_cond.insert(
                t,
                FrameMemory { maskmem: Some(MemData::Host(MaskMem(vec![bf16::ZERO; 2]))), obj_ptr: vec![0.0] },
            );
        }
        m.evict_before(40, false, &r);
        assert_eq!(*m.non_cond.keys().next().unwrap(), 25);
        assert!(m.non_cond[&33].maskmem.is_none());
        assert!(m.non_cond[&34].maskmem.is_some());
        let sel = m.select_memories(40, false, &r);
        assert_eq!(sel.len(), 6);
        assert_eq!(m.select_pointers(40, false, &r).len(), 15);
    }
}
