//! Writing rows' new keys or values into a paged key/value cache, each row at its own
//! positions, as one backend op: generation's decoding step writes every row's new
//! position (rows are at different lengths once new prompts take finished rows' places),
//! and a prefill writes new prompts into the blocks they take.
//!
//! A cache is `[blocks, heads, block, head_dim]`: fixed-size blocks of positions, and each
//! row has a table of the blocks that hold its positions in order (position `p` of a row is
//! position `p % block` of its table's block `p / block`), so a row holds only the blocks
//! its length needs and blocks go from finished rows to new ones without moving anything.
//! A cache of one block a row as long as the longest row is the contiguous cache.
//!
//! Composed from burn's ops it is one slice assignment per row and block; CUDA without
//! fusion runs one kernel (`kernel`) that writes every row's positions in place.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

/// Where each row of a write goes and what its queries see: its table of blocks, the first
/// position it writes, and the first position its queries see (a decoding step's
/// attention, `ops::decode_attention`), on the host and, on the device, as one row after
/// the other of `2 + width` numbers: start, first, then the row's blocks (padded with block
/// 0 up to `width`), uploaded once for every layer of a step.
#[derive(Clone, Debug)]
pub struct Placement<B: Backend> {
    pub blocks: Vec<Vec<usize>>,
    pub starts: Vec<usize>,
    pub firsts: Vec<usize>,
    /// Block numbers a row's entry of `table` has room for.
    pub width: usize,
    pub table: Tensor<B, 1, Int>,
}

impl<B: Backend> Placement<B> {
    /// Rows holding the blocks `blocks` (no block in two rows, but for rows whose writes
    /// are thrown away), each written from its `starts` position (and seeing from there).
    pub fn new(blocks: Vec<Vec<usize>>, starts: Vec<usize>, device: &B::Device) -> Self {
        let firsts = starts.clone();
        Self::seeing(blocks, starts, firsts, device)
    }

    /// Rows holding the blocks `blocks`, each written from its `starts` position, its
    /// queries seeing its positions from `firsts` (at most its start) on.
    pub fn seeing(blocks: Vec<Vec<usize>>, starts: Vec<usize>, firsts: Vec<usize>, device: &B::Device) -> Self {
        assert_eq!(blocks.len(), starts.len(), "{} rows need as many starts, not {}", blocks.len(), starts.len());
        assert_eq!(blocks.len(), firsts.len(), "{} rows need as many first positions, not {}", blocks.len(), firsts.len());
        assert!(firsts.iter().zip(&starts).all(|(f, s)| f <= s), "a row's first visible position comes before its writes");
        assert!(blocks.iter().all(|b| !b.is_empty()), "every row holds at least one block");
        let width = blocks.iter().map(Vec::len).max().unwrap_or(1);
        let mut table = Vec::with_capacity(blocks.len() * (2 + width));
        for ((row, &start), &first) in blocks.iter().zip(&starts).zip(&firsts) {
            table.extend([start as i64, first as i64]);
            table.extend(row.iter().map(|&b| b as i64).chain(std::iter::repeat(0)).take(width));
        }
        let table = Tensor::from_data(TensorData::new(table, [blocks.len() * (2 + width)]), device);
        Placement { blocks, starts, firsts, width, table }
    }

    /// Rows of one block each, the contiguous cache (`[slots, heads, capacity, head_dim]`
    /// with a slot a row): row `i` in slot `slots[i]`.
    pub fn in_slots(slots: &[usize], starts: Vec<usize>, firsts: Vec<usize>, device: &B::Device) -> Self {
        Self::seeing(slots.iter().map(|&s| vec![s]).collect(), starts, firsts, device)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.blocks.len()
    }
}

/// A backend that writes rows into a cache.
pub trait KvWrite: Backend {
    /// Each of `caches` (the keys' and the values', `[blocks, heads, block, head_dim]`)
    /// with its `values` (`[rows, heads, t, head_dim]`, the same dtype) written at row
    /// `i`'s positions `starts[i]..starts[i] + t` (through its table of blocks, each within
    /// it); in place where the backend can.
    fn kv_write(caches: [FloatTensor<Self>; 2], values: [FloatTensor<Self>; 2], at: &Placement<Self>) -> [FloatTensor<Self>; 2] {
        let [k_cache, v_cache] = caches;
        let [k, v] = values;
        [slice_by_slice::<Self>(k_cache, k, at), slice_by_slice::<Self>(v_cache, v, at)]
    }
}

/// [`KvWrite::kv_write`] from burn's ops: one slice assignment per row and block.
pub(crate) fn slice_by_slice<B: Backend>(cache: FloatTensor<B>, values: FloatTensor<B>, at: &Placement<B>) -> FloatTensor<B> {
    let mut cache = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(cache));
    let values = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(values));
    let [_, heads, t, d] = values.dims();
    let block = cache.dims()[2];
    for (row, (blocks, &start)) in at.blocks.iter().zip(&at.starts).enumerate() {
        let mut p = start;
        while p < start + t {
            let (b, offset) = (blocks[p / block], p % block);
            let n = (block - offset).min(start + t - p);
            let piece = values.clone().slice([row..row + 1, 0..heads, p - start..p - start + n, 0..d]);
            cache = cache.slice_assign([b..b + 1, 0..heads, offset..offset + n, 0..d], piece);
            p += n;
        }
    }
    cache.into_primitive().tensor()
}

