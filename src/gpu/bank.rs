//! Device-resident memory bank: per object and frame the mask-memory features (bf16, as
//! the CPU bank's `MaskMem`) and the object pointer (fp32) in fixed-size slots of two
//! device buffers that only grow, and a gather that writes the memory-attention inputs
//! (`memory`, `memory_pos`, `obj_ptrs`, `obj_ptrs_pos`) straight into device buffers, as
//! `mem_inputs::assemble` builds them on the host. Which frames are kept stays the host
//! `ObjectMemory`'s decision ([`DeviceBank::retain`] follows it).
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use half::bf16;

use super::device::{cfg, cuda_err, ensure, Gpu, K};
use super::plan::{self, GatherShape, SlotPool};
pub use crate::backend::{BankKey, GatherObject};
use crate::error::{Error, ErrorKind, Result};
use crate::tracker::mem_inputs::{MemInputs, MemLayout};

/// Where an object pointer comes from.
pub enum PtrSrc<'a> {
    Host(&'a [f32]),
    Device(&'a CudaView<'a, f32>),
}

pub struct DeviceBank {
    layout: MemLayout,
    mem_pool: SlotPool<BankKey>,
    ptr_pool: SlotPool<BankKey>,
    maskmem: Option<CudaSlice<u16>>,
    ptrs: Option<CudaSlice<f32>>,
    maskmem_pos: CudaSlice<f32>,
    tpos_enc: CudaSlice<f32>,
    table: Option<CudaSlice<i32>>,
    pos_rows: Option<CudaSlice<f32>>,
    out: [Option<CudaSlice<f32>>; 4],
    shape: GatherShape,
    scratch: Vec<u16>,
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Grow `buf` to `cap` slots of `per` elements, keeping the slots it holds.
fn grow<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    gpu: &Gpu,
    buf: &mut Option<CudaSlice<T>>,
    cap: usize,
    per: usize,
    what: &str,
) -> Result<()> {
    let mut new = gpu.alloc::<T>(cap * per, what)?;
    if let Some(old) = buf.as_ref() {
        let mut head = new.slice_mut(0..old.len());
        gpu.stream().memcpy_dtod(old, &mut head).map_err(|e| cuda_err(&format!("growing {what}"), e))?;
    }
    *buf = Some(new);
    Ok(())
}

impl DeviceBank {
    /// `maskmem_pos`: one frame's memory position encoding (layout of the features);
    /// `tpos_enc`: `maskmem_tpos_enc` `[num_maskmem, M]`. Both uploaded once.
    pub fn new(gpu: &Gpu, layout: MemLayout, maskmem_pos: &[f32], tpos_enc: &[f32]) -> Result<DeviceBank> {
        if maskmem_pos.len() != layout.per_frame() || tpos_enc.len() != layout.num_maskmem * layout.m {
            return Err(invalid(format!(
                "memory bank: maskmem_pos has {} values (expected {}), tpos_enc {} (expected {})",
                maskmem_pos.len(),
                layout.per_frame(),
                tpos_enc.len(),
                layout.num_maskmem * layout.m
            )));
        }
        if layout.split * layout.m > layout.c {
            return Err(invalid(format!(
                "memory bank: pointer of {} channels split in {} x {}",
                layout.c, layout.split, layout.m
            )));
        }
        Ok(DeviceBank {
            layout,
            mem_pool: SlotPool::default(),
            ptr_pool: SlotPool::default(),
            maskmem: None,
            ptrs: None,
            maskmem_pos: gpu.upload(maskmem_pos, "maskmem_pos")?,
            tpos_enc: gpu.upload(tpos_enc, "maskmem_tpos_enc")?,
            table: None,
            pos_rows: None,
            out: [None, None, None, None],
            shape: GatherShape::default(),
            scratch: Vec::new(),
        })
    }

    pub fn layout(&self) -> &MemLayout {
        &self.layout
    }

    /// Slots held (spatial memories, pointers) and allocated.
    pub fn usage(&self) -> ((usize, usize), (usize, usize)) {
        ((self.mem_pool.len(), self.mem_pool.capacity()), (self.ptr_pool.len(), self.ptr_pool.capacity()))
    }

    /// Device bytes of the two slot buffers.
    pub fn bytes(&self) -> usize {
        self.mem_pool.capacity() * self.layout.per_frame() * 2 + self.ptr_pool.capacity() * self.layout.c * 4
    }

    fn mem_slot(&mut self, gpu: &Gpu, key: &BankKey) -> Result<usize> {
        let (slot, grown) = self.mem_pool.acquire(key);
        if let Some(cap) = grown {
            if let Err(e) = grow(gpu, &mut self.maskmem, cap, self.layout.per_frame(), "memory bank") {
                self.mem_pool.release(key);
                self.mem_pool.shrink_to(self.maskmem.as_ref().map_or(0, |b| b.len() / self.layout.per_frame()));
                return Err(e);
            }
        }
        Ok(slot)
    }

