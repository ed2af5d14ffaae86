//! Runtime backends. One [`Backend`] trait; implementations behind cargo features
//! (`ort` = ONNX Runtime on CPU, `tensorrt` = TensorRT engines). The tracker only sees
//! [`ComponentSession`]s, whatever runs them.

pub mod bank_store;
pub mod frame_ops;
#[cfg(target_arch = "x86_64")]
mod online_softmax;
#[cfg(feature = "ort")]
pub mod ort;
pub mod rope_cross_attention;
pub mod select;
pub mod self_attention;
#[cfg(feature = "ort")]
pub mod split_attention;
pub mod value;

use std::path::Path;

use crate::error::Result;
use crate::export::Component;
use crate::tracker::mem_inputs::MemLayout;
use crate::weights::TensorF32;
pub use bank_store::{BankKey, BankStore, GatherObject};
pub use frame_ops::{FrameOps, Postprocessed};
pub use value::{Resident, Value};

/// One loaded graph (or engine) that maps named fp32 inputs to named fp32 outputs.
pub trait ComponentSession {
    /// Run with the given inputs; returns every graph output by name, in graph order.
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>>;
    /// Which backend runs this component (for reports), e.g. "ort-cpu".
    fn backend_name(&self) -> &str;
    /// Names of the graph's inputs.
    fn input_names(&self) -> Vec<String>;
    /// [`ComponentSession::run`] with inputs that may be [`Value::Resident`] (this
    /// backend's own take no copy), where the outputs named in `keep` may stay resident.
    /// Backends that work on the host (the default) copy resident inputs to the host and
    /// return host values.
    fn run_values(&mut self, inputs: &[(&str, &Value)], keep: &[&str]) -> Result<Vec<(String, Value)>> {
        let _ = keep;
        let host = inputs.iter().map(|(n, v)| Ok((*n, v.to_host()?))).collect::<Result<Vec<_>>>()?;
        let refs: Vec<(&str, &TensorF32)> = host.iter().map(|(n, t)| (*n, t.as_ref())).collect();
        Ok(self.run(&refs)?.into_iter().map(|(n, t)| (n, Value::Host(t))).collect())
    }
    /// For a memory-attention session: a memory bank this backend keeps itself (see
    /// [`BankStore`]), for memories of `layout` with position encoding `maskmem_pos` (one
    /// frame's) and `tpos_enc` (`maskmem_tpos_enc`). None (the default): the tracker keeps
    /// the bank on the host.
    fn bank_store(
        &self,
        layout: &MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Option<Result<Box<dyn BankStore>>> {
        let _ = (layout, maskmem_pos, tpos_enc);
        None
    }
    /// For an image-encoder session: frame pre/post-processing where this backend keeps
    /// its tensors (see [`FrameOps`]) for model input side `image_size` and the
    /// normalisation `mean` / `std`. None (the default): the tracker does it on the host.
    fn frame_ops(&self, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Option<Result<Box<dyn FrameOps>>> {
        let _ = (image_size, mean, std);
        None
    }
}

/// A way of running exported components.
pub trait Backend {
    fn name(&self) -> &str;
    /// Load `component` from the exported model directory.
    fn load(&self, model_dir: &Path, component: Component) -> Result<Box<dyn ComponentSession>>;
}

/// Look up an output by name in a session result.
pub fn take_output<T>(outputs: &mut Vec<(String, T)>, name: &str) -> Result<T> {
    let i = outputs.iter().position(|(n, _)| n == name).ok_or_else(|| {
        crate::Error::new(
            crate::ErrorKind::Backend,
            format!(
                "output '{name}' missing; the graph produced {}",
                outputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    Ok(outputs.swap_remove(i).1)
}
