//! Checkpoint readers: the official PyTorch release format (a zip whose `data.pkl`
//! pickles `{"model": state_dict}`) and safetensors files with the same tensor names.
//! Both give a [`Checkpoint`]: an index of tensors whose data is read on demand, so a
//! large model never sits in memory twice.

mod pickle;
mod safetensors_file;
mod torch_zip;

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::weights::{missing_error, shape_error, TensorF32, WeightSource};

pub use safetensors_file::SafetensorsCheckpoint;
pub use torch_zip::TorchZipCheckpoint;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

/// Metadata of one tensor in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
}

/// A readable checkpoint format.
pub trait CheckpointFormat {
    fn tensors(&self) -> &[TensorInfo];
    /// Read one tensor as fp32 (converting from its stored type, following strides).
    fn read_f32(&self, name: &str) -> Result<TensorF32>;
}

/// An opened checkpoint file of either format.
pub struct Checkpoint {
    path: PathBuf,
    inner: Box<dyn CheckpointFormat>,
}

impl Checkpoint {
    /// Open `path`, choosing the format from its content (zip magic → PyTorch,
    /// otherwise safetensors).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open checkpoint", e))?;
            let n = f.read(&mut magic).map_err(|e| Error::io(path, "cannot read checkpoint", e))?;
            if n < 4 {
                return Err(Error::new(
                    ErrorKind::Checkpoint,
                    format!("checkpoint '{}' is too short ({n} bytes) to be a model file", path.display()),
                ));
            }
        }
        let inner: Box<dyn CheckpointFormat> = if &magic == b"PK\x03\x04" {
            Box::new(TorchZipCheckpoint::open(path)?)
        } else {
            Box::new(SafetensorsCheckpoint::open(path)?)
        };
        Ok(Checkpoint { path: path.to_path_buf(), inner })
    }

    /// Open a PyTorch zip checkpoint held in memory; `label` names it in messages.
    pub fn from_torch_zip_bytes(label: &Path, bytes: Vec<u8>) -> Result<Checkpoint> {
        let len = bytes.len() as u64;
        let inner = TorchZipCheckpoint::from_reader(label, std::io::Cursor::new(bytes), len)?;
        Ok(Checkpoint { path: label.to_path_buf(), inner: Box::new(inner) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        self.inner.tensors()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.inner.tensors().iter().find(|t| t.name == name)
    }

    pub fn read_f32(&self, name: &str) -> Result<TensorF32> {
        self.inner.read_f32(name)
    }
}

impl WeightSource for Checkpoint {
    fn load(&self, name: &str, expected: &[usize]) -> Result<TensorF32> {
        let file = self.path.display().to_string();
        let info = self.info(name).ok_or_else(|| missing_error(&file, name))?;
        if info.shape != expected {
            return Err(shape_error(&file, name, expected, &info.shape));
        }
        self.read_f32(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }
    fn names(&self) -> Vec<String> {
        self.tensors().iter().map(|t| t.name.clone()).collect()
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|i| i.shape.clone())
    }
    fn describe(&self) -> String {
        format!("checkpoint '{}'", self.path.display())
    }
}
