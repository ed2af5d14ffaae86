//! safetensors checkpoints (memory-mapped; tensors converted to fp32 on read).

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::{CheckpointFormat, StoredDtype, TensorInfo};
use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;

pub struct SafetensorsCheckpoint {
    path: PathBuf,
    mmap: Mmap,
    tensors: Vec<TensorInfo>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Checkpoint, format!("'{}' is not a readable safetensors file: {msg}", path.display()))
}

impl SafetensorsCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open checkpoint", e))?;
        // SAFETY: the file is opened read-only and not modified while mapped by us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot map checkpoint", e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| bad(path, e))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                Dtype::F32 => StoredDtype::F32,
                Dtype::F16 => StoredDtype::F16,
                Dtype::BF16 => StoredDtype::BF16,
                Dtype::F64 => StoredDtype::F64,
                Dtype::I64 => StoredDtype::I64,
                Dtype::I32 => StoredDtype::I32,
                Dtype::U8 => StoredDtype::U8,
                Dtype::BOOL => StoredDtype::Bool,
                other => return Err(bad(path, format!("tensor '{name}' has unsupported dtype {other:?}"))),
            };
            tensors.push(TensorInfo { name, dtype, shape: view.shape().to_vec() });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SafetensorsCheckpoint { path: path.to_path_buf(), mmap, tensors })
    }
}

/// Convert little-endian bytes of `dtype` to f32.
pub(crate) fn bytes_to_f32(dtype: StoredDtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        StoredDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StoredDtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDtype::F64 => {
            b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
        }
        StoredDtype::I64 => {
            b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
        }
        StoredDtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        StoredDtype::U8 | StoredDtype::Bool => b.iter().map(|v| *v as f32).collect(),
    }
}

impl CheckpointFormat for SafetensorsCheckpoint {
    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> Result<TensorF32> {
        let st = SafeTensors::deserialize(&self.mmap).map_err(|e| bad(&self.path, e))?;
        let view = st.tensor(name).map_err(|e| bad(&self.path, format!("tensor '{name}': {e}")))?;
        let info = self.tensors.iter().find(|t| t.name == name).expect("listed tensor");
        Ok(TensorF32::new(view.shape().to_vec(), bytes_to_f32(info.dtype, view.data())))
    }
}
