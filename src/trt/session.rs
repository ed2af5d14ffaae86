//! A TensorRT engine as a [`ComponentSession`]. All engines of a backend share one CUDA
//! stream and one [`DevicePool`]: outputs the caller asks to keep stay in pooled device
//! buffers ([`DeviceTensor`], handed to the next engine by address), host inputs go
//! through per-input device buffers that grow only when a larger shape arrives, and
//! only the other outputs are copied back. Not run on hardware yet.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::ffi::{Context, Engine, Shim};
use crate::backend::{BankStore, ComponentSession, FrameOps, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::device::Gpu;
use crate::gpu::device_store::DeviceBankStore;
use crate::gpu::frame_ops::DeviceFrameOps;
use crate::gpu::resident::{DevicePool, DeviceTensor};
use crate::tracker::mem_inputs::MemLayout;
use crate::weights::TensorF32;

/// The GPU kernels (NVRTC-compiled on first use, once per backend) on the engines' stream,
/// or why they are unavailable.
pub type GpuKernels = Arc<OnceLock<std::result::Result<Arc<Gpu>, String>>>;

fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Backend, format!("CUDA {what}: {e}"))
}

/// One engine with its context and device buffers. Field order matters: the context is
/// dropped before the engine.
pub struct TrtSession {
    ctx: Context,
    engine: Engine,
    pool: Arc<DevicePool>,
    kernels: GpuKernels,
    /// Host inputs and downloaded outputs, per tensor name.
    buffers: HashMap<String, CudaSlice<f32>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// An engine input: on the host (borrowed, or copied from another backend's value), or
/// already on this session's stream.
enum Src<'a> {
    Host(Cow<'a, TensorF32>),
    Device(&'a DeviceTensor),
}

impl TrtSession {
    /// Load `engine_path`; it runs on `pool`'s stream (as do `kernels`).
    pub fn load(
        shim: &Arc<Shim>,
        pool: &Arc<DevicePool>,
        kernels: &GpuKernels,
        engine_path: &Path,
    ) -> Result<TrtSession> {
        let engine = Engine::load(shim, engine_path)?;
        let ctx = engine.context()?;
        let io = engine.io();
        let inputs = io.iter().filter(|(_, i)| *i).map(|(n, _)| n.clone()).collect();
        let outputs = io.iter().filter(|(_, i)| !*i).map(|(n, _)| n.clone()).collect();
        Ok(TrtSession {
            ctx,
            engine,
            pool: pool.clone(),
            kernels: kernels.clone(),
            buffers: HashMap::new(),
            inputs,
            outputs,
        })
    }

    /// Device bytes the engine's activations take.
    pub fn activation_bytes(&self) -> i64 {
        self.engine.device_memory()
    }

    /// The backend's kernels on this session's stream (compiled on first use).
    fn kernels(&self) -> Result<Arc<Gpu>> {
        let stream = self.pool.stream().clone();
        match self.kernels.get_or_init(|| Gpu::on_stream(stream).map(Arc::new).map_err(|e| e.to_string())) {
            Ok(g) => Ok(g.clone()),
            Err(e) => Err(Error::new(ErrorKind::Backend, format!("GPU kernels unavailable: {e}"))),
        }
    }

    fn stream(&self) -> Arc<CudaStream> {
        self.pool.stream().clone()
    }

    /// Bind every input, enqueue, and return the outputs: those in `keep` as pooled
    /// device tensors, the others copied to the host.
    fn execute(&mut self, inputs: &[(&str, Src<'_>)], keep: &[&str]) -> Result<Vec<(String, Value)>> {
        let stream = self.stream();
        for name in self.inputs.clone() {
            let (_, src) = inputs
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| Error::new(ErrorKind::Backend, format!("engine input '{name}' not given")))?;
            let shape: &[usize] = match src {
                Src::Host(t) => &t.shape,
                Src::Device(d) => d.dims(),
            };
            let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
            self.ctx.set_input_shape(&name, &dims)?;
            let ptr = match src {
                Src::Device(d) => d.device_address(),
                Src::Host(t) => {
                    let buf = buffer(&mut self.buffers, &stream, &name, t.data.len())?;
                    if !t.data.is_empty() {
                        let mut view = buf.slice_mut(0..t.data.len());
                        stream.memcpy_htod(&t.data, &mut view).map_err(|e| cuda_err("upload", e))?;
                    }
                    buf.device_ptr_mut(&stream).0
                }
            };
            // SAFETY: the buffer holds the input's elements and outlives the enqueue: host
            // inputs' buffers belong to the session, device inputs are borrowed for this
            // call, and later writers of a returned buffer run after it on the one stream.
            unsafe { self.ctx.set_address(&name, ptr as *mut std::ffi::c_void)? };
        }
        let mut bound = Vec::new();
        for name in self.outputs.clone() {
            let dims = self.ctx.shape(&name)?;
            let shape: Vec<usize> = dims.iter().map(|d| (*d).max(0) as usize).collect();
            let numel: usize = shape.iter().product();
            let out = if keep.contains(&name.as_str()) {
                let t = DeviceTensor::new(&self.pool, self.pool.take(numel, &name)?, shape);
                let ptr = t.device_address();
                (Some(t), ptr, numel)
            } else {
                let buf = buffer(&mut self.buffers, &stream, &name, numel)?;
                (None, buf.device_ptr_mut(&stream).0, numel)
            };
            // SAFETY: as above; output buffers hold `numel` elements.
            unsafe { self.ctx.set_address(&name, out.1 as *mut std::ffi::c_void)? };
            bound.push((name, dims, out));
        }
        // SAFETY: the stream belongs to the context the buffers were allocated in.
        unsafe { self.ctx.enqueue(stream.cu_stream() as *mut std::ffi::c_void)? };
        let mut result = Vec::new();
        for (name, dims, (kept, _, numel)) in bound {
            let value = match kept {
                Some(t) => Value::Resident(Arc::new(t)),
                None => {
                    let mut host = vec![0f32; numel];
                    if numel > 0 {
                        let buf = &self.buffers[&name];
                        let (_, _sync) = buf.device_ptr(&stream);
                        stream.memcpy_dtoh(&buf.slice(0..numel), &mut host).map_err(|e| cuda_err("download", e))?;
                    }
                    Value::Host(TensorF32::new(dims.iter().map(|d| *d as usize).collect(), host))
                }
            };
            result.push((name, value));
        }
        stream.synchronize().map_err(|e| cuda_err("synchronize", e))?;
        Ok(result)
    }
}

/// The buffer for `name`, (re)allocated only when it must grow.
fn buffer<'a>(
    buffers: &'a mut HashMap<String, CudaSlice<f32>>,
    stream: &Arc<CudaStream>,
    name: &str,
    numel: usize,
) -> Result<&'a mut CudaSlice<f32>> {
    let need = numel.max(1);
    if buffers.get(name).is_none_or(|b| b.len() < need) {
        let b = stream.alloc_zeros::<f32>(need).map_err(|e| cuda_err(&format!("alloc for '{name}'"), e))?;
        buffers.insert(name.to_string(), b);
    }
    Ok(buffers.get_mut(name).expect("just inserted"))
}

impl ComponentSession for TrtSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
        let src: Vec<(&str, Src<'_>)> = inputs.iter().map(|(n, t)| (*n, Src::Host(Cow::Borrowed(*t)))).collect();
        self.execute(&src, &[])?
            .into_iter()
            .map(|(n, v)| match v {
                Value::Host(t) => Ok((n, t)),
                Value::Resident(r) => Ok((n, r.to_host()?)),
            })
            .collect()
    }

