//! What the CUDA paths of the ops share: the stream cubecl runs a thread's work on, so
//! cuBLAS can run in order with cubecl's kernels (`stream`), and how row and elementwise
//! kernels are launched (`plane_rows`), the card's free memory (`memory`), and tensors in
//! page-locked host memory copied on that stream (`pinned`).

pub mod memory;
pub mod pinned;
pub mod plane_rows;
pub mod stream;