/// Row `i`'s positions `0..visible` of `cache` (`[blocks, heads, block, head_dim]`), read
/// through its table of blocks: `[rows, heads, visible, head_dim]` (positions past a row's
/// blocks read block 0).
pub fn gather_rows<B: Backend>(cache: Tensor<B, 4>, at: &Placement<B>, visible: usize) -> Tensor<B, 4> {
    let [_, heads, block, d] = cache.dims();
    let per_row = visible.div_ceil(block).max(1);
    let rows = at.rows();
    let index: Vec<i64> = at.blocks.iter().flat_map(|b| b.iter().map(|&b| b as i64).chain(std::iter::repeat(0)).take(per_row)).collect();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows * per_row]), &cache.device());
    cache.select(0, index).reshape([rows, per_row, heads, block, d]).swap_dims(1, 2).reshape([rows, heads, per_row * block, d]).slice([
        0..rows,
        0..heads,
        0..visible,
        0..d,
    ])
}

/// [`KvWrite::kv_write`] on tensors, after checking the placement against the shapes.
pub fn kv_write<B: KvWrite>(caches: [Tensor<B, 4>; 2], values: [Tensor<B, 4>; 2], at: &Placement<B>) -> [Tensor<B, 4>; 2] {
    let ([blocks, heads, block, d], [rows, value_heads, t, value_d]) = (caches[0].dims(), values[0].dims());
    assert!(caches[1].dims() == caches[0].dims() && values[1].dims() == values[0].dims(), "the keys and the values come in one shape");
    assert!(heads == value_heads && d == value_d, "cache {:?} cannot take values {:?}", caches[0].dims(), values[0].dims());
    assert!(at.rows() == rows, "{rows} rows need {rows} tables of blocks, not {}", at.rows());
    check_within(&at.blocks, &at.starts, t, blocks, block);
    let raw = |x: Tensor<B, 4>| x.into_primitive().tensor();
    B::kv_write(caches.map(raw), values.map(raw), at).map(|x| Tensor::from_primitive(TensorPrimitive::Float(x)))
}

/// Every row's positions `start..start + t` lie in its blocks, and its blocks in a cache of
/// `blocks` blocks of `block` positions.
pub(crate) fn check_within(tables: &[Vec<usize>], starts: &[usize], t: usize, blocks: usize, block: usize) {
    for (table, &start) in tables.iter().zip(starts) {
        assert!(
            start + t <= table.len() * block,
            "a write at positions {start}..{} does not fit a row of {} blocks of {block} positions",
            start + t,
            table.len()
        );
        assert!(table.iter().all(|&b| b < blocks), "a row's blocks {table:?} are not all in a cache of {blocks} blocks");
    }
}

impl KvWrite for crate::Cpu {}
#[cfg(feature = "cuda")]
impl KvWrite for crate::CudaFused {}
impl<B: KvWrite, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> KvWrite for burn::backend::Autodiff<B, C> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn rows_land_in_their_slots_at_their_positions() {
        let device = Default::default();
        let cache = Tensor::<Cpu, 4>::zeros([3, 1, 4, 2], &device);
        let values = Tensor::<Cpu, 4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [2, 1, 2, 2]), &device);
        let [k, v] = kv_write([cache.clone(), cache], [values.clone(), -values], &Placement::new(vec![vec![2], vec![0]], vec![1, 2], &device));
        let host = |x: Tensor<Cpu, 4>| x.into_data().to_vec::<f32>().unwrap();
        let mut want = vec![0.0f32; 24];
        want[16 + 2..16 + 6].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        want[4..8].copy_from_slice(&[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(host(k), want);
        assert_eq!(host(v), want.iter().map(|x| -x).collect::<Vec<_>>());
    }

    /// Writes one row of 2 positions (one head of width 2) at `start` into the blocks
    /// `table` of a zero cache of `blocks` blocks of 4 positions.
    fn write_one_row(blocks: usize, table: Vec<usize>, start: usize) {
        let device = Default::default();
        let (cache, values) = (Tensor::<Cpu, 4>::zeros([blocks, 1, 4, 2], &device), Tensor::<Cpu, 4>::zeros([1, 1, 2, 2], &device));
        kv_write([cache.clone(), cache], [values.clone(), values], &Placement::new(vec![table], vec![start], &device));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_block_past_the_capacity_is_refused() {
        write_one_row(1, vec![0], 3);
    }

    /// Rows whose positions cross blocks land in their tables' blocks, and `gather_rows`
    /// reads each row back in position order.
    #[test]
    fn rows_cross_their_blocks_and_read_back_in_order() {
        let device = Default::default();
        // Blocks of 2 positions. Row 0 (values 1..=5) holds blocks 3, 1, 4 and writes its
        // positions 1..6; row 1 (values 6..=10) holds blocks 2, 0, 5 and writes 0..5.
        let cache = Tensor::<Cpu, 4>::zeros([6, 1, 2, 1], &device);
        let values = Tensor::<Cpu, 4>::from_data(TensorData::new((1..=10).map(|x| x as f32).collect::<Vec<_>>(), [2, 1, 5, 1]), &device);
        let at = Placement::new(vec![vec![3, 1, 4], vec![2, 0, 5]], vec![1, 0], &device);
        let [k, _] = kv_write([cache.clone(), cache], [values.clone(), values], &at);
        let host = |x: Tensor<Cpu, 4>| x.into_data().to_vec::<f32>().unwrap();
        assert_eq!(host(k.clone()), vec![8.0, 9.0, 2.0, 3.0, 6.0, 7.0, 0.0, 1.0, 4.0, 5.0, 10.0, 0.0]);
        assert_eq!(host(gather_rows(k.clone(), &at, 6)), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 0.0]);
        assert_eq!(host(gather_rows(k, &at, 3)), vec![0.0, 1.0, 2.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    #[should_panic(expected = "not all in a cache")]
    fn a_block_past_the_cache_is_refused() {
        write_one_row(2, vec![2], 0);
    }
}
