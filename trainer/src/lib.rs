//! habits trainer: a Llama-family decoder on burn (`model`), Hugging Face weights
//! (`weights`), the language-model loss (`loss`) and its cross-entropy op
//! (`cross_entropy`), the built sets as training data (`data`), continued pretraining
//! (`train`), generation (`generate`, with its benchmark `generate_bench`), PPO on the Countdown game (`countdown`, `ppo`, `tokenizer`),
//! op-by-op agreement between backends (`backend_check`) and rows of a batch against
//! themselves alone (`batch_check`), where a training step's time goes (`ops_bench`) and
//! where the host's goes (`host_profile`) and the GPU's (`gpu_profile`).

pub mod backend_check;
pub mod batch_check;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
mod cross_entropy_kernel;
pub use countdown;
pub mod data;
pub mod generate;
pub mod generate_bench;
pub mod gpu_profile;
pub mod host_profile;
pub mod loss;
pub mod model;
pub mod ops_bench;
#[cfg(feature = "cuda")]
mod plane_rows;
pub mod ppo;
pub mod tokenizer;
pub mod train;
pub mod weights;

/// The CPU backend the tests and the tiny profile run on.
pub type Cpu = burn::backend::NdArray<f32>;
/// The CPU backend with gradients.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
/// burn's CUDA backend with its fusion layer ...
#[cfg(feature = "cuda")]
pub type CudaFused = burn::backend::Cuda<f32, i32>;
/// ... and without it (`HABITS_CUDA_FUSION=0`): one kernel per op.
#[cfg(feature = "cuda")]
pub type CudaPlain = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// A backend the model runs on: burn's, plus the attention op, the projections' matmul,
/// RMSNorm, RoPE on the heads, the MLP's gate and the loss's cross-entropy, each with its
/// own backward.
pub trait ModelBackend:
    model::causal_attention::CausalAttention
    + model::matmul::Matmul
    + model::rms_norm::RmsNormOp
    + model::rotary_heads::RotaryHeads
    + model::swiglu::Swiglu
    + cross_entropy::CrossEntropy
{
}
impl<
    T: model::causal_attention::CausalAttention
        + model::matmul::Matmul
        + model::rms_norm::RmsNormOp
        + model::rotary_heads::RotaryHeads
        + model::swiglu::Swiglu
        + cross_entropy::CrossEntropy,
> ModelBackend for T
{
}

/// A backend the model trains on: with gradients, and the model also runs on its inner
/// backend (generation, evaluation, rollouts), which also runs AdamW's update and the
/// gradients' sums of squares for clipping.
pub trait TrainBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: ModelBackend + train::adamw::AdamWStep + train::squared_norms::SquaredNorms> + ModelBackend
{
}
impl<T: burn::tensor::backend::AutodiffBackend<InnerBackend: ModelBackend + train::adamw::AdamWStep + train::squared_norms::SquaredNorms> + ModelBackend>
    TrainBackend for T
{
}
