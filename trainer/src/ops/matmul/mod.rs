//! The projections' matrix product `a · b` (`[m, k] · [k, n]`) as a backend op with its own
//! backward pass, so that a backend can run it, forward and backward, on a library it
//! trusts more than burn's kernels: CUDA without fusion runs it on cuBLAS
//! (`ops::matmul::cublas`). Backends without their own product (the CPU, CUDA with fusion) keep
//! burn's batched `linear`, differentiated by burn, exactly as before (`OWN_PRODUCT`).
//! The attention op's products (`batched_matmul`, scaled, without gradients: the op has its
//! own backward) go the same way.
//!
//! The backward is the usual pair on transposed views (no copies):
//!
//! ```text
//! da = dc · bᵀ        db = aᵀ · dc
//! ```

pub mod check;

#[cfg(feature = "cuda")]
pub(crate) mod cublas;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use crate::ops::kernels::Kernels;

/// A backend that multiplies two matrices, with gradients where it has them.
pub trait Matmul: Backend {
    /// Whether `matmul_2d` is the backend's own product, which the projections then use
    /// (`precision::linear_in`); otherwise they keep burn's `linear`.
    const OWN_PRODUCT: bool = false;

    /// `a · b` for `a` `[m, k]` and `b` `[k, n]` of one float dtype (either may be a
    /// transposed view); burn's `matmul` unless the backend has its own.
    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>, _kernels: Kernels) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }

    /// `alpha · a · b` for `a` `[.., m, k]` and `b` `[.., k, n]` with the same leading
    /// dimensions (either may be a view with the last two swapped), without gradients: for
    /// ops with their own backward pass. burn's `matmul` unless the backend has its own.
    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, alpha: f64, _kernels: Kernels) -> FloatTensor<Self> {
        burns_scaled_matmul::<Self>(a, b, alpha)
    }

    /// Independent products `alpha · a · b` (as `batched_matmul` each), which a backend may
    /// issue together (on CUDA without fusion: one request for all their buffers).
    fn batched_matmuls(products: Vec<(FloatTensor<Self>, FloatTensor<Self>, f64)>, kernels: Kernels) -> Vec<FloatTensor<Self>> {
        products.into_iter().map(|(a, b, alpha)| Self::batched_matmul(a, b, alpha, kernels)).collect()
    }

    /// Whether `b` is a transposed view of a matrix in memory (a `[k, n]` operand whose
    /// columns lie one after another), so that its gradient is best written as the
    /// transpose of a row-major `[n, k]` product: the view's own layout, which the ops
    /// back to the stored matrix then read as it lies. No by default.
    fn is_transposed_view(_b: &FloatTensor<Self>) -> bool {
        false
    }

    /// `t` laid out row-major in memory (a copy where it is a view in another layout), as
    /// a new untracked tensor: for a weight as it is built, so that the casts to the compute
    /// dtype that read it at every pass read it in order (a cast of a transposed view reads
    /// it one column at a time). Unchanged by default.
    fn row_major(t: FloatTensor<Self>) -> FloatTensor<Self> {
        t
    }
}

/// `alpha · a · b` with burn's `matmul` (the product first, as cuBLAS scales it).
pub(crate) fn burns_scaled_matmul<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>, alpha: f64) -> FloatTensor<B> {
    let product = B::float_matmul(a, b);
    if alpha == 1.0 { product } else { B::float_mul_scalar(product, alpha.into()) }
}

/// [`Matmul::matmul_2d`] on tensors.
pub fn matmul_2d<B: Matmul>(a: Tensor<B, 2>, b: Tensor<B, 2>, kernels: Kernels) -> Tensor<B, 2> {
    let raw = |t: Tensor<B, 2>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::matmul_2d(raw(a), raw(b), kernels)))
}

/// [`Matmul::row_major`] on tensors.
pub fn row_major<B: Matmul, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::row_major(t.into_primitive().tensor())))
}

