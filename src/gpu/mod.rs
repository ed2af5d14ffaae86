//! GPU kernels for pre/post-processing and the memory bank (feature `cuda`): the host
//! side first. **Not yet run on a GPU.**

pub mod kernels;
pub mod plan;
