//! The cache write (`kv_write`) as one CUDA kernel for burn's CUDA backend without fusion:
//! one unit per written value, its row's slot and first position read from a small table,
//! written into the cache in place (a copy first only when the cache's buffer is shared).

use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;

use crate::CudaPlain;
use crate::ops::cuda::plane_rows::one_unit_each;
use crate::ops::kv_write::{KvWrite, Placement, slice_by_slice};

/// `cache[slot[r], h, start[r] + p, x] = values[r, h, p, x]`; `placement` holds each row's
/// slot and start, one after the other.
#[cube(launch)]
fn kv_write_kernel<E: Float, I: Int>(
    cache: &mut Tensor<E>,
    values: &Tensor<E>,
    placement: &Tensor<I>,
    heads: u32,
    t: u32,
    capacity: u32,
    d: u32,
    #[define(E, I)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i >= values.len() {
        terminate!();
    }
    let x = i % d as usize;
    let p = (i / d as usize) % t as usize;
    let h = (i / (d as usize * t as usize)) % heads as usize;
    let r = i / (d as usize * t as usize * heads as usize);
    let slot = u32::cast_from(placement[2 * r]) as usize;
    let start = u32::cast_from(placement[2 * r + 1]) as usize;
    cache[((slot * heads as usize + h) * capacity as usize + start + p) * d as usize + x] = values[i];
}

impl KvWrite for CudaPlain {
    fn kv_write(cache: FloatTensor<Self>, values: FloatTensor<Self>, at: &Placement) -> FloatTensor<Self> {
        let (cache, values) = (into_contiguous(cache), into_contiguous(values));
        let [_, heads, capacity, d] = cache.meta.shape[..] else { unreachable!("kv_write checked a 4-d cache") };
        let t = values.meta.shape[2];
        let fits = matches!(cache.dtype, DType::F32 | DType::BF16 | DType::F16) && cache.dtype == values.dtype && cache.meta.shape.iter().product::<usize>() < u32::MAX as usize;
        if !fits {
            return slice_by_slice::<Self>(cache, values, at);
        }
        // Written in place when the cache is its buffer's only owner (between steps it is).
        let cache = if cache.can_mut() { cache } else { cache.copy() };
        let table: Vec<i64> = at.slots.iter().zip(&at.starts).flat_map(|(&s, &p)| [s as i64, p as i64]).collect();
        let rows = table.len();
        let placement = burn::tensor::Tensor::<Self, 1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(table, [rows]), &cache.device).into_primitive();
        let (count, dim) = one_unit_each(&cache.client, values.meta.shape.iter().product());
        let dtypes = [cache.dtype.into(), placement.dtype.into()];
        kv_write_kernel::launch::<CudaRuntime>(
            &cache.client.clone(),
            count,
            dim,
            cache.clone().into_tensor_arg(),
            values.into_tensor_arg(),
            placement.into_tensor_arg(),
            heads as u32,
            t as u32,
            capacity as u32,
            d as u32,
            dtypes,
        );
        cache
    }
}
