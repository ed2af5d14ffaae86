//! Between the tracker's memory bookkeeping ([`ObjectMemory`]: which memories exist and
//! which a frame attends to) and the memories' data: bf16 features on the host, assembled
//! into the memory-attention inputs by [`mem_inputs::assemble`], or a [`BankStore`] of the
//! backend that runs the memory attention (TensorRT: device slots and a gather kernel),
//! chosen when the first memory is encoded.
//!
//! [`ObjectMemory`]: super::ObjectMemory

use crate::backend::{BankKey, GatherObject, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;

use super::mem_inputs::{self, MemLayout, ObjectSelection};
use super::memory_bank::{MaskMem, MemData, SelectedMem, SelectedPtr};
use super::Tracker;

/// One object's selection for the current frame.
pub(crate) type Selection = (Vec<SelectedMem>, Vec<SelectedPtr>);

impl Tracker<'_> {
    /// Layout of the stored memories (known once the first memory is encoded).
    pub(crate) fn mem_layout(&self) -> Result<MemLayout> {
        let cfg = self.models.config();
        let (e, c, m) = (cfg.embed_side(), cfg.hidden_dim(), cfg.mem_dim());
        let pos = self
            .maskmem_pos
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no memory was encoded before tracking"))?;
        // spatial memory tokens per frame: E·E channel-major `[M, E, E]` (SAM 2), or the
        // spatial perceiver's latents token-major `[N, M]` (EdgeTAM)
        let token_major = cfg.perceiver.is_some();
        let n_tok = if token_major { pos.len() / m } else { e * e };
        Ok(MemLayout::new(m, c, n_tok, token_major, cfg.num_maskmem))
    }

    /// Record `maskmem_pos_enc` (the same for every frame and object) from the first
    /// memory encoding, and take the memory attention's bank store if its backend has one.
    fn note_maskmem_pos(&mut self, pos: &Value) -> Result<()> {
        if self.maskmem_pos.is_some() {
            return Ok(());
        }
        let host = pos.to_host()?;
        let per = host.numel() / host.shape[0].max(1);
        self.maskmem_pos = Some(host.data[..per].to_vec());
        let layout = self.mem_layout()?;
        let pos = self.maskmem_pos.as_deref().expect("just set");
        match self.models.bank_store(&layout, pos) {
            None => {}
            Some(Ok(s)) => {
                tracing::info!("memory bank kept by the memory attention's backend ({})", s.name());
                self.bank_store = Some(s);
            }
            Some(Err(e)) => tracing::warn!("memory bank stays on the host: {e}"),
        }
        Ok(())
    }

    /// Keep the memory encoder's output of one call: row `k` of `feats`
    /// (`maskmem_features`) is `objs[k]`'s memory (key and object pointer), in the store
    /// or, without one, as bf16 on the host (one copy of `feats`). `pos`
    /// (`maskmem_pos_enc`) is recorded on the first call.
    pub(crate) fn keep_memories(
        &mut self,
        feats: &Value,
        pos: &Value,
        objs: &[(BankKey, &[f32])],
    ) -> Result<Vec<MemData>> {
        self.note_maskmem_pos(pos)?;
        let rows = feats.shape().first().copied().unwrap_or(0);
        if rows != objs.len() || feats.numel() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "frame {}: memory encoder output {:?} for {} object(s)",
                    objs.first().map_or(0, |o| o.0.frame),
                    feats.shape(),
                    objs.len()
                ),
            ));
        }
        if let Some(store) = self.bank_store.as_mut() {
            for (k, (key, ptr)) in objs.iter().enumerate() {
                store.store(*key, Some((feats, k)), ptr)?;
            }
            return Ok(vec![MemData::Stored; objs.len()]);
        }
        let host = feats.to_host()?;
        let per = host.numel() / rows;
        Ok(host.data.chunks_exact(per).map(|row| MemData::Host(MaskMem::from_f32(row))).collect())
    }

    /// Release from the store what the objects' memories no longer hold.
    pub(crate) fn sync_store(&mut self) {
        let objects = &self.objects;
        if let Some(s) = self.bank_store.as_mut() {
            s.retain(&mut |k: &BankKey| match objects.get(k.obj).and_then(|o| o.mem.get(k.frame, k.cond)) {
                Some(fm) => (fm.maskmem.is_some(), true),
                None => (false, false),
            });
        }
    }

    /// Bytes of the store (0 without one).
    pub(crate) fn store_bytes(&self) -> usize {
        self.bank_store.as_ref().map_or(0, |s| s.bytes())
    }

    /// The memory-attention inputs (`memory`, `memory_pos`, `obj_ptrs`, `obj_ptrs_pos`)
    /// for the objects `run[k]`, `k` in `members`, which select the same numbers of
    /// memories and pointers (`sel[k]`).
    pub(crate) fn memory_inputs(
        &mut self,
        layout: &MemLayout,
        run: &[usize],
        sel: &[Selection],
        members: &[usize],
    ) -> Result<[Value; 4]> {
        let cfg = self.models.config();
        let m = layout.m;
        let t_diff_max = self.rules().max_obj_ptrs.saturating_sub(1);
        let tpos_dim = if cfg.proj_tpos_enc_in_obj_ptrs { layout.c } else { m };
        let add_tpos = cfg.add_tpos_enc_to_obj_ptrs;
        let proj = self.models.obj_ptr_tpos_proj.as_ref();
        let ptr_pos: Vec<Vec<Vec<f32>>> = members
            .iter()
            .map(|&k| {
                let pos = |t| mem_inputs::obj_ptr_pos(t, add_tpos, t_diff_max, tpos_dim, proj, m);
                sel[k].1.iter().map(|sp| pos(sp.t_diff)).collect()
            })
            .collect();
        if let Some(store) = self.bank_store.as_mut() {
            let mut pos_rows: Vec<f32> = Vec::new();
            let objs: Vec<GatherObject> = members
                .iter()
                .zip(&ptr_pos)
                .map(|(&k, pos)| {
                    let (obj, (ms, ps)) = (run[k], &sel[k]);
                    let key = |frame, cond| BankKey { obj, frame, cond };
                    GatherObject {
                        mems: ms.iter().map(|sm| (key(sm.frame, sm.cond), sm.t_pos)).collect(),
                        ptrs: ps
                            .iter()
                            .zip(pos)
                            .map(|(sp, p)| {
                                let row = pos_rows.len() / m;
                                pos_rows.extend_from_slice(&p[..m]);
                                (key(sp.frame, sp.cond), row)
                            })
                            .collect(),
                    }
                })
                .collect();
            return store.gather(&objs, &pos_rows);
        }
        let maskmem_pos = self.maskmem_pos.as_deref().expect("the layout needs it");
        let objs = members
            .iter()
            .zip(&ptr_pos)
            .map(|(&k, pos)| {
                let obj = &self.objects[run[k]].mem;
                let (ms, ps) = &sel[k];
                let get = |frame, cond| {
                    obj.get(frame, cond).ok_or_else(|| {
                        Error::new(ErrorKind::InvalidInput, format!("memory of frame {frame} selected but not held"))
                    })
                };
                let mems = ms
                    .iter()
                    .map(|sm| match &get(sm.frame, sm.cond)?.maskmem {
                        Some(MemData::Host(mm)) => Ok((&mm.0[..], sm.t_pos)),
                        _ => Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!("memory of frame {} is not on the host and there is no store", sm.frame),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ptrs = ps
                    .iter()
                    .zip(pos)
                    .map(|(sp, p)| Ok((&get(sp.frame, sp.cond)?.obj_ptr[..], &p[..])))
                    .collect::<Result<Vec<_>>>()?;
                Ok(ObjectSelection { mems, ptrs })
            })
            .collect::<Result<Vec<_>>>()?;
        let inputs = mem_inputs::assemble(layout, maskmem_pos, &self.models.maskmem_tpos_enc, &objs);
        let b = members.len();
        let (t_tokens, p_tokens) = (inputs.memory.len() / b / m, inputs.ptrs.len() / b / m);
        let t = |n, v| Value::Host(TensorF32::new(vec![b, n, m], v));
        Ok([
            t(t_tokens, inputs.memory),
            t(t_tokens, inputs.memory_pos),
            t(p_tokens, inputs.ptrs),
            t(p_tokens, inputs.ptrs_pos),
        ])
    }
}
