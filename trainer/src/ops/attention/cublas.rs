//! The attention op on burn's CUDA backend without fusion: the products of the staircase
//! plan (`staircase`) on cuBLAS, the softmax and its backward one kernel each
//! (`softmax_kernel`).
//!
//! The scores of each head are kept as the staircase of chunks of `Kernels::attention_chunk`
//! query positions (`HABITS_ATTENTION_CHUNK`, default 256), so the
//! products, the kernels and the probabilities kept for the backward pass touch only the
//! keys each chunk needs. Each block product is one strided batch over every head on
//! cubecl's stream (the buffers' addresses in one request per group of products, which also
//! orders them after the kernels cubecl queued before). Grouped key/value heads are
//! repeated to the query heads for the products (their copies are `seq · head_dim` a head,
//! small beside the scores) and their gradients summed back over each group.
//!
//! Where the flash-attention kernels take the inputs (`flash`: bf16 or f16, heads
//! of 64, whole 64-position blocks) they run instead, and the scores are never written.
//! Without cuBLAS (see `ops::matmul::cublas`), or for inputs the kernels do not take, the
//! attention op's generic passes run (`causal_attention`).

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorMetadata, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;

use crate::CudaPlain;
use crate::ops::attention::flash::Flash;
use crate::ops::attention::softmax_kernel::{kernels_take, staircase_softmax, staircase_softmax_backward};
use crate::ops::attention::staircase::{BlockProduct, Buffer, Operand, Staircase};
use crate::ops::attention::{
    CausalAttention, Kept, composed_causal_softmax, composed_causal_softmax_backward, forward_keeping_probabilities, gradients, repeat_kv,
};
use crate::ops::cuda::stream::with_addresses;
use crate::ops::kernels::Kernels;
use crate::ops::matmul::Layout;
use crate::ops::matmul::cublas::{Cublas, Placed, RawProduct, cublas_for, cublas_usable, data_type, raw_gemm};

/// The attention's inputs as the staircase reads them: contiguous, keys and values repeated
/// to the query heads, one dtype.
struct Heads {
    q: CubeTensor<CudaRuntime>,
    k: CubeTensor<CudaRuntime>,
    v: CubeTensor<CudaRuntime>,
    /// `[batch, heads, kv_heads, seq, head_dim]`
    dims: [usize; 5],
    plan: Staircase,
    cublas: Cublas,
}

impl Heads {
    /// The inputs, or `None` when the staircase does not run on them (no cuBLAS, mixed or
    /// other dtypes, sizes the kernels do not index).
    fn of(q: &CubeTensor<CudaRuntime>, k: &CubeTensor<CudaRuntime>, v: &CubeTensor<CudaRuntime>, kernels: Kernels) -> Option<Heads> {
        let (qs, ks) = (q.shape(), k.shape());
        let dims = [qs[0], qs[1], ks[1], qs[2], qs[3]];
        let [b, h, kv, s, d] = dims;
        let same = q.dtype == k.dtype && q.dtype == v.dtype && data_type(q.dtype).is_some();
        let plan = Staircase::new(s, kernels.attention_chunk);
        let sizes = b * h * s * d > 0 && kv > 0 && h % kv == 0 && b * h * plan.per_head() < i32::MAX as usize;
        if !(cublas_usable(kernels) && same && sizes && kernels_take(q, plan, b * h)) {
            return None;
        }
        let cublas = cublas_for(&q.client, q.device.index as i32)?;
        let heads = |x: &CubeTensor<CudaRuntime>| into_contiguous(repeat_kv(tensor(x.clone()), h).into_primitive().tensor());
        Some(Heads { q: into_contiguous(q.clone()), k: heads(k), v: heads(v), dims, plan, cublas })
    }

    fn head_count(&self) -> usize {
        self.dims[0] * self.dims[1]
    }

    /// A new `[batch, heads, seq, head_dim]` tensor.
    fn new_heads(&self) -> CubeTensor<CudaRuntime> {
        let [b, h, _, s, d] = self.dims;
        crate::ops::cuda::plane_rows::empty_like(&self.q, vec![b, h, s, d], self.q.dtype)
    }

    /// A new staircase of scores, `[batch, heads, per_head]`.
    fn new_staircase(&self) -> CubeTensor<CudaRuntime> {
        let [b, h, ..] = self.dims;
        crate::ops::cuda::plane_rows::empty_like(&self.q, vec![b, h, self.plan.per_head()], self.q.dtype)
    }

    /// Issues `products` on cuBLAS, each one strided batch over the heads, reading and
    /// writing `buffers`.
    fn run(&self, products: &[BlockProduct], buffers: &[(Buffer, &CubeTensor<CudaRuntime>)]) {
        let tensors: Vec<&CubeTensor<CudaRuntime>> = buffers.iter().map(|(_, t)| *t).collect();
        let count = self.head_count();
        with_addresses(&self.q.client, &tensors, |addresses| {
            let place = |o: Operand| {
                let i = buffers.iter().position(|(b, _)| *b == o.buffer).unwrap_or_else(|| panic!("the staircase's {:?} buffer was not given", o.buffer));
                let t = buffers[i].1;
                let layout = if o.transposed { Layout::ColMajor { ld: o.ld } } else { Layout::RowMajor { ld: o.ld } };
                let per_head = t.meta.shape.iter().product::<usize>() / count;
                Placed { at: addresses[i] + (o.offset * t.dtype.size()) as u64, layout, stride: per_head }
            };
            for p in products {
                let raw =
                    RawProduct { shape: p.shape, a: place(p.a), b: place(p.b), out: place(p.out), count, alpha: p.alpha, beta: p.beta, dtype: self.q.dtype };
                // SAFETY: the addresses are the buffers' (held until this returns); the plan's
                // blocks lie inside each head's buffer (`staircase` tests) and the products
                // run on cubecl's stream after the work queued before this request.
                unsafe { raw_gemm(self.cublas, &raw) };
            }
        });
    }

