//! A memory bank kept by a backend. The tracker decides which memories exist and which a
//! frame attends to ([`crate::tracker::ObjectMemory`]); where their data lives and how the
//! memory-attention inputs are built from it can be the backend's: the TensorRT backend
//! keeps mask memories and object pointers in device slots and gathers the inputs on the
//! GPU (`crate::gpu::bank`), so they never cross to the host. Without a store the tracker
//! keeps the bank on the host (`tracker::mem_inputs::assemble`).

use super::Value;
use crate::error::Result;

/// One object's memory of one frame (`obj`: the tracker's object index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BankKey {
    pub obj: usize,
    pub frame: usize,
    pub cond: bool,
}

/// What one object attends to: spatial memories with their temporal slot `t_pos`,
/// pointers with the row of their temporal encoding in the `pos_rows` given to
/// [`BankStore::gather`].
#[derive(Debug, Clone, Default)]
pub struct GatherObject {
    pub mems: Vec<(BankKey, usize)>,
    pub ptrs: Vec<(BankKey, usize)>,
}

/// Mask memories and object pointers held by a backend.
pub trait BankStore {
    /// Where the bank lives, for logs and reports (e.g. "device").
    fn name(&self) -> &str;
    /// Store `key`'s memory: row `row` (object axis) of the memory encoder's
    /// `maskmem_features` (stored as bfloat16, as the official predictor does; None: a
    /// pointer only) and its object pointer `[C]`.
    fn store(&mut self, key: BankKey, maskmem: Option<(&Value, usize)>, obj_ptr: &[f32]) -> Result<()>;
    /// Keep only what `keep(key)` says: (spatial memory kept, pointer kept).
    fn retain(&mut self, keep: &mut dyn FnMut(&BankKey) -> (bool, bool));
    /// The memory-attention inputs (`memory`, `memory_pos`, `obj_ptrs`, `obj_ptrs_pos`)
    /// of `objs`, which all select the same numbers of memories and pointers, as
    /// `tracker::mem_inputs::assemble` builds them; `pos_rows` `[rows, M]` holds the
    /// pointers' temporal encodings.
    fn gather(&mut self, objs: &[GatherObject], pos_rows: &[f32]) -> Result<[Value; 4]>;
    /// Bytes held.
    fn bytes(&self) -> usize;
}
