//! The backends habits runs on (the CPU for tests and tiny runs; burn's CUDA backend with
//! and without its fusion layer) and the bundles of ops a model (`ModelBackend`) and a
//! training run (`TrainBackend`) need from a backend.

use crate::ops;
use crate::ops::kernels::Kernels;

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
/// RMSNorm, RoPE on the heads, the MLP's gate, the loss's cross-entropy and PPO's entropy, each with its
/// own backward, and generation's attention over a cache, its writes, a decoding step's
/// attention and its token pick.
pub trait ModelBackend:
    ops::attention::CausalAttention
    + ops::attention::cached::CachedAttention
    + ops::decode_attention::DecodeAttention
    + ops::matmul::Matmul
    + ops::rms_norm::RmsNormOp
    + ops::rotary_heads::RotaryHeads
    + ops::swiglu::Swiglu
    + ops::cross_entropy::CrossEntropy
    + ops::entropy::Entropy
    + ops::pick_tokens::PickTokens
    + ops::kv_write::KvWrite
{
}
impl<
    T: ops::attention::CausalAttention
        + ops::attention::cached::CachedAttention
        + ops::decode_attention::DecodeAttention
        + ops::matmul::Matmul
        + ops::rms_norm::RmsNormOp
        + ops::rotary_heads::RotaryHeads
        + ops::swiglu::Swiglu
        + ops::cross_entropy::CrossEntropy
        + ops::entropy::Entropy
        + ops::pick_tokens::PickTokens
        + ops::kv_write::KvWrite,
> ModelBackend for T
{
}

/// A backend the model trains on: with gradients, and the model also runs on its inner
/// backend (generation, evaluation, rollouts), which also runs AdamW's update and the
/// gradients' sums of squares for clipping.
pub trait TrainBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: ModelBackend + ops::adamw::AdamWStep + ops::squared_norms::SquaredNorms> + ModelBackend
{
}
impl<T: burn::tensor::backend::AutodiffBackend<InnerBackend: ModelBackend + ops::adamw::AdamWStep + ops::squared_norms::SquaredNorms> + ModelBackend>
    TrainBackend for T
{
}

/// Which backend a command runs on: a config's `backend` key or a command's `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
}

impl BackendKind {
    /// `cpu` or `cuda`; anything else is one error naming `key` and the two choices.
    pub fn parse(name: &str, key: &str) -> anyhow::Result<Self> {
        match name {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => anyhow::bail!("{key} `{other}`: use \"cpu\" or \"cuda\""),
        }
    }
}

/// Work generic over the training backend, run on the backend chosen at run time by
/// [`on_backend`]. Work without gradients (generation, checks) runs on `B::InnerBackend`.
pub trait BackendWork {
    type Output;
    fn run<B: TrainBackend>(self, device: &B::Device) -> anyhow::Result<Self::Output>;
}

/// Runs `work` on `kind`. On CUDA, burn's fusion layer is on when `kernels.fusion` says so
/// (`HABITS_CUDA_FUSION` overrides it), else when `fusion_by_default`: PPO and generation run
/// without it (on the GPU, a 90M actor trained with fusion generated other rows' answers in
/// a batch, docs/PERF.md), the checks with it, pretraining where it pays off
/// ([`fusion_pays_off`]).
pub fn on_backend<W: BackendWork>(kind: BackendKind, kernels: Kernels, fusion_by_default: bool, work: W) -> anyhow::Result<W::Output> {
    match kind {
        BackendKind::Cpu => work.run::<CpuAutodiff>(&Default::default()),
        BackendKind::Cuda => on_cuda(kernels.fusion.unwrap_or(fusion_by_default), work),
    }
}

/// Whether burn's fusion speeds up training at this compute dtype, as measured on an H200
/// (docs/PERF.md, 1B shape): with f32 matmuls it did (5,331 tokens/s with fusion and
/// autotuning, 2,648 without either); with bf16 matmuls it halved the speed (its fused
/// elementwise kernels made clip + AdamW 313 ms instead of 51 ms).
pub fn fusion_pays_off(compute: crate::model::precision::Compute) -> bool {
    compute.is_none()
}

#[cfg(feature = "cuda")]
fn on_cuda<W: BackendWork>(fusion: bool, work: W) -> anyhow::Result<W::Output> {
    use burn::backend::Autodiff;
    eprintln!("cuda: {} (kernels.fusion or HABITS_CUDA_FUSION=1/0 picks)", if fusion { "with burn's fusion" } else { "without burn's fusion" });
    eprintln!("cuda: the first steps compile and tune kernels (minutes on a 1B model); the steady speed comes after");
    if fusion { work.run::<Autodiff<CudaFused>>(&Default::default()) } else { work.run::<Autodiff<CudaPlain>>(&Default::default()) }
}

#[cfg(not(feature = "cuda"))]
fn on_cuda<W: BackendWork>(_: bool, _: W) -> anyhow::Result<W::Output> {
    Err(without_cuda())
}

/// The one error of every CUDA path in a build without the `cuda` feature.
pub fn without_cuda() -> anyhow::Error {
    anyhow::anyhow!(
        "this trainer was built without CUDA: build it with `cargo build --release -p trainer --features cuda`, or choose the CPU (backend = \"cpu\" in the config, --backend cpu on the command line)"
    )
}
