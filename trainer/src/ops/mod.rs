//! The backend operations the model and the optimizer run, one folder each: the op's trait
//! with its composed default (burn's own ops, what the CPU runs), its autodiff backward,
//! its CUDA kernel or cuBLAS path (`kernel.rs`, `cublas.rs`) and its conformance check
//! against a reference backend (`check.rs`). `backend` names the backends and the bundles
//! of ops a model and a training run need; `cuda` holds what the CUDA paths share;
//! `check` the gaps every conformance check reports; `kernels` which kernel paths the ops
//! take (one settings value, passed to each op that chooses).

pub mod adamw;
pub mod attention;
pub mod backend;
pub mod check;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod decode_attention;
pub mod entropy;
pub mod kernels;
pub mod kv_write;
pub mod matmul;
pub mod pick_tokens;
pub mod rms_norm;
pub mod rotary_heads;
pub mod squared_norms;
pub mod swiglu;
