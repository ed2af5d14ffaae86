//! The TensorRT backend's [`BankStore`]: a [`DeviceBank`] on the engines' stream. Memories
//! arrive as the memory encoder's resident output ([`DeviceTensor`], a row per object,
//! converted to bf16 on the device), pointers as the decoder's `obj_ptr` (`C` floats
//! uploaded), and the memory-attention inputs are gathered into pooled device tensors that
//! the memory-attention engine reads by address.
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

use std::sync::Arc;

use super::bank::{DeviceBank, PtrSrc};
use super::device::Gpu;
use super::resident::{DevicePool, DeviceTensor};
use crate::backend::{BankKey, BankStore, GatherObject, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::tracker::mem_inputs::MemLayout;
use crate::tracker::memory_bank::MaskMem;

pub struct DeviceBankStore {
    gpu: Arc<Gpu>,
    pool: Arc<DevicePool>,
    bank: DeviceBank,
}

impl DeviceBankStore {
    /// A bank for memories of `layout` on `gpu`'s stream (the pool's).
    pub fn new(
        gpu: Arc<Gpu>,
        pool: &Arc<DevicePool>,
        layout: MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Result<DeviceBankStore> {
        let bank = DeviceBank::new(&gpu, layout, maskmem_pos, tpos_enc)?;
        Ok(DeviceBankStore { gpu, pool: pool.clone(), bank })
    }
}

impl BankStore for DeviceBankStore {
    fn name(&self) -> &str {
        "device"
    }

    fn store(&mut self, key: BankKey, maskmem: Option<(&Value, usize)>, obj_ptr: &[f32]) -> Result<()> {
        let per = self.bank.layout().per_frame();
        if let Some((v, row)) = maskmem {
            let rows = v.shape().first().copied().unwrap_or(0);
            if row >= rows || v.numel() != rows * per {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "memory bank: store of obj {} frame {}: row {row} of memory features {:?} ({per} values a row)",
                        key.obj,
                        key.frame,
                        v.shape()
                    ),
                ));
            }
            match DeviceTensor::of(v, self.pool.stream()) {
                Some(d) => {
                    let view = d.view();
                    let row_view = view.slice(row * per..(row + 1) * per);
                    self.bank.store_mem_device(&self.gpu, key, &row_view)?;
                }
                None => {
                    // from another backend (the memory encoder fell back to ONNX Runtime)
                    let host = v.to_host()?;
                    let mem = MaskMem::from_f32(&host.data[row * per..(row + 1) * per]);
                    self.bank.store_mem_host(&self.gpu, key, &mem.0)?;
                }
            }
        }
        self.bank.store_ptr(&self.gpu, key, PtrSrc::Host(obj_ptr))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&BankKey) -> (bool, bool)) {
        self.bank.retain(keep);
    }

    fn gather(&mut self, objs: &[GatherObject], pos_rows: &[f32]) -> Result<[Value; 4]> {
        let (mem_n, ptr_n) = self.bank.gather_sizes(objs);
        let take = |n: usize, what: &str| self.pool.take(n, what);
        let (mut a, mut b) = (take(mem_n, "memory")?, take(mem_n, "memory_pos")?);
        let (mut c, mut d) = (take(ptr_n, "obj_ptrs")?, take(ptr_n, "obj_ptrs_pos")?);
        let s = self.bank.gather_into(&self.gpu, objs, pos_rows, [&mut a, &mut b, &mut c, &mut d])?;
        let m = self.bank.layout().m;
        let value = |buf, tokens| {
            Value::Resident(
                Arc::new(DeviceTensor::new(&self.pool, buf, vec![s.b, tokens, m])) as Arc<dyn crate::backend::Resident>
            )
        };
        Ok([value(a, s.t_tokens), value(b, s.t_tokens), value(c, s.p_tokens), value(d, s.p_tokens)])
    }

    fn bytes(&self) -> usize {
        self.bank.bytes()
    }
}
