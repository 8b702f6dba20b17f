//! RoPE on a projection's heads (`rotary_heads`) as one CUDA kernel each way for burn's
//! CUDA backend without fusion: one unit per pair `(i, i + head_dim/2)` of one head at one
//! position, reading the input through strides and writing the output contiguous. Forward
//! reads the rows `[batch, seq, heads · head_dim]` and writes the heads `[batch, heads,
//! seq, head_dim]`; backward reads the heads' gradient and writes the rows', rotating by
//! the negated angle. Generation's split of one product of the query, key and value weights
//! (`qkv_heads`) is one kernel too: rotated query and key heads and plain value heads from
//! the product's rows, read through their strides. Values are read in their dtype and
//! computed in f32; the tables are f32.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Tensor as BurnTensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::{empty_like, one_unit_each};
use crate::ops::rotary_heads::{RotaryHeads, composed_qkv_heads, composed_rotary_heads, composed_rotary_heads_backward};

/// `from_*` and `to_*` are the strides, in elements, of the input's and the output's
/// `(batch, head, position)` rows of `head_dim` values.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rotary_kernel<E: Float>(
    input: &Tensor<E>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    output: &mut Tensor<E>,
    from_batch: u32,
    from_head: u32,
    from_position: u32,
    to_batch: u32,
    to_head: u32,
    to_position: u32,
    heads: u32,
    seq: u32,
    half: u32,
    table_batch: u32,
    sign: f32,
    #[define(E)] _dtype: StorageType,
) {
    let p = ABSOLUTE_POS;
    if p >= output.len() / 2 {
        terminate!();
    }
    let half = half as usize;
    let i = p % half;
    let row = p / half;
    let position = row % seq as usize;
    let head = (row / seq as usize) % heads as usize;
    let batch = row / (seq as usize * heads as usize);
    let source = batch * from_batch as usize + head * from_head as usize + position * from_position as usize + i;
    let target = batch * to_batch as usize + head * to_head as usize + position * to_position as usize + i;
    let table = batch * table_batch as usize + position * 2 * half + i;
    let c = cos[table];
    let s = sin[table] * sign;
    let x1 = f32::cast_from(input[source]);
    let x2 = f32::cast_from(input[source + half]);
    output[target] = E::cast_from(x1 * c - x2 * s);
    output[target + half] = E::cast_from(x2 * c + x1 * s);
}

/// Generation's split of one product's rows into rotated query heads, rotated key heads
/// and value heads: one unit per pair `(i, i + half)` of one head (of `heads + 2 ·
/// kv_heads`) at one position, `units` of them. `from_batch` and `from_position` are the
/// rows' strides.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn qkv_heads_kernel<E: Float>(
    rows: &Tensor<E>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    q: &mut Tensor<E>,
    k: &mut Tensor<E>,
    v: &mut Tensor<E>,
    from_batch: u32,
    from_position: u32,
    heads: u32,
    kv_heads: u32,
    seq: u32,
    half: u32,
    table_batch: u32,
    units: u32,
    #[define(E)] _dtype: StorageType,
) {
    let p = ABSOLUTE_POS;
    if p >= units as usize {
        terminate!();
    }
    let all_heads = (heads + 2 * kv_heads) as usize;
    let (half, seq) = (half as usize, seq as usize);
    let i = p % half;
    let head = (p / half) % all_heads;
    let position = (p / (half * all_heads)) % seq;
    let batch = p / (half * all_heads * seq);
    let source = batch * from_batch as usize + position * from_position as usize + head * 2 * half + i;
    let x1 = f32::cast_from(rows[source]);
    let x2 = f32::cast_from(rows[source + half]);
    let table = batch * table_batch as usize + position * 2 * half + i;
    let (c, s) = (cos[table], sin[table]);
    let (r1, r2) = (E::cast_from(x1 * c - x2 * s), E::cast_from(x2 * c + x1 * s));
    let (heads, kv_heads) = (heads as usize, kv_heads as usize);
    if head < heads {
        let target = ((batch * heads + head) * seq + position) * 2 * half + i;
        q[target] = r1;
        q[target + half] = r2;
    } else if head < heads + kv_heads {
        let target = ((batch * kv_heads + head - heads) * seq + position) * 2 * half + i;
        k[target] = r1;
        k[target + half] = r2;
    } else {
        let target = ((batch * kv_heads + head - heads - kv_heads) * seq + position) * 2 * half + i;
        v[target] = rows[source];
        v[target + half] = rows[source + half];
    }
}

/// The tables as f32 `[1 or batch, 1, seq, head_dim]`, contiguous, and how far apart the
/// batch rows' tables are (0: one table for the batch); `None` when they do not fit
/// `[batch, seq, head_dim]`.
fn kernel_tables(
    cos: FloatTensor<CudaPlain>,
    sin: FloatTensor<CudaPlain>,
    [b, t, d]: [usize; 3],
) -> Option<(CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>, u32)> {
    let f32_of = |x: FloatTensor<CudaPlain>| {
        let x = BurnTensor::<CudaPlain, 4>::from_primitive(TensorPrimitive::Float(x)).cast(FloatDType::F32);
        into_contiguous(x.into_primitive().tensor())
    };
    let (cos, sin) = (f32_of(cos), f32_of(sin));
    let [tb, one, tt, td] = cos.meta.shape[..] else { return None };
    let fits = (tb == 1 || tb == b) && one == 1 && tt == t && td == d && sin.meta.shape == cos.meta.shape;
    fits.then(|| (cos, sin, if tb == 1 { 0 } else { (t * d) as u32 }))
}

