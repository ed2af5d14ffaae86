//! Weight access for graph building: a [`WeightSource`] (a checkpoint, or seeded random
//! weights) and a candle-style [`Vb`] whose paths read like checkpoint keys
//! (`vb.pp("sam_mask_decoder").pp("output_upscaling.3")`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::onnx::graph::{Graph, Value};

/// A dense fp32 tensor held on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorF32 {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        TensorF32 { shape, data }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Transpose of a 2-D tensor.
    pub fn t(&self) -> TensorF32 {
        assert_eq!(self.shape.len(), 2, "t() on a {}-D tensor", self.shape.len());
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        TensorF32::new(vec![c, r], out)
    }
}

/// Where weights come from.
pub trait WeightSource {
    /// Load `name`, checking it has shape `expected`. Errors name the tensor, the file
    /// and both shapes.
    fn load(&self, name: &str, expected: &[usize]) -> Result<TensorF32>;
    /// Whether `name` exists (random sources: always).
    fn contains(&self, name: &str) -> bool;
    /// All tensor names (empty for random sources).
    fn names(&self) -> Vec<String>;
    /// Stored shape of `name`, if the source knows it.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    /// A short description for messages (file path or "random weights, seed N").
    fn describe(&self) -> String;
}

/// Deterministic random weights: each tensor's values depend only on (seed, name), so a
/// graph exported twice is identical. Matrices get U(±1/√fan_in) like PyTorch's default
/// init; 1-D `*.weight` (norm scales) are 1, 1-D biases are small.
pub struct RandomWeights {
    pub seed: u64,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl WeightSource for RandomWeights {
    fn load(&self, name: &str, expected: &[usize]) -> Result<TensorF32> {
        let mut state = self.seed ^ 0xA076_1D64_78BD_642F;
        for b in name.bytes() {
            state = (state ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
        let n: usize = expected.iter().product();
        let (scale, offset) = if expected.len() >= 2 {
            let fan_in: usize = expected[1..].iter().product::<usize>().max(1);
            (1.0 / (fan_in as f32).sqrt(), 0.0)
        } else if name.ends_with("running_var") {
            // BatchNorm variances must stay positive (they are folded into convs).
            (0.5, 1.0)
        } else if name.ends_with("weight") || name.ends_with("gamma") {
            (0.0, 1.0)
        } else {
            (0.02, 0.0)
        };
        let data = (0..n)
            .map(|_| {
                let u = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32; // [0,1)
                offset + scale * (2.0 * u - 1.0)
            })
            .collect();
        Ok(TensorF32::new(expected.to_vec(), data))
    }
    fn contains(&self, _name: &str) -> bool {
        true
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn shape_of(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }
    fn describe(&self) -> String {
        format!("random weights (seed {})", self.seed)
    }
}

/// A weight source plus the record of which tensors the graphs used.
pub struct Weights {
    src: Box<dyn WeightSource>,
    used: RefCell<BTreeSet<String>>,
}

impl Weights {
    pub fn new(src: Box<dyn WeightSource>) -> Self {
        Weights { src, used: RefCell::new(BTreeSet::new()) }
    }

    pub fn root(&self) -> Vb<'_> {
        Vb { w: self, prefix: String::new() }
    }

    pub fn source(&self) -> &dyn WeightSource {
        self.src.as_ref()
    }

    /// Tensors in the source that no graph used, sorted (empty for random weights).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.src.names().into_iter().filter(|n| !used.contains(n)).collect()
    }

    /// Mark tensors as deliberately unused (e.g. training-only buffers).
    pub fn mark_used(&self, name: &str) {
        self.used.borrow_mut().insert(name.to_string());
    }
}

/// A scoped view of [`Weights`]: `pp` appends a path component.
#[derive(Clone)]
pub struct Vb<'a> {
    w: &'a Weights,
    prefix: String,
}

impl<'a> Vb<'a> {
    /// Push a path component (`vb.pp("blocks").pp(3)`).
    pub fn pp(&self, s: impl std::fmt::Display) -> Vb<'a> {
        let prefix = if self.prefix.is_empty() { s.to_string() } else { format!("{}.{}", self.prefix, s) };
        Vb { w: self.w, prefix }
    }

    /// The full checkpoint key of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn contains(&self, name: &str) -> bool {
        self.w.src.contains(&self.path(name))
    }

    /// Load a tensor (shape-checked) for export-time arithmetic.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<TensorF32> {
        let full = self.path(name);
        let t = self.w.src.load(&full, shape)?;
        self.w.used.borrow_mut().insert(full);
        Ok(t)
    }

    /// Load a tensor and add it to `g` as an initializer named by its checkpoint key.
    pub fn get(&self, g: &mut Graph, name: &str, shape: &[usize]) -> Result<Value> {
        let t = self.tensor(name, shape)?;
        Ok(g.initializer(&self.path(name), &t.shape, Arc::from(t.data)))
    }

    /// Load a 2-D `[out, in]` Linear weight and add its transpose `[in, out]` (so the
    /// graph needs no Transpose before MatMul).
    pub fn get_linear_t(&self, g: &mut Graph, name: &str, out_dim: usize, in_dim: usize) -> Result<Value> {
        let t = self.tensor(name, &[out_dim, in_dim])?.t();
        Ok(g.initializer(&format!("{}^T", self.path(name)), &t.shape, Arc::from(t.data)))
    }
}

/// Error for a tensor with the wrong shape.
pub fn shape_error(file: &str, name: &str, expected: &[usize], found: &[usize]) -> Error {
    Error::new(
        ErrorKind::TensorShape,
        format!("tensor '{name}' in {file} has shape {found:?}, the model expects {expected:?}"),
    )
}

/// Error for a missing tensor.
pub fn missing_error(file: &str, name: &str) -> Error {
    Error::new(ErrorKind::MissingTensor, format!("tensor '{name}' is not in {file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_are_deterministic_and_shaped() {
        let r = RandomWeights { seed: 7 };
        let a = r.load("x.weight", &[4, 3]).unwrap();
        let b = r.load("x.weight", &[4, 3]).unwrap();
        assert_eq!(a, b);
        let c = r.load("y.weight", &[4, 3]).unwrap();
        assert_ne!(a.data, c.data);
        let bound = 1.0 / 3f32.sqrt();
        assert!(a.data.iter().all(|v| v.abs() <= bound));
        assert_eq!(r.load("norm.weight", &[5]).unwrap().data, vec![1.0; 5]);
    }

    #[test]
    fn transpose_2d() {
        let t = TensorF32::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(t.t().data, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(t.t().shape, vec![3, 2]);
    }
}
