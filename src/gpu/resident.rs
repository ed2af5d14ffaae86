//! Device tensors that stay on the GPU between engines (feature `cuda`): the TensorRT
//! sessions return the outputs the tracker only passes on (image features, the memory
//! attention's output) as [`DeviceTensor`]s and read them back as inputs by address, so
//! they never cross to the host. Buffers come from a [`DevicePool`] and go back to it when
//! the tensor is dropped, so a steady run reuses the same allocations frame after frame.
//!
//! Everything runs on the pool's one stream: a buffer handed back while an enqueued kernel
//! still reads it is only rewritten by work enqueued later on the same stream, after that
//! read.
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr};

use super::device::cuda_err;
use super::plan::pick_buffer;
use crate::backend::{Resident, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;

/// fp32 device buffers recycled across frames, on one stream.
pub struct DevicePool {
    stream: Arc<CudaStream>,
    free: Mutex<Vec<CudaSlice<f32>>>,
    allocations: AtomicUsize,
}

impl DevicePool {
    pub fn new(stream: Arc<CudaStream>) -> Arc<DevicePool> {
        Arc::new(DevicePool { stream, free: Mutex::new(Vec::new()), allocations: AtomicUsize::new(0) })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Device allocations made so far (constant once a run reaches its steady state).
    pub fn allocations(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    /// A buffer of at least `numel` elements (contents undefined).
    pub fn take(&self, numel: usize, what: &str) -> Result<CudaSlice<f32>> {
        {
            let mut free = self.free.lock().map_err(|_| poisoned())?;
            let lens: Vec<usize> = free.iter().map(|b| b.len()).collect();
            if let Some(i) = pick_buffer(&lens, numel) {
                return Ok(free.swap_remove(i));
            }
        }
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.stream
            .alloc_zeros::<f32>(numel.max(1))
            .map_err(|e| cuda_err(&format!("alloc for '{what}' ({numel} values)"), e))
    }

    fn give(&self, buf: CudaSlice<f32>) {
        if let Ok(mut free) = self.free.lock() {
            free.push(buf);
        }
    }

    /// A pooled copy of a host tensor.
    pub fn upload(self: &Arc<Self>, t: &TensorF32, what: &str) -> Result<DeviceTensor> {
        let mut buf = self.take(t.data.len(), what)?;
        if !t.data.is_empty() {
            let mut view = buf.slice_mut(0..t.data.len());
            self.stream.memcpy_htod(&t.data, &mut view).map_err(|e| cuda_err(&format!("upload of '{what}'"), e))?;
        }
        Ok(DeviceTensor::new(self, buf, t.shape.clone()))
    }
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Backend, "device buffer pool: a thread panicked while holding it")
}

/// A tensor in a pooled device buffer; the buffer returns to the pool on drop.
pub struct DeviceTensor {
    buf: Option<CudaSlice<f32>>,
    shape: Vec<usize>,
    pool: Arc<DevicePool>,
}

impl fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceTensor{:?}", self.shape)
    }
}

impl DeviceTensor {
    /// Wrap `buf` (at least `shape`'s element count) taken from `pool`.
    pub fn new(pool: &Arc<DevicePool>, buf: CudaSlice<f32>, shape: Vec<usize>) -> DeviceTensor {
        debug_assert!(buf.len() >= shape.iter().product::<usize>());
        DeviceTensor { buf: Some(buf), shape, pool: pool.clone() }
    }

    pub fn dims(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor's elements.
    pub fn view(&self) -> CudaView<'_, f32> {
        self.buf.as_ref().expect("held until drop").slice(0..self.numel())
    }

    /// Device address, for an engine input on the pool's stream.
    pub fn device_address(&self) -> u64 {
        let (ptr, _sync) = self.buf.as_ref().expect("held until drop").device_ptr(&self.pool.stream);
        ptr
    }

    /// Whether this tensor lives on `stream` (the sessions take only their own stream's).
    pub fn on_stream(&self, stream: &Arc<CudaStream>) -> bool {
        Arc::ptr_eq(&self.pool.stream, stream)
    }

    /// `v` when it is a device tensor on `stream` (what the sessions, the bank and the
    /// frame ops read in place; anything else comes through the host).
    pub fn of<'v>(v: &'v Value, stream: &Arc<CudaStream>) -> Option<&'v DeviceTensor> {
        match v {
            Value::Resident(r) => r.as_any().downcast_ref::<DeviceTensor>().filter(|d| d.on_stream(stream)),
            Value::Host(_) => None,
        }
    }
}

impl Drop for DeviceTensor {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

impl Resident for DeviceTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn to_host(&self) -> Result<TensorF32> {
        let mut host = vec![0f32; self.numel()];
        if !host.is_empty() {
            let s = &self.pool.stream;
            s.memcpy_dtoh(&self.view(), &mut host).map_err(|e| cuda_err("download of a device tensor", e))?;
            s.synchronize().map_err(|e| cuda_err("synchronize", e))?;
        }
        Ok(TensorF32::new(self.shape.clone(), host))
    }

    fn concat(&self, rest: &[&dyn Resident]) -> Result<Arc<dyn Resident>> {
        let mut parts = vec![self];
        for r in rest {
            match r.as_any().downcast_ref::<DeviceTensor>() {
                Some(t) if Arc::ptr_eq(&t.pool, &self.pool) => parts.push(t),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        "concat: a tensor from another device pool or backend (copy it to the host first)",
                    ))
                }
            }
        }
        let mut shape = self.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let total: usize = shape.iter().product();
        let mut out = self.pool.take(total, "concat")?;
        let mut at = 0;
        for p in parts {
            let n = p.numel();
            let mut dst = out.slice_mut(at..at + n);
            self.pool.stream.memcpy_dtod(&p.view(), &mut dst).map_err(|e| cuda_err("concat copy", e))?;
            at += n;
        }
        Ok(Arc::new(DeviceTensor::new(&self.pool, out, shape)))
    }

    fn rows(&self, start: usize, n: usize) -> Result<Arc<dyn Resident>> {
        let b = self.shape.first().copied().unwrap_or(0);
        if start + n > b {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("rows {start}..{} of {:?}", start + n, self.shape),
            ));
        }
        let per = self.numel() / b.max(1);
        let mut shape = self.shape.clone();
        shape[0] = n;
        let mut out = self.pool.take(n * per, "rows")?;
        if n * per > 0 {
            let src = self.view().slice(start * per..(start + n) * per);
            let mut dst = out.slice_mut(0..n * per);
            self.pool.stream.memcpy_dtod(&src, &mut dst).map_err(|e| cuda_err("rows copy", e))?;
        }
        Ok(Arc::new(DeviceTensor::new(&self.pool, out, shape)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