fn float_dtype(t: &CubeTensor<CudaRuntime>) -> bool {
    matches!(t.dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// Launches the kernel from `input` (read through `from`) into a new contiguous tensor of
/// `out_shape` (written through `to`).
#[allow(clippy::too_many_arguments)]
fn rotate(
    input: CubeTensor<CudaRuntime>,
    (cos, sin, table_batch): (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>, u32),
    out_shape: Vec<usize>,
    [from, to]: [[usize; 3]; 2],
    [heads, seq, half]: [usize; 3],
    sign: f32,
) -> CubeTensor<CudaRuntime> {
    let output = empty_like(&input, out_shape, input.dtype);
    let client = input.client.clone();
    let (count, dim) = one_unit_each(&client, output.meta.shape.num_elements() / 2);
    let dtype = input.dtype;
    rotary_kernel::launch::<CudaRuntime>(
        &client,
        count,
        dim,
        input.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        from[0] as u32,
        from[1] as u32,
        from[2] as u32,
        to[0] as u32,
        to[1] as u32,
        to[2] as u32,
        heads as u32,
        seq as u32,
        half as u32,
        table_batch,
        sign,
        dtype.into(),
    );
    output
}

impl RotaryHeads for CudaPlain {
    fn rotary_heads(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let [b, t, width] = x.meta.shape[..] else { return composed_rotary_heads::<Self>(x, cos, sin, heads) };
        let d = width / heads.max(1);
        let shaped = heads > 0 && width == heads * d && d.is_multiple_of(2) && b * t * width > 0 && b * t * width < u32::MAX as usize;
        let tables = if shaped && float_dtype(&x) { kernel_tables(cos.clone(), sin.clone(), [b, t, d]) } else { None };
        let Some(tables) = tables else { return composed_rotary_heads::<Self>(x, cos, sin, heads) };
        let rows = [t * width, d, width];
        let heads_layout = [heads * t * d, t * d, d];
        rotate(x, tables, vec![b, heads, t, d], [rows, heads_layout], [heads, t, d / 2], 1.0)
    }

    fn qkv_heads(rows: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, [heads, kv_heads]: [usize; 2]) -> [FloatTensor<Self>; 3] {
        // Read through the rows' strides: a view of a wider product needs no copy.
        let rows = if rows.meta.strides.last() == Some(&1) { rows } else { into_contiguous(rows) };
        let [b, t, width] = rows.meta.shape[..] else { return composed_qkv_heads::<Self>(rows, cos, sin, [heads, kv_heads]) };
        let all = heads + 2 * kv_heads;
        let d = width / all.max(1);
        let n = b * t * width;
        let shaped = heads > 0 && width == all * d && d.is_multiple_of(2) && n > 0 && n < u32::MAX as usize;
        let tables = if shaped && float_dtype(&rows) { kernel_tables(cos.clone(), sin.clone(), [b, t, d]) } else { None };
        let Some((cos, sin, table_batch)) = tables else { return composed_qkv_heads::<Self>(rows, cos, sin, [heads, kv_heads]) };
        let [from_batch, from_position] = [rows.meta.strides[0], rows.meta.strides[1]];
        let out = |h: usize| empty_like(&rows, vec![b, h, t, d], rows.dtype);
        let (q, k, v) = (out(heads), out(kv_heads), out(kv_heads));
        let client = rows.client.clone();
        let (count, dim) = one_unit_each(&client, n / 2);
        let dtype = rows.dtype;
        qkv_heads_kernel::launch::<CudaRuntime>(
            &client,
            count,
            dim,
            rows.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            from_batch as u32,
            from_position as u32,
            heads as u32,
            kv_heads as u32,
            t as u32,
            (d / 2) as u32,
            table_batch,
            (n / 2) as u32,
            dtype.into(),
        );
        [q, k, v]
    }

    fn rotary_heads_backward(dy: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        let dy = into_contiguous(dy);
        let [b, heads, t, d] = dy.meta.shape[..] else { return composed_rotary_heads_backward::<Self>(dy, cos, sin) };
        let n = b * heads * t * d;
        let shaped = d.is_multiple_of(2) && n > 0 && n < u32::MAX as usize;
        let tables = if shaped && float_dtype(&dy) { kernel_tables(cos.clone(), sin.clone(), [b, t, d]) } else { None };
        let Some(tables) = tables else { return composed_rotary_heads_backward::<Self>(dy, cos, sin) };
        let width = heads * d;
        let heads_layout = [heads * t * d, t * d, d];
        let rows = [t * width, d, width];
        rotate(dy, tables, vec![b, t, width], [heads_layout, rows], [heads, t, d / 2], -1.0)
    }
}
