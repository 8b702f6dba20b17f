//! The cache write (`kv_write`) as one CUDA kernel for burn's CUDA backend without fusion:
//! one unit per written key and its value, its row's first position and block read from
//! the placement's table, written into the caches in place (a copy first only when a
//! cache's buffer is shared).

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::one_unit_each;
use crate::ops::kv_write::{KvWrite, Placement, slice_by_slice};

/// `cache[b, h, q % block, x] = values[r, h, p, x]` for the keys and the values, where `q =
/// start[r] + p` and `b` is row `r`'s block `q / block`; `placement` holds each row's start,
/// first visible position and blocks, `stride` numbers a row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn kv_write_kernel<E: Float, I: Int>(
    k_cache: &mut Tensor<E>,
    v_cache: &mut Tensor<E>,
    k: &Tensor<E>,
    v: &Tensor<E>,
    placement: &Tensor<I>,
    heads: u32,
    t: u32,
    block: u32,
    d: u32,
    stride: u32,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i >= k.len() {
        terminate!();
    }
    let x = i % d as usize;
    let p = (i / d as usize) % t as usize;
    let h = (i / (d as usize * t as usize)) % heads as usize;
    let r = i / (d as usize * t as usize * heads as usize);
    let row_at = r * stride as usize;
    let q = u32::cast_from(placement[row_at]) as usize + p;
    let b = u32::cast_from(placement[row_at + 2 + q / block as usize]) as usize;
    let at = ((b * heads as usize + h) * block as usize + q % block as usize) * d as usize + x;
    k_cache[at] = k[i];
    v_cache[at] = v[i];
}

impl KvWrite for CudaPlain {
    fn kv_write(caches: [FloatTensor<Self>; 2], values: [FloatTensor<Self>; 2], at: &Placement<Self>) -> [FloatTensor<Self>; 2] {
        let ([k_cache, v_cache], [k, v]) = (caches.map(into_contiguous), values.map(into_contiguous));
        let [_, heads, block, d] = k_cache.meta.shape[..] else { unreachable!("kv_write checked a 4-d cache") };
        let t = k.meta.shape[2];
        let dtype = k_cache.dtype;
        let fits = matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
            && [&v_cache, &k, &v].iter().all(|x| x.dtype == dtype)
            && k_cache.meta.shape.iter().product::<usize>() < u32::MAX as usize;
        if !fits {
            return [slice_by_slice::<Self>(k_cache, k, at), slice_by_slice::<Self>(v_cache, v, at)];
        }
        // Written in place when a cache is its buffer's only owner (between steps it is).
        let owned = |cache: CubeTensor<CudaRuntime>| if cache.can_mut() { cache } else { cache.copy() };
        let (k_cache, v_cache) = (owned(k_cache), owned(v_cache));
        let placement = into_contiguous(at.table.clone().into_primitive());
        let (count, dim) = one_unit_each(&k_cache.client, k.meta.shape.iter().product());
        let dtypes = [dtype.into(), placement.dtype.into()];
        kv_write_kernel::launch::<CudaRuntime>(
            &k_cache.client.clone(),
            count,
            dim,
            k_cache.clone().into_tensor_arg(),
            v_cache.clone().into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            placement.into_tensor_arg(),
            heads as u32,
            t as u32,
            block as u32,
            d as u32,
            (2 + at.width) as u32,
            dtypes,
        );
        [k_cache, v_cache]
    }
}