    fn ptr_slot(&mut self, gpu: &Gpu, key: &BankKey) -> Result<usize> {
        let (slot, grown) = self.ptr_pool.acquire(key);
        if let Some(cap) = grown {
            if let Err(e) = grow(gpu, &mut self.ptrs, cap, self.layout.c, "object pointers") {
                self.ptr_pool.release(key);
                self.ptr_pool.shrink_to(self.ptrs.as_ref().map_or(0, |b| b.len() / self.layout.c));
                return Err(e);
            }
        }
        Ok(slot)
    }

    /// Store a frame's memory from device fp32 values (the memory encoder's output for one
    /// object: `per_frame` values, converted to bf16 on the device) and its pointer (`C`).
    pub fn store_device(
        &mut self,
        gpu: &Gpu,
        key: BankKey,
        feats: Option<&CudaView<f32>>,
        obj_ptr: &CudaView<f32>,
    ) -> Result<()> {
        if let Some(f) = feats {
            self.store_mem_device(gpu, key, f)?;
        }
        self.store_ptr(gpu, key, PtrSrc::Device(obj_ptr))
    }

    /// Store a frame's memory from the host (bf16 as the CPU bank keeps it, e.g. a prompt's).
    pub fn store_host(&mut self, gpu: &Gpu, key: BankKey, maskmem: Option<&[bf16]>, obj_ptr: &[f32]) -> Result<()> {
        if let Some(f) = maskmem {
            self.store_mem_host(gpu, key, f)?;
        }
        self.store_ptr(gpu, key, PtrSrc::Host(obj_ptr))
    }

    fn sizes_err(&self, key: &BankKey, what: &str, got: usize, want: usize) -> Error {
        invalid(format!(
            "memory bank: store of obj {} frame {}: {what} has {got} values, expected {want}",
            key.obj, key.frame
        ))
    }

