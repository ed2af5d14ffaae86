//! The TensorRT backend's [`FrameOps`]: the Pillow-exact resize + normalisation and the
//! torch-exact bilinear (+ threshold) kernels of [`super::prepost`] on the engines' stream.
//! The image encoder's input, the memory encoder's high-res masks and the hole-filled
//! low-res output stay on the device (pooled [`DeviceTensor`]s); the output comes back as
//! u8 masks (and the logits only when the sink wants them).
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

use std::sync::Arc;

use super::device::{cuda_err, Gpu};
use super::plan;
use super::prepost::{fill_holes, Postprocessor, Preprocessor};
use super::resident::{DevicePool, DeviceTensor};
use crate::backend::{FrameOps, Postprocessed, Resident, Value};
use crate::error::{Error, ErrorKind, Result};

pub struct DeviceFrameOps {
    gpu: Arc<Gpu>,
    pool: Arc<DevicePool>,
    size: usize,
    pre: Preprocessor,
    /// The memory encoder's upsampling (low-res → S×S) and the output's (→ video size)
    /// keep their own tables.
    up: Postprocessor,
    post: Postprocessor,
}

impl DeviceFrameOps {
    pub fn new(gpu: Arc<Gpu>, pool: &Arc<DevicePool>, size: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Self> {
        let pre = Preprocessor::new(&gpu, size, mean, std)?;
        Ok(DeviceFrameOps { gpu, pool: pool.clone(), size, pre, up: Postprocessor::new(), post: Postprocessor::new() })
    }

    /// `v` when it is a device tensor of this stream.
    fn own<'v>(&self, v: &'v Value) -> Option<&'v DeviceTensor> {
        DeviceTensor::of(v, self.pool.stream())
    }

    /// A pooled copy of the first `n` values of `src` with `shape`.
    fn pooled_copy(&self, src: &cudarc::driver::CudaSlice<f32>, shape: Vec<usize>, what: &str) -> Result<Value> {
        let n: usize = shape.iter().product();
        let mut buf = self.pool.take(n, what)?;
        let mut dst = buf.slice_mut(0..n);
        self.gpu
            .stream()
            .memcpy_dtod(&src.slice(0..n), &mut dst)
            .map_err(|e| cuda_err(&format!("copy of {what}"), e))?;
        Ok(Value::Resident(Arc::new(DeviceTensor::new(&self.pool, buf, shape)) as Arc<dyn Resident>))
    }
}

impl FrameOps for DeviceFrameOps {
    fn name(&self) -> &str {
        "cuda"
    }

    fn preprocess(&mut self, rgb8: &[u8], w: usize, h: usize) -> Result<Value> {
        self.pre.run(&self.gpu, rgb8, w, h, false)?;
        let s = self.size;
        self.pooled_copy(self.pre.output(), vec![1, 3, s, s], "image")
    }

    fn upsample(&mut self, low: &Value, oh: usize, ow: usize) -> Result<Value> {
        let shape = low.shape().to_vec();
        let [b, 1, h, w] = shape[..] else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("upsample of shape {shape:?}, expected [B, 1, h, w]"),
            ));
        };
        match self.own(low) {
            Some(d) => {
                let n = b * h * w;
                let input = self.up.input(&self.gpu, n)?;
                let mut dst = input.slice_mut(0..n);
                self.gpu.stream().memcpy_dtod(&d.view(), &mut dst).map_err(|e| cuda_err("copy of low-res masks", e))?;
                self.up.run(&self.gpu, b, (h, w), (oh, ow), true)?;
            }
            None => self.up.run_host(&self.gpu, &low.to_host()?.data, b, (h, w), (oh, ow), true)?,
        }
        let logits = self.up.logits().ok_or_else(|| Error::new(ErrorKind::Backend, "upsampling kept no logits"))?;
        self.pooled_copy(logits, vec![b, 1, oh, ow], "mask_high_res")
    }

    fn fill_holes(&mut self, low: &Value, max_area: usize) -> Result<Value> {
        let shape = low.shape().to_vec();
        let [b, 1, h, w] = shape[..] else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("hole filling of shape {shape:?}, expected [B, 1, h, w]"),
            ));
        };
        if max_area > plan::HOLE_MAX {
            // beyond the kernel's per-thread list: on the host
            let mut t = low.to_host()?.into_owned();
            let mut scratch = Vec::new();
            for plane in t.data.chunks_mut(h * w) {
                crate::tracker::ops::fill_holes(plane, h, w, max_area, &mut scratch);
            }
            return Ok(Value::Host(t));
        }
        let uploaded;
        let src = match self.own(low) {
            Some(d) => d,
            None => {
                let host = low.to_host()?;
                uploaded = self.pool.upload(&host, "low_res_masks")?;
                &uploaded
            }
        };
        let mut out = self.pool.take(b * h * w, "filled low-res masks")?;
        fill_holes(&self.gpu, &src.view(), &mut out, b, h, w, max_area)?;
        Ok(Value::Resident(Arc::new(DeviceTensor::new(&self.pool, out, shape)) as Arc<dyn Resident>))
    }

    fn postprocess(&mut self, lows: &[Value], out_hw: (usize, usize), logits: bool) -> Result<Postprocessed> {
        let first = lows.first().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "postprocess of no masks"))?;
        let plane = first.shape().get(1..).unwrap_or(&[]).to_vec();
        let [1, h, w] = plane[..] else {
            return Err(Error::new(ErrorKind::InvalidInput, format!("output of shape {:?}", first.shape())));
        };
        if let Some(v) = lows.iter().find(|v| v.shape().get(1..) != Some(&plane[..])) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("output planes {:?} and {:?}", first.shape(), v.shape()),
            ));
        }
        let b: usize = lows.iter().map(|v| v.shape()[0]).sum();
        let per = h * w;
        let stream = self.gpu.stream().clone();
        // the planes in object order into the postprocessor's input: device ones copied
        // on the device, host ones (prompt outputs) uploaded
        let mut at = 0;
        for v in lows {
            let n = v.shape()[0] * per;
            let own = self.own(v).map(|d| d.view());
            let input = self.post.input(&self.gpu, b * per)?;
            let mut dst = input.slice_mut(at..at + n);
            match own {
                Some(src) => stream.memcpy_dtod(&src, &mut dst).map_err(|e| cuda_err("copy of an output plane", e))?,
                None => stream
                    .memcpy_htod(&v.to_host()?.data, &mut dst)
                    .map_err(|e| cuda_err("upload of an output plane", e))?,
            }
            at += n;
        }
        self.post.run(&self.gpu, b, (h, w), out_hw, logits)?;
        let mut masks = Vec::new();
        self.post.download_masks(&self.gpu, &mut masks)?;
        let logits = if logits {
            let mut l = Vec::new();
            self.post.download_logits(&self.gpu, &mut l)?;
            Some(l)
        } else {
            None
        };
        Ok((masks, logits))
    }
}
