//! habits trainer: a Llama-family decoder on burn (`model`), the backend operations it and
//! the optimizer run, each with its CUDA kernel and conformance check (`ops`), Hugging Face
//! weights in (`weights`) and out (`export`), the language-model loss (`loss`), the built sets as training data
//! (`data`), continued pretraining (`train`), what pretraining and PPO share (`run`),
//! generation (`generate`), PPO on the Countdown game (`countdown`, `ppo`, `tokenizer`), and
//! the GPU checks, benchmarks and profilers (`diag`).

pub use countdown;
pub mod data;
pub mod diag;
pub mod export;
pub mod generate;
pub mod loss;
pub mod model;
pub mod ops;
pub mod ppo;
pub mod run;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use ops::backend::{Cpu, CpuAutodiff, ModelBackend, TrainBackend};
#[cfg(feature = "cuda")]
pub use ops::backend::{CudaFused, CudaPlain};