/// [`Matmul::batched_matmul`] on tensors: `alpha · a · b` over the leading dimensions,
/// without gradients.
pub fn batched_matmul<B: Matmul, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>, alpha: f64, kernels: Kernels) -> Tensor<B, D> {
    let raw = |t: Tensor<B, D>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::batched_matmul(raw(a), raw(b), alpha, kernels)))
}

impl Matmul for crate::Cpu {}
#[cfg(feature = "cuda")]
impl Matmul for crate::CudaFused {}

/// How a `[rows, cols]` operand lies in memory (for backends that hand it to a BLAS).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum Layout {
    /// Rows one after another, `ld` elements apart.
    RowMajor { ld: usize },
    /// A transposed view: columns one after another, `ld` elements apart.
    ColMajor { ld: usize },
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Layout {
    /// The layout of `strides` for a `[rows, cols]` matrix, or `None` when neither dimension
    /// is contiguous (such an operand is copied first).
    pub(crate) fn of([rows, cols]: [usize; 2], [row_stride, col_stride]: [usize; 2]) -> Option<Layout> {
        if col_stride == 1 || cols == 1 {
            let ld = if rows == 1 { cols } else { row_stride };
            if ld >= cols {
                return Some(Layout::RowMajor { ld });
            }
        }
        if row_stride == 1 || rows == 1 {
            let ld = if cols == 1 { rows } else { col_stride };
            if ld >= rows {
                return Some(Layout::ColMajor { ld });
            }
        }
        None
    }
}

/// How a batch of `[rows, cols]` operands (`[.., rows, cols]`) lies in memory: the number
/// of matrices, the distance between consecutive ones, and each one's layout.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct BatchLayout {
    pub count: usize,
    pub stride: usize,
    pub matrix: Layout,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl BatchLayout {
    /// The layout of a tensor of `shape` and `strides` (at least two dimensions), or `None`
    /// when its leading dimensions are not one evenly strided run of matrices or a matrix
    /// has no contiguous dimension (such an operand is copied first).
    pub(crate) fn of(shape: &[usize], strides: &[usize]) -> Option<BatchLayout> {
        let rank = shape.len();
        assert!(rank >= 2 && strides.len() == rank, "a batch of matrices has at least two dimensions");
        let matrix = Layout::of([shape[rank - 2], shape[rank - 1]], [strides[rank - 2], strides[rank - 1]])?;
        // Dimensions of one element do not step; the others, outermost first, must nest.
        let stepping: Vec<(usize, usize)> = shape[..rank - 2].iter().copied().zip(strides[..rank - 2].iter().copied()).filter(|&(n, _)| n > 1).collect();
        let nested = stepping.windows(2).all(|pair| pair[0].1 == pair[1].1 * pair[1].0);
        let count = stepping.iter().map(|&(n, _)| n).product();
        let stride = stepping.last().map_or(0, |&(_, stride)| stride);
        nested.then_some(BatchLayout { count, stride, matrix })
    }
}

/// The backward step (its products with the forward's kernel settings): the state is both
/// operands.
#[derive(Debug)]
struct MatmulBackward(Kernels);

impl<B: Matmul> Backward<B, 2> for MatmulBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dc = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        let [a_node, b_node] = ops.parents;
        // A transposed view's gradient comes as `(dcᵀ · a)ᵀ`, laid out as the matrix it views.
        let b_transposed = b_node.is_some() && B::is_transposed_view(&b);
        // Both products at once when both gradients are wanted.
        let mut products = Vec::with_capacity(2);
        if a_node.is_some() {
            products.push((dc.clone(), B::float_transpose(b), 1.0));
        }
        if b_node.is_some() {
            products.push(if b_transposed { (B::float_transpose(dc), a, 1.0) } else { (B::float_transpose(a), dc, 1.0) });
        }
        let mut gradients = B::batched_matmuls(products, self.0);
        if b_transposed {
            let db_transposed = gradients.pop().expect("b's gradient, last");
            gradients.push(B::float_transpose(db_transposed));
        }
        let mut gradients = gradients.into_iter();
        for node in [a_node, b_node].into_iter().flatten() {
            grads.register::<B>(node.id, gradients.next().expect("one gradient per parent"));
        }
    }
}

