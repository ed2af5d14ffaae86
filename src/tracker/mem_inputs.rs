//! The host assembly of the memory-attention inputs (`memory`, `memory_pos`, `obj_ptrs`,
//! `obj_ptrs_pos`) from the selected memories of a group of objects, as
//! `_prepare_memory_conditioned_features` concatenates them. Used by the tracker and as
//! the reference of the device gather (`crate::gpu`).

use half::bf16;

use super::ops;

/// Layout of one frame's spatial memory and of the object pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemLayout {
    /// Memory channels `M` (`mem_dim`).
    pub m: usize,
    /// Tokens of one frame's spatial memory: `E·E` (SAM 2) or the perceiver's latents (EdgeTAM).
    pub n_tok: usize,
    /// Spatial memory stored token-major `[N, M]` (EdgeTAM) instead of channel-major
    /// `[M, E, E]` (SAM 2, where `n_tok = E·E`).
    pub token_major: bool,
    /// Hidden dim `C` (object pointer length).
    pub c: usize,
    /// Tokens per object pointer: `C / M` when `M < C`, else 1.
    pub split: usize,
    /// `num_maskmem` (rows of `maskmem_tpos_enc`).
    pub num_maskmem: usize,
}

impl MemLayout {
    pub fn new(m: usize, c: usize, n_tok: usize, token_major: bool, num_maskmem: usize) -> MemLayout {
        let split = if m < c { c / m } else { 1 };
        MemLayout { m, n_tok, token_major, c, split, num_maskmem }
    }

    /// Elements of one frame's spatial memory (`M · n_tok`).
    pub fn per_frame(&self) -> usize {
        self.m * self.n_tok
    }

    /// Index into one frame's stored memory of token `t`, channel `ch`.
    #[inline]
    pub fn src_index(&self, t: usize, ch: usize) -> usize {
        if self.token_major {
            t * self.m + ch
        } else {
            ch * self.n_tok + t
        }
    }
}

/// What one object attends to: spatial memories (stored bf16 features and temporal slot
/// `t_pos`) and object pointers (`[C]`, with their `[M]` temporal encodings).
pub struct ObjectSelection<'a> {
    pub mems: Vec<(&'a [bf16], usize)>,
    pub ptrs: Vec<(&'a [f32], &'a [f32])>,
}

/// The four memory-attention inputs of `b` objects, `[b, n_mem·n_tok, M]` and
/// `[b, n_ptr·split, M]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MemInputs {
    pub memory: Vec<f32>,
    pub memory_pos: Vec<f32>,
    pub ptrs: Vec<f32>,
    pub ptrs_pos: Vec<f32>,
}

/// Build the inputs for objects that all select `n_mem` memories and `n_ptr` pointers.
/// `maskmem_pos` is one frame's memory position encoding (same layout as the features),
/// `tpos_enc` is `maskmem_tpos_enc` `[num_maskmem, M]`.
pub fn assemble(layout: &MemLayout, maskmem_pos: &[f32], tpos_enc: &[f32], objs: &[ObjectSelection]) -> MemInputs {
    let m = layout.m;
    let n_tok = layout.n_tok;
    let b = objs.len();
    let n_mem = objs.first().map_or(0, |o| o.mems.len());
    let n_ptr = objs.first().map_or(0, |o| o.ptrs.len());
    let t_tokens = n_mem * n_tok;
    let p_tokens = n_ptr * layout.split;
    let mut memory = vec![0f32; b * t_tokens * m];
    let mut memory_pos = vec![0f32; b * t_tokens * m];
    let mut ptrs = vec![0f32; b * p_tokens * m];
    let mut ptrs_pos = vec![0f32; b * p_tokens * m];
    for (bi, obj) in objs.iter().enumerate() {
        assert_eq!((obj.mems.len(), obj.ptrs.len()), (n_mem, n_ptr), "objects of one call share a layout");
        for (j, &(feats_bf, t_pos)) in obj.mems.iter().enumerate() {
            let tpos = &tpos_enc[(layout.num_maskmem - t_pos - 1) * m..][..m];
            let base = (bi * t_tokens + j * n_tok) * m;
            for t in 0..n_tok {
                let row = base + t * m;
                for ch in 0..m {
                    let src = layout.src_index(t, ch);
                    memory[row + ch] = feats_bf[src].to_f32();
                    memory_pos[row + ch] = maskmem_pos[src] + tpos[ch];
                }
            }
        }
        for (j, &(ptr, pos)) in obj.ptrs.iter().enumerate() {
            for k2 in 0..layout.split {
                let row = (bi * p_tokens + j * layout.split + k2) * m;
                ptrs[row..row + m].copy_from_slice(&ptr[k2 * m..(k2 + 1) * m]);
                ptrs_pos[row..row + m].copy_from_slice(&pos[..m]);
            }
        }
    }
    MemInputs { memory, memory_pos, ptrs, ptrs_pos }
}

/// Temporal encoding of an object pointer `t_diff` frames away: sine encoding of
/// `t_diff / t_diff_max` (projected to `M` when the model has `obj_ptr_tpos_proj`), or
/// zeros when the model adds none.
pub fn obj_ptr_pos(
    t_diff: i64,
    add_tpos: bool,
    t_diff_max: usize,
    tpos_dim: usize,
    proj: Option<&(Vec<f32>, Vec<f32>)>,
    m: usize,
) -> Vec<f32> {
    if !add_tpos {
        return vec![0f32; m];
    }
    let pe = ops::sine_pe(t_diff, t_diff_max, tpos_dim);
    match proj {
        Some((w, bias)) => ops::linear(&pe, w, bias),
        None => pe,
    }
}