    /// Store a frame's spatial memory from device fp32 values (`per_frame`, converted to
    /// bf16 on the device).
    pub fn store_mem_device(&mut self, gpu: &Gpu, key: BankKey, feats: &CudaView<f32>) -> Result<()> {
        let per = self.layout.per_frame();
        if feats.len() != per {
            return Err(self.sizes_err(&key, "the memory", feats.len(), per));
        }
        let slot = self.mem_slot(gpu, &key)?;
        let bank = self.maskmem.as_mut().expect("grown");
        let mut dst = bank.slice_mut(slot * per..(slot + 1) * per);
        let n = per as i64;
        // SAFETY: `f32_to_bf16_kernel(src, dst, n)`; both views hold `per` elements.
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::ToBf16))
                .arg(feats)
                .arg(&mut dst)
                .arg(&n)
                .launch(cfg(plan::launch_1d(per)?))
                .map_err(|e| cuda_err("launch of f32_to_bf16_kernel", e))?;
        }
        Ok(())
    }

    /// Store a frame's spatial memory from host bf16 values.
    pub fn store_mem_host(&mut self, gpu: &Gpu, key: BankKey, maskmem: &[bf16]) -> Result<()> {
        let per = self.layout.per_frame();
        if maskmem.len() != per {
            return Err(self.sizes_err(&key, "the memory", maskmem.len(), per));
        }
        let slot = self.mem_slot(gpu, &key)?;
        self.scratch.clear();
        self.scratch.extend(maskmem.iter().map(|v| v.to_bits()));
        let bank = self.maskmem.as_mut().expect("grown");
        let mut dst = bank.slice_mut(slot * per..(slot + 1) * per);
        gpu.stream().memcpy_htod(&self.scratch, &mut dst).map_err(|e| cuda_err("memory upload", e))
    }

    /// Store a frame's object pointer (`C` values).
    pub fn store_ptr(&mut self, gpu: &Gpu, key: BankKey, obj_ptr: PtrSrc<'_>) -> Result<()> {
        let c = self.layout.c;
        let len = match obj_ptr {
            PtrSrc::Host(h) => h.len(),
            PtrSrc::Device(d) => d.len(),
        };
        if len != c {
            return Err(self.sizes_err(&key, "the object pointer", len, c));
        }
        let slot = self.ptr_slot(gpu, &key)?;
        let bank = self.ptrs.as_mut().expect("grown");
        let mut dst = bank.slice_mut(slot * c..(slot + 1) * c);
        match obj_ptr {
            PtrSrc::Host(h) => gpu.stream().memcpy_htod(h, &mut dst).map_err(|e| cuda_err("object pointer upload", e)),
            PtrSrc::Device(d) => gpu.stream().memcpy_dtod(d, &mut dst).map_err(|e| cuda_err("object pointer copy", e)),
        }
    }

    /// Keep only what the host bank keeps: `keep(key)` returns (spatial memory kept,
    /// pointer kept); released slots are reused by later stores.
    pub fn retain(&mut self, mut keep: impl FnMut(&BankKey) -> (bool, bool)) {
        self.mem_pool.retain(|k| keep(k).0);
        self.ptr_pool.retain(|k| keep(k).1);
    }

    /// Elements of the (`memory`, `obj_ptrs`) inputs a gather of `objs` writes (each of
    /// `memory_pos` / `obj_ptrs_pos` as many).
    pub fn gather_sizes(&self, objs: &[GatherObject]) -> (usize, usize) {
        let l = self.layout;
        let (n_mem, n_ptr) = objs.first().map_or((0, 0), |o| (o.mems.len(), o.ptrs.len()));
        (objs.len() * n_mem * l.n_tok * l.m, objs.len() * n_ptr * l.split * l.m)
    }

    /// Write the memory-attention inputs of `objs` (all with the same numbers of memories
    /// and pointers) into the bank's own output buffers; `pos_rows` `[rows, M]` holds the
    /// pointers' temporal encodings. Asynchronous; see [`DeviceBank::outputs`].
    pub fn gather(&mut self, gpu: &Gpu, objs: &[GatherObject], pos_rows: &[f32]) -> Result<GatherShape> {
        let (mem_n, ptr_n) = self.gather_sizes(objs);
        for (i, n) in [mem_n, mem_n, ptr_n, ptr_n].into_iter().enumerate() {
            ensure(gpu, &mut self.out[i], n, "memory-attention inputs")?;
        }
        let mut out = std::mem::take(&mut self.out).map(|b| b.expect("ensured"));
        let [a, b, c, d] = &mut out;
        let res = self.gather_into(gpu, objs, pos_rows, [a, b, c, d]);
        self.out = out.map(Some);
        res
    }

    /// [`DeviceBank::gather`] into `out` (`memory`, `memory_pos`, `obj_ptrs`,
    /// `obj_ptrs_pos`), each at least as long as [`DeviceBank::gather_sizes`] says.
    pub fn gather_into(
        &mut self,
        gpu: &Gpu,
        objs: &[GatherObject],
        pos_rows: &[f32],
        out: [&mut CudaSlice<f32>; 4],
    ) -> Result<GatherShape> {
        let l = self.layout;
        let (m, n_tok) = (l.m, l.n_tok);
        if !pos_rows.len().is_multiple_of(m) {
            return Err(invalid(format!("memory gather: pos_rows has {} values, not rows of {m}", pos_rows.len())));
        }
        let missing = |what: &str, key: &BankKey| {
            invalid(format!("memory gather: no {what} of obj {} frame {} on the device", key.obj, key.frame))
        };
        let mut mems = Vec::with_capacity(objs.len());
        let mut ptrs = Vec::with_capacity(objs.len());
        for o in objs {
            let ms = o
                .mems
                .iter()
                .map(|(k, t)| self.mem_pool.get(k).map(|s| (s, *t)).ok_or_else(|| missing("spatial memory", k)));
            mems.push(ms.collect::<Result<Vec<_>>>()?);
            let ps =
                o.ptrs.iter().map(|(k, r)| self.ptr_pool.get(k).map(|s| (s, *r)).ok_or_else(|| missing("pointer", k)));
            ptrs.push(ps.collect::<Result<Vec<_>>>()?);
        }
        let (table, shape) = plan::gather_table(&l, &mems, &ptrs, pos_rows.len() / m)?;
        let (b, n_mem, n_ptr) = (shape.b, shape.n_mem, shape.n_ptr);
        let mem_n = b * shape.t_tokens * m;
        let ptr_n = b * shape.p_tokens * m;
        ensure(gpu, &mut self.table, table.len(), "gather table")?;
        gpu.copy_in(&table, self.table.as_mut().expect("ensured"), "gather table")?;
        ensure(gpu, &mut self.pos_rows, pos_rows.len(), "pointer encodings")?;
        gpu.copy_in(pos_rows, self.pos_rows.as_mut().expect("ensured"), "pointer encodings")?;
        for (o, n) in out.iter().zip([mem_n, mem_n, ptr_n, ptr_n]) {
            if o.len() < n {
                return Err(invalid(format!("memory gather: an output buffer holds {} values, {n} needed", o.len())));
            }
        }
        let tab = self.table.as_ref().expect("ensured");
        let [o_mem, o_mem_pos, o_ptr, o_ptr_pos] = out;
        let (per, mi, ti) = (l.per_frame() as i64, m as i32, n_tok as i32);
        if mem_n > 0 {
            let bank = self.maskmem.as_ref().ok_or_else(|| invalid("memory gather: the bank is empty".into()))?;
            let mem_tab = tab.slice(0..2 * b * n_mem);
            // both kernels take the same arguments; the token-major one (one thread per
            // output value) also takes the output length, the channel-major one (tiled
            // transpose, grid z = b·n_mem table entries) is bounded by its grid
            let total = mem_n as i64;
            let (func, name, launch) = if l.token_major {
                (K::GatherTm, "gather_memory_token_major", plan::launch_1d(mem_n)?)
            } else {
                (K::GatherCm, "gather_memory_channel_major", plan::launch_gather_channel_major(n_tok, m, b * n_mem)?)
            };
            let mut args = gpu.stream().launch_builder(gpu.func(func));
            args.arg(bank)
                .arg(&per)
                .arg(&self.maskmem_pos)
                .arg(&self.tpos_enc)
                .arg(&mem_tab)
                .arg(&ti)
                .arg(&mi)
                .arg(&mut *o_mem)
                .arg(&mut *o_mem_pos);
            if l.token_major {
                args.arg(&total);
            }
            // SAFETY: the arguments match the kernel's signature (`gpu/kernels.rs`); every
            // slot in the table is < the bank's capacity, rows < num_maskmem, and the
            // outputs hold `total` values.
            unsafe { args.launch(cfg(launch)) }.map_err(|e| cuda_err(&format!("launch of {name}"), e))?;
        }
        if ptr_n > 0 {
            let bank = self.ptrs.as_ref().ok_or_else(|| invalid("memory gather: no pointers stored".into()))?;
            let ptr_tab = tab.slice(2 * b * n_mem..2 * b * (n_mem + n_ptr));
            let pos = self.pos_rows.as_ref().expect("ensured");
            let (ci, sp, total) = (l.c as i32, l.split as i32, ptr_n as i64);
            // SAFETY: arguments match `gather_ptrs`; slots < the pointer bank's capacity,
            // rows < n_rows, outputs hold `total`.
            unsafe {
                gpu.stream()
                    .launch_builder(gpu.func(K::GatherPtrs))
                    .arg(bank)
                    .arg(&ci)
                    .arg(pos)
                    .arg(&ptr_tab)
                    .arg(&sp)
                    .arg(&mi)
                    .arg(&mut *o_ptr)
                    .arg(&mut *o_ptr_pos)
                    .arg(&total)
                    .launch(cfg(plan::launch_1d(ptr_n)?))
                    .map_err(|e| cuda_err("launch of gather_ptrs", e))?;
            }
        }
        self.shape = shape;
        Ok(shape)
    }

    /// The output buffers (`memory`, `memory_pos`, `obj_ptrs`, `obj_ptrs_pos`; each at
    /// least as long as the last gather's shape says) for the memory-attention engine.
    pub fn outputs(&self) -> [Option<&CudaSlice<f32>>; 4] {
        [self.out[0].as_ref(), self.out[1].as_ref(), self.out[2].as_ref(), self.out[3].as_ref()]
    }

    /// The last gather's inputs on the host (for checks; waits for the stream).
    pub fn download(&self, gpu: &Gpu) -> Result<MemInputs> {
        let s = self.shape;
        let (mem_n, ptr_n) = (s.b * s.t_tokens * self.layout.m, s.b * s.p_tokens * self.layout.m);
        let mut v: Vec<Vec<f32>> = Vec::with_capacity(4);
        for (i, n) in [mem_n, mem_n, ptr_n, ptr_n].into_iter().enumerate() {
            let mut h = vec![0f32; n];
            if n > 0 {
                let buf = self.out[i].as_ref().ok_or_else(|| invalid("no gather ran".into()))?;
                gpu.copy_out(buf, &mut h, "memory-attention inputs")?;
            }
            v.push(h);
        }
        let ptrs_pos = v.pop().expect("4");
        let ptrs = v.pop().expect("4");
        let memory_pos = v.pop().expect("4");
        let memory = v.pop().expect("4");
        Ok(MemInputs { memory, memory_pos, ptrs, ptrs_pos })
    }

    /// The stored bf16 bits of a frame's spatial memory (for checks; waits).
    pub fn download_maskmem(&self, gpu: &Gpu, key: &BankKey) -> Result<Vec<u16>> {
        let per = self.layout.per_frame();
        let slot = self
            .mem_pool
            .get(key)
            .ok_or_else(|| invalid(format!("no memory of obj {} frame {}", key.obj, key.frame)))?;
        let bank = self.maskmem.as_ref().ok_or_else(|| invalid("the bank is empty".into()))?;
        let mut h = vec![0u16; per];
        gpu.stream()
            .memcpy_dtoh(&bank.slice(slot * per..(slot + 1) * per), &mut h)
            .map_err(|e| cuda_err("download of a memory slot", e))?;
        gpu.synchronize()?;
        Ok(h)
    }
}
