//! A TensorRT engine as a [`ComponentSession`]: host tensors in and out, device buffers
//! (cudarc) kept across calls and grown only when a larger shape arrives, one CUDA stream.
//! Not run on hardware yet.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::ffi::{Context, Engine, Shim};
use crate::backend::ComponentSession;
use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;

fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Backend, format!("CUDA {what}: {e}"))
}

/// One engine with its context and device buffers. Field order matters: the context is
/// dropped before the engine.
pub struct TrtSession {
    ctx: Context,
    engine: Engine,
    stream: Arc<CudaStream>,
    buffers: HashMap<String, CudaSlice<f32>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl TrtSession {
    pub fn load(shim: &Arc<Shim>, cuda: &Arc<CudaContext>, engine_path: &Path) -> Result<TrtSession> {
        let engine = Engine::load(shim, engine_path)?;
        let ctx = engine.context()?;
        let io = engine.io();
        let inputs = io.iter().filter(|(_, i)| *i).map(|(n, _)| n.clone()).collect();
        let outputs = io.iter().filter(|(_, i)| !*i).map(|(n, _)| n.clone()).collect();
        let stream = cuda.new_stream().map_err(|e| cuda_err("stream", e))?;
        Ok(TrtSession { ctx, engine, stream, buffers: HashMap::new(), inputs, outputs })
    }

    /// Device bytes the engine's activations take.
    pub fn activation_bytes(&self) -> i64 {
        self.engine.device_memory()
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
        for name in self.inputs.clone() {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| Error::new(ErrorKind::Backend, format!("engine input '{name}' not given")))?;
            let dims: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
            self.ctx.set_input_shape(&name, &dims)?;
            let stream = self.stream.clone();
            let buf = buffer(&mut self.buffers, &stream, &name, t.data.len())?;
            if !t.data.is_empty() {
                let mut view = buf.slice_mut(0..t.data.len());
                stream.memcpy_htod(&t.data, &mut view).map_err(|e| cuda_err("upload", e))?;
            }
            let (ptr, _sync) = buf.device_ptr_mut(&stream);
            // SAFETY: the buffer holds at least numel elements and outlives the enqueue
            // (we synchronize before returning).
            unsafe { self.ctx.set_address(&name, ptr as *mut std::ffi::c_void)? };
        }
        let mut shapes = Vec::new();
        for name in self.outputs.clone() {
            let dims = self.ctx.shape(&name)?;
            let numel: usize = dims.iter().map(|d| (*d).max(0) as usize).product();
            let stream = self.stream.clone();
            let buf = buffer(&mut self.buffers, &stream, &name, numel)?;
            let (ptr, _sync) = buf.device_ptr_mut(&stream);
            // SAFETY: as above.
            unsafe { self.ctx.set_address(&name, ptr as *mut std::ffi::c_void)? };
            shapes.push((name, dims, numel));
        }
        // SAFETY: the stream belongs to the context the buffers were allocated in.
        unsafe { self.ctx.enqueue(self.stream.cu_stream() as *mut std::ffi::c_void)? };
        let mut out = Vec::new();
        for (name, dims, numel) in shapes {
            let mut host = vec![0f32; numel];
            if numel > 0 {
                let buf = &self.buffers[&name];
                let (_, _sync) = buf.device_ptr(&self.stream);
                self.stream.memcpy_dtoh(&buf.slice(0..numel), &mut host).map_err(|e| cuda_err("download", e))?;
            }
            out.push((name, TensorF32::new(dims.iter().map(|d| *d as usize).collect(), host)));
        }
        self.stream.synchronize().map_err(|e| cuda_err("synchronize", e))?;
        Ok(out)
    }

    fn backend_name(&self) -> &str {
        "tensorrt"
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }
}
