//! habits trainer: a Llama-family decoder on burn (`model`), Hugging Face weights
//! (`weights`), and the language-model loss (`loss`). Continued pretraining, generation
//! and PPO build on these.

pub mod loss;
pub mod model;
pub mod weights;

/// The CPU backend the tests and the tiny profile run on.
pub type Cpu = burn::backend::NdArray<f32>;
/// The CPU backend with gradients.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