impl<B: Matmul, C: CheckpointStrategy> Matmul for Autodiff<B, C> {
    const OWN_PRODUCT: bool = B::OWN_PRODUCT;

    fn matmul_2d(a: FloatTensor<Self>, b: FloatTensor<Self>, kernels: Kernels) -> FloatTensor<Self> {
        match MatmulBackward(kernels).prepare::<C>([a.node.clone(), b.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::matmul_2d(a.primitive.clone(), b.primitive.clone(), kernels);
                prep.finish((a.primitive, b.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_2d(a.primitive, b.primitive, kernels)),
        }
    }

    fn row_major(t: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::row_major(<Self as AutodiffBackend>::inner(t)))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::{Cpu, CpuAutodiff};

    fn random(dims: [usize; 2], seed: u64) -> Tensor<CpuAutodiff, 2> {
        CpuAutodiff::seed(&Default::default(), seed);
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn max_gap(a: Tensor<Cpu, 2>, b: Tensor<Cpu, 2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Values and both gradients equal burn's matmul differentiated by burn, for plain
    /// operands and for transposed views of them, on a loss that weighs every output
    /// differently.
    #[test]
    fn values_and_gradients_equal_burns_matmul() {
        let [m, k, n] = [5, 7, 3];
        let weights = random([m, n], 9).detach();
        for (a_transposed, b_transposed) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = if a_transposed { random([k, m], 1) } else { random([m, k], 1) }.require_grad();
            let b = if b_transposed { random([n, k], 2) } else { random([k, n], 2) }.require_grad();
            let view = |t: &Tensor<CpuAutodiff, 2>, transposed: bool| if transposed { t.clone().transpose() } else { t.clone() };
            let run = |ours: bool| {
                let (x, y) = (view(&a, a_transposed), view(&b, b_transposed));
                let c = if ours { matmul_2d(x, y, Kernels::default()) } else { x.matmul(y) };
                let grads = (c.clone() * weights.clone()).sum().backward();
                (c.inner(), a.grad(&grads).expect("a gradient of a"), b.grad(&grads).expect("a gradient of b"))
            };
            let (ours, theirs) = (run(true), run(false));
            let case = format!("a transposed {a_transposed}, b transposed {b_transposed}");
            assert_eq!(ours.0.dims(), [m, n], "{case}");
            assert!(max_gap(ours.0, theirs.0) < 1e-5, "values, {case}");
            assert!(max_gap(ours.1, theirs.1) < 1e-5, "da, {case}");
            assert!(max_gap(ours.2, theirs.2) < 1e-5, "db, {case}");
        }
    }

    /// A weight laid out row-major keeps its values, and as a parameter of an autodiff
    /// model it is a fresh leaf that gets its gradient.
    #[test]
    fn a_row_major_weight_keeps_its_values_and_learns() {
        let stored = random([3, 5], 8).require_grad();
        let view = stored.clone().transpose();
        let laid = row_major(view.clone());
        assert_eq!(laid.clone().into_data(), view.clone().into_data());
        let weight = laid.require_grad();
        let x = random([2, 5], 9);
        let grads = matmul_2d(x.clone(), weight.clone(), Kernels::default()).sum().backward();
        let want = x.inner().transpose().matmul(Tensor::<Cpu, 2>::ones([2, 3], &Default::default()));
        assert!(max_gap(weight.grad(&grads).expect("the weight's gradient"), want) < 1e-6);
        assert!(stored.grad(&grads).is_none(), "the matrix it was laid out from is not its parent");
    }

    #[test]
    fn layouts_are_read_from_strides() {
        assert_eq!(Layout::of([4, 3], [3, 1]), Some(Layout::RowMajor { ld: 3 }));
        assert_eq!(Layout::of([4, 3], [8, 1]), Some(Layout::RowMajor { ld: 8 }), "rows of a wider buffer");
        assert_eq!(Layout::of([4, 3], [1, 4]), Some(Layout::ColMajor { ld: 4 }), "a transposed [3, 4]");
        assert_eq!(Layout::of([1, 3], [0, 1]), Some(Layout::RowMajor { ld: 3 }), "one row: its stride does not matter");
        assert_eq!(Layout::of([3, 1], [1, 7]), Some(Layout::RowMajor { ld: 1 }), "one column");
        assert_eq!(Layout::of([4, 3], [6, 2]), None, "every other column");
        assert_eq!(Layout::of([4, 3], [2, 1]), None, "overlapping rows");
    }

    #[test]
    fn batches_are_read_from_strides() {
        let row = |ld| Layout::RowMajor { ld };
        let of = BatchLayout::of;
        assert_eq!(of(&[4, 3], &[3, 1]), Some(BatchLayout { count: 1, stride: 0, matrix: row(3) }), "one matrix");
        assert_eq!(of(&[2, 5, 4, 3], &[60, 12, 3, 1]), Some(BatchLayout { count: 10, stride: 12, matrix: row(3) }), "contiguous");
        // [batch, heads, seq, dim] as a view of [batch, seq, heads, dim] (swapped heads and seq).
        assert_eq!(of(&[1, 5, 4, 3], &[60, 3, 15, 1]), Some(BatchLayout { count: 5, stride: 3, matrix: row(15) }), "heads of one sequence");
        assert_eq!(of(&[2, 5, 4, 3], &[60, 3, 15, 1]), None, "heads of two sequences are not evenly strided");
        assert_eq!(
            of(&[2, 1, 3, 4], &[12, 99, 1, 3]),
            Some(BatchLayout { count: 2, stride: 12, matrix: Layout::ColMajor { ld: 3 } }),
            "transposed, a dimension of one"
        );
        assert_eq!(of(&[3, 4, 3], &[0, 3, 1]), Some(BatchLayout { count: 3, stride: 0, matrix: row(3) }), "one matrix repeated");
        assert_eq!(of(&[3, 4, 3], &[12, 6, 2]), None, "every other column");
    }

    /// The default batched product is burn's `matmul`, scaled after the product.
    #[test]
    fn the_batched_product_is_burns_matmul_scaled() {
        let a = random([6, 4], 5).inner().reshape([2, 3, 4]);
        let b = random([8, 5], 6).inner().reshape([2, 4, 5]);
        let raw = |t: Tensor<Cpu, 3>| t.into_primitive().tensor();
        let ours = Tensor::<Cpu, 3>::from_primitive(TensorPrimitive::Float(Cpu::batched_matmul(raw(a.clone()), raw(b.clone()), 0.25, Kernels::default())));
        let theirs = a.matmul(b).mul_scalar(0.25);
        assert_eq!((ours - theirs).abs().max().into_scalar(), 0.0);
    }

    /// Only the operands that need a gradient get one; a constant operand stays without.
    #[test]
    fn a_constant_operand_gets_no_gradient() {
        let a = random([4, 6], 3).require_grad();
        let b = random([6, 2], 4);
        let grads = matmul_2d(a.clone(), b.clone(), Kernels::default()).sum().backward();
        assert!(a.grad(&grads).is_some());
        assert!(b.grad(&grads).is_none());
        // d(sum(a · b)) / da = 1 · bᵀ: every row of the gradient is b's row sums.
        let expected = b.inner().sum_dim(1).transpose().expand([4, 6]);
        assert!(max_gap(a.grad(&grads).unwrap(), expected) < 1e-5);
    }
}
