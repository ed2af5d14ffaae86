//! Tensors that can stay where a backend produced them.
//!
//! A graph output the tracker only hands on to other graphs (image features, the memory
//! attention's output) need not come back to the host: a backend may return it as a
//! [`Resident`] value (device memory for TensorRT) and take it back as an input without a
//! copy. The host sees only what it asks for with [`Value::to_host`]. ONNX Runtime on CPU
//! keeps everything on the host ([`Value::Host`]).

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::weights::TensorF32;

/// A tensor kept by the backend that produced it (e.g. in device memory).
pub trait Resident: fmt::Debug {
    fn shape(&self) -> &[usize];
    /// Copy to the host (a device → host transfer for device tensors).
    fn to_host(&self) -> Result<TensorF32>;
    /// `self` followed by `rest` along axis 0, kept where they are (all of the same kind).
    fn concat(&self, rest: &[&dyn Resident]) -> Result<Arc<dyn Resident>>;
    /// Rows `start..start + n` of axis 0, kept where they are.
    fn rows(&self, start: usize, n: usize) -> Result<Arc<dyn Resident>>;
    /// For backends to recognise their own values.
    fn as_any(&self) -> &dyn Any;
}

/// A graph input or output: on the host, or resident where a backend keeps it.
#[derive(Debug, Clone)]
pub enum Value {
    Host(TensorF32),
    Resident(Arc<dyn Resident>),
}

impl From<TensorF32> for Value {
    fn from(t: TensorF32) -> Value {
        Value::Host(t)
    }
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Host(t) => &t.shape,
            Value::Resident(r) => r.shape(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// The host tensor: borrowed for host values, copied back for resident ones.
    pub fn to_host(&self) -> Result<Cow<'_, TensorF32>> {
        match self {
            Value::Host(t) => Ok(Cow::Borrowed(t)),
            Value::Resident(r) => r.to_host().map(Cow::Owned),
        }
    }

    /// Rows `start..start + n` of axis 0 (the object axis); the whole value when that is
    /// all of it.
    pub fn rows(&self, start: usize, n: usize) -> Result<Value> {
        let shape = self.shape();
        let b = shape.first().copied().unwrap_or(0);
        if start + n > b {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("rows {start}..{} of a tensor of shape {shape:?}", start + n),
            ));
        }
        if (start, n) == (0, b) {
            return Ok(self.clone());
        }
        match self {
            Value::Host(t) => {
                let per = t.numel() / b;
                let mut shape = t.shape.clone();
                shape[0] = n;
                Ok(Value::Host(TensorF32::new(shape, t.data[start * per..(start + n) * per].to_vec())))
            }
            Value::Resident(r) => r.rows(start, n).map(Value::Resident),
        }
    }

    /// Concatenate along axis 0 (the object axis). Resident values stay resident; a mix
    /// of host and resident values is concatenated on the host.
    pub fn concat(mut parts: Vec<Value>) -> Result<Value> {
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        let first = parts.first().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "concat of no tensors"))?;
        let tail = &first.shape()[1..];
        if let Some(p) = parts.iter().find(|p| p.shape().is_empty() || &p.shape()[1..] != tail) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("concat: shapes {:?} and {:?} differ beyond axis 0", first.shape(), p.shape()),
            ));
        }
        let resident: Option<Vec<&dyn Resident>> = parts
            .iter()
            .map(|p| match p {
                Value::Resident(r) => Some(r.as_ref()),
                Value::Host(_) => None,
            })
            .collect();
        if let Some(rs) = resident {
            return rs[0].concat(&rs[1..]).map(Value::Resident);
        }
        let mut shape = first.shape().to_vec();
        shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for p in parts {
            data.extend_from_slice(&p.to_host()?.data);
        }
        Ok(Value::Host(TensorF32::new(shape, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_concatenate_along_the_object_axis() {
        let a = Value::from(TensorF32::new(vec![1, 2], vec![1.0, 2.0]));
        let b = Value::from(TensorF32::new(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]));
        let c = Value::concat(vec![a.clone(), b]).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        assert_eq!(c.to_host().unwrap().data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(Value::concat(vec![a.clone()]).unwrap().to_host().unwrap().data, vec![1.0, 2.0]);
        let odd = Value::from(TensorF32::new(vec![1, 3], vec![0.0; 3]));
        let r = c.rows(1, 2).unwrap();
        assert_eq!((r.shape(), &r.to_host().unwrap().data[..]), (&[2, 2][..], &[3.0, 4.0, 5.0, 6.0][..]));
        assert!(c.rows(2, 2).unwrap_err().to_string().contains("rows 2..4"));
        let e = Value::concat(vec![a, odd]).unwrap_err();
        assert!(e.to_string().contains("[1, 2] and [1, 3]"), "{e}");
        assert!(Value::concat(vec![]).is_err());
    }
}