    fn run_values(&mut self, inputs: &[(&str, &Value)], keep: &[&str]) -> Result<Vec<(String, Value)>> {
        let stream = self.stream();
        // this stream's device tensors by address; host values borrowed, values of another
        // backend (or stream) copied to the host
        let src = inputs
            .iter()
            .map(|(n, v)| {
                let s = match DeviceTensor::of(v, &stream) {
                    Some(d) => Src::Device(d),
                    None => Src::Host(v.to_host()?),
                };
                Ok((*n, s))
            })
            .collect::<Result<Vec<_>>>()?;
        self.execute(&src, keep)
    }

    fn backend_name(&self) -> &str {
        "tensorrt"
    }

    /// The memory bank in device slots ([`DeviceBankStore`]); an error (the tracker then
    /// keeps the bank on the host) when the kernels cannot be compiled (no NVRTC).
    fn bank_store(
        &self,
        layout: &MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Option<Result<Box<dyn BankStore>>> {
        Some(self.kernels().and_then(|gpu| {
            DeviceBankStore::new(gpu, &self.pool, *layout, maskmem_pos, tpos_enc)
                .map(|s| Box::new(s) as Box<dyn BankStore>)
        }))
    }

    /// Pre/post-processing kernels ([`DeviceFrameOps`]); an error (the tracker then does
    /// it on the host) when they cannot be compiled.
    fn frame_ops(&self, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Option<Result<Box<dyn FrameOps>>> {
        Some(self.kernels().and_then(|gpu| {
            DeviceFrameOps::new(gpu, &self.pool, image_size, mean, std).map(|o| Box::new(o) as Box<dyn FrameOps>)
        }))
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }
}