    /// `[batch, heads, seq, head_dim]` gradients of the repeated heads summed over each
    /// group: `[batch, kv_heads, seq, head_dim]`.
    fn summed_over_groups(&self, x: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
        let [b, h, kv, s, d] = self.dims;
        if h == kv {
            return x;
        }
        tensor::<4>(x).reshape([b, kv, h / kv, s, d]).sum_dim(2).reshape([b, kv, s, d]).into_primitive().tensor()
    }
}

/// `[batch, heads, seq, seq]` scores as one staircase chunk a head, when the kernels
/// take them: the head count and the plan.
fn square(scores: &CubeTensor<CudaRuntime>) -> Option<(usize, Staircase)> {
    let &[b, h, s, keys] = &scores.meta.shape[..] else { return None };
    let plan = Staircase::new(s, s);
    (s == keys && kernels_take(scores, plan, b * h)).then_some((b * h, plan))
}

fn tensor<const D: usize>(x: CubeTensor<CudaRuntime>) -> Tensor<CudaPlain, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

impl CausalAttention for CudaPlain {
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64, kernels: Kernels) -> FloatTensor<Self> {
        Self::attention_forward(q, k, v, scale, kernels).0
    }

    fn attention_forward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f64, kernels: Kernels) -> (FloatTensor<Self>, Kept<Self>) {
        if let Some(flash) = Flash::of(&q, &k, &v, kernels) {
            let (out, lse) = flash.forward(scale);
            return (out.clone(), Kept::LogSumExp { out, lse });
        }
        let Some(heads) = Heads::of(&q, &k, &v, kernels) else {
            let (y, p) = forward_keeping_probabilities::<Self>(q, k, v, scale, kernels);
            return (y, Kept::Probabilities(p));
        };
        let d = heads.dims[4];
        let scores = heads.new_staircase();
        heads.run(&heads.plan.scores(d, scale), &[(Buffer::Q, &heads.q), (Buffer::K, &heads.k), (Buffer::Scores, &scores)]);
        let p = staircase_softmax(scores, heads.plan, heads.head_count());
        let y = heads.new_heads();
        heads.run(&heads.plan.values(d), &[(Buffer::Probabilities, &p), (Buffer::V, &heads.v), (Buffer::Y, &y)]);
        (y, Kept::Probabilities(p))
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        kept: Kept<Self>,
        dy: FloatTensor<Self>,
        scale: f64,
        kernels: Kernels,
    ) -> [FloatTensor<Self>; 3] {
        let p = match kept {
            Kept::LogSumExp { out, lse } => {
                let flash = Flash::of(&q, &k, &v, kernels).expect("the attention's forward pass ran flash attention on inputs its backward pass does not take");
                return flash.backward(out, lse, dy, scale);
            }
            Kept::Probabilities(p) => p,
        };
        // The forward pass kept `[batch, heads, seq, seq]` probabilities when it fell back.
        let heads = Heads::of(&q, &k, &v, kernels).filter(|_| p.meta.shape.len() == 3);
        let Some(heads) = heads else {
            return gradients::<Self>(q, k, v, p, dy, scale, kernels);
        };
        let [b, h, _, _, d] = heads.dims;
        assert_eq!(
            p.meta.shape[..],
            [b, h, heads.plan.per_head()],
            "the attention's probabilities were kept for another chunk width than {} (the kernel settings changed between a forward pass and its backward)",
            heads.plan.chunk
        );
        let dy = into_contiguous(dy);
        let (dp, dv) = (heads.new_staircase(), heads.new_heads());
        let buffers = [(Buffer::DY, &dy), (Buffer::V, &heads.v), (Buffer::DProbabilities, &dp), (Buffer::Probabilities, &p), (Buffer::DV, &dv)];
        heads.run(&heads.plan.value_gradients(d), &buffers);
        let ds = staircase_softmax_backward(p, dp, heads.plan, heads.head_count());
        let (dq, dk) = (heads.new_heads(), heads.new_heads());
        let buffers = [(Buffer::DScores, &ds), (Buffer::K, &heads.k), (Buffer::DQ, &dq), (Buffer::Q, &heads.q), (Buffer::DK, &dk)];
        heads.run(&heads.plan.query_key_gradients(d, scale), &buffers);
        [dq, heads.summed_over_groups(dk), heads.summed_over_groups(dv)]
    }

    fn causal_softmax(scores: FloatTensor<Self>) -> FloatTensor<Self> {
        let scores = into_contiguous(scores);
        let Some((heads, plan)) = square(&scores) else {
            return composed_causal_softmax::<Self>(scores);
        };
        staircase_softmax(scores, plan, heads)
    }

    fn causal_softmax_backward(p: FloatTensor<Self>, dp: FloatTensor<Self>) -> FloatTensor<Self> {
        let (p, dp) = (into_contiguous(p), into_contiguous(dp));
        let Some((heads, plan)) = square(&p).filter(|_| dp.dtype == p.dtype && dp.meta.shape == p.meta.shape) else {
            return composed_causal_softmax_backward::<Self>(p, dp);
        };
        staircase_softmax_backward(p, dp, plan, heads)
    }
}
